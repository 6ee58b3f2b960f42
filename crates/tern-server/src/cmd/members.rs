//! AddMembers and RemoveMembers, applied on the conversation's owner. Only
//! groups change membership; only administrators add members and remove
//! other members, and every member may remove themselves (leave; see
//! [`admin`] for who administers, and the promotion when the last
//! administrator leaves). Adding a member or removing a non-member is
//! refused, and nothing changes. Added users must consent (see
//! [`consent`]).

use super::create::info;
use super::{admin, consent, require_users};
use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use tern_proto::fb::ErrorCode;
use tern_store::{ConversationId, ConversationKind};

pub async fn add(
    owner: &mut Owner,
    caller: &Caller,
    id: ConversationId,
    members: Vec<String>,
) -> Outcome {
    Outcome::or_refused(change(owner, caller, id, members, Change::Add).await)
}

pub async fn remove(
    owner: &mut Owner,
    caller: &Caller,
    id: ConversationId,
    members: Vec<String>,
) -> Outcome {
    Outcome::or_refused(change(owner, caller, id, members, Change::Remove).await)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    Add,
    Remove,
}

async fn change(
    owner: &mut Owner,
    caller: &Caller,
    id: ConversationId,
    members: Vec<String>,
    change: Change,
) -> Result<Outcome, Reject> {
    if members.is_empty() {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            "name at least one member",
        ));
    }
    let state = owner.conversation(id).await?;
    state.require_member(caller)?;
    if state.record.kind != ConversationKind::Group {
        return Err(Reject::new(
            ErrorCode::Forbidden,
            "only group conversations change members",
        ));
    }
    // Adding a member twice, or removing someone not in the group, is a
    // mistake to report, not a change to acknowledge.
    let misplaced: Vec<String> = members
        .iter()
        .filter(|m| state.record.members.contains(*m) == (change == Change::Add))
        .cloned()
        .collect();
    let (add, remove) = match change {
        Change::Add => {
            admin::require_adder(state, caller)?;
            require_users(owner.ctx.store.as_ref(), &members).await?;
            (members, Vec::new())
        }
        Change::Remove => {
            if members.iter().any(|m| *m != caller.user) {
                admin::require_admin(state, caller, "remove other members")?;
            }
            (Vec::new(), members)
        }
    };
    refuse_misplaced(&misplaced, change)?;
    if change == Change::Add {
        consent::check_additions(&owner.ctx, &caller.user, Some(id), &add).await?;
    }
    let record = owner.update_members(id, &add, &remove).await?;
    consent::after_additions(&owner.ctx, &caller.user, Some(id), &add).await?;
    let outcome = Outcome::durable(Ok(info(&record, false)));
    Ok(match admin::after_removal(owner, id).await? {
        Some(push) => outcome.with(push),
        None => outcome,
    })
}

/// Refuses the whole change, naming the users it is wrong about.
fn refuse_misplaced(misplaced: &[String], change: Change) -> Result<(), Reject> {
    if misplaced.is_empty() {
        return Ok(());
    }
    let what = match change {
        Change::Add => "already a member",
        Change::Remove => "not a member",
    };
    Err(Reject::new(
        ErrorCode::InvalidArgument,
        format!("{what} of this group: {}", misplaced.join(", ")),
    ))
}
