//! Presence requests (issue 11, docs/PROTOCOL.md §4.8) on the connection's
//! shard: SetPresence, SubscribePresence, UnsubscribePresence, CountOnline
//! and SetPresenceVisibility. This file decides who sees whom; the state
//! and its fan-out are [`crate::presence`]'s.
//!
//! Viewer V sees subject S (state, status text, last seen) iff V is S, or:
//! neither blocks the other, V's own visibility is not Nobody (reciprocal,
//! as WhatsApp's last seen), and S's visibility is Everyone, or Shared and
//! the two are members of one conversation. Anyone else gets `Unknown`,
//! the same answer as for a handle that names nobody, so an answer never
//! tells a block, a hidden user and a missing one apart.
//!
//! A subscription is checked when it is made. Blocks and narrowed
//! visibility end the subscriptions they no longer allow at once
//! ([`Revocation`]); leaving the last shared conversation takes effect at
//! the next subscription (subscriptions end with their connection anyway).

use std::collections::HashSet;

use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::presence::{ConnRef, Grant, Revocation};
use crate::shard::ShardCtx;
use tern_proto::body::messaging::Done;
use tern_proto::body::presence::{
    OnlineCount, PresenceEntry, PresenceSnapshot, PresenceVisibility, SetPresence,
    MAX_STATUS_TEXT_CHARS,
};
use tern_proto::fb::ErrorCode;
use tern_store::{ConversationId, PresenceVisibility as Stored, Store};

/// SetPresence: this device's state and maybe the account's status text.
///
/// # Errors
/// `InvalidArgument`: a state other than Online, Away or Busy; a status
/// text over [`MAX_STATUS_TEXT_CHARS`] characters or with control characters.
pub async fn set(ctx: &ShardCtx, conn: &ConnRef, body: SetPresence) -> Result<Outcome, Reject> {
    if !body.state.is_settable() {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            format!(
                "a device sets its state to Online, Away or Busy, not {:?}; Offline follows from disconnecting",
                body.state
            ),
        ));
    }
    if let Some(text) = &body.status_text {
        check_status_text(text)?;
    }
    ctx.presence.set(conn, body.state, body.status_text).await;
    Ok(Outcome::immediate(Ok(Done.into())))
}

fn check_status_text(text: &str) -> Result<(), Reject> {
    let chars = text.chars().count();
    if chars > MAX_STATUS_TEXT_CHARS {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            format!("a status text is at most {MAX_STATUS_TEXT_CHARS} characters, this one is {chars}; shorten it"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            "a status text is one line without control characters",
        ));
    }
    Ok(())
}

/// SubscribePresence: subscribes the connection to every user it may see
/// and answers each user's entry in request order (`Unknown` for the rest).
///
/// # Errors
/// `LimitExceeded` past `MAX_PRESENCE_SUBSCRIPTIONS` per connection;
/// `Internal` on a store failure. (Too many users per request is refused
/// before this runs, by `tern_proto::limits`.)
pub async fn subscribe(
    ctx: &ShardCtx,
    conn: &ConnRef,
    users: Vec<String>,
) -> Result<Outcome, Reject> {
    let mut view = Viewer::load(ctx.store.as_ref(), &conn.user).await?;
    let mut grants = Vec::new();
    let mut seen = HashSet::new();
    for user in &users {
        if !seen.insert(user.as_str()) {
            continue;
        }
        if let Some(shared) = view.may_see(ctx.store.as_ref(), user).await? {
            grants.push(Grant {
                subject: user.clone(),
                shared,
            });
        }
    }
    let snapshots = ctx
        .presence
        .subscribe(conn, &grants)
        .await
        .map_err(|e| Reject::new(ErrorCode::LimitExceeded, e.to_string()))?;
    let visible: std::collections::HashMap<&str, PresenceEntry> = grants
        .iter()
        .zip(snapshots)
        .map(|(g, s)| (g.subject.as_str(), s.entry(&g.subject)))
        .collect();
    let entries = users
        .iter()
        .map(|u| {
            visible
                .get(u.as_str())
                .cloned()
                .unwrap_or_else(|| PresenceEntry::unknown(u.clone()))
        })
        .collect();
    Ok(Outcome::immediate(Ok(PresenceSnapshot { entries }.into())))
}

/// UnsubscribePresence: Done, also for users not subscribed.
pub async fn unsubscribe(
    ctx: &ShardCtx,
    conn: &ConnRef,
    users: Vec<String>,
) -> Result<Outcome, Reject> {
    ctx.presence.unsubscribe(conn, &users).await;
    Ok(Outcome::immediate(Ok(Done.into())))
}

/// CountOnline: the members of `conversation` that are Online or Busy as
/// the caller may see them (the caller itself included).
///
/// # Errors
/// `NotFound` (no such conversation), `NotMember`, `Internal`.
pub async fn count_online(
    ctx: &ShardCtx,
    caller: &Caller,
    conversation: ConversationId,
) -> Result<Outcome, Reject> {
    let store = ctx.store.as_ref();
    let record = store
        .conversation(conversation)
        .await
        .map_err(Reject::store)?
        .ok_or_else(|| {
            Reject::new(
                ErrorCode::NotFound,
                format!("no conversation {conversation}"),
            )
        })?;
    if !record.members.contains(&caller.user) {
        return Err(Reject::new(
            ErrorCode::NotMember,
            format!("you are not a member of conversation {conversation}"),
        ));
    }
    let members: Vec<String> = record.members.into_iter().collect();
    let snapshots = ctx.presence.lookup(&members).await;
    let mut view = Viewer::load(store, &caller.user).await?;
    let mut online: u32 = 0;
    for (member, snapshot) in members.iter().zip(snapshots) {
        // Members share this conversation, so Shared and Everyone both show them.
        if snapshot.is_online() && view.may_see(store, member).await?.is_some() {
            online = online.saturating_add(1);
        }
    }
    let count = OnlineCount {
        conversation_id: conversation,
        online,
    };
    Ok(Outcome::immediate(Ok(count.into())))
}

/// SetPresenceVisibility: stores the setting (Done once durable) and ends
/// the subscriptions a narrower setting no longer allows.
///
/// # Errors
/// `Internal` on a store failure.
pub async fn set_visibility(
    ctx: &ShardCtx,
    caller: &Caller,
    visibility: PresenceVisibility,
) -> Result<Outcome, Reject> {
    let stored = to_store(visibility);
    ctx.store
        .set_presence_visibility(&caller.user, stored)
        .await
        .map_err(Reject::store)?;
    let user = caller.user.clone();
    match visibility {
        PresenceVisibility::Nobody => ctx.presence.revoke(Revocation::Hidden { user }).await,
        PresenceVisibility::Shared => ctx.presence.revoke(Revocation::Narrowed { user }).await,
        PresenceVisibility::Everyone => {}
    }
    Ok(Outcome::durable(Ok(Done.into())))
}

fn to_store(visibility: PresenceVisibility) -> Stored {
    match visibility {
        PresenceVisibility::Shared => Stored::Shared,
        PresenceVisibility::Everyone => Stored::Everyone,
        PresenceVisibility::Nobody => Stored::Nobody,
    }
}

/// Ends the presence subscriptions between `a` and `b` (after a block).
pub async fn blocked(ctx: &ShardCtx, a: &str, b: &str) {
    let pair = Revocation::Pair {
        a: a.to_owned(),
        b: b.to_owned(),
    };
    ctx.presence.revoke(pair).await;
}

/// One viewer's side of the visibility rule, loaded once per request.
struct Viewer {
    user: String,
    hides: bool,
    /// The viewer's conversations, read on first need.
    conversations: Option<HashSet<ConversationId>>,
}

impl Viewer {
    async fn load(store: &dyn Store, user: &str) -> Result<Viewer, Reject> {
        let own = store
            .presence_visibility(user)
            .await
            .map_err(Reject::store)?;
        Ok(Viewer {
            user: user.to_owned(),
            hides: own == Stored::Nobody,
            conversations: None,
        })
    }

    /// `None` if the viewer may not see `subject`, else whether the two
    /// share a conversation.
    async fn may_see(&mut self, store: &dyn Store, subject: &str) -> Result<Option<bool>, Reject> {
        if subject == self.user {
            return Ok(Some(true));
        }
        if self.hides || tern_proto::handle::validate_handle(subject).is_err() {
            return Ok(None);
        }
        let blocked = store
            .is_blocked(subject, &self.user)
            .await
            .map_err(Reject::store)?
            || store
                .is_blocked(&self.user, subject)
                .await
                .map_err(Reject::store)?;
        if blocked {
            return Ok(None);
        }
        let theirs = store
            .presence_visibility(subject)
            .await
            .map_err(Reject::store)?;
        if theirs == Stored::Nobody {
            return Ok(None);
        }
        let shared = self.shares(store, subject).await?;
        Ok((shared || theirs == Stored::Everyone).then_some(shared))
    }

    async fn shares(&mut self, store: &dyn Store, subject: &str) -> Result<bool, Reject> {
        if self.conversations.is_none() {
            let mine = store
                .user_conversations(&self.user)
                .await
                .map_err(Reject::store)?;
            self.conversations = Some(mine.into_iter().collect());
        }
        let theirs = store
            .user_conversations(subject)
            .await
            .map_err(Reject::store)?;
        let mine = self.conversations.as_ref();
        for id in theirs
            .iter()
            .filter(|c| mine.is_some_and(|m| m.contains(c)))
        {
            if !self.pending_request_to(store, subject, *id).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether conversation `id` is a message request the viewer sent to
    /// `subject` and `subject` has not accepted: until then the requester
    /// gets no presence from it (PROTOCOL.md §4.1.1), so it is not shared.
    async fn pending_request_to(
        &self,
        store: &dyn Store,
        subject: &str,
        id: ConversationId,
    ) -> Result<bool, Reject> {
        let Some(record) = store.conversation(id).await.map_err(Reject::store)? else {
            return Ok(false);
        };
        let from = super::reach::request_from(store, subject, &record).await?;
        Ok(from.is_some_and(|creator| creator == self.user))
    }
}
