//! The inventory as written, before any meaning is given to it: groups, host entries and
//! variables, each with its line. The INI and YAML readers both produce this.

/// A variable as written (`key=value`). `value` is `None` for YAML values that are lists or maps:
/// no variable ilha reads takes those, so they only matter when they are one of ours.
#[derive(Debug, Clone)]
pub struct RawVar {
    pub key: String,
    pub value: Option<String>,
    pub line: usize,
}

/// One mention of a host inside a group, with the variables given at that mention (if any).
#[derive(Debug, Clone)]
pub struct RawHostEntry {
    pub name: String,
    pub line: usize,
    pub vars: Vec<RawVar>,
}

#[derive(Debug, Clone)]
pub struct RawChild {
    pub name: String,
    pub line: usize,
}

#[derive(Debug, Clone)]
pub struct RawGroup {
    /// As written (`kube-master`), for messages.
    pub name: String,
    /// The line that first mentions the group.
    pub line: usize,
    pub hosts: Vec<RawHostEntry>,
    pub children: Vec<RawChild>,
    pub vars: Vec<RawVar>,
}

#[derive(Debug, Default, Clone)]
pub struct RawInventory {
    pub groups: Vec<RawGroup>,
}

impl RawInventory {
    /// The group of that name (after mapping old Kubespray names to today's), created at `line`
    /// if new. Ansible merges sections that repeat a group name; so do we.
    pub fn group_mut(&mut self, name: &str, line: usize) -> &mut RawGroup {
        let canonical = canonical_group_name(name);
        let index = match self
            .groups
            .iter()
            .position(|group| canonical_group_name(&group.name) == canonical)
        {
            Some(index) => index,
            None => {
                self.groups.push(RawGroup {
                    name: name.to_string(),
                    line,
                    hosts: Vec::new(),
                    children: Vec::new(),
                    vars: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[index]
    }
}

/// Maps the group names Kubespray used over the years to today's: the seed guide (2017) wrote
/// `kube-master`, `kube-node`, `k8s-cluster`; Kubespray 2.14-2.16 wrote `kube-master` →
/// `kube_master`; today it is `kube_control_plane`, `kube_node`, `k8s_cluster`.
pub fn canonical_group_name(name: &str) -> &str {
    match name {
        "kube-master" | "kube_master" => "kube_control_plane",
        "kube-node" => "kube_node",
        "k8s-cluster" => "k8s_cluster",
        other => other,
    }
}
