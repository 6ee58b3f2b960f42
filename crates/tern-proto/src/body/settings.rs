//! Conversation settings the server enforces: the disappearing-message
//! timer ([`SetTimer`], pushed to members as [`TimerChanged`]); see
//! docs/PROTOCOL.md §4.6.

use crate::body::messaging::Done;
use crate::body::{Builder, Union, WireBody};
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
        ]
    }

    #[test]
    fn settings_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
