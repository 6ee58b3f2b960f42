//! What this node does with calls and pushes from the other nodes of its
//! cluster (the [`NodeHandler`] of its node links): an owner request is
//! decoded and checked like a client's, then handed to the local owner
//! shard, whose encoded reply goes back; a push goes to the local shards
//! holding a recipient.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::{oneshot, watch};

use super::interest::Interest;
use super::wire::{self, NodeCall, NodePush, WireFrames};
use super::{moved, route_in, NodeStats, Route, Shared};
use crate::cluster::{NodeHandler, NodeId, View};
use crate::command::{Command, OwnerCommand};
use crate::delivery::{Delivery, Fanout, Frames};
use crate::mesh::{encode_reply, Caller, Mesh, OwnerRequest, Reject};
use tern_proto::codec::{peek_request_id, Limits};
use tern_proto::fb::ErrorCode;
use tern_proto::Frame;

/// The inbound side of this node's links.
pub struct Inbound {
    mesh: Arc<Mesh>,
    shared: Shared,
    /// The live nodes, once this node has joined (until then every owner
    /// request is refused as moving).
    views: Arc<OnceLock<watch::Receiver<Arc<View>>>>,
    /// This node's id.
    me: String,
    /// Which users the other nodes hold (what they tell this node).
    interest: Arc<Interest>,
    stats: Arc<NodeStats>,
}

impl Inbound {
    pub fn new(
        shared: Shared,
        views: Arc<OnceLock<watch::Receiver<Arc<View>>>>,
        me: String,
        (interest, stats): (Arc<Interest>, Arc<NodeStats>),
    ) -> Self {
        Inbound {
            mesh: shared.mesh.clone(),
            shared,
            views,
            me,
            interest,
            stats,
        }
    }

    /// The devices of `devices` with a live connection here, as CBOR.
    fn live(&self, mut devices: Vec<(String, u32)>) -> Bytes {
        devices.retain(|(user, device)| self.mesh.live.is_live(user, *device));
        wire::encode(&devices).unwrap_or_default()
    }

    /// A device-link decision taken on another node: `[1]` if the request
    /// is here and the decision was taken, else `[0]`.
    fn link_decision(&self, link_id: u64, approver: &str, approve: bool) -> Bytes {
        let now = self.shared.clock.now_ms();
        let taken = self.shared.links.decide(link_id, approver, approve, now);
        Bytes::from_static(if taken { &[1] } else { &[0] })
    }

    /// Whether this node owns `id` in its current view.
    fn owns(&self, id: u64) -> bool {
        let Some(views) = self.views.get() else {
            return false;
        };
        route_in(&views.borrow(), &self.me, id) == Route::Here
    }

    async fn owner_call(
        &self,
        from: &str,
        (user, device, frame, create_id): (String, u32, Bytes, Option<u64>),
    ) -> Bytes {
        // The limits this node sets its own clients: a forwarded request
        // is never larger than one it would take first-hand.
        let limits = Limits {
            max_frame_len: self.shared.max_frame_len,
            ..Limits::server_inbound()
        };
        let frame = match Frame::decode(&frame, &limits) {
            Ok(frame) => frame,
            Err(e) => {
                // Answered under the request's id when it can be read: the
                // calling node passes only the answer to its own request on.
                let id = peek_request_id(&frame).unwrap_or(0);
                return refuse(id, e.code(), &format!("from node {from}: {e}"));
            }
        };
        let request_id = frame.request_id;
        let command = match Command::from_body(frame.body) {
            Ok(Command::Owner(command)) => match with_id(command, create_id) {
                Ok(command) => command,
                Err(what) => return refuse(request_id, ErrorCode::InvalidArgument, what),
            },
            Ok(Command::Local(_)) => {
                let what = "a node forwarded a request that is not an owner request";
                return refuse(request_id, ErrorCode::InvalidArgument, what);
            }
            Err(reject) => return encode_reply(request_id, Err(reject)),
        };
        let conversation = command.conversation();
        if !self.owns(conversation) {
            let why = format!(
                "node {from} sent conversation {conversation} here, which does not own it now"
            );
            return encode_reply(request_id, Err(moved(&why)));
        }
        let (reply, answer) = oneshot::channel();
        let caller = Caller { user, device };
        let request = OwnerRequest::Command {
            request_id,
            caller,
            command,
            reply,
        };
        if let Err(reject) = self.mesh.to_local_owner(conversation, request).await {
            return encode_reply(request_id, Err(reject));
        }
        answer.await.unwrap_or_else(|_| {
            refuse(
                request_id,
                ErrorCode::ShuttingDown,
                "owner node is shutting down; retry",
            )
        })
    }

    async fn apply_push(&self, from: &str, push: NodePush) {
        match push {
            NodePush::Left { user, generation } => self.interest.left(from, &user, generation),
            NodePush::Deliver {
                recipients,
                except,
                frames,
                ephemeral,
            } => {
                NodeStats::add(&self.stats.deliveries_received);
                let fanout = Fanout {
                    recipients: recipients.into(),
                    except: except.map(|(user, device)| Caller { user, device }),
                    frames: match frames {
                        WireFrames::Shared(frame) => Frames::Shared(frame),
                        WireFrames::PerDevice(frames) => Frames::PerDevice(frames.into()),
                    },
                };
                match ephemeral {
                    true => self.mesh.deliver_ephemeral(fanout).await,
                    false => self.mesh.deliver(fanout).await,
                }
            }
            NodePush::Notify { users, frame } => self.mesh.notify(users.into(), frame).await,
            NodePush::CloseDevice { user, device } => self.mesh.close_device(user, device).await,
            NodePush::EndpointChanged { user, device } => {
                if let Some(pusher) = self.mesh.pusher.get() {
                    pusher.endpoint_changed(&user, device);
                }
            }
        }
    }
}

/// A forwarded `Create` keeps the id it was routed by, which it must carry
/// (non-zero): an id picked here would be owned by any node.
fn with_id(command: OwnerCommand, create_id: Option<u64>) -> Result<OwnerCommand, &'static str> {
    match (command, create_id) {
        (OwnerCommand::Create(_, body), Some(id)) if id != 0 => Ok(OwnerCommand::Create(id, body)),
        (OwnerCommand::Create(..), _) => {
            Err("a node forwarded a CreateConversation without the non-zero id it was routed by")
        }
        (command, _) => Ok(command),
    }
}

fn refuse(request_id: u64, code: ErrorCode, message: &str) -> Bytes {
    encode_reply(request_id, Err(Reject::new(code, message)))
}

#[async_trait::async_trait]
impl NodeHandler for Inbound {
    async fn call(&self, from: &NodeId, request: Bytes) -> Bytes {
        match wire::decode::<NodeCall>(&request) {
            Ok(NodeCall::Owner {
                user,
                device,
                frame,
                create_id,
            }) => {
                self.owner_call(from, (user, device, frame, create_id))
                    .await
            }
            Ok(NodeCall::LinkDecision {
                link_id,
                approver,
                approve,
            }) => self.link_decision(link_id, &approver, approve),
            Ok(NodeCall::Live { devices }) => self.live(devices),
            Ok(NodeCall::ForgetUser { user }) => {
                self.mesh.invalidate_user(&user).await;
                Bytes::from_static(&[1])
            }
            Ok(NodeCall::Arrived { user, generation }) => {
                self.interest.arrived(from, &user, generation);
                Bytes::from_static(&[1])
            }
            Ok(NodeCall::Present { generation, users }) => {
                self.interest.replace(from, generation, &users);
                Bytes::from_static(&[1])
            }
            Err(e) => refuse(0, ErrorCode::Malformed, &format!("from node {from}: {e}")),
        }
    }

    async fn push(&self, from: &NodeId, message: Bytes) {
        match wire::decode::<NodePush>(&message) {
            Ok(push) => self.apply_push(from, push).await,
            Err(e) => tracing::warn!(node = %from, error = %e, "undecodable node push dropped"),
        }
    }
}
