//! The `Delivery` of a cluster node: every effect goes to this node's own
//! shards (the mesh) and, as a [`NodePush`], to each other live node that
//! holds one of its recipients (`super::interest`), which hands it to its
//! shards in turn. Push wake-ups are sent by this
//! node's pusher (it reads the registered endpoints from the shared store)
//! for the devices connected to no node: those live here are skipped as
//! on a single node, the rest are first asked about on the other nodes.

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
        let push = deliver_push(&fanout, false);
        self.node.send_where_wanted(fanout.users(), &push);
        self.mesh.deliver(fanout).await;
    }

    async fn deliver_ephemeral(&self, fanout: Fanout) {
        let push = deliver_push(&fanout, true);
        self.node.send_where_wanted(fanout.users(), &push);
        self.mesh.deliver_ephemeral(fanout).await;
    }

    async fn notify(&self, users: Arc<[UserId]>, frame: Bytes) {
        let push = NodePush::Notify {
            users: users.to_vec(),
            frame: frame.clone(),
        };
        self.node
            .send_where_wanted(users.iter().map(String::as_str), &push);
        self.mesh.notify(users, frame).await;
    }

    async fn close_device(&self, user: UserId, device: DeviceId) {
        let push = NodePush::CloseDevice {
            user: user.clone(),
            device,
        };
        self.node
            .send_where_wanted([user.as_str()].into_iter(), &push);
        self.mesh.close_device(user, device).await;
    }

    async fn user_arrived(&self, user: &str, generation: u64) {
        self.node.announce_arrival(user, generation).await;
    }

    fn user_left(&self, user: &str, generation: u64) {
        self.node.announce_departure(user, generation);
    }

    async fn forget_user(&self, user: UserId) {
        self.node.forget_user_everywhere(&user).await;
        self.mesh.forget_user(user).await;
    }

    async fn wake(&self, wake: crate::effects::Wake) {
        let Some(pusher) = self.mesh.pusher.get() else {
            return;
        };
        let candidates = pusher.candidates(&wake.recipients, wake.except.as_ref());
        if candidates.is_empty() {
            return;
        }
        // Never waits: the owner goes on while the other nodes are asked.
        let (mesh, node) = (self.mesh.clone(), self.node.clone());
        tokio::spawn(async move {
            let elsewhere = node.live_elsewhere(&candidates).await;
            let asleep: Vec<_> = candidates
                .into_iter()
                .filter(|d| !elsewhere.contains(d))
                .collect();
            if let Some(pusher) = mesh.pusher.get() {
                pusher.offer(&asleep, None, wake.conversation_id, wake.urgent);
            }
            super::NodeStats::add(&node.stats().wake_checks);
        });
    }
}
