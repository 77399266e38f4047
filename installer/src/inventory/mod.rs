//! The cluster inventory: which hosts exist, how to reach them over SSH, and what each one runs.
//!
//! Reads Kubespray inventories as operators already have them: the INI form (both the 2017 group
//! names of the seed guide, `kube-master`/`kube-node`/`k8s-cluster`, and today's
//! `kube_control_plane`/`kube_node`/`k8s_cluster`) and the YAML `hosts.yaml` form. Both are first
//! read into one source-agnostic model that keeps line numbers (`raw`), then resolved and
//! validated in one place, so the two syntaxes cannot drift apart in meaning.
//! See `docs/inventory.md` for the accepted format and every rule.

mod error;
mod ini;
mod range;
mod raw;
mod resolve;
mod ssh_args;
pub(crate) mod yaml;

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use error::{InventoryError, Problem, ProblemKind};
pub use ssh_args::SshArgs;

/// What a host does in the cluster. A host may hold several roles (the seed's masters are also
/// its etcd members).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Runs kube-apiserver, kube-controller-manager and kube-scheduler (and a kubelet).
    ControlPlane,
    /// A member of the etcd cluster.
    Etcd,
    /// Runs workloads: kubelet and kube-proxy.
    Worker,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::ControlPlane, Role::Etcd, Role::Worker];

    /// The Kubespray group holding this role today (the one to name in messages).
    pub fn group_name(self) -> &'static str {
        match self {
            Role::ControlPlane => "kube_control_plane",
            Role::Etcd => "etcd",
            Role::Worker => "kube_node",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::ControlPlane => "control-plane",
            Role::Etcd => "etcd",
            Role::Worker => "worker",
        })
    }
}

/// One host of the inventory, resolved: every default applied, every address parsed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// The inventory name; also the Kubernetes node name, hence a DNS-1123 name.
    pub name: String,
    /// Where ssh connects (`ansible_host`, else `access_ip`, else `ip`, else the inventory name,
    /// which ssh resolves through its config or DNS, as Ansible does).
    pub ssh_host: String,
    /// `ansible_user`; `root` when unset, as in the seed guide.
    pub ssh_user: String,
    /// `ansible_port`; 22 when unset.
    pub ssh_port: u16,
    /// `ansible_ssh_private_key_file` (or `ansible_private_key_file`): `~` expanded, made
    /// absolute against the current directory as Ansible's ssh does; checked to exist and be
    /// private (0600), as ssh itself refuses a key others can read.
    pub ssh_identity_file: Option<PathBuf>,
    /// `ansible_ssh_common_args` then `ansible_ssh_extra_args`, checked (see `ssh_args`).
    pub ssh_args: SshArgs,
    /// `ansible_become`: every host command runs as root through `sudo -n` (sudo to root without
    /// a password is the only form accepted). Named so because `become` is a Rust keyword.
    pub become_root: bool,
    /// `ip`: the address cluster components bind to and put in certificates. When unset, the
    /// preflight step picks the host's default-route address.
    pub ip: Option<IpAddr>,
    /// `access_ip`: the address other hosts use to reach this one, when it differs from `ip`
    /// (NAT, floating IPs).
    pub access_ip: Option<IpAddr>,
    pub roles: BTreeSet<Role>,
    /// The line that first names this host in the inventory file, for later messages.
    pub line: usize,
}

impl Host {
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the host is a Kubernetes node (runs a kubelet): control-plane hosts and workers;
    /// etcd-only hosts are not.
    pub fn is_kubernetes_node(&self) -> bool {
        self.has_role(Role::ControlPlane) || self.has_role(Role::Worker)
    }

    /// The address peers use to reach this host: `access_ip`, else `ip`.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.access_ip.or(self.ip)
    }
}

/// A group that is none of the groups ilha knows (for example Kubespray's `calico_rr`): allowed,
/// but reported so the operator knows it has no effect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnknownGroup {
    pub name: String,
    pub line: usize,
}

/// The inventory file's syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Ini,
    Yaml,
}

/// A parsed and validated inventory.
#[derive(Debug, Clone, Serialize)]
pub struct Inventory {
    pub source: PathBuf,
    pub format: Format,
    /// In the order the file first names them.
    pub hosts: Vec<Host>,
    pub unknown_groups: Vec<UnknownGroup>,
    /// Line of the etcd group's header (1 when absent).
    pub etcd_line: usize,
}

impl Inventory {
    /// Reads and validates an inventory file, INI or YAML (see [`detect_format`]).
    pub fn load(path: &Path) -> Result<Self, InventoryError> {
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses inventory text; `path` names the source in errors and picks the format.
    pub fn parse(path: &Path, text: &str) -> Result<Self, InventoryError> {
        let format = detect_format(path, text);
        let invalid = |problems| InventoryError::Invalid {
            path: path.to_path_buf(),
            problems,
        };
        let mut raw = match format {
            Format::Ini => ini::parse(text),
            Format::Yaml => yaml::parse(text),
        }
        .map_err(invalid)?;
        let range_problems = range::expand_entries(&mut raw);
        if !range_problems.is_empty() {
            return Err(invalid(range_problems));
        }
        let resolved = resolve::resolve(&raw).map_err(invalid)?;
        Ok(Inventory {
            source: path.to_path_buf(),
            format,
            hosts: resolved.hosts,
            unknown_groups: resolved.unknown_groups,
            etcd_line: resolved.etcd_line,
        })
    }

    /// A new etcd cluster needs an odd number of members (1, 3, 5...): an even count tolerates
    /// no more failures than the odd count below it, and Kubespray refuses it too. A running
    /// cluster may pass through an even count while it grows, so this is asked only when etcd
    /// is first built.
    pub fn check_odd_etcd(&self) -> Result<(), InventoryError> {
        let count = self.etcd().count();
        if count.is_multiple_of(2) {
            return Err(InventoryError::Invalid {
                path: self.source.clone(),
                problems: vec![Problem::new(self.etcd_line, ProblemKind::EvenEtcd(count))],
            });
        }
        Ok(())
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|host| host.name == name)
    }

    /// The hosts holding `role`, in inventory order.
    pub fn with_role(&self, role: Role) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(move |host| host.has_role(role))
    }

    pub fn control_plane(&self) -> impl Iterator<Item = &Host> {
        self.with_role(Role::ControlPlane)
    }

    pub fn etcd(&self) -> impl Iterator<Item = &Host> {
        self.with_role(Role::Etcd)
    }

    pub fn workers(&self) -> impl Iterator<Item = &Host> {
        self.with_role(Role::Worker)
    }

    /// Control-plane hosts and workers: every host that runs a kubelet.
    pub fn kubernetes_nodes(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|host| host.is_kubernetes_node())
    }
}

/// `.yaml`/`.yml` is YAML and `.ini`/`.txt`/`.cfg` is INI; any other name is judged by content:
/// YAML inventories start (after comments) with `all:`, INI ones never do.
pub fn detect_format(path: &Path, text: &str) -> Format {
    match path
        .extension()
        .and_then(|ext| ext.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("yaml" | "yml") => return Format::Yaml,
        Some("ini" | "txt" | "cfg") => return Format::Ini,
        _ => {}
    }
    let first_meaningful = text.lines().map(str::trim).find(|line| {
        !line.is_empty() && !line.starts_with('#') && !line.starts_with(';') && *line != "---"
    });
    match first_meaningful {
        Some(line) if line.starts_with("all:") => Format::Yaml,
        _ => Format::Ini,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_extension_then_content() {
        assert_eq!(detect_format(Path::new("hosts.yaml"), "x"), Format::Yaml);
        assert_eq!(detect_format(Path::new("hosts.YML"), "x"), Format::Yaml);
        assert_eq!(
            detect_format(Path::new("inventory.txt"), "all:\n"),
            Format::Ini
        );
        assert_eq!(
            detect_format(Path::new("inventory"), "# c\n---\nall:\n  hosts:\n"),
            Format::Yaml
        );
        assert_eq!(
            detect_format(Path::new("inventory"), "[all]\nnode1\n"),
            Format::Ini
        );
    }

    fn problems(text: &str) -> String {
        Inventory::parse(Path::new("inv.ini"), text)
            .unwrap_err()
            .to_string()
    }

    const ROLES: &str = "[kube_control_plane]\nn1\n[etcd]\nn1\n";

    #[test]
    fn a_host_dropped_for_a_bad_ip_does_not_make_etcd_even() {
        let text = "n1 ansible_host=h1\nn2 ansible_host=h2\nn3 ansible_host=h3 ip=bad\n[kube_control_plane]\nn1\n[etcd]\nn1\nn2\nn3\n";
        let found = problems(text);
        assert_eq!(found, "inv.ini:3: host `n3`: `ip=bad` is not an IP address");
    }

    #[test]
    fn children_must_exist_and_not_loop() {
        let text = format!("n1 ansible_host=h1\n{ROLES}[k8s_cluster:children]\nkube_nodes\n");
        assert!(problems(&text).contains(
            "inv.ini:7: group `kube_nodes`, listed as a child of `k8s_cluster`, is defined nowhere"
        ));
        let text = format!("n1 ansible_host=h1\n{ROLES}[a:children]\nb\n[b:children]\na\n");
        assert!(
            problems(&text).contains("is its own ancestor"),
            "{}",
            problems(&text)
        );
    }

    #[test]
    fn roles_flow_through_children() {
        let text = "n1 ansible_host=h1\nw1 ansible_host=h2\n[masters]\nn1\n[kube_control_plane:children]\nmasters\n[etcd:children]\nmasters\n[kube_node]\nw1\n";
        let inventory = Inventory::parse(Path::new("inv.ini"), text).unwrap();
        let names = |role| {
            inventory
                .with_role(role)
                .map(|h| h.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Role::ControlPlane), ["n1"]);
        assert_eq!(names(Role::Etcd), ["n1"]);
        assert_eq!(names(Role::Worker), ["w1"]);
        assert_eq!(inventory.unknown_groups[0].name, "masters");
        assert_eq!(inventory.kubernetes_nodes().count(), 2);
    }

    #[test]
    fn conflicting_group_vars_and_duplicate_vars() {
        let text = "n1 ansible_host=h1\n[kube_control_plane]\nn1\n[etcd]\nn1\n[kube_control_plane:vars]\nansible_user=a\n[etcd:vars]\nansible_user=b\n";
        assert!(problems(text).contains(
            "inv.ini:1: host `n1`: `ansible_user` comes from both group `kube_control_plane` (line 7) and group `etcd`"
        ), "{}", problems(text));
        let text = format!("n1 ansible_host=h1 ansible_ssh_host=h2\n{ROLES}");
        assert!(
            problems(&text)
                .contains("inv.ini:1: variable `ansible_ssh_host` is set twice for `n1`")
        );
    }

    #[test]
    fn names_ranges_and_addresses() {
        let text = format!("Node_1 ansible_host=h1\n{ROLES}");
        assert!(
            problems(&text)
                .contains("inv.ini:1: host name `Node_1` is not a valid Kubernetes node name")
        );
        let text = format!("node[3:1] ansible_host=h1\n{ROLES}");
        assert!(
            problems(&text)
                .contains("inv.ini:1: host range `node[3:1]`: the start is after the end"),
            "{}",
            problems(&text)
        );
        // A range sharing one `ansible_host` gives every host the same ssh address.
        let text = format!("n[1:2] ansible_host=h1\n{ROLES}");
        assert!(
            problems(&text).contains(
                "inv.ini:1: host `n2` has the same ssh address h1:22 as host `n1` (line 1)"
            ),
            "{}",
            problems(&text)
        );
        let text = format!(
            "n1 ansible_host=h1 access_ip=10.0.0.5\nn2 ansible_host=h1\n{ROLES}[kube_node]\nn2\n"
        );
        let found = problems(&text);
        assert!(
            found.contains(
                "inv.ini:2: host `n2` has the same ssh address h1:22 as host `n1` (line 1)"
            ),
            "{found}"
        );
        let inventory =
            Inventory::parse(Path::new("inv.ini"), &format!("n1 ip=10.0.0.5\n{ROLES}")).unwrap();
        assert_eq!(
            inventory.hosts[0].ssh_host, "10.0.0.5",
            "ip is the ssh address of last resort"
        );
        assert_eq!(inventory.hosts[0].ssh_user, "root");
        assert_eq!(inventory.hosts[0].ssh_port, 22);
        let inventory = Inventory::parse(Path::new("inv.ini"), &format!("n1\n{ROLES}")).unwrap();
        assert_eq!(
            inventory.hosts[0].ssh_host, "n1",
            "with no address at all, ssh is aimed at the inventory name"
        );
    }

    #[test]
    fn ranges_expand_in_ini_and_yaml_keeping_the_pattern_line() {
        let text = "node[01:03] ansible_user=admin\n[kube_control_plane]\nnode01\n[etcd]\nnode01\n[kube_node]\nnode[02:03]\n";
        let inventory = Inventory::parse(Path::new("inv.ini"), text).unwrap();
        let names: Vec<_> = inventory.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["node01", "node02", "node03"]);
        assert!(
            inventory
                .hosts
                .iter()
                .all(|h| h.line == 1 && h.ssh_user == "admin")
        );
        assert_eq!(inventory.workers().count(), 2);

        let yaml = "all:\n  hosts:\n    w[a:b].example:\n      ansible_port: 2222\n  children:\n    kube_control_plane:\n      hosts:\n        wa.example:\n    etcd:\n      hosts:\n        wa.example:\n    kube_node:\n      hosts:\n        w[a:b].example:\n";
        let inventory = Inventory::parse(Path::new("hosts.yaml"), yaml).unwrap();
        let names: Vec<_> = inventory.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["wa.example", "wb.example"]);
        assert!(
            inventory
                .hosts
                .iter()
                .all(|h| h.line == 3 && h.ssh_port == 2222)
        );

        let bad = "all:\n  children:\n    kube_node:\n      hosts:\n        w[1:]:\n";
        let found = Inventory::parse(Path::new("hosts.yaml"), bad)
            .unwrap_err()
            .to_string();
        assert!(
            found.starts_with("hosts.yaml:5: host range `w[1:]`: both ends"),
            "{found}"
        );
    }

    #[test]
    fn key_file_must_exist_and_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_lab");
        std::fs::write(&key, "key").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "n1 ansible_host=h1\n{ROLES}[all:vars]\nansible_private_key_file={}\n",
            key.display()
        );
        let inventory = Inventory::parse(Path::new("inv.ini"), &text).unwrap();
        assert_eq!(
            inventory.hosts[0].ssh_identity_file.as_deref(),
            Some(key.as_path())
        );

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let found = problems(&text);
        assert_eq!(
            found,
            format!(
                "inv.ini:7: host `n1`: `ansible_ssh_private_key_file` names {0}: it is readable by others (mode 0644) and ssh refuses such keys: run `chmod 600 {0}`",
                key.display()
            )
        );
        let missing = dir.path().join("nope");
        let found = problems(&format!(
            "n1 ansible_host=h1 ansible_ssh_private_key_file={}\n{ROLES}",
            missing.display()
        ));
        assert!(
            found.starts_with(&format!(
                "inv.ini:1: host `n1`: `ansible_ssh_private_key_file` names {}: cannot read it",
                missing.display()
            )),
            "{found}"
        );
    }

    #[test]
    fn ssh_args_reach_the_host_and_refusals_name_host_variable_and_option() {
        let text = format!(
            "n1 ansible_host=h1\n{ROLES}[all:vars]\nansible_ssh_common_args='-o ProxyCommand=\"ssh -W %h:%p -q bastion\"'\n"
        );
        let inventory = Inventory::parse(Path::new("inv.ini"), &text).unwrap();
        assert_eq!(
            inventory.hosts[0].ssh_args.options,
            ["ProxyCommand=ssh -W %h:%p -q bastion"]
        );
        let text = format!(
            "n1 ansible_host=h1 ansible_ssh_extra_args=\"-J admin@bastion -o StrictHostKeyChecking=no\"\n{ROLES}"
        );
        let found = problems(&text);
        assert!(
            found.starts_with(
                "inv.ini:1: host `n1`: `ansible_ssh_extra_args` has `-o StrictHostKeyChecking=no`, which ilha refuses: ilha checks host keys itself"
            ),
            "{found}"
        );
    }

    #[test]
    fn become_through_sudo_to_root_is_read_from_every_spelling() {
        let text = format!(
            "n1 ansible_host=h1 ansible_user=ops\nn2 ansible_host=h2 ansible_user=ops ansible_become=no\nn3 ansible_host=h3\n{ROLES}[kube_node]\nn2\nn3\n[kube_node:vars]\nansible_become=True\nansible_become_method=sudo\nansible_become_user=root\n[all:vars]\nansible_become=yes\n"
        );
        let inventory = Inventory::parse(Path::new("inv.ini"), &text).unwrap();
        let become_root: Vec<_> = inventory
            .hosts
            .iter()
            .map(|h| (h.name.as_str(), h.become_root))
            .collect();
        // n2's own `no` beats its group's `True`; n3 gets the group's; n1 the `all` one.
        assert_eq!(become_root, [("n1", true), ("n2", false), ("n3", true)]);
        for value in ["true", "1", "True", "yes"] {
            let inventory = Inventory::parse(
                Path::new("inv.ini"),
                &format!("n1 ansible_host=h1 ansible_user=ops ansible_become={value}\n{ROLES}"),
            )
            .unwrap();
            assert!(inventory.hosts[0].become_root, "{value}");
        }
        let yaml = "all:\n  vars:\n    ansible_user: ops\n    ansible_become: true\n  hosts:\n    n1:\n      ansible_host: h1\n  children:\n    kube_control_plane:\n      hosts:\n        n1:\n    etcd:\n      hosts:\n        n1:\n";
        let inventory = Inventory::parse(Path::new("hosts.yaml"), yaml).unwrap();
        assert!(inventory.hosts[0].become_root);
        let plain = Inventory::parse(
            Path::new("inv.ini"),
            &format!("n1 ansible_host=h1\n{ROLES}"),
        )
        .unwrap();
        assert!(!plain.hosts[0].become_root, "no become unless asked");
    }

    #[test]
    fn become_other_than_sudo_to_root_without_a_password_is_refused_with_its_line() {
        let found = problems(&format!(
            "n1 ansible_host=h1 ansible_become=true ansible_become_method=su ansible_become_user=postgres\n{ROLES}"
        ));
        assert_eq!(
            found,
            "inv.ini:1: host `n1`: `ansible_become_method=su`: ilha supports become through sudo to root only (`ansible_become_method=sudo`, `ansible_become_user=root`, the defaults); remove `ansible_become_method` or set it to sudo\n\
             inv.ini:1: host `n1`: `ansible_become_user=postgres`: ilha supports become through sudo to root only (`ansible_become_method=sudo`, `ansible_become_user=root`, the defaults); remove `ansible_become_user` or set it to root"
        );
        for key in [
            "ansible_become_password",
            "ansible_become_pass",
            "ansible_sudo_pass",
            "ansible_sudo_password",
        ] {
            let found = problems(&format!(
                "n1 ansible_host=h1 ansible_user=ops ansible_become=true\n{ROLES}[all:vars]\n{key}=s3cret-value\n"
            ));
            assert_eq!(
                found,
                "inv.ini:7: host `n1`: a become password is set: ilha runs `sudo -n` and never types a password; give the user a NOPASSWD rule (for example `ops ALL=(root) NOPASSWD: ALL` in /etc/sudoers.d/ops) and remove the password variable",
                "{key}"
            );
            assert!(!found.contains("s3cret"), "the password is never shown");
        }
        let found = problems(&format!("n1 ansible_host=h1 ansible_become=maybe\n{ROLES}"));
        assert_eq!(
            found,
            "inv.ini:1: host `n1`: `ansible_become=maybe` is not a boolean (true, yes, 1 or false, no, 0)"
        );
    }
}
