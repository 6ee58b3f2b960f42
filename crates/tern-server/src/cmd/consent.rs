//! Consent before membership (issue #9): who may add a user to a group,
//! the cap on groups per user, contacts, and invitations. The privacy
//! settings themselves (SetPrivacy, GetPrivacy) and who may start a direct
//! conversation are in [`super::reach`].
//!
//! A may add B to group C (CreateConversation of a group, AddMembers, a
//! Commit's additions) iff B's `group_adds` is `Everyone`, or A is one of
//! B's contacts, or B accepted an invitation to C in the last
//! [`INVITATION_TTL_MS`]; otherwise `ConsentRequired`. Then B must be in
//! fewer than `groups_per_user` groups, else `LimitExceeded`. B's contacts
//! are the users B chose: the other members of conversations B created,
//! users B added to groups, the creator of a direct conversation B sent in.
//! A user B blocked never has B's consent, and is answered as above
//! (`ConsentRequired`), so the refusal does not tell a block from a missing
//! consent; an invitation from them is answered `Done` and dropped.

use std::sync::Arc;

use crate::effects::{Effect, Outcome};
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use crate::shard::ShardCtx;
use tern_proto::body::messaging::Done;
use tern_proto::body::privacy::{
    self, Invitation, InvitationAnswered, Invitations, Invited, INVITATION_TTL_MS,
    MAX_PENDING_INVITATIONS,
};
use tern_proto::fb::ErrorCode;
use tern_proto::{Body, Frame};
use tern_store::{ConversationId, ConversationKind, InvitationRecord, Store};

use super::require_users;

/// Checks that `adder` may add every one of `users` to group `group`
/// (`None`: a group being created): consent first, then the cap.
///
/// # Errors
/// `ConsentRequired` or `LimitExceeded` naming the first user refused;
/// `Internal` on a store failure.
pub async fn check_additions(
    ctx: &ShardCtx,
    adder: &str,
    group: Option<ConversationId>,
    users: &[String],
) -> Result<(), Reject> {
    let now = ctx.clock.now_ms();
    for user in users.iter().filter(|u| *u != adder) {
        if !consents(ctx.store.as_ref(), adder, group, user, now).await? {
            return Err(consent_required(user));
        }
    }
    for user in users {
        check_cap(ctx, user).await?;
    }
    Ok(())
}

async fn consents(
    store: &dyn Store,
    adder: &str,
    group: Option<ConversationId>,
    user: &str,
    now_ms: u64,
) -> Result<bool, Reject> {
    if super::block::refuses(store, user, adder).await? {
        return Ok(false);
    }
    if store.group_adds(user).await.map_err(Reject::store)? == tern_store::GroupAdds::Everyone {
        return Ok(true);
    }
    if store.is_contact(user, adder).await.map_err(Reject::store)? {
        return Ok(true);
    }
    let Some(group) = group else {
        return Ok(false);
    };
    let invitation = store.invitation(user, group).await.map_err(Reject::store)?;
    Ok(invitation.is_some_and(|i| i.accepted && !expired(&i, now_ms)))
}

fn consent_required(user: &str) -> Reject {
    Reject::new(
        ErrorCode::ConsentRequired,
        format!(
            "{user} joins groups only from their contacts; send {user} an invitation \
             (Invite) and add them once they accept it"
        ),
    )
}

/// `LimitExceeded` when `user` is in `groups_per_user` groups already. Only
/// a user with that many conversations of any kind pays for counting groups.
async fn check_cap(ctx: &ShardCtx, user: &str) -> Result<(), Reject> {
    let cap = ctx.config.groups_per_user;
    let cap_len = usize::try_from(cap).unwrap_or(usize::MAX);
    let store = ctx.store.as_ref();
    let some = store.user_conversations_after(user, 0, cap_len).await;
    if some.map_err(Reject::store)?.len() < cap_len {
        return Ok(());
    }
    let groups = store.group_count(user).await.map_err(Reject::store)?;
    if groups < cap_len {
        return Ok(());
    }
    Err(Reject::new(
        ErrorCode::LimitExceeded,
        format!("{user} is in {groups} groups already, the most this server allows (groups_per_user = {cap})"),
    ))
}

/// After `adder` added `users` to `group` (or created a conversation with
/// them): they become `adder`'s contacts, and their accepted invitations
/// to `group` are used up.
///
/// # Errors
/// `Internal` on a store failure.
pub async fn after_additions(
    ctx: &ShardCtx,
    adder: &str,
    group: Option<ConversationId>,
    users: &[String],
) -> Result<(), Reject> {
    let store = ctx.store.as_ref();
    store
        .add_contacts(adder, users)
        .await
        .map_err(Reject::store)?;
    let Some(group) = group else {
        return Ok(());
    };
    for user in users {
        store
            .remove_invitation(user, group)
            .await
            .map_err(Reject::store)?;
    }
    Ok(())
}

/// On a send in a direct conversation by the member who did not create
/// it: the creator becomes that member's contact. Recorded once per
/// conversation per process (a flag on the owner's cached state), so a
/// send costs one check after the first.
pub async fn note_reply(owner: &mut Owner, caller: &Caller, id: ConversationId) {
    let Ok(state) = owner.conversation(id).await else {
        return;
    };
    let record = &state.record;
    if state.contact_noted
        || record.kind != ConversationKind::Direct
        || record.creator == caller.user
    {
        return;
    }
    let creator = [record.creator.clone()];
    match owner.ctx.store.add_contacts(&caller.user, &creator).await {
        Ok(()) => {
            if let Ok(state) = owner.conversation(id).await {
                state.contact_noted = true;
            }
        }
        Err(error) => {
            tracing::warn!(%error, "could not record a contact; retried on the next send")
        }
    }
}

fn expired(invitation: &InvitationRecord, now_ms: u64) -> bool {
    now_ms.saturating_sub(invitation.created_ms) >= INVITATION_TTL_MS
}

/// ListInvitations: the caller's pending, unexpired invitations, oldest first.
pub async fn list(ctx: &ShardCtx, caller: &Caller) -> Result<Outcome, Reject> {
    let now = ctx.clock.now_ms();
    let held = ctx
        .store
        .invitations(&caller.user)
        .await
        .map_err(Reject::store)?;
    let invitations = held
        .into_iter()
        .filter(|i| !i.accepted && !expired(i, now))
        .map(|i| Invitation {
            conversation_id: i.conversation_id,
            inviter: i.inviter,
            created_ms: i.created_ms,
        })
        .collect();
    Ok(Outcome::immediate(Ok(Invitations { invitations }.into())))
}

/// AnswerInvitation: accepting records the caller's consent to be added to
/// the group (for [`INVITATION_TTL_MS`], used up by the add); declining
/// deletes the invitation (and withdraws an acceptance). The inviter's
/// devices get InvitationAnswered.
///
/// # Errors
/// `NotFound` when the caller holds no unexpired invitation to the group.
pub async fn answer(
    ctx: &ShardCtx,
    caller: &Caller,
    id: ConversationId,
    accept: bool,
) -> Result<Outcome, Reject> {
    let now = ctx.clock.now_ms();
    let store = ctx.store.as_ref();
    let held = store.invitation(&caller.user, id).await;
    let Some(mut invitation) = held.map_err(Reject::store)?.filter(|i| !expired(i, now)) else {
        return Err(Reject::new(
            ErrorCode::NotFound,
            format!("no pending invitation to conversation {id}; invitations expire after 7 days"),
        ));
    };
    if accept && invitation.accepted {
        return Ok(Outcome::durable(Ok(Done.into())));
    }
    if accept {
        invitation.accepted = true;
        invitation.created_ms = now;
        store
            .put_invitation(&caller.user, &invitation, MAX_PENDING_INVITATIONS)
            .await
            .map_err(Reject::store)?;
    } else {
        store
            .remove_invitation(&caller.user, id)
            .await
            .map_err(Reject::store)?;
    }
    let push = Body::InvitationAnswered(InvitationAnswered {
        conversation_id: id,
        user: caller.user.clone(),
        accepted: accept,
    });
    Ok(Outcome::durable(Ok(Done.into())).with(notify(&invitation.inviter, push)))
}

fn notify(user: &str, body: Body) -> Effect {
    Effect::Notify {
        users: Arc::from(vec![user.to_owned()]),
        frame: Frame::new(0, body).encode(),
    }
}

/// Invite, on the group's owner: a member invites a user who is not one.
pub async fn invite(owner: &mut Owner, caller: &Caller, b: privacy::Invite) -> Outcome {
    Outcome::or_refused(invite_checked(owner, caller, b).await)
}

async fn invite_checked(
    owner: &mut Owner,
    caller: &Caller,
    b: privacy::Invite,
) -> Result<Outcome, Reject> {
    let (id, user) = (b.conversation_id, b.user);
    let state = owner.conversation(id).await?;
    state.require_member(caller)?;
    if state.record.kind != ConversationKind::Group {
        return Err(Reject::new(
            ErrorCode::Forbidden,
            "only group conversations take invitations",
        ));
    }
    if state.record.members.contains(&user) {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            format!("{user} is already a member of this group"),
        ));
    }
    let ctx = owner.ctx.clone();
    require_users(ctx.store.as_ref(), std::slice::from_ref(&user)).await?;
    let now = ctx.clock.now_ms();
    ctx.limits.invite(&caller.user, now)?;
    if super::block::refuses(ctx.store.as_ref(), &user, &caller.user).await? {
        // Answered as a stored invitation would be: a block is not told.
        return Ok(Outcome::durable(Ok(Done.into())));
    }
    store_invitation(ctx.store.as_ref(), &user, id, &caller.user, now).await?;
    let push = Body::Invited(Invited {
        conversation_id: id,
        inviter: caller.user.clone(),
    });
    Ok(Outcome::durable(Ok(Done.into())).with(notify(&user, push)))
}

/// Stores a pending invitation, unless the user already accepted one to
/// this group that is still valid (an invitation never takes consent back).
async fn store_invitation(
    store: &dyn Store,
    user: &str,
    id: ConversationId,
    inviter: &str,
    now: u64,
) -> Result<(), Reject> {
    let held = store.invitation(user, id).await.map_err(Reject::store)?;
    if held.is_some_and(|i| i.accepted && !expired(&i, now)) {
        return Ok(());
    }
    let record = InvitationRecord {
        conversation_id: id,
        inviter: inviter.to_owned(),
        created_ms: now,
        accepted: false,
    };
    store
        .put_invitation(user, &record, MAX_PENDING_INVITATIONS)
        .await
        .map_err(Reject::store)
}
