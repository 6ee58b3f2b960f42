//! The MLS delivery-service duties of a group's owner (RFC 9420 §14,
//! RFC 9750): exactly one Commit per epoch, a Commit for any other epoch is
//! refused with the current epoch, membership follows accepted Commits, the
//! Welcome is sequenced (and so delivered) only after its Commit, and the
//! latest GroupInfo is kept for external joins.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;

use super::send::{append_reject, to_wire, SendOp};
use super::{admin, consent, require_users, MAX_MEMBERS_PER_REQUEST};
use crate::delivery::Fanout;
use crate::effects::{Durability, Effect, Outcome};
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use tern_proto::body::mls;
use tern_proto::fb::ErrorCode;
use tern_proto::handle::validate_handle;
use tern_proto::{flags, Body, Conflict, ErrorBody, Frame};
use tern_store::{
    CommitOutcome, CommitRecord, ConversationId, ConversationKind, ConversationRecord, Seq,
    StoredMessage,
};

pub async fn apply(owner: &mut Owner, caller: &Caller, commit: mls::Commit) -> Outcome {
    Outcome::or_refused(accept(owner, caller, commit).await)
}

async fn accept(
    owner: &mut Owner,
    caller: &Caller,
    commit: mls::Commit,
) -> Result<Outcome, Reject> {
    let id = commit.conversation_id;
    let store = owner.ctx.store.clone();
    let state = owner.conversation(id).await?;
    state.require_member(caller)?;
    require_group(&state.record.kind)?;
    check_changes(&state.record, caller, &commit)?;
    if !commit.added.is_empty() {
        admin::require_adder(state, caller)?;
    }
    if commit
        .removed
        .iter()
        .any(|u| state.record.members.contains(u))
    {
        admin::require_admin(state, caller, "remove other members")?;
    }
    let before: BTreeSet<(String, u32)> = state.recipients.iter().cloned().collect();
    let head = state.record.head_seq;
    let departed: Vec<String> = commit
        .removed
        .iter()
        .filter(|u| !state.record.members.contains(*u))
        .cloned()
        .collect();
    require_users(store.as_ref(), &commit.added).await?;
    require_users(store.as_ref(), &departed).await?;
    let ctx = owner.ctx.clone();
    consent::check_additions(&ctx, &caller.user, Some(id), &commit.added).await?;
    // A Commit appends to the log like a send (its Welcome rides along).
    owner.take_send(&caller.user, id)?;
    let mut record = commit_record(owner, caller, head, commit);
    record.fence = owner.fence(id).await?;
    let updated = match store.accept_commit(&record).await {
        Ok(CommitOutcome::Accepted(updated)) => updated,
        Ok(CommitOutcome::Stale { current }) => return Err(stale_epoch(current)),
        Err(e) => {
            // The cached head may be stale; reload it on the next request.
            owner.forget(id);
            return Err(append_reject(e));
        }
    };
    owner.cache(updated).await?;
    consent::after_additions(&ctx, &caller.user, Some(id), &record.add).await?;
    let admins_changed = admin::after_removal(owner, id).await?;
    let after = owner.conversation(id).await?.recipients.clone();
    // Members before and after, removed ones included (they learn of their
    // removal); the users it adds join from the Welcome instead (RFC 9420
    // §12.4.3: a joiner never processes the Commit that added it, and its
    // membership starts at the Welcome).
    let mut everyone = before;
    everyone.extend(after.iter().cloned());
    let everyone: Arc<[(String, u32)]> = everyone
        .into_iter()
        .filter(|(user, _)| !record.add.contains(user))
        .collect();
    let mut fanouts = vec![deliver(&record.commit, everyone, caller)];
    if let Some(welcome) = &record.welcome {
        fanouts.push(deliver(welcome, after, caller));
    }
    let reply = Body::CommitAccepted(mls::CommitAccepted {
        conversation_id: id,
        epoch: record.epoch + 1,
        seq: record.commit.seq,
    });
    let mut effects: Vec<Effect> = fanouts.into_iter().map(Effect::Deliver).collect();
    effects.extend(admins_changed);
    Ok(Outcome {
        reply: Ok(reply),
        durability: Durability::Durable,
        effects,
        append: None,
    })
}

/// The Commit as one store operation: the Commit sequenced after `head`,
/// then its Welcome. Both are kept for `mls_handshake_ttl_secs`, not the
/// message TTL: a member offline past the message retention still finds
/// the Commits it missed in History.
fn commit_record(owner: &Owner, caller: &Caller, head: Seq, commit: mls::Commit) -> CommitRecord {
    let now = owner.ctx.clock.now_ms();
    let ttl_ms = owner.ctx.config.mls_handshake_ttl_secs.saturating_mul(1000);
    let expires_at_ms = now.saturating_add(ttl_ms);
    let message = |seq: Seq, flags: u32, payload: Bytes| StoredMessage {
        conversation_id: commit.conversation_id,
        seq,
        sender_user: caller.user.clone(),
        sender_device: caller.device,
        client_message_id: rand::random::<u64>() | 1,
        server_time_ms: now,
        expires_at_ms,
        flags,
        payload,
    };
    let commit_msg = message(head + 1, flags::MLS_COMMIT, commit.commit.clone());
    let welcome = commit
        .welcome
        .clone()
        .map(|w| message(head + 2, flags::MLS_WELCOME, w));
    CommitRecord {
        conversation_id: commit.conversation_id,
        epoch: commit.epoch,
        group_info: commit.group_info,
        add: commit.added,
        remove: commit.removed,
        commit: commit_msg,
        welcome,
        fence: None,
    }
}

/// MLS requests (Commit, SendGroup, GetGroupInfo) are for groups only.
fn require_group(kind: &ConversationKind) -> Result<(), Reject> {
    match kind {
        ConversationKind::Group => Ok(()),
        _ => Err(Reject::new(
            ErrorCode::Forbidden,
            "MLS commits, group messages and GroupInfo apply to group conversations only",
        )),
    }
}

/// The membership rules of AddMembers and RemoveMembers hold for a
/// Commit's lists too, whatever its (opaque) MLS bytes say: at most
/// [`MAX_MEMBERS_PER_REQUEST`] names in all, each a handle named once;
/// added users are not members yet (that they exist is checked apart);
/// only administrators add or remove another current member (checked by
/// the caller, see `admin`), and nobody commits their own removal (RFC 9420 §12.4: a Commit cannot remove its sender;
/// leave with RemoveMembers). A removed name that is no longer a member is
/// allowed to anyone: a member that left is still in the MLS tree until
/// someone commits its removal.
fn check_changes(
    record: &ConversationRecord,
    caller: &Caller,
    commit: &mls::Commit,
) -> Result<(), Reject> {
    check_names(commit)?;
    let members = &record.members;
    if let Some(user) = commit.added.iter().find(|u| members.contains(*u)) {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            format!("{user} is already a member"),
        ));
    }
    if commit.removed.contains(&caller.user) {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            "a Commit cannot remove its sender; leave with RemoveMembers naming yourself",
        ));
    }
    Ok(())
}

/// Bounded lists of valid handles, no name twice (in one list or both).
fn check_names(commit: &mls::Commit) -> Result<(), Reject> {
    let names = commit.added.len().saturating_add(commit.removed.len());
    if names > MAX_MEMBERS_PER_REQUEST {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            format!(
                "at most {MAX_MEMBERS_PER_REQUEST} added and removed members per Commit; split it"
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for user in commit.added.iter().chain(&commit.removed) {
        validate_handle(user)
            .map_err(|e| Reject::new(ErrorCode::InvalidArgument, e.to_string()))?;
        if !seen.insert(user) {
            return Err(Reject::new(
                ErrorCode::InvalidArgument,
                format!("{user} is named twice in this Commit"),
            ));
        }
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
    // Existence and membership first: the epoch is only for members.
    let checked = async {
        let state = owner.conversation(op.id).await?;
        state.require_member(caller)?;
        require_group(&state.record.kind)?;
        let store = owner.ctx.store.clone();
        let current = store.group_epoch(op.id).await.map_err(Reject::store)?;
        match current == epoch {
            true => Ok(()),
            false => Err(stale_epoch(current)),
        }
    };
    if let Err(reject) = checked.await {
        return Outcome::immediate(Err(reject));
    }
    super::send::apply(owner, caller, op).await
}

/// GetGroupInfo: the latest GroupInfo of a group the caller belongs to.
pub async fn group_info(owner: &mut Owner, caller: &Caller, id: ConversationId) -> Outcome {
    let result = async {
        let store = owner.ctx.store.clone();
        let state = owner.conversation(id).await?;
        state.require_member(caller)?;
        require_group(&state.record.kind)?;
        let epoch = store.group_epoch(id).await.map_err(Reject::store)?;
        let info = store
            .group_info(id)
            .await
            .map_err(Reject::store)?
            .unwrap_or_default();
        Ok(Body::GroupInfo(mls::GroupInfo {
            conversation_id: id,
            epoch,
            group_info: info,
        }))
    }
    .await;
    Outcome::immediate(result)
}
