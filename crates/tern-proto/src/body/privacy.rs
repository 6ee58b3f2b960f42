//! Privacy and consent to join groups: the account's [`SetPrivacy`]
//! setting ([`GroupAdds`]: who may add it to groups without asking), and
//! invitations, the consent a user gives before someone who is not their
//! contact adds them to a group: [`Invite`] (pushed as [`Invited`]),
//! [`ListInvitations`] (answered by [`Invitations`]) and
//! [`AnswerInvitation`] (pushed to the inviter as [`InvitationAnswered`]).

use crate::body::messaging::Done;
use crate::body::reach::DirectStarts;
use crate::body::{Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Invitations kept per invited user; past it the oldest is dropped.
pub const MAX_PENDING_INVITATIONS: usize = 100;
/// How long an invitation (and the consent of an accepted one) lasts, ms.
pub const INVITATION_TTL_MS: u64 = 7 * 24 * 3600 * 1000;

/// Who may add an account to groups without an invitation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GroupAdds {
    /// Only the account's contacts (the default): users it created a
    /// conversation with, added to a group, or answered in a direct
    /// conversation they started.
    #[default]
    Contacts,
    /// Anyone.
    Everyone,
}

impl GroupAdds {
    pub(crate) fn to_fb(self) -> fb::GroupAdds {
        match self {
            GroupAdds::Contacts => fb::GroupAdds::Contacts,
            GroupAdds::Everyone => fb::GroupAdds::Everyone,
        }
    }

    pub(crate) fn from_fb(v: fb::GroupAdds) -> Result<Self, FrameError> {
        match v {
            fb::GroupAdds::Contacts => Ok(GroupAdds::Contacts),
            fb::GroupAdds::Everyone => Ok(GroupAdds::Everyone),
            other => Err(FrameError::Malformed(format!(
                "unknown group_adds setting {}",
                other.0
            ))),
        }
    }
}

/// Sets this account's privacy settings; answered by [`Done`].
///
/// Absent means unchanged: a request with `groups` or `direct_starts` set
/// changes only what it sets, and `group_adds` is then ignored. A request
/// with neither set is an older client's, which always meant `group_adds`
/// (absent on the wire = [`GroupAdds::Contacts`]): the server applies
/// `group_adds` and leaves `direct_starts` unchanged. Use
/// [`SetPrivacy::change`] to build one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetPrivacy {
    /// Older clients' field (see above).
    pub group_adds: GroupAdds,
    /// Who may add this account to groups; `None` = unchanged.
    pub groups: Option<GroupAdds>,
    /// Who may start direct conversations with it; `None` = unchanged.
    pub direct_starts: Option<DirectStarts>,
}

impl SetPrivacy {
    /// A request changing the settings given (`None` = unchanged); the
    /// legacy field carries `groups` too, for servers that predate it.
    pub fn change(groups: Option<GroupAdds>, direct_starts: Option<DirectStarts>) -> SetPrivacy {
        SetPrivacy {
            group_adds: groups.unwrap_or_default(),
            groups,
            direct_starts,
        }
    }

    /// What the request changes, `(group_adds, direct_starts)`, by the
    /// absent-means-unchanged rule above.
    pub fn changes(&self) -> (Option<GroupAdds>, Option<DirectStarts>) {
        match (self.groups, self.direct_starts) {
            (None, None) => (Some(self.group_adds), None),
            named => named,
        }
    }
}

impl WireBody for SetPrivacy {
    const TAG: fb::Body = fb::Body::SetPrivacy;
    type Table<'a> = fb::SetPrivacy<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::SetPrivacyArgs {
            group_adds: self.group_adds.to_fb(),
            groups: self.groups.map(GroupAdds::to_fb),
            direct_starts: self.direct_starts.map(DirectStarts::to_fb),
        };
        fb::SetPrivacy::create(b, &args).as_union_value()
    }

    fn decode(t: fb::SetPrivacy<'_>) -> Result<Self, FrameError> {
        Ok(SetPrivacy {
            group_adds: GroupAdds::from_fb(t.group_adds())?,
            groups: t.groups().map(GroupAdds::from_fb).transpose()?,
            direct_starts: t.direct_starts().map(DirectStarts::from_fb).transpose()?,
        })
    }
}

impl Request for SetPrivacy {
    type Response = Done;
}

/// A member of group `conversation_id` invites `user` to it; answered by
/// [`Done`]. The user's devices get [`Invited`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invite {
    pub conversation_id: u64,
    pub user: String,
}

impl WireBody for Invite {
    const TAG: fb::Body = fb::Body::Invite;
    type Table<'a> = fb::Invite<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::InviteArgs {
            conversation_id: self.conversation_id,
            user: Some(b.create_string(&self.user)),
        };
        fb::Invite::create(b, &args).as_union_value()
    }

    fn decode(t: fb::Invite<'_>) -> Result<Self, FrameError> {
        Ok(Invite {
            conversation_id: t.conversation_id(),
            user: t.user().to_owned(),
        })
    }
}

impl Request for Invite {
    type Response = Done;
}

/// Server push to an invited user's devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invited {
    pub conversation_id: u64,
    pub inviter: String,
}

impl WireBody for Invited {
    const TAG: fb::Body = fb::Body::Invited;
    type Table<'a> = fb::Invited<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::InvitedArgs {
            conversation_id: self.conversation_id,
            inviter: Some(b.create_string(&self.inviter)),
        };
        fb::Invited::create(b, &args).as_union_value()
    }

    fn decode(t: fb::Invited<'_>) -> Result<Self, FrameError> {
        Ok(Invited {
            conversation_id: t.conversation_id(),
            inviter: t.inviter().to_owned(),
        })
    }
}

/// This account's pending invitations; answered by [`Invitations`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListInvitations;

impl WireBody for ListInvitations {
    const TAG: fb::Body = fb::Body::ListInvitations;
    type Table<'a> = fb::ListInvitations<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        fb::ListInvitations::create(b, &fb::ListInvitationsArgs {}).as_union_value()
    }

    fn decode(_: fb::ListInvitations<'_>) -> Result<Self, FrameError> {
        Ok(ListInvitations)
    }
}

impl Request for ListInvitations {
    type Response = Invitations;
}

/// One pending invitation: to group `conversation_id`, by `inviter`, at
/// server time `created_ms` (ms since the Unix epoch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invitation {
    pub conversation_id: u64,
    pub inviter: String,
    pub created_ms: u64,
}

/// The answer to [`ListInvitations`]: oldest first, at most
/// [`MAX_PENDING_INVITATIONS`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invitations {
    pub invitations: Vec<Invitation>,
}

impl WireBody for Invitations {
    const TAG: fb::Body = fb::Body::Invitations;
    type Table<'a> = fb::Invitations<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let items: Vec<_> = self
            .invitations
            .iter()
            .map(|i| {
                let args = fb::InvitationArgs {
                    conversation_id: i.conversation_id,
                    inviter: Some(b.create_string(&i.inviter)),
                    created_ms: i.created_ms,
                };
                fb::Invitation::create(b, &args)
            })
            .collect();
        let invitations = Some(b.create_vector(&items));
        fb::Invitations::create(b, &fb::InvitationsArgs { invitations }).as_union_value()
    }

    fn decode(t: fb::Invitations<'_>) -> Result<Self, FrameError> {
        let invitations = t
            .invitations()
            .iter()
            .map(|i| Invitation {
                conversation_id: i.conversation_id(),
                inviter: i.inviter().to_owned(),
                created_ms: i.created_ms(),
            })
            .collect();
        Ok(Invitations { invitations })
    }
}

/// Accepts or declines the pending invitation to `conversation_id`;
/// answered by [`Done`]. The inviter's devices get [`InvitationAnswered`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerInvitation {
    pub conversation_id: u64,
    pub accept: bool,
}

impl WireBody for AnswerInvitation {
    const TAG: fb::Body = fb::Body::AnswerInvitation;
    type Table<'a> = fb::AnswerInvitation<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::AnswerInvitationArgs {
            conversation_id: self.conversation_id,
            accept: self.accept,
        };
        fb::AnswerInvitation::create(b, &args).as_union_value()
    }

    fn decode(t: fb::AnswerInvitation<'_>) -> Result<Self, FrameError> {
        Ok(AnswerInvitation {
            conversation_id: t.conversation_id(),
            accept: t.accept(),
        })
    }
}

impl Request for AnswerInvitation {
    type Response = Done;
}

/// Server push to an inviter's devices: `user` answered the invitation to
/// `conversation_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvitationAnswered {
    pub conversation_id: u64,
    pub user: String,
    pub accepted: bool,
}

impl WireBody for InvitationAnswered {
    const TAG: fb::Body = fb::Body::InvitationAnswered;
    type Table<'a> = fb::InvitationAnswered<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::InvitationAnsweredArgs {
            conversation_id: self.conversation_id,
            user: Some(b.create_string(&self.user)),
            accepted: self.accepted,
        };
        fb::InvitationAnswered::create(b, &args).as_union_value()
    }

    fn decode(t: fb::InvitationAnswered<'_>) -> Result<Self, FrameError> {
        Ok(InvitationAnswered {
            conversation_id: t.conversation_id(),
            user: t.user().to_owned(),
            accepted: t.accepted(),
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
            SetPrivacy {
                group_adds: GroupAdds::Everyone,
                groups: None,
                direct_starts: None,
            }
            .into(),
            SetPrivacy::change(Some(GroupAdds::Everyone), Some(DirectStarts::Contacts)).into(),
            SetPrivacy::change(None, Some(DirectStarts::Nobody)).into(),
            Invite {
                conversation_id: 3,
                user: "b".into(),
            }
            .into(),
            Invited {
                conversation_id: 3,
                inviter: "a".into(),
            }
            .into(),
            ListInvitations.into(),
            Invitations {
                invitations: vec![Invitation {
                    conversation_id: 3,
                    inviter: "a".into(),
                    created_ms: 9,
                }],
            }
            .into(),
            AnswerInvitation {
                conversation_id: 3,
                accept: true,
            }
            .into(),
            InvitationAnswered {
                conversation_id: 3,
                user: "b".into(),
                accepted: false,
            }
            .into(),
        ]
    }

    #[test]
    fn privacy_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }

    #[test]
    fn absent_privacy_fields_are_unchanged() {
        // An older client's request (neither new field) sets group_adds only.
        let old = SetPrivacy {
            group_adds: GroupAdds::Contacts,
            groups: None,
            direct_starts: None,
        };
        assert_eq!(old.changes(), (Some(GroupAdds::Contacts), None));
        // Naming direct_starts alone leaves group_adds alone.
        let direct = SetPrivacy::change(None, Some(DirectStarts::Nobody));
        assert_eq!(direct.changes(), (None, Some(DirectStarts::Nobody)));
        let groups = SetPrivacy::change(Some(GroupAdds::Everyone), None);
        assert_eq!(groups.changes(), (Some(GroupAdds::Everyone), None));
    }
}
