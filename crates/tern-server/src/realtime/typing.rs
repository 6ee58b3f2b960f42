//! Typing indicators on the conversation's owner shard (issue 11,
//! docs/PROTOCOL.md §4.9). A `Typing` signal (from a datagram or the
//! stream) is checked and fanned out as `TypingChanged`, never stored:
//!
//! - the sender must be a member with an active device, else dropped;
//! - each (conversation, device) has a token bucket of
//!   [`TYPING_BURST`] signals refilled at [`TYPING_PER_SECOND`]; past it the
//!   signal is dropped silently (clients refresh every few seconds, so a
//!   well-behaved one never gets near it);
//! - it goes only to members online at that moment (a shard holds one of
//!   their connections), the sender's other devices included, and to no
//!   member who blocks the sender or whom the sender blocks (as with sends,
//!   a blocked sender cannot tell);
//! - delivery is a datagram where the receiving connection takes them, else
//!   a push on its stream (`Sessions::deliver_ephemeral`).
//!
//! Nothing is ever answered with an error: a stream `Typing` gets `Done`
//! whatever happened, so that no answer tells membership or blocks apart.

use std::sync::Arc;

use crate::delivery::Fanout;
use crate::effects::{Effect, Outcome};
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use crate::ratelimit::RateLimiter;
use crate::shard::{ServerStats, ShardCtx};
use tern_proto::body::messaging::Done;
use tern_proto::body::typing::{Typing, TypingChanged, TYPING_BURST, TYPING_PER_SECOND};
use tern_proto::Frame;
use tern_store::{ConversationId, DeviceId, UserId};

/// Most typing buckets one owner shard keeps (least recently used half
/// dropped past it, see `RateLimiter`): about 100 bytes each.
pub const MAX_TYPING_BUCKETS: usize = 100_000;

/// The typing buckets of one owner shard, by (conversation, user, device).
pub struct TypingLimits {
    buckets: RateLimiter<(ConversationId, UserId, DeviceId)>,
}

impl Default for TypingLimits {
    fn default() -> Self {
        let per_minute = TYPING_PER_SECOND.saturating_mul(60);
        TypingLimits {
            buckets: RateLimiter::per_minute(TYPING_BURST, per_minute)
                .with_capacity(MAX_TYPING_BUCKETS),
        }
    }
}

impl TypingLimits {
    /// Takes one signal of `caller`'s device in `id` at `now_ms`; false
    /// past the limit.
    pub fn take(&mut self, id: ConversationId, caller: &Caller, now_ms: u64) -> bool {
        let key = (id, caller.user.clone(), caller.device);
        self.buckets.check(&key, now_ms).is_ok()
    }
}

/// Applies one typing signal: `Done`, and the fan-out as an effect unless
/// the signal is dropped (counted in `ServerStats::typing_dropped`).
pub async fn apply(owner: &mut Owner, caller: &Caller, typing: Typing) -> Outcome {
    let done = Outcome::immediate(Ok(Done.into()));
    match fanout(owner, caller, typing).await {
        Ok(Some(fanout)) => done.with(Effect::Ephemeral(fanout)),
        Ok(None) | Err(_) => {
            ServerStats::add(&owner.ctx.stats.typing_dropped, 1);
            done
        }
    }
}

/// The fan-out of an accepted signal; `None` when it goes to nobody or is
/// over the limit.
///
/// # Errors
/// No such conversation, not a member, a store failure: all dropped alike.
async fn fanout(
    owner: &mut Owner,
    caller: &Caller,
    typing: Typing,
) -> Result<Option<Fanout>, Reject> {
    let ctx = owner.ctx.clone();
    let id = typing.conversation_id;
    let state = owner.conversation(id).await?;
    state.require_member(caller)?;
    let recipients = state.recipients.clone();
    if !owner.typing.take(id, caller, ctx.clock.now_ms()) {
        return Ok(None);
    }
    let reached = online_unblocked(&ctx, caller, &recipients).await?;
    if reached.is_empty() {
        return Ok(None);
    }
    let changed = TypingChanged {
        conversation_id: id,
        user: caller.user.clone(),
        device: caller.device,
        typing: typing.typing,
    };
    let frame = Frame::new(0, changed).encode();
    Ok(Some(Fanout::shared(
        reached.into(),
        Some(caller.clone()),
        frame,
    )))
}

/// The recipients (grouped by user) whose user is online now and neither
/// blocks nor is blocked by the caller; the caller's own devices are kept.
async fn online_unblocked(
    ctx: &ShardCtx,
    caller: &Caller,
    recipients: &Arc<[(UserId, DeviceId)]>,
) -> Result<Vec<(UserId, DeviceId)>, Reject> {
    let all = ctx.mesh.all_shards();
    let mut out = Vec::new();
    let mut verdict: Option<(&str, bool)> = None;
    for (user, device) in recipients.iter() {
        let reaches = match verdict {
            Some((last, reaches)) if last == user => reaches,
            _ => {
                let online = !ctx
                    .mesh
                    .locations
                    .shards_of([user.as_str()], all)
                    .is_empty();
                let reaches =
                    online && (*user == caller.user || !super::blocked(ctx, caller, user).await?);
                verdict = Some((user, reaches));
                reaches
            }
        };
        if reaches {
            out.push((user.clone(), *device));
        }
    }
    Ok(out)
}
