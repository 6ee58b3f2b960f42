//! The transport client's presence calls (issue 11, docs/PROTOCOL.md
//! §4.8): set this device's state and the account's status text, subscribe
//! to many users at once, count a conversation's online members, and say
//! who sees this account's presence. Changes to subscribed users arrive as
//! notices ([`crate::Client::next_notice`]) carrying `PresenceChanged`;
//! [`presence_change`] picks them out. Subscriptions belong to one
//! connection on the server (PROTOCOL.md §4.8), so the client remembers
//! them ([`PresenceMemory`]) and, after every reconnect, sets this device's
//! state again, subscribes again and hands the app each subscribed user's
//! current entry as a `PresenceChanged` notice (what changed while it was
//! away), as Signal and WhatsApp clients refresh presence on reconnect.

use tern_proto::body::presence::{
    CountOnline, PresenceEntry, PresenceState, PresenceVisibility, SetPresence,
    SetPresenceVisibility, SubscribePresence, UnsubscribePresence,
};
use tern_proto::Body;

use std::collections::BTreeSet;
use std::sync::Mutex;

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
        self.request(set.clone()).await?;
        self.presence_memory().set(set);
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
        let users: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        let entries = self
            .request(SubscribePresence {
                users: users.clone(),
            })
            .await?
            .entries;
        self.presence_memory().subscribed(&entries);
        Ok(entries)
    }

    /// Ends this connection's subscriptions to `users`.
    pub async fn unsubscribe_presence(&self, users: &[&str]) -> Result<(), ClientError> {
        let users: Vec<String> = users.iter().map(|u| (*u).to_owned()).collect();
        self.presence_memory().unsubscribed(&users);
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

/// What this client asked of presence, to ask again on a new connection:
/// this device's last state and status text, and the users it subscribed
/// to (those the server answered `Unknown` for are not subscribed there,
/// so not here either; each is asked again only when the app subscribes
/// again). At most [`MAX_REMEMBERED`] users (the server's per-connection
/// bound is 1,000).
#[derive(Debug, Default)]
pub(crate) struct PresenceMemory {
    state: Mutex<Remembered>,
}

#[derive(Debug, Default)]
struct Remembered {
    own: Option<SetPresence>,
    users: BTreeSet<String>,
}

/// Users remembered at most (the server allows 1,000 per connection).
pub(crate) const MAX_REMEMBERED: usize = 1_000;

/// Users per re-subscription request (the protocol's bound).
pub(crate) const SUBSCRIBE_CHUNK: usize = 256;

impl PresenceMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, Remembered> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set(&self, set: SetPresence) {
        self.lock().own = Some(set);
    }

    fn subscribed(&self, entries: &[PresenceEntry]) {
        let mut state = self.lock();
        for entry in entries {
            if entry.state == PresenceState::Unknown {
                state.users.remove(&entry.user);
            } else if state.users.len() < MAX_REMEMBERED {
                state.users.insert(entry.user.clone());
            }
        }
    }

    fn unsubscribed(&self, users: &[String]) {
        let mut state = self.lock();
        for user in users {
            state.users.remove(user);
        }
    }

    /// What to ask again: the state to set, and the users in requests of
    /// at most [`SUBSCRIBE_CHUNK`].
    pub(crate) fn to_restore(&self) -> (Option<SetPresence>, Vec<SubscribePresence>) {
        let state = self.lock();
        let users: Vec<String> = state.users.iter().cloned().collect();
        let requests = users
            .chunks(SUBSCRIBE_CHUNK)
            .map(|chunk| SubscribePresence {
                users: chunk.to_vec(),
            })
            .collect();
        (state.own.clone(), requests)
    }
}
