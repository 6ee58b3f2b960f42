//! Robustness against a real (in-process) server: every refused
//! authentication gets its exact typed error, abusive frames get a typed
//! error or a close with the right application code, and none of it disturbs
//! a bystander pair of authenticated clients talking in a direct conversation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use bytes::Bytes;
use common::{advance_until, Bystanders, TestServer, WAIT};
use ed25519_dalek::SigningKey;
use flatbuffers::FlatBufferBuilder;
use std::time::Duration;
use tern_client::connection::RawConnection;
use tern_client::identity::Identity;
use tern_proto::body::{auth, conversations, messaging, sync};
use tern_proto::fb::{self, ErrorCode};
use tern_proto::{close, Body, ConversationKind, Frame};
use tern_server::Clock;
use tokio::time::timeout;

const SHARDS: usize = 2;
/// The server's frame cap (256 KiB).
const MAX_FRAME: u32 = 256 * 1024;

// ---------- helpers ----------

fn fresh_key() -> SigningKey {
    SigningKey::generate(&mut rand::rngs::OsRng)
}

/// The next frame on a raw connection, failing the test after [`WAIT`].
async fn next_frame(conn: &mut RawConnection) -> Frame {
    timeout(WAIT, conn.receiver.next())
        .await
        .expect("a frame arrives in time")
        .expect("reading the frame succeeds")
        .expect("the stream is still open")
}

/// Sends a request and returns the answer (no pushes are expected on raw connections).
async fn call(conn: &mut RawConnection, frame: &Frame) -> Frame {
    conn.sender.frame(frame).await.expect("write");
    next_frame(conn).await
}

#[track_caller]
fn assert_error(frame: &Frame, request_id: u64, code: ErrorCode) {
    match &frame.body {
        Body::Error(e) => {
            assert_eq!(e.code, code, "wrong error code (message: {:?})", e.message);
            assert_eq!(
                frame.request_id, request_id,
                "error names the wrong request"
            );
        }
        other => panic!("expected Error {code:?} for request {request_id}, got {other:?}"),
    }
}

/// Waits for the server to close the connection and checks the application close code.
async fn expect_close(conn: &RawConnection, code: u32) {
    let err = timeout(WAIT, conn.connection.closed())
        .await
        .expect("the connection is closed in time");
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code,
                quinn::VarInt::from_u32(code),
                "close code {} ({}), expected {code} ({}), reason {:?}",
                c.error_code,
                close::describe(c.error_code.into_inner()),
                close::describe(u64::from(code)),
                String::from_utf8_lossy(&c.reason)
            );
        }
        other => panic!("expected an application close with code {code}, got {other:?}"),
    }
}

/// Reads frames until the server's last error frame (request id 0) with
/// `code`, then expects the close with `close_code`.
async fn expect_error_then_close(conn: &mut RawConnection, code: ErrorCode, close_code: u32) {
    let last = next_frame(conn).await;
    assert_error(&last, 0, code);
    expect_close(conn, close_code).await;
}

/// A raw connection registered as a new account, with its key.
async fn registered_connection(server: &TestServer, user: &str) -> (RawConnection, SigningKey) {
    let mut conn = server.raw_connection().await;
    let key = fresh_key();
    let frame = conn.register_frame(1, user, "raw", &key).unwrap();
    let reply = call(&mut conn, &frame).await;
    assert!(
        matches!(
            reply.body,
            Body::Registered(auth::Registered { device: 1, .. })
        ),
        "register {user}: {reply:?}"
    );
    (conn, key)
}

/// A request that any authenticated connection answers with a SyncResult.
fn sync_request(request_id: u64) -> Frame {
    Frame::new(
        request_id,
        Body::Sync(sync::Sync {
            all: true,
            ..Default::default()
        }),
    )
}

/// Encodes a FlatBuffer with the length prefix.
fn prefixed(data: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(data.len()).unwrap().to_le_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

// ---------- authentication ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_auth_are_not_authenticated() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let mut conn = server.raw_connection().await;
    let reply = call(&mut conn, &sync_request(11)).await;
    assert_error(&reply, 11, ErrorCode::NotAuthenticated);
    let send = Frame::new(
        12,
        Body::Send(messaging::Send {
            conversation_id: 1,
            client_message_id: 1,
            expires_in_secs: 0,
            flags: 0,
            payload: Bytes::from_static(b"x"),
        }),
    );
    let reply = call(&mut conn, &send).await;
    assert_error(&reply, 12, ErrorCode::NotAuthenticated);
    // Two refusals do not close the connection: it can still authenticate.
    let identity = Identity::load(alice.state.path()).unwrap();
    let auth = conn
        .authenticate_frame(13, "alice", identity.device, &identity.key)
        .unwrap();
    let reply = call(&mut conn, &auth).await;
    assert!(matches!(reply.body, Body::Authenticated(_)), "{reply:?}");
    assert_eq!(reply.request_id, 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_proof_replayed_on_another_connection_fails() {
    let server = TestServer::start(SHARDS);
    let conn_a = server.raw_connection().await;
    let mut conn_b = server.raw_connection().await;
    assert_ne!(
        conn_a.exporter().unwrap(),
        conn_b.exporter().unwrap(),
        "exporters differ per connection"
    );
    let key = fresh_key();
    // A valid proof, but bound to connection A's exporter, sent on connection B.
    let stolen = conn_a.register_frame(5, "mallory", "phone", &key).unwrap();
    let reply = call(&mut conn_b, &stolen).await;
    assert_error(&reply, 5, ErrorCode::AuthFailed);
    // The handle was not taken by the refused attempt: a proper proof on B works.
    let proper = conn_b.register_frame(6, "mallory", "phone", &key).unwrap();
    let reply = call(&mut conn_b, &proper).await;
    assert!(
        matches!(
            reply.body,
            Body::Registered(auth::Registered { device: 1, .. })
        ),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticate_with_wrong_key_or_unknown_user_or_device_fails() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let identity = Identity::load(alice.state.path()).unwrap();
    assert_eq!(identity.device, 1);

    let mut conn = server.raw_connection().await;
    let wrong_key = conn
        .authenticate_frame(1, "alice", 1, &fresh_key())
        .unwrap();
    assert_error(&call(&mut conn, &wrong_key).await, 1, ErrorCode::AuthFailed);
    let unknown_user = conn
        .authenticate_frame(2, "nobody", 1, &identity.key)
        .unwrap();
    assert_error(
        &call(&mut conn, &unknown_user).await,
        2,
        ErrorCode::AuthFailed,
    );
    // Two failures are tolerated: the right proof still authenticates.
    let good = conn
        .authenticate_frame(3, "alice", 1, &identity.key)
        .unwrap();
    let reply = call(&mut conn, &good).await;
    assert!(
        matches!(&reply.body, Body::Authenticated(auth::Authenticated { user, device: 1, .. }) if user == "alice"),
        "{reply:?}"
    );
    assert_eq!(reply.request_id, 3);

    let mut conn2 = server.raw_connection().await;
    let unknown_device = conn2
        .authenticate_frame(4, "alice", 2, &identity.key)
        .unwrap();
    assert_error(
        &call(&mut conn2, &unknown_device).await,
        4,
        ErrorCode::AuthFailed,
    );
    let device_zero = conn2
        .authenticate_frame(5, "alice", 0, &identity.key)
        .unwrap();
    assert_error(
        &call(&mut conn2, &device_zero).await,
        5,
        ErrorCode::AuthFailed,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_taken_or_invalid_handle_is_refused() {
    let server = TestServer::start(SHARDS);
    let _alice = server.register("alice").await;
    let mut conn = server.raw_connection().await;
    let taken = conn
        .register_frame(1, "alice", "phone", &fresh_key())
        .unwrap();
    assert_error(&call(&mut conn, &taken).await, 1, ErrorCode::UserExists);
    let invalid = conn
        .register_frame(2, "Bad Name", "phone", &fresh_key())
        .unwrap();
    assert_error(
        &call(&mut conn, &invalid).await,
        2,
        ErrorCode::InvalidArgument,
    );
    let too_long = conn
        .register_frame(3, &"a".repeat(33), "phone", &fresh_key())
        .unwrap();
    assert_error(
        &call(&mut conn, &too_long).await,
        3,
        ErrorCode::InvalidArgument,
    );
    // The same connection may still register a free handle.
    let ok = conn
        .register_frame(4, "bob", "phone", &fresh_key())
        .unwrap();
    let reply = call(&mut conn, &ok).await;
    assert!(
        matches!(&reply.body, Body::Registered(auth::Registered { user, .. }) if user == "bob"),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_authentication_is_already_authenticated() {
    let server = TestServer::start(SHARDS);
    let (mut conn, key) = registered_connection(&server, "alice").await;
    let again = conn.authenticate_frame(2, "alice", 1, &key).unwrap();
    assert_error(
        &call(&mut conn, &again).await,
        2,
        ErrorCode::AlreadyAuthenticated,
    );
    let register = conn
        .register_frame(3, "alice2", "phone", &fresh_key())
        .unwrap();
    assert_error(
        &call(&mut conn, &register).await,
        3,
        ErrorCode::AlreadyAuthenticated,
    );
    // The connection is still authenticated as before.
    let reply = call(&mut conn, &sync_request(4)).await;
    assert!(matches!(reply.body, Body::SyncResult(_)), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_failed_authentications_close_the_connection() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    let mut conn = server.raw_connection().await;
    for id in 1..=3 {
        let attempt = conn
            .authenticate_frame(id, "bystander-a", 1, &fresh_key())
            .unwrap();
        assert_error(&call(&mut conn, &attempt).await, id, ErrorCode::AuthFailed);
    }
    expect_error_then_close(&mut conn, ErrorCode::AuthFailed, close::AUTH_FAILED).await;
    pair.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_time_out() {
    let clock = Clock::manual(Clock::system().now_ms());
    let server = TestServer::start_with_clock(SHARDS, clock.clone(), |c| c.auth_timeout_secs = 10);
    let mut pair = Bystanders::new(&server).await;
    // One connection never sends a byte (no control stream reaches the server),
    // the other opens the stream with a refused request and then stays silent.
    let silent = server.raw_connection().await;
    let mut talked = server.raw_connection().await;
    assert_error(
        &call(&mut talked, &sync_request(1)).await,
        1,
        ErrorCode::NotAuthenticated,
    );
    let (moved, ()) = advance_until(&clock, 2_500, expect_close(&silent, close::TIMEOUT)).await;
    assert!(
        (10_000..=12_500).contains(&moved),
        "closed after {moved} ms of server time; the auth timeout is 10 s"
    );
    expect_error_then_close(&mut talked, ErrorCode::Timeout, close::TIMEOUT).await;
    // The bystanders authenticated long ago (more than the auth timeout): they stay.
    pair.check().await;
    assert_eq!(pair.a.reconnects(), 0);
    assert_eq!(pair.b.reconnects(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_link_request_is_a_record_not_a_connection() {
    let clock = Clock::manual(Clock::system().now_ms());
    let server = TestServer::start_with_clock(SHARDS, clock.clone(), |c| {
        c.link_timeout_secs = 120;
        c.auth_timeout_secs = 10;
    });
    let (mut owner, _) = registered_connection(&server, "owner").await;
    let key = fresh_key();
    let mut newcomer = server.raw_connection().await;
    let frame = newcomer.link_frame(1, "owner", "laptop", &key).unwrap();
    newcomer.sender.frame(&frame).await.unwrap();
    let prompt = next_frame(&mut owner).await;
    assert!(matches!(prompt.body, Body::LinkPrompt(_)), "{prompt:?}");
    // Undecided at the authentication deadline: told to come back, and
    // the connection goes (it is not held for the link timeout).
    let (moved, answer) = advance_until(&clock, 1_000, next_frame(&mut newcomer)).await;
    assert!(
        (10_000..=12_000).contains(&moved),
        "answered after {moved} ms of server time; the auth timeout is 10 s"
    );
    assert_error(&answer, 1, ErrorCode::LinkPending);
    let Body::Error(pending) = &answer.body else {
        unreachable!()
    };
    assert!(pending.retry_after_ms > 0, "{pending:?}");
    expect_error_then_close(&mut newcomer, ErrorCode::Timeout, close::TIMEOUT).await;
    // Asking again with the same key finds the record: no second prompt.
    let mut again = server.raw_connection().await;
    let frame = again.link_frame(1, "owner", "laptop", &key).unwrap();
    again.sender.frame(&frame).await.unwrap();
    let (_, answer) = advance_until(&clock, 1_000, next_frame(&mut again)).await;
    assert_error(&answer, 1, ErrorCode::LinkPending);
    assert!(
        timeout(Duration::from_millis(300), owner.receiver.next())
            .await
            .is_err(),
        "a repeated request must not prompt the account again"
    );
    // Past the link timeout the repeated request is told it expired.
    clock.advance(120_000);
    let mut late = server.raw_connection().await;
    let frame = late.link_frame(1, "owner", "laptop", &key).unwrap();
    assert_error(&call(&mut late, &frame).await, 1, ErrorCode::Timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_approved_while_the_new_device_is_away_completes_when_it_asks_again() {
    let clock = Clock::manual(Clock::system().now_ms());
    let server = TestServer::start_with_clock(SHARDS, clock.clone(), |c| {
        c.auth_timeout_secs = 10;
    });
    let (mut owner, _) = registered_connection(&server, "owner").await;
    let key = fresh_key();
    let mut newcomer = server.raw_connection().await;
    let frame = newcomer.link_frame(1, "owner", "laptop", &key).unwrap();
    newcomer.sender.frame(&frame).await.unwrap();
    let prompt = next_frame(&mut owner).await;
    let Body::LinkPrompt(prompt) = prompt.body else {
        panic!("expected a LinkPrompt, got {prompt:?}")
    };
    let (_, answer) = advance_until(&clock, 1_000, next_frame(&mut newcomer)).await;
    assert_error(&answer, 1, ErrorCode::LinkPending);
    drop(newcomer);
    let approve = Frame::new(
        7,
        Body::ApproveLink(tern_proto::body::devices::ApproveLink {
            link_id: prompt.link_id,
            approve: true,
        }),
    );
    let done = call(&mut owner, &approve).await;
    assert!(matches!(done.body, Body::Done(_)), "{done:?}");
    // Approving twice, or someone else's request, finds nothing.
    assert_error(&call(&mut owner, &approve).await, 7, ErrorCode::NotFound);
    let mut back = server.raw_connection().await;
    let frame = back.link_frame(1, "owner", "laptop", &key).unwrap();
    let reply = call(&mut back, &frame).await;
    assert!(
        matches!(
            reply.body,
            Body::Registered(auth::Registered { device: 2, .. })
        ),
        "{reply:?}"
    );
    back.sender.frame(&sync_request(2)).await.unwrap();
    let mut reply = next_frame(&mut back).await;
    while reply.request_id == 0 {
        reply = next_frame(&mut back).await; // DeviceListChanged and the like
    }
    assert!(
        matches!(reply.body, Body::SyncResult(_)),
        "authenticated: {reply:?}"
    );
}

// ---------- frame abuse ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frame_is_refused_and_closed() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    // Before authentication...
    let mut conn = server.raw_connection().await;
    conn.sender
        .raw(&(MAX_FRAME + 1).to_le_bytes())
        .await
        .unwrap();
    expect_error_then_close(&mut conn, ErrorCode::FrameTooLarge, close::FRAME_TOO_LARGE).await;
    pair.check().await;
    // ...and after it; the length alone is enough, no body is sent.
    let (mut conn, _) = registered_connection(&server, "mallory").await;
    conn.sender.raw(&u32::MAX.to_le_bytes()).await.unwrap();
    expect_error_then_close(&mut conn, ErrorCode::FrameTooLarge, close::FRAME_TOO_LARGE).await;
    pair.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_of_exactly_the_cap_is_not_too_large() {
    let server = TestServer::start(SHARDS);
    let (mut conn, _) = registered_connection(&server, "mallory").await;
    // A frame of exactly 256 KiB passes the length check (its content is garbage).
    let mut wire = MAX_FRAME.to_le_bytes().to_vec();
    wire.resize(4 + MAX_FRAME as usize, 0xAB);
    conn.sender.raw(&wire).await.unwrap();
    assert_error(&next_frame(&mut conn).await, 0, ErrorCode::Malformed);
    let reply = call(&mut conn, &sync_request(2)).await;
    assert!(matches!(reply.body, Body::SyncResult(_)), "{reply:?}");
}

/// An encoded Send (with its prefix) whose frame is exactly `len` bytes.
fn send_of_frame_len(conversation_id: u64, len: usize) -> Bytes {
    let mut payload = len.saturating_sub(256);
    for _ in 0..64 {
        let frame = Frame::new(
            9,
            messaging::Send {
                conversation_id,
                client_message_id: 1,
                expires_in_secs: 0,
                flags: 0,
                payload: Bytes::from(vec![0x5A; payload]),
            },
        )
        .encode();
        let got = frame.len() - 4;
        match got.cmp(&len) {
            std::cmp::Ordering::Equal => return frame,
            std::cmp::Ordering::Less => payload += len - got,
            std::cmp::Ordering::Greater => payload -= 1,
        }
    }
    panic!("no Send encodes to exactly {len} bytes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_frame_of_exactly_the_cap_is_served_and_one_byte_more_is_refused() {
    let server = TestServer::start(SHARDS);
    let alice = server.register("alice").await;
    let note = alice
        .request(conversations::CreateConversation {
            kind: ConversationKind::NoteToSelf,
            members: Vec::new(),
        })
        .await
        .unwrap()
        .conversation_id;
    let mut conn = server.raw_connection_of(&alice).await;
    let at_cap = send_of_frame_len(note, MAX_FRAME as usize);
    conn.sender.raw(&at_cap).await.unwrap();
    let reply = next_frame(&mut conn).await;
    assert!(matches!(reply.body, Body::SendAck(_)), "{reply:?}");
    // One more byte (trailing, after a valid FlatBuffer) is over the cap:
    // refused on its length prefix, before the server buffers any of it, so
    // only the start is written (the server closes before the rest fits).
    let mut over = at_cap.to_vec();
    over.push(0);
    over[..4].copy_from_slice(&(MAX_FRAME + 1).to_le_bytes());
    conn.sender.raw(&over[..1024]).await.unwrap();
    expect_error_then_close(&mut conn, ErrorCode::FrameTooLarge, close::FRAME_TOO_LARGE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_frame_is_a_protocol_violation() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    let (mut conn, _) = registered_connection(&server, "mallory").await;
    conn.sender.raw(&[0, 0, 0, 0]).await.unwrap();
    expect_error_then_close(&mut conn, ErrorCode::Malformed, close::PROTOCOL_VIOLATION).await;
    pair.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_frame_is_malformed_and_the_connection_stays_usable() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    // Before authentication: garbage does not count as a failed attempt.
    let mut conn = server.raw_connection().await;
    for _ in 0..3 {
        conn.sender.raw(&prefixed(&[0xAB; 32])).await.unwrap();
        assert_error(&next_frame(&mut conn).await, 0, ErrorCode::Malformed);
    }
    let key = fresh_key();
    let register = conn.register_frame(1, "mallory", "raw", &key).unwrap();
    let reply = call(&mut conn, &register).await;
    assert!(matches!(reply.body, Body::Registered(_)), "{reply:?}");
    pair.check().await;
    // After authentication: garbage, then a valid request gets its normal answer.
    let garbage: Vec<u8> = (0u8..=99).map(|i| i.wrapping_mul(37) ^ 0x5A).collect();
    conn.sender.raw(&prefixed(&garbage)).await.unwrap();
    assert_error(&next_frame(&mut conn).await, 0, ErrorCode::Malformed);
    let reply = call(&mut conn, &sync_request(2)).await;
    assert_eq!(reply.request_id, 2);
    assert!(matches!(reply.body, Body::SyncResult(_)), "{reply:?}");
    // A garbage frame and a valid one in the same write: both answered, in order.
    let mut wire = prefixed(&[0xFF; 8]);
    wire.extend_from_slice(&sync_request(3).encode());
    conn.sender.raw(&wire).await.unwrap();
    assert_error(&next_frame(&mut conn).await, 0, ErrorCode::Malformed);
    let reply = next_frame(&mut conn).await;
    assert_eq!(reply.request_id, 3);
    assert!(matches!(reply.body, Body::SyncResult(_)), "{reply:?}");
    pair.check().await;
}

/// A verifiable Frame whose union tag is `tag`, carrying an empty table.
fn frame_with_tag(request_id: u64, tag: u8) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let body = fb::Done::create(&mut b, &fb::DoneArgs {}).as_union_value();
    let frame = fb::Frame::create(
        &mut b,
        &fb::FrameArgs {
            request_id,
            body_type: fb::Body(tag),
            body: Some(body),
        },
    );
    b.finish(frame, None);
    prefixed(b.finished_data())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_union_tag_is_unsupported_body() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    // Before authentication too: the request id is echoed.
    let mut fresh = server.raw_connection().await;
    fresh.sender.raw(&frame_with_tag(41, 200)).await.unwrap();
    assert_error(
        &next_frame(&mut fresh).await,
        41,
        ErrorCode::UnsupportedBody,
    );
    let (mut conn, _) = registered_connection(&server, "mallory").await;
    conn.sender.raw(&frame_with_tag(42, 200)).await.unwrap();
    assert_error(&next_frame(&mut conn).await, 42, ErrorCode::UnsupportedBody);
    conn.sender
        .raw(&frame_with_tag(43, fb::Body::ENUM_MAX + 1))
        .await
        .unwrap();
    assert_error(&next_frame(&mut conn).await, 43, ErrorCode::UnsupportedBody);
    let reply = call(&mut conn, &sync_request(44)).await;
    assert!(matches!(reply.body, Body::SyncResult(_)), "{reply:?}");
    pair.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_only_bodies_from_a_client_are_unsupported() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    let (mut conn, _) = registered_connection(&server, "mallory").await;
    let server_bodies = [
        Body::SendAck(messaging::SendAck {
            conversation_id: pair.conversation,
            seq: 1,
            server_time_ms: 0,
            duplicate: false,
        }),
        Body::Registered(auth::Registered {
            user: "mallory".into(),
            device: 1,
        }),
        Body::Done(messaging::Done),
        Body::SyncResult(sync::SyncResult {
            conversations: Vec::new(),
            more: false,
        }),
        Body::HistoryPage(messaging::HistoryPage {
            conversation_id: pair.conversation,
            messages: Vec::new(),
            head_seq: 0,
            next_seq: 0,
        }),
        Body::ConversationInfo(conversations::ConversationInfo {
            conversation_id: pair.conversation,
            kind: ConversationKind::Direct,
            members: vec!["mallory".into()],
            head_seq: 0,
            created: true,
        }),
    ];
    for (i, body) in server_bodies.into_iter().enumerate() {
        let id = 100 + i as u64;
        assert_error(
            &call(&mut conn, &Frame::new(id, body)).await,
            id,
            ErrorCode::UnsupportedBody,
        );
    }
    let reply = call(&mut conn, &sync_request(200)).await;
    assert!(matches!(reply.body, Body::SyncResult(_)), "{reply:?}");
    pair.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_is_a_protocol_violation() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    let (mut conn, _) = registered_connection(&server, "mallory").await;
    let mut wire = 100u32.to_le_bytes().to_vec();
    wire.extend_from_slice(&[7u8; 10]);
    conn.sender.raw(&wire).await.unwrap();
    conn.sender.finish();
    expect_error_then_close(&mut conn, ErrorCode::Malformed, close::PROTOCOL_VIOLATION).await;
    pair.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_frame_times_out() {
    let clock = Clock::manual(Clock::system().now_ms());
    let server = TestServer::start_with_clock(SHARDS, clock.clone(), |c| {
        c.frame_read_timeout_secs = 5;
    });
    let mut pair = Bystanders::new(&server).await;
    let (mut conn, _) = registered_connection(&server, "mallory").await;
    let mut wire = 100u32.to_le_bytes().to_vec();
    wire.extend_from_slice(&[7u8; 10]);
    conn.sender.raw(&wire).await.unwrap();
    let (moved, last) = advance_until(&clock, 1_000, next_frame(&mut conn)).await;
    assert!(
        (5_000..=6_000).contains(&moved),
        "answered after {moved} ms of server time; the frame timeout is 5 s"
    );
    assert_error(&last, 0, ErrorCode::Timeout);
    expect_close(&conn, close::TIMEOUT).await;
    pair.check().await;
}

// ---------- request authorisation and arguments ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_outside_membership_or_to_unknown_conversation_is_refused() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    let eve = server.register("eve").await;
    let err = eve
        .send(pair.conversation, Bytes::from_static(b"let me in"))
        .await
        .expect_err("eve is not a member");
    assert_eq!(err.code(), Some(ErrorCode::NotMember), "{err}");
    let err = eve
        .history(pair.conversation, 1, 0)
        .await
        .expect_err("eve may not read");
    assert_eq!(err.code(), Some(ErrorCode::NotMember), "{err}");
    let err = eve
        .ack(pair.conversation, 1)
        .await
        .expect_err("eve may not ack");
    assert_eq!(err.code(), Some(ErrorCode::NotMember), "{err}");
    let unknown = pair.conversation.wrapping_add(1).max(1);
    let err = eve
        .send(unknown, Bytes::from_static(b"hello?"))
        .await
        .expect_err("no such conversation");
    assert_eq!(err.code(), Some(ErrorCode::NotFound), "{err}");
    // Nothing eve did reached the bystanders' conversation.
    pair.check().await;
    let page = pair.a.history(pair.conversation, 1, 0).await.unwrap();
    assert_eq!(page.head_seq, u64::from(pair.sent));
    assert!(page.messages.iter().all(|m| m.sender_user == "bystander-a"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_client_message_id_and_ack_past_head_are_invalid() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    // The SDK never sends client_message_id 0, so speak raw as bystander-a's second connection.
    let identity = Identity::load(pair.a.state.path()).unwrap();
    let mut conn = server.raw_connection().await;
    let auth = conn
        .authenticate_frame(1, &identity.user, identity.device, &identity.key)
        .unwrap();
    assert!(matches!(
        call(&mut conn, &auth).await.body,
        Body::Authenticated(_)
    ));
    let send = Frame::new(
        2,
        Body::Send(messaging::Send {
            conversation_id: pair.conversation,
            client_message_id: 0,
            expires_in_secs: 0,
            flags: 0,
            payload: Bytes::from_static(b"no id"),
        }),
    );
    assert_error(&call(&mut conn, &send).await, 2, ErrorCode::InvalidArgument);

    let head = u64::from(pair.sent);
    let err = pair
        .b
        .ack(pair.conversation, head + 1)
        .await
        .expect_err("ack past the head");
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    let err = pair
        .b
        .ack(pair.conversation, u64::MAX)
        .await
        .expect_err("ack far past the head");
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    // The refused ack did not move the cursor; a valid one does.
    let state = pair.b.sync(true).await.unwrap();
    let conv = state
        .iter()
        .find(|s| s.conversation_id == pair.conversation)
        .expect("listed");
    assert_eq!((conv.head_seq, conv.cursor), (head, 0));
    pair.b.ack(pair.conversation, head).await.unwrap();
    let state = pair.b.sync(true).await.unwrap();
    let conv = state
        .iter()
        .find(|s| s.conversation_id == pair.conversation)
        .expect("listed");
    assert_eq!(conv.cursor, head);
    // The refused send stored nothing.
    pair.check().await;
    assert_eq!(
        pair.a
            .history(pair.conversation, 1, 0)
            .await
            .unwrap()
            .head_seq,
        head + 1
    );
}

/// A second server on an address another one serves is refused at start,
/// instead of silently sharing the port (`SO_REUSEPORT`) and splitting the
/// first one's clients between two servers with different certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_address_is_refused() {
    let first = TestServer::start(2);
    let data = tempfile::tempdir().unwrap();
    let config = tern_server::ServerConfig {
        listen: first.addr,
        ..common::test_config(data.path(), 2)
    };
    let refused = tern_server::start(config)
        .err()
        .expect("second server refused");
    assert!(
        matches!(refused, tern_server::StartError::Bind { .. }),
        "{refused}"
    );
    // The first server still serves.
    let alice = first.register("alice").await;
    assert!(alice.sync(true).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let first = TestServer::start(2);
    let config = common::test_config(first.data_dir(), 2);
    let refused = tern_server::start(config)
        .err()
        .expect("second server refused");
    let why = refused.to_string();
    assert!(
        matches!(refused, tern_server::StartError::Store(_)) && why.contains("in use"),
        "{why}"
    );
    // Nothing of it stayed bound, and the first server still serves.
    let alice = first.register("alice").await;
    assert!(alice.sync(true).await.unwrap().is_empty());
}

// ---------- request ids (docs/PROTOCOL.md §2.1) ----------

/// A Register frame that fails verification (its required `user` is
/// missing) but whose request id is readable.
fn register_without_user(request_id: u64) -> Vec<u8> {
    let mut b = FlatBufferBuilder::new();
    let key = b.create_vector(&[1u8; 32]);
    let signature = b.create_vector(&[2u8; 64]);
    // By hand: the generated builder refuses to leave out a required field.
    let start = b.start_table();
    b.push_slot_always(fb::Register::VT_DEVICE_KEY, key);
    b.push_slot_always(fb::Register::VT_SIGNATURE, signature);
    let body = b.end_table(start).as_union_value();
    let frame = fb::Frame::create(
        &mut b,
        &fb::FrameArgs {
            request_id,
            body_type: fb::Body::Register,
            body: Some(body),
        },
    );
    b.finish(frame, None);
    prefixed(b.finished_data())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_failing_verification_is_answered_with_its_own_request_id() {
    let server = TestServer::start(SHARDS);
    let mut fresh = server.raw_connection().await;
    fresh.sender.raw(&register_without_user(51)).await.unwrap();
    assert_error(&next_frame(&mut fresh).await, 51, ErrorCode::Malformed);
    let (mut conn, _) = registered_connection(&server, "mallory").await;
    conn.sender.raw(&register_without_user(52)).await.unwrap();
    assert_error(&next_frame(&mut conn).await, 52, ErrorCode::Malformed);
    // Unreadable ids are answered with 0, and the connection goes on.
    conn.sender.raw(&prefixed(&[0xFF; 8])).await.unwrap();
    assert_error(&next_frame(&mut conn).await, 0, ErrorCode::Malformed);
    let reply = call(&mut conn, &sync_request(53)).await;
    assert_eq!(reply.request_id, 53);
    assert!(matches!(reply.body, Body::SyncResult(_)), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_zero_is_refused_and_nothing_is_applied() {
    let server = TestServer::start(SHARDS);
    let mut conn = server.raw_connection().await;
    let key = fresh_key();
    let register = conn.register_frame(0, "zoe", "raw", &key).unwrap();
    assert_error(
        &call(&mut conn, &register).await,
        0,
        ErrorCode::InvalidArgument,
    );
    // Not registered by the refused frame, and not a failed attempt either.
    let register = conn.register_frame(1, "zoe", "raw", &key).unwrap();
    let reply = call(&mut conn, &register).await;
    assert!(matches!(reply.body, Body::Registered(_)), "{reply:?}");
    assert_error(
        &call(&mut conn, &sync_request(0)).await,
        0,
        ErrorCode::InvalidArgument,
    );
    let reply = call(&mut conn, &sync_request(2)).await;
    assert!(matches!(reply.body, Body::SyncResult(_)), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutting_down_sends_an_error_before_its_close() {
    let mut server = TestServer::start(SHARDS);
    let (mut conn, _) = registered_connection(&server, "mallory").await;
    server.stop().await;
    expect_error_then_close(&mut conn, ErrorCode::ShuttingDown, close::SHUTTING_DOWN).await;
}
