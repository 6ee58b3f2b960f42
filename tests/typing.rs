//! Typing indicators (issue 11, docs/PROTOCOL.md §1.4, §4.9) against a real
//! server: delivered to online members (and the sender's other devices) as
//! QUIC datagrams, to no non-member, blocked user or offline device, never
//! stored; the per-device rate limit drops extras silently; a connection
//! without datagram support gets them on the stream; malformed datagrams
//! are dropped and counted, never closing the connection.
//!
//! Negative checks never sleep: after the event under test, a sentinel
//! signal that does reach the device is sent, and the device's next typing
//! push must be that sentinel (one shard, so both went through the same
//! push inbox in order).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::atomic::AtomicU64;

use common::{link_device, TestServer, WAIT};
use tern_client::typing::typing_change;
use tern_client::Client;
use tern_proto::body::typing::{Typing, TypingChanged, TYPING_BURST};
use tern_proto::{Body, ConversationKind, Frame};
use tern_server::clock::Clock;
use tern_server::shard::ServerStats;
use tokio::time::{timeout, Instant};

/// The next typing push `client` receives (other notices skipped), failing
/// the test after [`WAIT`].
async fn next_typing(client: &Client) -> TypingChanged {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let notice = timeout(left, client.next_notice())
            .await
            .expect("a typing push arrives in time")
            .expect("client open");
        if let Some(change) = typing_change(&notice) {
            return change.clone();
        }
    }
}

fn change(conversation_id: u64, from: &Client, typing: bool) -> TypingChanged {
    TypingChanged {
        conversation_id,
        user: from.user().to_owned(),
        device: from.device(),
        typing,
    }
}

/// Waits until `counter` reaches `at_least` (fails after [`WAIT`]).
async fn wait_count(counter: &AtomicU64, at_least: u64) {
    let deadline = Instant::now() + WAIT;
    while ServerStats::get(counter) < at_least {
        assert!(Instant::now() < deadline, "counter stuck below {at_least}");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// A client of a new account (anyone may add it to groups) that offers
/// QUIC datagrams or not.
async fn register(server: &TestServer, user: &str, datagrams: bool) -> Client {
    let state = tempfile::tempdir().unwrap();
    let mut options = server.options(state.path());
    std::mem::forget(state);
    options.datagrams = datagrams;
    let client = Client::register(options, user, "test").await.unwrap();
    client
        .set_privacy(tern_proto::GroupAdds::Everyone)
        .await
        .unwrap();
    client
}

async fn group(creator: &Client, members: &[&str]) -> u64 {
    creator
        .create_conversation(ConversationKind::Group, members)
        .await
        .unwrap()
        .id
}

/// Alice types: bob and alice's laptop (on whatever shards) get it, as
/// datagrams; nothing is stored in the conversation.
#[tokio::test]
async fn delivered_as_datagrams_to_online_members_and_other_devices_never_stored() {
    let server = TestServer::start(2);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let laptop = link_device(&server, &alice, "alice").await;
    let conv = group(&alice, &["bob"]).await;
    let stats = server.handle().stats.clone();

    alice.typing(conv, true).await.unwrap();
    assert_eq!(next_typing(&bob).await, change(conv, &alice, true));
    assert_eq!(next_typing(&laptop).await, change(conv, &alice, true));
    alice.typing(conv, false).await.unwrap();
    assert_eq!(next_typing(&bob).await, change(conv, &alice, false));
    assert_eq!(next_typing(&laptop).await, change(conv, &alice, false));
    assert!(ServerStats::get(&stats.datagrams_sent) >= 4);

    let page = bob.history(conv, 1, 100).await.unwrap();
    assert!(page.messages.is_empty(), "typing stored: {page:?}");
    assert_eq!(page.head_seq, 0);
}

/// Non-members, users who block the typist (or whom it blocks) and offline
/// devices get nothing; a non-member's signal is dropped.
#[tokio::test]
async fn not_to_non_members_blocked_or_offline_users() {
    let server = TestServer::start(1);
    let stats = server.handle().stats.clone();
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let mut erin = server.register("erin").await;
    let frank = server.register("frank").await;
    let conv = group(&alice, &["bob", "carol", "erin", "frank"]).await;
    // Where the sentinels come from: bob shares it with everyone checked.
    let side = group(&bob, &["carol", "dave", "erin", "frank"]).await;
    carol.block("alice").await.unwrap();
    alice.block("frank").await.unwrap();
    erin.go_offline().await;

    alice.typing(conv, true).await.unwrap();
    assert_eq!(next_typing(&bob).await, change(conv, &alice, true));
    // A non-member's signal is dropped.
    let dropped = ServerStats::get(&stats.typing_dropped);
    dave.typing(conv, true).await.unwrap();
    wait_count(&stats.typing_dropped, dropped + 1).await;

    erin.come_online(&server).await;
    bob.typing(side, true).await.unwrap();
    for (who, name) in [
        (&*carol, "carol"),
        (&dave, "dave"),
        (&*erin, "erin"),
        (&*frank, "frank"),
    ] {
        assert_eq!(
            next_typing(who).await,
            change(side, &bob, true),
            "{name} got a typing push it should not have"
        );
    }
    // Bob never saw dave's signal: his next one is alice's.
    alice.typing(conv, false).await.unwrap();
    assert_eq!(next_typing(&bob).await, change(conv, &alice, false));

    let page = alice.history(conv, 1, 100).await.unwrap();
    assert!(page.messages.is_empty(), "typing stored: {page:?}");
}

/// Past 4 signals at once a device's signals are dropped silently (answered
/// Done on the stream all the same) until its bucket refills.
#[tokio::test]
async fn rate_limit_drops_extras_silently() {
    let clock = Clock::manual(1_000_000);
    let server = TestServer::start_with_clock(1, clock.clone(), |_| {});
    let stats = server.handle().stats.clone();
    // On the stream, so each signal is answered after the owner took it.
    let alice = register(&server, "alice", false).await;
    let bob = register(&server, "bob", true).await;
    let conv = group(&alice, &["bob"]).await;

    let sent = 10;
    for _ in 0..sent {
        alice.typing(conv, true).await.unwrap();
    }
    let burst = u64::from(TYPING_BURST);
    assert_eq!(ServerStats::get(&stats.typing_dropped), sent - burst);
    for _ in 0..burst {
        assert_eq!(next_typing(&bob).await, change(conv, &alice, true));
    }
    // One second later a token is back; the next push bob gets is this
    // one, so no more than the burst got through before.
    clock.advance(1_000);
    alice.typing(conv, false).await.unwrap();
    assert_eq!(next_typing(&bob).await, change(conv, &alice, false));
    assert_eq!(ServerStats::get(&stats.typing_dropped), sent - burst);
}

/// A receiver that takes no datagrams gets typing on the stream; a sender
/// without them sends on the stream, and a receiver with them still gets
/// a datagram.
#[tokio::test]
async fn stream_fallback_without_datagram_support() {
    let server = TestServer::start(2);
    let stats = server.handle().stats.clone();
    let alice = register(&server, "alice", true).await;
    let bob = register(&server, "bob", false).await;
    let conv = group(&alice, &["bob"]).await;

    alice.typing(conv, true).await.unwrap();
    assert_eq!(next_typing(&bob).await, change(conv, &alice, true));
    assert_eq!(ServerStats::get(&stats.datagrams_sent), 0, "bob takes none");

    bob.typing(conv, true).await.unwrap();
    assert_eq!(next_typing(&alice).await, change(conv, &bob, true));
    assert_eq!(
        ServerStats::get(&stats.datagrams_sent),
        1,
        "alice takes them"
    );
}

/// Garbage, other bodies and answered ids as datagrams are dropped and
/// counted; the connection stays up and a good datagram still works.
#[tokio::test]
async fn malformed_datagrams_are_dropped_and_counted() {
    let server = TestServer::start(1);
    let stats = server.handle().stats.clone();
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conv = group(&alice, &["bob"]).await;
    let raw = server.raw_connection_of(&alice).await;
    let typing = Typing {
        conversation_id: conv,
        typing: true,
    };
    let bare = |id: u64, body: Body| Frame::new(id, body).encode().slice(4..);
    let bad = [
        bytes::Bytes::from_static(b"not a flatbuffer"),
        bare(9, typing.into()),
        bare(0, tern_proto::body::messaging::Done.into()),
        Frame::new(0, typing).encode(),
    ];
    for datagram in bad.clone() {
        raw.connection.send_datagram(datagram).unwrap();
    }
    wait_count(&stats.datagrams_dropped, bad.len() as u64).await;
    raw.connection
        .send_datagram(bare(0, typing.into()))
        .unwrap();
    assert_eq!(next_typing(&bob).await, change(conv, &alice, true));
    assert!(raw.connection.close_reason().is_none(), "still open");
}

fn tern(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "tern {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Two terminals: bob runs `tern typing watch`, alice `tern typing CONV`
/// and then `--stop`; bob's terminal prints both.
#[test]
fn cli_typing_and_watch() {
    let server = TestServer::start(1);
    let clients = tempfile::tempdir().unwrap();
    let state = |u: &str| clients.path().join(u).to_string_lossy().into_owned();
    let (alice, bob) = (state("alice"), state("bob"));
    let (addr, fp) = (server.addr.to_string(), hex::encode(server.fingerprint));
    for (dir, user) in [(&alice, "alice"), (&bob, "bob")] {
        let args = ["register", "--state", dir, "--server", &addr];
        tern(&[&args[..], &["--fingerprint", &fp, user]].concat());
    }
    let conv = tern(&["create", "--state", &alice, "direct", "bob"])
        .trim()
        .to_owned();
    let watcher = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["typing", "watch", "--state", &bob, "--count", "2"])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while server.handle().shards_of("bob").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "watcher never connected"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(tern(&["typing", "--state", &alice, &conv]).contains("typing in"));
    tern(&["typing", "--state", &alice, &conv, "--stop"]);
    let out = watcher.wait_with_output().unwrap();
    let printed = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(
        lines,
        [
            format!("alice is typing in {conv}"),
            format!("alice stopped typing in {conv}")
        ],
        "{printed}"
    );
}
