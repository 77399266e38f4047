//! `ilha apiproxy` on loopback: echo servers stand in for the kube-apiservers, every port is
//! ephemeral.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use ilha::apiproxy::{self, ApiProxyArgs, ProxyOptions};
use predicates::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Short timings so health changes show within a test; loopback connects take microseconds.
const OPTS: ProxyOptions = ProxyOptions {
    connect_timeout: Duration::from_millis(500),
    health_interval: Duration::from_millis(100),
};

/// An echo server standing in for one kube-apiserver. It counts the connections that carried
/// data, which leaves out the proxy's health probes (they connect and close).
struct EchoBackend {
    addr: SocketAddr,
    served: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

impl EchoBackend {
    async fn start() -> Self {
        Self::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap())
    }

    fn start_on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&served);
        let accept_loop = tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let counter = Arc::clone(&counter);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut counted = false;
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if !counted {
                                    counter.fetch_add(1, Ordering::SeqCst);
                                    counted = true;
                                }
                                if conn.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            served,
            accept_loop,
        }
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Closes the listening socket: new connections are refused from now on.
    async fn kill(self) -> SocketAddr {
        self.accept_loop.abort();
        let _ = self.accept_loop.await;
        self.addr
    }
}

/// A loopback address nothing listens on (bound once to get a free port, then released).
async fn dead_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

struct Proxy {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Proxy {
    async fn start(backends: Vec<SocketAddr>, opts: ProxyOptions) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(apiproxy::serve(listener, backends, opts, stopped));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        let result = tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("serve returns promptly after shutdown")
            .unwrap();
        result.unwrap();
    }
}

/// One client connection through the proxy: sends a unique message and expects it echoed.
/// Writes and reads at once, as a large message would otherwise fill every buffer on the way.
async fn round_trip(proxy: SocketAddr, message: &str) {
    let mut conn = TcpStream::connect(proxy).await.unwrap();
    let (mut from_proxy, mut to_proxy) = conn.split();
    let mut echoed = vec![0u8; message.len()];
    let exchange = async {
        tokio::try_join!(
            to_proxy.write_all(message.as_bytes()),
            from_proxy.read_exact(&mut echoed)
        )
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .unwrap_or_else(|_| panic!("no echo for {:.40?}", message))
        .unwrap_or_else(|err| panic!("connection for {:.40?} failed: {err}", message));
    assert!(
        echoed == message.as_bytes(),
        "echo differs for {:.40?}",
        message
    );
}

#[tokio::test]
async fn bytes_round_trip_and_connections_spread_over_every_backend() {
    let backends = [
        EchoBackend::start().await,
        EchoBackend::start().await,
        EchoBackend::start().await,
    ];
    let proxy = Proxy::start(backends.iter().map(|b| b.addr).collect(), OPTS).await;

    // A payload larger than one read, to see the copy is complete in both directions.
    let big = "0123456789abcdef".repeat(16 * 1024);
    round_trip(proxy.addr, &big).await;
    for i in 0..8 {
        round_trip(proxy.addr, &format!("GET /api/v1/nodes/{i}")).await;
    }

    let counts: Vec<usize> = backends.iter().map(EchoBackend::served).collect();
    assert_eq!(counts.iter().sum::<usize>(), 9, "{counts:?}");
    // Round-robin over three healthy backends: 9 connections land 3 on each.
    assert_eq!(counts, [3, 3, 3]);
    proxy.shutdown().await;
}

#[tokio::test]
async fn every_connection_succeeds_with_a_backend_dead_from_the_start_and_one_killed_midway() {
    let dead = dead_address().await;
    let first = EchoBackend::start().await;
    let second = EchoBackend::start().await;
    let proxy = Proxy::start(vec![dead, first.addr, second.addr], OPTS).await;

    // Sent at once, before any health round could have noticed the dead one: the proxy has to
    // fail over within each connection.
    for i in 0..6 {
        round_trip(proxy.addr, &format!("before {i}")).await;
    }
    assert_eq!(first.served() + second.served(), 6);
    assert!(first.served() > 0 && second.served() > 0);

    let served_by_first = first.served();
    first.kill().await;
    for i in 0..6 {
        round_trip(proxy.addr, &format!("after {i}")).await;
    }
    assert_eq!(second.served() + served_by_first, 12);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_is_closed_promptly_when_every_backend_is_dead() {
    let backends = vec![dead_address().await, dead_address().await];
    let proxy = Proxy::start(backends, OPTS).await;
    // Twice: once while the backends are still presumed healthy, once after a health round.
    for attempt in 0..2 {
        let started = Instant::now();
        let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
        let _ = conn.write_all(b"GET /healthz").await;
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut buf))
            .await
            .expect("the proxy closes the connection instead of holding it");
        // EOF or a reset are both a closed connection; data would mean a phantom backend.
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "attempt {attempt}: {read:?}"
        );
        let elapsed = started.elapsed();
        // Bound from the brief: well under connect timeout x backends + 1s (= 2 s here).
        assert!(
            elapsed < Duration::from_millis(500),
            "attempt {attempt}: closed after {elapsed:?}"
        );
        tokio::time::sleep(OPTS.health_interval * 2).await;
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_backend_that_comes_back_is_used_again_after_a_health_interval() {
    let alive = EchoBackend::start().await;
    let returning = EchoBackend::start().await;
    let proxy = Proxy::start(vec![alive.addr, returning.addr], OPTS).await;

    let returning_addr = returning.kill().await;
    tokio::time::sleep(OPTS.health_interval * 3).await;
    for i in 0..4 {
        round_trip(proxy.addr, &format!("while down {i}")).await;
    }
    assert_eq!(alive.served(), 4, "a backend known down is not tried first");

    let returning = EchoBackend::start_on(TcpListener::bind(returning_addr).await.unwrap());
    tokio::time::sleep(OPTS.health_interval * 3).await;
    for i in 0..4 {
        round_trip(proxy.addr, &format!("back up {i}")).await;
    }
    assert_eq!(returning.served(), 2, "round-robin includes it again");
    assert_eq!(alive.served(), 6);
    proxy.shutdown().await;
}

/// A backend that accepts TCP handshakes on nothing: its accept queue is full, so the kernel
/// drops further SYNs and a connect hangs (a firewalled or powered-off master).
async fn black_hole() -> (
    SocketAddr,
    Vec<std::net::TcpStream>,
    tokio::net::TcpListener,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    // Fill the queue until a connect no longer completes.
    while fillers.len() < 16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(conn) => fillers.push(conn),
            Err(_) => return (addr, fillers, listener),
        }
    }
    panic!("the accept queue of {addr} never filled up");
}

#[tokio::test]
async fn a_hanging_backend_costs_one_connect_timeout_then_the_next_is_used() {
    let (hanging, _fillers, _listener) = black_hole().await;
    let alive = EchoBackend::start().await;
    let opts = ProxyOptions {
        connect_timeout: Duration::from_millis(300),
        // Long, so no health round marks the hanging one down before the client arrives.
        health_interval: Duration::from_secs(60),
    };
    let proxy = Proxy::start(vec![hanging, alive.addr], opts).await;
    // The first health round is still probing `hanging`; the client's attempt goes to it first.
    let started = Instant::now();
    round_trip(proxy.addr, "through the timeout").await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(1),
        "failed over after {elapsed:?}"
    );
    // Marked down: the next connection goes straight to the live one.
    let started = Instant::now();
    round_trip(proxy.addr, "straight through").await;
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(alive.served(), 2);
    proxy.shutdown().await;
}

#[test]
fn run_names_the_address_already_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let args = ApiProxyArgs {
        listen,
        backends: vec!["127.0.0.1:6443".parse().unwrap()],
        connect_timeout: Duration::from_secs(1),
        health_interval: Duration::from_secs(2),
    };
    let err = apiproxy::run(&args).unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!("cannot listen on {listen}")),
        "{message}"
    );
    assert!(message.to_lowercase().contains("in use"), "{message}");
}

fn ilha() -> Command {
    Command::cargo_bin("ilha").unwrap()
}

#[test]
fn help_lists_the_flags() {
    ilha()
        .args(["apiproxy", "--help"])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("--listen")
                .and(predicate::str::contains("--backend"))
                .and(predicate::str::contains("--connect-timeout"))
                .and(predicate::str::contains("[default: 1s]"))
                .and(predicate::str::contains("--health-interval"))
                .and(predicate::str::contains("[default: 2s]")),
        );
}

#[test]
fn the_binary_refuses_a_missing_backend_and_a_bad_duration() {
    ilha()
        .args(["apiproxy", "--listen", "127.0.0.1:6443"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--backend"));
    ilha()
        .args(["apiproxy", "--listen", "127.0.0.1:6443"])
        .args(["--backend", "10.88.0.11:6443", "--connect-timeout", "1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no unit"));
}

#[test]
fn the_binary_fails_with_the_address_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    ilha()
        .args(["apiproxy", "--listen", &listen, "--backend", "127.0.0.1:1"])
        .timeout(Duration::from_secs(10))
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "cannot listen on {listen}"
        )));
}

/// A blocking echo server on its own thread, for the test that drives the real binary.
fn blocking_echo_backend() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
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

/// Kills the child if the test fails before it exits, so no proxy outlives the test run.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_binary_proxies_and_exits_zero_on_sigterm() {
    let backend = blocking_echo_backend();
    let listen = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap()
    };
    let child = std::process::Command::new(assert_cmd::cargo::cargo_bin("ilha"))
        .args(["apiproxy", "--listen", &listen.to_string()])
        .args(["--backend", &backend.to_string()])
        .args(["--connect-timeout", "500ms", "--health-interval", "200ms"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);

    // The port opens once the proxy is up (its signal handlers are installed before that).
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut conn = loop {
        match std::net::TcpStream::connect(listen) {
            Ok(conn) => break conn,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(err) => panic!("ilha apiproxy never listened on {listen}: {err}"),
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(b"hello through the binary").unwrap();
    let mut echoed = [0u8; 24];
    conn.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"hello through the binary");

    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let exit = loop {
        if let Some(exit) = child.0.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "still running 5 s after SIGTERM");
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
    // Logged at info, the daemon's default level (what the journal keeps).
    assert!(
        stderr.contains(&format!("listening on {listen}")),
        "{stderr}"
    );
    assert!(stderr.contains("received SIGTERM"), "{stderr}");
}

/// Backends believed up are probed once, at start, and then left alone: every probe is a TLS
/// handshake cut short in a kube-apiserver's log.
#[tokio::test]
async fn healthy_backends_are_not_probed_after_the_first_round() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let acceptor = tokio::spawn(async move {
        loop {
            let (conn, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    let proxy = Proxy::start(vec![backend], OPTS).await;
    // Ten health intervals with no client at all.
    tokio::time::sleep(OPTS.health_interval * 10).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "only the start-up probe"
    );
    proxy.shutdown().await;
    acceptor.abort();
}
