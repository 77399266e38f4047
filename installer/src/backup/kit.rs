//! Restore kits: one signed `tar.zst` (`KIT` + `KIT.minisig`) that travels on removable media.
//!
//! Layout: `kit.json` (the manifest, readable without any key, for `ilha inspect`), then either
//! `payload/<path>` for every file of the staging directory, or one `payload.tar.zst.age` holding
//! those same entries age-encrypted. Stock tools open it: `minisign -Vm KIT -p PUB`,
//! `tar --zstd -xf KIT`, `age -d -i ID payload.tar.zst.age | tar --zstd -x`.
//!
//! Nothing is held in memory but the manifest: the payload (an etcd snapshot can be several GiB) is
//! streamed, hashed on the way, and the whole-file signature is computed over the bytes as they are
//! written and checked over the bytes as they are read back.

mod open;
#[cfg(test)]
mod tests;
mod write;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cluster::snapshot::SnapshotStatus;

pub use open::{open_kit, read_manifest, verify_signature};
pub use write::write_kit;

pub const KIT_FORMAT: &str = "ilha-restore-kit/1";
/// First entry of every kit.
const MANIFEST_ENTRY: &str = "kit.json";
/// Directory every payload entry lives under, in the kit or in the encrypted inner archive.
const PAYLOAD_PREFIX: &str = "payload/";
/// The only entry after `kit.json` in an encrypted kit.
const ENCRYPTED_PAYLOAD_ENTRY: &str = "payload.tar.zst.age";
/// A generous bound: the manifest lists every payload file, and it is read into memory.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KitManifest {
    /// [`KIT_FORMAT`]; reading refuses anything else, naming what was found.
    pub format: String,
    pub cluster_name: String,
    /// Hex sha256 of the cluster CA certificate file: the cluster's identity.
    pub cluster_ca_sha256: String,
    /// Unix seconds.
    pub created_at: u64,
    pub ilha_version: String,
    pub etcd: EtcdSummary,
    /// Hosts whose `/etc/kubernetes` is in the kit.
    pub masters: Vec<String>,
    /// In dump order.
    pub objects: Vec<ObjectCount>,
    /// Set by [`write_kit`] from the [`Protection`].
    #[serde(default)]
    pub encryption: Encryption,
    /// Set by [`write_kit`]: every payload file, sorted by path.
    #[serde(default)]
    pub files: Vec<KitFile>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EtcdSummary {
    /// Host the snapshot came from.
    pub member: String,
    /// Payload-relative path, `etcd/snapshot.db`.
    pub snapshot: String,
    pub sha256: String,
    pub status: SnapshotStatus,
    /// (name, peer URL) of every member at backup time.
    pub initial_cluster: Vec<(String, String)>,
    pub drill: Drill,
}

/// The snapshot restored into a throwaway etcd and compared with the live cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Drill {
    pub passed: bool,
    pub revision: u64,
    pub restored_keys: u64,
    pub live_keys: u64,
    pub seconds: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ObjectCount {
    pub resource: String,
    pub count: usize,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    #[default]
    None,
    AgeRecipients,
    AgePassphrase,
}

impl fmt::Display for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Encryption::None => "none",
            Encryption::AgeRecipients => "age, to recipients",
            Encryption::AgePassphrase => "age, with a passphrase",
        })
    }
}

/// One payload file: `path` is relative to the payload root, `/`-separated; `mode` is the
/// permission bits (`0o777` mask: set-id bits have no place in a kit extracted as root).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KitFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub mode: u32,
}

/// How [`write_kit`] protects the payload.
#[derive(Clone)]
pub enum Protection {
    None,
    /// `age1…` recipient strings.
    Recipients(Vec<String>),
    Passphrase(String),
}

/// What [`open_kit`] may use to decrypt the payload.
#[derive(Clone)]
pub enum Unlock {
    None,
    /// An age identity file, as `age-keygen` writes it.
    Identities(PathBuf),
    Passphrase(String),
}

// By hand so that a passphrase never reaches a log line.
impl fmt::Debug for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protection::None => f.write_str("None"),
            Protection::Recipients(r) => f.debug_tuple("Recipients").field(r).finish(),
            Protection::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
        }
    }
}

impl fmt::Debug for Unlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unlock::None => f.write_str("None"),
            Unlock::Identities(p) => f.debug_tuple("Identities").field(p).finish(),
            Unlock::Passphrase(_) => f.write_str("Passphrase(<redacted>)"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KitError {
    #[error("{kit}: not a restore kit: {reason}")]
    NotAKit { kit: PathBuf, reason: String },

    #[error(
        "{kit}: kit format {found:?} is not supported (this ilha reads {KIT_FORMAT:?}): made by another ilha version?"
    )]
    UnknownFormat { kit: PathBuf, found: String },

    #[error("{kit}: {MANIFEST_ENTRY} is not a valid manifest: {reason}")]
    BadManifest { kit: PathBuf, reason: String },

    #[error("{kit}: not signed: {sig} is missing (a kit travels with its .minisig)")]
    MissingSignature { kit: PathBuf, sig: PathBuf },

    #[error("{kit}: the signature file {sig} is unreadable: {reason}")]
    BadSignatureFile {
        kit: PathBuf,
        sig: PathBuf,
        reason: String,
    },

    #[error(
        "{kit}: signed by key {found}, but the public key given is {expected} (a kit of another cluster, or the wrong --key?)"
    )]
    OtherKey {
        kit: PathBuf,
        expected: String,
        found: String,
    },

    #[error("{kit}: the signature does not match: the file was altered or truncated")]
    SignatureMismatch { kit: PathBuf },

    #[error("{kit}: {}", locked_hint(*.needed))]
    Locked { kit: PathBuf, needed: Encryption },

    #[error("{kit}: wrong passphrase")]
    WrongPassphrase { kit: PathBuf },

    #[error(
        "{kit}: no identity in {identities} matches the kit's recipients (it was encrypted to other keys)"
    )]
    NoMatchingIdentity { kit: PathBuf, identities: PathBuf },

    #[error("{kit}: cannot use the age identity file {path}: {reason}")]
    IdentityFile {
        kit: PathBuf,
        path: PathBuf,
        reason: String,
    },

    #[error("{kit}: cannot decrypt the payload: {reason}")]
    Decrypt { kit: PathBuf, reason: String },

    #[error("{kit}: corrupted payload: {reason}")]
    CorruptedPayload { kit: PathBuf, reason: String },

    #[error("{kit}: refused entry {entry:?}: {reason}")]
    HostileEntry {
        kit: PathBuf,
        entry: String,
        reason: String,
    },

    #[error("{kit}: payload file {path:?} is listed in {MANIFEST_ENTRY} but missing from the kit")]
    MissingFile { kit: PathBuf, path: String },

    #[error("{kit}: payload file {path:?} is in the kit but not listed in {MANIFEST_ENTRY}")]
    UnexpectedFile { kit: PathBuf, path: String },

    #[error(
        "{kit}: payload file {path:?} was altered: sha256 {found} ({found_size} bytes), {MANIFEST_ENTRY} says {expected} ({expected_size} bytes)"
    )]
    AlteredFile {
        kit: PathBuf,
        path: String,
        expected: String,
        expected_size: u64,
        found: String,
        found_size: u64,
    },

    #[error("{kit}: payload file {path:?} has mode {found:o}, {MANIFEST_ENTRY} says {expected:o}")]
    ModeMismatch {
        kit: PathBuf,
        path: String,
        expected: u32,
        found: u32,
    },

    #[error("{kit}: cannot pack {path}: {reason}")]
    Staging {
        kit: PathBuf,
        path: PathBuf,
        reason: String,
    },

    #[error("{kit}: {dest} must be an existing empty directory to extract into")]
    DestNotEmpty { kit: PathBuf, dest: PathBuf },

    #[error("{origin}: {reason}")]
    BadRecipient { origin: String, reason: String },

    #[error("{kit}: {path}: {source}")]
    Io {
        kit: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl KitError {
    /// For `map_err`: an I/O error on `path` while working on `kit`.
    fn io(kit: &Path, path: &Path) -> impl FnOnce(io::Error) -> KitError + use<> {
        let (kit, path) = (kit.to_owned(), path.to_owned());
        move |source| KitError::Io { kit, path, source }
    }
}

fn locked_hint(needed: Encryption) -> &'static str {
    match needed {
        Encryption::AgePassphrase => {
            "the payload is encrypted with a passphrase: give --passphrase-file FILE"
        }
        // `None` never locks a kit; the recipients wording is the safe default.
        Encryption::AgeRecipients | Encryption::None => {
            "the payload is encrypted to age recipients: give --identity FILE (an age identity file holding one of their keys)"
        }
    }
}

/// Reads every recipient of a recipients argument: one `age1…` string, or a file with one per
/// line (blank lines and `#` comments ignored), as `age -R` takes.
pub fn parse_recipients(arg: &str) -> Result<Vec<String>, KitError> {
    let arg = arg.trim();
    if arg.starts_with("age1") && !std::path::Path::new(arg).exists() {
        check_recipient(arg, || "recipient argument".to_owned())?;
        return Ok(vec![arg.to_owned()]);
    }
    let text = std::fs::read_to_string(arg).map_err(|e| KitError::BadRecipient {
        origin: format!("recipients file {arg}"),
        reason: format!("{e} (expected an age1… recipient or a file of them)"),
    })?;
    let mut recipients = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        check_recipient(line, || format!("{arg} line {}", number + 1))?;
        recipients.push(line.to_owned());
    }
    if recipients.is_empty() {
        return Err(KitError::BadRecipient {
            origin: format!("recipients file {arg}"),
            reason: "no recipient in it".into(),
        });
    }
    Ok(recipients)
}

fn check_recipient(
    text: &str,
    origin: impl FnOnce() -> String,
) -> Result<age::x25519::Recipient, KitError> {
    text.parse::<age::x25519::Recipient>()
        .map_err(|reason| KitError::BadRecipient {
            origin: origin(),
            reason: format!("{text:?} is not an age X25519 recipient (age1…): {reason}"),
        })
}

/// Human text for `ilha inspect KIT`.
pub fn render_inspect(m: &KitManifest) -> String {
    use ilha_format::inspect::human_bytes;
    use std::fmt::Write as _;

    let mut s = String::new();
    let etcd = &m.etcd;
    let drill = &etcd.drill;
    let total: u64 = m.files.iter().map(|f| f.size).sum();
    let members: Vec<String> = etcd
        .initial_cluster
        .iter()
        .map(|(name, url)| format!("{name}={url}"))
        .collect();
    let encryption = match m.encryption {
        // The kit holds the cluster's private keys: say so where the operator looks.
        Encryption::None => {
            "none (WARNING: the cluster's private keys are readable by anyone holding this file)"
                .to_owned()
        }
        other => other.to_string(),
    };
    // Writing to a String cannot fail.
    let _ = writeln!(
        s,
        "Restore kit of cluster {:?} ({})",
        m.cluster_name, m.format
    );
    let _ = writeln!(
        s,
        "  created:       {}",
        crate::clock::utc_time(m.created_at)
    );
    let _ = writeln!(s, "  ilha version:  {}", m.ilha_version);
    let _ = writeln!(s, "  cluster CA:    sha256 {}", m.cluster_ca_sha256);
    let _ = writeln!(s, "  encryption:    {encryption}");
    let _ = writeln!(
        s,
        "etcd snapshot:   {} (from {})",
        etcd.snapshot, etcd.member
    );
    let _ = writeln!(
        s,
        "  revision {}, {} keys, {}, hash {}",
        etcd.status.revision,
        etcd.status.total_keys,
        human_bytes(etcd.status.total_size),
        etcd.status.hash
    );
    let _ = writeln!(s, "  sha256:        {}", etcd.sha256);
    let _ = writeln!(s, "  members:       {}", members.join(", "));
    let _ = writeln!(
        s,
        "  drill:         {}: restored {} keys at revision {}, live cluster {} keys, {:.1} s{}",
        if drill.passed { "passed" } else { "FAILED" },
        drill.restored_keys,
        drill.revision,
        drill.live_keys,
        drill.seconds,
        if drill.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", drill.detail)
        }
    );
    let _ = writeln!(s, "masters:         {}", m.masters.join(", "));
    let _ = writeln!(
        s,
        "objects:         {}",
        m.objects.iter().map(|o| o.count).sum::<usize>()
    );
    for o in &m.objects {
        let _ = writeln!(s, "  {:<30} {:>7}", o.resource, o.count);
    }
    let _ = writeln!(
        s,
        "payload:         {} files, {}",
        m.files.len(),
        human_bytes(total)
    );
    s
}

/// The trusted comment of `KIT.minisig`; a cluster name is one DNS label, but a line break would
/// break the `.minisig` layout, so control characters are replaced.
fn trusted_comment(m: &KitManifest) -> String {
    let cluster: String = m
        .cluster_name
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    format!("ilha-kit:{cluster}:{}", m.created_at)
}

/// `KIT.minisig`, as for bundles.
fn sig_path(kit: &std::path::Path) -> PathBuf {
    let mut s = kit.as_os_str().to_owned();
    s.push(ilha_format::SIG_SUFFIX);
    PathBuf::from(s)
}

/// minisign's BLAKE2b prehash of every byte passing through, in either direction.
struct Prehashing<T> {
    inner: T,
    prehash: ilha_format::sign::Prehasher,
}

impl<T> Prehashing<T> {
    fn new(inner: T) -> Self {
        Prehashing {
            inner,
            prehash: ilha_format::sign::Prehasher::new(),
        }
    }
}

impl<W: io::Write> io::Write for Prehashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.prehash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<R: io::Read> io::Read for Prehashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.prehash.update(&buf[..n]);
        Ok(n)
    }
}
