//! What applying a command produces, as data: the reply, whether it may only
//! be sent once the store is durable, and the effects to perform after it
//! (deliveries of stored messages, ephemeral signals, notices, closing a
//! revoked device's connections, telling owners a device set changed). One
//! convention for every command: the
//! driver (the owner's batch loop, or the connection for shard-local
//! commands) persists once if any outcome needs it, then answers, then
//! performs the effects through the [`Delivery`] seam, in order.

use std::sync::Arc;

use bytes::Bytes;

use crate::delivery::{Delivery, Fanout};
use crate::mesh::{Reject, Reply};
use tern_store::{DeviceId, Store, StoredMessage, UserId};

/// Whether a reply (and its effects) must wait for the store to be durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Nothing was written that the reply vouches for (reads, refusals).
    Volatile,
    /// The reply acknowledges writes: send it only after `Store::persist`.
    Durable,
}

/// A side effect of a command, performed after its reply.
#[derive(Debug)]
pub enum Effect {
    /// A stored message for listed devices (a device that misses it gets it
    /// again from the log when it syncs).
    Deliver(Fanout),
    /// An ephemeral signal for listed devices: delivered to those connected,
    /// never stored (a key-pool notice today; typing and presence later).
    Signal(Fanout),
    /// A realtime signal (typing): as a QUIC datagram to each listed
    /// device's connections that take datagrams, on the stream to the
    /// others; never stored, never retried (see `realtime`).
    Ephemeral(Fanout),
    /// A notice for every connected device of each user.
    Notify { users: Arc<[UserId]>, frame: Bytes },
    /// Close every connection of a revoked device.
    CloseDevice { user: UserId, device: DeviceId },
    /// A user's device set changed: owners drop cached recipients.
    ForgetUser(UserId),
    /// Wake the listed devices that have no connection (`push`): a message
    /// or, `urgent`, a call signal for them in `conversation_id`.
    Wake(Wake),
}

/// Who an [`Effect::Wake`] is for: nothing of the message itself.
#[derive(Debug)]
pub struct Wake {
    pub recipients: Arc<[(UserId, DeviceId)]>,
    /// The sender's device, never woken.
    pub except: Option<crate::mesh::Caller>,
    pub conversation_id: u64,
    pub urgent: bool,
}

/// The result of applying one command.
#[derive(Debug)]
pub struct Outcome {
    pub reply: Reply,
    pub durability: Durability,
    pub effects: Vec<Effect>,
    /// A message the owner's driver appends for the command, together with
    /// the rest of its batch in one store write, before it persists.
    pub append: Option<StoredMessage>,
}

impl Outcome {
    /// A reply that needs no durability and has no effects (reads, refusals).
    pub fn immediate(reply: Reply) -> Self {
        Outcome {
            reply,
            durability: Durability::Volatile,
            effects: Vec::new(),
            append: None,
        }
    }

    /// A reply acknowledging writes.
    pub fn durable(reply: Reply) -> Self {
        Outcome {
            reply,
            durability: Durability::Durable,
            effects: Vec::new(),
            append: None,
        }
    }

    /// The outcome of a fallible apply: a refusal is answered at once.
    pub fn or_refused(result: Result<Outcome, Reject>) -> Self {
        result.unwrap_or_else(|reject| Outcome::immediate(Err(reject)))
    }

    /// Adds an effect, performed after the reply.
    pub fn with(mut self, effect: Effect) -> Self {
        self.effects.push(effect);
        self
    }

    pub fn is_durable(&self) -> bool {
        self.durability == Durability::Durable
    }
}

/// Makes the outcomes' writes durable with one `persist` if any needs it.
/// If that fails, each durable outcome becomes an `Internal` refusal with no
/// effects (nothing unpersisted is acknowledged or delivered), and this
/// returns false.
pub async fn settle<'a>(
    store: &dyn Store,
    outcomes: impl IntoIterator<Item = &'a mut Outcome>,
) -> bool {
    let mut outcomes: Vec<&mut Outcome> = outcomes.into_iter().collect();
    if !outcomes.iter().any(|o| o.is_durable()) {
        return true;
    }
    let Err(error) = store.persist().await else {
        return true;
    };
    tracing::error!(%error, "persist failed; refusing the durable requests");
    for outcome in outcomes.iter_mut().filter(|o| o.is_durable()) {
        outcome.reply = Err(Reject::store(error.clone()));
        outcome.effects.clear();
    }
    false
}

/// Performs effects in order.
pub async fn perform(delivery: &dyn Delivery, effects: Vec<Effect>) {
    for effect in effects {
        match effect {
            Effect::Deliver(fanout) | Effect::Signal(fanout) => delivery.deliver(fanout).await,
            Effect::Ephemeral(fanout) => delivery.deliver_ephemeral(fanout).await,
            Effect::Notify { users, frame } => delivery.notify(users, frame).await,
            Effect::CloseDevice { user, device } => delivery.close_device(user, device).await,
            Effect::ForgetUser(user) => delivery.forget_user(user).await,
            Effect::Wake(wake) => delivery.wake(wake).await,
        }
    }
}
