//! Which binaries the lab publishes, where on the mirror, and with which checksum file.
//! `manifests/lab.yaml` and the mirror tree are both derived from this one table, which must
//! cover `ilha_format::cluster::requirements` of the lab's cluster (a test checks it).
use ilha_format::cluster::{ClusterSpec, Network};

use super::kubernetes;

/// The cluster the lab's bundle is for: the Kubernetes the lab builds, on the bridge network.
pub fn lab_cluster() -> ClusterSpec {
    ClusterSpec {
        kubernetes_version: kubernetes::VERSION.to_owned(),
        network: Network::Bridge,
    }
}

/// How the mirror publishes a binary's checksum, as upstream download sites do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumStyle {
    /// `<bin>.sha256` next to the binary, holding the bare hex digest (like dl.k8s.io).
    PerFile,
    /// One `SHA256SUMS` per directory, `sha256sum` lines `<hex>  <bin>`.
    Sums,
}

/// Where a binary comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Kubernetes,
    Deb(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct MirroredBinary {
    pub name: &'static str,
    pub origin: Origin,
    /// Directory on the mirror, relative to its root.
    pub dir: &'static str,
    pub checksum: ChecksumStyle,
}

/// Mirror directory of the Kubernetes binaries, as on dl.k8s.io.
pub const KUBERNETES_DIR: &str = "release/v1.20.2/bin/linux/amd64";
pub const SUMS_FILE: &str = "SHA256SUMS";

/// Mirror directory of each binary package's binaries: no version in the path, so
/// `manifests/lab.yaml` stays valid when Debian rebuilds a package.
pub fn deb_dir(package: &str) -> Option<&'static str> {
    match package {
        "etcd-server" | "etcd-client" => Some("etcd"),
        "containerd" => Some("containerd"),
        "runc" => Some("runc"),
        "containernetworking-plugins" => Some("cni-plugins"),
        _ => None,
    }
}

/// Every binary on the mirror, in manifest order.
pub fn mirrored_binaries() -> Vec<MirroredBinary> {
    let kube = kubernetes::BINARIES.iter().map(|name| MirroredBinary {
        name,
        origin: Origin::Kubernetes,
        dir: KUBERNETES_DIR,
        checksum: ChecksumStyle::PerFile,
    });
    let debs = super::debs::DEB_BINARIES.iter().filter_map(|b| {
        deb_dir(b.package).map(|dir| MirroredBinary {
            name: b.name,
            origin: Origin::Deb(b.package),
            dir,
            checksum: ChecksumStyle::Sums,
        })
    });
    kube.chain(debs).collect()
}

impl MirroredBinary {
    /// The binary's path on the mirror.
    pub fn url_path(&self) -> String {
        format!("{}/{}", self.dir, self.name)
    }

    /// The path of the checksum file that covers it.
    pub fn checksum_path(&self) -> String {
        match self.checksum {
            ChecksumStyle::PerFile => format!("{}/{}.sha256", self.dir, self.name),
            ChecksumStyle::Sums => format!("{}/{SUMS_FILE}", self.dir),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_covers_the_cluster_requirements() {
        let requirements = ilha_format::cluster::requirements(&lab_cluster())
            .expect("the lab's Kubernetes version is supported");
        let mirrored: Vec<&str> = mirrored_binaries().iter().map(|b| b.name).collect();
        let absent: Vec<&str> = requirements
            .binaries
            .iter()
            .map(|b| b.name)
            .filter(|name| !mirrored.contains(name))
            .collect();
        assert!(absent.is_empty(), "the lab mirror lacks {absent:?}");
        for image in &requirements.images {
            assert!(
                super::super::images::IMAGES
                    .iter()
                    .any(|i| image.is_satisfied_by(i.name)),
                "the lab registry lacks {}",
                image.reference
            );
        }
        // And the rendered manifest agrees, as the bundler will judge it.
        let found = ilha_format::cluster::missing_among(
            &lab_cluster(),
            mirrored.iter().copied(),
            super::super::images::IMAGES.iter().map(|i| i.name),
        );
        let listed: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert!(
            found.is_empty(),
            "manifests/lab.yaml would lack: {listed:?}"
        );
    }

    #[test]
    fn every_binary_has_a_unique_name_and_url() {
        let all = mirrored_binaries();
        let mut names: Vec<_> = all.iter().map(|b| b.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert_eq!(
            all.len(),
            7 + 10,
            "7 Kubernetes binaries + 10 from Debian packages"
        );
        assert!(
            all.iter().all(|b| b.name != "busybox"),
            "busybox ships as an image"
        );
    }
}
