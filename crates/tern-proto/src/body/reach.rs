//! Who may reach an account (issue 10, "who may reach me"): the
//! [`DirectStarts`] setting (who may start a direct conversation with it,
//! set with [`crate::body::privacy::SetPrivacy`]), reading both privacy
//! settings back ([`GetPrivacy`], answered by [`Privacy`]), and accepting a
//! message request ([`AcceptRequest`]): a direct conversation started by a
//! user who is not the account's contact, listed by Sync with
//! `ConversationState::request_from` set until the account accepts it.
//!
//! The defaults follow Signal and WhatsApp: anyone may start a direct
//! conversation, and one from a stranger arrives as a message request.

use crate::body::messaging::Done;
use crate::body::privacy::GroupAdds;
use crate::body::{Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Who may start a direct conversation with an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DirectStarts {
    /// Anyone (the default); a conversation from someone who is not a
    /// contact is a message request.
    #[default]
    Everyone,
    /// Only the account's contacts; anyone else is refused with
    /// `ConsentRequired`.
    Contacts,
    /// Nobody: no new direct conversation (existing ones stay usable).
    Nobody,
}

impl DirectStarts {
    pub(crate) fn to_fb(self) -> fb::DirectStarts {
        match self {
            DirectStarts::Everyone => fb::DirectStarts::Everyone,
            DirectStarts::Contacts => fb::DirectStarts::Contacts,
            DirectStarts::Nobody => fb::DirectStarts::Nobody,
        }
    }

    pub(crate) fn from_fb(v: fb::DirectStarts) -> Result<Self, FrameError> {
        match v {
            fb::DirectStarts::Everyone => Ok(DirectStarts::Everyone),
            fb::DirectStarts::Contacts => Ok(DirectStarts::Contacts),
            fb::DirectStarts::Nobody => Ok(DirectStarts::Nobody),
            other => Err(FrameError::Malformed(format!(
                "unknown direct_starts setting {}",
                other.0
            ))),
        }
    }
}

/// Reads this account's privacy settings; answered by [`Privacy`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GetPrivacy;

impl WireBody for GetPrivacy {
    const TAG: fb::Body = fb::Body::GetPrivacy;
    type Table<'a> = fb::GetPrivacy<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        fb::GetPrivacy::create(b, &fb::GetPrivacyArgs {}).as_union_value()
    }

    fn decode(_: fb::GetPrivacy<'_>) -> Result<Self, FrameError> {
        Ok(GetPrivacy)
    }
}

impl Request for GetPrivacy {
    type Response = Privacy;
}

/// An account's privacy settings, as stored (defaults for unset ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Privacy {
    pub group_adds: GroupAdds,
    pub direct_starts: DirectStarts,
}

impl WireBody for Privacy {
    const TAG: fb::Body = fb::Body::Privacy;
    type Table<'a> = fb::Privacy<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::PrivacyArgs {
            group_adds: self.group_adds.to_fb(),
            direct_starts: self.direct_starts.to_fb(),
        };
        fb::Privacy::create(b, &args).as_union_value()
    }

    fn decode(t: fb::Privacy<'_>) -> Result<Self, FrameError> {
        Ok(Privacy {
            group_adds: GroupAdds::from_fb(t.group_adds())?,
            direct_starts: DirectStarts::from_fb(t.direct_starts())?,
        })
    }
}

/// Accepts the message request of direct conversation `conversation_id`:
/// its creator becomes the caller's contact. Answered by [`Done`] (also
/// when it was not a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcceptRequest {
    pub conversation_id: u64,
}

impl WireBody for AcceptRequest {
    const TAG: fb::Body = fb::Body::AcceptRequest;
    type Table<'a> = fb::AcceptRequest<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::AcceptRequestArgs {
            conversation_id: self.conversation_id,
        };
        fb::AcceptRequest::create(b, &args).as_union_value()
    }

    fn decode(t: fb::AcceptRequest<'_>) -> Result<Self, FrameError> {
        Ok(AcceptRequest {
            conversation_id: t.conversation_id(),
        })
    }
}

impl Request for AcceptRequest {
    type Response = Done;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            GetPrivacy.into(),
            Privacy {
                group_adds: GroupAdds::Everyone,
                direct_starts: DirectStarts::Nobody,
            }
            .into(),
            AcceptRequest { conversation_id: 3 }.into(),
        ]
    }

    #[test]
    fn reach_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
