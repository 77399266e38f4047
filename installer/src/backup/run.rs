//! `ilha backup`: everything a restore needs, in one signed kit.
//!
//! Three parts are gathered at once into a staging directory next to the kit: the etcd snapshot
//! (drilled on its member before it leaves), `/etc/kubernetes` of every master (the etcd PKI is
//! under it), and the object dump through the API. The cluster's state directory is copied too,
//! without the bundle cache and earlier snapshots. Then [`kit::write_kit`] packs and signs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};

use super::etcd::{self, DrilledSnapshot};
use super::kit::{self, EtcdSummary, KitManifest, ObjectCount, Protection};
use super::objects::{self, DumpOptions, DumpReport};
use crate::cluster::paths::{ILHA_DIR, KUBERNETES_DIR};
use crate::cluster::run::{load_inputs, targets};
use crate::cluster::say;
use crate::config::ClusterConfig;
use crate::inventory::{Inventory, Role};
use crate::ssh::{Fleet, Session, SshOptions};

/// Payload paths, shared with `restore`.
pub const SNAPSHOT_PATH: &str = "etcd/snapshot.db";
pub const OBJECTS_DIR: &str = "objects";
pub const STATE_DIR: &str = "state";
/// `masters/<host>/etc-kubernetes.tar`: `/etc/kubernetes` of one master, as `tar -C /` made it.
pub fn etc_kubernetes_path(host: &str) -> String {
    format!("masters/{host}/etc-kubernetes.tar")
}

/// What of the state directory stays out of a kit: the unpacked bundle (the bundle itself is the
/// air gap's other artifact), earlier snapshots, and the kit signing key.
const STATE_SKIPPED: &[&str] = &["bundle", "bundle.new", "snapshots", "kit-key"];
/// Where the kit signing key is made when `--key` is not given.
pub const KIT_KEY_DIR: &str = "kit-key";

#[derive(Debug)]
pub struct BackupRequest {
    pub inventory: PathBuf,
    pub config: Option<PathBuf>,
    pub ssh: SshOptions,
    pub out: PathBuf,
    /// minisign secret key; default `<state>/kit-key/ilha.key`, made on first use.
    pub key: Option<PathBuf>,
    pub key_password: Option<String>,
    pub protection: Protection,
    pub dump: DumpOptions,
}

#[derive(Debug)]
pub struct BackupReport {
    pub kit: PathBuf,
    pub signature: PathBuf,
    pub public_key: PathBuf,
    pub size: u64,
    pub manifest: KitManifest,
    pub missing_masters: Vec<String>,
    pub seconds: f64,
    pub timings: Vec<(String, f64)>,
}

impl fmt::Display for BackupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        writeln!(
            f,
            "Restore kit {} ({}) written in {:.1}s.",
            self.kit.display(),
            ilha_format::inspect::human_bytes(self.size),
            self.seconds
        )?;
        writeln!(
            f,
            "  signature {} (check: minisign -Vm {} -p {})",
            self.signature.display(),
            self.kit.display(),
            self.public_key.display()
        )?;
        writeln!(
            f,
            "  etcd snapshot from {}: revision {}, {} keys; drill {}: {}",
            m.etcd.member,
            m.etcd.status.revision,
            m.etcd.status.total_keys,
            if m.etcd.drill.passed {
                "passed"
            } else {
                "FAILED"
            },
            m.etcd.drill.detail
        )?;
        writeln!(f, "  /etc/kubernetes of {}", m.masters.join(", "))?;
        if !self.missing_masters.is_empty() {
            writeln!(
                f,
                "  WARNING: no /etc/kubernetes of {} (unreachable)",
                self.missing_masters.join(", ")
            )?;
        }
        let objects: usize = m.objects.iter().map(|o| o.count).sum();
        writeln!(
            f,
            "  {objects} objects in {} resource types",
            m.objects.len()
        )?;
        let timings: Vec<String> = self
            .timings
            .iter()
            .map(|(what, s)| format!("{what} {s:.1}s"))
            .collect();
        writeln!(f, "  times: {}", timings.join(", "))
    }
}

/// The cluster's identity: the sha256 of its CA certificate as the state directory holds it.
pub fn cluster_ca_sha256(state_dir: &Path) -> anyhow::Result<String> {
    let ca = state_dir.join("pki/kubernetes/ca.crt");
    let (sha, _) = ilha_format::digest::sha256_file(&ca).with_context(|| {
        format!(
            "{}: the cluster's CA is not here; back up from the machine and state directory \
             that ran `ilha up` (cluster config `state_dir`)",
            ca.display()
        )
    })?;
    Ok(sha.to_string())
}

/// `--key`, or the state directory's kit key (made on first use). Returns the key and where
/// its public half is (when known).
fn signing_key(
    request: &BackupRequest,
    config: &ClusterConfig,
) -> anyhow::Result<(ilha_format::SecretKey, PathBuf)> {
    if let Some(path) = &request.key {
        let key = ilha_format::load_secret_key(path, request.key_password.as_deref())
            .with_context(|| format!("loading the kit signing key {}", path.display()))?;
        return Ok((key, path.with_extension("pub")));
    }
    let dir = config.state_dir.join(KIT_KEY_DIR);
    let secret = dir.join(ilha_format::sign::SECRET_KEY_FILE);
    if !secret.exists() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        ilha_format::sign::generate_keypair(&dir, None)
            .with_context(|| format!("making a kit signing key in {}", dir.display()))?;
        say(format!(
            "  made a kit signing key in {} (keep {} with the kits: restore needs it)",
            dir.display(),
            ilha_format::sign::PUBLIC_KEY_FILE
        ));
    }
    let key = ilha_format::load_secret_key(&secret, None)
        .with_context(|| format!("loading {}", secret.display()))?;
    Ok((key, dir.join(ilha_format::sign::PUBLIC_KEY_FILE)))
}

/// `/etc/kubernetes` of one master into the staging directory.
async fn fetch_etc_kubernetes(session: &Session, staging: &Path) -> anyhow::Result<()> {
    let host = session.name();
    let remote = format!("{ILHA_DIR}/etc-kubernetes.tar");
    let root = KUBERNETES_DIR.trim_start_matches('/');
    session
        .run(&format!(
            "set -e; mkdir -p {ILHA_DIR}; tar -C / -cf {remote} {root}"
        ))
        .await
        .with_context(|| format!("{host}: archiving {KUBERNETES_DIR}"))?;
    let local = staging.join(etc_kubernetes_path(host));
    std::fs::create_dir_all(local.parent().expect("has a parent"))?;
    let copied = session.download(&remote, &local).await;
    let _ = session.run(&format!("rm -f {remote}")).await;
    copied.with_context(|| format!("{host}: copying {KUBERNETES_DIR}"))?;
    Ok(())
}

/// The state directory, without what [`STATE_SKIPPED`] names.
fn copy_state(from: &Path, to: &Path) -> anyhow::Result<()> {
    fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let target = to.join(entry.file_name());
            if kind.is_dir() {
                copy_tree(&entry.path(), &target)?;
            } else if kind.is_file() {
                std::fs::copy(entry.path(), &target)?;
            }
        }
        Ok(())
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if STATE_SKIPPED.iter().any(|s| name == *s) {
            continue;
        }
        let kind = entry.file_type()?;
        let target = to.join(&name);
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target).map(|_| ())
        } else {
            Ok(())
        }
        .with_context(|| format!("copying {}", entry.path().display()))?;
    }
    Ok(())
}

fn names_with(inventory: &Inventory, role: Role) -> Vec<String> {
    inventory
        .hosts
        .iter()
        .filter(|h| h.has_role(role))
        .map(|h| h.name.clone())
        .collect()
}

pub async fn backup(request: &BackupRequest) -> anyhow::Result<BackupReport> {
    let started = Instant::now();
    let (inventory, config) = load_inputs(&request.inventory, request.config.as_deref())?;
    let state_dir = &config.state_dir;
    let ca_sha256 = cluster_ca_sha256(state_dir)?;
    let admin = state_dir.join("admin.conf");
    if !admin.exists() {
        bail!(
            "{}: no admin kubeconfig; back up from the machine that ran `ilha up`",
            admin.display()
        );
    }
    if request.out.exists() {
        bail!(
            "{} already exists; a kit is never overwritten (choose another name)",
            request.out.display()
        );
    }
    let parent = match request.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let (key, public_key) = signing_key(request, &config)?;
    if matches!(request.protection, Protection::None) {
        say(
            "WARNING: this kit is NOT encrypted. It holds the cluster's private keys (CA, etcd, \
             service accounts) and every Secret: keep it like the keys themselves, or use \
             --encrypt-to / --passphrase-file.",
        );
    }

    let masters = names_with(&inventory, Role::ControlPlane);
    let members = names_with(&inventory, Role::Etcd);
    let mut wanted: Vec<String> = masters.clone();
    wanted.extend(members.iter().filter(|m| !masters.contains(m)).cloned());
    let wanted_targets = targets(&inventory)
        .into_iter()
        .filter(|t| wanted.contains(&t.name))
        .collect();
    say(format!("Connecting to {} hosts ...", wanted.len()));
    let (fleet, unreachable) = Fleet::connect_available(wanted_targets, &request.ssh).await;
    for error in &unreachable {
        say(format!("  warning: {error}"));
    }

    let staging = tempfile::Builder::new()
        .prefix(".ilha-kit-")
        .tempdir_in(&parent)
        .with_context(|| format!("making a staging directory in {}", parent.display()))?;
    let stage = staging.path();
    std::fs::create_dir_all(stage.join("etcd"))?;

    say(
        "Taking the etcd snapshot (drilled), /etc/kubernetes of the masters and the object dump ...",
    );
    let reachable_members: Vec<String> = members
        .iter()
        .filter(|m| fleet.session(m).is_some())
        .cloned()
        .collect();
    let connected = &fleet;
    let etcd_part = async {
        let t = Instant::now();
        let taken =
            etcd::from_any_member(connected, &reachable_members, &stage.join(SNAPSHOT_PATH)).await;
        (taken, t.elapsed().as_secs_f64())
    };
    let masters_part = async {
        let t = Instant::now();
        let mut fetched = Vec::new();
        let mut missing = Vec::new();
        let jobs = masters.iter().map(|m| async move {
            match connected.session(m) {
                Some(s) => (m.clone(), fetch_etc_kubernetes(s, stage).await),
                None => (m.clone(), Err(anyhow::anyhow!("{m}: unreachable"))),
            }
        });
        for (name, result) in futures_util::future::join_all(jobs).await {
            match result {
                Ok(()) => fetched.push(name),
                Err(e) => {
                    say(format!("  warning: {e:#}"));
                    missing.push(name);
                }
            }
        }
        (fetched, missing, t.elapsed().as_secs_f64())
    };
    let objects_part = async {
        let t = Instant::now();
        let result: anyhow::Result<DumpReport> = async {
            let client = objects::client_from_kubeconfig(&admin).await?;
            objects::dump(&client, &stage.join(OBJECTS_DIR), &request.dump).await
        }
        .await;
        (
            result.context("dumping the objects through the Kubernetes API"),
            t.elapsed().as_secs_f64(),
        )
    };
    let ((taken, etcd_s), (fetched, missing, masters_s), (dumped, objects_s)) =
        tokio::join!(etcd_part, masters_part, objects_part);
    fleet.close().await;
    let taken: DrilledSnapshot = taken?;
    let dumped = dumped?;
    if fetched.is_empty() {
        bail!("no master's /etc/kubernetes could be copied; no kit was written");
    }
    copy_state(state_dir, &stage.join(STATE_DIR))?;

    let manifest = KitManifest {
        format: kit::KIT_FORMAT.to_string(),
        cluster_name: config.cluster_name.clone(),
        cluster_ca_sha256: ca_sha256,
        created_at: crate::clock::unix_now(),
        ilha_version: env!("CARGO_PKG_VERSION").to_string(),
        etcd: EtcdSummary {
            member: taken.member.clone(),
            snapshot: SNAPSHOT_PATH.to_string(),
            sha256: taken.sha256.clone(),
            status: taken.status,
            initial_cluster: taken.members.clone(),
            drill: taken.drill.clone(),
        },
        masters: fetched,
        objects: dumped
            .counts
            .iter()
            .map(|(resource, count)| ObjectCount {
                resource: resource.clone(),
                count: *count,
            })
            .collect(),
        encryption: Default::default(),
        files: Vec::new(),
    };
    say("Packing and signing the kit ...");
    let t = Instant::now();
    let manifest = kit::write_kit(&request.out, stage, manifest, &request.protection, &key)
        .with_context(|| format!("writing {}", request.out.display()))?;
    let pack_s = t.elapsed().as_secs_f64();
    let size = std::fs::metadata(&request.out)
        .map(|m| m.len())
        .unwrap_or(0);
    let mut signature = request.out.clone().into_os_string();
    signature.push(".minisig");
    Ok(BackupReport {
        kit: request.out.clone(),
        signature: PathBuf::from(signature),
        public_key,
        size,
        manifest,
        missing_masters: missing,
        seconds: started.elapsed().as_secs_f64(),
        timings: vec![
            ("etcd snapshot + drill".to_string(), etcd_s),
            ("/etc/kubernetes".to_string(), masters_s),
            (format!("{} objects", dumped.total), objects_s),
            ("pack + sign".to_string(), pack_s),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_copy_leaves_out_the_bundle_snapshots_and_key() {
        let from = tempfile::tempdir().unwrap();
        for dir in [
            "bundle/blobs",
            "snapshots",
            "kit-key",
            "pki/kubernetes",
            "records",
        ] {
            std::fs::create_dir_all(from.path().join(dir)).unwrap();
        }
        std::fs::write(from.path().join("bundle/blobs/x"), "big").unwrap();
        std::fs::write(from.path().join("kit-key/ilha.key"), "secret").unwrap();
        std::fs::write(from.path().join("pki/kubernetes/ca.crt"), "ca").unwrap();
        std::fs::write(from.path().join("records/h1.txt"), "r").unwrap();
        std::fs::write(from.path().join("admin.conf"), "a").unwrap();
        let to = tempfile::tempdir().unwrap();
        copy_state(from.path(), to.path()).unwrap();
        assert!(to.path().join("pki/kubernetes/ca.crt").is_file());
        assert!(to.path().join("records/h1.txt").is_file());
        assert!(to.path().join("admin.conf").is_file());
        for skipped in ["bundle", "snapshots", "kit-key"] {
            assert!(!to.path().join(skipped).exists(), "{skipped} copied");
        }
    }
}
