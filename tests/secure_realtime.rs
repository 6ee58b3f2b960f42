//! Presence changes and typing reach an app through `SecureClient` as
//! events (issue 11, docs/PROTOCOL.md §4.8 and §4.9), against a real
//! server: a subscriber hears a user go away and offline, and a member
//! hears another user's typing, never its own account's.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{TestServer, WAIT};
use tempfile::TempDir;
use tern_client::secure::{SecureClient, SecureEvent};
use tern_proto::body::presence::{PresenceEntry, PresenceState as S};
use tern_proto::body::typing::TypingChanged;
use tokio::time::{timeout, Instant};

struct Device {
    client: SecureClient,
    _state: TempDir,
}

async fn register(server: &TestServer, user: &str) -> Device {
    let state = tempfile::tempdir().unwrap();
    let client = SecureClient::register(server.options(state.path()), user, "phone")
        .await
        .unwrap();
    Device {
        client,
        _state: state,
    }
}

/// Links a second device to `existing`'s account, approving from `existing`.
async fn link(server: &TestServer, existing: &Device) -> Device {
    let state = tempfile::tempdir().unwrap();
    let options = server.options(state.path());
    let user = existing.client.user().to_owned();
    let pending = tokio::spawn(async move { SecureClient::link(options, &user, "laptop").await });
    let link_id = next_matching(&existing.client, |event| match event {
        SecureEvent::LinkPrompt { link_id, .. } => Some(link_id),
        _ => None,
    })
    .await;
    existing.client.approve_link(link_id, true).await.unwrap();
    Device {
        client: pending.await.unwrap().unwrap(),
        _state: state,
    }
}

/// The first event `pick` accepts (others skipped), failing after [`WAIT`].
async fn next_matching<T>(
    client: &SecureClient,
    mut pick: impl FnMut(SecureEvent) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = timeout(left, client.next_event())
            .await
            .expect("the event arrives in time")
            .expect("client open");
        if let Some(found) = pick(event) {
            return found;
        }
    }
}

async fn next_presence(client: &SecureClient) -> PresenceEntry {
    next_matching(client, |event| match event {
        SecureEvent::PresenceChanged(entry) => Some(entry),
        _ => None,
    })
    .await
}

async fn next_typing(client: &SecureClient) -> TypingChanged {
    next_matching(client, |event| match event {
        SecureEvent::Typing(changed) => Some(changed),
        _ => None,
    })
    .await
}

/// A direct conversation alice starts and bob accepts, so each sees the
/// other's presence.
async fn accepted_direct(alice: &Device, bob: &Device) -> u64 {
    let conversation = alice.client.direct(bob.client.user()).await.unwrap();
    bob.client.accept_request(conversation).await.unwrap();
    conversation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_hears_a_user_go_away_then_offline() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    accepted_direct(&alice, &bob).await;
    let entries = alice
        .client
        .transport()
        .subscribe_presence(&["bob"])
        .await
        .unwrap();
    assert_eq!(entries[0].state, S::Online);

    bob.client
        .transport()
        .set_presence(S::Away, Some("lunch"))
        .await
        .unwrap();
    let away = next_presence(&alice.client).await;
    assert_eq!(
        (away.user.as_str(), away.state, away.status_text.as_deref()),
        ("bob", S::Away, Some("lunch"))
    );

    bob.client.close().await;
    let gone = next_presence(&alice.client).await;
    assert_eq!((gone.user.as_str(), gone.state), ("bob", S::Offline));
    assert!(gone.last_seen_ms > 0, "{gone:?}");
}

/// bob's typing reaches alice as events (start and stop); the typing of
/// bob's laptop reaches alice but not bob's phone. One shard, and the
/// laptop's signal goes on the stream (answered once the server took it),
/// so when alice's later signal reaches bob's phone first, the laptop's
/// was dropped by the SDK, not still on its way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn others_typing_arrives_as_events_and_own_devices_do_not() {
    let server = TestServer::start(1);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conversation = accepted_direct(&alice, &bob).await;
    let bob_device = bob.client.device();

    bob.client
        .transport()
        .typing(conversation, true)
        .await
        .unwrap();
    let started = next_typing(&alice.client).await;
    assert_eq!(
        started,
        TypingChanged {
            conversation_id: conversation,
            user: "bob".into(),
            device: bob_device,
            typing: true,
        }
    );
    bob.client
        .transport()
        .typing_on_stream(conversation, false)
        .await
        .unwrap();
    assert!(!next_typing(&alice.client).await.typing);

    let laptop = link(&server, &bob).await;
    laptop
        .client
        .transport()
        .typing_on_stream(conversation, true)
        .await
        .unwrap();
    let from_laptop = next_typing(&alice.client).await;
    assert_eq!(
        (from_laptop.device, from_laptop.typing),
        (laptop.client.device(), true)
    );
    alice
        .client
        .transport()
        .typing_on_stream(conversation, true)
        .await
        .unwrap();
    let seen_by_phone = next_typing(&bob.client).await;
    assert_eq!(seen_by_phone.user, "alice", "{seen_by_phone:?}");
}
