//! PKI errors. Each one names the file it is about so the operator knows what to inspect, move
//! away or restore in the state directory.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A stored certificate or key cannot be parsed. Never silently replaced: it may be the only
    /// copy of a CA the cluster trusts.
    #[error("{}: not a usable {what}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    /// `ca.crt` exists without its key. Making a new CA would orphan every certificate already
    /// deployed, so the operator has to restore the key (or remove the certificate on purpose).
    #[error(
        "{} exists but its key {} is missing; restore the key, or remove the certificate to create a new CA",
        cert.display(),
        key.display()
    )]
    MissingKey { cert: PathBuf, key: PathBuf },
    /// A stored pair whose private key does not belong to the certificate (or public key).
    #[error("{} does not belong to {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("{}: not a CA certificate (basicConstraints CA is not set)", path.display())]
    NotACa { path: PathBuf },
    #[error(
        "invalid certificate name `{stem}`: use letters, digits, `.`, `_` and `-`, not starting with `.`, and not `ca`"
    )]
    InvalidStem { stem: String },
    #[error("invalid certificate request for {}: {reason}", path.display())]
    InvalidSpec { path: PathBuf, reason: String },
    /// rcgen refused to build or sign a certificate (e.g. a DNS name that is not ASCII).
    #[error("cannot issue {}: {source}", path.display())]
    Issue { path: PathBuf, source: rcgen::Error },
}
