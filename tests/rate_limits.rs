//! The traffic rate limits against the real server, on a manual server clock
//! (buckets refill only when the test moves it, so counts are exact): sends
//! per account and per conversation (every request that appends to a
//! conversation: Send, SendToDevices, SendGroup, Commit), invitations per
//! account, and connection attempts per source address. Registrations,
//! conversation creations, key claims and link requests are in
//! `attacks.rs` ("server-wide rate limits").
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use common::{TestServer, WAIT};
use tern_client::connection::{client_endpoint, ConnectionError, RawConnection};
use tern_client::secure::{SecureClient, SecureError};
use tern_client::{ClientError, TrustAnchor};
use tern_proto::body::messaging::{DevicePayload, SendGroup, SendToDevices};
use tern_proto::body::mls;
use tern_proto::fb::ErrorCode;
use tern_proto::ConversationKind;
use tern_server::{Clock, ServerConfig};

const SHARDS: usize = 2;

/// A server on a manual clock, its limits set by `adjust`.
fn server(adjust: impl FnOnce(&mut ServerConfig)) -> (TestServer, Clock) {
    let clock = Clock::manual(Clock::system().now_ms());
    let server = TestServer::start_with_clock(SHARDS, clock.clone(), adjust);
    (server, clock)
}

/// The refusal's retry-after, after checking that it is `RateLimited` and
/// that its message names `what` and the wait.
#[track_caller]
fn rate_limited<T: std::fmt::Debug>(result: Result<T, ClientError>, what: &str) -> Duration {
    let err = result.expect_err("refused");
    assert_eq!(err.code(), Some(ErrorCode::RateLimited), "{err}");
    let wait = err.retry_after().expect("a retry-after");
    let text = err.to_string();
    assert!(text.contains(what), "{text}");
    assert!(
        text.contains(&format!("retry in {} ms", wait.as_millis())),
        "{text}"
    );
    wait
}

async fn head(client: &tern_client::Client, conversation: u64) -> u64 {
    client.history(conversation, 1, 0).await.unwrap().head_seq
}

/// One account floods: past its burst every send-shaped request is refused
/// with `RateLimited` and the time until the next token, nothing is stored,
/// other accounts (in the same conversations too) send on; once the server
/// clock has moved by `retry_after_ms` the account sends again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_account_is_refused_and_costs_others_nothing() {
    let (server, clock) = server(|c| {
        c.sends_per_account_burst = 5;
        c.sends_per_account_per_minute = 600; // one every 100 ms
    });
    let mallory = server.register("mallory").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let direct = mallory
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;
    let group = mallory
        .create_conversation(ConversationKind::Group, &["bob", "carol"])
        .await
        .unwrap()
        .id;
    // The burst, over two conversations.
    for (conversation, n) in [(direct, 3), (group, 2)] {
        for i in 0..n {
            mallory.send(conversation, format!("ok {i}")).await.unwrap();
        }
    }
    let wait = rate_limited(mallory.send(direct, "one too many").await, "this account");
    assert_eq!(wait, Duration::from_millis(100), "the next token's time");
    // Every request that appends is held to the same bucket.
    let per_device = SendToDevices {
        conversation_id: direct,
        client_message_id: 77,
        expires_in_secs: 0,
        flags: 0,
        device_payloads: vec![DevicePayload {
            user: "bob".into(),
            device: 1,
            payload: Bytes::from_static(b"per device"),
        }],
    };
    rate_limited(mallory.request(per_device.clone()).await, "this account");
    let in_epoch = SendGroup {
        conversation_id: group,
        client_message_id: 78,
        expires_in_secs: 0,
        flags: 0,
        epoch: 0,
        payload: Bytes::from_static(b"mls"),
    };
    rate_limited(mallory.request(in_epoch).await, "this account");
    let commit = mls::Commit {
        conversation_id: group,
        epoch: 0,
        commit: Bytes::from_static(b"opaque commit"),
        welcome: None,
        group_info: Bytes::from_static(b"opaque info"),
        added: Vec::new(),
        removed: Vec::new(),
        staged: Default::default(),
    };
    rate_limited(mallory.request(commit).await, "this account");
    // Nothing refused was stored.
    assert_eq!(head(&bob, direct).await, 3);
    assert_eq!(head(&carol, group).await, 2);
    // Others are unaffected, in mallory's conversations and their own.
    bob.send(direct, "bob in the direct").await.unwrap();
    carol.send(group, "carol in the group").await.unwrap();
    let theirs = bob
        .create_conversation(ConversationKind::Direct, &["carol"])
        .await
        .unwrap()
        .id;
    // Bob's own burst (the same setting) is all his: one sent, four to go.
    for i in 0..4 {
        bob.send(theirs, format!("bob {i}")).await.unwrap();
    }
    // After the wait, exactly one more token.
    clock.advance(100);
    mallory.request(per_device).await.unwrap();
    rate_limited(mallory.send(group, "again too soon").await, "this account");
    clock.advance(100);
    mallory.send(group, "after the wait").await.unwrap();
    assert_eq!(head(&bob, direct).await, 5);
    assert_eq!(head(&carol, group).await, 4);
}

/// Many accounts together flood one conversation: past its burst anyone's
/// send into it is refused, their sends elsewhere are not, and a refused
/// send takes nothing from the sender's own account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_into_one_conversation_is_refused_for_all_its_senders() {
    let (server, clock) = server(|c| {
        c.sends_per_conversation_burst = 4;
        c.sends_per_conversation_per_minute = 1200; // one every 50 ms
        c.sends_per_account_burst = 4;
        c.sends_per_account_per_minute = 1;
    });
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let group = alice
        .create_conversation(ConversationKind::Group, &["bob", "carol"])
        .await
        .unwrap()
        .id;
    for sender in [&alice, &bob, &alice, &bob] {
        sender.send(group, "into the group").await.unwrap();
    }
    let wait = rate_limited(carol.send(group, "one too many").await, "this conversation");
    assert_eq!(wait, Duration::from_millis(50));
    rate_limited(
        alice.send(group, "still too many").await,
        "this conversation",
    );
    assert_eq!(head(&carol, group).await, 4);
    // Carol's refusal took nothing from her account: all four of its
    // tokens are still hers, three spent elsewhere, one after the wait.
    let direct = carol
        .create_conversation(ConversationKind::Direct, &["alice"])
        .await
        .unwrap()
        .id;
    for i in 0..3 {
        carol.send(direct, format!("carol {i}")).await.unwrap();
    }
    clock.advance(50);
    carol.send(group, "after the wait").await.unwrap();
    assert_eq!(head(&alice, group).await, 5);
    rate_limited(carol.send(direct, "fifth").await, "this account");
    assert_eq!(head(&alice, direct).await, 3);
}

/// A create refused by any check (a missing consent, a send limit spent)
/// takes no creation token, and a spent send budget does not refuse a
/// create (PROTOCOL.md §6.1: a refused request is charged to no bucket).
/// Counts are exact on the manual clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_costs_no_creation_token() {
    let (server, clock) = server(|c| {
        c.conversations_per_account_burst = 2;
        c.conversations_per_account_per_day = 24; // one an hour
        c.sends_per_account_burst = 1;
        c.sends_per_account_per_minute = 1;
    });
    let alice = server.register("alice").await;
    let private = server.register_private("private").await;
    for user in ["u1", "u2", "u3"] {
        server.register(user).await;
    }
    // Refused for consent, again and again: no token taken.
    for _ in 0..5 {
        let refused = alice
            .create_conversation(ConversationKind::Group, &["private"])
            .await
            .expect_err("private joins groups only from contacts");
        assert_eq!(refused.code(), Some(ErrorCode::ConsentRequired));
    }
    // The account's sends are spent: creates still go, and a send refused
    // by its limit leaves the creation budget alone.
    let first = alice
        .create_conversation(ConversationKind::Direct, &["u1"])
        .await
        .unwrap()
        .id;
    alice.send(first, "the only send").await.unwrap();
    rate_limited(alice.send(first, "one too many").await, "this account");
    alice
        .create_conversation(ConversationKind::Direct, &["u2"])
        .await
        .unwrap();
    // Exactly the burst of two creates went through.
    let wait = rate_limited(
        alice
            .create_conversation(ConversationKind::Direct, &["u3"])
            .await,
        "conversations created",
    );
    assert_eq!(wait, Duration::from_secs(3600));
    clock.advance(3_600_000);
    alice
        .create_conversation(ConversationKind::Direct, &["u3"])
        .await
        .unwrap();
    drop(private);
}

/// A group whose first Commit is refused by the send limit stays created
/// (its creation was counted), with its creator alone: the SDK says so
/// (`MembersNotAdded`, with the wait) and adding the members after the
/// wait needs no second creation, which the creation limit would refuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_first_commit_is_refused_stays_created() {
    let (server, clock) = server(|c| {
        c.conversations_per_account_burst = 2;
        c.conversations_per_account_per_day = 1;
        c.sends_per_account_burst = 1;
        c.sends_per_account_per_minute = 1;
    });
    let dirs = [(); 2].map(|()| tempfile::tempdir().unwrap());
    let alice = SecureClient::register(server.options(dirs[0].path()), "alice", "phone")
        .await
        .unwrap();
    let bob = SecureClient::register(server.options(dirs[1].path()), "bob", "phone")
        .await
        .unwrap();
    bob.transport()
        .set_privacy(tern_proto::GroupAdds::Everyone)
        .await
        .unwrap();
    // Spend alice's one send.
    let note = alice
        .transport()
        .create_conversation(ConversationKind::NoteToSelf, &[])
        .await
        .unwrap()
        .id;
    alice.transport().send(note, "spent").await.unwrap();
    let refused = alice.create_group(&["bob"]).await.unwrap_err();
    let group = match &refused {
        SecureError::MembersNotAdded { group, .. } => *group,
        other => panic!("expected MembersNotAdded, got {other}"),
    };
    assert!(refused.is_rate_limited());
    let wait = refused.retry_after().expect("the wait");
    assert_eq!(wait, Duration::from_secs(60));
    let states = alice.transport().sync(true).await.unwrap();
    assert!(states.iter().any(|s| s.conversation_id == group), "kept");
    clock.advance(60_000);
    alice.add_members(group, &["bob"]).await.unwrap();
    // Both creations are spent (the note and the group): a third is refused.
    rate_limited(
        alice
            .transport()
            .create_conversation(ConversationKind::Group, &[])
            .await,
        "conversations created",
    );
    alice.close().await;
    bob.close().await;
}

/// Invitations are limited per inviting account (an existing limit, checked
/// here against the real server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_limited_per_account() {
    let (server, clock) = server(|c| {
        c.invitations_per_account_burst = 2;
        c.invitations_per_account_per_day = 24; // one an hour
    });
    let alice = server.register("alice").await;
    for user in ["u1", "u2", "u3"] {
        server.register_private(user).await;
    }
    let group = alice
        .create_conversation(ConversationKind::Group, &[])
        .await
        .unwrap()
        .id;
    alice.invite(group, "u1").await.unwrap();
    alice.invite(group, "u2").await.unwrap();
    let wait = rate_limited(alice.invite(group, "u3").await, "invitations");
    assert_eq!(wait, Duration::from_secs(3600));
    clock.advance(3_600_000);
    alice.invite(group, "u3").await.unwrap();
}

/// A connection attempt from `server`'s test host, on a fresh endpoint (so
/// no address-validation token from an earlier connection is reused).
async fn attempt(
    server: &TestServer,
    endpoints: &mut Vec<quinn::Endpoint>,
) -> Result<RawConnection, ConnectionError> {
    let endpoint = client_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        &TrustAnchor::Fingerprint(server.fingerprint),
    )
    .unwrap();
    let result = RawConnection::connect_within(&endpoint, server.addr, "localhost", WAIT).await;
    endpoints.push(endpoint);
    result
}

/// Connection attempts from one address (loopback, made non-exempt): a
/// burst without address validation, then, after a QUIC Retry, as many
/// again; the next attempt is refused before any TLS work and the client
/// says so; once the bucket refills the address connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_attempts_are_limited_per_source_address() {
    let (server, clock) = server(|c| {
        c.rate_limit_exempt = Vec::new();
        c.connections_per_address_burst = 2;
        c.connections_per_address_per_minute = 60; // one a second
    });
    let stats = server.handle().stats.clone();
    let mut endpoints = Vec::new();
    let mut open = Vec::new();
    for i in 0..4 {
        let conn = attempt(&server, &mut endpoints).await;
        open.push(conn.unwrap_or_else(|e| panic!("attempt {i}: {e}")));
    }
    assert_eq!(
        stats.connections_validated.load(Ordering::Relaxed),
        2,
        "the last two were asked to validate their address"
    );
    let err = attempt(&server, &mut endpoints)
        .await
        .err()
        .expect("the fifth attempt is refused");
    assert!(matches!(err, ConnectionError::Refused { .. }), "{err:?}");
    assert!(
        err.to_string().contains("too many connection attempts"),
        "{err}"
    );
    // The server counts a refusal just after sending it: wait for the count.
    let deadline = tokio::time::Instant::now() + WAIT;
    while stats.connections_refused.load(Ordering::Relaxed) == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no refusal counted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stats.connections_refused.load(Ordering::Relaxed), 1);
    // The admitted connections still work.
    assert_eq!(stats.connections_accepted.load(Ordering::Relaxed), 4);
    clock.advance(1_000);
    open.push(attempt(&server, &mut endpoints).await.expect("refilled"));
    assert_eq!(stats.connections_accepted.load(Ordering::Relaxed), 5);
}

/// The default exemption: loopback connects without limit (load tests and
/// every other test depend on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_is_exempt_from_connection_limits_by_default() {
    let (server, _clock) = server(|c| {
        c.connections_per_address_burst = 1;
        c.connections_per_address_per_minute = 1;
    });
    let mut endpoints = Vec::new();
    for i in 0..5 {
        attempt(&server, &mut endpoints)
            .await
            .unwrap_or_else(|e| panic!("attempt {i}: {e}"));
    }
    let stats = &server.handle().stats;
    assert_eq!(stats.connections_refused.load(Ordering::Relaxed), 0);
    assert_eq!(stats.connections_validated.load(Ordering::Relaxed), 0);
}
