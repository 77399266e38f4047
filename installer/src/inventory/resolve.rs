//! Gives the raw inventory its meaning: group membership through `:children`, variable
//! precedence, defaults, roles, and every validation rule of `docs/inventory.md`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::error::{Problem, ProblemKind};
use super::raw::{RawGroup, RawInventory, RawVar, canonical_group_name};
use super::ssh_args::{self, SshArgs};
use super::{Host, Role, UnknownGroup};

pub struct Resolved {
    pub hosts: Vec<Host>,
    pub unknown_groups: Vec<UnknownGroup>,
    /// Line of the etcd group's header (1 when absent), for whole-group messages.
    pub etcd_line: usize,
}

/// Groups ilha gives a meaning to, by today's names.
const KNOWN_GROUPS: [&str; 6] = [
    "all",
    "ungrouped",
    "kube_control_plane",
    "etcd",
    "kube_node",
    "k8s_cluster",
];

pub fn resolve(raw: &RawInventory) -> Result<Resolved, Vec<Problem>> {
    let mut problems = Vec::new();
    let groups: HashMap<&str, &RawGroup> = raw
        .groups
        .iter()
        .map(|group| (canonical_group_name(&group.name), group))
        .collect();

    check_children(raw, &groups, &mut problems);
    if !problems.is_empty() {
        // Membership is meaningless with dangling or cyclic children.
        return Err(problems);
    }

    let mentions = collect_mentions(raw, &mut problems);
    let all_names: Vec<&str> = mentions.iter().map(|m| m.name.as_str()).collect();
    let mut memo = HashMap::new();
    let members_of = |group: &str, memo: &mut HashMap<String, BTreeSet<String>>| {
        members(group, &groups, &all_names, memo)
    };

    let mut hosts = Vec::new();
    for mention in &mentions {
        if !is_valid_node_name(&mention.name) {
            problems.push(Problem::new(
                mention.line,
                ProblemKind::BadHostName(mention.name.clone()),
            ));
            continue;
        }
        // Every group holding the host, `all` first (lowest precedence), then by first mention.
        let mut scopes: Vec<&RawGroup> = Vec::new();
        if let Some(all) = groups.get("all") {
            scopes.push(all);
        }
        for group in &raw.groups {
            let canonical = canonical_group_name(&group.name);
            if canonical != "all" && members_of(canonical, &mut memo).contains(&mention.name) {
                scopes.push(group);
            }
        }
        let vars = effective_vars(mention, &scopes, &mut problems);
        let roles: BTreeSet<Role> = Role::ALL
            .into_iter()
            .filter(|role| members_of(role.group_name(), &mut memo).contains(&mention.name))
            .collect();
        if roles.is_empty() {
            problems.push(Problem::new(
                mention.line,
                ProblemKind::NoRole(mention.name.clone()),
            ));
        }
        if let Some(host) = build_host(mention, &vars, roles, &mut problems) {
            hosts.push(host);
        }
    }

    check_roles(&hosts, &groups, &mut problems);
    check_unique_addresses(&hosts, &mut problems);

    let unknown_groups = raw
        .groups
        .iter()
        .filter(|group| !KNOWN_GROUPS.contains(&canonical_group_name(&group.name)))
        .map(|group| UnknownGroup {
            name: group.name.clone(),
            line: group.line,
        })
        .collect();

    if problems.is_empty() {
        Ok(Resolved {
            hosts,
            unknown_groups,
            etcd_line: groups.get("etcd").map_or(1, |group| group.line),
        })
    } else {
        problems.sort_by_key(|problem| problem.line);
        Err(problems)
    }
}

fn check_children(
    raw: &RawInventory,
    groups: &HashMap<&str, &RawGroup>,
    problems: &mut Vec<Problem>,
) {
    for group in &raw.groups {
        for child in &group.children {
            let canonical = canonical_group_name(&child.name);
            if canonical == "all" {
                problems.push(Problem::new(
                    child.line,
                    ProblemKind::ChildrenNotAllowed {
                        group: group.name.clone(),
                        why: "`all` holds every group already and cannot be a child",
                    },
                ));
            } else if !groups.contains_key(canonical) {
                problems.push(Problem::new(
                    child.line,
                    ProblemKind::UndefinedChildGroup {
                        child: child.name.clone(),
                        parent: group.name.clone(),
                    },
                ));
            }
        }
    }
    if !problems.is_empty() {
        return;
    }
    for group in &raw.groups {
        let mut path = Vec::new();
        if has_cycle(canonical_group_name(&group.name), groups, &mut path) {
            problems.push(Problem::new(
                group.line,
                ProblemKind::GroupCycle(group.name.clone()),
            ));
            return;
        }
    }
}

fn has_cycle<'a>(
    group: &'a str,
    groups: &HashMap<&'a str, &'a RawGroup>,
    path: &mut Vec<&'a str>,
) -> bool {
    if path.contains(&group) {
        return true;
    }
    path.push(group);
    let cyclic = groups.get(group).is_some_and(|raw| {
        raw.children
            .iter()
            .any(|child| has_cycle(canonical_group_name(&child.name), groups, path))
    });
    path.pop();
    cyclic
}

/// The hosts of a group, through its children. `all` holds every host.
fn members(
    group: &str,
    groups: &HashMap<&str, &RawGroup>,
    all_names: &[&str],
    memo: &mut HashMap<String, BTreeSet<String>>,
) -> BTreeSet<String> {
    if group == "all" {
        return all_names.iter().map(|name| name.to_string()).collect();
    }
    if let Some(known) = memo.get(group) {
        return known.clone();
    }
    let mut set = BTreeSet::new();
    if let Some(raw) = groups.get(group) {
        set.extend(raw.hosts.iter().map(|entry| entry.name.clone()));
        for child in &raw.children {
            set.extend(members(
                canonical_group_name(&child.name),
                groups,
                all_names,
                memo,
            ));
        }
    }
    memo.insert(group.to_string(), set.clone());
    set
}

/// A host as the file mentions it: where first, and the variables given with it (one place only).
struct Mention {
    name: String,
    line: usize,
    vars: Vec<RawVar>,
}

fn collect_mentions(raw: &RawInventory, problems: &mut Vec<Problem>) -> Vec<Mention> {
    let mut mentions: Vec<Mention> = Vec::new();
    let mut defined_at: HashMap<&str, usize> = HashMap::new();
    for group in &raw.groups {
        let mut in_group: HashMap<&str, usize> = HashMap::new();
        for entry in &group.hosts {
            if let Some(first_line) = in_group.insert(&entry.name, entry.line) {
                problems.push(Problem::new(
                    entry.line,
                    ProblemKind::DuplicateGroupMember {
                        host: entry.name.clone(),
                        group: group.name.clone(),
                        first_line,
                    },
                ));
                in_group.insert(&entry.name, first_line);
            }
            if !entry.vars.is_empty() {
                // Variables in two places is how a copy-pasted host line shows up; Ansible would
                // merge them silently, we refuse.
                if let Some(&first_line) = defined_at.get(entry.name.as_str()) {
                    problems.push(Problem::new(
                        entry.line,
                        ProblemKind::DuplicateHostDefinition {
                            host: entry.name.clone(),
                            first_line,
                        },
                    ));
                    continue;
                }
                defined_at.insert(&entry.name, entry.line);
            }
            match mentions.iter_mut().find(|m| m.name == entry.name) {
                Some(mention) => {
                    mention.line = mention.line.min(entry.line);
                    if !entry.vars.is_empty() {
                        mention.vars = entry.vars.clone();
                    }
                }
                None => mentions.push(Mention {
                    name: entry.name.clone(),
                    line: entry.line,
                    vars: entry.vars.clone(),
                }),
            }
        }
    }
    mentions.sort_by_key(|mention| mention.line);
    mentions
}

/// The variables ilha reads, under one name each (Ansible's pre-2.0 `ansible_ssh_*` spellings
/// are what the seed guide uses).
fn canonical_var(key: &str) -> Option<&'static str> {
    Some(match key {
        "ansible_host" | "ansible_ssh_host" => "ansible_host",
        "ansible_user" | "ansible_ssh_user" => "ansible_user",
        "ansible_port" | "ansible_ssh_port" => "ansible_port",
        "ansible_ssh_private_key_file" | "ansible_private_key_file" => {
            "ansible_ssh_private_key_file"
        }
        "ansible_ssh_common_args" => "ansible_ssh_common_args",
        "ansible_ssh_extra_args" => "ansible_ssh_extra_args",
        "ansible_become" => "ansible_become",
        "ansible_become_method" => "ansible_become_method",
        "ansible_become_user" => "ansible_become_user",
        // Every spelling of a become password Ansible reads: ilha refuses them all (it runs
        // `sudo -n`), so none may slip through under a name ilha does not look at.
        "ansible_become_password"
        | "ansible_become_pass"
        | "ansible_sudo_pass"
        | "ansible_sudo_password" => "ansible_become_password",
        "ip" => "ip",
        "access_ip" => "access_ip",
        _ => return None,
    })
}

/// Where a value came from, for messages.
#[derive(Clone)]
struct VarValue {
    value: Option<String>,
    line: usize,
    group: Option<String>,
}

/// Variables ilha reads for one host: `all` vars, then other groups' vars (two groups disagreeing
/// is an error rather than an ordering rule to learn), then the host's own.
fn effective_vars(
    mention: &Mention,
    scopes: &[&RawGroup],
    problems: &mut Vec<Problem>,
) -> BTreeMap<&'static str, VarValue> {
    let mut effective: BTreeMap<&'static str, VarValue> = BTreeMap::new();
    for group in scopes {
        let is_all = canonical_group_name(&group.name) == "all";
        for (key, var) in known_vars(&group.vars, &group.name, problems) {
            let incoming = VarValue {
                value: var.value.clone(),
                line: var.line,
                group: Some(group.name.clone()),
            };
            match effective.get(key) {
                Some(existing)
                    if !is_all
                        && existing
                            .group
                            .as_deref()
                            .is_some_and(|g| canonical_group_name(g) != "all")
                        && existing.value != incoming.value =>
                {
                    problems.push(Problem::new(
                        mention.line,
                        ProblemKind::ConflictingGroupVar {
                            host: mention.name.clone(),
                            key: key.to_string(),
                            group_a: existing.group.clone().unwrap_or_default(),
                            line_a: existing.line,
                            group_b: group.name.clone(),
                        },
                    ));
                }
                _ => {
                    effective.insert(key, incoming);
                }
            }
        }
    }
    for (key, var) in known_vars(&mention.vars, &mention.name, problems) {
        effective.insert(
            key,
            VarValue {
                value: var.value.clone(),
                line: var.line,
                group: None,
            },
        );
    }
    effective
}

/// The variables of one scope that ilha reads; the others are Ansible's business and ignored.
fn known_vars<'a>(
    vars: &'a [RawVar],
    owner: &str,
    problems: &mut Vec<Problem>,
) -> Vec<(&'static str, &'a RawVar)> {
    let mut seen: Vec<(&'static str, &'a RawVar)> = Vec::new();
    for var in vars {
        let Some(key) = canonical_var(&var.key) else {
            tracing::debug!(line = var.line, key = %var.key, "{owner}: ignoring a variable ilha does not use");
            continue;
        };
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            problems.push(Problem::new(
                var.line,
                ProblemKind::DuplicateVar {
                    key: var.key.clone(),
                    owner: owner.to_string(),
                    first_line: first.line,
                },
            ));
            continue;
        }
        seen.push((key, var));
    }
    seen
}

fn build_host(
    mention: &Mention,
    vars: &BTreeMap<&'static str, VarValue>,
    roles: BTreeSet<Role>,
    problems: &mut Vec<Problem>,
) -> Option<Host> {
    let before = problems.len();
    let host = &mention.name;
    let text = |key: &'static str, problems: &mut Vec<Problem>| -> Option<(String, usize)> {
        let var = vars.get(key)?;
        match var.value.as_deref().map(str::trim) {
            Some(value) if !value.is_empty() => Some((value.to_string(), var.line)),
            _ => {
                problems.push(Problem::new(
                    var.line,
                    ProblemKind::EmptyVar {
                        host: host.clone(),
                        key: key.to_string(),
                    },
                ));
                None
            }
        }
    };
    let parse_ip = |key: &'static str, problems: &mut Vec<Problem>| -> Option<IpAddr> {
        let (value, line) = text(key, problems)?;
        match value.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                let hint = if value.eq_ignore_ascii_case("x.x.x.x") {
                    " (the guide's placeholder: put the host's real address there)"
                } else {
                    ""
                };
                problems.push(Problem::new(
                    line,
                    ProblemKind::BadIp {
                        host: host.clone(),
                        key: key.to_string(),
                        value,
                        hint,
                    },
                ));
                None
            }
        }
    };
    let ip = parse_ip("ip", problems);
    let access_ip = parse_ip("access_ip", problems);
    let ssh_port = match text("ansible_port", problems) {
        None => 22,
        Some((value, line)) => match value.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                problems.push(Problem::new(
                    line,
                    ProblemKind::BadPort {
                        host: host.clone(),
                        key: "ansible_port".to_string(),
                        value,
                    },
                ));
                22
            }
        },
    };
    let ssh_user = text("ansible_user", problems)
        .map(|(user, _)| user)
        .unwrap_or_else(|| "root".to_string());
    let ssh_host = match text("ansible_host", problems) {
        Some((address, _)) => Some(address),
        None if problems.len() > before => None,
        // Ansible connects to the inventory name when nothing else is given: ssh resolves it
        // (its own config's `Host` entries, then DNS).
        None => Some(
            access_ip
                .or(ip)
                .map_or_else(|| host.clone(), |address| address.to_string()),
        ),
    };
    let ssh_identity_file = text("ansible_ssh_private_key_file", problems).and_then(
        |(file, line)| match check_key_file(&file) {
            Ok(path) => Some(path),
            Err((path, why)) => {
                problems.push(Problem::new(
                    line,
                    ProblemKind::BadKeyFile {
                        host: host.clone(),
                        key: "ansible_ssh_private_key_file".to_string(),
                        path,
                        why,
                    },
                ));
                None
            }
        },
    );
    let become_root = check_become(host, vars, problems);
    let mut ssh_args = SshArgs::default();
    for key in ["ansible_ssh_common_args", "ansible_ssh_extra_args"] {
        // An empty value is how inventories clear a group's args: not an error here.
        let Some(var) = vars.get(key) else { continue };
        let Some(value) = var.value.as_deref() else {
            continue;
        };
        if let Err((argument, why)) = ssh_args::parse_into(value, &mut ssh_args) {
            problems.push(Problem::new(
                var.line,
                ProblemKind::BadSshArgument {
                    host: host.clone(),
                    key: key.to_string(),
                    argument,
                    why,
                },
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    Some(Host {
        name: host.clone(),
        ssh_host: ssh_host?,
        ssh_user,
        ssh_port,
        ssh_identity_file,
        ssh_args,
        become_root,
        ip,
        access_ip,
        roles,
        line: mention.line,
    })
}

/// Whether the host's commands run through `sudo -n` as root (`ansible_become`). ilha supports
/// exactly what a hardened host without root login needs: sudo, to root, without a password.
/// Any other method, target user or a password is refused, naming the variable and its line,
/// rather than acting as the wrong user or hanging at a prompt midway through `up`.
fn check_become(
    host: &str,
    vars: &BTreeMap<&'static str, VarValue>,
    problems: &mut Vec<Problem>,
) -> bool {
    let value_of = |key: &str| {
        vars.get(key)
            .and_then(|var| Some((var.value.as_deref()?.trim().to_string(), var.line)))
    };
    let ssh_user = value_of("ansible_user").map_or_else(|| "root".to_string(), |(user, _)| user);
    // The password itself never appears in a message: only the variable's name and line.
    if let Some(var) = vars.get("ansible_become_password") {
        problems.push(Problem::new(
            var.line,
            ProblemKind::BecomePassword {
                host: host.to_string(),
                user: ssh_user.clone(),
            },
        ));
    }
    if let Some((value, line)) = value_of("ansible_become_method")
        && value != "sudo"
    {
        problems.push(Problem::new(
            line,
            ProblemKind::BecomeUnsupported {
                host: host.to_string(),
                key: "ansible_become_method".to_string(),
                value,
            },
        ));
    }
    if let Some((value, line)) = value_of("ansible_become_user")
        && value != "root"
    {
        problems.push(Problem::new(
            line,
            ProblemKind::BecomeUnsupported {
                host: host.to_string(),
                key: "ansible_become_user".to_string(),
                value,
            },
        ));
    }
    match value_of("ansible_become") {
        None => false,
        Some((value, line)) => match ansible_boolean(&value) {
            Some(wanted) => wanted,
            None => {
                problems.push(Problem::new(
                    line,
                    ProblemKind::NotBoolean {
                        host: host.to_string(),
                        key: "ansible_become".to_string(),
                        value,
                    },
                ));
                false
            }
        },
    }
}

/// A boolean as Ansible reads one (`yes`, `True`, `1`, `off`, ...); `None` for anything else.
fn ansible_boolean(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" | "y" | "t" => Some(true),
        "false" | "no" | "off" | "0" | "n" | "f" => Some(false),
        _ => None,
    }
}

/// The key file as ssh will read it, or why ssh would refuse it (checked now, before any host is
/// touched, rather than as an authentication failure on some host midway).
fn check_key_file(file: &str) -> Result<PathBuf, (PathBuf, String)> {
    use std::os::unix::fs::PermissionsExt;
    let expanded = match file.strip_prefix("~/") {
        Some(rest) => match std::env::var_os("HOME") {
            Some(home) => Path::new(&home).join(rest),
            None => PathBuf::from(file),
        },
        None => PathBuf::from(file),
    };
    // Ansible hands the path to ssh as written: relative paths are read from where it runs.
    let path = std::path::absolute(&expanded).unwrap_or(expanded);
    let metadata = std::fs::metadata(&path).map_err(|err| {
        (
            path.clone(),
            format!("cannot read it ({err}): give the path of the host's private key"),
        )
    })?;
    if !metadata.is_file() {
        return Err((path, "it is not a file".to_string()));
    }
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err((
            path.clone(),
            format!(
                "it is readable by others (mode {mode:04o}) and ssh refuses such keys: run `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    Ok(path)
}

fn check_roles(hosts: &[Host], groups: &HashMap<&str, &RawGroup>, problems: &mut Vec<Problem>) {
    for (role, old_name) in [(Role::ControlPlane, "kube-master"), (Role::Etcd, "etcd")] {
        if !hosts.iter().any(|host| host.has_role(role)) && !problems_hide_role(problems) {
            let line = groups.get(role.group_name()).map_or(1, |group| group.line);
            problems.push(Problem::new(
                line,
                ProblemKind::MissingRole {
                    role,
                    group: role.group_name(),
                    old_name,
                },
            ));
        }
    }
    // An even etcd count is not a problem of the file: a running cluster passes through one
    // while it grows (`Inventory::check_odd_etcd` is asked when a new cluster is built).
}

/// A host dropped for another error may be the missing role holder:
/// don't pile on.
fn problems_hide_role(problems: &[Problem]) -> bool {
    problems.iter().any(|problem| {
        !matches!(
            problem.kind,
            ProblemKind::NoRole(_) | ProblemKind::MissingRole { .. }
        )
    })
}

fn check_unique_addresses(hosts: &[Host], problems: &mut Vec<Problem>) {
    for (index, host) in hosts.iter().enumerate() {
        let earlier = &hosts[..index];
        let mut clash = |what: &'static str, value: String, other: &Host| {
            problems.push(Problem::new(
                host.line,
                ProblemKind::DuplicateAddress {
                    host: host.name.clone(),
                    what,
                    value,
                    other: other.name.clone(),
                    other_line: other.line,
                },
            ));
        };
        if let Some(ip) = host.ip
            && let Some(other) = earlier.iter().find(|o| o.ip == Some(ip))
        {
            clash("ip", ip.to_string(), other);
        }
        if let Some(ip) = host.access_ip
            && let Some(other) = earlier.iter().find(|o| o.access_ip == Some(ip))
        {
            clash("access_ip", ip.to_string(), other);
        }
        if let Some(other) = earlier
            .iter()
            .find(|o| o.ssh_host == host.ssh_host && o.ssh_port == host.ssh_port)
        {
            clash(
                "ssh address",
                format!("{}:{}", host.ssh_host, host.ssh_port),
                other,
            );
        }
    }
}

/// Inventory names become Kubernetes node names: a DNS-1123 subdomain.
fn is_valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert!(is_valid_node_name("node1"));
        assert!(is_valid_node_name("node-1.lab"));
        assert!(!is_valid_node_name("Node1"));
        assert!(!is_valid_node_name("node_1"));
        assert!(!is_valid_node_name("-a"));
        assert!(!is_valid_node_name("a..b"));
    }
}
