//! etcd membership over the cluster's life: how each member was started, remembered in the state
//! directory (`etcd-members.json`), and the etcdctl calls that grow and shrink the cluster.
//!
//! etcd reads `--initial-cluster` and `--initial-cluster-state` only when its data directory is
//! empty. A member's unit therefore keeps the values it was started with: a new member joining
//! later does not change its elders' units, so they are not restarted (all restarted at once,
//! the cluster would lose its quorum).

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::paths::{BIN_DIR, ETCD_PKI_DIR};

const FILE: &str = "etcd-members.json";

/// `etcdctl` on a member against its own client port, as the health-check client.
pub fn etcdctl(args: &str) -> String {
    etcdctl_at("https://127.0.0.1:2379", "30s", args)
}

/// `etcdctl` on a member against `endpoints` (comma-separated client URLs), each command given
/// `timeout` (`3s`).
pub fn etcdctl_at(endpoints: &str, timeout: &str, args: &str) -> String {
    format!(
        "ETCDCTL_API=3 {BIN_DIR}/etcdctl --endpoints={endpoints} \
         --cacert={ETCD_PKI_DIR}/ca.crt --cert={ETCD_PKI_DIR}/healthcheck-client.crt \
         --key={ETCD_PKI_DIR}/healthcheck-client.key --command-timeout={timeout} {args}"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterState {
    /// Bootstrapped together with the other first members.
    New,
    /// Joined a running cluster after `etcdctl member add`.
    Existing,
}

impl ClusterState {
    pub fn flag(self) -> &'static str {
        match self {
            ClusterState::New => "new",
            ClusterState::Existing => "existing",
        }
    }
}

/// How one member starts: the `--initial-cluster` members (name, peer URL) and state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub initial_cluster: Vec<(String, String)>,
    pub state: ClusterState,
}

impl Bootstrap {
    /// `name=url,name=url` for `--initial-cluster`.
    pub fn initial_cluster_flag(&self) -> String {
        self.initial_cluster
            .iter()
            .map(|(name, url)| format!("{name}={url}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An etcd member as the plan sees it: inventory name and peer URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedMember {
    pub name: String,
    pub peer_url: String,
    /// Already started once (its `etcd` step is in its journal).
    pub established: bool,
}

/// The bootstrap of every planned member, reusing what the state directory remembers and
/// deciding it for members seen for the first time; written back when anything was added.
///
/// - no member established: a new cluster of every planned member;
/// - otherwise each newcomer joins the running cluster, in inventory order, so its initial
///   cluster is the established members plus the newcomers before it and itself.
pub fn bootstrap(
    state_dir: &Path,
    members: &[PlannedMember],
) -> anyhow::Result<BTreeMap<String, Bootstrap>> {
    let path = state_dir.join(FILE);
    let mut stored = load(&path)?;
    let any_established = members.iter().any(|m| m.established);
    let mut changed = false;

    if !any_established {
        let everyone: Vec<(String, String)> = members
            .iter()
            .map(|m| (m.name.clone(), m.peer_url.clone()))
            .collect();
        for m in members {
            let fresh = Bootstrap {
                initial_cluster: everyone.clone(),
                state: ClusterState::New,
            };
            if stored.get(&m.name) != Some(&fresh) {
                stored.insert(m.name.clone(), fresh);
                changed = true;
            }
        }
    } else {
        // Established members the record does not know (a cluster installed before the record
        // existed) were bootstrapped together, as a new cluster of the established ones.
        let elders: Vec<(String, String)> = members
            .iter()
            .filter(|m| m.established)
            .map(|m| (m.name.clone(), m.peer_url.clone()))
            .collect();
        for m in members.iter().filter(|m| m.established) {
            if !stored.contains_key(&m.name) {
                stored.insert(
                    m.name.clone(),
                    Bootstrap {
                        initial_cluster: elders.clone(),
                        state: ClusterState::New,
                    },
                );
                changed = true;
            }
        }
        let mut running = elders;
        for m in members.iter().filter(|m| !m.established) {
            running.push((m.name.clone(), m.peer_url.clone()));
            let join = Bootstrap {
                initial_cluster: running.clone(),
                state: ClusterState::Existing,
            };
            if stored.get(&m.name) != Some(&join) {
                stored.insert(m.name.clone(), join);
                changed = true;
            }
        }
    }
    if changed {
        save(&path, &stored)?;
    }
    Ok(members
        .iter()
        .map(|m| (m.name.clone(), stored[&m.name].clone()))
        .collect())
}

/// Forgets a removed member, so a host of the same name later joins afresh.
pub fn forget(state_dir: &Path, name: &str) -> anyhow::Result<()> {
    let path = state_dir.join(FILE);
    let mut stored = load(&path)?;
    if stored.remove(name).is_some() {
        save(&path, &stored)?;
    }
    Ok(())
}

/// Writes `etcd-members.json` holding exactly `members`: for `ilha state recover`, which reads
/// each member's bootstrap back from its unit's `--initial-cluster` flags.
pub fn import(state_dir: &Path, members: &BTreeMap<String, Bootstrap>) -> anyhow::Result<()> {
    save(&state_dir.join(FILE), members)
}

fn load(path: &Path) -> anyhow::Result<BTreeMap<String, Bootstrap>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an etcd membership record", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn save(path: &Path, stored: &BTreeMap<String, Bootstrap>) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(stored).expect("plain data serializes");
    crate::fsutil::write_atomic(path, &json, 0o644)
        .with_context(|| format!("writing {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The running cluster, as etcdctl reports it

/// One entry of `etcdctl member list -w json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    #[serde(rename = "ID")]
    pub id: u64,
    /// Empty until the member has started once.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
}

impl Member {
    /// `etcdctl member remove` takes the ID in hex.
    pub fn hex_id(&self) -> String {
        format!("{:x}", self.id)
    }
}

#[derive(Debug, Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<Member>,
}

pub fn parse_member_list(text: &str) -> anyhow::Result<Vec<Member>> {
    let list: MemberList = serde_json::from_str(text.trim()).with_context(|| {
        format!(
            "unexpected `etcdctl member list` output: {}",
            text.trim().chars().take(200).collect::<String>()
        )
    })?;
    Ok(list.members)
}

/// Fewest members that form a quorum of `n`.
pub fn quorum(n: usize) -> usize {
    n / 2 + 1
}

/// Whether removing `removing` of the `members` keeps etcd safe: the members left must be able
/// to form a quorum of the current cluster on their own (so the removal never depends on a
/// member that is going away), and some member must be left. The error says why not.
pub fn check_removal(
    members: &[Member],
    removing: &[&str],
    healthy: &[&str],
) -> anyhow::Result<()> {
    let n = members.len();
    let leaving = members
        .iter()
        .filter(|m| removing.contains(&m.name.as_str()))
        .count();
    let staying: Vec<&Member> = members
        .iter()
        .filter(|m| !removing.contains(&m.name.as_str()))
        .collect();
    let staying_healthy = staying
        .iter()
        .filter(|m| healthy.contains(&m.name.as_str()))
        .count();
    if staying.is_empty() {
        bail!(
            "removing {} would remove every etcd member ({n}): the cluster's data would be gone",
            removing.join(", ")
        );
    }
    if staying.len() < quorum(n) {
        bail!(
            "removing {leaving} of {n} etcd members leaves {}, fewer than the {} a {n}-member \
             cluster needs for its quorum: one more failure during or after the removal would stop \
             the cluster. Remove one member at a time (adding members first with `ilha scale` if the \
             cluster must keep its size)",
            staying.len(),
            quorum(n)
        );
    }
    if staying_healthy < quorum(staying.len()) {
        bail!(
            "only {staying_healthy} of the {} etcd members that would stay are healthy; they \
             need {} for a quorum. Repair the unhealthy members first",
            staying.len(),
            quorum(staying.len())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn planned(name: &str, established: bool) -> PlannedMember {
        PlannedMember {
            name: name.to_string(),
            peer_url: format!("https://{name}:2380"),
            established,
        }
    }

    #[test]
    fn a_new_cluster_starts_every_member_together() {
        let dir = tempfile::tempdir().unwrap();
        let members = [
            planned("a", false),
            planned("b", false),
            planned("c", false),
        ];
        let boot = bootstrap(dir.path(), &members).unwrap();
        assert_eq!(boot["b"].state, ClusterState::New);
        assert_eq!(
            boot["b"].initial_cluster_flag(),
            "a=https://a:2380,b=https://b:2380,c=https://c:2380"
        );
    }

    #[test]
    fn newcomers_join_one_after_another_and_elders_keep_their_start() {
        let dir = tempfile::tempdir().unwrap();
        let first = [
            planned("a", false),
            planned("b", false),
            planned("c", false),
        ];
        let before = bootstrap(dir.path(), &first).unwrap();
        let grown = [
            planned("a", true),
            planned("b", true),
            planned("c", true),
            planned("d", false),
            planned("e", false),
        ];
        let after = bootstrap(dir.path(), &grown).unwrap();
        for elder in ["a", "b", "c"] {
            assert_eq!(after[elder], before[elder], "{elder} must not change");
        }
        assert_eq!(after["d"].state, ClusterState::Existing);
        assert_eq!(
            after["d"].initial_cluster_flag(),
            "a=https://a:2380,b=https://b:2380,c=https://c:2380,d=https://d:2380"
        );
        assert!(
            after["e"]
                .initial_cluster_flag()
                .ends_with("d=https://d:2380,e=https://e:2380")
        );

        // Once d has started, a re-run keeps its record (its unit does not change).
        let again = [
            planned("a", true),
            planned("b", true),
            planned("c", true),
            planned("d", true),
        ];
        assert_eq!(bootstrap(dir.path(), &again).unwrap()["d"], after["d"]);

        // Removed and added again: joins afresh.
        forget(dir.path(), "d").unwrap();
        let back = bootstrap(dir.path(), &grown[..4]).unwrap();
        assert_eq!(back["d"].state, ClusterState::Existing);
    }

    #[test]
    fn a_cluster_without_a_record_is_taken_as_bootstrapped_together() {
        let dir = tempfile::tempdir().unwrap();
        let members = [planned("a", true), planned("b", true), planned("x", false)];
        let boot = bootstrap(dir.path(), &members).unwrap();
        assert_eq!(boot["a"].state, ClusterState::New);
        assert_eq!(
            boot["a"].initial_cluster_flag(),
            "a=https://a:2380,b=https://b:2380"
        );
        assert_eq!(boot["x"].state, ClusterState::Existing);
    }

    fn member(id: u64, name: &str) -> Member {
        Member {
            id,
            name: name.to_string(),
            peer_urls: vec![],
            client_urls: vec![],
        }
    }

    #[test]
    fn removals_that_break_the_quorum_are_refused() {
        let three = [member(1, "a"), member(2, "b"), member(3, "c")];
        let all = ["a", "b", "c"];
        check_removal(&three, &["c"], &all).unwrap();
        let err = check_removal(&three, &["b", "c"], &all)
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaves 1, fewer than the 2"), "{err}");
        let err = check_removal(&three, &["a", "b", "c"], &all)
            .unwrap_err()
            .to_string();
        assert!(err.contains("every etcd member"), "{err}");
        // Two left but one of them down: the two could not agree on anything.
        let err = check_removal(&three, &["c"], &["a", "c"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("only 1 of the 2"), "{err}");
        let four = [
            member(1, "a"),
            member(2, "b"),
            member(3, "c"),
            member(4, "d"),
        ];
        check_removal(&four, &["d"], &["a", "b", "c", "d"]).unwrap();
    }

    #[test]
    fn member_list_json_is_read_with_unstarted_members() {
        let text = r#"{"header":{"cluster_id":1,"member_id":2,"raft_term":3},"members":[
            {"ID":10276657743932975437,"name":"node1","peerURLs":["https://10.88.0.11:2380"],"clientURLs":["https://10.88.0.11:2379"]},
            {"ID":1234,"peerURLs":["https://10.88.0.17:2380"]}]}"#;
        let members = parse_member_list(text).unwrap();
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].hex_id(), "8e9e05c52164694d");
        assert_eq!(members[1].name, "");
        assert_eq!(members[1].peer_urls, ["https://10.88.0.17:2380"]);
    }
}
