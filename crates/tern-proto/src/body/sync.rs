//! Catching up: which conversations moved past this device's cursors
//! ([`Sync`]) and the answer listing each one's position ([`SyncResult`]).
//!
//! `Sync` shares its name with the std marker trait: write `sync::Sync`,
//! never glob-import this module.

use crate::body::conversations::ConversationKind;
use crate::body::{Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Which conversations have messages past this device's cursor? With
/// `all`, every conversation of the user is listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sync {
    pub all: bool,
}

impl WireBody for Sync {
    const TAG: fb::Body = fb::Body::Sync;
    type Table<'a> = fb::Sync<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        fb::Sync::create(b, &fb::SyncArgs { all: self.all }).as_union_value()
    }

    fn decode(s: fb::Sync<'_>) -> Result<Self, FrameError> {
        Ok(Sync { all: s.all() })
    }
}

impl Request for Sync {
    type Response = SyncResult;
}

/// One conversation's position for a device, answered by `Sync`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationState {
    pub conversation_id: u64,
    pub kind: ConversationKind,
    pub head_seq: u64,
    /// This device's acknowledged seq.
    pub cursor: u64,
}

/// The answer to [`Sync`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    pub conversations: Vec<ConversationState>,
}

impl WireBody for SyncResult {
    const TAG: fb::Body = fb::Body::SyncResult;
    type Table<'a> = fb::SyncResult<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let items: Vec<_> = self
            .conversations
            .iter()
            .map(|s| {
                let args = fb::ConversationStateArgs {
                    conversation_id: s.conversation_id,
                    kind: s.kind.to_fb(),
                    head_seq: s.head_seq,
                    cursor: s.cursor,
                };
                fb::ConversationState::create(b, &args)
            })
            .collect();
        let conversations = Some(b.create_vector(&items));
        fb::SyncResult::create(b, &fb::SyncResultArgs { conversations }).as_union_value()
    }

    fn decode(r: fb::SyncResult<'_>) -> Result<Self, FrameError> {
        let conversations = r
            .conversations()
            .iter()
            .map(|s| {
                Ok(ConversationState {
                    conversation_id: s.conversation_id(),
                    kind: ConversationKind::from_fb(s.kind())?,
                    head_seq: s.head_seq(),
                    cursor: s.cursor(),
                })
            })
            .collect::<Result<_, FrameError>>()?;
        Ok(SyncResult { conversations })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    // No glob import: `Sync` would shadow the std marker trait.
    use super::{ConversationState, SyncResult};
    use crate::body::conversations::ConversationKind;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            super::Sync { all: true }.into(),
            SyncResult {
                conversations: vec![ConversationState {
                    conversation_id: 1,
                    kind: ConversationKind::Group,
                    head_seq: 2,
                    cursor: 1,
                }],
            }
            .into(),
        ]
    }

    #[test]
    fn sync_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
