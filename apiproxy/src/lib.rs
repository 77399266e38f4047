//! `ilha-apiproxy`: the node-local API endpoint of ilha workers.
//!
//! Every kubelet and kube-proxy talks to `https://127.0.0.1:6443`. On a worker that is this
//! plain TCP proxy, which spreads connections over every control-plane host (Kubespray's
//! nginx-proxy design, without shipping nginx). TLS passes through untouched.
//!
//! Health is each apiserver's own verdict: `GET /readyz` over HTTPS (verified against the
//! cluster CA), every probe interval, per backend. Only an HTTP 200 within the probe timeout
//! counts; a master that accepts TCP but never answers is unhealthy. New connections go to the
//! healthy backend with the fewest connections; when a backend turns unhealthy while another is
//! healthy, its proxied connections are closed so their clients reconnect to a healthy one. With
//! no healthy backend at all (an etcd outage makes every `/readyz` fail) every backend is tried
//! and nothing is closed: a degraded API beats none.
//!
//! Kept small on purpose (no HTTP, CLI or logging framework): the installer embeds a static
//! build of this crate and uploads it to every worker, whatever its C library.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

pub mod args;
pub mod log;

pub use args::Config;

/// Timings and limits of [`serve`]; the defaults are those of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Limit on one connect attempt to a backend for a client's connection.
    pub connect_timeout: Duration,
    /// Pause between the end of one `/readyz` probe of a backend and the start of the next.
    pub probe_interval: Duration,
    /// Limit on one whole probe: connect, TLS handshake, request and status line.
    pub probe_timeout: Duration,
    /// Consecutive failed probes that take a healthy backend out (one success brings it back).
    pub fall: u32,
    /// Client connections proxied at once; more are accepted and closed at once.
    pub max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
            fall: 2,
            max_connections: 1024,
        }
    }
}

/// TCP keepalive on both sides: a peer that vanished (a powered-off master, a dead kubelet) is
/// noticed in about a minute instead of the kernel's two hours, freeing its descriptor.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_PROBES: u32 = 3;
/// Unacknowledged data on a backend connection for this long closes it (a hung master).
const USER_TIMEOUT: Duration = Duration::from_secs(60);

/// Enough for every kubelet/kube-proxy reconnecting at once after a master failover.
const LISTEN_BACKLOG: u32 = 1024;

/// Reads the cluster CA (PEM, one or more certificates) the probes verify apiservers against;
/// `-` reads it from stdin (the unit hands it over with `StandardInput=file:`, so the
/// unprivileged proxy needs no read access to `/etc/kubernetes/pki`).
pub fn load_ca(path: &str) -> Result<rustls::RootCertStore, String> {
    let pem = if path == "-" {
        let mut pem = Vec::new();
        io::Read::read_to_end(&mut io::stdin(), &mut pem)
            .map_err(|err| format!("cannot read the CA from stdin: {err}"))?;
        pem
    } else {
        std::fs::read(path).map_err(|err| format!("cannot read the CA {path}: {err}"))?
    };
    let name = if path == "-" { "stdin" } else { path };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|err| format!("the CA {name} is not valid PEM: {err}"))?;
        roots
            .add(cert)
            .map_err(|err| format!("the CA {name} holds a bad certificate: {err}"))?;
    }
    if roots.is_empty() {
        return Err(format!("the CA {name} holds no PEM certificate"));
    }
    Ok(roots)
}

/// The TLS client of the probes: the cluster CA only, ring as the one crypto provider.
pub fn probe_tls(roots: rustls::RootCertStore) -> Result<TlsConnector, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| format!("cannot set up TLS: {err}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Binds without listening yet; `EADDRINUSE` shows up here. `SO_REUSEADDR`, so a restarted
/// unit is not refused over connections left in TIME_WAIT.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Runs the proxy for `config` until SIGTERM or SIGINT: the whole program after argument
/// parsing. Errors are the ones worth exit status 1 (the CA, the listen address).
pub fn run(config: &Config) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))?;
    let tls = probe_tls(load_ca(&config.ca)?)?;
    runtime.block_on(async {
        let listener = bind(config.listen)
            .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
        // Handlers go in before anyone can see the port accept, so SIGTERM always means a clean exit.
        let shutdown = shutdown_signal()
            .map_err(|err| format!("cannot install the SIGTERM/SIGINT handlers: {err}"))?;
        log::info(format_args!(
            "API proxy listening on {}, backends {}, health GET /readyz every {}",
            config.listen,
            join(&config.backends),
            Secs(config.options.probe_interval)
        ));
        serve(
            listener,
            config.backends.clone(),
            tls,
            config.options,
            shutdown,
        )
        .await
        .map_err(|err| format!("API proxy on {} failed: {err}", config.listen))
    })
}

/// Proxies every connection accepted on `listener` to one of `backends` until `shutdown`
/// completes; then the listener is closed and the connections still open are dropped.
///
/// Fails only when `backends` is empty; accept and connection errors are logged and the proxy
/// keeps going, as a node without its API endpoint is worse off than one with a noisy journal.
pub async fn serve(
    listener: TcpListener,
    backends: Vec<SocketAddr>,
    tls: TlsConnector,
    opts: Options,
    shutdown: impl Future,
) -> io::Result<()> {
    if backends.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the API proxy needs at least one backend",
        ));
    }
    let pool = Arc::new(Pool::new(backends));
    // Dropping the sets when `serve` returns aborts the probes and the connections.
    let mut probes = JoinSet::new();
    for index in 0..pool.backends.len() {
        probes.spawn(probe_loop(Arc::clone(&pool), index, tls.clone(), opts));
    }
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let mut refused_since_log = 0u64;
    let mut last_refusal_log: Option<tokio::time::Instant> = None;
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                log::info(format_args!("shutting down: no longer accepting connections"));
                return Ok(());
            }
            // Reaps finished connections so the set does not grow with every client.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        // Over the cap: close at once (the client retries) and log at most
                        // every 10 s, so a flood cannot flood the journal too.
                        drop(client);
                        refused_since_log += 1;
                        let now = tokio::time::Instant::now();
                        if last_refusal_log.is_none_or(|at| now - at >= Duration::from_secs(10)) {
                            log::warn(format_args!(
                                "connection cap of {} reached: closed {refused_since_log} new \
                                 connection(s), the latest from {peer}",
                                opts.max_connections
                            ));
                            refused_since_log = 0;
                            last_refusal_log = Some(now);
                        }
                        continue;
                    };
                    let pool = Arc::clone(&pool);
                    connections.spawn(async move {
                        proxy_connection(client, peer, &pool, opts).await;
                        drop(slot);
                    });
                }
                Err(err) => {
                    // EMFILE and the like: spinning would only burn CPU; a short pause lets
                    // connections finish and free descriptors.
                    log::warn(format_args!("accepting a connection failed: {err}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// The backends and what the proxy currently believes of each.
struct Pool {
    backends: Vec<Backend>,
    /// Tie-break among equally loaded backends, advanced once per client connection.
    next: AtomicUsize,
    /// Bumped on every change of any backend's health; connections watch it to leave a
    /// backend that went bad.
    generation: watch::Sender<u64>,
    /// Woken when a backend's health or first probe changes; connections that arrive before the
    /// first probes end wait on it.
    changed: Notify,
}

struct Backend {
    addr: SocketAddr,
    /// Starts `false`: nothing gets a client before its `/readyz` said 200.
    healthy: AtomicBool,
    /// The first probe has finished (either way).
    probed: AtomicBool,
    /// Client connections currently proxied to this backend.
    active: AtomicUsize,
}

impl Pool {
    fn new(addrs: Vec<SocketAddr>) -> Self {
        Self {
            backends: addrs
                .into_iter()
                .map(|addr| Backend {
                    addr,
                    healthy: AtomicBool::new(false),
                    probed: AtomicBool::new(false),
                    active: AtomicUsize::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            generation: watch::Sender::new(0),
            changed: Notify::new(),
        }
    }

    fn any_healthy(&self) -> bool {
        self.backends.iter().any(Backend::is_healthy)
    }

    fn set_health(&self, backend: &Backend, healthy: bool, reason: &dyn fmt::Display) {
        let first = !backend.probed.swap(true, Ordering::SeqCst);
        // Backends start unhealthy: the first verdict is logged whichever it is.
        if backend.healthy.swap(healthy, Ordering::SeqCst) != healthy || first {
            if healthy {
                log::info(format_args!("backend {} ready", backend.addr));
            } else {
                let open = backend.active.load(Ordering::SeqCst);
                let others = self.any_healthy();
                let action = match (open, others) {
                    (0, _) => String::new(),
                    (n, true) => format!("; closing its {n} connection(s) so they move"),
                    (n, false) => format!("; keeping its {n} connection(s): no backend is ready"),
                };
                log::warn(format_args!(
                    "backend {} unhealthy: {reason}{action}",
                    backend.addr
                ));
            }
            self.generation.send_modify(|g| *g += 1);
        }
        self.changed.notify_waiters();
    }

    /// Waits (at most `limit`) until a backend is healthy or every backend has had its first
    /// probe, so that the clients of a proxy just started are not sent to a backend whose
    /// `/readyz` has not answered yet.
    async fn settle(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let all_probed = self
                .backends
                .iter()
                .all(|b| b.probed.load(Ordering::SeqCst));
            if self.any_healthy() || all_probed {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    /// The order one client connection tries the backends in: the healthy ones, fewest
    /// connections first (ties rotate); with none healthy, every backend in rotation.
    fn attempt_order<'a>(&'a self) -> (Vec<&'a Backend>, bool) {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let rotate = |group: Vec<&'a Backend>| -> Vec<&'a Backend> {
            let start = turn % group.len().max(1);
            group[start..]
                .iter()
                .chain(&group[..start])
                .copied()
                .collect()
        };
        let healthy: Vec<&Backend> = self.backends.iter().filter(|b| b.is_healthy()).collect();
        if healthy.is_empty() {
            return (rotate(self.backends.iter().collect()), false);
        }
        // Rotated first so that equally loaded backends take turns; the sort is stable.
        let mut healthy = rotate(healthy);
        healthy.sort_by_key(|b| b.active.load(Ordering::SeqCst));
        (healthy, true)
    }
}

impl Backend {
    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
}

/// Counts a connection on its backend for as long as it lives.
struct Active<'a>(&'a Backend);

impl<'a> Active<'a> {
    fn new(backend: &'a Backend) -> Self {
        backend.active.fetch_add(1, Ordering::SeqCst);
        Self(backend)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

fn keepalive(stream: &TcpStream) {
    let sock = socket2::SockRef::from(stream);
    let params = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    if let Err(err) = sock.set_tcp_keepalive(&params) {
        log::debug(format_args!("cannot set TCP keepalive: {err}"));
    }
    // API requests are small and latency-bound (watches, heartbeats): no Nagle delay.
    let _ = stream.set_nodelay(true);
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no TCP answer within {}", Secs(timeout)),
        )),
    }
}

async fn proxy_connection(mut client: TcpStream, peer: SocketAddr, pool: &Pool, opts: Options) {
    keepalive(&client);
    if !pool.any_healthy() {
        pool.settle(opts.probe_timeout).await;
    }
    let (order, healthy) = pool.attempt_order();
    if !healthy {
        log::warn(format_args!(
            "client {peer}: no backend is ready, trying every backend in turn"
        ));
    }
    let mut chosen = None;
    for backend in order {
        match connect(backend.addr, opts.connect_timeout).await {
            Ok(stream) => {
                chosen = Some((backend, stream));
                break;
            }
            Err(err) => {
                log::debug(format_args!(
                    "client {peer}: backend {} failed: {err}",
                    backend.addr
                ));
                // A refused or unanswered connect is as clear as a failed probe.
                pool.set_health(backend, false, &format_args!("connect failed: {err}"));
            }
        }
    }
    let Some((backend, mut upstream)) = chosen else {
        log::warn(format_args!(
            "client {peer}: no backend reachable, closing its connection"
        ));
        return;
    };
    keepalive(&upstream);
    let _ = socket2::SockRef::from(&upstream).set_tcp_user_timeout(Some(USER_TIMEOUT));
    let _active = Active::new(backend);
    log::debug(format_args!("client {peer} -> backend {}", backend.addr));
    let mut generations = pool.generation.subscribe();
    // Left when its backend is unhealthy while another one is healthy: the client reconnects
    // and lands on a healthy backend. Checked at once too, in case it turned while connecting.
    let must_move = |pool: &Pool| !backend.is_healthy() && pool.any_healthy();
    let moved = async {
        loop {
            if must_move(pool) {
                return;
            }
            if generations.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match result {
            Ok((up, down)) => log::debug(format_args!(
                "client {peer} <-> backend {} closed ({up} bytes up, {down} down)",
                backend.addr
            )),
            // Resets are routine (a kubelet restarting, a master going away mid-stream).
            Err(err) => log::debug(format_args!(
                "client {peer} <-> backend {} ended: {err}",
                backend.addr
            )),
        },
        () = moved => log::debug(format_args!(
            "client {peer}: closed, backend {} is unhealthy",
            backend.addr
        )),
    }
}

/// Probes one backend forever: `GET /readyz`, then `probe_interval`, then again.
async fn probe_loop(pool: Arc<Pool>, index: usize, tls: TlsConnector, opts: Options) {
    let backend = &pool.backends[index];
    let mut failures = 0u32;
    loop {
        match probe(backend.addr, &tls, opts.probe_timeout).await {
            Ok(()) => {
                failures = 0;
                pool.set_health(backend, true, &"ready");
            }
            Err(reason) => {
                failures = failures.saturating_add(1);
                // A backend never seen ready is out from its first failure; a ready one after
                // `fall` in a row, so one slow answer does not move all its clients.
                if !backend.is_healthy() || failures >= opts.fall {
                    pool.set_health(backend, false, &reason);
                } else {
                    log::debug(format_args!(
                        "backend {}: probe failed ({failures}/{}): {reason}",
                        backend.addr, opts.fall
                    ));
                }
            }
        }
        tokio::time::sleep(opts.probe_interval).await;
    }
}

/// One health probe: TLS to `addr` verified against the cluster CA (the apiserver certificate
/// names every master's address), `GET /readyz`, status line must say 200, all within `limit`.
pub async fn probe(addr: SocketAddr, tls: &TlsConnector, limit: Duration) -> Result<(), String> {
    let attempt = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|err| format!("connect failed: {err}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::IpAddress(addr.ip().into());
        let mut stream = tls
            .connect(name, tcp)
            .await
            .map_err(|err| format!("TLS failed: {err}"))?;
        let request = format!(
            "GET /readyz HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ilha-apiproxy\r\n\
             Accept: text/plain\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|err| format!("sending GET /readyz failed: {err}"))?;
        let status = read_status_line(&mut stream).await?;
        // close_notify, so the apiserver logs no broken connection.
        let _ = stream.shutdown().await;
        check_status(&status)
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer to GET /readyz within {}", Secs(limit))),
    }
}

async fn read_status_line(stream: &mut (impl AsyncReadExt + Unpin)) -> Result<String, String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 256];
    loop {
        let n = stream
            .read(&mut byte)
            .await
            .map_err(|err| format!("reading the answer to GET /readyz failed: {err}"))?;
        if n == 0 {
            return Err("the connection closed before an HTTP status line".into());
        }
        line.extend_from_slice(&byte[..n]);
        if let Some(end) = line.windows(2).position(|w| w == b"\r\n") {
            line.truncate(end);
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        if line.len() > 1024 {
            return Err("the answer to GET /readyz is not HTTP".into());
        }
    }
}

/// `HTTP/1.1 200 OK` passes; anything else names what came back.
pub fn check_status(line: &str) -> Result<(), String> {
    let mut parts = line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/") || code.len() != 3 {
        return Err(format!("GET /readyz got no HTTP answer: {line:.80}"));
    }
    if code == "200" {
        Ok(())
    } else {
        Err(format!(
            "GET /readyz answered {}",
            line[version.len()..].trim()
        ))
    }
}

/// Resolves on the first SIGTERM (systemd stop) or SIGINT (Ctrl-C).
fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        log::info(format_args!("received {name}"));
    })
}

/// A duration as the flags write it: `2s`, `500ms`.
pub struct Secs(pub Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_nanos() == 0 {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}ms", self.0.as_millis())
        }
    }
}

fn join(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 88, 0, 11], port))
    }

    fn ports(pool: &Pool) -> (Vec<u16>, bool) {
        let (order, healthy) = pool.attempt_order();
        (order.iter().map(|b| b.addr.port()).collect(), healthy)
    }

    fn set(pool: &Pool, port: u16, healthy: bool) {
        let backend = pool
            .backends
            .iter()
            .find(|b| b.addr.port() == port)
            .unwrap();
        pool.set_health(backend, healthy, &"test");
    }

    #[test]
    fn only_ready_backends_are_chosen_and_ties_rotate() {
        let pool = Pool::new(vec![addr(1), addr(2), addr(3)]);
        set(&pool, 1, true);
        set(&pool, 3, true);
        let firsts: Vec<u16> = (0..4).map(|_| ports(&pool).0[0]).collect();
        assert_eq!(firsts, [1, 3, 1, 3]);
        assert_eq!(ports(&pool), (vec![1, 3], true), "2 is never tried");
    }

    #[test]
    fn the_least_loaded_ready_backend_comes_first() {
        let pool = Pool::new(vec![addr(1), addr(2)]);
        set(&pool, 1, true);
        set(&pool, 2, true);
        let _a = Active::new(&pool.backends[0]);
        let _b = Active::new(&pool.backends[0]);
        for _ in 0..3 {
            assert_eq!(ports(&pool).0[0], 2);
        }
    }

    #[test]
    fn with_no_ready_backend_every_one_is_tried_in_rotation() {
        let pool = Pool::new(vec![addr(1), addr(2)]);
        assert_eq!(ports(&pool), (vec![1, 2], false));
        assert_eq!(ports(&pool), (vec![2, 1], false));
    }

    #[test]
    fn each_health_change_bumps_the_generation_once() {
        let pool = Pool::new(vec![addr(1)]);
        set(&pool, 1, true);
        set(&pool, 1, true);
        set(&pool, 1, false);
        set(&pool, 1, false);
        assert_eq!(*pool.generation.borrow(), 2);
    }

    #[test]
    fn only_http_200_is_ready() {
        assert_eq!(check_status("HTTP/1.1 200 OK"), Ok(()));
        assert_eq!(check_status("HTTP/1.0 200"), Ok(()));
        assert_eq!(
            check_status("HTTP/1.1 500 Internal Server Error"),
            Err("GET /readyz answered 500 Internal Server Error".into())
        );
        assert!(check_status("HTTP/1.1 401 Unauthorized").is_err());
        assert!(
            check_status("SSH-2.0-OpenSSH_9.2")
                .unwrap_err()
                .contains("no HTTP answer")
        );
        assert!(check_status("HTTP/1.1 2000 OK").is_err());
    }

    #[test]
    fn durations_print_as_the_flags_write_them() {
        assert_eq!(Secs(Duration::from_secs(2)).to_string(), "2s");
        assert_eq!(Secs(Duration::from_millis(250)).to_string(), "250ms");
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = load_ca(path.to_str().unwrap()).unwrap_err();
        assert!(
            err.contains("ca.crt") && err.contains("no PEM certificate"),
            "{err}"
        );
        let err = load_ca("/nonexistent/ca.crt").unwrap_err();
        assert!(
            err.starts_with("cannot read the CA /nonexistent/ca.crt"),
            "{err}"
        );
    }
}
