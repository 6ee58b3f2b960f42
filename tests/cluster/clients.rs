//! What the cluster tests' clients do, in-process nodes or node processes
//! alike: collect a conversation's messages checking each arrives once, and
//! send with one idempotency key until the cluster acknowledges it.
#![allow(dead_code, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use tern_client::{Client, SendOptions};

/// Waits (each message within `wait`) until `client` has received one
/// message with each of `payloads` in `conversation`; returns seq →
/// payload of everything it got there. Fails on a seq or a payload
/// delivered twice.
pub async fn collect_within(
    client: &Client,
    conversation: u64,
    payloads: &[Bytes],
    wait: Duration,
) -> BTreeMap<u64, Bytes> {
    let mut got: BTreeMap<u64, Bytes> = BTreeMap::new();
    let mut copies: BTreeMap<Bytes, usize> = BTreeMap::new();
    while !payloads.iter().all(|p| copies.contains_key(p)) {
        let m = tokio::time::timeout(wait, client.next_message())
            .await
            .expect("a message arrives in time")
            .expect("client open");
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

/// Sends `payload` with idempotency key `cmid` until the cluster
/// acknowledges it, for up to `patience` (a send through a node that is
/// leaving or dead fails until another takes over; the same key makes the
/// retry exactly-once); returns its seq.
pub async fn send_within(
    client: &Client,
    id: u64,
    payload: &Bytes,
    cmid: u64,
    patience: Duration,
) -> u64 {
    let options = SendOptions {
        client_message_id: cmid,
        ..SendOptions::default()
    };
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        match client.send_with(id, payload.clone(), options).await {
            Ok(receipt) => return receipt.seq,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("message {cmid} refused during failover ({e}); retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("message {cmid} never acknowledged: {e}"),
        }
    }
}

/// A group of `alice` and `bob` owned by `node` (its first claim in `store`
/// is by that node): groups are made, each with one probe from alice that
/// bob gets (within `wait`), until one is; at most 40 tries.
pub async fn group_owned_by(
    alice: &Client,
    bob: &Client,
    store: &dyn tern_store::OwnershipStore,
    node: &str,
    wait: Duration,
) -> u64 {
    for round in 0..40 {
        let id = alice
            .create_conversation(tern_proto::ConversationKind::Group, &["bob"])
            .await
            .expect("group made")
            .id;
        let probe = Bytes::from(format!("probe {round}"));
        alice.send(id, probe.clone()).await.expect("probe sent");
        collect_within(bob, id, &[probe], wait).await;
        let owner = store.ownership(id).await.expect("ownership read");
        if owner.is_some_and(|o| o.node == node) {
            return id;
        }
    }
    panic!("none of 40 groups is owned by {node}")
}
