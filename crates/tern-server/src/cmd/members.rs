//! AddMembers and RemoveMembers, applied on the conversation's owner. Only
//! groups change membership; any member may add, the creator may remove
//! anyone, and every member may remove themselves (leave).

use super::create::info;
use super::require_users;
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
    let is_creator = state.record.creator == caller.user;
    let (add, remove) = match change {
        Change::Add => {
            require_users(owner.ctx.store.as_ref(), &members).await?;
            (members, Vec::new())
        }
        Change::Remove => {
            check_removal(is_creator, caller, &members)?;
            (Vec::new(), members)
        }
    };
    let record = owner.update_members(id, &add, &remove).await?;
    Ok(Outcome::durable(Ok(info(&record, false))))
}

fn check_removal(is_creator: bool, caller: &Caller, members: &[String]) -> Result<(), Reject> {
    if is_creator || members.iter().all(|m| *m == caller.user) {
        return Ok(());
    }
    Err(Reject::new(
        ErrorCode::Forbidden,
        "only the group's creator can remove other members; anyone may remove themselves",
    ))
}
