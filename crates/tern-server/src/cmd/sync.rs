//! Sync, applied on the connection's shard: which of the device's
//! conversations have messages past its cursor (or all of them), one page
//! at a time: the conversations with id > `after`, ascending, at most
//! `limit` ([`MAX_SYNC_PAGE`] when 0 or more), with `more` set when the
//! user has conversations past the last one listed. A cursor from before
//! the user's current membership reads as just before it: the device is
//! not told of messages from while the user was out.

use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::shard::ShardCtx;
use tern_proto::body::sync::{self, SyncResult};
use tern_proto::{ConversationState, MAX_SYNC_PAGE};
use tern_store::{ConversationId, Seq, Store};

use super::kind_to_wire;

/// Conversation ids read from the user's index per store call.
const SCAN_CHUNK: usize = 256;

pub async fn apply(ctx: &ShardCtx, caller: &Caller, ask: sync::Sync) -> Result<Outcome, Reject> {
    let store = ctx.store.as_ref();
    let limit = match ask.limit {
        0 => MAX_SYNC_PAGE,
        n => n.min(MAX_SYNC_PAGE),
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let cursors = store
        .cursors(&caller.user, caller.device)
        .await
        .map_err(Reject::store)?;
    let mut states = Vec::new();
    let mut after = ask.after;
    loop {
        let ids = store
            .user_conversations_after(&caller.user, after, SCAN_CHUNK)
            .await
            .map_err(Reject::store)?;
        let done = ids.len() < SCAN_CHUNK;
        for id in ids {
            if states.len() == limit {
                return Ok(page(states, true));
            }
            after = id;
            let cursor = cursors.get(&id).copied().unwrap_or(0);
            if let Some(state) = state_of(store, caller, id, cursor).await? {
                if ask.all || state.head_seq > state.cursor {
                    states.push(state);
                }
            }
        }
        if done {
            return Ok(page(states, false));
        }
    }
}

fn page(conversations: Vec<ConversationState>, more: bool) -> Outcome {
    let result = SyncResult {
        conversations,
        more,
    };
    Outcome::immediate(Ok(result.into()))
}

/// One conversation's position for the caller's device, `None` if it is gone.
async fn state_of(
    store: &dyn Store,
    caller: &Caller,
    id: ConversationId,
    cursor: Seq,
) -> Result<Option<ConversationState>, Reject> {
    let Some(record) = store.conversation(id).await.map_err(Reject::store)? else {
        return Ok(None);
    };
    let since = store
        .member_since(id, &caller.user)
        .await
        .map_err(Reject::store)?
        .unwrap_or(1);
    let settings = store.settings(id).await.map_err(Reject::store)?;
    Ok(Some(ConversationState {
        conversation_id: id,
        kind: kind_to_wire(record.kind),
        head_seq: record.head_seq,
        cursor: cursor.max(since.saturating_sub(1)),
        timer_secs: settings.timer_secs,
        request_from: super::reach::request_from(store, &caller.user, &record).await?,
    }))
}
