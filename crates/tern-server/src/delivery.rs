//! The `Delivery` seam: how a command's effects reach devices. Today it is
//! the local shard mesh (`impl Delivery for Mesh`), which hands each push to
//! the shards that hold a connection of a recipient ([`Locations`]); in a
//! cluster it will also carry pushes between nodes.
//!
//! Pushes are pre-encoded frames (`Bytes`), shared by every recipient: a
//! group message is encoded once and never copied.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::mesh::{Caller, Control, Mesh};
use tern_store::{DeviceId, UserId};

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

    /// The distinct users among the recipients (recipients are grouped by
    /// user, so consecutive repeats are skipped).
    pub(crate) fn users(&self) -> impl Iterator<Item = &str> + Clone {
        let mut last: Option<&str> = None;
        self.recipients.iter().filter_map(move |(user, _)| {
            let new = last != Some(user.as_str());
            last = Some(user.as_str());
            new.then_some(user.as_str())
        })
    }
}

/// What a shard's push inbox carries.
#[derive(Debug)]
pub enum Push {
    /// A frame for listed devices.
    Devices(Fanout),
    /// A realtime frame for listed devices: a datagram where the
    /// connection takes one, else on the stream (`Sessions::deliver_ephemeral`).
    Ephemeral(Fanout),
    /// A frame for every connected device of each user (a notice).
    Users { users: Arc<[UserId]>, frame: Bytes },
}

/// How effects reach devices and the other owners.
#[async_trait]
pub trait Delivery: Send + Sync {
    /// Pushes a frame to the listed devices that are connected.
    async fn deliver(&self, fanout: Fanout);

    /// Pushes a realtime frame (typing) to the listed devices that are
    /// connected, as a datagram where their connection takes datagrams.
    async fn deliver_ephemeral(&self, fanout: Fanout);

    /// Pushes a frame to every connected device of each of `users`.
    async fn notify(&self, users: Arc<[UserId]>, frame: Bytes);

    /// Closes every connection of a (revoked) device.
    async fn close_device(&self, user: UserId, device: DeviceId);

    /// Tells every conversation owner that `user`'s devices changed, so
    /// cached recipient sets that include them are dropped.
    async fn forget_user(&self, user: UserId);

    /// Offers a push wake-up to each listed device with no connection
    /// (`crate::push`); never waits for it to be sent.
    async fn wake(&self, wake: crate::effects::Wake);

    /// A connection of `user` was authenticated here (`generation` from
    /// `Locations::arrive`, or `next_generation` when the user was already
    /// on its shard). Awaited before the authentication is answered: in a
    /// cluster the other nodes route the user's deliveries here once it
    /// returns (`crate::node::interest`). Nothing to do on one server.
    async fn user_arrived(&self, _user: &str, _generation: u64) {}

    /// The last connection of `user` here closed (`generation` from
    /// `Locations::leave`). Nothing to do on one server.
    fn user_left(&self, _user: &str, _generation: u64) {}
}

#[async_trait]
impl Delivery for Mesh {
    async fn deliver(&self, fanout: Fanout) {
        let shards = self.locations.shards_of(fanout.users(), self.all_shards());
        for shard in shards.iter() {
            self.push(shard, Push::Devices(fanout.clone())).await;
        }
    }

    async fn deliver_ephemeral(&self, fanout: Fanout) {
        let shards = self.locations.shards_of(fanout.users(), self.all_shards());
        for shard in shards.iter() {
            self.push(shard, Push::Ephemeral(fanout.clone())).await;
        }
    }

    async fn notify(&self, users: Arc<[UserId]>, frame: Bytes) {
        let names = users.iter().map(String::as_str);
        let shards = self.locations.shards_of(names, self.all_shards());
        for shard in shards.iter() {
            let push = Push::Users {
                users: Arc::clone(&users),
                frame: frame.clone(),
            };
            self.push(shard, push).await;
        }
    }

    async fn close_device(&self, user: UserId, device: DeviceId) {
        let shards = self.locations.shards_of([user.as_str()], self.all_shards());
        for shard in shards.iter() {
            let close = Control::CloseDevice {
                user: user.clone(),
                device,
            };
            self.control(shard, close).await;
        }
    }

    async fn forget_user(&self, user: UserId) {
        self.invalidate_user(&user).await;
    }

    async fn wake(&self, wake: crate::effects::Wake) {
        if let Some(pusher) = self.pusher.get() {
            pusher.offer(
                &wake.recipients,
                wake.except.as_ref(),
                wake.conversation_id,
                wake.urgent,
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn bob_fanout() -> Fanout {
        let recipients: Arc<[(UserId, DeviceId)]> =
            vec![("bob".to_owned(), 1), ("bob".to_owned(), 2)].into();
        Fanout::shared(recipients, None, Bytes::from_static(b"frame"))
    }

    /// A push reaches only the shards holding a recipient, once each.
    #[tokio::test]
    async fn pushes_go_only_to_shards_holding_a_recipient() {
        let (mesh, mut inboxes) = Mesh::new(4);
        mesh.locations.arrive("bob", 2);
        mesh.deliver(bob_fanout()).await;
        let users: Arc<[UserId]> = vec!["bob".to_owned(), "carol".to_owned()].into();
        mesh.notify(users, Bytes::from_static(b"notice")).await;
        let waiting: Vec<usize> = inboxes.iter().map(|i| i.push.len()).collect();
        assert_eq!(waiting, vec![0, 0, 2, 0]);
        let got = inboxes[2].push.try_recv().unwrap();
        assert!(matches!(got, Push::Devices(f) if f.recipients.len() == 2));

        mesh.locations.leave("bob", 2);
        mesh.deliver(bob_fanout()).await;
        assert!(
            inboxes.iter().all(|i| i.push.len() <= 1),
            "nobody holds bob now"
        );
        assert_eq!(inboxes[2].push.len(), 1, "only the earlier notice is left");
    }
}
