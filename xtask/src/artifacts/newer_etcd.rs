//! A second etcd for the version guard's lab test: Debian 13's etcd 3.5 next to the 3.4.23 the
//! lab's bundle carries (Debian 12's), with its etcdutl (which etcd 3.4 does not have). Taken from Debian's archive by package name through a
//! private apt setup ([`apt::download_from_suite`]: its own sources list and lists directory, the
//! mirror read from the machine's own apt configuration) and pinned by sha256, so a rebuilt
//! package is refused rather than silently tested.
use std::path::{Path, PathBuf};
use std::process::Command;

use super::error::{Error, Result};
use super::{apt, cmd, fsutil};

/// The Debian suite the newer etcd comes from.
pub const SUITE: &str = "trixie";
/// The etcd version its packages carry (what `etcd --version` says).
pub const VERSION: &str = "3.5.16";

/// A Debian package pinned by version and by the sha256 of its `.deb`.
#[derive(Debug, Clone, Copy)]
pub struct PinnedDeb {
    pub package: &'static str,
    pub version: &'static str,
    pub sha256: &'static str,
}

pub const PACKAGES: &[PinnedDeb] = &[
    PinnedDeb {
        package: "etcd-server",
        version: "3.5.16-4",
        sha256: "0875921bb0d023f2af9b8e15cdfbe417a03e65731345fb832c40f9c2dd72967b",
    },
    PinnedDeb {
        package: "etcd-client",
        version: "3.5.16-4",
        sha256: "7eb67e305ba2ce523a5a0b29bf88750ded3f724769c7111a83382b7909f9977b",
    },
];

/// The unpacked binaries.
#[derive(Debug, Clone)]
pub struct NewerEtcd {
    pub etcd: PathBuf,
    pub etcdctl: PathBuf,
    /// etcd's offline tool (snapshot status and restore), in `etcd-server`.
    pub etcdutl: PathBuf,
    pub version: &'static str,
}

impl PinnedDeb {
    fn file_name(&self) -> String {
        format!("{}_{}_amd64.deb", self.package, self.version)
    }
}

/// Downloads (once, into `cache_dir/etcd-{VERSION}`), checks and unpacks the pinned packages.
pub fn ensure(cache_dir: &Path) -> Result<NewerEtcd> {
    let base = cache_dir.join(format!("etcd-{VERSION}"));
    fsutil::create_dir_all(&base)?;
    let _lock = fsutil::FileLock::exclusive(&base.join("lock"))?;
    let debs = base.join("debs");
    let missing: Vec<(&str, &str)> = PACKAGES
        .iter()
        .filter(|p| !debs.join(p.file_name()).is_file())
        .map(|p| (p.package, p.version))
        .collect();
    if !missing.is_empty() {
        apt::download_from_suite(SUITE, &missing, &base.join("apt"), &debs)?;
    }
    let root = base.join("root");
    let staging = fsutil::partial(&root);
    fsutil::remove_dir_if_exists(&staging)?;
    for pinned in PACKAGES {
        let deb = debs.join(pinned.file_name());
        let (sha256, _) = fsutil::sha256_file(&deb)?;
        if sha256 != pinned.sha256 {
            return Err(Error::Package {
                package: pinned.package.into(),
                reason: format!(
                    "{} has sha256 {sha256}, pinned {}; remove it if Debian rebuilt the package \
                     and pin the new digest in xtask/src/artifacts/newer_etcd.rs",
                    deb.display(),
                    pinned.sha256
                ),
            });
        }
        if !root.is_dir() {
            cmd::output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))?;
        }
    }
    if !root.is_dir() {
        std::fs::rename(&staging, &root).map_err(Error::io("rename into", &root))?;
    }
    for binary in ["etcd", "etcdctl", "etcdutl"] {
        let path = root.join("usr/bin").join(binary);
        if !path.is_file() {
            return Err(Error::Package {
                package: PACKAGES[0].package.into(),
                reason: format!(
                    "{} is missing from the unpacked packages (pinned {}): remove {} to unpack again",
                    path.display(),
                    PACKAGES
                        .iter()
                        .map(|p| format!("{} {}", p.package, p.version))
                        .collect::<Vec<_>>()
                        .join(", "),
                    root.display()
                ),
            });
        }
    }
    Ok(NewerEtcd {
        etcd: root.join("usr/bin/etcd"),
        etcdctl: root.join("usr/bin/etcdctl"),
        etcdutl: root.join("usr/bin/etcdutl"),
        version: VERSION,
    })
}
