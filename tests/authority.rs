//! Server-enforced messaging authority (issue 10): blocking, deleting a
//! message for everyone (PurgeMessage), disappearing-message timers, group
//! administrators. Each test runs a real server on port
//! 0 and real clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::{files_containing, link_device, TestClient, TestServer, WAIT};
use tern_client::ClientError;
use tern_proto::body::mls;
use tern_proto::body::safety::MAX_BLOCKED_USERS;
use tern_proto::fb::ErrorCode;
use tern_proto::{flags, Body, ConversationKind};
use tern_server::shard::ServerStats;
use tern_server::Clock;
use tern_store::memory::MemStore;
use tern_store::{ConsentStore, Store};
use tokio::time::timeout;

const SHARDS: usize = 2;

/// The code of a refused SDK request.
fn code<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    result.expect_err("refused").code().expect("a server error")
}

/// A direct conversation between `a` and `b`, created by `a`.
async fn direct(a: &TestClient, b: &str) -> u64 {
    a.create_conversation(ConversationKind::Direct, &[b])
        .await
        .unwrap()
        .id
}

/// Bob's sends to the direct conversation with alice, who blocked him, are
/// answered like accepted ones (seq 0, not a duplicate) and stored nowhere:
/// alice's Sync, History and pushes show nothing, no seq is used up (the
/// next real message takes the next seq, never 0), the bytes are not in the
/// data directory, and unblocking restores delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_sends_are_answered_but_neither_stored_nor_delivered() {
    let mut server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conv = direct(&bob, "alice").await;
    let first = bob.send(conv, &b"before the block"[..]).await.unwrap();
    assert_eq!(first.seq, 1);
    alice.expect_next_is(conv, b"before the block").await;

    alice.block("bob").await.unwrap();
    let marker = b"BLOCKED-PAYLOAD-MARKER-7d41c9";
    let dropped = bob.send(conv, &marker[..]).await.unwrap();
    assert_eq!((dropped.seq, dropped.duplicate), (0, false));
    assert!(dropped.server_time_ms >= first.server_time_ms);
    let again = bob.send(conv, &marker[..]).await.unwrap();
    assert_eq!((again.seq, again.duplicate), (0, false));

    // Nothing moved for alice.
    let page = alice.history(conv, 1, 0).await.unwrap();
    assert_eq!(page.head_seq, 1);
    assert_eq!(page.messages.len(), 1);
    let states = alice.sync(true).await.unwrap();
    let state = states.iter().find(|s| s.conversation_id == conv).unwrap();
    assert_eq!(state.head_seq, 1);
    // Bob's history has no trace either (his other devices get nothing).
    assert_eq!(bob.history(conv, 1, 0).await.unwrap().head_seq, 1);

    // A real message takes seq 2: the dropped sends used up nothing.
    let real = alice.send(conv, &b"alice writes"[..]).await.unwrap();
    assert_eq!(real.seq, 2);
    bob.expect_next_is(conv, b"alice writes").await;

    // Unblocked, bob is delivered again, at the next seq; alice receives
    // it next, so nothing of the blocked sends was queued for her.
    alice.unblock("bob").await.unwrap();
    let control = b"UNBLOCKED-CONTROL-MARKER-52e0aa";
    let after = bob.send(conv, &control[..]).await.unwrap();
    assert_eq!(after.seq, 3);
    let delivered = alice.expect_next_is(conv, control).await;
    assert_eq!(delivered.seq, 3);

    server.stop().await;
    let mut hits = Vec::new();
    files_containing(server.data_dir(), control, &mut hits);
    assert!(!hits.is_empty(), "the scan cannot see stored payloads");
    let mut hits = Vec::new();
    files_containing(server.data_dir(), marker, &mut hits);
    assert!(hits.is_empty(), "a dropped payload was stored: {hits:?}");
}

/// A block is per account: sends from every device of the blocked user are
/// dropped, and the blocker's every device receives nothing; only the
/// direct conversation is affected (a shared group still delivers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_covers_every_device_and_only_direct_conversations() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conv = direct(&alice, "bob").await;
    let group = alice
        .create_conversation(ConversationKind::Group, &["bob"])
        .await
        .unwrap()
        .id;
    alice.block("bob").await.unwrap();
    // Bob links a second device after the block: it is blocked too.
    let laptop = link_device(&server, &bob, "bob").await;
    assert_eq!(laptop.send(conv, &b"x"[..]).await.unwrap().seq, 0);
    assert_eq!(bob.send(conv, &b"y"[..]).await.unwrap().seq, 0);
    // The group delivers as before.
    let in_group = bob.send(group, &b"group message"[..]).await.unwrap();
    assert_eq!(in_group.seq, 1);
    alice.expect_next_is(group, b"group message").await;
    // Alice's own sends to bob are delivered (she may still write).
    assert_eq!(alice.send(conv, &b"hi"[..]).await.unwrap().seq, 1);
    bob.expect_next_is(conv, b"hi").await;
}

/// A blocked user cannot add the blocker to a group, by create, AddMembers
/// or a Commit (refused exactly like a missing consent, even where the
/// blocker lets everyone add her), and cannot invite her (answered Done,
/// nothing reaches her).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_user_cannot_add_or_invite_the_blocker() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await; // group_adds = Everyone
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let group = ConversationKind::Group;
    // Alice made bob a contact before she blocked him.
    direct(&alice, "bob").await;
    alice.block("bob").await.unwrap();
    assert_eq!(
        code(bob.create_conversation(group, &["alice"]).await),
        ErrorCode::ConsentRequired
    );
    let bobs = bob.create_conversation(group, &[]).await.unwrap().id;
    assert_eq!(
        code(bob.add_members(bobs, &["alice"]).await),
        ErrorCode::ConsentRequired
    );
    bob.invite(bobs, "alice").await.unwrap();
    assert!(alice.invitations().await.unwrap().is_empty());
    // Nor by a Commit (bob administers his group).
    let commit = mls::Commit {
        conversation_id: bobs,
        epoch: 0,
        commit: Bytes::from_static(b"commit"),
        welcome: None,
        group_info: Bytes::from_static(b"group info"),
        added: vec!["alice".to_owned()],
        removed: vec![],
        staged: Default::default(),
    };
    assert_eq!(code(bob.request(commit).await), ErrorCode::ConsentRequired);
    // Only bob's additions are refused: carol's group takes alice.
    let carols = carol.create_conversation(group, &["alice"]).await.unwrap();
    assert!(carols.members.contains(&"alice".to_owned()));
    // Unblocked, bob may add her again.
    alice.unblock("bob").await.unwrap();
    bob.add_members(bobs, &["alice"]).await.unwrap();
}

/// ListBlocked shows the set by handle; Block and Unblock are idempotent;
/// bad arguments are typed errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_block_list_is_listed_and_checked() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    for user in ["zed", "bob", "carol"] {
        server.register(user).await;
        alice.block(user).await.unwrap();
    }
    alice.block("bob").await.unwrap();
    assert_eq!(alice.blocked().await.unwrap(), ["bob", "carol", "zed"]);
    alice.unblock("carol").await.unwrap();
    alice.unblock("carol").await.unwrap();
    assert_eq!(alice.blocked().await.unwrap(), ["bob", "zed"]);
    assert_eq!(code(alice.block("alice").await), ErrorCode::InvalidArgument);
    assert_eq!(
        code(alice.block("Not A Handle").await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(code(alice.block("nobody").await), ErrorCode::NotFound);
    assert_eq!(code(alice.unblock("").await), ErrorCode::InvalidArgument);
    // A user who does not exist is told, not answered as unblocked.
    assert_eq!(code(alice.unblock("nosuchuser").await), ErrorCode::NotFound);
}

/// At most MAX_BLOCKED_USERS per account: one more is LimitExceeded, and
/// unblocking one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_block_list_is_bounded() {
    let store = Arc::new(MemStore::new());
    let server = TestServer::start_on_store(SHARDS, store.clone());
    let alice = server.register("alice").await;
    server.register("bob").await;
    for i in 0..MAX_BLOCKED_USERS {
        let user = format!("u{i}");
        store
            .block("alice", &user, MAX_BLOCKED_USERS)
            .await
            .unwrap();
    }
    assert_eq!(code(alice.block("bob").await), ErrorCode::LimitExceeded);
    assert_eq!(alice.blocked().await.unwrap().len(), MAX_BLOCKED_USERS);
    alice.unblock("u0").await.unwrap();
    alice.block("bob").await.unwrap();
    let listed = alice.blocked().await.unwrap();
    assert_eq!(listed.len(), MAX_BLOCKED_USERS);
    assert!(listed.contains(&"bob".to_owned()));
    store.persist().await.unwrap();
}

/// Runs the `tern` binary; its stdout, failing the test on a failure.
fn tern(args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "tern {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `tern block`, `tern blocked`, `tern unblock`, `tern timer` and `tern
/// admin` against a real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_blocks_sets_timers_and_administrators() {
    let server = TestServer::start(SHARDS);
    let dir = tempfile::tempdir().unwrap();
    let state = |u: &str| dir.path().join(u).to_string_lossy().into_owned();
    let (state, bob_state) = (state("alice"), state("bob"));
    let (addr, fp) = (server.addr.to_string(), hex::encode(server.fingerprint));
    tokio::task::spawn_blocking(move || {
        let s = state.as_str();
        for (dir, user) in [(s, "alice"), (bob_state.as_str(), "bob")] {
            let args = ["--state", dir, "--server", &addr, "--fingerprint", &fp];
            tern(&[&["register"][..], &args[..], &[user]].concat());
        }
        tern(&["privacy", "--state", &bob_state, "--group-adds", "everyone"]);
        assert!(tern(&["block", "--state", s, "bob"]).starts_with("blocked bob"));
        assert_eq!(tern(&["blocked", "--state", s]), "bob\n");
        assert_eq!(tern(&["unblock", "--state", s, "bob"]), "unblocked bob\n");
        assert_eq!(tern(&["blocked", "--state", s]), "");
        // Unblocking someone not blocked says so.
        let again = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["unblock", "--state", s, "bob"])
            .output()
            .unwrap();
        assert!(
            again.status.success() && again.stdout.is_empty(),
            "{again:?}"
        );
        let why = String::from_utf8_lossy(&again.stderr);
        assert!(why.contains("you did not block bob"), "{why}");
        let conv = tern(&["create", "--state", s, "direct", "bob"]);
        let conv = conv.trim();
        let shown = tern(&["timer", "--state", s, conv]);
        assert_eq!(shown, format!("messages in {conv} do not disappear\n"));
        let set = tern(&["timer", "--state", s, conv, "60"]);
        assert!(set.contains("disappear 60 s"), "{set}");
        let shown = tern(&["timer", "--state", s, conv]);
        assert_eq!(
            shown,
            format!("messages in {conv} disappear 60 s after they are sent\n")
        );
        // A direct conversation has no members to add.
        let add = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["add", "--state", s, conv, "bob"])
            .output()
            .unwrap();
        assert!(!add.status.success(), "{add:?}");
        let why = String::from_utf8_lossy(&add.stderr);
        assert!(why.contains("is not a group"), "{why}");
        let group = tern(&["create", "--state", s, "group", "bob"]);
        let group = group.trim();
        let admins = tern(&["admin", "--state", s, group, "bob"]);
        assert!(admins.ends_with(": alice, bob\n"), "{admins}");
        let admins = tern(&["admin", "--state", s, group, "bob", "--revoke"]);
        assert!(admins.ends_with(": alice\n"), "{admins}");
        let list = tern(&["admin", "--state", s, group, "--list"]);
        assert_eq!(
            list,
            format!("administrators of {group}: alice\nonly administrators may add members\n")
        );
        let set = tern(&["admin", "--state", s, group, "--member-adds", "everyone"]);
        assert_eq!(set, format!("{group}: every member may add members\n"));
        let list = tern(&["admin", "--state", s, group, "--list"]);
        assert!(list.ends_with("\nevery member may add members\n"), "{list}");
        // bob is no administrator: he may not change it back.
        let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args([
                "admin",
                "--state",
                &bob_state,
                group,
                "--member-adds",
                "admins",
            ])
            .output()
            .unwrap();
        assert!(!refused.status.success());
        let why = String::from_utf8_lossy(&refused.stderr);
        assert!(why.starts_with("error: "), "{refused:?}");
        // The CLI names its own command, not the protocol request.
        assert!(
            why.contains("(tern admin GROUP --list)") && !why.contains("ListAdmins"),
            "{why}"
        );
        let unknown = std::process::Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["unblock", "--state", s, "nosuchuser"])
            .output()
            .unwrap();
        assert!(!unknown.status.success(), "{unknown:?}");
        let why = String::from_utf8_lossy(&unknown.stderr);
        assert!(
            why.contains("does not exist") && why.contains("tern blocked"),
            "{why}"
        );
    })
    .await
    .unwrap();
}

// ----- delete for everyone (PurgeMessage) -----

/// A purged message becomes a tombstone at its seq: same sender, id, time
/// and expiry, the tombstone flag, no payload; History and Sync keep the
/// seqs dense, a second purge succeeds, the next message takes the next seq,
/// and a retry of the purged send is answered as a duplicate (never stored
/// again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_message_leaves_a_tombstone_at_its_seq() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conv = direct(&alice, "bob").await;
    let options = tern_client::SendOptions {
        client_message_id: 77,
        ..Default::default()
    };
    alice.send(conv, &b"one"[..]).await.unwrap();
    let two = alice.send_with(conv, &b"two"[..], options).await.unwrap();
    alice.send(conv, &b"three"[..]).await.unwrap();
    let before = bob.history(conv, 2, 1).await.unwrap().messages;
    alice.purge_message(conv, two.seq).await.unwrap();
    alice.purge_message(conv, two.seq).await.unwrap();

    let page = bob.history(conv, 1, 0).await.unwrap();
    let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    let tombstone = &page.messages[1];
    let original = &before[0];
    assert_eq!(tombstone.flags, flags::TOMBSTONE);
    assert!(tombstone.payload.is_empty());
    assert_eq!(
        (
            &tombstone.sender_user,
            tombstone.sender_device,
            tombstone.client_message_id,
            tombstone.server_time_ms,
            tombstone.expires_at_ms
        ),
        (
            &original.sender_user,
            original.sender_device,
            original.client_message_id,
            original.server_time_ms,
            original.expires_at_ms
        )
    );
    assert_eq!(&page.messages[2].payload[..], b"three");
    let state = bob.sync(true).await.unwrap();
    assert_eq!(
        state
            .iter()
            .find(|s| s.conversation_id == conv)
            .unwrap()
            .head_seq,
        3
    );
    let retry = alice.send_with(conv, &b"two"[..], options).await.unwrap();
    assert_eq!((retry.seq, retry.duplicate), (2, true));
    assert_eq!(alice.send(conv, &b"four"[..]).await.unwrap().seq, 4);
    assert!(bob.history(conv, 2, 1).await.unwrap().messages[0]
        .payload
        .is_empty());
}

/// Only the sender purges (NotSender), only members ask (NotMember), a
/// missing seq is NotFound, an MLS-made message is not purged (Forbidden
/// is covered by the flags check), and past `purge_window_secs` of server
/// time the sender is refused with PurgeWindowClosed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_sender_purges_and_only_within_the_window() {
    let clock = Clock::manual(1_700_000_000_000);
    let server = TestServer::start_with_clock(SHARDS, clock.clone(), |c| {
        c.purge_window_secs = 60;
    });
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let conv = direct(&alice, "bob").await;
    let sent = alice.send(conv, &b"mine"[..]).await.unwrap();
    assert_eq!(
        code(bob.purge_message(conv, sent.seq).await),
        ErrorCode::NotSender
    );
    assert_eq!(
        code(carol.purge_message(conv, sent.seq).await),
        ErrorCode::NotMember
    );
    assert_eq!(
        code(alice.purge_message(conv, 9).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(alice.purge_message(conv, 0).await),
        ErrorCode::NotFound
    );
    // At the edge of the window it is still allowed; one second later not.
    let late = alice.send(conv, &b"late"[..]).await.unwrap();
    clock.advance(60_000);
    alice.purge_message(conv, sent.seq).await.unwrap();
    clock.advance(1_000);
    assert_eq!(
        code(alice.purge_message(conv, late.seq).await),
        ErrorCode::PurgeWindowClosed
    );
    let page = bob.history(conv, late.seq, 1).await.unwrap();
    assert_eq!(
        &page.messages[0].payload[..],
        b"late",
        "a refusal changes nothing"
    );
}

/// Hits of `needle` under `dir` outside fjall's journal files (`*.jnl`).
fn table_hits(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    files_containing(dir, needle, &mut hits);
    hits.retain(|path| !path.ends_with(".jnl"));
    hits
}

/// Polls `check` every 50 ms until it holds, failing after 30 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The purged ciphertext leaves the store's tables: the message is first
/// flushed into a table (1 MiB memtables and 1.2 MiB of later messages),
/// then purged; the background erasure (flush and major compaction of the
/// `messages` keyspace) removes it from every file but fjall's journal,
/// which keeps it until it rotates (see crates/tern-store-fjall/src/purge.rs),
/// while an unpurged message's bytes stay found (the scan's control).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_ciphertext_is_erased_from_the_store_tables() {
    let server = TestServer::start_with(SHARDS, |c| {
        c.store_memtable_mib = 1;
        c.purge_erase_interval_secs = 1;
    });
    let alice = server.register("alice").await;
    server.register("bob").await;
    let conv = direct(&alice, "bob").await;
    // Random hex: nothing a compressor could shorten or share with others.
    let marker = format!("{:032x}", rand::random::<u128>()).into_bytes();
    let control = format!("{:032x}", rand::random::<u128>()).into_bytes();
    let purged = alice.send(conv, marker.clone()).await.unwrap();
    alice.send(conv, control.clone()).await.unwrap();
    for _ in 0..6 {
        let filler: Vec<u8> = (0..200_000).map(|_| rand::random::<u8>()).collect();
        alice.send(conv, filler).await.unwrap();
    }
    let data = server.data_dir().to_path_buf();
    eventually("the message is flushed into a table", || {
        !table_hits(&data, &marker).is_empty()
    })
    .await;
    alice.purge_message(conv, purged.seq).await.unwrap();
    eventually("the purged bytes leave every table", || {
        table_hits(&data, &marker).is_empty()
    })
    .await;
    assert!(
        !table_hits(&data, &control).is_empty(),
        "the scan cannot see stored payloads"
    );
}

// ----- disappearing messages (SetTimer) -----

/// A member sets the timer: every member's devices are told, Sync lists
/// it, and later sends are capped at it (no expiry asked: the timer's; a
/// longer one: capped; a shorter one: kept); 0 turns it off; a timer past
/// the server's message lifetime and a non-member are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timer_caps_every_later_send() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let conv = direct(&alice, "bob").await;
    let before = alice.send(conv, &b"before"[..]).await.unwrap();
    bob.set_timer(conv, 3600).await.unwrap();
    for client in [&alice, &bob] {
        let notice = loop {
            match timeout(WAIT, client.next_notice()).await.unwrap().unwrap() {
                Body::TimerChanged(t) => break t,
                _ => continue,
            }
        };
        assert_eq!(
            (notice.conversation_id, notice.secs, &notice.user[..]),
            (conv, 3600, "bob")
        );
    }
    let synced = alice.sync(true).await.unwrap();
    let state = synced.iter().find(|s| s.conversation_id == conv).unwrap();
    assert_eq!(state.timer_secs, 3600);

    let lifetime = |ask: u32| {
        let alice = &alice;
        async move {
            let options = tern_client::SendOptions {
                expires_in_secs: ask,
                ..Default::default()
            };
            let sent = alice.send_with(conv, &b"x"[..], options).await.unwrap();
            let page = alice.history(conv, sent.seq, 1).await.unwrap();
            let m = &page.messages[0];
            (m.expires_at_ms - m.server_time_ms) / 1000
        }
    };
    assert_eq!(lifetime(0).await, 3600, "no expiry asked: the timer's");
    assert_eq!(lifetime(7200).await, 3600, "a longer one is capped");
    assert_eq!(lifetime(60).await, 60, "a shorter one is kept");
    let old = alice.history(conv, before.seq, 1).await.unwrap().messages[0].clone();
    assert_eq!(
        (old.expires_at_ms - old.server_time_ms) / 1000,
        server.config.message_ttl_secs,
        "earlier messages keep their expiry"
    );
    alice.set_timer(conv, 0).await.unwrap();
    assert_eq!(
        lifetime(0).await,
        server.config.message_ttl_secs,
        "off again"
    );
    let too_long = u32::try_from(server.config.message_ttl_secs + 1).unwrap();
    assert_eq!(
        code(alice.set_timer(conv, too_long).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(code(carol.set_timer(conv, 60).await), ErrorCode::NotMember);
}

/// The timer of the direct conversation `conv` as `client` syncs it.
async fn synced_timer(client: &TestClient, conv: u64) -> u32 {
    let states = client.sync(true).await.unwrap();
    states
        .iter()
        .find(|s| s.conversation_id == conv)
        .unwrap()
        .timer_secs
}

/// The next TimerChanged `client` gets, as (secs, who set it).
async fn next_timer_notice(client: &TestClient) -> (u32, String) {
    loop {
        match timeout(WAIT, client.next_notice()).await.unwrap().unwrap() {
            Body::TimerChanged(t) => break (t.secs, t.user),
            _ => continue,
        }
    }
}

/// A blocked member's SetTimer in the direct conversation with the blocker
/// (an accepted one, and a stranger's pending message request) is answered
/// Done, changes nothing and announces nothing: the blocker's messages keep
/// their lifetime, and the next TimerChanged either side gets is the
/// blocker's own. Refusals every caller gets still come first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_member_cannot_change_the_timer() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let mallory = server.register("mallory").await;
    let conv = direct(&alice, "bob").await;
    let request = direct(&mallory, "alice").await;
    alice.block("bob").await.unwrap();
    alice.block("mallory").await.unwrap();
    for (blocked, id) in [(&bob, conv), (&mallory, request)] {
        blocked.set_timer(id, 5).await.unwrap();
        let too_long = u32::try_from(server.config.message_ttl_secs + 1).unwrap();
        assert_eq!(
            code(blocked.set_timer(id, too_long).await),
            ErrorCode::InvalidArgument
        );
        assert_eq!(synced_timer(&alice, id).await, 0);
        assert_eq!(synced_timer(blocked, id).await, 0);
        let sent = alice.send(id, &b"mine"[..]).await.unwrap();
        let page = alice.history(id, sent.seq, 1).await.unwrap();
        let m = &page.messages[0];
        assert_eq!(
            (m.expires_at_ms - m.server_time_ms) / 1000,
            server.config.message_ttl_secs,
            "the blocker's message is not capped by the blocked member's timer"
        );
    }
    // Nothing was announced: the first notices are alice's own change.
    alice.set_timer(conv, 60).await.unwrap();
    assert_eq!(next_timer_notice(&alice).await, (60, "alice".to_owned()));
    assert_eq!(next_timer_notice(&bob).await, (60, "alice".to_owned()));
    // Unblocked, bob's change applies again.
    alice.unblock("bob").await.unwrap();
    bob.set_timer(conv, 30).await.unwrap();
    assert_eq!(synced_timer(&alice, conv).await, 30);
    assert_eq!(next_timer_notice(&alice).await, (30, "bob".to_owned()));
}

/// A message sent under the timer expires on the server's clock (moved by
/// the test): still there a second before the timer passes, gone from
/// History the moment it does, then swept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_under_the_timer_expires_on_the_server() {
    let clock = Clock::manual(1_700_000_000_000);
    let server = TestServer::start_with_clock(SHARDS, clock.clone(), |c| {
        c.sweep_interval_secs = 1;
    });
    let alice = server.register("alice").await;
    server.register("bob").await;
    let group = alice
        .create_conversation(ConversationKind::Group, &["bob"])
        .await
        .unwrap()
        .id;
    alice.set_timer(group, 60).await.unwrap();
    let swept_before = ServerStats::get(&server.handle().stats.expired_swept);
    let sent = alice.send(group, &b"disappears"[..]).await.unwrap();
    clock.advance(59_000);
    assert_eq!(
        alice
            .history(group, sent.seq, 1)
            .await
            .unwrap()
            .messages
            .len(),
        1
    );
    clock.advance(1_000);
    let page = alice.history(group, sent.seq, 1).await.unwrap();
    assert!(page.messages.is_empty(), "expired: {:?}", page.messages);
    eventually("the sweeper deletes it", || {
        ServerStats::get(&server.handle().stats.expired_swept) > swept_before
    })
    .await;
}

// ----- group administrators -----

/// The next `Admins` push `client` receives, skipping other notices.
async fn next_admins(client: &TestClient) -> Vec<String> {
    loop {
        match timeout(WAIT, client.next_notice()).await.unwrap().unwrap() {
            Body::Admins(a) => return a.admins,
            _ => continue,
        }
    }
}

/// A group of `creator` with `members`.
async fn group_of(creator: &TestClient, members: &[&str]) -> u64 {
    creator
        .create_conversation(ConversationKind::Group, members)
        .await
        .unwrap()
        .id
}

/// On the plain path: the creator is the first administrator; only
/// administrators add members, remove others and set the timer; anyone
/// leaves; SetAdmin is for administrators, about members, and keeps one
/// administrator; every change is pushed to the members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_administrators_change_membership_and_settings() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let group = group_of(&alice, &["bob", "carol"]).await;
    assert_eq!(bob.admins(group).await.unwrap(), ["alice"]);
    assert_eq!(code(dave.admins(group).await), ErrorCode::NotMember);

    assert_eq!(
        code(bob.add_members(group, &["dave"]).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(bob.remove_members(group, &["carol"]).await),
        ErrorCode::Forbidden
    );
    assert_eq!(code(bob.set_timer(group, 60).await), ErrorCode::Forbidden);
    assert_eq!(
        code(bob.set_admin(group, "bob", true).await),
        ErrorCode::Forbidden
    );
    carol.remove_members(group, &["carol"]).await.unwrap(); // leaving is free
    alice.set_timer(group, 60).await.unwrap();

    assert_eq!(
        code(alice.set_admin(group, "carol", true).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        code(alice.set_admin(group, "alice", false).await),
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        alice.set_admin(group, "bob", true).await.unwrap(),
        ["alice", "bob"]
    );
    assert_eq!(next_admins(&bob).await, ["alice", "bob"]);
    bob.add_members(group, &["dave"]).await.unwrap();
    bob.remove_members(group, &["alice"]).await.unwrap(); // an admin removes an admin
    assert_eq!(next_admins(&dave).await, ["bob"]);
    assert_eq!(dave.admins(group).await.unwrap(), ["bob"]);
    assert_eq!(
        bob.set_admin(group, "dave", true).await.unwrap(),
        ["bob", "dave"]
    );
    assert_eq!(dave.set_admin(group, "bob", false).await.unwrap(), ["dave"]);
    assert_eq!(
        code(bob.add_members(group, &["alice"]).await),
        ErrorCode::Forbidden
    );
    let direct = direct(&alice, "bob").await;
    assert_eq!(code(alice.admins(direct).await), ErrorCode::Forbidden);
    bob.set_timer(direct, 60).await.unwrap(); // any member of a direct conversation
}

/// When the last administrator leaves, the longest-standing member is
/// promoted: the lowest first seq of membership, not the lowest handle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_administrator_leaving_promotes_the_longest_standing_member() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    server.register("zed").await;
    let group = group_of(&alice, &["zed"]).await;
    alice.send(group, &b"before bob"[..]).await.unwrap();
    alice.add_members(group, &["bob"]).await.unwrap();
    alice.remove_members(group, &["alice"]).await.unwrap();
    assert_eq!(next_admins(&bob).await, ["zed"]);
    assert_eq!(bob.admins(group).await.unwrap(), ["zed"]);
    assert_eq!(
        code(bob.add_members(group, &["alice"]).await),
        ErrorCode::Forbidden
    );
}

/// The same rules hold for the additions and removals a Commit carries;
/// removing an administrator by Commit updates and announces the set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_follow_the_administrator_rules() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    server.register("carol").await;
    let dave = server.register("dave").await;
    let group = group_of(&alice, &["bob", "carol"]).await;
    let commit = |epoch: u64, added: &[&str], removed: &[&str]| mls::Commit {
        conversation_id: group,
        epoch,
        commit: Bytes::from(format!("commit for epoch {epoch}")),
        welcome: None,
        group_info: Bytes::from(format!("group info after epoch {epoch}")),
        added: added.iter().map(|u| (*u).to_owned()).collect(),
        removed: removed.iter().map(|u| (*u).to_owned()).collect(),
        staged: Default::default(),
    };
    assert_eq!(
        code(bob.request(commit(0, &["dave"], &[])).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(bob.request(commit(0, &[], &["carol"])).await),
        ErrorCode::Forbidden
    );
    // A commit with no membership change is anyone's (key updates).
    bob.request(commit(0, &[], &[])).await.unwrap();
    alice
        .request(commit(1, &["dave"], &["carol"]))
        .await
        .unwrap();
    alice.set_admin(group, "bob", true).await.unwrap();
    assert_eq!(next_admins(&dave).await, ["alice", "bob"]);
    bob.request(commit(2, &[], &["alice"])).await.unwrap();
    assert_eq!(bob.admins(group).await.unwrap(), ["bob"]);
    assert_eq!(
        next_admins(&dave).await,
        ["bob"],
        "the removal is announced"
    );
    // A Commit cannot remove its sender, so the last administrator leaves on
    // the plain path; dave, the only member left, is promoted.
    bob.remove_members(group, &["bob"]).await.unwrap();
    assert_eq!(next_admins(&dave).await, ["dave"]);
    assert_eq!(code(alice.admins(group).await), ErrorCode::NotMember);
}

/// In a group an administrator may purge any member's message (moderation);
/// a member who is not one may purge only their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_administrator_purges_any_message() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let group = group_of(&alice, &["bob", "carol"]).await;
    let bobs = bob.send(group, &b"from bob"[..]).await.unwrap();
    let alices = alice.send(group, &b"from alice"[..]).await.unwrap();
    assert_eq!(
        code(carol.purge_message(group, bobs.seq).await),
        ErrorCode::NotSender
    );
    assert_eq!(
        code(bob.purge_message(group, alices.seq).await),
        ErrorCode::NotSender
    );
    alice.purge_message(group, bobs.seq).await.unwrap();
    let page = carol.history(group, bobs.seq, 1).await.unwrap();
    assert_eq!(page.messages[0].flags, flags::TOMBSTONE);
    assert_eq!(
        page.messages[0].sender_user, "bob",
        "the tombstone keeps its sender"
    );
}

/// An administrator may let every member add members (plain path and
/// Commit); removing others stays with administrators; only administrators
/// change the setting, and members are told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_may_let_every_member_add() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    server.register("dave").await;
    server.register("erin").await;
    let group = group_of(&alice, &["bob", "carol"]).await;
    assert_eq!(
        code(bob.set_member_adds(group, true).await),
        ErrorCode::Forbidden
    );
    alice.set_member_adds(group, true).await.unwrap();
    let pushed = loop {
        match timeout(WAIT, bob.next_notice()).await.unwrap().unwrap() {
            Body::Admins(a) => break a,
            _ => continue,
        }
    };
    assert_eq!(
        (pushed.admins, pushed.everyone_adds),
        (vec!["alice".to_owned()], true)
    );
    bob.add_members(group, &["dave"]).await.unwrap();
    let commit = mls::Commit {
        conversation_id: group,
        epoch: 0,
        commit: Bytes::from_static(b"commit"),
        welcome: None,
        group_info: Bytes::from_static(b"group info"),
        added: vec!["erin".to_owned()],
        removed: vec![],
        staged: Default::default(),
    };
    bob.request(commit.clone()).await.unwrap();
    assert_eq!(
        code(bob.remove_members(group, &["carol"]).await),
        ErrorCode::Forbidden
    );
    let removing = mls::Commit {
        epoch: 1,
        added: vec![],
        removed: vec!["carol".to_owned()],
        staged: Default::default(),
        ..commit
    };
    assert_eq!(code(bob.request(removing).await), ErrorCode::Forbidden);
    alice.set_member_adds(group, false).await.unwrap();
    assert_eq!(
        code(carol.add_members(group, &["alice2"]).await),
        ErrorCode::Forbidden
    );
}
