//! `ilha backup`: everything a restore needs, in one signed kit.
//!
//! Three parts are gathered at once into a staging directory inside the state directory: the
//! etcd snapshot (drilled on its member before it leaves), `/etc/kubernetes` of every master (the
//! etcd PKI is under it; streamed, never written on the master), and the object dump through the
//! API. The cluster's state directory is copied too, without the bundle cache and earlier
//! snapshots. Then [`kit::write_kit`] packs and signs.
//!
//! The staging is plaintext (keys, Secrets): it lives in the state directory, owner-only, never
//! beside `--out` (often removable media, where an unlinked file stays recoverable), and goes
//! away on every exit path.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};

use super::etcd::{self, DrilledSnapshot};
use super::kit::{self, EtcdSummary, KitManifest, ObjectCount, Protection};
use super::objects::{self, DumpOptions, DumpReport};
use crate::cluster::paths::KUBERNETES_DIR;
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
const STATE_SKIPPED: &[&str] = &[
    "bundle",
    "bundle.new",
    "snapshots",
    "kit-key",
    crate::statedir::LOCK_FILE,
];
/// Nor the staging directories of backups (this one's own among them) and of restores.
const STATE_SKIPPED_PREFIXES: &[&str] = &[STAGING_PREFIX, OPENED_PREFIX];
/// Prefix of the directory `restore` opens a kit into, in the state directory.
pub const OPENED_PREFIX: &str = ".restore-";
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

/// `/etc/kubernetes` of one master as a tar, over the SSH channel: nothing is written on the
/// master. The host prints the archive's sha256, then the archive (base64: the channel carries
/// text); both come from the same bytes, so a change on the way is caught.
fn etc_kubernetes_script() -> String {
    let root = KUBERNETES_DIR.trim_start_matches('/');
    format!(
        r#"archive=$(tar -C / -cf - {root} | base64 -w0)
printf '%s' "$archive" | base64 -d | sha256sum | cut -d' ' -f1
printf '%s\n' "$archive"
"#
    )
}

/// Checks what [`etc_kubernetes_script`] printed and writes the archive to `local` (mode 0600).
fn save_etc_kubernetes(host: &str, stdout: &str, local: &Path) -> anyhow::Result<()> {
    use base64::Engine as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut lines = stdout.lines();
    let (Some(expected), Some(encoded)) = (lines.next(), lines.next()) else {
        bail!("{host}: unexpected output archiving {KUBERNETES_DIR}");
    };
    let archive = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .with_context(|| format!("{host}: the archive of {KUBERNETES_DIR} arrived garbled"))?;
    let actual = ilha_format::Sha256::of(&archive).to_string();
    if actual != expected.trim() {
        bail!(
            "{host}: the archive of {KUBERNETES_DIR} arrived altered (sha256 {actual}, the host \
             sent {})",
            expected.trim()
        );
    }
    std::fs::create_dir_all(local.parent().expect("has a parent"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(local)
        .with_context(|| format!("creating {}", local.display()))?;
    file.write_all(&archive)
        .with_context(|| format!("writing {}", local.display()))?;
    Ok(())
}

/// `/etc/kubernetes` of one master into the staging directory.
async fn fetch_etc_kubernetes(session: &Session, staging: &Path) -> anyhow::Result<()> {
    let host = session.name();
    let out = session
        .run_script(
            &format!("archive of {KUBERNETES_DIR}"),
            &etc_kubernetes_script(),
        )
        .await
        .with_context(|| format!("{host}: archiving {KUBERNETES_DIR}"))?;
    save_etc_kubernetes(host, &out.stdout, &staging.join(etc_kubernetes_path(host)))
}

/// Prefix of a backup's staging directory in the state directory: `<prefix><pid>-<random>`.
pub const STAGING_PREFIX: &str = ".kit-staging-";

/// An owner-only directory `<dir>/<prefix><pid>-XXXXXX` for plaintext that must not outlive the
/// command: removed when dropped, so on success, on every error and on unwinding. Leftovers of
/// runs that were killed (their pid is gone) are removed first and named.
pub(crate) fn private_staging(dir: &Path, prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for leftover in stale_staging(dir, prefix) {
        match std::fs::remove_dir_all(&leftover) {
            Ok(()) => say(format!(
                "  removed {}, left by an interrupted run",
                leftover.display()
            )),
            Err(e) => say(format!(
                "  warning: cannot remove {}, left by an interrupted run: {e}",
                leftover.display()
            )),
        }
    }
    use std::os::unix::fs::PermissionsExt as _;
    // Owner-only from its creation (tempfile's default follows the umask: 0755).
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(dir)
        .with_context(|| format!("making a staging directory in {}", dir.display()))
}

/// `<prefix><pid>-…` directories in `dir` whose process is gone.
fn stale_staging(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut stale: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let pid: u32 = name.strip_prefix(prefix)?.split('-').next()?.parse().ok()?;
            let alive = Path::new("/proc").join(pid.to_string()).exists();
            (!alive).then(|| e.path())
        })
        .collect();
    stale.sort();
    stale
}

/// The state directory, without what [`STATE_SKIPPED`] and [`STATE_SKIPPED_PREFIXES`] name.
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
        if STATE_SKIPPED.iter().any(|s| name == *s)
            || STATE_SKIPPED_PREFIXES
                .iter()
                .any(|p| name.to_string_lossy().starts_with(p))
        {
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
    let _state = crate::statedir::StateDir::open(state_dir, "backup")?;
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
    // A kit names its cluster by the state directory's CA: the masters must agree before the
    // snapshot is taken on them.
    crate::cluster::identity::guard(&fleet, &config, "backup").await?;

    let staging = private_staging(state_dir, STAGING_PREFIX)?;
    let stage = staging.path();
    std::fs::create_dir_all(stage.join("etcd"))?;

    say(
        "Taking the etcd snapshot (drilled), /etc/kubernetes of the masters and the object dump ...",
    );
    let connected = &fleet;
    let etcd_part = async {
        let t = Instant::now();
        // Unreachable members are named in the error if none gives a snapshot.
        let taken = etcd::from_any_member(connected, &members, &stage.join(SNAPSHOT_PATH)).await;
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
    // A backup only reads the hosts: on Ctrl-C or SIGTERM its parts are abandoned, not awaited
    // (closing the masters ends what they ran on the hosts, the drill's etcd with it).
    let parts = tokio::select! {
        parts = async { tokio::join!(etcd_part, masters_part, objects_part) } => Some(parts),
        () = crate::interrupt::notified() => None,
    };
    fleet.close().await;
    let (Some(parts), Ok(())) = (parts, crate::interrupt::check()) else {
        // `staging` goes with this return: no plaintext is left behind.
        bail!(
            "interrupted by {}: no kit was written and its staging was removed; run `ilha \
             backup` again",
            crate::interrupt::requested().unwrap_or("a signal")
        );
    };
    let ((taken, etcd_s), (fetched, missing, masters_s), (dumped, objects_s)) = parts;
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
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn leftovers(dir: &Path, prefix: &str) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    #[test]
    fn staging_is_owner_only_in_the_state_directory_and_gone_when_dropped() {
        let state = tempfile::tempdir().unwrap();
        let staging = private_staging(state.path(), STAGING_PREFIX).unwrap();
        assert_eq!(staging.path().parent(), Some(state.path()));
        assert_eq!(mode(staging.path()), 0o700);
        let name = staging.path().file_name().unwrap().to_string_lossy();
        assert!(
            name.starts_with(&format!("{STAGING_PREFIX}{}-", std::process::id())),
            "{name}"
        );
        std::fs::create_dir_all(staging.path().join("masters/m1")).unwrap();
        std::fs::write(staging.path().join("masters/m1/etc-kubernetes.tar"), "k").unwrap();
        drop(staging);
        assert!(leftovers(state.path(), STAGING_PREFIX).is_empty());
    }

    #[test]
    fn staging_left_by_a_killed_run_is_removed_and_a_running_ones_kept() {
        let state = tempfile::tempdir().unwrap();
        // No process has a pid above the kernel's maximum (2^22).
        let dead = state.path().join(format!("{STAGING_PREFIX}4999999-abc"));
        let alive = state
            .path()
            .join(format!("{STAGING_PREFIX}{}-abc", std::process::id()));
        let other = state.path().join(".restore-4999999-abc");
        for dir in [&dead, &alive, &other] {
            std::fs::create_dir_all(dir.join("etcd")).unwrap();
            std::fs::write(dir.join("etcd/snapshot.db"), "secret").unwrap();
        }
        let staging = private_staging(state.path(), STAGING_PREFIX).unwrap();
        assert!(!dead.exists(), "a killed run's staging stays");
        assert!(alive.exists(), "a running backup's staging was removed");
        assert!(other.exists(), "another prefix was touched");
        drop(staging);
        assert!(alive.exists());
    }

    /// The script the master runs, against a scratch root, and what the operator keeps of it.
    #[test]
    fn etc_kubernetes_arrives_whole_and_owner_only_or_not_at_all() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/kubernetes/pki")).unwrap();
        std::fs::write(root.path().join("etc/kubernetes/pki/ca.key"), "KEY").unwrap();
        std::fs::write(root.path().join("etc/kubernetes/admin.conf"), "conf").unwrap();
        let script = etc_kubernetes_script()
            .replace("tar -C / ", &format!("tar -C {} ", root.path().display()));
        crate::cluster::tests_support::assert_bash_syntax(&script);
        let stdout = crate::cluster::tests_support::run_bash_ok(&script);

        let stage = tempfile::tempdir().unwrap();
        let local = stage.path().join(etc_kubernetes_path("m1"));
        save_etc_kubernetes("m1", &stdout, &local).unwrap();
        assert_eq!(mode(&local), 0o600);
        let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(&local).unwrap())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "etc/kubernetes/",
                "etc/kubernetes/admin.conf",
                "etc/kubernetes/pki/",
                "etc/kubernetes/pki/ca.key"
            ]
        );

        // Altered on the way: refused, nothing written.
        let (sum, data) = stdout.split_once('\n').unwrap();
        let other = stage.path().join("other.tar");
        let altered = format!("{}\n{}", "0".repeat(64), data);
        let err = save_etc_kubernetes("m1", &altered, &other).unwrap_err();
        assert!(format!("{err:#}").contains("m1: the archive of /etc/kubernetes arrived altered"));
        let garbled = format!("{sum}\n!!{data}");
        assert!(save_etc_kubernetes("m1", &garbled, &other).is_err());
        assert!(save_etc_kubernetes("m1", "", &other).is_err());
        assert!(!other.exists());
    }

    /// A backup that fails midway (no host answers, no API) leaves no staging anywhere.
    #[test]
    fn a_failed_backup_leaves_no_staging() {
        let work = tempfile::tempdir().unwrap();
        let state = work.path().join("state");
        std::fs::create_dir_all(state.join("pki/kubernetes")).unwrap();
        std::fs::write(state.join("pki/kubernetes/ca.crt"), "ca").unwrap();
        std::fs::write(
            state.join("admin.conf"),
            "apiVersion: v1\nkind: Config\ncurrent-context: a\n\
             clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1', insecure-skip-tls-verify: true}}]\n\
             users: [{name: u, user: {token: t}}]\n\
             contexts: [{name: a, context: {cluster: c, user: u}}]\n",
        )
        .unwrap();
        // Port 1 on loopback refuses at once.
        std::fs::write(
            work.path().join("inventory.ini"),
            "m1 ansible_ssh_host=127.0.0.1 ansible_port=1 ip=10.0.0.1\n\
             w1 ansible_ssh_host=127.0.0.2 ansible_port=1 ip=10.0.0.2\n\
             [kube-master]\nm1\n[etcd]\nm1\n[kube-node]\nw1\n\
             [k8s-cluster:children]\nkube-master\nkube-node\n",
        )
        .unwrap();
        std::fs::write(
            work.path().join("cluster.yaml"),
            "cluster_name: lab\nstate_dir: state\n",
        )
        .unwrap();
        let media = work.path().join("media");
        std::fs::create_dir_all(&media).unwrap();
        let request = BackupRequest {
            inventory: work.path().join("inventory.ini"),
            config: Some(work.path().join("cluster.yaml")),
            ssh: SshOptions {
                connect_timeout: std::time::Duration::from_secs(2),
                control_dir: Some(work.path().to_path_buf()),
                ..SshOptions::default()
            },
            out: media.join("kit.tar.zst"),
            key: None,
            key_password: None,
            protection: Protection::Passphrase("p".into()),
            dump: DumpOptions::default(),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime.block_on(backup(&request)).unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("m1: not connected"), "{text}");
        assert!(leftovers(&state, STAGING_PREFIX).is_empty(), "staging left");
        let beside_out: Vec<_> = std::fs::read_dir(&media).unwrap().collect();
        assert!(beside_out.is_empty(), "{beside_out:?}");
    }

    #[test]
    fn state_copy_leaves_out_the_bundle_snapshots_and_key() {
        let from = tempfile::tempdir().unwrap();
        for dir in [
            "bundle/blobs",
            "snapshots",
            "kit-key",
            "pki/kubernetes",
            "records",
            ".kit-staging-1-abc/state",
            ".restore-1-abc/objects",
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
        for skipped in [
            "bundle",
            "snapshots",
            "kit-key",
            ".kit-staging-1-abc",
            ".restore-1-abc",
        ] {
            assert!(!to.path().join(skipped).exists(), "{skipped} copied");
        }
    }
}
