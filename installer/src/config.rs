//! The cluster config file (`cluster.yaml`): the settings Kubespray kept in
//! `group_vars/k8s-cluster.yml`, reduced to what ilha acts on. Every key is optional; unknown keys
//! are errors (a misspelt `pod_cidr` must not silently fall back to the default). Errors name the
//! file and line. See `docs/cluster-config.md`.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize, Serializer};
use serde_saphyr::Spanned;

use crate::inventory::Inventory;

pub const DEFAULT_CLUSTER_NAME: &str = "ilha";
pub const DEFAULT_DNS_DOMAIN: &str = "cluster.local";
pub const DEFAULT_POD_CIDR: &str = "10.244.0.0/16";
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";
pub const DEFAULT_API_PORT: u16 = 6443;
/// Per-node pod ranges carved out of `pod_cidr`: kube-controller-manager's defaults.
pub const NODE_CIDR_PREFIX_V4: u8 = 24;
pub const NODE_CIDR_PREFIX_V6: u8 = 64;

// ---------------------------------------------------------------------------------------------
// Kubernetes versions

/// A Kubernetes release version, `v1.31.2` or `v1.32.0-rc.1`, ordered as semver orders them
/// (a pre-release sorts before its release). Install steps branch on it (`at_least(1, 24)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KubeVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// Dot-separated pre-release identifiers (`rc.1`), empty for a release.
    pub pre: Vec<PreRelease>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PreRelease {
    // Declared first: semver ranks numeric identifiers below alphanumeric ones.
    Numeric(u64),
    Alpha(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a Kubernetes version: expected vMAJOR.MINOR.PATCH, e.g. v1.31.2 or 1.20.15")]
pub struct BadKubeVersion(pub String);

impl KubeVersion {
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        KubeVersion {
            major,
            minor,
            patch,
            pre: Vec::new(),
        }
    }

    /// Whether this is `major.minor` or later (pre-releases of that minor count as later).
    pub fn at_least(&self, major: u64, minor: u64) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl FromStr for KubeVersion {
    type Err = BadKubeVersion;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadKubeVersion(text.to_string());
        let trimmed = text.trim();
        let rest = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let (core, pre) = match rest.split_once('-') {
            Some((core, pre)) => (core, Some(pre)),
            None => (rest, None),
        };
        let number = |part: &str| -> Result<u64, BadKubeVersion> {
            // No leading zeros or signs: `1.020.3` is a typo, not a version.
            if part.is_empty()
                || !part.bytes().all(|b| b.is_ascii_digit())
                || (part.len() > 1 && part.starts_with('0'))
            {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        let parts: Vec<&str> = core.split('.').collect();
        let [major, minor, patch] = parts.as_slice() else {
            return Err(bad());
        };
        let pre = match pre {
            None => Vec::new(),
            Some(pre) => pre
                .split('.')
                .map(|id| {
                    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        Err(bad())
                    } else if id.bytes().all(|b| b.is_ascii_digit()) {
                        number(id).map(PreRelease::Numeric)
                    } else {
                        Ok(PreRelease::Alpha(id.to_string()))
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(KubeVersion {
            major: number(major)?,
            minor: number(minor)?,
            patch: number(patch)?,
            pre,
        })
    }
}

impl Ord for KubeVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(other.major, other.minor, other.patch))
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => self.pre.cmp(&other.pre),
            })
    }
}

impl PartialOrd for KubeVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)?;
        for (index, id) in self.pre.iter().enumerate() {
            f.write_str(if index == 0 { "-" } else { "." })?;
            match id {
                PreRelease::Numeric(n) => write!(f, "{n}")?,
                PreRelease::Alpha(s) => f.write_str(s)?,
            }
        }
        Ok(())
    }
}

impl Serialize for KubeVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

// ---------------------------------------------------------------------------------------------
// The config

/// How nodes reach the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ApiEndpoint {
    /// Every node talks to `127.0.0.1:api_port`: on control-plane hosts that is the local
    /// kube-apiserver, on the others a node-local TCP proxy spreading connections over all
    /// control-plane hosts (Kubespray's nginx-proxy design). No extra machine and no virtual IP,
    /// and the loss of any one master leaves every node connected.
    NodeLocal,
    /// A load balancer the operator runs (`lb.example:6443`), used as is.
    External { host: String, port: u16 },
}

/// The pod network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// Each node's pod range is routed to it by static routes on every other node: needs all
    /// nodes on one L2 segment, and nothing but the CNI bridge plugin from the bundle.
    Bridge,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterConfig {
    /// The file it came from; `None` when built from defaults only.
    pub source: Option<PathBuf>,
    /// `None`: the version the bundle carries.
    pub kubernetes_version: Option<KubeVersion>,
    pub cluster_name: String,
    pub dns_domain: String,
    pub pod_cidr: IpNet,
    pub service_cidr: IpNet,
    pub api_endpoint: ApiEndpoint,
    /// The port kube-apiserver listens on (and the node-local proxy, on the other nodes).
    pub api_port: u16,
    pub network: Network,
    /// Where the operator-side state (CA keys, kubeconfigs, journals) lives.
    pub state_dir: PathBuf,
    /// The kubelet's hard eviction thresholds (`evictionHard`), signal → quantity or percentage.
    /// Empty: the kubelet's defaults. Set, it replaces them all, as in the kubelet's own config.
    pub kubelet_eviction_hard: BTreeMap<String, String>,
    /// The kubelet's `failCgroupV1` (`None`: the kubelet's default: true from Kubernetes 1.35,
    /// false in 1.31-1.34, no such field before). `false` lets kubelet 1.35+ run on cgroup v1
    /// hosts; preflight refuses those hosts otherwise. Rendered only for versions with the field.
    pub kubelet_fail_cgroup_v1: Option<bool>,
    /// What ilha does beyond Kubernetes' defaults to pass the CIS Kubernetes Benchmark: every item
    /// on unless the config turns it off (docs/hardening.md says what each one is).
    pub hardening: Hardening,
    #[serde(skip)]
    lines: KeyLines,
}

/// The `hardening:` mapping: one switch per item, all on by default, so an operator turns off only
/// what a site cannot have (each item, its CIS checks and what turning it off costs are in
/// docs/hardening.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Hardening {
    /// kube-apiserver's audit log (policy: metadata, never a Secret's body) with rotation.
    pub audit_log: bool,
    /// Secrets encrypted at rest in etcd (and so in snapshots and kits).
    pub secrets_encryption: bool,
    /// Pod security admission (PodSecurityPolicy up to 1.24, PodSecurity from 1.23).
    pub pod_security: bool,
    /// Kubelets serve with certificates from ilha's CA, which kube-apiserver verifies.
    pub kubelet_serving_certificates: bool,
    /// The kubelet's `protectKernelDefaults`, with the kernel settings it requires set by ilha.
    pub protect_kernel_defaults: bool,
    /// Component flags: profiling off, TLS floor and ciphers, EventRateLimit, PID limits, seccomp.
    pub component_flags: bool,
    /// etcd runs as its own user, its data directory 0700.
    pub etcd_user: bool,
}

impl Hardening {
    /// Every item, with its key in the config file.
    pub const KEYS: [&'static str; 7] = [
        "audit_log",
        "secrets_encryption",
        "pod_security",
        "kubelet_serving_certificates",
        "protect_kernel_defaults",
        "component_flags",
        "etcd_user",
    ];

    fn item(&mut self, key: &str) -> Option<&mut bool> {
        Some(match key {
            "audit_log" => &mut self.audit_log,
            "secrets_encryption" => &mut self.secrets_encryption,
            "pod_security" => &mut self.pod_security,
            "kubelet_serving_certificates" => &mut self.kubelet_serving_certificates,
            "protect_kernel_defaults" => &mut self.protect_kernel_defaults,
            "component_flags" => &mut self.component_flags,
            "etcd_user" => &mut self.etcd_user,
            _ => return None,
        })
    }
}

impl Default for Hardening {
    fn default() -> Self {
        Hardening {
            audit_log: true,
            secrets_encryption: true,
            pod_security: true,
            kubelet_serving_certificates: true,
            protect_kernel_defaults: true,
            component_flags: true,
            etcd_user: true,
        }
    }
}

/// The signals `evictionHard` takes (Linux).
const EVICTION_SIGNALS: [&str; 5] = [
    "memory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "pid.available",
];

/// `10%`, `100Mi`, `1Gi`, `500000`: what the kubelet accepts as a threshold.
fn is_eviction_threshold(value: &str) -> bool {
    let number = |s: &str| {
        let mut parts = s.splitn(2, '.');
        let whole = parts.next().unwrap_or("");
        let frac = parts.next();
        !whole.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
    };
    if let Some(percent) = value.strip_suffix('%') {
        return number(percent) && percent.parse::<f64>().is_ok_and(|p| p < 100.0);
    }
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let suffix = &value[digits.len()..];
    number(digits) && ["", "Ki", "Mi", "Gi", "Ti", "k", "M", "G", "T"].contains(&suffix)
}

/// The line of each key set in the file, for errors found after parsing.
#[derive(Debug, Clone, Default)]
struct KeyLines {
    kubernetes_version: Option<usize>,
    pod_cidr: Option<usize>,
    service_cidr: Option<usize>,
    api_endpoint: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    kubernetes_version: Option<Spanned<String>>,
    cluster_name: Option<Spanned<String>>,
    dns_domain: Option<Spanned<String>>,
    pod_cidr: Option<Spanned<String>>,
    service_cidr: Option<Spanned<String>>,
    api_endpoint: Option<Spanned<String>>,
    api_port: Option<Spanned<u16>>,
    network: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    kubelet_eviction_hard: Option<Spanned<BTreeMap<String, String>>>,
    /// Read as text, so only `true` and `false` pass (not YAML 1.1's `no`, `off`, ...) and
    /// anything else gets ilha's own message.
    kubelet_fail_cgroup_v1: Option<Spanned<String>>,
    /// Item → `true`/`false`, read as text for the same reason.
    hardening: Option<Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read cluster config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// One line per problem: `FILE:LINE: message`, or `cluster config (default KEY): message` for
    /// a default value that does not fit the inventory.
    #[error("{}", render(path.as_deref(), problems))]
    Invalid {
        path: Option<PathBuf>,
        problems: Vec<ConfigProblem>,
    },
}

fn render(path: Option<&Path>, problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|problem| match (path, problem.line) {
            (Some(path), Some(line)) => format!("{}:{line}: {}", path.display(), problem.kind),
            _ => format!("cluster config (default {}): {}", problem.key, problem.kind),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// `None` when the value is a default rather than a line of the file.
    pub line: Option<usize>,
    pub key: &'static str,
    pub kind: ConfigProblemKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblemKind {
    #[error("YAML: {0}")]
    Yaml(String),
    #[error("{0}")]
    BadVersion(BadKubeVersion),
    #[error(
        "`{key}: {value}` must be a DNS {what}: lowercase letters, digits and `-`, at most 63 characters per label"
    )]
    BadDnsName {
        key: &'static str,
        value: String,
        what: &'static str,
    },
    #[error("`{key}: {value}` is not a CIDR such as 10.244.0.0/16")]
    BadCidr { key: &'static str, value: String },
    #[error("`{key}: {value}` has host bits set: did you mean {network}?")]
    HostBitsSet {
        key: &'static str,
        value: String,
        network: IpNet,
    },
    #[error("pod_cidr {pod} and service_cidr {service} (line {service_line}) overlap")]
    CidrOverlap {
        pod: IpNet,
        service: IpNet,
        service_line: String,
    },
    #[error("pod_cidr {pod} and service_cidr {service} are not of the same IP family")]
    MixedFamilies { pod: IpNet, service: IpNet },
    #[error(
        "service_cidr {0} is too small: it needs at least 16 addresses (the API service takes the 1st, cluster DNS the 10th)"
    )]
    ServiceCidrTooSmall(IpNet),
    #[error(
        "service_cidr {0} is too large: kube-apiserver accepts at most 2^20 addresses (/12 for IPv4, /108 for IPv6)"
    )]
    ServiceCidrTooLarge(IpNet),
    #[error("pod_cidr {cidr} is smaller than one node's pod range (/{node_prefix})")]
    PodCidrTooSmall { cidr: IpNet, node_prefix: u8 },
    #[error(
        "pod_cidr {cidr} has room for {capacity} nodes' /{node_prefix} ranges but the inventory has {nodes} Kubernetes nodes"
    )]
    PodCidrFull {
        cidr: IpNet,
        capacity: u128,
        node_prefix: u8,
        nodes: usize,
    },
    #[error(
        "{key} {cidr} contains {what} {address} of host `{host}` ({inventory}:{host_line}): cluster ranges must not overlap the hosts' network"
    )]
    HostInRange {
        key: &'static str,
        cidr: IpNet,
        what: &'static str,
        address: IpAddr,
        host: String,
        inventory: String,
        host_line: usize,
    },
    #[error(
        "`api_endpoint: {0}` must be `node-local` or HOST:PORT of your load balancer (IPv6 in brackets: [fd00::1]:6443)"
    )]
    BadApiEndpoint(String),
    #[error("`api_port: 0` is not a port")]
    ZeroPort,
    #[error("`network: {0}` is not supported: the only pod network so far is `bridge`")]
    UnknownNetwork(String),
    #[error("`state_dir` is empty")]
    EmptyStateDir,
    #[error(
        "kubelet_eviction_hard: `{signal}: {value}` is not a threshold the kubelet takes: the signal must be one of memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, pid.available, and the value a percentage below 100% or a quantity such as 100Mi"
    )]
    BadEviction { signal: String, value: String },
    #[error(
        "`kubelet_fail_cgroup_v1: {0}` must be true or false (false lets the kubelet of Kubernetes 1.35 and later run on cgroup v1 hosts)"
    )]
    BadFailCgroupV1(String),
    #[error(
        "hardening: `{key}` is not an item ilha knows; the items are {}",
        Hardening::KEYS.join(", ")
    )]
    UnknownHardening { key: String },
    #[error("hardening: `{key}: {value}` must be true or false")]
    BadHardening { key: String, value: String },
    #[error(
        "kubernetes_version {configured} does not match the bundle's {bundled}: the bundle carries one version's binaries and images"
    )]
    VersionMismatch {
        configured: KubeVersion,
        bundled: KubeVersion,
    },
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            source: None,
            kubernetes_version: None,
            cluster_name: DEFAULT_CLUSTER_NAME.to_string(),
            dns_domain: DEFAULT_DNS_DOMAIN.to_string(),
            pod_cidr: DEFAULT_POD_CIDR.parse().expect("valid default pod CIDR"),
            service_cidr: DEFAULT_SERVICE_CIDR
                .parse()
                .expect("valid default service CIDR"),
            api_endpoint: ApiEndpoint::NodeLocal,
            api_port: DEFAULT_API_PORT,
            network: Network::Bridge,
            state_dir: default_state_dir(Path::new(""), DEFAULT_CLUSTER_NAME),
            kubelet_eviction_hard: BTreeMap::new(),
            kubelet_fail_cgroup_v1: None,
            hardening: Hardening::default(),
            lines: KeyLines::default(),
        }
    }
}

/// `ilha-state/<cluster_name>` next to the cluster config (or, without one, next to the
/// inventory): never relative to where ilha happens to run, since a second state directory
/// for a running cluster would mean new CAs pushed to its hosts.
pub fn default_state_dir(base_dir: &Path, cluster_name: &str) -> PathBuf {
    base_dir.join("ilha-state").join(cluster_name)
}

impl ClusterConfig {
    /// All defaults, the state directory in `base_dir` (the config's or the inventory's).
    pub fn defaults_beside(base_dir: &Path) -> ClusterConfig {
        ClusterConfig {
            state_dir: default_state_dir(base_dir, DEFAULT_CLUSTER_NAME),
            ..ClusterConfig::default()
        }
    }

    /// `path`'s config, or without one the defaults with the state directory next to the
    /// inventory. The state directory is made absolute, so every summary names it plainly.
    pub fn load_or_default(path: Option<&Path>, inventory: &Path) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => ClusterConfig::load(path)?,
            None => ClusterConfig::defaults_beside(inventory.parent().unwrap_or(Path::new(""))),
        };
        if let Ok(absolute) = std::path::absolute(&config.state_dir) {
            config.state_dir = absolute;
        }
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses config text; `path` names the source in errors and anchors a relative `state_dir`.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let invalid = |problems| ConfigError::Invalid {
            path: Some(path.to_path_buf()),
            problems,
        };
        // An empty or comment-only file means "all defaults".
        let raw: Option<RawConfig> = serde_saphyr::from_str(text).map_err(|err| {
            let (line, message) = crate::inventory::yaml::line_and_message(&err);
            invalid(vec![ConfigProblem {
                line: Some(line),
                key: "",
                kind: ConfigProblemKind::Yaml(message),
            }])
        })?;
        let base_dir = path.parent().unwrap_or(Path::new(""));
        let Some(raw) = raw else {
            return Ok(ClusterConfig {
                source: Some(path.to_path_buf()),
                ..ClusterConfig::defaults_beside(base_dir)
            });
        };
        build(raw, base_dir)
            .map(|config| ClusterConfig {
                source: Some(path.to_path_buf()),
                ..config
            })
            .map_err(invalid)
    }

    /// The version to install: the config's if set (it must then be the bundle's), else the
    /// bundle's.
    pub fn resolve_kubernetes_version(
        &self,
        bundled: &KubeVersion,
    ) -> Result<KubeVersion, ConfigError> {
        match &self.kubernetes_version {
            Some(configured) if configured != bundled => Err(self.invalid(vec![ConfigProblem {
                line: self.lines.kubernetes_version,
                key: "kubernetes_version",
                kind: ConfigProblemKind::VersionMismatch {
                    configured: configured.clone(),
                    bundled: bundled.clone(),
                },
            }])),
            _ => Ok(bundled.clone()),
        }
    }

    /// Checks the config against the hosts: cluster ranges must not contain host addresses, and
    /// the pod range must hold one node range per Kubernetes node.
    pub fn check_inventory(&self, inventory: &Inventory) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let inventory_name = inventory.source.display().to_string();
        for (key, cidr, line) in [
            ("pod_cidr", self.pod_cidr, self.lines.pod_cidr),
            ("service_cidr", self.service_cidr, self.lines.service_cidr),
        ] {
            for host in &inventory.hosts {
                let addresses = [("ip", host.ip), ("access_ip", host.access_ip)];
                let ssh_ip = host.ssh_host.parse::<IpAddr>().ok();
                for (what, address) in addresses.into_iter().chain([("ansible_host", ssh_ip)]) {
                    if let Some(address) = address
                        && cidr.contains(&address)
                    {
                        problems.push(ConfigProblem {
                            line,
                            key,
                            kind: ConfigProblemKind::HostInRange {
                                key,
                                cidr,
                                what,
                                address,
                                host: host.name.clone(),
                                inventory: inventory_name.clone(),
                                host_line: host.line,
                            },
                        });
                    }
                }
            }
        }
        let nodes = inventory.kubernetes_nodes().count();
        let node_prefix = self.node_cidr_prefix();
        let capacity = 1u128 << (node_prefix - self.pod_cidr.prefix_len()).min(127);
        if nodes as u128 > capacity {
            problems.push(ConfigProblem {
                line: self.lines.pod_cidr,
                key: "pod_cidr",
                kind: ConfigProblemKind::PodCidrFull {
                    cidr: self.pod_cidr,
                    capacity,
                    node_prefix,
                    nodes,
                },
            });
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(self.invalid(problems))
        }
    }

    fn invalid(&self, problems: Vec<ConfigProblem>) -> ConfigError {
        ConfigError::Invalid {
            path: self.source.clone(),
            problems,
        }
    }

    /// The prefix of each node's pod range (`--node-cidr-mask-size`).
    pub fn node_cidr_prefix(&self) -> u8 {
        match self.pod_cidr {
            IpNet::V4(_) => NODE_CIDR_PREFIX_V4,
            IpNet::V6(_) => NODE_CIDR_PREFIX_V6,
        }
    }

    /// The `kubernetes` Service's cluster IP: the service range's first address.
    pub fn api_service_ip(&self) -> IpAddr {
        nth_address(self.service_cidr, 1)
    }

    /// Cluster DNS's Service IP: the 10th address, where kubeadm and Kubespray put it.
    pub fn dns_service_ip(&self) -> IpAddr {
        nth_address(self.service_cidr, 10)
    }

    /// `host:port` every Kubernetes node's kubelet and kube-proxy use for the API.
    pub fn node_api_address(&self) -> String {
        match &self.api_endpoint {
            ApiEndpoint::NodeLocal => format!("127.0.0.1:{}", self.api_port),
            ApiEndpoint::External { host, port } => join_host_port(host, *port),
        }
    }
}

/// `host:port`, with an IPv6 address in brackets.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn nth_address(cidr: IpNet, n: u32) -> IpAddr {
    match cidr.network() {
        IpAddr::V4(network) => IpAddr::V4((u32::from(network) + n).into()),
        IpAddr::V6(network) => IpAddr::V6((u128::from(network) + u128::from(n)).into()),
    }
}

fn line_of<T>(spanned: &Spanned<T>) -> usize {
    usize::try_from(spanned.referenced.line())
        .unwrap_or(1)
        .max(1)
}

fn build(raw: RawConfig, base_dir: &Path) -> Result<ClusterConfig, Vec<ConfigProblem>> {
    let mut problems = Vec::new();
    let mut config = ClusterConfig::default();
    let mut problem = |line: usize, key: &'static str, kind: ConfigProblemKind| {
        problems.push(ConfigProblem {
            line: Some(line),
            key,
            kind,
        });
    };

    if let Some(version) = &raw.kubernetes_version {
        config.lines.kubernetes_version = Some(line_of(version));
        match version.value.parse() {
            Ok(parsed) => config.kubernetes_version = Some(parsed),
            Err(err) => problem(
                line_of(version),
                "kubernetes_version",
                ConfigProblemKind::BadVersion(err),
            ),
        }
    }
    if let Some(name) = &raw.cluster_name {
        if is_dns_label(&name.value) {
            config.cluster_name = name.value.clone();
        } else {
            problem(
                line_of(name),
                "cluster_name",
                ConfigProblemKind::BadDnsName {
                    key: "cluster_name",
                    value: name.value.clone(),
                    what: "label",
                },
            );
        }
    }
    if let Some(domain) = &raw.dns_domain {
        if domain.value.split('.').all(is_dns_label) {
            config.dns_domain = domain.value.clone();
        } else {
            problem(
                line_of(domain),
                "dns_domain",
                ConfigProblemKind::BadDnsName {
                    key: "dns_domain",
                    value: domain.value.clone(),
                    what: "name",
                },
            );
        }
    }
    let mut cidr = |field: &Option<Spanned<String>>,
                    key: &'static str,
                    slot: &mut IpNet,
                    line_slot: &mut Option<usize>| {
        let Some(field) = field else { return true };
        let line = line_of(field);
        *line_slot = Some(line);
        match field.value.trim().parse::<IpNet>() {
            Ok(net) if net != net.trunc() => {
                problem(
                    line,
                    key,
                    ConfigProblemKind::HostBitsSet {
                        key,
                        value: field.value.clone(),
                        network: net.trunc(),
                    },
                );
                false
            }
            Ok(net) => {
                *slot = net;
                true
            }
            Err(_) => {
                problem(
                    line,
                    key,
                    ConfigProblemKind::BadCidr {
                        key,
                        value: field.value.clone(),
                    },
                );
                false
            }
        }
    };
    let pod_ok = cidr(
        &raw.pod_cidr,
        "pod_cidr",
        &mut config.pod_cidr,
        &mut config.lines.pod_cidr,
    );
    let service_ok = cidr(
        &raw.service_cidr,
        "service_cidr",
        &mut config.service_cidr,
        &mut config.lines.service_cidr,
    );
    if pod_ok && service_ok {
        let pod_line = config.lines.pod_cidr;
        let service_line = config.lines.service_cidr;
        let (pod, service) = (config.pod_cidr, config.service_cidr);
        // Point at whichever of the two the file sets (the pod line when both).
        let line = pod_line.or(service_line).unwrap_or(1);
        let key = if pod_line.is_some() {
            "pod_cidr"
        } else {
            "service_cidr"
        };
        if pod.max_prefix_len() != service.max_prefix_len() {
            problem(line, key, ConfigProblemKind::MixedFamilies { pod, service });
        } else if pod.contains(&service.network()) || service.contains(&pod.network()) {
            problem(
                line,
                key,
                ConfigProblemKind::CidrOverlap {
                    pod,
                    service,
                    service_line: service_line.map_or("default".to_string(), |l| l.to_string()),
                },
            );
        }
        let service_line = service_line.unwrap_or(1);
        let host_bits = service.max_prefix_len() - service.prefix_len();
        if host_bits < 4 {
            problem(
                service_line,
                "service_cidr",
                ConfigProblemKind::ServiceCidrTooSmall(service),
            );
        } else if host_bits > 20 {
            problem(
                service_line,
                "service_cidr",
                ConfigProblemKind::ServiceCidrTooLarge(service),
            );
        }
        let node_prefix = match pod {
            IpNet::V4(_) => NODE_CIDR_PREFIX_V4,
            IpNet::V6(_) => NODE_CIDR_PREFIX_V6,
        };
        if pod.prefix_len() > node_prefix {
            problem(
                pod_line.unwrap_or(1),
                "pod_cidr",
                ConfigProblemKind::PodCidrTooSmall {
                    cidr: pod,
                    node_prefix,
                },
            );
        }
    }
    if let Some(port) = &raw.api_port {
        if port.value == 0 {
            problem(line_of(port), "api_port", ConfigProblemKind::ZeroPort);
        } else {
            config.api_port = port.value;
        }
    }
    if let Some(endpoint) = &raw.api_endpoint {
        let line = line_of(endpoint);
        config.lines.api_endpoint = Some(line);
        match parse_api_endpoint(&endpoint.value) {
            Some(parsed) => config.api_endpoint = parsed,
            None => problem(
                line,
                "api_endpoint",
                ConfigProblemKind::BadApiEndpoint(endpoint.value.clone()),
            ),
        }
    }
    if let Some(network) = &raw.network {
        match network.value.as_str() {
            "bridge" => config.network = Network::Bridge,
            other => problem(
                line_of(network),
                "network",
                ConfigProblemKind::UnknownNetwork(other.to_string()),
            ),
        }
    }
    config.state_dir = match &raw.state_dir {
        Some(dir) if dir.value.trim().is_empty() => {
            problem(line_of(dir), "state_dir", ConfigProblemKind::EmptyStateDir);
            PathBuf::new()
        }
        // Relative to the config file, so the file means the same from any working directory.
        Some(dir) => base_dir.join(&dir.value),
        None => default_state_dir(base_dir, &config.cluster_name),
    };
    if let Some(eviction) = &raw.kubelet_eviction_hard {
        for (signal, value) in &eviction.value {
            if EVICTION_SIGNALS.contains(&signal.as_str()) && is_eviction_threshold(value) {
                config
                    .kubelet_eviction_hard
                    .insert(signal.clone(), value.clone());
            } else {
                problem(
                    line_of(eviction),
                    "kubelet_eviction_hard",
                    ConfigProblemKind::BadEviction {
                        signal: signal.clone(),
                        value: value.clone(),
                    },
                );
            }
        }
    }
    if let Some(fail) = &raw.kubelet_fail_cgroup_v1 {
        match fail.value.as_str() {
            "true" => config.kubelet_fail_cgroup_v1 = Some(true),
            "false" => config.kubelet_fail_cgroup_v1 = Some(false),
            other => problem(
                line_of(fail),
                "kubelet_fail_cgroup_v1",
                ConfigProblemKind::BadFailCgroupV1(other.to_string()),
            ),
        }
    }
    if let Some(hardening) = &raw.hardening {
        for (key, value) in &hardening.value {
            let Some(item) = config.hardening.item(key) else {
                problem(
                    line_of(hardening),
                    "hardening",
                    ConfigProblemKind::UnknownHardening { key: key.clone() },
                );
                continue;
            };
            match value.as_str() {
                "true" => *item = true,
                "false" => *item = false,
                other => problem(
                    line_of(hardening),
                    "hardening",
                    ConfigProblemKind::BadHardening {
                        key: key.clone(),
                        value: other.to_string(),
                    },
                ),
            }
        }
    }
    if problems.is_empty() {
        Ok(config)
    } else {
        problems.sort_by_key(|problem| problem.line);
        Err(problems)
    }
}

fn parse_api_endpoint(value: &str) -> Option<ApiEndpoint> {
    let value = value.trim();
    if value == "node-local" {
        return Some(ApiEndpoint::NodeLocal);
    }
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let (host, port) = rest.split_once("]:")?;
        host.parse::<std::net::Ipv6Addr>().ok()?;
        (host, port)
    } else {
        let (host, port) = value.rsplit_once(':')?;
        if host.contains(':') {
            return None;
        }
        (host, port)
    };
    let port: u16 = port.parse().ok().filter(|port| *port > 0)?;
    let valid_host = host.parse::<IpAddr>().is_ok()
        || (!host.is_empty()
            && host
                .split('.')
                .all(|label| is_dns_label(&label.to_ascii_lowercase())));
    valid_host.then(|| ApiEndpoint::External {
        host: host.to_string(),
        port,
    })
}

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_eviction_thresholds_are_checked() {
        let config = parse(
            "kubelet_eviction_hard:\n  imagefs.available: 5%\n  memory.available: 100Mi\n  nodefs.inodesFree: \"2.5%\"\n",
        )
        .unwrap();
        assert_eq!(config.kubelet_eviction_hard["imagefs.available"], "5%");
        assert_eq!(config.kubelet_eviction_hard["memory.available"], "100Mi");
        assert_eq!(config.kubelet_eviction_hard["nodefs.inodesFree"], "2.5%");
        for bad in [
            "imagefs.available: 150%",
            "imagefs.available: lots",
            "disk.free: 5%",
        ] {
            let err = parse(&format!(
                "cluster_name: x\nkubelet_eviction_hard:\n  {bad}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(":3: kubelet_eviction_hard:") && err.contains("is not a threshold"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn hardening_items_default_on_and_each_turns_off_alone() {
        assert_eq!(parse("# unset\n").unwrap().hardening, Hardening::default());
        let all_on = Hardening::default();
        for key in Hardening::KEYS {
            let config = parse(&format!("hardening:\n  {key}: false\n")).unwrap();
            let mut expected = all_on;
            *expected.item(key).unwrap() = false;
            assert_eq!(config.hardening, expected, "{key}");
            assert_ne!(config.hardening, all_on, "{key} turned nothing off");
        }
        let err = error("cluster_name: x\nhardening:\n  audit: false\n");
        assert!(
            err.starts_with("conf/cluster.yaml:3: hardening: `audit` is not an item"),
            "{err}"
        );
        assert!(err.contains("audit_log"), "the items are listed: {err}");
        let err = error("hardening:\n  audit_log: no\n");
        assert!(
            err.contains("hardening: `audit_log: no` must be true or false"),
            "{err}"
        );
    }

    #[test]
    fn kubelet_fail_cgroup_v1_is_a_boolean() {
        assert_eq!(parse("# unset\n").unwrap().kubelet_fail_cgroup_v1, None);
        assert_eq!(
            parse("kubelet_fail_cgroup_v1: false\n")
                .unwrap()
                .kubelet_fail_cgroup_v1,
            Some(false)
        );
        assert_eq!(
            parse("kubelet_fail_cgroup_v1: true\n")
                .unwrap()
                .kubelet_fail_cgroup_v1,
            Some(true)
        );
        for bad in ["no", "off", "0", "maybe", "False"] {
            let err = error(&format!("cluster_name: x\nkubelet_fail_cgroup_v1: {bad}\n"));
            assert!(
                err.starts_with("conf/cluster.yaml:2: `kubelet_fail_cgroup_v1: ")
                    && err.contains("must be true or false"),
                "{bad}: {err}"
            );
        }
        assert!(error("kubelet_fail_cgroup_v1: [false]\n").starts_with("conf/cluster.yaml:1: "));
    }

    fn parse(text: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(Path::new("conf/cluster.yaml"), text)
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn versions_parse_and_order() {
        let v = |s: &str| s.parse::<KubeVersion>().unwrap();
        assert_eq!(v("v1.20.15"), KubeVersion::new(1, 20, 15));
        assert_eq!(v("1.31.2").to_string(), "v1.31.2");
        assert_eq!(v("v1.32.0-rc.1").to_string(), "v1.32.0-rc.1");
        assert!(v("v1.20.15") < v("v1.31.0"));
        assert!(v("v1.9.0") < v("v1.10.0"));
        assert!(v("v1.32.0-alpha.1") < v("v1.32.0-beta.0"));
        assert!(v("v1.32.0-rc.1") < v("v1.32.0-rc.2"));
        assert!(v("v1.32.0-rc.2") < v("v1.32.0"));
        assert!(v("v1.32.0-rc.1") < v("v1.32.0-rc.1.1"));
        assert!(v("v1.24.0").at_least(1, 24) && !v("v1.23.9").at_least(1, 24));
        for bad in [
            "1.20",
            "v1.20.x",
            "1.020.1",
            "v1.2.3-",
            "v1.2.3-a..b",
            "",
            "1.2.3.4",
        ] {
            assert!(bad.parse::<KubeVersion>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults() {
        let config = parse("# nothing set\n").unwrap();
        assert_eq!(config.cluster_name, "ilha");
        assert_eq!(config.dns_domain, "cluster.local");
        assert_eq!(config.pod_cidr.to_string(), "10.244.0.0/16");
        assert_eq!(config.service_cidr.to_string(), "10.96.0.0/12");
        assert_eq!(config.api_endpoint, ApiEndpoint::NodeLocal);
        assert_eq!(config.api_port, 6443);
        assert_eq!(config.network, Network::Bridge);
        assert_eq!(config.state_dir, PathBuf::from("conf/ilha-state/ilha"));
        assert_eq!(config.kubernetes_version, None);
        assert_eq!(config.api_service_ip().to_string(), "10.96.0.1");
        assert_eq!(config.dns_service_ip().to_string(), "10.96.0.10");
        assert_eq!(config.node_api_address(), "127.0.0.1:6443");
    }

    #[test]
    fn every_key() {
        let config = parse(
            "kubernetes_version: v1.20.15\ncluster_name: lab\ndns_domain: lab.local\npod_cidr: 10.32.0.0/16\nservice_cidr: 10.33.0.0/24\napi_endpoint: \"[fd00::1]:8443\"\napi_port: 7443\nnetwork: bridge\nstate_dir: state\n",
        )
        .unwrap();
        assert_eq!(config.kubernetes_version, Some(KubeVersion::new(1, 20, 15)));
        assert_eq!(config.cluster_name, "lab");
        assert_eq!(
            config.api_endpoint,
            ApiEndpoint::External {
                host: "fd00::1".into(),
                port: 8443
            }
        );
        assert_eq!(config.node_api_address(), "[fd00::1]:8443");
        assert_eq!(config.api_port, 7443);
        assert_eq!(config.state_dir, PathBuf::from("conf/state"));
        let named = parse("cluster_name: prod\n").unwrap();
        assert_eq!(named.state_dir, PathBuf::from("conf/ilha-state/prod"));
        assert_eq!(
            parse("# only a comment\n").unwrap().state_dir,
            PathBuf::from("conf/ilha-state/ilha")
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        assert!(
            error("cluster_name: a\npod_cidrs: 10.0.0.0/8\n").starts_with("conf/cluster.yaml:2: ")
        );
        let overlap = error("cluster_name: a\npod_cidr: 10.96.0.0/16\n");
        assert!(overlap.starts_with("conf/cluster.yaml:2: pod_cidr 10.96.0.0/16 and service_cidr 10.96.0.0/12 (line default) overlap"), "{overlap}");
        assert!(error("pod_cidr: 10.244.1.0/16\n").contains(
            ":1: `pod_cidr: 10.244.1.0/16` has host bits set: did you mean 10.244.0.0/16?"
        ));
        assert!(
            error("\nservice_cidr: 11.0.0.0/8\n")
                .starts_with("conf/cluster.yaml:2: service_cidr 11.0.0.0/8 is too large")
        );
        assert!(
            error("service_cidr: 10.0.0.0/29\n")
                .contains(":1: service_cidr 10.0.0.0/29 is too small")
        );
        assert!(error("pod_cidr: 10.0.0.0/25\n").contains(":1: pod_cidr 10.0.0.0/25 is smaller"));
        assert!(error("pod_cidr: fd00::/48\n").contains("not of the same IP family"));
        assert!(
            error("kubernetes_version: 1.20\n").contains(":1: `1.20` is not a Kubernetes version")
        );
        assert!(error("network: calico\n").contains(":1: `network: calico` is not supported"));
        assert!(error("api_endpoint: lb\n").contains(":1: `api_endpoint: lb` must be"));
        assert!(error("api_port: 0\n").contains(":1: `api_port: 0`"));
        assert!(error("api_port: 70000\n").starts_with("conf/cluster.yaml:1: "));
        assert!(
            error("cluster_name: Lab_1\n")
                .contains(":1: `cluster_name: Lab_1` must be a DNS label")
        );
        assert!(error("dns_domain: a\ndns_domain: b\n").starts_with("conf/cluster.yaml:2: "));
    }

    #[test]
    fn bundle_version_wins_unless_contradicted() {
        let bundled = KubeVersion::new(1, 20, 15);
        let unset = parse("cluster_name: a\n").unwrap();
        assert_eq!(unset.resolve_kubernetes_version(&bundled).unwrap(), bundled);
        let other = parse("\nkubernetes_version: v1.31.2\n").unwrap();
        let err = other
            .resolve_kubernetes_version(&bundled)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("conf/cluster.yaml:2: kubernetes_version v1.31.2 does not match the bundle's v1.20.15"), "{err}");
    }

    #[test]
    fn inventory_cross_checks() {
        let inventory = Inventory::parse(
            Path::new("inv.ini"),
            "n1 ansible_host=10.244.3.4\nn2 ansible_host=192.168.1.2\n[kube_control_plane]\nn1\n[etcd]\nn1\n[kube_node]\nn2\n",
        )
        .unwrap();
        let defaults = ClusterConfig::default();
        let err = defaults
            .check_inventory(&inventory)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cluster config (default pod_cidr): pod_cidr 10.244.0.0/16 contains ansible_host 10.244.3.4 of host `n1` (inv.ini:1): cluster ranges must not overlap the hosts' network"
        );
        let moved = parse("\npod_cidr: 10.32.0.0/24\n").unwrap();
        let err = moved.check_inventory(&inventory).unwrap_err().to_string();
        assert!(err.starts_with("conf/cluster.yaml:2: pod_cidr 10.32.0.0/24 has room for 1 nodes' /24 ranges but the inventory has 2"), "{err}");
        let fine = parse("pod_cidr: 10.32.0.0/16\n").unwrap();
        fine.check_inventory(&inventory).unwrap();
    }
}
