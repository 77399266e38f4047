//! The version guard on real hosts, with one three-host cluster (all masters + etcd): the lab's
//! bundle (etcd 3.4.23, Debian 12's) installs it. A second bundle, the same but with Debian 13's
//! etcd 3.5 (pinned by sha256, signed with the test's key), is first stopped in the prepare phase:
//! every host has etcd 3.5 staged beside 3.4 and still runs 3.4. The same `up` again continues
//! and switches the members one at a time, each at its own restart, with a quorum answering
//! throughout. Then `up` with the first bundle is refused with both versions named, also with
//! `--allow-downgrade`, and nothing on any host changes (binaries, units, journal, no staged
//! file), checked over SSH.
//!
//! The same cluster then proves the snapshot paths through `etcdutl` (the second bundle carries
//! Debian 13's etcdutl 3.5.16, installed next to etcd): every host's etcdctl is replaced by a
//! stand-in for etcd 3.6's, which refuses `snapshot status` and `snapshot restore` (etcd v3.6.0
//! removed them; no etcd 3.6 can be had here, so etcd 3.5.16's etcdctl with those two commands
//! taken away is the stand-in) and passes everything else to the real one. First the hosts'
//! etcdutl is hidden and `backup` must stop naming each member and what to do; then, etcdutl
//! back, `backup` (its drill), `backup --schedule` (the timer's script), `restore`,
//! `remove-node` of one member and `reset` all succeed, and etcdutl's own log on the hosts shows
//! it did every status and restore.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ilha_e2e::cluster::{
    FreshLab, Member, build_bundle, fresh_lab, ilha, lab_bundle, text, write_config,
    write_inventory,
};
use xtask::lab::LabConfig;

/// Masters that also take pods: the smallest layout with every role.
const CP: &[&str] = &["kube-master", "etcd", "kube-node"];
const HOSTS: [usize; 3] = [1, 2, 3];
const ETCDCTL: &str = "ETCDCTL_API=3 /usr/local/bin/etcdctl --cacert=/etc/kubernetes/pki/etcd/ca.crt \
    --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt \
    --key=/etc/kubernetes/pki/etcd/healthcheck-client.key --command-timeout=3s";

fn layout() -> Vec<Member> {
    vec![
        Member {
            name: "node1",
            index: 1,
            groups: CP,
        },
        Member {
            name: "node2",
            index: 2,
            groups: CP,
        },
        Member {
            name: "node3",
            index: 3,
            groups: CP,
        },
    ]
}

/// The lab's bundle with etcd and etcdctl taken from Debian 13's packages, plus their etcdutl,
/// signed with the lab bundle's own test key (built once, next to it).
/// Returns the bundle and the sha256 of its etcd.
fn etcd35_bundle(lab_bundle: &ilha_e2e::cluster::LabBundle) -> (std::path::PathBuf, String) {
    let config = LabConfig::from_env();
    let newer = xtask::artifacts::newer_etcd::ensure(&config.cache_dir).unwrap_or_else(|err| {
        panic!(
            "fetching etcd {}: {err:#}",
            xtask::artifacts::newer_etcd::VERSION
        )
    });
    let dir = lab_bundle
        .dir
        .join(format!("etcd-{}-etcdutl", newer.version));
    let out = dir.join("lab-etcd.tar.zst");
    let etcd_sha = sha(&newer.etcd);
    if out.is_file() {
        return (out, etcd_sha);
    }
    std::fs::create_dir_all(&dir).unwrap();
    let workspace = ilha_e2e::cluster::workspace();
    let lab_yaml = std::fs::read_to_string(workspace.join("manifests/lab.yaml")).unwrap();
    // Each binary entry is three lines: name, url, sha256_url.
    let mut manifest = String::new();
    let mut lines = lab_yaml.lines().peekable();
    let mut replaced = 0;
    while let Some(line) = lines.next() {
        let local = match line.trim() {
            "- name: etcd" => Some(&newer.etcd),
            "- name: etcdctl" => Some(&newer.etcdctl),
            _ => None,
        };
        if let Some(path) = local {
            lines.next();
            lines.next();
            manifest.push_str(&format!(
                "{line}\n    path: {}\n    sha256: {}\n",
                path.display(),
                sha(path)
            ));
            replaced += 1;
            if line.trim() == "- name: etcdctl" {
                // Optional for Kubernetes 1.20 (installed because the bundle has it).
                manifest.push_str(&format!(
                    "{}- name: etcdutl\n    path: {}\n    sha256: {}\n",
                    &line[..line.find('-').unwrap()],
                    newer.etcdutl.display(),
                    sha(&newer.etcdutl)
                ));
            }
            continue;
        }
        let line = line
            .replace("version: 1.20.2-lab.1", "version: 1.20.2-lab.1-etcd35")
            .replace(
                "path: lab/addon-lab-check.yaml",
                &format!(
                    "path: {}",
                    workspace
                        .join("manifests/lab/addon-lab-check.yaml")
                        .display()
                ),
            );
        manifest.push_str(&line);
        manifest.push('\n');
    }
    assert_eq!(
        replaced, 2,
        "etcd and etcdctl entries in manifests/lab.yaml:\n{lab_yaml}"
    );
    let manifest_path = dir.join("lab-etcd.yaml");
    std::fs::write(&manifest_path, manifest).unwrap();
    let served = xtask::artifacts::ensure_served(&config).expect("lab artifacts served");
    build_bundle(
        manifest_path,
        lab_bundle.dir.join(ilha_format::sign::SECRET_KEY_FILE),
        &served.registry.to_string(),
        &out,
    );
    (out, etcd_sha)
}

/// Where the real etcdctl and etcdutl wait on each host while the stand-ins are in place (/run:
/// outside what `reset` compares with the pre-install record), with the log of their calls.
const REAL: &str = "/run/lab-etcd";

/// Puts on host `index` the stand-in for etcd 3.6's etcdctl (`snapshot status` and `snapshot
/// restore` refused as etcd 3.6 refuses them, each refusal logged) and an etcdutl that logs its
/// calls; both run the real binaries otherwise.
fn install_stand_ins(lab: &FreshLab, index: usize) {
    lab.ssh_ok(
        index,
        &format!(
            r#"set -eu
mkdir -p {REAL}
[ -e {REAL}/etcdctl ] || mv /usr/local/bin/etcdctl {REAL}/etcdctl
[ -e {REAL}/etcdutl ] || mv /usr/local/bin/etcdutl {REAL}/etcdutl
cat > /usr/local/bin/etcdctl <<'STAND_IN'
#!/bin/bash
# Lab stand-in for etcd 3.6's etcdctl: no offline snapshot commands.
case " $* " in
  *" snapshot status "*|*" snapshot restore "*)
    echo "refused: etcdctl $*" >> {REAL}/calls
    echo 'Error: unknown command for "etcdctl snapshot"' >&2
    exit 1 ;;
esac
exec {REAL}/etcdctl "$@"
STAND_IN
cat > /usr/local/bin/etcdutl <<'STAND_IN'
#!/bin/bash
echo "etcdutl $*" >> {REAL}/calls
exec {REAL}/etcdutl "$@"
STAND_IN
chmod 0755 /usr/local/bin/etcdctl /usr/local/bin/etcdutl
"#
        ),
    )
    .unwrap_or_else(|err| panic!("h{index}: stand-ins: {err}"));
}

/// The snapshot `remove-node` and `reset` take first (on node1 or node2, the members that stay)
/// was read by etcdutl, and the etcd 3.6 stand-in of etcdctl refused nothing.
fn assert_live_snapshot_read_by_etcdutl(lab: &FreshLab) {
    let calls: String = [1, 2].iter().map(|i| take_calls(lab, *i)).collect();
    assert!(!calls.contains("refused"), "{calls}");
    assert!(
        calls.contains("etcdutl -w json snapshot status /var/lib/ilha/snapshot.db"),
        "{calls}"
    );
}

/// The calls the stand-ins logged on host `index` since the last look (the log is emptied).
fn take_calls(lab: &FreshLab, index: usize) -> String {
    lab.ssh_ok(
        index,
        &format!("cat {REAL}/calls 2>/dev/null || true; rm -f {REAL}/calls"),
    )
    .unwrap()
}

fn sha(path: &std::path::Path) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// sha256 of a file on lab host `index` ("absent" when there is none).
fn remote_sha(lab: &FreshLab, index: usize, path: &str) -> String {
    lab.ssh_ok(
        index,
        &format!("if [ -e {path} ]; then sha256sum < {path} | cut -d' ' -f1; else echo absent; fi"),
    )
    .unwrap()
    .trim()
    .to_string()
}

/// What the guard promises not to touch: binaries, units, staged files, the journal.
fn host_state(lab: &FreshLab, index: usize) -> String {
    lab.ssh_ok(
        index,
        "cd / && sha256sum usr/local/bin/* etc/systemd/system/etcd.service \
         etc/systemd/system/kube-*.service etc/systemd/system/kubelet.service var/lib/ilha/journal; \
         ls /usr/local/bin /usr/local/sbin /opt/cni/bin | grep -c ilha-new || true",
    )
    .unwrap_or_else(|err| panic!("reading h{index}: {err}"))
}

fn etcd_version(lab: &FreshLab, index: usize) -> String {
    lab.ssh_ok(index, "/usr/local/bin/etcd --version | head -n1")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn etcd_upgrades_one_member_at_a_time_and_an_older_bundle_is_refused() {
    let started = Instant::now();
    let old = lab_bundle();
    let (new, new_etcd) = etcd35_bundle(&old);
    let lab = fresh_lab(3);
    let work = tempfile::tempdir().unwrap();
    let inventory = write_inventory(&lab, work.path(), &layout(), None);
    let config = write_config(work.path(), "versions");
    let up = |bundle: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "up",
            bundle.to_str().unwrap(),
            "--pubkey",
            old.pubkey.to_str().unwrap(),
            "-i",
            inventory.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ilha(&lab, &args)
    };

    // 1. The cluster, on etcd 3.4.
    let out = up(&old.bundle, &[]);
    assert!(out.status.success(), "{}", text(&out));
    for i in HOSTS {
        assert!(etcd_version(&lab, i).contains("3.4.23"), "h{i}");
    }
    let old_etcd = remote_sha(&lab, 1, "/usr/local/bin/etcd");

    // 2. etcd 3.5, with the run stopped in the prepare phase (h3's list of installed files made
    // unwritable, which fails its `binaries` step after the uploads): every host got the new etcd
    // beside the old one, none had its live binary changed, etcd runs on.
    lab.ssh_ok(
        3,
        "mv /var/lib/ilha/files /var/lib/ilha/files.keep && mkdir /var/lib/ilha/files",
    )
    .unwrap();
    let out = up(&new, &[]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    assert!(
        log.contains("phase `prepare hosts` failed") && log.contains("node3: step `binaries`"),
        "{log}"
    );
    for i in HOSTS {
        assert_eq!(
            remote_sha(&lab, i, "/usr/local/bin/etcd"),
            old_etcd,
            "h{i}: live etcd changed in prepare"
        );
        assert_eq!(
            remote_sha(&lab, i, "/usr/local/bin/etcd.ilha-new"),
            new_etcd,
            "h{i}: etcd 3.5 not staged"
        );
        assert!(etcd_version(&lab, i).contains("3.4.23"), "h{i}");
    }
    lab.ssh_ok(1, &format!("{ETCDCTL} endpoint health --cluster"))
        .unwrap();
    lab.ssh_ok(
        3,
        "rmdir /var/lib/ilha/files && mv /var/lib/ilha/files.keep /var/lib/ilha/files",
    )
    .unwrap();

    // 3. The same `up` again continues: the staged binaries are switched member by member, the
    // cluster answering throughout (a watcher asks for the status of all three members).
    let healthy_throughout = Arc::new(AtomicBool::new(true));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let healthy = healthy_throughout.clone();
        let stop = stop.clone();
        let config = LabConfig::from_env();
        let ips: Vec<String> = HOSTS.iter().map(|i| lab.host(*i).ip.to_string()).collect();
        std::thread::spawn(move || {
            let lab = xtask::lab::Lab::new(config);
            let endpoints: Vec<String> =
                ips.iter().map(|ip| format!("https://{ip}:2379")).collect();
            // One member restarting at a time is expected; fewer than two answering is a lost quorum.
            let script = format!(
                "{ETCDCTL} --endpoints={} endpoint status -w simple | wc -l",
                endpoints.join(",")
            );
            let mut samples = 0;
            while !stop.load(Ordering::Relaxed) {
                let answered = lab
                    .ssh_ok(1, &script)
                    .ok()
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                // A quorum (two of three) must answer at every sample.
                if answered < 2 {
                    eprintln!("etcd quorum not answering: {answered} member(s)");
                    healthy.store(false, Ordering::Relaxed);
                }
                samples += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            samples
        })
    };
    let out = up(&new, &[]);
    stop.store(true, Ordering::Relaxed);
    let samples = watcher.join().unwrap();
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("etcd 3.4.23 -> 3.5.16 on node1, node2, node3"),
        "{log}"
    );
    // One member at a time, each healthy again before the next.
    let order: Vec<usize> = ["node1", "node2", "node3"]
        .iter()
        .map(|n| {
            log.find(&format!("etcd: 3 members healthy after {n} restarted"))
                .unwrap_or_else(|| panic!("{n} not restarted on its own: {log}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{log}");
    assert!(samples > 3, "the watcher sampled {samples} times");
    assert!(
        healthy_throughout.load(Ordering::Relaxed),
        "etcd lost its quorum during the upgrade"
    );
    for i in HOSTS {
        assert!(etcd_version(&lab, i).contains("3.5.16"), "h{i}");
        assert!(
            host_state(&lab, i).trim_end().ends_with("\n0"),
            "h{i}: a staged file left"
        );
    }

    // 4. Back to etcd 3.4: refused before anything changes, the versions named.
    let before: Vec<String> = HOSTS.iter().map(|i| host_state(&lab, *i)).collect();
    let out = up(&old.bundle, &[]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    for host in ["node1", "node2", "node3"] {
        assert!(
            log.contains(&format!(
                "{host}: etcd runs etcd 3.5.16, the bundle has 3.4.23: a downgrade"
            )),
            "{log}"
        );
    }
    assert!(log.contains("nothing was changed"), "{log}");
    // --allow-downgrade is for patch levels only: still refused.
    let out = up(&old.bundle, &["--allow-downgrade"]);
    assert!(!out.status.success(), "{}", text(&out));
    let after: Vec<String> = HOSTS.iter().map(|i| host_state(&lab, *i)).collect();
    assert_eq!(before, after, "a refused up changed a host");
    for i in HOSTS {
        assert!(etcd_version(&lab, i).contains("3.5.16"), "h{i}");
    }
    eprintln!(
        "cluster_versions: versions part {:.0}s",
        started.elapsed().as_secs_f64()
    );
    snapshots_through_etcdutl(&lab, work.path(), &inventory, &config);
    eprintln!("cluster_versions: {:.0}s", started.elapsed().as_secs_f64());
}

/// Part 2, on the cluster upgraded to etcd 3.5.16 with etcdutl (see the module's comment).
fn snapshots_through_etcdutl(
    lab: &FreshLab,
    work: &std::path::Path,
    inventory: &std::path::Path,
    config: &std::path::Path,
) {
    let started = Instant::now();
    let newer = xtask::artifacts::newer_etcd::ensure(&LabConfig::from_env().cache_dir).unwrap();
    let etcdutl = sha(&newer.etcdutl);
    for i in HOSTS {
        assert_eq!(
            remote_sha(lab, i, "/usr/local/bin/etcdutl"),
            etcdutl,
            "h{i}: the bundle's etcdutl not installed"
        );
        // Listed for `reset`.
        lab.ssh_ok(i, "grep -qx /usr/local/bin/etcdutl /var/lib/ilha/files")
            .unwrap_or_else(|err| panic!("h{i}: etcdutl not in the installed files: {err}"));
        install_stand_ins(lab, i);
    }
    let run = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend_from_slice(&[
            "-i",
            inventory.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
        ]);
        ilha(lab, &args)
    };
    // The stand-in really refuses, as etcd 3.6's etcdctl does.
    let refused = lab.ssh_ok(
        1,
        "/usr/local/bin/etcdctl -w json snapshot status /dev/null",
    );
    assert!(
        refused.is_err_and(|err| err.to_string().contains("unknown command")),
        "the etcd 3.6 stand-in answered snapshot status"
    );
    take_calls(lab, 1);

    // 1. etcd "3.6" without etcdutl: backup stops, naming each member, what is missing and what
    // to do, and never shows etcdctl's "unknown command".
    let say_36 = r#"[ "$1" != version ] || { echo "etcdctl version: 3.6.5"; exit 0; }"#;
    for i in HOSTS {
        lab.ssh_ok(
            i,
            &format!(
                "mv /usr/local/bin/etcdutl {REAL}/etcdutl.stand-in &&                  sed -i '2i {say_36}' /usr/local/bin/etcdctl &&                  /usr/local/bin/etcdctl version | grep -q 3.6.5"
            ),
        )
        .unwrap_or_else(|err| panic!("h{i}: {err}"));
    }
    let kit = work.join("etcdutl-kit.tar.zst");
    let out = run(&["backup", "--out", kit.to_str().unwrap(), "--no-encrypt"]);
    let log = text(&out);
    assert!(!out.status.success(), "{log}");
    for host in ["node1", "node2", "node3"] {
        assert!(log.contains(&format!("{host}: ")), "{host}: {log}");
    }
    assert_eq!(
        log.matches(
            "/usr/local/bin/etcdutl is missing and /usr/local/bin/etcdctl is version 3.6.5"
        )
        .count(),
        3,
        "{log}"
    );
    assert!(log.contains("Rebuild the bundle with etcdutl"), "{log}");
    assert!(!log.contains("unknown command"), "{log}");
    assert!(!kit.exists());
    for i in HOSTS {
        lab.ssh_ok(
            i,
            &format!(
                "mv {REAL}/etcdutl.stand-in /usr/local/bin/etcdutl &&                  sed -i '2d' /usr/local/bin/etcdctl &&                  ! /usr/local/bin/etcdctl version | grep -q 3.6.5"
            ),
        )
        .unwrap_or_else(|err| panic!("h{i}: {err}"));
        let calls = take_calls(lab, i);
        assert!(
            !calls.contains("snapshot"),
            "h{i}: a snapshot was attempted: {calls}"
        );
    }

    // 2. backup: the snapshot read and drilled by etcdutl.
    let out = run(&["backup", "--out", kit.to_str().unwrap(), "--no-encrypt"]);
    assert!(out.status.success(), "{}", text(&out));
    let calls: String = HOSTS.iter().map(|i| take_calls(lab, *i)).collect();
    assert!(!calls.contains("refused"), "{calls}");
    assert!(
        calls.contains("etcdutl -w json snapshot status /var/lib/ilha/snapshot.db"),
        "{calls}"
    );
    assert!(
        calls.contains("etcdutl snapshot restore /var/lib/ilha/snapshot.db --name ilha-drill"),
        "{calls}"
    );

    // 3. The timer's script, run at once by `--schedule` on every member.
    let out = run(&["backup", "--schedule", "--keep", "1"]);
    assert!(out.status.success(), "{}", text(&out));
    for i in HOSTS {
        let calls = take_calls(lab, i);
        assert!(!calls.contains("refused"), "h{i}: {calls}");
        assert!(
            calls.contains("etcdutl -w json snapshot status /var/backups/ilha/etcd-"),
            "h{i}: {calls}"
        );
    }

    // 4. restore: every member reads the kit's snapshot and restores it with etcdutl, which
    // moves the revision forward (etcd 3.4's etcdctl could not).
    let out = run(&["restore", kit.to_str().unwrap(), "--yes"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("revision bumped and compacted"), "{log}");
    for i in HOSTS {
        let calls = take_calls(lab, i);
        assert!(!calls.contains("refused"), "h{i}: {calls}");
        assert!(
            calls.contains("etcdutl -w json snapshot status /var/lib/ilha/restore/snapshot.db"),
            "h{i}: {calls}"
        );
        assert!(
            calls
                .contains("etcdutl snapshot restore /var/lib/ilha/restore/snapshot.db --name node"),
            "h{i}: {calls}"
        );
    }

    // 5. remove-node of one member: its snapshot first, read by etcdutl on a member that stays.
    let out = run(&["remove-node", "node3", "--yes"]);
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_live_snapshot_read_by_etcdutl(lab);
    assert_eq!(
        remote_sha(lab, 3, "/usr/local/bin/etcdutl"),
        "absent",
        "h3 reset"
    );

    // 6. reset of the two left: a last snapshot (etcdutl again), then etcdutl goes too.
    let two = work.join("two");
    std::fs::create_dir_all(&two).unwrap();
    let mut layout = layout();
    layout.truncate(2);
    let inventory_two = write_inventory(lab, &two, &layout, None);
    let out = ilha(
        lab,
        &[
            "reset",
            "-i",
            inventory_two.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
            "--yes",
        ],
    );
    let log = text(&out);
    assert!(out.status.success(), "{log}");
    assert_live_snapshot_read_by_etcdutl(lab);
    for i in HOSTS {
        assert_eq!(
            remote_sha(lab, i, "/usr/local/bin/etcdutl"),
            "absent",
            "h{i}"
        );
    }
    eprintln!(
        "cluster_versions: etcdutl part {:.0}s",
        started.elapsed().as_secs_f64()
    );
}
