//! Conversation settings the server enforces: the disappearing-message
//! timer ([`SetTimer`], pushed to members as [`TimerChanged`]; see
//! docs/PROTOCOL.md §4.6) and a group's administrators and who may add
//! members ([`SetAdmin`], [`ListAdmins`], [`SetMemberAdds`], answered and
//! pushed as [`Admins`]; §4.7).

use crate::body::messaging::Done;
use crate::body::{owned_strings, strings, Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Sets the disappearing-message timer of `conversation_id` to `secs`
/// seconds (0 = off, at most the server's message lifetime); answered by
/// [`Done`]. Every later message of the conversation expires at most
/// `secs` after it is sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetTimer {
    pub conversation_id: u64,
    pub secs: u32,
}

impl WireBody for SetTimer {
    const TAG: fb::Body = fb::Body::SetTimer;
    type Table<'a> = fb::SetTimer<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::SetTimerArgs {
            conversation_id: self.conversation_id,
            secs: self.secs,
        };
        fb::SetTimer::create(b, &args).as_union_value()
    }

    fn decode(t: fb::SetTimer<'_>) -> Result<Self, FrameError> {
        Ok(SetTimer {
            conversation_id: t.conversation_id(),
            secs: t.secs(),
        })
    }
}

impl Request for SetTimer {
    type Response = Done;
}

/// Server push to every member's devices: `user` set the timer of
/// `conversation_id` to `secs` (0 = off).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerChanged {
    pub conversation_id: u64,
    pub secs: u32,
    pub user: String,
}

impl WireBody for TimerChanged {
    const TAG: fb::Body = fb::Body::TimerChanged;
    type Table<'a> = fb::TimerChanged<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::TimerChangedArgs {
            conversation_id: self.conversation_id,
            secs: self.secs,
            user: Some(b.create_string(&self.user)),
        };
        fb::TimerChanged::create(b, &args).as_union_value()
    }

    fn decode(t: fb::TimerChanged<'_>) -> Result<Self, FrameError> {
        Ok(TimerChanged {
            conversation_id: t.conversation_id(),
            secs: t.secs(),
            user: t.user().to_owned(),
        })
    }
}

/// An administrator of group `conversation_id` makes member `user` an
/// administrator (`admin`) or not; answered by [`Admins`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAdmin {
    pub conversation_id: u64,
    pub user: String,
    pub admin: bool,
}

impl WireBody for SetAdmin {
    const TAG: fb::Body = fb::Body::SetAdmin;
    type Table<'a> = fb::SetAdmin<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::SetAdminArgs {
            conversation_id: self.conversation_id,
            user: Some(b.create_string(&self.user)),
            admin: self.admin,
        };
        fb::SetAdmin::create(b, &args).as_union_value()
    }

    fn decode(t: fb::SetAdmin<'_>) -> Result<Self, FrameError> {
        Ok(SetAdmin {
            conversation_id: t.conversation_id(),
            user: t.user().to_owned(),
            admin: t.admin(),
        })
    }
}

impl Request for SetAdmin {
    type Response = Admins;
}

/// A member asks for group `conversation_id`'s administrators; answered by
/// [`Admins`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListAdmins {
    pub conversation_id: u64,
}

impl WireBody for ListAdmins {
    const TAG: fb::Body = fb::Body::ListAdmins;
    type Table<'a> = fb::ListAdmins<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::ListAdminsArgs {
            conversation_id: self.conversation_id,
        };
        fb::ListAdmins::create(b, &args).as_union_value()
    }

    fn decode(t: fb::ListAdmins<'_>) -> Result<Self, FrameError> {
        Ok(ListAdmins {
            conversation_id: t.conversation_id(),
        })
    }
}

impl Request for ListAdmins {
    type Response = Admins;
}

/// A group's administrators, ascending by handle, and whether every member
/// may add members (`everyone_adds`; else administrators only): the answer
/// to [`SetAdmin`], [`ListAdmins`] and [`SetMemberAdds`], and a push when
/// either changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admins {
    pub conversation_id: u64,
    pub admins: Vec<String>,
    pub everyone_adds: bool,
}

impl WireBody for Admins {
    const TAG: fb::Body = fb::Body::Admins;
    type Table<'a> = fb::Admins<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::AdminsArgs {
            conversation_id: self.conversation_id,
            admins: Some(strings(b, &self.admins)),
            everyone_adds: self.everyone_adds,
        };
        fb::Admins::create(b, &args).as_union_value()
    }

    fn decode(t: fb::Admins<'_>) -> Result<Self, FrameError> {
        Ok(Admins {
            conversation_id: t.conversation_id(),
            admins: owned_strings(Some(t.admins())),
            everyone_adds: t.everyone_adds(),
        })
    }
}

/// An administrator of group `conversation_id` lets every member add
/// members (`everyone`) or only administrators (the default); answered by
/// [`Admins`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetMemberAdds {
    pub conversation_id: u64,
    pub everyone: bool,
}

impl WireBody for SetMemberAdds {
    const TAG: fb::Body = fb::Body::SetMemberAdds;
    type Table<'a> = fb::SetMemberAdds<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::SetMemberAddsArgs {
            conversation_id: self.conversation_id,
            everyone: self.everyone,
        };
        fb::SetMemberAdds::create(b, &args).as_union_value()
    }

    fn decode(t: fb::SetMemberAdds<'_>) -> Result<Self, FrameError> {
        Ok(SetMemberAdds {
            conversation_id: t.conversation_id(),
            everyone: t.everyone(),
        })
    }
}

impl Request for SetMemberAdds {
    type Response = Admins;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            SetTimer {
                conversation_id: 3,
                secs: 3600,
            }
            .into(),
            TimerChanged {
                conversation_id: 3,
                secs: 0,
                user: "a".into(),
            }
            .into(),
            SetAdmin {
                conversation_id: 3,
                user: "b".into(),
                admin: true,
            }
            .into(),
            ListAdmins { conversation_id: 3 }.into(),
            Admins {
                conversation_id: 3,
                admins: vec!["a".into(), "b".into()],
                everyone_adds: true,
            }
            .into(),
            SetMemberAdds {
                conversation_id: 3,
                everyone: true,
            }
            .into(),
        ]
    }

    #[test]
    fn settings_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
