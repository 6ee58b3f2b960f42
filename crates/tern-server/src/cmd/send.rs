//! Send, applied on the conversation's owner: authorise, assign the next
//! dense seq, store (idempotent on the client message id), and after the
//! batch is durable ack the sender and fan the message out to every other
//! device of every member.

use std::sync::Arc;

use bytes::Bytes;

use crate::delivery::{Fanout, Frames};
use crate::effects::{Durability, Effect, Outcome};
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use crate::payloads;
use crate::shard::ServerStats;
use tern_proto::body::messaging::{self, DevicePayload};
use tern_proto::fb::ErrorCode;
use tern_proto::{flags, Body, Conflict, ErrorBody, Frame, Message};
use tern_store::{AppendError, AppendOutcome, ConversationId, StoredMessage};

/// A decoded Send request.
pub struct SendOp {
    pub id: ConversationId,
    pub client_message_id: u64,
    pub expires_in_secs: u32,
    pub flags: u32,
    pub payload: Bytes,
}

impl From<messaging::Send> for SendOp {
    fn from(s: messaging::Send) -> Self {
        SendOp {
            id: s.conversation_id,
            client_message_id: s.client_message_id,
            expires_in_secs: s.expires_in_secs,
            flags: s.flags,
            payload: s.payload,
        }
    }
}

/// The send part of a SendGroup (its epoch is checked apart).
impl From<messaging::SendGroup> for SendOp {
    fn from(s: messaging::SendGroup) -> Self {
        SendOp {
            id: s.conversation_id,
            client_message_id: s.client_message_id,
            expires_in_secs: s.expires_in_secs,
            flags: s.flags,
            payload: s.payload,
        }
    }
}

impl SendOp {
    /// A SendToDevices as a send without a shared payload, and its payloads.
    pub fn per_device(s: messaging::SendToDevices) -> (SendOp, Vec<DevicePayload>) {
        let op = SendOp {
            id: s.conversation_id,
            client_message_id: s.client_message_id,
            expires_in_secs: s.expires_in_secs,
            flags: s.flags,
            payload: Bytes::new(),
        };
        (op, s.device_payloads)
    }
}

pub async fn apply(owner: &mut Owner, caller: &Caller, op: SendOp) -> Outcome {
    Outcome::or_refused(send(owner, caller, op).await)
}

/// Applies a Send whose ciphertexts are per device: the set must be exactly
/// every current device of every member but the sending one.
pub async fn apply_per_device(
    owner: &mut Owner,
    caller: &Caller,
    op: SendOp,
    device_payloads: Vec<DevicePayload>,
) -> Outcome {
    Outcome::or_refused(send_per_device(owner, caller, op, device_payloads).await)
}

async fn send_per_device(
    owner: &mut Owner,
    caller: &Caller,
    mut op: SendOp,
    device_payloads: Vec<DevicePayload>,
) -> Result<Outcome, Reject> {
    check_request(&op)?;
    let state = owner.conversation(op.id).await?;
    state.require_member(caller)?;
    let mut wanted: Vec<(String, u32)> = state
        .recipients
        .iter()
        .filter(|(u, d)| !(*u == caller.user && *d == caller.device))
        .cloned()
        .collect();
    wanted.sort();
    let mut given: Vec<(String, u32)> = device_payloads
        .iter()
        .map(|p| (p.user.clone(), p.device))
        .collect();
    given.sort();
    given.dedup();
    if given != wanted || given.len() != device_payloads.len() {
        return Err(stale_devices(wanted));
    }
    op.payload = payloads::pack(&device_payloads).ok_or_else(|| {
        Reject::new(
            ErrorCode::InvalidArgument,
            "too many devices or too large a payload for one message",
        )
    })?;
    op.flags |= flags::PER_DEVICE;
    let recipients: Arc<[(String, u32)]> = device_payloads
        .iter()
        .map(|p| (p.user.clone(), p.device))
        .collect::<Vec<_>>()
        .into();
    store_and_fan_out(
        owner,
        caller,
        op,
        Route::PerDevice(recipients, device_payloads),
    )
    .await
}

fn stale_devices(devices: Vec<(String, u32)>) -> Reject {
    let error = ErrorBody {
        code: ErrorCode::StaleDevices,
        message: "the conversation's device set changed; encrypt for exactly the listed devices and resend with the same client_message_id".into(),
        retry_after_ms: 0,
    };
    Reject::conflict(Conflict {
        error,
        current_epoch: 0,
        devices,
    })
}

fn check_request(op: &SendOp) -> Result<(), Reject> {
    if op.client_message_id == 0 {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            "client_message_id must be non-zero and unique per message",
        ));
    }
    if op.flags & !flags::CLIENT_MASK != 0 {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            "flags above bit 15 are reserved for the server",
        ));
    }
    Ok(())
}

/// Where a stored message goes.
enum Route {
    /// One payload for every device of every member.
    Shared,
    /// One payload per listed device.
    PerDevice(Arc<[(String, u32)]>, Vec<DevicePayload>),
}

async fn send(owner: &mut Owner, caller: &Caller, op: SendOp) -> Result<Outcome, Reject> {
    check_request(&op)?;
    store_and_fan_out(owner, caller, op, Route::Shared).await
}

async fn store_and_fan_out(
    owner: &mut Owner,
    caller: &Caller,
    op: SendOp,
    route: Route,
) -> Result<Outcome, Reject> {
    let msg = match append(owner, caller, op).await? {
        Staged::New(msg) => msg,
        Staged::Duplicate(answer) => return Ok(Outcome::durable(Ok(answer))),
    };
    super::consent::note_reply(owner, caller, msg.conversation_id).await;
    let fanout = match route {
        Route::Shared => {
            let state = owner.conversation(msg.conversation_id).await?;
            let frame = Frame::new(0, Body::Deliver(to_wire(&msg))).encode();
            Fanout::shared(Arc::clone(&state.recipients), Some(caller.clone()), frame)
        }
        Route::PerDevice(recipients, payloads) => {
            let frames: Vec<Bytes> = payloads
                .into_iter()
                .map(|p| {
                    Frame::new(
                        0,
                        Body::Deliver(Message {
                            payload: p.payload,
                            ..to_wire(&msg)
                        }),
                    )
                    .encode()
                })
                .collect();
            Fanout {
                recipients,
                except: Some(caller.clone()),
                frames: Frames::PerDevice(frames.into()),
            }
        }
    };
    let wake = Effect::Wake(crate::effects::Wake {
        recipients: Arc::clone(&fanout.recipients),
        except: Some(caller.clone()),
        conversation_id: msg.conversation_id,
        urgent: false,
    });
    Ok(Outcome {
        reply: Ok(ack(&msg, false)),
        durability: Durability::Durable,
        effects: vec![Effect::Deliver(fanout), wake],
        append: Some(msg),
    })
}

/// What [`append`] made of a send.
pub enum Staged {
    /// The next message, for the driver to append with its batch.
    New(StoredMessage),
    /// A retry of a message sequenced here recently: its ack; or a send
    /// dropped because the recipient blocked the sender: its answer
    /// (`cmd::block`). Nothing is stored or delivered.
    Duplicate(Body),
}

/// Assigns the next seq and stages the message (the owner's driver appends
/// the whole batch in one store write); a retry of a message stored here
/// recently is answered from the conversation's index of recent ids, and
/// costs no send token; a new message takes one of the conversation's and
/// one of the sender's account (`RateLimited` otherwise, nothing staged). Only
/// written messages are indexed (`Owner::remember`), so a retry of a message
/// still staged in this batch goes to the store, which answers it with the
/// stored message.
pub async fn append(owner: &mut Owner, caller: &Caller, op: SendOp) -> Result<Staged, Reject> {
    let max_secs = owner.ctx.config.message_ttl_secs;
    let stats = owner.ctx.stats.clone();
    let now = owner.ctx.clock.now_ms();
    let state = owner.conversation(op.id).await?;
    state.require_member(caller)?;
    let (user, device, cmid) = (&caller.user, caller.device, op.client_message_id);
    if let Some((seq, time)) = state.recent.get(user, device, cmid) {
        ServerStats::add(&stats.duplicates, 1);
        return Ok(Staged::Duplicate(ack_of(op.id, seq, time, true)));
    }
    // Before the block check, so that a blocked sender is limited alike
    // and cannot tell it is blocked by never being limited.
    owner.take_send(&caller.user, op.id)?;
    if let Some(answer) = super::block::drops_send(owner, caller, op.id).await? {
        return Ok(Staged::Duplicate(answer));
    }
    let state = owner.conversation(op.id).await?;
    let lifetime = lifetime_secs(max_secs, state.settings.timer_secs, op.expires_in_secs);
    let disappearing = match lifetime < max_secs {
        true => flags::DISAPPEARING,
        false => 0,
    };
    let ttl_ms = lifetime.saturating_mul(1000);
    let msg = StoredMessage {
        conversation_id: op.id,
        seq: state.record.head_seq + 1,
        sender_user: caller.user.clone(),
        sender_device: caller.device,
        client_message_id: op.client_message_id,
        server_time_ms: now,
        expires_at_ms: now.saturating_add(ttl_ms),
        flags: op.flags | disappearing,
        payload: op.payload,
    };
    state.record.head_seq = msg.seq;
    Ok(Staged::New(msg))
}

/// Settles a staged send with what the store made of it. Returns true if
/// the owner's cached state of the conversation is now wrong (the message
/// was not written at the seq it took) and must be reloaded.
pub fn resolve_append(
    outcome: &mut Outcome,
    result: Result<AppendOutcome, AppendError>,
    stats: &ServerStats,
) -> bool {
    let reply = match result {
        Ok(AppendOutcome::Appended) => return false,
        Ok(AppendOutcome::Duplicate(stored)) => {
            // A retry older than the index: answered from the store.
            ServerStats::add(&stats.duplicates, 1);
            Ok(ack(&stored, true))
        }
        Err(e) => Err(append_reject(e)),
    };
    outcome.reply = reply;
    outcome.effects.clear();
    true
}

/// The refusal a failed append (or accepted Commit) answers with.
pub fn append_reject(e: AppendError) -> Reject {
    match e {
        AppendError::SeqConflict { .. } => {
            Reject::new(ErrorCode::Internal, "sequence conflict; retry the request")
        }
        AppendError::NoSuchConversation(id) => Reject::new(
            ErrorCode::NotFound,
            format!("conversation {id} does not exist"),
        ),
        AppendError::Fenced { conversation, .. } => {
            let mut reject = Reject::new(
                ErrorCode::Internal,
                format!("conversation {conversation} moved to another node; retry the request"),
            );
            reject.retry_after_ms = crate::mesh::STORE_RETRY_AFTER_MS;
            reject
        }
        AppendError::Backend(e) => Reject::store(e),
    }
}

/// A message's lifetime, seconds: what the sender asks (0 = as long as
/// allowed), capped by the server's `max_secs` (`message_ttl_secs`) and by
/// the conversation's disappearing-message timer (`timer_secs`, 0 = off).
pub fn lifetime_secs(max_secs: u64, timer_secs: u32, expires_in_secs: u32) -> u64 {
    let cap = match timer_secs {
        0 => max_secs,
        timer => u64::from(timer).min(max_secs),
    };
    match expires_in_secs {
        0 => cap,
        asked => u64::from(asked).min(cap),
    }
}

fn ack(msg: &StoredMessage, duplicate: bool) -> Body {
    ack_of(msg.conversation_id, msg.seq, msg.server_time_ms, duplicate)
}

fn ack_of(conversation_id: ConversationId, seq: u64, server_time_ms: u64, duplicate: bool) -> Body {
    Body::SendAck(messaging::SendAck {
        conversation_id,
        seq,
        server_time_ms,
        duplicate,
    })
}

/// The wire form of a stored message as `(user, device)` sees it: a
/// per-device message carries only that device's ciphertext.
pub fn to_wire_for(msg: &StoredMessage, user: &str, device: u32) -> Message {
    let mut wire = to_wire(msg);
    if msg.flags & flags::PER_DEVICE != 0 {
        wire.payload = payloads::find(&msg.payload, user, device).unwrap_or_default();
    }
    wire
}

/// The wire form of a stored message.
pub fn to_wire(msg: &StoredMessage) -> Message {
    Message {
        conversation_id: msg.conversation_id,
        seq: msg.seq,
        sender_user: msg.sender_user.clone(),
        sender_device: msg.sender_device,
        client_message_id: msg.client_message_id,
        server_time_ms: msg.server_time_ms,
        expires_at_ms: msg.expires_at_ms,
        flags: msg.flags,
        payload: msg.payload.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::lifetime_secs;

    #[test]
    fn lifetimes_are_capped_by_the_server_and_the_timer() {
        let max = 30 * 86_400;
        assert_eq!(lifetime_secs(max, 0, 0), max, "no timer, no ask");
        assert_eq!(lifetime_secs(max, 0, 60), 60);
        assert_eq!(lifetime_secs(max, 0, u32::MAX), max);
        assert_eq!(lifetime_secs(max, 3600, 0), 3600, "the timer's");
        assert_eq!(lifetime_secs(max, 3600, 7200), 3600, "capped");
        assert_eq!(lifetime_secs(max, 3600, 60), 60, "shorter asks stay");
        assert_eq!(lifetime_secs(60, 3600, 0), 60, "the server caps the timer");
    }
}
