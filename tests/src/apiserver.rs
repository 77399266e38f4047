//! A real Kubernetes API server for tests, without the lab: the lab's own etcd and
//! kube-apiserver v1.20.2 (from the artifacts mirror) on free loopback ports, in a temp dir,
//! killed on drop. HTTPS with certificates from `ilha::pki` and an admin client certificate
//! (1.20 accepts only `--insecure-port=0`), so clients go through the same TLS as with a real
//! cluster's `admin.conf`. No controllers run: nothing changes unless a test changes it.
use std::io::Write;
use std::net::IpAddr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ilha::pki::{CaKind, LeafSpec, Usage};
use xtask::artifacts::catalog::KUBERNETES_DIR;
use xtask::lab::LabConfig;

/// How long the API server may take to report ready (it takes ~3-6 s).
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// The binaries the fixture runs, from `cargo xtask artifacts build`.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub etcdctl: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kubectl: PathBuf,
}

impl Binaries {
    /// Finds them on the lab's mirror; a missing one fails with the command that makes it.
    pub fn locate() -> Binaries {
        let mirror = LabConfig::from_env().state_dir.join("mirror");
        let binaries = Binaries {
            etcd: mirror.join("etcd/etcd"),
            etcdctl: mirror.join("etcd/etcdctl"),
            kube_apiserver: mirror.join(KUBERNETES_DIR).join("kube-apiserver"),
            kubectl: mirror.join(KUBERNETES_DIR).join("kubectl"),
        };
        for path in [
            &binaries.etcd,
            &binaries.etcdctl,
            &binaries.kube_apiserver,
            &binaries.kubectl,
        ] {
            assert!(
                path.is_file(),
                "{} is missing: make it with `cargo xtask artifacts build` (`make test` runs it first)",
                path.display()
            );
        }
        binaries
    }
}

/// An etcd and a kube-apiserver running for one test.
pub struct ApiServer {
    pub binaries: Binaries,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// `http://127.0.0.1:<port>` of etcd.
    pub etcd_url: String,
    kubeconfig: PathBuf,
    dir: FixtureDir,
    etcd: Child,
    apiserver: Child,
}

/// The fixture's files, removed on drop (after `ApiServer::drop` stopped the processes).
struct FixtureDir(PathBuf);

impl FixtureDir {
    fn new() -> FixtureDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        // etcd's data on tmpfs when there is one: thousands of writes, each fsync'd.
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!(
            "ilha-apiserver-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        FixtureDir(dir)
    }
}

impl Drop for FixtureDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port that was free a moment ago (the kernel hands out a new one to each bind to port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a free loopback port")
}

fn write_file(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn spawn(command: &mut Command, log: &Path) -> Child {
    let log_file = std::fs::File::create(log).expect("creating a log file");
    command
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("log file"))
        .stderr(log_file)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command:?}: {e}"))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl ApiServer {
    /// Starts etcd and the API server and waits until `/readyz` answers 200.
    pub fn start() -> ApiServer {
        let binaries = Binaries::locate();
        let dir = FixtureDir::new();
        let root = dir.0.as_path();

        // Certificates made the way ilha makes a cluster's: the service-account key pair 1.20
        // requires, a serving certificate for 127.0.0.1 and an admin client certificate.
        let pki = ilha::pki::Pki::open_or_init(&root.join("pki")).expect("making the PKI");
        let (sa_key, sa_pub) = pki.service_account().expect("service-account keys");
        write_file(&root.join("sa.key"), &sa_key);
        write_file(&root.join("sa.pub"), &sa_pub);
        let ca = pki.ca(CaKind::Kubernetes).expect("the Kubernetes CA");
        write_file(&root.join("ca.crt"), &ca.cert_pem);
        let leaf = |stem: &str, common_name: &str, organizations: &[&str], usage: Usage| {
            let spec = LeafSpec {
                common_name: common_name.into(),
                organizations: organizations.iter().map(|o| o.to_string()).collect(),
                dns_names: vec!["localhost".into()],
                ips: vec![IpAddr::from([127, 0, 0, 1])],
                usage,
            };
            let pair = pki
                .leaf(CaKind::Kubernetes, stem, &spec)
                .unwrap_or_else(|e| panic!("issuing {stem}: {e}"));
            write_file(&root.join(format!("{stem}.crt")), &pair.cert_pem);
            write_file(&root.join(format!("{stem}.key")), &pair.key_pem);
        };
        leaf("apiserver", "kube-apiserver", &[], Usage::Server);
        leaf("admin", "fixture-admin", &["system:masters"], Usage::Client);

        let (etcd_port, peer_port) = (free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let etcd = spawn(
            Command::new(&binaries.etcd)
                .arg("--name=fixture")
                .arg(format!("--data-dir={}", root.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=fixture={peer_url}"))
                .arg("--log-level=warn"),
            &root.join("etcd.log"),
        );

        let port = free_port();
        let path = |name: &str| root.join(name).display().to_string();
        let apiserver = spawn(
            Command::new(&binaries.kube_apiserver)
                .arg(format!("--etcd-servers={etcd_url}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--secure-port={port}"))
                .arg("--advertise-address=127.0.0.1")
                .arg(format!("--tls-cert-file={}", path("apiserver.crt")))
                .arg(format!("--tls-private-key-file={}", path("apiserver.key")))
                .arg(format!("--client-ca-file={}", path("ca.crt")))
                .arg(format!("--cert-dir={}", path("certs")))
                .arg("--service-cluster-ip-range=10.96.0.0/12")
                .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
                .arg(format!("--service-account-key-file={}", path("sa.pub")))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    path("sa.key")
                ))
                .arg("--authorization-mode=RBAC")
                // No periodic writes of its own (master leases), so tests can count what changed.
                .arg("--endpoint-reconciler-type=none")
                .arg("--v=1"),
            &root.join("kube-apiserver.log"),
        );

        let url = format!("https://127.0.0.1:{port}");
        let kubeconfig = root.join("kubeconfig");
        write_file(
            &kubeconfig,
            &format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fixture\n  cluster:\n    server: {url}\n    \
                 certificate-authority: {}\nusers:\n- name: fixture-admin\n  user:\n    client-certificate: {}\n    \
                 client-key: {}\ncontexts:\n- name: fixture\n  context:\n    cluster: fixture\n    user: fixture-admin\n\
                 current-context: fixture\n",
                path("ca.crt"),
                path("admin.crt"),
                path("admin.key"),
            ),
        );

        let mut server = ApiServer {
            binaries,
            url,
            etcd_url,
            kubeconfig,
            dir,
            etcd,
            apiserver,
        };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let started = Instant::now();
        loop {
            let ready = self
                .kubectl()
                .args(["get", "--raw=/readyz", "--request-timeout=2s"])
                .output()
                .is_ok_and(|out| out.status.success());
            if ready {
                eprintln!(
                    "API server {} ready in {:.1} s",
                    self.url,
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            for (name, child) in [
                ("etcd", &mut self.etcd),
                ("kube-apiserver", &mut self.apiserver),
            ] {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{name} exited ({status}) while starting:\n{}",
                        log_tail(&self.dir.0.join(format!("{name}.log")))
                    );
                }
            }
            assert!(
                started.elapsed() < READY_TIMEOUT,
                "{} not ready after {READY_TIMEOUT:?}:\n{}",
                self.url,
                log_tail(&self.dir.0.join("kube-apiserver.log"))
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A kubeconfig for this server (`server: https://127.0.0.1:PORT`, CA and admin client
    /// certificate by path).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The fixture's own kubectl (v1.20.2), pointed at this server.
    pub fn kubectl(&self) -> Command {
        let mut command = Command::new(&self.binaries.kubectl);
        command.arg("--kubeconfig").arg(&self.kubeconfig);
        command
    }

    /// Runs `kubectl args...` with `stdin` as input; panics with its stderr when it fails.
    pub fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut command = self.kubectl();
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("running kubectl {args:?}: {e}"));
        let mut input = child.stdin.take().expect("kubectl stdin");
        if let Some(text) = stdin {
            input
                .write_all(text.as_bytes())
                .expect("writing kubectl's input");
        }
        drop(input);
        let out = child.wait_with_output().expect("kubectl output");
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every key etcd holds for the API server: what a write would add to.
    pub fn etcd_keys(&self) -> Vec<String> {
        let out = Command::new(&self.binaries.etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.etcd_url))
            .args(["get", "/registry/", "--prefix", "--keys-only"])
            .output()
            .expect("running etcdctl");
        assert!(
            out.status.success(),
            "etcdctl get failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// etcd's current revision: every write bumps it.
    pub fn etcd_revision(&self) -> u64 {
        let out = Command::new(&self.binaries.etcdctl)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.etcd_url))
            .args(["endpoint", "status", "-w", "json"])
            .output()
            .expect("running etcdctl");
        let text = String::from_utf8_lossy(&out.stdout);
        // `..."header":{...,"revision":1234,...}...`
        text.split("\"revision\":")
            .nth(1)
            .and_then(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            })
            .unwrap_or_else(|| panic!("no revision in etcdctl endpoint status: {text}"))
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for child in [&mut self.apiserver, &mut self.etcd] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
