//! The cluster building blocks against real peers: membership in a real
//! `redis-server` (join, leave, crash, FLUSHALL, duplicate ids), and
//! node-to-node links between real QUIC endpoints on loopback (round trips
//! from any runtime, the caller's certified id, foreign CAs refused both
//! ways, size limits, a stopped and restarted node). Waits on events with
//! deadlines; nothing is timed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "common/redis.rs"]
mod redis_server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis_server::RedisServer;
use tern_server::cluster::{
    ClusterTls, LinkError, LinkSettings, NodeHandler, NodeId, NodeInfo, NodeLinks, Registry,
    RegistryError, View, MAX_NODE_MESSAGE, NODES_KEY,
};
use tokio::sync::{mpsc, watch, Mutex};

/// Deadline of every wait.
const WAIT: Duration = Duration::from_secs(20);
/// Membership TTL of the tests (heartbeat every 300 ms).
const TTL: Duration = Duration::from_millis(900);

fn node(id: &str, port: u16) -> NodeInfo {
    NodeInfo {
        id: id.to_owned(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn ids(view: &View) -> Vec<String> {
    view.nodes().iter().map(|n| n.id.clone()).collect()
}

/// Waits until `view` satisfies `ok`, failing after [`WAIT`].
async fn until(view: &mut watch::Receiver<Arc<View>>, what: &str, ok: impl Fn(&View) -> bool) {
    let waited = tokio::time::timeout(WAIT, view.wait_for(|v| ok(v)))
        .await
        .map(|seen| seen.is_ok());
    if waited != Ok(true) {
        panic!("{what}: view is {:?}", ids(&view.borrow()));
    }
}

fn has(view: &View, wanted: &[&str]) -> bool {
    ids(view) == wanted
}

#[tokio::test]
async fn nodes_join_leave_crash_and_come_back_after_a_flush() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = Registry::join(&url, node("tern-a", 1), TTL).await.unwrap();
    let b = Registry::join(&url, node("tern-b", 2), TTL).await.unwrap();
    let c = Registry::join(&url, node("tern-c", 3), TTL).await.unwrap();
    let all = ["tern-a", "tern-b", "tern-c"];
    let (mut va, mut vb, mut vc) = (a.view(), b.view(), c.view());
    for view in [&mut va, &mut vb, &mut vc] {
        until(view, "all three joined", |v| has(v, &all)).await;
    }
    assert_eq!(va.borrow().get("tern-b"), Some(&node("tern-b", 2)));

    // A graceful leave deletes the key at once; the others drop it.
    c.leave().await;
    assert_eq!(
        redis.command("EXISTS tern:node:tern-c").as_deref(),
        Some(":0")
    );
    until(&mut va, "c left", |v| has(v, &["tern-a", "tern-b"])).await;
    until(&mut vb, "c left", |v| has(v, &["tern-a", "tern-b"])).await;

    // A crash (no more heartbeats) drops out once the key expires.
    drop(b);
    until(&mut va, "b expired", |v| has(v, &["tern-a"])).await;
    assert_eq!(
        redis.command("EXISTS tern:node:tern-b").as_deref(),
        Some(":0")
    );

    // Everyone back, then Redis emptied: the next heartbeats rebuild it.
    let b = Registry::join(&url, node("tern-b", 2), TTL).await.unwrap();
    let c = Registry::join(&url, node("tern-c", 3), TTL).await.unwrap();
    let (mut vb, mut vc) = (b.view(), c.view());
    for view in [&mut va, &mut vb, &mut vc] {
        until(view, "all three rejoined", |v| has(v, &all)).await;
    }
    redis.flushall();
    assert_eq!(
        redis.command(&format!("EXISTS {NODES_KEY}")).as_deref(),
        Some(":0")
    );
    let deadline = tokio::time::Instant::now() + WAIT;
    while redis
        .command("EXISTS tern:node:tern-a tern:node:tern-b tern:node:tern-c")
        .as_deref()
        != Some(":3")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "keys never rewritten"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for view in [&mut va, &mut vb, &mut vc] {
        until(view, "all three after the flush", |v| has(v, &all)).await;
    }
    a.leave().await;
    b.leave().await;
    c.leave().await;
}

#[tokio::test]
async fn a_live_id_is_not_taken_twice_and_redis_must_answer() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = Registry::join(&url, node("tern-a", 1), TTL).await.unwrap();
    match Registry::join(&url, node("tern-a", 9), TTL).await {
        Err(RegistryError::Duplicate { id, addr }) => {
            assert_eq!((id.as_str(), addr.as_str()), ("tern-a", "127.0.0.1:1"));
        }
        other => panic!("a second tern-a joined: {:?}", other.map(|_| ())),
    }
    // The same node restarting (same address) may take its id back.
    let again = Registry::join(&url, node("tern-a", 1), TTL).await.unwrap();
    drop(a);
    again.leave().await;
    assert!(matches!(
        Registry::join(&url, node("Bad Id", 1), TTL).await,
        Err(RegistryError::NodeId(_))
    ));
    assert!(matches!(
        Registry::join(&url, node("tern-a", 1), Duration::from_millis(1)).await,
        Err(RegistryError::Ttl(_))
    ));
    let mut gone = redis;
    gone.kill();
    assert!(matches!(
        Registry::join(&url, node("tern-a", 1), TTL).await,
        Err(RegistryError::Unreachable(_))
    ));
}

#[tokio::test]
async fn a_restarted_redis_gets_everyone_back() {
    let mut redis = RedisServer::start();
    let url = redis.url();
    let a = Registry::join(&url, node("tern-a", 1), TTL).await.unwrap();
    let b = Registry::join(&url, node("tern-b", 2), TTL).await.unwrap();
    let (mut va, mut vb) = (a.view(), b.view());
    for view in [&mut va, &mut vb] {
        until(view, "both joined", |v| has(v, &["tern-a", "tern-b"])).await;
    }
    redis.restart();
    let deadline = tokio::time::Instant::now() + WAIT;
    while redis
        .command("EXISTS tern:node:tern-a tern:node:tern-b")
        .as_deref()
        != Some(":2")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nodes never re-registered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for view in [&mut va, &mut vb] {
        until(view, "both after the restart", |v| {
            has(v, &["tern-a", "tern-b"])
        })
        .await;
    }
    a.leave().await;
    b.leave().await;
}

/// Answers `"{from}:{request}"`; `big` gets an oversize answer, `hang` none;
/// pushes go to `pushes`.
struct Echo {
    pushes: mpsc::UnboundedSender<(NodeId, Bytes)>,
    hanging: mpsc::UnboundedSender<()>,
}

#[async_trait::async_trait]
impl NodeHandler for Echo {
    async fn call(&self, from: &NodeId, request: Bytes) -> Bytes {
        match &request[..] {
            b"big" => Bytes::from(vec![0u8; MAX_NODE_MESSAGE + 1]),
            r if r.starts_with(b"hang") => {
                let _ = self.hanging.send(());
                std::future::pending().await
            }
            _ => {
                let text = String::from_utf8_lossy(&request);
                Bytes::from(format!("{from}:{text}"))
            }
        }
    }

    async fn push(&self, from: &NodeId, message: Bytes) {
        let _ = self.pushes.send((from.clone(), message));
    }
}

struct Node {
    links: Arc<NodeLinks>,
    info: NodeInfo,
    pushes: Mutex<mpsc::UnboundedReceiver<(NodeId, Bytes)>>,
    hanging: Mutex<mpsc::UnboundedReceiver<()>>,
}

fn settings() -> LinkSettings {
    LinkSettings {
        call_timeout: Duration::from_secs(2),
        ..LinkSettings::default()
    }
}

fn start(ca: &(String, String), id: &str, listen: SocketAddr) -> Node {
    start_with(ca, id, listen, settings())
}

fn start_with(ca: &(String, String), id: &str, listen: SocketAddr, settings: LinkSettings) -> Node {
    let tls = ClusterTls::load(&ca.0, &ca.1, id).unwrap();
    let (push_tx, pushes) = mpsc::unbounded_channel();
    let (hang_tx, hanging) = mpsc::unbounded_channel();
    let handler = Arc::new(Echo {
        pushes: push_tx,
        hanging: hang_tx,
    });
    let links = NodeLinks::start_with(&tls, listen, handler, settings).unwrap();
    let info = NodeInfo {
        id: id.to_owned(),
        addr: links.local_addr(),
    };
    Node {
        links: Arc::new(links),
        info,
        pushes: Mutex::new(pushes),
        hanging: Mutex::new(hanging),
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

#[tokio::test]
async fn calls_and_pushes_carry_the_callers_node_id() {
    let ca = ClusterTls::generate_ca().unwrap();
    let a = start(&ca, "tern-a", loopback());
    let b = start(&ca, "tern-b", loopback());
    let answer = bounded("a call", a.links.call(&b.info, Bytes::from("hi"))).await;
    assert_eq!(answer.unwrap(), Bytes::from("tern-a:hi"));
    let answer = bounded("a call back", b.links.call(&a.info, Bytes::from("yo"))).await;
    assert_eq!(answer.unwrap(), Bytes::from("tern-b:yo"));

    bounded("a push", a.links.push(&b.info, Bytes::from("news")))
        .await
        .unwrap();
    let pushed = bounded("the push", async { b.pushes.lock().await.recv().await }).await;
    assert_eq!(pushed, Some(("tern-a".to_owned(), Bytes::from("news"))));

    // From a current-thread runtime on another thread, as a shard calls.
    let (links, to) = (a.links.clone(), b.info.clone());
    let shard = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let calls = (0..20).map(|i| links.call(&to, Bytes::from(format!("n{i}"))));
            futures_util::future::join_all(calls).await
        })
    });
    let answers = bounded("the shard thread", async {
        tokio::task::spawn_blocking(move || shard.join().unwrap())
            .await
            .unwrap()
    })
    .await;
    for (i, answer) in answers.into_iter().enumerate() {
        assert_eq!(answer.unwrap(), Bytes::from(format!("tern-a:n{i}")));
    }
}

#[tokio::test]
async fn oversize_messages_are_refused_with_too_large() {
    let ca = ClusterTls::generate_ca().unwrap();
    let a = start(&ca, "tern-a", loopback());
    let b = start(&ca, "tern-b", loopback());
    let huge = Bytes::from(vec![1u8; MAX_NODE_MESSAGE + 1]);
    let refused = a.links.call(&b.info, huge.clone()).await;
    assert!(
        matches!(
            refused,
            Err(LinkError::TooLarge {
                what: "request",
                ..
            })
        ),
        "{refused:?}"
    );
    let refused = a.links.push(&b.info, huge).await;
    assert!(
        matches!(refused, Err(LinkError::TooLarge { what: "push", .. })),
        "{refused:?}"
    );
    let refused = bounded("a big answer", a.links.call(&b.info, Bytes::from("big"))).await;
    assert!(
        matches!(
            refused,
            Err(LinkError::TooLarge {
                what: "response",
                ..
            })
        ),
        "{refused:?}"
    );
    // The largest allowed message passes, and the connection still works.
    let largest = Bytes::from(vec![7u8; MAX_NODE_MESSAGE]);
    bounded("the largest push", a.links.push(&b.info, largest))
        .await
        .unwrap();
    let pushed = bounded("the push", async { b.pushes.lock().await.recv().await }).await;
    assert_eq!(pushed.map(|(_, m)| m.len()), Some(MAX_NODE_MESSAGE));
    let answer = bounded("a call", a.links.call(&b.info, Bytes::from("ok"))).await;
    assert_eq!(answer.unwrap(), Bytes::from("tern-a:ok"));
}

#[tokio::test]
async fn another_ca_or_another_name_is_refused() {
    let ca = ClusterTls::generate_ca().unwrap();
    let other_ca = ClusterTls::generate_ca().unwrap();
    let a = start(&ca, "tern-a", loopback());
    let stranger = start(&other_ca, "tern-x", loopback());
    // As client: the stranger does not trust a's certificate, and a
    // refuses the stranger's when the stranger dials.
    let refused = bounded(
        "stranger to a",
        stranger.links.call(&a.info, Bytes::from("hi")),
    )
    .await;
    assert!(
        matches!(refused, Err(LinkError::Refused { .. })),
        "{refused:?}"
    );
    let refused = bounded(
        "a to stranger",
        a.links.call(&stranger.info, Bytes::from("hi")),
    )
    .await;
    assert!(
        matches!(refused, Err(LinkError::Refused { .. })),
        "{refused:?}"
    );
    // A node of the right CA dialled under another node's id.
    let b = start(&ca, "tern-b", loopback());
    let impostor = NodeInfo {
        id: "tern-c".to_owned(),
        addr: b.info.addr,
    };
    let refused = bounded("a to b as c", a.links.call(&impostor, Bytes::from("hi"))).await;
    assert!(
        matches!(refused, Err(LinkError::Refused { .. })),
        "{refused:?}"
    );
    assert!(a.pushes.lock().await.try_recv().is_err());
    assert!(stranger.pushes.lock().await.try_recv().is_err());
}

#[tokio::test]
async fn a_server_refuses_a_client_certificate_of_another_ca() {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let ca = ClusterTls::generate_ca().unwrap();
    let a = start(&ca, "tern-a", loopback());
    // A client that trusts the cluster CA but presents a self-signed
    // certificate with a node name: only the server's check can refuse it.
    let name = ClusterTls::server_name("tern-x");
    let forged = rcgen::generate_simple_self_signed(vec![name]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.0.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(forged.key_pair.serialize_der()));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(vec![forged.cert.der().clone()], key)
        .unwrap();
    tls.alpn_protocols = vec![tern_server::cluster::NODE_ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut client = quinn::Endpoint::client(loopback()).unwrap();
    client.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let connecting = client
        .connect(a.info.addr, &ClusterTls::server_name("tern-a"))
        .unwrap();
    // TLS 1.3: the client may finish its side before the server checks
    // its certificate, so the refusal can come just after the handshake.
    let reason = bounded("the forged client", async {
        let connection = match connecting.await {
            Ok(connection) => connection,
            Err(error) => return error,
        };
        if let Ok((mut send, _recv)) = connection.open_bi().await {
            let _ = send.write_all(&[0, 0, 0, 2, b'h', b'i']).await;
        }
        connection.closed().await
    })
    .await;
    let code = match &reason {
        quinn::ConnectionError::ConnectionClosed(close) => u64::from(close.error_code),
        quinn::ConnectionError::TransportError(error) => u64::from(error.code),
        other => panic!("not refused by TLS: {other}"),
    };
    assert!((0x100..0x200).contains(&code), "not a TLS alert: {reason}");
    assert!(a.pushes.lock().await.try_recv().is_err());
}

#[tokio::test]
async fn a_stopped_node_fails_fast_and_works_again_after_a_restart() {
    let ca = ClusterTls::generate_ca().unwrap();
    let a = start(&ca, "tern-a", loopback());
    let b = start(&ca, "tern-b", loopback());
    let answer = bounded("a call", a.links.call(&b.info, Bytes::from("1"))).await;
    assert_eq!(answer.unwrap(), Bytes::from("tern-a:1"));
    b.links.close();
    let failed = bounded(
        "a call to a stopped node",
        a.links.call(&b.info, Bytes::from("2")),
    )
    .await;
    assert!(
        matches!(
            failed,
            Err(LinkError::Unreachable { .. } | LinkError::Lost { .. } | LinkError::Timeout { .. })
        ),
        "{failed:?}"
    );
    let b = start(&ca, "tern-b", b.info.addr);
    // A dial that got no answer is not repeated for a second (calls fail at
    // once meanwhile): retried as a client retries a retryable error.
    let retried = async {
        loop {
            match a.links.call(&b.info, Bytes::from("3")).await {
                Err(LinkError::Unreachable { reason, .. }) if reason.contains("last dial") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                answer => return answer,
            }
        }
    };
    let answer = bounded("a call after the restart", retried).await;
    assert_eq!(answer.unwrap(), Bytes::from("tern-a:3"));
}

#[tokio::test]
async fn closing_fails_calls_in_flight_with_closed() {
    let ca = ClusterTls::generate_ca().unwrap();
    let a = start(&ca, "tern-a", loopback());
    let b = Arc::new(start(&ca, "tern-b", loopback()));
    let links = a.links.clone();
    let to = b.info.clone();
    let in_flight = tokio::spawn(async move { links.call(&to, Bytes::from("hang")).await });
    bounded("the call to arrive", async {
        b.hanging.lock().await.recv().await
    })
    .await;
    a.links.close();
    let closed = bounded("the call in flight", in_flight).await.unwrap();
    assert!(matches!(closed, Err(LinkError::Closed)), "{closed:?}");
    let closed = a.links.call(&b.info, Bytes::from("after")).await;
    assert!(matches!(closed, Err(LinkError::Closed)), "{closed:?}");
}

#[tokio::test]
async fn a_silent_address_fails_calls_at_once_until_it_is_dialled_again() {
    let ca = ClusterTls::generate_ca().unwrap();
    let a = start(&ca, "tern-a", loopback());
    // Takes packets, never answers: a wrong advertised address.
    let silent = std::net::UdpSocket::bind(loopback()).unwrap();
    let ghost = NodeInfo {
        id: "tern-b".into(),
        addr: silent.local_addr().unwrap(),
    };
    let first = bounded("a call to a silent node", a.links.call(&ghost, "1".into())).await;
    assert!(
        matches!(&first, Err(LinkError::Unreachable { reason, .. }) if reason.contains("no answer")),
        "{first:?}"
    );
    // Neither the next call nor a push waits another call timeout.
    let again = bounded("a second call", a.links.call(&ghost, "2".into())).await;
    assert!(
        matches!(&again, Err(LinkError::Unreachable { reason, .. }) if reason.contains("last dial")),
        "{again:?}"
    );
    let push = bounded("a push", a.links.push(&ghost, "3".into())).await;
    assert!(
        matches!(push, Err(LinkError::Unreachable { .. })),
        "{push:?}"
    );
    // The node registered again at a real address is dialled at once.
    let b = start(&ca, "tern-b", loopback());
    let answer = bounded(
        "a call at the new address",
        a.links.call(&b.info, "4".into()),
    )
    .await;
    assert_eq!(answer.unwrap(), Bytes::from("tern-a:4"));
}

#[tokio::test]
async fn a_node_whose_id_was_taken_while_cut_off_steps_aside() {
    let redis = RedisServer::start();
    let url = redis.url();
    let a = Registry::join(&url, node("tern-a", 1), TTL).await.unwrap();
    let b = Registry::join(&url, node("tern-b", 2), TTL).await.unwrap();
    let mut view = a.view();
    until(&mut view, "a and b", |v| has(v, &["tern-a", "tern-b"])).await;
    // tern-a's key expired (as if it had been cut off from Redis past its
    // ttl) and another process claimed the id at another address.
    let claim = redis.command("SET tern:node:tern-a 127.0.0.1:9999 PX 5000");
    assert_eq!(claim.as_deref(), Some("+OK"));
    let usurper = Registry::join(&url, node("tern-a", 9999), TTL)
        .await
        .unwrap();
    until(&mut view, "a without itself", |v| ids(v) == ["tern-b"]).await;
    let key = redis.command("STRLEN tern:node:tern-a");
    assert_eq!(
        key.as_deref(),
        Some(":14"),
        "the usurper's 127.0.0.1:9999 is kept"
    );
    // Once the id is free again the node takes it back.
    usurper.leave().await;
    until(&mut view, "a back", |v| {
        v.get("tern-a") == Some(&node("tern-a", 1))
    })
    .await;
    drop(b);
}

#[tokio::test]
async fn inbound_bodies_wait_for_room_in_the_budget() {
    let ca = ClusterTls::generate_ca().unwrap();
    let a = start(&ca, "tern-a", loopback());
    // b holds at most 1 MiB of each peer's bodies, and a hanging call keeps
    // its room for b's 10-s call timeout (a gives up after its 2 s).
    let tight = LinkSettings {
        inbound_buffer_bytes: 1 << 20,
        call_timeout: Duration::from_secs(10),
        ..settings()
    };
    let b = start_with(&ca, "tern-b", loopback(), tight);
    let mut first = b"hang".to_vec();
    first.resize(800 << 10, 0);
    let (links, to) = (a.links.clone(), b.info.clone());
    let held = tokio::spawn(async move { links.call(&to, Bytes::from(first)).await });
    bounded("the first call reaching b's handler", async {
        b.hanging.lock().await.recv().await
    })
    .await;
    // A second 800 KiB body finds no room: it is not read, and a gives up.
    let second = Bytes::from(vec![b'x'; 800 << 10]);
    let second = bounded("a second big call", a.links.call(&b.info, second)).await;
    assert!(second.is_err(), "read past the budget");
    // Another peer's budget is its own: its big call is answered.
    let c = start(&ca, "tern-c", loopback());
    let big = Bytes::from(vec![b'y'; 800 << 10]);
    let other = bounded("another peer's big call", c.links.call(&b.info, big)).await;
    assert!(other.unwrap().starts_with(b"tern-c:yyy"));
    assert!(bounded("the first call", held).await.unwrap().is_err());
}
