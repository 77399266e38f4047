//! Errors of the artifacts part: each names the file, command, package or address it is about.
use std::net::SocketAddr;
use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run `{command}` (is it installed?): {source}")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {detail}")]
    CommandFailed {
        command: String,
        status: std::process::ExitStatus,
        /// The command's stderr tail, or where its full log is.
        detail: String,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("Kubernetes source in {dir}: {reason}")]
    Source { dir: PathBuf, reason: String },
    #[error("package {package}: {reason}")]
    Package { package: String, reason: String },
    #[error("built binary {path} is not what the recipe promises: {reason} (build log: {log})")]
    BadOutput {
        path: PathBuf,
        reason: String,
        log: PathBuf,
    },
    #[error("{name} on {addr}: {reason} (log: {log})")]
    Daemon {
        name: &'static str,
        addr: SocketAddr,
        reason: String,
        log: PathBuf,
    },
    #[error("apt sources: {0}")]
    AptSources(String),
}

impl Error {
    /// Wraps an `std::io::Error` with what was being done and to which path.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
