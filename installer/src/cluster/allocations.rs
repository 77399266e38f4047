//! Pod ranges: ilha gives each Kubernetes node one range of `pod_cidr` and remembers it in the
//! state directory, so a range never moves once pods use it (re-runs, `scale`, a reordered
//! inventory) and CNI configs and routes can be written before any kubelet registers.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

const FILE: &str = "pod-ranges.json";

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Stored {
    pod_cidr: IpNet,
    node_prefix: u8,
    ranges: BTreeMap<String, IpNet>,
}

/// The pod range of every node in `nodes`, reusing stored ones and giving new nodes the lowest
/// free range. Written back to `<state_dir>/pod-ranges.json` when anything was added.
pub fn allocate(
    state_dir: &Path,
    pod_cidr: IpNet,
    node_prefix: u8,
    nodes: &[&str],
) -> anyhow::Result<BTreeMap<String, IpNet>> {
    let path = state_dir.join(FILE);
    let mut stored = match std::fs::read(&path) {
        Ok(bytes) => {
            let stored: Stored = serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a pod range record", path.display()))?;
            if stored.pod_cidr != pod_cidr || stored.node_prefix != node_prefix {
                bail!(
                    "{}: this cluster's pods use {} (/{} per node); the config now says {} (/{}). \
                     The pod range of an existing cluster cannot change",
                    path.display(),
                    stored.pod_cidr,
                    stored.node_prefix,
                    pod_cidr,
                    node_prefix
                );
            }
            stored
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored {
            pod_cidr,
            node_prefix,
            ranges: BTreeMap::new(),
        },
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let mut changed = false;
    for node in nodes {
        if stored.ranges.contains_key(*node) {
            continue;
        }
        let taken: Vec<IpNet> = stored.ranges.values().copied().collect();
        let free = pod_cidr
            .subnets(node_prefix)
            .with_context(|| format!("{pod_cidr} cannot be split into /{node_prefix} ranges"))?
            .find(|candidate| !taken.contains(candidate))
            .with_context(|| {
                format!("no free /{node_prefix} left in {pod_cidr} for node {node}")
            })?;
        stored.ranges.insert(node.to_string(), free);
        changed = true;
    }
    if changed {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        crate::fsutil::write_atomic(&path, &serde_json::to_vec_pretty(&stored)?, 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(nodes
        .iter()
        .map(|n| (n.to_string(), stored.ranges[*n]))
        .collect())
}

/// Writes `<state_dir>/pod-ranges.json` holding exactly `ranges`, as [`allocate`] keeps it: for
/// `ilha state recover`, which reads them back from the Nodes' `spec.podCIDR`. Each range must be
/// a /`node_prefix` inside `pod_cidr`, and no two nodes may share one.
pub fn import(
    state_dir: &Path,
    pod_cidr: IpNet,
    node_prefix: u8,
    ranges: &BTreeMap<String, IpNet>,
) -> anyhow::Result<()> {
    let mut seen: BTreeMap<IpNet, &str> = BTreeMap::new();
    for (node, range) in ranges {
        if range.prefix_len() != node_prefix || !pod_cidr.contains(range) {
            bail!(
                "node {node}: its pod range {range} is not a /{node_prefix} of the cluster's \
                 pod_cidr {pod_cidr}; is the cluster config the one this cluster was built with?"
            );
        }
        if let Some(other) = seen.insert(*range, node) {
            bail!("nodes {other} and {node} both have the pod range {range}");
        }
    }
    let stored = Stored {
        pod_cidr,
        node_prefix,
        ranges: ranges.clone(),
    };
    let path = state_dir.join(FILE);
    crate::fsutil::write_atomic(&path, &serde_json::to_vec_pretty(&stored)?, 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_are_stable_and_new_nodes_take_the_lowest_free_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = allocate(dir.path(), cidr("10.244.0.0/16"), 24, &["a", "b", "c"]).unwrap();
        assert_eq!(first["a"], cidr("10.244.0.0/24"));
        assert_eq!(first["c"], cidr("10.244.2.0/24"));
        // Reordered, with a newcomer: old ranges stay, the newcomer gets 10.244.3.0/24.
        let second = allocate(dir.path(), cidr("10.244.0.0/16"), 24, &["d", "c", "a"]).unwrap();
        assert_eq!(second["c"], cidr("10.244.2.0/24"));
        assert_eq!(second["d"], cidr("10.244.3.0/24"));
    }

    #[test]
    fn a_changed_pod_cidr_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        allocate(dir.path(), cidr("10.244.0.0/16"), 24, &["a"]).unwrap();
        let err = allocate(dir.path(), cidr("10.200.0.0/16"), 24, &["a"]).unwrap_err();
        assert!(err.to_string().contains("cannot change"), "{err}");
    }

    #[test]
    fn imported_ranges_are_kept_and_new_nodes_fill_the_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let ranges: BTreeMap<String, IpNet> = [
            ("a".to_string(), cidr("10.244.2.0/24")),
            ("b".to_string(), cidr("10.244.0.0/24")),
        ]
        .into();
        import(dir.path(), cidr("10.244.0.0/16"), 24, &ranges).unwrap();
        let got = allocate(dir.path(), cidr("10.244.0.0/16"), 24, &["a", "b", "c"]).unwrap();
        assert_eq!(got["a"], cidr("10.244.2.0/24"));
        assert_eq!(got["b"], cidr("10.244.0.0/24"));
        assert_eq!(got["c"], cidr("10.244.1.0/24"));
    }

    #[test]
    fn an_imported_range_outside_the_pod_cidr_or_shared_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside: BTreeMap<String, IpNet> = [("a".to_string(), cidr("10.9.0.0/24"))].into();
        let err = import(dir.path(), cidr("10.244.0.0/16"), 24, &outside).unwrap_err();
        assert!(err.to_string().contains("node a"), "{err}");
        let shared: BTreeMap<String, IpNet> = [
            ("a".to_string(), cidr("10.244.0.0/24")),
            ("b".to_string(), cidr("10.244.0.0/24")),
        ]
        .into();
        let err = import(dir.path(), cidr("10.244.0.0/16"), 24, &shared).unwrap_err();
        assert!(err.to_string().contains("a and b"), "{err}");
    }

    #[test]
    fn a_full_range_is_an_error_naming_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let err = allocate(dir.path(), cidr("10.244.0.0/23"), 24, &["a", "b", "c"]).unwrap_err();
        assert!(err.to_string().contains("node c"), "{err}");
    }
}
