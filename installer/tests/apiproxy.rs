//! The `ilha-apiproxy` executable that `ilha up` uploads to workers (`ilha::apiproxy::BINARY`,
//! embedded by build.rs): static, so it runs on workers with an older C library than this
//! machine's, small, and a working proxy. Its behaviour is tested in `apiproxy/tests/`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The embedded binary, written out as the upload step writes it on a worker.
fn written_out(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("ilha-apiproxy");
    std::fs::write(&path, ilha::apiproxy::BINARY).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn readelf(flag: &str, path: &Path) -> String {
    let output = Command::new("readelf")
        .args(["-W", flag])
        .arg(path)
        .output()
        .expect("readelf runs (binutils)");
    assert!(output.status.success(), "readelf {flag}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_uploaded_proxy_is_a_small_static_executable_needing_no_glibc_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_out(dir.path());
    let header = readelf("-h", &path);
    assert!(
        header.contains("ELF64") && header.contains("X86-64"),
        "{header}"
    );
    // No program interpreter (ld-linux) and no shared library: nothing of the host's libc is
    // loaded, so no GLIBC_2.x symbol version can be missing on an older distribution.
    let segments = readelf("-l", &path);
    assert!(
        !segments.contains("INTERP"),
        "dynamically linked:\n{segments}"
    );
    let dynamic = readelf("-d", &path);
    assert!(
        !dynamic.contains("(NEEDED)"),
        "needs shared libraries:\n{dynamic}"
    );
    let versions = readelf("-V", &path);
    assert!(
        !versions.contains("GLIBC_"),
        "needs glibc symbol versions:\n{versions}"
    );
    // Against the 122 MB `ilha` it replaces on workers; the figure is in docs/apiproxy.md.
    let size = ilha::apiproxy::BINARY.len();
    assert!(size < 4 << 20, "ilha-apiproxy is {size} bytes");
    // Stripped: no symbol table to carry to every worker.
    assert!(!readelf("-S", &path).contains(".symtab"));
}

#[test]
fn the_upload_digest_is_the_binarys() {
    use sha2::{Digest, Sha256};
    assert_eq!(
        ilha::apiproxy::sha256(),
        hex::encode(Sha256::digest(ilha::apiproxy::BINARY))
    );
}

/// Kills the child if the test fails before it exits, so no proxy outlives the test run.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A blocking echo server: it never speaks TLS, so the proxy's `/readyz` probes fail and it is
/// used through the no-ready-backend fallback.
fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn the_uploaded_proxy_runs_here_proxies_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = written_out(dir.path());
    let ca = dir.path().join("ca.crt");
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    std::fs::write(&ca, params.self_signed(&key).unwrap().pem()).unwrap();

    let backend = echo_backend();
    let listen = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // The CA on stdin, as the unit hands it over (`--ca=-`, `StandardInput=file:`).
    let mut child = ChildGuard(
        Command::new(&path)
            .arg(format!("--listen={listen}"))
            .arg(format!("--backend={backend}"))
            .args(["--ca=-", "--probe-timeout=300ms", "--probe-interval=200ms"])
            .stdin(std::fs::File::open(&ca).unwrap())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match TcpStream::connect(listen) {
            Ok(conn) => break conn,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Err(err) => panic!("the proxy never listened on {listen}: {err}"),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"hello through the static binary").unwrap();
    let mut echoed = [0u8; 31];
    conn.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hello through the static binary");

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "exit status {exit:?}");
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(
        stderr.contains(&format!("listening on {listen}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("backend {backend} unhealthy: TLS failed")),
        "{stderr}"
    );
    assert!(
        stderr.contains("no backend is ready, trying every backend"),
        "{stderr}"
    );
    assert!(stderr.contains("received SIGTERM"), "{stderr}");
}
