//! The few tar facts the format needs: building our headers, and judging headers we read.

use crate::error::HostileReason;

pub(crate) const BLOCK: usize = 512;
pub(crate) const MODE_FILE: u32 = 0o644;
pub(crate) const MODE_EXEC: u32 = 0o755;

/// A ustar header for a regular file: mtime 0, uid/gid 0, empty user/group names, so that the same
/// content always gives the same bytes.
pub(crate) fn regular_header(path: &str, size: u64, mode: u32) -> std::io::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)?;
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// Bytes of zero padding after `size` bytes of data.
pub(crate) fn padding(size: u64) -> usize {
    ((BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64) as usize
}

/// Only plain relative paths made of `[A-Za-z0-9._-]` components, none of them `.` or `..`.
pub(crate) fn check_bundle_path(path: &str) -> Result<(), HostileReason> {
    if path.starts_with('/') {
        return Err(HostileReason::AbsolutePath);
    }
    if path.split('/').any(|c| c == "..") {
        return Err(HostileReason::ParentComponent);
    }
    let ok_component = |c: &str| {
        !c.is_empty()
            && c != "."
            && c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    };
    if path.is_empty() || path.len() > 100 || !path.split('/').all(ok_component) {
        return Err(HostileReason::UnsafePath);
    }
    Ok(())
}

/// What a header we read describes, once judged safe.
pub(crate) struct RegularEntry {
    pub path: String,
    pub size: u64,
    pub mode: u32,
}

/// True when the block is all zeros (end-of-archive marker).
pub(crate) fn is_zero_block(block: &[u8; BLOCK]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// Judges one header: the path is decoded first so that every refusal can name the entry.
pub(crate) fn parse_header(block: &[u8; BLOCK]) -> Result<RegularEntry, (String, HostileReason)> {
    let header = tar::Header::from_byte_slice(block);
    let raw_path = header.path_bytes();
    let path = String::from_utf8_lossy(&raw_path).into_owned();
    let fail = |reason| Err((path.clone(), reason));

    let stored_sum = header.cksum().ok();
    let computed: u32 = block
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                b as u32
            }
        })
        .sum();
    if stored_sum != Some(computed) {
        return fail(HostileReason::BadHeaderChecksum);
    }

    let link = || {
        header
            .link_name_bytes()
            .map(|l| String::from_utf8_lossy(&l).into_owned())
            .unwrap_or_default()
    };
    match header.entry_type() {
        tar::EntryType::Regular => {}
        tar::EntryType::Symlink => return fail(HostileReason::Symlink { target: link() }),
        tar::EntryType::Link => return fail(HostileReason::Hardlink { target: link() }),
        tar::EntryType::Char | tar::EntryType::Block => return fail(HostileReason::Device),
        tar::EntryType::Fifo => return fail(HostileReason::Fifo),
        tar::EntryType::Directory => return fail(HostileReason::Directory),
        other => return fail(HostileReason::UnsupportedType(other.as_byte())),
    }
    if std::str::from_utf8(&raw_path).is_err() {
        return fail(HostileReason::UnsafePath);
    }
    if let Err(reason) = check_bundle_path(&path) {
        return fail(reason);
    }
    let Ok(size) = header.size() else {
        return fail(HostileReason::UnsafePath);
    };
    let mode = match header.mode() {
        Ok(m) if m == MODE_FILE || m == MODE_EXEC => m,
        Ok(m) => return fail(HostileReason::BadMode(m)),
        Err(_) => return fail(HostileReason::BadMode(0)),
    };
    Ok(RegularEntry { path, size, mode })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(check_bundle_path("blobs/sha256/abc").is_ok());
        assert_eq!(
            check_bundle_path("/etc/passwd"),
            Err(HostileReason::AbsolutePath)
        );
        assert_eq!(
            check_bundle_path("a/../b"),
            Err(HostileReason::ParentComponent)
        );
        assert_eq!(check_bundle_path("a//b"), Err(HostileReason::UnsafePath));
        assert_eq!(check_bundle_path("./a"), Err(HostileReason::UnsafePath));
        assert_eq!(check_bundle_path("a\\b"), Err(HostileReason::UnsafePath));
    }

    #[test]
    fn our_header_parses_back() {
        let h = regular_header("blobs/sha256/x", 1234, MODE_EXEC).unwrap();
        let e = parse_header(h.as_bytes()).ok().unwrap();
        assert_eq!(
            (e.path.as_str(), e.size, e.mode),
            ("blobs/sha256/x", 1234, MODE_EXEC)
        );
        assert_eq!(padding(1234), 512 * 3 - 1234);
        assert_eq!(padding(1024), 0);
    }
}
