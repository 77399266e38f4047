//! `ilha-apiproxy` on loopback. Fake apiservers answer the proxy's `GET /readyz` over TLS
//! (a certificate from a test CA naming 127.0.0.1) and echo the plain-text traffic of the test
//! clients; each can be switched to "not ready" (HTTP 500) or "hung" (accepts TCP, never
//! answers anything: a process listening in the apiserver's place, or a wedged apiserver).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ilha_apiproxy::{Options, probe, probe_tls, serve};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Short timings so health changes show within a test.
const OPTS: Options = Options {
    connect_timeout: Duration::from_millis(500),
    probe_interval: Duration::from_millis(100),
    probe_timeout: Duration::from_millis(300),
    fall: 2,
    max_connections: 64,
};

const READY: u8 = 0;
const NOT_READY: u8 = 1;
const HUNG: u8 = 2;

/// A test CA and a server certificate for 127.0.0.1 signed by it.
struct Pki {
    ca_pem: String,
    server: Arc<rustls::ServerConfig>,
}

impl Pki {
    fn new() -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
            )
            .unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            server: Arc::new(server),
        }
    }

    fn client(&self) -> TlsConnector {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, &self.ca_pem).unwrap();
        probe_tls(ilha_apiproxy::load_ca(path.to_str().unwrap()).unwrap()).unwrap()
    }
}

/// One fake kube-apiserver.
struct Apiserver {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    /// Client (non-TLS) connections that reached it, in any mode.
    clients: Arc<AtomicUsize>,
    /// Client connections currently open.
    open: Arc<AtomicUsize>,
    accept_loop: JoinHandle<()>,
}

impl Apiserver {
    async fn start(pki: &Pki, mode: u8) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(mode));
        let clients = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let acceptor = TlsAcceptor::from(Arc::clone(&pki.server));
        let (m, c, o) = (Arc::clone(&mode), Arc::clone(&clients), Arc::clone(&open));
        let accept_loop = tokio::spawn(async move {
            loop {
                let (conn, _) = listener.accept().await.unwrap();
                let (m, c, o, acceptor) = (m.clone(), c.clone(), o.clone(), acceptor.clone());
                tokio::spawn(handle(conn, acceptor, m, c, o));
            }
        });
        Self {
            addr,
            mode,
            clients,
            open,
            accept_loop,
        }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    fn clients(&self) -> usize {
        self.clients.load(Ordering::SeqCst)
    }

    fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Closes the listening socket: new connections are refused from now on.
    async fn kill(self) -> SocketAddr {
        self.accept_loop.abort();
        let _ = self.accept_loop.await;
        self.addr
    }
}

async fn handle(
    mut conn: TcpStream,
    acceptor: TlsAcceptor,
    mode: Arc<AtomicU8>,
    clients: Arc<AtomicUsize>,
    open: Arc<AtomicUsize>,
) {
    // Looking costs the hung server nothing visible: it still never answers.
    let mut first = [0u8; 1];
    if conn.peek(&mut first).await.unwrap_or(0) == 0 {
        return;
    }
    let tls = first[0] == 0x16;
    if !tls {
        clients.fetch_add(1, Ordering::SeqCst);
    }
    if mode.load(Ordering::SeqCst) == HUNG {
        // Holds the connection open without a byte back until the peer goes away.
        let _ = tokio::time::timeout(Duration::from_secs(30), async {
            let mut sink = [0u8; 1];
            while conn.peek(&mut sink).await.unwrap_or(0) > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        return;
    }
    if tls {
        let Ok(mut stream) = acceptor.accept(conn).await else {
            return;
        };
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        assert!(request.starts_with(b"GET /readyz HTTP/1.1\r\n"));
        let answer = match mode.load(Ordering::SeqCst) {
            READY => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            _ => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 6\r\n\r\nfailed",
        };
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        return;
    }
    open.fetch_add(1, Ordering::SeqCst);
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if conn.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    open.fetch_sub(1, Ordering::SeqCst);
}

struct Proxy {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Proxy {
    async fn start(pki: &Pki, backends: Vec<SocketAddr>, opts: Options) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, backends, pki.client(), opts, stopped));
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("serve returns promptly after shutdown")
            .unwrap()
            .unwrap();
    }
}

/// A client connection through the proxy that stays open, as a kubelet's watch does.
struct Client(TcpStream);

impl Client {
    async fn connect(proxy: SocketAddr) -> Self {
        Self(TcpStream::connect(proxy).await.unwrap())
    }

    /// Sends `message` and expects it echoed.
    async fn echo(&mut self, message: &str) {
        let (mut from, mut to) = self.0.split();
        let mut echoed = vec![0u8; message.len()];
        let exchange = async {
            tokio::try_join!(
                to.write_all(message.as_bytes()),
                from.read_exact(&mut echoed)
            )
        };
        tokio::time::timeout(Duration::from_secs(3), exchange)
            .await
            .unwrap_or_else(|_| panic!("no echo for {message:.40?}"))
            .unwrap_or_else(|err| panic!("connection for {message:.40?} failed: {err}"));
        assert!(
            echoed == message.as_bytes(),
            "echo differs for {message:.40?}"
        );
    }

    /// True when the proxy closed the connection within `limit` (EOF or reset).
    async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut buf = [0u8; 16];
        matches!(
            tokio::time::timeout(limit, self.0.read(&mut buf)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

async fn round_trip(proxy: SocketAddr, message: &str) {
    Client::connect(proxy).await.echo(message).await;
}

/// Waits until `check` holds, polling; fails the test with `what` after `limit`.
async fn eventually(limit: Duration, what: &str, check: impl Fn() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_probe_wants_http_200_from_a_certificate_of_the_cluster_ca() {
    let pki = Pki::new();
    let server = Apiserver::start(&pki, READY).await;
    let tls = pki.client();
    let limit = Duration::from_millis(500);
    assert_eq!(probe(server.addr, &tls, limit).await, Ok(()));
    server.set(NOT_READY);
    assert_eq!(
        probe(server.addr, &tls, limit).await,
        Err("GET /readyz answered 500 Internal Server Error".into())
    );
    server.set(HUNG);
    let started = Instant::now();
    assert_eq!(
        probe(server.addr, &tls, limit).await,
        Err("no answer to GET /readyz within 500ms".into())
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    // Ready, but its certificate is from another CA: not the cluster's apiserver.
    let stranger = Apiserver::start(&Pki::new(), READY).await;
    let err = probe(stranger.addr, &tls, limit).await.unwrap_err();
    assert!(
        err.starts_with("TLS failed: invalid peer certificate"),
        "{err}"
    );
    let dead = server.kill().await;
    let err = probe(dead, &tls, limit).await.unwrap_err();
    assert!(err.starts_with("connect failed: "), "{err}");
}

#[tokio::test]
async fn a_master_that_accepts_tcp_but_never_answers_readyz_gets_no_connections() {
    let pki = Pki::new();
    let hung = Apiserver::start(&pki, HUNG).await;
    let not_ready = Apiserver::start(&pki, NOT_READY).await;
    let good = Apiserver::start(&pki, READY).await;
    let proxy = Proxy::start(&pki, vec![hung.addr, not_ready.addr, good.addr], OPTS).await;
    // At once, before any probe has answered: these wait for the first probes rather than go
    // to a backend that was never seen ready.
    for i in 0..6 {
        round_trip(proxy.addr, &format!("early {i}")).await;
    }
    // And later, across many probe rounds.
    tokio::time::sleep(OPTS.probe_timeout * 3).await;
    for i in 0..6 {
        round_trip(proxy.addr, &format!("later {i}")).await;
    }
    assert_eq!(hung.clients(), 0, "the hung master got client connections");
    assert_eq!(
        not_ready.clients(),
        0,
        "the unready master got client connections"
    );
    assert_eq!(good.clients(), 12);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_master_that_hangs_loses_its_connections_and_its_clients_reconnect_to_the_others() {
    let pki = Pki::new();
    let first = Apiserver::start(&pki, READY).await;
    let second = Apiserver::start(&pki, READY).await;
    let proxy = Proxy::start(&pki, vec![first.addr, second.addr], OPTS).await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut client = Client::connect(proxy.addr).await;
        client.echo(&format!("watch {i}")).await;
        clients.push(client);
    }
    // Fewest connections first: an even split.
    assert_eq!((first.open(), second.open()), (3, 3));

    first.set(HUNG);
    // Out after `fall` failed probes, each at most probe_timeout + probe_interval apart.
    let detection = (OPTS.probe_timeout + OPTS.probe_interval) * (OPTS.fall + 1);
    eventually(detection, "the hung master's connections closed", || {
        first.open() == 0
    })
    .await;
    let mut reconnected = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        if client.closed_within(Duration::from_millis(200)).await {
            *client = Client::connect(proxy.addr).await;
            reconnected += 1;
        }
        client.echo(&format!("after {i}")).await;
    }
    assert_eq!(
        reconnected, 3,
        "exactly the hung master's clients were moved"
    );
    assert_eq!(second.open(), 6);
    assert_eq!(
        first.clients(),
        3,
        "no new connection went to the hung master"
    );

    // Back: new connections prefer it (fewest connections); nothing is moved back.
    first.set(READY);
    tokio::time::sleep(OPTS.probe_timeout * 2).await;
    for i in 0..4 {
        let mut client = Client::connect(proxy.addr).await;
        client.echo(&format!("back {i}")).await;
        clients.push(client);
    }
    assert_eq!((first.open(), second.open()), (4, 6));
    proxy.shutdown().await;
}

#[tokio::test]
async fn with_every_master_unready_connections_still_go_through_and_stay() {
    let pki = Pki::new();
    let first = Apiserver::start(&pki, READY).await;
    let second = Apiserver::start(&pki, READY).await;
    let proxy = Proxy::start(&pki, vec![first.addr, second.addr], OPTS).await;
    let mut client = Client::connect(proxy.addr).await;
    client.echo("before").await;
    let (mine, other) = if first.open() == 1 {
        (&first, &second)
    } else {
        (&second, &first)
    };
    // Every /readyz fails (etcd lost quorum). The client's master goes last, when there is no
    // ready master left to move to: so its connection stays...
    other.set(NOT_READY);
    tokio::time::sleep((OPTS.probe_timeout + OPTS.probe_interval) * 4).await;
    mine.set(NOT_READY);
    tokio::time::sleep((OPTS.probe_timeout + OPTS.probe_interval) * 4).await;
    client.echo("still connected").await;
    // ...and new clients are still served by trying every backend.
    for i in 0..4 {
        round_trip(proxy.addr, &format!("degraded {i}")).await;
    }
    assert_eq!(first.clients() + second.clients(), 5);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_dead_master_is_skipped_within_the_connection_and_marked_down() {
    let pki = Pki::new();
    let good = Apiserver::start(&pki, READY).await;
    let doomed = Apiserver::start(&pki, READY).await;
    // Probes far apart: only a client's failed connect can notice the death.
    let opts = Options {
        probe_interval: Duration::from_secs(60),
        ..OPTS
    };
    let proxy = Proxy::start(&pki, vec![good.addr, doomed.addr], opts).await;
    round_trip(proxy.addr, "warm up").await;
    doomed.kill().await;
    for i in 0..6 {
        round_trip(proxy.addr, &format!("after {i}")).await;
    }
    assert_eq!(good.clients(), 7);
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_connection_is_closed_promptly_when_every_master_is_dead() {
    let pki = Pki::new();
    let dead = [
        Apiserver::start(&pki, READY).await.kill().await,
        Apiserver::start(&pki, READY).await.kill().await,
    ];
    let proxy = Proxy::start(&pki, dead.to_vec(), OPTS).await;
    for attempt in 0..2 {
        let started = Instant::now();
        let mut client = Client::connect(proxy.addr).await;
        let _ = client.0.write_all(b"GET /healthz").await;
        assert!(
            client.closed_within(Duration::from_secs(3)).await,
            "attempt {attempt}"
        );
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_millis(800),
            "attempt {attempt}: {elapsed:?}"
        );
        tokio::time::sleep(OPTS.probe_interval * 2).await;
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_and_a_freed_slot_is_reused() {
    let pki = Pki::new();
    let server = Apiserver::start(&pki, READY).await;
    let opts = Options {
        max_connections: 2,
        ..OPTS
    };
    let proxy = Proxy::start(&pki, vec![server.addr], opts).await;
    let mut held = Vec::new();
    for i in 0..2 {
        let mut client = Client::connect(proxy.addr).await;
        client.echo(&format!("held {i}")).await;
        held.push(client);
    }
    let mut over = Client::connect(proxy.addr).await;
    assert!(
        over.closed_within(Duration::from_secs(1)).await,
        "the third was served"
    );
    assert_eq!(server.clients(), 2);
    drop(held.pop());
    eventually(Duration::from_secs(2), "the freed slot", || {
        server.open() == 1
    })
    .await;
    round_trip(proxy.addr, "in the freed slot").await;
    held[0].echo("the first is untouched").await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn serve_refuses_an_empty_backend_list() {
    let pki = Pki::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = serve(listener, vec![], pki.client(), OPTS, async {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
