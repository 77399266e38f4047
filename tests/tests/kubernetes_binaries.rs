//! The lab's artifacts: images skopeo accepts, a mirror whose checksums match, a registry that
//! serves the images, and the proof that the built Kubernetes works: kube-apiserver against etcd
//! on a lab host, namespaces listed with the built kubectl. Runs as root; never skips.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use xtask::artifacts::{self, mirror, oci};
use xtask::lab::{Lab, LabConfig};

/// Runs a command that must succeed; returns stdout.
fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn skopeo_inspect(args: &[&str]) -> Value {
    let text = run(Command::new("skopeo").arg("inspect").args(args));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("skopeo inspect {args:?}: {e}: {text}"))
}

/// `GET url_path` from `addr` over HTTP/1.0: (status, sha256 of the body, body if small).
fn http_get(addr: SocketAddr, url_path: &str) -> (u16, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    write!(stream, "GET /{url_path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("GET {url_path}: bad status line {status_line:?}"));
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut hasher = Sha256::new();
    let mut small = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        if small.len() < 4096 {
            small.extend_from_slice(&buf[..n.min(4096)]);
        }
    }
    (status, hex::encode(hasher.finalize()), small)
}

#[test]
fn image_builder_makes_a_layout_skopeo_accepts_deterministically() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = oci::ImageSpec {
        reference: "ilha.test/unit:1".into(),
        entries: vec![
            oci::LayerEntry::Dir {
                path: "etc".into(),
                mode: 0o755,
            },
            oci::LayerEntry::File {
                path: "etc/hello".into(),
                mode: 0o644,
                data: b"hello\n".to_vec(),
            },
            oci::LayerEntry::Symlink {
                path: "hi".into(),
                target: "etc/hello".into(),
            },
        ],
        runtime_config: json!({ "Cmd": ["/bin/true"] }),
    };
    let first = oci::write_layout(&spec, &tmp.path().join("a")).unwrap();
    let second = oci::write_layout(&spec, &tmp.path().join("b")).unwrap();
    assert_eq!(
        first.manifest_digest, second.manifest_digest,
        "same inputs, same image"
    );

    let dir = first.dir.display().to_string();
    let inspected = skopeo_inspect(&[&format!("oci:{dir}:ilha.test/unit:1")]);
    assert_eq!(inspected["Digest"], first.manifest_digest.as_str());
    assert_eq!(inspected["Architecture"], "amd64");
    assert_eq!(inspected["Os"], "linux");
    assert_eq!(inspected["Layers"].as_array().map(Vec::len), Some(1));
    let config = skopeo_inspect(&["--config", &format!("oci:{dir}:ilha.test/unit:1")]);
    assert_eq!(config["config"]["Cmd"], json!(["/bin/true"]));
}

#[test]
fn mirror_checksums_match_the_files() {
    let served = artifacts::ensure_served(&LabConfig::from_env()).unwrap();
    assert_eq!(served.artifacts.binaries.len(), 17);
    for binary in &served.artifacts.binaries {
        let (status, body_sha, _) = http_get(served.mirror, &binary.url_path);
        assert_eq!(status, 200, "GET {}", binary.url_path);
        let (status, _, checksum) = http_get(served.mirror, &binary.checksum_path);
        assert_eq!(status, 200, "GET {}", binary.checksum_path);
        let published = mirror::published_digest(&String::from_utf8_lossy(&checksum), &binary.name)
            .unwrap_or_else(|| panic!("{} has no line for {}", binary.checksum_path, binary.name));
        assert_eq!(
            published, body_sha,
            "{} vs {}",
            binary.checksum_path, binary.url_path
        );
        assert_eq!(published, binary.sha256, "{} vs the cache", binary.url_path);
    }
    // The Kubernetes binaries are the version we built, as dl.k8s.io lays them out.
    let kubectl = served.artifacts.binary("kubectl").unwrap();
    assert_eq!(kubectl.url_path, "release/v1.20.2/bin/linux/amd64/kubectl");
    let version = run(Command::new(&kubectl.path).args(["version", "--client"]));
    assert!(version.contains("GitVersion:\"v1.20.2\""), "{version}");
    let (status, _, _) = http_get(
        served.mirror,
        "release/v1.20.2/bin/linux/amd64/no-such-binary",
    );
    assert_eq!(status, 404);
}

#[test]
fn registry_serves_the_images() {
    let served = artifacts::ensure_served(&LabConfig::from_env()).unwrap();
    let names: Vec<&str> = served
        .artifacts
        .images
        .iter()
        .map(|i| i.name.as_str())
        .collect();
    assert_eq!(names, ["k8s.gcr.io/pause:3.2", "ilha.test/busybox:1"]);
    for image in &served.artifacts.images {
        let remote = skopeo_inspect(&[
            "--tls-verify=false",
            &format!("docker://{}", image.registry_ref),
        ]);
        assert_eq!(
            remote["Digest"],
            image.layout.manifest_digest.as_str(),
            "{}",
            image.registry_ref
        );
        assert_eq!(remote["Architecture"], "amd64");
    }
    let pause = served.artifacts.image("k8s.gcr.io/pause:3.2").unwrap();
    let config = skopeo_inspect(&[
        "--config",
        "--tls-verify=false",
        &format!("docker://{}", pause.registry_ref),
    ]);
    assert_eq!(config["config"]["Entrypoint"], json!(["/pause"]));
}

/// kubeadm config for the test's PKI: explicit version and CRI socket, so kubeadm neither asks
/// the internet for the latest release nor probes for a container runtime.
fn kubeadm_config(ip: &str, cert_dir: &Path) -> String {
    format!(
        "apiVersion: kubeadm.k8s.io/v1beta2
kind: InitConfiguration
localAPIEndpoint: {{advertiseAddress: {ip}, bindPort: 6443}}
nodeRegistration: {{name: h1, criSocket: /run/containerd/containerd.sock}}
---
apiVersion: kubeadm.k8s.io/v1beta2
kind: ClusterConfiguration
kubernetesVersion: v1.20.2
clusterName: lab
controlPlaneEndpoint: {ip}:6443
certificatesDir: {}
networking: {{serviceSubnet: 10.96.0.0/12, dnsDomain: cluster.local}}
apiServer: {{certSANs: [{ip}, h1, 127.0.0.1]}}
",
        cert_dir.display()
    )
}

#[test]
fn built_kube_apiserver_runs_against_etcd_in_the_lab_and_kubectl_lists_namespaces() {
    let config = LabConfig::from_env();
    let built = artifacts::ensure_built(&config).unwrap();
    let bin = |name: &str| built.binary(name).unwrap().path.clone();

    // PKI and the admin kubeconfig, offline, with the built kubeadm (which panicked before the
    // reflect2 bump in exactly this code path).
    let tmp = tempfile::tempdir().unwrap();
    let lab = Lab::new(config);
    let h1 = lab.host(1);
    let pki = tmp.path().join("pki");
    let kubeadm_yaml = tmp.path().join("kubeadm.yaml");
    std::fs::write(&kubeadm_yaml, kubeadm_config(&h1.ip, &pki)).unwrap();
    run(Command::new(bin("kubeadm"))
        .args(["init", "phase", "certs", "all", "--config"])
        .arg(&kubeadm_yaml));
    run(Command::new(bin("kubeadm"))
        .args(["init", "phase", "kubeconfig", "admin", "--config"])
        .arg(&kubeadm_yaml)
        .arg("--kubeconfig-dir")
        .arg(tmp.path()));

    let _lock = lab.lock().unwrap();
    lab.up(1).unwrap();
    lab.ssh_ok(
        1,
        "systemctl stop ilha-test-apiserver ilha-test-etcd 2>/dev/null; \
         systemctl reset-failed ilha-test-apiserver ilha-test-etcd 2>/dev/null; \
         rm -rf /var/lib/ilha-test-etcd; mkdir -p /etc/kubernetes/pki /usr/local/bin",
    )
    .unwrap();
    for name in ["kube-apiserver", "kubectl"] {
        lab.copy_to(1, &bin(name), &format!("/usr/local/bin/{name}"))
            .unwrap();
    }
    lab.copy_to(
        1,
        &built.binary("etcd").unwrap().path,
        "/usr/local/bin/etcd",
    )
    .unwrap();
    for file in [
        "ca.crt",
        "apiserver.crt",
        "apiserver.key",
        "sa.pub",
        "sa.key",
    ] {
        lab.copy_to(1, &pki.join(file), &format!("/etc/kubernetes/pki/{file}"))
            .unwrap();
    }
    lab.copy_to(
        1,
        &tmp.path().join("admin.conf"),
        "/etc/kubernetes/admin.conf",
    )
    .unwrap();

    // etcd on the host's loopback (Type=notify: systemd-run returns once it is ready).
    lab.ssh_ok(
        1,
        "systemd-run --unit=ilha-test-etcd --property=Type=notify \
         /usr/local/bin/etcd --name h1 --data-dir /var/lib/ilha-test-etcd \
         --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
         --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
         --initial-cluster h1=http://127.0.0.1:2380",
    )
    .unwrap();
    let started = Instant::now();
    lab.ssh_ok(
        1,
        &format!(
            "systemd-run --unit=ilha-test-apiserver --property=TimeoutStopSec=5 \
             /usr/local/bin/kube-apiserver --advertise-address={ip} --bind-address=0.0.0.0 \
             --secure-port=6443 --insecure-port=0 --etcd-servers=http://127.0.0.1:2379 \
             --client-ca-file=/etc/kubernetes/pki/ca.crt \
             --tls-cert-file=/etc/kubernetes/pki/apiserver.crt --tls-private-key-file=/etc/kubernetes/pki/apiserver.key \
             --authorization-mode=Node,RBAC --service-cluster-ip-range=10.96.0.0/12 \
             --service-account-key-file=/etc/kubernetes/pki/sa.pub \
             --service-account-signing-key-file=/etc/kubernetes/pki/sa.key \
             --service-account-issuer=https://kubernetes.default.svc.cluster.local",
            ip = h1.ip
        ),
    )
    .unwrap();

    let list =
        "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf get namespaces -o name";
    let expected = ["default", "kube-system", "kube-public"];
    let lists_all = |text: &str| {
        expected
            .iter()
            .all(|ns| text.lines().any(|l| l == format!("namespace/{ns}")))
    };
    let mut namespaces = String::new();
    while started.elapsed() < Duration::from_secs(90) {
        let out = lab.ssh(1, list).unwrap();
        namespaces = String::from_utf8_lossy(&out.stdout).into_owned();
        // The apiserver's bootstrap controllers create the namespaces a moment after it serves.
        if out.status.success() && lists_all(&namespaces) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let ready = started.elapsed();
    if !lists_all(&namespaces) {
        let journal = lab
            .ssh(1, "journalctl -u ilha-test-apiserver -n 20 --no-pager")
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!(
            "kubectl get namespaces on h1 did not list {expected:?} within 90s: {namespaces:?}\napiserver journal:\n{journal}"
        );
    }
    let version = lab
        .ssh_ok(
            1,
            "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf version --short",
        )
        .unwrap();
    assert!(version.contains("Server Version: v1.20.2"), "{version}");
    eprintln!(
        "kube-apiserver on h1 listed namespaces {:.1}s after start",
        ready.as_secs_f64()
    );
    lab.ssh_ok(
        1,
        "systemctl stop ilha-test-apiserver ilha-test-etcd; rm -rf /var/lib/ilha-test-etcd",
    )
    .unwrap();
}

#[test]
fn debian_binaries_are_unpacked_with_their_versions_recorded() {
    let config = LabConfig::from_env();
    let packages = artifacts::debs::ensure(&config.cache_dir).unwrap();
    for binary in artifacts::debs::DEB_BINARIES {
        let unpacked = &packages[binary.package];
        assert!(!unpacked.version.is_empty(), "{}", binary.package);
        let path = unpacked.binary_path(binary);
        let (sha, _) = {
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (hex::encode(Sha256::digest(&bytes)), bytes.len())
        };
        assert_eq!(
            unpacked.binaries[binary.name].sha256,
            sha,
            "{}",
            path.display()
        );
    }
    let etcd = packages["etcd-server"].binary_path(&artifacts::debs::DEB_BINARIES[0]);
    let version = run(Command::new(etcd).arg("--version"));
    assert!(version.contains("etcd Version: 3."), "{version}");
}
