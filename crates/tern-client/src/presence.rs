//! The transport client's presence calls (issue 11, docs/PROTOCOL.md
//! §4.8): set this device's state and the account's status text, subscribe
//! to many users at once, count a conversation's online members, and say
//! who sees this account's presence. Changes to subscribed users arrive as
//! notices ([`crate::Client::next_notice`]) carrying `PresenceChanged`;
//! [`presence_change`] picks them out. Subscriptions belong to one
//! connection: after a reconnect ([`crate::Client::connections`] changes)
//! subscribe again.

use tern_proto::body::presence::{
    CountOnline, PresenceEntry, PresenceState, PresenceVisibility, SetPresence,
    SetPresenceVisibility, SubscribePresence, UnsubscribePresence,
};
use tern_proto::Body;

use crate::sdk::{Client, ClientError};

impl Client {
    /// Sets this device's state (Online, Away or Busy) and, with `Some`,
    /// the account's status text (empty clears it). The account is Online
    /// while any of its connected devices is, Busy if one is busy, Away
    /// when all are away, Offline when none is connected.
    ///
    /// # Errors
    /// `InvalidArgument`: another state, or a status text over 140
    /// characters or with control characters.
    pub async fn set_presence(
        &self,
        state: PresenceState,
        status_text: Option<&str>,
    ) -> Result<(), ClientError> {
        let set = SetPresence {
            state,
            status_text: status_text.map(str::to_owned),
        };
        self.request(set).await?;
        Ok(())
    }

    /// Subscribes this connection to the presence of `users` (at most 256
    /// at once) and returns each one's entry, in order. A user this
    /// account may not see (no shared conversation, hidden, blocked, or no
    /// such user) is `Unknown` and not subscribed.
    ///
    /// # Errors
    /// `OverLimit` (more than 256 users), `LimitExceeded` (past 1,000
    /// subscriptions on this connection).
    pub async fn subscribe_presence(
        &self,
        users: &[&str],
    ) -> Result<Vec<PresenceEntry>, ClientError> {
        let users = users.iter().map(|u| (*u).to_owned()).collect();
        Ok(self.request(SubscribePresence { users }).await?.entries)
    }

    /// Ends this connection's subscriptions to `users`.
    pub async fn unsubscribe_presence(&self, users: &[&str]) -> Result<(), ClientError> {
        let users = users.iter().map(|u| (*u).to_owned()).collect();
        self.request(UnsubscribePresence { users }).await?;
        Ok(())
    }

    /// How many members of `conversation_id` are online (Online or Busy)
    /// as this account may see them, itself included.
    ///
    /// # Errors
    /// `NotFound`, `NotMember`.
    pub async fn count_online(&self, conversation_id: u64) -> Result<u32, ClientError> {
        Ok(self.request(CountOnline { conversation_id }).await?.online)
    }

    /// Sets who sees this account's presence: users it shares a
    /// conversation with (the default), everyone it does not block, or
    /// nobody (and then it sees nobody's either, as in WhatsApp).
    pub async fn set_presence_visibility(
        &self,
        visibility: PresenceVisibility,
    ) -> Result<(), ClientError> {
        self.request(SetPresenceVisibility { visibility }).await?;
        Ok(())
    }
}

/// The presence entry a notice carries, if it is a `PresenceChanged`.
pub fn presence_change(notice: &Body) -> Option<&PresenceEntry> {
    match notice {
        Body::PresenceChanged(changed) => Some(&changed.entry),
        _ => None,
    }
}
