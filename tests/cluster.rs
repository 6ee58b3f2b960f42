//! Three `tern serve` nodes in one test process, sharing one store through
//! the trait and a real `redis-server` (membership and presence), each
//! with its own client port and node-to-node port on loopback: clients on
//! different nodes chat 1:1 and in groups through the conversations' owner
//! nodes, and when the owner of a busy conversation stops mid-stream
//! another node takes it over — every acknowledged message is delivered
//! once, seqs stay dense, and the old owner's fencing token is refused by
//! the store. Waits on events with deadlines; nothing is timed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{TestClient, TestServer, WAIT};
use redis_server::RedisServer;
use tempfile::TempDir;
use tern_client::SendOptions;
use tern_proto::body::push::PushEndpoint;
use tern_proto::body::{auth, conversations, messaging, presence};
use tern_proto::codec::LEN_PREFIX;
use tern_proto::fb::ErrorCode;
use tern_proto::{Body, ConversationKind, ErrorBody, Frame, Limits};
use tern_server::cluster::{
    ClusterTls, NodeHandler, NodeId, NodeInfo, NodeLinks, Registry, MAX_NODE_MESSAGE,
};
use tern_server::node::wire::{self as node_wire, NodeCall, NodePush, WireFrames};
use tern_server::node::Route;
use tern_server::presence::PresenceBackend;
use tern_store::memory::MemStore;
use tern_store::{AppendError, Fences, MessageLog, OwnershipStore, Store};

/// Membership lifetime of the test nodes (a heartbeat every second): long
/// enough that a node of a loaded test machine does not expire between two
/// heartbeats, which would move conversations mid-test.
const TTL_MS: u64 = 3000;

struct Cluster {
    nodes: Vec<TestServer>,
    store: Arc<MemStore>,
    _redis: RedisServer,
    _ca: TempDir,
}

impl Cluster {
    /// Three nodes `node-0..2`, each with two shards, all in one view.
    async fn start() -> Cluster {
        let redis = RedisServer::start();
        let ca = tempfile::tempdir().unwrap();
        let (cert, key) = ClusterTls::generate_ca().unwrap();
        std::fs::write(ca.path().join("ca.pem"), cert).unwrap();
        std::fs::write(ca.path().join("ca.key"), key).unwrap();
        let store = Arc::new(MemStore::new());
        let nodes: Vec<TestServer> = (0..3)
            .map(|i| {
                let shared: Arc<dyn Store> = store.clone();
                TestServer::start_on_store_with(2, shared, |c| {
                    c.presence_backend = PresenceBackend::Redis;
                    c.redis_url = redis.url();
                    c.cluster_node_id = Some(format!("node-{i}"));
                    c.cluster_listen = "127.0.0.1:0".parse().unwrap();
                    c.cluster_ca_cert = ca.path().join("ca.pem");
                    c.cluster_ca_key = ca.path().join("ca.key");
                    c.cluster_node_ttl_ms = TTL_MS;
                    c.admin_addr = Some("127.0.0.1:0".parse().unwrap());
                    c.push.allow_http_loopback = true;
                    c.push.coalesce_ms = 100;
                })
            })
            .collect();
        let cluster = Cluster {
            nodes,
            store,
            _redis: redis,
            _ca: ca,
        };
        for i in 0..3 {
            cluster.until_live(i, 3).await;
        }
        cluster
    }

    /// Waits until node `i` sees `count` live nodes.
    async fn until_live(&self, i: usize, count: usize) {
        let node = self.nodes[i]
            .handle()
            .cluster_node()
            .expect("a cluster node");
        let mut view = node.view();
        let seen = tokio::time::timeout(WAIT, view.wait_for(|v| v.nodes().len() == count)).await;
        assert!(seen.is_ok(), "node-{i} never saw {count} live nodes");
    }

    /// The node that claimed conversation `id` last (its owner).
    async fn owner(&self, id: u64) -> String {
        let ownership = self.store.ownership(id).await.unwrap();
        ownership.expect("the conversation was claimed").node
    }
}

/// Waits until `client` has received one message with each of `payloads`
/// in `conversation`; returns seq → payload of everything it got there.
async fn collect(
    client: &TestClient,
    conversation: u64,
    payloads: &[Bytes],
) -> BTreeMap<u64, Bytes> {
    let mut got: BTreeMap<u64, Bytes> = BTreeMap::new();
    let mut copies: BTreeMap<Bytes, usize> = BTreeMap::new();
    while !payloads.iter().all(|p| copies.contains_key(p)) {
        let m = client.expect_message().await;
        if m.conversation_id != conversation {
            continue;
        }
        *copies.entry(m.payload.clone()).or_default() += 1;
        assert!(
            got.insert(m.seq, m.payload.clone()).is_none(),
            "seq {} delivered twice",
            m.seq
        );
    }
    assert!(
        copies.values().all(|&n| n == 1),
        "a message was delivered twice: {copies:?}"
    );
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_on_different_nodes_chat_one_to_one_and_in_groups() {
    let cluster = Cluster::start().await;
    let alice = cluster.nodes[0].register("alice").await;
    let bob = cluster.nodes[1].register("bob").await;
    let carol = cluster.nodes[2].register("carol").await;

    let direct = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;
    alice
        .send(direct, Bytes::from_static(b"hi bob"))
        .await
        .unwrap();
    collect(&bob, direct, &[Bytes::from_static(b"hi bob")]).await;
    bob.send(direct, Bytes::from_static(b"hi alice"))
        .await
        .unwrap();
    collect(&alice, direct, &[Bytes::from_static(b"hi alice")]).await;

    // Twelve groups, so that their owners are spread over the nodes (all
    // twelve on one node by chance: 3 in 531,441).
    let mut owners = std::collections::BTreeSet::new();
    for round in 0..12 {
        let group = carol
            .create_conversation(ConversationKind::Group, &["alice", "bob"])
            .await
            .unwrap()
            .id;
        let from_carol = Bytes::from(format!("carol to group {round}"));
        carol.send(group, from_carol.clone()).await.unwrap();
        collect(&alice, group, std::slice::from_ref(&from_carol)).await;
        collect(&bob, group, &[from_carol]).await;
        let from_bob = Bytes::from(format!("bob to group {round}"));
        bob.send(group, from_bob.clone()).await.unwrap();
        collect(&alice, group, std::slice::from_ref(&from_bob)).await;
        collect(&carol, group, &[from_bob]).await;
        owners.insert(cluster.owner(group).await);
    }
    assert!(owners.len() >= 2, "twelve groups all owned by {owners:?}");

    // The admin port shows the cluster: three live nodes, and requests
    // carol's node sent to the owners of the conversations it does not own.
    let admin = cluster.nodes[2].handle().admin_addr.expect("admin port");
    let (status, metrics) = common::admin::get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        common::admin::sample(&metrics, "tern_cluster_nodes_live"),
        3.0
    );
    let forwarded = common::admin::sample(&metrics, "tern_cluster_requests_forwarded_total");
    assert!(forwarded >= 1.0, "{metrics}");
    assert!(common::admin::sample(&metrics, "tern_cluster_pushes_sent_total") >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_failover_keeps_every_acknowledged_message_once_and_fences_the_old_owner() {
    let mut cluster = Cluster::start().await;
    let alice = cluster.nodes[0].register("alice").await;
    let bob = cluster.nodes[1].register("bob").await;
    // A conversation owned by node-2, where neither client is connected.
    let mut conversation = None;
    for round in 0..40 {
        let id = alice
            .create_conversation(ConversationKind::Group, &["bob"])
            .await
            .unwrap()
            .id;
        let first = Bytes::from(format!("probe {round}"));
        alice.send(id, first.clone()).await.unwrap();
        collect(&bob, id, &[first]).await;
        if cluster.owner(id).await == "node-2" {
            conversation = Some(id);
            break;
        }
    }
    let id = conversation.expect("one of 40 groups is owned by node-2");
    let stale = cluster.store.ownership(id).await.unwrap().unwrap();

    // A stream of 60 sends; node-2 stops after the 20th is acknowledged.
    let payloads: Vec<Bytes> = (0..60)
        .map(|i| Bytes::from(format!("message {i}")))
        .collect();
    let mut acked = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        if i == 20 {
            cluster.nodes[2].stop().await;
        }
        acked.push(send_until_acknowledged(&alice, id, payload, i as u64 + 1).await);
    }
    let got = collect(&bob, id, &payloads).await;

    // Every acknowledged message is stored once, at the seq it was
    // acknowledged with, and the seqs are dense from 1 (the probe) on.
    let stored = cluster.store.messages(id, 1, 1000, 0).await.unwrap();
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "dense seqs"
    );
    assert_eq!(stored.len(), 61, "the probe and 60 messages, each once");
    for (payload, seq) in payloads.iter().zip(&acked) {
        assert_eq!(
            got.get(seq),
            Some(payload),
            "bob got message at its acknowledged seq"
        );
    }

    // Another node owns it now, under a higher token; the old owner's
    // token is refused by the store.
    let now = cluster.store.ownership(id).await.unwrap().unwrap();
    assert_ne!(now.node, "node-2");
    assert!(now.token > stale.token, "{now:?} after {stale:?}");
    let mut late = stored.last().unwrap().clone();
    (late.seq, late.client_message_id) = (late.seq + 1, 0xdead);
    let mut fences = Fences::none();
    fences.insert(id, stale.token);
    let refused = cluster
        .store
        .append_messages(&[late], &fences)
        .await
        .unwrap();
    assert!(
        matches!(refused[0], Err(AppendError::Fenced { .. })),
        "{refused:?}"
    );
}

/// Sends `payload` with idempotency key `cmid` until the cluster
/// acknowledges it (a send to a node that is leaving may fail; the same
/// key makes the retry exactly-once); returns its seq.
async fn send_until_acknowledged(client: &TestClient, id: u64, payload: &Bytes, cmid: u64) -> u64 {
    let options = SendOptions {
        client_message_id: cmid,
        ..SendOptions::default()
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.send_with(id, payload.clone(), options).await {
            Ok(receipt) => return receipt.seq,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "send refused during failover; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("message {cmid} never acknowledged: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_linked_on_another_node_is_approved_and_gets_messages() {
    let cluster = Cluster::start().await;
    let alice = cluster.nodes[0].register("alice").await;
    let bob = cluster.nodes[2].register("bob").await;
    let direct = bob
        .create_conversation(ConversationKind::Direct, &["alice"])
        .await
        .unwrap()
        .id;
    // The new device asks on node-1; alice's first device, on node-0,
    // sees the prompt and approves it there.
    let laptop = common::link_device(&cluster.nodes[1], &alice, "alice").await;
    let hello = Bytes::from_static(b"to both of alice's devices");
    bob.send(direct, hello.clone()).await.unwrap();
    collect(&alice, direct, std::slice::from_ref(&hello)).await;
    // The laptop reads it from the conversation (whether its live push got
    // there depends on the owner having heard of the new device yet: the
    // news crosses nodes on its own; the durable path does not depend on it).
    let page = laptop.history(direct, 1, 10).await.unwrap();
    assert!(page.messages.iter().any(|m| m.payload == hello), "{page:?}");
}

/// Waits until `user` has no connection left on `node`.
async fn until_offline(node: &TestServer, user: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !node.handle().shards_of(user).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{user} still connected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the nodes together decided `count` wake-ups by asking the
/// other nodes.
async fn until_wake_checks(cluster: &Cluster, count: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let done: u64 = cluster
            .nodes
            .iter()
            .filter_map(|n| n.handle().cluster_node())
            .map(|node| tern_server::node::NodeStats::get(&node.stats().wake_checks))
            .sum();
        if done >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{done} of {count} wake-ups decided"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Two groups of alice and bob owned by one node other than `not`, each
/// with one probe from alice that bob got; also how many of the probes
/// were in groups owned by another node than `not`.
async fn two_groups_owned_elsewhere(
    cluster: &Cluster,
    alice: &TestClient,
    bob: &TestClient,
    not: &str,
) -> (u64, u64, u64) {
    let mut elsewhere = 0;
    let mut by_owner: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for round in 0..60 {
        let id = alice
            .create_conversation(ConversationKind::Group, &["bob"])
            .await
            .unwrap()
            .id;
        let probe = Bytes::from(format!("probe {round}"));
        alice.send(id, probe.clone()).await.unwrap();
        collect(bob, id, &[probe]).await;
        let owner = cluster.owner(id).await;
        elsewhere += u64::from(owner != not);
        let ids = by_owner.entry(owner.clone()).or_default();
        ids.push(id);
        if owner != not && ids.len() == 2 {
            return (ids[0], ids[1], elsewhere);
        }
    }
    panic!("no node but {not} owns two of 60 groups: {by_owner:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_is_woken_only_when_connected_to_no_node() {
    let cluster = Cluster::start().await;
    let (url, pushes) = common::pushes::receiver(&[]);
    let alice = cluster.nodes[0].register("alice").await;
    let mut bob = cluster.nodes[1].register("bob").await;
    bob.register_push(PushEndpoint::WebPush { url: url.clone() })
        .await
        .unwrap();
    // Every probe reaches bob, online on node-1, through an owner elsewhere:
    // none may wake him.
    let (a, b, probes) = two_groups_owned_elsewhere(&cluster, &alice, &bob, "node-1").await;
    // Each of those probes' wake-up was decided (and none sent) before bob
    // leaves: the decision is taken after the delivery, asking node-1.
    until_wake_checks(&cluster, probes).await;
    bob.go_offline().await;
    until_offline(&cluster.nodes[1], "bob").await;
    alice.send(a, Bytes::from_static(b"wake up")).await.unwrap();
    let first = common::pushes::next_push(&pushes);
    assert_eq!(first.json()["conversation_id"], a, "woken while online");

    // Without an endpoint the owner's pusher learns he has none; once he
    // registers one again on node-1, the owner's node forgets that, and a
    // message sent while he is offline wakes him (sent until it does: the
    // news travels on its own, so the first send may still find it old).
    bob.come_online(&cluster.nodes[1]).await;
    bob.unregister_push().await.unwrap();
    bob.go_offline().await;
    until_offline(&cluster.nodes[1], "bob").await;
    alice
        .send(b, Bytes::from_static(b"no endpoint"))
        .await
        .unwrap();
    bob.come_online(&cluster.nodes[1]).await;
    bob.register_push(PushEndpoint::WebPush { url })
        .await
        .unwrap();
    bob.go_offline().await;
    until_offline(&cluster.nodes[1], "bob").await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        alice
            .send(b, Bytes::from_static(b"wake up again"))
            .await
            .unwrap();
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let wait = left.min(Duration::from_millis(500));
        match pushes.recv_timeout(wait) {
            Ok(p) if p.json()["conversation_id"] == b => break,
            Ok(p) => panic!("unexpected wake-up {:?}", p.json()),
            Err(_) => assert!(!left.is_zero(), "the new endpoint never reached the owner"),
        }
    }
}

/// The links of a peer that only calls: answers and takes nothing.
struct Mute;

#[async_trait::async_trait]
impl NodeHandler for Mute {
    async fn call(&self, _: &NodeId, _: Bytes) -> Bytes {
        Bytes::new()
    }
    async fn push(&self, _: &NodeId, _: Bytes) {}
}

impl Cluster {
    /// Links of `node-9`, issued by this cluster's CA but never registered:
    /// what a faulty or hostile node can send.
    fn rogue(&self) -> NodeLinks {
        let read = |file: &str| std::fs::read_to_string(self._ca.path().join(file)).unwrap();
        let tls = ClusterTls::load(&read("ca.pem"), &read("ca.key"), "node-9").unwrap();
        NodeLinks::start(&tls, "127.0.0.1:0".parse().unwrap(), Arc::new(Mute)).unwrap()
    }

    /// Node `i` as the view lists it.
    fn info(&self, i: usize) -> NodeInfo {
        let node = self.nodes[i].handle().cluster_node().unwrap();
        let view = node.view().borrow().clone();
        view.get(&format!("node-{i}")).cloned().unwrap()
    }

    /// Whether node `i` owns conversation `id` in its view.
    fn owns(&self, i: usize, id: u64) -> bool {
        let node = self.nodes[i].handle().cluster_node().unwrap();
        node.route(id) == Route::Here
    }
}

/// What node `to` answers `call`, as a reply frame.
async fn node_call(links: &NodeLinks, to: &NodeInfo, call: Bytes) -> Frame {
    let answer = tokio::time::timeout(WAIT, links.call(to, call)).await;
    let answer = answer.expect("answered in time").expect("answered");
    Frame::decode(&answer[LEN_PREFIX..], &Limits::client_inbound()).unwrap()
}

/// `user`'s request `body`, as a node forwards it.
fn forwarded(user: &str, device: u32, body: Body, create_id: Option<u64>) -> Bytes {
    let frame = Frame::new(7, body).encode();
    let call = NodeCall::Owner {
        user: user.to_owned(),
        device,
        frame: frame.slice(LEN_PREFIX..),
        create_id,
    };
    node_wire::encode(&call).unwrap()
}

#[track_caller]
fn assert_refused(frame: &Frame, code: ErrorCode) -> &ErrorBody {
    match &frame.body {
        Body::Error(e) if e.code == code => e,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

fn send_body(conversation_id: u64, payload: Bytes) -> Body {
    Body::Send(messaging::Send {
        conversation_id,
        client_message_id: 1,
        expires_in_secs: 0,
        flags: 0,
        payload,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_node_gets_typed_refusals_and_users_go_on() {
    let cluster = Cluster::start().await;
    let alice = cluster.nodes[0].register("alice").await;
    let bob = cluster.nodes[1].register("bob").await;
    let (rogue, node0) = (cluster.rogue(), cluster.info(0));
    let (user, device) = (alice.user().to_owned(), alice.device());
    let mut group = None;
    for _ in 0..60 {
        let id = alice
            .create_conversation(ConversationKind::Group, &["bob"])
            .await
            .unwrap()
            .id;
        if cluster.owns(0, id) {
            group = Some(id);
            break;
        }
    }
    let group = group.expect("node-0 owns one of 60 groups");
    let elsewhere = (1..u64::MAX).find(|id| !cluster.owns(0, *id)).unwrap();

    let garbage = node_call(&rogue, &node0, Bytes::from_static(b"\xff\x00not cbor")).await;
    assert_refused(&garbage, ErrorCode::Malformed);
    let bad_frame = NodeCall::Owner {
        user: user.clone(),
        device,
        frame: Bytes::from_static(b"not a frame"),
        create_id: None,
    };
    let bad_frame = node_call(&rogue, &node0, node_wire::encode(&bad_frame).unwrap()).await;
    assert_refused(&bad_frame, ErrorCode::Malformed);
    // A forwarded frame over this node's max_frame_len (256 KiB) is refused
    // as a client's would be, never stored.
    let big = Bytes::from(vec![7u8; 1 << 20]);
    let call = forwarded(&user, device, send_body(group, big), None);
    assert_refused(
        &node_call(&rogue, &node0, call).await,
        ErrorCode::FrameTooLarge,
    );
    let local = Body::CountOnline(presence::CountOnline {
        conversation_id: group,
    });
    let call = forwarded(&user, device, local, None);
    assert_refused(
        &node_call(&rogue, &node0, call).await,
        ErrorCode::InvalidArgument,
    );
    let hello = Body::Register(auth::Register {
        user: "mallory".into(),
        device_name: "x".into(),
        device_key: [1; 32],
        signature: [2; 64],
    });
    let call = forwarded(&user, device, hello, None);
    assert_refused(
        &node_call(&rogue, &node0, call).await,
        ErrorCode::AlreadyAuthenticated,
    );
    let call = forwarded(&user, device, send_body(elsewhere, Bytes::new()), None);
    let moved = node_call(&rogue, &node0, call).await;
    assert!(assert_refused(&moved, ErrorCode::Internal).retry_after_ms > 0);
    // A Create must carry the (non-zero) id it was routed by.
    for create_id in [None, Some(0)] {
        let create = Body::CreateConversation(conversations::CreateConversation {
            kind: ConversationKind::Group,
            members: vec!["bob".into()],
        });
        let call = forwarded(&user, device, create, create_id);
        let refused = node_call(&rogue, &node0, call).await;
        assert_refused(&refused, ErrorCode::InvalidArgument);
    }

    // Pushes: a million recipients with no frame for them, and a
    // notification of a huge frame to nobody, change nothing for users.
    let many = NodePush::Deliver {
        recipients: (0..1_000_000u32).map(|d| ("bob".to_owned(), d)).collect(),
        except: None,
        frames: WireFrames::PerDevice(Vec::new()),
        ephemeral: false,
    };
    let many = node_wire::encode(&many).unwrap();
    assert!(many.len() <= MAX_NODE_MESSAGE, "{}", many.len());
    rogue.push(&node0, many).await.unwrap();
    let huge = NodePush::Notify {
        users: vec!["nobody".into()],
        frame: Bytes::from(vec![0u8; 16 << 20]),
    };
    rogue
        .push(&node0, node_wire::encode(&huge).unwrap())
        .await
        .unwrap();
    rogue
        .push(&node0, Bytes::from_static(b"\xffjunk"))
        .await
        .unwrap();
    let after = Bytes::from_static(b"still here");
    alice.send(group, after.clone()).await.unwrap();
    let got = collect(&bob, group, std::slice::from_ref(&after)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    let page = bob.history(group, 1, 100).await.unwrap();
    assert!(page.messages.iter().all(|m| m.payload.len() < 1 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_on_another_ca_is_refused_at_start_and_leaves_no_trace() {
    let cluster = Cluster::start().await;
    let other = tempfile::tempdir().unwrap();
    let (cert, key) = ClusterTls::generate_ca().unwrap();
    std::fs::write(other.path().join("ca.pem"), cert).unwrap();
    std::fs::write(other.path().join("ca.key"), key).unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = common::test_config(data.path(), 1);
    config.presence_backend = PresenceBackend::Redis;
    config.redis_url = cluster._redis.url();
    config.cluster_node_id = Some("node-3".into());
    config.cluster_listen = "127.0.0.1:0".parse().unwrap();
    config.cluster_ca_cert = other.path().join("ca.pem");
    config.cluster_ca_key = other.path().join("ca.key");
    config.cluster_node_ttl_ms = TTL_MS;
    let services = tern_server::Services {
        store: cluster.store.clone(),
        clock: tern_server::Clock::system(),
    };
    let refused = tern_server::start_with(config, services)
        .err()
        .expect("refused");
    let message = refused.to_string();
    assert!(
        message.contains("refuse this node's certificate"),
        "{message}"
    );
    assert!(message.contains("node-0"), "{message}");
    // It left the membership as it failed: no node routes to it.
    let redis = &cluster._redis;
    assert_eq!(
        redis.command("HEXISTS tern:nodes node-3").as_deref(),
        Some(":0")
    );
    assert_eq!(
        redis.command("EXISTS tern:node:node-3").as_deref(),
        Some(":0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_owned_by_an_unreachable_node_fail_retryably_in_time() {
    let cluster = Cluster::start().await;
    let alice = cluster.nodes[0].register("alice").await;
    let bob = cluster.nodes[1].register("bob").await;
    let mut groups = Vec::new();
    for _ in 0..4 {
        let group = alice.create_conversation(ConversationKind::Group, &["bob"]);
        groups.push(group.await.unwrap().id);
    }
    // node-3 registers an address where a socket takes packets and never
    // answers (a wrong advertised address, a firewall).
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let ghost = NodeInfo {
        id: "node-3".into(),
        addr: silent.local_addr().unwrap(),
    };
    let ttl = Duration::from_millis(TTL_MS);
    let _ghost = Registry::join(&cluster._redis.url(), ghost, ttl)
        .await
        .unwrap();
    cluster.until_live(0, 4).await;
    let node = cluster.nodes[0].handle().cluster_node().unwrap();
    let lost = |id: &u64| matches!(node.route(*id), Route::Node(n) if n.id == "node-3");
    let ids: Vec<u64> = (1..u64::MAX).filter(lost).take(20).collect();
    // Twenty requests at once, each with a huge history limit: every one
    // is answered with a retryable error within the call timeout (5 s),
    // well before the client's own 30-s request timeout.
    let asks = ids.iter().map(|id| alice.history(*id, 1, u32::MAX));
    let answers = tokio::time::timeout(WAIT, futures_util::future::join_all(asks)).await;
    for answer in answers.expect("every request answered in time") {
        match answer {
            Err(tern_client::ClientError::Server {
                code: ErrorCode::Internal,
                retry_after_ms,
                message,
            }) => {
                assert!(retry_after_ms > 0, "{message}");
                assert!(message.contains("node-3"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
    let failed = tern_server::node::NodeStats::get(&node.stats().forward_failed);
    assert!(failed >= 20, "{failed}");
    // The rest of the cluster serves on: a group owned by a live node.
    let group = *groups.iter().find(|id| !lost(id)).expect("one of 4 stays");
    let hello = Bytes::from_static(b"still served");
    send_until_acknowledged(&alice, group, &hello, 1).await;
    collect(&bob, group, std::slice::from_ref(&hello)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stranger_is_refused_alike_on_every_node_and_redis_loss_keeps_routing() {
    let mut cluster = Cluster::start().await;
    let alice = cluster.nodes[0].register("alice").await;
    let bob = cluster.nodes[1].register("bob").await;
    let mallory = cluster.nodes[2].register("mallory").await;
    let mallory_here = common::link_device(&cluster.nodes[0], &mallory, "mallory").await;
    let group = alice
        .create_conversation(ConversationKind::Group, &["bob"])
        .await
        .unwrap()
        .id;
    // Whichever node the stranger's request enters by, the owner refuses
    // it the same way, and a huge limit gives a member a bounded page.
    let there = mallory.history(group, 1, u32::MAX).await.unwrap_err();
    let here = mallory_here.history(group, 1, u32::MAX).await.unwrap_err();
    assert!(there.code().is_some(), "{there:?}");
    assert_eq!(there.code(), here.code(), "{there:?} / {here:?}");
    let sent = mallory.send(group, Bytes::from_static(b"let me in")).await;
    assert_eq!(sent.unwrap_err().code(), here.code());
    let hello = Bytes::from_static(b"members only");
    alice.send(group, hello.clone()).await.unwrap();
    collect(&bob, group, std::slice::from_ref(&hello)).await;
    let page = bob.history(group, 1, u32::MAX).await.unwrap();
    assert_eq!(page.messages.len(), 1, "{page:?}");

    // Redis dies: the nodes keep their last view (no node claims another's
    // conversations), so requests go where they went and messages flow.
    cluster._redis.kill();
    for round in 0..5u64 {
        let payload = Bytes::from(format!("without redis {round}"));
        send_until_acknowledged(&alice, group, &payload, 100 + round).await;
        collect(&bob, group, std::slice::from_ref(&payload)).await;
    }
    for i in 0..3 {
        assert_eq!(
            cluster.nodes[i]
                .handle()
                .cluster_node()
                .unwrap()
                .live_nodes(),
            3
        );
    }
    cluster._redis.restart();
    let back = Bytes::from_static(b"redis is back");
    send_until_acknowledged(&bob, group, &back, 200).await;
    collect(&alice, group, std::slice::from_ref(&back)).await;
}
