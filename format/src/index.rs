//! The bundle index (`ilha-index.json`): what the bundle contains, signed as a whole.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::FORMAT_V1;
use crate::cluster::{ClusterSpec, KubernetesVersion};
use crate::digest::Sha256;
use crate::error::{Error, Result};
use crate::tarfmt::{MODE_EXEC, MODE_FILE, check_bundle_path};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Always [`FORMAT_V1`].
    pub format: String,
    pub name: String,
    pub version: String,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The cluster this bundle is made for, when its manifest declared one: the installer checks
    /// the bundle against [`crate::cluster::requirements`] of it. Absent from the JSON when
    /// `None`, so bundles without a cluster keep their exact bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSpec>,
    pub images: Vec<ImageRecord>,
    pub binaries: Vec<ArtifactRecord>,
    pub files: Vec<ArtifactRecord>,
    /// Every tar entry after the index and its signature, in tar order (sorted by path bytes).
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    /// Full reference as containerd will see it, e.g. `registry.k8s.io/pause:3.2`.
    pub name: String,
    /// Where it was pulled from (same as `name` unless a mirror was used).
    pub source: String,
    /// `sha256:<hex>` of the image manifest stored under `images/blobs/sha256/`.
    pub manifest_digest: String,
    pub media_type: String,
    /// Bytes of manifest + config + layers (blobs shared with other images counted here too).
    pub size: u64,
    pub layers: u32,
}

/// A binary (stored 0755) or a data file (0644), stored at `blobs/sha256/<sha256>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactRecord {
    pub name: String,
    pub sha256: Sha256,
    pub size: u64,
    /// URL or path as written in the manifest.
    pub source: String,
}

impl ArtifactRecord {
    /// Path of this artifact's content inside the bundle.
    pub fn bundle_path(&self) -> String {
        blob_path(&self.sha256)
    }
}

/// Path of a binary's or file's content: `blobs/sha256/<hex>`.
pub fn blob_path(digest: &Sha256) -> String {
    format!("blobs/sha256/{digest}")
}

/// Path of an OCI blob: `images/blobs/sha256/<hex>`.
pub fn image_blob_path(digest: &Sha256) -> String {
    format!("images/blobs/sha256/{digest}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub path: String,
    pub sha256: Sha256,
    pub size: u64,
    /// `0o644` (420) or `0o755` (493).
    pub mode: u32,
}

impl Index {
    /// A new empty index of the current format.
    pub fn new(name: &str, version: &str, platform: &str) -> Self {
        Index {
            format: FORMAT_V1.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
            platform: platform.to_owned(),
            cluster: None,
            images: Vec::new(),
            binaries: Vec::new(),
            files: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// The exact bytes stored in the bundle: pretty JSON, trailing newline. Deterministic.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("index serialisation cannot fail");
        out.push(b'\n');
        out
    }

    /// Parses and validates (see [`Index::validate`]).
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Index> {
        let index: Index = serde_json::from_slice(bytes).map_err(|e| Error::InvalidIndex {
            reason: format!("{INDEX}: {e}", INDEX = crate::INDEX_PATH),
        })?;
        index.validate()?;
        Ok(index)
    }

    /// The trusted comment of the index signature: `ilha bundle <name> <version>`.
    pub fn trusted_comment(&self) -> String {
        format!("ilha bundle {} {}", self.name, self.version)
    }

    /// Sum of all entry sizes (what is stored, after deduplication).
    pub fn content_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }

    /// Checks the invariants a reader relies on: format, entry order/uniqueness, safe paths,
    /// modes, names of binaries, files and images by the bundler's own rules ([`crate::names`]),
    /// and that every binary/file/image manifest points at a listed entry of that size.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidIndex { reason });
        if self.format != FORMAT_V1 {
            return invalid(format!(
                "format is {:?}, this ilha reads {FORMAT_V1:?}",
                self.format
            ));
        }
        // The bundler's own rules (`crate::names`), so that the two can't drift apart.
        for check in [
            crate::names::check_bundle_name(&self.name),
            crate::names::check_version(&self.version),
            crate::names::check_platform(&self.platform),
        ] {
            if let Err(reason) = check {
                return invalid(reason);
            }
        }
        // Only the form is checked here: whether ilha supports the version is for the installer
        // to say (via `cluster::missing`), after the index has been read and shown.
        if let Some(cluster) = &self.cluster
            && let Err(err) = KubernetesVersion::parse(&cluster.kubernetes_version)
        {
            return invalid(format!("cluster: {err}"));
        }
        for pair in self.entries.windows(2) {
            if pair[0].path.as_bytes() >= pair[1].path.as_bytes() {
                return invalid(format!(
                    "entries not strictly sorted by path: {:?} then {:?}",
                    pair[0].path, pair[1].path
                ));
            }
        }
        for e in &self.entries {
            if e.path == crate::INDEX_PATH || e.path == crate::INDEX_SIG_PATH {
                return invalid(format!("entry {:?} is reserved", e.path));
            }
            if let Err(reason) = check_bundle_path(&e.path) {
                return invalid(format!("entry {:?}: {reason}", e.path));
            }
            if e.mode != MODE_FILE && e.mode != MODE_EXEC {
                return invalid(format!(
                    "entry {:?}: mode {:o} (644 or 755 expected)",
                    e.path, e.mode
                ));
            }
        }
        let find = |path: &str| {
            self.entries
                .binary_search_by(|e| e.path.as_str().cmp(path))
                .ok()
        };
        for (kind, list, mode) in [
            ("binary", &self.binaries, MODE_EXEC),
            ("file", &self.files, MODE_FILE),
        ] {
            let mut names = HashSet::new();
            for a in list {
                // The installer puts these names into paths and scripts on hosts.
                if let Err(reason) = crate::names::check_artifact_name(&a.name) {
                    return invalid(format!("{kind} {:?}: {reason}", a.name));
                }
                if !names.insert(a.name.as_str()) {
                    return invalid(format!("{kind} {:?} listed twice", a.name));
                }
                let path = a.bundle_path();
                let Some(i) = find(&path) else {
                    return invalid(format!("{kind} {:?}: no entry {path:?}", a.name));
                };
                let e = &self.entries[i];
                if e.size != a.size || (kind == "binary" && e.mode != mode) {
                    return invalid(format!(
                        "{kind} {:?}: entry {path:?} has size {} mode {:o}",
                        a.name, e.size, e.mode
                    ));
                }
            }
        }
        let mut names = HashSet::new();
        for img in &self.images {
            for (what, reference) in [("", &img.name), (" source", &img.source)] {
                if let Err(reason) = crate::names::check_image_reference(reference) {
                    return invalid(format!("image{what} {reference:?}: {reason}"));
                }
            }
            if !names.insert(img.name.as_str()) {
                return invalid(format!("image {:?} listed twice", img.name));
            }
            let digest =
                Sha256::from_oci(&img.manifest_digest).map_err(|e| Error::InvalidIndex {
                    reason: format!("image {:?}: {e}", img.name),
                })?;
            let path = image_blob_path(&digest);
            if find(&path).is_none() {
                return invalid(format!(
                    "image {:?}: no entry {path:?} for its manifest",
                    img.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample_index() -> Index {
        let content = b"#!/bin/sh\necho hi\n";
        let digest = Sha256::of(content);
        let mut index = Index::new("lab", "1.0.0", "linux/amd64");
        index.binaries.push(ArtifactRecord {
            name: "hello".into(),
            sha256: digest,
            size: content.len() as u64,
            source: "./hello".into(),
        });
        index.entries.push(Entry {
            path: blob_path(&digest),
            sha256: digest,
            size: content.len() as u64,
            mode: 0o755,
        });
        index
    }

    #[test]
    fn json_round_trip_is_stable() {
        let index = sample_index();
        let bytes = index.to_json_bytes();
        assert!(bytes.ends_with(b"}\n"));
        let back = Index::from_json_bytes(&bytes).unwrap();
        assert_eq!(back, index);
        assert_eq!(back.to_json_bytes(), bytes);
    }

    #[test]
    fn cluster_is_absent_unless_set_and_round_trips() {
        let index = sample_index();
        let bytes = index.to_json_bytes();
        assert!(!String::from_utf8_lossy(&bytes).contains("cluster"));

        let mut index = sample_index();
        index.cluster = Some(ClusterSpec {
            kubernetes_version: "v1.20.2".into(),
            network: crate::cluster::Network::Bridge,
        });
        let bytes = index.to_json_bytes();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.contains(
                "\"platform\": \"linux/amd64\",\n  \"cluster\": {\n    \"kubernetes_version\": \"v1.20.2\",\n    \"network\": \"bridge\"\n  },\n"
            ),
            "{text}"
        );
        let back = Index::from_json_bytes(&bytes).unwrap();
        assert_eq!(back, index);
        assert_eq!(back.to_json_bytes(), bytes);

        // `null` reads as no cluster.
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample_index().to_json_bytes()).unwrap();
        v["cluster"] = serde_json::Value::Null;
        let back = Index::from_json_bytes(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back.cluster, None);

        index.cluster.as_mut().unwrap().kubernetes_version = "1.20".into();
        let err = index.validate().unwrap_err().to_string();
        assert!(
            err.contains("cluster: ") && err.contains("vMAJOR.MINOR.PATCH"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&sample_index().to_json_bytes()).unwrap();
        v["entries"][0]["owner"] = serde_json::json!("root");
        let err = Index::from_json_bytes(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.to_string().contains("unknown field `owner`"), "{err}");
    }

    #[test]
    fn names_follow_the_bundlers_rules() {
        for bad in [
            "../x",
            "a/b",
            "..",
            ".",
            "-x",
            ".x",
            "a b",
            "a\nb",
            "$(reboot)",
            "",
        ] {
            let mut index = sample_index();
            index.binaries[0].name = bad.into();
            let err = index.validate().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("index: binary {bad:?}: ")),
                "{bad:?}: {err}"
            );

            let mut index = sample_index();
            let mut file = index.binaries.remove(0);
            file.name = bad.into();
            index.files.push(file);
            index.entries[0].mode = MODE_FILE;
            let err = index.validate().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("index: file {bad:?}: ")),
                "{bad:?}: {err}"
            );
        }
        let image = |name: &str| {
            let manifest = b"{}";
            let digest = Sha256::of(manifest);
            let mut index = sample_index();
            index.entries.push(Entry {
                path: image_blob_path(&digest),
                sha256: digest,
                size: 2,
                mode: MODE_FILE,
            });
            index.images.push(ImageRecord {
                name: name.into(),
                source: "registry.k8s.io/pause:3.2".into(),
                manifest_digest: digest.to_oci(),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                size: 2,
                layers: 0,
            });
            index
        };
        image("registry.k8s.io/pause:3.2").validate().unwrap();
        for bad in [
            "registry.k8s.io/pause:$(reboot)",
            "registry.k8s.io/pause:3.2\nreboot",
            "registry.k8s.io/pause:3.2 x",
            "registry.k8s.io/pa'use",
            "registry.k8s.io/../pause",
        ] {
            let err = image(bad).validate().unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("index: image {bad:?}: ")),
                "{bad:?}: {err}"
            );
        }
        let mut index = sample_index();
        index.platform = "linux/amd64;reboot".into();
        let err = index.validate().unwrap_err().to_string();
        assert!(err.contains("bad platform \"linux/amd64;reboot\""), "{err}");

        let mut index = image("registry.k8s.io/pause:3.2");
        index.images[0].source = "evil;reboot".into();
        let err = index.validate().unwrap_err().to_string();
        assert!(err.contains("image source \"evil;reboot\": "), "{err}");
    }

    #[test]
    fn validation_catches_bad_entries() {
        let mut index = sample_index();
        index.entries[0].path = "../etc/passwd".into();
        assert!(index.validate().unwrap_err().to_string().contains(".."));

        let mut index = sample_index();
        let dup = index.entries[0].clone();
        index.entries.push(dup);
        assert!(index.validate().unwrap_err().to_string().contains("sorted"));

        let mut index = sample_index();
        index.entries[0].mode = 0o777;
        assert!(index.validate().is_err());

        let mut index = sample_index();
        index.entries.clear();
        assert!(
            index
                .validate()
                .unwrap_err()
                .to_string()
                .contains("no entry")
        );
    }
}
