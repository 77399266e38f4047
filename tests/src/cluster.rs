//! What the cluster suites share: the lab bundle (built once per test binary, cached across
//! binaries), fresh hosts, inventories for each layout, and running the real `ilha` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ilha_bundler::build::{BuildOptions, build};
use sha2::{Digest, Sha256};
use xtask::artifacts;
use xtask::lab::{Lab, LabConfig};

use crate::{LabSession, lab_locked};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `ilha` binary next to this test binary (target/<profile>/ilha). `make test` and
/// `cargo test --workspace` build it; a missing binary is a loud failure, not a skip.
pub fn ilha_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("ilha");
    assert!(
        bin.is_file(),
        "{} is missing: build it first (`cargo build -p ilha`; `make test` does)",
        bin.display()
    );
    bin
}

/// A signed bundle of `manifests/lab.yaml` and its public key.
#[derive(Debug, Clone)]
pub struct LabBundle {
    pub bundle: PathBuf,
    pub pubkey: PathBuf,
    pub dir: PathBuf,
}

static BUNDLE: Mutex<Option<LabBundle>> = Mutex::new(None);

/// Builds the lab bundle (artifacts served first), reusing one built earlier from the same
/// manifest and artifacts.
pub fn lab_bundle() -> LabBundle {
    let mut slot = BUNDLE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(bundle) = slot.as_ref() {
        return bundle.clone();
    }
    let config = LabConfig::from_env();
    let served = artifacts::ensure_served(&config)
        .unwrap_or_else(|err| panic!("serving the lab's artifacts: {err:#}"));
    let manifest = workspace().join("manifests/lab.yaml");
    let mut key = Sha256::new();
    key.update(std::fs::read(&manifest).expect("manifests/lab.yaml"));
    key.update(
        std::fs::read(workspace().join("manifests/lab/addon-lab-check.yaml")).expect("lab addon"),
    );
    for b in &served.artifacts.binaries {
        key.update(format!("{} {}\n", b.name, b.sha256).as_bytes());
    }
    for i in &served.artifacts.images {
        key.update(format!("{} {}\n", i.name, i.layout.manifest_digest).as_bytes());
    }
    let key = hex::encode(key.finalize());
    let dir = config.state_dir.join("e2e-bundle").join(&key[..16]);
    let bundle = LabBundle {
        bundle: dir.join("lab.tar.zst"),
        pubkey: dir.join("ilha.pub"),
        dir: dir.clone(),
    };
    if !bundle.bundle.is_file() {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (secret, _public) = ilha_format::sign::generate_keypair(&dir, None).unwrap();
        build_bundle(
            manifest,
            secret,
            &served.registry.to_string(),
            &bundle.bundle,
        );
    }
    *slot = Some(bundle.clone());
    bundle
}

/// What the e2e suites build bundles with: the lab's registry over plain HTTP, an unencrypted
/// key, the bundler's defaults otherwise.
pub fn build_options(manifest: PathBuf, key: PathBuf, registry: &str, out: &Path) -> BuildOptions {
    BuildOptions {
        manifest,
        key,
        password: None,
        out: Some(out.to_path_buf()),
        insecure_registries: vec![registry.to_string()],
        platform: None,
        jobs: 6,
        zstd_level: 1,
    }
}

/// `ilha-bundler build MANIFEST --key KEY --insecure-registry REGISTRY --out OUT`, as the lab's
/// bundles are made (fast zstd).
pub fn build_bundle(manifest: PathBuf, key: PathBuf, registry: &str, out: &Path) {
    let what = manifest.display().to_string();
    let options = build_options(manifest, key, registry, out);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_cancel_tx, cancel) = tokio::sync::watch::channel(false);
    runtime
        .block_on(build(&options, cancel))
        .unwrap_or_else(|err| panic!("ilha-bundler build {what}: {err:#}"));
}

/// `ilha up BUNDLE --pubkey PUB -i INVENTORY -c CONFIG`.
pub fn up_args<'a>(
    bundle: &'a str,
    pubkey: &'a str,
    inventory: &'a str,
    config: &'a str,
) -> Vec<&'a str> {
    vec![
        "up", bundle, "--pubkey", pubkey, "-i", inventory, "-c", config,
    ]
}

/// The lab with freshly made hosts, wiped again when dropped: a cluster leaves hosts full of
/// services that later suites must not inherit.
pub struct FreshLab {
    session: LabSession,
}

impl std::ops::Deref for FreshLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.session
    }
}

impl Drop for FreshLab {
    fn drop(&mut self) {
        if let Err(err) = self.session.wipe() {
            eprintln!("wiping the lab after a cluster test: {err}");
        }
    }
}

/// The lab, locked, with `hosts` freshly made hosts (earlier state wiped).
pub fn fresh_lab(hosts: usize) -> FreshLab {
    let lab = lab_locked();
    lab.wipe()
        .unwrap_or_else(|err| panic!("wiping the lab: {err}"));
    lab.up(hosts)
        .unwrap_or_else(|err| panic!("bringing the lab up with {hosts} hosts: {err}"));
    FreshLab { session: lab }
}

/// A host of a layout: inventory name, lab host index, groups.
pub struct Member {
    pub name: &'static str,
    pub index: usize,
    pub groups: &'static [&'static str],
}

/// h1 master and etcd, h2 a worker: the smallest cluster with a worker.
pub fn master_and_worker() -> [Member; 2] {
    let [master, worker, _] = master_and_two_workers();
    [master, worker]
}

/// h1 master and etcd, h2 and h3 workers: the smallest cluster with pods on two workers.
pub fn master_and_two_workers() -> [Member; 3] {
    [
        Member {
            name: "h1",
            index: 1,
            groups: &["kube-master", "etcd"],
        },
        Member {
            name: "h2",
            index: 2,
            groups: &["kube-node"],
        },
        Member {
            name: "h3",
            index: 3,
            groups: &["kube-node"],
        },
    ]
}

/// A Deployment `name` of busybox httpd pods (port 8080, one per host, each page
/// `served-by-<pod name>`) and a Service `name` (port 80) in front of them. `host_port` gives each
/// pod a hostPort (the portmap plugin's chains), which pod security's baseline refuses: the pods
/// then run as their own service account, allowed ilha's privileged PodSecurityPolicy in the
/// namespace (the way docs/hardening.md says to grant it; the lab runs 1.20, where PodSecurity's
/// namespace label would not apply). `node_port` makes the Service a NodePort.
pub fn httpd_workload(
    name: &str,
    replicas: u32,
    host_port: Option<u16>,
    node_port: Option<u16>,
) -> String {
    let (service_account, host_port_grant) = match host_port {
        Some(_) => (
            format!("\n      serviceAccountName: {name}"),
            format!(
                r#"
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: default}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: {name}-host-ports, namespace: default}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "{role}"}}
subjects: [{{kind: ServiceAccount, name: {name}, namespace: default}}]
---"#,
                role = ilha::cluster::admission::PRIVILEGED_POLICY_ROLE
            ),
        ),
        None => (String::new(), String::new()),
    };
    let host_port = host_port.map_or(String::new(), |p| format!(", hostPort: {p}"));
    let (service_type, node_port) = match node_port {
        Some(port) => ("\n  type: NodePort", format!(", nodePort: {port}")),
        None => ("", String::new()),
    };
    format!(
        r#"{host_port_grant}
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:{service_account}
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {{matchLabels: {{app: {name}}}}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: {name}
        image: ilha.test/busybox:1
        imagePullPolicy: Never
        command: ["/bin/busybox", "sh", "-c", "mkdir -p /tmp/www && echo served-by-$(hostname) > /tmp/www/index.html && exec /bin/busybox httpd -f -p 8080 -h /tmp/www"]
        ports: [{{containerPort: 8080{host_port}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:{service_type}
  selector: {{app: {name}}}
  ports: [{{port: 80, targetPort: 8080{node_port}}}]
"#
    )
}

/// The seed's layout, in the seed's own INI dialect: node1-3 masters + etcd, node4-6 workers.
pub fn seed_layout() -> Vec<Member> {
    let cp: &'static [&'static str] = &["kube-master", "etcd"];
    let worker: &'static [&'static str] = &["kube-node"];
    vec![
        Member {
            name: "node1",
            index: 1,
            groups: cp,
        },
        Member {
            name: "node2",
            index: 2,
            groups: cp,
        },
        Member {
            name: "node3",
            index: 3,
            groups: cp,
        },
        Member {
            name: "node4",
            index: 4,
            groups: worker,
        },
        Member {
            name: "node5",
            index: 5,
            groups: worker,
        },
        Member {
            name: "node6",
            index: 6,
            groups: worker,
        },
    ]
}

/// Writes a Kubespray-style INI inventory for `members` into `dir`; `ip_override` replaces one
/// host's `ip=` (to test a wrong address).
pub fn write_inventory(
    lab: &Lab,
    dir: &Path,
    members: &[Member],
    ip_override: Option<(&str, &str)>,
) -> PathBuf {
    let mut text = String::new();
    for m in members {
        let ip = lab.host(m.index).ip;
        let stated = match ip_override {
            Some((name, other)) if name == m.name => other.to_string(),
            _ => ip.to_string(),
        };
        text.push_str(&format!(
            "{} ansible_ssh_user=root ansible_ssh_host={ip} ip={stated}\n",
            m.name
        ));
    }
    let mut groups: Vec<&str> = members
        .iter()
        .flat_map(|m| m.groups.iter().copied())
        .collect();
    groups.sort();
    groups.dedup();
    for group in groups {
        text.push_str(&format!("\n[{group}]\n"));
        for m in members.iter().filter(|m| m.groups.contains(&group)) {
            text.push_str(&format!("{}\n", m.name));
        }
    }
    text.push_str("\n[k8s-cluster:children]\nkube-node\nkube-master\n");
    let path = dir.join("inventory.ini");
    std::fs::write(&path, text).unwrap();
    path
}

/// The lab's hosts share the machine's disk, rarely 15% free: the kubelet's default eviction
/// thresholds would evict test pods (as `examples/lab/cluster.yaml` says too).
pub const LAB_EVICTION: &str = "kubelet_eviction_hard:\n  imagefs.available: 5%\n  nodefs.available: 5%\n  nodefs.inodesFree: 5%\n  memory.available: 100Mi\n";

/// A cluster config putting the state directory under `dir`.
pub fn write_config(dir: &Path, cluster_name: &str) -> PathBuf {
    let path = dir.join("cluster.yaml");
    std::fs::write(
        &path,
        format!("cluster_name: {cluster_name}\nstate_dir: state\n{LAB_EVICTION}"),
    )
    .unwrap();
    path
}

/// Runs `ilha <args>` with the lab's ssh settings appended for the commands that reach hosts.
pub fn ilha(lab: &Lab, args: &[&str]) -> Output {
    let mut command = Command::new(ilha_binary());
    command.args(args);
    if matches!(
        args.first(),
        Some(
            &"up"
                | &"plan"
                | &"scale"
                | &"remove-node"
                | &"reset"
                | &"backup"
                | &"restore"
                | &"kubeconfig"
        )
    ) {
        command
            .arg("--ssh-config")
            .arg(lab.ssh_config().expect("lab ssh_config"))
            .arg("--known-hosts")
            .arg(lab.known_hosts());
    }
    let started = Instant::now();
    let output = command.output().expect("running ilha");
    eprintln!(
        "$ ilha {} ({:.1}s, {})\n--- stdout\n{}--- stderr\n{}---",
        args.join(" "),
        started.elapsed().as_secs_f64(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `kubectl` as cluster admin on lab host `index` (against its local API), its stdout.
pub fn kubectl(lab: &Lab, index: usize, args: &str) -> String {
    lab.ssh_ok(
        index,
        &format!("/usr/local/bin/kubectl --kubeconfig=/etc/kubernetes/admin.conf --request-timeout=10s {args}"),
    )
    .unwrap_or_else(|err| panic!("kubectl {args} on h{index}: {err}"))
}

/// Retries `check` every half second until it returns `Some`, or panics after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Whether a host has been touched by ilha at all.
pub fn untouched(lab: &Lab, index: usize) -> bool {
    lab.ssh_ok(index, "test -e /var/lib/ilha && echo touched || echo clean")
        .map(|out| out.trim() == "clean")
        .unwrap_or(false)
}

/// Files on a master that others (group or world) can read and that are key material: PEM
/// private keys, kubeconfigs with client keys, anywhere on its disk that ilha or a backup could
/// write (image layers aside), and archives or snapshots in ilha's directories. One per line.
pub const EXPOSED_SECRETS: &str = r#"{
  find /var/lib/ilha /var/backups -xdev -type f -perm /044 \( -name '*.tar' -o -name '*.db' \) -print
  find /etc /root /tmp /var/tmp /var/lib /var/backups /run -xdev -path /var/lib/containerd -prune \
    -o -type f -perm /044 -size -16M -print0 | xargs -0 -r grep -laE 'PRIVATE KEY|client-key-data'
} 2>/dev/null | sort -u"#;
