//! etcd disaster recovery on the same masters: the seed's manual procedure (stop everything,
//! restore on one node with `--force-new-cluster`, fix the peer URL, add members back one by one,
//! wipe their data) done the way etcd documents it for a whole cluster: every member restores the
//! same snapshot with the same initial cluster, so they start as one cluster at once.
//!
//! Everything that can refuse is checked before the first service stops: every host answers,
//! each master's CA is the kit's (or missing), the snapshot reaches every member intact and etcd
//! itself reads it (`snapshot status` of the host's tool, etcdutl or etcd 3.4's etcdctl, checks
//! its hash; a member with etcd 3.6 and no etcdutl stops the restore here). The old data directory is moved aside,
//! never deleted.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::etc_tar;
use crate::backup::kit::KitManifest;
use crate::backup::run::{SNAPSHOT_PATH, etc_kubernetes_path};
use crate::cluster::membership::{etcdctl, etcdctl_at};
use crate::cluster::paths::{BIN_DIR, ETCD_DATA_DIR, ILHA_DIR};
use crate::cluster::run::{kubectl, targets, wait_for};
use crate::cluster::snapshot::{self, SnapshotStatus};
use crate::cluster::{confirm, say};
use crate::config::ClusterConfig;
use crate::inventory::{Inventory, Role};
use crate::ssh::{Fleet, Session, SshOptions, UploadSource, shell_quote};

/// Where the kit's files wait on each host until the restore is over.
const RESTORE_DIR: &str = "/var/lib/ilha/restore";
const CONTROL_PLANE_UNITS: &str = "kube-apiserver kube-controller-manager kube-scheduler";

pub struct Recovery<'a> {
    pub inventory: &'a Inventory,
    pub config: &'a ClusterConfig,
    pub ssh: &'a SshOptions,
    pub manifest: &'a KitManifest,
    /// The opened kit's payload.
    pub payload: &'a Path,
    pub yes: bool,
}

fn remote_snapshot() -> String {
    format!("{RESTORE_DIR}/snapshot.db")
}
fn remote_etc_kubernetes() -> String {
    format!("{RESTORE_DIR}/etc-kubernetes.tar")
}
/// The kit's tar of `master`, cleaned by [`etc_tar::clean`], next to it in the opened kit.
fn clean_etc_kubernetes(payload: &Path, master: &str) -> std::path::PathBuf {
    payload.join(format!("masters/{master}/etc-kubernetes.clean.tar"))
}

/// The members the kit was taken from must be the inventory's etcd hosts: a restore on other
/// hosts is a new cluster (`--objects`), not a recovery.
fn check_members(inventory: &Inventory, manifest: &KitManifest) -> anyhow::Result<Vec<String>> {
    let ours: Vec<String> = inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::Etcd))
        .map(|h| h.name.clone())
        .collect();
    let kit: Vec<String> = manifest
        .etcd
        .initial_cluster
        .iter()
        .map(|(name, _)| name.clone())
        .collect();
    let mut a = ours.clone();
    let mut b = kit.clone();
    a.sort();
    b.sort();
    if a != b {
        bail!(
            "the kit's etcd members are {}, the inventory's {} ({}); etcd recovery restores on \
             the same members (a different set of hosts is a new cluster: use --objects). Nothing was changed",
            kit.join(", "),
            ours.join(", "),
            inventory.source.display()
        );
    }
    Ok(ours)
}

/// The restore command for one member, by the host's snapshot tool
/// ([`snapshot::snapshot_tool_functions`]). etcdutl can move the revision forward and mark it
/// compacted (from etcd 3.5.x releases that have `--bump-revision`), so watchers (kubelets,
/// controllers) never see time go back; etcd 3.4's etcdctl cannot (the kubelets and
/// kube-proxies, restarted either way, then list afresh). The tool is chosen before the data
/// directory is touched.
fn restore_script(name: &str, peer_url: &str, initial_cluster: &str, token: &str) -> String {
    let common = format!(
        "--name {name} --initial-cluster {ic} --initial-cluster-token {token} \
         --initial-advertise-peer-urls {peer} --data-dir {ETCD_DATA_DIR}",
        name = shell_quote(name),
        ic = shell_quote(initial_cluster),
        token = shell_quote(token),
        peer = shell_quote(peer_url),
    );
    let snap = remote_snapshot();
    let tools = snapshot::snapshot_tool_functions();
    format!(
        r#"set -euo pipefail
{tools}if [ -e {ETCD_DATA_DIR} ]; then
  aside={ILHA_DIR}/etcd-before-restore-$(date -u +%Y%m%dT%H%M%SZ)
  mv {ETCD_DATA_DIR} "$aside"
  echo "aside $aside"
fi
if [ "$snapshot_tool" = etcdutl ] && {BIN_DIR}/etcdutl snapshot restore --help 2>&1 | grep -q -- --bump-revision; then
  snapshot_restore {snap} {common} --bump-revision 1000000000 --mark-compacted >/dev/null
  echo bumped
else
  snapshot_restore {snap} {common} >/dev/null
fi
chmod 700 {ETCD_DATA_DIR}
{owner}"#,
        owner = crate::cluster::hardening::restored_data_dir_owner_lines(),
    )
}

/// Files of the kit's `/etc/kubernetes` missing on the host, then put back (existing files are
/// never replaced: they may be newer than the kit). The tar is the cleaned one; naming the
/// subtree makes tar itself extract nothing outside it too.
fn put_back_script() -> String {
    let tar = remote_etc_kubernetes();
    let root = etc_tar::ROOT;
    format!(
        r#"set -euo pipefail
tar -tf {tar} | while IFS= read -r f; do
  case "$f" in */) continue ;; esac
  [ -e "/$f" ] || echo "$f"
done
tar -C / --skip-old-files --no-same-owner -xpf {tar} {root}
{keys}"#,
        keys = crate::cluster::hardening::restored_keys_owner_lines(),
    )
}

/// A snapshot from etcd's snapshot API ends with the sha256 of the database before it (what
/// `snapshot restore` checks, and why its size is 32 past a multiple of 512). Checked here, on
/// the operator's side, before any host is involved.
pub fn check_snapshot_integrity(path: &Path) -> anyhow::Result<()> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file.metadata()?.len();
    if size < 512 || size % 512 != 32 {
        bail!(
            "{}: {size} bytes is not the size of an etcd snapshot with its integrity hash              (truncated or not a snapshot)",
            path.display()
        );
    }
    let mut hasher = sha2::Sha256::new();
    let mut remaining = size - 32;
    let mut buf = vec![0u8; 1 << 20];
    while remaining > 0 {
        let want = remaining.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..want])?;
        hasher.update(&buf[..want]);
        remaining -= want as u64;
    }
    let mut trailer = [0u8; 32];
    file.read_exact(&mut trailer)?;
    if hasher.finalize().as_slice() != trailer {
        bail!(
            "{}: the etcd snapshot's integrity hash does not match its content (corrupted)",
            path.display()
        );
    }
    Ok(())
}

/// Reads the kit's snapshot on a member with the host's tool (its JSON status on stdout).
fn status_script() -> String {
    format!(
        "{}snapshot_status {}\n",
        snapshot::snapshot_tool_functions(),
        remote_snapshot()
    )
}

/// `work` on each host at once; every failure is reported, each naming its host.
async fn each_ok<'a, Fut>(
    fleet: &'a Fleet,
    hosts: &'a [String],
    what: &str,
    work: impl Fn(&'a Session) -> Fut,
) -> anyhow::Result<()>
where
    Fut: std::future::Future<Output = anyhow::Result<()>> + 'a,
{
    let jobs = hosts.iter().map(|h| {
        let session = fleet.session(h).expect("connected");
        let work = &work;
        async move { work(session).await.with_context(|| format!("{h}: {what}")) }
    });
    let failures: Vec<String> = futures_util::future::join_all(jobs)
        .await
        .into_iter()
        .filter_map(|r| r.err().map(|e| format!("{e:#}")))
        .collect();
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{}", failures.join("\n"))
    }
}

pub async fn recover(r: &Recovery<'_>) -> anyhow::Result<String> {
    let started = Instant::now();
    let members = check_members(r.inventory, r.manifest)?;
    let masters: Vec<String> = r
        .inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(Role::ControlPlane))
        .map(|h| h.name.clone())
        .collect();
    let nodes: Vec<String> = r
        .inventory
        .hosts
        .iter()
        .filter(|h| h.is_kubernetes_node())
        .map(|h| h.name.clone())
        .collect();

    say(format!(
        "Connecting to {} hosts ...",
        r.inventory.hosts.len()
    ));
    // Every host: a recovery that leaves one behind leaves it pointing at the old data.
    let fleet = Fleet::connect(targets(r.inventory), r.ssh)
        .await
        .map_err(|e| {
            anyhow::anyhow!("{e}\nEvery host must answer for a recovery. Nothing was changed")
        })?;
    let result = recover_on(r, &fleet, &members, &masters, &nodes, started).await;
    // The kit's files leave the hosts whatever happened.
    let _ = fleet.run_all(&format!("rm -rf {RESTORE_DIR}")).await;
    fleet.close().await;
    result
}

async fn recover_on(
    r: &Recovery<'_>,
    fleet: &Fleet,
    members: &[String],
    masters: &[String],
    nodes: &[String],
    started: Instant,
) -> anyhow::Result<String> {
    let manifest = r.manifest;
    // The cluster's identity on each master, where its CA is still there.
    for master in masters {
        let session = fleet.session(master).expect("connected");
        let out = session
            .run("sha256sum /etc/kubernetes/pki/ca.crt 2>/dev/null || true")
            .await?;
        if let Some(found) = out.stdout.split_whitespace().next()
            && found != manifest.cluster_ca_sha256
        {
            bail!(
                "{master}: /etc/kubernetes/pki/ca.crt is not the CA of the kit's cluster {} \
                 (sha256 {found}, the kit's {}): this kit is from another cluster. Nothing was changed",
                manifest.cluster_name,
                manifest.cluster_ca_sha256
            );
        }
    }

    say("Checking the snapshot on every member before anything stops ...");
    let snapshot = r.payload.join(SNAPSHOT_PATH);
    check_snapshot_integrity(&snapshot)
        .context("the snapshot cannot be restored; nothing was stopped or changed")?;
    each_ok(fleet, members, "the kit's etcd snapshot", |s| {
        let snapshot = snapshot.clone();
        async move {
            s.upload_with_digest(
                UploadSource::File(&snapshot),
                &manifest.etcd.sha256,
                &remote_snapshot(),
                0o600,
            )
            .await?;
            let out = s
                .run_script("etcd snapshot status", &status_script())
                .await
                .map_err(|e| {
                    let cannot_read = match &e {
                        crate::ssh::SshError::CommandFailed { code, .. }
                            if *code == Some(snapshot::NO_SNAPSHOT_TOOL) =>
                        {
                            "this member has no tool to read or restore a snapshot"
                        }
                        _ => "etcd cannot read the snapshot (corrupted)",
                    };
                    anyhow::Error::new(e).context(cannot_read)
                })?;
            let status: SnapshotStatus = snapshot::parse_status(&out.stdout)?;
            if status.hash != manifest.etcd.status.hash
                || status.revision != manifest.etcd.status.revision
            {
                bail!(
                    "the snapshot reads as revision {} hash {:x}, the kit recorded revision {} hash {:x}",
                    status.revision,
                    status.hash,
                    manifest.etcd.status.revision,
                    manifest.etcd.status.hash
                );
            }
            Ok(())
        }
    })
    .await
    .context("the snapshot cannot be restored; nothing was stopped or changed")?;

    // Only regular files under etc/kubernetes/ go to a master: the host extracts as root at `/`.
    let mut kit_masters: Vec<String> = Vec::new();
    let mut report = String::new();
    for master in masters.iter().filter(|m| manifest.masters.contains(m)) {
        let kit_tar = r.payload.join(etc_kubernetes_path(master));
        let cleaned = etc_tar::clean(&kit_tar, &clean_etc_kubernetes(r.payload, master))
            .with_context(|| format!("{master}: the kit's /etc/kubernetes; nothing was changed"))?;
        if !cleaned.dropped.is_empty() {
            let count = cleaned.dropped.len();
            let line = format!(
                "{master}: {count} {} of the kit's /etc/kubernetes tar refused (only regular \
                 files under /etc/kubernetes are put back, never set-id): {}",
                if count == 1 { "entry" } else { "entries" },
                cleaned.dropped_text()
            );
            say(format!("  WARNING: {line}"));
            let _ = writeln!(report, "WARNING: {line}");
        }
        if !cleaned.kept.is_empty() {
            kit_masters.push(master.clone());
        }
    }
    each_ok(fleet, &kit_masters, "the kit's /etc/kubernetes", |s| {
        let local = clean_etc_kubernetes(r.payload, s.name());
        async move {
            s.upload(UploadSource::File(&local), &remote_etc_kubernetes(), 0o600)
                .await?;
            Ok(())
        }
    })
    .await
    .context("nothing was stopped or changed")?;

    // Secrets at rest: the keys the snapshot needs (the kit's), with the state directory's.
    let encryption = crate::cluster::encryption::restore_config(
        &r.config.state_dir,
        &r.payload.join(crate::backup::run::STATE_DIR),
        r.config.hardening.secrets_encryption,
    )?;
    if !r.yes {
        confirm(
            &format!(
                "Restore etcd of cluster {} to the kit's snapshot (revision {}, taken {})? Every \
                 change since then is lost; the control plane is down meanwhile.",
                manifest.cluster_name,
                manifest.etcd.status.revision,
                crate::clock::utc_time(manifest.created_at)
            ),
            &manifest.cluster_name,
        )?;
    }
    let mut timings: Vec<(String, f64)> = Vec::new();
    let mut phase = Instant::now();
    let mut lap = |what: &str, timings: &mut Vec<(String, f64)>| {
        timings.push((what.to_string(), phase.elapsed().as_secs_f64()));
        phase = Instant::now();
    };

    say("Stopping the control plane and etcd ...");
    // The scheduled snapshot must not fire against a stopped etcd (stopping a timer that is
    // not there is fine).
    each_ok(
        fleet,
        members,
        "stopping the snapshot timer",
        |s| async move {
            s.run(&format!(
                "systemctl stop {} 2>/dev/null || true",
                crate::backup::schedule::TIMER
            ))
            .await?;
            Ok(())
        },
    )
    .await?;
    // Together: what the API server might still write is about to be replaced anyway.
    let (control_plane, etcd) = tokio::join!(
        each_ok(
            fleet,
            masters,
            "stopping the control plane",
            |s| async move {
                s.run(&format!("systemctl stop {CONTROL_PLANE_UNITS}"))
                    .await?;
                Ok(())
            }
        ),
        each_ok(fleet, members, "stopping etcd", |s| async move {
            s.run("systemctl stop etcd").await?;
            Ok(())
        })
    );
    control_plane?;
    etcd?;
    lap("stop", &mut timings);

    say("Restoring the snapshot on every member ...");
    let initial_cluster = manifest
        .etcd
        .initial_cluster
        .iter()
        .map(|(n, u)| format!("{n}={u}"))
        .collect::<Vec<_>>()
        .join(",");
    let outputs = futures_util::future::join_all(members.iter().map(|m| {
        let session = fleet.session(m).expect("connected");
        let peer = manifest
            .etcd
            .initial_cluster
            .iter()
            .find(|(n, _)| n == m)
            .map(|(_, u)| u.clone())
            .expect("checked: same members");
        let script = restore_script(m, &peer, &initial_cluster, &r.config.cluster_name);
        async move {
            session
                .run_script("etcd snapshot restore", &script)
                .await
                .with_context(|| format!("{m}: restoring the snapshot"))
        }
    }))
    .await;
    let mut bumped = false;
    for (m, out) in members.iter().zip(outputs) {
        let out = out.context(
            "etcd is stopped; after fixing the cause, run the same restore again \
             (the data directories moved aside are under /var/lib/ilha)",
        )?;
        bumped |= out.stdout.contains("bumped");
        if let Some(aside) = out.stdout.lines().find_map(|l| l.strip_prefix("aside ")) {
            let _ = writeln!(report, "{m}: previous etcd data kept in {aside}");
        }
    }
    lap("restore", &mut timings);

    if !kit_masters.is_empty() {
        let outputs = futures_util::future::join_all(kit_masters.iter().map(|m| {
            let session = fleet.session(m).expect("connected");
            async move {
                session
                    .run_script("put back /etc/kubernetes", &put_back_script())
                    .await
            }
        }))
        .await;
        for (m, out) in kit_masters.iter().zip(outputs) {
            let out = out.with_context(|| format!("{m}: putting back /etc/kubernetes files"))?;
            let missing: Vec<&str> = out.stdout.lines().collect();
            if !missing.is_empty() {
                let _ = writeln!(
                    report,
                    "{m}: {} missing file(s) of /etc/kubernetes put back from the kit: {}",
                    missing.len(),
                    missing.join(", ")
                );
            }
        }
    }

    say("Starting etcd ...");
    // Together: each member's start (Type=notify) returns once a quorum has formed.
    each_ok(fleet, members, "starting etcd", |s| async move {
        s.run("systemctl start etcd").await?;
        Ok(())
    })
    .await?;
    let endpoints = manifest
        .etcd
        .initial_cluster
        .iter()
        .map(|(_, peer)| peer.replace(":2380", ":2379"))
        .collect::<Vec<_>>()
        .join(",");
    let first = fleet.session(&members[0]).expect("connected");
    wait_for(
        first,
        "etcd health of every member",
        &etcdctl_at(&endpoints, "3s", "endpoint health"),
        Duration::from_secs(60),
    )
    .await?;
    let count = first
        .run(&etcdctl("get '' --from-key --limit=1 --keys-only -w json"))
        .await?
        .stdout;
    lap("etcd up", &mut timings);
    // The timer comes back where it is installed.
    each_ok(
        fleet,
        members,
        "starting the snapshot timer",
        |s| async move {
            let timer = crate::backup::schedule::TIMER;
            s.run(&format!(
                "if systemctl is-enabled -q {timer} 2>/dev/null; then systemctl start {timer}; fi"
            ))
            .await?;
            Ok(())
        },
    )
    .await?;

    if let Some((file, adopted)) = &encryption {
        each_ok(
            fleet,
            masters,
            "writing the encryption config",
            |s| async move {
                s.upload(UploadSource::Bytes(&file.content), &file.path, file.mode)
                    .await?;
                Ok(())
            },
        )
        .await?;
        if !adopted.is_empty() {
            let _ = writeln!(
                report,
                "Secrets encryption: the kit's key(s) {} (the snapshot's Secrets may need them) \
                 are readers again on every master; `ilha up` rewrites every Secret with the \
                 write key, then drops them",
                adopted.join(", ")
            );
        }
    }
    say("Starting the control plane ...");
    each_ok(
        fleet,
        masters,
        "starting the control plane",
        |s| async move {
            s.run(&format!("systemctl start {CONTROL_PLANE_UNITS}"))
                .await?;
            Ok(())
        },
    )
    .await?;
    let admin = fleet.session(&masters[0]).expect("connected");
    wait_for(
        admin,
        "kube-apiserver /readyz",
        &kubectl("get --raw=/readyz"),
        Duration::from_secs(120),
    )
    .await?;
    lap("control plane up", &mut timings);
    let since = admin
        .run("date -u +%Y-%m-%dT%H:%M:%SZ")
        .await?
        .stdout
        .trim()
        .to_string();

    // Always: without a bumped revision their watches are ahead of the snapshot, and in any case
    // a restarted kubelet posts its node status at once, which is what proves it is back.
    say("Restarting kubelets and kube-proxies ...");
    each_ok(
        fleet,
        nodes,
        "restarting kubelet and kube-proxy",
        |s| async move {
            s.run(
                "for u in kubelet kube-proxy; do \
             if systemctl is-enabled -q $u 2>/dev/null; then systemctl restart $u; fi; done",
            )
            .await?;
            Ok(())
        },
    )
    .await?;
    // The restored Node objects say Ready from the snapshot's time: only a heartbeat newer than
    // the restart proves a kubelet is back.
    wait_nodes_heartbeat(admin, nodes, &since, Duration::from_secs(180)).await?;
    lap("nodes Ready", &mut timings);

    let times: Vec<String> = timings
        .iter()
        .map(|(w, s)| format!("{w} {s:.1}s"))
        .collect();
    let keys = serde_json::from_str::<serde_json::Value>(count.trim())
        .ok()
        .and_then(|v| v["count"].as_u64())
        .unwrap_or(0);
    Ok(format!(
        "etcd of cluster {} restored to revision {} on {} ({} keys{}); control plane and {} nodes \
         Ready in {:.1}s ({}).\n{report}",
        manifest.cluster_name,
        manifest.etcd.status.revision,
        members.join(", "),
        keys,
        if bumped {
            ", revision bumped and compacted"
        } else {
            ""
        },
        nodes.len(),
        started.elapsed().as_secs_f64(),
        times.join(", ")
    ))
}

/// Names of the nodes whose Ready condition is True with a heartbeat at or after `since`
/// (RFC 3339 UTC, which sorts as text), from `name status heartbeat` lines.
fn fresh_ready<'a>(listing: &'a str, since: &str) -> Vec<&'a str> {
    listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (name, status, beat) = (fields.next()?, fields.next()?, fields.next()?);
            (status == "True" && beat >= since).then_some(name)
        })
        .collect()
}

async fn wait_nodes_heartbeat(
    admin: &Session,
    nodes: &[String],
    since: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let script = kubectl(
        "get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type==\"Ready\")].status} {.status.conditions[?(@.type==\"Ready\")].lastHeartbeatTime}{\"\\n\"}{end}'",
    );
    let deadline = Instant::now() + timeout;
    loop {
        let listing = admin
            .run(&script)
            .await
            .map(|o| o.stdout)
            .unwrap_or_default();
        let ready = fresh_ready(&listing, since);
        let waiting: Vec<&str> = nodes
            .iter()
            .map(String::as_str)
            .filter(|n| !ready.contains(n))
            .collect();
        if waiting.is_empty() {
            say(format!("  {} nodes Ready", nodes.len()));
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "nodes not Ready since the restore within {}s: {} (look at `journalctl -u kubelet` on them)",
                timeout.as_secs(),
                waiting.join(", ")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests_support::assert_bash_syntax;

    #[test]
    fn a_snapshot_is_checked_against_its_own_hash() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let db = vec![7u8; 4096];
        let mut file = db.clone();
        file.extend_from_slice(&sha2::Sha256::digest(&db));
        std::fs::write(&path, &file).unwrap();
        check_snapshot_integrity(&path).unwrap();
        file[100] ^= 1;
        std::fs::write(&path, &file).unwrap();
        let err = check_snapshot_integrity(&path).unwrap_err().to_string();
        assert!(err.contains("corrupted"), "{err}");
        std::fs::write(&path, &file[..3000]).unwrap();
        let err = check_snapshot_integrity(&path).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn every_member_restores_with_the_same_initial_cluster() {
        let ic = "node1=https://10.0.0.1:2380,node2=https://10.0.0.2:2380";
        let script = restore_script("node2", "https://10.0.0.2:2380", ic, "lab");
        assert_bash_syntax(&script);
        assert!(script.contains("--name 'node2'"), "{script}");
        assert!(
            script.contains(&format!("--initial-cluster '{ic}'")),
            "{script}"
        );
        assert!(
            script.contains("--initial-advertise-peer-urls 'https://10.0.0.2:2380'"),
            "{script}"
        );
        assert!(script.contains("--initial-cluster-token 'lab'"), "{script}");
        // The old data is moved aside, never removed.
        assert!(script.contains("mv /var/lib/etcd"), "{script}");
        assert!(!script.contains("rm -rf /var/lib/etcd"), "{script}");
        // Where etcd runs as its own user, the restored directory becomes its, 0700.
        assert!(
            script.ends_with(
                "chmod 700 /var/lib/etcd\n\
                 if grep -qx 'User=etcd' /etc/systemd/system/etcd.service 2>/dev/null; then\n  \
                 chown -R etcd:etcd /var/lib/etcd\nfi\n"
            ),
            "{script}"
        );
    }

    /// The restore script run against a scratch root with stand-in tools: etcdutl (with
    /// `--bump-revision`) where the host has it, etcd 3.4's etcdctl otherwise; etcd 3.6 without
    /// etcdutl stops before the data directory is moved.
    #[test]
    fn each_member_restores_with_its_own_snapshot_tool() {
        use crate::cluster::snapshot::tests::FakeHost;
        let run = |host: &FakeHost| {
            let data = host.dir.path().join("etcd");
            std::fs::create_dir_all(&data).unwrap();
            let script = restore_script(
                "node1",
                "https://10.0.0.1:2380",
                "node1=https://10.0.0.1:2380",
                "lab",
            )
            // The stand-ins write no data directory.
            .replace("chmod 700 ", "mkdir -p /var/lib/etcd; chmod 700 ")
            .replace(ETCD_DATA_DIR, &data.display().to_string())
            .replace(
                &format!("aside={ILHA_DIR}/"),
                &format!("aside={}/", host.dir.path().display()),
            );
            let out = host.run(&script);
            (out, data.exists())
        };
        let common = "--name node1 --initial-cluster node1=https://10.0.0.1:2380 \
                      --initial-cluster-token lab --initial-advertise-peer-urls https://10.0.0.1:2380";

        let etcd35 = FakeHost::new(Some("3.5.16"), true);
        // This stand-in etcdutl knows --bump-revision (it greps its own help).
        std::fs::write(
            etcd35.dir.path().join("etcdutl"),
            format!(
                "#!/bin/bash\ncase \"$*\" in *--help*) echo '  --bump-revision uint'; exit 0 ;; esac\n\
                 echo \"etcdutl $*\" >> {}/calls\n",
                etcd35.dir.path().display()
            ),
        )
        .unwrap();
        let (out, _) = run(&etcd35);
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("bumped"));
        let calls = etcd35.calls();
        assert!(
            calls.starts_with(
                "etcdutl snapshot restore /var/lib/ilha/restore/snapshot.db --name node1"
            ),
            "{calls}"
        );
        assert!(
            calls.contains("--bump-revision 1000000000 --mark-compacted"),
            "{calls}"
        );
        let data = etcd35.dir.path().join("etcd").display().to_string();
        assert!(calls.contains(&format!("--data-dir {data}")), "{calls}");

        let etcd34 = FakeHost::new(Some("3.4.23"), false);
        let (out, _) = run(&etcd34);
        assert!(out.status.success(), "{out:?}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("bumped"));
        let calls = etcd34.calls();
        assert!(
            calls.starts_with("etcdctl snapshot restore /var/lib/ilha/restore/snapshot.db"),
            "{calls}"
        );
        assert!(calls.contains(common), "{calls}");
        assert!(!calls.contains("bump"), "{calls}");

        let etcd36 = FakeHost::new(Some("3.6.5"), false);
        let (out, data_kept) = run(&etcd36);
        assert_eq!(
            out.status.code(),
            Some(crate::cluster::snapshot::NO_SNAPSHOT_TOOL)
        );
        assert!(
            data_kept,
            "the data directory was moved before the tool was known"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("Rebuild the bundle with etcdutl"));
    }

    #[test]
    fn the_kits_snapshot_is_read_by_the_hosts_tool() {
        use crate::cluster::snapshot::tests::FakeHost;
        let script = status_script();
        assert_bash_syntax(&script);
        let host = FakeHost::new(Some("3.5.16"), true);
        let out = host.run(&script);
        assert!(out.status.success(), "{out:?}");
        let status = snapshot::parse_status(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!(status.revision, 7);
        assert_eq!(
            host.calls(),
            "etcdutl -w json snapshot status /var/lib/ilha/restore/snapshot.db\n"
        );
    }

    #[test]
    fn a_node_is_ready_only_with_a_heartbeat_after_the_restore() {
        let listing = "node1 True 2026-11-27T10:36:30Z\nnode2 True 2026-11-27T10:30:00Z\nnode3 False 2026-11-27T10:36:40Z\nnode4 Unknown\n";
        assert_eq!(fresh_ready(listing, "2026-11-27T10:36:25Z"), ["node1"]);
    }

    #[test]
    fn put_back_never_replaces_a_file() {
        let script = put_back_script();
        assert_bash_syntax(&script);
        assert!(script.contains("--skip-old-files"));
        // Keys put back as root's go to etcd where it runs as its own user.
        assert!(
            script.ends_with(
                "if grep -qx 'User=etcd' /etc/systemd/system/etcd.service 2>/dev/null; then\n  \
                 for key in /etc/kubernetes/pki/etcd/server.key /etc/kubernetes/pki/etcd/peer.key; do\n    \
                 [ ! -e \"$key\" ] || chown etcd:etcd \"$key\"\n  done\nfi\n"
            ),
            "{script}"
        );
    }

    #[test]
    fn put_back_lists_and_restores_only_missing_files() {
        // Run the real script against a scratch root by rewriting `/` to a temp dir.
        let root = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("etc/kubernetes/pki")).unwrap();
        std::fs::write(src.path().join("etc/kubernetes/pki/ca.crt"), "kit-ca").unwrap();
        std::fs::write(src.path().join("etc/kubernetes/admin.conf"), "kit-admin").unwrap();
        let tar = root.path().join("kit.tar");
        let made = std::process::Command::new("tar")
            .arg("-C")
            .arg(src.path())
            .arg("-cf")
            .arg(&tar)
            .arg("etc/kubernetes")
            .status()
            .unwrap();
        assert!(made.success());
        let target = root.path().join("root");
        std::fs::create_dir_all(target.join("etc/kubernetes")).unwrap();
        std::fs::write(target.join("etc/kubernetes/admin.conf"), "newer").unwrap();
        let script = put_back_script()
            .replace(&remote_etc_kubernetes(), &tar.display().to_string())
            .replace("tar -C / ", &format!("tar -C {} ", target.display()))
            .replace(
                "[ -e \"/$f\" ]",
                &format!("[ -e \"{}/$f\" ]", target.display()),
            );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "etc/kubernetes/pki/ca.crt"
        );
        assert_eq!(
            std::fs::read_to_string(target.join("etc/kubernetes/pki/ca.crt")).unwrap(),
            "kit-ca"
        );
        assert_eq!(
            std::fs::read_to_string(target.join("etc/kubernetes/admin.conf")).unwrap(),
            "newer"
        );
    }
}
