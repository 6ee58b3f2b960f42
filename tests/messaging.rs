//! Messaging behaviour against a real server: 1:1, groups, note-to-self,
//! offline sync, ordering across shards, exactly-once retries, paging and
//! connection migration between shards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{next_push, TestServer, WAIT};
use tern_client::SendOptions;
use tern_proto::fb::ErrorCode;
use tern_proto::{Body, ConversationKind, Message};

/// Asserts a push is the `Deliver` of `seq` from `sender` with `payload`.
#[track_caller]
fn assert_deliver(body: Body, seq: u64, sender: &str, payload: &[u8]) -> Message {
    match body {
        Body::Deliver(m) => {
            assert_eq!(
                (m.seq, m.sender_user.as_str(), &m.payload[..]),
                (seq, sender, payload),
                "{m:?}"
            );
            m
        }
        other => panic!("expected the Deliver of seq {seq} from {sender}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_message_is_delivered_in_real_time() {
    let server = TestServer::start(2);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    assert!(conv.created);
    assert_eq!(conv.members, vec!["alice".to_owned(), "bob".to_owned()]);
    // A second, raw connection of alice's device sees every frame the server
    // pushes to that device (the SDK drops its own messages before a test
    // could see them).
    let mut alice_raw = server.raw_connection_of(&alice).await;

    let receipt = alice.send(conv.id, &b"ciphertext-1"[..]).await.unwrap();
    assert_eq!((receipt.seq, receipt.duplicate), (1, false));
    let got = bob.expect_message().await;
    assert_eq!(got.conversation_id, conv.id);
    assert_eq!(got.seq, 1);
    assert_eq!(got.sender_user, "alice");
    assert_eq!(got.sender_device, 1);
    assert_eq!(&got.payload[..], b"ciphertext-1");
    assert_eq!(got.server_time_ms, receipt.server_time_ms);

    let reply = bob.send(conv.id, &b"ciphertext-2"[..]).await.unwrap();
    assert_eq!(reply.seq, 2);
    assert_eq!(alice.expect_message().await.seq, 2);
    // The sender's own device does not get its message pushed back: the
    // first push to alice's device is bob's reply, which the server
    // sequenced after her seq 1 in the same conversation (pushes keep seq
    // order), so an echo of seq 1 would have come before it.
    assert_deliver(
        next_push(&mut alice_raw).await.body,
        2,
        "bob",
        b"ciphertext-2",
    );
    // Once more with a sentinel sent after alice's next message.
    assert_eq!(
        alice.send(conv.id, &b"ciphertext-3"[..]).await.unwrap().seq,
        3
    );
    let sentinel = bob.send_sentinel(conv.id).await;
    assert_deliver(next_push(&mut alice_raw).await.body, 4, "bob", &sentinel);
    // The SDK fills the gap at seq 3 from history and skips it as her own.
    assert_eq!(alice.expect_next_is(conv.id, &sentinel).await.seq, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_conversations_are_unique_per_pair_and_checked() {
    let server = TestServer::start(2);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let first = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    let again = bob
        .create_conversation(ConversationKind::Direct, &["alice"])
        .await
        .unwrap();
    assert_eq!(first.id, again.id);
    assert!(!again.created);

    let to_self = alice
        .create_conversation(ConversationKind::Direct, &["alice"])
        .await
        .unwrap_err();
    assert_eq!(to_self.code(), Some(ErrorCode::InvalidArgument));
    let unknown = alice
        .create_conversation(ConversationKind::Direct, &["nobody"])
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Some(ErrorCode::NotFound));
    let two = alice
        .create_conversation(ConversationKind::Direct, &["bob", "carol"])
        .await
        .unwrap_err();
    assert_eq!(two.code(), Some(ErrorCode::InvalidArgument));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_fans_out_to_every_member_and_follows_membership() {
    let server = TestServer::start(2);
    let names = ["g0", "g1", "g2", "g3", "g4"];
    let mut clients = Vec::new();
    for name in names {
        clients.push(server.register(name).await);
    }
    let late = server.register("late").await;
    let group = clients[0]
        .create_conversation(ConversationKind::Group, &["g1", "g2", "g3", "g4"])
        .await
        .unwrap();
    assert_eq!(group.members.len(), 5);

    clients[2]
        .send(group.id, &b"hello group"[..])
        .await
        .unwrap();
    for (i, client) in clients.iter().enumerate().filter(|(i, _)| *i != 2) {
        let m = client.expect_message().await;
        assert_eq!(
            (m.seq, &m.payload[..]),
            (1, &b"hello group"[..]),
            "member {i}"
        );
    }

    // Only administrators add members (issue 10): g0, the creator, makes g1 one.
    clients[0].set_admin(group.id, "g1", true).await.unwrap();
    let info = clients[1].add_members(group.id, &["late"]).await.unwrap();
    assert!(info.members.contains(&"late".to_owned()));
    clients[0].set_admin(group.id, "g1", false).await.unwrap();
    let forbidden = clients[1]
        .remove_members(group.id, &["g3"])
        .await
        .unwrap_err();
    assert_eq!(forbidden.code(), Some(ErrorCode::Forbidden));
    clients[0].remove_members(group.id, &["g4"]).await.unwrap();
    clients[3].remove_members(group.id, &["g3"]).await.unwrap();

    clients[0]
        .send(group.id, &b"after changes"[..])
        .await
        .unwrap();
    for client in [&clients[1], &clients[2]] {
        assert_eq!(client.expect_message().await.seq, 2);
    }
    // The new member sees the new message, and nothing from before it
    // joined: its membership starts at seq 2, so there is no gap to fill.
    assert_eq!(late.expect_message().await.seq, 2);
    // Removed members got nothing more: seq 2 reached the members above, and
    // only then a sentinel goes to each removed member in a direct
    // conversation; it must be the next thing they receive.
    for removed in [3, 4] {
        let name = names[removed];
        let direct = clients[0]
            .create_conversation(ConversationKind::Direct, &[name])
            .await
            .unwrap();
        let sentinel = clients[0].send_sentinel(direct.id).await;
        clients[removed].expect_next_is(direct.id, &sentinel).await;
    }
    // And they cannot send or read any more.
    let refused = clients[4]
        .send(group.id, &b"still here?"[..])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::NotMember));
    let refused = clients[3].history(group.id, 1, 10).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::NotMember));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn note_to_self_is_unique_and_stored() {
    let server = TestServer::start(2);
    let alice = server.register("alice").await;
    let note = alice
        .create_conversation(ConversationKind::NoteToSelf, &[])
        .await
        .unwrap();
    assert_eq!(note.members, vec!["alice".to_owned()]);
    let again = alice
        .create_conversation(ConversationKind::NoteToSelf, &[])
        .await
        .unwrap();
    assert_eq!((again.id, again.created), (note.id, false));
    let with_other = alice
        .create_conversation(ConversationKind::NoteToSelf, &["bob"])
        .await
        .unwrap_err();
    assert_eq!(with_other.code(), Some(ErrorCode::InvalidArgument));

    for i in 1..=3u64 {
        assert_eq!(
            alice
                .send(note.id, format!("note {i}").into_bytes())
                .await
                .unwrap()
                .seq,
            i
        );
    }
    let page = alice.history(note.id, 1, 0).await.unwrap();
    let texts: Vec<_> = page
        .messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(texts, ["note 1", "note 2", "note 3"]);
    assert_eq!((page.head_seq, page.next_seq), (3, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_recipient_syncs_everything_in_order_once() {
    let server = TestServer::start(2);
    let alice = server.register("alice").await;
    let mut bob = server.register("bob").await;
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    alice.send(conv.id, &b"m1"[..]).await.unwrap();
    let first = bob.expect_message().await;
    bob.ack(conv.id, first.seq).await.unwrap();

    bob.go_offline().await;
    for i in 2..=30 {
        alice
            .send(conv.id, format!("m{i}").into_bytes())
            .await
            .unwrap();
    }
    bob.come_online(&server).await;
    let ahead = bob.sync(false).await.unwrap();
    assert_eq!(ahead.len(), 1);
    assert_eq!((ahead[0].head_seq, ahead[0].cursor), (30, 1));
    for seq in 2..=30 {
        let m = bob.expect_message().await;
        assert_eq!(m.seq, seq);
        assert_eq!(m.payload, format!("m{seq}").into_bytes());
    }
    bob.ack(conv.id, 30).await.unwrap();
    assert!(bob.sync(false).await.unwrap().is_empty());
    // A live message after the catch-up arrives once, not duplicated by sync.
    alice.send(conv.id, &b"m31"[..]).await.unwrap();
    assert_eq!(bob.expect_message().await.seq, 31);
    let sentinel = alice.send_sentinel(conv.id).await;
    assert_eq!(bob.expect_next_is(conv.id, &sentinel).await.seq, 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_on_different_shards_get_one_dense_order() {
    const SENDERS: usize = 4;
    const EACH: usize = 40;
    let server = TestServer::start(4);
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        senders.push(std::sync::Arc::new(server.register(&format!("s{i}")).await));
    }
    let reader = server.register("reader").await;
    let members: Vec<String> = (0..SENDERS).map(|i| format!("s{i}")).collect();
    let refs: Vec<&str> = members
        .iter()
        .map(String::as_str)
        .chain(["reader"])
        .collect();
    let group = senders[0]
        .create_conversation(ConversationKind::Group, &refs)
        .await
        .unwrap();

    let mut tasks = Vec::new();
    for (i, sender) in senders.iter().enumerate() {
        let sender = sender.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for n in 0..EACH {
                seqs.push(
                    sender
                        .send(group.id, format!("{i}:{n}").into_bytes())
                        .await
                        .unwrap()
                        .seq,
                );
            }
            seqs
        }));
    }
    let mut acked = Vec::new();
    for task in tasks {
        let seqs = task.await.unwrap();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "one sender's messages keep their order"
        );
        acked.extend(seqs);
    }
    acked.sort_unstable();
    let total = (SENDERS * EACH) as u64;
    assert_eq!(acked, (1..=total).collect::<Vec<_>>(), "dense and gapless");

    let mut last_per_sender = [None; SENDERS];
    for seq in 1..=total {
        let m = reader.expect_message().await;
        assert_eq!(m.seq, seq);
        let text = String::from_utf8(m.payload.to_vec()).unwrap();
        let (who, n) = text.split_once(':').unwrap();
        let (who, n): (usize, usize) = (who.parse().unwrap(), n.parse().unwrap());
        assert!(last_per_sender[who] < Some(n));
        last_per_sender[who] = Some(n);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_client_message_id_is_stored_and_delivered_once() {
    let server = TestServer::start(2);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    let options = SendOptions {
        client_message_id: 0xfeed,
        ..SendOptions::default()
    };
    let first = alice
        .send_with(conv.id, &b"once"[..], options)
        .await
        .unwrap();
    let retry = alice
        .send_with(conv.id, &b"once"[..], options)
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(retry.duplicate);
    assert_eq!(
        (retry.seq, retry.server_time_ms),
        (first.seq, first.server_time_ms)
    );

    let next = alice.send(conv.id, &b"next"[..]).await.unwrap();
    assert_eq!(next.seq, first.seq + 1);
    assert_eq!(bob.expect_message().await.seq, 1);
    assert_eq!(bob.expect_message().await.seq, 2);
    let page = bob.history(conv.id, 1, 0).await.unwrap();
    assert_eq!(page.messages.len(), 2);
    assert_eq!(
        server
            .handle()
            .stats
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_send_is_refused_by_the_sdk_and_the_connection_survives() {
    let server = TestServer::start(1);
    let alice = server.register("alice").await;
    let note = alice
        .create_conversation(ConversationKind::NoteToSelf, &[])
        .await
        .unwrap();
    let err = alice
        .send(note.id, vec![0u8; 300 * 1024])
        .await
        .unwrap_err();
    assert!(
        matches!(err, tern_client::ClientError::TooLarge { max: 262_144, .. }),
        "{err:?}"
    );
    assert_eq!(alice.send(note.id, &b"small"[..]).await.unwrap().seq, 1);
    assert_eq!(alice.reconnects(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_through_a_conversation() {
    let server = TestServer::start(1);
    let alice = server.register("alice").await;
    let note = alice
        .create_conversation(ConversationKind::NoteToSelf, &[])
        .await
        .unwrap();
    for i in 0..25 {
        alice.send(note.id, vec![i as u8]).await.unwrap();
    }
    let mut from = 1;
    let mut seen = Vec::new();
    loop {
        let page = alice.history(note.id, from, 10).await.unwrap();
        assert!(page.messages.len() <= 10);
        seen.extend(page.messages.iter().map(|m| m.seq));
        if page.messages.is_empty() {
            assert_eq!(page.next_seq, 26);
            break;
        }
        from = page.next_seq;
    }
    assert_eq!(seen, (1..=25).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_survives_rebinding_onto_another_shard() {
    let server = TestServer::start(2);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    let forwarded = || server.handle().forwarding_stats.forwarded_in_total();
    let mut rebinds = 0;
    // Each rebind picks a new source port; the kernel's SO_REUSEPORT hash puts
    // it on either shard, so within 32 rebinds one lands on the other shard
    // (chance of never: 2^-32). Every exchange must work either way.
    while rebinds < 32 && (forwarded() == 0 || rebinds < 4) {
        alice.rebind().unwrap();
        rebinds += 1;
        let receipt = alice
            .send(conv.id, format!("after rebind {rebinds}").into_bytes())
            .await
            .unwrap();
        let m = bob.expect_message().await;
        assert_eq!(m.seq, receipt.seq);
        bob.rebind().unwrap();
        bob.send(conv.id, &b"ack"[..]).await.unwrap();
        alice.expect_message().await;
    }
    assert!(
        forwarded() > 0,
        "no datagram was ever handed to its owner shard in {rebinds} rebinds"
    );
    assert_eq!(
        alice.reconnects(),
        0,
        "the connection migrated instead of reconnecting"
    );
    assert_eq!(bob.reconnects(), 0);
    let _ = WAIT;
}
