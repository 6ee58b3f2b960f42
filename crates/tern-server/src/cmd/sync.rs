//! Sync, applied on the connection's shard: which of the device's
//! conversations have messages past its cursor (or all of them). A cursor
//! from before the user's current membership reads as just before it: the
//! device is not told of messages from while the user was out.

use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::shard::ShardCtx;
use tern_proto::body::sync::SyncResult;
use tern_proto::ConversationState;

use super::kind_to_wire;

pub async fn apply(ctx: &ShardCtx, caller: &Caller, all: bool) -> Result<Outcome, Reject> {
    let store = ctx.store.as_ref();
    let ids = store
        .user_conversations(&caller.user)
        .await
        .map_err(Reject::store)?;
    let cursors = store
        .cursors(&caller.user, caller.device)
        .await
        .map_err(Reject::store)?;
    let mut states = Vec::new();
    for id in ids {
        let Some(record) = store.conversation(id).await.map_err(Reject::store)? else {
            continue;
        };
        let since = store
            .member_since(id, &caller.user)
            .await
            .map_err(Reject::store)?
            .unwrap_or(1);
        let cursor = cursors
            .get(&id)
            .copied()
            .unwrap_or(0)
            .max(since.saturating_sub(1));
        if all || record.head_seq > cursor {
            states.push(ConversationState {
                conversation_id: id,
                kind: kind_to_wire(record.kind),
                head_seq: record.head_seq,
                cursor,
            });
        }
    }
    let result = SyncResult {
        conversations: states,
    };
    Ok(Outcome::immediate(Ok(result.into())))
}
