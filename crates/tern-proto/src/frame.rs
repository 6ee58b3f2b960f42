//! Owned Rust forms of every frame body, with encoding to and decoding from
//! the FlatBuffers wire form. Decoding checks what the verifier cannot (key
//! and signature lengths, non-zero ids) so the server only sees sane values.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use super::codec::{FrameError, Limits};
use super::fb;
use super::keys::{
    self, ClaimedKeyPackageData, CommitBody, Conflict, DeviceBundleData, DeviceInfoData,
    DevicePayload, UploadPrekeysBody,
};

/// Kind of a conversation, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConversationKind {
    Direct,
    Group,
    NoteToSelf,
}

/// A stored message as delivered to devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub conversation_id: u64,
    pub seq: u64,
    pub sender_user: String,
    pub sender_device: u32,
    pub client_message_id: u64,
    pub server_time_ms: u64,
    pub expires_at_ms: u64,
    pub flags: u32,
    pub payload: Bytes,
}

/// One conversation's position for a device, answered by `Sync`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationState {
    pub conversation_id: u64,
    pub kind: ConversationKind,
    pub head_seq: u64,
    pub cursor: u64,
}

/// A typed error sent to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: fb::ErrorCode,
    pub message: String,
    pub retry_after_ms: u32,
}

/// Every frame body of protocol version 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    Register {
        user: String,
        device_name: String,
        device_key: [u8; 32],
        signature: [u8; 64],
    },
    Registered {
        user: String,
        device: u32,
    },
    Authenticate {
        user: String,
        device: u32,
        signature: [u8; 64],
    },
    Authenticated {
        user: String,
        device: u32,
        server_time_ms: u64,
    },
    CreateConversation {
        kind: ConversationKind,
        members: Vec<String>,
    },
    ConversationInfo {
        conversation_id: u64,
        kind: ConversationKind,
        members: Vec<String>,
        head_seq: u64,
        created: bool,
    },
    AddMembers {
        conversation_id: u64,
        members: Vec<String>,
    },
    RemoveMembers {
        conversation_id: u64,
        members: Vec<String>,
    },
    Send {
        conversation_id: u64,
        client_message_id: u64,
        expires_in_secs: u32,
        flags: u32,
        payload: Bytes,
    },
    SendAck {
        conversation_id: u64,
        seq: u64,
        server_time_ms: u64,
        duplicate: bool,
    },
    Deliver(Message),
    Ack {
        conversation_id: u64,
        seq: u64,
    },
    Done,
    Sync {
        all: bool,
    },
    SyncResult(Vec<ConversationState>),
    History {
        conversation_id: u64,
        from_seq: u64,
        limit: u32,
    },
    HistoryPage {
        conversation_id: u64,
        messages: Vec<Message>,
        head_seq: u64,
        next_seq: u64,
    },
    Error(ErrorBody),
    // ----- end-to-end encryption (see `proto::keys`) -----
    /// A `Send` of an MLS application message encrypted in `epoch`.
    SendGroup {
        conversation_id: u64,
        client_message_id: u64,
        expires_in_secs: u32,
        flags: u32,
        epoch: u64,
        payload: Bytes,
    },
    /// A `Send` with one ciphertext per recipient device.
    SendToDevices {
        conversation_id: u64,
        client_message_id: u64,
        expires_in_secs: u32,
        flags: u32,
        device_payloads: Vec<DevicePayload>,
    },
    /// An `Error` carrying the state to recover with (epoch, device set).
    Conflict(Conflict),
    RequestLink {
        user: String,
        device_name: String,
        device_key: [u8; 32],
        signature: [u8; 64],
    },
    LinkRequest {
        link_id: u64,
        user: String,
        device_name: String,
        device_key: [u8; 32],
    },
    ApproveLink {
        link_id: u64,
        approve: bool,
    },
    ListDevices {
        user: String,
    },
    DeviceList {
        user: String,
        devices: Vec<DeviceInfoData>,
    },
    RevokeDevice {
        device: u32,
    },
    DeviceListChanged {
        user: String,
        devices: Vec<u32>,
    },
    UploadPrekeys(Box<UploadPrekeysBody>),
    KeyCounts {
        one_time_prekeys: u32,
        key_packages: u32,
    },
    ClaimPrekeys {
        user: String,
    },
    PrekeyBundle {
        user: String,
        devices: Vec<DeviceBundleData>,
    },
    KeysLow {
        one_time_prekeys: u32,
        key_packages: u32,
    },
    UploadKeyPackages {
        key_packages: Vec<Bytes>,
        last_resort: Option<Bytes>,
    },
    ClaimKeyPackages {
        users: Vec<String>,
    },
    KeyPackages(Vec<ClaimedKeyPackageData>),
    Commit(Box<CommitBody>),
    CommitAccepted {
        conversation_id: u64,
        epoch: u64,
        seq: u64,
    },
    GetGroupInfo {
        conversation_id: u64,
    },
    GroupInfo {
        conversation_id: u64,
        epoch: u64,
        group_info: Bytes,
    },
}

/// One frame: a request id (0 for server pushes) and a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub request_id: u64,
    pub body: Body,
}

impl Frame {
    pub fn new(request_id: u64, body: Body) -> Self {
        Frame { request_id, body }
    }

    /// An error response to `request_id`.
    pub fn error(request_id: u64, code: fb::ErrorCode, message: impl Into<String>) -> Self {
        let body = Body::Error(ErrorBody {
            code,
            message: message.into(),
            retry_after_ms: 0,
        });
        Frame { request_id, body }
    }

    /// Encodes the frame with its little-endian u32 length prefix, ready to write.
    pub fn encode(&self) -> Bytes {
        let mut b = FlatBufferBuilder::with_capacity(self.size_hint());
        let (body_type, body) = encode_body(&mut b, &self.body);
        let frame = fb::Frame::create(
            &mut b,
            &fb::FrameArgs {
                request_id: self.request_id,
                body_type,
                body: Some(body),
            },
        );
        b.finish(frame, None);
        let data = b.finished_data();
        let mut out = bytes::BytesMut::with_capacity(data.len() + super::codec::LEN_PREFIX);
        out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_le_bytes());
        out.extend_from_slice(data);
        out.freeze()
    }

    /// Verifies and decodes one frame (without its length prefix).
    pub fn decode(buf: &[u8], limits: &Limits) -> Result<Frame, FrameError> {
        let frame = limits.verify(buf)?;
        let body = decode_body(&frame)?;
        Ok(Frame {
            request_id: frame.request_id(),
            body,
        })
    }

    fn size_hint(&self) -> usize {
        match &self.body {
            Body::Send { payload, .. } => payload.len() + 128,
            Body::Deliver(m) => m.payload.len() + 160,
            Body::HistoryPage { messages, .. } => {
                messages
                    .iter()
                    .map(|m| m.payload.len() + 160)
                    .sum::<usize>()
                    + 64
            }
            _ => 256,
        }
    }
}

type Builder<'a> = FlatBufferBuilder<'a>;
type Union = WIPOffset<flatbuffers::UnionWIPOffset>;

fn kind_to_fb(kind: ConversationKind) -> fb::ConversationKind {
    match kind {
        ConversationKind::Direct => fb::ConversationKind::Direct,
        ConversationKind::Group => fb::ConversationKind::Group,
        ConversationKind::NoteToSelf => fb::ConversationKind::NoteToSelf,
    }
}

fn kind_from_fb(kind: fb::ConversationKind) -> Result<ConversationKind, FrameError> {
    match kind {
        fb::ConversationKind::Direct => Ok(ConversationKind::Direct),
        fb::ConversationKind::Group => Ok(ConversationKind::Group),
        fb::ConversationKind::NoteToSelf => Ok(ConversationKind::NoteToSelf),
        other => Err(FrameError::Malformed(format!(
            "unknown conversation kind {}",
            other.0
        ))),
    }
}

pub(super) fn strings<'a>(
    b: &mut Builder<'a>,
    items: &[String],
) -> WIPOffset<Vector<'a, ForwardsUOffset<&'a str>>> {
    let offsets: Vec<_> = items.iter().map(|s| b.create_string(s)).collect();
    b.create_vector(&offsets)
}

fn encode_message<'a>(b: &mut Builder<'a>, m: &Message) -> WIPOffset<fb::Message<'a>> {
    let user = b.create_string(&m.sender_user);
    let sender = fb::DeviceAddress::create(
        b,
        &fb::DeviceAddressArgs {
            user: Some(user),
            device: m.sender_device,
        },
    );
    let payload = b.create_vector(&m.payload[..]);
    fb::Message::create(
        b,
        &fb::MessageArgs {
            conversation_id: m.conversation_id,
            seq: m.seq,
            sender: Some(sender),
            client_message_id: m.client_message_id,
            server_time_ms: m.server_time_ms,
            expires_at_ms: m.expires_at_ms,
            flags: m.flags,
            payload: Some(payload),
        },
    )
}

fn encode_body(b: &mut Builder<'_>, body: &Body) -> (fb::Body, Union) {
    match body {
        Body::Register { .. }
        | Body::Registered { .. }
        | Body::Authenticate { .. }
        | Body::Authenticated { .. } => encode_auth(b, body),
        Body::CreateConversation { .. }
        | Body::ConversationInfo { .. }
        | Body::AddMembers { .. }
        | Body::RemoveMembers { .. } => encode_conversation(b, body),
        _ => encode_messaging(b, body),
    }
}

fn encode_auth(b: &mut Builder<'_>, body: &Body) -> (fb::Body, Union) {
    match body {
        Body::Register {
            user,
            device_name,
            device_key,
            signature,
        } => {
            let args = fb::RegisterArgs {
                user: Some(b.create_string(user)),
                device_name: Some(b.create_string(device_name)),
                device_key: Some(b.create_vector(&device_key[..])),
                signature: Some(b.create_vector(&signature[..])),
            };
            (
                fb::Body::Register,
                fb::Register::create(b, &args).as_union_value(),
            )
        }
        Body::Registered { user, device } => {
            let args = fb::RegisteredArgs {
                user: Some(b.create_string(user)),
                device: *device,
            };
            (
                fb::Body::Registered,
                fb::Registered::create(b, &args).as_union_value(),
            )
        }
        Body::Authenticate {
            user,
            device,
            signature,
        } => {
            let args = fb::AuthenticateArgs {
                user: Some(b.create_string(user)),
                device: *device,
                signature: Some(b.create_vector(&signature[..])),
            };
            (
                fb::Body::Authenticate,
                fb::Authenticate::create(b, &args).as_union_value(),
            )
        }
        Body::Authenticated {
            user,
            device,
            server_time_ms,
        } => {
            let args = fb::AuthenticatedArgs {
                user: Some(b.create_string(user)),
                device: *device,
                server_time_ms: *server_time_ms,
            };
            (
                fb::Body::Authenticated,
                fb::Authenticated::create(b, &args).as_union_value(),
            )
        }
        _ => encode_messaging(b, body),
    }
}

fn encode_conversation(b: &mut Builder<'_>, body: &Body) -> (fb::Body, Union) {
    match body {
        Body::CreateConversation { kind, members } => {
            let args = fb::CreateConversationArgs {
                kind: kind_to_fb(*kind),
                members: Some(strings(b, members)),
            };
            (
                fb::Body::CreateConversation,
                fb::CreateConversation::create(b, &args).as_union_value(),
            )
        }
        Body::ConversationInfo {
            conversation_id,
            kind,
            members,
            head_seq,
            created,
        } => {
            let args = fb::ConversationInfoArgs {
                conversation_id: *conversation_id,
                kind: kind_to_fb(*kind),
                members: Some(strings(b, members)),
                head_seq: *head_seq,
                created: *created,
            };
            (
                fb::Body::ConversationInfo,
                fb::ConversationInfo::create(b, &args).as_union_value(),
            )
        }
        Body::AddMembers {
            conversation_id,
            members,
        } => {
            let args = fb::AddMembersArgs {
                conversation_id: *conversation_id,
                members: Some(strings(b, members)),
            };
            (
                fb::Body::AddMembers,
                fb::AddMembers::create(b, &args).as_union_value(),
            )
        }
        Body::RemoveMembers {
            conversation_id,
            members,
        } => {
            let args = fb::RemoveMembersArgs {
                conversation_id: *conversation_id,
                members: Some(strings(b, members)),
            };
            (
                fb::Body::RemoveMembers,
                fb::RemoveMembers::create(b, &args).as_union_value(),
            )
        }
        _ => encode_messaging(b, body),
    }
}

fn encode_messaging(b: &mut Builder<'_>, body: &Body) -> (fb::Body, Union) {
    match body {
        Body::Send {
            conversation_id,
            client_message_id,
            expires_in_secs,
            flags,
            payload,
        } => {
            let args = fb::SendArgs {
                conversation_id: *conversation_id,
                client_message_id: *client_message_id,
                expires_in_secs: *expires_in_secs,
                flags: *flags,
                payload: Some(b.create_vector(&payload[..])),
                device_payloads: None,
                has_mls_epoch: false,
                mls_epoch: 0,
            };
            (fb::Body::Send, fb::Send::create(b, &args).as_union_value())
        }
        Body::SendAck {
            conversation_id,
            seq,
            server_time_ms,
            duplicate,
        } => {
            let args = fb::SendAckArgs {
                conversation_id: *conversation_id,
                seq: *seq,
                server_time_ms: *server_time_ms,
                duplicate: *duplicate,
            };
            (
                fb::Body::SendAck,
                fb::SendAck::create(b, &args).as_union_value(),
            )
        }
        Body::Deliver(m) => {
            let message = Some(encode_message(b, m));
            (
                fb::Body::Deliver,
                fb::Deliver::create(b, &fb::DeliverArgs { message }).as_union_value(),
            )
        }
        Body::Ack {
            conversation_id,
            seq,
        } => {
            let args = fb::AckArgs {
                conversation_id: *conversation_id,
                seq: *seq,
            };
            (fb::Body::Ack, fb::Ack::create(b, &args).as_union_value())
        }
        Body::Done => (
            fb::Body::Done,
            fb::Done::create(b, &fb::DoneArgs {}).as_union_value(),
        ),
        _ => encode_sync(b, body),
    }
}

fn encode_sync(b: &mut Builder<'_>, body: &Body) -> (fb::Body, Union) {
    match body {
        Body::Sync { all } => (
            fb::Body::Sync,
            fb::Sync::create(b, &fb::SyncArgs { all: *all }).as_union_value(),
        ),
        Body::SyncResult(states) => {
            let items: Vec<_> = states
                .iter()
                .map(|s| {
                    let args = fb::ConversationStateArgs {
                        conversation_id: s.conversation_id,
                        kind: kind_to_fb(s.kind),
                        head_seq: s.head_seq,
                        cursor: s.cursor,
                    };
                    fb::ConversationState::create(b, &args)
                })
                .collect();
            let conversations = Some(b.create_vector(&items));
            (
                fb::Body::SyncResult,
                fb::SyncResult::create(b, &fb::SyncResultArgs { conversations }).as_union_value(),
            )
        }
        Body::History {
            conversation_id,
            from_seq,
            limit,
        } => {
            let args = fb::HistoryArgs {
                conversation_id: *conversation_id,
                from_seq: *from_seq,
                limit: *limit,
            };
            (
                fb::Body::History,
                fb::History::create(b, &args).as_union_value(),
            )
        }
        Body::HistoryPage {
            conversation_id,
            messages,
            head_seq,
            next_seq,
        } => {
            let items: Vec<_> = messages.iter().map(|m| encode_message(b, m)).collect();
            let args = fb::HistoryPageArgs {
                conversation_id: *conversation_id,
                messages: Some(b.create_vector(&items)),
                head_seq: *head_seq,
                next_seq: *next_seq,
            };
            (
                fb::Body::HistoryPage,
                fb::HistoryPage::create(b, &args).as_union_value(),
            )
        }
        Body::Error(e) => {
            let args = fb::ErrorArgs {
                code: e.code,
                message: Some(b.create_string(&e.message)),
                retry_after_ms: e.retry_after_ms,
                current_epoch: 0,
                devices: None,
            };
            (
                fb::Body::Error,
                fb::Error::create(b, &args).as_union_value(),
            )
        }
        other => match keys::encode(b, other) {
            Some(encoded) => encoded,
            // Unreachable: every variant has an encoder above or in `keys`.
            None => (
                fb::Body::Done,
                fb::Done::create(b, &fb::DoneArgs {}).as_union_value(),
            ),
        },
    }
}

pub(super) fn missing(what: &str) -> FrameError {
    FrameError::Malformed(format!(
        "the frame's {what} is missing or of the wrong type"
    ))
}

pub(super) fn fixed<const N: usize>(v: Vector<'_, u8>, what: &str) -> Result<[u8; N], FrameError> {
    <[u8; N]>::try_from(v.bytes())
        .map_err(|_| FrameError::Malformed(format!("{what} must be {N} bytes, got {}", v.len())))
}

pub(super) fn owned_strings(v: Option<Vector<'_, ForwardsUOffset<&str>>>) -> Vec<String> {
    v.map(|v| v.iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn decode_message(m: fb::Message<'_>) -> Message {
    Message {
        conversation_id: m.conversation_id(),
        seq: m.seq(),
        sender_user: m.sender().user().to_owned(),
        sender_device: m.sender().device(),
        client_message_id: m.client_message_id(),
        server_time_ms: m.server_time_ms(),
        expires_at_ms: m.expires_at_ms(),
        flags: m.flags(),
        payload: Bytes::copy_from_slice(m.payload().bytes()),
    }
}

fn decode_body(f: &fb::Frame<'_>) -> Result<Body, FrameError> {
    let t = f.body_type();
    if t == fb::Body::NONE {
        return Err(missing("body"));
    }
    if t.0 > fb::Body::ENUM_MAX {
        return Err(FrameError::UnsupportedBody(t.0));
    }
    match t {
        fb::Body::Register
        | fb::Body::Registered
        | fb::Body::Authenticate
        | fb::Body::Authenticated => decode_auth(f),
        fb::Body::CreateConversation
        | fb::Body::ConversationInfo
        | fb::Body::AddMembers
        | fb::Body::RemoveMembers => decode_conversation(f),
        _ => decode_messaging(f),
    }
}

fn decode_auth(f: &fb::Frame<'_>) -> Result<Body, FrameError> {
    match f.body_type() {
        fb::Body::Register => {
            let r = f
                .body_as_register()
                .ok_or_else(|| missing("Register body"))?;
            Ok(Body::Register {
                user: r.user().to_owned(),
                device_name: r.device_name().unwrap_or_default().to_owned(),
                device_key: fixed(r.device_key(), "device_key")?,
                signature: fixed(r.signature(), "signature")?,
            })
        }
        fb::Body::Registered => {
            let r = f
                .body_as_registered()
                .ok_or_else(|| missing("Registered body"))?;
            Ok(Body::Registered {
                user: r.user().to_owned(),
                device: r.device(),
            })
        }
        fb::Body::Authenticate => {
            let a = f
                .body_as_authenticate()
                .ok_or_else(|| missing("Authenticate body"))?;
            Ok(Body::Authenticate {
                user: a.user().to_owned(),
                device: a.device(),
                signature: fixed(a.signature(), "signature")?,
            })
        }
        _ => {
            let a = f
                .body_as_authenticated()
                .ok_or_else(|| missing("Authenticated body"))?;
            Ok(Body::Authenticated {
                user: a.user().to_owned(),
                device: a.device(),
                server_time_ms: a.server_time_ms(),
            })
        }
    }
}

fn decode_conversation(f: &fb::Frame<'_>) -> Result<Body, FrameError> {
    match f.body_type() {
        fb::Body::CreateConversation => {
            let c = f
                .body_as_create_conversation()
                .ok_or_else(|| missing("CreateConversation body"))?;
            Ok(Body::CreateConversation {
                kind: kind_from_fb(c.kind())?,
                members: owned_strings(c.members()),
            })
        }
        fb::Body::ConversationInfo => {
            let c = f
                .body_as_conversation_info()
                .ok_or_else(|| missing("ConversationInfo body"))?;
            Ok(Body::ConversationInfo {
                conversation_id: c.conversation_id(),
                kind: kind_from_fb(c.kind())?,
                members: owned_strings(c.members()),
                head_seq: c.head_seq(),
                created: c.created(),
            })
        }
        fb::Body::AddMembers => {
            let a = f
                .body_as_add_members()
                .ok_or_else(|| missing("AddMembers body"))?;
            Ok(Body::AddMembers {
                conversation_id: a.conversation_id(),
                members: owned_strings(Some(a.members())),
            })
        }
        _ => {
            let r = f
                .body_as_remove_members()
                .ok_or_else(|| missing("RemoveMembers body"))?;
            Ok(Body::RemoveMembers {
                conversation_id: r.conversation_id(),
                members: owned_strings(Some(r.members())),
            })
        }
    }
}

fn decode_messaging(f: &fb::Frame<'_>) -> Result<Body, FrameError> {
    match f.body_type() {
        fb::Body::Send => {
            let s = f.body_as_send().ok_or_else(|| missing("Send body"))?;
            if let Some(list) = s.device_payloads() {
                return Ok(keys::decode_send_to_devices(&s, list));
            }
            if s.has_mls_epoch() {
                return Ok(Body::SendGroup {
                    conversation_id: s.conversation_id(),
                    client_message_id: s.client_message_id(),
                    expires_in_secs: s.expires_in_secs(),
                    flags: s.flags(),
                    epoch: s.mls_epoch(),
                    payload: Bytes::copy_from_slice(
                        s.payload().map(|p| p.bytes()).unwrap_or_default(),
                    ),
                });
            }
            Ok(Body::Send {
                conversation_id: s.conversation_id(),
                client_message_id: s.client_message_id(),
                expires_in_secs: s.expires_in_secs(),
                flags: s.flags(),
                payload: Bytes::copy_from_slice(s.payload().map(|p| p.bytes()).unwrap_or_default()),
            })
        }
        fb::Body::SendAck => {
            let a = f
                .body_as_send_ack()
                .ok_or_else(|| missing("SendAck body"))?;
            Ok(Body::SendAck {
                conversation_id: a.conversation_id(),
                seq: a.seq(),
                server_time_ms: a.server_time_ms(),
                duplicate: a.duplicate(),
            })
        }
        fb::Body::Deliver => {
            let d = f.body_as_deliver().ok_or_else(|| missing("Deliver body"))?;
            Ok(Body::Deliver(decode_message(d.message())))
        }
        fb::Body::Ack => {
            let a = f.body_as_ack().ok_or_else(|| missing("Ack body"))?;
            Ok(Body::Ack {
                conversation_id: a.conversation_id(),
                seq: a.seq(),
            })
        }
        fb::Body::Done => Ok(Body::Done),
        _ => decode_sync(f),
    }
}

fn decode_sync(f: &fb::Frame<'_>) -> Result<Body, FrameError> {
    match f.body_type() {
        fb::Body::Sync => {
            let s = f.body_as_sync().ok_or_else(|| missing("Sync body"))?;
            Ok(Body::Sync { all: s.all() })
        }
        fb::Body::SyncResult => {
            let r = f
                .body_as_sync_result()
                .ok_or_else(|| missing("SyncResult body"))?;
            let states = r
                .conversations()
                .iter()
                .map(|s| {
                    Ok(ConversationState {
                        conversation_id: s.conversation_id(),
                        kind: kind_from_fb(s.kind())?,
                        head_seq: s.head_seq(),
                        cursor: s.cursor(),
                    })
                })
                .collect::<Result<_, FrameError>>()?;
            Ok(Body::SyncResult(states))
        }
        fb::Body::History => {
            let h = f.body_as_history().ok_or_else(|| missing("History body"))?;
            Ok(Body::History {
                conversation_id: h.conversation_id(),
                from_seq: h.from_seq(),
                limit: h.limit(),
            })
        }
        fb::Body::HistoryPage => {
            let p = f
                .body_as_history_page()
                .ok_or_else(|| missing("HistoryPage body"))?;
            Ok(Body::HistoryPage {
                conversation_id: p.conversation_id(),
                messages: p.messages().iter().map(decode_message).collect(),
                head_seq: p.head_seq(),
                next_seq: p.next_seq(),
            })
        }
        fb::Body::Error => {
            let e = f.body_as_error().ok_or_else(|| missing("Error body"))?;
            let error = ErrorBody {
                code: e.code(),
                message: e.message().unwrap_or_default().to_owned(),
                retry_after_ms: e.retry_after_ms(),
            };
            if e.current_epoch() != 0 || e.devices().is_some() {
                return Ok(keys::decode_conflict(&e, error));
            }
            Ok(Body::Error(error))
        }
        _ => keys::decode(f),
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn roundtrip(body: Body) {
        let frame = Frame::new(7, body);
        let wire = frame.encode();
        let len = u32::from_le_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
        assert_eq!(len, wire.len() - 4);
        let back = Frame::decode(&wire[4..], &Limits::client_inbound()).expect("decodes");
        assert_eq!(back, frame);
    }

    fn message() -> Message {
        Message {
            conversation_id: 9,
            seq: 3,
            sender_user: "alice".into(),
            sender_device: 2,
            client_message_id: 44,
            server_time_ms: 1000,
            expires_at_ms: 2000,
            flags: 1,
            payload: Bytes::from_static(b"ciphertext"),
        }
    }

    #[test]
    fn every_body_roundtrips() {
        let kinds = [
            ConversationKind::Direct,
            ConversationKind::Group,
            ConversationKind::NoteToSelf,
        ];
        roundtrip(Body::Register {
            user: "a".into(),
            device_name: "phone".into(),
            device_key: [1; 32],
            signature: [2; 64],
        });
        roundtrip(Body::Registered {
            user: "a".into(),
            device: 1,
        });
        roundtrip(Body::Authenticate {
            user: "a".into(),
            device: 1,
            signature: [3; 64],
        });
        roundtrip(Body::Authenticated {
            user: "a".into(),
            device: 1,
            server_time_ms: 5,
        });
        for kind in kinds {
            roundtrip(Body::CreateConversation {
                kind,
                members: vec!["b".into(), "c".into()],
            });
            roundtrip(Body::ConversationInfo {
                conversation_id: 1,
                kind,
                members: vec!["a".into()],
                head_seq: 4,
                created: true,
            });
        }
        roundtrip(Body::AddMembers {
            conversation_id: 1,
            members: vec!["x".into()],
        });
        roundtrip(Body::RemoveMembers {
            conversation_id: 1,
            members: vec!["x".into()],
        });
        roundtrip(Body::Send {
            conversation_id: 1,
            client_message_id: 2,
            expires_in_secs: 3,
            flags: 4,
            payload: Bytes::from_static(b"p"),
        });
        roundtrip(Body::SendAck {
            conversation_id: 1,
            seq: 2,
            server_time_ms: 3,
            duplicate: true,
        });
        roundtrip(Body::Deliver(message()));
        roundtrip(Body::Ack {
            conversation_id: 1,
            seq: 2,
        });
        roundtrip(Body::Done);
        roundtrip(Body::Sync { all: true });
        roundtrip(Body::SyncResult(vec![ConversationState {
            conversation_id: 1,
            kind: ConversationKind::Group,
            head_seq: 2,
            cursor: 1,
        }]));
        roundtrip(Body::History {
            conversation_id: 1,
            from_seq: 2,
            limit: 3,
        });
        roundtrip(Body::HistoryPage {
            conversation_id: 1,
            messages: vec![message(), message()],
            head_seq: 3,
            next_seq: 4,
        });
        roundtrip(Body::Error(ErrorBody {
            code: fb::ErrorCode::NotMember,
            message: "no".into(),
            retry_after_ms: 9,
        }));
    }

    #[test]
    fn every_e2ee_body_roundtrips() {
        use crate::keys::*;
        let signed = SignedPrekeyData {
            id: 1,
            public_key: [1; 32],
            signature: [2; 64],
        };
        let otk = OneTimePrekeyData {
            id: 2,
            public_key: [3; 32],
        };
        let err = ErrorBody {
            code: fb::ErrorCode::StaleDevices,
            message: "stale".into(),
            retry_after_ms: 0,
        };
        roundtrip(Body::SendGroup {
            conversation_id: 1,
            client_message_id: 2,
            expires_in_secs: 0,
            flags: 2,
            epoch: 0,
            payload: Bytes::from_static(b"mls"),
        });
        roundtrip(Body::SendToDevices {
            conversation_id: 1,
            client_message_id: 2,
            expires_in_secs: 0,
            flags: 1,
            device_payloads: vec![DevicePayload {
                user: "b".into(),
                device: 2,
                payload: Bytes::from_static(b"x"),
            }],
        });
        roundtrip(Body::Conflict(Conflict {
            error: err,
            current_epoch: 0,
            devices: vec![("b".into(), 1), ("b".into(), 3)],
        }));
        let epoch_err = ErrorBody {
            code: fb::ErrorCode::StaleEpoch,
            message: "epoch".into(),
            retry_after_ms: 0,
        };
        roundtrip(Body::Conflict(Conflict {
            error: epoch_err,
            current_epoch: 7,
            devices: vec![],
        }));
        roundtrip(Body::RequestLink {
            user: "a".into(),
            device_name: "laptop".into(),
            device_key: [4; 32],
            signature: [5; 64],
        });
        roundtrip(Body::LinkRequest {
            link_id: 9,
            user: "a".into(),
            device_name: "laptop".into(),
            device_key: [4; 32],
        });
        roundtrip(Body::ApproveLink {
            link_id: 9,
            approve: true,
        });
        roundtrip(Body::ListDevices { user: "a".into() });
        roundtrip(Body::DeviceList {
            user: "a".into(),
            devices: vec![DeviceInfoData {
                device: 1,
                name: "p".into(),
                device_key: [6; 32],
                created_ms: 5,
            }],
        });
        roundtrip(Body::RevokeDevice { device: 2 });
        roundtrip(Body::DeviceListChanged {
            user: "a".into(),
            devices: vec![1, 3],
        });
        roundtrip(Body::UploadPrekeys(Box::new(UploadPrekeysBody {
            identity: Some(([7; 32], [8; 64])),
            signed_prekey: Some(signed.clone()),
            one_time: vec![otk.clone()],
            last_resort: Some(signed.clone()),
            kem_prekey: Some(Bytes::from_static(b"kem")),
        })));
        roundtrip(Body::KeyCounts {
            one_time_prekeys: 3,
            key_packages: 4,
        });
        roundtrip(Body::KeysLow {
            one_time_prekeys: 1,
            key_packages: 0,
        });
        roundtrip(Body::ClaimPrekeys { user: "b".into() });
        roundtrip(Body::PrekeyBundle {
            user: "b".into(),
            devices: vec![DeviceBundleData {
                device: 1,
                device_key: [1; 32],
                identity_key: [2; 32],
                identity_signature: [3; 64],
                signed_prekey: Some(signed.clone()),
                one_time_prekey: Some(otk),
                last_resort: None,
                kem_prekey: None,
            }],
        });
        roundtrip(Body::UploadKeyPackages {
            key_packages: vec![Bytes::from_static(b"kp1")],
            last_resort: Some(Bytes::from_static(b"lr")),
        });
        roundtrip(Body::ClaimKeyPackages {
            users: vec!["b".into(), "c".into()],
        });
        roundtrip(Body::KeyPackages(vec![ClaimedKeyPackageData {
            user: "b".into(),
            device: 1,
            key_package: Bytes::from_static(b"kp"),
            last_resort: true,
        }]));
        roundtrip(Body::Commit(Box::new(CommitBody {
            conversation_id: 1,
            epoch: 2,
            commit: Bytes::from_static(b"c"),
            welcome: Some(Bytes::from_static(b"w")),
            group_info: Bytes::from_static(b"gi"),
            added: vec!["b".into()],
            removed: vec![],
        })));
        roundtrip(Body::CommitAccepted {
            conversation_id: 1,
            epoch: 3,
            seq: 4,
        });
        roundtrip(Body::GetGroupInfo { conversation_id: 1 });
        roundtrip(Body::GroupInfo {
            conversation_id: 1,
            epoch: 3,
            group_info: Bytes::from_static(b"gi"),
        });
    }

    #[test]
    fn wrong_key_length_is_malformed() {
        let mut b = FlatBufferBuilder::new();
        let args = fb::AuthenticateArgs {
            user: Some(b.create_string("a")),
            device: 1,
            signature: Some(b.create_vector(&[0u8; 10][..])),
        };
        let body = fb::Authenticate::create(&mut b, &args).as_union_value();
        let f = fb::Frame::create(
            &mut b,
            &fb::FrameArgs {
                request_id: 1,
                body_type: fb::Body::Authenticate,
                body: Some(body),
            },
        );
        b.finish(f, None);
        let err = Frame::decode(b.finished_data(), &Limits::server_inbound()).expect_err("rejects");
        assert!(matches!(err, FrameError::Malformed(_)), "{err:?}");
    }

    #[test]
    fn unknown_union_tag_is_unsupported() {
        let mut b = FlatBufferBuilder::new();
        let body = fb::Done::create(&mut b, &fb::DoneArgs {}).as_union_value();
        let f = fb::Frame::create(
            &mut b,
            &fb::FrameArgs {
                request_id: 1,
                body_type: fb::Body(200),
                body: Some(body),
            },
        );
        b.finish(f, None);
        let err = Frame::decode(b.finished_data(), &Limits::server_inbound()).expect_err("rejects");
        assert_eq!(err, FrameError::UnsupportedBody(200));
    }

    #[test]
    fn missing_body_is_malformed() {
        let mut b = FlatBufferBuilder::new();
        let f = fb::Frame::create(
            &mut b,
            &fb::FrameArgs {
                request_id: 1,
                body_type: fb::Body::NONE,
                body: None,
            },
        );
        b.finish(f, None);
        let err = Frame::decode(b.finished_data(), &Limits::server_inbound()).expect_err("rejects");
        assert!(matches!(err, FrameError::Malformed(_)));
    }
}
