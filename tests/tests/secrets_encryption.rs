//! Secrets encrypted at rest (`hardening: secrets_encryption`, issue 14) on one cluster of two
//! hosts (h1 master + etcd, h2 worker), everything checked on the master itself: the raw value
//! of each Secret in etcd (`etcdctl get` with the healthcheck-client certificate), the running
//! apiserver's flags, file modes.
//!
//! The cluster is first installed with the item off (as a cluster installed before this change
//! is): Secrets are plain in etcd. `up` with it on encrypts every one of them (aescbc, key1),
//! their data unchanged; a second `up` changes nothing. A kit is taken, then `ilha secrets
//! rotate-key` moves every Secret to key2 and drops key1. The kit from before the rotation is
//! restored: its snapshot needs key1, which comes back as a reader, so every Secret reads as it
//! was; the next `up` rewrites them with key2 and drops key1 again. Turned off at last, every
//! Secret is plain again and key2 stays a reader.
//!
//! Stand-ins: Kubernetes v1.20.2 and etcd 3.4 of the lab bundle (newer ones cannot be built here);
//! the encryption config and flag are the same from 1.13 to today.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ilha_e2e::cluster::{
    LAB_EVICTION, fresh_lab, ilha, ilha_binary, kubectl, lab_bundle, master_and_worker, text,
    write_inventory,
};
use xtask::lab::Lab;

const SECRETS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: vault}
---
apiVersion: v1
kind: Secret
metadata: {name: alpha, namespace: vault}
stringData: {password: alpha-plain-marker-1, user: admin}
---
apiVersion: v1
kind: Secret
metadata: {name: beta, namespace: vault}
type: kubernetes.io/tls
data: {tls.crt: Y2VydA==, tls.key: YmV0YS1wbGFpbi1tYXJrZXItMg==}
---
apiVersion: v1
kind: Secret
metadata: {name: gamma, namespace: default}
stringData: {token: gamma-plain-marker-3}
"#;

const ETCDCTL: &str = "ETCDCTL_API=3 /usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 \
    --cacert=/etc/kubernetes/pki/etcd/ca.crt --cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt \
    --key=/etc/kubernetes/pki/etcd/healthcheck-client.key";

fn config(dir: &Path, encryption: bool) -> PathBuf {
    // One file per setting: the state directory (`state`, beside it) is the same.
    let path = dir.join(if encryption {
        "cluster-on.yaml"
    } else {
        "cluster-off.yaml"
    });
    std::fs::write(
        &path,
        format!(
            "cluster_name: enc\nstate_dir: state\n{LAB_EVICTION}hardening:\n  secrets_encryption: {encryption}\n"
        ),
    )
    .unwrap();
    path
}

/// `ilha <args> -i INV -c CFG` with the lab's ssh settings; fails the test unless it succeeds.
fn run_ok(lab: &Lab, args: &[&str], inventory: &Path, config: &Path) -> String {
    let mut all: Vec<&str> = args.to_vec();
    all.extend([
        "-i",
        inventory.to_str().unwrap(),
        "-c",
        config.to_str().unwrap(),
    ]);
    let out = ilha(lab, &all);
    assert!(
        out.status.success(),
        "ilha {} failed:\n{}",
        args[0],
        text(&out)
    );
    text(&out)
}

/// `ilha secrets rotate-key` (the shared `ilha` helper adds ssh settings to top-level commands).
fn rotate(lab: &Lab, inventory: &Path, config: &Path) -> Output {
    let bundle = lab_bundle();
    let started = std::time::Instant::now();
    let out = Command::new(ilha_binary())
        .args([
            "secrets",
            "rotate-key",
            bundle.bundle.to_str().unwrap(),
            "--pubkey",
        ])
        .arg(&bundle.pubkey)
        .arg("-i")
        .arg(inventory)
        .arg("-c")
        .arg(config)
        .arg("--ssh-config")
        .arg(lab.ssh_config().expect("lab ssh_config"))
        .arg("--known-hosts")
        .arg(lab.known_hosts())
        .output()
        .unwrap();
    eprintln!(
        "$ ilha secrets rotate-key ({:.1}s, {})\n{}",
        started.elapsed().as_secs_f64(),
        out.status,
        text(&out)
    );
    out
}

/// Every Secret's key in etcd (`/registry/secrets/NS/NAME`) and its raw value there, read in one
/// round trip: `KEY HEX` lines (hex, since a plain value is protobuf; etcdctl ends each value with
/// a newline of its own).
fn raw_secrets(lab: &Lab) -> BTreeMap<String, Vec<u8>> {
    let listing = lab
        .ssh_ok(
            1,
            &format!(
                "for k in $({ETCDCTL} get /registry/secrets/ --prefix --keys-only); do \
                   printf '%s ' \"$k\"; {ETCDCTL} get \"$k\" --print-value-only | head -c -1 \
                   | od -An -v -tx1 | tr -d ' \\n'; echo; done"
            ),
        )
        .unwrap();
    listing
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(key, hex_value)| (key.to_string(), hex::decode(hex_value.trim()).unwrap()))
        .collect()
}

fn raw(lab: &Lab, key: &str) -> Vec<u8> {
    raw_secrets(lab)
        .remove(key)
        .unwrap_or_else(|| panic!("{key} is not in etcd"))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every Secret stored with `key` (`k8s:enc:aescbc:v1:KEY:`), none holding a marker in clear.
fn assert_all_encrypted_with(lab: &Lab, key: &str) {
    let prefix = format!("k8s:enc:aescbc:v1:{key}:");
    let all = raw_secrets(lab);
    assert!(all.len() >= 3, "{:?}", all.keys());
    for (name, value) in &all {
        assert!(
            value.starts_with(prefix.as_bytes()),
            "{name} in etcd starts with {:?}, not {prefix}",
            String::from_utf8_lossy(&value[..value.len().min(40)])
        );
        assert!(
            !contains(value, "plain-marker"),
            "{name}: a marker in clear"
        );
    }
}

/// The data of each test Secret as the API serves it.
fn data(lab: &Lab) -> BTreeMap<String, String> {
    [("vault", "alpha"), ("vault", "beta"), ("default", "gamma")]
        .into_iter()
        .map(|(ns, name)| {
            (
                format!("{ns}/{name}"),
                kubectl(
                    lab,
                    1,
                    &format!("-n {ns} get secret {name} -o jsonpath='{{.data}}'"),
                ),
            )
        })
        .collect()
}

fn encryption_config(lab: &Lab) -> String {
    lab.ssh_ok(1, "cat /etc/kubernetes/encryption-config.yaml")
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn secrets_are_encrypted_rotated_and_restored_readable() {
    let lab = fresh_lab(2);
    let work = tempfile::tempdir().unwrap();
    let inventory = write_inventory(&lab, work.path(), &master_and_worker(), None);
    let bundle = lab_bundle();
    let up = [
        "up",
        bundle.bundle.to_str().unwrap(),
        "--pubkey",
        bundle.pubkey.to_str().unwrap(),
    ];
    let state = work.path().join("state");

    // Off: as a cluster installed before this change. Plain text in etcd, no config, no flag.
    let off = config(work.path(), false);
    run_ok(&lab, &up, &inventory, &off);
    assert!(!state.join("encryption").exists());
    assert_eq!(
        lab.ssh_ok(
            1,
            "test -e /etc/kubernetes/encryption-config.yaml && echo yes || echo no"
        )
        .unwrap()
        .trim(),
        "no"
    );
    let manifest = work.path().join("secrets.yaml");
    std::fs::write(&manifest, SECRETS).unwrap();
    lab.copy_to(1, &manifest, "/root/secrets.yaml").unwrap();
    kubectl(&lab, 1, "apply -f /root/secrets.yaml");
    let before = data(&lab);
    let alpha = raw(&lab, "/registry/secrets/vault/alpha");
    assert!(
        !alpha.starts_with(b"k8s:enc:") && contains(&alpha, "alpha-plain-marker-1"),
        "{}",
        String::from_utf8_lossy(&alpha)
    );

    // No key to rotate with the item off: refused before any change.
    let out = rotate(&lab, &inventory, &off);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("needs a running cluster with `hardening: {secrets_encryption: true}`"),
        "{}",
        text(&out)
    );
    assert!(!state.join("encryption").exists());

    // On: every Secret (those of the service accounts too) rewritten with key1, data unchanged.
    let on = config(work.path(), true);
    let said = run_ok(&lab, &up, &inventory, &on);
    assert!(
        said.contains("Secrets at rest: aescbc:key1, identity")
            && said.contains("Secret(s) rewritten"),
        "{said}"
    );
    assert_all_encrypted_with(&lab, "key1");
    assert_eq!(data(&lab), before);
    let cmdline = lab
        .ssh_ok(1, "tr '\\0' ' ' < /proc/$(pidof kube-apiserver)/cmdline")
        .unwrap();
    assert!(
        cmdline.contains("--encryption-provider-config=/etc/kubernetes/encryption-config.yaml"),
        "{cmdline}"
    );
    assert_eq!(
        lab.ssh_ok(1, "stat -c '%a %U' /etc/kubernetes/encryption-config.yaml")
            .unwrap()
            .trim(),
        "600 root"
    );
    assert_eq!(mode(&state.join("encryption")), 0o700);
    assert_eq!(mode(&state.join("encryption/key1.key")), 0o600);
    assert_eq!(mode(&state.join("encryption/keys.json")), 0o600);
    // The worker has no key.
    assert_eq!(
        lab.ssh_ok(
            2,
            "test -e /etc/kubernetes/encryption-config.yaml && echo yes || echo no"
        )
        .unwrap()
        .trim(),
        "no"
    );
    // Journaled: a second run changes nothing and rewrites nothing.
    let again = run_ok(&lab, &up, &inventory, &on);
    assert!(
        again.contains("Nothing changed") && !again.contains("rewritten"),
        "{again}"
    );

    // A kit of the cluster as it is now (Secrets with key1).
    let passphrase = work.path().join("passphrase");
    std::fs::write(&passphrase, "correct horse battery staple\n").unwrap();
    let kit = work.path().join("before-rotation.tar.zst");
    run_ok(
        &lab,
        &[
            "backup",
            "--out",
            kit.to_str().unwrap(),
            "--passphrase-file",
            passphrase.to_str().unwrap(),
        ],
        &inventory,
        &on,
    );

    // Rotation: key2 writes, every Secret rewritten with it, key1 gone from the config.
    let out = rotate(&lab, &inventory, &on);
    assert!(out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(
        said.contains("new key `key2`")
            && said.contains("Secret(s) rewritten")
            && said.contains("key(s) dropped after the rewrite: key1")
            && said.contains("Secrets at rest: aescbc:key2, identity"),
        "{said}"
    );
    assert_all_encrypted_with(&lab, "key2");
    assert_eq!(data(&lab), before);
    let config_text = encryption_config(&lab);
    assert!(
        config_text.contains("name: key2") && !config_text.contains("name: key1"),
        "{config_text}"
    );
    assert_eq!(mode(&state.join("encryption/key2.key")), 0o600);
    let again = run_ok(&lab, &up, &inventory, &on);
    assert!(again.contains("Nothing changed"), "{again}");

    // The kit from before the rotation: its snapshot's Secrets need key1, which comes back as
    // a reader, so they read as they were.
    let said = run_ok(
        &lab,
        &[
            "restore",
            kit.to_str().unwrap(),
            "--passphrase-file",
            passphrase.to_str().unwrap(),
            "--yes",
        ],
        &inventory,
        &on,
    );
    assert!(said.contains("the kit's key(s) key1"), "{said}");
    let config_text = encryption_config(&lab);
    assert!(
        config_text.find("name: key2").unwrap() < config_text.find("name: key1").unwrap(),
        "{config_text}"
    );
    // (Secrets written since the restore, if any, are key2's.)
    for name in ["vault/alpha", "vault/beta", "default/gamma"] {
        let value = raw(&lab, &format!("/registry/secrets/{name}"));
        assert!(
            value.starts_with(b"k8s:enc:aescbc:v1:key1:"),
            "{name}: {}",
            String::from_utf8_lossy(&value[..value.len().min(40)])
        );
    }
    assert_eq!(data(&lab), before);

    // The next `up` moves them to key2 and drops key1 again.
    let said = run_ok(&lab, &up, &inventory, &on);
    assert!(
        said.contains("Secret(s) rewritten")
            && said.contains("key(s) dropped after the rewrite: key1"),
        "{said}"
    );
    assert_all_encrypted_with(&lab, "key2");
    assert_eq!(data(&lab), before);
    assert!(!encryption_config(&lab).contains("name: key1"));

    // Off again: identity writes, every Secret rewritten in plain text, key2 kept as a reader.
    let said = run_ok(&lab, &up, &inventory, &off);
    assert!(
        said.contains("Secrets at rest: identity, aescbc:key2")
            && said.contains("Secret(s) rewritten"),
        "{said}"
    );
    for (name, value) in raw_secrets(&lab) {
        assert!(!value.starts_with(b"k8s:enc:"), "{name} is still encrypted");
    }
    assert!(contains(
        &raw(&lab, "/registry/secrets/vault/alpha"),
        "alpha-plain-marker-1"
    ));
    assert_eq!(data(&lab), before);
    let config_text = encryption_config(&lab);
    assert!(
        config_text.find("identity: {}").unwrap() < config_text.find("name: key2").unwrap(),
        "{config_text}"
    );
}
