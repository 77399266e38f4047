//! The bundle manifest (YAML): parsing with source locations, then validation.
//!
//! The schema is documented in `docs/manifest.md`.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use ilha_format::cluster::{self, ClusterSpec};
use oci_client::Reference;
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_saphyr::Spanned;

use crate::mirror::{self, Redirect, Rewrite};

/// A manifest problem; the `Display` form always starts with `FILE:LINE:COL:` or `FILE:`.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Syntax {
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
    #[error("{file}: {message}")]
    SyntaxNoLocation { file: String, message: String },
    #[error("{file}:{line}:{column}: {what}: {message}")]
    Invalid {
        file: String,
        line: u64,
        column: u64,
        what: String,
        message: String,
    },
}

/// `os/arch[/variant]`, as in OCI image indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        // The same rule `Index::validate` applies.
        ilha_format::names::check_platform(s)?;
        let parts: Vec<&str> = s.split('/').collect();
        Ok(Platform {
            os: parts[0].into(),
            architecture: parts[1].into(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest file, as given on the command line.
    pub file: PathBuf,
    pub name: String,
    pub version: String,
    pub platform: Platform,
    /// The cluster the bundle is for (`cluster:`), checked against `ilha_format::cluster`.
    pub cluster: Option<ClusterDeclaration>,
    pub images: Vec<ImageSpec>,
    pub binaries: Vec<ArtifactSpec>,
    pub files: Vec<ArtifactSpec>,
    /// `mirrors:`: rewrites of `url`/`sha256_url` prefixes and of image registries.
    pub mirrors: ManifestMirrors,
}

/// The manifest's `mirrors:` key; each rule's `origin` is its `file:line:col`.
#[derive(Debug, Clone, Default)]
pub struct ManifestMirrors {
    pub files: Vec<Rewrite>,
    pub registries: Vec<Rewrite>,
}

/// The manifest's `cluster:` key and where it is.
#[derive(Debug, Clone)]
pub struct ClusterDeclaration {
    pub spec: ClusterSpec,
    /// `file:line:col` of the `cluster:` value, for error messages.
    pub location: String,
}

impl Manifest {
    /// What the bundle this manifest describes would lack for its declared cluster (empty when
    /// none is declared): decided from names alone, before anything is downloaded.
    pub fn missing_for_cluster(&self) -> Vec<cluster::Missing> {
        let Some(declared) = &self.cluster else {
            return Vec::new();
        };
        cluster::missing_among(
            &declared.spec,
            self.binaries.iter().map(|b| b.name.as_str()),
            self.images.iter().map(|i| i.name.as_str()),
        )
    }
}

/// An image to pull: `name` is what the bundle records (what containerd will see), `source`
/// where it is pulled from.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub name: String,
    pub source: Reference,
    /// `file:line:col` of the entry, for error messages.
    pub location: String,
    /// Set when a registry mirror moves the pull elsewhere; `source` stays what the index records.
    pub mirror: Option<ImageMirror>,
}

/// Where an image is really pulled from, and the rule that sent it there.
#[derive(Debug, Clone)]
pub struct ImageMirror {
    pub pull: Reference,
    pub rule: Rewrite,
}

impl ImageSpec {
    /// The canonical source as a string (fully qualified): what the index records.
    pub fn source_text(&self) -> String {
        self.source.whole()
    }

    /// The reference actually pulled: the mirror's, or the source.
    pub fn pull_reference(&self) -> &Reference {
        self.mirror.as_ref().map_or(&self.source, |m| &m.pull)
    }

    /// The pull reference for messages, saying what it mirrors.
    pub fn pull_text(&self) -> String {
        match &self.mirror {
            Some(m) => format!("{} (mirror of {})", m.pull.whole(), self.source.whole()),
            None => self.source.whole(),
        }
    }
}

/// A binary or data file.
#[derive(Debug, Clone)]
pub struct ArtifactSpec {
    pub name: String,
    pub origin: ArtifactOrigin,
    /// For a `.tar.gz` source: the path of the one member to store. `sha256`/`sha256_url` pin
    /// the archive as downloaded; the index records the member's own digest.
    pub archive_member: Option<String>,
    /// `file:line:col` of the entry, for error messages.
    pub location: String,
    /// Where `url` and `sha256_url` are really fetched from, when a mirror moves them.
    pub mirror: ArtifactMirror,
}

/// Mirrors of an artifact's download and of its checksum file (each may move or not).
#[derive(Debug, Clone, Default)]
pub struct ArtifactMirror {
    pub url: Option<Redirect>,
    pub checksum: Option<Redirect>,
}

impl ArtifactMirror {
    /// The URL to fetch for `canonical`, and how to name it in messages.
    pub fn fetch<'a>(redirect: Option<&'a Redirect>, canonical: &'a str) -> (&'a str, String) {
        match redirect {
            Some(r) => (r.url.as_str(), format!("{} (mirror of {canonical})", r.url)),
            None => (canonical, canonical.to_owned()),
        }
    }
}

#[derive(Debug, Clone)]
pub enum ArtifactOrigin {
    Url {
        url: String,
        checksum: Checksum,
    },
    /// `written` is the path as written in the manifest; `path` is resolved against the
    /// manifest's directory.
    Local {
        written: String,
        path: PathBuf,
        sha256: Option<String>,
    },
}

impl ArtifactOrigin {
    /// The `source` recorded in the index: the url, or the path as written.
    pub fn source_text(&self) -> &str {
        match self {
            ArtifactOrigin::Url { url, .. } => url,
            ArtifactOrigin::Local { written, .. } => written,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Checksum {
    /// 64 lowercase hex digits.
    Sha256(String),
    /// A checksum file to fetch first.
    Url(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: Spanned<String>,
    version: String,
    platform: Option<Spanned<String>>,
    cluster: Option<Spanned<ClusterSpec>>,
    #[serde(default)]
    images: Vec<Spanned<RawImage>>,
    #[serde(default)]
    binaries: Vec<Spanned<RawArtifact>>,
    #[serde(default)]
    files: Vec<Spanned<RawArtifact>>,
    mirrors: Option<RawMirrors>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMirrors {
    #[serde(default)]
    files: Vec<Spanned<RawRewrite>>,
    #[serde(default)]
    registries: Vec<Spanned<RawRewrite>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRewrite {
    from: String,
    to: String,
}

/// An image entry: either a bare reference string or `{name, from}`.
struct RawImage {
    name: String,
    from: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImageMap {
    name: String,
    from: Option<String>,
}

impl<'de> Deserialize<'de> for RawImage {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ImageVisitor;
        impl<'de> Visitor<'de> for ImageVisitor {
            type Value = RawImage;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an image reference or a map with `name` and optional `from`")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawImage, E> {
                Ok(RawImage {
                    name: v.to_owned(),
                    from: None,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawImage, A::Error> {
                let raw = RawImageMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawImage {
                    name: raw.name,
                    from: raw.from,
                })
            }
        }
        deserializer.deserialize_any(ImageVisitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArtifact {
    name: String,
    url: Option<String>,
    path: Option<String>,
    sha256: Option<String>,
    sha256_url: Option<String>,
    archive_member: Option<String>,
}

/// Reads and validates the manifest at `file`.
pub fn load(file: &Path) -> Result<Manifest, ManifestError> {
    let text = std::fs::read_to_string(file).map_err(|source| ManifestError::Read {
        file: file.display().to_string(),
        source,
    })?;
    parse(file, &text)
}

/// Parses and validates manifest `text`; `file` names it in errors and anchors relative paths.
pub fn parse(file: &Path, text: &str) -> Result<Manifest, ManifestError> {
    let file_name = file.display().to_string();
    let raw: RawManifest = serde_saphyr::from_str(text).map_err(|err| {
        let options = serde_saphyr::render_options! {
            snippets: serde_saphyr::SnippetMode::Off,
        };
        let message = err.render_with_options(options);
        match err.location() {
            Some(loc) if loc.line() > 0 => ManifestError::Syntax {
                file: file_name.clone(),
                line: loc.line(),
                column: loc.column(),
                message: strip_location_suffix(&message),
            },
            _ => ManifestError::SyntaxNoLocation {
                file: file_name.clone(),
                message,
            },
        }
    })?;
    let base_dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    validate(raw, &file_name, base_dir)
}

/// serde-saphyr's plain message may end with its own "at line X column Y"; we print the location
/// up front instead.
fn strip_location_suffix(message: &str) -> String {
    let trimmed = message.trim();
    match trimmed.rfind(" at line ") {
        Some(idx) => trimmed[..idx].to_string(),
        None => trimmed.to_string(),
    }
}

fn validate(raw: RawManifest, file: &str, base_dir: &Path) -> Result<Manifest, ManifestError> {
    let invalid =
        |span: &serde_saphyr::Location, what: &str, message: String| ManifestError::Invalid {
            file: file.to_string(),
            line: span.line(),
            column: span.column(),
            what: what.to_string(),
            message,
        };
    let at = |span: &serde_saphyr::Location| format!("{file}:{}:{}", span.line(), span.column());

    // Name, version, platform and every artifact and image name are checked by the rules
    // `Index::validate` applies when the bundle is read (`ilha_format::names`).
    let name = raw.name.value.clone();
    ilha_format::names::check_bundle_name(&name)
        .map_err(|msg| invalid(&raw.name.referenced, "name", msg))?;
    ilha_format::names::check_version(&raw.version).map_err(|message| {
        ManifestError::SyntaxNoLocation {
            file: file.to_string(),
            message,
        }
    })?;
    let platform = match &raw.platform {
        None => Platform::default(),
        Some(p) => p
            .value
            .parse()
            .map_err(|msg| invalid(&p.referenced, "platform", msg))?,
    };

    let cluster = match &raw.cluster {
        None => None,
        Some(declared) => {
            let loc = &declared.referenced;
            // An unsupported version is a manifest error, reported where it is written.
            cluster::requirements(&declared.value)
                .map_err(|err| invalid(loc, "cluster", err.to_string()))?;
            Some(ClusterDeclaration {
                spec: declared.value.clone(),
                location: at(loc),
            })
        }
    };

    let mut images = Vec::new();
    let mut seen_images: HashMap<String, String> = HashMap::new();
    for entry in &raw.images {
        let loc = &entry.referenced;
        let what = format!("image {}", entry.value.name);
        let name_ref = parse_reference(&entry.value.name)
            .map_err(|msg| invalid(loc, &what, format!("bad reference: {msg}")))?;
        let source = match &entry.value.from {
            None => name_ref.clone(),
            Some(from) => parse_reference(from)
                .map_err(|msg| invalid(loc, &what, format!("bad `from` reference: {msg}")))?,
        };
        let name = name_ref.whole();
        if let Some(previous) = seen_images.insert(name.clone(), at(loc)) {
            return Err(invalid(
                loc,
                &what,
                format!("duplicate image name {name} (first at {previous})"),
            ));
        }
        images.push(ImageSpec {
            name,
            source,
            location: at(loc),
            mirror: None,
        });
    }

    let binaries = validate_artifacts(&raw.binaries, "binary", file, base_dir)?;
    let files = validate_artifacts(&raw.files, "file", file, base_dir)?;

    let mut mirrors = ManifestMirrors::default();
    if let Some(raw_mirrors) = &raw.mirrors {
        for (entries, out, kind) in [
            (&raw_mirrors.files, &mut mirrors.files, "mirrors.files"),
            (
                &raw_mirrors.registries,
                &mut mirrors.registries,
                "mirrors.registries",
            ),
        ] {
            for entry in entries {
                let loc = &entry.referenced;
                let origin = at(loc);
                let (from, to) = (entry.value.from.trim(), entry.value.to.trim());
                let rule = if kind == "mirrors.files" {
                    mirror::url_rule(from, to, &origin)
                } else {
                    mirror::registry_rule(from, to, &origin)
                }
                .map_err(|msg| invalid(loc, kind, msg))?;
                if let Some(previous) = out.iter().find(|r: &&Rewrite| r.from == rule.from) {
                    return Err(invalid(
                        loc,
                        kind,
                        format!(
                            "duplicate rule for {} (first at {})",
                            rule.from, previous.origin
                        ),
                    ));
                }
                out.push(rule);
            }
        }
    }

    Ok(Manifest {
        file: PathBuf::from(file),
        name,
        version: raw.version,
        platform,
        cluster,
        images,
        binaries,
        files,
        mirrors,
    })
}

fn validate_artifacts(
    entries: &[Spanned<RawArtifact>],
    kind: &str,
    file: &str,
    base_dir: &Path,
) -> Result<Vec<ArtifactSpec>, ManifestError> {
    let mut out = Vec::new();
    let mut seen: HashMap<&str, String> = HashMap::new();
    for entry in entries {
        let loc = &entry.referenced;
        let location = format!("{file}:{}:{}", loc.line(), loc.column());
        let raw = &entry.value;
        let what = format!("{kind} {}", raw.name);
        let invalid = |message: String| ManifestError::Invalid {
            file: file.to_string(),
            line: loc.line(),
            column: loc.column(),
            what: what.clone(),
            message,
        };
        // The same rules `Index::validate` applies when the bundle is read.
        if let Err(reason) = ilha_format::names::check_artifact_name(&raw.name) {
            return Err(invalid(format!("bad name {:?}: {reason}", raw.name)));
        }
        if let Some(previous) = seen.insert(&raw.name, location.clone()) {
            return Err(invalid(format!(
                "duplicate {kind} name {} (first at {previous})",
                raw.name
            )));
        }
        if let Some(hex) = &raw.sha256 {
            check_hex(hex).map_err(&invalid)?;
        }
        let archive_member = match &raw.archive_member {
            None => None,
            Some(member) => Some(normalise_member(member).map_err(&invalid)?),
        };
        let origin = match (&raw.url, &raw.path) {
            (Some(_), Some(_)) => {
                return Err(invalid("give either `url` or `path`, not both".into()));
            }
            (None, None) => return Err(invalid("give `url` or `path`".into())),
            (Some(url), None) => {
                check_url(url).map_err(&invalid)?;
                let checksum = match (&raw.sha256, &raw.sha256_url) {
                    (Some(hex), None) => Checksum::Sha256(hex.clone()),
                    (None, Some(sum_url)) => {
                        check_url(sum_url).map_err(&invalid)?;
                        Checksum::Url(sum_url.clone())
                    }
                    (Some(_), Some(_)) => {
                        return Err(invalid(
                            "give exactly one of `sha256` / `sha256_url`, not both".into(),
                        ));
                    }
                    (None, None) => {
                        return Err(invalid(
                            "a `url` needs exactly one of `sha256` / `sha256_url`".into(),
                        ));
                    }
                };
                ArtifactOrigin::Url {
                    url: url.clone(),
                    checksum,
                }
            }
            (None, Some(path)) => {
                if raw.sha256_url.is_some() {
                    return Err(invalid(
                        "`sha256_url` only goes with `url`; a local `path` takes an optional `sha256`"
                            .into(),
                    ));
                }
                ArtifactOrigin::Local {
                    written: path.clone(),
                    path: base_dir.join(path),
                    sha256: raw.sha256.clone(),
                }
            }
        };
        out.push(ArtifactSpec {
            name: raw.name.clone(),
            origin,
            archive_member,
            location,
            mirror: ArtifactMirror::default(),
        });
    }
    Ok(out)
}

/// An `archive_member` as tar stores it: relative, `/`-separated, without `.`/`..` components
/// (a leading `./`, as in `tar -czf x.tgz ./bridge`, is dropped).
fn normalise_member(member: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("bad archive_member {member:?}: {why}"));
    if member.starts_with('/') {
        return bad("must be relative to the archive");
    }
    let parts: Vec<&str> = member
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return bad("names no file");
    }
    if parts.contains(&"..") {
        return bad("must not contain `..`");
    }
    if member.ends_with('/') {
        return bad("names a directory");
    }
    Ok(parts.join("/"))
}

/// A reference as the registry client reads it, whose full form (what the index records) also
/// passes the rules `Index::validate` applies when the bundle is read.
fn parse_reference(text: &str) -> Result<Reference, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty reference".into());
    }
    let reference = text
        .parse::<Reference>()
        .map_err(|e| format!("{text:?}: {e}"))?;
    ilha_format::names::check_image_reference(&reference.whole())
        .map_err(|e| format!("{text:?}: {e}"))?;
    Ok(reference)
}

fn check_hex(hex: &str) -> Result<(), String> {
    if hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')) {
        Ok(())
    } else {
        Err(format!(
            "bad sha256 {hex:?}: expected 64 lowercase hex digits"
        ))
    }
}

fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!("bad url {url:?}: expected http:// or https://"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Manifest, ManifestError> {
        parse(Path::new("m.yaml"), text)
    }

    #[test]
    fn full_manifest_parses() {
        let m = parse_str(
            "name: lab\nversion: 1.0\nplatform: linux/arm64/v8\nimages:\n  - busybox:1.36\n  - name: registry.k8s.io/pause:3.2\n    from: 127.0.0.1:5000/k8s/pause:3.2\nbinaries:\n  - name: kubelet\n    url: http://127.0.0.1/kubelet\n    sha256_url: http://127.0.0.1/kubelet.sha256\nfiles:\n  - name: notes.txt\n    path: notes.txt\n",
        )
        .unwrap();
        assert_eq!(m.platform.to_string(), "linux/arm64/v8");
        assert_eq!(m.images[0].name, "docker.io/library/busybox:1.36");
        assert_eq!(m.images[1].name, "registry.k8s.io/pause:3.2");
        assert_eq!(m.images[1].source_text(), "127.0.0.1:5000/k8s/pause:3.2");
        assert!(matches!(
            m.binaries[0].origin,
            ArtifactOrigin::Url {
                checksum: Checksum::Url(_),
                ..
            }
        ));
    }

    #[test]
    fn unknown_key_names_line() {
        let err = parse_str("name: lab\nversion: '1'\nbinaries:\n  - name: a\n    urll: x\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("m.yaml:5:"), "{err}");
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn unknown_key_in_image_map_names_line() {
        let err = parse_str("name: lab\nversion: '1'\nimages:\n  - name: a:1\n    form: b:1\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("m.yaml:5:"), "{err}");
        assert!(err.contains("form"), "{err}");
    }

    #[test]
    fn duplicate_and_checksum_errors() {
        let err = parse_str(
            "name: lab\nversion: '1'\nfiles:\n  - {name: a, path: x}\n  - {name: a, path: y}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("m.yaml:5:") && err.contains("duplicate"),
            "{err}"
        );
        let err =
            parse_str("name: lab\nversion: '1'\nbinaries:\n  - {name: a, url: 'http://x/a'}\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("binary a") && err.contains("sha256"), "{err}");
        let err = parse_str(
            "name: lab\nversion: '1'\nbinaries:\n  - {name: a, url: 'http://x/a', sha256: abc}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bad sha256"), "{err}");
    }

    #[test]
    fn cluster_key_parses_and_checks_versions_with_line() {
        let m = parse_str(
            "name: lab\nversion: '1'\ncluster:\n  kubernetes_version: v1.20.2\n  network: bridge\n",
        )
        .unwrap();
        let declared = m.cluster.as_ref().unwrap();
        assert_eq!(declared.spec.kubernetes_version, "v1.20.2");
        assert_eq!(declared.spec.network, ilha_format::cluster::Network::Bridge);
        assert!(
            declared.location.starts_with("m.yaml:4:"),
            "{}",
            declared.location
        );
        assert_eq!(m.missing_for_cluster().len(), 17, "16 binaries + pause");
        assert!(
            parse_str("name: lab\nversion: '1'\n")
                .unwrap()
                .missing_for_cluster()
                .is_empty()
        );

        let err = parse_str(
            "name: lab\nversion: '1'\ncluster:\n  kubernetes_version: v1.20.2\n  network: bridge\n  cni: calico\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("m.yaml:6:") && err.contains("cni"), "{err}");

        let err = parse_str(
            "name: lab\nversion: '1'\ncluster:\n  kubernetes_version: v1.20.2\n  network: flannel\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("m.yaml:5:") && err.contains("flannel"),
            "{err}"
        );

        let err = parse_str(
            "name: lab\nversion: '1'\ncluster: {kubernetes_version: v1.19.3, network: bridge}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("m.yaml:3:")
                && err.contains("cluster: Kubernetes v1.19.3 is not supported"),
            "{err}"
        );
    }

    #[test]
    fn archive_member_is_normalised_and_checked() {
        let m = parse_str(
            "name: lab\nversion: '1'\nbinaries:\n  - {name: bridge, url: 'http://x/cni.tgz', sha256_url: 'http://x/cni.tgz.sha256', archive_member: ./bridge}\n",
        )
        .unwrap();
        assert_eq!(m.binaries[0].archive_member.as_deref(), Some("bridge"));
        for bad in ["/bin/x", "a/../x", "bin/", "."] {
            let err = parse_str(&format!(
                "name: lab\nversion: '1'\nbinaries:\n  - {{name: x, url: 'http://x/a.tgz', sha256: {}, archive_member: '{bad}'}}\n",
                "0".repeat(64)
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("m.yaml:4:") && err.contains("bad archive_member"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn bad_names_rejected() {
        assert!(parse_str("name: Lab\nversion: '1'\n").is_err());
        assert!(parse_str("name: lab\nversion: '1'\nfiles:\n  - {name: '..', path: x}\n").is_err());
        assert!(parse_str("name: lab\nversion: '1'\nimages:\n  - 'UPPER/Case:x'\n").is_err());
    }

    /// The manifest refuses exactly what `Index::validate` would refuse in the bundle (the rules
    /// live in `ilha_format::names`), naming the line.
    #[test]
    fn names_follow_the_index_rules() {
        for bad in ["../x", "a/b", "-rf", ".hidden", "a..b", "a b", "$(reboot)"] {
            for kind in ["binaries", "files"] {
                let text =
                    format!("name: lab\nversion: '1'\n{kind}:\n  - {{name: '{bad}', path: x}}\n");
                let err = parse_str(&text).unwrap_err().to_string();
                let reason = ilha_format::names::check_artifact_name(bad).unwrap_err();
                assert!(
                    err.starts_with("m.yaml:4:") && err.contains(&reason),
                    "{kind} {bad:?}: {err}"
                );
            }
        }
        let long = "x".repeat(ilha_format::names::MAX_ARTIFACT_NAME + 1);
        let text = format!("name: lab\nversion: '1'\nbinaries:\n  - {{name: {long}, path: x}}\n");
        assert!(
            parse_str(&text)
                .unwrap_err()
                .to_string()
                .contains("bytes long")
        );
        for bad in [
            "'registry.k8s.io/pause:3.2 x'",
            "'registry.k8s.io/pause:$(reboot)'",
            "\"registry.k8s.io/pause:3.2\\nreboot\"",
            "'[::1]:5000/pause:3.2'",
        ] {
            for entry in [
                bad.to_string(),
                format!("{{name: 'a.io/b:1', from: {bad}}}"),
            ] {
                let text = format!("name: lab\nversion: '1'\nimages:\n  - {entry}\n");
                let err = parse_str(&text).unwrap_err().to_string();
                assert!(err.starts_with("m.yaml:4:"), "{entry}: {err}");
            }
        }
        let text = "name: lab\nversion: '1'\nimages:\n  - busybox\n  - {name: 'ilha.test/x:1', from: '127.0.0.1:5880/x:1'}\n";
        let manifest = parse_str(text).unwrap();
        assert_eq!(manifest.images[0].name, "docker.io/library/busybox:latest");
    }
}

#[cfg(test)]
mod mirror_tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Manifest, ManifestError> {
        parse(Path::new("m.yaml"), text)
    }

    #[test]
    fn mirrors_key_parses_with_locations() {
        let m = parse_str(
            "name: lab\nversion: '1'\nmirrors:\n  files:\n    - {from: 'https://dl.k8s.io/', to: 'https://m.example/k8s'}\n  registries:\n    - from: registry.k8s.io\n      to: nexus.example:8443/k8s\n",
        )
        .unwrap();
        assert_eq!(m.mirrors.files[0].from, "https://dl.k8s.io");
        assert_eq!(m.mirrors.files[0].origin, "m.yaml:5:7");
        assert_eq!(m.mirrors.registries[0].to, "nexus.example:8443/k8s");
        assert!(m.mirrors.registries[0].origin.starts_with("m.yaml:7:"));
    }

    #[test]
    fn bad_mirrors_name_the_line() {
        for (entry, needle) in [
            (
                "files:\n    - {from: dl.k8s.io, to: 'https://m.example'}",
                "is not a URL",
            ),
            (
                "files:\n    - {from: 'https://a.example', too: 'https://m.example'}",
                "too",
            ),
            (
                "registries:\n    - {from: registry.k8s.io, to: 'https://nexus.example'}",
                "without a scheme",
            ),
            (
                "registries:\n    - {from: registry.k8s.io, to: 'mirror/k8s'}",
                "registry host",
            ),
            (
                "files:\n    - {from: 'https://a.example', to: 'https://m.example'}\n    - {from: 'https://a.example/', to: 'https://n.example'}",
                "duplicate rule for https://a.example (first at m.yaml:5:7)",
            ),
        ] {
            let text = format!("name: lab\nversion: '1'\nmirrors:\n  {entry}\n");
            let err = parse_str(&text).unwrap_err().to_string();
            assert!(
                err.starts_with("m.yaml:5:") || err.starts_with("m.yaml:6:"),
                "{entry}: {err}"
            );
            assert!(err.contains(needle), "{entry}: {err}");
        }
    }
}

#[cfg(test)]
mod shipped_manifests {
    use std::path::Path;

    /// The manifests in the repository must stay valid for this parser.
    #[test]
    fn repository_manifests_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let example = super::load(&root.join("manifests/example.yaml")).unwrap();
        assert_eq!(example.images.len(), 3);
        assert_eq!(example.binaries.len(), 2);
        let lab = root.join("manifests/lab.yaml");
        if lab.exists() {
            let lab = super::load(&lab).unwrap();
            assert_eq!(lab.images[0].name, "k8s.gcr.io/pause:3.2");
            assert!(lab.cluster.is_some(), "the lab bundle declares its cluster");
            assert!(lab.missing_for_cluster().is_empty());
        }
    }

    /// `manifests/kubernetes-<version>.yaml` cannot be built here (no internet), but it must
    /// parse and hold everything its cluster needs, for the Kubernetes its name says.
    #[test]
    fn upstream_manifests_are_complete_for_their_cluster() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let file_name = path.file_name().unwrap().to_string_lossy().into_owned();
            let Some(version) = file_name
                .strip_prefix("kubernetes-")
                .and_then(|rest| rest.strip_suffix(".yaml"))
            else {
                continue;
            };
            let manifest = super::load(&path).unwrap();
            let declared = manifest
                .cluster
                .as_ref()
                .unwrap_or_else(|| panic!("{file_name} declares no cluster"));
            assert_eq!(declared.spec.kubernetes_version, version, "{file_name}");
            let missing: Vec<String> = manifest
                .missing_for_cluster()
                .iter()
                .map(ToString::to_string)
                .collect();
            assert!(missing.is_empty(), "{file_name} lacks {missing:?}");
            assert!(
                manifest.binaries.iter().all(|b| b.name != "kubeadm"),
                "{file_name}: kubeadm is not needed"
            );
            assert!(
                manifest
                    .images
                    .iter()
                    .any(|i| ilha_format::cluster::COREDNS.matches(&i.name)),
                "{file_name}: CoreDNS image"
            );
            // etcd >= 3.6 has snapshot status/restore only in etcdutl.
            assert!(
                manifest.binaries.iter().any(|b| b.name == "etcdutl"),
                "{file_name}: etcdutl"
            );
            for binary in &manifest.binaries {
                // Statically linked where upstream offers it: runs on hosts older than glibc 2.35.
                if ["containerd", "containerd-shim-runc-v2", "ctr"].contains(&binary.name.as_str())
                {
                    assert!(
                        binary.origin.source_text().contains("/containerd-static-"),
                        "{file_name}: {} from the static archive",
                        binary.name
                    );
                }
                let super::ArtifactOrigin::Url { url, checksum } = &binary.origin else {
                    panic!("{file_name}: {} is not downloaded", binary.name);
                };
                assert!(url.starts_with("https://"), "{url}");
                assert!(
                    matches!(checksum, super::Checksum::Url(_)),
                    "{file_name}: {} pinned by upstream's checksum file",
                    binary.name
                );
                let is_archive = url.ends_with(".tar.gz") || url.ends_with(".tgz");
                assert_eq!(
                    is_archive,
                    binary.archive_member.is_some(),
                    "{file_name}: {}",
                    binary.name
                );
            }
            checked += 1;
        }
        assert!(checked >= 1, "no manifests/kubernetes-*.yaml");
    }
}
