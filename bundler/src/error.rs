//! Errors of the bundler library. Every variant names the entry, url, image or path it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A registry request failed (connection, auth, missing tag/repository, bad response).
    #[error("image {image} ({location}): pulling {what} from {source_ref}: {message}")]
    Registry {
        image: String,
        location: String,
        source_ref: String,
        what: String,
        message: String,
    },

    /// The registry answered with something unusable (bad JSON, no matching platform...).
    #[error("image {image} ({location}): {message}")]
    Image {
        image: String,
        location: String,
        message: String,
    },

    #[error("{kind} {name} ({location}): downloading {url}: {message}")]
    Download {
        kind: &'static str,
        name: String,
        location: String,
        url: String,
        message: String,
    },

    /// The member named by `archive_member` cannot be taken from the (verified) archive.
    #[error("{kind} {name} ({location}): archive {archive}: {message}")]
    ArchiveMember {
        kind: &'static str,
        name: String,
        location: String,
        archive: String,
        /// Starts with `member <path>: `.
        message: String,
    },

    #[error("{what} ({location}): {url}: sha256 mismatch: expected {expected}, found {found}")]
    DigestMismatch {
        what: String,
        location: String,
        url: String,
        expected: String,
        found: String,
    },

    /// The manifest declares a cluster but lacks what `ilha_format::cluster` requires for it.
    #[error("{location}: cluster {kubernetes_version} ({network}) needs {} more item(s):{}",
        missing.len(), missing.iter().map(|m| format!("\n  - {m}")).collect::<String>())]
    IncompleteCluster {
        /// `file:line:col` of the manifest's `cluster:`.
        location: String,
        kubernetes_version: String,
        network: String,
        /// One line per missing item, e.g. "binary `kubelet` (needed on every node)".
        missing: Vec<String>,
    },

    /// A mirror rule that no `url`, `sha256_url` or image source of the manifest starts with.
    #[error("{file}: {} mirror rule(s) match no source of the manifest (a typo would send the \
        build to upstream behind your back; fix or remove them):{}",
        rules.len(), rules.iter().map(|r| format!("\n  - {r}")).collect::<String>())]
    UnusedMirror {
        file: String,
        /// `FROM => TO (ORIGIN)`.
        rules: Vec<String>,
    },

    #[error(transparent)]
    Format(#[from] ilha_format::Error),

    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Renders an error with its whole `source()` chain: reqwest/hyper hide the useful part
/// ("connection refused") in the chain.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        cur = e.source();
    }
    text
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
