//! etcd snapshots copied to the operator's side before anything destructive (`reset`, removing an
//! etcd member): taken on a member with the bundle's etcdctl (`snapshot save`), checked with
//! `snapshot status` of the host's snapshot tool ([`snapshot_tool_functions`]: etcdutl, or
//! etcdctl on etcd 3.4), brought home over SSH with its sha256 compared, and kept in
//! `<state>/snapshots/` next to a JSON record of what it holds.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use super::membership::etcdctl;
use super::paths::{BIN_DIR, ILHA_DIR};
use crate::ssh::{Fleet, Session};

/// Where the snapshot is written on the member before it is copied out (removed afterwards).
pub const REMOTE_SNAPSHOT: &str = "/var/lib/ilha/snapshot.db";

/// Exit status of a snapshot script on a host whose etcd has no tool for offline snapshots.
pub const NO_SNAPSHOT_TOOL: i32 = 97;

/// Bash defining `snapshot_status FILE` (etcd's one-line JSON status of a snapshot file) and
/// `snapshot_restore FILE FLAG...`, run by the host's own tool, chosen on the host so that
/// hosts installed by older bundles are judged by what they have: `etcdutl` where it is
/// installed (etcd 3.5 and later ship it); `etcdctl` only where it is etcd 3.4's or 3.5's (etcd
/// v3.6.0 removed `snapshot status` and `snapshot restore` from etcdctl). Otherwise the script
/// stops with [`NO_SNAPSHOT_TOOL`] and says what to do, never with etcdctl's "unknown command".
/// The two tools' restore flags used by ilha are the same (`--name`, `--data-dir`,
/// `--initial-cluster`, `--initial-cluster-token`, `--initial-advertise-peer-urls`); etcdutl
/// has no client flags (it reads files, not a server). `snapshot_tool` holds the choice.
pub fn snapshot_tool_functions() -> String {
    format!(
        r#"choose_snapshot_tool() {{
  if [ -x {BIN_DIR}/etcdutl ]; then echo etcdutl; return 0; fi
  local version
  version=$(ETCDCTL_API=3 {BIN_DIR}/etcdctl version 2>/dev/null | sed -n 's/^etcdctl version: *//p' || true)
  case "$version" in
    3.[0-5].*) echo etcdctl ;;
    *) echo "{BIN_DIR}/etcdutl is missing and {BIN_DIR}/etcdctl is version ${{version:-unknown (it did not say)}}: etcdctl of etcd 3.6 and later has no \`snapshot status\` or \`snapshot restore\`, only etcdutl reads and restores snapshots. Rebuild the bundle with etcdutl (from the same etcd release as etcd and etcdctl) and run \`ilha up\` to install it" >&2
       return {NO_SNAPSHOT_TOOL} ;;
  esac
}}
snapshot_tool=$(choose_snapshot_tool) || exit {NO_SNAPSHOT_TOOL}
snapshot_status() {{ # FILE
  case "$snapshot_tool" in
    etcdutl) {BIN_DIR}/etcdutl -w json snapshot status "$1" ;;
    etcdctl) ETCDCTL_API=3 {BIN_DIR}/etcdctl -w json snapshot status "$1" ;;
  esac
}}
snapshot_restore() {{ # FILE FLAG...
  case "$snapshot_tool" in
    etcdutl) {BIN_DIR}/etcdutl snapshot restore "$@" ;;
    etcdctl) ETCDCTL_API=3 {BIN_DIR}/etcdctl snapshot restore "$@" ;;
  esac
}}
"#
    )
}

/// What `snapshot status -w json` (etcdutl, or etcdctl up to etcd 3.5) says about a snapshot
/// file; later etcd versions add fields (ignored).
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

/// Parses `snapshot status -w json` (etcdutl's or etcdctl's: the same object).
pub fn parse_status(text: &str) -> anyhow::Result<SnapshotStatus> {
    serde_json::from_str(text.trim())
        .with_context(|| format!("unexpected `snapshot status` output: {}", text.trim()))
}

/// Takes a snapshot into [`REMOTE_SNAPSHOT`] on `session` (an etcd member) and reads it back with
/// `snapshot status`, which checks the file's own hash. A snapshot without keys is refused.
pub async fn take(session: &Session) -> anyhow::Result<SnapshotStatus> {
    let member = session.name();
    let script = take_script();
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

/// The tool is chosen first: a host that cannot read a snapshot does not take one.
fn take_script() -> String {
    format!(
        "set -euo pipefail\n{tools}mkdir -p {ILHA_DIR}\nrm -f {REMOTE_SNAPSHOT}\n\
         {save} >/dev/null\nsnapshot_status {REMOTE_SNAPSHOT}\n",
        tools = snapshot_tool_functions(),
        save = etcdctl(&format!("snapshot save {REMOTE_SNAPSHOT}")),
    )
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
pub(crate) mod tests {
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
        // etcdutl 3.6 adds the storage version: ignored.
        let status = parse_status(
            "{\"hash\":1,\"revision\":2,\"totalKey\":3,\"totalSize\":4,\"version\":\"3.6.0\"}",
        )
        .unwrap();
        assert_eq!((status.revision, status.total_keys), (2, 3));
    }

    /// A host's bin directory with stand-ins: `etcdctl version` says `etcdctl_version` (absent
    /// when `None`), and every call of either tool is logged as `TOOL ARGS` to `calls`.
    pub(crate) struct FakeHost {
        pub dir: tempfile::TempDir,
    }

    impl FakeHost {
        pub fn new(etcdctl_version: Option<&str>, etcdutl: bool) -> FakeHost {
            use std::os::unix::fs::PermissionsExt as _;
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("calls");
            let mut tools = Vec::new();
            if let Some(version) = etcdctl_version {
                tools.push((
                    "etcdctl",
                    format!(
                        "if [ \"$1\" = version ]; then echo \"etcdctl version: {version}\"; echo 'API version: 3'; exit 0; fi\n"
                    ),
                ));
            }
            if etcdutl {
                tools.push(("etcdutl", String::new()));
            }
            for (name, extra) in tools {
                let path = dir.path().join(name);
                std::fs::write(
                    &path,
                    format!(
                        "#!/bin/bash\n{extra}echo \"{name} $*\" >> {log}\n\
                         case \"$*\" in *'snapshot status'*) echo '{{\"hash\":1,\"revision\":7,\"totalKey\":9,\"totalSize\":4096}}' ;; esac\n",
                        log = log.display()
                    ),
                )
                .unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
            FakeHost { dir }
        }

        /// `script` with the host's bin directory replaced by this one, run by bash.
        pub fn run(&self, script: &str) -> std::process::Output {
            let script = script.replace(BIN_DIR, &self.dir.path().display().to_string());
            std::process::Command::new("bash")
                .args(["-c", &format!("set -euo pipefail\n{script}")])
                .output()
                .unwrap()
        }

        pub fn calls(&self) -> String {
            std::fs::read_to_string(self.dir.path().join("calls")).unwrap_or_default()
        }
    }

    fn status_with(host: &FakeHost) -> std::process::Output {
        host.run(&format!(
            "{}snapshot_status /x/snap.db\nsnapshot_restore /x/snap.db --name n --data-dir /x/d\n",
            snapshot_tool_functions()
        ))
    }

    #[test]
    fn the_snapshot_tool_is_etcdutl_where_the_host_has_it() {
        for etcdctl in ["3.5.16", "3.6.5", "3.4.23"] {
            let host = FakeHost::new(Some(etcdctl), true);
            let out = status_with(&host);
            assert!(out.status.success(), "{out:?}");
            let status = parse_status(&String::from_utf8_lossy(&out.stdout)).unwrap();
            assert_eq!(status.revision, 7);
            assert_eq!(
                host.calls(),
                "etcdutl -w json snapshot status /x/snap.db\n\
                 etcdutl snapshot restore /x/snap.db --name n --data-dir /x/d\n",
                "etcdctl {etcdctl}"
            );
        }
    }

    #[test]
    fn etcdctl_reads_snapshots_only_up_to_etcd_3_5() {
        for version in ["3.4.23", "3.5.16"] {
            let host = FakeHost::new(Some(version), false);
            let out = status_with(&host);
            assert!(out.status.success(), "{version}: {out:?}");
            assert_eq!(
                host.calls(),
                "etcdctl -w json snapshot status /x/snap.db\n\
                 etcdctl snapshot restore /x/snap.db --name n --data-dir /x/d\n",
                "{version}"
            );
        }
    }

    #[test]
    fn etcd_3_6_without_etcdutl_stops_saying_what_to_do() {
        for (version, said) in [
            (Some("3.6.5"), "version 3.6.5"),
            (Some("3.10.0"), "version 3.10.0"),
            (None, "version unknown (it did not say)"),
        ] {
            let host = FakeHost::new(version, false);
            let out = status_with(&host);
            assert_eq!(out.status.code(), Some(NO_SNAPSHOT_TOOL), "{version:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            let dir = host.dir.path().display();
            assert!(
                err.contains(&format!(
                    "{dir}/etcdutl is missing and {dir}/etcdctl is {said}"
                )),
                "{err}"
            );
            assert!(
                err.contains("Rebuild the bundle with etcdutl")
                    && err.contains("`ilha up`")
                    && err.contains("`snapshot status`"),
                "{err}"
            );
            // Nothing ran: no "unknown command" from etcdctl.
            assert!(!host.calls().contains("snapshot"), "{}", host.calls());
        }
    }

    #[test]
    fn a_snapshot_is_saved_by_etcdctl_and_read_by_the_hosts_tool() {
        let script = take_script();
        crate::cluster::tests_support::assert_bash_syntax(&script);
        assert!(
            script.contains("/usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379"),
            "{script}"
        );
        assert!(script.contains("snapshot save /var/lib/ilha/snapshot.db"));
        assert!(script.ends_with("snapshot_status /var/lib/ilha/snapshot.db\n"));
        // The tool is chosen before the snapshot is taken.
        assert!(
            script.find("choose_snapshot_tool)").unwrap() < script.find("snapshot save").unwrap()
        );
        let tools = snapshot_tool_functions();
        assert!(tools.contains("/usr/local/bin/etcdutl -w json snapshot status \"$1\""));
        assert!(tools.contains("/usr/local/bin/etcdutl snapshot restore \"$@\""));
    }
}
