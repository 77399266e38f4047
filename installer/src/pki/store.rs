//! File handling for the PKI directory: private directories, atomic writes (a crash never leaves
//! a half-written key behind) and random serial numbers.

use std::fs;
use std::io::{ErrorKind, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::PkiError;

/// Private keys: readable by the operator only.
pub(super) const KEY_MODE: u32 = 0o600;
/// Certificates and public keys are not secret.
pub(super) const PUBLIC_MODE: u32 = 0o644;
const DIR_MODE: u32 = 0o700;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` (and parents) if needed and makes it 0700, also when it already existed with
/// looser permissions: it holds CA keys.
pub(super) fn ensure_private_dir(dir: &Path) -> Result<(), PkiError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE)).map_err(io_error(dir))
}

/// The file's text, or `None` when it does not exist.
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(None),
        Err(error) => Err(io_error(path)(error)),
    }
}

/// [`crate::fsutil::write_atomic`], with errors naming `path`.
pub(super) fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), PkiError> {
    crate::fsutil::write_atomic(path, contents.as_bytes(), mode).map_err(io_error(path))
}

/// A random, positive 128-bit serial number (RFC 5280 allows up to 20 octets).
pub(super) fn random_serial() -> Result<rcgen::SerialNumber, PkiError> {
    let source = Path::new("/dev/urandom");
    let mut bytes = [0u8; 16];
    fs::File::open(source)
        .and_then(|mut file| file.read_exact(&mut bytes))
        .map_err(io_error(source))?;
    // Clear the sign bit (serials are positive) and set the next one so the DER encoding always
    // has the full 16 octets and the serial is never zero.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(rcgen::SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.key");
        write_atomic(&path, "first", KEY_MODE).unwrap();
        write_atomic(&path, "second", KEY_MODE).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn private_dir_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        fs::create_dir(&pki).unwrap();
        fs::set_permissions(&pki, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&pki).unwrap();
        let mode = fs::metadata(&pki).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn serials_are_positive_full_length_and_differ() {
        let first = random_serial().unwrap();
        let second = random_serial().unwrap();
        assert_ne!(first, second);
        for serial in [first, second] {
            let bytes = serial.to_bytes();
            assert_eq!(bytes.len(), 16);
            assert_eq!(bytes[0] & 0xc0, 0x40);
        }
    }
}
