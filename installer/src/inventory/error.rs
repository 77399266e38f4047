//! Inventory errors. Every problem carries the line it is about; all problems found in a file are
//! reported together so the operator fixes them in one pass.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read inventory {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// One line per problem, each `FILE:LINE: message`.
    #[error("{}", render(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render(path: &std::path::Path, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("{}:{problem}", path.display()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One problem at one line (1-based) of the inventory file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub kind: ProblemKind,
}

impl Problem {
    pub fn new(line: usize, kind: ProblemKind) -> Self {
        Problem { line, kind }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.line, self.kind)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProblemKind {
    #[error("bad section header `{0}`: expected `[group]`, `[group:children]` or `[group:vars]`")]
    BadSectionHeader(String),
    #[error("`{0}` is not `key=value`")]
    NotKeyValue(String),
    #[error("`{0}` is not a group name (a `:children` section lists one group per line)")]
    BadChildLine(String),
    #[error("unterminated quote in `{0}`")]
    UnterminatedQuote(String),
    #[error(
        "host range `{pattern}`: {why} (Ansible's forms: `node[1:3]`, `node[01:03]`, `worker[a:c]`, `node[1:9:2]`)"
    )]
    BadHostRange { pattern: String, why: String },
    #[error(
        "host name `{0}` is not a valid Kubernetes node name (lowercase letters, digits, `-` and `.`, at most 63 characters per label)"
    )]
    BadHostName(String),
    #[error("YAML: {0}")]
    Yaml(String),
    #[error("host `{host}` is defined twice (first at line {first_line})")]
    DuplicateHostDefinition { host: String, first_line: usize },
    #[error("host `{host}` is listed twice in group `{group}` (first at line {first_line})")]
    DuplicateGroupMember {
        host: String,
        group: String,
        first_line: usize,
    },
    #[error("variable `{key}` is set twice for `{owner}` (first at line {first_line})")]
    DuplicateVar {
        key: String,
        owner: String,
        first_line: usize,
    },
    #[error(
        "host `{host}`: `{key}` comes from both group `{group_a}` (line {line_a}) and group `{group_b}`; set it on the host or on one group"
    )]
    ConflictingGroupVar {
        host: String,
        key: String,
        group_a: String,
        line_a: usize,
        group_b: String,
    },
    #[error(
        "group `{child}`, listed as a child of `{parent}`, is defined nowhere (declare an empty `[{child}]` section if that is intended)"
    )]
    UndefinedChildGroup { child: String, parent: String },
    #[error("group `{0}` is its own ancestor through `:children`")]
    GroupCycle(String),
    #[error("group `{group}` cannot have children: {why}")]
    ChildrenNotAllowed { group: String, why: &'static str },
    #[error("host `{host}`: `{key}={value}` is not an IP address{hint}")]
    BadIp {
        host: String,
        key: String,
        value: String,
        hint: &'static str,
    },
    #[error("host `{host}`: `{key}={value}` is not a port number (1-65535)")]
    BadPort {
        host: String,
        key: String,
        value: String,
    },
    #[error("host `{host}`: `{key}` has `{argument}`, which ilha refuses: {why}")]
    BadSshArgument {
        host: String,
        key: String,
        argument: String,
        why: String,
    },
    #[error("host `{host}`: `{key}` names {}: {why}", path.display())]
    BadKeyFile {
        host: String,
        key: String,
        path: std::path::PathBuf,
        why: String,
    },
    #[error(
        "host `{host}`: `{key}={value}`: ilha supports become through sudo to root only (`ansible_become_method=sudo`, `ansible_become_user=root`, the defaults); remove `{key}` or set it to {}",
        if key == "ansible_become_user" { "root" } else { "sudo" }
    )]
    BecomeUnsupported {
        host: String,
        key: String,
        value: String,
    },
    #[error(
        "host `{host}`: a become password is set: ilha runs `sudo -n` and never types a password; give the user a NOPASSWD rule (for example `{user} ALL=(root) NOPASSWD: ALL` in /etc/sudoers.d/{user}) and remove the password variable"
    )]
    BecomePassword { host: String, user: String },
    #[error("host `{host}`: `{key}={value}` is not a boolean (true, yes, 1 or false, no, 0)")]
    NotBoolean {
        host: String,
        key: String,
        value: String,
    },
    #[error("host `{host}`: `{key}` is empty")]
    EmptyVar { host: String, key: String },
    #[error("host `{host}` has the same {what} {value} as host `{other}` (line {other_line})")]
    DuplicateAddress {
        host: String,
        what: &'static str,
        value: String,
        other: String,
        other_line: usize,
    },
    #[error(
        "host `{0}` has no role: list it under `kube_control_plane` (or `kube-master`), `etcd` or `kube_node` (or `kube-node`)"
    )]
    NoRole(String),
    #[error(
        "no {role} host: group `{group}` (or its old name `{old_name}`) is missing or empty; a cluster needs at least one"
    )]
    MissingRole {
        role: super::Role,
        group: &'static str,
        old_name: &'static str,
    },
    #[error(
        "the etcd group has {0} members: etcd needs an odd number (1, 3, 5...) to keep a majority when members fail, as Kubespray requires"
    )]
    EvenEtcd(usize),
}
