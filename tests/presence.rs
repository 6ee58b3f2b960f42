//! Presence (issue 11) against a real server: online while a device is
//! connected, offline with last seen when the last one leaves, away / busy /
//! status text, coalesced pushes, the three visibility settings (and their
//! reciprocity), blocks, users sharing no conversation, CountOnline,
//! bounds, and a subscriber on another shard than its subject. Every test
//! runs against both backends: in-process (`local::*`) and a real
//! `redis-server` (`redis::*`); the Redis ones add a FLUSHALL and a kill
//! and restart of Redis mid-run, presence recovering while every message
//! is still delivered.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::ops::Deref;

use common::{link_device, TestClient, TestServer, WAIT};
use redis_server::RedisServer;
use tern_client::presence::presence_change;
use tern_client::{AnswerLoss, Client, ClientError};
use tern_proto::body::devices::ListDevices;
use tern_proto::body::presence::{
    PresenceEntry, PresenceState as S, PresenceVisibility as V, MAX_PRESENCE_USERS_PER_REQUEST,
};
use tern_proto::fb::ErrorCode;
use tern_proto::Body;
use tern_proto::ConversationKind;
use tern_server::presence::PresenceBackend;
use tokio::time::{timeout, Instant};

/// Which presence backend a test runs against.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Local,
    Redis,
}

/// A test server, and the Redis it keeps presence in (Redis backend).
struct Harness {
    server: TestServer,
    redis: Option<RedisServer>,
}

impl Deref for Harness {
    type Target = TestServer;
    fn deref(&self) -> &TestServer {
        &self.server
    }
}

impl Harness {
    /// Registers `user`; with Redis, also waits until the user's home has
    /// written its view there (writes are asynchronous: Redis is never on
    /// the path of a request), so that the test reads what it expects.
    async fn register(&self, user: &str) -> TestClient {
        let client = self.server.register(user).await;
        if let Some(redis) = &self.redis {
            wait_for_key(redis, &format!("tern:presence:{user}")).await;
        }
        client
    }
}

/// Waits (deadline WAIT) until `key` exists in `redis`.
async fn wait_for_key(redis: &RedisServer, key: &str) {
    let deadline = Instant::now() + WAIT;
    while redis.command(&format!("EXISTS {key}")).as_deref() != Some(":1") {
        assert!(Instant::now() < deadline, "{key} never written to Redis");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Heartbeat of the Redis tests, ms: short, so that recovery is quick,
/// and long enough that a loaded machine does not miss three in a row.
const HEARTBEAT_MS: u64 = 250;

/// A server with `shards` on `backend` (a fresh redis-server for Redis).
fn start(shards: usize, backend: Backend) -> Harness {
    let redis = match backend {
        Backend::Local => None,
        Backend::Redis => Some(RedisServer::start()),
    };
    let server = TestServer::start_with(shards, |config| {
        if let Some(redis) = &redis {
            config.presence_backend = PresenceBackend::Redis;
            config.redis_url = redis.url();
            config.presence_heartbeat_ms = HEARTBEAT_MS;
        }
    });
    Harness { server, redis }
}

/// Runs each named `async fn(Backend)` as two tests, `local::NAME` and
/// `redis::NAME`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod local {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Local).await
            })*
        }
        mod redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name(super::Backend::Redis).await
            })*
        }
    };
}

on_both_backends!(
    online_while_any_device_is_connected_then_offline_with_last_seen,
    away_busy_status_text_and_count_online,
    pushes_are_coalesced_and_the_latest_state_wins,
    the_three_visibility_settings_and_reciprocity,
    blocked_users_see_nothing,
    bounds_are_typed_errors,
    subscriber_and_subject_on_different_shards,
    a_pending_message_request_shows_the_requester_nothing,
    a_reconnect_keeps_subscriptions_and_the_devices_state,
);

/// The code of a refused SDK request.
fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    result.expect_err("refused").code().expect("a server error")
}

/// The next presence push about `user` for which `done` holds, counting
/// every push about `user` on the way (fails after WAIT).
async fn wait_for(
    client: &Client,
    user: &str,
    done: impl Fn(&PresenceEntry) -> bool,
) -> (PresenceEntry, usize) {
    let deadline = Instant::now() + WAIT;
    let mut pushes = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let notice = timeout(left, client.next_notice())
            .await
            .unwrap_or_else(|_| panic!("no matching presence push about {user} in time"))
            .expect("client open");
        if let Some(entry) = presence_change(&notice).filter(|e| e.user == user) {
            pushes += 1;
            if done(entry) {
                return (entry.clone(), pushes);
            }
        }
    }
}

/// The one entry of `viewer`'s subscription to `user`.
async fn subscribe(viewer: &Client, user: &str) -> PresenceEntry {
    let entries = viewer.subscribe_presence(&[user]).await.unwrap();
    assert_eq!(entries.len(), 1);
    entries.into_iter().next().unwrap()
}

async fn direct(a: &TestClient, b: &str) -> u64 {
    a.create_conversation(ConversationKind::Direct, &[b])
        .await
        .unwrap()
        .id
}

/// Two devices of alice: she stays online while either is connected, and
/// goes offline with a last seen only when the second one leaves.
async fn online_while_any_device_is_connected_then_offline_with_last_seen(backend: Backend) {
    let server = start(2, backend);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    direct(&alice, "bob").await;
    let laptop = link_device(&server, &alice, "alice").await;
    let before = subscribe(&bob, "alice").await;
    assert_eq!((before.state, before.last_seen_ms), (S::Online, 0));

    laptop.close().await;
    // The phone is still connected: a push (if any) still says Online.
    alice
        .set_presence(S::Online, Some("still here"))
        .await
        .unwrap();
    let (entry, _) = wait_for(&bob, "alice", |e| e.status_text.is_some()).await;
    assert_eq!(entry.state, S::Online);

    alice.close().await;
    let (gone, _) = wait_for(&bob, "alice", |e| e.state == S::Offline).await;
    assert!(gone.last_seen_ms > 0, "{gone:?}");
    assert_eq!(gone.status_text.as_deref(), Some("still here"));
    assert_eq!(subscribe(&bob, "alice").await, gone);
}

/// Away, Busy and the status text reach a subscriber; CountOnline counts
/// Online and Busy members, not Away ones; bad states and texts are typed
/// refusals.
async fn away_busy_status_text_and_count_online(backend: Backend) {
    let server = start(2, backend);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let _carol = server.register("carol").await;
    let group = alice
        .create_conversation(ConversationKind::Group, &["bob", "carol"])
        .await
        .unwrap()
        .id;
    assert_eq!(bob.count_online(group).await.unwrap(), 3);
    subscribe(&bob, "alice").await;

    alice.set_presence(S::Away, Some("at lunch")).await.unwrap();
    let (away, _) = wait_for(&bob, "alice", |e| e.state == S::Away).await;
    assert_eq!(away.status_text.as_deref(), Some("at lunch"));
    assert!(away.last_seen_ms > 0, "going away is being last seen");
    assert_eq!(bob.count_online(group).await.unwrap(), 2);

    alice.set_presence(S::Busy, Some("")).await.unwrap();
    let (busy, _) = wait_for(&bob, "alice", |e| e.state == S::Busy).await;
    assert_eq!(busy.status_text, None, "an empty text clears it");
    assert_eq!(bob.count_online(group).await.unwrap(), 3);

    let long = "x".repeat(141);
    assert_eq!(
        code(alice.set_presence(S::Online, Some(&long)).await),
        ErrorCode::InvalidArgument
    );
    let ok = "é".repeat(140);
    alice.set_presence(S::Busy, Some(&ok)).await.unwrap();
    for state in [S::Offline, S::Unknown] {
        assert_eq!(
            code(alice.set_presence(state, None).await),
            ErrorCode::InvalidArgument
        );
    }
    let dave = server.register("dave").await;
    assert_eq!(code(dave.count_online(group).await), ErrorCode::NotMember);
    assert_eq!(
        code(dave.count_online(group + 1).await),
        ErrorCode::NotFound
    );
}

/// Many changes within a second reach a subscriber as fewer pushes, the
/// last of which is the latest state.
async fn pushes_are_coalesced_and_the_latest_state_wins(backend: Backend) {
    let server = start(2, backend);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    direct(&alice, "bob").await;
    subscribe(&bob, "alice").await;
    let changes = 30;
    for i in 0..changes {
        let state = if i % 2 == 0 { S::Away } else { S::Online };
        alice
            .set_presence(state, Some(&format!("{i}")))
            .await
            .unwrap();
    }
    alice.set_presence(S::Busy, Some("final")).await.unwrap();
    let (last, pushes) = wait_for(&bob, "alice", |e| {
        e.state == S::Busy && e.status_text.as_deref() == Some("final")
    })
    .await;
    assert_eq!(last.state, S::Busy);
    assert!(pushes < changes, "{pushes} pushes for {changes} changes");
}

/// Shared (default): only users sharing a conversation see; Everyone:
/// anyone not blocked; Nobody: nobody, and the hider sees nobody.
/// Narrowing ends the subscriptions it no longer allows with an Unknown.
async fn the_three_visibility_settings_and_reciprocity(backend: Backend) {
    let server = start(2, backend);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let conversation = direct(&alice, "bob").await;
    // Accepted, so that it counts as shared both ways (a pending message
    // request shows the requester nothing: the next test).
    bob.accept_request(conversation).await.unwrap();

    assert_eq!(
        subscribe(&carol, "alice").await,
        PresenceEntry::unknown("alice")
    );
    assert_eq!(subscribe(&carol, "nobody-here").await.state, S::Unknown);
    assert_eq!(subscribe(&bob, "alice").await.state, S::Online);

    alice.set_presence_visibility(V::Everyone).await.unwrap();
    assert_eq!(subscribe(&carol, "alice").await.state, S::Online);

    alice.set_presence_visibility(V::Shared).await.unwrap();
    let (revoked, _) = wait_for(&carol, "alice", |_| true).await;
    assert_eq!(revoked, PresenceEntry::unknown("alice"));
    assert_eq!(
        subscribe(&bob, "alice").await.state,
        S::Online,
        "bob shares a conversation"
    );

    alice.set_presence_visibility(V::Nobody).await.unwrap();
    let (hidden, _) = wait_for(&bob, "alice", |_| true).await;
    assert_eq!(hidden.state, S::Unknown);
    assert_eq!(subscribe(&bob, "alice").await.state, S::Unknown);
    // Reciprocal: alice now sees nobody either (herself excepted).
    assert_eq!(subscribe(&alice, "bob").await.state, S::Unknown);
    assert_eq!(subscribe(&alice, "alice").await.state, S::Online);

    alice.set_presence_visibility(V::Shared).await.unwrap();
    assert_eq!(subscribe(&alice, "bob").await.state, S::Online);
    assert_eq!(subscribe(&bob, "alice").await.state, S::Online);
}

/// A direct conversation alice started with bob, a stranger, is a message
/// request until bob accepts it: meanwhile alice (the requester) sees
/// nothing of bob's presence, while bob sees alice's; accepting makes it
/// a shared conversation (PROTOCOL.md §4.1.1, issue 10).
async fn a_pending_message_request_shows_the_requester_nothing(backend: Backend) {
    let server = start(2, backend);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conversation = direct(&alice, "bob").await;
    assert_eq!(
        subscribe(&alice, "bob").await,
        PresenceEntry::unknown("bob")
    );
    assert_eq!(subscribe(&bob, "alice").await.state, S::Online);
    bob.accept_request(conversation).await.unwrap();
    assert_eq!(subscribe(&alice, "bob").await.state, S::Online);
}

/// A block hides both users from each other: the subscription ends with an
/// Unknown, a new one is Unknown both ways, and CountOnline leaves them out.
async fn blocked_users_see_nothing(backend: Backend) {
    let server = start(2, backend);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conversation = direct(&alice, "bob").await;
    subscribe(&bob, "alice").await;
    assert_eq!(bob.count_online(conversation).await.unwrap(), 2);

    alice.block("bob").await.unwrap();
    let (ended, _) = wait_for(&bob, "alice", |_| true).await;
    assert_eq!(ended, PresenceEntry::unknown("alice"));
    assert_eq!(
        subscribe(&bob, "alice").await,
        PresenceEntry::unknown("alice")
    );
    assert_eq!(subscribe(&alice, "bob").await.state, S::Unknown);
    assert_eq!(bob.count_online(conversation).await.unwrap(), 1);
    alice
        .set_presence(S::Busy, Some("not for bob"))
        .await
        .unwrap();

    alice.unblock("bob").await.unwrap();
    let entry = subscribe(&bob, "alice").await;
    assert_eq!(
        (entry.state, entry.status_text.as_deref()),
        (S::Busy, Some("not for bob"))
    );
}

/// Too many users in one request is refused before it is sent (the server
/// checks the same bound); duplicates are answered once per mention.
async fn bounds_are_typed_errors(backend: Backend) {
    let server = start(1, backend);
    let alice = server.register("alice").await;
    let names: Vec<String> = (0..=MAX_PRESENCE_USERS_PER_REQUEST)
        .map(|i| format!("u{i}"))
        .collect();
    let users: Vec<&str> = names.iter().map(String::as_str).collect();
    let over = alice.subscribe_presence(&users).await.unwrap_err();
    assert!(matches!(over, ClientError::OverLimit(_)), "{over:?}");
    let fine = alice.subscribe_presence(&users[1..]).await.unwrap();
    assert_eq!(fine.len(), MAX_PRESENCE_USERS_PER_REQUEST);
    assert!(fine.iter().all(|e| e.state == S::Unknown));
    let twice = alice.subscribe_presence(&["alice", "alice"]).await.unwrap();
    assert_eq!(twice.len(), 2);
    alice.unsubscribe_presence(&["alice"]).await.unwrap();
}

/// The subscriber's connection and the subject's are on different shards
/// (and the subject's home may be a third): changes still arrive.
async fn subscriber_and_subject_on_different_shards(backend: Backend) {
    let server = start(4, backend);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    direct(&alice, "bob").await;
    let alice_shards = server.handle().shards_of("alice");
    assert_eq!(alice_shards.len(), 1);
    // Reconnect bob until his only connection lands on another shard.
    bob.close().await;
    let mut viewer = None;
    for _ in 0..64 {
        let candidate = Client::connect(server.options(bob.state.path()))
            .await
            .unwrap();
        let placed = server.handle().shards_of("bob");
        if placed.len() == 1 && !alice_shards.contains(&placed[0]) {
            viewer = Some(candidate);
            break;
        }
        candidate.close().await;
    }
    let viewer = viewer.expect("a connection on another shard within 64 tries");
    subscribe(&viewer, "alice").await;
    alice
        .set_presence(S::Away, Some("elsewhere"))
        .await
        .unwrap();
    let (entry, _) = wait_for(&viewer, "alice", |e| e.state == S::Away).await;
    assert_eq!(entry.status_text.as_deref(), Some("elsewhere"));
}

/// Sends `count` sentinel messages from `from` into `conversation`.
async fn send_all(from: &TestClient, conversation: u64, count: usize) -> Vec<bytes::Bytes> {
    let mut sent = Vec::with_capacity(count);
    for _ in 0..count {
        sent.push(from.send_sentinel(conversation).await);
    }
    sent
}

/// `to` receives exactly `sent`, in order.
async fn receive_all(to: &TestClient, conversation: u64, sent: &[bytes::Bytes]) {
    for payload in sent {
        to.expect_next_is(conversation, payload).await;
    }
}

/// Redis is emptied (FLUSHALL) mid-run: within a heartbeat the home has
/// rewritten alice's state and bob hears of it; messages sent meanwhile
/// are all delivered.
#[tokio::test]
async fn redis_flushall_mid_run_presence_recovers_and_every_message_arrives() {
    let server = start(2, Backend::Redis);
    let redis = server.redis.as_ref().expect("a redis-server");
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conversation = direct(&alice, "bob").await;
    assert_eq!(subscribe(&bob, "alice").await.state, S::Online);
    assert_eq!(
        redis.command("EXISTS tern:presence:alice").as_deref(),
        Some(":1")
    );

    redis.flushall();
    let sent = send_all(&alice, conversation, 20).await;
    // The heartbeat puts back what the flush took.
    wait_for_key(redis, "tern:presence:alice").await;
    wait_for_key(redis, "tern:presence:bob").await;
    assert_eq!(bob.count_online(conversation).await.unwrap(), 2);
    let entry = subscribe(&bob, "alice").await;
    assert_eq!((entry.state, entry.last_seen_ms), (S::Online, 0));
    receive_all(&bob, conversation, &sent).await;
}

/// redis-server is killed mid-run and started again (empty) on the same
/// port: while it is gone presence degrades and messages still flow; a
/// change made meanwhile (alice away) reaches bob once Redis is back.
#[tokio::test]
async fn redis_killed_and_restarted_mid_run_presence_recovers_and_every_message_arrives() {
    let mut server = start(2, Backend::Redis);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conversation = direct(&alice, "bob").await;
    assert_eq!(subscribe(&bob, "alice").await.state, S::Online);

    server.redis.as_mut().expect("a redis-server").kill();
    let before = send_all(&alice, conversation, 10).await;
    alice
        .set_presence(S::Away, Some("redis is down"))
        .await
        .unwrap();
    // Degraded, not blocked: lookups answer (everyone offline) in time.
    let degraded = timeout(WAIT, bob.count_online(conversation)).await;
    assert!(matches!(degraded, Ok(Ok(_))), "{degraded:?}");
    receive_all(&bob, conversation, &before).await;

    server.redis.as_mut().expect("a redis-server").restart();
    let after = send_all(&alice, conversation, 10).await;
    let (entry, _) = wait_for(&bob, "alice", |e| e.state == S::Away).await;
    assert_eq!(entry.status_text.as_deref(), Some("redis is down"));
    assert_eq!(bob.count_online(conversation).await.unwrap(), 1);
    receive_all(&bob, conversation, &after).await;
}

/// Subscriptions live on one connection on the server; the SDK asks for
/// them again after a reconnect: the subscriber is handed the current
/// entry of each user it watches and keeps getting pushes. The device's
/// own state (Away) holds across the reconnect too (the SDK sets it again;
/// a node that kept it shows no change).
async fn a_reconnect_keeps_subscriptions_and_the_devices_state(backend: Backend) {
    let server = start(2, backend);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    alice
        .create_conversation(ConversationKind::Group, &["bob"])
        .await
        .unwrap();
    subscribe(&bob, "alice").await;
    subscribe(&alice, "bob").await;
    bob.set_presence(S::Away, Some("brb")).await.unwrap();
    wait_for(&alice, "bob", |e| e.state == S::Away).await;
    alice.set_presence(S::Busy, None).await.unwrap();
    wait_for(&bob, "alice", |e| e.state == S::Busy).await;

    // bob's connection goes; the SDK reconnects on its own.
    let mut connections = bob.connections();
    connections.borrow_and_update();
    bob.lose_next_answer(
        |b| matches!(b, Body::DeviceList(_)),
        AnswerLoss::ConnectionLost,
    );
    let _ = bob.request(ListDevices { user: "bob".into() }).await;
    timeout(WAIT, connections.changed()).await.unwrap().unwrap();

    // bob is handed alice's entry as it is now, and later pushes still come.
    let (now, _) = wait_for(&bob, "alice", |e| e.state == S::Busy).await;
    assert_eq!(now.state, S::Busy);
    alice.set_presence(S::Online, None).await.unwrap();
    wait_for(&bob, "alice", |e| e.state == S::Online).await;
    // bob's device said Away before the reconnect and is Away after it.
    let back = subscribe(&alice, "bob").await;
    assert_eq!(
        (back.state, back.status_text.as_deref()),
        (S::Away, Some("brb"))
    );
}
