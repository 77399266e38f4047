//! The node-local API proxy that `up` installs on workers: the `ilha-apiproxy` binary (crate
//! `apiproxy/`), built static by `build.rs` and carried inside `ilha`, so the operator copies one
//! file and workers run it whatever their C library (see docs/apiproxy.md).

use sha2::{Digest, Sha256};

/// The static `ilha-apiproxy` executable, uploaded to every worker as is.
pub static BINARY: &[u8] = include_bytes!(env!("ILHA_APIPROXY_BINARY"));

/// Hex sha256 of [`BINARY`], as uploads and the journal record it.
pub fn sha256() -> String {
    hex::encode(Sha256::digest(BINARY))
}
