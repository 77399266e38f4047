//! Bytes after the archive's end: refused in every verification mode (plain verify, the full
//! whole-file signature check, extract as the installer runs it, with or without `FILE.minisig`),
//! with a bound on how much is read; tar's own zero padding is still accepted.

mod common;

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use ilha_format::sign::sign_file_with_comment;
use ilha_format::verify::{FileSignatureCheck, MAX_PADDING, extract_with, verify_with};
use ilha_format::{Error, FileSignature, KeyPair, Trailing};

const MODES: [FileSignatureCheck; 2] = [FileSignatureCheck::Full, FileSignatureCheck::KeyIdOnly];

/// Every verification mode, with `FILE.minisig` as it is and then without it, must refuse the
/// bundle with the same [`Error::TrailingData`]; extract must leave nothing behind.
fn refused_everywhere(bundle: &Path, keys: &KeyPair) -> (u64, Trailing) {
    let mut seen: Option<(u64, Trailing)> = None;
    let sig = sig_path(bundle);
    let saved_sig = fs::read(&sig).ok();
    for with_sig in [true, false] {
        if !with_sig {
            let _ = fs::remove_file(&sig);
        }
        for mode in MODES {
            let dest = bundle.with_extension("out");
            let errors = [
                verify_with(bundle, &keys.public, mode).unwrap_err(),
                extract_with(bundle, &keys.public, &dest, mode).unwrap_err(),
            ];
            assert!(!dest.exists(), "extract left {}", dest.display());
            for err in errors {
                let Error::TrailingData { offset, found } = err.root() else {
                    panic!("{mode:?}, signature {with_sig}: expected trailing data, got {err:?}");
                };
                let msg = err.root().to_string();
                assert!(msg.starts_with("bytes after the archive's end: "), "{msg}");
                match &seen {
                    None => seen = Some((*offset, found.clone())),
                    Some(first) => assert_eq!(first, &(*offset, found.clone()), "{mode:?}"),
                }
            }
        }
    }
    if let Some(saved) = saved_sig {
        fs::write(&sig, saved).unwrap();
    }
    seen.unwrap()
}

/// Every mode accepts the bundle.
fn accepted_everywhere(bundle: &Path, keys: &KeyPair) {
    for mode in MODES {
        let v = verify_with(bundle, &keys.public, mode).unwrap();
        assert_ne!(v.file_signature, FileSignature::Absent);
        let dest = bundle.with_extension(format!("out-{mode:?}"));
        extract_with(bundle, &keys.public, &dest, mode).unwrap();
        fs::remove_dir_all(&dest).unwrap();
    }
}

fn append(path: &Path, tail: &[u8]) {
    let mut raw = fs::read(path).unwrap();
    raw.extend_from_slice(tail);
    fs::write(path, raw).unwrap();
}

/// Re-signs the whole file with the index's trusted comment, as the packer does, so that only the
/// trailing bytes can be the reason for a refusal.
fn resign(path: &Path, keys: &KeyPair, comment: &str) {
    sign_file_with_comment(&keys.secret, path, comment).unwrap();
}

#[test]
fn the_untouched_bundle_verifies_in_every_mode() {
    let f = fixture();
    accepted_everywhere(&f.bundle, &f.keys);
}

#[test]
fn bytes_appended_to_the_file_are_refused_in_every_mode() {
    let f = fixture();
    let original = fs::read(&f.bundle).unwrap();
    let end = original.len() as u64;
    let skippable = [0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
    let tails: [(&str, Vec<u8>); 5] = [
        ("one byte", b"x".to_vec()),
        ("a script", b"#!/bin/sh\nrm -rf /\n".to_vec()),
        ("four zero bytes", vec![0; 4]),
        ("a zstd skippable frame", skippable.to_vec()),
        ("3 MiB of noise", noise(3, 3 << 20)),
    ];
    for (what, tail) in tails {
        fs::write(&f.bundle, &original).unwrap();
        append(&f.bundle, &tail);
        // Re-signing the whole file makes no difference: nothing after the end is accepted.
        for resigned in [false, true] {
            if resigned {
                resign(&f.bundle, &f.keys, &f.index.trusted_comment());
            }
            let found = refused_everywhere(&f.bundle, &f.keys);
            assert_eq!(
                found,
                (
                    end,
                    Trailing::AfterCompressedStream {
                        bytes: tail.len() as u64
                    }
                ),
                "{what}"
            );
        }
    }
}

#[test]
fn zstd_frames_appended_after_the_archive_are_refused_in_every_mode() {
    let f = fixture();
    let original = fs::read(&f.bundle).unwrap();
    let tar_len = decompress(&f.bundle).len() as u64;
    for (what, content) in [
        ("an empty frame", Vec::new()),
        ("a frame of zeros", vec![0u8; 512]),
        (
            "a frame holding a script",
            b"#!/bin/sh\nrm -rf /\n".to_vec(),
        ),
    ] {
        fs::write(&f.bundle, &original).unwrap();
        append(&f.bundle, &zstd::encode_all(&content[..], 3).unwrap());
        resign(&f.bundle, &f.keys, &f.index.trusted_comment());
        let found = refused_everywhere(&f.bundle, &f.keys);
        assert_eq!(found, (tar_len, Trailing::FrameAfterEnd), "{what}");
    }
}

#[test]
fn bytes_appended_inside_a_recompressed_stream_are_refused_in_every_mode() {
    let f = fixture();
    let tar = decompress(&f.bundle);
    let comment = f.index.trusted_comment();
    let rewrite = |tail: &[u8]| {
        let mut stream = tar.clone();
        stream.extend_from_slice(tail);
        zstd_file(&f.bundle, &stream);
        resign(&f.bundle, &f.keys, &comment);
    };

    let mut tail = vec![0u8; 700];
    tail.extend_from_slice(b"#!/bin/sh\nrm -rf /\n");
    rewrite(&tail);
    let found = refused_everywhere(&f.bundle, &f.keys);
    assert_eq!(found, (tar.len() as u64 + 700, Trailing::NonZero));

    // A long run of zeros compresses to almost nothing: reading stops past the bound.
    rewrite(&vec![0u8; 64 << 20]);
    let started = Instant::now();
    let (offset, found) = refused_everywhere(&f.bundle, &f.keys);
    assert_eq!(
        (offset, found),
        (tar.len() as u64, Trailing::TooLong { limit: MAX_PADDING })
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    rewrite(&vec![0u8; MAX_PADDING as usize + 1]);
    let msg = verify_with(&f.bundle, &f.keys.public, FileSignatureCheck::KeyIdOnly)
        .unwrap_err()
        .root()
        .to_string();
    assert!(
        msg.contains(&format!("{}+ bytes", MAX_PADDING + 1)),
        "{msg}"
    );

    // Zero padding to a tar record, as GNU tar writes it, and up to the bound, is fine.
    for padding in [9216, 10240 * 20, MAX_PADDING as usize] {
        rewrite(&vec![0u8; padding]);
        accepted_everywhere(&f.bundle, &f.keys);
    }
}

#[test]
fn a_huge_appended_tail_is_refused_without_being_read() {
    let f = fixture();
    let end = fs::metadata(&f.bundle).unwrap().len();
    // 16 GiB of holes: reading them (and BLAKE2b-hashing them for the full check) would take
    // minutes; the refusal comes from the first bytes after the last frame.
    let tail = 16u64 << 30;
    fs::OpenOptions::new()
        .write(true)
        .open(&f.bundle)
        .unwrap()
        .set_len(end + tail)
        .unwrap();
    let started = Instant::now();
    let found = refused_everywhere(&f.bundle, &f.keys);
    assert_eq!(
        found,
        (end, Trailing::AfterCompressedStream { bytes: tail })
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
