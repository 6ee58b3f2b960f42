//! Ack, applied on the conversation's owner: raises the device's cursor.
//! Cursors ride the next group commit; losing one in a crash only means a
//! redelivery the client drops by seq.

use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use tern_proto::body::messaging::Done;
use tern_proto::fb::ErrorCode;
use tern_proto::Body;
use tern_store::{ConversationId, Seq};

pub async fn apply(owner: &mut Owner, caller: &Caller, id: ConversationId, seq: Seq) -> Outcome {
    Outcome::immediate(ack(owner, caller, id, seq).await)
}

async fn ack(
    owner: &mut Owner,
    caller: &Caller,
    id: ConversationId,
    seq: Seq,
) -> Result<Body, Reject> {
    let store = owner.ctx.store.clone();
    let state = owner.conversation(id).await?;
    state.require_member(caller)?;
    if seq > state.record.head_seq {
        let head = state.record.head_seq;
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            format!("seq {seq} is past the head {head} of conversation {id}"),
        ));
    }
    store
        .advance_cursor(&caller.user, caller.device, id, seq)
        .await
        .map_err(Reject::store)?;
    Ok(Done.into())
}
