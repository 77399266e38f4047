//! The ilha bundle format: one signed, content-addressed `tar.zst`.
//!
//! See `docs/bundle-format.md` for the byte-level description. This crate has no network and no
//! notion of hosts: it packs a bundle from files already on disk, and verifies / extracts / lists one.

pub mod cluster;
pub mod digest;
pub mod error;
pub mod index;
pub mod inspect;
pub mod names;
pub mod pack;
pub mod sign;
mod stream;
mod tarfmt;
pub mod verify;

pub use digest::{HashingReader, Sha256, Sha256Writer};
pub use error::{Error, HostileReason, Result, Trailing};
pub use index::{ArtifactRecord, Entry, ImageRecord, Index};
pub use pack::{NoProgress, PackOptions, PackReport, PackSource, Progress, pack, pack_with};

pub use sign::{
    KeyPair, PublicKey, SecretKey, Signature, generate_keypair, load_public_key, load_secret_key,
    sign_file,
};
pub use verify::{FileSignature, VerifiedIndex, extract, read_index, verify};

/// Path of the first tar entry: the index.
pub const INDEX_PATH: &str = "ilha-index.json";
/// Path of the second tar entry: the minisign signature of the index bytes.
pub const INDEX_SIG_PATH: &str = "ilha-index.json.minisig";
/// Value of `Index::format` this crate writes and accepts.
pub const FORMAT_V1: &str = "ilha-bundle/1";
/// Suffix of the detached whole-file signature written next to the bundle.
pub const SIG_SUFFIX: &str = ".minisig";
