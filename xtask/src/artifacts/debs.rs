//! etcd, containerd, runc, CNI plugins and busybox taken from Debian's binary packages:
//! `apt-get download` into the cache, `dpkg-deb -x`, pick the binaries.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};
use super::kubernetes::FileDigest;
use super::{apt, cmd, fsutil};

/// One binary out of a Debian package.
#[derive(Debug, Clone, Copy)]
pub struct DebBinary {
    pub package: &'static str,
    /// Path inside the package.
    pub path: &'static str,
    pub name: &'static str,
}

const fn deb(package: &'static str, path: &'static str, name: &'static str) -> DebBinary {
    DebBinary {
        package,
        path,
        name,
    }
}

/// Everything the lab takes from binary packages (busybox goes into an image, not the mirror).
pub const DEB_BINARIES: &[DebBinary] = &[
    deb("etcd-server", "usr/bin/etcd", "etcd"),
    deb("etcd-client", "usr/bin/etcdctl", "etcdctl"),
    deb("containerd", "usr/bin/containerd", "containerd"),
    deb("containerd", "usr/bin/ctr", "ctr"),
    deb(
        "containerd",
        "usr/bin/containerd-shim-runc-v2",
        "containerd-shim-runc-v2",
    ),
    deb("runc", "usr/sbin/runc", "runc"),
    deb(
        "containernetworking-plugins",
        "usr/lib/cni/bridge",
        "bridge",
    ),
    deb(
        "containernetworking-plugins",
        "usr/lib/cni/host-local",
        "host-local",
    ),
    deb(
        "containernetworking-plugins",
        "usr/lib/cni/loopback",
        "loopback",
    ),
    deb(
        "containernetworking-plugins",
        "usr/lib/cni/portmap",
        "portmap",
    ),
    deb("busybox-static", "bin/busybox", "busybox"),
];

/// A package fetched and unpacked in the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnpackedDeb {
    pub package: String,
    pub version: String,
    pub deb_sha256: String,
    /// Binary name -> digest, for the binaries of [`DEB_BINARIES`] in this package.
    pub binaries: BTreeMap<String, FileDigest>,
    #[serde(skip)]
    pub dir: PathBuf,
}

const INFO_FILE: &str = "ILHA-INFO.json";

/// Every package of [`DEB_BINARIES`], downloaded once (the first .deb found is kept: the cache
/// survives Debian's rebuilds until removed) and unpacked under `cache_dir/debs`.
pub fn ensure(cache_dir: &Path) -> Result<BTreeMap<String, UnpackedDeb>> {
    let debs_dir = cache_dir.join("debs");
    let mut packages: Vec<&str> = DEB_BINARIES.iter().map(|b| b.package).collect();
    packages.dedup();
    let mut unpacked = BTreeMap::new();
    for package in packages {
        let deb = match apt::find_deb(package, &debs_dir)? {
            Some(deb) => deb,
            None => apt::download_deb(package, &debs_dir)?,
        };
        unpacked.insert(package.to_string(), unpack(package, &deb, &debs_dir)?);
    }
    Ok(unpacked)
}

impl UnpackedDeb {
    pub fn binary_path(&self, binary: &DebBinary) -> PathBuf {
        self.dir.join(binary.path)
    }
}

fn unpack(package: &str, deb: &Path, debs_dir: &Path) -> Result<UnpackedDeb> {
    let stem = deb
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let dir = debs_dir.join(&stem);
    let info_path = dir.join(INFO_FILE);
    if let Ok(bytes) = std::fs::read(&info_path) {
        let mut info: UnpackedDeb =
            serde_json::from_slice(&bytes).map_err(|source| Error::Json {
                path: info_path.clone(),
                source,
            })?;
        info.dir = dir;
        return Ok(info);
    }
    let staging = fsutil::partial(&dir);
    fsutil::remove_dir_if_exists(&staging)?;
    cmd::output(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&staging))?;
    let mut binaries = BTreeMap::new();
    for binary in DEB_BINARIES.iter().filter(|b| b.package == package) {
        let path = staging.join(binary.path);
        let meta = std::fs::symlink_metadata(&path).map_err(|err| Error::Package {
            package: package.into(),
            reason: format!("{} not in {}: {err}", binary.path, deb.display()),
        })?;
        if !meta.is_file() {
            return Err(Error::Package {
                package: package.into(),
                reason: format!("{} in {} is not a regular file", binary.path, deb.display()),
            });
        }
        let (sha256, size) = fsutil::sha256_file(&path)?;
        binaries.insert(binary.name.to_string(), FileDigest { sha256, size });
    }
    let info = UnpackedDeb {
        package: package.into(),
        version: apt::deb_field(deb, "Version")?,
        deb_sha256: fsutil::sha256_file(deb)?.0,
        binaries,
        dir: dir.clone(),
    };
    let staged_info = staging.join(INFO_FILE);
    let json = serde_json::to_vec_pretty(&info).map_err(|source| Error::Json {
        path: staged_info.clone(),
        source,
    })?;
    std::fs::write(&staged_info, json).map_err(Error::io("write", &staged_info))?;
    fsutil::remove_dir_if_exists(&dir)?;
    std::fs::rename(&staging, &dir).map_err(Error::io("rename into", &dir))?;
    Ok(info)
}
