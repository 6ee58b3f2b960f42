//! Message passing between the shards of one server: which shard owns a
//! conversation, the commands a connection's shard sends to that owner, the
//! pushes (pre-encoded frames) that reach the shards holding recipients, and
//! control messages. Only `Bytes` and `Arc`s cross shards, so a group message
//! is encoded once and never copied (each connection's writer hands the
//! shared frame to quinn as it is). The typed refusal [`Reject`] lives here
//! too, since replies cross shards as well.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::command::OwnerCommand;
use crate::delivery::Push;
use crate::locations::{Locations, ShardSet};
use crate::presence::local::Msg as PresenceMsg;
use tern_proto::fb::ErrorCode;
use tern_proto::{Body, Conflict, ErrorBody, Frame};
use tern_store::{ConversationId, DeviceId, UserId};

/// Capacity of each shard's owner and fan-out inboxes.
pub const INBOX_CAPACITY: usize = 16 * 1024;

/// An authenticated device: who sent a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    pub user: UserId,
    pub device: DeviceId,
}

/// Retry hint sent with a retryable store failure, ms.
pub const STORE_RETRY_AFTER_MS: u32 = 1_000;

/// A request refused with a typed error code and a message saying what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reject {
    pub code: ErrorCode,
    pub message: String,
    /// Recovery state sent with the refusal (current epoch, device set).
    pub conflict: Option<Box<Conflict>>,
    /// With `RateLimited`: when to retry.
    pub retry_after_ms: u32,
}

impl Reject {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Reject {
            code,
            message: message.into(),
            conflict: None,
            retry_after_ms: 0,
        }
    }

    /// A refusal carrying the state the client recovers with.
    pub fn conflict(conflict: Conflict) -> Self {
        Reject {
            code: conflict.error.code,
            message: conflict.error.message.clone(),
            conflict: Some(Box::new(conflict)),
            retry_after_ms: 0,
        }
    }

    pub fn internal(what: impl std::fmt::Display) -> Self {
        Reject::new(
            ErrorCode::Internal,
            format!("internal error: {what}; retry later"),
        )
    }

    /// A store failure: `Internal`, with a retry hint when the backend says
    /// a retry can help (unavailable, timed out) and none when it needs an
    /// operator (corrupt, poisoned).
    pub fn store(error: tern_store::BackendError) -> Self {
        let mut reject = Reject::new(ErrorCode::Internal, format!("internal error: {error}"));
        if error.is_retryable() {
            reject.retry_after_ms = STORE_RETRY_AFTER_MS;
        }
        reject
    }

    /// The error frame answering `request_id`.
    pub fn into_frame(self, request_id: u64) -> Frame {
        match self.conflict {
            Some(conflict) => Frame::new(request_id, Body::Conflict(*conflict)),
            None => {
                let error = ErrorBody {
                    code: self.code,
                    message: self.message,
                    retry_after_ms: self.retry_after_ms,
                };
                Frame::new(request_id, Body::Error(error))
            }
        }
    }
}

/// The answer to one request: a body or a typed refusal.
pub type Reply = Result<Body, Reject>;

/// Encodes a reply as the response frame to `request_id`.
pub fn encode_reply(request_id: u64, reply: Reply) -> Bytes {
    match reply {
        Ok(body) => Frame::new(request_id, body).encode(),
        Err(reject) => reject.into_frame(request_id).encode(),
    }
}

/// What an owner shard's inbox carries.
#[derive(Debug)]
pub enum OwnerRequest {
    /// A device's request for one of this owner's conversations.
    Command {
        request_id: u64,
        caller: Caller,
        command: OwnerCommand,
        /// Receives the encoded response frame.
        reply: oneshot::Sender<Bytes>,
    },
    /// A user's device set changed: drop cached recipients that include them.
    ForgetUser(UserId),
}

/// Cross-shard control messages (rare, not on the message path).
#[derive(Debug)]
pub enum Control {
    /// Close every connection of a revoked device.
    CloseDevice { user: UserId, device: DeviceId },
}

/// The senders into every shard's inboxes, indexed by shard id, and which
/// shards hold each user's connections.
#[derive(Debug)]
pub struct Mesh {
    owners: Vec<mpsc::Sender<OwnerRequest>>,
    pushes: Vec<mpsc::Sender<Push>>,
    controls: Vec<mpsc::Sender<Control>>,
    presence: Vec<mpsc::Sender<PresenceMsg>>,
    pub(crate) locations: Locations,
    /// Call signals held for devices that connect within a minute
    /// (`realtime::calls`), shared by every shard.
    pub(crate) calls: crate::realtime::calls::CallHold,
    /// Devices with a live connection, for push wake-ups (`push::live`).
    pub(crate) live: Arc<crate::push::live::LiveDevices>,
    /// The pusher thread's handle, set once when the server starts.
    pub(crate) pusher: std::sync::OnceLock<crate::push::Pusher>,
    /// This server's node of a cluster, set once when it joins (`None`: a
    /// single node, every conversation owned here).
    pub(crate) cluster: std::sync::OnceLock<Arc<crate::node::ClusterNode>>,
}

/// The receiving ends one shard keeps.
pub struct ShardInbox {
    pub owner: mpsc::Receiver<OwnerRequest>,
    pub push: mpsc::Receiver<Push>,
    pub control: mpsc::Receiver<Control>,
    pub presence: mpsc::Receiver<PresenceMsg>,
}

impl Mesh {
    /// Builds the mesh for `shards` shards and the inbox of each.
    pub fn new(shards: usize) -> (Arc<Mesh>, Vec<ShardInbox>) {
        let mut owners = Vec::with_capacity(shards);
        let mut pushes = Vec::with_capacity(shards);
        let mut controls = Vec::with_capacity(shards);
        let mut presences = Vec::with_capacity(shards);
        let mut inboxes = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (owner_tx, owner) = mpsc::channel(INBOX_CAPACITY);
            let (push_tx, push) = mpsc::channel(INBOX_CAPACITY);
            let (control_tx, control) = mpsc::channel(1024);
            let (presence_tx, presence) = mpsc::channel(INBOX_CAPACITY);
            presences.push(presence_tx);
            owners.push(owner_tx);
            pushes.push(push_tx);
            controls.push(control_tx);
            inboxes.push(ShardInbox {
                owner,
                push,
                control,
                presence,
            });
        }
        (
            Arc::new(Mesh {
                owners,
                pushes,
                controls,
                presence: presences,
                locations: Locations::default(),
                calls: Default::default(),
                live: Default::default(),
                pusher: std::sync::OnceLock::new(),
                cluster: std::sync::OnceLock::new(),
            }),
            inboxes,
        )
    }

    pub fn shards(&self) -> usize {
        self.owners.len()
    }

    /// The shard that sequences, persists and fans out a conversation.
    pub fn owner_of(&self, id: ConversationId) -> usize {
        let n = self.owners.len().max(1) as u64;
        (mix64(id) % n) as usize
    }

    /// Sends a request to its conversation's owner: the owner shard here,
    /// or, in a cluster, the owner node (the reply comes back through the
    /// request's channel either way). Fails only while shutting down.
    pub async fn to_owner(&self, id: ConversationId, request: OwnerRequest) -> Result<(), Reject> {
        let Some(node) = self.cluster.get() else {
            return self.to_local_owner(id, request).await;
        };
        match (node.route(id), request) {
            (
                crate::node::Route::Node(to),
                OwnerRequest::Command {
                    request_id,
                    caller,
                    command,
                    reply,
                },
            ) => {
                let node = Arc::clone(node);
                tokio::spawn(async move {
                    let frame = node.forward(&to, request_id, caller, command).await;
                    let _ = reply.send(frame);
                });
                Ok(())
            }
            (_, request) => self.to_local_owner(id, request).await,
        }
    }

    /// This node's id in a cluster (`None` on a single node).
    pub fn node_id(&self) -> Option<&str> {
        self.cluster.get().map(|node| node.id())
    }

    /// Changes whenever the cluster's live nodes change (0 on a single node).
    pub fn cluster_version(&self) -> u64 {
        self.cluster.get().map_or(0, |node| node.view_version())
    }

    /// Sends a request to the owner shard of `id` in this process.
    pub async fn to_local_owner(
        &self,
        id: ConversationId,
        request: OwnerRequest,
    ) -> Result<(), Reject> {
        let shard = self.owner_of(id);
        let Some(tx) = self.owners.get(shard) else {
            return Err(Reject::internal("owner shard missing"));
        };
        tx.send(request).await.map_err(|_| {
            Reject::new(
                ErrorCode::ShuttingDown,
                "server is shutting down; reconnect",
            )
        })
    }

    /// Every shard of this server.
    /// Requests waiting in each shard's owner inbox now, by shard (the
    /// `tern_owner_queue_depth` gauge).
    pub fn owner_queue_depths(&self) -> Vec<usize> {
        self.owners
            .iter()
            .map(|tx| tx.max_capacity().saturating_sub(tx.capacity()))
            .collect()
    }

    pub fn all_shards(&self) -> ShardSet {
        ShardSet::first(self.shards())
    }

    /// Hands a push to one shard, which delivers it to its local connections.
    pub async fn push(&self, shard: usize, push: Push) {
        if let Some(tx) = self.pushes.get(shard) {
            // A closed inbox means that shard is shutting down: its devices
            // will sync on reconnect, so nothing is lost.
            let _ = tx.send(push).await;
        }
    }
}

impl Mesh {
    /// Sends a control message to one shard (dropped if it is shutting down).
    pub async fn control(&self, shard: usize, msg: Control) {
        if let Some(tx) = self.controls.get(shard) {
            let _ = tx.send(msg).await;
        }
    }

    /// Hands a presence message to one shard's presence inbox, waiting for
    /// room (dropped if that shard is shutting down: presence is soft state).
    pub async fn to_presence(&self, shard: usize, msg: PresenceMsg) {
        if let Some(tx) = self.presence.get(shard) {
            let _ = tx.send(msg).await;
        }
    }

    /// Like [`Mesh::to_presence`] without waiting: false if the inbox is
    /// full or closed (the caller sends again later or not at all).
    pub fn try_presence(&self, shard: usize, msg: PresenceMsg) -> bool {
        self.presence
            .get(shard)
            .is_some_and(|tx| tx.try_send(msg).is_ok())
    }

    /// Tells every owner that `user`'s devices changed (fire and forget).
    pub async fn invalidate_user(&self, user: &str) {
        for tx in &self.owners {
            let _ = tx.send(OwnerRequest::ForgetUser(user.to_owned())).await;
        }
    }
}

/// SplitMix64 finaliser: spreads ids evenly over shards.
pub fn mix64(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn ownership_is_stable_and_spread() {
        let (mesh, _inboxes) = Mesh::new(4);
        let mut counts = [0usize; 4];
        for id in 1..4001u64 {
            let shard = mesh.owner_of(id);
            assert_eq!(shard, mesh.owner_of(id));
            if let Some(c) = counts.get_mut(shard) {
                *c += 1;
            }
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
