//! Blocking (issue 10): Block, Unblock and ListBlocked on the connection's
//! shard, and the two checks the owner makes with the block lists.
//!
//! A block is per account (every device). While A blocks B:
//! - B's sends in the direct conversation of A and B are answered as
//!   accepted — `SendAck{conversation_id, seq: 0, server_time_ms: now,
//!   duplicate: false}` — and neither stored nor delivered ([`drops_send`]).
//!   Seq 0 never names a stored message (seqs start at 1), so the answer
//!   takes no seq: A's head, Sync and History do not move, and no later
//!   message can share a seq with it in any client's store.
//! - Every other request by which B would change that conversation for A
//!   (SetTimer: direct conversations have no administrators, members or
//!   invitations to change) is answered as accepted and changes and
//!   announces nothing ([`silenced`]). Purging one's own messages stays
//!   allowed: it only takes back what B sent before the block.
//! - B's adds of A to a group (CreateConversation, AddMembers, a Commit) are
//!   refused exactly as a missing consent is (`ConsentRequired`), and B's
//!   invitations of A are answered `Done` and dropped ([`refuses`]).
//!
//! The owner caches, per conversation and sender, whether a send is to be
//! dropped, tagged with the process-wide [`GENERATION`] of block lists, which
//! every Block and Unblock bumps after its write; a changed generation makes
//! the next send read the store again. (One process; a cluster needs the
//! bump carried to other nodes.)

use std::sync::atomic::{AtomicU64, Ordering};

use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use crate::shard::ShardCtx;
use tern_proto::body::messaging::{Done, SendAck};
use tern_proto::body::safety::{Blocked, MAX_BLOCKED_USERS};
use tern_proto::fb::ErrorCode;
use tern_proto::Body;
use tern_store::{BlockOutcome, ConversationId, ConversationKind, Store};

use super::require_users;

/// Bumped after every change of any block list in this process.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The current generation of block lists.
fn generation() -> u64 {
    GENERATION.load(Ordering::SeqCst)
}

fn changed() {
    GENERATION.fetch_add(1, Ordering::SeqCst);
}

/// Block: adds `user` to the caller's block list; Done once durable.
///
/// # Errors
/// `InvalidArgument` (a bad handle, the caller itself), `NotFound` (no such
/// user), `LimitExceeded` (the list holds [`MAX_BLOCKED_USERS`] already).
pub async fn block(ctx: &ShardCtx, caller: &Caller, user: String) -> Result<Outcome, Reject> {
    require_other(caller, &user)?;
    require_users(ctx.store.as_ref(), std::slice::from_ref(&user)).await?;
    let outcome = ctx
        .store
        .block(&caller.user, &user, MAX_BLOCKED_USERS)
        .await
        .map_err(Reject::store)?;
    changed();
    if outcome != BlockOutcome::Full {
        super::presence::blocked(ctx, &caller.user, &user).await;
    }
    if outcome == BlockOutcome::Full {
        return Err(Reject::new(
            ErrorCode::LimitExceeded,
            format!(
                "you block {MAX_BLOCKED_USERS} users already, the most an account may; \
                 unblock someone first"
            ),
        ));
    }
    Ok(Outcome::durable(Ok(Done.into())))
}

/// Unblock: removes `user` from the caller's block list (Done also when it
/// was not there), once durable.
///
/// # Errors
/// `InvalidArgument` (a bad handle), `NotFound` (no such user, and not on
/// the caller's list: a typo is told, not answered as done).
pub async fn unblock(ctx: &ShardCtx, caller: &Caller, user: String) -> Result<Outcome, Reject> {
    tern_proto::handle::validate_handle(&user)
        .map_err(|e| Reject::new(ErrorCode::InvalidArgument, e.to_string()))?;
    let exists = !ctx
        .store
        .devices(&user)
        .await
        .map_err(Reject::store)?
        .is_empty();
    if !exists && !refuses(ctx.store.as_ref(), &caller.user, &user).await? {
        return Err(Reject::new(
            ErrorCode::NotFound,
            format!("user {user:?} does not exist; `ListBlocked` lists whom you block"),
        ));
    }
    ctx.store
        .unblock(&caller.user, &user)
        .await
        .map_err(Reject::store)?;
    changed();
    Ok(Outcome::durable(Ok(Done.into())))
}

/// ListBlocked: the caller's block list, by handle.
pub async fn list(ctx: &ShardCtx, caller: &Caller) -> Result<Outcome, Reject> {
    let users = ctx
        .store
        .blocked_users(&caller.user)
        .await
        .map_err(Reject::store)?;
    Ok(Outcome::immediate(Ok(Blocked { users }.into())))
}

fn require_other(caller: &Caller, user: &str) -> Result<(), Reject> {
    tern_proto::handle::validate_handle(user)
        .map_err(|e| Reject::new(ErrorCode::InvalidArgument, e.to_string()))?;
    match user == caller.user {
        true => Err(Reject::new(
            ErrorCode::InvalidArgument,
            "you cannot block yourself",
        )),
        false => Ok(()),
    }
}

/// Whether `user` blocked `adder`, so that `adder` may neither add `user` to
/// a group nor invite them.
///
/// # Errors
/// `Internal` on a store failure.
pub async fn refuses(store: &dyn Store, user: &str, adder: &str) -> Result<bool, Reject> {
    store.is_blocked(user, adder).await.map_err(Reject::store)
}

/// For a send by `caller` (a member) in conversation `id`: the answer to
/// give instead of storing it when the caller is [`silenced`] there, else
/// `None`.
///
/// # Errors
/// `Internal` on a store failure.
pub async fn drops_send(
    owner: &mut Owner,
    caller: &Caller,
    id: ConversationId,
) -> Result<Option<Body>, Reject> {
    let now = owner.ctx.clock.now_ms();
    Ok(silenced(owner, caller, id).await?.then(|| {
        Body::SendAck(SendAck {
            conversation_id: id,
            seq: 0,
            server_time_ms: now,
            duplicate: false,
        })
    }))
}

/// Whether `caller` (a member) is silenced in conversation `id`: it is a
/// direct conversation whose other member blocks the caller. Every request
/// by which a silenced member would change the conversation (a send,
/// SetTimer) is answered as accepted and changes nothing (PROTOCOL.md §4.4).
///
/// # Errors
/// `Internal` on a store failure.
pub async fn silenced(
    owner: &mut Owner,
    caller: &Caller,
    id: ConversationId,
) -> Result<bool, Reject> {
    let store = owner.ctx.store.clone();
    let state = owner.conversation(id).await?;
    if state.record.kind != ConversationKind::Direct {
        return Ok(false);
    }
    let current = generation();
    if let Some(&(seen, blocked)) = state.blocked_senders.get(&caller.user) {
        if seen == current {
            return Ok(blocked);
        }
    }
    let mut blocked = false;
    for member in state.record.members.iter().filter(|m| **m != caller.user) {
        blocked |= store
            .is_blocked(member, &caller.user)
            .await
            .map_err(Reject::store)?;
    }
    let state = owner.conversation(id).await?;
    state
        .blocked_senders
        .insert(caller.user.clone(), (current, blocked));
    Ok(blocked)
}
