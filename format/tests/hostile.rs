//! Crafted archives whose index and embedded signature are valid (signed with a test key), so that
//! every refusal is about the hostile entry itself.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use ilha_format::{Error, HostileReason, KeyPair, Trailing, extract, verify};

const A: &str = "blobs/sha256/aaaa";
const B: &str = "blobs/sha256/bbbb";

/// Verifies and extracts the crafted tar; both must fail the same way, and extract must leave the
/// directory exactly as it was.
fn refuse(keys: &KeyPair, tar: &[u8]) -> Error {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("crafted.tar.zst");
    zstd_file(&bundle, tar);
    let err = verify(&bundle, &keys.public).unwrap_err();
    let before = listing(dir.path());
    let dest = dir.path().join("out");
    let extract_err = extract(&bundle, &keys.public, &dest).unwrap_err();
    assert_eq!(
        format!("{:?}", extract_err.root()),
        format!("{:?}", err.root())
    );
    assert_eq!(listing(dir.path()), before, "extract left files behind");
    // Nothing may have been written anywhere near: the crafted paths point at the parent.
    assert!(!dir.path().join("etc").exists() && !Path::new("/tmp/ilha-pwned").exists());
    err
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn hostile(err: &Error) -> (&str, &HostileReason) {
    match err.root() {
        Error::HostileEntry { path, reason } => (path.as_str(), reason),
        other => panic!("expected a hostile entry, got {other:?}"),
    }
}

#[test]
fn well_formed_crafted_archive_is_accepted() {
    // Guards the helpers: the same construction without anything hostile verifies.
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"hello", 0o644)]);
    let tar = craft_tar(&keys, &index, &[member(A, b"hello", 0o644)], &END);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("ok.tar.zst");
    zstd_file(&bundle, &tar);
    verify(&bundle, &keys.public).unwrap();
    extract(&bundle, &keys.public, &dir.path().join("out")).unwrap();
    assert_eq!(fs::read(dir.path().join("out").join(A)).unwrap(), b"hello");
}

#[test]
fn absolute_path() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"x", 0o644)]);
    let tar = craft_tar(
        &keys,
        &index,
        &[member("/tmp/ilha-pwned", b"x", 0o644)],
        &END,
    );
    let err = refuse(&keys, &tar);
    assert_eq!(
        hostile(&err),
        ("/tmp/ilha-pwned", &HostileReason::AbsolutePath)
    );
    assert!(format!("{}", err.root()).contains("absolute path"));
}

#[test]
fn parent_dir_path() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"x", 0o644)]);
    let tar = craft_tar(&keys, &index, &[member("../etc/passwd", b"x", 0o644)], &END);
    let err = refuse(&keys, &tar);
    assert_eq!(
        hostile(&err),
        ("../etc/passwd", &HostileReason::ParentComponent)
    );
}

fn link(kind: tar::EntryType, path: &str, target: &str) -> Member {
    let mut m = member(path, b"", 0o644);
    m.header.set_entry_type(kind);
    m.header.set_link_name(target).unwrap_or_else(|_| {
        let l = &mut m.header.as_old_mut().linkname;
        l[..target.len()].copy_from_slice(target.as_bytes());
    });
    m.header.set_cksum();
    m
}

#[test]
fn symlink_leaving_the_target() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"", 0o644)]);
    let tar = craft_tar(
        &keys,
        &index,
        &[link(tar::EntryType::Symlink, A, "../../../../etc/passwd")],
        &END,
    );
    let err = refuse(&keys, &tar);
    assert_eq!(
        hostile(&err),
        (
            A,
            &HostileReason::Symlink {
                target: "../../../../etc/passwd".into()
            }
        )
    );
}

#[test]
fn hardlink_leaving_the_target() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"", 0o644)]);
    let tar = craft_tar(
        &keys,
        &index,
        &[link(tar::EntryType::Link, A, "/etc/shadow")],
        &END,
    );
    let err = refuse(&keys, &tar);
    assert_eq!(
        hostile(&err),
        (
            A,
            &HostileReason::Hardlink {
                target: "/etc/shadow".into()
            }
        )
    );
}

#[test]
fn device_file() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"", 0o644)]);
    let mut m = member(A, b"", 0o644);
    m.header.set_entry_type(tar::EntryType::Block);
    m.header.set_device_major(8).unwrap();
    m.header.set_device_minor(0).unwrap();
    m.header.set_cksum();
    let err = refuse(&keys, &craft_tar(&keys, &index, &[m], &END));
    assert_eq!(hostile(&err), (A, &HostileReason::Device));
}

#[test]
fn fifo() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"", 0o644)]);
    let mut m = member(A, b"", 0o644);
    m.header.set_entry_type(tar::EntryType::Fifo);
    m.header.set_cksum();
    let err = refuse(&keys, &craft_tar(&keys, &index, &[m], &END));
    assert_eq!(hostile(&err), (A, &HostileReason::Fifo));
}

#[test]
fn entry_far_bigger_than_declared_is_refused_from_its_header() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"tiny", 0o644)]);
    let mut m = member(A, b"", 0o644);
    // 64 GiB claimed, no data follows: reading it would report truncation, not this refusal.
    m.header.set_size(64 << 30);
    m.header.set_cksum();
    let err = refuse(&keys, &craft_tar(&keys, &index, &[m], &[]));
    assert_eq!(
        hostile(&err),
        (
            A,
            &HostileReason::LargerThanDeclared {
                declared: 4,
                header: 64 << 30
            }
        )
    );
}

#[test]
fn duplicated_entry() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"a", 0o644)]);
    let tar = craft_tar(
        &keys,
        &index,
        &[member(A, b"a", 0o644), member(A, b"a", 0o644)],
        &END,
    );
    let err = refuse(&keys, &tar);
    assert!(
        matches!(err.root(), Error::DuplicateEntry { path } if path == A),
        "{err:?}"
    );
}

#[test]
fn missing_entry() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"a", 0o644), entry(B, b"b", 0o644)]);
    // B missing at the end...
    let err = refuse(
        &keys,
        &craft_tar(&keys, &index, &[member(A, b"a", 0o644)], &END),
    );
    assert!(
        matches!(err.root(), Error::MissingEntry { path } if path == B),
        "{err:?}"
    );
    // ...and A missing before B.
    let err = refuse(
        &keys,
        &craft_tar(&keys, &index, &[member(B, b"b", 0o644)], &END),
    );
    assert!(
        matches!(err.root(), Error::MissingEntry { path } if path == A),
        "{err:?}"
    );
}

#[test]
fn extra_unlisted_entry() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"a", 0o644)]);
    let tar = craft_tar(
        &keys,
        &index,
        &[member(A, b"a", 0o644), member(B, b"b", 0o644)],
        &END,
    );
    let err = refuse(&keys, &tar);
    assert!(
        matches!(err.root(), Error::UnlistedEntry { path } if path == B),
        "{err:?}"
    );
    assert!(err.root().to_string().contains("not listed in the index"));
}

#[test]
fn garbage_after_the_end_marker() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"a", 0o644)]);
    let mut tail = END.to_vec();
    tail.extend_from_slice(b"#!/bin/sh\nrm -rf /\n");
    let err = refuse(
        &keys,
        &craft_tar(&keys, &index, &[member(A, b"a", 0o644)], &tail),
    );
    assert!(matches!(err.root(), Error::TrailingData { .. }), "{err:?}");
    // Zero padding after the marker, as GNU tar writes it, is fine.
    let mut padded = END.to_vec();
    padded.extend_from_slice(&[0u8; 9216]);
    let tar = craft_tar(&keys, &index, &[member(A, b"a", 0o644)], &padded);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("padded.tar.zst");
    zstd_file(&bundle, &tar);
    verify(&bundle, &keys.public).unwrap();
}

#[test]
fn garbage_after_the_compressed_stream() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"a", 0o644)]);
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("tail.tar.zst");
    zstd_file(
        &bundle,
        &craft_tar(&keys, &index, &[member(A, b"a", 0o644)], &END),
    );
    let mut raw = fs::read(&bundle).unwrap();
    raw.extend_from_slice(b"not zstd at all");
    fs::write(&bundle, raw).unwrap();
    let compressed = fs::metadata(&bundle).unwrap().len() - 15;
    let err = verify(&bundle, &keys.public).unwrap_err();
    assert!(
        matches!(
            err.root(),
            Error::TrailingData { offset, found: Trailing::AfterCompressedStream { bytes: 15 } }
                if *offset == compressed
        ),
        "{err:?}"
    );
}

#[test]
fn wrong_digest_smaller_size_and_mode() {
    let keys = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"good", 0o644)]);
    let err = refuse(
        &keys,
        &craft_tar(&keys, &index, &[member(A, b"evil", 0o644)], &END),
    );
    assert!(
        matches!(err.root(), Error::DigestMismatch { path, .. } if path == A),
        "{err:?}"
    );
    let err = refuse(
        &keys,
        &craft_tar(&keys, &index, &[member(A, b"ba", 0o644)], &END),
    );
    assert!(
        matches!(
            err.root(),
            Error::SizeMismatch {
                expected: 4,
                found: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let err = refuse(
        &keys,
        &craft_tar(&keys, &index, &[member(A, b"good", 0o755)], &END),
    );
    assert!(matches!(err.root(), Error::ModeMismatch { .. }), "{err:?}");
    let err = refuse(
        &keys,
        &craft_tar(&keys, &index, &[member(A, b"good", 0o4755)], &END),
    );
    assert_eq!(hostile(&err), (A, &HostileReason::BadMode(0o4755)));
}

#[test]
fn index_must_come_first() {
    let keys = KeyPair::generate().unwrap();
    let tar = [member(A, b"a", 0o644)]
        .iter()
        .fold(Vec::new(), |mut v, m| {
            v.extend_from_slice(m.header.as_bytes());
            v.extend_from_slice(&m.data);
            v.extend_from_slice(&[0u8; 511]);
            v.extend_from_slice(&END);
            v
        });
    let err = refuse(&keys, &tar);
    assert!(
        matches!(err.root(), Error::UnexpectedEntry { position: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn index_signed_by_another_key() {
    let signer = KeyPair::generate().unwrap();
    let verifier = KeyPair::generate().unwrap();
    let index = bare_index(vec![entry(A, b"a", 0o644)]);
    let tar = craft_tar(&signer, &index, &[member(A, b"a", 0o644)], &END);
    let err = refuse(&verifier, &tar);
    assert!(matches!(err.root(), Error::WrongKey { .. }), "{err:?}");
}

/// An index signed with the right key (as a compromised or careless signer would) naming a
/// binary, file or image the bundler would have refused: refused before any entry is read, with
/// the entry named.
#[test]
fn resigned_index_with_unsafe_names_is_refused() {
    use ilha_format::index::{blob_path, image_blob_path};
    use ilha_format::verify::{FileSignatureCheck, verify_with};
    use ilha_format::{ArtifactRecord, ImageRecord, Index, Sha256};

    let keys = KeyPair::generate().unwrap();
    let tool = b"#!/bin/sh\necho hi\n";
    let manifest = b"{}";
    let (t, m) = (Sha256::of(tool), Sha256::of(manifest));
    let base = {
        let mut index = bare_index(vec![
            entry(&blob_path(&t), tool, 0o755),
            entry(&image_blob_path(&m), manifest, 0o644),
        ]);
        let artifact = |name: &str| ArtifactRecord {
            name: name.into(),
            sha256: t,
            size: tool.len() as u64,
            source: "./tool".into(),
        };
        index.binaries.push(artifact("kubelet"));
        index.files.push(artifact("addon-x.yaml"));
        index.images.push(ImageRecord {
            name: "registry.k8s.io/pause:3.2".into(),
            source: "registry.k8s.io/pause:3.2".into(),
            manifest_digest: m.to_oci(),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            size: 2,
            layers: 0,
        });
        index
    };
    let members = [
        member(&blob_path(&t), tool, 0o755),
        member(&image_blob_path(&m), manifest, 0o644),
    ];
    let bundle_of = |index: &Index| craft_tar(&keys, index, &members, &END);

    // The same construction with safe names verifies.
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok.tar.zst");
    zstd_file(&ok, &bundle_of(&base));
    verify(&ok, &keys.public).unwrap();

    type Edit = fn(&mut Index);
    let cases: [(&str, Edit); 7] = [
        (r#"binary "../x": "#, |i| i.binaries[0].name = "../x".into()),
        (r#"binary "a/b": "#, |i| i.binaries[0].name = "a/b".into()),
        (r#"binary "-rf": "#, |i| i.binaries[0].name = "-rf".into()),
        (r#"file "..": "#, |i| i.files[0].name = "..".into()),
        (r#"file "addon-../../x.yaml": "#, |i| {
            i.files[0].name = "addon-../../x.yaml".into()
        }),
        (r#"image "registry.k8s.io/pause:$(reboot)": "#, |i| {
            i.images[0].name = "registry.k8s.io/pause:$(reboot)".into()
        }),
        (r#"image "registry.k8s.io/pause:3.2\nreboot": "#, |i| {
            i.images[0].name = "registry.k8s.io/pause:3.2\nreboot".into()
        }),
    ];
    for (named, edit) in cases {
        let mut index = base.clone();
        edit(&mut index);
        let tar = bundle_of(&index);
        let err = refuse(&keys, &tar);
        let Error::InvalidIndex { reason } = err.root() else {
            panic!("{named}: expected an invalid index, got {err:?}");
        };
        assert!(reason.starts_with(named), "{named}: {reason}");
        let bundle = dir.path().join("named.tar.zst");
        zstd_file(&bundle, &tar);
        let err = verify_with(&bundle, &keys.public, FileSignatureCheck::KeyIdOnly).unwrap_err();
        assert!(
            err.root()
                .to_string()
                .starts_with(&format!("index: {named}")),
            "{err}"
        );
    }
}
