//! Presence and typing (issue 11, docs/PROTOCOL.md §4.8 and §4.9): this
//! device's state and the account's status text, who sees them, the
//! presence of other users (a snapshot per subscription), how many members
//! of a conversation are online, and the typing signal.
//!
//! Changes pushed after a subscription and other users' typing arrive as
//! [`crate::Event::PresenceChanged`] and [`crate::Event::Typing`] from
//! [`TernClient::next_event`].

use tern_proto::body::presence::{
    PresenceEntry as WireEntry, PresenceState as WireState, PresenceVisibility as WireVisibility,
};

use crate::{TernClient, TernError};

/// What a user is doing, as this account may see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum PresenceState {
    /// This account may not see the user (no shared conversation, hidden,
    /// blocked, or no such user): one answer for every reason.
    Unknown,
    Online,
    Away,
    /// Connected and busy (do not disturb).
    Busy,
    /// No device connected.
    Offline,
}

/// The state a device sets for itself ([`TernClient::set_presence`]);
/// `Offline` is what others see once no device is connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum OwnPresence {
    Online,
    Away,
    Busy,
}

/// Who sees this account's presence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum PresenceVisibility {
    /// Users it shares a conversation with (the default).
    Shared,
    /// Anyone it does not block.
    Everyone,
    /// Nobody; and it then sees nobody's presence either (as in WhatsApp).
    Nobody,
}

/// One user's presence.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct PresenceEntry {
    pub user: String,
    pub state: PresenceState,
    /// The account's status text; `None` when unset or not visible.
    pub status_text: Option<String>,
    /// When the user was last online (server time, ms since the Unix
    /// epoch); 0 when unknown or not visible.
    pub last_seen_ms: u64,
}

#[uniffi::export]
impl TernClient {
    /// Sets this device's state and, with `Some`, the account's status
    /// text (empty clears it; at most 140 characters, no control
    /// characters). The account is Online while any device is, Busy if one
    /// is busy, Away when all are away.
    ///
    /// # Errors
    /// `Server` with `InvalidArgument` (a bad status text).
    pub fn set_presence(
        &self,
        state: OwnPresence,
        status_text: Option<String>,
    ) -> Result<(), TernError> {
        let state = match state {
            OwnPresence::Online => WireState::Online,
            OwnPresence::Away => WireState::Away,
            OwnPresence::Busy => WireState::Busy,
        };
        let transport = self.client.transport();
        self.run(transport.set_presence(state, status_text.as_deref()))
    }

    /// Sets who sees this account's presence.
    pub fn set_presence_visibility(&self, visibility: PresenceVisibility) -> Result<(), TernError> {
        let visibility = match visibility {
            PresenceVisibility::Shared => WireVisibility::Shared,
            PresenceVisibility::Everyone => WireVisibility::Everyone,
            PresenceVisibility::Nobody => WireVisibility::Nobody,
        };
        let transport = self.client.transport();
        self.run(transport.set_presence_visibility(visibility))
    }

    /// Subscribes this connection to the presence of `users` (at most 256
    /// per call, 1,000 in all) and returns each one's entry, in order. A
    /// user this account may not see is `Unknown` and not subscribed.
    /// Subscriptions end with the connection.
    ///
    /// # Errors
    /// `InvalidArgument` (over 256 users), `Server` with `LimitExceeded`.
    pub fn subscribe_presence(&self, users: Vec<String>) -> Result<Vec<PresenceEntry>, TernError> {
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        let entries = self.run(self.client.transport().subscribe_presence(&users))?;
        Ok(entries.into_iter().map(entry).collect())
    }

    /// Ends this connection's presence subscriptions to `users`.
    pub fn unsubscribe_presence(&self, users: Vec<String>) -> Result<(), TernError> {
        let users: Vec<&str> = users.iter().map(String::as_str).collect();
        self.run(self.client.transport().unsubscribe_presence(&users))
    }

    /// How many members of a conversation are online (Online or Busy) as
    /// this account may see them, itself included.
    ///
    /// # Errors
    /// `Server` with `NotFound`, `NotMember`.
    pub fn count_online(&self, conversation_id: u64) -> Result<u32, TernError> {
        self.run(self.client.transport().count_online(conversation_id))
    }

    /// Says this device starts (`true`) or stops (`false`) typing in a
    /// conversation. Fire and forget (a QUIC datagram when it fits): while
    /// typing, call it again every 3 seconds; members' devices stop showing
    /// it 10 seconds after the last one. The server drops it silently for
    /// a non-member, past its rate limit, or to users who block this one.
    pub fn typing(&self, conversation_id: u64, typing: bool) -> Result<(), TernError> {
        self.run(self.client.transport().typing(conversation_id, typing))
    }
}

pub(crate) fn entry(e: WireEntry) -> PresenceEntry {
    let state = match e.state {
        WireState::Unknown => PresenceState::Unknown,
        WireState::Online => PresenceState::Online,
        WireState::Away => PresenceState::Away,
        WireState::Busy => PresenceState::Busy,
        WireState::Offline => PresenceState::Offline,
    };
    PresenceEntry {
        user: e.user,
        state,
        status_text: e.status_text,
        last_seen_ms: e.last_seen_ms,
    }
}
