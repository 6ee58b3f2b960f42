//! Group administrators (issue 10), enforced by the group's owner.
//!
//! - The creator is the first administrator: a group whose settings never
//!   stored administrators has the creator (while a member) as its only one.
//! - Only administrators add members (unless `SetMemberAdds` lets every
//!   member add) and remove other members, on the plain path (AddMembers,
//!   RemoveMembers) and in Commits; any member removes themself (leaves).
//!   Only administrators set a group's timer and who may add.
//! - `SetAdmin` (by an administrator) makes a member one or not; the last
//!   administrator cannot step down (`InvalidArgument`), but may leave: when
//!   a change leaves no administrator among the members, the longest-standing
//!   member (lowest first seq of its current membership; ties: the lowest
//!   handle) is promoted.
//! - Every change is stored with the conversation's settings and pushed to
//!   every member's devices as `Admins`.

use std::collections::BTreeSet;
use std::sync::Arc;

use tern_proto::body::settings::{Admins, ListAdmins, SetAdmin, SetMemberAdds};
use tern_proto::fb::ErrorCode;
use tern_proto::{Body, Frame};
use tern_store::{ConversationId, ConversationKind, UserId};

use crate::effects::{Effect, Outcome};
use crate::mesh::{Caller, Reject};
use crate::owner::{ConvState, Owner};

/// The group's administrators among its members (see the module docs).
pub fn admins(state: &ConvState) -> BTreeSet<UserId> {
    let record = &state.record;
    if state.settings.admins.is_empty() {
        return [&record.creator]
            .into_iter()
            .filter(|c| record.members.contains(*c))
            .cloned()
            .collect();
    }
    let stored = state.settings.admins.iter();
    stored
        .filter(|a| record.members.contains(*a))
        .cloned()
        .collect()
}

/// `Forbidden` unless `caller` may add members: an administrator, or any
/// member where the group lets everyone add.
pub fn require_adder(state: &ConvState, caller: &Caller) -> Result<(), Reject> {
    match state.settings.everyone_adds {
        true => Ok(()),
        false => require_admin(state, caller, "add members"),
    }
}

/// `Forbidden` unless `caller` administers the group.
pub fn require_admin(state: &ConvState, caller: &Caller, what: &str) -> Result<(), Reject> {
    if admins(state).contains(&caller.user) {
        return Ok(());
    }
    Err(Reject::new(
        ErrorCode::Forbidden,
        format!("only the group's administrators {what}; ask one of them (ListAdmins)"),
    ))
}

/// After members left or were removed: drops them from the stored
/// administrators and, if none remains, promotes the longest-standing
/// member. Returns the push announcing a change, if any.
///
/// # Errors
/// `Internal` on a store failure.
pub async fn after_removal(
    owner: &mut Owner,
    id: ConversationId,
) -> Result<Option<Effect>, Reject> {
    let store = owner.ctx.store.clone();
    let state = owner.conversation(id).await?;
    if state.record.kind != ConversationKind::Group || state.record.members.is_empty() {
        return Ok(None);
    }
    let current = admins(state);
    let stored = state.settings.admins.clone();
    if !current.is_empty() && (stored.is_empty() || stored == current) {
        return Ok(None);
    }
    let mut next = current;
    if next.is_empty() {
        let members: Vec<UserId> = state.record.members.iter().cloned().collect();
        let mut oldest: Option<(u64, UserId)> = None;
        for member in members {
            let since = store.member_since(id, &member).await;
            let since = since.map_err(Reject::store)?.unwrap_or(u64::MAX);
            if oldest.as_ref().is_none_or(|(s, _)| since < *s) {
                oldest = Some((since, member));
            }
        }
        next.extend(oldest.map(|(_, member)| member));
    }
    store_admins(owner, id, next).await.map(Some)
}

/// Stores `admins` with the group's settings and builds their push.
async fn store_admins(
    owner: &mut Owner,
    id: ConversationId,
    next: BTreeSet<UserId>,
) -> Result<Effect, Reject> {
    let store = owner.ctx.store.clone();
    let state = owner.conversation(id).await?;
    let mut settings = state.settings.clone();
    settings.admins = next;
    store
        .put_settings(id, &settings)
        .await
        .map_err(Reject::store)?;
    let state = owner.conversation(id).await?;
    state.settings = settings;
    let members: Vec<UserId> = state.record.members.iter().cloned().collect();
    let push = answer(id, state);
    Ok(Effect::Notify {
        users: Arc::from(members),
        frame: Frame::new(0, push).encode(),
    })
}

fn answer(id: ConversationId, state: &ConvState) -> Body {
    Body::Admins(Admins {
        conversation_id: id,
        admins: admins(state).into_iter().collect(),
        everyone_adds: state.settings.everyone_adds,
    })
}

/// The group of `id`, for a member: `Forbidden` for other kinds.
async fn group<'a>(
    owner: &'a mut Owner,
    caller: &Caller,
    id: ConversationId,
) -> Result<&'a mut ConvState, Reject> {
    let state = owner.conversation(id).await?;
    state.require_member(caller)?;
    if state.record.kind != ConversationKind::Group {
        return Err(Reject::new(
            ErrorCode::Forbidden,
            "only group conversations have administrators",
        ));
    }
    Ok(state)
}

/// ListAdmins: the group's administrators, for a member.
pub async fn list(owner: &mut Owner, caller: &Caller, b: ListAdmins) -> Outcome {
    let id = b.conversation_id;
    let result = group(owner, caller, id)
        .await
        .map(|state| answer(id, state));
    Outcome::immediate(result)
}

/// SetAdmin: an administrator makes a member one, or not.
pub async fn set(owner: &mut Owner, caller: &Caller, b: SetAdmin) -> Outcome {
    Outcome::or_refused(set_checked(owner, caller, b).await)
}

async fn set_checked(owner: &mut Owner, caller: &Caller, b: SetAdmin) -> Result<Outcome, Reject> {
    let id = b.conversation_id;
    let state = group(owner, caller, id).await?;
    require_admin(state, caller, "choose administrators")?;
    if !state.record.members.contains(&b.user) {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            format!("{} is not a member of this group", b.user),
        ));
    }
    let mut next = admins(state);
    match b.admin {
        true => next.insert(b.user),
        false => next.remove(&b.user),
    };
    if next.is_empty() {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            "a group keeps at least one administrator: make another member one first",
        ));
    }
    let push = store_admins(owner, id, next).await?;
    let state = owner.conversation(id).await?;
    let reply = answer(id, state);
    Ok(Outcome::durable(Ok(reply)).with(push))
}

/// SetMemberAdds: an administrator lets every member add members, or only
/// administrators.
pub async fn set_member_adds(owner: &mut Owner, caller: &Caller, b: SetMemberAdds) -> Outcome {
    Outcome::or_refused(set_member_adds_checked(owner, caller, b).await)
}

async fn set_member_adds_checked(
    owner: &mut Owner,
    caller: &Caller,
    b: SetMemberAdds,
) -> Result<Outcome, Reject> {
    let id = b.conversation_id;
    let state = group(owner, caller, id).await?;
    require_admin(state, caller, "choose who may add members")?;
    let current = admins(state);
    let before = state.settings.everyone_adds;
    state.settings.everyone_adds = b.everyone;
    // Stored with the administrators (made explicit if they were implicit).
    let stored = store_admins(owner, id, current).await;
    let push = match stored {
        Ok(push) => push,
        Err(reject) => {
            owner.conversation(id).await?.settings.everyone_adds = before;
            return Err(reject);
        }
    };
    let state = owner.conversation(id).await?;
    Ok(Outcome::durable(Ok(answer(id, state))).with(push))
}
