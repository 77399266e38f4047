//! `ilha apiproxy`: the node-local API endpoint of worker nodes.
//!
//! Every kubelet and kube-proxy in an ilha cluster talks to `https://127.0.0.1:6443`. On
//! control-plane hosts that is the local kube-apiserver; on workers it is this plain TCP proxy,
//! which spreads connections over every control-plane host so that losing any one of them
//! leaves every node connected (Kubespray's nginx-proxy design, without shipping nginx). TLS
//! passes through untouched: the apiserver certificate already names 127.0.0.1.
//!
//! Backend choice: round-robin among the backends currently believed healthy; a failed
//! connect marks that backend down and the next one is tried at once, then the ones believed
//! down as a last resort, so a client only sees its connection closed when every backend failed.
//! A background check TCP-connects every backend at start, then the ones marked down each
//! interval to bring them back.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Arguments of `ilha apiproxy`.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiProxyArgs {
    /// Address to accept clients on, normally the node-local API endpoint 127.0.0.1:6443.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// A kube-apiserver to forward to; repeat once per control-plane host.
    #[arg(long = "backend", value_name = "ADDR:PORT", required = true)]
    pub backends: Vec<SocketAddr>,
    /// How long one connect attempt to a backend may take before the next backend is tried
    /// (e.g. 500ms, 1s).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// How often every backend is probed with a TCP connect to update its up/down state.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub health_interval: Duration,
}

/// Timings of [`serve`]; the defaults are those of the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Limit on one connect attempt, by clients' connections and health checks alike.
    pub connect_timeout: Duration,
    /// Time between two rounds of health checks.
    pub health_interval: Duration,
}

impl Default for ProxyOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            health_interval: Duration::from_secs(2),
        }
    }
}

impl From<&ApiProxyArgs> for ProxyOptions {
    fn from(args: &ApiProxyArgs) -> Self {
        Self {
            connect_timeout: args.connect_timeout,
            health_interval: args.health_interval,
        }
    }
}

/// Runs the proxy until SIGTERM or SIGINT, then returns `Ok(())`: the entry point of
/// `ilha apiproxy`, meant to run as a systemd unit (logs go to stderr, hence the journal).
pub fn run(args: &ApiProxyArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let socket =
            bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
        // Handlers go in before the port starts accepting, so that anyone who has seen it
        // accept (systemd, a test) can rely on SIGTERM meaning a clean exit.
        let shutdown = shutdown_signal().context("cannot install the SIGTERM/SIGINT handlers")?;
        let listener = socket
            .listen(LISTEN_BACKLOG)
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        info!(
            "API proxy listening on {}, backends {}",
            args.listen,
            join_addresses(&args.backends)
        );
        serve(listener, args.backends.clone(), args.into(), shutdown)
            .await
            .with_context(|| format!("API proxy on {} failed", args.listen))
    })
}

/// Enough for every kubelet/kube-proxy reconnecting at once after a master failover.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds without listening yet; `EADDRINUSE` shows up here. `SO_REUSEADDR` as in
/// `TcpListener::bind`, so a restarted unit is not refused over connections in TIME_WAIT.
fn bind(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    Ok(socket)
}

/// Proxies every connection accepted on `listener` to one of `backends` until `shutdown`
/// completes. On return the listener is closed and connections still open are dropped.
///
/// Fails only when `backends` is empty; per-connection and accept errors are logged and the
/// proxy keeps going, as a node without its API endpoint is worse than a noisy journal.
pub async fn serve(
    listener: TcpListener,
    backends: Vec<SocketAddr>,
    opts: ProxyOptions,
    shutdown: impl Future,
) -> io::Result<()> {
    if backends.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the API proxy needs at least one backend",
        ));
    }
    let pool = Arc::new(Pool::new(backends));
    // Dropping the set when `serve` returns aborts the connections it still carries.
    let mut connections = JoinSet::new();
    let health = health_loop(&pool, opts);
    tokio::pin!(health);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                info!("shutting down: no longer accepting connections");
                return Ok(());
            }
            () = &mut health => unreachable!("the health loop never ends"),
            // Reaps finished connections so the set does not grow with every client.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((client, peer)) => {
                    connections.spawn(proxy_connection(client, peer, Arc::clone(&pool), opts));
                }
                Err(err) => {
                    // EMFILE and the like: spinning on them would only burn CPU; a short pause
                    // lets connections finish and free descriptors.
                    warn!("accepting a connection failed: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Parses `500ms`, `1s`, `1.5s` or `2m`; zero is refused as it would make every connect fail.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let unit_start = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. 500ms, 1s or 2m"))?;
    let (number, unit) = text.split_at(unit_start);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 500ms, 1s or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("unknown unit `{unit}` in `{text}`: use ms, s or m")),
    };
    let duration =
        Duration::try_from_secs_f64(seconds).map_err(|_| format!("`{text}` is out of range"))?;
    if duration.is_zero() {
        return Err(format!("`{text}` must be more than zero"));
    }
    Ok(duration)
}

/// The backends and what the proxy currently believes of each.
struct Pool {
    backends: Vec<Backend>,
    /// Round-robin position, advanced once per client connection.
    next: AtomicUsize,
}

struct Backend {
    addr: SocketAddr,
    /// Starts `true`: the first health round runs at once and corrects it, and until then
    /// trying a backend costs at most one connect timeout.
    healthy: AtomicBool,
}

impl Backend {
    fn mark_down(&self, reason: &io::Error) {
        if self.healthy.swap(false, Ordering::Relaxed) {
            warn!("backend {} down: {}", self.addr, describe(reason));
        }
    }

    fn mark_up(&self) {
        if !self.healthy.swap(true, Ordering::Relaxed) {
            info!("backend {} up again", self.addr);
        }
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

impl Pool {
    fn new(addrs: Vec<SocketAddr>) -> Self {
        Self {
            backends: addrs
                .into_iter()
                .map(|addr| Backend {
                    addr,
                    healthy: AtomicBool::new(true),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// The order one client connection tries the backends in: the healthy ones starting at the
    /// round-robin position, then those believed down (also rotated, so that when all are down
    /// the first attempt still spreads).
    fn attempt_order(&self) -> Vec<&Backend> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let (healthy, down): (Vec<&Backend>, Vec<&Backend>) =
            self.backends.iter().partition(|b| b.is_healthy());
        let mut order = Vec::with_capacity(self.backends.len());
        for group in [healthy, down] {
            if group.is_empty() {
                continue;
            }
            let start = turn % group.len();
            order.extend(group[start..].iter().chain(&group[..start]));
        }
        order
    }
}

async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {}", format_duration(timeout)),
        )),
    }
}

async fn proxy_connection(
    mut client: TcpStream,
    peer: SocketAddr,
    pool: Arc<Pool>,
    opts: ProxyOptions,
) {
    let mut upstream = None;
    for backend in pool.attempt_order() {
        match connect(backend.addr, opts.connect_timeout).await {
            Ok(stream) => {
                backend.mark_up();
                upstream = Some((backend.addr, stream));
                break;
            }
            Err(err) => {
                debug!(
                    "client {peer}: backend {} failed: {}",
                    backend.addr,
                    describe(&err)
                );
                backend.mark_down(&err);
            }
        }
    }
    let Some((backend, mut upstream)) = upstream else {
        warn!("client {peer}: no backend reachable, closing its connection");
        return;
    };
    // API requests are small and latency-bound (watches, heartbeats): no Nagle delay.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    debug!("client {peer} -> backend {backend}");
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => {
            debug!("client {peer} <-> backend {backend} closed ({sent} bytes up, {received} down)")
        }
        // Resets are routine (a kubelet restarting, a master going away mid-stream).
        Err(err) => debug!("client {peer} <-> backend {backend} ended: {err}"),
    }
}

/// Probes every backend once at start, then, each `health_interval`, the ones marked down, in
/// parallel, forever. Backends believed up are not probed: every probe is a TLS handshake cut
/// short, which kube-apiserver logs as an error, and a client's failed connect already takes a
/// dead backend out (costing that one client a connect timeout).
async fn health_loop(pool: &Pool, opts: ProxyOptions) {
    let mut ticks = tokio::time::interval(opts.health_interval);
    // A slow round (connect timeouts longer than the interval) must not trigger a burst after.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first_round = true;
    loop {
        ticks.tick().await;
        let all = std::mem::replace(&mut first_round, false);
        let due = pool
            .backends
            .iter()
            .filter(move |backend| all || !backend.is_healthy());
        let probes = due.map(|backend| async move {
            match connect(backend.addr, opts.connect_timeout).await {
                Ok(_probe) => backend.mark_up(),
                Err(err) => backend.mark_down(&err),
            }
        });
        futures_util::future::join_all(probes).await;
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
        info!("received {name}");
    })
}

/// `connection refused` rather than `Connection refused (os error 111)` for the usual network
/// failures, so the journal line reads as the brief state change it is.
fn describe(err: &io::Error) -> String {
    use io::ErrorKind::*;
    match err.kind() {
        ConnectionRefused | ConnectionReset | ConnectionAborted | HostUnreachable
        | NetworkUnreachable | AddrNotAvailable
            if err.raw_os_error().is_some() =>
        {
            err.kind().to_string()
        }
        _ => err.to_string(),
    }
}

fn format_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

fn join_addresses(addrs: &[SocketAddr]) -> String {
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

    fn order_ports(pool: &Pool) -> Vec<u16> {
        pool.attempt_order().iter().map(|b| b.addr.port()).collect()
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn durations_without_unit_zero_or_garbage_are_refused() {
        for bad in ["1", "0s", "0ms", "s", "1h", "1..2s", "-1s", ""] {
            let err = parse_duration(bad).expect_err(bad);
            assert!(err.contains(bad), "{bad:?}: {err}");
        }
    }

    #[test]
    fn round_robin_rotates_over_all_healthy_backends() {
        let pool = Pool::new(vec![addr(1), addr(2), addr(3)]);
        assert_eq!(order_ports(&pool), [1, 2, 3]);
        assert_eq!(order_ports(&pool), [2, 3, 1]);
        assert_eq!(order_ports(&pool), [3, 1, 2]);
        assert_eq!(order_ports(&pool), [1, 2, 3]);
    }

    #[test]
    fn down_backends_come_last_and_healthy_ones_share_the_load_evenly() {
        let pool = Pool::new(vec![addr(1), addr(2), addr(3)]);
        pool.backends[1].mark_down(&io::ErrorKind::ConnectionRefused.into());
        let firsts: Vec<u16> = (0..4).map(|_| order_ports(&pool)[0]).collect();
        // Not 1, 3, 3, 1 as skipping over the dead one in the full ring would give.
        assert_eq!(firsts, [1, 3, 1, 3]);
        for _ in 0..3 {
            assert_eq!(
                order_ports(&pool)[2],
                2,
                "the down backend is the last resort"
            );
        }
    }

    #[test]
    fn with_every_backend_down_all_are_still_tried_in_rotation() {
        let pool = Pool::new(vec![addr(1), addr(2)]);
        for backend in &pool.backends {
            backend.mark_down(&io::ErrorKind::TimedOut.into());
        }
        assert_eq!(order_ports(&pool), [1, 2]);
        assert_eq!(order_ports(&pool), [2, 1]);
    }

    /// Collects what a tracing subscriber writes, to check the journal lines themselves.
    #[derive(Clone, Default)]
    struct CapturedLog(Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for CapturedLog {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_state_change_is_logged_once() {
        let log = CapturedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let pool = Pool::new(vec![addr(6443)]);
        let backend = &pool.backends[0];
        tracing::subscriber::with_default(subscriber, || {
            backend.mark_up();
            backend.mark_down(&io::Error::from_raw_os_error(111));
            backend.mark_down(&io::Error::from_raw_os_error(111));
            assert!(!backend.is_healthy());
            backend.mark_up();
            backend.mark_up();
            assert!(backend.is_healthy());
        });
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].contains("WARN"), "{text}");
        assert!(
            lines[0].ends_with("backend 10.88.0.11:6443 down: connection refused"),
            "{text}"
        );
        assert!(lines[1].contains("INFO"), "{text}");
        assert!(
            lines[1].ends_with("backend 10.88.0.11:6443 up again"),
            "{text}"
        );
    }

    #[test]
    fn os_network_errors_read_as_short_phrases() {
        let refused = io::Error::from_raw_os_error(111); // ECONNREFUSED on Linux
        assert_eq!(describe(&refused), "connection refused");
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "no answer within 1s");
        assert_eq!(describe(&timeout), "no answer within 1s");
    }

    #[test]
    fn durations_format_for_messages() {
        assert_eq!(format_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
    }

    #[tokio::test]
    async fn serve_refuses_an_empty_backend_list() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let err = serve(listener, vec![], ProxyOptions::default(), async {})
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
