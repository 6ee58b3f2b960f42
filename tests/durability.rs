//! Durability: a graceful restart keeps accounts, conversations, history and
//! cursors; a kill -9 right after acks loses no acknowledged message (and
//! idempotency keys survive it); SIGTERM exits cleanly with data intact; and
//! disappearing messages really disappear (history, catch-up, sweeper).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ServerProcess, TestServer, WAIT};
use tern_client::{Client, ClientOptions, SendOptions};
use tern_proto::{ConversationKind, Message};
use tern_server::shard::ServerStats;
use tern_server::Clock;
use tokio::time::timeout;

const SHARDS: usize = 2;

/// Every live message of a conversation, paging through history.
async fn full_history(client: &Client, conversation: u64) -> (Vec<Message>, u64) {
    let mut from = 1;
    let mut out = Vec::new();
    loop {
        let page = timeout(WAIT, client.history(conversation, from, 0))
            .await
            .expect("history in time")
            .expect("history");
        out.extend(page.messages);
        if page.next_seq > page.head_seq || page.next_seq <= from {
            return (out, page.head_seq);
        }
        from = page.next_seq;
    }
}

fn payloads(messages: &[Message]) -> Vec<(u64, Bytes)> {
    messages
        .iter()
        .map(|m| (m.seq, m.payload.clone()))
        .collect()
}

// ---------- graceful restart (in process) ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_restart_keeps_accounts_conversations_history_and_cursors() {
    let mut server = TestServer::start(SHARDS);
    let mut alice = server.register("alice").await;
    let mut bob = server.register("bob").await;
    let mut carol = server.register("carol").await;
    let direct = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    let group = alice
        .create_conversation(ConversationKind::Group, &["bob", "carol"])
        .await
        .unwrap();
    let notes = alice
        .create_conversation(ConversationKind::NoteToSelf, &[])
        .await
        .unwrap();
    for i in 1..=5 {
        alice.send(direct.id, format!("direct a{i}")).await.unwrap();
        bob.send(direct.id, format!("direct b{i}")).await.unwrap();
    }
    for i in 1..=4 {
        carol.send(group.id, format!("group c{i}")).await.unwrap();
    }
    alice.send(notes.id, "note to self").await.unwrap();
    bob.ack(direct.id, 7).await.unwrap();
    carol.ack(group.id, 4).await.unwrap();

    let before_direct = full_history(&alice, direct.id).await;
    let before_group = full_history(&alice, group.id).await;
    let before_notes = full_history(&alice, notes.id).await;
    assert_eq!(before_direct.1, 10);
    assert_eq!(before_group.1, 4);
    let bob_before = bob.sync(true).await.unwrap();
    let alice_before = alice.sync(true).await.unwrap();
    let carol_before = carol.sync(true).await.unwrap();

    for c in [&mut alice, &mut bob, &mut carol] {
        c.go_offline().await;
    }
    server.restart().await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.come_online(&server).await;
    }

    // Accounts authenticated again (come_online), conversations and cursors survived.
    let sorted = |mut v: Vec<tern_proto::ConversationState>| {
        v.sort_by_key(|s| s.conversation_id);
        v
    };
    assert_eq!(
        sorted(alice.sync(true).await.unwrap()),
        sorted(alice_before)
    );
    let bob_after = sorted(bob.sync(true).await.unwrap());
    assert_eq!(bob_after, sorted(bob_before));
    let bob_direct = bob_after
        .iter()
        .find(|s| s.conversation_id == direct.id)
        .expect("direct listed");
    assert_eq!((bob_direct.head_seq, bob_direct.cursor), (10, 7));
    let carol_after = sorted(carol.sync(true).await.unwrap());
    assert_eq!(carol_after, sorted(carol_before));
    assert_eq!(carol_after.len(), 1);
    assert_eq!((carol_after[0].head_seq, carol_after[0].cursor), (4, 4));

    // Full history, byte for byte.
    assert_eq!(full_history(&bob, direct.id).await, before_direct);
    assert_eq!(full_history(&carol, group.id).await, before_group);
    assert_eq!(full_history(&alice, notes.id).await, before_notes);

    // Membership survived: the direct pair is the same conversation, not a new one.
    let again = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    assert_eq!(
        (again.id, again.created, again.head_seq),
        (direct.id, false, 10)
    );
    let err = carol
        .send(direct.id, "not mine")
        .await
        .expect_err("carol is not in the direct conversation");
    assert_eq!(err.code(), Some(tern_proto::fb::ErrorCode::NotMember));

    // Bob's catch-up after reconnecting yields exactly the messages past his
    // cursors that other devices sent (the SDK never hands a device its own
    // sends), in order per conversation (conversations may interleave).
    let expected_direct: Vec<u64> = before_direct
        .0
        .iter()
        .filter(|m| m.seq > 7 && m.sender_user != "bob")
        .map(|m| m.seq)
        .collect();
    assert_eq!(expected_direct, vec![9]);
    let mut caught_up: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for _ in 0..expected_direct.len() + 4 {
        let m = bob.expect_message().await;
        caught_up.entry(m.conversation_id).or_default().push(m.seq);
    }
    assert_eq!(caught_up.remove(&direct.id), Some(expected_direct));
    assert_eq!(caught_up.remove(&group.id), Some(vec![1, 2, 3, 4]));
    assert!(caught_up.is_empty(), "{caught_up:?}");

    // Sequencing continues where it stopped, and is delivered live.
    let receipt = alice.send(direct.id, "after restart").await.unwrap();
    assert_eq!(receipt.seq, 11);
    let live = bob.expect_message().await;
    assert_eq!(
        (live.seq, live.payload.as_ref()),
        (11, b"after restart".as_ref())
    );
    // Nothing is delivered twice: a sentinel in each conversation is the
    // next message bob gets there.
    let sentinel = alice.send_sentinel(direct.id).await;
    assert_eq!(bob.expect_next_is(direct.id, &sentinel).await.seq, 12);
    let sentinel = alice.send_sentinel(group.id).await;
    assert_eq!(bob.expect_next_is(group.id, &sentinel).await.seq, 5);
}

// ---------- the real binary: kill -9 and SIGTERM ----------

fn options(server: &ServerProcess, state: &Path) -> ClientOptions {
    let mut o = server.options(state);
    o.reconnect_max = Duration::from_millis(500);
    o
}

/// A new account anyone may add to groups (not a consent test).
async fn register(server: &ServerProcess, state: &Path, user: &str) -> Client {
    let client = timeout(WAIT, Client::register(options(server, state), user, "test"))
        .await
        .expect("register in time")
        .expect("register");
    let everyone = tern_proto::GroupAdds::Everyone;
    client.set_privacy(everyone).await.expect("set privacy");
    client
}

async fn connect(server: &ServerProcess, state: &Path) -> Client {
    timeout(WAIT, Client::connect(options(server, state)))
        .await
        .expect("connect in time")
        .expect("authenticates")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_acks_loses_no_acknowledged_message() {
    const TASKS: u64 = 4;
    const PER_TASK: u64 = 50;
    let (_dir, data) = common::data_dir();
    let alice_state = tempfile::tempdir().unwrap();
    let bob_state = tempfile::tempdir().unwrap();

    let server = ServerProcess::spawn(&data, SHARDS);
    let alice = Arc::new(register(&server, alice_state.path(), "alice").await);
    let bob = register(&server, bob_state.path(), "bob").await;
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;

    // Concurrent sends; each returns only once the server says it is durable.
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let alice = alice.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..PER_TASK {
                let client_message_id = 1_000 * (t + 1) + i + 1;
                let payload = Bytes::from(format!("task {t} message {i}"));
                let options = SendOptions {
                    client_message_id,
                    ..SendOptions::default()
                };
                let receipt = alice
                    .send_with(conv, payload.clone(), options)
                    .await
                    .expect("send acked");
                assert!(!receipt.duplicate);
                acked.push((receipt.seq, client_message_id, payload));
            }
            acked
        }));
    }
    let mut acked = BTreeMap::new();
    for task in tasks {
        for (seq, cmid, payload) in timeout(WAIT * 3, task)
            .await
            .expect("sends finish in time")
            .unwrap()
        {
            assert!(
                acked.insert(seq, (cmid, payload)).is_none(),
                "seq {seq} acked twice"
            );
        }
    }
    // No shutdown code runs: whatever was acked must already be on disk.
    server.kill9();
    drop(bob);
    let alice = Arc::try_unwrap(alice).ok().expect("no other handle");
    drop(alice);

    let total = TASKS * PER_TASK;
    assert_eq!(acked.len() as u64, total);
    let server = ServerProcess::spawn(&data, SHARDS);
    let alice = connect(&server, alice_state.path()).await;
    let bob = connect(&server, bob_state.path()).await;
    let (messages, head) = full_history(&bob, conv).await;
    // Dense 1..=N with nothing lost, nothing extra, nothing altered.
    assert_eq!(head, total, "head after the crash");
    let seqs: Vec<u64> = messages.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=total).collect::<Vec<_>>(),
        "seqs are dense 1..=N"
    );
    for m in &messages {
        let (cmid, payload) = acked.get(&m.seq).expect("every stored message was acked");
        assert_eq!(
            (m.client_message_id, &m.payload),
            (*cmid, payload),
            "seq {}",
            m.seq
        );
        assert_eq!(m.sender_user, "alice");
    }

    // The idempotency key survived too: a retry is a duplicate with the original seq.
    for seq in [1, total / 2, total] {
        let (cmid, payload) = acked[&seq].clone();
        let options = SendOptions {
            client_message_id: cmid,
            ..SendOptions::default()
        };
        let retry = alice.send_with(conv, payload, options).await.unwrap();
        assert!(retry.duplicate, "retry of seq {seq} must be a duplicate");
        assert_eq!(retry.seq, seq);
    }
    // A new send still gets the next seq.
    assert_eq!(
        alice.send(conv, "after the crash").await.unwrap().seq,
        total + 1
    );
    assert_eq!(full_history(&bob, conv).await.1, total + 1);
    alice.close().await;
    bob.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_keeps_data() {
    let (_dir, data) = common::data_dir();
    let alice_state = tempfile::tempdir().unwrap();
    let bob_state = tempfile::tempdir().unwrap();

    let server = ServerProcess::spawn(&data, SHARDS);
    let alice = register(&server, alice_state.path(), "alice").await;
    let bob = register(&server, bob_state.path(), "bob").await;
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;
    for i in 1..=20u64 {
        let r = alice
            .send(conv, format!("before sigterm {i}"))
            .await
            .unwrap();
        assert_eq!(r.seq, i);
    }
    for i in 1..=20u64 {
        let m = timeout(WAIT, bob.next_message())
            .await
            .expect("delivered")
            .expect("open");
        assert_eq!(m.seq, i);
    }
    bob.ack(conv, 15).await.unwrap();
    let before = full_history(&alice, conv).await;

    // Terminate while both clients are still connected.
    let status = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(
        status.success(),
        "tern serve exited with {status:?} after SIGTERM"
    );
    assert_eq!(status.code(), Some(0));
    drop(alice);
    drop(bob);

    let server = ServerProcess::spawn(&data, SHARDS);
    let alice = connect(&server, alice_state.path()).await;
    let bob = connect(&server, bob_state.path()).await;
    assert_eq!(full_history(&bob, conv).await, before);
    let states = bob.sync(true).await.unwrap();
    assert_eq!(states.len(), 1);
    assert_eq!(
        (
            states[0].conversation_id,
            states[0].head_seq,
            states[0].cursor
        ),
        (conv, 20, 15)
    );
    // Bob catches up on exactly 16..=20 after reconnecting.
    for seq in 16..=20u64 {
        let m = timeout(WAIT, bob.next_message())
            .await
            .expect("caught up")
            .expect("open");
        assert_eq!((m.conversation_id, m.seq), (conv, seq));
    }
    assert_eq!(alice.send(conv, "after restart").await.unwrap().seq, 21);
    let m = timeout(WAIT, bob.next_message())
        .await
        .expect("delivered")
        .expect("open");
    assert_eq!(m.seq, 21);
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "second SIGTERM exit: {status:?}");
}

// ---------- expiry ----------

/// Expiry on the server's clock, which the test moves (no sleeping): a
/// message is delivered while it lives, is gone from history the moment its
/// time passes, never reaches a device that was offline, and is swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_message_is_delivered_then_gone_and_swept() {
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = Clock::manual(start_ms);
    let server = TestServer::start_with_clock(SHARDS, clock.clone(), |c| c.sweep_interval_secs = 1);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mut carol = server.register("carol").await;
    let group = alice
        .create_conversation(ConversationKind::Group, &["bob", "carol"])
        .await
        .unwrap()
        .id;
    carol.go_offline().await;

    let swept_before = ServerStats::get(&server.handle().stats.expired_swept);
    let options = SendOptions {
        expires_in_secs: 1,
        ..SendOptions::default()
    };
    let receipt = alice
        .send_with(group, "self-destructs", options)
        .await
        .unwrap();
    assert_eq!(receipt.seq, 1);
    // Online recipients get it while it lives.
    let m = bob.expect_message().await;
    assert_eq!((m.seq, m.payload.as_ref()), (1, b"self-destructs".as_ref()));
    assert_eq!(m.expires_at_ms, m.server_time_ms + 1_000);
    let page = alice.history(group, 1, 0).await.unwrap();
    assert_eq!(page.messages.len(), 1, "alive until its time passes");

    clock.advance(1_000);
    let page = alice.history(group, 1, 0).await.unwrap();
    assert!(
        page.messages.is_empty(),
        "expired message still in history: {:?}",
        page.messages
    );
    assert_eq!(page.head_seq, 1, "expiry never moves the head back");

    // A later, non-expiring message reaches carol when she comes online...
    let later = alice.send(group, "stays").await.unwrap();
    assert_eq!(later.seq, 2, "seqs are not reused after expiry");
    assert_eq!(bob.expect_message().await.seq, 2);
    carol.come_online(&server).await;
    let first = carol.expect_message().await;
    assert_eq!(
        (first.seq, first.payload.as_ref()),
        (2, b"stays".as_ref()),
        "carol must not get the expired message"
    );
    // ...and the expired one never does: the next thing she gets is a sentinel.
    alice.send(group, "sentinel").await.unwrap();
    let next = carol.expect_message().await;
    assert_eq!((next.seq, next.payload.as_ref()), (3, b"sentinel".as_ref()));
    let page = carol.history(group, 1, 0).await.unwrap();
    assert_eq!(
        payloads(&page.messages),
        vec![
            (2, Bytes::from_static(b"stays")),
            (3, Bytes::from_static(b"sentinel"))
        ]
    );

    // The sweeper (every second) deletes it from the store.
    let deadline = Instant::now() + WAIT;
    while ServerStats::get(&server.handle().stats.expired_swept) <= swept_before {
        assert!(
            Instant::now() < deadline,
            "the sweeper did not delete the expired message in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        ServerStats::get(&server.handle().stats.expired_swept),
        swept_before + 1
    );
}

/// MLS handshake messages outlive application messages: past the message
/// TTL and a sweep, the group's messages are gone but its Commit and
/// Welcome are still in History (`mls_handshake_ttl_secs`), so a member
/// offline that long can still catch up; past the handshake TTL they go too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mls_commits_outlive_the_message_ttl() {
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = Clock::manual(start_ms);
    let server = TestServer::start_with_clock(SHARDS, clock.clone(), |c| {
        c.sweep_interval_secs = 1;
        c.message_ttl_secs = 60;
        c.mls_handshake_ttl_secs = 600;
    });
    let alice = server.register("alice").await;
    let _bob = server.register("bob").await;
    let _carol = server.register("carol").await;
    let group = alice
        .create_conversation(ConversationKind::Group, &["bob"])
        .await
        .unwrap()
        .id;
    alice.send(group, "before").await.unwrap();
    let commit = tern_proto::body::mls::Commit {
        conversation_id: group,
        epoch: 0,
        commit: Bytes::from_static(b"commit adding carol"),
        welcome: Some(Bytes::from_static(b"welcome for carol")),
        group_info: Bytes::from_static(b"group info"),
        added: vec!["carol".to_owned()],
        removed: Vec::new(),
        staged: Default::default(),
    };
    timeout(WAIT, alice.request(commit))
        .await
        .expect("commit in time")
        .expect("commit accepted");
    alice.send(group, "after").await.unwrap();
    let handshake = [
        (2, Bytes::from_static(b"commit adding carol")),
        (3, Bytes::from_static(b"welcome for carol")),
    ];
    let (all, _) = full_history(&alice, group).await;
    assert_eq!(all.len(), 4, "{:?}", payloads(&all));

    // Past the message TTL and a sweep: only the Commit and Welcome are left.
    let swept_before = ServerStats::get(&server.handle().stats.expired_swept);
    clock.advance(61_000);
    wait_swept(&server, swept_before + 2).await;
    let (left, head) = full_history(&alice, group).await;
    assert_eq!(payloads(&left), handshake.to_vec());
    assert_eq!(head, 4);
    let first = left.first().unwrap();
    assert_eq!(first.flags, tern_proto::flags::MLS_COMMIT);
    assert_eq!(first.expires_at_ms, first.server_time_ms + 600_000);

    // Past the handshake TTL they are swept as well.
    clock.advance(540_000);
    wait_swept(&server, swept_before + 4).await;
    let (left, _) = full_history(&alice, group).await;
    assert!(left.is_empty(), "{:?}", payloads(&left));
}

/// Waits (real time, bounded) until the sweeper has deleted `count` messages in all.
async fn wait_swept(server: &TestServer, count: u64) {
    let deadline = Instant::now() + WAIT;
    while ServerStats::get(&server.handle().stats.expired_swept) < count {
        assert!(Instant::now() < deadline, "the sweeper did not run in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
