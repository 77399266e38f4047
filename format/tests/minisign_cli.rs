//! Interoperability with the stock `minisign` CLI (Debian package `minisign`). Fails if missing.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use ilha_format::sign::{Signature, sign_file};
use ilha_format::{NoProgress, generate_keypair, load_public_key, load_secret_key, pack, verify};

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    text
}

fn minisign() -> Command {
    Command::new("minisign")
}

#[test]
fn stock_minisign_verifies_both_signatures() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, pub_path) = generate_keypair(dir.path(), None).unwrap();
    let key = load_secret_key(&key_path, None).unwrap();
    let (index, sources) = sources(dir.path());
    let bundle = dir.path().join("lab.tar.zst");
    pack(index, sources, &key, &bundle, &NoProgress).unwrap();

    let out = run(minisign().arg("-Vm").arg(&bundle).arg("-p").arg(&pub_path));
    assert!(
        out.contains("Signature and comment signature verified"),
        "{out}"
    );
    assert!(
        out.contains("Trusted comment: ilha bundle lab 1.0.0-test"),
        "{out}"
    );

    let x = dir.path().join("x");
    fs::create_dir(&x).unwrap();
    run(Command::new("tar")
        .arg("--zstd")
        .arg("-xf")
        .arg(&bundle)
        .arg("-C")
        .arg(&x));
    let out = run(minisign()
        .arg("-Vm")
        .arg(x.join("ilha-index.json"))
        .arg("-x")
        .arg(x.join("ilha-index.json.minisig"))
        .arg("-p")
        .arg(&pub_path));
    assert!(
        out.contains("Trusted comment: ilha bundle lab 1.0.0-test"),
        "{out}"
    );
    // GNU tar sees plain regular files at the advertised paths.
    assert!(x.join("images/oci-layout").is_file());

    // And the stock tool rejects a tampered bundle, as we do.
    let mut raw = fs::read(&bundle).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    fs::write(&bundle, raw).unwrap();
    let status = minisign()
        .arg("-Vm")
        .arg(&bundle)
        .arg("-p")
        .arg(&pub_path)
        .output()
        .unwrap()
        .status;
    assert!(!status.success());
}

#[test]
fn stock_minisign_key_signs_with_our_code_and_vice_versa() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("stock.key");
    let pub_path = dir.path().join("stock.pub");
    run(minisign()
        .arg("-G")
        .arg("-W")
        .arg("-p")
        .arg(&pub_path)
        .arg("-s")
        .arg(&key_path));
    let key = load_secret_key(&key_path, None).unwrap();
    let public = load_public_key(&pub_path).unwrap();
    assert_eq!(key.public_key(), public);

    // Our signature of a file, checked by the stock tool.
    let data = dir.path().join("data.bin");
    fs::write(&data, noise(3, 100_000)).unwrap();
    let sig_path = sign_file(&key, &data).unwrap();
    assert_eq!(sig_path, dir.path().join("data.bin.minisig"));
    run(minisign().arg("-Vm").arg(&data).arg("-p").arg(&pub_path));

    // A whole bundle packed with the stock key verifies with both tools.
    let (index, sources) = sources(dir.path());
    let bundle = dir.path().join("lab.tar.zst");
    pack(index, sources, &key, &bundle, &NoProgress).unwrap();
    run(minisign().arg("-Vm").arg(&bundle).arg("-p").arg(&pub_path));
    verify(&bundle, &public).unwrap();

    // The stock tool's own signature (with its timestamp comment) parses and verifies with our code.
    let other = dir.path().join("other.bin");
    fs::write(&other, b"signed by stock minisign").unwrap();
    run(minisign()
        .arg("-S")
        .arg("-s")
        .arg(&key_path)
        .arg("-m")
        .arg(&other));
    let sig = Signature::from_file(&dir.path().join("other.bin.minisig")).unwrap();
    public
        .verify_bytes(&fs::read(&other).unwrap(), &sig, "other.bin.minisig")
        .unwrap();
}

#[test]
fn our_unencrypted_key_works_with_stock_minisign() {
    let dir = tempfile::tempdir().unwrap();
    let (key_path, pub_path) = generate_keypair(dir.path(), None).unwrap();
    let data = dir.path().join("notes.txt");
    fs::write(&data, b"hello").unwrap();
    // No password prompt: stdin is closed, so a prompt would fail the command.
    run(minisign()
        .arg("-S")
        .arg("-s")
        .arg(&key_path)
        .arg("-m")
        .arg(&data)
        .stdin(std::process::Stdio::null()));
    run(minisign().arg("-Vm").arg(&data).arg("-p").arg(&pub_path));
    assert!(Path::new(&format!("{}.minisig", data.display())).exists());
}
