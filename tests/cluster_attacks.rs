//! A cluster node under bad input and misuse (issue 13): a peer of the
//! cluster CA sending garbage, oversize, misplaced or unroutable calls and
//! huge pushes; a node on another CA; a node whose advertised address
//! never answers; strangers entering by any node; Redis killed mid-run.
//! Each answer is a typed refusal, nothing panics, and the other users
//! are served on. Waits on events with deadlines; nothing is timed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "cluster/clients.rs"]
mod clients;
mod common;
#[path = "cluster/harness.rs"]
mod harness;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::Duration;

use bytes::Bytes;
use common::WAIT;
use harness::{collect, send_until_acknowledged, Cluster, TTL_MS};
use tern_proto::body::{auth, conversations, messaging, presence};
use tern_proto::codec::LEN_PREFIX;
use tern_proto::fb::ErrorCode;
use tern_proto::{Body, ConversationKind, ErrorBody, Frame, Limits};
use tern_server::cluster::{ClusterTls, NodeInfo, NodeLinks, Registry, MAX_NODE_MESSAGE};
use tern_server::node::wire::{self as node_wire, NodeCall, NodePush, WireFrames};
use tern_server::node::Route;
use tern_server::presence::PresenceBackend;

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
    let group = cluster.group_owned_by_node(&alice, &["bob"], 0).await;
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

/// Starts a fourth node, `node-3`, on `cluster`'s store and Redis with the
/// CA files in `ca_dir`, `adjust` applied; returns why it was refused.
fn refused_fourth_node(
    cluster: &Cluster,
    ca_dir: &std::path::Path,
    adjust: impl FnOnce(&mut tern_server::ServerConfig),
) -> String {
    let data = tempfile::tempdir().unwrap();
    let mut config = common::test_config(data.path(), 1);
    config.presence_backend = PresenceBackend::Redis;
    config.redis_url = cluster._redis.url();
    config.cluster_node_id = Some("node-3".into());
    config.cluster_listen = "127.0.0.1:0".parse().unwrap();
    config.cluster_ca_cert = ca_dir.join("ca.pem");
    config.cluster_ca_key = ca_dir.join("ca.key");
    config.cluster_node_ttl_ms = TTL_MS;
    adjust(&mut config);
    let services = tern_server::Services {
        store: cluster.store.clone(),
        clock: tern_server::Clock::system(),
    };
    let refused = tern_server::start_with(config, services)
        .err()
        .expect("refused");
    refused.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_on_another_ca_is_refused_at_start_and_leaves_no_trace() {
    let cluster = Cluster::start().await;
    let other = tempfile::tempdir().unwrap();
    let (cert, key) = ClusterTls::generate_ca().unwrap();
    std::fs::write(other.path().join("ca.pem"), cert).unwrap();
    std::fs::write(other.path().join("ca.key"), key).unwrap();
    let message = refused_fourth_node(&cluster, other.path(), |_| {});
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
async fn a_node_advertising_an_address_not_its_own_is_refused_at_start() {
    let cluster = Cluster::start().await;
    // Nothing listens at the first address; node-0 answers at the second.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nobody = silent.local_addr().unwrap();
    drop(silent);
    for advertise in [nobody, cluster.info(0).addr] {
        let message = refused_fourth_node(&cluster, cluster._ca.path(), |c| {
            c.cluster_advertise = Some(advertise);
        });
        assert!(
            message.contains(&format!(
                "cluster_advertise {advertise} does not lead to this node"
            )),
            "{message}"
        );
        // It never registered: no node routes to it.
        assert_eq!(
            cluster
                ._redis
                .command("HEXISTS tern:nodes node-3")
                .as_deref(),
            Some(":0")
        );
    }
    // The cluster goes on as before.
    cluster.until_live(0, 3).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundreds_of_pipelined_requests_cross_nodes_and_all_are_answered() {
    let cluster = Cluster::start().await;
    let alice = cluster.nodes[0].register("alice").await;
    let bob = cluster.nodes[1].register("bob").await;
    let group = cluster.group_owned_by_node(&alice, &["bob"], 0).await;
    let node1 = cluster.nodes[1].handle().cluster_node().unwrap();
    let before = tern_server::node::NodeStats::get(&node1.stats().forwarded);
    // 400 at once: past the connection's 256 in flight and the node link's
    // 64 streams; the extra ones wait their turn, none is dropped.
    let asks = (0..400).map(|_| bob.admin_settings(group));
    let answers = tokio::time::timeout(WAIT, futures_util::future::join_all(asks)).await;
    let answers = answers.expect("all answered in time");
    let failed: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    let after = tern_server::node::NodeStats::get(&node1.stats().forwarded);
    assert!(after - before >= 400, "{before} -> {after}");
}
