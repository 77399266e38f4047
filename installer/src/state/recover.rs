//! `ilha state recover`: rebuilds a lost state directory from the cluster's hosts, so losing the
//! operator's machine is not losing the cluster.
//!
//! `ilha up` derives every step's digest from the state directory: the CAs, every leaf
//! certificate and key (leaves carry random keys and serials, so re-issuing one changes the bytes
//! a host receives), the pod range of each node, and how each etcd member was started. All of it
//! is on the hosts where `up` put it: the masters hold the three CAs with their keys, the
//! service-account pair, their own leaves and the kubeconfigs of the admin, controller-manager and
//! scheduler; etcd members their server, peer and health-check pairs and their unit (with the
//! `--initial-cluster` it was started with); every node its kubelet and kube-proxy kubeconfigs;
//! every host its journal and a copy of its pre-install record. The Nodes' `spec.podCIDR` gives
//! the pod ranges. Read back byte for byte, they make the next `up` find every step done.
//!
//! Order of business: inputs, then a refusal if the state directory already holds a PKI (nothing
//! is overwritten), then SSH to every host that answers (a host that does not is named, and what
//! only it held is listed as re-issued by the next `up`), then the reads, the checks (every host
//! agrees on each CA; every leaf matches its key and was signed by its CA), and only then the
//! writing: into a 0700 temporary directory next to the state directory, validated, then renamed
//! into place.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ipnet::IpNet;
use sha2::{Digest as _, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer as _;

use crate::cluster::journal::Journal;
use crate::cluster::membership::{self, Bootstrap, ClusterState};
use crate::cluster::paths::{ETCD_PKI_DIR, KUBERNETES_DIR, PKI_DIR, UNIT_DIR};
use crate::cluster::record::{self, HostRecord};
use crate::cluster::run::{kubectl, load_inputs, targets};
use crate::cluster::{allocations, certs, say};
use crate::config::{ApiEndpoint, ClusterConfig};
use crate::inventory::{Inventory, Role};
use crate::pki::{CaKind, KeyPairPem, Pki};
use crate::ssh::{Fleet, Session, SshOptions};

/// What `ilha state recover` is given.
#[derive(Debug, Clone)]
pub struct RecoverRequest {
    pub inventory: PathBuf,
    pub config: Option<PathBuf>,
    pub ssh: SshOptions,
}

/// Top-level entries recovery writes; each must be absent from an existing state directory.
/// `pki` comes last: its presence is what marks a state directory as holding a cluster.
const WRITTEN: [&str; 6] = [
    "records",
    "pod-ranges.json",
    "etcd-members.json",
    "admin.conf",
    "pki",
    crate::cluster::encryption::STATE_SUBDIR,
];

/// A certificate (or public key) and its private key, PEM bytes as found on a host.
type PemPair = (Vec<u8>, Vec<u8>);

const KEY_MODE: u32 = 0o600;
const PUBLIC_MODE: u32 = 0o644;

fn etcd_unit_path() -> String {
    format!("{UNIT_DIR}/etcd.service")
}

fn apiserver_unit_path() -> String {
    format!("{UNIT_DIR}/kube-apiserver.service")
}

/// Where a CA's certificate and key live on the hosts that hold them.
fn ca_paths(kind: CaKind) -> (String, String) {
    match kind {
        CaKind::Kubernetes => (format!("{PKI_DIR}/ca.crt"), format!("{PKI_DIR}/ca.key")),
        CaKind::Etcd => (
            format!("{ETCD_PKI_DIR}/ca.crt"),
            format!("{ETCD_PKI_DIR}/ca.key"),
        ),
        CaKind::FrontProxy => (
            format!("{PKI_DIR}/front-proxy-ca.crt"),
            format!("{PKI_DIR}/front-proxy-ca.key"),
        ),
    }
}

/// Where a leaf of the state directory's PKI is found on a host: a certificate/key file pair, or
/// the client credentials embedded in a kubeconfig.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Pair(String, String),
    Kubeconfig(String),
}

impl Source {
    fn pair(dir: &str, stem: &str) -> Source {
        Source::Pair(format!("{dir}/{stem}.crt"), format!("{dir}/{stem}.key"))
    }
    fn kubeconfig(file: &str) -> Source {
        Source::Kubeconfig(format!("{KUBERNETES_DIR}/{file}"))
    }
    fn describe(&self) -> String {
        match self {
            Source::Pair(cert, _) => cert.clone(),
            Source::Kubeconfig(path) => path.clone(),
        }
    }
}

/// One leaf the state directory's PKI holds (`certs::files_for` issues them), where it is found
/// and on which hosts.
#[derive(Debug, Clone)]
struct LeafPlace {
    kind: CaKind,
    /// The file stem in the state directory (`apiserver-node1`).
    stem: String,
    source: Source,
    /// Hosts that received it: one for a host's own leaf, several for a shared one.
    hosts: Vec<String>,
}

/// Every leaf of the cluster, in the order `certs::files_for` issues them.
/// `kubelet_serving`: whether nodes hold a serving pair from ilha
/// (`hardening.kubelet_serving_certificates`).
fn leaf_places(inventory: &Inventory, kubelet_serving: bool) -> Vec<LeafPlace> {
    let names =
        |role: Role| -> Vec<String> { inventory.with_role(role).map(|h| h.name.clone()).collect() };
    let etcd = names(Role::Etcd);
    let masters = names(Role::ControlPlane);
    let nodes: Vec<String> = inventory
        .kubernetes_nodes()
        .map(|h| h.name.clone())
        .collect();
    let mut places = Vec::new();
    let shared = |kind, stem: &str, source, hosts: &Vec<String>| LeafPlace {
        kind,
        stem: stem.to_string(),
        source,
        hosts: hosts.clone(),
    };
    for host in &etcd {
        for stem in ["server", "peer"] {
            places.push(LeafPlace {
                kind: CaKind::Etcd,
                stem: format!("{stem}-{host}"),
                source: Source::pair(ETCD_PKI_DIR, stem),
                hosts: vec![host.clone()],
            });
        }
    }
    if !etcd.is_empty() {
        places.push(shared(
            CaKind::Etcd,
            "healthcheck-client",
            Source::pair(ETCD_PKI_DIR, "healthcheck-client"),
            &etcd,
        ));
    }
    for host in &masters {
        places.push(LeafPlace {
            kind: CaKind::Kubernetes,
            stem: format!("apiserver-{host}"),
            source: Source::pair(PKI_DIR, "apiserver"),
            hosts: vec![host.clone()],
        });
    }
    if !masters.is_empty() {
        for (kind, stem, source) in [
            (
                CaKind::Kubernetes,
                "apiserver-kubelet-client",
                Source::pair(PKI_DIR, "apiserver-kubelet-client"),
            ),
            (
                CaKind::Etcd,
                "apiserver-etcd-client",
                Source::pair(PKI_DIR, "apiserver-etcd-client"),
            ),
            (
                CaKind::FrontProxy,
                "front-proxy-client",
                Source::pair(PKI_DIR, "front-proxy-client"),
            ),
            (
                CaKind::Kubernetes,
                "admin",
                Source::kubeconfig("admin.conf"),
            ),
            (
                CaKind::Kubernetes,
                "controller-manager",
                Source::kubeconfig("controller-manager.conf"),
            ),
            (
                CaKind::Kubernetes,
                "scheduler",
                Source::kubeconfig("scheduler.conf"),
            ),
        ] {
            places.push(shared(kind, stem, source, &masters));
        }
    }
    for host in &nodes {
        places.push(LeafPlace {
            kind: CaKind::Kubernetes,
            stem: format!("kubelet-{host}"),
            source: Source::kubeconfig("kubelet.conf"),
            hosts: vec![host.clone()],
        });
    }
    for host in nodes.iter().filter(|_| kubelet_serving) {
        places.push(LeafPlace {
            kind: CaKind::Kubernetes,
            stem: certs::kubelet_serving_stem(host),
            source: Source::Pair(
                certs::KUBELET_SERVING_CERT.to_string(),
                certs::KUBELET_SERVING_KEY.to_string(),
            ),
            hosts: vec![host.clone()],
        });
    }
    if !nodes.is_empty() {
        places.push(shared(
            CaKind::Kubernetes,
            "kube-proxy",
            Source::kubeconfig("kube-proxy.conf"),
            &nodes,
        ));
    }
    places
}

/// The files recovery reads from a host with `roles`.
fn wanted_files(roles: &BTreeSet<Role>) -> Vec<String> {
    let mut files = vec![
        crate::cluster::paths::JOURNAL.to_string(),
        record::HOST_COPY.to_string(),
    ];
    let control_plane = roles.contains(&Role::ControlPlane);
    let etcd = roles.contains(&Role::Etcd);
    if control_plane || roles.contains(&Role::Worker) {
        files.push(format!("{PKI_DIR}/ca.crt"));
        files.push(format!("{KUBERNETES_DIR}/kubelet.conf"));
        files.push(format!("{KUBERNETES_DIR}/kube-proxy.conf"));
        files.push(certs::KUBELET_SERVING_CERT.to_string());
        files.push(certs::KUBELET_SERVING_KEY.to_string());
    }
    if etcd || control_plane {
        files.push(format!("{ETCD_PKI_DIR}/ca.crt"));
    }
    if control_plane {
        // Secrets at rest: the keys exist nowhere else once the state directory is lost.
        files.push(crate::cluster::encryption::CONFIG_PATH.to_string());
    }
    if etcd {
        for stem in ["server", "peer", "healthcheck-client"] {
            files.push(format!("{ETCD_PKI_DIR}/{stem}.crt"));
            files.push(format!("{ETCD_PKI_DIR}/{stem}.key"));
        }
        files.push(etcd_unit_path());
    }
    if control_plane {
        for kind in CaKind::ALL {
            let (cert, key) = ca_paths(kind);
            files.push(cert);
            files.push(key);
        }
        files.push(format!("{PKI_DIR}/sa.key"));
        files.push(format!("{PKI_DIR}/sa.pub"));
        for stem in [
            "apiserver",
            "apiserver-kubelet-client",
            "apiserver-etcd-client",
            "front-proxy-client",
        ] {
            files.push(format!("{PKI_DIR}/{stem}.crt"));
            files.push(format!("{PKI_DIR}/{stem}.key"));
        }
        for conf in ["admin.conf", "controller-manager.conf", "scheduler.conf"] {
            files.push(format!("{KUBERNETES_DIR}/{conf}"));
        }
        files.push(apiserver_unit_path());
    }
    let mut seen = BTreeSet::new();
    files.retain(|f| seen.insert(f.clone()));
    files
}

/// Prints each file as `F PATH BASE64` on one line, or `M PATH` when it is not there.
fn read_script(files: &[String]) -> String {
    let mut script = String::from("for f in");
    for file in files {
        script.push(' ');
        script.push_str(&crate::ssh::shell_quote(file));
    }
    script.push_str(
        "; do\n  if [ -f \"$f\" ]; then printf 'F %s ' \"$f\"; base64 -w0 < \"$f\"; echo\n  \
         else printf 'M %s\\n' \"$f\"; fi\ndone\n",
    );
    script
}

/// The files [`read_script`] printed, by path (missing ones left out).
fn parse_listing(host: &str, text: &str) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let bad = || {
            format!(
                "{host}: line {} of the file listing is not understood",
                number + 1
            )
        };
        if line.starts_with("M ") {
            continue;
        }
        let rest = line.strip_prefix("F ").with_context(bad)?;
        let (path, data) = rest.split_once(' ').unwrap_or((rest, ""));
        let bytes = STANDARD
            .decode(data.trim())
            .with_context(|| format!("{host}: {path}: not base64 in the file listing"))?;
        files.insert(path.to_string(), bytes);
    }
    Ok(files)
}

/// What one reachable host holds.
#[derive(Debug, Clone)]
pub struct HostFiles {
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub files: BTreeMap<String, Vec<u8>>,
}

impl HostFiles {
    fn text(&self, path: &str) -> Option<&str> {
        self.files
            .get(path)
            .and_then(|b| std::str::from_utf8(b).ok())
    }
}

/// `sha256:` of a PEM certificate's DER, the form fingerprints are shown in.
pub fn fingerprint(pem: &[u8]) -> anyhow::Result<String> {
    let der = cert_der(pem)?;
    Ok(format!("sha256:{}", hex::encode(Sha256::digest(&der))))
}

fn cert_der(pem: &[u8]) -> anyhow::Result<Vec<u8>> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| anyhow::anyhow!("bad PEM: {e}"))?;
    if block.label != "CERTIFICATE" {
        bail!("PEM block is `{}`, expected `CERTIFICATE`", block.label);
    }
    X509Certificate::from_der(&block.contents).map_err(|e| anyhow::anyhow!("bad X.509: {e}"))?;
    Ok(block.contents)
}

/// The value most hosts hold (ties: the first in inventory order) with the hosts holding it, and
/// the hosts holding something else.
fn majority<T: Clone + Eq>(copies: &[(String, T)]) -> Option<(T, Vec<String>, Vec<String>)> {
    let mut groups: Vec<(T, Vec<String>)> = Vec::new();
    for (host, value) in copies {
        match groups.iter_mut().find(|(v, _)| v == value) {
            Some((_, hosts)) => hosts.push(host.clone()),
            None => groups.push((value.clone(), vec![host.clone()])),
        }
    }
    let best = groups
        .iter()
        .enumerate()
        .max_by_key(|(index, (_, hosts))| (hosts.len(), std::cmp::Reverse(*index)))
        .map(|(index, _)| index)?;
    let (value, hosts) = groups[best].clone();
    let others = groups
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != best)
        .flat_map(|(_, (_, hosts))| hosts.clone())
        .collect();
    Some((value, hosts, others))
}

/// Checks that every host holding the CA certificate holds the same one; returns it and the
/// hosts it came from. A disagreement is an error naming each fingerprint and its hosts.
pub fn agree_on_ca(
    label: &str,
    remote: &str,
    copies: &[(String, Vec<u8>)],
) -> anyhow::Result<Option<(Vec<u8>, Vec<String>)>> {
    let mut by_print: Vec<(String, Vec<String>, Vec<u8>)> = Vec::new();
    for (host, pem) in copies {
        let print = fingerprint(pem).with_context(|| format!("{host}: {remote}"))?;
        match by_print.iter_mut().find(|(p, _, _)| *p == print) {
            Some((_, hosts, _)) => hosts.push(host.clone()),
            None => by_print.push((print, vec![host.clone()], pem.clone())),
        }
    }
    if by_print.len() > 1 {
        let list: Vec<String> = by_print
            .iter()
            .map(|(print, hosts, _)| format!("{print} on {}", hosts.join(", ")))
            .collect();
        bail!(
            "the hosts do not agree on the {label} CA ({remote}): {}. They are not one cluster: \
             fix the inventory (does it name a host of another cluster?) or the hosts, then run \
             `ilha state recover` again",
            list.join("; ")
        );
    }
    Ok(by_print
        .into_iter()
        .next()
        .map(|(_, hosts, pem)| (pem, hosts)))
}

/// The client credentials of a kubeconfig `certs` wrote (and its cluster's name and CA).
#[derive(Debug, Clone, PartialEq, Eq)]
struct KubeconfigCredentials {
    cluster_name: String,
    ca_pem: Vec<u8>,
    pair: PemPair,
}

fn parse_kubeconfig(text: &str) -> anyhow::Result<KubeconfigCredentials> {
    #[derive(serde::Deserialize)]
    struct Config {
        clusters: Vec<NamedCluster>,
        users: Vec<NamedUser>,
    }
    #[derive(serde::Deserialize)]
    struct NamedCluster {
        name: String,
        cluster: Cluster,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct Cluster {
        certificate_authority_data: String,
    }
    #[derive(serde::Deserialize)]
    struct NamedUser {
        user: User,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "kebab-case")]
    struct User {
        client_certificate_data: String,
        client_key_data: String,
    }
    let config: Config = serde_saphyr::from_str(text).context("not a kubeconfig")?;
    let (Some(cluster), Some(user)) = (config.clusters.first(), config.users.first()) else {
        bail!("the kubeconfig has no cluster or no user");
    };
    let decode = |field: &str, data: &str| {
        STANDARD
            .decode(data.trim())
            .with_context(|| format!("`{field}` is not base64"))
    };
    Ok(KubeconfigCredentials {
        cluster_name: cluster.name.clone(),
        ca_pem: decode(
            "certificate-authority-data",
            &cluster.cluster.certificate_authority_data,
        )?,
        pair: (
            decode(
                "client-certificate-data",
                &user.user.client_certificate_data,
            )?,
            decode("client-key-data", &user.user.client_key_data)?,
        ),
    })
}

/// Why the pair cannot serve as a leaf of `ca_pem`, or `None` when it can.
fn leaf_problem(cert_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Option<String> {
    let der = match cert_der(cert_pem) {
        Ok(der) => der,
        Err(e) => return Some(format!("the certificate does not parse: {e}")),
    };
    let cert = X509Certificate::from_der(&der).expect("parsed above").1;
    let key = match std::str::from_utf8(key_pem)
        .ok()
        .and_then(|text| rcgen::KeyPair::from_pem(text).ok())
    {
        Some(key) => key,
        None => return Some("the key is not a PKCS#8 PEM private key".into()),
    };
    if cert.public_key().raw != rcgen::PublicKeyData::subject_public_key_info(&key).as_slice() {
        return Some("the key does not match the certificate".into());
    }
    let ca_der = cert_der(ca_pem).ok()?;
    let ca = X509Certificate::from_der(&ca_der).expect("parsed above").1;
    if cert.issuer().to_string() != ca.subject().to_string()
        || cert.verify_signature(Some(ca.public_key())).is_err()
    {
        return Some("it was not signed by the cluster's CA".into());
    }
    None
}

/// `--initial-cluster` and `--initial-cluster-state` of an etcd unit `render::etcd_unit` wrote.
pub fn bootstrap_from_unit(text: &str) -> anyhow::Result<Bootstrap> {
    let mut cluster = None;
    let mut state = None;
    for line in text.lines() {
        let flag = line.trim().trim_end_matches('\\').trim();
        if let Some(list) = flag.strip_prefix("--initial-cluster=") {
            let mut members = Vec::new();
            for entry in list.split(',') {
                let (name, url) = entry
                    .split_once('=')
                    .with_context(|| format!("`--initial-cluster`: `{entry}` is not NAME=URL"))?;
                members.push((name.to_string(), url.to_string()));
            }
            cluster = Some(members);
        } else if let Some(value) = flag.strip_prefix("--initial-cluster-state=") {
            state = Some(match value {
                "new" => ClusterState::New,
                "existing" => ClusterState::Existing,
                other => bail!("`--initial-cluster-state={other}` is neither new nor existing"),
            });
        }
    }
    match (cluster, state) {
        (Some(initial_cluster), Some(state)) => Ok(Bootstrap {
            initial_cluster,
            state,
        }),
        _ => bail!("no `--initial-cluster` and `--initial-cluster-state` flags"),
    }
}

/// `NAME=CIDR` lines (an empty CIDR: a Node without a pod range yet) into the ranges.
pub fn parse_pod_cidrs(text: &str) -> anyhow::Result<BTreeMap<String, IpNet>> {
    let mut ranges = BTreeMap::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, cidr) = line
            .split_once('=')
            .with_context(|| format!("`{line}` is not NODE=CIDR"))?;
        if cidr.is_empty() {
            continue;
        }
        let range: IpNet = cidr
            .parse()
            .with_context(|| format!("node {name}: `{cidr}` is not a CIDR"))?;
        ranges.insert(name.to_string(), range);
    }
    Ok(ranges)
}

/// What recovery gathered, before it is written.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Path relative to the state directory → content and mode.
    files: BTreeMap<String, (Vec<u8>, u32)>,
    ranges: BTreeMap<String, IpNet>,
    members: BTreeMap<String, Bootstrap>,
    /// What was recovered and from where, one line each.
    pub lines: Vec<String>,
    /// What could not be, and what the next `up` will do about it.
    pub warnings: Vec<String>,
}

/// What the cluster reported besides the files: the Nodes' pod ranges and etcd's member list,
/// each with the host that answered.
#[derive(Debug, Default)]
pub struct ClusterFacts {
    pub pod_cidrs: Option<(String, BTreeMap<String, IpNet>)>,
    pub members: Option<(String, Vec<membership::Member>)>,
}

fn pki_file(kind: CaKind, stem: &str, ext: &str) -> String {
    format!("pki/{}/{stem}.{ext}", kind.subdir())
}

fn short(print: &str) -> String {
    print.chars().take(7 + 16).collect::<String>() + "…"
}

/// Builds the state directory's content from what the hosts hold. `unreachable` names the
/// inventory hosts that could not be read.
pub fn assemble(
    inventory: &Inventory,
    config: &ClusterConfig,
    hosts: &[HostFiles],
    unreachable: &[String],
    facts: &ClusterFacts,
) -> anyhow::Result<Recovered> {
    let mut out = Recovered::default();
    let masters: Vec<&HostFiles> = hosts
        .iter()
        .filter(|h| h.roles.contains(&Role::ControlPlane))
        .collect();
    if masters.is_empty() {
        bail!(
            "no control-plane host of {} could be read ({}): the CAs and keys are only on them",
            inventory.source.display(),
            if unreachable.is_empty() {
                "none in the inventory".to_string()
            } else {
                format!("unreachable: {}", unreachable.join(", "))
            }
        );
    }

    // The CAs: every host holding one agrees on it; the keys come from the masters.
    let mut cas: BTreeMap<&'static str, Vec<u8>> = BTreeMap::new();
    let mut ca_line = Vec::new();
    for kind in CaKind::ALL {
        let (cert_path, key_path) = ca_paths(kind);
        let copies: Vec<(String, Vec<u8>)> = hosts
            .iter()
            .filter_map(|h| h.files.get(&cert_path).map(|c| (h.name.clone(), c.clone())))
            .collect();
        let Some((cert, _)) = agree_on_ca(kind.common_name(), &cert_path, &copies)? else {
            bail!(
                "no reachable control-plane host has the {} CA ({cert_path}): has `ilha up` \
                 installed this cluster?",
                kind.common_name()
            );
        };
        let keys: Vec<(String, Vec<u8>)> = masters
            .iter()
            .filter_map(|h| h.files.get(&key_path).map(|k| (h.name.clone(), k.clone())))
            .filter(|(_, key)| leaf_key_matches(&cert, key))
            .collect();
        let Some((key, from, _)) = majority(&keys) else {
            bail!(
                "the {} CA's key ({key_path}) is on no reachable control-plane host{}: without \
                 it no certificate of this cluster can be issued again. Clusters installed \
                 before ilha kept every CA key on the masters have it only in the lost state \
                 directory: restore that from a backup kit (`ilha backup` copies the state \
                 directory into it)",
                kind.common_name(),
                if unreachable.is_empty() {
                    String::new()
                } else {
                    format!(" (unreachable: {})", unreachable.join(", "))
                }
            );
        };
        ca_line.push(format!(
            "{} {}",
            kind.common_name(),
            short(&fingerprint(&cert)?)
        ));
        out.files
            .insert(pki_file(kind, "ca", "crt"), (cert.clone(), PUBLIC_MODE));
        out.files
            .insert(pki_file(kind, "ca", "key"), (key, KEY_MODE));
        out.lines.push(format!(
            "CA {:<15} certificate agreed by {} host(s), key from {}",
            kind.common_name(),
            copies.len(),
            from.join(", ")
        ));
        cas.insert(kind.subdir(), cert);
    }
    out.lines
        .insert(0, format!("fingerprints: {}", ca_line.join(", ")));

    // The service-account pair: tokens signed with another key would all be refused.
    let sa: Vec<(String, PemPair)> = masters
        .iter()
        .filter_map(|h| {
            Some((
                h.name.clone(),
                (
                    h.files.get(&format!("{PKI_DIR}/sa.key"))?.clone(),
                    h.files.get(&format!("{PKI_DIR}/sa.pub"))?.clone(),
                ),
            ))
        })
        .collect();
    let Some(((sa_key, sa_pub), from, others)) = majority(&sa) else {
        bail!(
            "no reachable control-plane host has the service-account key pair ({PKI_DIR}/sa.key, sa.pub)"
        );
    };
    if !others.is_empty() {
        bail!(
            "the control-plane hosts do not agree on the service-account key ({PKI_DIR}/sa.key): \
             {} hold one, {} another. Fix the hosts, then run `ilha state recover` again",
            from.join(", "),
            others.join(", ")
        );
    }
    out.files.insert("pki/sa.key".into(), (sa_key, KEY_MODE));
    out.files.insert("pki/sa.pub".into(), (sa_pub, PUBLIC_MODE));
    out.lines
        .push(format!("service-account key pair from {}", from.join(", ")));

    // Secrets at rest: every key the masters' configurations name.
    let mut configs = Vec::new();
    for master in &masters {
        if let Some(text) = master.text(crate::cluster::encryption::CONFIG_PATH) {
            configs.push((
                master.name.clone(),
                crate::cluster::encryption::parse_config(&master.name, text)?,
            ));
        }
    }
    let key_files = crate::cluster::encryption::recovered_files(&configs)?;
    if !key_files.is_empty() {
        let from: Vec<&str> = configs.iter().map(|(h, _)| h.as_str()).collect();
        out.lines.push(format!(
            "Secrets encryption keys ({}) from {}",
            key_files.len() - 1,
            from.join(", ")
        ));
        for (relative, bytes, mode) in key_files {
            out.files.insert(relative, (bytes, mode));
        }
    }

    // Every leaf, from the hosts that received it.
    let reachable: BTreeSet<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    let mut recovered_leaves = Vec::new();
    let mut cluster_names = BTreeSet::new();
    for place in leaf_places(inventory, config.hardening.kubelet_serving_certificates) {
        let ca = &cas[place.kind.subdir()];
        let mut copies: Vec<(String, PemPair)> = Vec::new();
        let mut rejected = Vec::new();
        for host in hosts.iter().filter(|h| place.hosts.contains(&h.name)) {
            let pair = match &place.source {
                Source::Pair(cert, key) => match (host.files.get(cert), host.files.get(key)) {
                    (Some(c), Some(k)) => (c.clone(), k.clone()),
                    _ => continue,
                },
                Source::Kubeconfig(path) => {
                    let Some(text) = host.text(path) else {
                        continue;
                    };
                    match parse_kubeconfig(text) {
                        Ok(creds) => {
                            cluster_names.insert((creds.cluster_name.clone(), host.name.clone()));
                            creds.pair
                        }
                        Err(e) => {
                            rejected.push(format!("{}: {path}: {e:#}", host.name));
                            continue;
                        }
                    }
                }
            };
            match leaf_problem(&pair.0, &pair.1, ca) {
                None => copies.push((host.name.clone(), pair)),
                Some(problem) => rejected.push(format!(
                    "{}: {}: {problem}",
                    host.name,
                    place.source.describe()
                )),
            }
        }
        for reason in &rejected {
            out.warnings.push(format!(
                "{reason}; not recovered: the next `ilha up` issues {} anew",
                place.stem
            ));
        }
        match majority(&copies) {
            Some(((cert, key), from, others)) => {
                if !others.is_empty() {
                    out.warnings.push(format!(
                        "{} ({}): {} hold one certificate, {} another; kept the one of {}: \
                         the next `ilha up` sends it to the others",
                        place.stem,
                        place.source.describe(),
                        from.join(", "),
                        others.join(", "),
                        from.join(", ")
                    ));
                }
                out.files.insert(
                    pki_file(place.kind, &place.stem, "crt"),
                    (cert, PUBLIC_MODE),
                );
                out.files
                    .insert(pki_file(place.kind, &place.stem, "key"), (key, KEY_MODE));
                recovered_leaves.push(place.stem.clone());
            }
            None if rejected.is_empty() => {
                let lost: Vec<&str> = place
                    .hosts
                    .iter()
                    .map(String::as_str)
                    .filter(|h| !reachable.contains(h))
                    .collect();
                let installed = hosts
                    .iter()
                    .any(|h| place.hosts.contains(&h.name) && !journal_of(h).is_empty());
                if !lost.is_empty() || installed {
                    out.warnings.push(format!(
                        "{} ({}) not found{}: the next `ilha up` issues it anew and restarts \
                         what uses it",
                        place.stem,
                        place.source.describe(),
                        if lost.is_empty() {
                            String::new()
                        } else {
                            format!(" (unreachable: {})", lost.join(", "))
                        }
                    ));
                }
            }
            None => {}
        }
    }
    out.lines.push(format!(
        "{} leaf certificates with their keys: {}",
        recovered_leaves.len(),
        recovered_leaves.join(", ")
    ));
    if let Some((other, host)) = cluster_names
        .iter()
        .find(|(name, _)| *name != config.cluster_name)
    {
        bail!(
            "{host}'s kubeconfigs name the cluster `{other}`, the cluster config `{}`: recover \
             with the config (-c) this cluster was built with",
            config.cluster_name
        );
    }

    // Pod ranges, as the API holds them.
    match &facts.pod_cidrs {
        Some((via, ranges)) => {
            let missing: Vec<&str> = inventory
                .kubernetes_nodes()
                .map(|h| h.name.as_str())
                .filter(|n| !ranges.contains_key(*n))
                .collect();
            if !missing.is_empty() {
                out.warnings.push(format!(
                    "no pod range on the Node of {}: the next `ilha up` gives each the lowest \
                     free range",
                    missing.join(", ")
                ));
            }
            out.ranges = ranges.clone();
            out.lines.push(format!(
                "pod ranges of {} node(s) from the Nodes' spec.podCIDR (via {via})",
                ranges.len()
            ));
        }
        None => out.warnings.push(
            "the pod ranges could not be read from the API (no control-plane host answered \
             `kubectl get nodes`): the next `ilha up` allocates them anew, which may differ \
             from the nodes' own"
                .to_string(),
        ),
    }

    // etcd membership: how each member was started, from its unit.
    let mut unit_members = Vec::new();
    for host in hosts.iter().filter(|h| h.roles.contains(&Role::Etcd)) {
        let Some(text) = host.text(&etcd_unit_path()) else {
            continue;
        };
        let boot = bootstrap_from_unit(text)
            .with_context(|| format!("{}: {}", host.name, etcd_unit_path()))?;
        out.members.insert(host.name.clone(), boot);
        unit_members.push(host.name.clone());
    }
    let lost_members: Vec<&str> = inventory
        .etcd()
        .map(|h| h.name.as_str())
        .filter(|n| !reachable.contains(n))
        .collect();
    if !lost_members.is_empty() {
        out.warnings.push(format!(
            "etcd member(s) {} unreachable: how they were started is unknown; the next `ilha up` \
             takes them as started with the others, and rewrites (restarting) a unit that says \
             otherwise",
            lost_members.join(", ")
        ));
    }
    match &facts.members {
        Some((via, listed)) => {
            let names: Vec<&str> = listed.iter().map(|m| m.name.as_str()).collect();
            for name in &names {
                if inventory.host(name).is_none() {
                    out.warnings.push(format!(
                        "etcd lists member `{name}`, which the inventory does not name"
                    ));
                }
            }
            for name in &unit_members {
                if !names.contains(&name.as_str()) {
                    out.warnings.push(format!(
                        "{name} has an etcd unit but etcd does not list it as a member"
                    ));
                }
            }
            out.lines.push(format!(
                "etcd membership of {} from their units ({}); `member list` via {via}: {}",
                unit_members.len(),
                unit_members.join(", "),
                names.join(", ")
            ));
        }
        None => {
            out.warnings
                .push("etcd's member list could not be read (no etcd member answered)".to_string());
            out.lines.push(format!(
                "etcd membership of {} from their units ({})",
                unit_members.len(),
                unit_members.join(", ")
            ));
        }
    }

    // Pre-install records and journals.
    let mut with_record = Vec::new();
    let mut installed = Vec::new();
    for host in hosts {
        if !journal_of(host).is_empty() {
            installed.push(host.name.clone());
        }
        match host.files.get(record::HOST_COPY) {
            Some(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                HostRecord::parse(&format!("{}: {}", host.name, record::HOST_COPY), &text)?;
                out.files.insert(
                    format!("records/{}.txt", host.name),
                    (bytes.clone(), PUBLIC_MODE),
                );
                with_record.push(host.name.clone());
            }
            None if !journal_of(host).is_empty() => out.warnings.push(format!(
                "{}: no pre-install record on the host ({}; installed by an ilha that kept it \
                 only in the state directory): `ilha reset` will have nothing to compare it with",
                host.name,
                record::HOST_COPY
            )),
            None => {}
        }
    }
    out.lines.push(format!(
        "pre-install records of {} host(s){}",
        with_record.len(),
        if with_record.is_empty() {
            String::new()
        } else {
            format!(": {}", with_record.join(", "))
        }
    ));
    out.lines.push(format!(
        "journals: {} host(s) installed ({}); they stay on the hosts, where `up` reads them",
        installed.len(),
        installed.join(", ")
    ));

    // The operator's admin kubeconfig, as `up` writes it.
    let admin = out
        .files
        .get(&pki_file(CaKind::Kubernetes, "admin", "crt"))
        .zip(out.files.get(&pki_file(CaKind::Kubernetes, "admin", "key")))
        .map(|((c, _), (k, _))| (c.clone(), k.clone()));
    match (admin, operator_api_url(inventory, config, hosts)) {
        (Some((cert, key)), Some(url)) => {
            let ca = String::from_utf8_lossy(&cas[CaKind::Kubernetes.subdir()]).into_owned();
            let text = crate::kubeconfig::render(
                &config.cluster_name,
                &url,
                &ca,
                &KeyPairPem {
                    cert_pem: String::from_utf8_lossy(&cert).into_owned(),
                    key_pem: String::from_utf8_lossy(&key).into_owned(),
                },
                "kubernetes-admin",
            );
            out.files
                .insert("admin.conf".into(), (text.into_bytes(), KEY_MODE));
            out.lines
                .push(format!("admin.conf (kubernetes-admin at {url})"));
        }
        _ => out.warnings.push(
            "admin.conf not written (no admin certificate or no address for the first \
             control-plane host): the next `ilha up` writes it"
                .to_string(),
        ),
    }
    Ok(out)
}

fn journal_of(host: &HostFiles) -> Journal {
    Journal::parse(
        host.text(crate::cluster::paths::JOURNAL)
            .unwrap_or_default(),
    )
}

fn leaf_key_matches(cert_pem: &[u8], key_pem: &[u8]) -> bool {
    let Ok(der) = cert_der(cert_pem) else {
        return false;
    };
    let cert = X509Certificate::from_der(&der).expect("parsed").1;
    std::str::from_utf8(key_pem)
        .ok()
        .and_then(|text| rcgen::KeyPair::from_pem(text).ok())
        .is_some_and(|key| {
            cert.public_key().raw == rcgen::PublicKeyData::subject_public_key_info(&key).as_slice()
        })
}

/// The URL `up` puts in the operator's admin kubeconfig (`ClusterPlan::operator_api_url`): the
/// first control-plane host's peer address, which without `ip=`/`access_ip=` in the inventory
/// is the address its kube-apiserver advertises.
fn operator_api_url(
    inventory: &Inventory,
    config: &ClusterConfig,
    hosts: &[HostFiles],
) -> Option<String> {
    if let ApiEndpoint::External { .. } = &config.api_endpoint {
        return Some(format!("https://{}", config.node_api_address()));
    }
    let first = inventory.control_plane().next()?;
    let ip = match first.peer_ip() {
        Some(ip) => ip.to_string(),
        None => {
            let unit = hosts
                .iter()
                .find(|h| h.name == first.name)?
                .text(&apiserver_unit_path())?;
            unit.lines()
                .filter_map(|l| {
                    l.trim()
                        .trim_end_matches('\\')
                        .trim()
                        .strip_prefix("--advertise-address=")
                })
                .next()?
                .to_string()
        }
    };
    Some(format!(
        "https://{}",
        crate::config::join_host_port(&ip, config.api_port)
    ))
}

/// Refuses a state directory that holds a PKI, or any entry recovery would write.
fn check_target(state_dir: &Path) -> anyhow::Result<()> {
    let pki = state_dir.join("pki");
    if pki.exists() {
        bail!(
            "{} already holds a PKI ({}): `ilha state recover` never overwrites a state \
             directory. If it is this cluster's, there is nothing to recover; if it is stale or \
             another cluster's, move it aside (`mv {} {}.old`) and run `ilha state recover` again",
            state_dir.display(),
            pki.display(),
            state_dir.display(),
            state_dir.display()
        );
    }
    for entry in WRITTEN {
        let path = state_dir.join(entry);
        if path.symlink_metadata().is_ok() {
            bail!(
                "{} exists (left by an earlier run?): `ilha state recover` writes it and never \
                 overwrites; move it aside and run `ilha state recover` again",
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes `recovered` into a 0700 directory next to `state_dir`, validates it as a PKI, then
/// renames it (or, into an existing state directory without a PKI, each entry, `pki` last).
fn write(state_dir: &Path, config: &ClusterConfig, recovered: &Recovered) -> anyhow::Result<()> {
    let parent = match state_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".ilha-recover-")
        .tempdir_in(&parent)
        .with_context(|| format!("making a directory in {}", parent.display()))?;
    let root = staging.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))?;
    for (relative, (bytes, mode)) in &recovered.files {
        let path = root.join(relative);
        let dir = path.parent().expect("a file under the root");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        if relative.starts_with("pki/")
            || relative.starts_with(crate::cluster::encryption::STATE_SUBDIR)
        {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        crate::fsutil::write_atomic(&path, bytes, *mode)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    allocations::import(
        root,
        config.pod_cidr,
        config.node_cidr_prefix(),
        &recovered.ranges,
    )?;
    membership::import(root, &recovered.members)?;
    // The same checks `up` makes when it opens the PKI: each CA's key matches it, the
    // service-account pair matches. Nothing is created: every CA and the key are there.
    Pki::open_or_init(&root.join("pki")).context("checking the recovered PKI")?;

    if state_dir.symlink_metadata().is_err() {
        let kept = staging.keep();
        std::fs::rename(&kept, state_dir)
            .with_context(|| format!("renaming {} to {}", kept.display(), state_dir.display()))?;
    } else {
        check_target(state_dir)?;
        // It is about to hold CA keys.
        std::fs::set_permissions(state_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} 0700", state_dir.display()))?;
        for entry in WRITTEN {
            let from = root.join(entry);
            if from.symlink_metadata().is_ok() {
                let to = state_dir.join(entry);
                std::fs::rename(&from, &to)
                    .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
            }
        }
    }
    if let Ok(dir) = std::fs::File::open(&parent) {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Reads the pod ranges through the first control-plane host that answers.
async fn read_pod_cidrs(
    fleet: &Fleet,
    masters: &[String],
) -> Option<(String, BTreeMap<String, IpNet>)> {
    let script = kubectl(
        "get nodes -o jsonpath='{range .items[*]}{.metadata.name}={.spec.podCIDR}{\"\\n\"}{end}'",
    );
    for name in masters {
        let Some(session) = fleet.session(name) else {
            continue;
        };
        match session.run(&script).await {
            Ok(out) => match parse_pod_cidrs(&out.stdout) {
                Ok(ranges) => return Some((name.clone(), ranges)),
                Err(e) => tracing::warn!(host = %name, "pod ranges: {e:#}"),
            },
            Err(e) => tracing::warn!("kubectl get nodes: {e}"),
        }
    }
    None
}

async fn read_members(
    fleet: &Fleet,
    members: &[String],
) -> Option<(String, Vec<membership::Member>)> {
    for name in members {
        let Some(session) = fleet.session(name) else {
            continue;
        };
        match session
            .run(&membership::etcdctl("-w json member list"))
            .await
        {
            Ok(out) => match membership::parse_member_list(&out.stdout) {
                Ok(list) => return Some((name.clone(), list)),
                Err(e) => tracing::warn!(host = %name, "etcd member list: {e:#}"),
            },
            Err(e) => tracing::warn!("etcd member list: {e}"),
        }
    }
    None
}

async fn read_host(session: &Session, roles: &BTreeSet<Role>) -> anyhow::Result<HostFiles> {
    let files = wanted_files(roles);
    let out = session
        .run_script("read the files ilha put here", &read_script(&files))
        .await?;
    Ok(HostFiles {
        name: session.name().to_string(),
        roles: roles.clone(),
        files: parse_listing(session.name(), &out.stdout)?,
    })
}

/// `ilha state recover`: returns the report to print.
pub async fn recover(request: &RecoverRequest) -> anyhow::Result<String> {
    let (inventory, config) = load_inputs(&request.inventory, request.config.as_deref())?;
    let state_dir = config.state_dir.clone();
    check_target(&state_dir)?;

    say(format!("Connecting to {} hosts ...", inventory.hosts.len()));
    let (fleet, failures) = Fleet::connect_available(targets(&inventory), &request.ssh).await;
    let unreachable: Vec<String> = failures.iter().map(|e| e.host().to_string()).collect();
    for failure in &failures {
        say(format!("  unreachable: {failure}"));
    }
    let result = gather(&fleet, &inventory, &config, &unreachable).await;
    fleet.close().await;
    let recovered = result?;
    write(&state_dir, &config, &recovered)?;

    let mut report = String::new();
    let _ = writeln!(
        report,
        "Recovered the state directory of cluster `{}` into {}:",
        config.cluster_name,
        std::fs::canonicalize(&state_dir)
            .unwrap_or(state_dir.clone())
            .display()
    );
    for line in &recovered.lines {
        let _ = writeln!(report, "  {line}");
    }
    let _ = writeln!(report, "Not on the hosts, so not recovered:");
    let _ = writeln!(
        report,
        "  kit-key: the key that signs backup kits never leaves the operator's machine; \
         `ilha backup` makes a new one on first use (kits signed with the lost one are restored \
         with its public key: `ilha restore --pubkey`)"
    );
    let _ = writeln!(
        report,
        "  snapshots saved by `remove-node`/`reset`, and the extracted bundle (`up` extracts it \
         again)"
    );
    if !failures.is_empty() {
        let _ = writeln!(report, "Unreachable hosts (nothing read from them):");
        for failure in &failures {
            let _ = writeln!(report, "  {failure}");
        }
    }
    if !recovered.warnings.is_empty() {
        let _ = writeln!(report, "Warnings:");
        for warning in &recovered.warnings {
            let _ = writeln!(report, "  {warning}");
        }
    }
    let _ = writeln!(
        report,
        "Next: `ilha plan` should find every step done on the hosts read; `ilha backup` takes a \
         kit with this state directory in it."
    );
    Ok(report)
}

async fn gather(
    fleet: &Fleet,
    inventory: &Inventory,
    config: &ClusterConfig,
    unreachable: &[String],
) -> anyhow::Result<Recovered> {
    say("Reading the hosts ...");
    let report = fleet
        .each(async |target, session| {
            let host = inventory
                .host(&target.name)
                .expect("targets are inventory hosts");
            read_host(session, &host.roles).await
        })
        .await;
    let mut hosts = Vec::new();
    let mut errors = Vec::new();
    for outcome in report.hosts {
        match outcome.result {
            Ok(files) => hosts.push(files),
            Err(e) => errors.push(format!("{}: {e:#}", outcome.host)),
        }
    }
    if !errors.is_empty() {
        bail!("reading the hosts:\n  {}", errors.join("\n  "));
    }
    let masters: Vec<String> = inventory.control_plane().map(|h| h.name.clone()).collect();
    let members: Vec<String> = inventory.etcd().map(|h| h.name.clone()).collect();
    let facts = ClusterFacts {
        pod_cidrs: read_pod_cidrs(fleet, &masters).await,
        members: read_members(fleet, &members).await,
    };
    assemble(inventory, config, &hosts, unreachable, &facts)
}

#[cfg(test)]
mod tests;
