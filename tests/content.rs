//! Message content features against a real server with real crypto:
//! reactions, replies, edits (sender only, 24 h), deletes (for me, for
//! everyone), delivered and read receipts (per user in a group, off, synced
//! across the reader's devices, never a receipt of a receipt), and the
//! server-blind proof for every new content kind.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{assert_server_blind, TestServer, WAIT};
use tempfile::TempDir;
use tern_client::content::{Content, ReceiptKind};
use tern_client::message_store::{
    DeleteRefusal, Delivery, EditRefusal, MessageStoreError, MessageView, StoredMessage,
    EDIT_WINDOW_MS,
};
use tern_client::secure::content_ops::{DeleteError, EditError, ReactError};
use tern_client::secure::group_info::SetGroupInfoError;
use tern_client::secure::{Decrypted, SecureClient, SecureEvent};
use tern_server::Clock;
use tokio::sync::{mpsc, Mutex};

/// A device whose events are read by a task of its own (as an app's event
/// loop does: receipts are handled inside `next_event`), acknowledging
/// every message, and forwarded to the test.
struct Device {
    client: Arc<SecureClient>,
    events: Mutex<mpsc::UnboundedReceiver<SecureEvent>>,
    _state: TempDir,
}

impl Device {
    fn start(client: SecureClient, state: TempDir) -> Device {
        let client = Arc::new(client);
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = client.clone();
        tokio::spawn(async move {
            while let Some(event) = reader.next_event().await {
                if let SecureEvent::Message(m) = &event {
                    let _ = reader.transport().ack(m.conversation_id, m.seq).await;
                }
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
        Device {
            client,
            events: Mutex::new(rx),
            _state: state,
        }
    }

    fn user(&self) -> &str {
        self.client.user()
    }

    async fn next(&self) -> SecureEvent {
        tokio::time::timeout(WAIT, self.events.lock().await.recv())
            .await
            .expect("an event in time")
            .expect("client open")
    }

    /// The next message (membership and timer notices skipped).
    async fn message(&self) -> Decrypted {
        loop {
            match self.next().await {
                SecureEvent::Message(m) => return m,
                SecureEvent::Joined { .. }
                | SecureEvent::GroupChanged { .. }
                | SecureEvent::TimerChanged { .. } => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
    }

    /// The history view of one message on this device.
    fn view(&self, conversation: u64, seq: u64) -> MessageView {
        self.client
            .messages()
            .view(conversation, 1000, self.user())
            .unwrap()
            .into_iter()
            .find(|v| v.message.seq == seq)
            .unwrap_or_else(|| panic!("message {seq} in {}'s history", self.user()))
    }

    /// Waits until `check` holds on this device's store.
    async fn until(&self, what: &str, check: impl Fn(&Device) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !check(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: {what} did not happen in time",
                self.user()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The receipts in this device's log of `conversation` sent by `user`.
    fn receipts_from(&self, conversation: u64, user: &str) -> Vec<(ReceiptKind, u64)> {
        self.client
            .messages()
            .log(conversation)
            .unwrap()
            .into_iter()
            .filter(|m| m.sender_user == user)
            .filter_map(|m| match m.content {
                Content::Receipt { receipt, up_to_seq } => Some((receipt, up_to_seq)),
                _ => None,
            })
            .collect()
    }
}

async fn register(server: &TestServer, user: &str) -> Device {
    let (client, state) = server.register_secure(user).await;
    Device::start(client, state)
}

/// Links a second device to `existing`'s account, approving from `existing`.
async fn link(server: &TestServer, existing: &Device, name: &str) -> Device {
    let state = tempfile::tempdir().unwrap();
    let options = server.options(state.path());
    let user = existing.user().to_owned();
    let name = name.to_owned();
    let pending = tokio::spawn(async move { SecureClient::link(options, &user, &name).await });
    match existing.next().await {
        SecureEvent::LinkPrompt { link_id, .. } => {
            existing.client.approve_link(link_id, true).await.unwrap()
        }
        other => panic!("expected a link request, got {other:?}"),
    }
    Device::start(pending.await.unwrap().unwrap(), state)
}

/// alice sends `text` in `conversation`; each of `readers` receives it.
async fn say(from: &Device, conversation: u64, text: &str, readers: &[&Device]) -> u64 {
    let seq = from
        .client
        .send_text(conversation, text)
        .await
        .unwrap()
        .receipt
        .seq;
    for reader in readers {
        let m = reader.message().await;
        assert_eq!((m.seq, m.content), (seq, Content::text(text)));
    }
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_are_set_replaced_and_removed_on_the_other_side() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    let seq = say(&alice, conv, "lunch?", &[&bob]).await;

    for emoji in ["👍", "❤️"] {
        bob.client.react(conv, seq, emoji).await.unwrap();
        let m = alice.message().await;
        assert_eq!(
            m.content,
            Content::Reaction {
                target_seq: seq,
                emoji: emoji.into()
            }
        );
        assert_eq!(
            alice.view(conv, seq).reactions,
            [("bob".to_owned(), emoji.to_owned())]
        );
        // The reactor's own device shows it too.
        assert_eq!(bob.view(conv, seq).reactions.len(), 1);
    }
    bob.client.remove_reaction(conv, seq).await.unwrap();
    alice.message().await;
    assert!(alice.view(conv, seq).reactions.is_empty());

    // Typed refusals, nothing sent.
    assert!(matches!(
        bob.client.react(conv, seq, "").await,
        Err(ReactError::NoEmoji)
    ));
    assert!(matches!(
        bob.client.react(conv, seq, &"x".repeat(65)).await,
        Err(ReactError::EmojiTooLong(65))
    ));
    assert!(matches!(
        bob.client.react(conv, 999, "👍").await,
        Err(ReactError::NoSuchMessage { seq: 999, .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_carries_the_quote_and_edits_follow_the_sender_rule() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    let seq = say(&alice, conv, "meet at noon", &[&bob]).await;

    let reply = bob.client.reply(conv, seq, "see you").await.unwrap();
    let m = alice.message().await;
    assert_eq!(m.seq, reply.receipt.seq);
    assert_eq!(m.content, Content::reply(seq, "meet at noon", "see you"));
    assert_eq!(
        alice.view(conv, m.seq).message.content.body(),
        Some("see you")
    );

    // The sender edits: readers see the latest text and that it was edited.
    alice.client.edit(conv, seq, "meet at one").await.unwrap();
    let m = bob.message().await;
    assert!(matches!(m.content, Content::Edit { target_seq, .. } if target_seq == seq));
    let view = bob.view(conv, seq);
    assert_eq!(view.message.text(), Some("meet at one"));
    assert!(view.edited_at_ms.is_some());
    assert_eq!(bob.client.messages().search("one", 10).unwrap()[0].seq, seq);

    // bob may not: refused locally, and a forged edit is ignored by alice.
    assert!(matches!(
        bob.client.edit(conv, seq, "forged").await,
        Err(EditError::Refused {
            refusal: EditRefusal::NotSender,
            ..
        })
    ));
    let forged = Content::Edit {
        target_seq: seq,
        body: "forged by bob".into(),
    };
    bob.client.send(conv, &forged).await.unwrap();
    assert_eq!(alice.message().await.content, forged);
    assert_eq!(alice.view(conv, seq).message.text(), Some("meet at one"));

    // Deleted for everyone: bob's reply no longer quotes it anywhere, and
    // a reply that arrives after the delete is stored without its quote.
    let late = Content::reply(seq, "meet at one", "late reply");
    let late_seq = bob.client.send(conv, &late).await.unwrap().receipt.seq;
    assert_eq!(alice.message().await.content, late);
    alice.client.delete_for_everyone(conv, seq).await.unwrap();
    assert!(matches!(
        bob.message().await.content,
        Content::Delete { .. }
    ));
    let after = Content::reply(seq, "meet at one", "after the delete");
    let after_seq = bob.client.send(conv, &after).await.unwrap().receipt.seq;
    assert_eq!(alice.message().await.seq, after_seq);
    for device in [&alice, &bob] {
        for (at, body) in [
            (reply.receipt.seq, "see you"),
            (late_seq, "late reply"),
            (after_seq, "after the delete"),
        ] {
            let content = device.view(conv, at).message.content;
            assert_eq!(content, Content::reply(seq, "", body), "{}", device.user());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_later_than_24_hours_is_refused_and_ignored() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // The server's clock starts two days ago, so the message is old by this
    // device's clock (the local refusal), then moves to now (receivers).
    let clock = Clock::manual(now - 2 * EDIT_WINDOW_MS);
    let server = TestServer::start_with_clock(2, clock.clone(), |_| {});
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    let seq = say(&alice, conv, "old news", &[&bob]).await;

    assert!(matches!(
        alice.client.edit(conv, seq, "too late").await,
        Err(EditError::Refused {
            refusal: EditRefusal::TooLate,
            ..
        })
    ));
    // A client that skips the check: its edit is stored 25 hours after
    // the original by the server's clock, and bob ignores it.
    clock.advance(EDIT_WINDOW_MS + 60 * 60 * 1000);
    let forged = Content::Edit {
        target_seq: seq,
        body: "rewritten history".into(),
    };
    alice.client.send(conv, &forged).await.unwrap();
    let m = bob.message().await;
    assert!(m.server_time_ms > bob.view(conv, seq).message.server_time_ms + EDIT_WINDOW_MS);
    let view = bob.view(conv, seq);
    assert_eq!(view.message.text(), Some("old news"));
    assert_eq!(view.edited_at_ms, None);
}

/// A blocked user's sends are acknowledged without a seq (PROTOCOL.md
/// §4.4); the sender's device keeps every one, in the order sent, after
/// the message that was latest then, in state sent (never delivered or
/// read, though the blocker read everything before), and nothing can
/// address them by seq 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_senders_messages_are_all_kept_as_sent_in_order() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    let hello = say(&bob, conv, "hello", &[&alice]).await;
    alice.client.mark_read(conv, hello).await.unwrap();
    bob.until("alice's read receipt", |d| {
        d.view(conv, hello).overall() == Some(Delivery::Read)
    })
    .await;
    alice.client.transport().block("bob").await.unwrap();
    for text in ["one", "two", "three"] {
        let sent = bob.client.send_text(conv, text).await.unwrap();
        assert_eq!(sent.receipt.seq, 0);
    }
    let history = bob.client.messages().view(conv, 100, "bob").unwrap();
    let shown: Vec<(u64, Option<&str>, Option<Delivery>)> = history
        .iter()
        .map(|v| (v.message.seq, v.message.text(), v.overall()))
        .collect();
    assert_eq!(
        shown,
        [
            (hello, Some("hello"), Some(Delivery::Read)),
            (0, Some("one"), Some(Delivery::Sent)),
            (0, Some("two"), Some(Delivery::Sent)),
            (0, Some("three"), Some(Delivery::Sent)),
        ]
    );
    // Alice's next message is shown after them; she never got them.
    let after = say(&alice, conv, "alice again", &[&bob]).await;
    assert!(after > hello);
    let texts: Vec<String> = bob
        .client
        .messages()
        .history(conv, 100)
        .unwrap()
        .iter()
        .map(|m| m.text().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(texts, ["hello", "one", "two", "three", "alice again"]);
    let alice_has: Vec<u64> = alice
        .client
        .messages()
        .history(conv, 100)
        .unwrap()
        .iter()
        .map(|m| m.seq)
        .collect();
    assert_eq!(alice_has, [hello, after]);
    // Seq 0 names nothing: a typed error, nothing sent.
    let no_seq = |e: &MessageStoreError| matches!(e, MessageStoreError::NoSuchSeq { seq: 0, .. });
    match bob.client.edit(conv, 0, "changed").await {
        Err(EditError::Store(e)) => assert!(no_seq(&e), "{e}"),
        other => panic!("edit of seq 0: {other:?}"),
    }
    match bob.client.delete_for_everyone(conv, 0).await {
        Err(DeleteError::Store(e)) => assert!(no_seq(&e), "{e}"),
        other => panic!("delete of seq 0: {other:?}"),
    }
    match bob.client.react(conv, 0, "👍").await {
        Err(ReactError::Store(e)) => assert!(no_seq(&e), "{e}"),
        other => panic!("reaction to seq 0: {other:?}"),
    }
    assert!(bob.client.delete_for_me(conv, 0).is_err());
    let kept = bob.client.messages().view(conv, 100, "bob").unwrap();
    assert_eq!(kept.len(), 5);
    assert!(kept.iter().all(|v| !v.deleted && v.edited_at_ms.is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_for_me_and_for_everyone_leave_tombstones() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    let first = say(&alice, conv, "typo message", &[&bob]).await;
    let second = say(&alice, conv, "keep this", &[&bob]).await;

    // For me: only bob's copy of the second goes.
    bob.client.delete_for_me(conv, second).unwrap();
    assert!(bob.view(conv, second).deleted);
    assert!(!alice.view(conv, second).deleted);
    assert!(matches!(
        bob.client.delete_for_me(conv, second),
        Err(DeleteError::AlreadyDeleted { .. })
    ));

    // For everyone: only the sender.
    assert!(matches!(
        bob.client.delete_for_everyone(conv, first).await,
        Err(DeleteError::Refused {
            refusal: DeleteRefusal::NotSender,
            ..
        })
    ));
    let forged = Content::Delete { target_seq: first };
    bob.client.send(conv, &forged).await.unwrap();
    assert_eq!(alice.message().await.content, forged);
    assert!(
        !alice.view(conv, first).deleted,
        "a forged delete is ignored"
    );

    alice.client.delete_for_everyone(conv, first).await.unwrap();
    assert_eq!(
        bob.message().await.content,
        Content::Delete { target_seq: first }
    );
    for device in [&alice, &bob] {
        let view = device.view(conv, first);
        assert!(view.deleted, "{}", device.user());
        assert_eq!(view.message.text(), Some(""));
        assert!(device
            .client
            .messages()
            .search("typo", 5)
            .unwrap()
            .is_empty());
    }
    // The server keeps only a tombstone in its place.
    let page = alice
        .client
        .transport()
        .history(conv, first, 1)
        .await
        .unwrap();
    let stored = &page.messages[0];
    assert_eq!(stored.seq, first);
    assert!(stored.flags & tern_proto::flags::TOMBSTONE != 0);
    assert!(stored.payload.is_empty());

    // A device away meanwhile gets the tombstone, then the delete: its
    // history shows the message deleted, never its text.
    let Device {
        client,
        _state: state,
        ..
    } = bob;
    client.close().await;
    let gone = alice.client.send_text(conv, "oops").await.unwrap();
    let gone = gone.receipt.seq;
    alice.client.delete_for_everyone(conv, gone).await.unwrap();
    let client = SecureClient::connect(server.options(state.path()))
        .await
        .unwrap();
    let bob = Device::start(client, state);
    assert_eq!(
        bob.message().await.content,
        Content::Delete { target_seq: gone }
    );
    assert!(bob.view(conv, gone).deleted);
    assert!(bob.client.messages().search("oops", 5).unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_then_read_reach_the_sender_per_user_in_a_group() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let group = alice.client.create_group(&["bob", "carol"]).await.unwrap();
    let seq = say(&alice, group, "hello group", &[&bob, &carol]).await;

    let states = |d: &Device| {
        let v = d.view(group, seq);
        (v.receipts.clone(), v.overall())
    };
    alice
        .until("both delivered", |d| {
            states(d).0
                == [
                    ("bob".to_owned(), Delivery::Delivered),
                    ("carol".to_owned(), Delivery::Delivered),
                ]
        })
        .await;
    bob.client.mark_read(group, seq).await.unwrap();
    alice
        .until("bob read", |d| states(d).0[0].1 == Delivery::Read)
        .await;
    assert_eq!(
        states(&alice),
        (
            vec![
                ("bob".to_owned(), Delivery::Read),
                ("carol".to_owned(), Delivery::Delivered)
            ],
            Some(Delivery::Delivered)
        )
    );
    carol.client.mark_read(group, seq).await.unwrap();
    alice
        .until("everyone read", |d| states(d).1 == Some(Delivery::Read))
        .await;
    // Marking read again, or below the position, sends nothing.
    assert!(!bob.client.mark_read(group, seq).await.unwrap());
    assert!(!bob.client.mark_read(group, seq - 1).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_read_receipts_off_none_are_sent_and_none_shown() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    // Not about message requests: bob accepts alice's conversation.
    bob.client.accept_request(conv).await.unwrap();
    bob.client.set_read_receipts(false).unwrap();
    assert!(!bob.client.read_receipts().unwrap());
    let seq = say(&alice, conv, "did you read this?", &[&bob]).await;
    alice
        .until("delivered", |d| {
            d.view(conv, seq).overall() == Some(Delivery::Delivered)
        })
        .await;
    assert!(bob.client.mark_read(conv, seq).await.unwrap());
    assert_eq!(bob.client.read_position(conv).unwrap(), seq);

    // bob's next message proves everything he sent before has arrived.
    let reply = say(&bob, conv, "maybe", &[&alice]).await;
    assert!(bob
        .receipts_from(conv, "bob")
        .iter()
        .all(|(kind, _)| *kind == ReceiptKind::Delivered));
    assert_eq!(
        alice.view(conv, seq).overall(),
        Some(Delivery::Delivered),
        "no read receipt from bob"
    );

    // alice reads bob's reply; bob, with read receipts off, sees no read state.
    alice.client.mark_read(conv, reply).await.unwrap();
    bob.until("alice's read receipt arrived", |d| {
        d.receipts_from(conv, "alice")
            .contains(&(ReceiptKind::Read, reply))
    })
    .await;
    assert_eq!(bob.view(conv, reply).overall(), Some(Delivery::Delivered));
    bob.client.set_read_receipts(true).unwrap();
    assert_eq!(bob.view(conv, reply).overall(), Some(Delivery::Read));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_position_syncs_to_the_readers_other_device() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let laptop = link(&server, &bob, "laptop").await;
    let conv = alice.client.direct("bob").await.unwrap();
    // Not about message requests: bob accepts alice's conversation.
    bob.client.accept_request(conv).await.unwrap();
    let seq = say(&alice, conv, "read me once", &[&bob, &laptop]).await;
    assert_eq!(laptop.client.read_position(conv).unwrap(), 0);
    bob.client.mark_read(conv, seq).await.unwrap();
    laptop
        .until("the phone's read position", |d| {
            d.client.read_position(conv).unwrap() == seq
        })
        .await;
    alice
        .until("read", |d| {
            d.view(conv, seq).overall() == Some(Delivery::Read)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_gets_few_receipts_and_no_receipt_answers_a_receipt() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    // Not about message requests: bob accepts alice's conversation.
    bob.client.accept_request(conv).await.unwrap();
    let mut last = 0;
    for i in 0..100 {
        let sent = alice
            .client
            .send_text(conv, &format!("burst {i}"))
            .await
            .unwrap();
        last = sent.receipt.seq;
    }
    for _ in 0..100 {
        bob.message().await;
    }
    alice
        .until("all delivered", |d| {
            d.view(conv, last).overall() == Some(Delivery::Delivered)
        })
        .await;
    let done = say(&bob, conv, "done", &[&alice]).await;
    bob.client.mark_read(conv, last).await.unwrap();
    // alice closes: her queued receipts go first, then she sends nothing.
    alice.client.close().await;
    bob.until("alice's receipt of done", |d| {
        d.receipts_from(conv, "alice")
            .contains(&(ReceiptKind::Delivered, done))
    })
    .await;

    let delivered: Vec<_> = bob
        .receipts_from(conv, "bob")
        .into_iter()
        .filter(|(kind, _)| *kind == ReceiptKind::Delivered)
        .collect();
    assert!(
        !delivered.is_empty() && delivered.len() <= 10,
        "100 messages were acknowledged with {} receipts: {delivered:?}",
        delivered.len()
    );
    // Every receipt, either way, covers a visible message of the other
    // user: never a receipt (nor a reaction, edit or delete).
    let log: Vec<StoredMessage> = bob.client.messages().log(conv).unwrap();
    for m in &log {
        let Content::Receipt { up_to_seq, .. } = m.content else {
            continue;
        };
        let target = log
            .iter()
            .find(|t| t.seq == up_to_seq)
            .expect("the covered seq");
        assert!(
            target.content.is_visible() && target.sender_user != m.sender_user,
            "receipt #{} from {} covers {:?}",
            m.seq,
            m.sender_user,
            target
        );
    }
    assert_eq!(
        bob.receipts_from(conv, "alice"),
        [(ReceiptKind::Delivered, done)],
        "alice acknowledged only bob's one message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_after_being_offline_is_acknowledged_with_one_receipt_or_two() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    // Not about message requests: bob accepts alice's conversation.
    bob.client.accept_request(conv).await.unwrap();
    say(&alice, conv, "before", &[&bob]).await;
    let Device {
        client,
        _state: state,
        ..
    } = bob;
    client.close().await;
    let mut last = 0;
    for i in 0..50 {
        let sent = alice
            .client
            .send_text(conv, &format!("while away {i}"))
            .await;
        last = sent.unwrap().receipt.seq;
    }
    let client = SecureClient::connect(server.options(state.path()))
        .await
        .unwrap();
    let bob = Device::start(client, state);
    for _ in 0..50 {
        bob.message().await;
    }
    alice
        .until("all delivered", |d| {
            d.view(conv, last).overall() == Some(Delivery::Delivered)
        })
        .await;
    let receipts = alice.receipts_from(conv, "bob");
    // One for "before", then one or two for the 50 caught up.
    assert!(
        (2..=3).contains(&receipts.len()),
        "{} receipts: {receipts:?}",
        receipts.len()
    );
}

/// The server-blind proof (like `e2ee.rs` `server_stores_only_ciphertext`)
/// after every new content kind crossed it: replies (quote and body),
/// reactions, edits, deletes and receipts, 1:1 and in a group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_stores_only_ciphertext_of_every_content_kind() {
    let mut server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let direct = alice.client.direct("bob").await.unwrap();
    let group = alice.client.create_group(&["bob", "carol"]).await.unwrap();
    let marker = |what: &str, conv: u64| format!("PLAINTEXT-{what}-{conv}-7d21c");
    let mut markers = Vec::new();
    for (conv, readers) in [(direct, vec![&bob]), (group, vec![&bob, &carol])] {
        let original = marker("ORIGINAL", conv);
        let seq = say(&alice, conv, &original, &readers).await;
        let reply = marker("REPLY", conv);
        bob.client.reply(conv, seq, &reply).await.unwrap();
        // A text marker the scan can find: sent as a reaction's content
        // directly, past the SDK's one-emoji check (receivers keep it).
        let reaction = marker("EMOJI", conv);
        let content = Content::Reaction {
            target_seq: seq,
            emoji: reaction.clone(),
        };
        bob.client.send(conv, &content).await.unwrap();
        let edit = marker("EDIT", conv);
        alice.client.edit(conv, seq, &edit).await.unwrap();
        bob.client.mark_read(conv, seq).await.unwrap();
        alice.client.delete_for_everyone(conv, seq).await.unwrap();
        // Each reader saw each kind arrive (bob: alice's edit and delete;
        // carol: bob's reply and reaction too).
        for reader in &readers {
            let expected: &[u8] = match reader.user() {
                "bob" => &[3, 6],
                _ => &[5, 2, 3, 6],
            };
            let mut kinds = Vec::new();
            while kinds.len() < expected.len() {
                kinds.push(reader.message().await.content.kind());
            }
            assert_eq!(kinds, expected, "{}", reader.user());
        }
        alice
            .until("bob's read receipt", |d| {
                d.receipts_from(conv, "bob")
                    .iter()
                    .any(|(kind, _)| *kind == ReceiptKind::Read)
            })
            .await;
        markers.extend([original, reply, reaction, edit]);
    }
    let control = b"UNENCRYPTED-CONTROL-MARKER-51ae";
    alice
        .client
        .transport()
        .send(direct, &control[..])
        .await
        .unwrap();
    server.stop().await;

    assert_server_blind(server.data_dir(), control, &markers);
}

/// Group info (content kind 7): members see the latest name, topic and
/// avatar, whoever set it; bounds and non-groups are refused before
/// sending; the server stores only ciphertext of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_info_reaches_members_latest_wins_and_the_server_cannot_read_it() {
    let mut server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let group = alice.client.create_group(&["bob", "carol"]).await.unwrap();
    say(&alice, group, "hello group", &[&bob, &carol]).await;
    assert!(alice.client.group_info(group).unwrap().is_none());

    let long = "n".repeat(129);
    assert!(matches!(
        alice.client.set_group_info(group, &long, "", &[]).await,
        Err(SetGroupInfoError::Invalid(_))
    ));
    let direct = alice.client.direct("bob").await.unwrap();
    assert!(matches!(
        alice.client.set_group_info(direct, "x", "", &[]).await,
        Err(SetGroupInfoError::NotAGroup(_))
    ));

    let markers = [
        "GROUPNAME-MARKER-3f9a",
        "GROUPTOPIC-MARKER-3f9a",
        "GROUPAVATAR-MARKER-3f9a",
        "RENAMED-MARKER-3f9a",
    ];
    alice
        .client
        .set_group_info(group, markers[0], markers[1], markers[2].as_bytes())
        .await
        .unwrap();
    for reader in [&bob, &carol] {
        let m = reader.message().await;
        assert!(
            matches!(&m.content, Content::GroupInfo(i) if i.name.as_deref() == Some(markers[0]))
        );
    }
    let seen = bob.client.group_info(group).unwrap().unwrap();
    assert_eq!(
        (seen.info.topic.as_str(), seen.info.avatar.as_slice()),
        (markers[1], markers[2].as_bytes())
    );
    bob.client
        .set_group_info(group, markers[3], markers[1], &[])
        .await
        .unwrap();
    for reader in [&alice, &carol] {
        reader.message().await;
    }
    for device in [&alice, &bob, &carol] {
        let current = device.client.group_info(group).unwrap().unwrap();
        assert_eq!(current.info.name, markers[3], "{}", device.user());
        assert_eq!(current.set_by, "bob");
        assert!(current.info.avatar.is_empty());
        // Metadata, not a message of the history.
        let history = device.client.messages().history(group, 100).unwrap();
        assert_eq!(history.len(), 1, "{}", device.user());
    }

    let control = b"UNENCRYPTED-CONTROL-MARKER-77c0";
    alice
        .client
        .transport()
        .send(group, &control[..])
        .await
        .unwrap();
    server.stop().await;
    assert_server_blind(server.data_dir(), control, &markers);
}

mod cli {
    //! The content commands of the `tern` binary against a server process:
    //! the README walkthrough's reaction, reply, edit and delete, `read`
    //! and `receipts`, and how `history` shows them.

    use super::common::{data_dir, ServerProcess};

    use super::common::{run_tern as tern, tern_ok as ok};

    fn line(history: &str, seq: u32) -> &str {
        history
            .lines()
            .find(|l| l.contains(&format!(" #{seq}] ")))
            .unwrap_or_else(|| panic!("#{seq} in {history}"))
    }

    #[test]
    fn react_reply_edit_delete_read_and_receipts_from_the_command_line() {
        let (_tmp, data) = data_dir();
        let server = ServerProcess::spawn(&data, 2);
        let clients = tempfile::tempdir().unwrap();
        let state = |u: &str| clients.path().join(u).to_string_lossy().into_owned();
        let (alice, bob) = (state("alice"), state("bob"));
        let (addr, fp) = (server.addr.to_string(), hex::encode(server.fingerprint));
        for (dir, user) in [(&alice, "alice"), (&bob, "bob")] {
            let flags = ["--server", &addr, "--fingerprint", &fp];
            ok(tern(
                &[&["register", "--state", dir][..], &flags, &[user]].concat(),
            ));
        }
        let conv = ok(tern(&["create", "--state", &alice, "direct", "bob"]));
        let conv = conv.trim();
        ok(tern(&["send", "--state", &alice, conv, "lunch at noon"]));
        ok(tern(&["send", "--state", &alice, conv, "typo"]));
        ok(tern(&["listen", "--state", &bob, "--count", "2"]));
        // #3 is bob's delivered receipt (sent as his listener closed).

        let reacted = ok(tern(&["react", "--state", &bob, conv, "1", "👍"]));
        assert!(reacted.starts_with("reacted 👍 to #1"), "{reacted}");
        let replied = ok(tern(&["reply", "--state", &bob, conv, "1", "yes"]));
        assert!(replied.contains("(reply to #1)"), "{replied}");
        let refused = tern(&["edit", "--state", &bob, conv, "1", "forged"]);
        assert!(!refused.status.success());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("only the message's sender"),
            "{refused:?}"
        );
        let edited = ok(tern(&[
            "edit",
            "--state",
            &alice,
            conv,
            "1",
            "lunch at one",
        ]));
        // The edit's own seq, as a reaction's.
        assert!(edited.starts_with("edited #1 (seq "), "{edited}");
        let deleted = ok(tern(&[
            "delete",
            "--state",
            &alice,
            conv,
            "2",
            "--everyone",
        ]));
        assert_eq!(deleted, "deleted #2 for everyone\n");

        let heard = ok(tern(&["listen", "--state", &alice, "--count", "2"]));
        assert!(heard.contains("bob/1: <reacted 👍 to #1>"), "{heard}");
        assert!(
            heard.contains("bob/1: (reply to #1 \"lunch at noon\") yes"),
            "{heard}"
        );
        let heard = ok(tern(&["listen", "--state", &bob, "--count", "2"]));
        assert!(heard.contains("<edited #1: lunch at one>"), "{heard}");
        assert!(heard.contains("<deleted #2 for everyone>"), "{heard}");

        let history = ok(tern(&["history", "--state", &bob, conv]));
        assert!(
            line(&history, 1).ends_with("alice/1: lunch at one (edited)  [👍 bob]"),
            "{history}"
        );
        assert!(
            line(&history, 2).ends_with("alice/1: <message deleted>"),
            "{history}"
        );
        let reply = line(&history, 5);
        assert!(
            reply.contains("bob/1: (reply to #1 \"lunch at noon\") yes  ("),
            "{history}"
        );
        let history = ok(tern(&["history", "--state", &alice, conv]));
        // alice's listener got bob's receipt: her #1 is delivered.
        assert!(
            line(&history, 1).ends_with("lunch at one (edited)  [👍 bob]  (delivered)"),
            "{history}"
        );

        assert_eq!(
            ok(tern(&["read", "--state", &bob, conv])),
            "read up to #5\n"
        );
        assert_eq!(
            ok(tern(&["read", "--state", &bob, conv, "4"])),
            "already read up to #4 or later\n"
        );
        // Past the head: clamped to the latest message, and said so.
        let past = tern(&["read", "--state", &bob, conv, "99999999"]);
        let said = String::from_utf8_lossy(&past.stderr).into_owned();
        assert!(said.contains("past the latest message, #5"), "{said}");
        assert_eq!(ok(past), "already read up to #5 or later\n");
        let on = ok(tern(&["receipts", "--state", &bob]));
        assert!(on.starts_with("read receipts on"), "{on}");
        let off = ok(tern(&["receipts", "--state", &bob, "off"]));
        assert!(off.starts_with("read receipts off"), "{off}");
        let shown = ok(tern(&["receipts", "--state", &bob]));
        assert!(shown.starts_with("read receipts off"), "{shown}");
        // A reaction is one emoji, not any text.
        let words = tern(&["react", "--state", &bob, conv, "1", "lol"]);
        assert!(!words.status.success());
        let why = String::from_utf8_lossy(&words.stderr);
        assert!(why.contains("one emoji"), "{why}");
        ok(tern(&["delete", "--state", &bob, conv, "1"]));
        let history = ok(tern(&["history", "--state", &bob, conv]));
        assert!(
            line(&history, 1).ends_with("<message deleted>"),
            "{history}"
        );
        assert!(!line(&ok(tern(&["history", "--state", &alice, conv])), 1).contains("deleted"));
        assert_eq!(server.terminate().code(), Some(0));
    }

    /// `tern group-info` shows nothing, sets the name and topic, and the
    /// other member's device shows them; `tern history` says when a
    /// message sent under a timer disappears.
    #[test]
    fn group_info_and_disappearing_messages_from_the_command_line() {
        let (_tmp, data) = data_dir();
        let server = ServerProcess::spawn(&data, 2);
        let clients = tempfile::tempdir().unwrap();
        let state = |u: &str| clients.path().join(u).to_string_lossy().into_owned();
        let (alice, bob) = (state("alice"), state("bob"));
        let (addr, fp) = (server.addr.to_string(), hex::encode(server.fingerprint));
        for (dir, user) in [(&alice, "alice"), (&bob, "bob")] {
            let flags = ["--server", &addr, "--fingerprint", &fp];
            ok(tern(
                &[&["register", "--state", dir][..], &flags, &[user]].concat(),
            ));
            ok(tern(&["privacy", "--state", dir, "--groups", "everyone"]));
        }
        let group = ok(tern(&["create", "--state", &alice, "group", "bob"]));
        let group = group.trim();

        let none = tern(&["group-info", "--state", &alice, group]);
        assert!(none.status.success() && none.stdout.is_empty(), "{none:?}");
        assert!(String::from_utf8_lossy(&none.stderr).contains("no name or topic yet"));
        let set = ok(tern(&[
            "group-info",
            "--state",
            &alice,
            group,
            "--name",
            "Climbing",
            "--topic",
            "Saturdays",
        ]));
        assert_eq!(
            set,
            format!("group {group}: name \"Climbing\", topic \"Saturdays\"\n")
        );
        let mut heard = String::new();
        for _ in 0..5 {
            heard.push_str(&ok(tern(&["listen", "--state", &bob, "--count", "1"])));
            if heard.contains("<set the group name to \"Climbing\", the topic to \"Saturdays\">") {
                break;
            }
        }
        assert!(
            heard.contains("<set the group name to \"Climbing\""),
            "{heard}"
        );
        let shown = ok(tern(&["group-info", "--state", &bob, group]));
        assert!(
            shown.starts_with("name: Climbing\ntopic: Saturdays\nset by alice at "),
            "{shown}"
        );
        // A flag left out keeps its value.
        ok(tern(&[
            "group-info",
            "--state",
            &bob,
            group,
            "--topic",
            "Sundays",
        ]));
        let shown = ok(tern(&["group-info", "--state", &bob, group]));
        assert!(
            shown.starts_with("name: Climbing\ntopic: Sundays\nset by bob"),
            "{shown}"
        );
        // alice has not heard bob's topic: renaming from her device sends
        // the name only, so his topic stays on every device.
        let behind = ok(tern(&["group-info", "--state", &alice, group]));
        assert!(behind.contains("topic: Saturdays"), "{behind}");
        let set = ok(tern(&[
            "group-info",
            "--state",
            &alice,
            group,
            "--name",
            "Bouldering",
        ]));
        assert_eq!(set, format!("group {group}: name \"Bouldering\"\n"));
        for device in [&alice, &bob] {
            let mut shown = String::new();
            for _ in 0..5 {
                shown = ok(tern(&["group-info", "--state", device, group]));
                if shown.starts_with("name: Bouldering\ntopic: Sundays\nset by alice") {
                    break;
                }
                ok(tern(&["listen", "--state", device, "--count", "1"]));
            }
            assert!(
                shown.starts_with("name: Bouldering\ntopic: Sundays\nset by alice"),
                "{device}: {shown}"
            );
        }

        ok(tern(&["timer", "--state", &alice, group, "3600"]));
        ok(tern(&["send", "--state", &alice, group, "gone in an hour"]));
        let history = ok(tern(&["history", "--state", &alice, group]));
        let sent = history
            .lines()
            .find(|l| l.contains("gone in an hour"))
            .unwrap_or_else(|| panic!("{history}"));
        assert!(sent.contains("  (disappears "), "{history}");
        assert_eq!(server.terminate().code(), Some(0));
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Disappearing messages (issue 10): once a conversation has a timer, the
/// local copies of its later messages, sent and received, carry the same
/// expiry and are deleted from both devices' stores (rows and file bytes)
/// when it passes; a message from before the timer stays.
/// A message deleted for everyone before it reached a device that was not
/// running arrives there as the server's tombstone, which expires when
/// the message would have (the conversation's timer), not never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_received_later_expires_with_its_message() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob_state = tempfile::tempdir().unwrap();
    let bob = SecureClient::register(server.options(bob_state.path()), "bob", "phone")
        .await
        .unwrap();
    bob.close().await;
    drop(bob);
    let conv = alice.client.direct("bob").await.unwrap();
    alice.client.transport().set_timer(conv, 60).await.unwrap();
    let seq = alice
        .client
        .send_text(conv, "gone before bob looked")
        .await
        .unwrap()
        .receipt
        .seq;
    alice.client.delete_for_everyone(conv, seq).await.unwrap();

    let client = SecureClient::connect(server.options(bob_state.path()))
        .await
        .unwrap();
    let bob = Device::start(client, bob_state);
    bob.until("the tombstone", |d| {
        d.client
            .messages()
            .target(conv, seq)
            .unwrap()
            .is_some_and(|t| t.deleted)
    })
    .await;
    let tombstone = bob
        .client
        .messages()
        .get(conv, seq)
        .unwrap()
        .unwrap()
        .message;
    assert_eq!(
        tombstone.expires_at_ms,
        tombstone.server_time_ms + 60_000,
        "the tombstone expires with its message"
    );
    bob.client
        .messages()
        .purge_expired(tombstone.expires_at_ms)
        .unwrap();
    assert!(bob.client.messages().get(conv, seq).unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disappearing_messages_are_deleted_on_both_devices_when_they_expire() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    let kept = say(&alice, conv, "from before the timer", &[&bob]).await;
    const SECS: u32 = 5;
    alice
        .client
        .transport()
        .set_timer(conv, SECS)
        .await
        .unwrap();
    bob.until("the timer notice", |d| {
        d.client.transport().timer_secs(conv) == SECS
    })
    .await;

    let mine = say(&alice, conv, "vanishmarker one", &[&bob]).await;
    let theirs = bob
        .client
        .send_text(conv, "vanishmarker two")
        .await
        .unwrap()
        .receipt
        .seq;
    assert_eq!(alice.message().await.seq, theirs);
    for device in [&alice, &bob] {
        for seq in [mine, theirs] {
            let m = device
                .client
                .messages()
                .get(conv, seq)
                .unwrap()
                .unwrap()
                .message;
            assert_eq!(
                m.expires_at_ms,
                m.server_time_ms + u64::from(SECS) * 1000,
                "{}'s copy of {seq} expires with the timer",
                device.user()
            );
        }
        let before = device.client.messages().get(conv, kept).unwrap().unwrap();
        assert_eq!(before.message.expires_at_ms, 0, "sent before the timer");
        // The scan sees the plaintext while it is stored.
        let mut hits = Vec::new();
        common::files_containing(device._state.path(), b"vanishmarker", &mut hits);
        assert!(
            !hits.is_empty(),
            "{}: the scan cannot see the store",
            device.user()
        );
    }

    for device in [&alice, &bob] {
        device
            .until("the disappearing messages expire", |d| {
                d.client.messages().purge_expired(now_ms()).unwrap();
                let seqs: Vec<u64> = d
                    .client
                    .messages()
                    .history(conv, 100)
                    .unwrap()
                    .iter()
                    .map(|m| m.seq)
                    .collect();
                seqs == [kept]
            })
            .await;
        assert!(device.client.messages().get(conv, mine).unwrap().is_none());
        assert!(device
            .client
            .messages()
            .get(conv, theirs)
            .unwrap()
            .is_none());
        assert!(device
            .client
            .messages()
            .search("vanishmarker", 10)
            .unwrap()
            .is_empty());
        let mut hits = Vec::new();
        common::files_containing(device._state.path(), b"vanishmarker", &mut hits);
        assert!(
            hits.is_empty(),
            "{}: plaintext left in {hits:?}",
            device.user()
        );
    }
}
