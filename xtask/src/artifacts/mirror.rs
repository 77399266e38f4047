//! The HTTP mirror's tree: binaries laid out like the upstream download sites, with published
//! checksum files. Files are hard-linked from the cache when possible (same filesystem) and
//! always replaced by rename, so a client never reads half a file.
use std::collections::BTreeMap;
use std::path::Path;

use super::Binary;
use super::catalog::ChecksumStyle;
use super::error::{Error, Result};
use super::fsutil;

/// Lays out `binaries` under `root`; leaves files already up to date alone.
pub fn populate(root: &Path, binaries: &[Binary]) -> Result<()> {
    let mut sums: BTreeMap<String, String> = BTreeMap::new();
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    for binary in binaries {
        let dest = root.join(&binary.url_path);
        if let Some(dir) = dest.parent() {
            fsutil::create_dir_all(dir)?;
        }
        place(&binary.path, &dest, &binary.sha256, binary.size)?;
        match binary.checksum {
            ChecksumStyle::PerFile => {
                let sha_file = root.join(&binary.checksum_path);
                write_if_changed(&sha_file, format!("{}\n", binary.sha256).as_bytes())?;
            }
            ChecksumStyle::Sums => {
                sums.entry(binary.checksum_path.clone())
                    .or_default()
                    .push_str(&format!("{}  {}\n", binary.sha256, binary.name));
            }
        }
        let dir = binary.url_path.rsplit_once('/').map_or("", |(d, _)| d);
        sources
            .entry(format!("{dir}/SOURCES"))
            .or_default()
            .push_str(&format!("{}: {}\n", binary.name, binary.origin));
    }
    for (path, text) in sums.iter().chain(sources.iter()) {
        write_if_changed(&root.join(path), text.as_bytes())?;
    }
    Ok(())
}

/// Puts `from` at `dest` unless `dest` already has that content (checked by size and digest).
pub(super) fn place(from: &Path, dest: &Path, sha256: &str, size: u64) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(src), Ok(dst)) = (std::fs::metadata(from), std::fs::metadata(dest)) {
        // Our own hard link: same bytes without reading 600 MB again.
        let same_file = src.dev() == dst.dev() && src.ino() == dst.ino();
        if same_file || (dst.len() == size && fsutil::sha256_file(dest)?.0 == sha256) {
            return Ok(());
        }
    }
    let tmp = fsutil::partial(dest);
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp).map_err(Error::io("copy to the mirror", from))?;
    }
    std::fs::rename(&tmp, dest).map_err(Error::io("rename into", dest))
}

pub(super) fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    fsutil::write_atomic(path, bytes)
}

/// The digest a checksum file publishes for `name`: either a bare hex digest or `sha256sum` lines.
pub fn published_digest(checksum_text: &str, name: &str) -> Option<String> {
    let lines: Vec<&str> = checksum_text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    if let [only] = lines.as_slice()
        && !only.trim().contains(char::is_whitespace)
    {
        return Some(only.trim().to_string());
    }
    lines.iter().find_map(|line| {
        let (hex, file) = line.split_once(char::is_whitespace)?;
        (file.trim().trim_start_matches('*') == name).then(|| hex.to_string())
    })
}
