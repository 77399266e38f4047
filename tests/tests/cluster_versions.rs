//! The version guard on real hosts, with one three-host cluster (all masters + etcd): the lab's
//! bundle (etcd 3.4.23, Debian 12's) installs it. A second bundle, the same but with Debian 13's
//! etcd 3.5 (pinned by sha256, signed with the test's key), is first stopped in the prepare phase:
//! every host has etcd 3.5 staged beside 3.4 and still runs 3.4. The same `up` again continues
//! and switches the members one at a time, each at its own restart, with a quorum answering
//! throughout. Then `up` with the first bundle is refused with both versions named, also with
//! `--allow-downgrade`, and nothing on any host changes (binaries, units, journal, no staged
//! file), checked over SSH.
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

/// The lab's bundle with etcd and etcdctl taken from Debian 13's packages, signed with the lab
/// bundle's own test key (built once, next to it).
/// Returns the bundle and the sha256 of its etcd.
fn etcd35_bundle(lab_bundle: &ilha_e2e::cluster::LabBundle) -> (std::path::PathBuf, String) {
    let config = LabConfig::from_env();
    let newer = xtask::artifacts::newer_etcd::ensure(&config.cache_dir).unwrap_or_else(|err| {
        panic!(
            "fetching etcd {}: {err:#}",
            xtask::artifacts::newer_etcd::VERSION
        )
    });
    let dir = lab_bundle.dir.join(format!("etcd-{}", newer.version));
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
    eprintln!("cluster_versions: {:.0}s", started.elapsed().as_secs_f64());
}
