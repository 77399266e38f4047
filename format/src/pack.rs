//! Writing a bundle: index, index signature, then every entry sorted by path, into one zstd stream.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::Sha256;
use crate::error::{Error, Result};
use crate::index::{Entry, Index};
use crate::sign::{Prehasher, SecretKey, sig_path_for, write_replacing};
use crate::tarfmt::{BLOCK, MODE_EXEC, MODE_FILE, padding, regular_header};
use crate::{INDEX_PATH, INDEX_SIG_PATH};

/// One file to store in the bundle.
#[derive(Debug, Clone)]
pub struct PackSource {
    /// e.g. `blobs/sha256/<hex>` or `images/blobs/sha256/<hex>`, `images/index.json`.
    pub path_in_bundle: String,
    pub source_file: PathBuf,
    /// Trusted as given (the bundler checked it while downloading).
    pub sha256: Sha256,
    /// Checked against the source file while copying.
    pub size: u64,
    /// Mode 0755 instead of 0644.
    pub executable: bool,
}

#[derive(Debug, Clone)]
pub struct PackOptions {
    /// zstd level. OCI layers are gzip'd already and barely compress: a low level is the right trade.
    pub zstd_level: i32,
    /// zstd worker threads; 0 = one per available core. The output does not depend on this number.
    pub zstd_workers: u32,
}

impl Default for PackOptions {
    fn default() -> Self {
        PackOptions {
            zstd_level: 3,
            zstd_workers: 0,
        }
    }
}

/// Progress callbacks (e.g. an indicatif bar in the bundler). All methods have no-op defaults.
pub trait Progress: Sync {
    /// Called once before any entry, with the total bytes of content to write.
    fn start(&self, _total_bytes: u64, _entries: usize) {}
    fn entry(&self, _path: &str, _size: u64) {}
    fn bytes(&self, _n: u64) {}
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

#[derive(Debug, Clone)]
pub struct PackReport {
    /// The index as stored (entries filled in).
    pub index: Index,
    pub bundle: PathBuf,
    pub signature: PathBuf,
    /// Size of the compressed bundle file.
    pub bundle_bytes: u64,
    /// Sum of the entry sizes (uncompressed, deduplicated).
    pub content_bytes: u64,
}

/// [`pack_with`] with default options.
pub fn pack(
    index: Index,
    sources: Vec<PackSource>,
    key: &SecretKey,
    out: &Path,
    progress: &dyn Progress,
) -> Result<PackReport> {
    pack_with(index, sources, key, out, &PackOptions::default(), progress)
}

/// Writes the bundle to `out` and its whole-file signature to `out.minisig`.
///
/// `index.entries` is replaced by the entries made from `sources` (sorted by path; two sources with
/// the same path and digest are stored once, same path with different digests is an error). The
/// index is validated before anything is written. Data goes to `out.partial`, is fsync'd and renamed;
/// on error neither `out` nor `out.partial` is left behind.
pub fn pack_with(
    mut index: Index,
    sources: Vec<PackSource>,
    key: &SecretKey,
    out: &Path,
    options: &PackOptions,
    progress: &dyn Progress,
) -> Result<PackReport> {
    let sources = dedup_sorted(sources)?;
    index.entries = sources
        .iter()
        .map(|s| Entry {
            path: s.path_in_bundle.clone(),
            sha256: s.sha256,
            size: s.size,
            mode: if s.executable { MODE_EXEC } else { MODE_FILE },
        })
        .collect();
    index.validate()?;
    let index_bytes = index.to_json_bytes();
    let index_sig = key
        .sign_bytes(&index_bytes, &index.trusted_comment())
        .to_minisig_string();

    let partial = {
        let mut s = out.as_os_str().to_owned();
        s.push(".partial");
        PathBuf::from(s)
    };
    // A stale signature must never sit next to a new bundle.
    let sig_path = sig_path_for(out);
    let _ = fs::remove_file(&sig_path);

    let written = write_partial(
        &partial,
        &index_bytes,
        index_sig.as_bytes(),
        &sources,
        options,
        progress,
    )
    .and_then(|(bytes, prehash)| {
        fs::rename(&partial, out).map_err(|e| Error::io(out, e))?;
        Ok((bytes, prehash))
    });
    let (bundle_bytes, prehash) = match written {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e.in_bundle(out));
        }
    };
    let file_sig = key.sign_prehashed(&prehash, &index.trusted_comment());
    if let Err(e) = write_replacing(&sig_path, file_sig.to_minisig_string().as_bytes()) {
        let _ = fs::remove_file(out);
        return Err(e);
    }
    progress.finish();
    let content_bytes = index.content_bytes();
    Ok(PackReport {
        index,
        bundle: out.to_owned(),
        signature: sig_path,
        bundle_bytes,
        content_bytes,
    })
}

fn dedup_sorted(mut sources: Vec<PackSource>) -> Result<Vec<PackSource>> {
    sources.sort_by(|a, b| a.path_in_bundle.as_bytes().cmp(b.path_in_bundle.as_bytes()));
    let mut out: Vec<PackSource> = Vec::with_capacity(sources.len());
    for s in sources {
        if let Some(prev) = out.last()
            && prev.path_in_bundle == s.path_in_bundle
        {
            if prev.sha256 != s.sha256 || prev.size != s.size || prev.executable != s.executable {
                return Err(Error::Pack {
                    reason: format!(
                        "two different contents for {:?}: {} and {}",
                        s.path_in_bundle,
                        prev.source_file.display(),
                        s.source_file.display()
                    ),
                });
            }
            continue;
        }
        out.push(s);
    }
    Ok(out)
}

/// Counts bytes and feeds minisign's prehash while writing, so the whole-file signature costs no
/// second read of the bundle.
struct SigningWriter<W> {
    inner: W,
    prehash: Prehasher,
    bytes: u64,
}

impl<W: Write> Write for SigningWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.prehash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_partial(
    partial: &Path,
    index_bytes: &[u8],
    index_sig: &[u8],
    sources: &[PackSource],
    options: &PackOptions,
    progress: &dyn Progress,
) -> Result<(u64, [u8; 64])> {
    let io_err = |e| Error::io(partial, e);
    let file = File::create(partial).map_err(io_err)?;
    let sink = SigningWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        prehash: Prehasher::new(),
        bytes: 0,
    };
    let mut z = zstd::Encoder::new(sink, options.zstd_level).map_err(io_err)?;
    let workers = match options.zstd_workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        n => n,
    };
    // Always multithreaded mode (even with 1 worker): zstd's output is then the same for any number
    // of workers, which keeps the bundle reproducible across machines.
    z.multithread(workers).map_err(io_err)?;
    z.include_checksum(true).map_err(io_err)?;

    let total: u64 = sources.iter().map(|s| s.size).sum();
    progress.start(total, sources.len());
    write_memory_entry(&mut z, INDEX_PATH, index_bytes).map_err(io_err)?;
    write_memory_entry(&mut z, INDEX_SIG_PATH, index_sig).map_err(io_err)?;
    let mut buf = vec![0u8; 1 << 20];
    for s in sources {
        progress.entry(&s.path_in_bundle, s.size);
        write_file_entry(&mut z, s, &mut buf, progress)?;
    }
    z.write_all(&[0u8; 2 * BLOCK]).map_err(io_err)?;
    let sink = z.finish().map_err(io_err)?;
    let SigningWriter {
        inner,
        prehash,
        bytes,
    } = sink;
    let file = inner.into_inner().map_err(|e| io_err(e.into_error()))?;
    file.sync_all().map_err(io_err)?;
    Ok((bytes, prehash.finish()))
}

fn write_memory_entry(w: &mut impl Write, path: &str, data: &[u8]) -> io::Result<()> {
    let header = regular_header(path, data.len() as u64, MODE_FILE)?;
    w.write_all(header.as_bytes())?;
    w.write_all(data)?;
    w.write_all(&[0u8; BLOCK][..padding(data.len() as u64)])
}

fn write_file_entry(
    w: &mut impl Write,
    s: &PackSource,
    buf: &mut [u8],
    progress: &dyn Progress,
) -> Result<()> {
    let src_err = |e| Error::io(&s.source_file, e);
    let mut file = File::open(&s.source_file).map_err(src_err)?;
    let actual = file.metadata().map_err(src_err)?.len();
    if actual != s.size {
        return Err(Error::SourceSizeMismatch {
            path: s.source_file.clone(),
            entry: s.path_in_bundle.clone(),
            expected: s.size,
            found: actual,
        });
    }
    let mode = if s.executable { MODE_EXEC } else { MODE_FILE };
    let header = regular_header(&s.path_in_bundle, s.size, mode).map_err(src_err)?;
    let out_err = |e: io::Error| Error::Pack {
        reason: format!("writing {:?}: {e}", s.path_in_bundle),
    };
    w.write_all(header.as_bytes()).map_err(out_err)?;
    let mut copied = 0u64;
    loop {
        let n = file.read(buf).map_err(src_err)?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        if copied > s.size {
            break;
        }
        w.write_all(&buf[..n]).map_err(out_err)?;
        progress.bytes(n as u64);
    }
    // The file may have changed between stat and read: the header already promised `size` bytes.
    if copied != s.size {
        return Err(Error::SourceSizeMismatch {
            path: s.source_file.clone(),
            entry: s.path_in_bundle.clone(),
            expected: s.size,
            found: copied,
        });
    }
    w.write_all(&[0u8; BLOCK][..padding(s.size)])
        .map_err(out_err)?;
    Ok(())
}
