//! Send, applied on the conversation's owner: authorise, assign the next
//! dense seq, store (idempotent on the client message id), and after the
//! batch is durable ack the sender and fan the message out to every other
//! device of every member.

use std::sync::Arc;

use bytes::Bytes;

use crate::proto::fb::ErrorCode;
use crate::proto::{Body, Frame, Message};
use crate::server::mesh::{Caller, Fanout, Reject};
use crate::server::owner::{Outcome, Owner};
use crate::server::shard::{now_ms, ServerStats};
use crate::store::{AppendError, AppendOutcome, ConversationId, StoredMessage};

/// A decoded Send request.
pub struct SendOp {
    pub id: ConversationId,
    pub client_message_id: u64,
    pub expires_in_secs: u32,
    pub flags: u32,
    pub payload: Bytes,
}

pub async fn apply(owner: &mut Owner, caller: &Caller, op: SendOp) -> Outcome {
    match send(owner, caller, op).await {
        Ok(outcome) => outcome,
        Err(reject) => Outcome::immediate(Err(reject)),
    }
}

async fn send(owner: &mut Owner, caller: &Caller, op: SendOp) -> Result<Outcome, Reject> {
    if op.client_message_id == 0 {
        return Err(Reject::new(ErrorCode::InvalidArgument, "client_message_id must be non-zero and unique per message"));
    }
    let ttl_ms = expiry_ms(owner, op.expires_in_secs);
    let store = owner.ctx.store.clone();
    let stats = owner.ctx.stats.clone();
    let state = owner.conversation(op.id).await?;
    state.require_member(caller)?;
    let now = now_ms();
    let msg = StoredMessage {
        conversation_id: op.id,
        seq: state.record.head_seq + 1,
        sender_user: caller.user.clone(),
        sender_device: caller.device,
        client_message_id: op.client_message_id,
        server_time_ms: now,
        expires_at_ms: now.saturating_add(ttl_ms),
        flags: op.flags,
        payload: op.payload,
    };
    match store.append_message(&msg).await {
        Ok(AppendOutcome::Appended) => {
            state.record.head_seq = msg.seq;
            let fanout = Fanout {
                recipients: Arc::clone(&state.recipients),
                except: Some(caller.clone()),
                frame: Frame::new(0, Body::Deliver(to_wire(&msg))).encode(),
            };
            Ok(Outcome { reply: Ok(ack(&msg, false)), durable: true, fanout: Some(fanout) })
        }
        Ok(AppendOutcome::Duplicate(stored)) => {
            ServerStats::add(&stats.duplicates, 1);
            Ok(Outcome::durable(Ok(ack(&stored, true))))
        }
        Err(AppendError::SeqConflict { head, .. }) => {
            state.record.head_seq = head;
            Err(Reject::new(ErrorCode::Internal, "sequence conflict; retry the send"))
        }
        Err(AppendError::NoSuchConversation(id)) => {
            Err(Reject::new(ErrorCode::NotFound, format!("conversation {id} does not exist")))
        }
        Err(AppendError::Backend(e)) => Err(Reject::internal(e)),
    }
}

/// The message lifetime: the server's TTL, or shorter if the sender asks.
fn expiry_ms(owner: &Owner, expires_in_secs: u32) -> u64 {
    let max = owner.ctx.config.message_ttl_secs;
    let secs = if expires_in_secs == 0 { max } else { u64::from(expires_in_secs).min(max) };
    secs.saturating_mul(1000)
}

fn ack(msg: &StoredMessage, duplicate: bool) -> Body {
    Body::SendAck { conversation_id: msg.conversation_id, seq: msg.seq, server_time_ms: msg.server_time_ms, duplicate }
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
