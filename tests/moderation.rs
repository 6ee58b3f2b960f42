//! Group administrators delete others' messages for everyone (issue 10:
//! "The sender (or a group administrator) asks the server to purge";
//! PROTOCOL.md §4.5): the SDK lets an administrator, the server purges
//! its copy, and every member's device applies the administrator's
//! end-to-end encrypted delete; a member who is not one is refused, and
//! their forged delete is ignored.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;

use common::{TestServer, WAIT};
use tempfile::TempDir;
use tern_client::content::Content;
use tern_client::message_store::DeleteRefusal;
use tern_client::secure::content_ops::DeleteError;
use tern_client::secure::{Decrypted, SecureClient, SecureEvent};
use tokio::sync::{mpsc, Mutex};

/// A device whose events a task of its own reads (as an app's loop does),
/// acknowledging every message and forwarding it to the test; an idle one
/// starts reading only when the test says (a phone that was off), so it
/// decrypts everything that came meanwhile then.
struct Device {
    client: Arc<SecureClient>,
    events: Mutex<mpsc::UnboundedReceiver<SecureEvent>>,
    feed: std::sync::Mutex<Option<mpsc::UnboundedSender<SecureEvent>>>,
    _state: TempDir,
}

impl Device {
    async fn register(server: &TestServer, user: &str) -> Device {
        let device = Device::register_idle(server, user).await;
        device.start();
        device
    }

    async fn register_idle(server: &TestServer, user: &str) -> Device {
        let (client, state) = server.register_secure(user).await;
        let (tx, rx) = mpsc::unbounded_channel();
        Device {
            client: Arc::new(client),
            events: Mutex::new(rx),
            feed: std::sync::Mutex::new(Some(tx)),
            _state: state,
        }
    }

    /// Starts reading events (once).
    fn start(&self) {
        let Some(tx) = self.feed.lock().unwrap().take() else {
            return;
        };
        let reader = self.client.clone();
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
    }

    /// The next message (membership and timer notices skipped).
    async fn message(&self) -> Decrypted {
        loop {
            let event = tokio::time::timeout(WAIT, self.events.lock().await.recv())
                .await
                .expect("an event in time")
                .expect("client open");
            match event {
                SecureEvent::Message(m) => return m,
                SecureEvent::Joined { .. }
                | SecureEvent::GroupChanged { .. }
                | SecureEvent::TimerChanged { .. } => {}
                other => panic!("unexpected event {other:?}"),
            }
        }
    }

    fn deleted(&self, conversation: u64, seq: u64) -> bool {
        let target = self.client.messages().target(conversation, seq).unwrap();
        target.unwrap_or_else(|| panic!("{seq} stored")).deleted
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_administrator_deletes_a_members_message_for_everyone() {
    let server = TestServer::start(2);
    let alice = Device::register(&server, "alice").await;
    let bob = Device::register(&server, "bob").await;
    let carol = Device::register(&server, "carol").await;
    let group = alice.client.create_group(&["bob", "carol"]).await.unwrap();
    let seq = bob.client.send_text(group, "bobs regret").await.unwrap();
    let seq = seq.receipt.seq;
    for reader in [&alice, &carol] {
        assert_eq!(reader.message().await.content, Content::text("bobs regret"));
    }

    // carol administers nothing: refused before anything is sent, and a
    // delete she sends anyway changes nobody's copy.
    assert!(matches!(
        carol.client.delete_for_everyone(group, seq).await,
        Err(DeleteError::Refused {
            refusal: DeleteRefusal::NotSender,
            ..
        })
    ));
    let forged = Content::Delete { target_seq: seq };
    carol.client.send(group, &forged).await.unwrap();
    for reader in [&alice, &bob] {
        assert_eq!(reader.message().await.content, forged);
        assert!(!reader.deleted(group, seq), "a member's forged delete");
    }

    // alice, the creator, administers the group.
    alice.client.delete_for_everyone(group, seq).await.unwrap();
    assert!(alice.deleted(group, seq));
    for reader in [&bob, &carol] {
        assert_eq!(reader.message().await.content, forged);
        assert!(reader.deleted(group, seq), "the administrator's delete");
        assert!(reader
            .client
            .messages()
            .search("regret", 5)
            .unwrap()
            .is_empty());
    }
    let page = alice.client.transport().history(group, seq, 1).await;
    let stored = &page.unwrap().messages[0];
    assert_eq!(stored.seq, seq);
    assert!(stored.flags & tern_proto::flags::TOMBSTONE != 0, "purged");
    assert!(stored.payload.is_empty());
}

/// A device that reads an administrator's delete only after the
/// administrator was demoted still applies it: the server purged the
/// message while they administered the group, and receivers ask the server
/// whether it did, not who administers the group now. A demoted
/// administrator is refused by the server, and nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_device_applies_a_delete_from_an_administrator_demoted_since() {
    let server = TestServer::start(2);
    let alice = Device::register(&server, "alice").await;
    let bob = Device::register(&server, "bob").await;
    let carol = Device::register(&server, "carol").await;
    let dave = Device::register_idle(&server, "dave").await;
    let group = alice
        .client
        .create_group(&["bob", "carol", "dave"])
        .await
        .unwrap();
    alice
        .client
        .transport()
        .set_admin(group, "bob", true)
        .await
        .unwrap();
    let first = carol.client.send_text(group, "carols slip").await;
    let first = first.unwrap().receipt.seq;
    let second = carol.client.send_text(group, "carols second").await;
    let second = second.unwrap().receipt.seq;
    for reader in [&alice, &bob] {
        assert_eq!(reader.message().await.content, Content::text("carols slip"));
        assert_eq!(
            reader.message().await.content,
            Content::text("carols second")
        );
    }

    bob.client.delete_for_everyone(group, first).await.unwrap();
    let delete = Content::Delete { target_seq: first };
    assert_eq!(alice.message().await.content, delete);
    assert!(alice.deleted(group, first));
    alice
        .client
        .transport()
        .set_admin(group, "bob", false)
        .await
        .unwrap();

    // Demoted: the server refuses the purge, so no delete goes out.
    let refused = bob.client.delete_for_everyone(group, second).await;
    assert!(
        matches!(
            refused,
            Err(DeleteError::Refused {
                refusal: DeleteRefusal::NotSender,
                ..
            })
        ),
        "{refused:?}"
    );

    // dave's phone comes on: it decrypts carol's message, then bob's delete.
    dave.start();
    assert_eq!(dave.message().await.content, Content::text("carols slip"));
    assert_eq!(dave.message().await.content, Content::text("carols second"));
    assert_eq!(dave.message().await.content, delete);
    assert!(dave.deleted(group, first), "deleted while bob administered");
    assert!(!dave.deleted(group, second));
    assert!(!carol.deleted(group, second));
}
