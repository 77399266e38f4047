//! The etcd part of a backup: a snapshot from a healthy member, and the drill that proves it
//! restores. The drill runs on the member that took it, before the file leaves: the snapshot is
//! restored into a throwaway etcd, and that etcd must answer with the snapshot's revision and the
//! same number of keys the live cluster had at that revision.
//!
//! The throwaway etcd serves the whole dataset without TLS, so it listens on no TCP port at all:
//! clients and peers are unix sockets in an owner-only directory, which only root reaches.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context as _, bail};
use serde::Deserialize;

use super::kit::Drill;
use crate::cluster::membership::{self, etcdctl};
use crate::cluster::paths::BIN_DIR;
use crate::cluster::snapshot::{self, REMOTE_SNAPSHOT, SnapshotStatus};
use crate::ssh::{Fleet, Session};

/// Where the drill's etcd keeps its data and sockets (mode 0700, removed afterwards).
const DRILL_DIR: &str = "/var/lib/ilha/drill";
/// Unix sockets, relative to [`DRILL_DIR`] (the drill runs there): etcd 3.4 takes a unix URL only
/// in `host:port` form, which names the socket file `host:port` in its working directory.
const DRILL_CLIENT: &str = "unix://client:1";
const DRILL_PEER: &str = "unix://peer:2";

/// A snapshot on the operator's side, with its drill.
#[derive(Debug, Clone)]
pub struct DrilledSnapshot {
    pub member: String,
    pub status: SnapshotStatus,
    pub sha256: String,
    pub drill: Drill,
    /// (name, peer URL) of every member, as etcd listed them: the initial cluster a restore uses.
    pub members: Vec<(String, String)>,
}

/// `etcdctl get --limit=1 -w json`: the revision it answered at and how many keys the whole range
/// holds (`count` ignores the limit; etcdctl 3.4 has no `--count-only`).
#[derive(Debug, Deserialize)]
struct CountReply {
    header: CountHeader,
    #[serde(default)]
    count: u64,
}
#[derive(Debug, Deserialize)]
struct CountHeader {
    revision: u64,
}

/// `etcdctl` against the drill's etcd: its socket, no TLS (a unix URL with TLS flags would make
/// etcdctl speak TLS to it).
fn drill_etcdctl(args: &str) -> String {
    format!(
        "ETCDCTL_API=3 {BIN_DIR}/etcdctl --endpoints={DRILL_CLIENT} --command-timeout=3s {args}"
    )
}

/// The drill, as one script: the live count at the snapshot's revision first (compaction could
/// otherwise move past it), then the restore (by the host's snapshot tool: etcdutl, or etcd
/// 3.4's etcdctl) and the throwaway etcd. Prints two JSON lines.
fn drill_script(revision: u64) -> String {
    let name = "ilha-drill";
    let count_all = "get '' --from-key --limit=1 --keys-only -w json";
    format!(
        r#"set -euo pipefail
dir={DRILL_DIR}
rm -rf "$dir"; mkdir -p "$dir"; chmod 0700 "$dir"
cd "$dir"
live=$({live})
{tools}snapshot_restore {REMOTE_SNAPSHOT} --name {name} \
  --data-dir "$dir/data" --initial-cluster {name}={DRILL_PEER} \
  --initial-advertise-peer-urls {DRILL_PEER} >"$dir/restore.log" 2>&1 \
  || {{ cat "$dir/restore.log" >&2; exit 1; }}
{BIN_DIR}/etcd --name {name} --data-dir "$dir/data" \
  --listen-client-urls {DRILL_CLIENT} --advertise-client-urls {DRILL_CLIENT} \
  --listen-peer-urls {DRILL_PEER} --initial-advertise-peer-urls {DRILL_PEER} \
  --initial-cluster {name}={DRILL_PEER} >"$dir/etcd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; cd /; rm -rf "$dir"' EXIT
restored=
for _ in $(seq 150); do
  if restored=$({restored} 2>/dev/null); then break; fi
  if ! kill -0 $pid 2>/dev/null; then tail -n 20 "$dir/etcd.log" >&2; exit 1; fi
  sleep 0.1
done
[ -n "$restored" ] || {{ echo "the drill's etcd did not answer within 15s" >&2; tail -n 20 "$dir/etcd.log" >&2; exit 1; }}
echo "$live"
echo "$restored"
"#,
        live = etcdctl(&format!("{count_all} --rev={revision}")),
        restored = drill_etcdctl(count_all),
        tools = snapshot::snapshot_tool_functions(),
    )
}

/// Reads the drill script's two lines into a verdict.
fn judge(status: &SnapshotStatus, output: &str, seconds: f64) -> anyhow::Result<Drill> {
    let mut lines = output.lines().filter(|l| l.trim_start().starts_with('{'));
    let (Some(live), Some(restored)) = (lines.next(), lines.next()) else {
        bail!("unexpected drill output: {}", output.trim());
    };
    let live: CountReply =
        serde_json::from_str(live).with_context(|| format!("reading the live count: {live}"))?;
    let restored: CountReply = serde_json::from_str(restored)
        .with_context(|| format!("reading the restored count: {restored}"))?;
    let mut problems = Vec::new();
    if restored.header.revision != status.revision {
        problems.push(format!(
            "the restored etcd is at revision {}, the snapshot at {}",
            restored.header.revision, status.revision
        ));
    }
    if restored.count != live.count {
        problems.push(format!(
            "the restored etcd has {} keys, the live cluster had {} at revision {}",
            restored.count, live.count, status.revision
        ));
    }
    if restored.count == 0 {
        problems.push("the restored etcd holds no keys".to_string());
    }
    let passed = problems.is_empty();
    let detail = if passed {
        format!(
            "restored into a throwaway etcd: revision {}, {} keys, as the live cluster at that revision",
            restored.header.revision, restored.count
        )
    } else {
        problems.join("; ")
    };
    Ok(Drill {
        passed,
        revision: restored.header.revision,
        restored_keys: restored.count,
        live_keys: live.count,
        seconds,
        detail,
    })
}

/// What one member's attempt gave: a snapshot that passed its drill (copied to `local`), or a
/// drill that ran and disagreed with the live cluster (nothing copied).
enum Attempt {
    Passed(DrilledSnapshot),
    Disagreed(Drill),
}

/// Snapshot on `session`, drill, then copy it to `local` if the drill passed.
async fn snapshot_and_drill(session: &Session, local: &Path) -> anyhow::Result<Attempt> {
    let member = session.name().to_string();
    let status = snapshot::take(session).await?;
    let started = Instant::now();
    let drilled = session
        .run_script("etcd restore drill", &drill_script(status.revision))
        .await
        .with_context(|| format!("{member}: the restore drill of the etcd snapshot failed"));
    let drill = match drilled {
        Ok(out) => judge(&status, &out.stdout, started.elapsed().as_secs_f64())
            .with_context(|| format!("{member}: the restore drill"))?,
        Err(e) => {
            let _ = session.run(&format!("rm -f {REMOTE_SNAPSHOT}")).await;
            return Err(e);
        }
    };
    if !drill.passed {
        let _ = session.run(&format!("rm -f {REMOTE_SNAPSHOT}")).await;
        return Ok(Attempt::Disagreed(drill));
    }
    let list = session
        .run(&etcdctl("-w json member list"))
        .await
        .with_context(|| format!("{member}: listing etcd members"))?;
    let members = membership::parse_member_list(&list.stdout)?
        .into_iter()
        .filter_map(|m| Some((m.name.clone(), m.peer_urls.first()?.clone())))
        .collect();
    let sha256 = snapshot::fetch(session, local).await?;
    Ok(Attempt::Passed(DrilledSnapshot {
        member,
        status,
        sha256,
        drill,
        members,
    }))
}

/// Tries each member in turn until one gives a snapshot that passes its drill. A drill that
/// disagrees fails the backup at once: a backup that does not restore is not kept, and another
/// member's snapshot of the same data would not do better.
pub async fn from_any_member(
    fleet: &Fleet,
    members: &[String],
    local: &Path,
) -> anyhow::Result<DrilledSnapshot> {
    let mut failures = Vec::new();
    for member in members {
        let Some(session) = fleet.session(member) else {
            failures.push(format!("{member}: not connected"));
            continue;
        };
        match snapshot_and_drill(session, local).await {
            Ok(Attempt::Passed(taken)) => return Ok(taken),
            Ok(Attempt::Disagreed(drill)) => bail!(
                "{member}: the etcd snapshot failed its restore drill: {}; no kit was written",
                drill.detail
            ),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    if members.is_empty() {
        bail!("the inventory has no etcd member to take a snapshot from");
    }
    bail!(
        "no etcd member gave a snapshot:\n  {}",
        failures.join("\n  ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(revision: u64) -> SnapshotStatus {
        SnapshotStatus {
            hash: 1,
            revision,
            total_keys: 900,
            total_size: 4096,
        }
    }

    #[test]
    fn a_drill_passes_when_revision_and_count_agree() {
        // etcdctl 3.4 `get --limit=1 -w json` lines (kvs trimmed).
        let out = "{\"header\":{\"cluster_id\":1,\"member_id\":2,\"revision\":5821,\"raft_term\":3},\"count\":412}\n\
                   {\"header\":{\"cluster_id\":7,\"member_id\":8,\"revision\":5821,\"raft_term\":2},\"count\":412}\n";
        let drill = judge(&status(5821), out, 1.5).unwrap();
        assert!(drill.passed, "{drill:?}");
        assert_eq!(
            (drill.revision, drill.restored_keys, drill.live_keys),
            (5821, 412, 412)
        );
    }

    #[test]
    fn a_drill_fails_on_missing_keys_or_another_revision() {
        let out = "{\"header\":{\"revision\":5821},\"count\":412}\n{\"header\":{\"revision\":5800},\"count\":400}\n";
        let drill = judge(&status(5821), out, 1.0).unwrap();
        assert!(!drill.passed);
        assert!(drill.detail.contains("revision 5800"), "{}", drill.detail);
        assert!(drill.detail.contains("400 keys"), "{}", drill.detail);
        assert!(judge(&status(1), "Error: no such member", 0.1).is_err());
    }

    #[test]
    fn the_drill_script_is_valid_bash() {
        let script = drill_script(42);
        assert!(script.contains("--rev=42"));
        assert!(script.contains("snapshot_restore /var/lib/ilha/snapshot.db"));
        crate::cluster::tests_support::assert_bash_syntax(&script);
    }

    /// The drill's restore, run with stand-in tools: etcdutl where the host has it, etcd 3.4's
    /// etcdctl otherwise, and a clear stop on etcd 3.6 without etcdutl.
    #[test]
    fn the_drill_restores_with_the_hosts_snapshot_tool() {
        use crate::cluster::snapshot::tests::FakeHost;
        let script = drill_script(42);
        let start = script.find("choose_snapshot_tool()").unwrap();
        let end = script.find("{ cat \"$dir/restore.log\"").unwrap();
        // The restore line only (its redirections dropped).
        let restore = script[start..end].replace(" >\"$dir/restore.log\" 2>&1 \\\n  || ", "\n");
        for (etcdctl, etcdutl, tool) in [("3.5.16", true, "etcdutl"), ("3.4.23", false, "etcdctl")]
        {
            let host = FakeHost::new(Some(etcdctl), etcdutl);
            let out = host.run(&format!("dir=/tmp/drill\n{restore}"));
            assert!(out.status.success(), "{out:?}\n{restore}");
            assert_eq!(
                host.calls(),
                format!(
                    "{tool} snapshot restore /var/lib/ilha/snapshot.db --name ilha-drill \
                     --data-dir /tmp/drill/data --initial-cluster ilha-drill=unix://peer:2 \
                     --initial-advertise-peer-urls unix://peer:2\n"
                )
            );
        }
        let host = FakeHost::new(Some("3.6.5"), false);
        let out = host.run(&format!("dir=/tmp/drill\n{restore}"));
        assert_eq!(
            out.status.code(),
            Some(crate::cluster::snapshot::NO_SNAPSHOT_TOOL)
        );
        assert_eq!(host.calls(), "");
    }

    /// The drill's cleanup, run as the script runs it, when the operator goes away while the
    /// throwaway etcd (here a sleep) lives: its stdout closed, the final echo meets a broken pipe.
    #[test]
    fn the_drill_cleans_up_when_its_reader_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let drill = dir.path().join("drill");
        let script = drill_script(42);
        let start = script.find("pid=$!").unwrap();
        let end = script.find("restored=\n").unwrap();
        let body = format!(
            "set -euo pipefail\ndir={}\nmkdir -p \"$dir\"; cd \"$dir\"\nsleep 300 &\n{}\
             echo $pid > \"$dir/../pid\"\nsleep 0.3\nfor i in $(seq 100000); do echo out; done\n",
            drill.display(),
            &script[start..end]
        );
        // As under sshd: SIGPIPE at its default (the test harness ignores it, and bash cannot
        // undo an ignored signal).
        let mut child = std::process::Command::new("env")
            .args(["--default-signal=PIPE", "bash", "-c", &body])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        drop(child.stdout.take());
        let _ = child.wait();
        let pid = std::fs::read_to_string(dir.path().join("pid")).unwrap();
        let alive = Path::new("/proc").join(pid.trim()).exists();
        if alive {
            let _ = std::process::Command::new("kill").arg(pid.trim()).status();
        }
        assert!(!alive, "the drill's etcd outlived its script");
        assert!(!drill.exists(), "the drill's directory was left");
    }

    /// Every `--flag value` of the command line starting with `program` (its `\` continuations
    /// joined).
    fn flags(script: &str, program: &str) -> Vec<(String, String)> {
        let joined = script.replace("\\\n", " ");
        let line = joined
            .lines()
            .find(|l| l.trim_start().starts_with(program))
            .unwrap_or_else(|| panic!("no {program} line in:\n{script}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0].starts_with("--"))
            .map(|w| (w[0].to_string(), w[1].to_string()))
            .collect()
    }

    #[test]
    fn the_drill_etcd_listens_on_no_tcp_port() {
        let script = drill_script(42);
        let etcd = flags(&script, "/usr/local/bin/etcd ");
        let urls: Vec<&(String, String)> =
            etcd.iter().filter(|(f, _)| f.ends_with("-urls")).collect();
        // Every URL flag etcd 3.4 listens or advertises with, and nothing on metrics.
        let names: Vec<&str> = urls.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            names,
            [
                "--listen-client-urls",
                "--advertise-client-urls",
                "--listen-peer-urls",
                "--initial-advertise-peer-urls"
            ]
        );
        for (flag, value) in urls {
            assert!(value.starts_with("unix://"), "{flag} {value}");
            // etcd 3.4 takes unix URLs only as `host:port`, without a path.
            let host = value.trim_start_matches("unix://");
            assert!(host.contains(':') && !host.contains('/'), "{flag} {value}");
        }
        let cluster = etcd.iter().find(|(f, _)| f == "--initial-cluster").unwrap();
        assert_eq!(cluster.1, format!("ilha-drill={DRILL_PEER}"));
        let restore = flags(&script, "snapshot_restore ");
        for (flag, value) in &restore {
            if flag.contains("initial") {
                assert!(
                    value.contains("unix://") && !value.contains("http"),
                    "{flag}"
                );
            }
        }
        // The sockets are relative: the script works in its owner-only directory.
        assert!(
            script.contains("chmod 0700 \"$dir\"\ncd \"$dir\"\n"),
            "{script}"
        );
        // Nothing in the script names a TCP URL but the live cluster's own client port.
        for line in script.lines() {
            for word in line.split([' ', '=']) {
                if word.starts_with("http") {
                    assert_eq!(word, "https://127.0.0.1:2379", "{line}");
                }
            }
        }
        // The drill's etcdctl speaks to the socket without TLS.
        let restored = script.lines().find(|l| l.contains("restored=$(")).unwrap();
        assert!(
            restored.contains("--endpoints=unix://client:1"),
            "{restored}"
        );
        assert!(!restored.contains("--cacert"), "{restored}");
    }
}
