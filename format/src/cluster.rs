//! What a Kubernetes cluster needs from a bundle: ONE list, used by `ilha-bundler build` (it
//! refuses a manifest that declares a cluster but lacks something) and by the installer (it checks
//! the bundle's signed index against the same list before touching a host).
//!
//! The list depends on the Kubernetes minor version (the pause image changes) and on the network
//! choice (which CNI plugins are needed). kubeadm is not needed: ilha writes the static pods,
//! certificates and kubeconfigs itself.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::index::Index;

/// The cluster a bundle is made for, as declared by the manifest's `cluster:` key and recorded in
/// the signed index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// `vMAJOR.MINOR.PATCH`, e.g. `v1.20.2`.
    pub kubernetes_version: String,
    pub network: Network,
}

/// How pods reach each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The CNI `bridge` plugin with `host-local` IPAM on every node, plus a static route per
    /// node to the other nodes' pod ranges. No overlay, no network add-on image.
    Bridge,
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Network::Bridge => f.write_str("bridge"),
        }
    }
}

/// Where a binary is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    /// Hosts running an etcd member.
    Etcd,
    /// Hosts running kube-apiserver, kube-controller-manager and kube-scheduler.
    ControlPlane,
    /// Every host running a kubelet (control-plane hosts included).
    Node,
}

impl NodeRole {
    /// Words for messages: "etcd hosts", "control-plane hosts", "every node".
    pub fn describe(self) -> &'static str {
        match self {
            NodeRole::Etcd => "etcd hosts",
            NodeRole::ControlPlane => "control-plane hosts",
            NodeRole::Node => "every node",
        }
    }
}

/// A binary the bundle must carry, by its name in the index's `binaries`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequiredBinary {
    pub name: &'static str,
    /// Where it is installed; never empty.
    pub roles: &'static [NodeRole],
}

impl RequiredBinary {
    pub fn needed_on(&self, role: NodeRole) -> bool {
        self.roles.contains(&role)
    }
}

/// Why an image is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImagePurpose {
    /// The pod sandbox image containerd starts for every pod (`sandbox_image`).
    Pause,
}

impl ImagePurpose {
    pub fn describe(self) -> &'static str {
        match self {
            ImagePurpose::Pause => "the pod sandbox image containerd needs on every node",
        }
    }
}

/// An image the bundle must carry under exactly this reference (what containerd will look for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequiredImage {
    pub purpose: ImagePurpose,
    /// Full reference, e.g. `k8s.gcr.io/pause:3.2`.
    pub reference: String,
}

impl RequiredImage {
    /// Whether an image recorded under `name` (a normalised reference) is this one. A name that
    /// also pins the digest (`ref:tag@sha256:...`) counts.
    pub fn is_satisfied_by(&self, name: &str) -> bool {
        name == self.reference
            || name
                .strip_prefix(self.reference.as_str())
                .is_some_and(|rest| rest.starts_with("@sha256:"))
    }
}

/// Add-ons the installer deploys when their image is in the bundle, and skips otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OptionalImagePurpose {
    /// Cluster DNS.
    CoreDns,
}

/// An optional image, recognised by its repository path whatever the registry and tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionalImage {
    pub purpose: OptionalImagePurpose,
    /// Repository paths without registry or tag, e.g. `coredns/coredns` (registry.k8s.io since
    /// v1.21) or `coredns` (k8s.gcr.io up to v1.20).
    pub repositories: &'static [&'static str],
}

/// CoreDNS: `registry.k8s.io/coredns/coredns:v1.11.3`, `k8s.gcr.io/coredns:1.7.0`, ...
pub const COREDNS: OptionalImage = OptionalImage {
    purpose: OptionalImagePurpose::CoreDns,
    repositories: &["coredns/coredns", "coredns"],
};

impl OptionalImage {
    /// Whether `reference` (e.g. `registry.k8s.io/coredns/coredns:v1.11.3`) is this image.
    pub fn matches(&self, reference: &str) -> bool {
        let repository = repository_path(reference);
        self.repositories.contains(&repository)
    }

    /// The first image of `index` that is this one.
    pub fn find_in<'a>(&self, index: &'a Index) -> Option<&'a crate::index::ImageRecord> {
        index.images.iter().find(|image| self.matches(&image.name))
    }
}

/// The repository path of a reference: without registry host, tag or digest.
fn repository_path(reference: &str) -> &str {
    let without_digest = reference.split('@').next().unwrap_or(reference);
    // The first component is a registry when it looks like a host (Docker's rule).
    let without_registry = match without_digest.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            rest
        }
        _ => without_digest,
    };
    // A tag is after the last ':' of the last path component.
    let last_slash = without_registry.rfind('/').map_or(0, |i| i + 1);
    match without_registry[last_slash..].rfind(':') {
        Some(colon) => &without_registry[..last_slash + colon],
        None => without_registry,
    }
}

/// Everything a cluster of one [`ClusterSpec`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirements {
    /// Unique by name.
    pub binaries: Vec<RequiredBinary>,
    /// Installed where their roles say when the bundle carries them, never required (and never
    /// also in `binaries`).
    pub optional_binaries: Vec<RequiredBinary>,
    pub images: Vec<RequiredImage>,
    /// Used when present, never required.
    pub optional_images: Vec<OptionalImage>,
}

impl Requirements {
    /// Names of the binaries installed on hosts of `role`.
    pub fn binaries_for(&self, role: NodeRole) -> impl Iterator<Item = &'static str> + '_ {
        self.binaries
            .iter()
            .filter(move |b| b.needed_on(role))
            .map(|b| b.name)
    }

    /// Names of the binaries installed on hosts of `role` when the bundle has them.
    pub fn optional_binaries_for(&self, role: NodeRole) -> impl Iterator<Item = &'static str> + '_ {
        self.optional_binaries
            .iter()
            .filter(move |b| b.needed_on(role))
            .map(|b| b.name)
    }

    /// The binaries a host with `roles` gets, each once, in the list's order: the required ones
    /// of each role, then the optional ones `in_bundle` says the bundle carries. The one rule
    /// for the installer's `binaries` step and for preflight's check of what they need.
    pub fn installed_on(
        &self,
        roles: &[NodeRole],
        in_bundle: impl Fn(&str) -> bool,
    ) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for &role in roles {
            let optional = self
                .optional_binaries_for(role)
                .filter(|name| in_bundle(name));
            for name in self.binaries_for(role).chain(optional) {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        names
    }

    /// Every binary ilha may install, required or optional.
    pub fn all_binaries(&self) -> impl Iterator<Item = &RequiredBinary> + '_ {
        self.binaries.iter().chain(&self.optional_binaries)
    }

    /// The reference of the image required for `purpose`.
    pub fn image(&self, purpose: ImagePurpose) -> &str {
        self.images
            .iter()
            .find(|i| i.purpose == purpose)
            .map(|i| i.reference.as_str())
            .expect("every requirement list has one image per purpose")
    }
}

/// A [`ClusterSpec`] ilha cannot build a requirement list for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterSpecError {
    #[error("Kubernetes version {version:?} is not of the form vMAJOR.MINOR.PATCH (e.g. v1.20.2)")]
    BadVersion { version: String },
    #[error("Kubernetes {version} is not supported: ilha installs v1.{OLDEST_MINOR} and later")]
    TooOld { version: String },
    #[error(
        "Kubernetes {version} is newer than ilha knows (v1.{OLDEST_MINOR} to v1.{NEWEST_MINOR}): \
         its pause image is not in ilha's requirement list"
    )]
    TooNew { version: String },
}

/// The oldest and newest minor versions the pause table below covers.
pub const OLDEST_MINOR: u32 = 20;
pub const NEWEST_MINOR: u32 = 37;

/// A parsed `vMAJOR.MINOR.PATCH[-pre]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubernetesVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl KubernetesVersion {
    pub fn parse(text: &str) -> Result<Self, ClusterSpecError> {
        let bad = || ClusterSpecError::BadVersion {
            version: text.to_owned(),
        };
        let rest = text.strip_prefix('v').ok_or_else(bad)?;
        // A pre-release suffix (`-rc.0`) does not change what the release needs.
        let core = rest.split_once('-').map_or(rest, |(core, _)| core);
        let numbers: Vec<u32> = core
            .split('.')
            .map(|part| {
                if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                    Err(bad())
                } else {
                    part.parse().map_err(|_| bad())
                }
            })
            .collect::<Result<_, _>>()?;
        let [major, minor, patch] = numbers[..] else {
            return Err(bad());
        };
        Ok(KubernetesVersion {
            major,
            minor,
            patch,
        })
    }
}

/// The pause image the release's kubeadm uses (`constants.PauseVersion` and its default image
/// repository), which is what containerd must find for every pod sandbox.
///
/// Tags per minor, from kubeadm's `cmd/kubeadm/app/constants` of each release branch: 1.20 3.2,
/// 1.21 3.4.1, 1.22 3.5, 1.23 3.6, 1.24 3.7, 1.25 3.8, 1.26-1.30 3.9, 1.31-1.33 3.10,
/// 1.34-1.35 3.10.1, 1.36-1.37 3.10.2 (`kubeadm config images list` of v1.36.4 and v1.37.0).
/// Registry: k8s.gcr.io until kubeadm switched its default to registry.k8s.io in v1.25, and in
/// the December 2022 patch releases of the older branches (kubernetes#113393 and siblings:
/// v1.22.17, v1.23.15, v1.24.9).
fn pause_image(version: KubernetesVersion) -> Option<String> {
    let tag = match version.minor {
        20 => "3.2",
        21 => "3.4.1",
        22 => "3.5",
        23 => "3.6",
        24 => "3.7",
        25 => "3.8",
        26..=30 => "3.9",
        31..=33 => "3.10",
        34..=35 => "3.10.1",
        36..=37 => "3.10.2",
        _ => return None,
    };
    let registry_k8s_io_since_patch = match version.minor {
        ..=21 => u32::MAX,
        22 => 17,
        23 => 15,
        24 => 9,
        _ => 0,
    };
    let registry = if version.patch >= registry_k8s_io_since_patch {
        "registry.k8s.io"
    } else {
        "k8s.gcr.io"
    };
    Some(format!("{registry}/pause:{tag}"))
}

const ETCD: &[NodeRole] = &[NodeRole::Etcd];
const CONTROL_PLANE: &[NodeRole] = &[NodeRole::ControlPlane];
const CONTROL_PLANE_AND_NODE: &[NodeRole] = &[NodeRole::ControlPlane, NodeRole::Node];
const NODE: &[NodeRole] = &[NodeRole::Node];

/// Binaries every cluster needs, whatever its network.
const BASE_BINARIES: &[RequiredBinary] = &[
    RequiredBinary {
        name: "etcd",
        roles: ETCD,
    },
    RequiredBinary {
        name: "etcdctl",
        roles: ETCD,
    },
    RequiredBinary {
        name: "kube-apiserver",
        roles: CONTROL_PLANE,
    },
    RequiredBinary {
        name: "kube-controller-manager",
        roles: CONTROL_PLANE,
    },
    RequiredBinary {
        name: "kube-scheduler",
        roles: CONTROL_PLANE,
    },
    RequiredBinary {
        name: "kubectl",
        roles: CONTROL_PLANE_AND_NODE,
    },
    RequiredBinary {
        name: "kubelet",
        roles: NODE,
    },
    RequiredBinary {
        name: "kube-proxy",
        roles: NODE,
    },
    RequiredBinary {
        name: "containerd",
        roles: NODE,
    },
    RequiredBinary {
        name: "containerd-shim-runc-v2",
        roles: NODE,
    },
    RequiredBinary {
        name: "ctr",
        roles: NODE,
    },
    RequiredBinary {
        name: "runc",
        roles: NODE,
    },
];

/// etcd's offline tool: reads (`snapshot status`) and restores (`snapshot restore`) snapshots,
/// which etcdctl no longer does from etcd v3.6.0. It exists from etcd 3.5.
const ETCDUTL: RequiredBinary = RequiredBinary {
    name: "etcdutl",
    roles: ETCD,
};

/// The first Kubernetes minor whose kubeadm pairs etcd 3.6, and so needs [`ETCDUTL`]: kubeadm's
/// `SupportedEtcdVersion` (cmd/kubeadm/app/constants/constants.go) maps 29-32 to 3.5.24-0 on
/// release-1.32, 31-33 to 3.5.24-0 and 34 to 3.6.5-0 on release-1.34, and 34-36 to 3.6.x on
/// master (etcd 3.6.9-0 when read); v1.20-v1.21 pair 3.4.13 (no etcdutl), v1.22-v1.33 3.5.x.
pub const ETCDUTL_REQUIRED_FROM_MINOR: u32 = 34;

/// CNI plugins of [`Network::Bridge`]: `bridge` + `host-local` IPAM for pods, `loopback` for each
/// pod's `lo`, `portmap` for `hostPort`.
const BRIDGE_BINARIES: &[RequiredBinary] = &[
    RequiredBinary {
        name: "bridge",
        roles: NODE,
    },
    RequiredBinary {
        name: "host-local",
        roles: NODE,
    },
    RequiredBinary {
        name: "loopback",
        roles: NODE,
    },
    RequiredBinary {
        name: "portmap",
        roles: NODE,
    },
];

/// The requirement list of `spec`; fails for versions outside v1.20 to v1.37.
pub fn requirements(spec: &ClusterSpec) -> Result<Requirements, ClusterSpecError> {
    let version = KubernetesVersion::parse(&spec.kubernetes_version)?;
    if version.major != 1 || version.minor > NEWEST_MINOR {
        return Err(ClusterSpecError::TooNew {
            version: spec.kubernetes_version.clone(),
        });
    }
    if version.minor < OLDEST_MINOR {
        return Err(ClusterSpecError::TooOld {
            version: spec.kubernetes_version.clone(),
        });
    }
    let pause = pause_image(version).expect("every minor in the supported range has a pause tag");
    let network_binaries = match spec.network {
        Network::Bridge => BRIDGE_BINARIES,
    };
    // Below 1.34 the etcd may be 3.4, which has no etcdutl: installed when the bundle has it.
    let (required_etcdutl, optional_etcdutl) = if version.minor >= ETCDUTL_REQUIRED_FROM_MINOR {
        (Some(ETCDUTL), None)
    } else {
        (None, Some(ETCDUTL))
    };
    let mut binaries: Vec<RequiredBinary> = BASE_BINARIES.to_vec();
    if let Some(etcdutl) = required_etcdutl {
        // Next to etcdctl, in messages and install order.
        let after_etcdctl = binaries
            .iter()
            .position(|b| b.name == "etcdctl")
            .map_or(binaries.len(), |i| i + 1);
        binaries.insert(after_etcdctl, etcdutl);
    }
    binaries.extend_from_slice(network_binaries);
    Ok(Requirements {
        binaries,
        optional_binaries: optional_etcdutl.into_iter().collect(),
        images: vec![RequiredImage {
            purpose: ImagePurpose::Pause,
            reference: pause,
        }],
        optional_images: vec![COREDNS],
    })
}

/// One thing a bundle lacks for its cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Missing {
    Binary {
        name: &'static str,
        roles: &'static [NodeRole],
    },
    Image {
        purpose: ImagePurpose,
        reference: String,
    },
    /// No requirement list exists for the spec, so nothing can be checked.
    Unsupported(ClusterSpecError),
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missing::Binary { name, roles } => {
                let places: Vec<&str> = roles.iter().map(|r| r.describe()).collect();
                write!(f, "binary `{name}` (needed on {})", places.join(" and "))
            }
            Missing::Image { purpose, reference } => {
                write!(f, "image `{reference}` ({})", purpose.describe())
            }
            Missing::Unsupported(err) => write!(f, "{err}"),
        }
    }
}

/// What the bundle described by `index` lacks for `spec`; empty when it has everything.
pub fn missing(spec: &ClusterSpec, index: &Index) -> Vec<Missing> {
    missing_among(
        spec,
        index.binaries.iter().map(|b| b.name.as_str()),
        index.images.iter().map(|i| i.name.as_str()),
    )
}

/// [`missing`] for a bundle not built yet: the binary names and (normalised) image references
/// it will hold.
pub fn missing_among<'a>(
    spec: &ClusterSpec,
    binary_names: impl IntoIterator<Item = &'a str>,
    image_names: impl IntoIterator<Item = &'a str>,
) -> Vec<Missing> {
    let requirements = match requirements(spec) {
        Ok(requirements) => requirements,
        Err(err) => return vec![Missing::Unsupported(err)],
    };
    let binary_names: Vec<&str> = binary_names.into_iter().collect();
    let image_names: Vec<&str> = image_names.into_iter().collect();
    let mut missing = Vec::new();
    for binary in &requirements.binaries {
        if !binary_names.contains(&binary.name) {
            missing.push(Missing::Binary {
                name: binary.name,
                roles: binary.roles,
            });
        }
    }
    for image in &requirements.images {
        if !image_names.iter().any(|name| image.is_satisfied_by(name)) {
            missing.push(Missing::Image {
                purpose: image.purpose,
                reference: image.reference.clone(),
            });
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(version: &str) -> ClusterSpec {
        ClusterSpec {
            kubernetes_version: version.into(),
            network: Network::Bridge,
        }
    }

    fn pause_of(version: &str) -> String {
        requirements(&spec(version))
            .unwrap()
            .image(ImagePurpose::Pause)
            .to_owned()
    }

    #[test]
    fn v1_20_needs_every_binary_but_kubeadm_and_the_gcr_pause() {
        let req = requirements(&spec("v1.20.2")).unwrap();
        let names: Vec<&str> = req.binaries.iter().map(|b| b.name).collect();
        assert_eq!(
            names,
            [
                "etcd",
                "etcdctl",
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubectl",
                "kubelet",
                "kube-proxy",
                "containerd",
                "containerd-shim-runc-v2",
                "ctr",
                "runc",
                "bridge",
                "host-local",
                "loopback",
                "portmap",
            ]
        );
        assert!(!names.contains(&"kubeadm"));
        assert_eq!(req.image(ImagePurpose::Pause), "k8s.gcr.io/pause:3.2");
        assert_eq!(
            req.binaries_for(NodeRole::Etcd).collect::<Vec<_>>(),
            ["etcd", "etcdctl"]
        );
        assert_eq!(
            req.binaries_for(NodeRole::ControlPlane).collect::<Vec<_>>(),
            [
                "kube-apiserver",
                "kube-controller-manager",
                "kube-scheduler",
                "kubectl"
            ]
        );
        let node: Vec<&str> = req.binaries_for(NodeRole::Node).collect();
        assert_eq!(node.len(), 11);
        assert!(node.contains(&"kubectl") && node.contains(&"portmap"));
        assert!(!node.contains(&"etcd") && !node.contains(&"kube-apiserver"));
    }

    /// etcdutl is required from the first minor whose kubeadm pairs etcd 3.6 (1.34), and only
    /// optional (installed when the bundle has it) below, where etcd 3.4 has none.
    #[test]
    fn etcdutl_is_required_from_1_34_and_optional_below() {
        let names = |version: &str| -> (Vec<&'static str>, Vec<&'static str>) {
            let req = requirements(&spec(version)).unwrap();
            (
                req.binaries_for(NodeRole::Etcd).collect(),
                req.optional_binaries_for(NodeRole::Etcd).collect(),
            )
        };
        for version in ["v1.20.2", "v1.21.14", "v1.22.0", "v1.30.1", "v1.33.5"] {
            assert_eq!(
                names(version),
                (vec!["etcd", "etcdctl"], vec!["etcdutl"]),
                "{version}"
            );
        }
        for version in ["v1.34.0", "v1.35.2", "v1.36.0-rc.1", "v1.37.1"] {
            assert_eq!(
                names(version),
                (vec!["etcd", "etcdctl", "etcdutl"], vec![]),
                "{version}"
            );
        }
        // Only on etcd hosts.
        let req = requirements(&spec("v1.37.1")).unwrap();
        assert!(
            !req.binaries_for(NodeRole::ControlPlane)
                .any(|b| b == "etcdutl")
        );
        assert!(!req.binaries_for(NodeRole::Node).any(|b| b == "etcdutl"));
        let old = requirements(&spec("v1.20.2")).unwrap();
        assert_eq!(old.optional_binaries_for(NodeRole::Node).count(), 0);
        assert_eq!(
            old.all_binaries().filter(|b| b.name == "etcdutl").count(),
            1
        );

        // A 1.37 bundle without it is refused, naming it; a 1.20 bundle without it is complete.
        let without: Vec<&str> = req
            .binaries
            .iter()
            .map(|b| b.name)
            .filter(|n| *n != "etcdutl")
            .collect();
        let found = missing_among(
            &spec("v1.37.1"),
            without.iter().copied(),
            ["registry.k8s.io/pause:3.10.2"],
        );
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["binary `etcdutl` (needed on etcd hosts)"]);
        let old_names: Vec<&str> = old.binaries.iter().map(|b| b.name).collect();
        assert!(
            missing_among(
                &spec("v1.20.2"),
                old_names.iter().copied(),
                ["k8s.gcr.io/pause:3.2"]
            )
            .is_empty()
        );
    }

    #[test]
    fn pause_follows_kubeadm_per_release() {
        assert_eq!(pause_of("v1.20.15"), "k8s.gcr.io/pause:3.2");
        assert_eq!(pause_of("v1.21.14"), "k8s.gcr.io/pause:3.4.1");
        assert_eq!(pause_of("v1.22.16"), "k8s.gcr.io/pause:3.5");
        assert_eq!(pause_of("v1.22.17"), "registry.k8s.io/pause:3.5");
        assert_eq!(pause_of("v1.23.14"), "k8s.gcr.io/pause:3.6");
        assert_eq!(pause_of("v1.23.15"), "registry.k8s.io/pause:3.6");
        assert_eq!(pause_of("v1.24.8"), "k8s.gcr.io/pause:3.7");
        assert_eq!(pause_of("v1.24.9"), "registry.k8s.io/pause:3.7");
        assert_eq!(pause_of("v1.25.0"), "registry.k8s.io/pause:3.8");
        assert_eq!(pause_of("v1.26.0"), "registry.k8s.io/pause:3.9");
        assert_eq!(pause_of("v1.30.14"), "registry.k8s.io/pause:3.9");
        assert_eq!(pause_of("v1.31.0"), "registry.k8s.io/pause:3.10");
        assert_eq!(pause_of("v1.33.5"), "registry.k8s.io/pause:3.10");
        assert_eq!(pause_of("v1.34.1"), "registry.k8s.io/pause:3.10.1");
        assert_eq!(pause_of("v1.35.0"), "registry.k8s.io/pause:3.10.1");
        assert_eq!(pause_of("v1.36.0-rc.1"), "registry.k8s.io/pause:3.10.2");
        assert_eq!(pause_of("v1.36.3"), "registry.k8s.io/pause:3.10.2");
        assert_eq!(pause_of("v1.37.1"), "registry.k8s.io/pause:3.10.2");
    }

    #[test]
    fn unsupported_versions_are_refused_with_a_reason() {
        let err = requirements(&spec("v1.19.16")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Kubernetes v1.19.16 is not supported: ilha installs v1.20 and later"
        );
        assert!(matches!(
            requirements(&spec("v1.38.0")).unwrap_err(),
            ClusterSpecError::TooNew { .. }
        ));
        assert!(matches!(
            requirements(&spec("v2.0.0")).unwrap_err(),
            ClusterSpecError::TooNew { .. }
        ));
        for bad in ["1.20.2", "v1.20", "v1.20.x", "v1..2", "v1.20.2.1", ""] {
            let err = requirements(&spec(bad)).unwrap_err();
            assert!(
                matches!(err, ClusterSpecError::BadVersion { .. }),
                "{bad:?}: {err}"
            );
            assert!(err.to_string().contains("vMAJOR.MINOR.PATCH"), "{err}");
        }
    }

    #[test]
    fn missing_lists_every_absent_item_with_where_it_is_needed() {
        let found = missing_among(
            &spec("v1.20.2"),
            ["etcd", "kube-apiserver", "kube-controller-manager"],
            ["registry.k8s.io/pause:3.2"],
        );
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert!(text.contains(&"binary `kubelet` (needed on every node)".to_string()));
        assert!(text.contains(&"binary `etcdctl` (needed on etcd hosts)".to_string()));
        assert!(text.contains(
            &"binary `kubectl` (needed on control-plane hosts and every node)".to_string()
        ));
        // The pause image from another registry is not the one containerd will ask for.
        assert!(text.contains(
            &"image `k8s.gcr.io/pause:3.2` (the pod sandbox image containerd needs on every node)"
                .to_string()
        ));
        assert_eq!(found.len(), 16 - 3 + 1);

        let all: Vec<&str> = requirements(&spec("v1.20.2"))
            .unwrap()
            .binaries
            .iter()
            .map(|b| b.name)
            .collect();
        assert!(
            missing_among(
                &spec("v1.20.2"),
                all.iter().copied(),
                ["k8s.gcr.io/pause:3.2@sha256:927d98197ec1141a368550822d18fa1c60bdae27b78b0c004f705f548c07814f"]
            )
            .is_empty()
        );
        let unsupported = missing_among(&spec("v1.18.0"), all.iter().copied(), []);
        assert!(matches!(unsupported[..], [Missing::Unsupported(_)]));
    }

    #[test]
    fn missing_reads_the_index() {
        let mut index = crate::index::tests::sample_index();
        index.binaries[0].name = "kubelet".into();
        let found = missing(&spec("v1.20.2"), &index);
        assert!(!found.iter().any(|m| matches!(
            m,
            Missing::Binary {
                name: "kubelet",
                ..
            }
        )));
        assert!(found.iter().any(|m| matches!(
            m,
            Missing::Binary {
                name: "kube-proxy",
                ..
            }
        )));
    }

    #[test]
    fn coredns_is_recognised_by_repository() {
        assert!(COREDNS.matches("registry.k8s.io/coredns/coredns:v1.11.3"));
        assert!(COREDNS.matches("k8s.gcr.io/coredns:1.7.0"));
        assert!(COREDNS.matches("127.0.0.1:5000/coredns/coredns:v1.8.0@sha256:abc"));
        assert!(COREDNS.matches("docker.io/coredns/coredns:1.7.0"));
        assert!(!COREDNS.matches("registry.k8s.io/pause:3.2"));
        assert!(!COREDNS.matches("registry.k8s.io/coredns-operator:1"));
        assert!(!COREDNS.matches("ilha.test/mirror/coredns/coredns:1"));
    }

    #[test]
    fn spec_serialises_with_lowercase_network() {
        let json = serde_json::to_string(&spec("v1.20.2")).unwrap();
        assert_eq!(
            json,
            r#"{"kubernetes_version":"v1.20.2","network":"bridge"}"#
        );
        let err = serde_json::from_str::<ClusterSpec>(
            r#"{"kubernetes_version":"v1.20.2","network":"calico"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("calico"), "{err}");
    }
}
