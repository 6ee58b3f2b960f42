//! Message passing between shards: which shard owns a conversation, the
//! requests a connection's shard sends to that owner, and the pre-encoded
//! deliveries an owner fans out to every shard. Only `Bytes` and `Arc`s cross
//! shards, so a group message is encoded once and never copied (each
//! connection's writer hands the shared frame to quinn as it is).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use tern_proto::body::{conversations, messaging, mls};
use tern_proto::fb::ErrorCode;
use tern_proto::{Body, Conflict, ConversationKind, ErrorBody, Frame};
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

/// Conversation operations, executed by the conversation's owner shard:
/// the request bodies themselves, except `Create` (which carries the id the
/// connection's shard picked) and `Invalidate` (internal).
#[derive(Debug)]
pub enum OwnerOp {
    Create {
        id: ConversationId,
        kind: ConversationKind,
        members: Vec<UserId>,
    },
    AddMembers(conversations::AddMembers),
    RemoveMembers(conversations::RemoveMembers),
    Send(messaging::Send),
    Ack(messaging::Ack),
    History(messaging::History),
    SendGroup(messaging::SendGroup),
    SendToDevices(messaging::SendToDevices),
    Commit(Box<mls::Commit>),
    GetGroupInfo(mls::GetGroupInfo),
    /// A user's device set changed: drop cached recipients that include them.
    Invalidate {
        user: UserId,
    },
}

impl OwnerOp {
    /// The conversation the op is for (its owner executes it); 0 for
    /// `Invalidate`, which goes to every owner.
    pub fn conversation(&self) -> ConversationId {
        match self {
            OwnerOp::Create { id, .. } => *id,
            OwnerOp::AddMembers(a) => a.conversation_id,
            OwnerOp::RemoveMembers(r) => r.conversation_id,
            OwnerOp::Send(s) => s.conversation_id,
            OwnerOp::Ack(a) => a.conversation_id,
            OwnerOp::History(h) => h.conversation_id,
            OwnerOp::SendGroup(s) => s.conversation_id,
            OwnerOp::SendToDevices(s) => s.conversation_id,
            OwnerOp::Commit(c) => c.conversation_id,
            OwnerOp::GetGroupInfo(g) => g.conversation_id,
            OwnerOp::Invalidate { .. } => 0,
        }
    }
}

/// A conversation operation on its way to the owner shard.
#[derive(Debug)]
pub struct OwnerRequest {
    pub request_id: u64,
    pub caller: Caller,
    pub op: OwnerOp,
    /// Receives the encoded response frame.
    pub reply: oneshot::Sender<Bytes>,
}

/// The encoded push of a fan-out: one frame for all, or one per recipient.
#[derive(Debug, Clone)]
pub enum Frames {
    Shared(Bytes),
    /// Aligned with `Fanout::recipients`: entry `i` goes to recipient `i`.
    PerDevice(Arc<[Bytes]>),
}

/// One push for the listed devices, skipping `except` (the sender's device).
#[derive(Debug, Clone)]
pub struct Fanout {
    pub recipients: Arc<[(UserId, DeviceId)]>,
    pub except: Option<Caller>,
    pub frames: Frames,
}

impl Fanout {
    /// The same frame to every listed device.
    pub fn shared(
        recipients: Arc<[(UserId, DeviceId)]>,
        except: Option<Caller>,
        frame: Bytes,
    ) -> Self {
        Fanout {
            recipients,
            except,
            frames: Frames::Shared(frame),
        }
    }

    /// The frame for recipient `index`.
    pub fn frame(&self, index: usize) -> Option<&Bytes> {
        match &self.frames {
            Frames::Shared(frame) => Some(frame),
            Frames::PerDevice(frames) => frames.get(index),
        }
    }
}

/// Cross-shard control messages (rare, not on the message path).
#[derive(Debug)]
pub enum Control {
    /// A linked device decided on a pending link held by this shard.
    LinkDecision {
        link_id: u64,
        approver: UserId,
        approve: bool,
    },
    /// Close every connection of a revoked device.
    CloseDevice { user: UserId, device: DeviceId },
}

/// The senders into every shard's inboxes, indexed by shard id.
#[derive(Debug)]
pub struct Mesh {
    owners: Vec<mpsc::Sender<OwnerRequest>>,
    fanouts: Vec<mpsc::Sender<Fanout>>,
    controls: Vec<mpsc::Sender<Control>>,
}

/// The receiving ends one shard keeps.
pub struct ShardInbox {
    pub owner: mpsc::Receiver<OwnerRequest>,
    pub fanout: mpsc::Receiver<Fanout>,
    pub control: mpsc::Receiver<Control>,
}

impl Mesh {
    /// Builds the mesh for `shards` shards and the inbox of each.
    pub fn new(shards: usize) -> (Arc<Mesh>, Vec<ShardInbox>) {
        let mut owners = Vec::with_capacity(shards);
        let mut fanouts = Vec::with_capacity(shards);
        let mut controls = Vec::with_capacity(shards);
        let mut inboxes = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (owner_tx, owner) = mpsc::channel(INBOX_CAPACITY);
            let (fanout_tx, fanout) = mpsc::channel(INBOX_CAPACITY);
            let (control_tx, control) = mpsc::channel(1024);
            owners.push(owner_tx);
            fanouts.push(fanout_tx);
            controls.push(control_tx);
            inboxes.push(ShardInbox {
                owner,
                fanout,
                control,
            });
        }
        (
            Arc::new(Mesh {
                owners,
                fanouts,
                controls,
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

    /// Sends a request to its conversation's owner; fails only while shutting down.
    pub async fn to_owner(&self, id: ConversationId, request: OwnerRequest) -> Result<(), Reject> {
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

    /// Hands a delivery to every shard (each delivers to its local connections).
    pub async fn fan_out(&self, fanout: Fanout) {
        for tx in &self.fanouts {
            // A closed inbox means that shard is shutting down: its devices
            // will sync on reconnect, so nothing is lost.
            let _ = tx.send(fanout.clone()).await;
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

    /// Tells every owner that `user`'s devices changed (fire and forget).
    pub async fn invalidate_user(&self, user: &str) {
        for tx in &self.owners {
            let (reply, _) = oneshot::channel();
            let caller = Caller {
                user: user.to_owned(),
                device: 0,
            };
            let request = OwnerRequest {
                request_id: 0,
                caller,
                op: OwnerOp::Invalidate {
                    user: user.to_owned(),
                },
                reply,
            };
            let _ = tx.send(request).await;
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
