//! Messages: the three forms of a send (one ciphertext for everyone, an MLS
//! application message of one epoch, one ciphertext per device) and their
//! [`SendAck`], the pushed [`Message`] (`Deliver` on the wire), the cursor
//! [`Ack`], the empty [`Done`] answer, and paging through [`History`].
//!
//! `Send` shares its name with the std marker trait: write
//! `messaging::Send`, never glob-import this module.

use bytes::Bytes;
use flatbuffers::WIPOffset;

use crate::body::{Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// A message for a conversation, one ciphertext for every device.
/// `client_message_id` is non-zero and retries reuse it (stored once);
/// `expires_in_secs` 0 is the server default (30 days, also the cap);
/// `flags` are the client's kind flags (low 16 bits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Send {
    pub conversation_id: u64,
    pub client_message_id: u64,
    pub expires_in_secs: u32,
    pub flags: u32,
    pub payload: Bytes,
}

impl WireBody for Send {
    const TAG: fb::Body = fb::Body::Send;
    type Table<'a> = fb::Send<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::SendArgs {
            conversation_id: self.conversation_id,
            client_message_id: self.client_message_id,
            expires_in_secs: self.expires_in_secs,
            flags: self.flags,
            payload: Some(b.create_vector(&self.payload[..])),
            device_payloads: None,
            has_mls_epoch: false,
            mls_epoch: 0,
        };
        fb::Send::create(b, &args).as_union_value()
    }

    fn decode(s: fb::Send<'_>) -> Result<Self, FrameError> {
        Ok(Send {
            conversation_id: s.conversation_id(),
            client_message_id: s.client_message_id(),
            expires_in_secs: s.expires_in_secs(),
            flags: s.flags(),
            payload: one_payload(&s)?,
        })
    }
}

impl Request for Send {
    type Response = SendAck;
}

/// A `Send` of an MLS application message encrypted in `epoch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendGroup {
    pub conversation_id: u64,
    pub client_message_id: u64,
    pub expires_in_secs: u32,
    pub flags: u32,
    pub epoch: u64,
    pub payload: Bytes,
}

impl WireBody for SendGroup {
    const TAG: fb::Body = fb::Body::Send;
    type Table<'a> = fb::Send<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::SendArgs {
            conversation_id: self.conversation_id,
            client_message_id: self.client_message_id,
            expires_in_secs: self.expires_in_secs,
            flags: self.flags,
            payload: Some(b.create_vector(&self.payload[..])),
            device_payloads: None,
            has_mls_epoch: true,
            mls_epoch: self.epoch,
        };
        fb::Send::create(b, &args).as_union_value()
    }

    fn decode(s: fb::Send<'_>) -> Result<Self, FrameError> {
        Ok(SendGroup {
            conversation_id: s.conversation_id(),
            client_message_id: s.client_message_id(),
            expires_in_secs: s.expires_in_secs(),
            flags: s.flags(),
            epoch: s.mls_epoch(),
            payload: one_payload(&s)?,
        })
    }
}

/// The one ciphertext of a `Send` for every device: `payload` present (it
/// may be empty) and no `device_payloads`. Anything else is `Malformed`
/// (docs/PROTOCOL.md §4.2).
fn one_payload(s: &fb::Send<'_>) -> Result<Bytes, FrameError> {
    match (s.payload(), s.device_payloads()) {
        (Some(payload), None) => Ok(Bytes::copy_from_slice(payload.bytes())),
        (Some(_), Some(_)) => Err(FrameError::Malformed(
            "a Send carries payload or device_payloads, not both".to_owned(),
        )),
        (None, _) => Err(FrameError::Malformed(
            "a Send carries payload (one ciphertext) or device_payloads (one per device)"
                .to_owned(),
        )),
    }
}

impl Request for SendGroup {
    type Response = SendAck;
}

/// One recipient device's ciphertext. An empty `payload` means "no
/// ciphertext for this device": the sender could not encrypt to it (it has
/// published no keys), and the device receives the message with an empty
/// payload, as it does for messages sent before it existed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevicePayload {
    pub user: String,
    pub device: u32,
    pub payload: Bytes,
}

impl DevicePayload {
    pub(crate) fn encode<'a>(&self, b: &mut Builder<'a>) -> WIPOffset<fb::DevicePayload<'a>> {
        let args = fb::DevicePayloadArgs {
            user: Some(b.create_string(&self.user)),
            device: self.device,
            payload: Some(b.create_vector(&self.payload[..])),
        };
        fb::DevicePayload::create(b, &args)
    }

    pub(crate) fn decode(p: fb::DevicePayload<'_>) -> Self {
        DevicePayload {
            user: p.user().to_owned(),
            device: p.device(),
            payload: Bytes::copy_from_slice(p.payload().bytes()),
        }
    }
}

/// A `Send` with one ciphertext per recipient device: it must name exactly
/// every current device of every member except the sending device, else
/// the server refuses it with the current set (a `Conflict`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendToDevices {
    pub conversation_id: u64,
    pub client_message_id: u64,
    pub expires_in_secs: u32,
    pub flags: u32,
    pub device_payloads: Vec<DevicePayload>,
}

impl WireBody for SendToDevices {
    const TAG: fb::Body = fb::Body::Send;
    type Table<'a> = fb::Send<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let items: Vec<_> = self.device_payloads.iter().map(|p| p.encode(b)).collect();
        let args = fb::SendArgs {
            conversation_id: self.conversation_id,
            client_message_id: self.client_message_id,
            expires_in_secs: self.expires_in_secs,
            flags: self.flags,
            payload: None,
            device_payloads: Some(b.create_vector(&items)),
            has_mls_epoch: false,
            mls_epoch: 0,
        };
        fb::Send::create(b, &args).as_union_value()
    }

    fn decode(s: fb::Send<'_>) -> Result<Self, FrameError> {
        if s.payload().is_some() || s.has_mls_epoch() {
            return Err(FrameError::Malformed(
                "a Send with device_payloads carries no payload and no MLS epoch".to_owned(),
            ));
        }
        let device_payloads = s
            .device_payloads()
            .map(|list| list.iter().map(DevicePayload::decode).collect())
            .unwrap_or_default();
        Ok(SendToDevices {
            conversation_id: s.conversation_id(),
            client_message_id: s.client_message_id(),
            expires_in_secs: s.expires_in_secs(),
            flags: s.flags(),
            device_payloads,
        })
    }
}

impl Request for SendToDevices {
    type Response = SendAck;
}

/// A message is durably stored at `(conversation_id, seq)`; `duplicate`
/// when this `client_message_id` was already stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendAck {
    pub conversation_id: u64,
    pub seq: u64,
    pub server_time_ms: u64,
    pub duplicate: bool,
}

impl WireBody for SendAck {
    const TAG: fb::Body = fb::Body::SendAck;
    type Table<'a> = fb::SendAck<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::SendAckArgs {
            conversation_id: self.conversation_id,
            seq: self.seq,
            server_time_ms: self.server_time_ms,
            duplicate: self.duplicate,
        };
        fb::SendAck::create(b, &args).as_union_value()
    }

    fn decode(a: fb::SendAck<'_>) -> Result<Self, FrameError> {
        Ok(SendAck {
            conversation_id: a.conversation_id(),
            seq: a.seq(),
            server_time_ms: a.server_time_ms(),
            duplicate: a.duplicate(),
        })
    }
}

/// A stored message as delivered to devices: the body of a `Deliver` push,
/// and the entries of a [`HistoryPage`].
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

impl Message {
    fn encode_table<'a>(&self, b: &mut Builder<'a>) -> WIPOffset<fb::Message<'a>> {
        let user = b.create_string(&self.sender_user);
        let sender = fb::DeviceAddress::create(
            b,
            &fb::DeviceAddressArgs {
                user: Some(user),
                device: self.sender_device,
            },
        );
        let payload = b.create_vector(&self.payload[..]);
        fb::Message::create(
            b,
            &fb::MessageArgs {
                conversation_id: self.conversation_id,
                seq: self.seq,
                sender: Some(sender),
                client_message_id: self.client_message_id,
                server_time_ms: self.server_time_ms,
                expires_at_ms: self.expires_at_ms,
                flags: self.flags,
                payload: Some(payload),
            },
        )
    }

    fn decode_table(m: fb::Message<'_>) -> Message {
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
}

/// On the wire a `Deliver` table holding one `Message`.
impl WireBody for Message {
    const TAG: fb::Body = fb::Body::Deliver;
    type Table<'a> = fb::Deliver<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let message = Some(self.encode_table(b));
        fb::Deliver::create(b, &fb::DeliverArgs { message }).as_union_value()
    }

    fn decode(d: fb::Deliver<'_>) -> Result<Self, FrameError> {
        Ok(Message::decode_table(d.message()))
    }
}

/// Advances this device's cursor in a conversation (monotonic: lower is
/// ignored); answered by [`Done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub conversation_id: u64,
    pub seq: u64,
}

impl WireBody for Ack {
    const TAG: fb::Body = fb::Body::Ack;
    type Table<'a> = fb::Ack<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::AckArgs {
            conversation_id: self.conversation_id,
            seq: self.seq,
        };
        fb::Ack::create(b, &args).as_union_value()
    }

    fn decode(a: fb::Ack<'_>) -> Result<Self, FrameError> {
        Ok(Ack {
            conversation_id: a.conversation_id(),
            seq: a.seq(),
        })
    }
}

impl Request for Ack {
    type Response = Done;
}

/// The empty answer: the request was applied and there is nothing to report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Done;

impl WireBody for Done {
    const TAG: fb::Body = fb::Body::Done;
    type Table<'a> = fb::Done<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        fb::Done::create(b, &fb::DoneArgs {}).as_union_value()
    }

    fn decode(_: fb::Done<'_>) -> Result<Self, FrameError> {
        Ok(Done)
    }
}

/// A page of a conversation: messages with seq in `[from_seq,
/// from_seq+limit)`, skipping expired ones. `limit` 0 is the server default;
/// the server caps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    pub conversation_id: u64,
    pub from_seq: u64,
    pub limit: u32,
}

impl WireBody for History {
    const TAG: fb::Body = fb::Body::History;
    type Table<'a> = fb::History<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::HistoryArgs {
            conversation_id: self.conversation_id,
            from_seq: self.from_seq,
            limit: self.limit,
        };
        fb::History::create(b, &args).as_union_value()
    }

    fn decode(h: fb::History<'_>) -> Result<Self, FrameError> {
        Ok(History {
            conversation_id: h.conversation_id(),
            from_seq: h.from_seq(),
            limit: h.limit(),
        })
    }
}

impl Request for History {
    type Response = HistoryPage;
}

/// The answer to [`History`]; `next_seq` is the first seq not covered by
/// this page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryPage {
    pub conversation_id: u64,
    pub messages: Vec<Message>,
    pub head_seq: u64,
    pub next_seq: u64,
}

impl WireBody for HistoryPage {
    const TAG: fb::Body = fb::Body::HistoryPage;
    type Table<'a> = fb::HistoryPage<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let items: Vec<_> = self.messages.iter().map(|m| m.encode_table(b)).collect();
        let args = fb::HistoryPageArgs {
            conversation_id: self.conversation_id,
            messages: Some(b.create_vector(&items)),
            head_seq: self.head_seq,
            next_seq: self.next_seq,
        };
        fb::HistoryPage::create(b, &args).as_union_value()
    }

    fn decode(p: fb::HistoryPage<'_>) -> Result<Self, FrameError> {
        Ok(HistoryPage {
            conversation_id: p.conversation_id(),
            messages: p.messages().iter().map(Message::decode_table).collect(),
            head_seq: p.head_seq(),
            next_seq: p.next_seq(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use bytes::Bytes;

    // No glob import: `Send` would shadow the std marker trait.
    use super::{
        Ack, DevicePayload, Done, History, HistoryPage, Message, SendAck, SendGroup, SendToDevices,
    };
    use crate::body::Builder;
    use crate::fb;
    use crate::frame::Body;

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

    /// One of each body of this family (all three forms of a send).
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            super::Send {
                conversation_id: 1,
                client_message_id: 2,
                expires_in_secs: 3,
                flags: 4,
                payload: Bytes::from_static(b"p"),
            }
            .into(),
            SendAck {
                conversation_id: 1,
                seq: 2,
                server_time_ms: 3,
                duplicate: true,
            }
            .into(),
            message().into(),
            Ack {
                conversation_id: 1,
                seq: 2,
            }
            .into(),
            Done.into(),
            History {
                conversation_id: 1,
                from_seq: 2,
                limit: 3,
            }
            .into(),
            HistoryPage {
                conversation_id: 1,
                messages: vec![message(), message()],
                head_seq: 3,
                next_seq: 4,
            }
            .into(),
            SendGroup {
                conversation_id: 1,
                client_message_id: 2,
                expires_in_secs: 0,
                flags: 2,
                epoch: 0,
                payload: Bytes::from_static(b"mls"),
            }
            .into(),
            SendToDevices {
                conversation_id: 1,
                client_message_id: 2,
                expires_in_secs: 0,
                flags: 1,
                device_payloads: vec![DevicePayload {
                    user: "b".into(),
                    device: 2,
                    payload: Bytes::from_static(b"x"),
                }],
            }
            .into(),
        ]
    }

    #[test]
    fn messaging_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }

    fn send_frame(payload: bool, device_payloads: bool) -> Vec<u8> {
        let mut b = Builder::new();
        let bytes = b.create_vector(&[1u8, 2, 3]);
        let user = b.create_string("bob");
        let one = fb::DevicePayload::create(
            &mut b,
            &fb::DevicePayloadArgs {
                user: Some(user),
                device: 1,
                payload: Some(bytes),
            },
        );
        let list = b.create_vector(&[one]);
        let args = fb::SendArgs {
            conversation_id: 1,
            client_message_id: 2,
            payload: payload.then_some(bytes),
            device_payloads: device_payloads.then_some(list),
            ..Default::default()
        };
        let union = fb::Send::create(&mut b, &args).as_union_value();
        let f = fb::Frame::create(
            &mut b,
            &fb::FrameArgs {
                request_id: 1,
                body_type: fb::Body::Send,
                body: Some(union),
            },
        );
        b.finish(f, None);
        b.finished_data().to_vec()
    }

    #[test]
    fn a_send_needs_exactly_one_of_payload_and_device_payloads() {
        let limits = crate::codec::Limits::server_inbound();
        for (payload, per_device, ok) in [
            (false, false, false),
            (true, true, false),
            (true, false, true),
            (false, true, true),
        ] {
            let decoded = crate::frame::Frame::decode(&send_frame(payload, per_device), &limits);
            match ok {
                true => assert!(decoded.is_ok(), "{payload} {per_device}: {decoded:?}"),
                false => assert!(
                    matches!(decoded, Err(crate::codec::FrameError::Malformed(_))),
                    "{payload} {per_device}: {decoded:?}"
                ),
            }
        }
        let empty = super::Send {
            conversation_id: 1,
            client_message_id: 2,
            expires_in_secs: 0,
            flags: 0,
            payload: Bytes::new(),
        };
        let encoded = crate::frame::Frame::new(1, empty.clone()).encode();
        let decoded = crate::frame::Frame::decode(&encoded[crate::codec::LEN_PREFIX..], &limits)
            .expect("an empty payload is a payload");
        assert_eq!(decoded.body, Body::Send(empty));
    }
}
