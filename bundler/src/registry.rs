//! Pulling images with `oci-client`: exact manifest bytes (so digests match), platform selection
//! for indexes, and streaming blob downloads verified into the staging layout.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use ilha_format::Sha256;
use ilha_format::digest::Sha256Hasher;
use ilha_format::index::image_blob_path;
use indicatif::ProgressBar;
use oci_client::Client;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE,
    OCI_IMAGE_MEDIA_TYPE, OciDescriptor,
};
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result, chain};
use crate::layout::Staging;
use crate::manifest::{ImageSpec, Platform};

const ACCEPTED_MANIFESTS: &[&str] = &[
    OCI_IMAGE_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

/// A content descriptor as found in manifests and indexes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<DescriptorPlatform>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DescriptorPlatform {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestProbe {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// An image whose manifest is fetched and checked; its blobs are still to be fetched.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub spec: ImageSpec,
    pub manifest_bytes: Bytes,
    pub manifest_digest: Sha256,
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl ResolvedImage {
    /// Manifest + config + layers, in bytes.
    pub fn total_size(&self) -> u64 {
        self.manifest_bytes.len() as u64
            + self.config.size
            + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// Config and layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(self.layers.iter())
    }
}

pub struct Registry {
    client: Client,
    platform: Platform,
}

impl Registry {
    /// `insecure` lists `host:port` registries reached over plain HTTP.
    pub fn new(insecure: &[String], platform: Platform) -> Self {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure.to_vec()),
            // We choose the platform ourselves, from the raw index.
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        Registry {
            client: Client::new(config),
            platform,
        }
    }

    fn registry_error(&self, spec: &ImageSpec, what: &str, err: &dyn std::error::Error) -> Error {
        Error::Registry {
            image: spec.name.clone(),
            location: spec.location.clone(),
            source_ref: spec.pull_text(),
            what: what.to_owned(),
            message: chain(err),
        }
    }

    fn image_error(spec: &ImageSpec, message: String) -> Error {
        Error::Image {
            image: spec.name.clone(),
            location: spec.location.clone(),
            message,
        }
    }

    /// Fetches the manifest (through an index if needed) and checks its digest.
    pub async fn resolve(&self, spec: &ImageSpec) -> Result<ResolvedImage> {
        let auth = docker_config_auth(spec.pull_reference().resolve_registry());
        let (bytes, _) = self
            .client
            .pull_manifest_raw(spec.pull_reference(), &auth, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| self.registry_error(spec, "manifest", &e))?;
        let top_digest = Sha256::of(&bytes);
        if let Some(pinned) = spec.pull_reference().digest()
            && pinned != top_digest.to_oci()
        {
            return Err(Self::image_error(
                spec,
                format!(
                    "manifest digest mismatch: expected {pinned}, found {}",
                    top_digest.to_oci()
                ),
            ));
        }
        let probe = parse_probe(spec, &bytes)?;
        let (bytes, probe, digest) = match probe.manifests {
            Some(entries) => {
                let chosen = self.pick_platform(spec, &entries)?;
                let platform_ref = spec
                    .pull_reference()
                    .clone_with_digest(chosen.digest.clone());
                let (bytes, _) = self
                    .client
                    .pull_manifest_raw(&platform_ref, &auth, ACCEPTED_MANIFESTS)
                    .await
                    .map_err(|e| {
                        self.registry_error(spec, &format!("manifest {}", chosen.digest), &e)
                    })?;
                let digest = Sha256::of(&bytes);
                if digest.to_oci() != chosen.digest || bytes.len() as u64 != chosen.size {
                    return Err(Self::image_error(
                        spec,
                        format!(
                            "platform manifest mismatch: index says {} ({} bytes), got {} ({} bytes)",
                            chosen.digest,
                            chosen.size,
                            digest.to_oci(),
                            bytes.len()
                        ),
                    ));
                }
                let probe = parse_probe(spec, &bytes)?;
                if probe.manifests.is_some() {
                    return Err(Self::image_error(
                        spec,
                        "nested image index is not supported".into(),
                    ));
                }
                (bytes, probe, digest)
            }
            None => (bytes, probe, top_digest),
        };
        let media_type = probe
            .media_type
            .clone()
            .unwrap_or_else(|| OCI_IMAGE_MEDIA_TYPE.to_owned());
        let (Some(config), Some(layers)) = (probe.config, probe.layers) else {
            return Err(Self::image_error(
                spec,
                format!("manifest {} has no config or layers", digest.to_oci()),
            ));
        };
        for d in std::iter::once(&config).chain(layers.iter()) {
            Sha256::from_oci(&d.digest).map_err(|e| {
                Self::image_error(spec, format!("unsupported blob digest {}: {e}", d.digest))
            })?;
        }
        Ok(ResolvedImage {
            spec: spec.clone(),
            manifest_bytes: bytes,
            manifest_digest: digest,
            media_type,
            config,
            layers,
        })
    }

    fn pick_platform<'a>(
        &self,
        spec: &ImageSpec,
        entries: &'a [Descriptor],
    ) -> Result<&'a Descriptor> {
        let want = &self.platform;
        let matching = |d: &&Descriptor| {
            d.platform.as_ref().is_some_and(|p| {
                p.os == want.os
                    && p.architecture == want.architecture
                    && match &want.variant {
                        Some(v) => p.variant.as_deref() == Some(v.as_str()),
                        None => true,
                    }
            })
        };
        // Without a requested variant, prefer an entry without one (or the first match).
        entries
            .iter()
            .filter(matching)
            .min_by_key(|d| {
                d.platform
                    .as_ref()
                    .and_then(|p| p.variant.as_ref())
                    .is_some()
            })
            .ok_or_else(|| {
                let available: Vec<String> = entries
                    .iter()
                    .filter_map(|d| d.platform.as_ref())
                    .map(|p| match &p.variant {
                        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                        None => format!("{}/{}", p.os, p.architecture),
                    })
                    .collect();
                Self::image_error(
                    spec,
                    format!(
                        "no manifest for platform {want} in the index (available: {})",
                        available.join(", ")
                    ),
                )
            })
    }

    /// Streams one blob into staging, checking size and digest on the way.
    pub async fn fetch_blob(
        &self,
        image: &ResolvedImage,
        blob: &Descriptor,
        staging: &Staging,
        bar: &ProgressBar,
    ) -> Result<()> {
        let spec = &image.spec;
        let expected = Sha256::from_oci(&blob.digest)
            .map_err(|e| Self::image_error(spec, format!("blob {}: {e}", blob.digest)))?;
        let desc = OciDescriptor {
            media_type: blob.media_type.clone(),
            digest: blob.digest.clone(),
            size: blob.size as i64,
            ..Default::default()
        };
        let what = format!("blob {}", blob.digest);
        let mut stream = self
            .client
            .pull_blob_stream(spec.pull_reference(), &desc)
            .await
            .map_err(|e| self.registry_error(spec, &what, &e))?;
        let tmp = staging.tmp_path();
        let file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Error::io(&tmp, e))?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Sha256Hasher::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.registry_error(spec, &what, &e))?;
            hasher.update(&chunk);
            if hasher.size() > blob.size {
                return Err(Self::image_error(
                    spec,
                    format!("{what}: more than the {} bytes declared", blob.size),
                ));
            }
            out.write_all(&chunk)
                .await
                .map_err(|e| Error::io(&tmp, e))?;
            bar.inc(chunk.len() as u64);
        }
        out.flush().await.map_err(|e| Error::io(&tmp, e))?;
        drop(out);
        let (found, size) = hasher.finish_with_size();
        if size != blob.size {
            return Err(Self::image_error(
                spec,
                format!(
                    "{what}: got {size} bytes, the manifest declares {}",
                    blob.size
                ),
            ));
        }
        if found != expected {
            return Err(Error::DigestMismatch {
                what: format!("image {} blob", spec.name),
                location: spec.location.clone(),
                url: spec.pull_text(),
                expected: expected.to_string(),
                found: found.to_string(),
            });
        }
        staging.commit(&tmp, &image_blob_path(&expected), expected, size, false)
    }
}

/// Basic auth from `$DOCKER_CONFIG/config.json` or `~/.docker/config.json` (`auths.<host>.auth` =
/// base64 `user:password`), else anonymous. Credential helpers are not supported.
pub fn docker_config_auth(registry: &str) -> RegistryAuth {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => std::path::PathBuf::from(dir).join("config.json"),
        None => match std::env::var_os("HOME") {
            Some(home) => std::path::PathBuf::from(home).join(".docker/config.json"),
            None => return RegistryAuth::Anonymous,
        },
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return RegistryAuth::Anonymous;
    };
    auth_from_config(&text, registry).unwrap_or(RegistryAuth::Anonymous)
}

fn auth_from_config(config_json: &str, registry: &str) -> Option<RegistryAuth> {
    use base64::Engine as _;
    let config: serde_json::Value = serde_json::from_str(config_json).ok()?;
    let auths = config.get("auths")?.as_object()?;
    // Docker Hub is stored under its legacy v1 URL.
    let docker_hub = registry == "index.docker.io" || registry == "docker.io";
    let entry = auths.iter().find_map(|(key, value)| {
        let host = key
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or("");
        let matches =
            host == registry || (docker_hub && (host == "index.docker.io" || host == "docker.io"));
        matches.then_some(value)
    })?;
    let encoded = entry.get("auth")?.as_str()?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some(RegistryAuth::Basic(user.to_owned(), password.to_owned()))
}

fn parse_probe(spec: &ImageSpec, bytes: &[u8]) -> Result<ManifestProbe> {
    serde_json::from_slice(bytes).map_err(|e| Error::Image {
        image: spec.name.clone(),
        location: spec.location.clone(),
        message: format!("manifest is not valid JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_basic_auth() {
        // "user:pa:ss" in base64.
        let config = r#"{"auths": {"https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                          "127.0.0.1:5000": {"auth": "YTpi"}}}"#;
        match auth_from_config(config, "index.docker.io") {
            Some(RegistryAuth::Basic(u, p)) => {
                assert_eq!((u.as_str(), p.as_str()), ("user", "pa:ss"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            auth_from_config(config, "127.0.0.1:5000"),
            Some(RegistryAuth::Basic(..))
        ));
        assert!(auth_from_config(config, "quay.io").is_none());
    }
}
