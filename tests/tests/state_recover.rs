//! `ilha state recover` on the seed's 6-host cluster: the state directory of a running cluster is
//! lost, rebuilt from the hosts (also with a master unreachable), and then `ilha up` changes
//! nothing and `ilha backup` writes a kit. A state directory that holds a PKI is never
//! overwritten.
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Instant;

use ilha_e2e::cluster::{ilha, lab_bundle, seed_layout, text, write_config, write_inventory};

/// Every file under `dir`, by path relative to it.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).unwrap().display().to_string();
                out.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `ilha state recover` with the lab's ssh settings (the shared helper adds them only for the
/// commands it knows).
fn recover(lab: &xtask::lab::Lab, inventory: &Path, config: &Path) -> Output {
    let ssh_config = lab.ssh_config().expect("lab ssh_config");
    let known_hosts = lab.known_hosts();
    ilha(
        lab,
        &[
            "state",
            "recover",
            "-i",
            inventory.to_str().unwrap(),
            "-c",
            config.to_str().unwrap(),
            "--ssh-config",
            ssh_config.to_str().unwrap(),
            "--known-hosts",
            known_hosts.to_str().unwrap(),
            "--connect-timeout",
            "3",
        ],
    )
}

#[test]
fn a_lost_state_directory_is_recovered_and_up_then_changes_nothing() {
    let started = Instant::now();
    let lab = ilha_e2e::cluster::fresh_lab(6);
    let work = tempfile::tempdir().unwrap();
    let layout = seed_layout();
    let inventory = write_inventory(&lab, work.path(), &layout, None);
    let config = write_config(work.path(), "island");
    let state: PathBuf = work.path().join("state");
    let bundle = lab_bundle();
    let hosts = [
        "-i",
        inventory.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
    ];
    let up = || {
        let mut args = vec![
            "up",
            bundle.bundle.to_str().unwrap(),
            "--pubkey",
            bundle.pubkey.to_str().unwrap(),
        ];
        args.extend(hosts);
        ilha(&lab, &args)
    };
    let out = up();
    assert!(out.status.success(), "ilha up failed:\n{}", text(&out));
    let built = started.elapsed();

    // The hosts hold what recovery needs, readable by root only.
    for index in 1..=3 {
        let modes = lab
            .ssh_ok(
                index,
                "stat -c '%a %n' /etc/kubernetes/pki/etcd/ca.key /etc/kubernetes/pki/front-proxy-ca.key /var/lib/ilha/record.txt",
            )
            .unwrap();
        assert_eq!(
            modes.lines().filter(|l| l.starts_with("600 ")).count(),
            3,
            "h{index}: {modes}"
        );
    }
    assert!(
        lab.ssh_ok(5, "stat -c %a /var/lib/ilha/record.txt")
            .unwrap()
            .trim()
            == "600",
        "a worker keeps its record too"
    );

    // A state directory with a PKI is never overwritten.
    let before = tree(&state);
    let out = recover(&lab, &inventory, &config);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("already holds a PKI") && said.contains("move it aside"),
        "{said}"
    );
    assert!(said.contains(&state.display().to_string()), "{said}");
    assert_eq!(tree(&state), before, "the state directory changed");

    // The laptop is lost: the state directory is gone (kept aside only to compare with).
    let lost = work.path().join("lost");
    std::fs::rename(&state, &lost).unwrap();

    // With node3 unreachable, the others are enough for the CAs and everything shared; what
    // only node3 held is named.
    let third = lab.host(3).ip;
    let octets: Vec<&str> = third.split('.').collect();
    let nowhere = format!("{}.{}.{}.250", octets[0], octets[1], octets[2]);
    let partial_dir = work.path().join("partial");
    std::fs::create_dir(&partial_dir).unwrap();
    let text_inventory = std::fs::read_to_string(&inventory).unwrap().replace(
        &format!("ansible_ssh_host={third} "),
        &format!("ansible_ssh_host={nowhere} "),
    );
    assert!(text_inventory.contains(&nowhere));
    let partial_inventory = partial_dir.join("inventory.ini");
    std::fs::write(&partial_inventory, text_inventory).unwrap();
    let partial_config = write_config(&partial_dir, "island");
    let t = Instant::now();
    let out = recover(&lab, &partial_inventory, &partial_config);
    let said = text(&out);
    assert!(
        out.status.success(),
        "recover with node3 unreachable:\n{said}"
    );
    eprintln!(
        "BENCH ilha state recover, node3 unreachable: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        said.contains("Unreachable hosts") && said.contains("node3"),
        "{said}"
    );
    assert!(said.contains("apiserver-node3"), "{said}");
    assert!(said.contains("kit-key"), "{said}");
    let partial = tree(&partial_dir.join("state/pki"));
    let original = tree(&lost.join("pki"));
    for file in [
        "kubernetes/ca.crt",
        "kubernetes/ca.key",
        "etcd/ca.key",
        "front-proxy/ca.key",
        "sa.key",
        "kubernetes/apiserver-node1.crt",
        "kubernetes/admin.key",
    ] {
        assert_eq!(partial.get(file), original.get(file), "{file}");
    }
    assert!(!partial.contains_key("kubernetes/apiserver-node3.crt"));

    // Every host answering: the same state directory again, byte for byte where it counts.
    let t = Instant::now();
    let out = recover(&lab, &inventory, &config);
    let said = text(&out);
    assert!(out.status.success(), "ilha state recover failed:\n{said}");
    eprintln!(
        "BENCH ilha state recover (6 hosts): {:.1}s",
        t.elapsed().as_secs_f64()
    );
    assert!(!said.contains("Warnings:"), "{said}");
    assert_eq!(
        tree(&state.join("pki")),
        original,
        "the recovered PKI differs"
    );
    for file in ["pod-ranges.json", "etcd-members.json"] {
        assert_eq!(json(&state.join(file)), json(&lost.join(file)), "{file}");
    }
    for index in 1..=6 {
        let record = format!("records/node{index}.txt");
        assert_eq!(
            std::fs::read(state.join(&record)).ok(),
            std::fs::read(lost.join(&record)).ok(),
            "{record}"
        );
    }
    assert_eq!(
        std::fs::read(state.join("admin.conf")).unwrap(),
        std::fs::read(lost.join("admin.conf")).unwrap()
    );
    assert_eq!(mode(&state), 0o700);
    assert_eq!(mode(&state.join("pki/kubernetes/ca.key")), 0o600);
    assert_eq!(mode(&state.join("admin.conf")), 0o600);
    std::fs::remove_dir_all(&lost).unwrap();

    // The proof: `up` finds every step done, and a backup works.
    let t = Instant::now();
    let out = up();
    let said = text(&out);
    assert!(out.status.success(), "ilha up after recovery:\n{said}");
    assert!(
        said.contains("Nothing changed"),
        "up after recovery changed something:\n{said}"
    );
    eprintln!(
        "BENCH ilha up after recovery: {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let passphrase = work.path().join("passphrase");
    std::fs::write(&passphrase, "correct horse battery staple\n").unwrap();
    let kit = work.path().join("kit.tar.zst");
    let mut args = vec![
        "backup",
        "--out",
        kit.to_str().unwrap(),
        "--passphrase-file",
        passphrase.to_str().unwrap(),
    ];
    args.extend(hosts);
    let out = ilha(&lab, &args);
    assert!(
        out.status.success(),
        "ilha backup after recovery:\n{}",
        text(&out)
    );
    assert!(kit.is_file());
    eprintln!(
        "BENCH state_recover suite: {:.1}s (cluster built in {:.1}s)",
        started.elapsed().as_secs_f64(),
        built.as_secs_f64()
    );
}
