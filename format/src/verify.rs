//! Reading a bundle: `verify` (stream and check everything), `extract` (same, writing the files into
//! a fresh directory that only appears when every check passed) and `read_index` (unverified).
//!
//! Order of checks, and why:
//! 1. `FILE.minisig`, when present, is parsed and its key id compared with the public key before any
//!    byte of the bundle is read: a wrong key fails at once.
//! 2. The first two tar entries must be the index and its signature; their sizes are bounded from the
//!    headers. The embedded signature is verified, then the index is parsed. From here on every
//!    entry can be judged as it streams by, against digests the signer vouched for.
//! 3. Each further header is judged before its data is read: type (regular only), path, mode,
//!    position against the index (unlisted / duplicate / missing), size against the index (an entry
//!    bigger than declared is refused here). Then its data is hashed and compared.
//! 4. After the end-of-archive marker only zero padding may follow, at most [`MAX_PADDING`] bytes
//!    of it; the compressed stream must end cleanly (a cut file is reported as truncated), and the
//!    file must end with its last zstd frame. This holds in every mode, whatever the signature
//!    check: nothing past the archive's end is covered by the index signature.
//! 5. With [`FileSignatureCheck::Full`] the whole-file signature is verified too. It needs the last
//!    byte, so its BLAKE2b prehash is computed in the same single pass (on a reader thread of its
//!    own) and checked last. With [`FileSignatureCheck::KeyIdOnly`] that pass is skipped: the
//!    embedded index signature and every entry's digest already bind every byte that matters, and
//!    BLAKE2b over the whole file costs as much as all the SHA-256 work.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::digest::Sha256Hasher;
use crate::error::{Error, HostileReason, Result, Trailing};
use crate::index::{Entry, Index};
use crate::sign::{PublicKey, Signature, sig_path_for};
use crate::stream::TarStream;
use crate::tarfmt::{BLOCK, MODE_FILE, RegularEntry, is_zero_block, padding, parse_header};
use crate::{INDEX_PATH, INDEX_SIG_PATH};

/// The index is JSON listing entries: 64 MiB is far beyond any real bundle and bounds memory.
const MAX_INDEX_BYTES: u64 = 64 << 20;
const MAX_SIG_BYTES: u64 = 4096;
const HASH_SLICE: usize = 1 << 20;
/// Zero padding accepted after the end-of-archive marker: far above any tar record size (GNU tar
/// writes 10 KiB records unless told otherwise), and a bound on what is read past the end.
pub const MAX_PADDING: u64 = 1 << 20;

/// How much of the detached `FILE.minisig` (when present) to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSignatureCheck {
    /// Everything `minisign -Vm FILE -p PUB` checks: BLAKE2b-512 over the whole file, the signature,
    /// the trusted-comment signature, then the trusted comment against the index.
    Full,
    /// Key id, and trusted comment against the index (a consistency check, not authenticated without
    /// the full check). No pass over the raw file: the embedded index signature and the entries'
    /// digests already bind the content. What `ilha verify` does by default.
    KeyIdOnly,
}

/// What was found about the detached `FILE.minisig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileSignature {
    /// Fully verified over every byte of the file ([`FileSignatureCheck::Full`]).
    Verified,
    /// Present, made by the same key and naming the same bundle; not recomputed
    /// ([`FileSignatureCheck::KeyIdOnly`]).
    SameKey,
    /// No `FILE.minisig` next to the bundle: only the embedded index signature vouches for it.
    Absent,
}

/// A bundle whose every byte was checked.
#[derive(Debug, Clone)]
pub struct VerifiedIndex {
    pub index: Index,
    /// Size of the compressed file.
    pub bundle_bytes: u64,
    /// Sum of the entry sizes.
    pub content_bytes: u64,
    pub file_signature: FileSignature,
    pub elapsed: Duration,
}

impl VerifiedIndex {
    /// One line for humans: entries, bytes, images, binaries, files, elapsed.
    pub fn summary_line(&self) -> String {
        let i = &self.index;
        format!(
            "ok: bundle {} {}: {} entries, {} ({} bytes, {} compressed), {} images, {} binaries, {} files; \
             index signature ok, file signature {}; {:.2} s",
            i.name,
            i.version,
            i.entries.len(),
            crate::inspect::human_bytes(self.content_bytes),
            self.content_bytes,
            crate::inspect::human_bytes(self.bundle_bytes),
            i.images.len(),
            i.binaries.len(),
            i.files.len(),
            match self.file_signature {
                FileSignature::Verified => "ok",
                FileSignature::SameKey => "same key (not recomputed)",
                FileSignature::Absent => "absent",
            },
            self.elapsed.as_secs_f64()
        )
    }
}

/// Receives the checked stream. `data` may see bytes of an entry that later fails its digest check:
/// a sink must only make its output visible in `commit`.
trait Sink {
    fn special(&mut self, _path: &str, _data: &[u8]) -> Result<()> {
        Ok(())
    }
    fn begin(&mut self, _entry: &Entry) -> Result<()> {
        Ok(())
    }
    fn data(&mut self, _data: &[u8]) -> Result<()> {
        Ok(())
    }
    fn end(&mut self) -> Result<()> {
        Ok(())
    }
    fn commit(&mut self) -> Result<()> {
        Ok(())
    }
}

struct Discard;
impl Sink for Discard {}

/// Streams the whole bundle and checks everything (see the module docs for the order), including
/// the whole-file signature when `FILE.minisig` exists ([`FileSignatureCheck::Full`]).
pub fn verify(bundle: &Path, pubkey: &PublicKey) -> Result<VerifiedIndex> {
    verify_with(bundle, pubkey, FileSignatureCheck::Full)
}

/// [`verify`], choosing how much of `FILE.minisig` to check.
pub fn verify_with(
    bundle: &Path,
    pubkey: &PublicKey,
    file_check: FileSignatureCheck,
) -> Result<VerifiedIndex> {
    run(bundle, pubkey, file_check, &mut Discard).map_err(|e| e.in_bundle(bundle))
}

/// Verifies and extracts into `dest_dir`, which must not exist yet. Files are written into a fresh
/// temporary directory next to `dest_dir` and renamed into place only when every check passed; on
/// any error nothing is left behind. The index and its signature are extracted too. Checks
/// `FILE.minisig` fully, like [`verify`].
pub fn extract(bundle: &Path, pubkey: &PublicKey, dest_dir: &Path) -> Result<VerifiedIndex> {
    extract_with(bundle, pubkey, dest_dir, FileSignatureCheck::Full)
}

/// [`extract`], choosing how much of `FILE.minisig` to check.
pub fn extract_with(
    bundle: &Path,
    pubkey: &PublicKey,
    dest_dir: &Path,
    file_check: FileSignatureCheck,
) -> Result<VerifiedIndex> {
    let result = (|| {
        if dest_dir.exists() {
            return Err(Error::io(
                dest_dir,
                std::io::Error::new(std::io::ErrorKind::AlreadyExists, "destination exists"),
            ));
        }
        let parent = match dest_dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let tmp = tempfile::Builder::new()
            .prefix(".ilha-extract-")
            .tempdir_in(&parent)
            .map_err(|e| Error::io(&parent, e))?;
        let mut sink = ExtractSink {
            root: tmp.path().to_owned(),
            file: None,
            current: PathBuf::new(),
        };
        let verified = run(bundle, pubkey, file_check, &mut sink)?;
        let tmp_path = tmp.keep();
        if let Err(e) = fs::rename(&tmp_path, dest_dir) {
            let _ = fs::remove_dir_all(&tmp_path);
            return Err(Error::io(dest_dir, e));
        }
        Ok(verified)
    })();
    result.map_err(|e| e.in_bundle(bundle))
}

/// Reads the index without checking anything but its JSON (for `inspect`). Never trust it for more.
pub fn read_index(bundle: &Path) -> Result<Index> {
    (|| {
        let file = File::open(bundle).map_err(|e| Error::io(bundle, e))?;
        let mut stream = TarStream::open(file, false)?;
        let index_bytes = read_special(&mut stream, 0, INDEX_PATH, MAX_INDEX_BYTES)?;
        Index::from_json_bytes(&index_bytes)
    })()
    .map_err(|e| e.in_bundle(bundle))
}

fn read_header(stream: &mut TarStream, what: &dyn Fn() -> String) -> Result<[u8; BLOCK]> {
    let mut block = [0u8; BLOCK];
    stream.read_exact(&mut block, what)?;
    Ok(block)
}

fn judge(block: &[u8; BLOCK]) -> Result<RegularEntry> {
    parse_header(block).map_err(|(path, reason)| Error::HostileEntry { path, reason })
}

fn skip_padding(stream: &mut TarStream, size: u64, path: &str) -> Result<()> {
    let mut pad = [0u8; BLOCK];
    let n = padding(size);
    stream.read_exact(&mut pad[..n], &|| format!("padding of entry {path:?}"))
}

/// Reads one of the two leading entries (index, signature) into memory, bounded by `limit`.
fn read_special(
    stream: &mut TarStream,
    position: usize,
    expected: &'static str,
    limit: u64,
) -> Result<Vec<u8>> {
    let block = read_header(stream, &|| format!("header of {expected:?}"))?;
    if is_zero_block(&block) {
        return Err(Error::UnexpectedEntry {
            position,
            expected,
            found: "end of archive".into(),
        });
    }
    let entry = judge(&block)?;
    if entry.path != expected {
        return Err(Error::UnexpectedEntry {
            position,
            expected,
            found: entry.path,
        });
    }
    if entry.size > limit || entry.mode != MODE_FILE {
        return Err(Error::HostileEntry {
            path: entry.path,
            reason: if entry.size > limit {
                HostileReason::LargerThanDeclared {
                    declared: limit,
                    header: entry.size,
                }
            } else {
                HostileReason::BadMode(entry.mode)
            },
        });
    }
    let mut data = vec![0u8; entry.size as usize];
    stream.read_exact(&mut data, &|| format!("entry {expected:?}"))?;
    skip_padding(stream, entry.size, expected)?;
    Ok(data)
}

fn run(
    bundle: &Path,
    pubkey: &PublicKey,
    file_check: FileSignatureCheck,
    sink: &mut dyn Sink,
) -> Result<VerifiedIndex> {
    let started = Instant::now();
    let sig_path = sig_path_for(bundle);
    let file_sig = match sig_path.try_exists() {
        Ok(true) => {
            let sig = Signature::from_file(&sig_path)?;
            pubkey.check_key_id(&sig, &sig_path.display().to_string())?;
            Some(sig)
        }
        Ok(false) => None,
        Err(e) => return Err(Error::io(&sig_path, e)),
    };
    let file = File::open(bundle).map_err(|e| Error::io(bundle, e))?;
    let full_file_check = file_sig.is_some() && file_check == FileSignatureCheck::Full;
    let mut stream = TarStream::open(file, full_file_check)?;

    let index_bytes = read_special(&mut stream, 0, INDEX_PATH, MAX_INDEX_BYTES)?;
    let sig_bytes = read_special(&mut stream, 1, INDEX_SIG_PATH, MAX_SIG_BYTES)?;
    let what = format!("{INDEX_SIG_PATH} (embedded)");
    let sig_text = std::str::from_utf8(&sig_bytes).map_err(|_| Error::SignatureFormat {
        what: what.clone(),
        reason: "not UTF-8".into(),
    })?;
    let index_sig = Signature::parse(sig_text, &what)?;
    pubkey.verify_bytes(&index_bytes, &index_sig, &what)?;
    // Parsed only once authenticated: the JSON parser never sees unsigned input here.
    let index = Index::from_json_bytes(&index_bytes)?;
    if index_sig.trusted_comment != index.trusted_comment() {
        return Err(Error::TrustedCommentMismatch {
            what,
            expected: index.trusted_comment(),
            found: index_sig.trusted_comment,
        });
    }
    sink.special(INDEX_PATH, &index_bytes)?;
    sink.special(INDEX_SIG_PATH, &sig_bytes)?;

    check_entries(&mut stream, &index, sink)?;
    check_trailer(&mut stream)?;
    let raw = stream.finish()?;

    let file_signature = match (&file_sig, raw.prehash) {
        (Some(sig), Some(prehash)) if full_file_check => {
            pubkey.verify_prehashed(&prehash, sig, &sig_path.display().to_string())?;
            check_file_comment(sig, &index, &sig_path)?;
            FileSignature::Verified
        }
        (Some(_), None) if full_file_check => {
            return Err(Error::CorruptStream {
                context: "the whole-file prehash was not computed".into(),
            });
        }
        (Some(sig), _) => {
            // Key id was checked before reading; the comment catches a `.minisig` of another
            // bundle signed by the same key.
            check_file_comment(sig, &index, &sig_path)?;
            FileSignature::SameKey
        }
        (None, _) => FileSignature::Absent,
    };
    sink.commit()?;
    let content_bytes = index.content_bytes();
    Ok(VerifiedIndex {
        index,
        bundle_bytes: raw.compressed_bytes,
        content_bytes,
        file_signature,
        elapsed: started.elapsed(),
    })
}

fn check_file_comment(sig: &Signature, index: &Index, sig_path: &Path) -> Result<()> {
    if sig.trusted_comment != index.trusted_comment() {
        return Err(Error::TrustedCommentMismatch {
            what: sig_path.display().to_string(),
            expected: index.trusted_comment(),
            found: sig.trusted_comment.clone(),
        });
    }
    Ok(())
}

fn check_entries(stream: &mut TarStream, index: &Index, sink: &mut dyn Sink) -> Result<()> {
    let entries = &index.entries;
    let position_of = |path: &str| entries.binary_search_by(|e| e.path.as_str().cmp(path)).ok();
    let mut next = 0usize;
    loop {
        let block = read_header(stream, &|| match entries.get(next) {
            Some(e) => format!("header of entry {:?}", e.path),
            None => "end-of-archive marker".to_owned(),
        })?;
        if is_zero_block(&block) {
            if let Some(missing) = entries.get(next) {
                return Err(Error::MissingEntry {
                    path: missing.path.clone(),
                });
            }
            let second = read_header(stream, &|| "end-of-archive marker".to_owned())?;
            if !is_zero_block(&second) {
                return Err(Error::TrailingData {
                    offset: stream.offset - BLOCK as u64,
                    found: Trailing::NonZero,
                });
            }
            return Ok(());
        }
        let found = judge(&block)?;
        let expected = match entries.get(next) {
            Some(e) if e.path == found.path => e,
            _ => {
                return Err(match position_of(&found.path) {
                    Some(i) if i < next => Error::DuplicateEntry { path: found.path },
                    Some(_) => Error::MissingEntry {
                        path: entries[next].path.clone(),
                    },
                    None if found.path == INDEX_PATH || found.path == INDEX_SIG_PATH => {
                        Error::DuplicateEntry { path: found.path }
                    }
                    None => Error::UnlistedEntry { path: found.path },
                });
            }
        };
        // Judged from the header alone, before any data is read.
        if found.size > expected.size {
            return Err(Error::HostileEntry {
                path: found.path,
                reason: HostileReason::LargerThanDeclared {
                    declared: expected.size,
                    header: found.size,
                },
            });
        }
        if found.size < expected.size {
            return Err(Error::SizeMismatch {
                path: found.path,
                expected: expected.size,
                found: found.size,
            });
        }
        if found.mode != expected.mode {
            return Err(Error::ModeMismatch {
                path: found.path,
                expected: expected.mode,
                found: found.mode,
            });
        }
        sink.begin(expected)?;
        let mut hasher = Sha256Hasher::new();
        let mut left = expected.size;
        while left > 0 {
            let slice = stream.next_slice(HASH_SLICE.min(left as usize))?;
            if slice.is_empty() {
                return Err(Error::Truncated {
                    context: format!(
                        "entry {:?} ends after {} of {} bytes",
                        expected.path,
                        expected.size - left,
                        expected.size
                    ),
                });
            }
            hasher.update(slice);
            sink.data(slice)?;
            left -= slice.len() as u64;
        }
        let digest = hasher.finish();
        if digest != expected.sha256 {
            return Err(Error::DigestMismatch {
                path: expected.path.clone(),
                expected: expected.sha256,
                found: digest,
            });
        }
        skip_padding(stream, expected.size, &expected.path)?;
        sink.end()?;
        next += 1;
    }
}

/// After the two zero blocks only zeros may follow (tar writers pad to a record size, 10 KiB by
/// default), and at most [`MAX_PADDING`] of them: a stream of zeros would otherwise be read to its
/// end, however long. What follows the compressed stream itself is judged by the decoder.
fn check_trailer(stream: &mut TarStream) -> Result<()> {
    let end = stream.offset;
    loop {
        let start = stream.offset;
        let room = MAX_PADDING + 1 - (start - end);
        let (read, non_zero) = {
            let slice = stream.next_slice(HASH_SLICE.min(room as usize))?;
            (slice.len(), slice.iter().position(|&b| b != 0))
        };
        if stream.frame_start >= end {
            return Err(Error::TrailingData {
                offset: stream.frame_start,
                found: Trailing::FrameAfterEnd,
            });
        }
        if let Some(i) = non_zero {
            return Err(Error::TrailingData {
                offset: start + i as u64,
                found: Trailing::NonZero,
            });
        }
        if read == 0 {
            return Ok(());
        }
        if stream.offset - end > MAX_PADDING {
            return Err(Error::TrailingData {
                offset: end,
                found: Trailing::TooLong { limit: MAX_PADDING },
            });
        }
    }
}

/// Writes entries under a temporary root. Paths were validated (plain relative components) before
/// reaching here, and files are created with `create_new`, so nothing can escape the root.
struct ExtractSink {
    root: PathBuf,
    file: Option<std::io::BufWriter<File>>,
    current: PathBuf,
}

impl ExtractSink {
    fn create(&mut self, rel: &str, mode: u32) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.root.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        self.file = Some(std::io::BufWriter::with_capacity(1 << 20, file));
        self.current = path;
        Ok(())
    }
}

impl Sink for ExtractSink {
    fn special(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.create(path, MODE_FILE)?;
        self.data(data)?;
        self.end()
    }
    fn begin(&mut self, entry: &Entry) -> Result<()> {
        self.create(&entry.path, entry.mode)
    }
    fn data(&mut self, data: &[u8]) -> Result<()> {
        let file = self.file.as_mut().expect("begin before data");
        file.write_all(data)
            .map_err(|e| Error::io(&self.current, e))
    }
    fn end(&mut self) -> Result<()> {
        let file = self.file.take().expect("begin before end");
        let file = file
            .into_inner()
            .map_err(|e| Error::io(&self.current, e.into_error()))?;
        file.sync_data().map_err(|e| Error::io(&self.current, e))
    }
}
