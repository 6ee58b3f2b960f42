//! Attacks on a real (in-process) server by a malicious or buggy client:
//! bad arguments and misuse of every command routed to a conversation owner
//! (create, members, the three send forms, ack, history, commit, group info),
//! of the shard-local commands (key directory, devices, link approval, sync)
//! and of the handshake. Each test asserts the correct behaviour: a typed
//! error for the right request, the connection still usable (a follow-up
//! request is the sentinel), nobody else disturbed, and bounded memory.
//!
//! Tests marked `#[ignore = "defect: ..."]` fail against the current server;
//! each names the defect it exposes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use common::{advance_until, Bystanders, TestServer, WAIT};
use ed25519_dalek::SigningKey;
use flatbuffers::FlatBufferBuilder;
use tern_client::connection::RawConnection;
use tern_proto::body::{auth, conversations, devices, messaging, mls, prekeys, privacy, sync};
use tern_proto::fb::{self, ErrorCode};
use tern_proto::{close, flags, Body, Conflict, ConversationKind, ErrorBody, Frame, GroupAdds};
use tern_server::Clock;
use tokio::time::timeout;

const SHARDS: usize = 2;
/// The server's default frame cap (256 KiB).
const MAX_FRAME: usize = 256 * 1024;
/// The server's largest accepted KeyPackage.
const MAX_KEY_PACKAGE: usize = 16 * 1024;
/// The server's cap on names in one request.
const MAX_MEMBERS: usize = 2_000;

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

/// The error code of an `Error` or `Conflict` frame.
fn code_of(frame: &Frame) -> Option<ErrorCode> {
    match &frame.body {
        Body::Error(e) => Some(e.code),
        Body::Conflict(c) => Some(c.error.code),
        _ => None,
    }
}

#[track_caller]
fn assert_code(frame: &Frame, request_id: u64, code: ErrorCode) {
    assert_eq!(
        code_of(frame),
        Some(code),
        "expected {code:?} for request {request_id}, got {frame:?}"
    );
    assert_eq!(
        frame.request_id, request_id,
        "error names the wrong request"
    );
}

/// Waits for the server to close the connection and checks the application close code.
async fn expect_close(conn: &quinn::Connection, code: u32) {
    let err = timeout(WAIT, conn.closed())
        .await
        .expect("the connection is closed in time");
    match err {
        quinn::ConnectionError::ApplicationClosed(c) => assert_eq!(
            c.error_code,
            quinn::VarInt::from_u32(code),
            "close code {} ({}), expected {code} ({}), reason {:?}",
            c.error_code,
            close::describe(c.error_code.into_inner()),
            close::describe(u64::from(code)),
            String::from_utf8_lossy(&c.reason)
        ),
        other => panic!("expected an application close with code {code}, got {other:?}"),
    }
}

/// Resident memory of this process (server and clients), bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// An authenticated raw connection with its identity, request ids, and the
/// frames that arrived while waiting for another one.
struct Raw {
    conn: RawConnection,
    user: String,
    device: u32,
    key: SigningKey,
    next_id: u64,
    pushes: VecDeque<Frame>,
    replies: HashMap<u64, Frame>,
}

impl Raw {
    /// Registers `user` on a fresh raw connection; anyone may add it to
    /// groups (most attacks here are not about consent).
    async fn register(server: &TestServer, user: &str) -> Raw {
        let mut raw = Raw::register_private(server, user).await;
        let everyone = privacy::SetPrivacy::change(Some(GroupAdds::Everyone), None);
        let (_, frame) = raw.call(everyone).await;
        assert!(matches!(frame.body, Body::Done(_)), "{frame:?}");
        raw
    }

    /// Registers `user` with the default privacy: only contacts add it to groups.
    async fn register_private(server: &TestServer, user: &str) -> Raw {
        let mut conn = server.raw_connection().await;
        let key = fresh_key();
        let frame = conn.register_frame(1, user, "raw", &key).unwrap();
        conn.sender.frame(&frame).await.unwrap();
        let reply = next_frame(&mut conn).await;
        assert!(
            matches!(
                reply.body,
                Body::Registered(auth::Registered { device: 1, .. })
            ),
            "register {user}: {reply:?}"
        );
        Raw::wrap(conn, user, 1, key)
    }

    /// Authenticates a fresh raw connection as an existing device.
    async fn authenticate(server: &TestServer, user: &str, device: u32, key: &SigningKey) -> Raw {
        let mut conn = server.raw_connection().await;
        let frame = conn.authenticate_frame(1, user, device, key).unwrap();
        conn.sender.frame(&frame).await.unwrap();
        let reply = next_frame(&mut conn).await;
        assert!(
            matches!(reply.body, Body::Authenticated(_)),
            "authenticate {user}/{device}: {reply:?}"
        );
        Raw::wrap(conn, user, device, key.clone())
    }

    /// Another authenticated connection of the same device.
    async fn again(&self, server: &TestServer) -> Raw {
        Raw::authenticate(server, &self.user, self.device, &self.key).await
    }

    fn wrap(conn: RawConnection, user: &str, device: u32, key: SigningKey) -> Raw {
        Raw {
            conn,
            user: user.to_owned(),
            device,
            key,
            next_id: 1,
            pushes: VecDeque::new(),
            replies: HashMap::new(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Writes one request, returns its id.
    async fn request(&mut self, body: impl Into<Body>) -> u64 {
        let id = self.id();
        self.conn
            .sender
            .frame(&Frame::new(id, body.into()))
            .await
            .expect("write");
        id
    }

    /// Writes several requests in one write, returns their ids.
    async fn pipeline(&mut self, bodies: Vec<Body>) -> Vec<u64> {
        let mut ids = Vec::with_capacity(bodies.len());
        let mut chunks = Vec::with_capacity(bodies.len());
        for body in bodies {
            let id = self.id();
            ids.push(id);
            chunks.push(Frame::new(id, body).encode());
        }
        self.conn.sender.chunks(&mut chunks).await.expect("write");
        ids
    }

    /// The answer to request `id`, keeping pushes and other answers for later.
    async fn reply(&mut self, id: u64) -> Frame {
        if let Some(frame) = self.replies.remove(&id) {
            return frame;
        }
        loop {
            let frame = next_frame(&mut self.conn).await;
            if frame.request_id == id {
                return frame;
            }
            if frame.request_id == 0 {
                self.pushes.push_back(frame);
            } else {
                self.replies.insert(frame.request_id, frame);
            }
        }
    }

    async fn call(&mut self, body: impl Into<Body>) -> (u64, Frame) {
        let id = self.request(body).await;
        let frame = self.reply(id).await;
        (id, frame)
    }

    /// Asserts that `body` is refused with `code`.
    async fn refused(&mut self, body: impl Into<Body>, code: ErrorCode) -> Frame {
        let body = body.into();
        let what = format!("{body:?}");
        let (id, frame) = self.call(body).await;
        assert_eq!(
            code_of(&frame),
            Some(code),
            "{what:.300} should be refused with {code:?}, got {frame:?}"
        );
        assert_eq!(frame.request_id, id);
        frame
    }

    /// The next push (request id 0).
    async fn push(&mut self) -> Frame {
        if let Some(frame) = self.pushes.pop_front() {
            return frame;
        }
        let frame = next_frame(&mut self.conn).await;
        assert_eq!(frame.request_id, 0, "not a push: {frame:?}");
        frame
    }

    /// The next Deliver push, skipping notices.
    async fn delivered(&mut self) -> messaging::Message {
        loop {
            if let Body::Deliver(m) = self.push().await.body {
                return m;
            }
        }
    }

    /// A request every authenticated connection answers: proves it is usable.
    async fn sentinel(&mut self) {
        let (_, frame) = self
            .call(sync::Sync {
                all: true,
                ..Default::default()
            })
            .await;
        assert!(
            matches!(frame.body, Body::SyncResult(_)),
            "connection no longer usable: {frame:?}"
        );
    }

    async fn create(&mut self, kind: ConversationKind, members: &[&str]) -> u64 {
        let body = conversations::CreateConversation {
            kind,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        };
        let (_, frame) = self.call(body).await;
        match frame.body {
            Body::ConversationInfo(info) => info.conversation_id,
            other => panic!("create {kind:?} {members:?}: {other:?}"),
        }
    }

    async fn send(
        &mut self,
        conversation_id: u64,
        cmid: u64,
        payload: Bytes,
    ) -> messaging::SendAck {
        let (_, frame) = self.call(send(conversation_id, cmid, payload)).await;
        match frame.body {
            Body::SendAck(ack) => ack,
            other => panic!("send: {other:?}"),
        }
    }

    async fn history(
        &mut self,
        conversation_id: u64,
        from_seq: u64,
        limit: u32,
    ) -> messaging::HistoryPage {
        let (_, frame) = self
            .call(messaging::History {
                conversation_id,
                from_seq,
                limit,
            })
            .await;
        match frame.body {
            Body::HistoryPage(page) => page,
            other => panic!("history: {other:?}"),
        }
    }

    async fn head(&mut self, conversation_id: u64) -> u64 {
        self.history(conversation_id, u64::MAX, 1).await.head_seq
    }

    async fn sync_state(&mut self) -> Vec<tern_proto::ConversationState> {
        let (_, frame) = self
            .call(sync::Sync {
                all: true,
                ..Default::default()
            })
            .await;
        match frame.body {
            Body::SyncResult(r) => r.conversations,
            other => panic!("sync: {other:?}"),
        }
    }

    async fn key_counts(&mut self) -> prekeys::KeyCounts {
        let (_, frame) = self
            .call(mls::UploadKeyPackages {
                key_packages: Vec::new(),
                last_resort: None,
            })
            .await;
        match frame.body {
            Body::KeyCounts(c) => c,
            other => panic!("key counts: {other:?}"),
        }
    }

    async fn devices_of(&mut self, user: &str) -> Vec<u32> {
        let (_, frame) = self
            .call(devices::ListDevices {
                user: user.to_owned(),
            })
            .await;
        match frame.body {
            Body::DeviceList(list) => list.devices.iter().map(|d| d.device).collect(),
            other => panic!("list devices: {other:?}"),
        }
    }
}

fn send(conversation_id: u64, client_message_id: u64, payload: Bytes) -> messaging::Send {
    messaging::Send {
        conversation_id,
        client_message_id,
        expires_in_secs: 0,
        flags: 0,
        payload,
    }
}

fn send_group(conversation_id: u64, client_message_id: u64, epoch: u64) -> messaging::SendGroup {
    messaging::SendGroup {
        conversation_id,
        client_message_id,
        expires_in_secs: 0,
        flags: 0,
        epoch,
        payload: Bytes::from_static(b"mls application message"),
    }
}

fn payload_for(user: &str, device: u32) -> messaging::DevicePayload {
    messaging::DevicePayload {
        user: user.to_owned(),
        device,
        payload: Bytes::from(format!("for {user}/{device}")),
    }
}

fn send_to_devices(
    conversation_id: u64,
    client_message_id: u64,
    device_payloads: Vec<messaging::DevicePayload>,
) -> messaging::SendToDevices {
    messaging::SendToDevices {
        conversation_id,
        client_message_id,
        expires_in_secs: 0,
        flags: 0,
        device_payloads,
    }
}

fn commit(conversation_id: u64, epoch: u64, added: &[&str]) -> mls::Commit {
    mls::Commit {
        conversation_id,
        epoch,
        commit: Bytes::from(format!("commit for epoch {epoch}")),
        welcome: None,
        group_info: Bytes::from(format!("group info after epoch {epoch}")),
        added: added.iter().map(|u| (*u).to_owned()).collect(),
        removed: Vec::new(),
        staged: Default::default(),
    }
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// The StaleDevices conflict's device list.
#[track_caller]
fn stale_devices(frame: &Frame) -> Vec<(String, u32)> {
    match &frame.body {
        Body::Conflict(Conflict { error, devices, .. }) => {
            assert_eq!(error.code, ErrorCode::StaleDevices, "{frame:?}");
            let mut devices = devices.clone();
            devices.sort();
            devices
        }
        other => panic!("expected a StaleDevices conflict, got {other:?}"),
    }
}

/// The StaleEpoch refusal's current epoch (0 reads as a plain Error).
#[track_caller]
fn stale_epoch(frame: &Frame) -> u64 {
    match &frame.body {
        Body::Conflict(Conflict {
            error,
            current_epoch,
            ..
        }) => {
            assert_eq!(error.code, ErrorCode::StaleEpoch, "{frame:?}");
            *current_epoch
        }
        Body::Error(ErrorBody {
            code: ErrorCode::StaleEpoch,
            ..
        }) => 0,
        other => panic!("expected StaleEpoch, got {other:?}"),
    }
}

/// Links a new device to `owner`'s account: RequestLink on a fresh
/// connection, approval by `owner`, and the new device's connection.
async fn link_device(server: &TestServer, owner: &mut Raw) -> Raw {
    let mut conn = server.raw_connection().await;
    let key = fresh_key();
    let frame = conn.link_frame(1, &owner.user, "laptop", &key).unwrap();
    conn.sender.frame(&frame).await.unwrap();
    let link_id = pending_link_id(owner).await;
    let (_, done) = owner
        .call(devices::ApproveLink {
            link_id,
            approve: true,
        })
        .await;
    assert!(matches!(done.body, Body::Done(_)), "{done:?}");
    let reply = next_frame(&mut conn).await;
    let Body::Registered(auth::Registered { device, .. }) = reply.body else {
        panic!("link not registered: {reply:?}");
    };
    let user = owner.user.clone();
    Raw::wrap(conn, &user, device, key)
}

/// The link id of the next link prompt pushed to `owner`.
async fn pending_link_id(owner: &mut Raw) -> u64 {
    loop {
        if let Body::LinkPrompt(prompt) = owner.push().await.body {
            return prompt.link_id;
        }
    }
}

// ---------- conversation ids the owner does not know ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_commands_on_unknown_conversations_are_not_found() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    let mut m = Raw::register(&server, "mallory").await;
    // Ids hashed to every owner, the extremes, and the neighbour of a real one.
    let ids = [
        0,
        1,
        u64::MAX,
        u64::MAX - 1,
        pair.conversation ^ 1,
        rand::random::<u64>() | 1,
    ];
    for id in ids {
        let bodies: Vec<Body> = vec![
            conversations::AddMembers {
                conversation_id: id,
                members: vec!["bystander-a".into()],
            }
            .into(),
            conversations::RemoveMembers {
                conversation_id: id,
                members: vec!["mallory".into()],
            }
            .into(),
            send(id, 1, Bytes::from_static(b"x")).into(),
            send_group(id, 2, 0).into(),
            send_to_devices(id, 3, Vec::new()).into(),
            messaging::Ack {
                conversation_id: id,
                seq: 0,
            }
            .into(),
            messaging::History {
                conversation_id: id,
                from_seq: 1,
                limit: 0,
            }
            .into(),
            commit(id, 0, &[]).into(),
            mls::GetGroupInfo {
                conversation_id: id,
            }
            .into(),
        ];
        for body in bodies {
            m.refused(body, ErrorCode::NotFound).await;
        }
    }
    m.sentinel().await;
    pair.check().await;
    // Nothing was created by the refusals.
    assert!(m.sync_state().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_group_with_a_wrong_epoch_to_an_unknown_conversation_is_not_found() {
    let server = TestServer::start(SHARDS);
    let mut m = Raw::register(&server, "mallory").await;
    for (id, epoch) in [(rand::random::<u64>() | 1, 7), (u64::MAX, u64::MAX), (0, 1)] {
        m.refused(send_group(id, 1, epoch), ErrorCode::NotFound)
            .await;
    }
    m.sentinel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_group_from_a_non_member_is_not_member_and_leaks_no_epoch() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let _bob = Raw::register(&server, "bob").await;
    let mut eve = Raw::register(&server, "eve").await;
    let group = alice.create(ConversationKind::Group, &["bob"]).await;
    for epoch in 0..3 {
        let (_, f) = alice.call(commit(group, epoch, &[])).await;
        assert!(matches!(f.body, Body::CommitAccepted(_)), "{f:?}");
    }
    // The right epoch is refused as NotMember (this passes today)...
    eve.refused(send_group(group, 1, 3), ErrorCode::NotMember)
        .await;
    // ...so any other epoch must be too, without telling eve the epoch.
    let frame = eve
        .refused(send_group(group, 2, 0), ErrorCode::NotMember)
        .await;
    if let Body::Conflict(c) = &frame.body {
        assert_eq!(
            c.current_epoch, 0,
            "the group's epoch leaked to a non-member"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_member_cannot_touch_a_conversation() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let mut eve = Raw::register(&server, "eve").await;
    let group = alice.create(ConversationKind::Group, &["bob"]).await;
    let direct = alice.create(ConversationKind::Direct, &["bob"]).await;
    alice.send(group, 1, Bytes::from_static(b"hi")).await;
    for id in [group, direct] {
        let bodies: Vec<Body> = vec![
            conversations::AddMembers {
                conversation_id: id,
                members: vec!["eve".into()],
            }
            .into(),
            conversations::RemoveMembers {
                conversation_id: id,
                members: vec!["bob".into()],
            }
            .into(),
            conversations::RemoveMembers {
                conversation_id: id,
                members: vec!["eve".into()],
            }
            .into(),
            send(id, 1, Bytes::from_static(b"x")).into(),
            send_group(id, 2, 0).into(),
            send_to_devices(id, 3, vec![payload_for("alice", 1), payload_for("bob", 1)]).into(),
            messaging::Ack {
                conversation_id: id,
                seq: 0,
            }
            .into(),
            messaging::History {
                conversation_id: id,
                from_seq: 1,
                limit: 0,
            }
            .into(),
            commit(id, 0, &["eve"]).into(),
            mls::GetGroupInfo {
                conversation_id: id,
            }
            .into(),
        ];
        for body in bodies {
            eve.refused(body, ErrorCode::NotMember).await;
        }
    }
    eve.sentinel().await;
    // Nothing changed: members, heads, epoch.
    let page = alice.history(group, 1, 0).await;
    assert_eq!(page.head_seq, 1);
    assert_eq!(alice.head(direct).await, 0);
    let (_, info) = alice
        .call(mls::GetGroupInfo {
            conversation_id: group,
        })
        .await;
    assert!(
        matches!(info.body, Body::GroupInfo(mls::GroupInfo { epoch: 0, .. })),
        "{info:?}"
    );
    // Bob got alice's message and nothing from eve.
    let m = bob.delivered().await;
    assert_eq!(
        (m.conversation_id, m.seq, &m.sender_user[..]),
        (group, 1, "alice")
    );
    alice.send(group, 2, Bytes::from_static(b"sentinel")).await;
    let m = bob.delivered().await;
    assert_eq!((m.seq, &m.payload[..]), (2, &b"sentinel"[..]));
    assert!(!eve
        .sync_state()
        .await
        .iter()
        .any(|s| s.conversation_id == group));
}

// ---------- history and ack with extreme arguments ----------

/// A member removed and added again is served only what was sent since
/// they came back: History from any seq starts at the new membership, and
/// Sync reports the device's cursor as just before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_added_member_is_not_handed_what_was_sent_while_out() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let _carol = Raw::register(&server, "carol").await;
    let group = alice
        .create(ConversationKind::Group, &["bob", "carol"])
        .await;
    alice.send(group, 1, Bytes::from_static(b"before")).await;
    let members = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect();
    let (_, f) = alice
        .call(conversations::RemoveMembers {
            conversation_id: group,
            members: members(&["bob"]),
        })
        .await;
    assert!(matches!(f.body, Body::ConversationInfo(_)), "{f:?}");
    alice
        .send(group, 2, Bytes::from_static(b"while out 1"))
        .await;
    alice
        .send(group, 3, Bytes::from_static(b"while out 2"))
        .await;
    let (_, f) = alice
        .call(conversations::AddMembers {
            conversation_id: group,
            members: members(&["bob"]),
        })
        .await;
    assert!(matches!(f.body, Body::ConversationInfo(_)), "{f:?}");
    alice.send(group, 4, Bytes::from_static(b"after")).await;
    for from in [0, 1, 2, 3, 4] {
        let page = bob.history(group, from, 0).await;
        let seen: Vec<&[u8]> = page.messages.iter().map(|m| &m.payload[..]).collect();
        assert_eq!(seen, vec![&b"after"[..]], "History from {from}");
        assert_eq!((page.head_seq, page.next_seq), (4, 5));
    }
    let state = bob.sync_state().await;
    let entry = state.iter().find(|s| s.conversation_id == group).unwrap();
    assert_eq!((entry.head_seq, entry.cursor), (4, 3));
    // Alice, a member throughout, still reads everything.
    assert_eq!(alice.history(group, 1, 0).await.messages.len(), 4);
}

/// Pages stop at 2 MB of payload (read from the store a few messages at a
/// time, never all 500 at once) and page through everything in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_pages_are_bounded_in_bytes_and_page_through_everything() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let note = alice.create(ConversationKind::NoteToSelf, &[]).await;
    const N: u64 = 40;
    for cmid in 1..=N {
        alice
            .send(note, cmid, Bytes::from(vec![cmid as u8; 200_000]))
            .await;
    }
    let mut from = 1;
    let mut seen = Vec::new();
    while from <= N {
        let p = alice.history(note, from, 0).await;
        let bytes: usize = p.messages.iter().map(|m| m.payload.len()).sum();
        assert!(bytes <= 2 * 1024 * 1024, "a page of {bytes} bytes");
        assert!(!p.messages.is_empty(), "an empty page from {from}");
        assert_eq!(p.next_seq, p.messages.last().unwrap().seq + 1);
        seen.extend(p.messages.iter().map(|m| m.seq));
        from = p.next_seq;
    }
    assert_eq!(seen, (1..=N).collect::<Vec<_>>());
    let p = alice.history(note, from, 0).await;
    assert_eq!((p.messages.len(), p.next_seq, p.head_seq), (0, N + 1, N));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_limits_and_extreme_seqs_are_clamped() {
    let server = TestServer::start_with(SHARDS, |c| c.max_history_page = 5);
    let mut alice = Raw::register(&server, "alice").await;
    let note = alice.create(ConversationKind::NoteToSelf, &[]).await;
    for cmid in 1..=8 {
        alice
            .send(note, cmid, Bytes::from(format!("m{cmid}")))
            .await;
    }
    let seqs = |p: &messaging::HistoryPage| p.messages.iter().map(|m| m.seq).collect::<Vec<_>>();
    // limit 0 is the server default, capped at max_history_page.
    let p = alice.history(note, 1, 0).await;
    assert_eq!(
        (seqs(&p), p.next_seq, p.head_seq),
        (vec![1, 2, 3, 4, 5], 6, 8)
    );
    // A huge limit is capped too.
    let p = alice.history(note, 1, u32::MAX).await;
    assert_eq!((seqs(&p), p.next_seq), (vec![1, 2, 3, 4, 5], 6));
    // from_seq 0 reads as 1.
    let p = alice.history(note, 0, 2).await;
    assert_eq!((seqs(&p), p.next_seq), (vec![1, 2], 3));
    // The tail, then past the head, then the far end of the seq space.
    let p = alice.history(note, 6, 100).await;
    assert_eq!((seqs(&p), p.next_seq), (vec![6, 7, 8], 9));
    let p = alice.history(note, 9, 100).await;
    assert_eq!((seqs(&p), p.next_seq, p.head_seq), (vec![], 9, 8));
    for from in [u64::MAX, u64::MAX - 1, 1 << 63] {
        let p = alice.history(note, from, u32::MAX).await;
        assert!(p.messages.is_empty());
        assert_eq!((p.next_seq, p.head_seq), (from, 8));
    }
    // The owner is unharmed: the next send takes the next seq.
    assert_eq!(
        alice.send(note, 9, Bytes::from_static(b"after")).await.seq,
        9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_is_bounded_by_the_head_and_never_moves_back() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let direct = alice.create(ConversationKind::Direct, &["bob"]).await;
    for cmid in 1..=4 {
        alice.send(direct, cmid, Bytes::from_static(b"m")).await;
    }
    let cursor = |s: &[tern_proto::ConversationState]| {
        s.iter()
            .find(|c| c.conversation_id == direct)
            .map(|c| (c.head_seq, c.cursor))
            .unwrap()
    };
    let ack = |seq| messaging::Ack {
        conversation_id: direct,
        seq,
    };
    assert!(matches!(bob.call(ack(0)).await.1.body, Body::Done(_)));
    assert!(matches!(bob.call(ack(3)).await.1.body, Body::Done(_)));
    assert_eq!(cursor(&bob.sync_state().await), (4, 3));
    // Lower is ignored, past the head refused; the cursor stays.
    assert!(matches!(bob.call(ack(1)).await.1.body, Body::Done(_)));
    for seq in [5, 1 << 63, u64::MAX] {
        bob.refused(ack(seq), ErrorCode::InvalidArgument).await;
    }
    assert_eq!(cursor(&bob.sync_state().await), (4, 3));
    // Bob's cursor is his alone: alice's is untouched.
    assert_eq!(cursor(&alice.sync_state().await), (4, 0));
}

// ---------- idempotency under concurrency ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicate_sends_are_stored_once() {
    let server = TestServer::start(SHARDS);
    let mut a1 = Raw::register(&server, "alice").await;
    let bob_reg = Raw::register(&server, "bob").await;
    let direct = a1.create(ConversationKind::Direct, &["bob"]).await;
    let mut a2 = a1.again(&server).await;
    let burst = |payload: &'static [u8]| -> Vec<Body> {
        (0..16)
            .map(|_| send(direct, 42, Bytes::from_static(payload)).into())
            .collect()
    };
    // The same device's two connections race the same client_message_id.
    let (ids1, ids2) = tokio::join!(a1.pipeline(burst(b"one")), a2.pipeline(burst(b"two")));
    let mut acks = Vec::new();
    for id in ids1 {
        acks.push(a1.reply(id).await);
    }
    for id in ids2 {
        acks.push(a2.reply(id).await);
    }
    let acks: Vec<messaging::SendAck> = acks
        .into_iter()
        .map(|f| match f.body {
            Body::SendAck(ack) => ack,
            other => panic!("duplicate send refused: {other:?}"),
        })
        .collect();
    assert!(acks.iter().all(|a| a.seq == 1), "{acks:?}");
    assert_eq!(acks.iter().filter(|a| !a.duplicate).count(), 1, "{acks:?}");
    let page = a1.history(direct, 1, 0).await;
    assert_eq!((page.head_seq, page.messages.len()), (1, 1));
    // Another device's id 42 is another message.
    let mut bob = Raw::authenticate(&server, "bob", 1, &bob_reg.key).await;
    let ack = bob.send(direct, 42, Bytes::from_static(b"bob's 42")).await;
    assert_eq!((ack.seq, ack.duplicate), (2, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_after_index_eviction_are_acked_with_the_stored_seq() {
    // One shard: the connection and the owner share a thread, so retries
    // written together land in one owner batch.
    let server = TestServer::start(1);
    let mut alice = Raw::register(&server, "alice").await;
    let note = alice.create(ConversationKind::NoteToSelf, &[]).await;
    assert_eq!(
        alice.send(note, 1, Bytes::from_static(b"first")).await.seq,
        1
    );
    // 256 more sends push id 1 out of the owner's index of recent ids.
    let later: Vec<Body> = (2..=257)
        .map(|cmid| send(note, cmid, Bytes::from_static(b"filler")).into())
        .collect();
    for id in alice.pipeline(later).await {
        assert!(matches!(alice.reply(id).await.body, Body::SendAck(_)));
    }
    // The client retries message 1 (its ack was lost) a few times at once.
    let retries: Vec<Body> = (0..4)
        .map(|_| send(note, 1, Bytes::from_static(b"first")).into())
        .collect();
    let mut acks = Vec::new();
    for id in alice.pipeline(retries).await {
        match alice.reply(id).await.body {
            Body::SendAck(ack) => acks.push((ack.seq, ack.duplicate)),
            other => panic!("retry refused: {other:?}"),
        }
    }
    // The next new message takes seq 258.
    assert_eq!(
        alice.send(note, 1000, Bytes::from_static(b"new")).await.seq,
        258
    );
    let page = alice.history(note, 258, 1).await;
    assert_eq!(page.messages[0].client_message_id, 1000);
    assert_eq!(
        acks,
        vec![(1, true); 4],
        "every retry of message 1 must be acked with its stored seq 1; \
         an ack naming seq 258 points at another message"
    );
}

// ---------- MLS commits ----------

/// The Commit path enforces the same membership authority as
/// RemoveMembers: a non-creator cannot remove the creator (or anyone else
/// still in the group) by naming them in a Commit with arbitrary bytes, no
/// one commits their own removal, names are handles named once, and a
/// departed member's removal is open to anyone. Nothing refused moves the
/// epoch or the membership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_removals_follow_the_remove_members_rules() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let _carol = Raw::register(&server, "carol").await;
    let mut dave = Raw::register(&server, "dave").await;
    let group = alice
        .create(ConversationKind::Group, &["bob", "carol", "dave"])
        .await;
    let removing = |epoch: u64, added: &[&str], removed: &[&str]| mls::Commit {
        removed: removed.iter().map(|u| (*u).to_owned()).collect(),
        staged: Default::default(),
        ..commit(group, epoch, added)
    };
    bob.refused(removing(0, &[], &["alice"]), ErrorCode::Forbidden)
        .await;
    bob.refused(removing(0, &[], &["carol"]), ErrorCode::Forbidden)
        .await;
    bob.refused(removing(0, &[], &["bob"]), ErrorCode::InvalidArgument)
        .await;
    bob.refused(removing(0, &[], &["ghost"]), ErrorCode::NotFound)
        .await;
    bob.refused(
        removing(0, &[], &["Not A Handle"]),
        ErrorCode::InvalidArgument,
    )
    .await;
    alice
        .refused(
            removing(0, &[], &["bob", "bob"]),
            ErrorCode::InvalidArgument,
        )
        .await;
    let many = names("u", MAX_MEMBERS);
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    alice
        .refused(removing(0, &many, &["bob"]), ErrorCode::InvalidArgument)
        .await;
    let head_of = |f: &Frame| match &f.body {
        Body::SyncResult(r) => r
            .conversations
            .iter()
            .find(|c| c.conversation_id == group)
            .map(|c| c.head_seq),
        other => panic!("{other:?}"),
    };
    let (_, f) = alice
        .call(sync::Sync {
            all: true,
            ..Default::default()
        })
        .await;
    assert_eq!(head_of(&f), Some(0), "a refused Commit moved the head");
    // Dave leaves; any member may then commit his removal from the tree.
    let (_, f) = dave
        .call(conversations::RemoveMembers {
            conversation_id: group,
            members: vec!["dave".into()],
        })
        .await;
    assert!(matches!(f.body, Body::ConversationInfo(_)), "{f:?}");
    let (_, f) = bob.call(removing(0, &[], &["dave"])).await;
    assert!(matches!(f.body, Body::CommitAccepted(_)), "{f:?}");
    // The creator removes a member by Commit.
    let (_, f) = alice.call(removing(1, &[], &["carol"])).await;
    assert!(matches!(f.body, Body::CommitAccepted(_)), "{f:?}");
    let (_, f) = alice
        .call(mls::GetGroupInfo {
            conversation_id: group,
        })
        .await;
    assert!(
        matches!(&f.body, Body::GroupInfo(g) if g.epoch == 2),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_with_bad_epochs_or_changes_is_refused_without_effect() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let _carol = Raw::register(&server, "carol").await;
    let group = alice.create(ConversationKind::Group, &["bob"]).await;
    for epoch in [u64::MAX, u64::MAX - 1, 1, 2] {
        let (_, f) = alice.call(commit(group, epoch, &[])).await;
        assert_eq!(stale_epoch(&f), 0, "{f:?}");
    }
    alice
        .refused(commit(group, 0, &["ghost"]), ErrorCode::NotFound)
        .await;
    alice
        .refused(commit(group, 0, &["carol", "ghost"]), ErrorCode::NotFound)
        .await;
    alice
        .refused(commit(group, 0, &["bob"]), ErrorCode::InvalidArgument)
        .await;
    alice
        .refused(commit(group, 0, &["alice"]), ErrorCode::InvalidArgument)
        .await;
    alice
        .refused(
            commit(group, 0, &["Not A Handle"]),
            ErrorCode::InvalidArgument,
        )
        .await;
    alice
        .refused(commit(group, 0, &[""]), ErrorCode::InvalidArgument)
        .await;
    let many = names("u", MAX_MEMBERS + 1);
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    alice
        .refused(commit(group, 0, &many), ErrorCode::InvalidArgument)
        .await;
    // None of that moved the epoch, the head or the membership.
    let (_, f) = alice
        .call(mls::GetGroupInfo {
            conversation_id: group,
        })
        .await;
    assert!(
        matches!(&f.body, Body::GroupInfo(g) if g.epoch == 0 && g.group_info.is_empty()),
        "{f:?}"
    );
    assert_eq!(alice.head(group).await, 0);
    // A proper commit at epoch 0 adding carol.
    let (_, f) = alice.call(commit(group, 0, &["carol"])).await;
    assert!(
        matches!(
            f.body,
            Body::CommitAccepted(mls::CommitAccepted {
                epoch: 1,
                seq: 1,
                ..
            })
        ),
        "{f:?}"
    );
    // Its replay is stale, and bob saw exactly one commit.
    let (_, f) = alice.call(commit(group, 0, &[])).await;
    assert_eq!(stale_epoch(&f), 1);
    let m = bob.delivered().await;
    assert_eq!((m.seq, m.flags & flags::MLS_COMMIT), (1, flags::MLS_COMMIT));
    let (_, f) = bob
        .call(mls::GetGroupInfo {
            conversation_id: group,
        })
        .await;
    assert!(
        matches!(&f.body, Body::GroupInfo(g) if g.epoch == 1 && &g.group_info[..] == b"group info after epoch 0"),
        "{f:?}"
    );
    assert_eq!(bob.head(group).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_for_one_epoch_accept_exactly_one() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let group = alice.create(ConversationKind::Group, &["bob"]).await;
    let burst = || -> Vec<Body> { (0..6).map(|_| commit(group, 0, &[]).into()).collect() };
    let (ids_a, ids_b) = tokio::join!(alice.pipeline(burst()), bob.pipeline(burst()));
    let mut accepted = 0;
    for (raw, ids) in [(&mut alice, ids_a), (&mut bob, ids_b)] {
        for id in ids {
            let f = raw.reply(id).await;
            match &f.body {
                Body::CommitAccepted(c) => {
                    assert_eq!((c.epoch, c.seq), (1, 1));
                    accepted += 1;
                }
                _ => assert_eq!(stale_epoch(&f), 1, "{f:?}"),
            }
        }
    }
    assert_eq!(accepted, 1);
    assert_eq!(alice.head(group).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mls_requests_outside_groups_are_forbidden() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let _bob = Raw::register(&server, "bob").await;
    let direct = alice.create(ConversationKind::Direct, &["bob"]).await;
    let note = alice.create(ConversationKind::NoteToSelf, &[]).await;
    for id in [direct, note] {
        alice
            .refused(commit(id, 0, &[]), ErrorCode::Forbidden)
            .await;
        alice
            .refused(send_group(id, 7, 0), ErrorCode::Forbidden)
            .await;
        alice
            .refused(
                mls::GetGroupInfo {
                    conversation_id: id,
                },
                ErrorCode::Forbidden,
            )
            .await;
        alice
            .refused(
                conversations::AddMembers {
                    conversation_id: id,
                    members: vec!["bob".into()],
                },
                ErrorCode::Forbidden,
            )
            .await;
        assert_eq!(alice.head(id).await, 0);
    }
    alice.sentinel().await;
}

// ---------- per-device sends ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_devices_must_name_exactly_the_current_devices() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let direct = alice.create(ConversationKind::Direct, &["bob"]).await;
    let wanted = vec![("bob".to_owned(), 1)];
    let wrong_sets = vec![
        vec![],
        vec![payload_for("bob", 2)],
        vec![payload_for("bob", 0)],
        vec![payload_for("bob", u32::MAX)],
        vec![payload_for("bob", 1), payload_for("bob", 1)],
        vec![payload_for("bob", 1), payload_for("bob", 2)],
        vec![payload_for("bob", 1), payload_for("alice", 1)],
        vec![payload_for("bob", 1), payload_for("bystander-a", 1)],
        vec![payload_for("carol", 1)],
        vec![payload_for(&"x".repeat(300), 1)],
        // A thousand payloads (still under the frame's table limit).
        (0..1000).map(|d| payload_for("bob", d)).collect(),
    ];
    for (cmid, set) in (1u64..).zip(wrong_sets) {
        let (id, f) = alice.call(send_to_devices(direct, cmid, set)).await;
        assert_eq!(f.request_id, id);
        assert_eq!(stale_devices(&f), wanted);
    }
    // Thousands of payloads exceed the frame's table limit: Malformed, and the
    // connection goes on.
    let huge = send_to_devices(
        direct,
        99,
        (0..3000).map(|d| payload_for("bob", d)).collect(),
    );
    let id = alice.request(huge).await;
    let f = next_frame(&mut alice.conn).await;
    assert_eq!(code_of(&f), Some(ErrorCode::Malformed), "{f:?}");
    assert!(f.request_id == id || f.request_id == 0, "{f:?}");
    alice.sentinel().await;
    // Nothing was stored; a correct set is accepted with seq 1 and bob gets
    // exactly his ciphertext.
    assert_eq!(alice.head(direct).await, 0);
    let ack_frame = alice
        .call(send_to_devices(direct, 100, vec![payload_for("bob", 1)]))
        .await
        .1;
    assert!(
        matches!(
            ack_frame.body,
            Body::SendAck(messaging::SendAck { seq: 1, .. })
        ),
        "{ack_frame:?}"
    );
    let m = bob.delivered().await;
    assert_eq!((m.seq, &m.payload[..]), (1, &b"for bob/1"[..]));
    assert_eq!(m.flags & flags::PER_DEVICE, flags::PER_DEVICE);
    let page = bob.history(direct, 1, 0).await;
    assert_eq!(&page.messages[0].payload[..], b"for bob/1");
    pair.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_flags_are_refused_on_every_send_form() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let _bob = Raw::register(&server, "bob").await;
    let group = alice.create(ConversationKind::Group, &["bob"]).await;
    for flag in [
        flags::MLS_COMMIT,
        flags::MLS_WELCOME,
        flags::PER_DEVICE,
        1 << 31,
    ] {
        let mut s = send(group, 1, Bytes::from_static(b"spoof"));
        s.flags = flag;
        alice.refused(s, ErrorCode::InvalidArgument).await;
        let mut g = send_group(group, 2, 0);
        g.flags = flag;
        alice.refused(g, ErrorCode::InvalidArgument).await;
        let mut d = send_to_devices(group, 3, vec![payload_for("bob", 1)]);
        d.flags = flag;
        alice.refused(d, ErrorCode::InvalidArgument).await;
        let zero = send(group, 0, Bytes::new());
        alice.refused(zero, ErrorCode::InvalidArgument).await;
    }
    assert_eq!(alice.head(group).await, 0);
}

// ---------- key directory ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_package_uploads_are_bounded() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    let mut m = Raw::register(&server, "mallory").await;
    let pkg = |i: usize, len: usize| {
        let mut v = format!("kp{i}-").into_bytes();
        v.resize(len, (i % 251) as u8);
        Bytes::from(v)
    };
    let upload = |packages: Vec<Bytes>, last_resort: Option<Bytes>| mls::UploadKeyPackages {
        key_packages: packages,
        last_resort,
    };
    // As many maximum-size packages as one frame holds.
    let (_, f) = m
        .call(upload(
            (0..15).map(|i| pkg(i, MAX_KEY_PACKAGE)).collect(),
            None,
        ))
        .await;
    assert!(
        matches!(
            f.body,
            Body::KeyCounts(prekeys::KeyCounts {
                key_packages: 15,
                ..
            })
        ),
        "{f:?}"
    );
    m.refused(
        upload(vec![pkg(100, MAX_KEY_PACKAGE + 1)], None),
        ErrorCode::InvalidArgument,
    )
    .await;
    m.refused(upload(vec![Bytes::new()], None), ErrorCode::InvalidArgument)
        .await;
    m.refused(
        upload(vec![], Some(Bytes::new())),
        ErrorCode::InvalidArgument,
    )
    .await;
    m.refused(
        upload(vec![], Some(pkg(101, MAX_KEY_PACKAGE + 1))),
        ErrorCode::InvalidArgument,
    )
    .await;
    m.refused(
        upload((0..101).map(|i| pkg(200 + i, 64)).collect(), None),
        ErrorCode::InvalidArgument,
    )
    .await;
    assert_eq!(m.key_counts().await.key_packages, 15);
    // Eleven uploads of 100 fresh packages: the pool stops at its cap.
    for round in 0..11 {
        let packages = (0..100).map(|i| pkg(1000 + round * 100 + i, 64)).collect();
        let (_, f) = m.call(upload(packages, None)).await;
        assert!(matches!(f.body, Body::KeyCounts(_)), "{f:?}");
    }
    assert_eq!(m.key_counts().await.key_packages, tern_store::KEY_POOL_CAP);
    // 100 maximum-size packages (1.6 MB) cannot be one frame: refused and closed.
    let too_big = upload(
        (0..100).map(|i| pkg(5000 + i, MAX_KEY_PACKAGE)).collect(),
        None,
    );
    let frame = Frame::new(9999, too_big).encode();
    assert!(frame.len() > MAX_FRAME);
    // Write and read at once: the write only ends when the server closes.
    let (sender, receiver) = (&mut m.conn.sender, &mut m.conn.receiver);
    let (_, last) = tokio::join!(sender.raw(&frame), timeout(WAIT, receiver.next()));
    let last = last
        .expect("the refusal arrives in time")
        .expect("reading the refusal succeeds")
        .expect("the refusal precedes the end of the stream");
    assert_code(&last, 0, ErrorCode::FrameTooLarge);
    expect_close(&m.conn.connection, close::FRAME_TOO_LARGE).await;
    pair.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_package_claim_consumes_nothing() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let packages = (0..3).map(|i| Bytes::from(format!("bob kp {i}"))).collect();
    let (_, f) = bob
        .call(mls::UploadKeyPackages {
            key_packages: packages,
            last_resort: None,
        })
        .await;
    assert!(
        matches!(
            f.body,
            Body::KeyCounts(prekeys::KeyCounts {
                key_packages: 3,
                ..
            })
        ),
        "{f:?}"
    );
    for bad in ["ghost", "Not A Handle", ""] {
        alice
            .refused(
                mls::ClaimKeyPackages {
                    users: vec!["bob".into(), bad.into()],
                },
                ErrorCode::NotFound,
            )
            .await;
    }
    assert_eq!(
        bob.key_counts().await.key_packages,
        3,
        "refused claims burned bob's single-use KeyPackages without handing them out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_claims_are_bounded_and_rate_limited_per_claimer() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let mut carol = Raw::register(&server, "carol").await;
    let (_, f) = bob
        .call(mls::UploadKeyPackages {
            key_packages: vec![Bytes::from_static(b"bob kp")],
            last_resort: Some(Bytes::from_static(b"bob last resort")),
        })
        .await;
    assert!(matches!(f.body, Body::KeyCounts(_)), "{f:?}");
    alice
        .refused(
            mls::ClaimKeyPackages {
                users: names("u", MAX_MEMBERS + 1),
            },
            ErrorCode::InvalidArgument,
        )
        .await;
    // Forty claims of bob in one request: over the burst of 30.
    let f = alice
        .refused(
            mls::ClaimKeyPackages {
                users: vec!["bob".to_owned(); 40],
            },
            ErrorCode::RateLimited,
        )
        .await;
    let Body::Error(e) = &f.body else {
        panic!("{f:?}")
    };
    assert!(e.retry_after_ms > 0, "{e:?}");
    alice
        .refused(
            prekeys::ClaimPrekeys { user: "bob".into() },
            ErrorCode::RateLimited,
        )
        .await;
    // Carol's bucket is her own: she gets bob's one KeyPackage.
    let (_, f) = carol
        .call(mls::ClaimKeyPackages {
            users: vec!["bob".into()],
        })
        .await;
    let Body::KeyPackages(k) = &f.body else {
        panic!("{f:?}")
    };
    assert_eq!(k.entries.len(), 1);
    assert_eq!(
        (&k.entries[0].key_package[..], k.entries[0].last_resort),
        (&b"bob kp"[..], false)
    );
    // Claims of unknown users are NotFound, bob's pool untouched by them.
    carol
        .refused(
            prekeys::ClaimPrekeys {
                user: "ghost".into(),
            },
            ErrorCode::NotFound,
        )
        .await;
    carol
        .refused(
            prekeys::ClaimPrekeys {
                user: String::new(),
            },
            ErrorCode::NotFound,
        )
        .await;
    let (_, f) = carol
        .call(mls::ClaimKeyPackages {
            users: vec!["bob".into()],
        })
        .await;
    let Body::KeyPackages(k) = &f.body else {
        panic!("{f:?}")
    };
    assert!(
        k.entries[0].last_resort,
        "the pool is empty, the last resort is handed out"
    );
    alice.sentinel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prekey_uploads_with_bad_signatures_or_too_many_keys_store_nothing() {
    let server = TestServer::start(SHARDS);
    let mut m = Raw::register(&server, "mallory").await;
    let one_time = |n: u32| -> Vec<prekeys::OneTimePrekeyData> {
        (0..n)
            .map(|id| prekeys::OneTimePrekeyData {
                id,
                public_key: [id as u8; 32],
            })
            .collect()
    };
    let bad_signed = prekeys::SignedPrekeyData {
        id: 1,
        public_key: [9; 32],
        signature: [0; 64],
    };
    let refused = [
        prekeys::UploadPrekeys {
            one_time: one_time(101),
            ..Default::default()
        },
        prekeys::UploadPrekeys {
            signed_prekey: Some(bad_signed.clone()),
            one_time: one_time(5),
            ..Default::default()
        },
        prekeys::UploadPrekeys {
            last_resort: Some(bad_signed.clone()),
            one_time: one_time(5),
            ..Default::default()
        },
        prekeys::UploadPrekeys {
            identity: Some(([3; 32], [0; 64])),
            one_time: one_time(5),
            ..Default::default()
        },
    ];
    for body in refused {
        m.refused(body, ErrorCode::InvalidArgument).await;
    }
    // Nothing of the refused uploads was kept.
    let (_, f) = m.call(prekeys::UploadPrekeys::default()).await;
    assert!(
        matches!(
            f.body,
            Body::KeyCounts(prekeys::KeyCounts {
                one_time_prekeys: 0,
                ..
            })
        ),
        "{f:?}"
    );
    let (_, f) = m
        .call(prekeys::UploadPrekeys {
            one_time: one_time(100),
            ..Default::default()
        })
        .await;
    assert!(
        matches!(
            f.body,
            Body::KeyCounts(prekeys::KeyCounts {
                one_time_prekeys: 100,
                ..
            })
        ),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_devices_of_unknown_or_invalid_users_is_not_found() {
    let server = TestServer::start(SHARDS);
    let mut m = Raw::register(&server, "mallory").await;
    for user in [
        String::new(),
        "ghost".into(),
        "Not A Handle".into(),
        "x".repeat(255),
    ] {
        m.refused(devices::ListDevices { user }, ErrorCode::NotFound)
            .await;
    }
    assert_eq!(m.devices_of("mallory").await, vec![1]);
}

// ---------- server-wide rate limits ----------

/// The RateLimited answer's retry-after, after checking the code.
#[track_caller]
fn retry_after(frame: &Frame) -> u32 {
    match &frame.body {
        Body::Error(e) if e.code == ErrorCode::RateLimited => e.retry_after_ms,
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

/// Registrations are limited per source address (loopback is exempt by
/// default; this server limits it), and the limit holds whichever shard a
/// connection lands on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_are_limited_per_source_address() {
    let server = TestServer::start_with(SHARDS, |c| {
        c.rate_limit_exempt = Vec::new();
        c.registrations_per_address_burst = 4;
        c.registrations_per_address_per_hour = 1;
    });
    for i in 0..4 {
        Raw::register(&server, &format!("user{i}")).await;
    }
    for i in 4..8 {
        let mut conn = server.raw_connection().await;
        let frame = conn
            .register_frame(1, &format!("user{i}"), "raw", &fresh_key())
            .unwrap();
        conn.sender.frame(&frame).await.unwrap();
        let wait = retry_after(&next_frame(&mut conn).await);
        assert!(wait > 3_000_000, "one an hour: retry in {wait} ms");
    }
}

/// One account creates conversations only so fast: past the burst a create
/// is refused with a retry-after and creates nothing; other accounts are
/// unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversation_creations_are_limited_per_account() {
    let server = TestServer::start_with(SHARDS, |c| {
        c.conversations_per_account_burst = 3;
        c.conversations_per_account_per_day = 1;
    });
    let mut mallory = Raw::register(&server, "mallory").await;
    let mut bob = Raw::register(&server, "bob").await;
    for _ in 0..3 {
        mallory.create(ConversationKind::Group, &["bob"]).await;
    }
    let (_, f) = mallory
        .call(conversations::CreateConversation {
            kind: ConversationKind::Group,
            members: vec!["bob".into()],
        })
        .await;
    assert!(retry_after(&f) > 3_000_000, "one a day: {f:?}");
    assert_eq!(
        bob.sync_state().await.len(),
        3,
        "the refused create made nothing"
    );
    bob.create(ConversationKind::Group, &["mallory"]).await;
}

/// Fresh accounts cannot drain one user's keys: claims of one target are
/// limited whoever claims, while another target is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_accounts_cannot_drain_one_users_keys() {
    let server = TestServer::start_with(SHARDS, |c| {
        c.claims_per_target_burst = 5;
        c.claims_per_target_per_minute = 1;
    });
    let _bob = Raw::register(&server, "bob").await;
    let _carol = Raw::register(&server, "carol").await;
    let mut claims = Vec::new();
    for i in 0..6 {
        let mut fresh = Raw::register(&server, &format!("fresh{i}")).await;
        let (_, f) = fresh
            .call(prekeys::ClaimPrekeys { user: "bob".into() })
            .await;
        claims.push((fresh, f));
    }
    for (_, f) in &claims[..5] {
        assert!(matches!(f.body, Body::PrekeyBundle(_)), "{f:?}");
    }
    assert!(retry_after(&claims[5].1) > 0);
    let (mut last, _) = claims.pop().unwrap();
    let (_, f) = last
        .call(prekeys::ClaimPrekeys {
            user: "carol".into(),
        })
        .await;
    assert!(matches!(f.body, Body::PrekeyBundle(_)), "{f:?}");
}

/// Link requests are limited per named user (from any address, loopback
/// included) and per source address: past them no prompt is pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_requests_are_limited_per_user_and_per_address() {
    let server = TestServer::start_with(SHARDS, |c| {
        c.link_requests_per_user_burst = 2;
        c.link_requests_per_address_burst = 3;
        c.rate_limit_exempt = Vec::new();
    });
    let mut owner = Raw::register(&server, "owner").await;
    let mut other = Raw::register(&server, "other").await;
    let mut waiting = Vec::new();
    for id in 0..2 {
        let mut conn = server.raw_connection().await;
        let frame = conn.link_frame(1, "owner", "laptop", &fresh_key()).unwrap();
        conn.sender.frame(&frame).await.unwrap();
        assert!(
            matches!(owner.push().await.body, Body::LinkPrompt(_)),
            "prompt {id}"
        );
        waiting.push(conn);
    }
    // Third for the same user: refused, no prompt.
    let mut conn = server.raw_connection().await;
    let frame = conn.link_frame(1, "owner", "laptop", &fresh_key()).unwrap();
    conn.sender.frame(&frame).await.unwrap();
    assert!(retry_after(&next_frame(&mut conn).await) > 0);
    owner.sentinel().await;
    assert!(owner.pushes.is_empty(), "{:?}", owner.pushes);
    // A refused request is charged to neither bucket (PROTOCOL.md §6.1), so
    // that one took none of the address's tokens: a fourth, for another
    // user, is the address's third and is prompted.
    let mut conn = server.raw_connection().await;
    let frame = conn.link_frame(1, "other", "laptop", &fresh_key()).unwrap();
    conn.sender.frame(&frame).await.unwrap();
    assert!(matches!(other.push().await.body, Body::LinkPrompt(_)));
    waiting.push(conn);
    // A fifth, for a user still within their own limit, is refused by the
    // address limit.
    let mut conn = server.raw_connection().await;
    let frame = conn.link_frame(1, "other", "tablet", &fresh_key()).unwrap();
    conn.sender.frame(&frame).await.unwrap();
    assert!(retry_after(&next_frame(&mut conn).await) > 0);
    other.sentinel().await;
    assert!(other.pushes.is_empty(), "{:?}", other.pushes);
}

/// Device names reach other people's terminals (`tern devices`, link
/// prompts): NUL, newlines, terminal escape sequences, text-direction
/// overrides, blank and over-long names are refused at Register and at
/// RequestLink with InvalidArgument, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_names_with_control_characters_are_refused() {
    let server = TestServer::start(SHARDS);
    let mut owner = Raw::register(&server, "owner").await;
    let bad = [
        "nul\0byte".to_string(),
        "two\nlines".into(),
        "\u{1b}[2J\u{1b}[Hclear".into(),
        "del\u{7f}".into(),
        "csi\u{9b}31m".into(),
        "rtl\u{202E}gpj.exe".into(),
        String::new(),
        "   ".into(),
        "x".repeat(65),
    ];
    for (i, name) in bad.iter().enumerate() {
        let mut conn = server.raw_connection().await;
        let user = format!("victim{i}");
        let frame = conn.register_frame(1, &user, name, &fresh_key()).unwrap();
        conn.sender.frame(&frame).await.unwrap();
        assert_code(&next_frame(&mut conn).await, 1, ErrorCode::InvalidArgument);
        let frame = conn.link_frame(2, "owner", name, &fresh_key()).unwrap();
        conn.sender.frame(&frame).await.unwrap();
        assert_code(&next_frame(&mut conn).await, 2, ErrorCode::InvalidArgument);
        owner
            .refused(devices::ListDevices { user }, ErrorCode::NotFound)
            .await;
    }
    // No link prompt reached the owner: everything that arrived before its
    // sentinel's answer was a reply.
    owner.sentinel().await;
    assert!(owner.pushes.is_empty(), "{:?}", owner.pushes);
    assert_eq!(owner.devices_of("owner").await, vec![1]);
    // A name at the limit, in any script, is fine.
    let mut ok = server.raw_connection().await;
    let name = format!("téléphone ☎ {}", "x".repeat(64 - "téléphone ☎ ".len()));
    assert_eq!(name.len(), 64);
    let frame = ok.register_frame(1, "fine", &name, &fresh_key()).unwrap();
    ok.sender.frame(&frame).await.unwrap();
    let reply = next_frame(&mut ok).await;
    assert!(matches!(reply.body, Body::Registered(_)), "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_user_names_are_refused_as_bad_arguments_not_internal_errors() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let _bob = Raw::register(&server, "bob").await;
    let group = alice.create(ConversationKind::Group, &["bob"]).await;
    let long = "x".repeat(300);
    let acceptable = |f: &Frame| {
        matches!(
            code_of(f),
            Some(ErrorCode::NotFound | ErrorCode::InvalidArgument)
        )
    };
    // Removing a non-member is refused, whatever its name.
    let (_, f) = alice
        .call(conversations::RemoveMembers {
            conversation_id: group,
            members: vec![long.clone()],
        })
        .await;
    assert!(acceptable(&f), "{f:?}");
    let mut failures = Vec::new();
    let bodies: Vec<Body> = vec![
        devices::ListDevices { user: long.clone() }.into(),
        prekeys::ClaimPrekeys { user: long.clone() }.into(),
        mls::ClaimKeyPackages {
            users: vec![long.clone()],
        }
        .into(),
    ];
    for body in bodies {
        let what = format!("{body:.60?}");
        let (_, f) = alice.call(body).await;
        if !acceptable(&f) {
            failures.push(format!("{what}: {f:?}"));
        }
    }
    // Before authentication, an unknown (overlong) user is AuthFailed.
    let mut conn = server.raw_connection().await;
    let auth = conn.authenticate_frame(1, &long, 1, &fresh_key()).unwrap();
    conn.sender.frame(&auth).await.unwrap();
    let f = next_frame(&mut conn).await;
    if code_of(&f) != Some(ErrorCode::AuthFailed) {
        failures.push(format!("Authenticate as {} bytes: {f:?}", long.len()));
    }
    alice.sentinel().await;
    assert!(failures.is_empty(), "{failures:#?}");
}

// ---------- devices: revoke and link ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_refuses_unknown_devices_and_only_touches_the_callers_account() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let mut bob2 = link_device(&server, &mut bob).await;
    assert_eq!(bob2.device, 2);
    for device in [0, 2, 3, u32::MAX] {
        alice
            .refused(devices::RevokeDevice { device }, ErrorCode::NotFound)
            .await;
    }
    alice.sentinel().await;
    // Bob's devices (ids 1 and 2, like those alice named) are untouched.
    assert_eq!(alice.devices_of("bob").await, vec![1, 2]);
    bob2.sentinel().await;
    bob.sentinel().await;
    assert_eq!(alice.devices_of("alice").await, vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_devices_open_connection_is_closed_and_its_key_refused() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let direct = alice.create(ConversationKind::Direct, &["bob"]).await;
    let bob2 = link_device(&server, &mut bob).await;
    let (_, f) = alice
        .call(send_to_devices(direct, 1, vec![payload_for("bob", 1)]))
        .await;
    assert_eq!(
        stale_devices(&f),
        vec![("bob".into(), 1), ("bob".into(), 2)]
    );
    let (_, f) = bob.call(devices::RevokeDevice { device: 2 }).await;
    assert!(matches!(f.body, Body::Done(_)), "{f:?}");
    expect_close(&bob2.conn.connection, close::AUTH_FAILED).await;
    // Its key no longer authenticates; a second revoke finds nothing.
    let mut conn = server.raw_connection().await;
    let auth = conn.authenticate_frame(1, "bob", 2, &bob2.key).unwrap();
    conn.sender.frame(&auth).await.unwrap();
    assert_code(&next_frame(&mut conn).await, 1, ErrorCode::AuthFailed);
    bob.refused(devices::RevokeDevice { device: 2 }, ErrorCode::NotFound)
        .await;
    // Owners dropped the revoked device from the recipients at once.
    let (_, f) = alice
        .call(send_to_devices(
            direct,
            2,
            vec![payload_for("bob", 1), payload_for("bob", 2)],
        ))
        .await;
    assert_eq!(stale_devices(&f), vec![("bob".into(), 1)]);
    let (_, f) = alice
        .call(send_to_devices(direct, 3, vec![payload_for("bob", 1)]))
        .await;
    assert!(matches!(f.body, Body::SendAck(_)), "{f:?}");
    assert_eq!(bob.delivered().await.conversation_id, direct);
    pair.check().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_behind_a_revocation_are_not_applied() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let direct = alice.create(ConversationKind::Direct, &["bob"]).await;
    let mut alice2 = link_device(&server, &mut alice).await;
    // The device revokes itself and, in the same write, keeps talking.
    let mut bodies: Vec<Body> = vec![devices::RevokeDevice { device: 2 }.into()];
    for cmid in 1..=5 {
        bodies.push(send(direct, cmid, Bytes::from_static(b"from a revoked device")).into());
    }
    bodies.push(
        conversations::CreateConversation {
            kind: ConversationKind::Group,
            members: vec!["bob".into()],
        }
        .into(),
    );
    alice2.pipeline(bodies).await;
    expect_close(&alice2.conn.connection, close::AUTH_FAILED).await;
    assert_eq!(alice.devices_of("alice").await, vec![1]);
    // Nothing the revoked device asked for after its revocation happened.
    let page = bob.history(direct, 1, 0).await;
    let from_revoked: Vec<_> = page
        .messages
        .iter()
        .filter(|m| m.sender_device == 2)
        .collect();
    assert!(
        from_revoked.is_empty(),
        "{} messages stored from revoked device alice/2: {from_revoked:?}",
        from_revoked.len()
    );
    assert_eq!(
        bob.sync_state().await.len(),
        1,
        "a group was created by a revoked device"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_ones_own_device_answers_before_closing() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let id = alice.request(devices::RevokeDevice { device: 1 }).await;
    let reply = timeout(WAIT, alice.conn.receiver.next())
        .await
        .expect("an answer or an end in time");
    match reply {
        Ok(Some(frame)) => {
            assert_eq!(frame.request_id, id);
            assert!(matches!(frame.body, Body::Done(_)), "{frame:?}");
        }
        other => panic!(
            "the revocation was applied but its answer never came: {other:?}, close reason {:?}",
            alice.conn.connection.close_reason()
        ),
    }
    expect_close(&alice.conn.connection, close::AUTH_FAILED).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_link_with_ids_of_missing_shards_is_not_found() {
    let server = TestServer::start(SHARDS);
    let mut m = Raw::register(&server, "mallory").await;
    for link_id in [0xFF << 56, u64::MAX, (SHARDS as u64) << 56, 0x80 << 56] {
        for approve in [true, false] {
            m.refused(
                devices::ApproveLink { link_id, approve },
                ErrorCode::NotFound,
            )
            .await;
        }
    }
    m.sentinel().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_link_of_an_unknown_link_is_not_found() {
    let server = TestServer::start(SHARDS);
    let mut m = Raw::register(&server, "mallory").await;
    for link_id in [0, 1, (1 << 56) | 12345] {
        m.refused(
            devices::ApproveLink {
                link_id,
                approve: true,
            },
            ErrorCode::NotFound,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_account_cannot_decide_a_link() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut mallory = Raw::register(&server, "mallory").await;
    let mut newcomer = server.raw_connection().await;
    let key = fresh_key();
    let frame = newcomer.link_frame(1, "alice", "laptop", &key).unwrap();
    newcomer.sender.frame(&frame).await.unwrap();
    let link_id = pending_link_id(&mut alice).await;
    // Mallory learned the id somehow and approves it: that decides nothing.
    let (_, f) = mallory
        .call(devices::ApproveLink {
            link_id,
            approve: true,
        })
        .await;
    assert!(
        matches!(f.body, Body::Done(_)) || code_of(&f).is_some(),
        "{f:?}"
    );
    // Alice's own decision (deny) is the one that counts.
    let (_, f) = alice
        .call(devices::ApproveLink {
            link_id,
            approve: false,
        })
        .await;
    assert!(matches!(f.body, Body::Done(_)), "{f:?}");
    assert_code(&next_frame(&mut newcomer).await, 1, ErrorCode::AuthFailed);
    assert_eq!(alice.devices_of("alice").await, vec![1]);
    assert_eq!(mallory.devices_of("mallory").await, vec![1]);
}

// ---------- the handshake ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_bodies_on_an_authenticated_connection_change_nothing() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut alice_too = alice.again(&server).await;
    let mut bob = Raw::register(&server, "bob").await;
    let direct = bob.create(ConversationKind::Direct, &["alice"]).await;
    let other_key = fresh_key();
    let register = alice
        .conn
        .register_frame(0, "alice2", "x", &other_key)
        .unwrap()
        .body;
    let authenticate = alice
        .conn
        .authenticate_frame(0, "bob", 1, &bob.key)
        .unwrap()
        .body;
    let link = alice
        .conn
        .link_frame(0, "alice", "evil", &other_key)
        .unwrap()
        .body;
    for body in [register, authenticate, link] {
        alice.refused(body, ErrorCode::AlreadyAuthenticated).await;
    }
    // Still alice, no account made, and no link prompt reached her other connection.
    assert_eq!(alice.sync_state().await.len(), 1);
    alice
        .refused(
            devices::ListDevices {
                user: "alice2".into(),
            },
            ErrorCode::NotFound,
        )
        .await;
    bob.send(direct, 1, Bytes::from_static(b"sentinel")).await;
    let next = alice_too.push().await;
    assert!(
        matches!(&next.body, Body::Deliver(m) if &m.payload[..] == b"sentinel"),
        "expected the sentinel, got {next:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_handshake_and_requests_are_all_answered() {
    let server = TestServer::start(SHARDS);
    let mut conn = server.raw_connection().await;
    let key = fresh_key();
    let register = conn.register_frame(1, "alice", "raw", &key).unwrap();
    let again = conn.register_frame(2, "alice", "raw", &key).unwrap();
    let note = conversations::CreateConversation {
        kind: ConversationKind::NoteToSelf,
        members: vec![],
    };
    let mut wire = vec![
        register.encode(),
        again.encode(),
        Frame::new(3, note).encode(),
        Frame::new(
            4,
            sync::Sync {
                all: true,
                ..Default::default()
            },
        )
        .encode(),
    ];
    conn.sender.chunks(&mut wire).await.unwrap();
    // The handshake is answered in order, before anything after it.
    let f = next_frame(&mut conn).await;
    assert!(
        matches!(f.body, Body::Registered(_)) && f.request_id == 1,
        "{f:?}"
    );
    assert_code(
        &next_frame(&mut conn).await,
        2,
        ErrorCode::AlreadyAuthenticated,
    );
    // A conversation request (owner) and a local one may be answered in
    // either order; both are answered, each to its own id.
    let mut rest = vec![next_frame(&mut conn).await, next_frame(&mut conn).await];
    rest.sort_by_key(|f| f.request_id);
    assert!(
        matches!(rest[0].body, Body::ConversationInfo(_)) && rest[0].request_id == 3,
        "{rest:?}"
    );
    assert!(
        matches!(rest[1].body, Body::SyncResult(_)) && rest[1].request_id == 4,
        "{rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_registrations_of_one_handle_have_one_winner() {
    let server = TestServer::start(SHARDS);
    let mut conns = Vec::new();
    for _ in 0..8 {
        conns.push(server.raw_connection().await);
    }
    let attempts = conns.into_iter().map(|mut conn| async move {
        let frame = conn
            .register_frame(1, "contested", "raw", &fresh_key())
            .unwrap();
        conn.sender.frame(&frame).await.unwrap();
        next_frame(&mut conn).await
    });
    let replies = futures_join_all(attempts).await;
    let won = replies
        .iter()
        .filter(|f| matches!(f.body, Body::Registered(_)))
        .count();
    assert_eq!(won, 1, "{replies:?}");
    for f in replies
        .iter()
        .filter(|f| !matches!(f.body, Body::Registered(_)))
    {
        assert_code(f, 1, ErrorCode::UserExists);
    }
}

/// Runs futures concurrently (no futures-util dependency in the tests).
async fn futures_join_all<F>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

// ---------- conversations and members ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_direct_creates_of_one_pair_return_one_conversation() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let burst = |other: &str| -> Vec<Body> {
        (0..10)
            .map(|_| {
                conversations::CreateConversation {
                    kind: ConversationKind::Direct,
                    members: vec![other.to_owned()],
                }
                .into()
            })
            .collect()
    };
    let (ids_a, ids_b) = tokio::join!(alice.pipeline(burst("bob")), bob.pipeline(burst("alice")));
    let mut conversations = Vec::new();
    let mut created = 0;
    for (raw, ids) in [(&mut alice, ids_a), (&mut bob, ids_b)] {
        for id in ids {
            match raw.reply(id).await.body {
                Body::ConversationInfo(info) => {
                    created += usize::from(info.created);
                    conversations.push(info.conversation_id);
                }
                other => panic!("create refused: {other:?}"),
            }
        }
    }
    conversations.dedup();
    assert_eq!(
        conversations.len(),
        1,
        "one pair, one conversation: {conversations:?}"
    );
    assert_eq!(created, 1);
    assert_eq!(alice.sync_state().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_conversation_with_bad_members_creates_nothing() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let _bob = Raw::register(&server, "bob").await;
    let _carol = Raw::register(&server, "carol").await;
    let create = |kind, members: Vec<String>| conversations::CreateConversation { kind, members };
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    use ConversationKind::{Direct, Group, NoteToSelf};
    let cases = [
        (create(Direct, s(&[])), ErrorCode::InvalidArgument),
        (create(Direct, s(&["alice"])), ErrorCode::InvalidArgument),
        (
            create(Direct, s(&["bob", "carol"])),
            ErrorCode::InvalidArgument,
        ),
        (create(Direct, s(&["ghost"])), ErrorCode::NotFound),
        (create(NoteToSelf, s(&["bob"])), ErrorCode::InvalidArgument),
        (create(Group, s(&["bob", "ghost"])), ErrorCode::NotFound),
        (
            create(Group, s(&["bob", "Not A Handle"])),
            ErrorCode::InvalidArgument,
        ),
        (create(Group, s(&["bob", ""])), ErrorCode::InvalidArgument),
        (
            create(Group, names("u", MAX_MEMBERS + 1)),
            ErrorCode::InvalidArgument,
        ),
    ];
    for (body, code) in cases {
        alice.refused(body, code).await;
    }
    // An unknown kind on the wire is Malformed, answered to its request.
    let mut b = FlatBufferBuilder::new();
    let members = b.create_vector::<flatbuffers::WIPOffset<&str>>(&[]);
    let body = fb::CreateConversation::create(
        &mut b,
        &fb::CreateConversationArgs {
            kind: fb::ConversationKind(99),
            members: Some(members),
        },
    )
    .as_union_value();
    let frame = fb::Frame::create(
        &mut b,
        &fb::FrameArgs {
            request_id: 77,
            body_type: fb::Body::CreateConversation,
            body: Some(body),
        },
    );
    b.finish(frame, None);
    let data = b.finished_data();
    let mut wire = u32::try_from(data.len()).unwrap().to_le_bytes().to_vec();
    wire.extend_from_slice(data);
    alice.conn.sender.raw(&wire).await.unwrap();
    assert_code(&next_frame(&mut alice.conn).await, 77, ErrorCode::Malformed);
    // No conversation came of any of it.
    assert!(alice.sync_state().await.is_empty());
    // Repeated members are one member (adding bob again is refused, and
    // removing him once leaves only alice).
    let group = alice.create(Group, &["bob", "bob", "alice"]).await;
    let bob = || vec!["bob".to_owned()];
    let add_again = conversations::AddMembers {
        conversation_id: group,
        members: bob(),
    };
    alice.refused(add_again, ErrorCode::InvalidArgument).await;
    let (_, f) = alice
        .call(conversations::RemoveMembers {
            conversation_id: group,
            members: bob(),
        })
        .await;
    assert!(
        matches!(&f.body, Body::ConversationInfo(i) if i.members == ["alice"]),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_changes_are_checked_and_removal_takes_effect_at_once() {
    let server = TestServer::start(SHARDS);
    let mut alice = Raw::register(&server, "alice").await;
    let mut bob = Raw::register(&server, "bob").await;
    let mut carol = Raw::register(&server, "carol").await;
    let group = alice
        .create(ConversationKind::Group, &["bob", "carol"])
        .await;
    let direct = alice.create(ConversationKind::Direct, &["bob"]).await;
    let add = |members: Vec<String>| conversations::AddMembers {
        conversation_id: group,
        members,
    };
    let remove = |members: Vec<String>| conversations::RemoveMembers {
        conversation_id: group,
        members,
    };
    alice.refused(add(vec![]), ErrorCode::InvalidArgument).await;
    alice
        .refused(remove(vec![]), ErrorCode::InvalidArgument)
        .await;
    alice
        .refused(add(vec!["ghost".into()]), ErrorCode::NotFound)
        .await;
    alice
        .refused(add(vec!["Not A Handle".into()]), ErrorCode::InvalidArgument)
        .await;
    alice
        .refused(add(names("u", MAX_MEMBERS + 1)), ErrorCode::InvalidArgument)
        .await;
    // Only the creator removes others; anyone may leave.
    bob.refused(remove(vec!["carol".into()]), ErrorCode::Forbidden)
        .await;
    bob.refused(
        remove(vec!["bob".into(), "carol".into()]),
        ErrorCode::Forbidden,
    )
    .await;
    let (_, f) = alice.call(remove(vec!["bob".into()])).await;
    assert!(
        matches!(&f.body, Body::ConversationInfo(i) if i.members == ["alice", "carol"]),
        "{f:?}"
    );
    // Bob is out: everything about the group is refused to him...
    bob.refused(
        send(group, 1, Bytes::from_static(b"still here?")),
        ErrorCode::NotMember,
    )
    .await;
    bob.refused(
        messaging::History {
            conversation_id: group,
            from_seq: 1,
            limit: 0,
        },
        ErrorCode::NotMember,
    )
    .await;
    bob.refused(
        messaging::Ack {
            conversation_id: group,
            seq: 0,
        },
        ErrorCode::NotMember,
    )
    .await;
    bob.refused(add(vec!["bob".into()]), ErrorCode::NotMember)
        .await;
    // ...and he gets no more of its messages: carol gets the group message,
    // then bob's next push is the sentinel in the direct conversation.
    alice.send(group, 1, Bytes::from_static(b"secret")).await;
    let m = carol.delivered().await;
    assert_eq!(&m.payload[..], b"secret");
    alice.send(direct, 2, Bytes::from_static(b"sentinel")).await;
    let m = bob.delivered().await;
    assert_eq!(
        (m.conversation_id, &m.payload[..]),
        (direct, &b"sentinel"[..])
    );
}

// ---------- server-only bodies ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_only_body_from_a_client_is_unsupported() {
    let server = TestServer::start(SHARDS);
    let mut pair = Bystanders::new(&server).await;
    let mut m = Raw::register(&server, "mallory").await;
    let message = messaging::Message {
        conversation_id: pair.conversation,
        seq: 1,
        sender_user: "bystander-a".into(),
        sender_device: 1,
        client_message_id: 1,
        server_time_ms: 0,
        expires_at_ms: 0,
        flags: 0,
        payload: Bytes::from_static(b"forged"),
    };
    let bodies: Vec<Body> = vec![
        Body::Deliver(message),
        auth::Authenticated {
            user: "bystander-a".into(),
            device: 1,
            server_time_ms: 0,
        }
        .into(),
        Body::Error(ErrorBody {
            code: ErrorCode::Internal,
            message: "forged".into(),
            retry_after_ms: 0,
        }),
        Body::Conflict(Conflict {
            error: ErrorBody {
                code: ErrorCode::StaleDevices,
                message: "forged".into(),
                retry_after_ms: 0,
            },
            current_epoch: 3,
            devices: vec![("bystander-a".into(), 1)],
        }),
        devices::LinkPrompt {
            link_id: 1,
            user: "bystander-a".into(),
            device_name: "evil".into(),
            device_key: [1; 32],
        }
        .into(),
        devices::DeviceList {
            user: "bystander-a".into(),
            devices: vec![],
        }
        .into(),
        devices::DeviceListChanged {
            user: "bystander-a".into(),
            devices: vec![1, 2],
        }
        .into(),
        prekeys::KeyCounts {
            one_time_prekeys: 1,
            key_packages: 1,
        }
        .into(),
        prekeys::PrekeyBundle {
            user: "bystander-a".into(),
            devices: vec![],
        }
        .into(),
        prekeys::KeysLow {
            one_time_prekeys: 0,
            key_packages: 0,
        }
        .into(),
        mls::KeyPackages { entries: vec![] }.into(),
        mls::CommitAccepted {
            conversation_id: pair.conversation,
            epoch: 1,
            seq: 1,
        }
        .into(),
        mls::GroupInfo {
            conversation_id: pair.conversation,
            epoch: 1,
            group_info: Bytes::from_static(b"forged"),
        }
        .into(),
    ];
    for body in bodies {
        m.refused(body, ErrorCode::UnsupportedBody).await;
    }
    m.sentinel().await;
    pair.check().await;
}

// ---------- memory and slow readers ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_without_reading_do_not_stall_others() {
    const N: u64 = 2_000;
    // This is about pipelining, not the send limits (`rate_limits.rs`).
    let server = TestServer::start_with(SHARDS, |c| {
        c.sends_per_account_burst = N as u32;
        c.sends_per_conversation_burst = N as u32;
    });
    let mut pair = Bystanders::new(&server).await;
    let mut m = Raw::register(&server, "mallory").await;
    let note = m.create(ConversationKind::NoteToSelf, &[]).await;
    let bodies: Vec<Body> = (1..=N)
        .map(|cmid| send(note, cmid, Bytes::from_static(b"flood")).into())
        .collect();
    let ids = m.pipeline(bodies).await;
    // Mallory reads nothing yet; everyone else carries on.
    pair.check().await;
    pair.check().await;
    // Then every request is answered, in order, each with its own seq.
    for (seq, id) in (1..=N).zip(ids) {
        let f = m.reply(id).await;
        assert!(
            matches!(f.body, Body::SendAck(messaging::SendAck { seq: s, duplicate: false, .. }) if s == seq),
            "{f:?}"
        );
    }
    assert_eq!(m.head(note).await, N);
}

/// A client that sends small History requests and never reads: the server
/// reserves a whole page (about 2.1 MB) of the connection's 8 MiB outbound
/// budget before it builds each one, so it builds a handful of 1 MB pages,
/// then stops reading the connection (the send queued behind the pages is
/// never applied) and closes it as too slow after `slow_reader_timeout_secs`.
/// Stated bound: the process (server and clients) grows by less than 32 MB;
/// before the byte budget it built all 64 pages (64 MB, and up to 8 GB with
/// 2 MB pages and a full frame queue).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_history_pages_are_not_buffered_without_bound() {
    let clock = Clock::manual(Clock::system().now_ms());
    let server = TestServer::start_with_clock(SHARDS, clock.clone(), |c| {
        c.slow_reader_timeout_secs = 10;
    });
    let mut pair = Bystanders::new(&server).await;
    let mut m = Raw::register(&server, "mallory").await;
    let note = m.create(ConversationKind::NoteToSelf, &[]).await;
    // Five messages of 200 kB: every History page is about 1 MB.
    const PAGE: usize = 5 * 200_000;
    for cmid in 1..=5 {
        m.send(note, cmid, Bytes::from(vec![cmid as u8; 200_000]))
            .await;
    }
    let mut watcher = m.again(&server).await;
    let before = rss_bytes();
    // 64 tiny requests (64 MB of answers), then a send, and never a read.
    const N: usize = 64;
    let mut bodies: Vec<Body> = (0..N)
        .map(|_| {
            messaging::History {
                conversation_id: note,
                from_seq: 1,
                limit: 0,
            }
            .into()
        })
        .collect();
    bodies.push(send(note, 999, Bytes::from_static(b"after the pages")).into());
    m.pipeline(bodies).await;
    for _ in 0..20 {
        assert_eq!(
            watcher.head(note).await,
            5,
            "the send behind the pages was applied"
        );
    }
    let during = rss_bytes().saturating_sub(before);
    let (moved, ()) = advance_until(
        &clock,
        2_500,
        expect_close(&m.conn.connection, close::TOO_SLOW),
    )
    .await;
    assert!(
        (10_000..=12_500).contains(&moved),
        "closed after {moved} ms of server time; the slow-reader timeout is 10 s"
    );
    // Closed while still stuck: the send queued behind the pages never ran.
    assert_eq!(watcher.head(note).await, 5);
    let after = rss_bytes().saturating_sub(before);
    eprintln!(
        "RSS growth with {N} unread pages of {} kB: {} MB while stuck, {} MB after the close",
        PAGE / 1000,
        during >> 20,
        after >> 20
    );
    assert!(
        during < 32 << 20 && after < 32 << 20,
        "the server held {} MB / {} MB for a connection that reads nothing",
        during >> 20,
        after >> 20
    );
    pair.check().await;
}

/// Registers `adder` (on its own connection) and has it create `n` groups
/// with `member`, pipelined so that neither side's window stalls.
async fn create_groups_with(server: &TestServer, adder: &str, n: usize, member: &str) {
    let raw = Raw::register(server, adder).await;
    let (_conn, mut sender, mut receiver) = raw.conn.split();
    let writer = async {
        for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
            let mut frames: Vec<Bytes> = chunk
                .iter()
                .map(|i| {
                    let create = conversations::CreateConversation {
                        kind: ConversationKind::Group,
                        members: vec![member.into()],
                    };
                    Frame::new(*i as u64 + 10, create).encode()
                })
                .collect();
            sender.chunks(&mut frames).await.unwrap();
        }
    };
    let reader = async {
        for _ in 0..n {
            let f = timeout(WAIT, receiver.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert!(matches!(f.body, Body::ConversationInfo(_)), "{f:?}");
        }
    };
    tokio::join!(writer, reader);
}

/// Issue #9 item 2: nobody is added to a group without consent, a user's
/// groups are capped, and Sync is paged, so a user in more conversations
/// than a page still syncs (and hears from friends). Small cap: 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_added_to_thousands_of_groups_can_still_sync() {
    const CAP: u32 = 502;
    let page = tern_proto::MAX_SYNC_PAGE as usize;
    let server = TestServer::start_with(SHARDS, |c| {
        c.groups_per_user = CAP;
        c.conversations_per_account_burst = 1_000;
    });
    let mut victim = server.register_private("victim").await;
    let mut mallory = Raw::register(&server, "mallory").await;
    let friend = server.register("friend").await;
    // A stranger cannot add the victim at all, and nothing is stored.
    let group = conversations::CreateConversation {
        kind: ConversationKind::Group,
        members: vec!["victim".into()],
    };
    let f = mallory
        .refused(group.clone(), ErrorCode::ConsentRequired)
        .await;
    let said = format!("{f:?}");
    assert!(
        said.contains("victim") && said.contains("invitation"),
        "{said}"
    );
    assert!(victim.sync(true).await.unwrap().is_empty(), "stored anyway");
    // With `Everyone`, anyone may: a friend's group, then exactly one page.
    victim.set_privacy(GroupAdds::Everyone).await.unwrap();
    let friends = friend
        .create_conversation(ConversationKind::Group, &["victim"])
        .await
        .unwrap()
        .id;
    create_groups_with(&server, "mallory1", page - 1, "victim").await;
    let first = victim.sync_page(true, 0, 0).await.unwrap();
    assert_eq!((first.conversations.len(), first.more), (page, false));
    // One over the page: a second page of one.
    create_groups_with(&server, "mallory2", 1, "victim").await;
    let first = victim.sync_page(true, 0, 0).await.unwrap();
    assert_eq!((first.conversations.len(), first.more), (page, true));
    let last = first.conversations.last().unwrap().conversation_id;
    let second = victim.sync_page(true, last, 0).await.unwrap();
    assert_eq!((second.conversations.len(), second.more), (1, false));
    let asked_more = victim.sync_page(true, 0, page as u32 + 1).await.unwrap();
    assert_eq!(asked_more.conversations.len(), page, "capped at the page");
    let all = victim.sync(true).await.unwrap();
    let ids: std::collections::BTreeSet<u64> = all.iter().map(|c| c.conversation_id).collect();
    assert_eq!((all.len(), ids.len()), (page + 1, page + 1));
    assert!(ids.contains(&friends));
    // The cap: at it, one more add is refused with its limit named.
    create_groups_with(&server, "mallory3", CAP as usize - page - 1, "victim").await;
    let f = mallory.refused(group, ErrorCode::LimitExceeded).await;
    let said = format!("{f:?}");
    assert!(
        said.contains("victim") && said.contains("groups_per_user = 502"),
        "{said}"
    );
    // The victim, offline meanwhile, still catches up on a friend's message.
    victim.go_offline().await;
    friend.send(friends, &b"still friends"[..]).await.unwrap();
    victim.come_online(&server).await;
    let m = victim.expect_message().await;
    assert_eq!(
        (m.conversation_id, &m.payload[..]),
        (friends, &b"still friends"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_as_too_slow() {
    // Bounded in bytes: 1 MiB here, so about ten 100 kB messages beyond what
    // QUIC's windows hold (the frame bound, 4096, is never reached).
    let server = TestServer::start_with(SHARDS, |c| c.outbound_queue_bytes = 1 << 20);
    let mut pair = Bystanders::new(&server).await;
    let mut alice = Raw::register(&server, "alice").await;
    let bob = Raw::register(&server, "bob").await;
    let direct = alice.create(ConversationKind::Direct, &["bob"]).await;
    // Bob's connection never reads; alice keeps sending 100 kB messages.
    let mut sent = 0;
    while bob.conn.connection.close_reason().is_none() {
        sent += 1;
        assert!(
            sent <= 60,
            "bob's connection was not closed after {sent} messages"
        );
        let ack = alice
            .send(direct, sent, Bytes::from(vec![7; 100_000]))
            .await;
        assert_eq!(ack.seq, sent);
    }
    expect_close(&bob.conn.connection, close::TOO_SLOW).await;
    // Alice and the bystanders never noticed; bob catches up with Sync.
    alice.sentinel().await;
    pair.check().await;
    let mut bob = Raw::authenticate(&server, "bob", 1, &bob.key).await;
    let state = bob.sync_state().await;
    assert_eq!(
        state
            .iter()
            .find(|s| s.conversation_id == direct)
            .map(|s| s.head_seq),
        Some(sent)
    );
}

/// The code of a refused SDK request.
fn sdk_code<T: std::fmt::Debug>(result: Result<T, tern_client::ClientError>) -> ErrorCode {
    result.expect_err("refused").code().expect("a server error")
}

async fn next_notice(client: &common::TestClient) -> Body {
    timeout(WAIT, client.next_notice())
        .await
        .expect("a notice in time")
        .expect("client open")
}

/// Contacts are the users someone chose: creating a conversation with A,
/// or answering A's direct conversation, lets A add you to groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_may_add_without_an_invitation() {
    let server = TestServer::start(SHARDS);
    let [alice, bob, carol, dave] =
        ["alice", "bob", "carol", "dave"].map(|u| server.register_private(u));
    let (alice, bob, carol, dave) = (alice.await, bob.await, carol.await, dave.await);
    let group = ConversationKind::Group;
    // Bob starts a direct conversation with alice: alice may add bob.
    assert_eq!(
        sdk_code(alice.create_conversation(group, &["bob"]).await),
        ErrorCode::ConsentRequired
    );
    bob.create_conversation(ConversationKind::Direct, &["alice"])
        .await
        .unwrap();
    // ...but bob may not add alice: she never chose him.
    assert_eq!(
        sdk_code(bob.create_conversation(group, &["alice"]).await),
        ErrorCode::ConsentRequired
    );
    alice.create_conversation(group, &["bob"]).await.unwrap();
    // Carol starts a direct conversation with dave; once dave answers in
    // it, carol may add dave (to a new group, or an existing one).
    let direct = carol
        .create_conversation(ConversationKind::Direct, &["dave"])
        .await
        .unwrap()
        .id;
    let carols = carol.create_conversation(group, &[]).await.unwrap().id;
    assert_eq!(
        sdk_code(carol.add_members(carols, &["dave"]).await),
        ErrorCode::ConsentRequired
    );
    dave.send(direct, &b"hi carol"[..]).await.unwrap();
    carol.add_members(carols, &["dave"]).await.unwrap();
    // Everyone lets anybody in.
    assert_eq!(
        sdk_code(dave.create_conversation(group, &["alice"]).await),
        ErrorCode::ConsentRequired
    );
    alice.set_privacy(GroupAdds::Everyone).await.unwrap();
    dave.create_conversation(group, &["alice"]).await.unwrap();
}

/// Invitations: declined ones are gone, they expire after 7 days, at most
/// 100 are kept per user (the oldest dropped), and bad requests get typed
/// errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_are_declined_expire_and_are_bounded() {
    use tern_proto::body::privacy::{INVITATION_TTL_MS, MAX_PENDING_INVITATIONS};
    let clock = Clock::manual(Clock::system().now_ms());
    let server = TestServer::start_with_clock(SHARDS, clock.clone(), |c| {
        c.invitations_per_account_burst = 200;
        c.conversations_per_account_burst = 200;
    });
    let alice = server.register_private("alice").await;
    let bob = server.register_private("bob").await;
    let _carol = server.register_private("carol").await;
    let g = alice
        .create_conversation(ConversationKind::Group, &[])
        .await
        .unwrap()
        .id;
    // Decline: the inviter hears it, the invitation is gone, no add.
    alice.invite(g, "bob").await.unwrap();
    let invited = next_notice(&bob).await;
    assert!(
        matches!(&invited, Body::Invited(i) if i.conversation_id == g && i.inviter == "alice"),
        "{invited:?}"
    );
    assert_eq!(bob.invitations().await.unwrap().len(), 1);
    bob.answer_invitation(g, false).await.unwrap();
    let answered = next_notice(&alice).await;
    assert!(
        matches!(&answered, Body::InvitationAnswered(a) if a.user == "bob" && !a.accepted),
        "{answered:?}"
    );
    assert!(bob.invitations().await.unwrap().is_empty());
    assert_eq!(
        sdk_code(alice.add_members(g, &["bob"]).await),
        ErrorCode::ConsentRequired
    );
    assert_eq!(
        sdk_code(bob.answer_invitation(g, true).await),
        ErrorCode::NotFound
    );
    // Expiry: 7 days on the server's clock.
    alice.invite(g, "bob").await.unwrap();
    clock.advance(INVITATION_TTL_MS);
    assert!(bob.invitations().await.unwrap().is_empty(), "expired");
    assert_eq!(
        sdk_code(bob.answer_invitation(g, true).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        sdk_code(alice.add_members(g, &["bob"]).await),
        ErrorCode::ConsentRequired
    );
    // Bad requests.
    let direct = alice
        .create_conversation(ConversationKind::Direct, &["carol"])
        .await
        .unwrap()
        .id;
    for (conversation, user, code) in [
        (g ^ 1, "bob", ErrorCode::NotFound),
        (direct, "bob", ErrorCode::Forbidden),
        (g, "alice", ErrorCode::InvalidArgument),
        (g, "nobody", ErrorCode::NotFound),
        (g, "Not A Handle", ErrorCode::InvalidArgument),
    ] {
        assert_eq!(
            sdk_code(alice.invite(conversation, user).await),
            code,
            "{user}"
        );
    }
    assert_eq!(sdk_code(bob.invite(g, "carol").await), ErrorCode::NotMember);
    // The bound: 101 invitations keep the newest 100.
    let mut groups = Vec::new();
    for _ in 0..=MAX_PENDING_INVITATIONS {
        let id = alice
            .create_conversation(ConversationKind::Group, &[])
            .await
            .unwrap()
            .id;
        alice.invite(id, "bob").await.unwrap();
        clock.advance(1);
        groups.push(id);
    }
    let held: Vec<u64> = bob
        .invitations()
        .await
        .unwrap()
        .iter()
        .map(|i| i.conversation_id)
        .collect();
    assert_eq!(held.len(), MAX_PENDING_INVITATIONS);
    assert_eq!(
        held[..],
        groups[1..],
        "the oldest is dropped, the rest oldest first"
    );
}

/// VmRSS and RssAnon of process `pid`, bytes: all its resident memory, and
/// the anonymous part of it (heap and stacks, without the binary's code
/// pages, which stay resident once run).
fn rss_of(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    (kb("VmRSS:"), kb("RssAnon:"))
}

/// One wave of `n` connections that complete the QUIC handshake, send one
/// request (answered `NotAuthenticated`) and never authenticate. Returns
/// the server's memory ([`rss_of`]) with all of them open, once each was
/// closed by the server with TIMEOUT.
async fn unauthenticated_wave(
    endpoints: &[quinn::Endpoint],
    server: &common::ServerProcess,
    n: usize,
) -> (u64, u64) {
    let opens = (0..n).map(|i| {
        let (endpoint, addr) = (endpoints[i % endpoints.len()].clone(), server.addr);
        async move {
            let mut conn = RawConnection::connect(&endpoint, addr, "localhost")
                .await
                .expect("handshake");
            let frame = Frame::new(
                1,
                devices::ListDevices {
                    user: "anyone".into(),
                },
            );
            conn.sender.frame(&frame).await.unwrap();
            assert_code(&next_frame(&mut conn).await, 1, ErrorCode::NotAuthenticated);
            conn
        }
    });
    let conns = futures_join_all(opens).await;
    let during = rss_of(server.pid());
    for conn in &conns {
        expect_close(&conn.connection, close::TIMEOUT).await;
    }
    during
}

/// Issue 9 item 11: waves of connections that never authenticate, against
/// the real `tern` binary (its allocator, and its trimmer: see src/trim.rs),
/// with a 1 s authentication timeout. Server memory is read before, with
/// each wave open, and after each wave (polled until back within the bound).
///
/// Stated bounds, on the server's anonymous memory (RssAnon: heap and
/// stacks; VmRSS is printed too): with a wave of 300 open it holds about
/// 12 MiB more than at the start (about 40 kB per connection); after every
/// wave it is back within 8 MiB of the start (measured: 3.5 MiB once all
/// trims are done, this debug build's fragmentation); and each wave's peak
/// is within 4 MiB of the first one's, so a leak of 7 kB per connection
/// fails. Before the trimmer it stayed at the first wave's peak (glibc
/// keeps what the shard threads freed: docs/PERFORMANCE.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connection_waves_leave_no_memory_behind() {
    const WAVES: usize = 3;
    const PER_WAVE: usize = 300;
    const BOUND: u64 = 8 << 20;
    const DRIFT: u64 = 4 << 20;
    let (_dir, data) = common::data_dir();
    let server = common::ServerProcess::spawn_with_config(&data, SHARDS, "auth_timeout_secs = 1\n");
    // Several client sockets: the server closes a whole wave at once, and
    // one socket's default receive buffer could drop some of the closes.
    let endpoints: Vec<quinn::Endpoint> = (0..8)
        .map(|_| {
            tern_client::connection::client_endpoint(
                "127.0.0.1:0".parse().unwrap(),
                &tern_client::TrustAnchor::Fingerprint(server.fingerprint),
            )
            .unwrap()
        })
        .collect();
    // One connection through the whole cycle first: one-time setup (TLS,
    // runtime, store) is not counted.
    unauthenticated_wave(&endpoints, &server, 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (rss_before, before) = rss_of(server.pid());
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut first_peak = None;
    for wave in 1..=WAVES {
        let (rss_during, during) = unauthenticated_wave(&endpoints, &server, PER_WAVE).await;
        // The trimmer reads the open connections once a second and trims
        // 1, 2, 4 and 8 s after it saw them fall (src/trim.rs): the last
        // trim can come 10 s after the close, later on a loaded machine, so
        // the memory is given the trimmer's whole schedule and as long again.
        let patience = std::time::Duration::from_secs(20);
        let started = std::time::Instant::now();
        let (mut rss_after, mut after) = rss_of(server.pid());
        while after > before + BOUND && started.elapsed() < patience {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            (rss_after, after) = rss_of(server.pid());
        }
        eprintln!(
            "wave {wave} of {PER_WAVE} unauthenticated connections, server memory \
             (anonymous / VmRSS): before {:.1} / {:.1} MiB, during {:.1} / {:.1} MiB \
             ({:.0} kB per connection), after {:.1} / {:.1} MiB ({:.1} s after the last close)",
            mib(before),
            mib(rss_before),
            mib(during),
            mib(rss_during),
            during.saturating_sub(before) as f64 / 1000.0 / PER_WAVE as f64,
            mib(after),
            mib(rss_after),
            started.elapsed().as_secs_f64()
        );
        assert!(
            after <= before + BOUND,
            "wave {wave}: the server kept {:.1} MiB after its unauthenticated connections \
             closed (bound {:.0} MiB)",
            mib(after.saturating_sub(before)),
            mib(BOUND)
        );
        let first = *first_peak.get_or_insert(during);
        assert!(
            during <= first + DRIFT,
            "wave {wave} peaked {:.1} MiB above the first: state left per connection?",
            mib(during - first)
        );
    }
    for endpoint in endpoints {
        endpoint.close(0u32.into(), b"done");
    }
}
