//! Who may reach a user (issue 10, "who may reach me"): the direct-starts
//! setting and message requests. SetPrivacy and GetPrivacy on the
//! connection's shard, the check CreateConversation makes before it
//! creates a direct conversation, the request mark Sync lists, and
//! AcceptRequest.
//!
//! * **Direct starts.** B's `direct_starts` decides whether A may create
//!   the direct conversation of A and B: `Everyone` (the default, as in
//!   Signal and WhatsApp) lets anyone; `Contacts` only B's contacts (users
//!   B chose, see [`super::consent`]); `Nobody` no one. An existing direct
//!   conversation of the pair is always answered (`created = false`), so a
//!   setting never takes a conversation away. A refusal is
//!   `ConsentRequired` naming B and writes nothing (not even A's contacts).
//!   CreateConversation is the only request that makes a direct
//!   conversation: AddMembers, RemoveMembers and Commits refuse direct
//!   conversations, so their membership never changes after creation and
//!   nothing can reopen one. A block is not a refusal here: a blocked
//!   user's conversation is created as any other would be and their sends
//!   are dropped unseen (see [`super::block`]), so the block is not told.
//! * **Message requests.** A direct conversation is a request for the
//!   member who did not create it while the creator is not that member's
//!   contact ([`request_from`]); Sync lists it with
//!   `ConversationState.request_from`. It is computed, not stored: the
//!   member accepting it (AcceptRequest), answering in it (a send, see
//!   [`super::consent::note_reply`]) or choosing the creator anywhere else
//!   makes the creator a contact, which ends the request on every device.
//!   The SDK keeps requests out of the inbox and sends no receipts for
//!   them; presence must not count a pending request as a shared
//!   conversation for its creator ([`request_from`] says which).

use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::shard::ShardCtx;
use tern_proto::body::messaging::Done;
use tern_proto::body::privacy::SetPrivacy;
use tern_proto::body::reach::Privacy;
use tern_proto::fb::ErrorCode;
use tern_proto::{DirectStarts, GroupAdds};
use tern_store::{ConversationId, ConversationKind, ConversationRecord, Store};

/// SetPrivacy: stores the settings the request changes (absent =
/// unchanged, see [`SetPrivacy::changes`]); Done once durable.
pub async fn set_privacy(
    ctx: &ShardCtx,
    caller: &Caller,
    b: SetPrivacy,
) -> Result<Outcome, Reject> {
    let store = ctx.store.as_ref();
    let (groups, direct) = b.changes();
    if let Some(groups) = groups {
        let setting = match groups {
            GroupAdds::Contacts => tern_store::GroupAdds::Contacts,
            GroupAdds::Everyone => tern_store::GroupAdds::Everyone,
        };
        let set = store.set_group_adds(&caller.user, setting).await;
        set.map_err(Reject::store)?;
    }
    if let Some(direct) = direct {
        let set = store
            .set_direct_starts(&caller.user, to_store(direct))
            .await;
        set.map_err(Reject::store)?;
    }
    Ok(Outcome::durable(Ok(Done.into())))
}

/// GetPrivacy: the caller's settings (defaults for those never set).
pub async fn get_privacy(ctx: &ShardCtx, caller: &Caller) -> Result<Outcome, Reject> {
    let store = ctx.store.as_ref();
    let groups = store.group_adds(&caller.user).await;
    let direct = store.direct_starts(&caller.user).await;
    let privacy = Privacy {
        group_adds: match groups.map_err(Reject::store)? {
            tern_store::GroupAdds::Contacts => GroupAdds::Contacts,
            tern_store::GroupAdds::Everyone => GroupAdds::Everyone,
        },
        direct_starts: to_wire(direct.map_err(Reject::store)?),
    };
    Ok(Outcome::immediate(Ok(privacy.into())))
}

fn to_store(setting: DirectStarts) -> tern_store::DirectStarts {
    match setting {
        DirectStarts::Everyone => tern_store::DirectStarts::Everyone,
        DirectStarts::Contacts => tern_store::DirectStarts::Contacts,
        DirectStarts::Nobody => tern_store::DirectStarts::Nobody,
    }
}

fn to_wire(setting: tern_store::DirectStarts) -> DirectStarts {
    match setting {
        tern_store::DirectStarts::Everyone => DirectStarts::Everyone,
        tern_store::DirectStarts::Contacts => DirectStarts::Contacts,
        tern_store::DirectStarts::Nobody => DirectStarts::Nobody,
    }
}

/// Before `starter` creates the direct conversation with `user` (uniquely
/// keyed `key`): refuses it when `user`'s setting does not let `starter`
/// start one and the pair has none yet.
///
/// # Errors
/// `ConsentRequired` naming `user`; `Internal` on a store failure.
pub async fn check_direct_start(
    store: &dyn Store,
    starter: &str,
    user: &str,
    key: &[u8],
) -> Result<(), Reject> {
    let allowed = match store.direct_starts(user).await.map_err(Reject::store)? {
        tern_store::DirectStarts::Everyone => true,
        tern_store::DirectStarts::Contacts => store
            .is_contact(user, starter)
            .await
            .map_err(Reject::store)?,
        tern_store::DirectStarts::Nobody => false,
    };
    if allowed
        || store
            .conversation_by_key(key)
            .await
            .map_err(Reject::store)?
            .is_some()
    {
        return Ok(());
    }
    Err(Reject::new(
        ErrorCode::ConsentRequired,
        format!(
            "{user} does not take direct conversations from you (their privacy setting); \
             they can start one with you instead"
        ),
    ))
}

/// The creator of direct conversation `record` when it is a message request
/// for `user`: `user` is a member who did not create it and has not made
/// the creator a contact. `None` for every other conversation.
///
/// # Errors
/// `Internal` on a store failure.
pub async fn request_from(
    store: &dyn Store,
    user: &str,
    record: &ConversationRecord,
) -> Result<Option<String>, Reject> {
    if record.kind != ConversationKind::Direct
        || record.creator == user
        || !record.members.contains(user)
    {
        return Ok(None);
    }
    let contact = store.is_contact(user, &record.creator).await;
    Ok((!contact.map_err(Reject::store)?).then(|| record.creator.clone()))
}

/// AcceptRequest: the creator of direct conversation `id` becomes the
/// caller's contact, which ends the request; Done once durable (also when
/// it was no request, or the caller created it).
///
/// # Errors
/// `NotFound` when the caller is not a member of such a conversation;
/// `Forbidden` when it is not a direct conversation.
pub async fn accept_request(
    ctx: &ShardCtx,
    caller: &Caller,
    id: ConversationId,
) -> Result<Outcome, Reject> {
    let store = ctx.store.as_ref();
    let record = store.conversation(id).await.map_err(Reject::store)?;
    let Some(record) = record.filter(|r| r.members.contains(&caller.user)) else {
        return Err(Reject::new(
            ErrorCode::NotFound,
            format!("conversation {id} is not one of yours"),
        ));
    };
    if record.kind != ConversationKind::Direct {
        return Err(Reject::new(
            ErrorCode::Forbidden,
            "only direct conversations are message requests",
        ));
    }
    if let Some(creator) = request_from(store, &caller.user, &record).await? {
        let added = store.add_contacts(&caller.user, &[creator]).await;
        added.map_err(Reject::store)?;
    }
    Ok(Outcome::durable(Ok(Done.into())))
}
