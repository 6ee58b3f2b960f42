//! Who may reach a user (issue 10): the direct-starts setting (everyone,
//! contacts, nobody) enforced by a real server, refusals that store
//! nothing, absent privacy fields left unchanged, and message requests end
//! to end: a stranger's conversation is a request, no receipt leaves while
//! it is pending, accepting it sends them and makes the sender a contact,
//! deleting it forgets it (and blocks, if asked); and the `tern privacy` /
//! `tern requests` commands.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{data_dir, ServerProcess, TestServer, WAIT};
use tempfile::TempDir;
use tern_client::content::{Content, ReceiptKind};
use tern_client::message_store::Delivery;
use tern_client::secure::requests::RequestError;
use tern_client::secure::{SecureClient, SecureEvent};
use tern_client::ClientError;
use tern_proto::body::privacy::SetPrivacy;
use tern_proto::body::reach::Privacy;
use tern_proto::fb::ErrorCode;
use tern_proto::{ConversationKind, DirectStarts, GroupAdds};
use tern_store::memory::MemStore;
use tern_store::ConsentStore;
use tokio::sync::{mpsc, Mutex};

fn code(result: Result<impl std::fmt::Debug, ClientError>) -> (ErrorCode, String) {
    match result {
        Err(ClientError::Server { code, message, .. }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn each_direct_starts_setting_is_enforced_and_a_refusal_stores_nothing() {
    let store = Arc::new(MemStore::new());
    let server = TestServer::start_on_store(2, store.clone());
    let alice = server.register_private("alice").await;
    let bob = server.register_private("bob").await;
    let carol = server.register_private("carol").await;
    let dave = server.register("dave").await;
    let defaults = Privacy {
        group_adds: GroupAdds::Contacts,
        direct_starts: DirectStarts::Everyone,
    };
    assert_eq!(bob.privacy().await.unwrap(), defaults);

    // carol's conversation predates bob's nobody and stays his.
    let with_carol = carol
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    bob.set_direct_starts(DirectStarts::Nobody).await.unwrap();
    let (refused, message) = code(
        alice
            .create_conversation(ConversationKind::Direct, &["bob"])
            .await,
    );
    assert_eq!(refused, ErrorCode::ConsentRequired);
    assert!(message.contains("bob"), "{message}");
    let again = carol
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    assert_eq!((again.id, again.created), (with_carol.id, false));
    // Nothing of the refused create was stored: no conversation for either,
    // and alice did not make bob her contact (bob may not add her to groups).
    assert!(alice.sync(true).await.unwrap().is_empty());
    assert_eq!(bob.sync(true).await.unwrap().len(), 1);
    assert!(!store.is_contact("alice", "bob").await.unwrap());
    let (refused, _) = code(
        bob.create_conversation(ConversationKind::Group, &["alice"])
            .await,
    );
    assert_eq!(refused, ErrorCode::ConsentRequired);

    // contacts: bob's contacts only. bob chose dave by adding him to a group.
    bob.set_direct_starts(DirectStarts::Contacts).await.unwrap();
    bob.create_conversation(ConversationKind::Group, &["dave"])
        .await
        .unwrap();
    let (refused, message) = code(
        alice
            .create_conversation(ConversationKind::Direct, &["bob"])
            .await,
    );
    assert_eq!(refused, ErrorCode::ConsentRequired);
    assert!(message.contains("bob"), "{message}");
    let from_dave = dave
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    assert!(from_dave.created);
    assert!(alice.sync(true).await.unwrap().is_empty());

    // everyone: anyone, a stranger's conversation is a request for bob only.
    bob.set_direct_starts(DirectStarts::Everyone).await.unwrap();
    let from_alice = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    assert!(from_alice.created);
    let request_of = |states: Vec<tern_proto::ConversationState>, id: u64| {
        let state = states.into_iter().find(|s| s.conversation_id == id);
        state.expect("listed").request_from
    };
    let listed = bob.sync(true).await.unwrap();
    assert_eq!(
        request_of(listed.clone(), from_alice.id),
        Some("alice".into())
    );
    assert_eq!(
        request_of(listed.clone(), with_carol.id),
        Some("carol".into())
    );
    assert_eq!(request_of(listed, from_dave.id), None, "dave is a contact");
    assert_eq!(
        request_of(alice.sync(true).await.unwrap(), from_alice.id),
        None
    );

    // Accepting makes alice bob's contact: no longer a request.
    bob.accept_request(from_alice.id).await.unwrap();
    assert!(store.is_contact("bob", "alice").await.unwrap());
    assert_eq!(
        request_of(bob.sync(true).await.unwrap(), from_alice.id),
        None
    );
    // Only a member's direct conversations can be accepted.
    let group = dave
        .create_conversation(ConversationKind::Group, &["bob"])
        .await
        .unwrap();
    assert_eq!(
        code(bob.accept_request(group.id).await).0,
        ErrorCode::Forbidden
    );
    assert_eq!(
        code(carol.accept_request(from_alice.id).await).0,
        ErrorCode::NotFound
    );
    assert_eq!(code(bob.accept_request(12345).await).0, ErrorCode::NotFound);
}

#[tokio::test]
async fn an_absent_privacy_field_is_left_unchanged() {
    let server = TestServer::start(1);
    let bob = server.register_private("bob").await;
    bob.set_direct_starts(DirectStarts::Nobody).await.unwrap();
    // The group-adds call of older clients leaves direct_starts alone...
    bob.set_privacy(GroupAdds::Everyone).await.unwrap();
    let both = |group_adds, direct_starts| Privacy {
        group_adds,
        direct_starts,
    };
    assert_eq!(
        bob.privacy().await.unwrap(),
        both(GroupAdds::Everyone, DirectStarts::Nobody)
    );
    // ...and so does their request on the wire (neither new field: it
    // means group_adds, absent = Contacts).
    let legacy = SetPrivacy {
        group_adds: GroupAdds::Contacts,
        groups: None,
        direct_starts: None,
    };
    bob.request(legacy).await.unwrap();
    assert_eq!(
        bob.privacy().await.unwrap(),
        both(GroupAdds::Contacts, DirectStarts::Nobody)
    );
    // Naming direct_starts alone keeps group_adds.
    bob.set_privacy(GroupAdds::Everyone).await.unwrap();
    bob.set_direct_starts(DirectStarts::Contacts).await.unwrap();
    assert_eq!(
        bob.privacy().await.unwrap(),
        both(GroupAdds::Everyone, DirectStarts::Contacts)
    );
    // Naming neither through the SDK sends nothing and changes nothing.
    bob.update_privacy(None, None).await.unwrap();
    assert_eq!(
        bob.privacy().await.unwrap(),
        both(GroupAdds::Everyone, DirectStarts::Contacts)
    );
}

/// A device whose events a task of its own reads and acknowledges (as an
/// app's event loop does), forwarding the messages to the test.
struct Device {
    client: Arc<SecureClient>,
    messages: Mutex<mpsc::UnboundedReceiver<(u64, u64, Content)>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Device {
    fn start(client: SecureClient) -> Device {
        let client = Arc::new(client);
        let (tx, rx) = mpsc::unbounded_channel();
        let reader = client.clone();
        let reader = tokio::spawn(async move {
            while let Some(event) = reader.next_event().await {
                if let SecureEvent::Message(m) = event {
                    let _ = reader.transport().ack(m.conversation_id, m.seq).await;
                    let _ = tx.send((m.conversation_id, m.seq, m.content));
                }
            }
        });
        Device {
            client,
            messages: Mutex::new(rx),
            reader,
        }
    }

    async fn register(server: &TestServer, state: &TempDir, user: &str) -> Device {
        let options = server.options(state.path());
        Device::start(
            SecureClient::register(options, user, "phone")
                .await
                .unwrap(),
        )
    }

    /// The next message: `(conversation, seq, content)`.
    async fn message(&self) -> (u64, u64, Content) {
        tokio::time::timeout(WAIT, self.messages.lock().await.recv())
            .await
            .expect("a message in time")
            .expect("client open")
    }

    /// Closes the client (sending what receipts it would send) and its reader.
    async fn close(self) {
        self.client.close().await;
        let _ = tokio::time::timeout(WAIT, self.reader).await;
    }

    /// The state of this device's own message `seq` in `conversation`.
    fn state_of(&self, conversation: u64, seq: u64) -> Option<Delivery> {
        let views = self
            .client
            .messages()
            .view(conversation, 100, self.client.user());
        let view = views.unwrap().into_iter().find(|v| v.message.seq == seq);
        view.expect("the message is in the history").overall()
    }

    /// Waits, up to [`WAIT`], until `check` holds.
    async fn until(&self, what: &str, check: impl Fn(&Device) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !check(self) {
            assert!(tokio::time::Instant::now() < deadline, "{what} in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn a_request_sends_no_receipts_until_accepted() {
    let store = Arc::new(MemStore::new());
    let server = TestServer::start_on_store(2, store.clone());
    let (alice_dir, bob_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = Device::register(&server, &alice_dir, "alice").await;
    let bob = Device::register(&server, &bob_dir, "bob").await;
    let conv = alice.client.direct("bob").await.unwrap();
    let sent = alice
        .client
        .send_text(conv, "hi bob, we met at the fair")
        .await;
    let seq = sent.unwrap().receipt.seq;
    assert_eq!(
        bob.message().await,
        (conv, seq, Content::text("hi bob, we met at the fair"))
    );

    let requests = bob.client.requests().await.unwrap();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].conversation_id, conv);
    assert_eq!(requests[0].from, "alice");
    assert_eq!(
        requests[0].preview.as_deref(),
        Some("hi bob, we met at the fair")
    );
    // Read while pending: the read position moves here, nothing is sent.
    assert!(bob.client.mark_read(conv, seq).await.unwrap());
    // Closing sends every receipt the client would send: none for a request.
    bob.close().await;
    let heads = alice.client.transport().sync(true).await.unwrap();
    assert_eq!(heads[0].head_seq, seq, "no receipt reached the server");
    assert_eq!(alice.state_of(conv, seq), Some(Delivery::Sent));

    // A new process owes the delivered receipt and still holds it back.
    let options = server.options(bob_dir.path());
    let bob = Device::start(SecureClient::connect(options).await.unwrap());
    assert_eq!(bob.client.requests().await.unwrap().len(), 1);
    bob.client.accept_request(conv).await.unwrap();
    assert!(bob.client.requests().await.unwrap().is_empty());
    assert!(store.is_contact("bob", "alice").await.unwrap());
    alice
        .until("alice sees her message read", |d| {
            d.state_of(conv, seq) == Some(Delivery::Read)
        })
        .await;
    // Later messages are acknowledged as usual.
    let later = alice.client.send_text(conv, "glad you answered").await;
    let later = later.unwrap().receipt.seq;
    assert_eq!(bob.message().await.1, later);
    alice
        .until("delivered", |d| {
            d.state_of(conv, later) == Some(Delivery::Delivered)
        })
        .await;
    let receipts = |c: &Content| {
        matches!(
            c,
            Content::Receipt {
                receipt: ReceiptKind::Read,
                ..
            }
        )
    };
    let log = alice.client.messages().log(conv).unwrap();
    assert!(log
        .iter()
        .any(|m| m.sender_user == "bob" && receipts(&m.content)));
    bob.close().await;
    alice.close().await;
}

#[tokio::test]
async fn a_deleted_request_is_forgotten_and_may_block_its_sender() {
    let server = TestServer::start(2);
    let dirs = [(); 3].map(|()| tempfile::tempdir().unwrap());
    let bob = Device::register(&server, &dirs[0], "bob").await;
    let mallory = Device::register(&server, &dirs[1], "mallory").await;
    let alice = Device::register(&server, &dirs[2], "alice").await;
    let conv = mallory.client.direct("bob").await.unwrap();
    mallory.client.send_text(conv, "cheap pills").await.unwrap();
    assert_eq!(bob.message().await.0, conv);

    assert_eq!(
        bob.client.delete_request(conv, false).await.unwrap(),
        "mallory"
    );
    assert!(bob.client.messages().log(conv).unwrap().is_empty());
    assert!(bob
        .client
        .messages()
        .search("pills", 10)
        .unwrap()
        .is_empty());
    assert!(bob.client.requests().await.unwrap().is_empty());
    // As in Signal, a later message brings the request back.
    mallory.client.send_text(conv, "still cheap").await.unwrap();
    assert_eq!(bob.message().await.0, conv);
    let back = bob.client.requests().await.unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].preview.as_deref(), Some("still cheap"));
    // Deleting with a block: the server drops mallory's later sends.
    bob.client.delete_request(conv, true).await.unwrap();
    let blocked = bob.client.transport().blocked().await.unwrap();
    assert_eq!(blocked, vec!["mallory".to_owned()]);
    let dropped = mallory.client.send_text(conv, "hello?").await.unwrap();
    assert_eq!(dropped.receipt.seq, 0, "dropped, not stored");
    assert!(bob.client.requests().await.unwrap().is_empty());

    // An accepted conversation is no request to delete.
    let friendly = alice.client.direct("bob").await.unwrap();
    alice.client.send_text(friendly, "hi").await.unwrap();
    assert_eq!(bob.message().await.0, friendly);
    bob.client.accept_request(friendly).await.unwrap();
    let refused = bob.client.delete_request(friendly, false).await;
    assert!(matches!(refused, Err(RequestError::NotARequest(c)) if c == friendly));
    // Nor to accept again, and one's own conversation never was one.
    let again = bob.client.accept_request(friendly).await;
    assert!(matches!(again, Err(RequestError::NotARequest(c)) if c == friendly));
    let own = alice.client.accept_request(friendly).await;
    assert!(matches!(own, Err(RequestError::NotARequest(c)) if c == friendly));
    let kept = bob.client.messages().history(friendly, 10).unwrap();
    assert_eq!(kept.len(), 1, "the conversation is kept: {kept:?}");
    for device in [bob, mallory, alice] {
        device.close().await;
    }
}

/// A request from a user this account blocks is listed neither in
/// `requests` nor in `conversations` (unblocking shows it again), and a
/// deleted request leaves `conversations` too.
#[tokio::test]
async fn a_request_from_a_blocked_user_or_deleted_is_shown_nowhere() {
    let server = TestServer::start(2);
    let dirs = [(); 2].map(|()| tempfile::tempdir().unwrap());
    let bob = Device::register(&server, &dirs[0], "bob").await;
    let dave = Device::register(&server, &dirs[1], "dave").await;
    let conv = dave.client.direct("bob").await.unwrap();
    dave.client.send_text(conv, "hi").await.unwrap();
    assert_eq!(bob.message().await.0, conv);
    let listed = |requests: Vec<tern_client::secure::requests::MessageRequest>| {
        requests
            .iter()
            .map(|r| r.conversation_id)
            .collect::<Vec<_>>()
    };
    let inbox = |states: Vec<tern_proto::ConversationState>| {
        states.iter().any(|s| s.conversation_id == conv)
    };
    assert_eq!(listed(bob.client.requests().await.unwrap()), [conv]);
    assert!(inbox(bob.client.conversations().await.unwrap()));
    let not_a_request =
        |r: Result<(), RequestError>| matches!(r, Err(RequestError::NotARequest(c)) if c == conv);
    bob.client.transport().block("dave").await.unwrap();
    assert!(bob.client.requests().await.unwrap().is_empty());
    assert!(!inbox(bob.client.conversations().await.unwrap()));
    // What is shown nowhere cannot be accepted either.
    assert!(not_a_request(bob.client.accept_request(conv).await));
    bob.client.transport().unblock("dave").await.unwrap();
    assert_eq!(listed(bob.client.requests().await.unwrap()), [conv]);
    bob.client.delete_request(conv, false).await.unwrap();
    assert!(!inbox(bob.client.conversations().await.unwrap()));
    assert!(bob.client.requests().await.unwrap().is_empty());
    assert!(not_a_request(bob.client.accept_request(conv).await));
    // A later message brings it back, to accept.
    dave.client.send_text(conv, "hi again").await.unwrap();
    assert_eq!(bob.message().await.0, conv);
    bob.client.accept_request(conv).await.unwrap();
    assert!(inbox(bob.client.conversations().await.unwrap()));
    for device in [bob, dave] {
        device.close().await;
    }
}

use common::{run_tern as tern, tern_ok as ok};

/// `tern listen --count 1` for `state`: waits for one message.
fn listen_once(state: &str) -> String {
    let listener = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["listen", "--state", state, "--count", "1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ok(listener.wait_with_output().unwrap())
}

#[test]
fn privacy_and_requests_commands() {
    let (_tmp, data) = data_dir();
    let server = ServerProcess::spawn(&data, 2);
    let clients = tempfile::tempdir().unwrap();
    let state = |u: &str| clients.path().join(u).to_string_lossy().into_owned();
    let (alice, bob, carol) = (state("alice"), state("bob"), state("carol"));
    let (addr, fp) = (server.addr.to_string(), hex::encode(server.fingerprint));
    for (dir, user) in [(&alice, "alice"), (&bob, "bob"), (&carol, "carol")] {
        let register = ["register", "--state", dir, "--server", &addr];
        ok(tern(
            &[&register[..], &["--fingerprint", &fp, user]].concat(),
        ));
    }
    let shown = ok(tern(&["privacy", "--state", &bob]));
    assert!(shown.contains("direct conversations: everyone"), "{shown}");
    assert!(shown.contains("group adds: contacts"), "{shown}");
    let set = ok(tern(&["privacy", "--state", &bob, "--direct", "nobody"]));
    assert!(set.contains("direct conversations: nobody"), "{set}");
    assert!(set.contains("group adds: contacts"), "unchanged: {set}");
    let refused = tern(&["create", "--state", &alice, "direct", "bob"]);
    assert!(!refused.status.success());
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("bob") && why.contains("privacy"), "{why}");
    let set = ok(tern(&[
        "privacy", "--state", &bob, "--direct", "everyone", "--groups", "everyone",
    ]));
    assert!(set.contains("group adds: everyone"), "{set}");

    let conv = ok(tern(&["create", "--state", &alice, "direct", "bob"]))
        .trim()
        .to_owned();
    ok(tern(&[
        "send",
        "--state",
        &alice,
        &conv,
        "hello from a stranger",
    ]));
    assert!(listen_once(&bob).contains("hello from a stranger"));
    let listed = ok(tern(&["requests", "--state", &bob]));
    assert_eq!(listed, format!("{conv}\talice\thello from a stranger\n"));
    let inbox = ok(tern(&["conversations", "--state", &bob]));
    assert!(inbox.contains("message request from alice"), "{inbox}");
    let accepted = ok(tern(&["requests", "--state", &bob, "accept", &conv]));
    assert!(accepted.contains(&format!("accepted {conv}")), "{accepted}");
    let none = tern(&["requests", "--state", &bob]);
    assert_eq!(ok(none.clone()), "");
    assert!(String::from_utf8_lossy(&none.stderr).contains("no message requests"));

    let spam = ok(tern(&["create", "--state", &carol, "direct", "bob"]))
        .trim()
        .to_owned();
    ok(tern(&["send", "--state", &carol, &spam, "buy now"]));
    assert!(listen_once(&bob).contains("buy now"));
    let deleted = ok(tern(&[
        "requests", "--state", &bob, "delete", &spam, "--block",
    ]));
    assert!(deleted.contains("carol is blocked"), "{deleted}");
    assert_eq!(ok(tern(&["blocked", "--state", &bob])), "carol\n");
    let history = ok(tern(&["history", "--state", &bob, &spam]));
    assert!(!history.contains("buy now"), "{history}");
    let inbox = ok(tern(&["conversations", "--state", &bob]));
    assert!(
        !inbox.lines().any(|l| l.starts_with(&format!("{spam}\t"))),
        "a deleted request stays out of conversations: {inbox}"
    );
    assert!(inbox.contains(&format!("{conv}\t")), "{inbox}");
    let not_one = tern(&["requests", "--state", &bob, "delete", "999999"]);
    assert!(!not_one.status.success());
    let why = String::from_utf8_lossy(&not_one.stderr);
    assert!(
        why.contains("`tern requests`") && !why.contains("requests()"),
        "{why}"
    );
    // alice started it: it is no request of hers to accept.
    let own = tern(&["requests", "--state", &alice, "accept", &conv]);
    assert!(!own.status.success(), "{own:?}");
    let why = String::from_utf8_lossy(&own.stderr);
    assert!(why.contains("not a pending message request"), "{why}");
    let misuse = tern(&["requests", "--state", &bob, "accept"]);
    assert!(!misuse.status.success());
    assert_eq!(server.terminate().code(), Some(0));
}
