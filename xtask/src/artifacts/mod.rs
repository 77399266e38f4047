//! The lab's stand-in for the internet: Kubernetes v1.20.2 built from Debian's source package,
//! etcd/containerd/runc/CNI from Debian's binary packages, two images, all served locally by a
//! registry (127.0.0.1:5880) and an HTTP mirror (127.0.0.1:5881). See docs/lab-artifacts.md.
//!
//! Layout: `cache_dir/{kubernetes,debs,images}` (slow to make, keyed, survive wipes);
//! `state_dir/{mirror,registry,run}` plus `state_dir/artifacts-*.log`.
pub mod apt;
pub mod catalog;
pub mod cli;
mod cmd;
pub mod daemon;
pub mod debs;
pub mod error;
mod fsutil;
pub mod images;
pub mod kubernetes;
pub mod manifest;
pub mod mirror;
pub mod newer_etcd;
pub mod oci;
pub mod registry;
pub mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use catalog::ChecksumStyle;
pub use error::{Error, Result};

use crate::lab::{LabConfig, MIRROR_ADDR, REGISTRY_ADDR};

/// Everything built, with paths into the cache.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub kubernetes: kubernetes::KubernetesBuild,
    /// Debian package name -> what was unpacked (version recorded).
    pub packages: BTreeMap<String, debs::UnpackedDeb>,
    /// Every binary the mirror publishes, in manifest order.
    pub binaries: Vec<Binary>,
    pub images: Vec<Image>,
    /// Debian 13's etcd 3.5 (with etcdutl): the upgrade tests' second etcd and the upstream
    /// layout's etcdutl stand-in.
    pub newer_etcd: newer_etcd::NewerEtcd,
}

/// A binary as built and as published on the mirror.
#[derive(Debug, Clone)]
pub struct Binary {
    pub name: String,
    /// In the cache.
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// On the mirror, relative to its root (`release/v1.20.2/bin/linux/amd64/kubelet`).
    pub url_path: String,
    pub checksum_path: String,
    pub checksum: ChecksumStyle,
    /// Provenance: `kubernetes v1.20.2 (...)` or `<package> <debian version>`.
    pub origin: String,
}

/// An image as built (OCI layout in the cache) and as pushed to the lab registry.
#[derive(Debug, Clone)]
pub struct Image {
    /// What containerd sees, e.g. `k8s.gcr.io/pause:3.2`.
    pub name: String,
    /// Where the lab registry has it, e.g. `127.0.0.1:5880/k8s/pause:3.2`.
    pub registry_ref: String,
    pub layout: oci::Layout,
}

impl Artifacts {
    pub fn binary(&self, name: &str) -> Option<&Binary> {
        self.binaries.iter().find(|b| b.name == name)
    }
    pub fn image(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.name == name)
    }
}

/// The registry and mirror are up and hold [`Artifacts`].
#[derive(Debug, Clone)]
pub struct Served {
    pub artifacts: Artifacts,
    pub registry: SocketAddr,
    pub mirror: SocketAddr,
    pub mirror_root: PathBuf,
}

impl Served {
    /// `http://127.0.0.1:5881/<path>`
    pub fn mirror_url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.mirror)
    }
}

pub fn registry_addr() -> SocketAddr {
    REGISTRY_ADDR
        .parse()
        .expect("REGISTRY_ADDR is a socket address")
}

pub fn mirror_addr() -> SocketAddr {
    MIRROR_ADDR
        .parse()
        .expect("MIRROR_ADDR is a socket address")
}

/// Builds (or finds in the cache) every artifact. Takes `cache_dir/artifacts.lock` so two
/// processes never build at once; the second finds the first's results.
pub fn ensure_built(config: &LabConfig) -> Result<Artifacts> {
    let cache = &config.cache_dir;
    let _lock = fsutil::FileLock::exclusive(&cache.join("artifacts.lock"))?;
    let kubernetes = kubernetes::ensure(cache)?;
    let packages = debs::ensure(cache)?;
    let binaries = binaries(&kubernetes, &packages, cache)?;
    let busybox = debs::DEB_BINARIES
        .iter()
        .find(|b| b.name == "busybox")
        .expect("busybox is in DEB_BINARIES");
    let busybox_path = packages[busybox.package].binary_path(busybox);
    let specs = [
        (
            images::PAUSE,
            images::pause_spec(&kubernetes.binary(kubernetes::PAUSE))?,
        ),
        (images::BUSYBOX, images::busybox_spec(&busybox_path)?),
    ];
    let mut built = Vec::new();
    for (name, spec) in specs {
        let layout = oci::write_layout(&spec, &cache.join("images").join(name.slug))?;
        built.push(Image {
            name: name.name.into(),
            registry_ref: format!("{}/{}", registry_addr(), name.registry_path),
            layout,
        });
    }
    let newer_etcd = newer_etcd::ensure(cache)?;
    Ok(Artifacts {
        kubernetes,
        packages,
        binaries,
        images: built,
        newer_etcd,
    })
}

fn binaries(
    kubernetes: &kubernetes::KubernetesBuild,
    packages: &BTreeMap<String, debs::UnpackedDeb>,
    cache: &Path,
) -> Result<Vec<Binary>> {
    catalog::mirrored_binaries()
        .into_iter()
        .map(|spec| {
            let (path, digest, origin) = match spec.origin {
                catalog::Origin::Kubernetes => {
                    let info = &kubernetes.info;
                    let digest = info.binaries.get(spec.name).cloned();
                    let sources: Vec<&str> = info.sources.iter().map(|s| s.name.as_str()).collect();
                    let origin = format!(
                        "kubernetes {} built by {} from {}",
                        info.version,
                        info.recipe,
                        sources.join(" + ")
                    );
                    (kubernetes.binary(spec.name), digest, origin)
                }
                catalog::Origin::Deb(package) => {
                    let unpacked = &packages[package];
                    let deb = debs::DEB_BINARIES
                        .iter()
                        .find(|b| b.name == spec.name)
                        .expect("catalog entries come from DEB_BINARIES");
                    let origin = format!("{package} {} ({})", unpacked.version, deb.path);
                    (
                        unpacked.binary_path(deb),
                        unpacked.binaries.get(spec.name).cloned(),
                        origin,
                    )
                }
            };
            let digest = digest.ok_or_else(|| Error::Source {
                dir: cache.into(),
                reason: format!("no recorded digest for {}", spec.name),
            })?;
            Ok(Binary {
                name: spec.name.into(),
                path,
                sha256: digest.sha256,
                size: digest.size,
                url_path: spec.url_path(),
                checksum_path: spec.checksum_path(),
                checksum: spec.checksum,
                origin,
            })
        })
        .collect()
}

/// Builds if needed, lays out the mirror, starts the registry and the mirror (no-op when already
/// running) and pushes the images. Takes `state_dir/artifacts.lock`.
pub fn ensure_served(config: &LabConfig) -> Result<Served> {
    let _lock = fsutil::FileLock::exclusive(&config.state_dir.join("artifacts.lock"))?;
    let artifacts = ensure_built(config)?;
    let mirror_root = config.state_dir.join("mirror");
    mirror::populate(&mirror_root, &artifacts.binaries)?;
    registry::ensure_running(config)?;
    registry::ensure_mirror_running(config, &mirror_root)?;
    for image in &artifacts.images {
        registry::push(image)?;
    }
    Ok(Served {
        artifacts,
        registry: registry_addr(),
        mirror: mirror_addr(),
        mirror_root,
    })
}

/// [`ensure_served`], then the upstream manifest's layout with stand-in bytes ([`upstream`]).
/// Apart, so that only what builds the upstream manifest pays for its archives, not every lab
/// test. Takes `state_dir/artifacts.lock` too.
pub fn ensure_upstream_served(config: &LabConfig) -> Result<(Served, upstream::Published)> {
    let served = ensure_served(config)?;
    let _lock = fsutil::FileLock::exclusive(&config.state_dir.join("artifacts.lock"))?;
    let upstream = upstream::populate(&served.mirror_root, &served.artifacts)?;
    Ok((served, upstream))
}

/// Stops the registry and the mirror. Returns the names of those that were running.
pub fn stop(config: &LabConfig) -> Result<Vec<&'static str>> {
    let mut stopped = Vec::new();
    for daemon in [
        registry::registry_daemon(config),
        registry::mirror_daemon(config),
    ] {
        if daemon.stop()? {
            stopped.push(daemon.name);
        }
    }
    Ok(stopped)
}
