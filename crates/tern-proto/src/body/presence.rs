//! Presence (docs/PROTOCOL.md §4.8): a device sets its state and the
//! account's status text ([`SetPresence`]); a connection subscribes to the
//! presence of many users at once ([`SubscribePresence`], answered by one
//! [`PresenceSnapshot`]) and is pushed [`PresenceChanged`], coalesced to at
//! most one per user per second; [`CountOnline`] (answered by
//! [`OnlineCount`]) counts a conversation's online members; and
//! [`SetPresenceVisibility`] says who sees the account's presence. Presence
//! is soft state: the server keeps it in memory only, never with messages.

use crate::body::messaging::Done;
use crate::body::{owned_strings, strings, Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Longest status text, in characters (Unicode scalar values), like a
/// WhatsApp "about" line; longer is refused with `InvalidArgument`.
pub const MAX_STATUS_TEXT_CHARS: usize = 140;
/// Most users one [`SubscribePresence`] or [`UnsubscribePresence`] may name.
pub const MAX_PRESENCE_USERS_PER_REQUEST: usize = 256;
/// Most users one connection may be subscribed to at once; past it
/// [`SubscribePresence`] is refused with `LimitExceeded`.
pub const MAX_PRESENCE_SUBSCRIPTIONS: usize = 1_000;
/// Shortest time between two pushes about one user to one subscriber, ms.
pub const PRESENCE_PUSH_INTERVAL_MS: u64 = 1_000;

/// What a user is doing, as a viewer sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PresenceState {
    /// The viewer may not see this user (or there is no such user): one
    /// answer for every reason, so none can be told apart.
    #[default]
    Unknown,
    Online,
    Away,
    /// Connected and busy (do not disturb).
    Busy,
    /// No device connected.
    Offline,
}

impl PresenceState {
    pub(crate) fn to_fb(self) -> fb::PresenceState {
        match self {
            PresenceState::Unknown => fb::PresenceState::Unknown,
            PresenceState::Online => fb::PresenceState::Online,
            PresenceState::Away => fb::PresenceState::Away,
            PresenceState::Busy => fb::PresenceState::Busy,
            PresenceState::Offline => fb::PresenceState::Offline,
        }
    }

    pub(crate) fn from_fb(v: fb::PresenceState) -> Result<Self, FrameError> {
        Ok(match v {
            fb::PresenceState::Unknown => PresenceState::Unknown,
            fb::PresenceState::Online => PresenceState::Online,
            fb::PresenceState::Away => PresenceState::Away,
            fb::PresenceState::Busy => PresenceState::Busy,
            fb::PresenceState::Offline => PresenceState::Offline,
            other => {
                return Err(FrameError::Malformed(format!(
                    "unknown presence state {}",
                    other.0
                )))
            }
        })
    }

    /// Whether a device may set this state (Online, Away, Busy).
    pub fn is_settable(self) -> bool {
        matches!(
            self,
            PresenceState::Online | PresenceState::Away | PresenceState::Busy
        )
    }
}

/// Who sees an account's presence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PresenceVisibility {
    /// Users the account shares a conversation with (the default).
    #[default]
    Shared,
    /// Any user the account does not block.
    Everyone,
    /// No one; and the account sees no one's presence either (reciprocal).
    Nobody,
}

impl PresenceVisibility {
    pub(crate) fn to_fb(self) -> fb::PresenceVisibility {
        match self {
            PresenceVisibility::Shared => fb::PresenceVisibility::Shared,
            PresenceVisibility::Everyone => fb::PresenceVisibility::Everyone,
            PresenceVisibility::Nobody => fb::PresenceVisibility::Nobody,
        }
    }

    pub(crate) fn from_fb(v: fb::PresenceVisibility) -> Result<Self, FrameError> {
        Ok(match v {
            fb::PresenceVisibility::Shared => PresenceVisibility::Shared,
            fb::PresenceVisibility::Everyone => PresenceVisibility::Everyone,
            fb::PresenceVisibility::Nobody => PresenceVisibility::Nobody,
            other => {
                return Err(FrameError::Malformed(format!(
                    "unknown presence visibility {}",
                    other.0
                )))
            }
        })
    }
}

/// Sets this device's state and, when `status_text` is `Some`, the
/// account's status text (empty clears it); answered by [`Done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetPresence {
    pub state: PresenceState,
    pub status_text: Option<String>,
}

impl WireBody for SetPresence {
    const TAG: fb::Body = fb::Body::SetPresence;
    type Table<'a> = fb::SetPresence<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::SetPresenceArgs {
            state: self.state.to_fb(),
            status_text: self.status_text.as_deref().map(|t| b.create_string(t)),
        };
        fb::SetPresence::create(b, &args).as_union_value()
    }

    fn decode(t: fb::SetPresence<'_>) -> Result<Self, FrameError> {
        Ok(SetPresence {
            state: PresenceState::from_fb(t.state())?,
            status_text: t.status_text().map(str::to_owned),
        })
    }
}

impl Request for SetPresence {
    type Response = Done;
}

/// Subscribes this connection to the presence of `users`; answered by
/// [`PresenceSnapshot`], one entry per user in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribePresence {
    pub users: Vec<String>,
}

impl WireBody for SubscribePresence {
    const TAG: fb::Body = fb::Body::SubscribePresence;
    type Table<'a> = fb::SubscribePresence<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::SubscribePresenceArgs {
            users: Some(strings(b, &self.users)),
        };
        fb::SubscribePresence::create(b, &args).as_union_value()
    }

    fn decode(t: fb::SubscribePresence<'_>) -> Result<Self, FrameError> {
        Ok(SubscribePresence {
            users: owned_strings(Some(t.users())),
        })
    }
}

impl Request for SubscribePresence {
    type Response = PresenceSnapshot;
}

/// Ends this connection's subscriptions to `users`; answered by [`Done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubscribePresence {
    pub users: Vec<String>,
}

impl WireBody for UnsubscribePresence {
    const TAG: fb::Body = fb::Body::UnsubscribePresence;
    type Table<'a> = fb::UnsubscribePresence<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::UnsubscribePresenceArgs {
            users: Some(strings(b, &self.users)),
        };
        fb::UnsubscribePresence::create(b, &args).as_union_value()
    }

    fn decode(t: fb::UnsubscribePresence<'_>) -> Result<Self, FrameError> {
        Ok(UnsubscribePresence {
            users: owned_strings(Some(t.users())),
        })
    }
}

impl Request for UnsubscribePresence {
    type Response = Done;
}

/// One user's presence as the viewer sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PresenceEntry {
    pub user: String,
    pub state: PresenceState,
    /// `None`: no status text set, or not visible.
    pub status_text: Option<String>,
    /// Server time (ms since the Unix epoch) the user was last online,
    /// i.e. went away or offline; 0 when unknown or not visible.
    pub last_seen_ms: u64,
}

impl PresenceEntry {
    /// What a viewer who may not see `user` is told.
    pub fn unknown(user: impl Into<String>) -> Self {
        PresenceEntry {
            user: user.into(),
            ..PresenceEntry::default()
        }
    }

    fn write<'a>(&self, b: &mut Builder<'a>) -> flatbuffers::WIPOffset<fb::PresenceEntry<'a>> {
        let args = fb::PresenceEntryArgs {
            user: Some(b.create_string(&self.user)),
            state: self.state.to_fb(),
            status_text: self.status_text.as_deref().map(|t| b.create_string(t)),
            last_seen_ms: self.last_seen_ms,
        };
        fb::PresenceEntry::create(b, &args)
    }

    fn read(t: fb::PresenceEntry<'_>) -> Result<Self, FrameError> {
        Ok(PresenceEntry {
            user: t.user().to_owned(),
            state: PresenceState::from_fb(t.state())?,
            status_text: t.status_text().map(str::to_owned),
            last_seen_ms: t.last_seen_ms(),
        })
    }
}

/// The answer to [`SubscribePresence`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PresenceSnapshot {
    pub entries: Vec<PresenceEntry>,
}

impl WireBody for PresenceSnapshot {
    const TAG: fb::Body = fb::Body::PresenceSnapshot;
    type Table<'a> = fb::PresenceSnapshot<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let entries: Vec<_> = self.entries.iter().map(|e| e.write(b)).collect();
        let args = fb::PresenceSnapshotArgs {
            entries: Some(b.create_vector(&entries)),
        };
        fb::PresenceSnapshot::create(b, &args).as_union_value()
    }

    fn decode(t: fb::PresenceSnapshot<'_>) -> Result<Self, FrameError> {
        let entries = t.entries().iter().map(PresenceEntry::read);
        Ok(PresenceSnapshot {
            entries: entries.collect::<Result<_, _>>()?,
        })
    }
}

/// Server push to a subscribed connection: `entry` changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PresenceChanged {
    pub entry: PresenceEntry,
}

impl WireBody for PresenceChanged {
    const TAG: fb::Body = fb::Body::PresenceChanged;
    type Table<'a> = fb::PresenceChanged<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let entry = self.entry.write(b);
        let args = fb::PresenceChangedArgs { entry: Some(entry) };
        fb::PresenceChanged::create(b, &args).as_union_value()
    }

    fn decode(t: fb::PresenceChanged<'_>) -> Result<Self, FrameError> {
        Ok(PresenceChanged {
            entry: PresenceEntry::read(t.entry())?,
        })
    }
}

/// How many members of `conversation_id` are online as the caller may see
/// them; answered by [`OnlineCount`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountOnline {
    pub conversation_id: u64,
}

impl WireBody for CountOnline {
    const TAG: fb::Body = fb::Body::CountOnline;
    type Table<'a> = fb::CountOnline<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::CountOnlineArgs {
            conversation_id: self.conversation_id,
        };
        fb::CountOnline::create(b, &args).as_union_value()
    }

    fn decode(t: fb::CountOnline<'_>) -> Result<Self, FrameError> {
        Ok(CountOnline {
            conversation_id: t.conversation_id(),
        })
    }
}

impl Request for CountOnline {
    type Response = OnlineCount;
}

/// The answer to [`CountOnline`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnlineCount {
    pub conversation_id: u64,
    pub online: u32,
}

impl WireBody for OnlineCount {
    const TAG: fb::Body = fb::Body::OnlineCount;
    type Table<'a> = fb::OnlineCount<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::OnlineCountArgs {
            conversation_id: self.conversation_id,
            online: self.online,
        };
        fb::OnlineCount::create(b, &args).as_union_value()
    }

    fn decode(t: fb::OnlineCount<'_>) -> Result<Self, FrameError> {
        Ok(OnlineCount {
            conversation_id: t.conversation_id(),
            online: t.online(),
        })
    }
}

/// Sets who sees this account's presence; answered by [`Done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetPresenceVisibility {
    pub visibility: PresenceVisibility,
}

impl WireBody for SetPresenceVisibility {
    const TAG: fb::Body = fb::Body::SetPresenceVisibility;
    type Table<'a> = fb::SetPresenceVisibility<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::SetPresenceVisibilityArgs {
            visibility: self.visibility.to_fb(),
        };
        fb::SetPresenceVisibility::create(b, &args).as_union_value()
    }

    fn decode(t: fb::SetPresenceVisibility<'_>) -> Result<Self, FrameError> {
        Ok(SetPresenceVisibility {
            visibility: PresenceVisibility::from_fb(t.visibility())?,
        })
    }
}

impl Request for SetPresenceVisibility {
    type Response = Done;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        let entry = PresenceEntry {
            user: "bob".into(),
            state: PresenceState::Away,
            status_text: Some("at lunch".into()),
            last_seen_ms: 1_700_000_000_000,
        };
        vec![
            SetPresence {
                state: PresenceState::Busy,
                status_text: Some("in a meeting".into()),
            }
            .into(),
            SubscribePresence {
                users: vec!["bob".into(), "carol".into()],
            }
            .into(),
            UnsubscribePresence {
                users: vec!["bob".into()],
            }
            .into(),
            PresenceSnapshot {
                entries: vec![entry.clone(), PresenceEntry::unknown("carol")],
            }
            .into(),
            PresenceChanged { entry }.into(),
            CountOnline { conversation_id: 9 }.into(),
            OnlineCount {
                conversation_id: 9,
                online: 2,
            }
            .into(),
            SetPresenceVisibility {
                visibility: PresenceVisibility::Nobody,
            }
            .into(),
        ]
    }

    #[test]
    fn presence_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }

    #[test]
    fn absent_and_empty_status_text_differ() {
        let keep = SetPresence {
            state: PresenceState::Online,
            status_text: None,
        };
        let clear = SetPresence {
            state: PresenceState::Online,
            status_text: Some(String::new()),
        };
        crate::body::tests::roundtrip_all(vec![keep.into(), clear.into()]);
    }
}
