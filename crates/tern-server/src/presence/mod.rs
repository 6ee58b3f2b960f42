//! Presence (issue 11): online / away / busy / offline, status text and
//! last seen, soft state kept in memory only, never with the messages. The
//! commands (`cmd::presence`) apply privacy; this module keeps the state
//! and fans changes out, behind the [`Presence`] trait so that a cluster
//! can keep it in Redis instead of in-process.
//!
//! Each user has a *home*: the shard `home_shard(user)` in one process.
//! The home keeps the user's [`record::Record`] (devices connected and
//! their states, status text, last seen, which shards watch the user) and
//! coalesces pushes: at most one per user per second, the latest state
//! winning (one timer per dirty user, not a queue). A connection's shard
//! tells the home when one of the user's devices connects, disconnects or
//! sets its state. Subscriptions are per connection and live on the
//! connection's shard ([`subs::Subscriptions`]); a shard asks a subject's
//! home to watch it when its first connection subscribes, and the home
//! sends each change once per watching shard, which pushes it to its
//! subscribed connections (a per-node fan-out). All of it is messages over
//! the shard mesh ([`crate::mesh::Mesh::to_presence`]), no locks.
//!
//! In a cluster (`presence_backend = "redis"`) the same records,
//! subscriptions and coalescing run on every node, and only the exchange
//! between homes and watchers goes through Redis (fred): [`redis`] says
//! how (a hash per user with one view per node, rewritten by a heartbeat;
//! a change channel per user), [`cluster`] how views merge. Redis never
//! holds the only copy of anything: the privacy setting lives in the
//! store, and presence is rebuilt from live connections within one
//! heartbeat after Redis is flushed or restarted.

pub mod cluster;
pub mod local;
pub mod record;
pub mod redis;
pub mod subs;

use async_trait::async_trait;
use tern_proto::body::presence::PresenceState;
use tern_store::{DeviceId, UserId};

pub use local::LocalPresence;
pub use record::Snapshot;
pub use subs::{Revocation, TooMany};

/// Where presence lives (`presence_backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceBackend {
    /// In this process: one node (the default).
    #[default]
    Local,
    /// Shared through Redis (`redis_url`): a cluster of nodes.
    Redis,
}

impl std::str::FromStr for PresenceBackend {
    type Err = String;

    /// `local` or `redis`, as in the config file (`TERN_PRESENCE_BACKEND`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(PresenceBackend::Local),
            "redis" => Ok(PresenceBackend::Redis),
            other => Err(format!(
                "unknown presence backend {other:?}: use local or redis"
            )),
        }
    }
}

/// One authenticated connection of this shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnRef {
    pub user: UserId,
    pub device: DeviceId,
    /// Unique within the process (`ShardCtx::next_conn_id`).
    pub conn_id: u64,
}

/// A subscription the command layer allowed: the subject, and whether the
/// two share a conversation (else the subject shows itself to everyone).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub subject: UserId,
    pub shared: bool,
}

/// Where presence state lives. One instance per shard; every call comes
/// from that shard's thread (hence `?Send`). No call fails for the caller
/// except [`Presence::subscribe`] past its cap: presence is soft state, and
/// a change that cannot be handed on is pushed again later.
#[async_trait(?Send)]
pub trait Presence {
    /// `conn` authenticated: its device counts as connected (Online unless
    /// it set another state).
    async fn connected(&self, conn: &ConnRef);

    /// `conn` closed: its subscriptions end; when it was the user's last
    /// connection the user goes Offline, last seen now.
    async fn disconnected(&self, conn: &ConnRef);

    /// `conn`'s device sets its `state` (Online, Away or Busy) and, with
    /// `Some`, the account's status text (empty clears it).
    async fn set(&self, conn: &ConnRef, state: PresenceState, status_text: Option<String>);

    /// The current presence of `users`, in order, before privacy.
    async fn lookup(&self, users: &[UserId]) -> Vec<Snapshot>;

    /// Subscribes `conn` to `grants` and returns their current presence,
    /// in order; later changes are pushed as `PresenceChanged`.
    ///
    /// # Errors
    /// [`TooMany`] past `MAX_PRESENCE_SUBSCRIPTIONS` (nothing subscribed).
    async fn subscribe(&self, conn: &ConnRef, grants: &[Grant]) -> Result<Vec<Snapshot>, TooMany>;

    /// Ends `conn`'s subscriptions to `users`.
    async fn unsubscribe(&self, conn: &ConnRef, users: &[UserId]);

    /// Ends, on every shard, the subscriptions a privacy change no longer
    /// allows; each gets a last push saying the subject is Unknown.
    async fn revoke(&self, revocation: Revocation);
}

/// The shard that keeps `user`'s presence among `shards` (FNV-1a, spread
/// by the mesh's SplitMix64 finaliser).
pub fn home_shard(user: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in user.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let n = shards.max(1) as u64;
    (crate::mesh::mix64(hash) % n) as usize
}
