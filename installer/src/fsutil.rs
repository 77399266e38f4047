//! Writing operator-side state (CA keys, kubeconfigs, pod ranges) so that a crash never leaves a
//! half-written file behind and a secret is never readable by others, not even for a moment.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes through a temporary file in the same directory (mode set before any byte is written),
/// synced and renamed over `path`, then syncs the directory so the rename itself is durable.
/// Readers see either the old content or the complete new one.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(mode))?;
    temp.write_all(contents)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|error| error.error)?;
    fs::File::open(dir)?.sync_all()
}
