//! CreateConversation, applied on the owner of the new conversation's id.
//! Direct and note-to-self conversations are unique per pair / per user: a
//! second create returns the existing one (`created = false`). A group's
//! members must consent to be added by the caller (see [`consent`]), and
//! every member of a new conversation becomes the caller's contact. The
//! other member of a direct conversation must take direct conversations
//! from the caller (see [`reach`]); a refusal writes nothing.

use std::collections::BTreeSet;

use super::{consent, kind_to_store, kind_to_wire, reach, require_users};
use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use tern_proto::body::conversations;
use tern_proto::fb::ErrorCode;
use tern_proto::{Body, ConversationKind};
use tern_store::{ConversationId, ConversationRecord, CreateConversationError, CreateOutcome};

pub async fn apply(
    owner: &mut Owner,
    caller: &Caller,
    id: ConversationId,
    kind: ConversationKind,
    members: Vec<String>,
) -> Outcome {
    Outcome::or_refused(create(owner, caller, id, kind, members).await)
}

async fn create(
    owner: &mut Owner,
    caller: &Caller,
    id: ConversationId,
    kind: ConversationKind,
    members: Vec<String>,
) -> Result<Outcome, Reject> {
    let others: BTreeSet<String> = members.into_iter().filter(|m| *m != caller.user).collect();
    check_shape(kind, others.len())?;
    let others_list: Vec<String> = others.iter().cloned().collect();
    require_users(owner.ctx.store.as_ref(), &others_list).await?;
    let limits = owner.ctx.limits.clone();
    limits.may_create_conversation(&caller.user, owner.ctx.clock.now_ms())?;
    if kind == ConversationKind::Group {
        let mut joining = others_list.clone();
        joining.push(caller.user.clone());
        consent::check_additions(&owner.ctx, &caller.user, None, &joining).await?;
    }
    // Taken once every check passed: a refused create costs nothing.
    limits.create_conversation(&caller.user, owner.ctx.clock.now_ms())?;
    let mut all = others;
    all.insert(caller.user.clone());
    let record = ConversationRecord {
        id,
        kind: kind_to_store(kind),
        creator: caller.user.clone(),
        members: all,
        created_ms: owner.ctx.clock.now_ms(),
        head_seq: 0,
    };
    let key = unique_key(kind, &record);
    if let (ConversationKind::Direct, Some(key), [other]) = (kind, &key, others_list.as_slice()) {
        let store = owner.ctx.store.as_ref();
        reach::check_direct_start(store, &caller.user, other, key).await?;
    }
    consent::after_additions(&owner.ctx, &caller.user, None, &others_list).await?;
    let result = owner
        .ctx
        .store
        .create_conversation(&record, key.as_deref())
        .await;
    match result {
        Ok(CreateOutcome::Created) => {
            let info = info(&record, true);
            owner.cache(record).await?;
            Ok(Outcome::durable(Ok(info)))
        }
        Ok(CreateOutcome::Existing(existing)) => Ok(Outcome::durable(Ok(info(&existing, false)))),
        Err(CreateConversationError::IdTaken(_)) => Err(Reject::new(
            ErrorCode::Internal,
            "conversation id collision; retry the request",
        )),
        Err(CreateConversationError::Backend(e)) => Err(Reject::store(e)),
    }
}

fn check_shape(kind: ConversationKind, others: usize) -> Result<(), Reject> {
    let ok = match kind {
        ConversationKind::Direct => others == 1,
        ConversationKind::NoteToSelf => others == 0,
        ConversationKind::Group => true,
    };
    if ok {
        return Ok(());
    }
    let why = match kind {
        ConversationKind::Direct => "a direct conversation needs exactly one other member",
        _ => "a note-to-self conversation takes no other members",
    };
    Err(Reject::new(ErrorCode::InvalidArgument, why))
}

/// The uniqueness key: the sorted pair for direct, the user for note-to-self.
fn unique_key(kind: ConversationKind, record: &ConversationRecord) -> Option<Vec<u8>> {
    let mut key = match kind {
        ConversationKind::Direct => b"direct\0".to_vec(),
        ConversationKind::NoteToSelf => b"self\0".to_vec(),
        ConversationKind::Group => return None,
    };
    for member in &record.members {
        key.extend_from_slice(member.as_bytes());
        key.push(0);
    }
    Some(key)
}

pub fn info(record: &ConversationRecord, created: bool) -> Body {
    Body::ConversationInfo(conversations::ConversationInfo {
        conversation_id: record.id,
        kind: kind_to_wire(record.kind),
        members: record.members.iter().cloned().collect(),
        head_seq: record.head_seq,
        created,
    })
}
