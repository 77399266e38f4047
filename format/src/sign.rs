//! Minisign keys and signatures.
//!
//! Keys are read and written in minisign's own formats (via the `minisign` crate, which also does
//! the scrypt key encryption). Signatures are made here with deterministic Ed25519 (RFC 8032) over
//! minisign's BLAKE2b-512 prehash, because `minisign::sign` mixes random noise into every signature
//! and the bundle must be byte-for-byte reproducible. The output is the stock `.minisig` format
//! (algorithm `ED`, trusted comment, global signature), which `minisign -V` accepts.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{Error, Result};

const KEY_ALG: &[u8; 2] = b"Ed";
const PREHASHED_SIG_ALG: &[u8; 2] = b"ED";
const KEY_ID_LEN: usize = 8;
const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
const TRUSTED_PREFIX: &str = "trusted comment: ";
/// File names written by [`generate_keypair`].
pub const SECRET_KEY_FILE: &str = "ilha.key";
pub const PUBLIC_KEY_FILE: &str = "ilha.pub";

fn key_id_hex(id: &[u8; KEY_ID_LEN]) -> String {
    // minisign prints the key id as a little-endian u64 in uppercase hex.
    format!("{:016X}", u64::from_le_bytes(*id))
}

/// A minisign public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    key_id: [u8; KEY_ID_LEN],
    key: ed25519_compact::PublicKey,
}

/// A decrypted minisign secret key.
#[derive(Clone)]
pub struct SecretKey {
    key_id: [u8; KEY_ID_LEN],
    key: ed25519_compact::SecretKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey({})", key_id_hex(&self.key_id))
    }
}

/// Both halves, as made by [`KeyPair::generate`].
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub secret: SecretKey,
    pub public: PublicKey,
}

/// A parsed `.minisig`: prehashed Ed25519 signature plus signed trusted comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub untrusted_comment: String,
    pub trusted_comment: String,
    key_id: [u8; KEY_ID_LEN],
    signature: [u8; 64],
    global_signature: [u8; 64],
}

/// minisign's prehash: unkeyed BLAKE2b-512 of the data.
#[derive(Clone)]
pub struct Prehasher(blake2b_simd::State);

impl Default for Prehasher {
    fn default() -> Self {
        Prehasher(blake2b_simd::Params::new().hash_length(64).to_state())
    }
}

impl Prehasher {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
    pub fn finish(&self) -> [u8; 64] {
        *self.0.finalize().as_array()
    }
    pub fn of_reader(mut reader: impl Read) -> io::Result<[u8; 64]> {
        let mut h = Prehasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf)?;
            if n == 0 {
                return Ok(h.finish());
            }
            h.update(&buf[..n]);
        }
    }
}

impl KeyPair {
    /// A fresh random key pair, in memory.
    pub fn generate() -> Result<KeyPair> {
        let kp = minisign::KeyPair::generate_unencrypted_keypair().map_err(|e| Error::Pack {
            reason: format!("generating a key pair: {e}"),
        })?;
        let secret = SecretKey::from_minisign(&kp.sk, Path::new("<generated>"))?;
        let public = secret.public_key();
        Ok(KeyPair { secret, public })
    }
}

impl SecretKey {
    fn from_minisign(sk: &minisign::SecretKey, path: &Path) -> Result<SecretKey> {
        // Layout (minisign's): sig_alg[2] kdf_alg[2] chk_alg[2] salt[32] ops[8] mem[8] keynum[8] sk[64] chk[32].
        let bytes = sk.to_bytes();
        let bad = |reason: &str| Error::KeyFormat {
            path: path.to_owned(),
            what: "secret key",
            reason: reason.into(),
        };
        if bytes.len() != 158 || &bytes[0..2] != KEY_ALG {
            return Err(bad("not an Ed25519 minisign key"));
        }
        let key_id: [u8; KEY_ID_LEN] = bytes[54..62].try_into().expect("8 bytes");
        let key = ed25519_compact::SecretKey::from_slice(&bytes[62..126])
            .map_err(|e| bad(&e.to_string()))?;
        Ok(SecretKey { key_id, key })
    }

    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.key.public_key(),
        }
    }

    /// Key id as minisign prints it (16 uppercase hex digits).
    pub fn key_id(&self) -> String {
        key_id_hex(&self.key_id)
    }

    /// Signs a BLAKE2b-512 prehash. Deterministic: same key, data and comment give the same bytes.
    pub fn sign_prehashed(&self, prehash: &[u8; 64], trusted_comment: &str) -> Signature {
        let signature = self.key.sign(prehash, None);
        let mut global = Vec::with_capacity(64 + trusted_comment.len());
        global.extend_from_slice(signature.as_ref());
        global.extend_from_slice(trusted_comment.as_bytes());
        let global_signature = self.key.sign(&global, None);
        Signature {
            untrusted_comment: "signature from ilha secret key".into(),
            trusted_comment: trusted_comment.to_owned(),
            key_id: self.key_id,
            signature: *signature,
            global_signature: *global_signature,
        }
    }

    pub fn sign_bytes(&self, data: &[u8], trusted_comment: &str) -> Signature {
        let mut h = Prehasher::new();
        h.update(data);
        self.sign_prehashed(&h.finish(), trusted_comment)
    }
}

impl PublicKey {
    /// Key id as minisign prints it (16 uppercase hex digits).
    pub fn key_id(&self) -> String {
        key_id_hex(&self.key_id)
    }

    /// Parses the text of a minisign public key file (comment line optional) or the bare base64 line.
    pub fn parse(text: &str, path: &Path) -> Result<PublicKey> {
        let bad = |reason: String| Error::KeyFormat {
            path: path.to_owned(),
            what: "public key",
            reason,
        };
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with(UNTRUSTED_PREFIX))
            .ok_or_else(|| bad("no key line".into()))?;
        let bytes = B64.decode(line).map_err(|e| bad(format!("base64: {e}")))?;
        if bytes.len() != 42 || &bytes[0..2] != KEY_ALG {
            return Err(bad(format!(
                "{} bytes, expected 42 starting with \"Ed\"",
                bytes.len()
            )));
        }
        let key_id = bytes[2..10].try_into().expect("8 bytes");
        let key = ed25519_compact::PublicKey::from_slice(&bytes[10..42])
            .map_err(|e| bad(e.to_string()))?;
        Ok(PublicKey { key_id, key })
    }

    /// The public key file text, as `minisign -G` writes it.
    pub fn to_file_text(&self) -> String {
        let mut bytes = Vec::with_capacity(42);
        bytes.extend_from_slice(KEY_ALG);
        bytes.extend_from_slice(&self.key_id);
        bytes.extend_from_slice(self.key.as_ref());
        format!(
            "{UNTRUSTED_PREFIX}minisign public key {}\n{}\n",
            self.key_id(),
            B64.encode(bytes)
        )
    }

    /// Fails with [`Error::WrongKey`] unless `sig` claims to be made by this key. Cheap: no data needed.
    pub fn check_key_id(&self, sig: &Signature, what: &str) -> Result<()> {
        if sig.key_id != self.key_id {
            return Err(Error::WrongKey {
                what: what.to_owned(),
                expected: self.key_id(),
                found: key_id_hex(&sig.key_id),
            });
        }
        Ok(())
    }

    /// Full check of a signature given the data's BLAKE2b-512 prehash, including the trusted comment.
    pub fn verify_prehashed(&self, prehash: &[u8; 64], sig: &Signature, what: &str) -> Result<()> {
        self.check_key_id(sig, what)?;
        let bad = |reason| Error::BadSignature {
            what: what.to_owned(),
            reason,
        };
        let signature = ed25519_compact::Signature::new(sig.signature);
        self.key
            .verify(prehash, &signature)
            .map_err(|_| bad("data signature does not match"))?;
        let mut global = Vec::with_capacity(64 + sig.trusted_comment.len());
        global.extend_from_slice(&sig.signature);
        global.extend_from_slice(sig.trusted_comment.as_bytes());
        let global_signature = ed25519_compact::Signature::new(sig.global_signature);
        self.key
            .verify(&global, &global_signature)
            .map_err(|_| bad("trusted comment signature does not match"))?;
        Ok(())
    }

    pub fn verify_bytes(&self, data: &[u8], sig: &Signature, what: &str) -> Result<()> {
        let mut h = Prehasher::new();
        h.update(data);
        self.verify_prehashed(&h.finish(), sig, what)
    }
}

impl Signature {
    /// Parses `.minisig` text. `what` names the signature in errors.
    pub fn parse(text: &str, what: &str) -> Result<Signature> {
        let bad = |reason: String| Error::SignatureFormat {
            what: what.to_owned(),
            reason,
        };
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let mut next = |name: &str| {
            lines
                .next()
                .ok_or_else(|| bad(format!("missing {name} line")))
        };
        let untrusted = next("untrusted comment")?;
        let untrusted_comment = untrusted
            .strip_prefix(UNTRUSTED_PREFIX)
            .ok_or_else(|| bad("first line is not an untrusted comment".into()))?
            .to_owned();
        let sig_bytes = B64
            .decode(next("signature")?.trim())
            .map_err(|e| bad(format!("signature base64: {e}")))?;
        let trusted_comment = next("trusted comment")?
            .strip_prefix(TRUSTED_PREFIX)
            .ok_or_else(|| bad("third line is not a trusted comment".into()))?
            .to_owned();
        let global_bytes = B64
            .decode(next("global signature")?.trim())
            .map_err(|e| bad(format!("global signature base64: {e}")))?;
        if sig_bytes.len() != 74 {
            return Err(bad(format!(
                "signature is {} bytes, expected 74",
                sig_bytes.len()
            )));
        }
        if &sig_bytes[0..2] != PREHASHED_SIG_ALG {
            // Legacy non-prehashed ("Ed") signatures are refused, as `minisign -V` does by default.
            return Err(bad(format!(
                "algorithm {:?}, only prehashed \"ED\" is accepted",
                String::from_utf8_lossy(&sig_bytes[0..2])
            )));
        }
        if global_bytes.len() != 64 {
            return Err(bad(format!(
                "global signature is {} bytes, expected 64",
                global_bytes.len()
            )));
        }
        Ok(Signature {
            untrusted_comment,
            trusted_comment,
            key_id: sig_bytes[2..10].try_into().expect("8 bytes"),
            signature: sig_bytes[10..74].try_into().expect("64 bytes"),
            global_signature: global_bytes.try_into().expect("64 bytes"),
        })
    }

    pub fn from_file(path: &Path) -> Result<Signature> {
        let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Signature::parse(&text, &path.display().to_string())
    }

    /// Key id of the key that claims to have made this signature.
    pub fn key_id(&self) -> String {
        key_id_hex(&self.key_id)
    }

    /// The `.minisig` text, exactly as the stock tool lays it out.
    pub fn to_minisig_string(&self) -> String {
        let mut sig = Vec::with_capacity(74);
        sig.extend_from_slice(PREHASHED_SIG_ALG);
        sig.extend_from_slice(&self.key_id);
        sig.extend_from_slice(&self.signature);
        format!(
            "{UNTRUSTED_PREFIX}{}\n{}\n{TRUSTED_PREFIX}{}\n{}\n",
            self.untrusted_comment,
            B64.encode(sig),
            self.trusted_comment,
            B64.encode(self.global_signature)
        )
    }
}

/// Generates a key pair into `dir/ilha.key` and `dir/ilha.pub` (minisign formats; refuses to
/// overwrite). Without a password the secret key is stored unencrypted (the caller should warn);
/// with one, encrypted with scrypt as `minisign -G` does. Returns `(secret_key_path, public_key_path)`.
pub fn generate_keypair(dir: &Path, password: Option<&str>) -> Result<(PathBuf, PathBuf)> {
    let key_path = dir.join(SECRET_KEY_FILE);
    let pub_path = dir.join(PUBLIC_KEY_FILE);
    for p in [&key_path, &pub_path] {
        if p.exists() {
            return Err(Error::KeyExists { path: p.clone() });
        }
    }
    let generated = match password {
        None => minisign::KeyPair::generate_unencrypted_keypair(),
        Some(pw) => minisign::KeyPair::generate_encrypted_keypair(Some(pw.to_owned())),
    }
    .map_err(|e| Error::KeyFormat {
        path: key_path.clone(),
        what: "secret key",
        reason: format!("generating: {e}"),
    })?;
    let sk_text = generated
        .sk
        .to_box(Some("ilha secret key"))
        .map_err(|e| Error::KeyFormat {
            path: key_path.clone(),
            what: "secret key",
            reason: e.to_string(),
        })?
        .into_string();
    let pk_text = generated
        .pk
        .to_box()
        .map_err(|e| Error::KeyFormat {
            path: pub_path.clone(),
            what: "public key",
            reason: e.to_string(),
        })?
        .into_string();
    write_new_file(&key_path, sk_text.as_bytes(), 0o600)?;
    write_new_file(&pub_path, pk_text.as_bytes(), 0o644)?;
    Ok((key_path, pub_path))
}

fn write_new_file(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Loads a minisign secret key. `None` as password only opens an unencrypted key (never prompts);
/// an encrypted key then fails with [`Error::KeyEncrypted`].
pub fn load_secret_key(path: &Path, password: Option<&str>) -> Result<SecretKey> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let bad = |reason: String| Error::KeyFormat {
        path: path.to_owned(),
        what: "secret key",
        reason,
    };
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with(UNTRUSTED_PREFIX))
        .ok_or_else(|| bad("no key line".into()))?;
    let bytes = B64.decode(line).map_err(|e| bad(format!("base64: {e}")))?;
    if bytes.len() != 158 || &bytes[0..2] != KEY_ALG {
        return Err(bad(format!(
            "{} bytes, expected 158 starting with \"Ed\"",
            bytes.len()
        )));
    }
    if bytes[2..4] == [0, 0] {
        return unencrypted_secret_key(&bytes, path);
    }
    let Some(pw) = password else {
        return Err(Error::KeyEncrypted {
            path: path.to_owned(),
        });
    };
    let sk = minisign::SecretKey::from_box(
        minisign::SecretKeyBox::from_string(&text).map_err(|e| bad(e.to_string()))?,
        Some(pw.to_owned()),
    )
    .map_err(|e| match e.kind() {
        minisign::ErrorKind::Verify => Error::WrongPassword {
            path: path.to_owned(),
        },
        _ => bad(e.to_string()),
    })?;
    SecretKey::from_minisign(&sk, path)
}

/// Parsed here rather than by the `minisign` crate: `minisign -G -W` (0.11) leaves the checksum of
/// an unencrypted key all zeros, which that crate rejects. Integrity is then checked by deriving
/// the public half from the seed.
fn unencrypted_secret_key(bytes: &[u8], path: &Path) -> Result<SecretKey> {
    let bad = |reason: &str| Error::KeyFormat {
        path: path.to_owned(),
        what: "secret key",
        reason: reason.into(),
    };
    let key_id: [u8; KEY_ID_LEN] = bytes[54..62].try_into().expect("8 bytes");
    let raw = &bytes[62..126];
    let checksum = &bytes[126..158];
    if checksum.iter().any(|&b| b != 0) {
        let mut h = blake2b_simd::Params::new().hash_length(32).to_state();
        h.update(&bytes[0..2]).update(&key_id).update(raw);
        if h.finalize().as_bytes() != checksum {
            return Err(bad("checksum mismatch (corrupted key)"));
        }
    }
    let seed = ed25519_compact::Seed::from_slice(&raw[..32]).map_err(|e| bad(&e.to_string()))?;
    let derived = ed25519_compact::KeyPair::from_seed(seed);
    if derived.pk.as_ref() != &raw[32..64] {
        return Err(bad("public half does not match the seed (corrupted key)"));
    }
    Ok(SecretKey {
        key_id,
        key: derived.sk,
    })
}

pub fn load_public_key(path: &Path) -> Result<PublicKey> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    PublicKey::parse(&text, path)
}

/// Signs a whole file into `path.minisig` (trusted comment `file:<name>`). Returns the signature path.
pub fn sign_file(key: &SecretKey, path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    sign_file_with_comment(key, path, &format!("file:{name}"))
}

pub(crate) fn sig_path_for(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(crate::SIG_SUFFIX);
    PathBuf::from(s)
}

pub fn sign_file_with_comment(
    key: &SecretKey,
    path: &Path,
    trusted_comment: &str,
) -> Result<PathBuf> {
    let file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let prehash = Prehasher::of_reader(file).map_err(|e| Error::io(path, e))?;
    let sig = key.sign_prehashed(&prehash, trusted_comment);
    let sig_path = sig_path_for(path);
    write_replacing(&sig_path, sig.to_minisig_string().as_bytes())?;
    Ok(sig_path)
}

/// Writes via a temporary sibling and rename, so a reader never sees half a file.
pub(crate) fn write_replacing(path: &Path, data: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = PathBuf::from(tmp);
    let res = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    res.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_round_trip_and_determinism() {
        let kp = KeyPair::generate().unwrap();
        let s1 = kp.secret.sign_bytes(b"data", "ilha bundle lab 1");
        let s2 = kp.secret.sign_bytes(b"data", "ilha bundle lab 1");
        assert_eq!(s1.to_minisig_string(), s2.to_minisig_string());
        let parsed = Signature::parse(&s1.to_minisig_string(), "t").unwrap();
        assert_eq!(parsed, s1);
        kp.public.verify_bytes(b"data", &parsed, "t").unwrap();
        let err = kp.public.verify_bytes(b"dataX", &parsed, "t").unwrap_err();
        assert!(matches!(err, Error::BadSignature { .. }), "{err}");
    }

    #[test]
    fn tampered_trusted_comment_is_caught() {
        let kp = KeyPair::generate().unwrap();
        let mut sig = kp.secret.sign_bytes(b"data", "ilha bundle lab 1");
        sig.trusted_comment = "ilha bundle lab 2".into();
        let err = kp.public.verify_bytes(b"data", &sig, "t").unwrap_err();
        assert!(err.to_string().contains("trusted comment"), "{err}");
    }

    #[test]
    fn wrong_key_is_named() {
        let a = KeyPair::generate().unwrap();
        let b = KeyPair::generate().unwrap();
        let sig = a.secret.sign_bytes(b"data", "c");
        let err = b
            .public
            .verify_bytes(b"data", &sig, "x.minisig")
            .unwrap_err();
        match err {
            Error::WrongKey {
                expected, found, ..
            } => {
                assert_eq!(expected, b.public.key_id());
                assert_eq!(found, a.public.key_id());
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn unencrypted_keypair_files_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = generate_keypair(dir.path(), None).unwrap();
        let sk = load_secret_key(&key, None).unwrap();
        let pk = load_public_key(&public).unwrap();
        assert_eq!(sk.public_key(), pk);
        assert!(matches!(
            generate_keypair(dir.path(), None),
            Err(Error::KeyExists { .. })
        ));
    }

    #[test]
    fn encrypted_keypair_files_load_back_with_password_only() {
        let dir = tempfile::tempdir().unwrap();
        let (key, public) = generate_keypair(dir.path(), Some("s3cret")).unwrap();
        let pk = load_public_key(&public).unwrap();
        assert!(matches!(
            load_secret_key(&key, None),
            Err(Error::KeyEncrypted { .. })
        ));
        assert!(matches!(
            load_secret_key(&key, Some("wrong")),
            Err(Error::WrongPassword { .. })
        ));
        let sk = load_secret_key(&key, Some("s3cret")).unwrap();
        assert_eq!(sk.public_key(), pk);
    }
}
