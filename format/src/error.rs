//! Errors of the bundle format. Every variant names the file, entry or key it is about.

use std::fmt;
use std::path::PathBuf;

use crate::digest::Sha256;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an entry of a bundle was refused before its data was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostileReason {
    AbsolutePath,
    ParentComponent,
    /// Empty components, `.`, backslashes, NUL, non-UTF-8...: anything but a plain relative path.
    UnsafePath,
    Symlink {
        target: String,
    },
    Hardlink {
        target: String,
    },
    Device,
    Fifo,
    Directory,
    /// Any other tar entry type (PAX/GNU extension headers, sparse files...).
    UnsupportedType(u8),
    LargerThanDeclared {
        declared: u64,
        header: u64,
    },
    BadHeaderChecksum,
    BadMode(u32),
}

impl fmt::Display for HostileReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AbsolutePath => f.write_str("absolute path"),
            Self::ParentComponent => f.write_str("path contains `..`"),
            Self::UnsafePath => f.write_str("not a plain relative path"),
            Self::Symlink { target } => write!(f, "symbolic link (to {target:?})"),
            Self::Hardlink { target } => write!(f, "hard link (to {target:?})"),
            Self::Device => f.write_str("device file"),
            Self::Fifo => f.write_str("fifo"),
            Self::Directory => f.write_str("directory entry"),
            Self::UnsupportedType(t) => write!(f, "unsupported tar entry type {:?}", *t as char),
            Self::LargerThanDeclared { declared, header } => write!(
                f,
                "tar header says {header} bytes but the signed index declares {declared}"
            ),
            Self::BadHeaderChecksum => f.write_str("tar header checksum is wrong"),
            Self::BadMode(m) => write!(f, "mode {m:o} (only 644 and 755 are allowed)"),
        }
    }
}

/// What was found after the archive's end (see [`Error::TrailingData`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trailing {
    /// A non-zero byte after the end-of-archive marker, inside the compressed stream.
    NonZero,
    /// More than `limit` bytes after the end-of-archive marker, all zeros so far: reading stopped
    /// there (tar pads to one record, far less).
    TooLong { limit: u64 },
    /// A further zstd frame starts after the end-of-archive marker: something was appended to the
    /// compressed stream (a bundle is one frame; a re-compressed one may hold several, all
    /// starting before the archive's end).
    FrameAfterEnd,
    /// `bytes` in the file after the end of its last zstd frame (garbage, a skippable frame...):
    /// refused from their first bytes, never read.
    AfterCompressedStream { bytes: u64 },
}

impl Trailing {
    fn describe(&self, offset: u64) -> String {
        let what = "bytes after the archive's end: ";
        let remedy = "the file was altered or appended to; take the bundle again from its source";
        match self {
            Trailing::NonZero => format!(
                "{what}a non-zero byte {offset} bytes into the tar stream, after its \
                 end-of-archive marker (only zero padding may follow it); {remedy}"
            ),
            Trailing::TooLong { limit } => format!(
                "{what}{}+ bytes follow the end-of-archive marker ({offset} bytes into the tar \
                 stream), more than the {limit} bytes of zero padding accepted; {remedy}",
                limit + 1
            ),
            Trailing::FrameAfterEnd => format!(
                "{what}a further zstd frame starts {offset} bytes into the tar stream, after its \
                 end-of-archive marker; {remedy}"
            ),
            Trailing::AfterCompressedStream { bytes } => format!(
                "{what}{bytes} bytes follow the end of the compressed stream (at byte {offset} \
                 of the file); {remedy}"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Wraps any error that happened while reading or writing a given bundle file.
    #[error("bundle {path}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },

    #[error("{path}: not a valid minisign {what}: {reason}")]
    KeyFormat {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },

    #[error("{path}: the secret key is encrypted: a password is needed")]
    KeyEncrypted { path: PathBuf },

    #[error("{path}: wrong password, or corrupted secret key")]
    WrongPassword { path: PathBuf },

    #[error("{path}: refusing to overwrite an existing key")]
    KeyExists { path: PathBuf },

    #[error("{what}: not a valid minisign signature: {reason}")]
    SignatureFormat { what: String, reason: String },

    #[error("{what}: signed by key {found}, but the public key given is {expected} (wrong key?)")]
    WrongKey {
        what: String,
        expected: String,
        found: String,
    },

    #[error("{what}: bad signature ({reason}): the data was altered or not signed by this key")]
    BadSignature { what: String, reason: &'static str },

    #[error("{what}: trusted comment is {found:?}, expected {expected:?}")]
    TrustedCommentMismatch {
        what: String,
        expected: String,
        found: String,
    },

    #[error("index: {reason}")]
    InvalidIndex { reason: String },

    #[error("bundle is truncated: {context}")]
    Truncated { context: String },

    #[error("corrupt compressed stream: {context}")]
    CorruptStream { context: String },

    #[error("tar entry #{position} should be {expected:?}, found {found:?}")]
    UnexpectedEntry {
        position: usize,
        expected: &'static str,
        found: String,
    },

    #[error("entry {path:?}: refused: {reason}")]
    HostileEntry { path: String, reason: HostileReason },

    #[error("entry {path:?}: size is {found} bytes, the index declares {expected}")]
    SizeMismatch {
        path: String,
        expected: u64,
        found: u64,
    },

    #[error("entry {path:?}: sha256 is {found}, the index declares {expected}")]
    DigestMismatch {
        path: String,
        expected: Sha256,
        found: Sha256,
    },

    #[error("entry {path:?}: mode is {found:o}, the index declares {expected:o}")]
    ModeMismatch {
        path: String,
        expected: u32,
        found: u32,
    },

    #[error("entry {path:?} is not listed in the index")]
    UnlistedEntry { path: String },

    #[error("entry {path:?} appears twice")]
    DuplicateEntry { path: String },

    #[error("entry {path:?} is listed in the index but missing from the bundle")]
    MissingEntry { path: String },

    /// Something follows the archive's end; `offset` is in the tar stream, or in the file for
    /// [`Trailing::AfterCompressedStream`].
    #[error("{}", found.describe(*offset))]
    TrailingData { offset: u64, found: Trailing },

    #[error("pack: {reason}")]
    Pack { reason: String },

    #[error("pack: source {path} for {entry:?}: size is {found} bytes, expected {expected}")]
    SourceSizeMismatch {
        path: PathBuf,
        entry: String,
        expected: u64,
        found: u64,
    },
}

impl Error {
    /// The innermost error, looking through [`Error::Bundle`] wrappers (handy for matching).
    pub fn root(&self) -> &Error {
        match self {
            Error::Bundle { source, .. } => source.root(),
            other => other,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn in_bundle(self, path: &std::path::Path) -> Self {
        match self {
            e @ Error::Bundle { .. } => e,
            e => Error::Bundle {
                path: path.to_owned(),
                source: Box::new(e),
            },
        }
    }
}
