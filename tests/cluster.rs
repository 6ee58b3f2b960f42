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

#[path = "cluster/clients.rs"]
mod clients;
#[path = "cluster/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use common::{TestClient, TestServer, WAIT};
use harness::{collect, send_until_acknowledged, Cluster};
use tern_proto::body::push::PushEndpoint;
use tern_proto::ConversationKind;
use tern_store::{AppendError, Fences, MessageLog, OwnershipStore};

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

/// What a node's cluster counters say now.
fn node_stats(node: &TestServer) -> (u64, u64) {
    use tern_server::node::NodeStats;
    let node = node.handle().cluster_node().expect("a cluster node");
    let stats = node.stats();
    (
        NodeStats::get(&stats.deliveries_received),
        NodeStats::get(&stats.pushes_spared),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deliveries_go_only_to_the_nodes_holding_a_recipient() {
    let cluster = Cluster::start().await;
    let alice = cluster.nodes[0].register("alice").await;
    let mut bob = cluster.nodes[1].register("bob").await;
    cluster.until_nodes_know_their_peers().await;
    // Owned by alice's node, so that every delivery crosses to bob's.
    let group = clients::group_owned_by(&alice, &bob, &*cluster.store, "node-0", WAIT).await;
    let before: Vec<(u64, u64)> = cluster.nodes.iter().map(node_stats).collect();
    let payloads: Vec<Bytes> = (0..20)
        .map(|i| Bytes::from(format!("to bob {i}")))
        .collect();
    for payload in &payloads {
        alice.send(group, payload.clone()).await.unwrap();
    }
    collect(&bob, group, &payloads).await;
    // node-2 holds neither alice nor bob: none of the deliveries went there.
    let after: Vec<(u64, u64)> = cluster.nodes.iter().map(node_stats).collect();
    assert_eq!(after[2].0, before[2].0, "node-2 got deliveries: {after:?}");
    let spared: u64 = after.iter().zip(&before).map(|(a, b)| a.1 - b.1).sum();
    assert!(
        spared >= 20,
        "spared {spared} of 20 sends: {before:?} {after:?}"
    );

    // bob moves to node-2: the next message reaches him there, live (it is
    // the last one, so no later message would reveal a gap).
    bob.go_offline().await;
    bob.come_online(&cluster.nodes[2]).await;
    let moved = Bytes::from_static(b"bob is on node-2 now");
    alice.send(group, moved.clone()).await.unwrap();
    collect(&bob, group, &[moved]).await;
    assert!(node_stats(&cluster.nodes[2]).0 > after[2].0);
}

/// A node that joins a running cluster knows nobody's users at first: it
/// sends the others every delivery until their lists come, and they send
/// it theirs at once; either way clients connected elsewhere get the
/// conversations it comes to own live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_that_joins_routes_its_conversations_deliveries_to_connected_users() {
    let mut cluster = Cluster::start().await;
    let alice = cluster.nodes[0].register("alice").await;
    let bob = cluster.nodes[1].register("bob").await;
    cluster.until_nodes_know_their_peers().await;
    cluster.add_node();
    for i in 0..4 {
        cluster.until_live(i, 4).await;
    }
    // A group the new node owns: its deliveries reach bob on node-1 live.
    let group = clients::group_owned_by(&alice, &bob, &*cluster.store, "node-3", WAIT).await;
    let payloads: Vec<Bytes> = (0..10)
        .map(|i| Bytes::from(format!("via node-3 {i}")))
        .collect();
    for payload in &payloads {
        alice.send(group, payload.clone()).await.unwrap();
    }
    collect(&bob, group, &payloads).await;
    // Once the lists are in, node-2 (holding neither) gets none of them.
    cluster.until_nodes_know_their_peers().await;
    let before = node_stats(&cluster.nodes[2]).0;
    let last = Bytes::from_static(b"after the lists");
    alice.send(group, last.clone()).await.unwrap();
    collect(&bob, group, &[last]).await;
    assert_eq!(node_stats(&cluster.nodes[2]).0, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn owner_failover_keeps_every_acknowledged_message_once_and_fences_the_old_owner() {
    let mut cluster = Cluster::start().await;
    let alice = cluster.nodes[0].register("alice").await;
    let bob = cluster.nodes[1].register("bob").await;
    // A conversation owned by node-2, where neither client is connected.
    let id = clients::group_owned_by(&alice, &bob, &*cluster.store, "node-2", WAIT).await;
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
    // Every owner hears of the laptop before the laptop is told it is in,
    // so the message reaches it live; it is in its history too.
    let got = tokio::time::timeout(WAIT, async {
        loop {
            let m = laptop.next_message().await.expect("laptop open");
            if m.conversation_id == direct {
                return m;
            }
        }
    })
    .await
    .expect("the linked device gets the message");
    assert_eq!(got.payload, hello);
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
