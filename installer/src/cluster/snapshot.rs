//! etcd snapshots copied to the operator's side before anything destructive (`reset`, removing an
//! etcd member): taken on a member with the bundle's etcdctl, checked with `snapshot status`,
//! brought home over SSH with its sha256 compared, and kept in `<state>/snapshots/` next to a
//! JSON record of what it holds.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::membership::etcdctl;
use super::paths::ILHA_DIR;
use crate::ssh::{Fleet, Session};

/// Where the snapshot is written on the member before it is copied out (removed afterwards).
pub const REMOTE_SNAPSHOT: &str = "/var/lib/ilha/snapshot.db";

/// What `etcdctl snapshot status -w json` says about a snapshot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStatus {
    pub hash: u64,
    pub revision: u64,
    #[serde(rename = "totalKey")]
    pub total_keys: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

/// A snapshot saved on the operator's side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub path: PathBuf,
    /// The member it was taken from.
    pub member: String,
    pub sha256: String,
    pub status: SnapshotStatus,
    /// Unix time it was taken.
    pub taken_at: u64,
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "etcd snapshot from {}: revision {}, {} keys, {:.1} MiB, saved to {}",
            self.member,
            self.status.revision,
            self.status.total_keys,
            self.status.total_size as f64 / (1024.0 * 1024.0),
            self.path.display()
        )
    }
}

/// Parses `etcdctl snapshot status -w json`.
pub fn parse_status(text: &str) -> anyhow::Result<SnapshotStatus> {
    serde_json::from_str(text.trim()).with_context(|| {
        format!(
            "unexpected `etcdctl snapshot status` output: {}",
            text.trim()
        )
    })
}

/// Takes a snapshot into [`REMOTE_SNAPSHOT`] on `session` (an etcd member) and reads it back with
/// `snapshot status`, which checks the file's own hash. A snapshot without keys is refused.
pub async fn take(session: &Session) -> anyhow::Result<SnapshotStatus> {
    let member = session.name();
    let script = format!(
        "set -euo pipefail\nmkdir -p {ILHA_DIR}\nrm -f {REMOTE_SNAPSHOT}\n\
         {save} >/dev/null\n{status}\n",
        save = etcdctl(&format!("snapshot save {REMOTE_SNAPSHOT}")),
        status = etcdctl(&format!("-w json snapshot status {REMOTE_SNAPSHOT}")),
    );
    let output = session
        .run_script("etcd snapshot", &script)
        .await
        .with_context(|| format!("{member}: taking an etcd snapshot"))?;
    let status =
        parse_status(&output.stdout).with_context(|| format!("{member}: {REMOTE_SNAPSHOT}"))?;
    if status.total_keys == 0 {
        bail!("{member}: the etcd snapshot holds no keys; not keeping it as a backup");
    }
    Ok(status)
}

/// Copies the snapshot [`take`] made to `local` (its sha256 compared with the member's), removes
/// it from the member and restricts the copy to its owner: it holds every Secret of the cluster.
/// Returns the copy's sha256.
pub async fn fetch(session: &Session, local: &Path) -> anyhow::Result<String> {
    let member = session.name();
    let downloaded = session.download(REMOTE_SNAPSHOT, local).await;
    let _ = session.run(&format!("rm -f {REMOTE_SNAPSHOT}")).await;
    downloaded
        .with_context(|| format!("{member}: copying the etcd snapshot to {}", local.display()))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(local, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", local.display()))?;
    let (sha256, _) = ilha_format::digest::sha256_file(local)
        .with_context(|| format!("reading {}", local.display()))?;
    Ok(sha256.to_string())
}

/// Takes a snapshot on `session` (an etcd member) and saves it under `<state_dir>/snapshots/`.
pub async fn save(session: &Session, state_dir: &Path) -> anyhow::Result<Snapshot> {
    let member = session.name().to_string();
    let status = take(session).await?;
    let taken_at = crate::clock::unix_now();
    let dir = state_dir.join("snapshots");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!(
        "etcd-{}-{member}.db",
        crate::clock::utc_stamp(taken_at)
    ));
    let sha256 = fetch(session, &path).await?;
    let snapshot = Snapshot {
        path: path.clone(),
        member,
        sha256,
        status,
        taken_at,
    };
    let record = path.with_extension("json");
    let json = serde_json::to_vec_pretty(&snapshot).expect("plain data serializes");
    crate::fsutil::write_atomic(&record, &json, 0o600)
        .with_context(|| format!("writing {}", record.display()))?;
    Ok(snapshot)
}

/// Tries each member in turn until one gives a good snapshot; the error lists every attempt.
pub async fn save_from_any(
    fleet: &Fleet,
    members: &[String],
    state_dir: &Path,
) -> anyhow::Result<Snapshot> {
    let mut failures = Vec::new();
    for member in members {
        let Some(session) = fleet.session(member) else {
            failures.push(format!("{member}: not connected"));
            continue;
        };
        match save(session, state_dir).await {
            Ok(snapshot) => return Ok(snapshot),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if members.is_empty() {
        bail!("no etcd member to take a snapshot from");
    }
    bail!(
        "no etcd member gave a snapshot:\n  {}",
        failures.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_read_from_etcdctl_json() {
        // etcdctl 3.4's `-w json snapshot status` output.
        let status = parse_status(
            "{\"hash\":3700738473,\"revision\":5821,\"totalKey\":1290,\"totalSize\":4034560}\n",
        )
        .unwrap();
        assert_eq!(
            status,
            SnapshotStatus {
                hash: 3_700_738_473,
                revision: 5821,
                total_keys: 1290,
                total_size: 4_034_560
            }
        );
        let err = parse_status("Error: snapshot file has wrong hash").unwrap_err();
        assert!(format!("{err:#}").contains("wrong hash"), "{err:#}");
    }
}
