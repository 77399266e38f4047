//! Pack → verify → extract round trips, reproducibility, and the plain corruption cases.

mod common;

use std::fs;

use common::*;
use ilha_format::{Error, FileSignature, Index, NoProgress, extract, pack, read_index, verify};

#[test]
fn pack_then_verify_then_extract() {
    let f = fixture();
    let v = verify(&f.bundle, &f.keys.public).unwrap();
    assert_eq!(v.file_signature, FileSignature::Verified);
    // kubelet and kubelet-copy share one blob.
    assert_eq!(v.index.entries.len(), f.sources.len() - 1);
    assert_eq!(v.index.binaries.len(), 2);
    assert_eq!(read_index(&f.bundle).unwrap(), v.index);
    let line = v.summary_line();
    assert!(
        line.starts_with("ok: bundle lab 1.0.0-test: 8 entries"),
        "{line}"
    );

    let dest = f.dir.path().join("out");
    extract(&f.bundle, &f.keys.public, &dest).unwrap();
    for s in &f.sources {
        let got = fs::read(dest.join(&s.path_in_bundle)).unwrap();
        assert_eq!(
            got,
            fs::read(&s.source_file).unwrap(),
            "{}",
            s.path_in_bundle
        );
    }
    let index_bytes = fs::read(dest.join("ilha-index.json")).unwrap();
    assert_eq!(Index::from_json_bytes(&index_bytes).unwrap(), v.index);
    use std::os::unix::fs::PermissionsExt;
    let kubelet = dest.join(v.index.binaries[0].bundle_path());
    assert_eq!(
        fs::metadata(kubelet).unwrap().permissions().mode() & 0o777,
        0o755
    );
    // Only the destination appeared: no temp dir left next to it.
    let leftovers: Vec<_> = fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".ilha-extract-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn same_sources_give_identical_bytes() {
    let f = fixture();
    let again = f.dir.path().join("again.tar.zst");
    pack(
        f.index.clone(),
        f.sources.clone(),
        &f.keys.secret,
        &again,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(
        fs::read(&f.bundle).unwrap(),
        fs::read(&again).unwrap(),
        "bundle differs"
    );
    assert_eq!(
        fs::read(sig_path(&f.bundle)).unwrap(),
        fs::read(sig_path(&again)).unwrap(),
        "signature differs"
    );
    // Source order must not matter either.
    let mut reversed = f.sources.clone();
    reversed.reverse();
    let third = f.dir.path().join("third.tar.zst");
    pack(
        f.index.clone(),
        reversed,
        &f.keys.secret,
        &third,
        &NoProgress,
    )
    .unwrap();
    assert_eq!(fs::read(&f.bundle).unwrap(), fs::read(&third).unwrap());
}

#[test]
fn failed_pack_leaves_nothing() {
    let f = fixture();
    let mut sources = f.sources.clone();
    sources[0].size += 1;
    let out = f.dir.path().join("bad.tar.zst");
    let err = pack(f.index.clone(), sources, &f.keys.secret, &out, &NoProgress).unwrap_err();
    assert!(
        matches!(err.root(), Error::SourceSizeMismatch { .. }),
        "{err:?}"
    );
    assert!(!out.exists());
    assert!(!f.dir.path().join("bad.tar.zst.partial").exists());
    assert!(!sig_path(&out).exists());
}

/// Rewrites the bundle with one byte of its decompressed tar stream changed (keeps `.minisig`,
/// which the streaming check must beat to the diagnosis).
fn flip_in_tar(f: &Fixture, offset: usize) {
    let mut tar = decompress(&f.bundle);
    tar[offset] ^= 0x01;
    zstd_file(&f.bundle, &tar);
}

/// Offset of the tar header of `path` (headers sit on 512-byte boundaries; the index mentions the
/// same paths in its JSON, which must not be mistaken for the header).
fn header_of(tar: &[u8], path: &str) -> usize {
    let mut name = path.as_bytes().to_vec();
    name.push(0);
    (0..tar.len())
        .step_by(512)
        .find(|&o| tar[o..].starts_with(&name))
        .expect("header present")
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle present")
}

#[test]
fn flipped_byte_in_entry_names_entry_and_digests() {
    let f = fixture();
    let tar = decompress(&f.bundle);
    let file = &f.index.files[0];
    let header_at = header_of(&tar, &file.bundle_path());
    flip_in_tar(&f, header_at + 512 + 10);
    let err = verify(&f.bundle, &f.keys.public).unwrap_err();
    match err.root() {
        Error::DigestMismatch {
            path,
            expected,
            found,
        } => {
            assert_eq!(path, &file.bundle_path());
            assert_eq!(expected, &file.sha256);
            assert_ne!(found, expected);
        }
        other => panic!("{other:?}"),
    }
    let msg = format!("{err:#}");
    assert!(err.to_string().contains("lab.tar.zst"), "{msg}");
    let chain = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        chain.contains(&file.sha256.to_string()) && chain.contains(&file.bundle_path()),
        "{chain}"
    );
}

#[test]
fn flipped_byte_in_index_is_a_bad_signature() {
    let f = fixture();
    let tar = decompress(&f.bundle);
    flip_in_tar(&f, find(&tar, b"\"name\": \"lab\"") + 10);
    let err = verify(&f.bundle, &f.keys.public).unwrap_err();
    assert!(
        matches!(err.root(), Error::BadSignature { what, .. } if what.contains("embedded")),
        "{err:?}"
    );
}

#[test]
fn flipped_byte_in_embedded_signature_is_caught() {
    let f = fixture();
    let tar = decompress(&f.bundle);
    let sig_header = header_of(&tar, "ilha-index.json.minisig");
    let sig_data = sig_header + 512;
    let second_line = sig_data + find(&tar[sig_data..], b"\n") + 1;
    // 'A' <-> 'B' keeps valid base64 but changes the signature bits.
    let at = second_line + 20;
    let mut tar2 = tar.clone();
    tar2[at] = if tar[at] == b'A' { b'B' } else { b'A' };
    zstd_file(&f.bundle, &tar2);
    let err = verify(&f.bundle, &f.keys.public).unwrap_err();
    assert!(
        matches!(
            err.root(),
            Error::BadSignature { .. } | Error::WrongKey { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn flipped_byte_in_compressed_file_is_caught() {
    let f = fixture();
    let mut raw = fs::read(&f.bundle).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 0x40;
    fs::write(&f.bundle, &raw).unwrap();
    let err = verify(&f.bundle, &f.keys.public).unwrap_err();
    assert!(
        matches!(
            err.root(),
            Error::CorruptStream { .. } | Error::DigestMismatch { .. } | Error::BadSignature { .. }
        ),
        "{err:?}"
    );
}

#[test]
fn truncated_files_are_reported_as_truncated() {
    let f = fixture();
    let raw = fs::read(&f.bundle).unwrap();
    let sig = fs::read(sig_path(&f.bundle)).unwrap();
    for cut in [
        1,
        100,
        raw.len() / 4,
        raw.len() / 2,
        raw.len() - 100,
        raw.len() - 1,
    ] {
        let path = f.dir.path().join(format!("cut-{cut}.tar.zst"));
        fs::write(&path, &raw[..cut]).unwrap();
        fs::write(sig_path(&path), &sig).unwrap();
        let err = verify(&path, &f.keys.public).unwrap_err();
        assert!(
            matches!(err.root(), Error::Truncated { .. }),
            "cut at {cut}: {err:?}"
        );
    }
}

#[test]
fn wrong_public_key_is_named() {
    let f = fixture();
    let other = ilha_format::KeyPair::generate().unwrap();
    let err = verify(&f.bundle, &other.public).unwrap_err();
    match err.root() {
        Error::WrongKey {
            what,
            expected,
            found,
        } => {
            assert!(what.ends_with(".minisig"));
            assert_eq!(expected, &other.public.key_id());
            assert_eq!(found, &f.keys.public.key_id());
        }
        e => panic!("{e:?}"),
    }
    // Without the detached signature the embedded one says the same.
    fs::remove_file(sig_path(&f.bundle)).unwrap();
    let err = verify(&f.bundle, &other.public).unwrap_err();
    assert!(
        matches!(err.root(), Error::WrongKey { what, .. } if what.contains("embedded")),
        "{err:?}"
    );
}

#[test]
fn tampered_detached_signature_is_caught_after_the_stream() {
    let f = fixture();
    // Re-compressing at another level changes the file but not the decompressed stream.
    // (Appending a skippable frame did too, but is now refused earlier: see `trailing.rs`.)
    let recompressed = zstd::encode_all(&decompress(&f.bundle)[..], 1).unwrap();
    assert_ne!(recompressed, fs::read(&f.bundle).unwrap());
    fs::write(&f.bundle, &recompressed).unwrap();
    let err = verify(&f.bundle, &f.keys.public).unwrap_err();
    assert!(
        matches!(err.root(), Error::BadSignature { what, .. } if what.ends_with(".minisig")),
        "{err:?}"
    );
}

#[test]
fn failed_extract_leaves_nothing() {
    let f = fixture();
    let tar = decompress(&f.bundle);
    // Corrupt the last entry so that every other file was already written when the check fails.
    let index = read_index(&f.bundle).unwrap();
    let last = index.entries.last().unwrap();
    let at = header_of(&tar, &last.path) + 512 + 1;
    let mut tar2 = tar.clone();
    tar2[at] ^= 0xff;
    zstd_file(&f.bundle, &tar2);
    let before: Vec<_> = fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let dest = f.dir.path().join("out");
    let err = extract(&f.bundle, &f.keys.public, &dest).unwrap_err();
    assert!(
        matches!(err.root(), Error::DigestMismatch { .. }),
        "{err:?}"
    );
    assert!(!dest.exists());
    let after: Vec<_> = fs::read_dir(f.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after);
}

#[test]
fn extract_refuses_an_existing_destination() {
    let f = fixture();
    let dest = f.dir.path().join("out");
    fs::create_dir(&dest).unwrap();
    let err = extract(&f.bundle, &f.keys.public, &dest).unwrap_err();
    assert!(
        err.root().to_string().contains("destination exists"),
        "{err:?}"
    );
}
