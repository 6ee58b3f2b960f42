//! Conversations and their members: creating one, changing a group's
//! members, and the [`ConversationInfo`] every one of these is answered
//! with. Also owns [`ConversationKind`] and its wire mapping.

use crate::body::{owned_strings, strings, Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Kind of a conversation, as on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConversationKind {
    Direct,
    Group,
    NoteToSelf,
}

impl ConversationKind {
    pub(crate) fn to_fb(self) -> fb::ConversationKind {
        match self {
            ConversationKind::Direct => fb::ConversationKind::Direct,
            ConversationKind::Group => fb::ConversationKind::Group,
            ConversationKind::NoteToSelf => fb::ConversationKind::NoteToSelf,
        }
    }

    pub(crate) fn from_fb(kind: fb::ConversationKind) -> Result<Self, FrameError> {
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
}

/// Direct: exactly one other member (idempotent: the same pair always gets
/// the same conversation). NoteToSelf: no members (one per user). Group:
/// any members. `members` are user handles, excluding the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateConversation {
    pub kind: ConversationKind,
    pub members: Vec<String>,
}

impl WireBody for CreateConversation {
    const TAG: fb::Body = fb::Body::CreateConversation;
    type Table<'a> = fb::CreateConversation<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::CreateConversationArgs {
            kind: self.kind.to_fb(),
            members: Some(strings(b, &self.members)),
        };
        fb::CreateConversation::create(b, &args).as_union_value()
    }

    fn decode(c: fb::CreateConversation<'_>) -> Result<Self, FrameError> {
        Ok(CreateConversation {
            kind: ConversationKind::from_fb(c.kind())?,
            members: owned_strings(c.members()),
        })
    }
}

impl Request for CreateConversation {
    type Response = ConversationInfo;
}

/// A conversation as the server describes it. `head_seq` is the highest
/// assigned seq (0 when empty); `created` is false when an existing one was
/// returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationInfo {
    pub conversation_id: u64,
    pub kind: ConversationKind,
    pub members: Vec<String>,
    pub head_seq: u64,
    pub created: bool,
}

impl WireBody for ConversationInfo {
    const TAG: fb::Body = fb::Body::ConversationInfo;
    type Table<'a> = fb::ConversationInfo<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::ConversationInfoArgs {
            conversation_id: self.conversation_id,
            kind: self.kind.to_fb(),
            members: Some(strings(b, &self.members)),
            head_seq: self.head_seq,
            created: self.created,
        };
        fb::ConversationInfo::create(b, &args).as_union_value()
    }

    fn decode(c: fb::ConversationInfo<'_>) -> Result<Self, FrameError> {
        Ok(ConversationInfo {
            conversation_id: c.conversation_id(),
            kind: ConversationKind::from_fb(c.kind())?,
            members: owned_strings(c.members()),
            head_seq: c.head_seq(),
            created: c.created(),
        })
    }
}

/// Adds members to a group; answered with the group's new [`ConversationInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddMembers {
    pub conversation_id: u64,
    pub members: Vec<String>,
}

impl WireBody for AddMembers {
    const TAG: fb::Body = fb::Body::AddMembers;
    type Table<'a> = fb::AddMembers<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::AddMembersArgs {
            conversation_id: self.conversation_id,
            members: Some(strings(b, &self.members)),
        };
        fb::AddMembers::create(b, &args).as_union_value()
    }

    fn decode(a: fb::AddMembers<'_>) -> Result<Self, FrameError> {
        Ok(AddMembers {
            conversation_id: a.conversation_id(),
            members: owned_strings(Some(a.members())),
        })
    }
}

impl Request for AddMembers {
    type Response = ConversationInfo;
}

/// Removes members from a group (or leaves it); answered with the group's
/// new [`ConversationInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoveMembers {
    pub conversation_id: u64,
    pub members: Vec<String>,
}

impl WireBody for RemoveMembers {
    const TAG: fb::Body = fb::Body::RemoveMembers;
    type Table<'a> = fb::RemoveMembers<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::RemoveMembersArgs {
            conversation_id: self.conversation_id,
            members: Some(strings(b, &self.members)),
        };
        fb::RemoveMembers::create(b, &args).as_union_value()
    }

    fn decode(r: fb::RemoveMembers<'_>) -> Result<Self, FrameError> {
        Ok(RemoveMembers {
            conversation_id: r.conversation_id(),
            members: owned_strings(Some(r.members())),
        })
    }
}

impl Request for RemoveMembers {
    type Response = ConversationInfo;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family, in every conversation kind.
    pub(crate) fn samples() -> Vec<Body> {
        let mut out = Vec::new();
        for kind in [
            ConversationKind::Direct,
            ConversationKind::Group,
            ConversationKind::NoteToSelf,
        ] {
            out.push(
                CreateConversation {
                    kind,
                    members: vec!["b".into(), "c".into()],
                }
                .into(),
            );
            out.push(
                ConversationInfo {
                    conversation_id: 1,
                    kind,
                    members: vec!["a".into()],
                    head_seq: 4,
                    created: true,
                }
                .into(),
            );
        }
        out.push(
            AddMembers {
                conversation_id: 1,
                members: vec!["x".into()],
            }
            .into(),
        );
        out.push(
            RemoveMembers {
                conversation_id: 1,
                members: vec!["x".into()],
            }
            .into(),
        );
        out
    }

    #[test]
    fn conversation_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
