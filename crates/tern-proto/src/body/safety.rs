//! Safety controls an account holds over others and over its own messages:
//! blocking ([`Block`], [`Unblock`], [`ListBlocked`] answered by
//! [`Blocked`]) and deleting a sent message for everyone
//! ([`PurgeMessage`]). What they do is the server's (docs/PROTOCOL.md §4.4,
//! §4.5).

use crate::body::messaging::Done;
use crate::body::{owned_strings, strings, Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Most users one account may block; past it [`Block`] is refused with
/// `LimitExceeded`.
pub const MAX_BLOCKED_USERS: usize = 10_000;

/// Blocks `user` for the calling account (all its devices); answered by
/// [`Done`], also when `user` was blocked already.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    pub user: String,
}

impl WireBody for Block {
    const TAG: fb::Body = fb::Body::Block;
    type Table<'a> = fb::Block<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::BlockArgs {
            user: Some(b.create_string(&self.user)),
        };
        fb::Block::create(b, &args).as_union_value()
    }

    fn decode(t: fb::Block<'_>) -> Result<Self, FrameError> {
        Ok(Block {
            user: t.user().to_owned(),
        })
    }
}

impl Request for Block {
    type Response = Done;
}

/// Removes `user` from the calling account's block list; answered by
/// [`Done`], also when `user` was not blocked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unblock {
    pub user: String,
}

impl WireBody for Unblock {
    const TAG: fb::Body = fb::Body::Unblock;
    type Table<'a> = fb::Unblock<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::UnblockArgs {
            user: Some(b.create_string(&self.user)),
        };
        fb::Unblock::create(b, &args).as_union_value()
    }

    fn decode(t: fb::Unblock<'_>) -> Result<Self, FrameError> {
        Ok(Unblock {
            user: t.user().to_owned(),
        })
    }
}

impl Request for Unblock {
    type Response = Done;
}

/// The calling account's block list; answered by [`Blocked`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListBlocked;

impl WireBody for ListBlocked {
    const TAG: fb::Body = fb::Body::ListBlocked;
    type Table<'a> = fb::ListBlocked<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        fb::ListBlocked::create(b, &fb::ListBlockedArgs {}).as_union_value()
    }

    fn decode(_: fb::ListBlocked<'_>) -> Result<Self, FrameError> {
        Ok(ListBlocked)
    }
}

impl Request for ListBlocked {
    type Response = Blocked;
}

/// The answer to [`ListBlocked`]: handles in ascending byte order, at most
/// [`MAX_BLOCKED_USERS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocked {
    pub users: Vec<String>,
}

impl WireBody for Blocked {
    const TAG: fb::Body = fb::Body::Blocked;
    type Table<'a> = fb::Blocked<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::BlockedArgs {
            users: Some(strings(b, &self.users)),
        };
        fb::Blocked::create(b, &args).as_union_value()
    }

    fn decode(t: fb::Blocked<'_>) -> Result<Self, FrameError> {
        Ok(Blocked {
            users: owned_strings(Some(t.users())),
        })
    }
}

/// The sender of message `seq` of `conversation_id` (or, in a group, an
/// administrator) asks the server to erase its ciphertext, leaving a tombstone (flag
/// [`crate::flags::TOMBSTONE`], empty payload) at the same seq; answered by
/// [`Done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PurgeMessage {
    pub conversation_id: u64,
    pub seq: u64,
}

impl WireBody for PurgeMessage {
    const TAG: fb::Body = fb::Body::PurgeMessage;
    type Table<'a> = fb::PurgeMessage<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::PurgeMessageArgs {
            conversation_id: self.conversation_id,
            seq: self.seq,
        };
        fb::PurgeMessage::create(b, &args).as_union_value()
    }

    fn decode(t: fb::PurgeMessage<'_>) -> Result<Self, FrameError> {
        Ok(PurgeMessage {
            conversation_id: t.conversation_id(),
            seq: t.seq(),
        })
    }
}

impl Request for PurgeMessage {
    type Response = Done;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            Block { user: "b".into() }.into(),
            Unblock { user: "b".into() }.into(),
            ListBlocked.into(),
            Blocked {
                users: vec!["b".into(), "c".into()],
            }
            .into(),
            PurgeMessage {
                conversation_id: 3,
                seq: 4,
            }
            .into(),
        ]
    }

    #[test]
    fn safety_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
