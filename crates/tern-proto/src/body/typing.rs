//! Typing indicators (issue 11, docs/PROTOCOL.md §4.9): a device says it
//! starts or stops typing in a conversation ([`Typing`]) and the server
//! pushes [`TypingChanged`] to the members' connected devices. Both travel
//! as QUIC datagrams (RFC 9221) where the connection takes them, else on the
//! control stream; neither is ever stored. A receiver expires a "typing"
//! state [`TYPING_EXPIRY_MS`] after it arrived unless it is refreshed (as
//! WhatsApp and Signal clients do; senders refresh every few seconds).

use crate::body::messaging::Done;
use crate::body::{Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// How long a receiver shows "typing" after the last `typing = true`
/// signal of one device, ms.
pub const TYPING_EXPIRY_MS: u64 = 10_000;
/// How often a typing client repeats `typing = true` while it keeps typing,
/// ms (well inside [`TYPING_EXPIRY_MS`], so one lost datagram is forgiven).
pub const TYPING_REFRESH_MS: u64 = 3_000;
/// Typing signals one device may send per conversation at once; past it
/// the server drops signals silently.
pub const TYPING_BURST: u32 = 4;
/// Typing signals per second one device regains per conversation.
pub const TYPING_PER_SECOND: u32 = 2;

/// This device starts (`typing`) or stops typing in `conversation_id`.
/// As a datagram: request id 0, no answer. On the stream: answered by
/// [`Done`], also when the server dropped it (never an error).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Typing {
    pub conversation_id: u64,
    pub typing: bool,
}

impl WireBody for Typing {
    const TAG: fb::Body = fb::Body::Typing;
    type Table<'a> = fb::Typing<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::TypingArgs {
            conversation_id: self.conversation_id,
            typing: self.typing,
        };
        fb::Typing::create(b, &args).as_union_value()
    }

    fn decode(t: fb::Typing<'_>) -> Result<Self, FrameError> {
        Ok(Typing {
            conversation_id: t.conversation_id(),
            typing: t.typing(),
        })
    }
}

impl Request for Typing {
    type Response = Done;
}

/// Server push (request id 0): `user`'s device `device` started or stopped
/// typing in `conversation_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypingChanged {
    pub conversation_id: u64,
    pub user: String,
    pub device: u32,
    pub typing: bool,
}

impl WireBody for TypingChanged {
    const TAG: fb::Body = fb::Body::TypingChanged;
    type Table<'a> = fb::TypingChanged<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let user = b.create_string(&self.user);
        let args = fb::TypingChangedArgs {
            conversation_id: self.conversation_id,
            user: Some(user),
            device: self.device,
            typing: self.typing,
        };
        fb::TypingChanged::create(b, &args).as_union_value()
    }

    fn decode(t: fb::TypingChanged<'_>) -> Result<Self, FrameError> {
        Ok(TypingChanged {
            conversation_id: t.conversation_id(),
            user: t.user().to_owned(),
            device: t.device(),
            typing: t.typing(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            Typing {
                conversation_id: 9,
                typing: true,
            }
            .into(),
            TypingChanged {
                conversation_id: 9,
                user: "bob".into(),
                device: 2,
                typing: false,
            }
            .into(),
        ]
    }

    #[test]
    fn typing_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
