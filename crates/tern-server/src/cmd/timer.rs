//! SetTimer, applied on the conversation's owner: a member (in a group,
//! an administrator, see `admin`) sets the
//! conversation's disappearing-message timer (stored with its settings,
//! cached by the owner), every member's devices get `TimerChanged`, and
//! every later send is capped at it (`send::lifetime_secs`). Messages sent
//! before keep their expiry. A member whom the other member of a direct
//! conversation blocks gets `Done` and changes nothing (`block::silenced`).

use std::sync::Arc;

use tern_proto::body::messaging::Done;
use tern_proto::body::settings::{SetTimer, TimerChanged};
use tern_proto::fb::ErrorCode;
use tern_proto::{Body, Frame};
use tern_store::ConversationKind;

use crate::effects::{Effect, Outcome};
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;

pub async fn apply(owner: &mut Owner, caller: &Caller, b: SetTimer) -> Outcome {
    Outcome::or_refused(set(owner, caller, b).await)
}

async fn set(owner: &mut Owner, caller: &Caller, b: SetTimer) -> Result<Outcome, Reject> {
    let (id, secs) = (b.conversation_id, b.secs);
    let ctx = owner.ctx.clone();
    let state = owner.conversation(id).await?;
    state.require_member(caller)?;
    if state.record.kind == ConversationKind::Group {
        super::admin::require_admin(state, caller, "set the group's timer")?;
    }
    let max = ctx.config.message_ttl_secs;
    if u64::from(secs) > max {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            format!("a timer of {secs} s is longer than messages live on this server ({max} s, message_ttl_secs); use at most that, or 0 to turn it off"),
        ));
    }
    if super::block::silenced(owner, caller, id).await? {
        // Answered as accepted, after the same durability wait; nothing
        // changes and nothing is announced (PROTOCOL.md §4.4).
        return Ok(Outcome::durable(Ok(Done.into())));
    }
    let state = owner.conversation(id).await?;
    let mut settings = state.settings.clone();
    settings.timer_secs = secs;
    ctx.store
        .put_settings(id, &settings)
        .await
        .map_err(Reject::store)?;
    let state = owner.conversation(id).await?;
    state.settings = settings;
    let members: Vec<String> = state.record.members.iter().cloned().collect();
    let push = Body::TimerChanged(TimerChanged {
        conversation_id: id,
        secs,
        user: caller.user.clone(),
    });
    let notify = Effect::Notify {
        users: Arc::from(members),
        frame: Frame::new(0, push).encode(),
    };
    Ok(Outcome::durable(Ok(Done.into())).with(notify))
}
