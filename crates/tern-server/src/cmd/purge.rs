//! PurgeMessage (delete for everyone), applied on the conversation's owner:
//! the sender of a message (or, in a group, an administrator; see
//! `admin`), within `purge_window_secs` of its server time,
//! has its ciphertext replaced by a tombstone at the same seq (same sender,
//! client message id, server time and expiry; flags
//! [`flags::TOMBSTONE`]; empty payload), so Sync and History keep dense
//! seqs. The answer (`Done`) follows the tombstone's persist; the old bytes
//! are erased from the store's files by the next erasure, which shard 0
//! runs every `purge_erase_interval_secs` when something was purged
//! (`Store::erase_purged`; the fjall backend documents what that reaches).
//! Nothing is pushed: the sender's client tells the members itself, end to
//! end encrypted (E2EE.md, delete for everyone).

use tern_proto::body::messaging::Done;
use tern_proto::body::safety::PurgeMessage;
use tern_proto::fb::ErrorCode;
use tern_proto::flags;

use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use tern_store::ConversationKind;

use super::admin;

pub async fn apply(owner: &mut Owner, caller: &Caller, b: PurgeMessage) -> Outcome {
    Outcome::or_refused(purge(owner, caller, b).await)
}

async fn purge(owner: &mut Owner, caller: &Caller, b: PurgeMessage) -> Result<Outcome, Reject> {
    let (id, seq) = (b.conversation_id, b.seq);
    let ctx = owner.ctx.clone();
    let now = ctx.clock.now_ms();
    let state = owner.conversation(id).await?;
    state.require_member(caller)?;
    let moderates =
        state.record.kind == ConversationKind::Group && admin::admins(state).contains(&caller.user);
    let found = ctx.store.messages(id, seq, 1, now).await;
    let Some(msg) = found
        .map_err(Reject::store)?
        .into_iter()
        .find(|m| m.seq == seq)
    else {
        return Err(Reject::new(
            ErrorCode::NotFound,
            format!("conversation {id} holds no message {seq} (never sent, or expired)"),
        ));
    };
    if msg.sender_user != caller.user && !moderates {
        return Err(Reject::new(
            ErrorCode::NotSender,
            format!(
                "message {seq} was sent by {}; only its sender (or a group administrator) may delete it for everyone",
                msg.sender_user
            ),
        ));
    }
    if msg.flags & flags::TOMBSTONE != 0 {
        return Ok(Outcome::durable(Ok(Done.into())));
    }
    if msg.flags & (flags::MLS_COMMIT | flags::MLS_WELCOME) != 0 {
        return Err(Reject::new(
            ErrorCode::Forbidden,
            "MLS Commits and Welcomes keep the group's state; they cannot be deleted",
        ));
    }
    let window_secs = ctx.config.purge_window_secs;
    if now.saturating_sub(msg.server_time_ms) > window_secs.saturating_mul(1000) {
        return Err(Reject::new(
            ErrorCode::PurgeWindowClosed,
            format!("message {seq} is older than {window_secs} s, the longest this server lets its sender delete it for everyone (purge_window_secs)"),
        ));
    }
    let store = ctx.store.clone();
    store
        .purge_message(
            id,
            seq,
            flags::TOMBSTONE | (msg.flags & flags::DISAPPEARING),
        )
        .await
        .map_err(Reject::store)?;
    Ok(Outcome::durable(Ok(Done.into())))
}
