//! End-to-end encryption against a real server with real crypto: Olm 1:1
//! across two users with two devices each, MLS groups (50 members, adds,
//! removes, racing commits), key replenishment, and the server-blind proof.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{assert_server_blind, TestServer, WAIT};
use tempfile::TempDir;
use tern_client::content::Content;
use tern_client::mls::{MlsClient, PendingCommit};
use tern_client::secure::{SecureClient, SecureError, SecureEvent};
use tern_client::state_lock::StateLockError;
use tern_client::{AnswerLoss, Client};
use tern_proto::body::{mls, prekeys};
use tern_proto::Body;
use tern_server::shard::ServerStats;
use tern_server::Clock;

struct Device {
    client: SecureClient,
    state: TempDir,
}

/// A new account anyone may add to groups (these tests are not about
/// consent; `register_private` keeps the default).
async fn register(server: &TestServer, user: &str) -> Device {
    let device = register_private(server, user).await;
    let everyone = tern_proto::GroupAdds::Everyone;
    device
        .client
        .transport()
        .set_privacy(everyone)
        .await
        .unwrap();
    device
}

/// A new account with the default privacy: only contacts add it to groups.
async fn register_private(server: &TestServer, user: &str) -> Device {
    let state = tempfile::tempdir().unwrap();
    let client = SecureClient::register(server.options(state.path()), user, "phone")
        .await
        .unwrap();
    Device { client, state }
}

/// Links a second device to `existing`'s account, approving from `existing`.
async fn link(server: &TestServer, existing: &Device, name: &str) -> Device {
    let state = tempfile::tempdir().unwrap();
    let options = server.options(state.path());
    let user = existing.client.user().to_owned();
    let name = name.to_owned();
    let pending = tokio::spawn(async move { SecureClient::link(options, &user, &name).await });
    match next(&existing.client).await {
        SecureEvent::LinkPrompt { link_id, .. } => {
            existing.client.approve_link(link_id, true).await.unwrap()
        }
        other => panic!("expected a link request, got {other:?}"),
    }
    Device {
        client: pending.await.unwrap().unwrap(),
        state,
    }
}

async fn next(client: &SecureClient) -> SecureEvent {
    tokio::time::timeout(WAIT, client.next_event())
        .await
        .expect("an event in time")
        .expect("client open")
}

/// The next decrypted text, skipping membership events.
async fn next_text(client: &SecureClient) -> (String, String) {
    loop {
        match next(client).await {
            SecureEvent::Message(m) => match m.content {
                Content::Text { body } => return (m.sender_user, body),
                other => panic!("unexpected content {other:?}"),
            },
            SecureEvent::GroupChanged { .. } | SecureEvent::Joined { .. } => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_with_two_devices_each_all_decrypt() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    alice
        .client
        .send_text(conv, "before the laptops")
        .await
        .unwrap();
    assert_eq!(
        next_text(&bob.client).await,
        ("alice".into(), "before the laptops".into())
    );

    let alice_laptop = link(&server, &alice, "laptop").await;
    let bob_laptop = link(&server, &bob, "laptop").await;
    // alice's phone still believes bob has one device: the server refuses the
    // stale set and the SDK re-encrypts for all four... minus itself.
    alice
        .client
        .send_text(conv, "hello from alice's phone")
        .await
        .unwrap();
    for device in [&bob.client, &bob_laptop.client, &alice_laptop.client] {
        assert_eq!(
            next_text(device).await,
            ("alice".into(), "hello from alice's phone".into())
        );
    }
    bob_laptop
        .client
        .send_text(conv, "reply from bob's laptop")
        .await
        .unwrap();
    for device in [&alice.client, &alice_laptop.client, &bob.client] {
        assert_eq!(
            next_text(device).await,
            ("bob".into(), "reply from bob's laptop".into())
        );
    }
    // Note to self reaches the user's other device only.
    let note = alice_laptop.client.note_to_self().await.unwrap();
    alice_laptop
        .client
        .send_text(note, "remember the milk")
        .await
        .unwrap();
    assert_eq!(
        next_text(&alice.client).await,
        ("alice".into(), "remember the milk".into())
    );
}

fn members(n: usize) -> Vec<String> {
    (1..n).map(|i| format!("m{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_member_mls_group_adds_removes_and_locks_out_removed_members() {
    let server = TestServer::start(2);
    let owner = register(&server, "owner").await;
    let names = members(50);
    let mut devices = Vec::new();
    for name in &names {
        devices.push(register(&server, name).await);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let group = owner.client.create_group(&refs).await.unwrap();
    for d in &devices {
        assert_eq!(
            next(&d.client).await,
            SecureEvent::Joined {
                conversation_id: group
            }
        );
    }
    owner
        .client
        .send_text(group, "welcome, all 49 of you")
        .await
        .unwrap();
    for d in &devices {
        assert_eq!(
            next_text(&d.client).await,
            ("owner".into(), "welcome, all 49 of you".into())
        );
    }

    let late = register(&server, "late").await;
    // Only administrators add members (issue 10).
    let admin = owner.client.transport().set_admin(group, &names[0], true);
    admin.await.unwrap();
    devices[0]
        .client
        .add_members(group, &["late"])
        .await
        .unwrap();
    assert_eq!(
        next(&late.client).await,
        SecureEvent::Joined {
            conversation_id: group
        }
    );
    owner
        .client
        .remove_members(group, &["m48", "m49"])
        .await
        .unwrap();
    for removed in &devices[47..49] {
        assert_eq!(
            next(&removed.client).await,
            SecureEvent::GroupChanged {
                conversation_id: group,
                epoch: 2
            }
        );
        assert_eq!(
            next(&removed.client).await,
            SecureEvent::Removed {
                conversation_id: group
            }
        );
    }
    devices[5]
        .client
        .send_text(group, "after the removal")
        .await
        .unwrap();
    assert_eq!(
        next_text(&late.client).await,
        ("m6".into(), "after the removal".into())
    );
    assert_eq!(
        next_text(&owner.client).await,
        ("m6".into(), "after the removal".into())
    );

    // The removed members get nothing more, and even the ciphertext (fetched
    // by a member) does not decrypt with their saved MLS state.
    let page = owner.client.transport().history(group, 1, 0).await.unwrap();
    let last = page.messages.last().unwrap().clone();
    for removed in &devices[47..49] {
        let identity = format!("{}/1", removed.client.user());
        removed.client.close().await;
        let mut state = MlsClient::load_or_create(removed.state.path(), &identity).unwrap();
        assert!(
            state.process(group, &last.payload).is_err(),
            "removed member decrypted a later message"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_commits_one_wins_and_the_other_recovers() {
    let server = TestServer::start(2);
    let alice = Arc::new(register(&server, "alice").await);
    let bob = Arc::new(register(&server, "bob").await);
    let carol = register(&server, "carol").await;
    let dave = register(&server, "dave").await;
    let group = alice.client.create_group(&["bob"]).await.unwrap();
    assert_eq!(
        next(&bob.client).await,
        SecureEvent::Joined {
            conversation_id: group
        }
    );

    // Only administrators add members (issue 10).
    let admin = alice.client.transport().set_admin(group, "bob", true);
    admin.await.unwrap();
    let (a, b) = (alice.clone(), bob.clone());
    let add_carol = tokio::spawn(async move { a.client.add_members(group, &["carol"]).await });
    let add_dave = tokio::spawn(async move { b.client.add_members(group, &["dave"]).await });
    let mut epochs = vec![
        add_carol.await.unwrap().unwrap(),
        add_dave.await.unwrap().unwrap(),
    ];
    epochs.sort_unstable();
    assert_eq!(epochs, vec![2, 3], "both changes landed, one epoch each");
    assert_eq!(
        next(&carol.client).await,
        SecureEvent::Joined {
            conversation_id: group
        }
    );
    assert_eq!(
        next(&dave.client).await,
        SecureEvent::Joined {
            conversation_id: group
        }
    );
    alice
        .client
        .send_text(group, "all four of us")
        .await
        .unwrap();
    for d in [&bob.client, &carol.client, &dave.client] {
        assert_eq!(
            next_text(d).await,
            ("alice".into(), "all four of us".into())
        );
    }

    // dave leaves; a remaining member then commits his removal from the tree.
    dave.client.leave(group).await.unwrap();
    carol.client.remove_members(group, &["dave"]).await.unwrap();
    bob.client.send_text(group, "without dave").await.unwrap();
    assert_eq!(
        next_text(&alice.client).await,
        ("bob".into(), "without dave".into())
    );
    assert_eq!(
        next_text(&carol.client).await,
        ("bob".into(), "without dave".into())
    );
    // dave gets nothing more from the group: once alice and carol have the
    // message, a sentinel alice sends him directly is the next thing he hears
    // (a group message, even one he could not decrypt, would come first).
    let direct = alice.client.direct("dave").await.unwrap();
    alice
        .client
        .send_text(direct, "sentinel for dave")
        .await
        .unwrap();
    match next(&dave.client).await {
        SecureEvent::Message(m) => assert_eq!(
            (m.conversation_id, m.sender_user.as_str(), m.content),
            (direct, "alice", Content::text("sentinel for dave"))
        ),
        other => panic!("dave still hears from the group: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_prekeys_are_replenished_by_the_sdk() {
    // A claim budget that never throttles: this test is about replenishing.
    let server = TestServer::start_with(1, |c| c.claim_burst = 1_000);
    let bob = register(&server, "bob").await;
    let claimer = register(&server, "claimer").await;
    // 95 claims bring bob's 100 one-time prekeys under the threshold of 10.
    for _ in 0..95 {
        claimer
            .client
            .transport()
            .request(prekeys::ClaimPrekeys { user: "bob".into() })
            .await
            .unwrap();
    }
    // The SDK hears KeysLow and uploads more on its own.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let counts = bob
            .client
            .transport()
            .request(mls::UploadKeyPackages {
                key_packages: vec![],
                last_resort: None,
            })
            .await
            .unwrap();
        if counts.one_time_prekeys >= 50 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "prekeys were not replenished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_stores_only_ciphertext() {
    let mut server = TestServer::start_with(2, |c| c.shards = 2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let direct = alice.client.direct("bob").await.unwrap();
    let group = alice.client.create_group(&["bob", "carol"]).await.unwrap();
    let _ = next(&bob.client).await;
    let _ = next(&carol.client).await;
    let markers: Vec<String> = (0..20)
        .map(|i| format!("PLAINTEXT-MARKER-{i:02}-e5c1b7"))
        .collect();
    for (i, marker) in markers.iter().enumerate() {
        let conv = if i % 2 == 0 { direct } else { group };
        alice.client.send_text(conv, marker).await.unwrap();
    }
    // bob is in both conversations: he decrypts every marker.
    let mut heard = Vec::new();
    for _ in 0..markers.len() {
        heard.push(next_text(&bob.client).await.1);
    }
    heard.sort();
    assert_eq!(heard, markers);
    // Positive control: a plaintext payload sent around the encryption layer
    // must be found, or the scan proves nothing.
    let control = b"UNENCRYPTED-CONTROL-MARKER-9f3a";
    alice
        .client
        .transport()
        .send(direct, &control[..])
        .await
        .unwrap();
    server.stop().await;

    assert_server_blind(server.data_dir(), control, &markers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newly_linked_device_is_added_to_existing_groups() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let group = alice.client.create_group(&["bob"]).await.unwrap();
    assert_eq!(
        next(&bob.client).await,
        SecureEvent::Joined {
            conversation_id: group
        }
    );

    // Linking the laptop makes bob's phone commit the laptop into the group.
    let laptop = link(&server, &bob, "laptop").await;
    assert_eq!(
        next(&laptop.client).await,
        SecureEvent::Joined {
            conversation_id: group
        }
    );
    alice
        .client
        .send_text(group, "hello both bobs")
        .await
        .unwrap();
    assert_eq!(
        next_text(&laptop.client).await,
        ("alice".into(), "hello both bobs".into())
    );
    assert_eq!(
        next_text(&bob.client).await,
        ("alice".into(), "hello both bobs".into())
    );
}

fn is_send_ack(body: &Body) -> bool {
    matches!(body, Body::SendAck(_))
}

/// How many messages of `conversation` `reader` can see from `sender`.
async fn stored_from(reader: &SecureClient, conversation: u64, sender: &str) -> usize {
    let page = reader
        .transport()
        .history(conversation, 1, 100)
        .await
        .unwrap();
    assert_eq!(page.next_seq, page.head_seq + 1, "one page holds it all");
    page.messages
        .iter()
        .filter(|m| m.sender_user == sender)
        .count()
}

/// Issue 8 item 3: an encrypted send whose SendAck is lost (the connection
/// breaks as it arrives, or it never arrives) is sent again by the SDK with
/// the same client message id and ciphertext: the server answers the
/// original seq as a duplicate, stores one copy, and the recipient decrypts
/// it once (the next thing it hears is a sentinel).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_send_whose_answer_is_lost_is_stored_once() {
    let server = TestServer::start(2);
    let state = tempfile::tempdir().unwrap();
    let mut options = server.options(state.path());
    // A silently lost answer is noticed after this long.
    options.request_timeout = Duration::from_secs(2);
    let alice = SecureClient::register(options, "alice", "phone")
        .await
        .unwrap();
    let bob = register(&server, "bob").await;
    let direct = alice.direct("bob").await.unwrap();
    let group = alice.create_group(&["bob"]).await.unwrap();
    assert_eq!(
        next(&bob.client).await,
        SecureEvent::Joined {
            conversation_id: group
        }
    );
    for conversation in [direct, group] {
        let before = stored_from(&bob.client, conversation, "alice").await;
        for (loss, text) in [
            (AnswerLoss::ConnectionLost, "after a lost connection"),
            (AnswerLoss::Silent, "after a timeout"),
        ] {
            let reconnects = alice.transport().reconnects();
            alice.transport().lose_next_answer(is_send_ack, loss);
            let receipt = alice.send_text(conversation, text).await.unwrap().receipt;
            assert!(receipt.duplicate, "{loss:?}: the answer is the retry's");
            if loss == AnswerLoss::ConnectionLost {
                assert!(alice.transport().reconnects() > reconnects);
            }
            assert_eq!(next_text(&bob.client).await, ("alice".into(), text.into()));
        }
        alice.send_text(conversation, "sentinel").await.unwrap();
        assert_eq!(
            next_text(&bob.client).await,
            ("alice".into(), "sentinel".into()),
            "no second copy reached bob"
        );
        assert_eq!(
            stored_from(&bob.client, conversation, "alice").await,
            before + 3,
            "each message stored once"
        );
    }
}

/// The next event of `client`, which must be that it joined `group`,
/// possibly after events of having been taken out of it.
async fn expect_joined(client: &SecureClient, group: u64) {
    loop {
        match next(client).await {
            SecureEvent::Joined { conversation_id } if conversation_id == group => return,
            SecureEvent::GroupChanged { .. } | SecureEvent::Removed { .. } => {}
            other => panic!("expected to join group {group}, got {other:?}"),
        }
    }
}

/// Issue 8 item 5: a member who was removed, or who left, and is added
/// again joins from the new Welcome (it replaces the stale group state)
/// and decrypts the group's messages again; its old state does not swallow
/// the Welcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_or_gone_and_added_again_reads_the_group() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let group = alice.client.create_group(&["bob"]).await.unwrap();
    expect_joined(&bob.client, group).await;

    // Removed by alice, then added back.
    alice.client.remove_members(group, &["bob"]).await.unwrap();
    assert_eq!(
        next(&bob.client).await,
        SecureEvent::Removed {
            conversation_id: group
        }
    );
    alice.client.add_members(group, &["bob"]).await.unwrap();
    expect_joined(&bob.client, group).await;
    alice.client.send_text(group, "welcome back").await.unwrap();
    assert_eq!(
        next_text(&bob.client).await,
        ("alice".into(), "welcome back".into())
    );
    bob.client
        .send_text(group, "glad to be back")
        .await
        .unwrap();
    assert_eq!(
        next_text(&alice.client).await,
        ("bob".into(), "glad to be back".into())
    );

    // bob leaves by himself (his MLS state is marked inactive); alice commits
    // his removal from the tree, then adds him back.
    bob.client.leave(group).await.unwrap();
    alice.client.remove_members(group, &["bob"]).await.unwrap();
    alice
        .client
        .send_text(group, "while bob is away")
        .await
        .unwrap();
    alice.client.add_members(group, &["bob"]).await.unwrap();
    expect_joined(&bob.client, group).await;
    alice.client.send_text(group, "back again").await.unwrap();
    assert_eq!(
        next_text(&bob.client).await,
        ("alice".into(), "back again".into()),
        "the first thing bob reads is from after his return"
    );
}

/// Issue 8 item 8: bob has a phone with keys and a linked tablet that never
/// published any. alice's 1:1 sends reach the phone and report the tablet
/// as skipped, for a new conversation and for one with sessions already.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_without_keys_is_skipped_and_does_not_block_the_others() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    alice.client.send_text(conv, "one device").await.unwrap();
    assert_eq!(
        next_text(&bob.client).await,
        ("alice".into(), "one device".into())
    );

    // A transport-only client links the tablet and never uploads keys.
    let tablet_state = tempfile::tempdir().unwrap();
    let options = server.options(tablet_state.path());
    let pending = tokio::spawn(async move { Client::link(options, "bob", "tablet").await });
    match next(&bob.client).await {
        SecureEvent::LinkPrompt { link_id, .. } => {
            bob.client.approve_link(link_id, true).await.unwrap()
        }
        other => panic!("expected a link request, got {other:?}"),
    }
    let tablet = pending.await.unwrap().unwrap();
    let tablet_id = ("bob".to_owned(), tablet.device());

    // alice has a session with the phone already.
    let sent = alice.client.send_text(conv, "phone only").await.unwrap();
    assert_eq!(sent.skipped, vec![tablet_id.clone()]);
    assert_eq!(
        next_text(&bob.client).await,
        ("alice".into(), "phone only".into())
    );
    // carol has no session at all: the phone is reached from its bundle.
    let carol = register(&server, "carol").await;
    let direct = carol.client.direct("bob").await.unwrap();
    let sent = carol.client.send_text(direct, "from carol").await.unwrap();
    assert_eq!(sent.skipped, vec![tablet_id]);
    assert_eq!(
        next_text(&bob.client).await,
        ("carol".into(), "from carol".into())
    );
    // The tablet's copy is empty: nothing was encrypted for it.
    let page = tablet.history(conv, 1, 100).await.unwrap();
    let last = page.messages.last().unwrap();
    assert!(
        last.payload.is_empty(),
        "no ciphertext for a keyless device"
    );
    tablet.close().await;
}

fn is_commit_accepted(body: &Body) -> bool {
    matches!(body, Body::CommitAccepted(_))
}

/// Issue 8 item 4: the server accepts alice's Commit but its answer is lost
/// (the connection breaks, or it never arrives). alice keeps the pending
/// commit, learns from the server that her Commit took the epoch, merges
/// it, and the group works on: the added member joins and everyone
/// decrypts alice's next message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_merged_not_wedged() {
    let server = TestServer::start(2);
    let state = tempfile::tempdir().unwrap();
    let mut options = server.options(state.path());
    options.request_timeout = Duration::from_secs(2);
    let alice = SecureClient::register(options, "alice", "phone")
        .await
        .unwrap();
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let dave = register(&server, "dave").await;
    let group = alice.create_group(&["bob"]).await.unwrap();
    expect_joined(&bob.client, group).await;
    let added = [
        (AnswerLoss::ConnectionLost, &carol, "carol", 2),
        (AnswerLoss::Silent, &dave, "dave", 3),
    ];
    for (loss, joiner, name, epoch) in added {
        alice.transport().lose_next_answer(is_commit_accepted, loss);
        assert_eq!(
            alice.add_members(group, &[name]).await.unwrap(),
            epoch,
            "{loss:?}"
        );
        expect_joined(&joiner.client, group).await;
    }
    alice.send_text(group, "all of us").await.unwrap();
    for member in [&bob, &carol, &dave] {
        assert_eq!(
            next_text(&member.client).await,
            ("alice".into(), "all of us".into())
        );
    }
    dave.client.send_text(group, "dave here").await.unwrap();
    assert_eq!(next_text(&alice).await, ("dave".into(), "dave here".into()));
}

/// Issue 8 item 1: a state directory is open in one client at a time. A
/// second client on it, in the same process here (another process gets the
/// same), is refused with the typed in-use error naming the holder's pid,
/// and may open it once the first one is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_client_on_a_state_directory_is_refused_until_the_first_closes() {
    let server = TestServer::start(1);
    let bob = register(&server, "bob").await;
    let refused = SecureClient::connect(server.options(bob.state.path())).await;
    match refused {
        Err(SecureError::Lock(StateLockError::InUse { dir, pid })) => {
            assert_eq!(dir, bob.state.path());
            assert_eq!(pid, Some(std::process::id()));
        }
        Err(other) => panic!("expected the in-use error, got {other}"),
        Ok(_) => panic!("a second client opened a state directory in use"),
    }
    let text = SecureClient::connect(server.options(bob.state.path()))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        text.contains(&format!(
            "is in use by another tern process (pid {})",
            std::process::id()
        )),
        "{text}"
    );
    let register_again = SecureClient::register(server.options(bob.state.path()), "bob2", "x");
    assert!(matches!(
        register_again.await,
        Err(SecureError::Lock(StateLockError::InUse { .. }))
    ));
    bob.client.close().await;
    let reopened = SecureClient::connect(server.options(bob.state.path()))
        .await
        .unwrap();
    assert_eq!(reopened.user(), "bob");
    reopened.close().await;
}

/// Issue 9 item 3: a device removed from a group while it was offline
/// learns it when it comes back: the server no longer lists the group for
/// it (and does not deliver the Commit to a non-member), so the SDK emits
/// `Removed` once and marks its MLS state inactive. Removed from a second
/// group during a second absence, the first removal is not told again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_while_offline_hears_removed_once_on_return() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let mut bob = register(&server, "bob").await;
    let first = alice.client.create_group(&["bob"]).await.unwrap();
    expect_joined(&bob.client, first).await;
    let second = alice.client.create_group(&["bob"]).await.unwrap();
    expect_joined(&bob.client, second).await;
    // Removed from the lower id first: a repeat of that removal would come
    // before the second one (groups are checked in ascending order).
    let (low, high) = (first.min(second), first.max(second));
    for group in [low, high] {
        bob.client.close().await;
        alice.client.remove_members(group, &["bob"]).await.unwrap();
        bob.client = SecureClient::connect(server.options(bob.state.path()))
            .await
            .unwrap();
        assert_eq!(
            next(&bob.client).await,
            SecureEvent::Removed {
                conversation_id: group
            }
        );
    }
    let direct = alice.client.direct("bob").await.unwrap();
    alice.client.send_text(direct, "sentinel").await.unwrap();
    assert_eq!(
        next_text(&bob.client).await,
        ("alice".into(), "sentinel".into())
    );
    let bob_state = bob.state.path().to_owned();
    bob.client.close().await;
    let mut mls = MlsClient::load_or_create(&bob_state, "bob/1").unwrap();
    assert_eq!(mls.active_groups().unwrap(), Vec::<u64>::new());
    assert!(mls.has_group(first).unwrap() && mls.has_group(second).unwrap());
}

/// Issue 8 items 2 and 6: bob's client decrypts a message and the process
/// "dies" before acknowledging it (closed, no ack sent). The next client
/// on the same state gets it again from the server: it is recognised from
/// the local message store (the Olm ratchet that decrypted it has moved
/// on), acknowledged, and neither reported undecryptable nor shown again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decrypted_but_unacknowledged_message_is_kept_once_across_a_restart() {
    let server = TestServer::start(1);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let direct = alice.client.direct("bob").await.unwrap();
    alice
        .client
        .send_text(direct, "before the crash")
        .await
        .unwrap();
    assert_eq!(
        next_text(&bob.client).await,
        ("alice".into(), "before the crash".into())
    );
    bob.client.close().await;

    let again = SecureClient::connect(server.options(bob.state.path()))
        .await
        .unwrap();
    // bob's SDK sent a delivered receipt for #1 as it closed: seq 2.
    let after = alice
        .client
        .send_text(direct, "after the restart")
        .await
        .unwrap()
        .receipt
        .seq;
    match next(&again).await {
        SecureEvent::Message(m) => {
            assert_eq!(
                (m.seq, m.content),
                (after, Content::text("after the restart"))
            )
        }
        other => panic!("expected the message after the restart, got {other:?}"),
    }
    let stored: Vec<(u64, Option<String>)> = again
        .messages()
        .history(direct, 10)
        .unwrap()
        .iter()
        .map(|m| (m.seq, m.text().map(str::to_owned)))
        .collect();
    assert_eq!(
        stored,
        [
            (1, Some("before the crash".into())),
            (after, Some("after the restart".into()))
        ]
    );
    let cursors = again.transport().sync(true).await.unwrap();
    let cursor = cursors
        .iter()
        .find(|c| c.conversation_id == direct)
        .unwrap();
    assert_eq!(cursor.cursor, 1, "the redelivery was acknowledged");
    again.close().await;
}

/// Issue 8 item 6: a send-only process whose group send had to catch up
/// first decrypts the messages before the Commit it missed; it exits
/// without showing them. They are in the store, so the next client hands
/// them to the app from there (the MLS secrets that decrypted them are
/// gone, which used to read as "undecryptable").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_decrypted_while_a_send_caught_up_reach_the_next_client() {
    let server = TestServer::start(1);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let _carol = register(&server, "carol").await;
    let group = alice.client.create_group(&["bob"]).await.unwrap();
    expect_joined(&bob.client, group).await;
    alice.client.send_text(group, "before carol").await.unwrap();
    alice.client.add_members(group, &["carol"]).await.unwrap();
    let sent = bob.client.send_text(group, "from bob").await.unwrap();
    bob.client.close().await;

    let again = SecureClient::connect(server.options(bob.state.path()))
        .await
        .unwrap();
    assert_eq!(
        next_text(&again).await,
        ("alice".into(), "before carol".into())
    );
    // Between "from bob" and "after": bob's delivered receipt (not shown).
    let after = alice.client.send_text(group, "after").await.unwrap();
    assert_eq!(next_text(&again).await, ("alice".into(), "after".into()));
    let stored: Vec<(u64, String, bool)> = again
        .messages()
        .history(group, 10)
        .unwrap()
        .iter()
        .map(|m| (m.seq, m.text().unwrap().to_owned(), m.own))
        .collect();
    assert_eq!(
        stored,
        [
            (3, "before carol".into(), false),
            (sent.receipt.seq, "from bob".into(), true),
            (after.receipt.seq, "after".into(), false),
        ]
    );
    again.close().await;
}

/// Issue 8 item 7: bob's device is away longer than even the Commits are
/// kept (a short `mls_handshake_ttl_secs` here). alice adds carol, then
/// dave, and writes; the server's clock passes both retentions and the
/// sweeper deletes it all. Back, bob's SDK finds its epoch behind the
/// server's with the Commit it needs gone, rejoins by an external commit
/// from the stored GroupInfo and says so (`Rejoined`); then alice and bob
/// read each other again, and so do carol and dave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_away_past_the_retention_rejoins_by_external_commit() {
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = Clock::manual(start_ms);
    let server = TestServer::start_with_clock(2, clock.clone(), |c| {
        c.sweep_interval_secs = 1;
        c.message_ttl_secs = 60;
        c.mls_handshake_ttl_secs = 120;
    });
    let alice = register(&server, "alice").await;
    let mut bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let dave = register(&server, "dave").await;
    let group = alice.client.create_group(&["bob"]).await.unwrap();
    expect_joined(&bob.client, group).await;
    bob.client.close().await;

    alice.client.add_members(group, &["carol"]).await.unwrap();
    assert_eq!(alice.client.add_members(group, &["dave"]).await.unwrap(), 3);
    alice
        .client
        .send_text(group, "while you were away")
        .await
        .unwrap();
    let swept_before = ServerStats::get(&server.handle().stats.expired_swept);
    clock.advance(121_000);
    let deadline = std::time::Instant::now() + WAIT;
    // Two Commits, two Welcomes and the message at least.
    while ServerStats::get(&server.handle().stats.expired_swept) < swept_before + 5 {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing swept in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let page = alice.client.transport().history(group, 1, 0).await.unwrap();
    assert!(page.messages.is_empty(), "{:?}", page.messages);

    bob.client = SecureClient::connect(server.options(bob.state.path()))
        .await
        .unwrap();
    assert_eq!(
        next(&bob.client).await,
        SecureEvent::Rejoined {
            conversation_id: group,
            epoch: 4
        }
    );
    alice.client.send_text(group, "welcome back").await.unwrap();
    assert_eq!(
        next_text(&bob.client).await,
        ("alice".into(), "welcome back".into())
    );
    bob.client.send_text(group, "thanks").await.unwrap();
    for reader in [&alice, &carol, &dave] {
        let mut texts = Vec::new();
        while texts.last().map(|(_, t): &(String, String)| t.as_str()) != Some("thanks") {
            texts.push(next_text(&reader.client).await);
        }
        assert_eq!(texts.pop(), Some(("bob".into(), "thanks".into())));
    }
}

/// The pending commit of `group` in the MLS state saved in `state` (read
/// from disk, as the next client on it would find it).
fn saved_pending_commit(state: &Path, identity: &str, group: u64) -> Option<PendingCommit> {
    let mut mls = MlsClient::load_or_create(state, identity).unwrap();
    mls.pending_commit(group).unwrap()
}

/// Each of `members` sends one text to `group` and every other member
/// reads it.
async fn all_read_each_other(members: &[&SecureClient], group: u64) {
    for sender in members {
        let text = format!("from {}", sender.user());
        sender.send_text(group, &text).await.unwrap();
        for reader in members.iter().filter(|m| m.user() != sender.user()) {
            assert_eq!(
                next_text(reader).await,
                (sender.user().to_owned(), text.clone()),
                "{} reading",
                reader.user()
            );
        }
    }
}

/// Issue 8 item 4, across a restart: the server takes alice's Commit
/// adding carol but its answer is lost, and alice's client is closed while
/// the call still waits for it, so the add fails. The pending commit was
/// saved before the Commit went out; the next client on alice's state
/// directory asks the server at open, finds its own Commit took the epoch,
/// merges it (GroupChanged), and alice, bob and carol all read each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committer_closed_before_the_outcome_merges_its_commit_when_it_opens_again() {
    let server = TestServer::start(2);
    let state = tempfile::tempdir().unwrap();
    let mut options = server.options(state.path());
    // The lost answer is never waited out: the client is closed first.
    options.request_timeout = WAIT * 6;
    let alice = Arc::new(
        SecureClient::register(options, "alice", "phone")
            .await
            .unwrap(),
    );
    let identity = format!("alice/{}", alice.device());
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let group = alice.create_group(&["bob"]).await.unwrap();
    expect_joined(&bob.client, group).await;

    alice
        .transport()
        .lose_next_answer(is_commit_accepted, AnswerLoss::Silent);
    let adding = tokio::spawn({
        let alice = alice.clone();
        async move { alice.add_members(group, &["carol"]).await }
    });
    // carol's Welcome proves the server took the Commit.
    expect_joined(&carol.client, group).await;
    alice.close().await;
    let outcome = adding.await.unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    drop(alice);
    assert_eq!(
        saved_pending_commit(state.path(), &identity, group).map(|p| p.epoch),
        Some(1),
        "the pending commit was saved before the Commit was sent"
    );

    let alice = SecureClient::connect(server.options(state.path()))
        .await
        .unwrap();
    assert!(
        saved_pending_commit(state.path(), &identity, group).is_none(),
        "settled at open"
    );
    assert_eq!(
        next(&alice).await,
        SecureEvent::GroupChanged {
            conversation_id: group,
            epoch: 2
        }
    );
    all_read_each_other(&[&alice, &bob.client, &carol.client], group).await;
}

/// Issue 8 item 4, the other outcome: alice's client died after saving a
/// staged Commit (adding zed) but before the server got it. The next
/// client on her state directory learns at open that nothing took the
/// epoch and discards the pending commit; zed is not in the group, a new
/// add of carol succeeds, and alice, bob and carol read each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_server_never_got_is_discarded_when_the_committer_opens_again() {
    let server = TestServer::start(2);
    let mut alice = register(&server, "alice").await;
    let identity = format!("alice/{}", alice.client.device());
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let group = alice.client.create_group(&["bob"]).await.unwrap();
    expect_joined(&bob.client, group).await;
    alice.client.close().await;

    // What a device that died between saving and sending leaves behind.
    let zed_state = tempfile::tempdir().unwrap();
    let mut zed = MlsClient::load_or_create(zed_state.path(), "zed/1").unwrap();
    let package = zed.key_packages(1).unwrap();
    let mut mls = MlsClient::load_or_create(alice.state.path(), &identity).unwrap();
    let staged = mls.add_members(group, &package).unwrap();
    mls.save().unwrap();
    drop(mls);
    assert_eq!(staged.epoch, 1);

    alice.client = SecureClient::connect(server.options(alice.state.path()))
        .await
        .unwrap();
    assert!(
        saved_pending_commit(alice.state.path(), &identity, group).is_none(),
        "discarded at open"
    );
    assert_eq!(
        alice.client.add_members(group, &["carol"]).await.unwrap(),
        2
    );
    expect_joined(&carol.client, group).await;
    all_read_each_other(&[&alice.client, &bob.client, &carol.client], group).await;
    let mut members = MlsClient::load_or_create(alice.state.path(), &identity)
        .unwrap()
        .members(group)
        .unwrap();
    members.sort();
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(
        !members.iter().any(|m| m.starts_with("zed/")),
        "{members:?}"
    );
}

/// Issue 8 item 4, a third outcome: alice's saved Commit (adding zed)
/// never reached the server, and meanwhile bob added carol at that epoch.
/// alice's next client finds at open that another Commit took the epoch,
/// discards her own, processes bob's from the log, and the three read
/// each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_commit_beaten_by_another_is_discarded_and_the_winner_processed_at_open() {
    let server = TestServer::start(2);
    let mut alice = register(&server, "alice").await;
    let identity = format!("alice/{}", alice.client.device());
    let bob = register(&server, "bob").await;
    let carol = register(&server, "carol").await;
    let group = alice.client.create_group(&["bob"]).await.unwrap();
    expect_joined(&bob.client, group).await;
    // Only administrators add members (issue 10).
    let admin = alice.client.transport().set_admin(group, "bob", true);
    admin.await.unwrap();
    alice.client.close().await;

    let zed_state = tempfile::tempdir().unwrap();
    let mut zed = MlsClient::load_or_create(zed_state.path(), "zed/1").unwrap();
    let package = zed.key_packages(1).unwrap();
    let mut mls = MlsClient::load_or_create(alice.state.path(), &identity).unwrap();
    assert_eq!(mls.add_members(group, &package).unwrap().epoch, 1);
    mls.save().unwrap();
    drop(mls);
    assert_eq!(bob.client.add_members(group, &["carol"]).await.unwrap(), 2);
    expect_joined(&carol.client, group).await;

    alice.client = SecureClient::connect(server.options(alice.state.path()))
        .await
        .unwrap();
    assert!(
        saved_pending_commit(alice.state.path(), &identity, group).is_none(),
        "discarded at open"
    );
    assert_eq!(
        next(&alice.client).await,
        SecureEvent::GroupChanged {
            conversation_id: group,
            epoch: 2
        }
    );
    all_read_each_other(&[&alice.client, &bob.client, &carol.client], group).await;
}

/// Consent before membership: a stranger's add is refused and stores
/// nothing; after an invitation is accepted the add goes through (MLS
/// Commit and Welcome) and the two exchange encrypted messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_adds_only_after_an_accepted_invitation() {
    let server = TestServer::start(2);
    let alice = register_private(&server, "alice").await;
    let bob = register_private(&server, "bob").await;
    let group = alice.client.create_group(&[]).await.unwrap();
    let refused = alice.client.add_members(group, &["bob"]).await.unwrap_err();
    let consent = matches!(&refused, SecureError::Client(c) if c.code() == Some(tern_proto::fb::ErrorCode::ConsentRequired));
    assert!(consent && refused.to_string().contains("bob"), "{refused}");
    let bobs = bob.client.transport().sync(true).await.unwrap();
    assert!(bobs.is_empty(), "nothing stored: {bobs:?}");
    // Invite, accept, add.
    alice.client.transport().invite(group, "bob").await.unwrap();
    match next(&bob.client).await {
        SecureEvent::Invited {
            conversation_id,
            inviter,
        } => {
            assert_eq!((conversation_id, inviter.as_str()), (group, "alice"))
        }
        other => panic!("expected an invitation, got {other:?}"),
    }
    let pending = bob.client.transport().invitations().await.unwrap();
    assert_eq!(pending.len(), 1);
    bob.client
        .transport()
        .answer_invitation(group, true)
        .await
        .unwrap();
    match next(&alice.client).await {
        SecureEvent::InvitationAnswered {
            conversation_id,
            user,
            accepted,
        } => {
            assert_eq!(
                (conversation_id, user.as_str(), accepted),
                (group, "bob", true)
            )
        }
        other => panic!("expected the answer, got {other:?}"),
    }
    alice.client.add_members(group, &["bob"]).await.unwrap();
    match next(&bob.client).await {
        SecureEvent::Joined { conversation_id } => assert_eq!(conversation_id, group),
        other => panic!("expected to join, got {other:?}"),
    }
    alice.client.send_text(group, "welcome").await.unwrap();
    assert_eq!(
        next_text(&bob.client).await,
        ("alice".into(), "welcome".into())
    );
    bob.client.send_text(group, "thanks").await.unwrap();
    assert_eq!(
        next_text(&alice.client).await,
        ("bob".into(), "thanks".into())
    );
    assert!(bob
        .client
        .transport()
        .invitations()
        .await
        .unwrap()
        .is_empty());
}

/// Issue 15: a message the SDK cannot decode (here: a payload in no format
/// it reads, sent around the encryption layer) is surfaced as an event,
/// recorded in the local store, and acknowledged — never dropped in
/// silence, never redelivered forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_sdk_cannot_decode_is_an_event_stored_and_acknowledged() {
    let server = TestServer::start(2);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    let raw = tern_proto::body::messaging::Send {
        conversation_id: conv,
        client_message_id: 77,
        expires_in_secs: 0,
        flags: 0,
        payload: bytes::Bytes::from_static(b"not a tern payload"),
    };
    let sent = alice.client.transport().request(raw).await.unwrap();
    match next(&bob.client).await {
        SecureEvent::Undecryptable {
            conversation_id,
            seq,
            reason,
        } => {
            assert_eq!((conversation_id, seq), (conv, sent.seq));
            assert!(reason.contains("not in a format"), "{reason}");
        }
        other => panic!("expected Undecryptable, got {other:?}"),
    }
    let history = bob.client.messages().history(conv, 10).unwrap();
    let recorded = history
        .iter()
        .find(|m| m.seq == sent.seq)
        .expect("recorded");
    assert!(recorded.content.unreadable_reason().is_some());
    // The app did not acknowledge it before going away: on return the SDK
    // finds it recorded and shown, acknowledges it itself and moves on.
    bob.client.close().await;
    alice.client.send_text(conv, "after").await.unwrap();
    let bob = SecureClient::connect(server.options(bob.state.path()))
        .await
        .unwrap();
    assert_eq!(next_text(&bob).await.1, "after");
    let states = bob.transport().sync(true).await.unwrap();
    let state = states
        .iter()
        .find(|s| s.conversation_id == conv)
        .expect("listed");
    assert_eq!(
        state.cursor, sent.seq,
        "the SDK acknowledged the recorded unreadable message"
    );
    bob.close().await;
}
