//! The `Delivery` of a cluster node: every effect goes to this node's own
//! shards (the mesh) and, as a [`NodePush`], to every other live node,
//! which hands it to its shards in turn. Push wake-ups stay with this
//! node's pusher (it reads the registered endpoints from the shared store).

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::wire::{NodePush, WireFrames};
use super::ClusterNode;
use crate::delivery::{Delivery, Fanout, Frames};
use crate::mesh::Mesh;
use tern_store::{DeviceId, UserId};

/// The mesh plus the other nodes.
pub struct ClusterDelivery {
    pub mesh: Arc<Mesh>,
    pub node: Arc<ClusterNode>,
}

fn deliver_push(fanout: &Fanout, ephemeral: bool) -> NodePush {
    NodePush::Deliver {
        recipients: fanout.recipients.to_vec(),
        except: fanout.except.as_ref().map(|c| (c.user.clone(), c.device)),
        frames: match &fanout.frames {
            Frames::Shared(frame) => WireFrames::Shared(frame.clone()),
            Frames::PerDevice(frames) => WireFrames::PerDevice(frames.to_vec()),
        },
        ephemeral,
    }
}

#[async_trait]
impl Delivery for ClusterDelivery {
    async fn deliver(&self, fanout: Fanout) {
        self.node.broadcast(&deliver_push(&fanout, false));
        self.mesh.deliver(fanout).await;
    }

    async fn deliver_ephemeral(&self, fanout: Fanout) {
        self.node.broadcast(&deliver_push(&fanout, true));
        self.mesh.deliver_ephemeral(fanout).await;
    }

    async fn notify(&self, users: Arc<[UserId]>, frame: Bytes) {
        let push = NodePush::Notify {
            users: users.to_vec(),
            frame: frame.clone(),
        };
        self.node.broadcast(&push);
        self.mesh.notify(users, frame).await;
    }

    async fn close_device(&self, user: UserId, device: DeviceId) {
        let push = NodePush::CloseDevice {
            user: user.clone(),
            device,
        };
        self.node.broadcast(&push);
        self.mesh.close_device(user, device).await;
    }

    async fn forget_user(&self, user: UserId) {
        self.node
            .broadcast(&NodePush::ForgetUser { user: user.clone() });
        self.mesh.forget_user(user).await;
    }

    async fn wake(&self, wake: crate::effects::Wake) {
        self.mesh.wake(wake).await;
    }
}
