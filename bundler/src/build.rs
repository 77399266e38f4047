//! Orchestration: manifest -> pulls and downloads (bounded, parallel) into staging -> pack + sign.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use ilha_format::index::{blob_path, image_blob_path};
use ilha_format::{ArtifactRecord, ImageRecord, Index, PackOptions};
use tokio::sync::watch;

use crate::download::{ArtifactKind, Downloader, StoredArtifact};
use crate::error::{Error, Result};
use crate::layout::{LayoutImage, Staging, write_layout_index};
use crate::manifest::{self, ImageMirror, Platform};
use crate::mirror::{Mirrors, Rewrite};
use crate::progress::{PackBar, Reporter};
use crate::registry::{Registry, ResolvedImage};

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub manifest: PathBuf,
    pub key: PathBuf,
    pub password: Option<String>,
    /// Default: `bundles/<name>-<version>.tar.zst`.
    pub out: Option<PathBuf>,
    /// `host:port` registries spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Overrides the manifest's platform.
    pub platform: Option<Platform>,
    /// Downloads in flight at once, across all images and artifacts.
    pub jobs: usize,
    pub zstd_level: i32,
}

/// The command line's rewrites; they win over the manifest's `mirrors:`.
#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    /// `--mirror FROM=TO`: URL prefixes.
    pub files: Vec<Rewrite>,
    /// `--registry-mirror FROM=TO`: registry[/path] prefixes.
    pub registries: Vec<Rewrite>,
}

#[derive(Debug, Clone)]
pub struct BuildSummary {
    pub bundle: PathBuf,
    pub signature: PathBuf,
    pub images: usize,
    pub binaries: usize,
    pub files: usize,
    /// Image blobs (manifests, configs, layers) referenced by all images together.
    pub image_blobs_referenced: usize,
    /// Image blobs actually stored (after deduplication).
    pub image_blobs_stored: usize,
    pub content_bytes: u64,
    pub bundle_bytes: u64,
    pub elapsed: Duration,
    /// Every source a mirror moved, in manifest order.
    pub mirrored: Vec<MirroredSource>,
}

/// A source fetched through a mirror: what, its canonical address, where it came from, and
/// the rule that sent it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirroredSource {
    /// `binary kubelet`, `binary kubelet (checksum file)`, `image registry.k8s.io/pause:3.10.2`.
    pub what: String,
    pub canonical: String,
    pub fetched: String,
    pub rule: Rewrite,
}

impl std::fmt::Display for MirroredSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} from {} (mirror {})",
            self.what, self.canonical, self.fetched, self.rule
        )
    }
}

/// Moves the manifest's sources to their mirrors (command line first, then `mirrors:`), and
/// lists what moved. A rule that matches no source at all is refused.
pub fn route_through_mirrors(
    manifest: &mut manifest::Manifest,
    cli_files: &[Rewrite],
    cli_registries: &[Rewrite],
) -> Result<Vec<MirroredSource>> {
    let mirrors = Mirrors {
        cli_files: cli_files.to_vec(),
        cli_registries: cli_registries.to_vec(),
        manifest_files: manifest.mirrors.files.clone(),
        manifest_registries: manifest.mirrors.registries.clone(),
    };
    if mirrors.is_empty() {
        return Ok(Vec::new());
    }
    let mut urls: Vec<String> = Vec::new();
    for spec in manifest.binaries.iter().chain(&manifest.files) {
        if let manifest::ArtifactOrigin::Url { url, checksum } = &spec.origin {
            urls.push(url.clone());
            if let manifest::Checksum::Url(sum_url) = checksum {
                urls.push(sum_url.clone());
            }
        }
    }
    let url_refs: Vec<&str> = urls.iter().map(String::as_str).collect();
    let sources: Vec<&oci_client::Reference> = manifest.images.iter().map(|i| &i.source).collect();
    let unused = mirrors.unused(&url_refs, &sources);
    if !unused.is_empty() {
        return Err(Error::UnusedMirror {
            file: manifest.file.display().to_string(),
            rules: unused.iter().map(ToString::to_string).collect(),
        });
    }

    let mut moved = Vec::new();
    for (kind, list) in [
        ("binary", &mut manifest.binaries),
        ("file", &mut manifest.files),
    ] {
        for spec in list.iter_mut() {
            let manifest::ArtifactOrigin::Url { url, checksum } = &spec.origin else {
                continue;
            };
            spec.mirror.url = mirrors.url(url);
            if let Some(redirect) = &spec.mirror.url {
                moved.push(MirroredSource {
                    what: format!("{kind} {}", spec.name),
                    canonical: url.clone(),
                    fetched: redirect.url.clone(),
                    rule: redirect.rule.clone(),
                });
            }
            if let manifest::Checksum::Url(sum_url) = checksum {
                spec.mirror.checksum = mirrors.url(sum_url);
                if let Some(redirect) = &spec.mirror.checksum {
                    moved.push(MirroredSource {
                        what: format!("{kind} {} (checksum file)", spec.name),
                        canonical: sum_url.clone(),
                        fetched: redirect.url.clone(),
                        rule: redirect.rule.clone(),
                    });
                }
            }
        }
    }
    for image in &mut manifest.images {
        let Some(found) = mirrors.image(&image.source) else {
            continue;
        };
        let (pull, rule) = found.map_err(|message| Error::Image {
            image: image.name.clone(),
            location: image.location.clone(),
            message,
        })?;
        moved.push(MirroredSource {
            what: format!("image {}", image.name),
            canonical: image.source.whole(),
            fetched: pull.whole(),
            rule: rule.clone(),
        });
        image.mirror = Some(ImageMirror { pull, rule });
    }
    Ok(moved)
}

/// Set to true (by a Ctrl-C handler) to abort a build and clean up.
pub type CancelReceiver = watch::Receiver<bool>;

/// The default output path for a manifest's bundle.
pub fn default_output(name: &str, version: &str) -> PathBuf {
    PathBuf::from("bundles").join(format!("{name}-{version}.tar.zst"))
}

pub async fn build(options: &BuildOptions, cancel: CancelReceiver) -> Result<BuildSummary> {
    build_through(options, &MirrorOptions::default(), cancel).await
}

/// [`build`], with the command line's mirror rules.
pub async fn build_through(
    options: &BuildOptions,
    mirrors: &MirrorOptions,
    cancel: CancelReceiver,
) -> Result<BuildSummary> {
    let started = Instant::now();
    let mut manifest = manifest::load(&options.manifest)?;
    // A bundle that could not install its cluster is refused before any download.
    if let Some(declared) = &manifest.cluster {
        let missing = manifest.missing_for_cluster();
        if !missing.is_empty() {
            return Err(Error::IncompleteCluster {
                location: declared.location.clone(),
                kubernetes_version: declared.spec.kubernetes_version.clone(),
                network: declared.spec.network.to_string(),
                missing: missing.iter().map(ToString::to_string).collect(),
            });
        }
    }
    let mirrored = route_through_mirrors(&mut manifest, &mirrors.files, &mirrors.registries)?;
    let platform = options
        .platform
        .clone()
        .unwrap_or_else(|| manifest.platform.clone());
    // Load the key first: a wrong password must not cost a download.
    let key = ilha_format::load_secret_key(&options.key, options.password.as_deref())?;
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| default_output(&manifest.name, &manifest.version));

    let staging = Arc::new(Staging::new_for(&out)?);
    let reporter = Reporter::new();
    let registry = Arc::new(Registry::new(
        &options.insecure_registries,
        platform.clone(),
    ));
    let downloader = Arc::new(Downloader::new()?);
    let jobs = options.jobs.max(1);

    let fetch = fetch_all(&manifest, &registry, &downloader, &staging, &reporter, jobs);
    let mut cancel_fetch = cancel.clone();
    let (images, artifacts, referenced) = tokio::select! {
        result = fetch => result?,
        _ = cancel_fetch.wait_for(|c| *c) => return Err(Error::Interrupted),
    };

    let layout_images: Vec<LayoutImage> = images
        .iter()
        .map(|img| LayoutImage {
            name: &img.spec.name,
            media_type: &img.media_type,
            manifest_digest: img.manifest_digest,
            manifest_size: img.manifest_bytes.len() as u64,
        })
        .collect();
    write_layout_index(&staging, &layout_images)?;

    let mut index = Index::new(&manifest.name, &manifest.version, &platform.to_string());
    index.cluster = manifest.cluster.as_ref().map(|c| c.spec.clone());
    index.images = images
        .iter()
        .map(|img| ImageRecord {
            name: img.spec.name.clone(),
            source: img.spec.source_text(),
            manifest_digest: img.manifest_digest.to_oci(),
            media_type: img.media_type.clone(),
            size: img.total_size(),
            layers: img.layers.len() as u32,
        })
        .collect();
    index.images.sort_by(|a, b| a.name.cmp(&b.name));
    let records = |kind: ArtifactKind| -> Vec<ArtifactRecord> {
        let mut list: Vec<ArtifactRecord> = artifacts
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| ArtifactRecord {
                name: a.name.clone(),
                sha256: a.sha256,
                size: staging.size_of(&blob_path(&a.sha256)).unwrap_or(0),
                source: a.source.clone(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    };
    index.binaries = records(ArtifactKind::Binary);
    index.files = records(ArtifactKind::File);

    let sources = staging.sources();
    let image_blobs_stored = sources
        .iter()
        .filter(|s| s.path_in_bundle.starts_with("images/blobs/"))
        .count();
    let pack_bar = reporter.bytes_bar("pack");
    let pack_out = out.clone();
    let pack_options = PackOptions {
        zstd_level: options.zstd_level,
        ..PackOptions::default()
    };
    // Packing is blocking work; it is not cancelled halfway (a half-written file is removed by
    // pack itself on error), but a Ctrl-C during it removes the finished output below.
    let report = tokio::task::spawn_blocking(move || {
        ilha_format::pack_with(
            index,
            sources,
            &key,
            &pack_out,
            &pack_options,
            &PackBar(pack_bar),
        )
    })
    .await
    .expect("pack task panicked")?;
    drop(staging);
    if *cancel.borrow() {
        let _ = std::fs::remove_file(&report.bundle);
        let _ = std::fs::remove_file(&report.signature);
        return Err(Error::Interrupted);
    }

    Ok(BuildSummary {
        bundle: report.bundle,
        signature: report.signature,
        images: images.len(),
        binaries: manifest.binaries.len(),
        files: manifest.files.len(),
        image_blobs_referenced: referenced,
        image_blobs_stored,
        content_bytes: report.content_bytes,
        bundle_bytes: report.bundle_bytes,
        elapsed: started.elapsed(),
        mirrored,
    })
}

type FetchResult = (Vec<ResolvedImage>, Vec<StoredArtifact>, usize);

/// Resolves every image, then downloads all blobs and artifacts with at most `jobs` in flight.
async fn fetch_all(
    manifest: &manifest::Manifest,
    registry: &Arc<Registry>,
    downloader: &Arc<Downloader>,
    staging: &Arc<Staging>,
    reporter: &Reporter,
    jobs: usize,
) -> Result<FetchResult> {
    let images: Vec<ResolvedImage> = futures_util::stream::iter(manifest.images.iter())
        .map(|spec| registry.resolve(spec))
        .buffered(jobs)
        .try_collect()
        .await?;

    let bar = reporter.bytes_bar("fetch");
    let mut tasks: Vec<BoxFuture<'static, Result<Option<StoredArtifact>>>> = Vec::new();
    let mut referenced = 0;
    for image in &images {
        referenced += 1 + image.blobs().count();
        let manifest_path = image_blob_path(&image.manifest_digest);
        if staging.claim(&manifest_path) {
            let tmp = staging.tmp_path();
            std::fs::write(&tmp, &image.manifest_bytes).map_err(|e| Error::io(&tmp, e))?;
            staging.commit(
                &tmp,
                &manifest_path,
                image.manifest_digest,
                image.manifest_bytes.len() as u64,
                false,
            )?;
        }
        let image = Arc::new(image.clone());
        for blob in image.blobs() {
            let digest =
                ilha_format::Sha256::from_oci(&blob.digest).expect("resolve checked blob digests");
            if !staging.claim(&image_blob_path(&digest)) {
                continue;
            }
            bar.inc_length(blob.size);
            let (registry, staging, bar, image, blob) = (
                registry.clone(),
                staging.clone(),
                bar.clone(),
                image.clone(),
                blob.clone(),
            );
            tasks.push(
                async move {
                    registry.fetch_blob(&image, &blob, &staging, &bar).await?;
                    Ok(None)
                }
                .boxed(),
            );
        }
    }
    for (kind, list) in [
        (ArtifactKind::Binary, &manifest.binaries),
        (ArtifactKind::File, &manifest.files),
    ] {
        for spec in list {
            let (downloader, staging, bar, spec) = (
                downloader.clone(),
                staging.clone(),
                bar.clone(),
                spec.clone(),
            );
            tasks.push(
                async move { Ok(Some(downloader.fetch(kind, &spec, &staging, &bar).await?)) }
                    .boxed(),
            );
        }
    }
    let artifacts: Vec<Option<StoredArtifact>> = futures_util::stream::iter(tasks)
        .buffer_unordered(jobs)
        .try_collect()
        .await?;
    bar.finish_and_clear();
    Ok((
        images,
        artifacts.into_iter().flatten().collect(),
        referenced,
    ))
}
