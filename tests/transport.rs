//! QUIC transport integration test: N server shards (each an OS thread with a
//! current-thread tokio runtime and its own quinn endpoint over a
//! `SO_REUSEPORT` socket on one shared port) and a client that migrates to a
//! fresh UDP port again and again on one connection. Each migration lands on a
//! random shard's socket; datagrams for another shard's connection must be
//! handed to the owner, so every exchange still succeeds. Also checks that a
//! wrong pinned fingerprint and a foreign ALPN are refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use quinn::crypto::rustls::QuicClientConfig;
use quinn::{Connection, Endpoint, RecvStream, SendStream, TokioRuntime};
use tern_client::tls::{client_config, PinnedCertVerifier, TrustAnchor};
use tern_proto::fingerprint::parse_fingerprint;
use tern_server::cid::shard_endpoint_config;
use tern_server::socket::{
    bind_shard_sockets, shard_socket, ForwardingChannels, ForwardingStats, ShardSocketParts,
    DEFAULT_INBOX_CAPACITY,
};
use tern_server::tls::{load_or_create_identity, server_config, ServerTransportTuning};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

type TestResult<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const STEP_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_REBINDS: usize = 32;
const MIN_REBINDS: usize = 4;

/// A running set of shards on one port.
struct Server {
    addr: SocketAddr,
    fingerprint: String,
    stats: Arc<ForwardingStats>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(shards: usize) -> TestResult<Self> {
        let dir = tempfile::tempdir()?;
        let identity = load_or_create_identity(dir.path())?;
        let config = server_config(&identity, &ServerTransportTuning::default())?;
        let mesh = ForwardingChannels::new(shards, DEFAULT_INBOX_CAPACITY)?;
        let stats = mesh.stats();
        let sockets = bind_shard_sockets("127.0.0.1:0".parse()?, shards)?;
        let addr = sockets.first().ok_or("no socket")?.local_addr()?;
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::new();
        for (parts, socket) in mesh.into_parts().into_iter().zip(sockets) {
            let (config, stop_rx, ready_tx) = (config.clone(), stop_rx.clone(), ready_tx.clone());
            let name = format!("tern-shard-{}", parts.shard_id());
            threads.push(std::thread::Builder::new().name(name).spawn(move || {
                let result = run_shard(parts, socket, config, stop_rx, &ready_tx);
                if let Err(e) = result {
                    let _ = ready_tx.send(Err(e.to_string()));
                }
            })?);
        }
        for _ in 0..shards {
            ready_rx.recv_timeout(STEP_TIMEOUT)??;
        }
        Ok(Self {
            addr,
            fingerprint: identity.fingerprint,
            stats,
            stop,
            threads,
            _dir: dir,
        })
    }

    fn stop(self) -> TestResult {
        self.stop.send(true)?;
        for t in self.threads {
            t.join().map_err(|_| "shard thread panicked")?;
        }
        Ok(())
    }
}

/// One shard: a current-thread runtime driving an endpoint over the shard's
/// routing socket, echoing lines on every accepted bidi stream.
fn run_shard(
    parts: ShardSocketParts,
    socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
    mut stop: watch::Receiver<bool>,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) -> TestResult {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let id = parts.shard_id();
        let socket = shard_socket(parts, socket)?;
        let endpoint = Endpoint::new_with_abstract_socket(
            shard_endpoint_config(id),
            Some(config),
            socket,
            Arc::new(TokioRuntime),
        )?;
        ready.send(Ok(()))?;
        loop {
            tokio::select! {
                incoming = endpoint.accept() => match incoming {
                    Some(incoming) => { tokio::spawn(serve(incoming, id)); }
                    None => break,
                },
                _ = stop.changed() => break,
            }
        }
        endpoint.close(0u32.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(2), endpoint.wait_idle()).await;
        Ok(())
    })
}

async fn serve(incoming: quinn::Incoming, shard: u8) {
    let Ok(connection) = incoming.await else {
        return;
    };
    while let Ok((send, recv)) = connection.accept_bi().await {
        tokio::spawn(echo_lines(send, recv, shard));
    }
}

async fn echo_lines(mut send: SendStream, recv: RecvStream, shard: u8) {
    let mut lines = BufReader::new(recv).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if send
            .write_all(format!("shard {shard}: {line}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = send.finish();
}

/// A client endpoint on a fresh 127.0.0.1 port.
fn client_endpoint(config: quinn::ClientConfig) -> TestResult<Endpoint> {
    let mut endpoint = Endpoint::client("127.0.0.1:0".parse()?)?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

async fn connect(
    endpoint: &Endpoint,
    addr: SocketAddr,
) -> Result<Connection, quinn::ConnectionError> {
    let connecting = endpoint
        .connect(addr, "localhost")
        .map_err(|_| quinn::ConnectionError::LocallyClosed)?;
    tokio::time::timeout(STEP_TIMEOUT, connecting)
        .await
        .map_err(|_| quinn::ConnectionError::TimedOut)?
}

/// Sends `line` and returns the echoed reply (`shard N: line`).
async fn exchange(
    send: &mut SendStream,
    lines: &mut tokio::io::Lines<BufReader<RecvStream>>,
    line: &str,
) -> TestResult<String> {
    send.write_all(format!("{line}\n").as_bytes()).await?;
    let reply = tokio::time::timeout(STEP_TIMEOUT, lines.next_line()).await??;
    reply.ok_or_else(|| "stream closed before the reply".into())
}

/// Connects, then migrates to fresh client ports until datagrams were handed
/// between shards (and at least `MIN_REBINDS` migrations passed), checking
/// that every exchange on the one connection is answered by the same shard.
async fn migrate_across_shards(shards: usize) -> TestResult {
    let server = Server::start(shards)?;
    let pin = parse_fingerprint(&server.fingerprint)?;
    let endpoint = client_endpoint(client_config(&TrustAnchor::Fingerprint(pin))?)?;
    let connection = connect(&endpoint, server.addr).await?;
    let (mut send, recv) = connection.open_bi().await?;
    let mut lines = BufReader::new(recv).lines();
    let first = exchange(&mut send, &mut lines, "hello").await?;
    let owner = first
        .strip_suffix(": hello")
        .ok_or(format!("unexpected reply {first:?}"))?
        .to_string();
    let mut rebinds = 0;
    while rebinds < MAX_REBINDS && (rebinds < MIN_REBINDS || server.stats.forwarded_in_total() == 0)
    {
        endpoint.rebind(std::net::UdpSocket::bind("127.0.0.1:0")?)?;
        rebinds += 1;
        let msg = format!("after rebind {rebinds} to {}", endpoint.local_addr()?);
        let reply = exchange(&mut send, &mut lines, &msg).await?;
        assert_eq!(
            reply,
            format!("{owner}: {msg}"),
            "the connection must stay on its shard"
        );
    }
    let (out, inn) = (
        server.stats.forwarded_out_total(),
        server.stats.forwarded_in_total(),
    );
    eprintln!(
        "{shards} shards: {rebinds} rebinds, forwarded out {out}, in {inn}, dropped {}",
        server.stats.dropped_total()
    );
    assert!(
        out > 0 && inn > 0,
        "no datagram was handed between shards in {rebinds} migrations"
    );
    connection.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    server.stop()
}

#[tokio::test]
async fn migration_is_routed_between_two_shards() -> TestResult {
    migrate_across_shards(2).await
}

#[tokio::test]
async fn migration_is_routed_between_four_shards() -> TestResult {
    migrate_across_shards(4).await
}

#[tokio::test]
async fn wrong_fingerprint_fails_the_handshake() -> TestResult {
    let server = Server::start(2)?;
    let endpoint = client_endpoint(client_config(&TrustAnchor::Fingerprint([0x42; 32]))?)?;
    let err = match connect(&endpoint, server.addr).await {
        Ok(_) => return Err("connected despite a wrong pinned fingerprint".into()),
        Err(e) => e.to_string(),
    };
    eprintln!("wrong pin: {err}");
    assert!(
        err.contains("does not match the pinned fingerprint"),
        "unclear error: {err}"
    );
    assert!(
        err.contains(&server.fingerprint),
        "error should name the presented fingerprint: {err}"
    );
    server.stop()
}

#[tokio::test]
async fn foreign_alpn_is_refused() -> TestResult {
    let server = Server::start(2)?;
    let pin = parse_fingerprint(&server.fingerprint)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertVerifier::new(pin, provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    let endpoint = client_endpoint(config)?;
    let err = match connect(&endpoint, server.addr).await {
        Ok(_) => return Err("connected with ALPN h3".into()),
        Err(e) => e.to_string(),
    };
    eprintln!("foreign ALPN: {err}");
    assert!(
        err.contains("error 120"),
        "expected TLS alert 120 (no_application_protocol): {err}"
    );
    server.stop()
}
