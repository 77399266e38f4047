//! `ilha verify` / `ilha inspect` as a user runs them.

use std::fs;
use std::path::PathBuf;

use assert_cmd::Command;
use ilha_format::index::blob_path;
use ilha_format::{
    ArtifactRecord, Index, NoProgress, PackSource, Sha256, generate_keypair, load_secret_key, pack,
    sign_file,
};
use predicates::prelude::*;

struct Bundle {
    dir: tempfile::TempDir,
    file: PathBuf,
    pubkey: PathBuf,
}

fn bundle() -> Bundle {
    let dir = tempfile::tempdir().unwrap();
    let (key, pubkey) = generate_keypair(dir.path(), None).unwrap();
    let key = load_secret_key(&key, None).unwrap();
    let mut index = Index::new("lab", "1.2.3", "linux/amd64");
    let mut sources = Vec::new();
    for (name, data, executable) in [
        ("kubelet", b"\x7fELF pretend kubelet".repeat(1000), true),
        ("calico.yaml", b"kind: List\n".repeat(50), false),
    ] {
        let src = dir.path().join(name);
        fs::write(&src, &data).unwrap();
        let digest = Sha256::of(&data);
        let record = ArtifactRecord {
            name: name.into(),
            sha256: digest,
            size: data.len() as u64,
            source: format!("./{name}"),
        };
        if executable {
            index.binaries.push(record)
        } else {
            index.files.push(record)
        }
        sources.push(PackSource {
            path_in_bundle: blob_path(&digest),
            source_file: src,
            sha256: digest,
            size: data.len() as u64,
            executable,
        });
    }
    let file = dir.path().join("lab.tar.zst");
    pack(index, sources, &key, &file, &NoProgress).unwrap();
    Bundle { dir, file, pubkey }
}

fn ilha() -> Command {
    Command::cargo_bin("ilha").unwrap()
}

fn no_ansi() -> impl Predicate<str> {
    predicate::str::contains("\u{1b}[").not()
}

#[test]
fn verify_ok_prints_one_summary_line() {
    let b = bundle();
    // By default FILE.minisig is only matched (key id, bundle name), not recomputed.
    ilha()
        .args(["verify"])
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"^ok: bundle lab 1\.2\.3: 2 entries, .* 0 images, 1 binaries, 1 files; index signature ok, file signature same key \(not recomputed\); [0-9.]+ s\n$").unwrap())
        .stdout(no_ansi());
    ilha()
        .args(["verify", "--file-signature"])
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"^ok: bundle lab 1\.2\.3: 2 entries, .* 0 images, 1 binaries, 1 files; index signature ok, file signature ok; [0-9.]+ s\n$").unwrap())
        .stdout(no_ansi());
}

fn verify_json_of(b: &Bundle, extra: &[&str]) -> serde_json::Value {
    let out = ilha()
        .arg("verify")
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn verify_json() {
    let b = bundle();
    let v = verify_json_of(&b, &[]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["entries"], 2);
    assert_eq!(v["file_signature"], "same_key");
    let v = verify_json_of(&b, &["--file-signature"]);
    assert_eq!(v["ok"], true);
    assert_eq!(v["file_signature"], "verified");
    fs::remove_file(format!("{}.minisig", b.file.display())).unwrap();
    assert_eq!(verify_json_of(&b, &[])["file_signature"], "absent");
}

/// A file re-compressed differently changes but not one byte of its content: only the whole-file
/// signature sees it, so only `--file-signature` refuses the file.
#[test]
fn file_signature_flag_recomputes_the_whole_file_signature() {
    let b = bundle();
    // Re-compressed at another level: other bytes, same content. (A zstd skippable frame appended
    // did that too, but bytes after the archive's end are now refused in every mode: see
    // `bundle_hygiene.rs`.)
    let raw = fs::read(&b.file).unwrap();
    let tar = zstd::decode_all(&raw[..]).unwrap();
    let recompressed = zstd::encode_all(&tar[..], 1).unwrap();
    assert_ne!(recompressed, raw);
    fs::write(&b.file, &recompressed).unwrap();
    ilha()
        .arg("verify")
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .success()
        .stdout(predicate::str::contains("file signature same key"));
    ilha()
        .args(["verify", "--file-signature"])
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains(
            "lab.tar.zst.minisig: bad signature",
        ));
}

#[test]
fn file_signature_flag_needs_the_minisig() {
    let b = bundle();
    fs::remove_file(format!("{}.minisig", b.file.display())).unwrap();
    ilha()
        .args(["verify", "--file-signature"])
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::contains("--file-signature: "))
        .stderr(predicate::str::contains(
            "lab.tar.zst.minisig does not exist",
        ));
}

/// Without `--file-signature`, FILE.minisig must still come from the same key and name the same
/// bundle.
#[test]
fn default_verify_still_matches_the_minisig() {
    let b = bundle();
    let other = tempfile::tempdir().unwrap();
    let (other_key, _) = generate_keypair(other.path(), None).unwrap();
    sign_file(&load_secret_key(&other_key, None).unwrap(), &b.file).unwrap();
    ilha()
        .arg("verify")
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "lab.tar.zst.minisig: signed by key",
        ))
        .stderr(predicate::str::contains("wrong key?"));

    // Same key, but the trusted comment names something else (`file:lab.tar.zst`).
    let key = b.dir.path().join("ilha.key");
    sign_file(&load_secret_key(&key, None).unwrap(), &b.file).unwrap();
    ilha()
        .arg("verify")
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            r#"lab.tar.zst.minisig: trusted comment is "file:lab.tar.zst", expected "ilha bundle lab 1.2.3""#,
        ));
}

#[test]
fn verify_with_the_wrong_key_fails_with_cause() {
    let b = bundle();
    let other = tempfile::tempdir().unwrap();
    let (_, other_pub) = generate_keypair(other.path(), None).unwrap();
    ilha()
        .arg("verify")
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&other_pub)
        .assert()
        .code(1)
        .stdout("")
        .stderr(predicate::str::starts_with(
            "error: verification failed\ncaused by: bundle ",
        ))
        .stderr(predicate::str::contains("wrong key?"));
}

#[test]
fn verify_names_the_corrupted_entry() {
    let b = bundle();
    let mut tar = zstd::decode_all(fs::File::open(&b.file).unwrap()).unwrap();
    let needle = b"kind: List";
    // Only the data of calico.yaml contains this text (the index lists digests, not contents).
    let at = tar.windows(needle.len()).position(|w| w == needle).unwrap();
    tar[at] = b'K';
    fs::write(&b.file, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    ilha()
        .arg("verify")
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .code(1)
        .stderr(predicate::str::is_match(r#"caused by: entry "blobs/sha256/[0-9a-f]{64}": sha256 is [0-9a-f]{64}, the index declares [0-9a-f]{64}"#).unwrap());
}

#[test]
fn verify_reports_truncation() {
    let b = bundle();
    let raw = fs::read(&b.file).unwrap();
    fs::write(&b.file, &raw[..raw.len() / 2]).unwrap();
    ilha()
        .arg("verify")
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("truncated"));
}

#[test]
fn usage_errors_exit_2() {
    ilha()
        .arg("verify")
        .arg("x.tar.zst")
        .env_remove("ILHA_PUBKEY")
        .assert()
        .code(2);
    ilha().arg("frobnicate").assert().code(2);
}

#[test]
fn missing_file_is_named() {
    let b = bundle();
    let missing = b.dir.path().join("nope.tar.zst");
    ilha()
        .arg("verify")
        .arg(&missing)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nope.tar.zst"));
}

#[test]
fn inspect_text_and_json() {
    let b = bundle();
    ilha()
        .arg("inspect")
        .arg(&b.file)
        .assert()
        .success()
        .stdout(predicate::str::starts_with(
            "bundle lab 1.2.3 (linux/amd64, ilha-bundle/1)\n",
        ))
        .stdout(predicate::str::contains(
            "binaries (1):\n  kubelet  sha256:",
        ))
        .stdout(predicate::str::contains(
            "files (1):\n  calico.yaml  sha256:",
        ))
        .stdout(predicate::str::contains("totals: 2 entries"))
        .stdout(no_ansi())
        .stderr("");
    let out = ilha()
        .arg("inspect")
        .arg(&b.file)
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["index"]["binaries"][0]["name"], "kubelet");
    assert_eq!(v["totals"]["entries"], 2);
    assert_eq!(v["totals"]["saved_by_dedup_bytes"], 0);
}

#[test]
fn inspect_with_pubkey_verifies_first() {
    let b = bundle();
    ilha()
        .arg("inspect")
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .success();
    let raw = fs::read(&b.file).unwrap();
    fs::write(&b.file, &raw[..raw.len() - 10]).unwrap();
    ilha()
        .arg("inspect")
        .arg(&b.file)
        .arg("--pubkey")
        .arg(&b.pubkey)
        .assert()
        .code(1)
        .stderr(predicate::str::starts_with("error: verification failed"));
}

/// A kit holds the cluster's keys: without a choice of encryption, nothing is written at all.
#[test]
fn backup_without_an_encryption_choice_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("inventory.ini");
    fs::write(
        &inventory,
        "m1 ansible_ssh_host=127.0.0.1 ansible_port=1 ip=10.0.0.1\n\
         [kube-master]\nm1\n[etcd]\nm1\n[kube-node]\nm1\n\
         [k8s-cluster:children]\nkube-master\nkube-node\n",
    )
    .unwrap();
    let config = dir.path().join("cluster.yaml");
    fs::write(&config, "cluster_name: lab\nstate_dir: state\n").unwrap();
    let kit = dir.path().join("media/kit.tar.zst");
    ilha()
        .args(["backup", "-i"])
        .arg(&inventory)
        .arg("-c")
        .arg(&config)
        .arg("--out")
        .arg(&kit)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("nothing was written"))
        .stderr(predicate::str::contains("--encrypt-to"))
        .stderr(predicate::str::contains("--passphrase-file"))
        .stderr(predicate::str::contains("--no-encrypt"));
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["cluster.yaml", "inventory.ini"]);
    // --no-encrypt is a choice of its own, not a companion of the others.
    ilha()
        .args(["backup", "-i"])
        .arg(&inventory)
        .arg("--out")
        .arg(&kit)
        .args(["--no-encrypt", "--passphrase-file", "p"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot be used with"));
}
