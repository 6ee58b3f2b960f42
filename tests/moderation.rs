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
/// acknowledging every message and forwarding it to the test.
struct Device {
    client: Arc<SecureClient>,
    events: Mutex<mpsc::UnboundedReceiver<SecureEvent>>,
    _state: TempDir,
}

impl Device {
    async fn register(server: &TestServer, user: &str) -> Device {
        let state = tempfile::tempdir().unwrap();
        let client = SecureClient::register(server.options(state.path()), user, "phone")
            .await
            .unwrap();
        client
            .transport()
            .set_privacy(tern_proto::GroupAdds::Everyone)
            .await
            .unwrap();
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

    /// The next message (membership events skipped).
    async fn message(&self) -> Decrypted {
        loop {
            let event = tokio::time::timeout(WAIT, self.events.lock().await.recv())
                .await
                .expect("an event in time")
                .expect("client open");
            match event {
                SecureEvent::Message(m) => return m,
                SecureEvent::Joined { .. } | SecureEvent::GroupChanged { .. } => {}
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
