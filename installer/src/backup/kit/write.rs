//! Writing a kit: scan and hash the staging directory, then stream it into the kit (through age
//! into a temporary file first when encrypted, since a tar header needs the entry's size).

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use age::secrecy::SecretString;
use ilha_format::SecretKey;
use ilha_format::digest::{Sha256Hasher, sha256_file};
use tar::{Builder, EntryType, Header};

use super::{
    ENCRYPTED_PAYLOAD_ENTRY, Encryption, KIT_FORMAT, KitError, KitFile, KitManifest,
    MANIFEST_ENTRY, PAYLOAD_PREFIX, Prehashing, Protection, check_recipient, sig_path,
    trusted_comment,
};

const ZSTD_LEVEL: i32 = 3;

/// One entry of the staging directory, in archive order (a directory before its contents).
enum Staged {
    Dir { rel: String, mode: u32, mtime: u64 },
    File { file: KitFile, mtime: u64 },
}

/// Writes `out` (a temporary file in the same directory, mode 0600, renamed when complete) and
/// `out.minisig`. Fills `files` (sorted) and `encryption`; returns the manifest as written.
pub fn write_kit(
    out: &Path,
    staging: &Path,
    mut manifest: KitManifest,
    protection: &Protection,
    key: &SecretKey,
) -> Result<KitManifest, KitError> {
    // Checked before reading gigabytes: a mistyped recipient must fail at once.
    let encryptor = encryptor_for(out, protection)?;
    let staged = scan_staging(out, staging)?;
    manifest.format = KIT_FORMAT.to_owned();
    manifest.encryption = match protection {
        Protection::None => Encryption::None,
        Protection::Recipients(_) => Encryption::AgeRecipients,
        Protection::Passphrase(_) => Encryption::AgePassphrase,
    };
    manifest.files = staged
        .iter()
        .filter_map(|s| match s {
            Staged::File { file, .. } => Some(file.clone()),
            Staged::Dir { .. } => None,
        })
        .collect();
    manifest.files.sort_by(|a, b| a.path.cmp(&b.path));
    let manifest_json = serde_json::to_vec_pretty(&manifest).expect("a manifest always serialises");

    let io_err = |path: &Path| KitError::io(out, path);
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let temp = tempfile::Builder::new()
        .prefix(".ilha-kit-")
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    // Before any byte: the kit holds the cluster's private keys.
    fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o600))
        .map_err(io_err(temp.path()))?;

    let sink = Prehashing::new(BufWriter::with_capacity(1 << 20, temp.as_file()));
    let mut tar = Builder::new(zstd_encoder(sink).map_err(io_err(out))?);
    let mut manifest_header = header(
        EntryType::Regular,
        manifest_json.len() as u64,
        0o644,
        manifest.created_at,
    );
    tar.append_data(&mut manifest_header, MANIFEST_ENTRY, &manifest_json[..])
        .map_err(io_err(out))?;
    match encryptor {
        None => append_payload(&mut tar, out, staging, &staged)?,
        Some(encryptor) => {
            let encrypted = encrypt_payload(out, dir, staging, &staged, encryptor)?;
            let mut file = File::open(encrypted.path()).map_err(io_err(encrypted.path()))?;
            let size = file.metadata().map_err(io_err(encrypted.path()))?.len();
            let mut payload_header = header(EntryType::Regular, size, 0o600, manifest.created_at);
            tar.append_data(&mut payload_header, ENCRYPTED_PAYLOAD_ENTRY, &mut file)
                .map_err(io_err(out))?;
        }
    }
    let mut sink = tar
        .into_inner()
        .and_then(|zstd| zstd.finish())
        .map_err(io_err(out))?;
    sink.flush().map_err(io_err(out))?;
    let prehash = sink.prehash.finish();
    drop(sink);
    temp.as_file().sync_all().map_err(io_err(temp.path()))?;
    temp.persist(out).map_err(|e| KitError::Io {
        kit: out.to_owned(),
        path: out.to_owned(),
        source: e.error,
    })?;
    // Signed from the prehash taken while writing: no second read of a multi-GiB file.
    let signature = key.sign_prehashed(&prehash, &trusted_comment(&manifest));
    let sig = sig_path(out);
    crate::fsutil::write_atomic(&sig, signature.to_minisig_string().as_bytes(), 0o644)
        .map_err(io_err(&sig))?;
    Ok(manifest)
}

fn encryptor_for(out: &Path, protection: &Protection) -> Result<Option<age::Encryptor>, KitError> {
    let bad = |reason: &str| KitError::BadRecipient {
        origin: format!("{}: encryption", out.display()),
        reason: reason.to_owned(),
    };
    match protection {
        Protection::None => Ok(None),
        Protection::Passphrase(p) if p.is_empty() => Err(bad("the passphrase is empty")),
        Protection::Passphrase(p) => Ok(Some(age::Encryptor::with_user_passphrase(
            SecretString::from(p.clone()),
        ))),
        Protection::Recipients(list) if list.is_empty() => Err(bad("no recipient given")),
        Protection::Recipients(list) => {
            let recipients = list
                .iter()
                .map(|r| check_recipient(r, || format!("{}: recipient", out.display())))
                .collect::<Result<Vec<_>, _>>()?;
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map(Some)
                .map_err(|e| bad(&e.to_string()))
        }
    }
}

/// Level 3, one worker per CPU: the payload is mostly an etcd snapshot that compresses well.
fn zstd_encoder<W: Write>(w: W) -> io::Result<zstd::Encoder<'static, W>> {
    let mut encoder = zstd::Encoder::new(w, ZSTD_LEVEL)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    encoder.multithread(workers as u32)?;
    Ok(encoder)
}

/// Owner root, as the files will be on the masters; the path is set by `append_data`.
fn header(kind: EntryType, size: u64, mode: u32, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    // "root" always fits the 32-byte field.
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h.set_mtime(mtime);
    h
}

/// Walks `staging` depth-first in sorted order (two kits of one tree list it the same way) and
/// hashes every file. Only regular files and directories: a link or device in a kit is a mistake.
fn scan_staging(kit: &Path, staging: &Path) -> Result<Vec<Staged>, KitError> {
    let mut staged = Vec::new();
    scan_dir(kit, staging, "", &mut staged)?;
    Ok(staged)
}

fn scan_dir(
    kit: &Path,
    dir: &Path,
    rel_dir: &str,
    staged: &mut Vec<Staged>,
) -> Result<(), KitError> {
    let io_err = |path: &Path| KitError::io(kit, path);
    let mut children = fs::read_dir(dir)
        .and_then(|read| {
            read.map(|child| child.map(|c| c.path()))
                .collect::<io::Result<Vec<_>>>()
        })
        .map_err(io_err(dir))?;
    children.sort();
    for path in children {
        let staging_err = |reason: String| KitError::Staging {
            kit: kit.to_owned(),
            path: path.clone(),
            reason,
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| staging_err("file name is not UTF-8".into()))?;
        let rel = if rel_dir.is_empty() {
            name.to_owned()
        } else {
            format!("{rel_dir}/{name}")
        };
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        let mode = meta.permissions().mode() & 0o777;
        let mtime = meta.modified().ok().and_then(unix_seconds).unwrap_or(0);
        if meta.is_dir() {
            staged.push(Staged::Dir {
                rel: rel.clone(),
                mode,
                mtime,
            });
            scan_dir(kit, &path, &rel, staged)?;
        } else if meta.is_file() {
            let (sha256, size) = sha256_file(&path).map_err(io_err(&path))?;
            staged.push(Staged::File {
                file: KitFile {
                    path: rel,
                    size,
                    sha256: sha256.to_string(),
                    mode,
                },
                mtime,
            });
        } else {
            return Err(staging_err(format!(
                "{:?} is neither a regular file nor a directory",
                meta.file_type()
            )));
        }
    }
    Ok(())
}

fn unix_seconds(t: std::time::SystemTime) -> Option<u64> {
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// The `payload/...` entries, each file streamed and hashed again: a file changed since the scan
/// would make the kit disagree with its own manifest, so it fails the backup instead.
fn append_payload<W: Write>(
    tar: &mut Builder<W>,
    kit: &Path,
    staging: &Path,
    staged: &[Staged],
) -> Result<(), KitError> {
    for entry in staged {
        match entry {
            Staged::Dir { rel, mode, mtime } => {
                let mut h = header(EntryType::Directory, 0, *mode, *mtime);
                tar.append_data(&mut h, format!("{PAYLOAD_PREFIX}{rel}/"), io::empty())
                    .map_err(|source| KitError::Io {
                        kit: kit.to_owned(),
                        path: kit.to_owned(),
                        source,
                    })?;
            }
            Staged::File { file, mtime } => {
                let path = staging.join(&file.path);
                let staging_err = |reason: String| KitError::Staging {
                    kit: kit.to_owned(),
                    path: path.clone(),
                    reason,
                };
                let opened = File::open(&path).map_err(|e| staging_err(e.to_string()))?;
                let mut reader = ExactFile {
                    file: opened,
                    left: file.size,
                    hasher: Sha256Hasher::new(),
                    failure: None,
                };
                let mut h = header(EntryType::Regular, file.size, file.mode, *mtime);
                let written = tar.append_data(
                    &mut h,
                    format!("{PAYLOAD_PREFIX}{}", file.path),
                    &mut reader,
                );
                if let Some(reason) = reader.failure.take() {
                    return Err(staging_err(reason));
                }
                written.map_err(|source| KitError::Io {
                    kit: kit.to_owned(),
                    path: kit.to_owned(),
                    source,
                })?;
                let sha256 = reader.hasher.finish().to_string();
                if sha256 != file.sha256 {
                    return Err(staging_err(format!(
                        "changed while the kit was written (sha256 {} then {sha256})",
                        file.sha256
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Yields exactly `left` bytes of a staging file, hashing them. A tar entry's data must match
/// its header's size, so a file that shrank is an error here, not a corrupt archive; the reason
/// is kept apart so that it is reported against the staging file, not the kit.
struct ExactFile {
    file: File,
    left: u64,
    hasher: Sha256Hasher,
    failure: Option<String>,
}

impl Read for ExactFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match self.file.read(&mut buf[..want]) {
            Ok(0) => {
                let reason = format!(
                    "shrank while the kit was written ({} bytes short)",
                    self.left
                );
                self.failure = Some(reason.clone());
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, reason));
            }
            Ok(n) => n,
            Err(e) => {
                self.failure = Some(e.to_string());
                return Err(e);
            }
        };
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
}

/// `payload.tar.zst.age` into a temporary file next to the kit (removed when dropped).
fn encrypt_payload(
    kit: &Path,
    dir: &Path,
    staging: &Path,
    staged: &[Staged],
    encryptor: age::Encryptor,
) -> Result<tempfile::NamedTempFile, KitError> {
    let io_err = |path: PathBuf| {
        move |source| KitError::Io {
            kit: kit.to_owned(),
            path,
            source,
        }
    };
    let temp = tempfile::Builder::new()
        .prefix(".ilha-kit-payload-")
        .tempfile_in(dir)
        .map_err(io_err(dir.to_owned()))?;
    let temp_path = temp.path().to_owned();
    let age_writer = encryptor
        .wrap_output(BufWriter::with_capacity(1 << 20, temp.as_file()))
        .map_err(io_err(temp_path.clone()))?;
    let mut tar = Builder::new(zstd_encoder(age_writer).map_err(io_err(temp_path.clone()))?);
    append_payload(&mut tar, kit, staging, staged)?;
    tar.into_inner()
        .and_then(|zstd| zstd.finish())
        // age's last chunk is marked as such: without `finish` the payload is truncated.
        .and_then(|age_writer| age_writer.finish())
        .and_then(|mut buffered| buffered.flush())
        .map_err(io_err(temp_path))?;
    Ok(temp)
}
