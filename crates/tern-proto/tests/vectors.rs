//! The wire-protocol test vectors of `docs/vectors/protocol.json`, checked
//! against the code so docs/PROTOCOL.md cannot drift from it:
//!
//! * auth: every transcript of `tern_proto::auth` (register, authenticate,
//!   link, identity-key, signed-prekey) for a fixed Ed25519 seed, exporter,
//!   user and device, and its signature (Ed25519 is deterministic);
//! * frames: one frame of every [`Body`] variant (the bodies sharing a wire
//!   table, `SendGroup`, `SendToDevices` and `Conflict`, included), with
//!   every field set: encoding the body gives exactly the vector bytes,
//!   decoding them gives the body back, and the `fields` JSON is what the
//!   generated FlatBuffers accessors read from those bytes (every field of
//!   the wire table by its schema name), so an implementation in another
//!   language can build and read the same frame;
//! * codec: a zero-length prefix, a prefix over the cap, and
//!   `peek_request_id` on a frame that fails verification.
//!
//! Adding a variant to `Body` breaks the build of this file (the
//! exhaustive match in `bodies!`); adding it to the list there without a
//! sample and a vector fails `every_body_has_a_vector`.
//!
//! Regenerate the file (after a deliberate wire change, in the same commit
//! as the code and docs/PROTOCOL.md) with
//!
//! ```text
//! cargo test -p tern-proto --test vectors -- --ignored regenerate
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use ed25519_dalek::SigningKey;
use flatbuffers::{ForwardsUOffset, Vector};
use serde_json::{json, Value};
use tern_proto::auth::{
    authenticate_transcript, identity_key_transcript, link_transcript, prekey_transcript,
    register_transcript, sign, verify, EXPORTER_LEN,
};
use tern_proto::blob_stream::{BlobRequest, Op, Response, State, Status, RESPONSE_FIXED_LEN};
use tern_proto::body::{
    auth, calls, conversations, devices, errors, messaging, mls, prekeys, presence, privacy, push,
    reach, safety, settings, sync, typing,
};
use tern_proto::codec::{peek_request_id, DEFAULT_MAX_FRAME_LEN, LEN_PREFIX};
use tern_proto::{fb, Body, Frame, FrameDecoder, FrameError, Limits};

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/vectors/protocol.json")
}

fn load() -> Value {
    let text = std::fs::read_to_string(vectors_path()).expect("docs/vectors/protocol.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn hex_of(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).expect("hex")
}

fn num(v: &Value) -> u64 {
    v.as_u64().expect("a number")
}

// ----- fixed inputs -----

const USER: &str = "alice";
const DEVICE: u32 = 1;
const PREKEY_ID: u32 = 7;

/// `first, first+1, ..., first+31`.
fn counting(first: u8) -> [u8; 32] {
    std::array::from_fn(|i| first + i as u8)
}

fn seed() -> [u8; 32] {
    counting(0x01)
}

fn exporter() -> [u8; EXPORTER_LEN] {
    counting(0x40)
}

/// A Curve25519 identity key (any 32 bytes: the transcript does not check it).
fn identity_key() -> [u8; 32] {
    counting(0x60)
}

/// A prekey public key.
fn prekey() -> [u8; 32] {
    counting(0x80)
}

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&seed())
}

fn public_key() -> [u8; 32] {
    signing_key().verifying_key().to_bytes()
}

fn signed(transcript: &[u8]) -> [u8; 64] {
    sign(&signing_key(), transcript)
}

/// The five transcripts, by their context's last word.
fn transcripts() -> Vec<(&'static str, Vec<u8>)> {
    let exporter = exporter();
    vec![
        (
            "register",
            register_transcript(&exporter, USER, &public_key()),
        ),
        (
            "authenticate",
            authenticate_transcript(&exporter, USER, DEVICE),
        ),
        ("link", link_transcript(&exporter, USER, &public_key())),
        (
            "identity-key",
            identity_key_transcript(USER, DEVICE, &identity_key()),
        ),
        (
            "signed-prekey",
            prekey_transcript(USER, DEVICE, PREKEY_ID, &prekey()),
        ),
    ]
}

fn transcript(kind: &str) -> Vec<u8> {
    transcripts()
        .into_iter()
        .find(|(k, _)| *k == kind)
        .expect("a transcript kind")
        .1
}

// ----- every body -----

/// Lists every variant of [`Body`] once: the exhaustive `match` in
/// `name_of` stops compiling when a variant is added, and `NAMES` (what
/// `every_body_has_a_vector` requires a vector for) grows with the list.
macro_rules! bodies {
    ($($variant:ident),* $(,)?) => {
        const NAMES: &[&str] = &[$(stringify!($variant)),*];

        fn name_of(body: &Body) -> &'static str {
            match body {
                $(Body::$variant(_) => stringify!($variant),)*
            }
        }
    };
}

bodies! {
    Register, Registered, Authenticate, Authenticated, CreateConversation,
    ConversationInfo, AddMembers, RemoveMembers, Send, SendAck, Deliver, Ack,
    Done, Sync, SyncResult, History, HistoryPage, Error, SendGroup,
    SendToDevices, Conflict, RequestLink, LinkPrompt, ApproveLink, ListDevices,
    DeviceList, RevokeDevice, DeviceListChanged, UploadPrekeys, KeyCounts,
    ClaimPrekeys, PrekeyBundle, KeysLow, UploadKeyPackages, ClaimKeyPackages,
    KeyPackages, Commit, CommitAccepted, GetGroupInfo, GroupInfo, SetPrivacy,
    Invite, Invited, ListInvitations, Invitations, AnswerInvitation,
    InvitationAnswered, Block, Unblock, ListBlocked, Blocked, PurgeMessage, SetTimer,
    TimerChanged, SetAdmin, ListAdmins, Admins, SetMemberAdds, GetPrivacy, Privacy,
    AcceptRequest, SetPresence, SubscribePresence, UnsubscribePresence, PresenceSnapshot,
    PresenceChanged, CountOnline, OnlineCount, SetPresenceVisibility, Typing, TypingChanged,
    GetTurnCredentials, TurnCredentials, CallSignal, CallSignalled, RegisterPush, UnregisterPush,
}

// Numbers with a distinct byte in every position (so a wrong width or byte
// order shows), all below 2^53 so any JSON reader keeps them exact.
const CONV: u64 = 0x000A_0B0C_0D0E_0F10;
const SEQ: u64 = 0x0011_1213_1415_1617;
const SEQ2: u64 = 0x0011_1213_1415_1618;
const CLIENT_ID: u64 = 0x0019_1A1B_1C1D_1E1F;
const TIME_MS: u64 = 1_700_000_123_456;
const EPOCH: u64 = 0x0000_0203_0405_0607;
const U32: u32 = 0x0A0B_0C0D;
const DEV2: u32 = 0x0102_0304;

fn b(bytes: &'static [u8]) -> Bytes {
    Bytes::from_static(bytes)
}

fn message(seq: u64, payload: &'static [u8]) -> messaging::Message {
    messaging::Message {
        conversation_id: CONV,
        seq,
        sender_user: "bob".into(),
        sender_device: DEV2,
        client_message_id: CLIENT_ID,
        server_time_ms: TIME_MS,
        expires_at_ms: TIME_MS + 86_400_000,
        // An Olm message sent under a one-day timer: the client's CLIENT_OLM
        // and the server's DISAPPEARING (PROTOCOL.md §4.6).
        flags: 0x0010_0001,
        payload: b(payload),
    }
}

fn signed_prekey(id: u32, public_key: [u8; 32]) -> prekeys::SignedPrekeyData {
    prekeys::SignedPrekeyData {
        id,
        public_key,
        signature: signed(&prekey_transcript(USER, DEVICE, id, &public_key)),
    }
}

/// One sample of every body with every field set, in the order of the
/// file, each with its request id (0 for pushes).
fn samples() -> Vec<(u64, Body)> {
    let pk = public_key();
    let members = || vec!["bob".to_owned(), "carol".to_owned()];
    vec![
        (
            1,
            auth::Register {
                user: USER.into(),
                device_name: "alice's phone".into(),
                device_key: pk,
                signature: signed(&transcript("register")),
            }
            .into(),
        ),
        (
            1,
            auth::Registered {
                user: USER.into(),
                device: DEVICE,
            }
            .into(),
        ),
        (
            2,
            auth::Authenticate {
                user: USER.into(),
                device: DEVICE,
                signature: signed(&transcript("authenticate")),
            }
            .into(),
        ),
        (
            2,
            auth::Authenticated {
                user: USER.into(),
                device: DEVICE,
                server_time_ms: TIME_MS,
            }
            .into(),
        ),
        (
            3,
            conversations::CreateConversation {
                kind: conversations::ConversationKind::Group,
                members: members(),
            }
            .into(),
        ),
        (
            3,
            conversations::ConversationInfo {
                conversation_id: CONV,
                kind: conversations::ConversationKind::NoteToSelf,
                members: members(),
                head_seq: SEQ,
                created: true,
            }
            .into(),
        ),
        (
            4,
            conversations::AddMembers {
                conversation_id: CONV,
                members: members(),
            }
            .into(),
        ),
        (
            5,
            conversations::RemoveMembers {
                conversation_id: CONV,
                members: vec!["dave".into()],
            }
            .into(),
        ),
        (
            6,
            messaging::Send {
                conversation_id: CONV,
                client_message_id: CLIENT_ID,
                expires_in_secs: 3600,
                flags: 0x0000_0102,
                payload: b(b"hello"),
            }
            .into(),
        ),
        (
            6,
            messaging::SendAck {
                conversation_id: CONV,
                seq: SEQ,
                server_time_ms: TIME_MS,
                duplicate: true,
            }
            .into(),
        ),
        (0, message(SEQ, b"\x00\x01\xfe\xff").into()),
        (
            7,
            messaging::Ack {
                conversation_id: CONV,
                seq: SEQ,
            }
            .into(),
        ),
        (7, messaging::Done.into()),
        (
            8,
            sync::Sync {
                all: true,
                after: CONV,
                limit: 500,
            }
            .into(),
        ),
        (
            8,
            sync::SyncResult {
                conversations: vec![
                    sync::ConversationState {
                        conversation_id: CONV,
                        kind: conversations::ConversationKind::Direct,
                        head_seq: SEQ2,
                        cursor: SEQ,
                        timer_secs: 0,
                        request_from: Some("bob".into()),
                    },
                    sync::ConversationState {
                        conversation_id: CONV + 1,
                        kind: conversations::ConversationKind::Group,
                        head_seq: 9,
                        cursor: 4,
                        timer_secs: 86_400,
                        request_from: None,
                    },
                ],
                more: true,
            }
            .into(),
        ),
        (
            9,
            messaging::History {
                conversation_id: CONV,
                from_seq: SEQ,
                limit: 100,
            }
            .into(),
        ),
        (
            9,
            messaging::HistoryPage {
                conversation_id: CONV,
                messages: vec![message(SEQ, b"first"), message(SEQ2, b"second")],
                head_seq: SEQ2,
                next_seq: SEQ2 + 1,
            }
            .into(),
        ),
        (
            10,
            errors::ErrorBody {
                code: fb::ErrorCode::RateLimited,
                message: "slow down".into(),
                retry_after_ms: 1500,
            }
            .into(),
        ),
        (
            11,
            messaging::SendGroup {
                conversation_id: CONV,
                client_message_id: CLIENT_ID,
                expires_in_secs: 60,
                flags: 0x0000_0004,
                epoch: EPOCH,
                payload: b(b"mls application message"),
            }
            .into(),
        ),
        (
            12,
            messaging::SendToDevices {
                conversation_id: CONV,
                client_message_id: CLIENT_ID,
                expires_in_secs: 7200,
                flags: 0x0000_0001,
                device_payloads: vec![
                    messaging::DevicePayload {
                        user: "bob".into(),
                        device: DEV2,
                        payload: b(b"olm for bob"),
                    },
                    messaging::DevicePayload {
                        user: USER.into(),
                        device: 2,
                        payload: b(b""),
                    },
                ],
            }
            .into(),
        ),
        (
            12,
            errors::Conflict {
                error: errors::ErrorBody {
                    code: fb::ErrorCode::StaleDevices,
                    message: "device set changed".into(),
                    retry_after_ms: 250,
                },
                current_epoch: EPOCH,
                devices: vec![("bob".into(), DEV2), (USER.into(), 2)],
            }
            .into(),
        ),
        (
            13,
            auth::RequestLink {
                user: USER.into(),
                device_name: "alice's laptop".into(),
                device_key: pk,
                signature: signed(&transcript("link")),
            }
            .into(),
        ),
        (
            0,
            devices::LinkPrompt {
                link_id: CLIENT_ID,
                user: USER.into(),
                device_name: "alice's laptop".into(),
                device_key: pk,
            }
            .into(),
        ),
        (
            14,
            devices::ApproveLink {
                link_id: CLIENT_ID,
                approve: true,
            }
            .into(),
        ),
        (15, devices::ListDevices { user: "bob".into() }.into()),
        (
            15,
            devices::DeviceList {
                user: USER.into(),
                devices: vec![
                    devices::DeviceInfoData {
                        device: DEVICE,
                        name: "alice's phone".into(),
                        device_key: pk,
                        created_ms: TIME_MS,
                    },
                    devices::DeviceInfoData {
                        device: 2,
                        name: "alice's laptop".into(),
                        device_key: counting(0xa0),
                        created_ms: TIME_MS + 1,
                    },
                ],
            }
            .into(),
        ),
        (16, devices::RevokeDevice { device: DEV2 }.into()),
        (
            0,
            devices::DeviceListChanged {
                user: USER.into(),
                devices: vec![DEVICE, 2, DEV2],
            }
            .into(),
        ),
        (
            17,
            prekeys::UploadPrekeys {
                identity: Some((identity_key(), signed(&transcript("identity-key")))),
                signed_prekey: Some(signed_prekey(PREKEY_ID, prekey())),
                one_time: vec![
                    prekeys::OneTimePrekeyData {
                        id: 8,
                        public_key: counting(0xc0),
                    },
                    prekeys::OneTimePrekeyData {
                        id: U32,
                        public_key: counting(0xd0),
                    },
                ],
                last_resort: Some(signed_prekey(9, counting(0xb0))),
                kem_prekey: Some(b(b"kem prekey")),
            }
            .into(),
        ),
        (
            17,
            prekeys::KeyCounts {
                one_time_prekeys: 100,
                key_packages: U32,
            }
            .into(),
        ),
        (18, prekeys::ClaimPrekeys { user: USER.into() }.into()),
        (
            18,
            prekeys::PrekeyBundle {
                user: USER.into(),
                devices: vec![prekeys::DeviceBundleData {
                    device: DEVICE,
                    device_key: pk,
                    identity_key: identity_key(),
                    identity_signature: signed(&transcript("identity-key")),
                    signed_prekey: Some(signed_prekey(PREKEY_ID, prekey())),
                    one_time_prekey: Some(prekeys::OneTimePrekeyData {
                        id: 8,
                        public_key: counting(0xc0),
                    }),
                    last_resort: Some(signed_prekey(9, counting(0xb0))),
                    kem_prekey: Some(b(b"kem prekey")),
                }],
            }
            .into(),
        ),
        (
            0,
            prekeys::KeysLow {
                one_time_prekeys: 3,
                key_packages: 2,
            }
            .into(),
        ),
        (
            19,
            mls::UploadKeyPackages {
                key_packages: vec![b(b"key package 1"), b(b"key package 2")],
                last_resort: Some(b(b"last-resort key package")),
            }
            .into(),
        ),
        (
            20,
            mls::ClaimKeyPackages {
                users: vec!["bob".into(), "carol".into()],
            }
            .into(),
        ),
        (
            20,
            mls::KeyPackages {
                entries: vec![
                    mls::ClaimedKeyPackageData {
                        user: "bob".into(),
                        device: DEV2,
                        key_package: b(b"bob's key package"),
                        last_resort: false,
                    },
                    mls::ClaimedKeyPackageData {
                        user: "carol".into(),
                        device: 1,
                        key_package: b(b"carol's last resort"),
                        last_resort: true,
                    },
                ],
            }
            .into(),
        ),
        (
            21,
            mls::Commit {
                conversation_id: CONV,
                epoch: EPOCH,
                commit: b(b"mls commit"),
                // The Welcome was sent ahead on a stage stream
                // (PROTOCOL.md §4.12.1); the commit and GroupInfo are inline.
                welcome: None,
                group_info: b(b"mls group info"),
                added: vec!["carol".into()],
                removed: vec!["dave".into()],
                staged: mls::StagedParts {
                    commit: None,
                    welcome: Some(std::array::from_fn(|i| 0xa0 + i as u8)),
                    group_info: None,
                },
            }
            .into(),
        ),
        (
            21,
            mls::CommitAccepted {
                conversation_id: CONV,
                epoch: EPOCH + 1,
                seq: SEQ,
            }
            .into(),
        ),
        (
            22,
            mls::GetGroupInfo {
                conversation_id: CONV,
            }
            .into(),
        ),
        (
            22,
            mls::GroupInfo {
                conversation_id: CONV,
                epoch: EPOCH,
                group_info: b(b"mls group info"),
            }
            .into(),
        ),
        (
            23,
            privacy::SetPrivacy::change(
                Some(privacy::GroupAdds::Everyone),
                Some(reach::DirectStarts::Contacts),
            )
            .into(),
        ),
        (35, reach::GetPrivacy.into()),
        (
            35,
            reach::Privacy {
                group_adds: privacy::GroupAdds::Everyone,
                direct_starts: reach::DirectStarts::Nobody,
            }
            .into(),
        ),
        (
            36,
            reach::AcceptRequest {
                conversation_id: CONV,
            }
            .into(),
        ),
        (
            24,
            privacy::Invite {
                conversation_id: CONV,
                user: "bob".into(),
            }
            .into(),
        ),
        (
            0,
            privacy::Invited {
                conversation_id: CONV,
                inviter: USER.into(),
            }
            .into(),
        ),
        (25, privacy::ListInvitations.into()),
        (
            25,
            privacy::Invitations {
                invitations: vec![
                    privacy::Invitation {
                        conversation_id: CONV,
                        inviter: USER.into(),
                        created_ms: TIME_MS,
                    },
                    privacy::Invitation {
                        conversation_id: CONV + 1,
                        inviter: "carol".into(),
                        created_ms: TIME_MS + 1,
                    },
                ],
            }
            .into(),
        ),
        (
            26,
            privacy::AnswerInvitation {
                conversation_id: CONV,
                accept: true,
            }
            .into(),
        ),
        (
            0,
            privacy::InvitationAnswered {
                conversation_id: CONV,
                user: "bob".into(),
                accepted: true,
            }
            .into(),
        ),
        (27, safety::Block { user: "bob".into() }.into()),
        (28, safety::Unblock { user: "bob".into() }.into()),
        (29, safety::ListBlocked.into()),
        (
            29,
            safety::Blocked {
                users: vec!["bob".into(), "carol".into()],
            }
            .into(),
        ),
        (
            30,
            safety::PurgeMessage {
                conversation_id: CONV,
                seq: SEQ,
            }
            .into(),
        ),
        (
            31,
            settings::SetTimer {
                conversation_id: CONV,
                secs: 86_400,
            }
            .into(),
        ),
        (
            0,
            settings::TimerChanged {
                conversation_id: CONV,
                secs: 86_400,
                user: USER.into(),
            }
            .into(),
        ),
        (
            32,
            settings::SetAdmin {
                conversation_id: CONV,
                user: "bob".into(),
                admin: true,
            }
            .into(),
        ),
        (
            33,
            settings::ListAdmins {
                conversation_id: CONV,
            }
            .into(),
        ),
        (
            33,
            settings::Admins {
                conversation_id: CONV,
                admins: vec![USER.into(), "bob".into()],
                everyone_adds: true,
            }
            .into(),
        ),
        (
            34,
            settings::SetMemberAdds {
                conversation_id: CONV,
                everyone: true,
            }
            .into(),
        ),
    ]
    .into_iter()
    .chain(presence_samples())
    .collect()
}

/// One frame of each presence body (docs/PROTOCOL.md §4.8).
fn presence_samples() -> Vec<(u64, Body)> {
    let away = presence::PresenceEntry {
        user: "bob".into(),
        state: presence::PresenceState::Away,
        status_text: Some("at lunch".into()),
        last_seen_ms: TIME_MS,
    };
    vec![
        (
            40,
            presence::SetPresence {
                state: presence::PresenceState::Busy,
                status_text: Some("in a meeting".into()),
            }
            .into(),
        ),
        (
            41,
            presence::SubscribePresence {
                users: vec!["bob".into(), "carol".into()],
            }
            .into(),
        ),
        (
            41,
            presence::PresenceSnapshot {
                entries: vec![away.clone(), presence::PresenceEntry::unknown("carol")],
            }
            .into(),
        ),
        (
            42,
            presence::UnsubscribePresence {
                users: vec!["carol".into()],
            }
            .into(),
        ),
        (0, presence::PresenceChanged { entry: away }.into()),
        (
            43,
            presence::CountOnline {
                conversation_id: CONV,
            }
            .into(),
        ),
        (
            43,
            presence::OnlineCount {
                conversation_id: CONV,
                online: 2,
            }
            .into(),
        ),
        (
            44,
            presence::SetPresenceVisibility {
                visibility: presence::PresenceVisibility::Nobody,
            }
            .into(),
        ),
        (
            0,
            typing::Typing {
                conversation_id: CONV,
                typing: true,
            }
            .into(),
        ),
        (
            0,
            typing::TypingChanged {
                conversation_id: CONV,
                user: "bob".into(),
                device: 2,
                typing: true,
            }
            .into(),
        ),
        (45, calls::GetTurnCredentials.into()),
        (
            45,
            calls::TurnCredentials {
                urls: vec!["turn:turn.example.org:3478".into()],
                username: "1700086400:alice".into(),
                password: "3MBsBDsxvm6pYiRbpYlDaaKp+rk=".into(),
                ttl_secs: 86_400,
            }
            .into(),
        ),
        (
            46,
            calls::CallSignal {
                conversation_id: CONV,
                device_payloads: vec![messaging::DevicePayload {
                    user: "bob".into(),
                    device: 2,
                    payload: Bytes::from_static(b"e2ee-offer"),
                }],
            }
            .into(),
        ),
        (
            0,
            calls::CallSignalled {
                signal_id: 0x0102_0304_0506,
                conversation_id: CONV,
                sender: "alice".into(),
                sender_device: 1,
                server_time_ms: 1_700_000_000_000,
                payload: Bytes::from_static(b"e2ee-offer"),
            }
            .into(),
        ),
        (
            47,
            push::RegisterPush {
                endpoint: push::PushEndpoint::WebPush {
                    url: "https://push.example.org/wake/abc".into(),
                },
            }
            .into(),
        ),
        (48, push::UnregisterPush.into()),
    ]
}

// ----- the fields on the wire, by schema name -----

fn hex_vec(v: Vector<'_, u8>) -> Value {
    json!(hex::encode(v.bytes()))
}

fn opt_hex(v: Option<Vector<'_, u8>>) -> Value {
    v.map_or(Value::Null, hex_vec)
}

fn strs(v: Vector<'_, ForwardsUOffset<&str>>) -> Value {
    json!(v.iter().collect::<Vec<_>>())
}

fn opt_strs(v: Option<Vector<'_, ForwardsUOffset<&str>>>) -> Value {
    v.map_or(Value::Null, strs)
}

fn list<'a, T: flatbuffers::Follow<'a> + 'a>(
    v: Option<Vector<'a, ForwardsUOffset<T>>>,
    f: impl Fn(T::Inner) -> Value,
) -> Value {
    v.map_or(Value::Null, |v| Value::Array(v.iter().map(f).collect()))
}

fn enum_name(name: Option<&str>, value: impl std::fmt::Debug) -> Value {
    json!(name.map_or_else(|| format!("{value:?}"), str::to_owned))
}

fn kind(k: fb::ConversationKind) -> Value {
    enum_name(k.variant_name(), k)
}

fn device_address(d: fb::DeviceAddress<'_>) -> Value {
    json!({ "user": d.user(), "device": d.device() })
}

fn message_fields(m: fb::Message<'_>) -> Value {
    json!({
        "conversation_id": m.conversation_id(),
        "seq": m.seq(),
        "sender": device_address(m.sender()),
        "client_message_id": m.client_message_id(),
        "server_time_ms": m.server_time_ms(),
        "expires_at_ms": m.expires_at_ms(),
        "flags": m.flags(),
        "payload": hex_vec(m.payload()),
    })
}

fn signed_prekey_fields(k: fb::SignedPrekey<'_>) -> Value {
    json!({
        "id": k.id(),
        "public_key": hex_vec(k.public_key()),
        "signature": hex_vec(k.signature()),
    })
}

fn one_time_prekey_fields(k: fb::OneTimePrekey<'_>) -> Value {
    json!({ "id": k.id(), "public_key": hex_vec(k.public_key()) })
}

/// Every field of the frame's body table as the generated accessors read
/// it: scalars with their value (the schema default when absent), strings,
/// vectors and tables by value or `null` when absent, byte vectors in hex,
/// enums by their schema name.
fn wire_fields(f: &fb::Frame<'_>) -> Value {
    use fb::Body as T;
    let tag = f.body_type();
    match tag {
        T::Register => {
            let r = f.body_as_register().expect("the body table");
            json!({
                "user": r.user(),
                "device_name": r.device_name(),
                "device_key": hex_vec(r.device_key()),
                "signature": hex_vec(r.signature()),
            })
        }
        T::Registered => {
            let r = f.body_as_registered().expect("the body table");
            json!({ "user": r.user(), "device": r.device() })
        }
        T::Authenticate => {
            let a = f.body_as_authenticate().expect("the body table");
            json!({
                "user": a.user(),
                "device": a.device(),
                "signature": hex_vec(a.signature()),
            })
        }
        T::Authenticated => {
            let a = f.body_as_authenticated().expect("the body table");
            json!({
                "user": a.user(),
                "device": a.device(),
                "server_time_ms": a.server_time_ms(),
            })
        }
        T::CreateConversation => {
            let c = f.body_as_create_conversation().expect("the body table");
            json!({ "kind": kind(c.kind()), "members": opt_strs(c.members()) })
        }
        T::ConversationInfo => {
            let c = f.body_as_conversation_info().expect("the body table");
            json!({
                "conversation_id": c.conversation_id(),
                "kind": kind(c.kind()),
                "members": opt_strs(c.members()),
                "head_seq": c.head_seq(),
                "created": c.created(),
            })
        }
        T::AddMembers => {
            let a = f.body_as_add_members().expect("the body table");
            json!({ "conversation_id": a.conversation_id(), "members": strs(a.members()) })
        }
        T::RemoveMembers => {
            let r = f.body_as_remove_members().expect("the body table");
            json!({ "conversation_id": r.conversation_id(), "members": strs(r.members()) })
        }
        T::Send => {
            let s = f.body_as_send().expect("the body table");
            json!({
                "conversation_id": s.conversation_id(),
                "client_message_id": s.client_message_id(),
                "expires_in_secs": s.expires_in_secs(),
                "flags": s.flags(),
                "payload": opt_hex(s.payload()),
                "device_payloads": list(s.device_payloads(), |p| json!({
                    "user": p.user(),
                    "device": p.device(),
                    "payload": hex_vec(p.payload()),
                })),
                "has_mls_epoch": s.has_mls_epoch(),
                "mls_epoch": s.mls_epoch(),
            })
        }
        T::SendAck => {
            let a = f.body_as_send_ack().expect("the body table");
            json!({
                "conversation_id": a.conversation_id(),
                "seq": a.seq(),
                "server_time_ms": a.server_time_ms(),
                "duplicate": a.duplicate(),
            })
        }
        T::Deliver => {
            let d = f.body_as_deliver().expect("the body table");
            json!({ "message": message_fields(d.message()) })
        }
        T::Ack => {
            let a = f.body_as_ack().expect("the body table");
            json!({ "conversation_id": a.conversation_id(), "seq": a.seq() })
        }
        T::Done => {
            f.body_as_done().expect("the body table");
            json!({})
        }
        T::Sync => {
            let s = f.body_as_sync().expect("the body table");
            json!({ "all": s.all(), "after": s.after(), "limit": s.limit() })
        }
        T::SyncResult => {
            let r = f.body_as_sync_result().expect("the body table");
            json!({
                "conversations": list(Some(r.conversations()), |c| json!({
                    "conversation_id": c.conversation_id(),
                    "kind": kind(c.kind()),
                    "head_seq": c.head_seq(),
                    "cursor": c.cursor(),
                    "timer_secs": c.timer_secs(),
                    "request_from": c.request_from(),
                })),
                "more": r.more(),
            })
        }
        T::History => {
            let h = f.body_as_history().expect("the body table");
            json!({
                "conversation_id": h.conversation_id(),
                "from_seq": h.from_seq(),
                "limit": h.limit(),
            })
        }
        T::HistoryPage => {
            let p = f.body_as_history_page().expect("the body table");
            json!({
                "conversation_id": p.conversation_id(),
                "messages": list(Some(p.messages()), message_fields),
                "head_seq": p.head_seq(),
                "next_seq": p.next_seq(),
            })
        }
        T::Error => {
            let e = f.body_as_error().expect("the body table");
            json!({
                "code": enum_name(e.code().variant_name(), e.code()),
                "message": e.message(),
                "retry_after_ms": e.retry_after_ms(),
                "current_epoch": e.current_epoch(),
                "devices": list(e.devices(), device_address),
            })
        }
        T::RequestLink => {
            let r = f.body_as_request_link().expect("the body table");
            json!({
                "user": r.user(),
                "device_name": r.device_name(),
                "device_key": hex_vec(r.device_key()),
                "signature": hex_vec(r.signature()),
            })
        }
        T::LinkPrompt => {
            let p = f.body_as_link_prompt().expect("the body table");
            json!({
                "link_id": p.link_id(),
                "user": p.user(),
                "device_name": p.device_name(),
                "device_key": hex_vec(p.device_key()),
            })
        }
        T::ApproveLink => {
            let a = f.body_as_approve_link().expect("the body table");
            json!({ "link_id": a.link_id(), "approve": a.approve() })
        }
        T::ListDevices => {
            let l = f.body_as_list_devices().expect("the body table");
            json!({ "user": l.user() })
        }
        T::DeviceList => {
            let l = f.body_as_device_list().expect("the body table");
            json!({
                "user": l.user(),
                "devices": list(Some(l.devices()), |d| json!({
                    "device": d.device(),
                    "name": d.name(),
                    "device_key": opt_hex(d.device_key()),
                    "created_ms": d.created_ms(),
                })),
            })
        }
        T::RevokeDevice => {
            let r = f.body_as_revoke_device().expect("the body table");
            json!({ "device": r.device() })
        }
        T::DeviceListChanged => {
            let c = f.body_as_device_list_changed().expect("the body table");
            json!({
                "user": c.user(),
                "devices": c.devices().map(|v| v.iter().collect::<Vec<_>>()),
            })
        }
        T::UploadPrekeys => {
            let u = f.body_as_upload_prekeys().expect("the body table");
            json!({
                "identity_key": opt_hex(u.identity_key()),
                "identity_signature": opt_hex(u.identity_signature()),
                "signed_prekey": u.signed_prekey().map(signed_prekey_fields),
                "one_time_prekeys": list(u.one_time_prekeys(), one_time_prekey_fields),
                "last_resort": u.last_resort().map(signed_prekey_fields),
                "kem_prekey": opt_hex(u.kem_prekey()),
            })
        }
        T::KeyCounts => {
            let c = f.body_as_key_counts().expect("the body table");
            json!({
                "one_time_prekeys": c.one_time_prekeys(),
                "key_packages": c.key_packages(),
            })
        }
        T::ClaimPrekeys => {
            let c = f.body_as_claim_prekeys().expect("the body table");
            json!({ "user": c.user() })
        }
        T::PrekeyBundle => {
            let p = f.body_as_prekey_bundle().expect("the body table");
            json!({
                "user": p.user(),
                "devices": list(Some(p.devices()), |d| json!({
                    "device": d.device(),
                    "device_key": hex_vec(d.device_key()),
                    "identity_key": hex_vec(d.identity_key()),
                    "identity_signature": hex_vec(d.identity_signature()),
                    "signed_prekey": d.signed_prekey().map(signed_prekey_fields),
                    "one_time_prekey": d.one_time_prekey().map(one_time_prekey_fields),
                    "last_resort": d.last_resort().map(signed_prekey_fields),
                    "kem_prekey": opt_hex(d.kem_prekey()),
                })),
            })
        }
        T::KeysLow => {
            let k = f.body_as_keys_low().expect("the body table");
            json!({
                "one_time_prekeys": k.one_time_prekeys(),
                "key_packages": k.key_packages(),
            })
        }
        T::UploadKeyPackages => {
            let u = f.body_as_upload_key_packages().expect("the body table");
            json!({
                "key_packages": list(u.key_packages(), |k| json!({ "data": hex_vec(k.data()) })),
                "last_resort": opt_hex(u.last_resort()),
            })
        }
        T::ClaimKeyPackages => {
            let c = f.body_as_claim_key_packages().expect("the body table");
            json!({ "users": strs(c.users()) })
        }
        T::KeyPackages => {
            let k = f.body_as_key_packages().expect("the body table");
            json!({
                "entries": list(Some(k.entries()), |e| json!({
                    "user": e.user(),
                    "device": e.device(),
                    "key_package": hex_vec(e.key_package()),
                    "last_resort": e.last_resort(),
                })),
            })
        }
        T::Commit => {
            let c = f.body_as_commit().expect("the body table");
            json!({
                "conversation_id": c.conversation_id(),
                "epoch": c.epoch(),
                "commit": hex_vec(c.commit()),
                "welcome": opt_hex(c.welcome()),
                "group_info": hex_vec(c.group_info()),
                "added": opt_strs(c.added()),
                "removed": opt_strs(c.removed()),
                "commit_stage_id": opt_hex(c.commit_stage_id()),
                "welcome_stage_id": opt_hex(c.welcome_stage_id()),
                "group_info_stage_id": opt_hex(c.group_info_stage_id()),
            })
        }
        T::CommitAccepted => {
            let c = f.body_as_commit_accepted().expect("the body table");
            json!({
                "conversation_id": c.conversation_id(),
                "epoch": c.epoch(),
                "seq": c.seq(),
            })
        }
        T::GetGroupInfo => {
            let g = f.body_as_get_group_info().expect("the body table");
            json!({ "conversation_id": g.conversation_id() })
        }
        T::GroupInfo => {
            let g = f.body_as_group_info().expect("the body table");
            json!({
                "conversation_id": g.conversation_id(),
                "epoch": g.epoch(),
                "group_info": opt_hex(g.group_info()),
            })
        }
        T::SetPrivacy => {
            let s = f.body_as_set_privacy().expect("the body table");
            let g = s.group_adds();
            json!({
                "group_adds": enum_name(g.variant_name(), g),
                "groups": s.groups().map(|g| enum_name(g.variant_name(), g)),
                "direct_starts": s.direct_starts().map(|d| enum_name(d.variant_name(), d)),
            })
        }
        T::GetPrivacy => {
            f.body_as_get_privacy().expect("the body table");
            json!({})
        }
        T::Privacy => {
            let p = f.body_as_privacy().expect("the body table");
            let (g, d) = (p.group_adds(), p.direct_starts());
            json!({
                "group_adds": enum_name(g.variant_name(), g),
                "direct_starts": enum_name(d.variant_name(), d),
            })
        }
        T::AcceptRequest => {
            let a = f.body_as_accept_request().expect("the body table");
            json!({ "conversation_id": a.conversation_id() })
        }
        T::Invite => {
            let i = f.body_as_invite().expect("the body table");
            json!({ "conversation_id": i.conversation_id(), "user": i.user() })
        }
        T::Invited => {
            let i = f.body_as_invited().expect("the body table");
            json!({ "conversation_id": i.conversation_id(), "inviter": i.inviter() })
        }
        T::ListInvitations => {
            f.body_as_list_invitations().expect("the body table");
            json!({})
        }
        T::Invitations => {
            let i = f.body_as_invitations().expect("the body table");
            json!({
                "invitations": list(Some(i.invitations()), |i| json!({
                    "conversation_id": i.conversation_id(),
                    "inviter": i.inviter(),
                    "created_ms": i.created_ms(),
                })),
            })
        }
        T::AnswerInvitation => {
            let a = f.body_as_answer_invitation().expect("the body table");
            json!({ "conversation_id": a.conversation_id(), "accept": a.accept() })
        }
        T::InvitationAnswered => {
            let a = f.body_as_invitation_answered().expect("the body table");
            json!({
                "conversation_id": a.conversation_id(),
                "user": a.user(),
                "accepted": a.accepted(),
            })
        }
        T::Block => {
            let b = f.body_as_block().expect("the body table");
            json!({ "user": b.user() })
        }
        T::Unblock => {
            let u = f.body_as_unblock().expect("the body table");
            json!({ "user": u.user() })
        }
        T::ListBlocked => {
            f.body_as_list_blocked().expect("the body table");
            json!({})
        }
        T::Blocked => {
            let b = f.body_as_blocked().expect("the body table");
            json!({ "users": strs(b.users()) })
        }
        T::SetTimer => {
            let t = f.body_as_set_timer().expect("the body table");
            json!({ "conversation_id": t.conversation_id(), "secs": t.secs() })
        }
        T::TimerChanged => {
            let t = f.body_as_timer_changed().expect("the body table");
            json!({
                "conversation_id": t.conversation_id(),
                "secs": t.secs(),
                "user": t.user(),
            })
        }
        T::SetAdmin => {
            let a = f.body_as_set_admin().expect("the body table");
            json!({
                "conversation_id": a.conversation_id(),
                "user": a.user(),
                "admin": a.admin(),
            })
        }
        T::ListAdmins => {
            let l = f.body_as_list_admins().expect("the body table");
            json!({ "conversation_id": l.conversation_id() })
        }
        T::Admins => {
            let a = f.body_as_admins().expect("the body table");
            json!({
                "conversation_id": a.conversation_id(),
                "admins": strs(a.admins()),
                "everyone_adds": a.everyone_adds(),
            })
        }
        T::SetMemberAdds => {
            let m = f.body_as_set_member_adds().expect("the body table");
            json!({ "conversation_id": m.conversation_id(), "everyone": m.everyone() })
        }
        T::SetPresence
        | T::SubscribePresence
        | T::UnsubscribePresence
        | T::PresenceSnapshot
        | T::PresenceChanged
        | T::CountOnline
        | T::OnlineCount
        | T::SetPresenceVisibility => presence_fields(f),
        T::Typing => {
            let t = f.body_as_typing().expect("the body table");
            json!({ "conversation_id": t.conversation_id(), "typing": t.typing() })
        }
        T::TypingChanged => {
            let t = f.body_as_typing_changed().expect("the body table");
            json!({
                "conversation_id": t.conversation_id(),
                "user": t.user(),
                "device": t.device(),
                "typing": t.typing(),
            })
        }
        T::GetTurnCredentials => json!({}),
        T::TurnCredentials => {
            let t = f.body_as_turn_credentials().expect("the body table");
            json!({
                "urls": strs(t.urls()),
                "username": t.username(),
                "password": t.password(),
                "ttl_secs": t.ttl_secs(),
            })
        }
        T::CallSignal => {
            let c = f.body_as_call_signal().expect("the body table");
            let payloads: Vec<Value> = c
                .device_payloads()
                .iter()
                .map(|p| {
                    json!({
                        "user": p.user(),
                        "device": p.device(),
                        "payload": hex::encode(p.payload().bytes()),
                    })
                })
                .collect();
            json!({ "conversation_id": c.conversation_id(), "device_payloads": payloads })
        }
        T::CallSignalled => {
            let c = f.body_as_call_signalled().expect("the body table");
            json!({
                "signal_id": c.signal_id(),
                "conversation_id": c.conversation_id(),
                "sender": c.sender(),
                "sender_device": c.sender_device(),
                "server_time_ms": c.server_time_ms(),
                "payload": hex::encode(c.payload().bytes()),
            })
        }
        T::RegisterPush => {
            let r = f.body_as_register_push().expect("the body table");
            json!({ "kind": r.kind().0, "url": r.url(), "token": r.token() })
        }
        T::UnregisterPush => json!({}),
        T::PurgeMessage => {
            let p = f.body_as_purge_message().expect("the body table");
            json!({ "conversation_id": p.conversation_id(), "seq": p.seq() })
        }
        other => panic!(
            "no field rendering for body tag {other:?}: add it to wire_fields (and a sample)"
        ),
    }
}

fn presence_entry(e: fb::PresenceEntry<'_>) -> Value {
    let s = e.state();
    json!({
        "user": e.user(),
        "state": enum_name(s.variant_name(), s),
        "status_text": e.status_text(),
        "last_seen_ms": e.last_seen_ms(),
    })
}

/// The wire fields of the presence bodies.
fn presence_fields(f: &fb::Frame<'_>) -> Value {
    use fb::Body as T;
    match f.body_type() {
        T::SetPresence => {
            let p = f.body_as_set_presence().expect("the body table");
            let s = p.state();
            json!({ "state": enum_name(s.variant_name(), s), "status_text": p.status_text() })
        }
        T::SubscribePresence => {
            let s = f.body_as_subscribe_presence().expect("the body table");
            json!({ "users": strs(s.users()) })
        }
        T::UnsubscribePresence => {
            let u = f.body_as_unsubscribe_presence().expect("the body table");
            json!({ "users": strs(u.users()) })
        }
        T::PresenceSnapshot => {
            let s = f.body_as_presence_snapshot().expect("the body table");
            let entries: Vec<Value> = s.entries().iter().map(presence_entry).collect();
            json!({ "entries": entries })
        }
        T::PresenceChanged => {
            let c = f.body_as_presence_changed().expect("the body table");
            json!({ "entry": presence_entry(c.entry()) })
        }
        T::CountOnline => {
            let c = f.body_as_count_online().expect("the body table");
            json!({ "conversation_id": c.conversation_id() })
        }
        T::OnlineCount => {
            let c = f.body_as_online_count().expect("the body table");
            json!({ "conversation_id": c.conversation_id(), "online": c.online() })
        }
        T::SetPresenceVisibility => {
            let v = f
                .body_as_set_presence_visibility()
                .expect("the body table")
                .visibility();
            json!({ "visibility": enum_name(v.variant_name(), v) })
        }
        other => panic!("{other:?} is not a presence body"),
    }
}

fn verified(wire: &[u8]) -> fb::Frame<'_> {
    Limits::client_inbound()
        .verify(&wire[LEN_PREFIX..])
        .expect("verifies")
}

fn frame_vector(request_id: u64, body: &Body) -> Value {
    let wire = Frame::new(request_id, body.clone()).encode();
    let frame = verified(&wire);
    let tag = frame.body_type();
    json!({
        "name": name_of(body),
        "request_id": request_id,
        "tag": tag.0,
        "table": tag.variant_name().expect("a known tag"),
        "fields": wire_fields(&frame),
        "frame": hex::encode(&wire),
    })
}

// ----- codec cases -----

/// What the decoder of the reference implementation says about a byte
/// stream: the frames it splits off, or its error.
fn split_all(wire: &[u8], max: usize) -> Result<Vec<Bytes>, FrameError> {
    let decoder = FrameDecoder::new(max);
    let mut buf = BytesMut::from(wire);
    let mut frames = Vec::new();
    while let Some(frame) = decoder.split(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

fn error_name(e: &FrameError) -> &'static str {
    match e {
        FrameError::TooLarge { .. } => "TooLarge",
        FrameError::Empty => "Empty",
        FrameError::Malformed(_) => "Malformed",
        FrameError::UnsupportedBody(_) => "UnsupportedBody",
    }
}

const PEEK_ID: u64 = 0x0001_0203_0405_0607;

/// A frame (without its prefix) that fails verification but whose request
/// id is readable: an `Ack` whose last 4 bytes (part of the body table)
/// are cut off, so the union value's offset points past the end.
fn broken_frame() -> Vec<u8> {
    let wire = Frame::new(
        PEEK_ID,
        messaging::Ack {
            conversation_id: CONV,
            seq: SEQ,
        },
    )
    .encode();
    let mut frame = wire[LEN_PREFIX..].to_vec();
    frame.truncate(frame.len() - 4);
    frame
}

fn codec_vectors() -> Value {
    let over = u32::try_from(DEFAULT_MAX_FRAME_LEN + 1).unwrap();
    let broken = broken_frame();
    let verify_error = Limits::server_inbound()
        .verify(&broken)
        .expect_err("fails verification");
    json!([
        {
            "name": "zero-length prefix",
            "max_frame_len": DEFAULT_MAX_FRAME_LEN,
            "stream": "00000000",
            "error": error_name(&FrameError::Empty),
            "wire_error_code": "Malformed",
            "note": "n = 0 is refused before any body is read; the stream is out of sync: close PROTOCOL_VIOLATION (docs/PROTOCOL.md §2)",
        },
        {
            "name": "prefix over the cap",
            "max_frame_len": DEFAULT_MAX_FRAME_LEN,
            "stream": hex::encode(over.to_le_bytes()),
            "error": error_name(&FrameError::TooLarge { len: 0, max: 0 }),
            "len": over,
            "wire_error_code": "FrameTooLarge",
            "note": "refused on the 4 prefix bytes alone, before buffering: answer Error{FrameTooLarge}, close FRAME_TOO_LARGE (docs/PROTOCOL.md §2)",
        },
        {
            "name": "request id of a frame that fails verification",
            "frame": hex::encode(&broken),
            "verify_error": error_name(&verify_error),
            "request_id": PEEK_ID,
            "note": "an Ack frame without its last 4 bytes (no length prefix): the verifier refuses it, yet Frame.request_id (root table, vtable slot 4) is in bounds; the server answers Error{Malformed} with this id (docs/PROTOCOL.md §2.1)",
        },
    ])
}

// ----- the file -----

fn generate() -> Value {
    let key = signing_key();
    let auth: Vec<Value> = transcripts()
        .into_iter()
        .map(|(kind, t)| {
            json!({
                "kind": kind,
                "context": format!("tern/1 {kind}"),
                "transcript": hex::encode(&t),
                "signature": hex::encode(sign(&key, &t)),
            })
        })
        .collect();
    let frames: Vec<Value> = samples()
        .iter()
        .map(|(id, body)| frame_vector(*id, body))
        .collect();
    json!({
        "_comment": [
            "tern wire-protocol test vectors; the protocol is specified in docs/PROTOCOL.md, the tables in schema/tern.fbs.",
            "All byte strings are lowercase hex; every number is below 2^53. Checked in CI by crates/tern-proto/tests/vectors.rs:",
            "  cargo test -p tern-proto --test vectors",
            "Regenerate after a deliberate wire change, in the same commit as the code and docs/PROTOCOL.md:",
            "  cargo test -p tern-proto --test vectors -- --ignored regenerate",
            "auth: the transcripts of docs/PROTOCOL.md §3.2 for `inputs`, each with its Ed25519 signature by the key of",
            "`ed25519_seed` (RFC 8032; deterministic). identity-key and signed-prekey transcripts use 32 zero bytes as exporter.",
            "frames: one frame of every body, `frame` being the 4-byte little-endian length prefix and the FlatBuffer.",
            "`name` is the body (SendGroup and SendToDevices are Send tables, Conflict an Error table), `tag` the Body union",
            "member, `table` its schema table, `fields` every field of that table by its schema name as a FlatBuffers",
            "reader sees it: scalars with their value (the schema default when absent), a string, vector or table that",
            "is absent as null, byte vectors in hex, enums by name. Every signature in a frame is a valid one by that key",
            "over its transcript (Register, RequestLink, UploadPrekeys' identity and prekey id 7: the auth vectors' ones);",
            "the other keys and payloads are arbitrary bytes.",
            "A decoder MUST read each `frame` into exactly `fields`. FlatBuffers does not fix one layout, so an encoder is",
            "checked by decoding its output into `fields`: tern's bytes are what the Rust flatbuffers builder writes when",
            "objects are created in the order of the body's encode() (crates/tern-proto/src/body/) and each table by flatc's",
            "generated create (fields largest first, default values omitted); another order gives other, equally valid bytes.",
            "codec: cases of the length-prefixed framing and of reading the request id of a frame that fails verification.",
            "blob_stream: request and response headers of blob streams (docs/PROTOCOL.md §4.12), `bytes` with their fields.",
        ],
        "auth": {
            "ed25519_seed": hex::encode(seed()),
            "public_key": hex::encode(public_key()),
            "inputs": {
                "exporter": hex::encode(exporter()),
                "user": USER,
                "device": DEVICE,
                "identity_key": hex::encode(identity_key()),
                "prekey_id": PREKEY_ID,
                "prekey_public_key": hex::encode(prekey()),
            },
            "transcripts": auth,
        },
        "frames": frames,
        "codec": codec_vectors(),
        "blob_stream": blob_stream_vectors(),
    })
}

/// The blob stream header cases (docs/PROTOCOL.md §4.12).
/// Named request and response samples.
type BlobStreamSamples = (
    Vec<(&'static str, BlobRequest)>,
    Vec<(&'static str, Response)>,
);

fn blob_stream_samples() -> BlobStreamSamples {
    let id: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
    let request = |op, offset, length| BlobRequest {
        op,
        blob_id: id,
        offset,
        length,
    };
    (
        vec![
            ("status", request(Op::Status, 0, 0)),
            (
                "upload resumed at 65536 of 200000",
                request(Op::Upload, 65_536, 200_000),
            ),
            (
                "download 4096 bytes from 131088",
                request(Op::Download, 131_088, 4_096),
            ),
            (
                "stage a 270000-byte handshake part",
                request(Op::Stage, 0, 270_000),
            ),
        ],
        vec![
            (
                "status: partial, 65536 held",
                Response::ok(State::Partial, 65_536),
            ),
            ("upload stored", Response::ok(State::Complete, 200_000)),
            (
                "too large",
                Response::refuse(Status::TooLarge, 104_857_600, "at most 104857600 bytes"),
            ),
            (
                "quota exceeded, 50000 bytes free",
                Response::refuse(Status::QuotaExceeded, 50_000, "50000 free"),
            ),
            (
                "rate limited, retry after 1500 ms",
                Response::refuse(Status::RateLimited, 1_500, "retry in 1500 ms"),
            ),
        ],
    )
}

fn blob_stream_vectors() -> Value {
    let (requests, responses) = blob_stream_samples();
    let requests: Vec<Value> = requests
        .iter()
        .map(|(name, r)| {
            json!({
                "name": name, "bytes": hex::encode(r.encode()), "op": r.op as u8,
                "blob_id": hex::encode(r.blob_id), "offset": r.offset, "length": r.length,
            })
        })
        .collect();
    let responses: Vec<Value> = responses
        .iter()
        .map(|(name, r)| {
            json!({
                "name": name, "bytes": hex::encode(r.encode()), "status": r.status as u8,
                "state": r.state as u8, "value": r.value, "message": r.message,
            })
        })
        .collect();
    json!({ "requests": requests, "responses": responses })
}

// ----- the checks -----

#[test]
fn auth_transcripts_and_signatures_match() {
    let v = load();
    let a = &v["auth"];
    let seed: [u8; 32] = hex_of(&a["ed25519_seed"]).try_into().unwrap();
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key().to_bytes();
    assert_eq!(hex_of(&a["public_key"]), public);
    let i = &a["inputs"];
    let exporter: [u8; 32] = hex_of(&i["exporter"]).try_into().unwrap();
    let user = i["user"].as_str().unwrap();
    let device = u32::try_from(num(&i["device"])).unwrap();
    let identity: [u8; 32] = hex_of(&i["identity_key"]).try_into().unwrap();
    let prekey_id = u32::try_from(num(&i["prekey_id"])).unwrap();
    let prekey: [u8; 32] = hex_of(&i["prekey_public_key"]).try_into().unwrap();
    let cases = a["transcripts"].as_array().unwrap();
    let kinds: Vec<&str> = cases.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "register",
            "authenticate",
            "link",
            "identity-key",
            "signed-prekey"
        ]
    );
    for case in cases {
        let kind = case["kind"].as_str().unwrap();
        let t = match kind {
            "register" => register_transcript(&exporter, user, &public),
            "authenticate" => authenticate_transcript(&exporter, user, device),
            "link" => link_transcript(&exporter, user, &public),
            "identity-key" => identity_key_transcript(user, device, &identity),
            "signed-prekey" => prekey_transcript(user, device, prekey_id, &prekey),
            other => panic!("unknown transcript kind {other}"),
        };
        assert_eq!(hex::encode(&t), case["transcript"], "{kind} transcript");
        assert!(
            t.starts_with(case["context"].as_str().unwrap().as_bytes()),
            "{kind} context"
        );
        let sig = sign(&key, &t);
        assert_eq!(hex::encode(sig), case["signature"], "{kind} signature");
        assert_eq!(verify(&public, &t, &sig), Ok(()));
    }
}

#[test]
fn frames_encode_to_the_vector_bytes_and_decode_back() {
    let v = load();
    let vectors = v["frames"].as_array().unwrap();
    let samples = samples();
    assert_eq!(vectors.len(), samples.len(), "one vector per sample");
    for (vector, (request_id, body)) in vectors.iter().zip(&samples) {
        let name = vector["name"].as_str().unwrap();
        assert_eq!(name, name_of(body), "vectors are in sample order");
        assert_eq!(num(&vector["request_id"]), *request_id, "{name} request id");
        let frame = Frame::new(*request_id, body.clone());

        // Encoding gives exactly the vector bytes, every time.
        let wire = frame.encode();
        let expected = hex_of(&vector["frame"]);
        assert_eq!(hex::encode(&wire), vector["frame"], "{name} bytes");
        assert_eq!(frame.encode(), wire, "{name} encodes deterministically");

        // The prefix is the little-endian length of the rest.
        let len = u32::from_le_bytes(expected[..LEN_PREFIX].try_into().unwrap());
        assert_eq!(len as usize, expected.len() - LEN_PREFIX, "{name} prefix");

        // Decoding the vector bytes gives the body back, under both
        // directions' limits (client-only bodies aside, a server reads them too).
        let back = Frame::decode(&expected[LEN_PREFIX..], &Limits::client_inbound())
            .unwrap_or_else(|e| panic!("{name} decodes: {e}"));
        assert_eq!(back, frame, "{name} decodes to the sample");
        assert_eq!(
            Frame::decode(&expected[LEN_PREFIX..], &Limits::server_inbound()),
            Ok(frame.clone()),
            "{name} within server limits"
        );

        // The tag, table and fields are what a FlatBuffers reader sees.
        let f = verified(&expected);
        assert_eq!(
            num(&vector["tag"]),
            u64::from(f.body_type().0),
            "{name} tag"
        );
        assert_eq!(
            vector["table"].as_str(),
            f.body_type().variant_name(),
            "{name} table"
        );
        assert_eq!(f.request_id(), *request_id);
        assert_eq!(wire_fields(&f), vector["fields"], "{name} fields");
    }
}

#[test]
fn every_body_has_a_vector() {
    let v = load();
    let vectors = v["frames"].as_array().unwrap();
    let names: Vec<&str> = vectors
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "one vector per body: {names:?}");
    let all: BTreeSet<&str> = NAMES.iter().copied().collect();
    assert_eq!(
        unique, all,
        "every Body variant needs a sample and a vector (regenerate the file)"
    );
    // Every union member of the schema is covered, so a body added to
    // schema/tern.fbs needs one too.
    let tables: BTreeSet<&str> = vectors
        .iter()
        .map(|f| f["table"].as_str().unwrap())
        .collect();
    let members: BTreeSet<&str> = fb::Body::ENUM_VALUES
        .iter()
        .filter(|t| **t != fb::Body::NONE)
        .map(|t| t.variant_name().unwrap())
        .collect();
    assert_eq!(
        tables, members,
        "a frame vector for every Body union member"
    );
    // The decoded body of each vector is the named variant.
    for vector in vectors {
        let wire = hex_of(&vector["frame"]);
        let back = Frame::decode(&wire[LEN_PREFIX..], &Limits::client_inbound()).unwrap();
        assert_eq!(name_of(&back.body), vector["name"]);
    }
}

#[test]
fn codec_cases_match() {
    let v = load();
    let cases = v["codec"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for case in &cases[..2] {
        let name = case["name"].as_str().unwrap();
        let max = usize::try_from(num(&case["max_frame_len"])).unwrap();
        let err = split_all(&hex_of(&case["stream"]), max).expect_err(name);
        assert_eq!(error_name(&err), case["error"], "{name}");
        assert_eq!(err.code().variant_name(), case["wire_error_code"].as_str());
        assert!(!err.is_recoverable(), "{name} closes the connection");
        if let FrameError::TooLarge { len, max: m } = err {
            assert_eq!(len as u64, num(&case["len"]));
            assert_eq!(m, max);
        }
    }
    let peek = &cases[2];
    let frame = hex_of(&peek["frame"]);
    assert_eq!(frame, broken_frame());
    let err = Limits::server_inbound()
        .verify(&frame)
        .expect_err("refused");
    assert_eq!(error_name(&err), peek["verify_error"]);
    assert!(Frame::decode(&frame, &Limits::server_inbound()).is_err());
    assert_eq!(peek_request_id(&frame), Some(num(&peek["request_id"])));
}

#[test]
fn blob_stream_headers_match() {
    let v = load();
    let (requests, responses) = blob_stream_samples();
    let cases = v["blob_stream"]["requests"].as_array().unwrap();
    assert_eq!(cases.len(), requests.len());
    for (case, (name, request)) in cases.iter().zip(&requests) {
        let bytes = hex_of(&case["bytes"]);
        assert_eq!(bytes, request.encode(), "{name}");
        let decoded = BlobRequest::decode(&bytes).unwrap();
        assert_eq!(decoded.op as u64, num(&case["op"]), "{name}");
        assert_eq!(hex::encode(decoded.blob_id), case["blob_id"], "{name}");
        assert_eq!(decoded.offset, num(&case["offset"]), "{name}");
        assert_eq!(decoded.length, num(&case["length"]), "{name}");
    }
    let cases = v["blob_stream"]["responses"].as_array().unwrap();
    assert_eq!(cases.len(), responses.len());
    for (case, (name, response)) in cases.iter().zip(&responses) {
        let bytes = hex_of(&case["bytes"]);
        assert_eq!(bytes, response.encode(), "{name}");
        let (fixed, len) = Response::decode_fixed(&bytes).unwrap();
        assert_eq!(fixed.status as u64, num(&case["status"]), "{name}");
        assert_eq!(fixed.state as u64, num(&case["state"]), "{name}");
        assert_eq!(fixed.value, num(&case["value"]), "{name}");
        let message = &bytes[RESPONSE_FIXED_LEN..RESPONSE_FIXED_LEN + len];
        assert_eq!(
            message,
            case["message"].as_str().unwrap().as_bytes(),
            "{name}"
        );
    }
}

#[test]
fn the_file_is_what_the_generator_writes() {
    assert_eq!(
        load(),
        generate(),
        "docs/vectors/protocol.json is stale: run the ignored `regenerate` test (see the file's header)"
    );
}

#[test]
#[ignore = "rewrites docs/vectors/protocol.json"]
fn regenerate() {
    let text = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    std::fs::write(vectors_path(), text).unwrap();
}
