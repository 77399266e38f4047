//! Fixtures: a local `docker-registry`, a tiny HTTP file server, test images pushed with
//! oci-client, and helpers to run the `ilha-bundler` binary.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::{Client, Reference};
use sha2::Digest;

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

pub fn oci_digest(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// Deterministic pseudo-random bytes (xorshift), so layers are incompressible and distinct.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A port nobody listens on (bound then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().unwrap().port()
}

fn require_tool(name: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "required tool {name:?} is not installed (see the Debian packages in the report)"
    );
}

/// Debian's `docker-registry`, storage in a temp dir, killed on drop.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start() -> Registry {
        require_tool("docker-registry");
        let dir = tempfile::tempdir().unwrap();
        for _attempt in 0..5 {
            let port = free_port();
            let addr = format!("127.0.0.1:{port}");
            let config = dir.path().join("config.yml");
            std::fs::write(
                &config,
                format!(
                    "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
                    dir.path().join("storage").display()
                ),
            )
            .unwrap();
            let child = Command::new("docker-registry")
                .arg("serve")
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn docker-registry");
            let mut registry = Registry {
                child,
                addr: addr.clone(),
                _dir: tempfile::tempdir().unwrap(),
            };
            if registry.wait_ready() {
                registry._dir = dir;
                return registry;
            }
            // Port raced away: drop kills this one, try another port.
        }
        panic!("docker-registry did not start");
    }

    fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if let Ok((200, _)) = http_get(&self.addr, "/v2/") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn client(&self) -> Client {
        Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        })
    }

    fn reference(&self, repo: &str, tag: &str) -> Reference {
        format!("{}/{repo}:{tag}", self.addr).parse().unwrap()
    }

    /// Pushes a single-platform OCI image; returns (manifest digest, manifest size).
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        arch: &str,
        layers: &[Vec<u8>],
    ) -> (String, usize) {
        let client = self.client();
        let reference = self.reference(repo, tag);
        let auth = oci_client::secrets::RegistryAuth::Anonymous;
        client
            .auth(&reference, &auth, oci_client::RegistryOperation::Push)
            .await
            .unwrap();
        let diff_ids: Vec<String> = layers.iter().map(|l| oci_digest(l)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": [format!("IMAGE={repo}:{tag}")]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        let mut descriptors = Vec::new();
        for layer in layers {
            let digest = oci_digest(layer);
            client
                .push_blob(&reference, layer.clone(), &digest)
                .await
                .unwrap();
            descriptors.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest,
                "size": layer.len(),
            }));
        }
        let config_digest = oci_digest(&config);
        client
            .push_blob(&reference, config.clone(), &config_digest)
            .await
            .unwrap();
        let manifest = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": descriptors,
        }))
        .unwrap();
        self.push_manifest(
            &reference,
            &manifest,
            "application/vnd.oci.image.manifest.v1+json",
        )
        .await;
        (oci_digest(&manifest), manifest.len())
    }

    /// Pushes an OCI index for `manifests` = (digest, size, arch).
    pub async fn push_index(
        &self,
        repo: &str,
        tag: &str,
        manifests: &[(String, usize, &str)],
    ) -> String {
        let entries: Vec<_> = manifests
            .iter()
            .map(|(digest, size, arch)| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": digest,
                    "size": size,
                    "platform": {"os": "linux", "architecture": arch},
                })
            })
            .collect();
        let index = serde_json::to_vec_pretty(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        }))
        .unwrap();
        let reference = self.reference(repo, tag);
        self.push_manifest(
            &reference,
            &index,
            "application/vnd.oci.image.index.v1+json",
        )
        .await;
        oci_digest(&index)
    }

    async fn push_manifest(&self, reference: &Reference, body: &[u8], media_type: &'static str) {
        let client = self.client();
        client
            .auth(
                reference,
                &oci_client::secrets::RegistryAuth::Anonymous,
                oci_client::RegistryOperation::Push,
            )
            .await
            .unwrap();
        client
            .push_manifest_raw(
                reference,
                body.to_vec(),
                reqwest::header::HeaderValue::from_static(media_type),
            )
            .await
            .unwrap();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.1 GET over std: (status, body).
pub fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = match response.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => response[i + 4..].to_vec(),
        None => Vec::new(),
    };
    Ok((status, body))
}

/// What the file server answers for a path.
#[derive(Clone)]
pub enum Route {
    Body(Vec<u8>),
    /// Declares `declared` bytes but sends only `body` then closes.
    Truncated {
        body: Vec<u8>,
        declared: usize,
    },
    /// Sends `body` in 1 KiB pieces with a pause between them (to interrupt a build mid-download).
    Slow {
        body: Vec<u8>,
        pause: Duration,
    },
}

/// A static HTTP file server on 127.0.0.1; unknown paths get 404.
pub struct FileServer {
    pub addr: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    /// Requests received per path.
    hits: Arc<Mutex<HashMap<String, usize>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    pub fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (routes2, hits2, stop2) = (routes.clone(), hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (routes, hits) = (routes2.clone(), hits2.clone());
                std::thread::spawn(move || serve_one(conn, &routes, &hits));
            }
        });
        FileServer {
            addr,
            routes,
            hits,
            stop,
            thread: Some(thread),
        }
    }

    pub fn add(&self, path: &str, route: Route) -> String {
        self.routes.lock().unwrap().insert(path.to_owned(), route);
        self.url(path)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many requests `path` received.
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

fn serve_one(
    conn: TcpStream,
    routes: &Mutex<HashMap<String, Route>>,
    hits: &Mutex<HashMap<String, usize>>,
) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("/")
        .to_owned();
    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
    let route = routes.lock().unwrap().get(&path).cloned();
    let mut conn = conn;
    let _ = match route {
        Some(Route::Body(body)) => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            conn.write_all(&body)
        }
        Some(Route::Truncated { body, declared }) => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
            );
            conn.write_all(&body)
        }
        Some(Route::Slow { body, pause }) => {
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let mut result = Ok(());
            for piece in body.chunks(1024) {
                result = conn.write_all(piece).and_then(|()| conn.flush());
                if result.is_err() {
                    break;
                }
                std::thread::sleep(pause);
            }
            result
        }
        None => conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot found",
        ),
    };
    let _ = conn.flush();
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn bundler() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ilha-bundler"))
}

/// A work dir with `keys/` (generated), `out/` (bundle output) and room for manifests.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    pub fn new() -> Workspace {
        let ws = Workspace {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = bundler()
            .args(["keygen", "--out"])
            .arg(ws.keys())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keygen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ws
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn keys(&self) -> PathBuf {
        self.path().join("keys")
    }
    pub fn key(&self) -> PathBuf {
        self.keys().join("ilha.key")
    }
    pub fn public_key(&self) -> PathBuf {
        self.keys().join("ilha.pub")
    }
    pub fn out_dir(&self) -> PathBuf {
        self.path().join("out")
    }
    pub fn bundle(&self) -> PathBuf {
        self.out_dir().join("b.tar.zst")
    }

    pub fn write_manifest(&self, text: &str) -> PathBuf {
        let path = self.path().join("manifest.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs `build` on the manifest into `out/b.tar.zst` with extra args.
    pub fn build(&self, manifest: &Path, extra: &[&str]) -> Output {
        bundler()
            .arg("build")
            .arg(manifest)
            .arg("--key")
            .arg(self.key())
            .arg("--out")
            .arg(self.bundle())
            .args(extra)
            .output()
            .unwrap()
    }

    /// A failed build must leave no bundle, partial file or staging dir.
    pub fn assert_out_clean(&self) {
        let out = self.out_dir();
        if !out.exists() {
            return;
        }
        let left: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            left.is_empty(),
            "left behind in {}: {left:?}",
            out.display()
        );
    }
}

/// Asserts a failed run and returns its stderr.
pub fn expect_failure(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        !output.status.success(),
        "expected failure; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
}

pub fn expect_success(output: &Output) {
    assert!(
        output.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
}

pub fn run_tool(cmd: &mut Command) -> String {
    let name = cmd.get_program().to_string_lossy().into_owned();
    require_tool(&name);
    let out = cmd.output().unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(
        out.status.success(),
        "{name} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
