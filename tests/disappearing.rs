//! Disappearing messages on a device that catches up late (issue 10): the
//! local expiry of a received message follows the server's stamp, which
//! the server flags `DISAPPEARING` when the conversation's timer (or the
//! sender) cut its lifetime at sequencing (PROTOCOL.md §4.6, E2EE.md
//! §3.7), not the timer the device knows when it stores the message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{TestServer, WAIT};
use tempfile::TempDir;
use tern_client::content::Content;
use tern_client::message_store::StoredMessage;
use tern_client::secure::{SecureClient, SecureEvent};

/// The timer the tests set, seconds.
const TIMER: u32 = 60;

/// Registers `user` with state in a new directory.
async fn register(server: &TestServer, user: &str) -> (SecureClient, TempDir) {
    let state = tempfile::tempdir().unwrap();
    let client = SecureClient::register(server.options(state.path()), user, "phone")
        .await
        .unwrap();
    (client, state)
}

/// alice and bob, who is offline (closed) after registering, and their
/// direct conversation (with alice's state directory, kept while she runs).
type Alice = (SecureClient, TempDir);

async fn alice_and_offline_bob(server: &TestServer) -> (Alice, TempDir, u64) {
    let alice = register(server, "alice").await;
    let (bob, bob_state) = register(server, "bob").await;
    bob.close().await;
    drop(bob);
    let conv = alice.0.direct("bob").await.unwrap();
    (alice, bob_state, conv)
}

async fn send(alice: &SecureClient, conv: u64, text: &str) -> u64 {
    alice.send_text(conv, text).await.unwrap().receipt.seq
}

/// Starts bob again and reads his events until message `last` of `conv`
/// arrived; returns him.
async fn catch_up(server: &TestServer, state: &TempDir, conv: u64, last: u64) -> SecureClient {
    let bob = SecureClient::connect(server.options(state.path()))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, bob.next_event())
            .await
            .expect("bob catches up in time")
            .expect("bob's client is open");
        if let SecureEvent::Message(m) = event {
            bob.transport().ack(m.conversation_id, m.seq).await.unwrap();
            if (m.conversation_id, m.seq) == (conv, last) {
                return bob;
            }
        }
    }
}

fn stored(bob: &SecureClient, conv: u64, seq: u64) -> StoredMessage {
    let m = bob.messages().get(conv, seq).unwrap().unwrap().message;
    assert!(matches!(m.content, Content::Text { .. }), "{m:?}");
    m
}

/// Review: `alice send D pre-timer; alice timer D 5; dave listen` deleted
/// dave's copy of the message from before the timer at once. It is kept;
/// the one sent under the timer expires when the server's copy does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_from_before_the_timer_survives_on_a_late_device() {
    let server = TestServer::start(2);
    let ((alice, _alice_state), bob_state, conv) = alice_and_offline_bob(&server).await;
    let before = send(&alice, conv, "from before the timer").await;
    alice.transport().set_timer(conv, TIMER).await.unwrap();
    let under = send(&alice, conv, "under the timer").await;

    let bob = catch_up(&server, &bob_state, conv, under).await;
    assert_eq!(
        bob.transport().timer_secs(conv),
        TIMER,
        "bob knows the timer"
    );
    assert_eq!(stored(&bob, conv, before).expires_at_ms, 0, "kept");
    let m = stored(&bob, conv, under);
    assert_eq!(m.expires_at_ms, m.server_time_ms + u64::from(TIMER) * 1000);
    // Deleting what is due far later than the pre-timer message's send
    // time (but before the timer ends) leaves both.
    bob.messages()
        .purge_expired(m.server_time_ms + 1000)
        .unwrap();
    assert!(bob.messages().get(conv, before).unwrap().is_some());
    assert!(bob.messages().get(conv, under).unwrap().is_some());
    bob.messages().purge_expired(m.expires_at_ms).unwrap();
    assert!(bob.messages().get(conv, before).unwrap().is_some());
    assert!(bob.messages().get(conv, under).unwrap().is_none());
}

/// Review: a device that caught up after the timer was turned off kept
/// forever the messages sent while it was on. They expire as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_under_a_timer_expires_after_the_timer_is_off() {
    let server = TestServer::start(2);
    let ((alice, _alice_state), bob_state, conv) = alice_and_offline_bob(&server).await;
    alice.transport().set_timer(conv, TIMER).await.unwrap();
    let under = send(&alice, conv, "under the timer").await;
    alice.transport().set_timer(conv, 0).await.unwrap();
    let after = send(&alice, conv, "after the timer").await;

    let bob = catch_up(&server, &bob_state, conv, after).await;
    assert_eq!(bob.transport().timer_secs(conv), 0, "bob knows it is off");
    let m = stored(&bob, conv, under);
    assert_eq!(m.expires_at_ms, m.server_time_ms + u64::from(TIMER) * 1000);
    assert_eq!(stored(&bob, conv, after).expires_at_ms, 0, "kept");
    bob.messages().purge_expired(m.expires_at_ms).unwrap();
    assert!(bob.messages().get(conv, under).unwrap().is_none());
    assert!(bob.messages().get(conv, after).unwrap().is_some());
}
