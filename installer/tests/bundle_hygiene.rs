//! Bundle index hygiene as a user meets it: `ilha verify` (with and without `--file-signature`)
//! and `ilha inspect --pubkey` refuse bytes appended after the archive's end, and an index,
//! re-signed with the right key, that names a binary `../x` or an image with `$(...)`.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use ilha_format::index::{blob_path, image_blob_path};
use ilha_format::sign::sign_file_with_comment;
use ilha_format::{
    ArtifactRecord, Entry, ImageRecord, Index, NoProgress, PackSource, SecretKey, Sha256,
    generate_keypair, load_secret_key, pack,
};
use predicates::prelude::*;

const TOOL: &[u8] = b"\x7fELF pretend kubelet";
const MANIFEST: &[u8] = b"{\"schemaVersion\":2}";

struct Keys {
    _dir: tempfile::TempDir,
    secret: SecretKey,
    pubkey: PathBuf,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let (secret, pubkey) = generate_keypair(dir.path(), None).unwrap();
    Keys {
        secret: load_secret_key(&secret, None).unwrap(),
        pubkey,
        _dir: dir,
    }
}

/// A valid index with a binary and an image.
fn index() -> Index {
    let (t, m) = (Sha256::of(TOOL), Sha256::of(MANIFEST));
    let mut index = Index::new("lab", "1.2.3", "linux/amd64");
    index.binaries.push(ArtifactRecord {
        name: "kubelet".into(),
        sha256: t,
        size: TOOL.len() as u64,
        source: "./kubelet".into(),
    });
    index.images.push(ImageRecord {
        name: "registry.k8s.io/pause:3.2".into(),
        source: "registry.k8s.io/pause:3.2".into(),
        manifest_digest: m.to_oci(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        size: MANIFEST.len() as u64,
        layers: 0,
    });
    index
}

/// Packs `index` the normal way (bundle + `.minisig`).
fn packed(keys: &Keys, dir: &Path) -> PathBuf {
    let mut sources = Vec::new();
    for (path, data, executable) in [
        (blob_path(&Sha256::of(TOOL)), TOOL, true),
        (image_blob_path(&Sha256::of(MANIFEST)), MANIFEST, false),
    ] {
        let src = dir.join(format!("src-{}", sources.len()));
        fs::write(&src, data).unwrap();
        sources.push(PackSource {
            path_in_bundle: path,
            source_file: src,
            sha256: Sha256::of(data),
            size: data.len() as u64,
            executable,
        });
    }
    let file = dir.join("lab.tar.zst");
    pack(index(), sources, &keys.secret, &file, &NoProgress).unwrap();
    file
}

/// The bundle the packer would refuse to write: `index` as given, signed by `keys`, and the
/// whole file signed too.
fn crafted(keys: &Keys, index: &Index, dir: &Path) -> PathBuf {
    let mut index = index.clone();
    index.entries = [(TOOL, 0o755), (MANIFEST, 0o644)]
        .into_iter()
        .map(|(data, mode)| {
            let sha256 = Sha256::of(data);
            Entry {
                path: if mode == 0o755 {
                    blob_path(&sha256)
                } else {
                    image_blob_path(&sha256)
                },
                sha256,
                size: data.len() as u64,
                mode,
            }
        })
        .collect();
    let index_bytes = index.to_json_bytes();
    let sig = keys
        .secret
        .sign_bytes(&index_bytes, &index.trusted_comment())
        .to_minisig_string();
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], mode: u32| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, data).unwrap();
    };
    add("ilha-index.json", &index_bytes, 0o644);
    add("ilha-index.json.minisig", sig.as_bytes(), 0o644);
    add(&blob_path(&Sha256::of(TOOL)), TOOL, 0o755);
    add(&image_blob_path(&Sha256::of(MANIFEST)), MANIFEST, 0o644);
    let tar = tar.into_inner().unwrap();
    let file = dir.join("crafted.tar.zst");
    fs::write(&file, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
    sign_file_with_comment(&keys.secret, &file, &index.trusted_comment()).unwrap();
    file
}

/// `ilha verify`, `ilha verify --file-signature` and `ilha inspect --pubkey`.
fn every_mode(bundle: &Path, pubkey: &Path) -> Vec<Command> {
    [
        vec!["verify"],
        vec!["verify", "--file-signature"],
        vec!["inspect"],
    ]
    .into_iter()
    .map(|args| {
        let mut cmd = Command::cargo_bin("ilha").unwrap();
        cmd.args(&args).arg(bundle).arg("--pubkey").arg(pubkey);
        cmd
    })
    .collect()
}

#[test]
fn bytes_appended_to_a_bundle_are_refused_by_every_command() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    let bundle = packed(&keys, dir.path());
    for mut cmd in every_mode(&bundle, &keys.pubkey) {
        cmd.assert().success();
    }
    let original = fs::read(&bundle).unwrap();
    let tar = zstd::decode_all(&original[..]).unwrap();
    let comment = index().trusted_comment();

    let mut appended = original.clone();
    appended.extend_from_slice(b"#!/bin/sh\nrm -rf /\n");
    let mut recompressed = tar.clone();
    recompressed.extend_from_slice(b"#!/bin/sh\nrm -rf /\n");
    let recompressed = zstd::encode_all(&recompressed[..], 3).unwrap();
    let mut extra_frame = original.clone();
    extra_frame.extend(zstd::encode_all(&[0u8; 512][..], 3).unwrap());
    for (what, bytes, expected) in [
        (
            "appended to the file",
            appended,
            format!(
                "19 bytes follow the end of the compressed stream (at byte {}",
                original.len()
            ),
        ),
        (
            "inside a re-compressed stream",
            recompressed,
            format!("a non-zero byte {} bytes into the tar stream", tar.len()),
        ),
        (
            "in a further zstd frame",
            extra_frame,
            format!(
                "a further zstd frame starts {} bytes into the tar stream",
                tar.len()
            ),
        ),
    ] {
        eprintln!("bytes after the end: {what}");
        fs::write(&bundle, &bytes).unwrap();
        // A `.minisig` re-made over the longer file changes nothing.
        sign_file_with_comment(&keys.secret, &bundle, &comment).unwrap();
        for mut cmd in every_mode(&bundle, &keys.pubkey) {
            cmd.assert()
                .code(1)
                .stderr(predicate::str::contains("bytes after the archive's end: "))
                .stderr(predicate::str::contains(expected.as_str()));
        }
    }
}

#[test]
fn a_resigned_index_with_unsafe_names_is_refused_by_every_command() {
    let keys = keys();
    let dir = tempfile::tempdir().unwrap();
    // The construction itself is accepted.
    let ok = crafted(&keys, &index(), dir.path());
    for mut cmd in every_mode(&ok, &keys.pubkey) {
        cmd.assert().success();
    }
    type Edit = fn(&mut Index);
    let cases: [(&str, Edit); 3] = [
        (r#"index: binary "../x": "#, |i| {
            i.binaries[0].name = "../x".into()
        }),
        (r#"index: binary "a/b": "#, |i| {
            i.binaries[0].name = "a/b".into()
        }),
        (r#"index: image "registry.k8s.io/pause:$(reboot)": "#, |i| {
            i.images[0].name = "registry.k8s.io/pause:$(reboot)".into()
        }),
    ];
    for (named, edit) in cases {
        let mut hostile = index();
        edit(&mut hostile);
        let bundle = crafted(&keys, &hostile, dir.path());
        for mut cmd in every_mode(&bundle, &keys.pubkey) {
            cmd.assert().code(1).stderr(predicate::str::contains(named));
        }
    }
}
