//! The MLS delivery-service duties of a group's owner (RFC 9420 §14,
//! RFC 9750): exactly one Commit per epoch, a Commit for any other epoch is
//! refused with the current epoch, membership follows accepted Commits, the
//! Welcome is sequenced (and so delivered) only after its Commit, and the
//! latest GroupInfo is kept for external joins.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;

use super::require_users;
use super::send::{append, to_wire, SendOp};
use crate::mesh::{Caller, Fanout, Reject};
use crate::owner::{Outcome, Owner};
use tern_proto::fb::ErrorCode;
use tern_proto::keys::{CommitBody, Conflict};
use tern_proto::{flags, Body, ErrorBody, Frame};
use tern_store::{ConversationId, ConversationKind, EpochOutcome, StoredMessage};

pub async fn apply(owner: &mut Owner, caller: &Caller, commit: CommitBody) -> Outcome {
    Outcome::or_refused(accept(owner, caller, commit).await)
}

async fn accept(owner: &mut Owner, caller: &Caller, commit: CommitBody) -> Result<Outcome, Reject> {
    let id = commit.conversation_id;
    let store = owner.ctx.store.clone();
    let state = owner.conversation(id).await?;
    state.require_member(caller)?;
    if state.record.kind != ConversationKind::Group {
        return Err(Reject::new(
            ErrorCode::Forbidden,
            "MLS commits apply to group conversations only",
        ));
    }
    check_changes(&state.record.members, &commit)?;
    let before: BTreeSet<(String, u32)> = state.recipients.iter().cloned().collect();
    require_users(store.as_ref(), &commit.added).await?;
    match store
        .advance_epoch(id, commit.epoch, &commit.group_info)
        .await
        .map_err(Reject::internal)?
    {
        EpochOutcome::Accepted => {}
        EpochOutcome::Stale { current } => return Err(stale_epoch(current)),
    }
    if !commit.added.is_empty() || !commit.removed.is_empty() {
        owner
            .update_members(id, &commit.added, &commit.removed)
            .await?;
    }
    let commit_msg =
        append_server_message(owner, caller, id, flags::MLS_COMMIT, commit.commit).await?;
    let after = owner.conversation(id).await?.recipients.clone();
    // Old and new members: removed ones learn of their removal too.
    let mut everyone = before;
    everyone.extend(after.iter().cloned());
    let everyone: Arc<[(String, u32)]> = everyone.into_iter().collect();
    let mut fanouts = vec![deliver(&commit_msg, everyone, caller)];
    if let Some(welcome) = commit.welcome {
        let welcome_msg =
            append_server_message(owner, caller, id, flags::MLS_WELCOME, welcome).await?;
        fanouts.push(deliver(&welcome_msg, after, caller));
    }
    let reply = Body::CommitAccepted {
        conversation_id: id,
        epoch: commit.epoch + 1,
        seq: commit_msg.seq,
    };
    Ok(Outcome {
        reply: Ok(reply),
        durable: true,
        fanouts,
    })
}

/// Added users must not be members yet. Removed ones may already be gone:
/// a member that left (RemoveMembers on itself) is still in the MLS tree
/// until someone commits its removal.
fn check_changes(members: &BTreeSet<String>, commit: &CommitBody) -> Result<(), Reject> {
    if let Some(user) = commit.added.iter().find(|u| members.contains(*u)) {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            format!("{user} is already a member"),
        ));
    }
    Ok(())
}

fn stale_epoch(current: u64) -> Reject {
    let error = ErrorBody {
        code: ErrorCode::StaleEpoch,
        message: format!(
            "another commit won; the group is at epoch {current}: process it, then retry"
        ),
        retry_after_ms: 0,
    };
    Reject::conflict(Conflict {
        error,
        current_epoch: current,
        devices: Vec::new(),
    })
}

/// Sequences a Commit or Welcome as the conversation's next message.
async fn append_server_message(
    owner: &mut Owner,
    caller: &Caller,
    id: ConversationId,
    flag: u32,
    payload: Bytes,
) -> Result<StoredMessage, Reject> {
    let op = SendOp {
        id,
        client_message_id: rand::random::<u64>() | 1,
        expires_in_secs: 0,
        flags: flag,
        payload,
    };
    let (msg, _) = append(owner, caller, op).await?;
    Ok(msg)
}

fn deliver(msg: &StoredMessage, recipients: Arc<[(String, u32)]>, caller: &Caller) -> Fanout {
    Fanout::shared(
        recipients,
        Some(caller.clone()),
        Frame::new(0, Body::Deliver(to_wire(msg))).encode(),
    )
}

/// An MLS application message: accepted only in the group's current epoch,
/// so a member that missed a Commit is told to catch up instead of sending
/// ciphertext the others can no longer read.
pub async fn send_in_epoch(owner: &mut Owner, caller: &Caller, op: SendOp, epoch: u64) -> Outcome {
    let store = owner.ctx.store.clone();
    let current = match store.group_epoch(op.id).await {
        Ok(current) => current,
        Err(e) => return Outcome::immediate(Err(Reject::internal(e))),
    };
    if current != epoch {
        return Outcome::immediate(Err(stale_epoch(current)));
    }
    super::send::apply(owner, caller, op).await
}

/// GetGroupInfo: the latest GroupInfo of a group the caller belongs to.
pub async fn group_info(owner: &mut Owner, caller: &Caller, id: ConversationId) -> Outcome {
    let result = async {
        let store = owner.ctx.store.clone();
        owner.conversation(id).await?.require_member(caller)?;
        let epoch = store.group_epoch(id).await.map_err(Reject::internal)?;
        let info = store
            .group_info(id)
            .await
            .map_err(Reject::internal)?
            .unwrap_or_default();
        Ok(Body::GroupInfo {
            conversation_id: id,
            epoch,
            group_info: info,
        })
    }
    .await;
    Outcome::immediate(result)
}
