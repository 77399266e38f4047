//! Binaries and files: HTTP downloads (reqwest, rustls) hashed while streaming, or local files.
//! An entry with `archive_member` takes one file out of a `.tar.gz` whose own digest is checked
//! first; the archive is fetched once per build however many entries read from it.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use ilha_format::Sha256;
use ilha_format::digest::Sha256Hasher;
use ilha_format::index::blob_path;
use indicatif::ProgressBar;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result, chain};
use crate::layout::Staging;
use crate::manifest::{ArtifactMirror, ArtifactOrigin, ArtifactSpec, Checksum};
use crate::mirror::Redirect;

/// Whether an artifact is a binary (mode 0755) or a data file (0644).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    Binary,
    File,
}

impl ArtifactKind {
    pub fn label(self) -> &'static str {
        match self {
            ArtifactKind::Binary => "binary",
            ArtifactKind::File => "file",
        }
    }
}

/// What was stored for one artifact.
#[derive(Debug, Clone)]
pub struct StoredArtifact {
    pub kind: ArtifactKind,
    pub name: String,
    pub source: String,
    /// The size is read from staging once every task is done (a duplicate does not know it).
    pub sha256: Sha256,
}

pub struct Downloader {
    http: reqwest::Client,
    /// Verified archives by source and checksum: several entries extract from one download.
    archives: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<ArchiveOutcome>>>>,
}

/// A fetched and verified archive in staging, or why there is none (shared by every entry that
/// reads from it, each of which reports it under its own name).
type ArchiveOutcome = std::result::Result<PathBuf, ArchiveFailure>;

#[derive(Debug, Clone)]
enum ArchiveFailure {
    Fetch {
        url: String,
        message: String,
    },
    Mismatch {
        url: String,
        expected: String,
        found: String,
    },
}

impl Downloader {
    pub fn new() -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("ilha-bundler/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Io {
                path: "reqwest client".into(),
                source: std::io::Error::other(chain(&e)),
            })?;
        Ok(Downloader {
            http,
            archives: Mutex::default(),
        })
    }

    /// Fetches (or reads) one artifact into staging and verifies its sha256.
    pub async fn fetch(
        &self,
        kind: ArtifactKind,
        spec: &ArtifactSpec,
        staging: &Staging,
        bar: &ProgressBar,
    ) -> Result<StoredArtifact> {
        let fail = |url: &str, message: String| Error::Download {
            kind: kind.label(),
            name: spec.name.clone(),
            location: spec.location.clone(),
            url: url.to_owned(),
            message,
        };
        let executable = kind == ArtifactKind::Binary;
        if let Some(member) = &spec.archive_member {
            return self.fetch_member(kind, spec, member, staging, bar).await;
        }
        let sha256 = match &spec.origin {
            ArtifactOrigin::Url { url, checksum } => {
                let (expected, expected_shown) = self
                    .expected_sha256(checksum, url, spec.mirror.checksum.as_ref())
                    .await
                    .map_err(|(at, m)| fail(&at, m))?;
                let path = blob_path(&expected);
                if !staging.claim(&path) {
                    // Another entry has the very same content: it is downloaded and checked once.
                    if executable {
                        staging.mark_executable(&path);
                    }
                    return Ok(self.stored(kind, spec, expected));
                }
                let (fetch_url, shown) = ArtifactMirror::fetch(spec.mirror.url.as_ref(), url);
                let (found, size, tmp) = self
                    .download(fetch_url, staging, bar)
                    .await
                    .map_err(|m| fail(&shown, m))?;
                if found != expected {
                    return Err(Error::DigestMismatch {
                        what: format!("{} {}", kind.label(), spec.name),
                        location: spec.location.clone(),
                        url: shown,
                        expected: expected_shown,
                        found: found.to_string(),
                    });
                }
                staging.commit(&tmp, &path, found, size, executable)?;
                found
            }
            ArtifactOrigin::Local {
                written,
                path: local,
                sha256,
            } => {
                let tmp = staging.tmp_path();
                // Copy first, hash the copy: what is packed is exactly what was checked.
                let size = tokio::fs::copy(local, &tmp)
                    .await
                    .map_err(|e| fail(written, format!("cannot read {}: {e}", local.display())))?;
                let tmp_clone = tmp.clone();
                let (found, hashed) = tokio::task::spawn_blocking(move || {
                    ilha_format::digest::sha256_file(&tmp_clone)
                })
                .await
                .expect("hashing task")
                .map_err(|e| Error::io(&tmp, e))?;
                if hashed != size {
                    return Err(fail(
                        written,
                        format!("{} changed while being read", local.display()),
                    ));
                }
                if let Some(hex) = sha256
                    && *hex != found.to_string()
                {
                    return Err(Error::DigestMismatch {
                        what: format!("{} {}", kind.label(), spec.name),
                        location: spec.location.clone(),
                        url: written.clone(),
                        expected: hex.clone(),
                        found: found.to_string(),
                    });
                }
                bar.inc(size);
                let path = blob_path(&found);
                if staging.claim(&path) {
                    staging.commit(&tmp, &path, found, size, executable)?;
                } else {
                    let _ = std::fs::remove_file(&tmp);
                    if executable {
                        staging.mark_executable(&path);
                    }
                }
                found
            }
        };
        Ok(self.stored(kind, spec, sha256))
    }

    fn stored(&self, kind: ArtifactKind, spec: &ArtifactSpec, sha256: Sha256) -> StoredArtifact {
        let origin = spec.origin.source_text();
        StoredArtifact {
            kind,
            name: spec.name.clone(),
            source: match &spec.archive_member {
                Some(member) => format!("{origin}#{member}"),
                None => origin.to_owned(),
            },
            sha256,
        }
    }

    /// Stores `member` of the entry's (verified) archive; the index gets the member's digest.
    async fn fetch_member(
        &self,
        kind: ArtifactKind,
        spec: &ArtifactSpec,
        member: &str,
        staging: &Staging,
        bar: &ProgressBar,
    ) -> Result<StoredArtifact> {
        let archive = self.verified_archive(kind, spec, staging, bar).await?;
        let tmp = staging.tmp_path();
        let (archive_in, member_in, tmp_in) = (archive.clone(), member.to_owned(), tmp.clone());
        let (found, size) =
            tokio::task::spawn_blocking(move || extract_member(&archive_in, &member_in, &tmp_in))
                .await
                .expect("extraction task")
                .map_err(|message| {
                    let _ = std::fs::remove_file(&tmp);
                    Error::ArchiveMember {
                        kind: kind.label(),
                        name: spec.name.clone(),
                        location: spec.location.clone(),
                        archive: spec.origin.source_text().to_owned(),
                        message: format!("member {member}: {message}"),
                    }
                })?;
        let path = blob_path(&found);
        let executable = kind == ArtifactKind::Binary;
        if staging.claim(&path) {
            staging.commit(&tmp, &path, found, size, executable)?;
        } else {
            let _ = std::fs::remove_file(&tmp);
            if executable {
                staging.mark_executable(&path);
            }
        }
        Ok(self.stored(kind, spec, found))
    }

    /// The entry's archive, downloaded (or copied) and checked once per build.
    async fn verified_archive(
        &self,
        kind: ArtifactKind,
        spec: &ArtifactSpec,
        staging: &Staging,
        bar: &ProgressBar,
    ) -> Result<PathBuf> {
        let key = format!("{:?}", spec.origin);
        let cell = self
            .archives
            .lock()
            .expect("archive cache lock")
            .entry(key)
            .or_default()
            .clone();
        let outcome = cell
            .get_or_init(|| self.fetch_archive(&spec.origin, &spec.mirror, staging, bar))
            .await;
        outcome.clone().map_err(|failure| match failure {
            ArchiveFailure::Fetch { url, message } => Error::Download {
                kind: kind.label(),
                name: spec.name.clone(),
                location: spec.location.clone(),
                url,
                message,
            },
            ArchiveFailure::Mismatch {
                url,
                expected,
                found,
            } => Error::DigestMismatch {
                what: format!("{} {} (archive)", kind.label(), spec.name),
                location: spec.location.clone(),
                url,
                expected,
                found,
            },
        })
    }

    async fn fetch_archive(
        &self,
        origin: &ArtifactOrigin,
        mirror: &ArtifactMirror,
        staging: &Staging,
        bar: &ProgressBar,
    ) -> ArchiveOutcome {
        match origin {
            ArtifactOrigin::Url { url, checksum } => {
                let fetch_failed = |url: &str, message: String| ArchiveFailure::Fetch {
                    url: url.to_owned(),
                    message,
                };
                let (expected, expected_shown) = self
                    .expected_sha256(checksum, url, mirror.checksum.as_ref())
                    .await
                    .map_err(|(at, m)| fetch_failed(&at, m))?;
                let (fetch_url, shown) = ArtifactMirror::fetch(mirror.url.as_ref(), url);
                let (found, _, tmp) = self
                    .download(fetch_url, staging, bar)
                    .await
                    .map_err(|m| fetch_failed(&shown, m))?;
                if found != expected {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(ArchiveFailure::Mismatch {
                        url: shown,
                        expected: expected_shown,
                        found: found.to_string(),
                    });
                }
                Ok(tmp)
            }
            ArtifactOrigin::Local {
                written,
                path,
                sha256,
            } => {
                let tmp = staging.tmp_path();
                let fetch_failed = |message: String| ArchiveFailure::Fetch {
                    url: written.clone(),
                    message,
                };
                let size = tokio::fs::copy(path, &tmp)
                    .await
                    .map_err(|e| fetch_failed(format!("cannot read {}: {e}", path.display())))?;
                bar.inc(size);
                let tmp_in = tmp.clone();
                let (found, _) =
                    tokio::task::spawn_blocking(move || ilha_format::digest::sha256_file(&tmp_in))
                        .await
                        .expect("hashing task")
                        .map_err(|e| fetch_failed(format!("{}: {e}", tmp.display())))?;
                if let Some(hex) = sha256
                    && *hex != found.to_string()
                {
                    return Err(ArchiveFailure::Mismatch {
                        url: written.clone(),
                        expected: hex.clone(),
                        found: found.to_string(),
                    });
                }
                Ok(tmp)
            }
        }
    }

    /// Streams `url` into a staging temp file; returns (sha256, size, temp path).
    async fn download(
        &self,
        url: &str,
        staging: &Staging,
        bar: &ProgressBar,
    ) -> std::result::Result<(Sha256, u64, std::path::PathBuf), String> {
        let response = self.http.get(url).send().await.map_err(|e| chain(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let declared = response.content_length();
        if let Some(n) = declared {
            bar.inc_length(n);
        }
        let tmp = staging.tmp_path();
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Sha256Hasher::new();
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("reading the body: {}", chain(&e)))?;
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
            bar.inc(chunk.len() as u64);
        }
        out.flush()
            .await
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let (sha, size) = hasher.finish_with_size();
        if let Some(n) = declared
            && n != size
        {
            return Err(format!("truncated: got {size} of {n} bytes"));
        }
        Ok((sha, size, tmp))
    }

    /// Fetches a checksum file and returns the digest for `artifact_url`'s basename.
    /// The digest `url` must have: pinned in the manifest, or read from the checksum file it
    /// names. On failure, the URL at fault (the checksum file's, if that is what failed).
    /// The checksum file is looked up by the canonical `url`'s file name (upstream's name),
    /// wherever a mirror serves it from.
    async fn expected_sha256(
        &self,
        checksum: &Checksum,
        url: &str,
        checksum_mirror: Option<&Redirect>,
    ) -> std::result::Result<(Sha256, String), (String, String)> {
        match checksum {
            Checksum::Sha256(hex) => hex
                .parse::<Sha256>()
                .map(|sha| (sha, sha.to_string()))
                .map_err(|e| (url.to_owned(), e.to_string())),
            Checksum::Url(sum_url) => {
                let (fetch_url, shown) = ArtifactMirror::fetch(checksum_mirror, sum_url);
                match self.fetch_checksum(fetch_url, url).await {
                    Ok(sha) => Ok((sha, format!("{sha} (from {shown})"))),
                    Err(m) => Err((shown, m)),
                }
            }
        }
    }

    async fn fetch_checksum(
        &self,
        sum_url: &str,
        artifact_url: &str,
    ) -> std::result::Result<Sha256, String> {
        let response = self.http.get(sum_url).send().await.map_err(|e| chain(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP {status}"));
        }
        let text = response.text().await.map_err(|e| chain(&e))?;
        parse_checksum_file(&text, basename(artifact_url))
    }
}

/// Copies the regular file `member` (as normalised by the manifest: no `./`) out of the gzip'd
/// tar at `archive` into `dest`, hashing it on the way. Only that member is written anywhere, so
/// other entries' paths do not matter; a member that is a link or a directory is refused.
fn extract_member(
    archive: &Path,
    member: &str,
    dest: &Path,
) -> std::result::Result<(Sha256, u64), String> {
    let file = std::fs::File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let gzip = flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file));
    let mut tar = tar::Archive::new(gzip);
    let unreadable = |e: std::io::Error| format!("not a readable .tar.gz: {e}");
    for entry in tar.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let path = entry.path().map_err(unreadable)?;
        if member_name(&path).as_deref() != Some(member) {
            continue;
        }
        let entry_type = entry.header().entry_type();
        if !(entry_type.is_file() || entry_type.is_contiguous()) {
            return Err(format!(
                "is a {}, not a regular file",
                describe_entry_type(entry_type)
            ));
        }
        let out =
            std::fs::File::create_new(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
        let mut writer = ilha_format::Sha256Writer::new(BufWriter::with_capacity(1 << 20, out));
        std::io::copy(&mut entry, &mut writer).map_err(|e| format!("extracting: {e}"))?;
        let (buffered, sha256, size) = writer.finish();
        buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|mut f| f.flush())
            .map_err(|e| format!("{}: {e}", dest.display()))?;
        return Ok((sha256, size));
    }
    Err("no such member in the archive".into())
}

/// A tar entry's path in the manifest's form (`./bin/x` -> `bin/x`); `None` if it cannot be a
/// member name (absolute, `..`).
fn member_name(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(parts.join("/"))
}

fn describe_entry_type(entry_type: tar::EntryType) -> &'static str {
    match entry_type {
        tar::EntryType::Directory => "directory",
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char | tar::EntryType::Block => "device",
        tar::EntryType::Fifo => "fifo",
        _ => "special entry",
    }
}

fn basename(url: &str) -> &str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    path.rsplit('/').next().unwrap_or(path)
}

/// Upstream checksum files are either a bare `<hex>` or `sha256sum` lines `<hex>  <name>`
/// (`*<name>` in binary mode, sometimes with a directory prefix), possibly inside a PGP
/// clearsigned message (runc's `runc.sha256sum`). The PGP signature is not checked: the bundler
/// has no keyring of upstream signers; the digest lines are read from the signed text only.
pub fn parse_checksum_file(text: &str, file_name: &str) -> std::result::Result<Sha256, String> {
    let signed_text = clearsigned_text(text)?;
    let lines: Vec<&str> = signed_text
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    if let [only] = lines.as_slice()
        && !only.contains(char::is_whitespace)
    {
        return only
            .to_ascii_lowercase()
            .parse::<Sha256>()
            .map_err(|e| format!("checksum file: {e}"));
    }
    for line in &lines {
        let mut parts = line.splitn(2, char::is_whitespace);
        let (Some(hex), Some(name)) = (parts.next(), parts.next()) else {
            continue;
        };
        let name = name.trim().trim_start_matches('*');
        let name = name.rsplit('/').next().unwrap_or(name);
        if name == file_name {
            return hex
                .to_ascii_lowercase()
                .parse::<Sha256>()
                .map_err(|e| format!("checksum file, line for {file_name}: {e}"));
        }
    }
    Err(format!("checksum file has no line for {file_name:?}"))
}

const PGP_SIGNED: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
const PGP_SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----";

/// The lines of `text`, or, for a PGP clearsigned message (RFC 4880 section 7), the lines of
/// its signed text: after the armor headers and their blank line, before the signature, with
/// dash-escaping (`- `) undone.
fn clearsigned_text(text: &str) -> std::result::Result<Vec<&str>, String> {
    let mut lines = text.lines();
    let first = text.lines().find(|l| !l.trim().is_empty());
    if first.map(str::trim) != Some(PGP_SIGNED) {
        return Ok(text.lines().collect());
    }
    lines.by_ref().find(|l| l.trim() == PGP_SIGNED);
    // Armor headers (`Hash: SHA256`) end at the first blank line.
    lines.by_ref().find(|l| l.trim().is_empty());
    let mut body = Vec::new();
    for line in lines {
        if line.trim() == PGP_SIGNATURE {
            return Ok(body);
        }
        body.push(line.strip_prefix("- ").unwrap_or(line));
    }
    Err(format!(
        "checksum file: PGP signed message without a {PGP_SIGNATURE:?} line (truncated?)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn checksum_file_forms() {
        assert_eq!(
            parse_checksum_file(&format!("{HEX}\n"), "x")
                .unwrap()
                .to_string(),
            HEX
        );
        let multi = format!("{}  other\n{HEX}  kubelet\n", "0".repeat(64));
        assert_eq!(
            parse_checksum_file(&multi, "kubelet").unwrap().to_string(),
            HEX
        );
        let binary_mode = format!("{HEX} *bin/kubelet\n");
        assert_eq!(
            parse_checksum_file(&binary_mode, "kubelet")
                .unwrap()
                .to_string(),
            HEX
        );
        assert!(parse_checksum_file(&multi, "kubectl").is_err());
        assert!(parse_checksum_file("nothex\n", "x").is_err());
    }

    /// runc publishes `runc.sha256sum` as a PGP clearsigned message: the digest lines are read
    /// from the signed text (dash-escaping undone); the signature itself is not checked.
    #[test]
    fn clearsigned_checksum_file() {
        let other = "0".repeat(64);
        let text = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n{HEX}  runc.amd64\n{other}  runc.arm64\n- {other}  runc-1.4.3.tar.xz\n-----BEGIN PGP SIGNATURE-----\n\niQIzBAEBCAAdFiEE\n=abcd\n-----END PGP SIGNATURE-----\n"
        );
        assert_eq!(
            parse_checksum_file(&text, "runc.amd64")
                .unwrap()
                .to_string(),
            HEX
        );
        assert_eq!(
            parse_checksum_file(&text, "runc-1.4.3.tar.xz")
                .unwrap()
                .to_string(),
            other
        );
        // Lines of the signature block are not digests.
        assert!(parse_checksum_file(&text, "iQIzBAEBCAAdFiEE").is_err());
        let truncated = text
            .split("-----BEGIN PGP SIGNATURE")
            .next()
            .unwrap()
            .to_owned();
        let err = parse_checksum_file(&truncated, "runc.amd64").unwrap_err();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn basename_of_url() {
        assert_eq!(basename("http://h/a/b/kubelet?x=1"), "kubelet");
    }
}
