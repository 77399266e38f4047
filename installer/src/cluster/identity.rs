//! Which cluster a host belongs to, checked against the state directory before any change.
//!
//! A state directory is the cluster's identity: its CAs and service-account key. Pointing a
//! command at the wrong one (another directory, a copy of another cluster's, or an empty one
//! that would mint new CAs) and letting it push certificates would break a running cluster on
//! every host at once. So `up` leaves on each host [`IDENTITY_FILE`]: the cluster's name and the
//! sha256 of each CA certificate and of the service-account public key. Every command that
//! changes hosts reads it first (and, on hosts from before this file existed, the sha256 of the
//! CA certificates in `/etc/kubernetes/pki`), and refuses with nothing changed when it does not
//! match the state directory's, naming the hosts, both fingerprints and what to do.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::paths::PKI_DIR;
use super::steps::file_sha256;
use crate::config::ClusterConfig;
use crate::ssh::Fleet;

/// On every host `up` has prepared: not secret (fingerprints only).
pub const IDENTITY_FILE: &str = "/var/lib/ilha/identity.json";

/// A cluster's name and the fingerprints (sha256 of the PEM files as installed) of its trust
/// roots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    pub cluster_name: String,
    /// `kubernetes`, `etcd`, `front-proxy` → sha256 of that CA's `ca.crt`.
    pub ca_sha256: BTreeMap<String, String>,
    pub service_account_sha256: String,
}

/// The CA certificates, by name: where the state directory keeps them and where hosts do.
const CAS: &[(&str, &str, &str)] = &[
    ("kubernetes", "pki/kubernetes/ca.crt", "ca.crt"),
    ("etcd", "pki/etcd/ca.crt", "etcd/ca.crt"),
    (
        "front-proxy",
        "pki/front-proxy/ca.crt",
        "front-proxy-ca.crt",
    ),
];

impl ClusterIdentity {
    /// The identity the state directory holds, `None` when it holds no PKI yet.
    pub fn of_state_dir(
        state_dir: &Path,
        cluster_name: &str,
    ) -> anyhow::Result<Option<ClusterIdentity>> {
        let pki = state_dir.join("pki");
        if !pki.join("kubernetes/ca.crt").exists() {
            return Ok(None);
        }
        let mut ca_sha256 = BTreeMap::new();
        for (name, relative, _) in CAS {
            let path = state_dir.join(relative);
            if path.exists() {
                ca_sha256.insert(name.to_string(), file_sha256(&path)?);
            }
        }
        let service_account = pki.join("sa.pub");
        let service_account_sha256 = if service_account.exists() {
            file_sha256(&service_account)?
        } else {
            String::new()
        };
        Ok(Some(ClusterIdentity {
            cluster_name: cluster_name.to_string(),
            ca_sha256,
            service_account_sha256,
        }))
    }

    /// What `up` writes to [`IDENTITY_FILE`].
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plain data") + "\n"
    }

    fn kubernetes_ca(&self) -> &str {
        self.ca_sha256
            .get("kubernetes")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// What a host says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostIdentity {
    /// Nothing of a cluster: no identity file, no CA certificate.
    Fresh,
    /// The identity file `up` left.
    Recorded(ClusterIdentity),
    /// No identity file (a host installed before it existed), but CA certificates: their
    /// fingerprints, by CA name.
    CertificatesOnly(BTreeMap<String, String>),
}

/// Prints the identity file, then the sha256 of each CA certificate present. Read-only.
pub fn read_script() -> String {
    let mut script = format!(
        "if [ -f {IDENTITY_FILE} ]; then cat {IDENTITY_FILE}; fi\necho '== certificates =='\n"
    );
    for (name, _, on_host) in CAS {
        let _ = writeln!(
            script,
            "if [ -f {PKI_DIR}/{on_host} ]; then printf '{name} '; sha256sum < {PKI_DIR}/{on_host} | cut -d' ' -f1; fi"
        );
    }
    script
}

/// Reads [`read_script`]'s output; an identity file that does not parse is an error (a host
/// whose identity cannot be told is not changed).
pub fn parse(host: &str, output: &str) -> anyhow::Result<HostIdentity> {
    let (recorded, certificates) = output
        .split_once("== certificates ==")
        .unwrap_or((output, ""));
    if !recorded.trim().is_empty() {
        let identity: ClusterIdentity = serde_json::from_str(recorded).map_err(|e| {
            anyhow::anyhow!(
                "{host}: {IDENTITY_FILE} does not parse ({e}); compare it with another host's \
                 and fix or remove it"
            )
        })?;
        return Ok(HostIdentity::Recorded(identity));
    }
    let found: BTreeMap<String, String> = certificates
        .lines()
        .filter_map(|l| l.trim().split_once(' '))
        .map(|(name, sha)| (name.to_string(), sha.trim().to_string()))
        .collect();
    Ok(if found.is_empty() {
        HostIdentity::Fresh
    } else {
        HostIdentity::CertificatesOnly(found)
    })
}

/// One host that does not match the state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mismatch {
    host: String,
    /// e.g. `cluster "prod", kubernetes CA sha256 ab12...`.
    theirs: String,
}

/// Compares every host's identity with the state directory's (`ours`, `None`: no PKI there).
/// Fresh hosts always pass. Returns the refusal, naming hosts and fingerprints, or `Ok`.
pub fn check(
    state_dir: &Path,
    ours: Option<&ClusterIdentity>,
    hosts: &BTreeMap<String, HostIdentity>,
    command: &str,
) -> anyhow::Result<()> {
    let mut mismatches = Vec::new();
    for (host, identity) in hosts {
        let theirs = match identity {
            HostIdentity::Fresh => continue,
            HostIdentity::Recorded(theirs) => {
                let agrees = ours.is_some_and(|ours| {
                    ours.cluster_name == theirs.cluster_name
                        && ours.ca_sha256 == theirs.ca_sha256
                        && ours.service_account_sha256 == theirs.service_account_sha256
                });
                if agrees {
                    continue;
                }
                format!(
                    "cluster \"{}\", kubernetes CA sha256 {}",
                    theirs.cluster_name,
                    theirs.kubernetes_ca()
                )
            }
            HostIdentity::CertificatesOnly(found) => {
                let agrees = ours.is_some_and(|ours| {
                    found
                        .iter()
                        .all(|(name, sha)| ours.ca_sha256.get(name) == Some(sha))
                });
                if agrees {
                    continue;
                }
                format!(
                    "kubernetes CA sha256 {} (in {PKI_DIR}; no {IDENTITY_FILE})",
                    found.get("kubernetes").map(String::as_str).unwrap_or("?")
                )
            }
        };
        mismatches.push(Mismatch {
            host: host.clone(),
            theirs,
        });
    }
    if mismatches.is_empty() {
        return Ok(());
    }
    // Hosts saying the same thing are named together.
    let mut grouped: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for m in &mismatches {
        grouped.entry(&m.theirs).or_default().push(&m.host);
    }
    let mut text = format!(
        "refusing to run `ilha {command}`: these hosts belong to a cluster this state directory \
         is not; nothing was changed\n"
    );
    for (theirs, hosts) in &grouped {
        let _ = writeln!(text, "  {}: {theirs}", hosts.join(", "));
    }
    match ours {
        Some(ours) => {
            let _ = writeln!(
                text,
                "  state directory {}: cluster \"{}\", kubernetes CA sha256 {}",
                state_dir.display(),
                ours.cluster_name,
                ours.kubernetes_ca()
            );
        }
        None => {
            let _ = writeln!(
                text,
                "  state directory {}: no PKI (this run would make new CAs and push them to \
                 running hosts)",
                state_dir.display()
            );
        }
    }
    let _ = write!(
        text,
        "What to do: point `state_dir` in the cluster config at the state directory this cluster \
         was built from; if it is lost, rebuild it from the masters with `ilha state recover -i \
         INVENTORY -c CONFIG`. If these hosts really are to be reinstalled, run `ilha reset` \
         with their own state directory first."
    );
    anyhow::bail!(text)
}

/// Reads every host's identity and checks it against the state directory's: the gate every
/// command that changes hosts passes before its first change. On refusal the caller drops the
/// fleet, which closes its connections.
pub async fn guard(fleet: &Fleet, config: &ClusterConfig, command: &str) -> anyhow::Result<()> {
    let state_dir = config.state_dir.as_path();
    let ours = ClusterIdentity::of_state_dir(state_dir, &config.cluster_name)?;
    let mut hosts = BTreeMap::new();
    let mut errors = Vec::new();
    match fleet.run_all(&read_script()).await.into_result() {
        Ok(outputs) => {
            for (host, output) in outputs {
                match parse(&host, &output.stdout) {
                    Ok(identity) => {
                        hosts.insert(host, identity);
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        Err(failed) => errors.extend(failed.iter().map(ToString::to_string)),
    }
    if !errors.is_empty() {
        anyhow::bail!(
            "reading which cluster each host belongs to; nothing was changed:\n  {}",
            errors.join("\n  ")
        );
    }
    check(state_dir, ours.as_ref(), &hosts, command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(name: &str, ca: &str) -> ClusterIdentity {
        ClusterIdentity {
            cluster_name: name.into(),
            ca_sha256: [
                ("kubernetes".to_string(), ca.to_string()),
                ("etcd".to_string(), format!("{ca}-etcd")),
            ]
            .into(),
            service_account_sha256: format!("{ca}-sa"),
        }
    }

    fn hosts(list: &[(&str, HostIdentity)]) -> BTreeMap<String, HostIdentity> {
        list.iter()
            .map(|(h, i)| (h.to_string(), i.clone()))
            .collect()
    }

    #[test]
    fn matching_and_fresh_hosts_pass() {
        let ours = identity("lab", "aa");
        let all = hosts(&[
            ("node1", HostIdentity::Recorded(ours.clone())),
            ("node7", HostIdentity::Fresh),
            (
                "node2",
                HostIdentity::CertificatesOnly(
                    [("kubernetes".to_string(), "aa".to_string())].into(),
                ),
            ),
        ]);
        check(Path::new("/s"), Some(&ours), &all, "up").unwrap();
        // A new cluster: no PKI yet, every host fresh.
        check(
            Path::new("/s"),
            None,
            &hosts(&[("node1", HostIdentity::Fresh)]),
            "up",
        )
        .unwrap();
    }

    #[test]
    fn another_clusters_hosts_are_refused_naming_hosts_and_both_fingerprints() {
        let ours = identity("lab", "aa");
        let all = hosts(&[
            ("node1", HostIdentity::Recorded(identity("lab", "bb"))),
            ("node2", HostIdentity::Recorded(identity("lab", "bb"))),
            ("node3", HostIdentity::Recorded(ours.clone())),
        ]);
        let error = check(Path::new("/ops/state"), Some(&ours), &all, "scale")
            .unwrap_err()
            .to_string();
        assert!(error.contains("refusing to run `ilha scale`"), "{error}");
        assert!(
            error.contains("  node1, node2: cluster \"lab\", kubernetes CA sha256 bb\n"),
            "{error}"
        );
        assert!(
            error.contains("state directory /ops/state: cluster \"lab\", kubernetes CA sha256 aa"),
            "{error}"
        );
        assert!(error.contains("ilha state recover"), "{error}");
        assert!(!error.contains("node3"), "{error}");
    }

    #[test]
    fn a_state_directory_without_pki_never_faces_a_running_cluster() {
        let all = hosts(&[("node1", HostIdentity::Recorded(identity("lab", "aa")))]);
        let error = check(Path::new("/elsewhere"), None, &all, "up")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("no PKI (this run would make new CAs"),
            "{error}"
        );
        // The same from certificates alone (a host from before identity files).
        let legacy = hosts(&[(
            "node1",
            HostIdentity::CertificatesOnly([("kubernetes".to_string(), "aa".to_string())].into()),
        )]);
        let error = check(Path::new("/elsewhere"), None, &legacy, "up")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("kubernetes CA sha256 aa (in /etc/kubernetes/pki"),
            "{error}"
        );
    }

    #[test]
    fn same_cas_under_another_name_or_service_account_key_are_refused() {
        let ours = identity("lab", "aa");
        let mut renamed = ours.clone();
        renamed.cluster_name = "prod".into();
        let mut other_sa = ours.clone();
        other_sa.service_account_sha256 = "zz".into();
        for theirs in [renamed, other_sa] {
            let all = hosts(&[("node1", HostIdentity::Recorded(theirs))]);
            assert!(check(Path::new("/s"), Some(&ours), &all, "up").is_err());
        }
    }

    #[test]
    fn the_read_script_parses_back() {
        crate::cluster::tests_support::assert_bash_syntax(&read_script());
        let ours = identity("lab", "aa");
        let out = format!("{}== certificates ==\nkubernetes aa\n", ours.to_json());
        assert_eq!(parse("n", &out).unwrap(), HostIdentity::Recorded(ours));
        assert_eq!(
            parse("n", "== certificates ==\n").unwrap(),
            HostIdentity::Fresh
        );
        assert_eq!(
            parse("n", "== certificates ==\nkubernetes aa\netcd bb\n").unwrap(),
            HostIdentity::CertificatesOnly(
                [
                    ("kubernetes".to_string(), "aa".to_string()),
                    ("etcd".to_string(), "bb".to_string())
                ]
                .into()
            )
        );
        let error = parse("node4", "{not json\n== certificates ==\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("node4: /var/lib/ilha/identity.json does not parse"),
            "{error}"
        );
    }

    #[test]
    fn the_state_directorys_identity_is_its_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ClusterIdentity::of_state_dir(dir.path(), "lab").unwrap(),
            None
        );
        let pki = crate::pki::Pki::open_or_init(&dir.path().join("pki")).unwrap();
        let _ = pki;
        let identity = ClusterIdentity::of_state_dir(dir.path(), "lab")
            .unwrap()
            .expect("a PKI");
        let ca = std::fs::read(dir.path().join("pki/kubernetes/ca.crt")).unwrap();
        use sha2::Digest as _;
        assert_eq!(
            identity.kubernetes_ca(),
            hex::encode(sha2::Sha256::digest(&ca))
        );
        assert_eq!(identity.ca_sha256.len(), 3, "{identity:?}");
        assert!(!identity.service_account_sha256.is_empty());
    }
}
