//! Reading a kit: the manifest alone (no key), the signature, and the full verified extraction.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use ilha_format::digest::Sha256Hasher;
use ilha_format::sign::Prehasher;
use ilha_format::{PublicKey, Signature};
use serde::Deserialize;
use tar::EntryType;

use super::{
    ENCRYPTED_PAYLOAD_ENTRY, Encryption, KIT_FORMAT, KitError, KitFile, KitManifest,
    MANIFEST_ENTRY, MAX_MANIFEST_BYTES, PAYLOAD_PREFIX, Prehashing, Unlock, sig_path,
};

/// `kit.json` only, without any verification: what `ilha inspect KIT` shows.
pub fn read_manifest(kit: &Path) -> Result<KitManifest, KitError> {
    let file = File::open(kit).map_err(|source| KitError::Io {
        kit: kit.to_owned(),
        path: kit.to_owned(),
        source,
    })?;
    let mut archive = tar::Archive::new(decoder(kit, file)?);
    let mut entries = archive.entries().map_err(|e| not_a_kit(kit, &e))?;
    read_manifest_entry(kit, &mut entries)
}

/// Checks `KIT.minisig` over every byte of the kit with `pubkey`.
pub fn verify_signature(kit: &Path, pubkey: &PublicKey) -> Result<(), KitError> {
    let signature = load_signature(kit, pubkey)?;
    let file = File::open(kit).map_err(|source| KitError::Io {
        kit: kit.to_owned(),
        path: kit.to_owned(),
        source,
    })?;
    let prehash = Prehasher::of_reader(file).map_err(|source| KitError::Io {
        kit: kit.to_owned(),
        path: kit.to_owned(),
        source,
    })?;
    check_prehash(kit, pubkey, &signature, &prehash)
}

/// Verifies, decrypts when needed and extracts the payload into `dest` (an existing empty
/// directory; `payload/a/b` lands at `dest/a/b`), then checks the files against the manifest.
/// On error, `dest` may hold part of the payload: the caller discards it.
pub fn open_kit(
    kit: &Path,
    pubkey: &PublicKey,
    unlock: &Unlock,
    dest: &Path,
) -> Result<KitManifest, KitError> {
    let io_err = |path: &Path| KitError::io(kit, path);
    let empty = fs::read_dir(dest).map_err(io_err(dest))?.next().is_none();
    if !empty {
        return Err(KitError::DestNotEmpty {
            kit: kit.to_owned(),
            dest: dest.to_owned(),
        });
    }
    let signature = load_signature(kit, pubkey)?;
    let mut file = File::open(kit).map_err(io_err(kit))?;
    let prehash = Prehasher::of_reader(&mut file).map_err(io_err(kit))?;
    check_prehash(kit, pubkey, &signature, &prehash)?;

    // The same open file is read again and prehashed again: what is extracted is exactly what
    // was verified, even if the file on the media is rewritten in between.
    file.seek(SeekFrom::Start(0)).map_err(io_err(kit))?;
    let mut reader = Prehashing::new(file);
    let mut extractor = Extractor::new(kit, dest);
    let manifest = {
        let mut archive = tar::Archive::new(decoder(kit, &mut reader)?);
        let mut entries = archive.entries().map_err(|e| corrupted(kit, &e))?;
        let manifest = read_manifest_entry(kit, &mut entries)?;
        extractor.expect(&manifest);
        if manifest.encryption == Encryption::None {
            for entry in entries {
                extractor.entry(entry.map_err(|e| corrupted(kit, &e))?)?;
            }
        } else {
            let entry = match entries.next() {
                Some(entry) => entry.map_err(|e| corrupted(kit, &e))?,
                None => {
                    return Err(KitError::CorruptedPayload {
                        kit: kit.to_owned(),
                        reason: format!("no {ENCRYPTED_PAYLOAD_ENTRY} entry"),
                    });
                }
            };
            let name = entry_name(&entry);
            if name != ENCRYPTED_PAYLOAD_ENTRY || entry.header().entry_type() != EntryType::Regular
            {
                return Err(KitError::HostileEntry {
                    kit: kit.to_owned(),
                    entry: name,
                    reason: format!(
                        "an encrypted kit holds only {MANIFEST_ENTRY} and a regular file {ENCRYPTED_PAYLOAD_ENTRY}"
                    ),
                });
            }
            extract_encrypted(kit, manifest.encryption, unlock, entry, &mut extractor)?;
            if let Some(extra) = entries.next() {
                let extra = extra.map_err(|e| corrupted(kit, &e))?;
                return Err(KitError::HostileEntry {
                    kit: kit.to_owned(),
                    entry: entry_name(&extra),
                    reason: format!("nothing may follow {ENCRYPTED_PAYLOAD_ENTRY}"),
                });
            }
        }
        manifest
    };
    extractor.finish()?;
    // Bytes past the tar trailer (zstd frame end, padding) are part of what was signed.
    io::copy(&mut reader, &mut io::sink()).map_err(io_err(kit))?;
    check_prehash(kit, pubkey, &signature, &reader.prehash.finish())?;
    Ok(manifest)
}

fn decoder<R: Read>(
    kit: &Path,
    r: R,
) -> Result<zstd::Decoder<'static, io::BufReader<R>>, KitError> {
    zstd::Decoder::new(r).map_err(|source| KitError::Io {
        kit: kit.to_owned(),
        path: kit.to_owned(),
        source,
    })
}

fn not_a_kit(kit: &Path, e: &io::Error) -> KitError {
    KitError::NotAKit {
        kit: kit.to_owned(),
        reason: format!("not a zstd-compressed tar archive ({e})"),
    }
}

fn corrupted(kit: &Path, e: &dyn std::fmt::Display) -> KitError {
    KitError::CorruptedPayload {
        kit: kit.to_owned(),
        reason: e.to_string(),
    }
}

fn entry_name<R: Read>(entry: &tar::Entry<'_, R>) -> String {
    String::from_utf8_lossy(&entry.path_bytes()).into_owned()
}

fn read_manifest_entry<R: Read>(
    kit: &Path,
    entries: &mut tar::Entries<'_, R>,
) -> Result<KitManifest, KitError> {
    let mut entry = match entries.next() {
        None => {
            return Err(KitError::NotAKit {
                kit: kit.to_owned(),
                reason: "an empty archive".into(),
            });
        }
        Some(Err(e)) => return Err(not_a_kit(kit, &e)),
        Some(Ok(entry)) => entry,
    };
    let name = entry_name(&entry);
    if name != MANIFEST_ENTRY {
        return Err(KitError::NotAKit {
            kit: kit.to_owned(),
            reason: format!(
                "its first entry is {name:?}, a restore kit starts with {MANIFEST_ENTRY}"
            ),
        });
    }
    if entry.header().entry_type() != EntryType::Regular || entry.size() > MAX_MANIFEST_BYTES {
        return Err(KitError::BadManifest {
            kit: kit.to_owned(),
            reason: format!(
                "not a regular file of at most {MAX_MANIFEST_BYTES} bytes ({} bytes)",
                entry.size()
            ),
        });
    }
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| not_a_kit(kit, &e))?;
    parse_manifest(kit, &bytes)
}

fn parse_manifest(kit: &Path, bytes: &[u8]) -> Result<KitManifest, KitError> {
    // The format is read on its own first: another version's manifest may not fit this struct,
    // and "unknown format X" is the useful message then.
    #[derive(Deserialize)]
    struct FormatOnly {
        format: Option<String>,
    }
    let bad = |e: serde_json::Error| KitError::BadManifest {
        kit: kit.to_owned(),
        reason: e.to_string(),
    };
    match serde_json::from_slice::<FormatOnly>(bytes)
        .map_err(bad)?
        .format
    {
        Some(found) if found == KIT_FORMAT => {}
        Some(found) => {
            return Err(KitError::UnknownFormat {
                kit: kit.to_owned(),
                found,
            });
        }
        None => {
            return Err(KitError::BadManifest {
                kit: kit.to_owned(),
                reason: "no \"format\" field".into(),
            });
        }
    }
    serde_json::from_slice(bytes).map_err(bad)
}

/// Reads `KIT.minisig` and checks it claims `pubkey` (cheap: before reading the kit).
fn load_signature(kit: &Path, pubkey: &PublicKey) -> Result<Signature, KitError> {
    let sig = sig_path(kit);
    match sig.try_exists() {
        Ok(true) => {}
        Ok(false) => {
            return Err(KitError::MissingSignature {
                kit: kit.to_owned(),
                sig,
            });
        }
        Err(source) => {
            return Err(KitError::Io {
                kit: kit.to_owned(),
                path: sig,
                source,
            });
        }
    }
    let signature = Signature::from_file(&sig).map_err(|e| match e {
        ilha_format::Error::Io { path, source } => KitError::Io {
            kit: kit.to_owned(),
            path,
            source,
        },
        other => KitError::BadSignatureFile {
            kit: kit.to_owned(),
            sig: sig.clone(),
            reason: other.to_string(),
        },
    })?;
    if pubkey.check_key_id(&signature, "").is_err() {
        return Err(KitError::OtherKey {
            kit: kit.to_owned(),
            expected: pubkey.key_id(),
            found: signature.key_id(),
        });
    }
    Ok(signature)
}

fn check_prehash(
    kit: &Path,
    pubkey: &PublicKey,
    signature: &Signature,
    prehash: &[u8; 64],
) -> Result<(), KitError> {
    pubkey
        .verify_prehashed(prehash, signature, &kit.display().to_string())
        .map_err(|e| match e {
            ilha_format::Error::WrongKey {
                expected, found, ..
            } => KitError::OtherKey {
                kit: kit.to_owned(),
                expected,
                found,
            },
            _ => KitError::SignatureMismatch {
                kit: kit.to_owned(),
            },
        })
}

/// Decrypts `payload.tar.zst.age` as it is read and extracts its inner `tar.zst`.
fn extract_encrypted<R: Read>(
    kit: &Path,
    encryption: Encryption,
    unlock: &Unlock,
    mut entry: tar::Entry<'_, R>,
    extractor: &mut Extractor<'_>,
) -> Result<(), KitError> {
    let locked = || KitError::Locked {
        kit: kit.to_owned(),
        needed: encryption,
    };
    let identities: Vec<Box<dyn age::Identity>> = match (encryption, unlock) {
        (Encryption::AgePassphrase, Unlock::Passphrase(passphrase)) => vec![Box::new(
            age::scrypt::Identity::new(SecretString::from(passphrase.clone())),
        )],
        (Encryption::AgeRecipients, Unlock::Identities(path)) => load_identities(kit, path)?,
        _ => return Err(locked()),
    };
    let decrypt_err = |e: age::DecryptError| match (e, unlock) {
        (age::DecryptError::DecryptionFailed, Unlock::Passphrase(_)) => KitError::WrongPassphrase {
            kit: kit.to_owned(),
        },
        (age::DecryptError::NoMatchingKeys, Unlock::Identities(path)) => {
            KitError::NoMatchingIdentity {
                kit: kit.to_owned(),
                identities: path.clone(),
            }
        }
        (other, _) => KitError::Decrypt {
            kit: kit.to_owned(),
            reason: other.to_string(),
        },
    };
    let decryptor = age::Decryptor::new(&mut entry).map_err(decrypt_err)?;
    let mut plain = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(decrypt_err)?;
    {
        let mut inner = tar::Archive::new(decoder(kit, &mut plain)?);
        for inner_entry in inner.entries().map_err(|e| corrupted(kit, &e))? {
            extractor.entry(inner_entry.map_err(|e| corrupted(kit, &e))?)?;
        }
    }
    // To the end of the age stream: its last chunk is authenticated as last, so a cut is caught.
    io::copy(&mut plain, &mut io::sink()).map_err(|e| corrupted(kit, &e))?;
    Ok(())
}

fn load_identities(kit: &Path, path: &Path) -> Result<Vec<Box<dyn age::Identity>>, KitError> {
    let bad = |reason: String| KitError::IdentityFile {
        kit: kit.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(|e| bad(e.to_string()))?;
    let identities = age::IdentityFile::from_buffer(io::BufReader::new(file))
        .map_err(|e| bad(e.to_string()))?
        .into_identities()
        .map_err(|e| bad(e.to_string()))?;
    if identities.is_empty() {
        return Err(bad("it holds no identity (AGE-SECRET-KEY-1… lines)".into()));
    }
    Ok(identities
        .into_iter()
        .map(|i| i as Box<dyn age::Identity>)
        .collect())
}

/// Writes payload entries under `dest`, refusing anything that is not a plain file or directory
/// under `payload/`, and checks each file against the manifest. Links are never created and
/// `dest` starts empty, so no path can lead outside it.
struct Extractor<'a> {
    kit: &'a Path,
    dest: &'a Path,
    expected: HashMap<String, KitFile>,
    seen: HashSet<String>,
    /// Applied last: a read-only directory must still receive its files.
    dir_modes: Vec<(PathBuf, u32)>,
}

impl<'a> Extractor<'a> {
    fn new(kit: &'a Path, dest: &'a Path) -> Self {
        Extractor {
            kit,
            dest,
            expected: HashMap::new(),
            seen: HashSet::new(),
            dir_modes: Vec::new(),
        }
    }

    fn expect(&mut self, manifest: &KitManifest) {
        self.expected = manifest
            .files
            .iter()
            .map(|f| (f.path.clone(), f.clone()))
            .collect();
    }

    fn io_err(&self, path: &Path) -> impl FnOnce(io::Error) -> KitError + use<> {
        KitError::io(self.kit, path)
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), KitError> {
        let name = entry_name(&entry);
        let hostile = |reason: &str| KitError::HostileEntry {
            kit: self.kit.to_owned(),
            entry: name.clone(),
            reason: reason.to_owned(),
        };
        let rel = payload_relative(&entry.path_bytes()).map_err(hostile)?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().map_err(|e| corrupted(self.kit, &e))? & 0o777;
        match kind {
            EntryType::Directory => {
                if let Some(rel) = rel {
                    let path = self.dest.join(&rel);
                    fs::create_dir_all(&path).map_err(self.io_err(&path))?;
                    self.dir_modes.push((path, mode));
                }
                Ok(())
            }
            EntryType::Regular | EntryType::Continuous => {
                let rel = rel.ok_or_else(|| hostile("the payload root must be a directory"))?;
                let Some(expected) = self.expected.get(&rel) else {
                    return Err(KitError::UnexpectedFile {
                        kit: self.kit.to_owned(),
                        path: rel,
                    });
                };
                if !self.seen.insert(rel.clone()) {
                    return Err(hostile("appears twice"));
                }
                if mode != expected.mode {
                    return Err(KitError::ModeMismatch {
                        kit: self.kit.to_owned(),
                        path: rel,
                        expected: expected.mode,
                        found: mode,
                    });
                }
                let expected = expected.clone();
                self.write_file(&rel, &expected, &mut entry)
            }
            EntryType::Symlink => Err(hostile("symbolic link")),
            EntryType::Link => Err(hostile("hard link")),
            EntryType::Char | EntryType::Block => Err(hostile("device file")),
            EntryType::Fifo => Err(hostile("fifo")),
            other => Err(hostile(&format!("unsupported tar entry type {other:?}"))),
        }
    }

    fn write_file(
        &self,
        rel: &str,
        expected: &KitFile,
        entry: &mut impl Read,
    ) -> Result<(), KitError> {
        let path = self.dest.join(rel);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(self.io_err(parent))?;
        }
        // Owner-only until complete and checked; the final mode is set last.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(self.io_err(&path))?;
        let mut hasher = Sha256Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            // Read errors are the kit's (corrupted stream), write errors are dest's.
            let n = entry
                .read(&mut buf)
                .map_err(|e| KitError::CorruptedPayload {
                    kit: self.kit.to_owned(),
                    reason: format!("{rel}: {e}"),
                })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n]).map_err(self.io_err(&path))?;
        }
        let (sha256, size) = hasher.finish_with_size();
        let sha256 = sha256.to_string();
        if sha256 != expected.sha256 || size != expected.size {
            return Err(KitError::AlteredFile {
                kit: self.kit.to_owned(),
                path: rel.to_owned(),
                expected: expected.sha256.clone(),
                expected_size: expected.size,
                found: sha256,
                found_size: size,
            });
        }
        file.sync_all().map_err(self.io_err(&path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(expected.mode))
            .map_err(self.io_err(&path))
    }

    fn finish(mut self) -> Result<(), KitError> {
        let mut missing: Vec<&String> = self
            .expected
            .keys()
            .filter(|p| !self.seen.contains(*p))
            .collect();
        missing.sort();
        if let Some(path) = missing.first() {
            return Err(KitError::MissingFile {
                kit: self.kit.to_owned(),
                path: (*path).clone(),
            });
        }
        // Deepest first, so a directory made read-only does not block its children's chmod.
        self.dir_modes
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (path, mode) in &self.dir_modes {
            fs::set_permissions(path, fs::Permissions::from_mode(*mode))
                .map_err(self.io_err(path))?;
        }
        Ok(())
    }
}

/// The payload-relative path of an entry name (`None` for the `payload/` directory itself), or
/// why it is refused.
fn payload_relative(raw: &[u8]) -> Result<Option<String>, &'static str> {
    let name = std::str::from_utf8(raw).map_err(|_| "path is not UTF-8")?;
    if name.starts_with('/') {
        return Err("absolute path");
    }
    if name.split('/').any(|c| c == "..") {
        return Err("path contains `..`");
    }
    let Some(rest) = name.strip_prefix(PAYLOAD_PREFIX) else {
        return Err("not under payload/");
    };
    // Directory entries may end with one slash.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(None);
    }
    let plain = rest
        .split('/')
        .all(|c| !c.is_empty() && c != "." && !c.contains(['\0', '\\']));
    if !plain {
        return Err("not a plain relative path (empty or `.` component, NUL or backslash)");
    }
    Ok(Some(rest.to_owned()))
}
