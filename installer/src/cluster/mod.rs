//! The cluster ilha builds: which host does what, with which address and pod range, resolved once
//! on the operator's side before any host is touched. Everything `plan` and `up` do is derived
//! from a [`ClusterPlan`]: the files each host receives ([`render`]), the steps that put them
//! there ([`steps`]), the journal that makes re-runs cheap ([`journal`]) and the run itself
//! ([`run`]).

pub mod admission;
pub mod allocations;
pub mod bundle;
pub mod certs;
pub mod encryption;
pub mod hardening;
pub mod identity;
pub mod images;
pub mod journal;
pub mod kubelet_serving;
pub mod membership;
pub mod record;
pub mod remove;
pub mod render;
pub mod reset;
pub mod run;
pub mod snapshot;
pub mod steps;
pub mod teardown;
pub mod versions;

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{ClusterConfig, KubeVersion};
use crate::inventory::Role;

/// Where things live on every host. One place, so `reset` and `backup` find them too.
pub mod paths {
    pub const BIN_DIR: &str = "/usr/local/bin";
    pub const RUNC: &str = "/usr/local/sbin/runc";
    pub const CNI_BIN_DIR: &str = "/opt/cni/bin";
    pub const CNI_CONF_DIR: &str = "/etc/cni/net.d";
    pub const KUBERNETES_DIR: &str = "/etc/kubernetes";
    pub const PKI_DIR: &str = "/etc/kubernetes/pki";
    pub const ETCD_PKI_DIR: &str = "/etc/kubernetes/pki/etcd";
    pub const ETCD_DATA_DIR: &str = "/var/lib/etcd";
    pub const KUBELET_DIR: &str = "/var/lib/kubelet";
    pub const KUBE_PROXY_DIR: &str = "/var/lib/kube-proxy";
    pub const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
    pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
    pub const UNIT_DIR: &str = "/etc/systemd/system";
    /// ilha's own state on a host: the journal, the image archive.
    pub const ILHA_DIR: &str = "/var/lib/ilha";
    pub const JOURNAL: &str = "/var/lib/ilha/journal";
    /// Every file path a step has put on the host, one per line (appended, may repeat): what
    /// `reset` removes besides the directories ilha owns.
    pub const INSTALLED_FILES: &str = "/var/lib/ilha/files";
    pub const IMAGES_ARCHIVE: &str = "/var/lib/ilha/images.tar";
    pub const ROUTES_SCRIPT: &str = "/usr/local/sbin/ilha-routes";
    pub const ADMIN_CONF: &str = "/etc/kubernetes/admin.conf";
}

/// One host as the install sees it.
#[derive(Debug, Clone)]
pub struct HostPlan {
    pub name: String,
    /// The address cluster components bind to and put in certificates.
    pub ip: IpAddr,
    /// The address other hosts reach it at (`access_ip`, else `ip`).
    pub peer_ip: IpAddr,
    pub roles: BTreeSet<Role>,
    /// This node's pod range (Kubernetes nodes only).
    pub pod_cidr: Option<IpNet>,
    /// How this etcd member starts (etcd members only; `None`: with every planned member, as a
    /// new cluster).
    pub etcd_bootstrap: Option<membership::Bootstrap>,
}

impl HostPlan {
    pub fn is_etcd(&self) -> bool {
        self.roles.contains(&Role::Etcd)
    }
    pub fn is_control_plane(&self) -> bool {
        self.roles.contains(&Role::ControlPlane)
    }
    /// Runs a kubelet: control-plane hosts and workers.
    pub fn is_node(&self) -> bool {
        self.is_control_plane() || self.roles.contains(&Role::Worker)
    }
    /// A control-plane host that is not also listed as a worker: registered with the master
    /// taint so workloads stay off it (Kubespray's rule: a host in both groups takes pods).
    pub fn tainted_master(&self) -> bool {
        self.is_control_plane() && !self.roles.contains(&Role::Worker)
    }
    /// A node without a local kube-apiserver: reaches the API through the node-local proxy.
    pub fn needs_api_proxy(&self) -> bool {
        self.is_node() && !self.is_control_plane()
    }
}

/// The whole cluster, resolved.
#[derive(Debug, Clone)]
pub struct ClusterPlan {
    pub config: ClusterConfig,
    pub version: KubeVersion,
    /// The sandbox image containerd uses, as the bundle names it.
    pub pause_image: String,
    /// In inventory order.
    pub hosts: Vec<HostPlan>,
    /// Every master's `EncryptionConfiguration` (`cluster::encryption`); `None`: no keys made.
    pub encryption: Option<render::RemoteFile>,
}

impl ClusterPlan {
    pub fn host(&self, name: &str) -> Option<&HostPlan> {
        self.hosts.iter().find(|h| h.name == name)
    }
    pub fn etcd_members(&self) -> impl Iterator<Item = &HostPlan> {
        self.hosts.iter().filter(|h| h.is_etcd())
    }
    pub fn control_plane(&self) -> impl Iterator<Item = &HostPlan> {
        self.hosts.iter().filter(|h| h.is_control_plane())
    }
    pub fn nodes(&self) -> impl Iterator<Item = &HostPlan> {
        self.hosts.iter().filter(|h| h.is_node())
    }
    /// `https://127.0.0.1:6443`-style URL kubelet and kube-proxy use on every node.
    pub fn node_api_url(&self) -> String {
        format!("https://{}", self.config.node_api_address())
    }
    /// The URL of the first control-plane host, for the operator's admin kubeconfig.
    pub fn operator_api_url(&self) -> String {
        match &self.config.api_endpoint {
            crate::config::ApiEndpoint::External { .. } => self.node_api_url(),
            crate::config::ApiEndpoint::NodeLocal => {
                let first = self
                    .control_plane()
                    .next()
                    .expect("a validated inventory has a control-plane host");
                format!("https://{}", ip_port(first.peer_ip, self.config.api_port))
            }
        }
    }
}

/// A progress line for the operator, on stderr (stdout carries the command's result).
pub(crate) fn say(line: impl AsRef<str>) {
    eprintln!("{}", line.as_ref());
}

/// Asks the operator to type `expected` (the cluster's name) before something destructive.
/// Without a terminal to ask on, refuses and says to pass `--yes`.
pub fn confirm(question: &str, expected: &str) -> anyhow::Result<()> {
    use std::io::{BufRead as _, IsTerminal as _, Write as _};
    if !std::io::stdin().is_terminal() {
        anyhow::bail!("{question}\nNot asking without a terminal: pass --yes to go on");
    }
    eprint!("{question}\nType the cluster name ({expected}) to go on: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != expected {
        anyhow::bail!("not confirmed; nothing was changed");
    }
    Ok(())
}

/// `10.0.0.1:6443`, `[fd00::1]:6443`.
pub(crate) fn ip_port(ip: IpAddr, port: u16) -> String {
    crate::config::join_host_port(&ip.to_string(), port)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// Fails the test with bash's complaint and the script unless `script` parses (`bash -n`).
    pub fn assert_bash_syntax(script: &str) {
        let out = std::process::Command::new("bash")
            .args(["-n", "-c", script])
            .output()
            .expect("running bash");
        assert!(
            out.status.success(),
            "bash -n: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `script` as a host would (`bash`, `set -euo pipefail`); fails the test with its
    /// stderr unless it exits 0. Returns its stdout.
    pub fn run_bash_ok(script: &str) -> String {
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("set -euo pipefail\n{script}")])
            .output()
            .expect("running bash");
        assert!(
            out.status.success(),
            "bash: {}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// The seed's layout: node1-3 masters + etcd, node4-6 workers, at 10.0.0.1-6.
    pub fn plan_for(version: &str) -> ClusterPlan {
        let hosts = (1..=6)
            .map(|i| {
                let roles: BTreeSet<Role> = if i <= 3 {
                    [Role::ControlPlane, Role::Etcd].into()
                } else {
                    [Role::Worker].into()
                };
                let ip: IpAddr = format!("10.0.0.{i}").parse().unwrap();
                HostPlan {
                    name: format!("node{i}"),
                    ip,
                    peer_ip: ip,
                    roles,
                    pod_cidr: Some(format!("10.244.{}.0/24", i - 1).parse().unwrap()),
                    etcd_bootstrap: None,
                }
            })
            .collect();
        ClusterPlan {
            config: ClusterConfig::default(),
            version: version.parse().unwrap(),
            pause_image: "k8s.gcr.io/pause:3.2".to_string(),
            hosts,
            encryption: None,
        }
    }
}
