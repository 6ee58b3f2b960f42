//! The shard-local table of authenticated connections, by user and device,
//! and delivery of fanned-out frames to them. Lives on one shard thread only
//! (no locks); a connection whose outbound queue is full is closed as too
//! slow, and its device catches up with Sync on reconnect.

use std::collections::HashMap;

use bytes::Bytes;

use super::delivery::Fanout;
use super::mesh::Caller;
use super::outbound::{Outbound, QueueError};
use tern_proto::close;
use tern_store::{DeviceId, UserId};

/// One live, authenticated connection on this shard.
pub struct Session {
    pub conn_id: u64,
    pub device: DeviceId,
    pub outbound: Outbound,
    pub closer: Closer,
}

/// Closes a session's connection when it cannot keep up.
pub struct Closer(Option<quinn::Connection>);

impl Closer {
    pub fn new(connection: quinn::Connection) -> Self {
        Closer(Some(connection))
    }

    /// A closer with no connection behind it (benchmarks, unit tests).
    pub fn detached() -> Self {
        Closer(None)
    }

    fn close_revoked(&self) {
        if let Some(connection) = &self.0 {
            connection.close(close::AUTH_FAILED.into(), b"device revoked");
        }
    }

    /// Sends a length-prefixed `frame` as one QUIC datagram without its
    /// prefix (docs/PROTOCOL.md §1.4); false if the connection takes no
    /// datagrams (`max_datagram_size()` is `None`: the peer did not offer
    /// the RFC 9221 transport parameter) or none that large (path MTU).
    fn send_datagram(&self, frame: &Bytes) -> bool {
        let Some(connection) = &self.0 else {
            return false;
        };
        let body = frame.slice(tern_proto::codec::LEN_PREFIX.min(frame.len())..);
        let fits = connection
            .max_datagram_size()
            .is_some_and(|max| body.len() <= max);
        fits && connection.send_datagram(body).is_ok()
    }

    fn close_slow(&self) {
        if let Some(connection) = &self.0 {
            connection.close(
                close::TOO_SLOW.into(),
                b"outbound queue full; reconnect and sync",
            );
        }
    }
}

/// What one fan-out did on this shard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FanoutResult {
    pub delivered: u64,
    pub closed_slow: u64,
}

/// Authenticated connections of this shard, by user.
#[derive(Default)]
pub struct Sessions {
    by_user: HashMap<UserId, Vec<Session>>,
}

impl Sessions {
    /// Adds a session; true if it is the user's first on this shard.
    pub fn insert(&mut self, user: &str, session: Session) -> bool {
        let list = self.by_user.entry(user.to_owned()).or_default();
        list.push(session);
        list.len() == 1
    }

    /// Removes a session; true if it was the user's last on this shard.
    pub fn remove(&mut self, user: &str, conn_id: u64) -> bool {
        let Some(list) = self.by_user.get_mut(user) else {
            return false;
        };
        list.retain(|s| s.conn_id != conn_id);
        if !list.is_empty() {
            return false;
        }
        self.by_user.remove(user);
        true
    }

    /// Number of authenticated connections on this shard.
    pub fn len(&self) -> usize {
        self.by_user.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_user.is_empty()
    }

    /// Queues the fan-out's frame on every local connection of its recipients.
    pub fn deliver(&self, fanout: &Fanout) -> FanoutResult {
        let mut result = FanoutResult::default();
        self.each_recipient(fanout, |session, frame| push(session, frame, &mut result));
        result
    }

    /// Sends the fan-out's (realtime) frame to every local connection of its
    /// recipients: as a QUIC datagram (the frame without its length prefix)
    /// where the connection takes datagrams of that size, else queued on
    /// the stream like any push. Also returns how many went as datagrams.
    pub fn deliver_ephemeral(&self, fanout: &Fanout) -> (FanoutResult, u64) {
        let mut result = FanoutResult::default();
        let mut datagrams = 0;
        self.each_recipient(fanout, |session, frame| {
            match session.closer.send_datagram(frame) {
                true => datagrams += 1,
                false => push(session, frame, &mut result),
            }
        });
        result.delivered += datagrams;
        (result, datagrams)
    }

    /// Calls `f` with each local session of the fan-out's recipients (the
    /// excepted device skipped) and the frame for it.
    fn each_recipient(&self, fanout: &Fanout, mut f: impl FnMut(&Session, &Bytes)) {
        for (index, (user, device)) in fanout.recipients.iter().enumerate() {
            let Some(list) = self.by_user.get(user) else {
                continue;
            };
            let Some(frame) = fanout.frame(index) else {
                continue;
            };
            if is_excluded(&fanout.except, user, *device) {
                continue;
            }
            for session in list.iter().filter(|s| s.device == *device) {
                f(session, frame);
            }
        }
    }

    /// Queues `frame` on every local connection of each of `users`.
    pub fn deliver_to_users(&self, users: &[String], frame: &Bytes) -> FanoutResult {
        let mut result = FanoutResult::default();
        for session in users.iter().filter_map(|u| self.by_user.get(u)).flatten() {
            push(session, frame, &mut result);
        }
        result
    }

    /// Queues `frame` on connection `conn_id` of `user`, if it is here.
    pub fn deliver_to_conn(&self, user: &str, conn_id: u64, frame: &Bytes) -> FanoutResult {
        let mut result = FanoutResult::default();
        let list = self.by_user.get(user).into_iter().flatten();
        for session in list.filter(|s| s.conn_id == conn_id) {
            push(session, frame, &mut result);
        }
        result
    }

    /// Closes every connection of one device (it was revoked).
    pub fn close_device(&self, user: &str, device: DeviceId) {
        for session in self
            .by_user
            .get(user)
            .into_iter()
            .flatten()
            .filter(|s| s.device == device)
        {
            session.closer.close_revoked();
        }
    }
}

fn is_excluded(except: &Option<Caller>, user: &str, device: DeviceId) -> bool {
    except
        .as_ref()
        .is_some_and(|c| c.device == device && c.user == user)
}

fn push(session: &Session, frame: &Bytes, result: &mut FanoutResult) {
    match session.outbound.try_push(frame.clone()) {
        Ok(()) => result.delivered += 1,
        Err(QueueError::Full) => {
            session.closer.close_slow();
            result.closed_slow += 1;
        }
        Err(QueueError::Closed) => {}
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn session(
        conn_id: u64,
        device: DeviceId,
        capacity: usize,
    ) -> (
        Session,
        tokio::sync::mpsc::Receiver<crate::outbound::Queued>,
    ) {
        let (outbound, rx) = Outbound::channel(capacity, 1 << 20);
        (
            Session {
                conn_id,
                device,
                outbound,
                closer: Closer::detached(),
            },
            rx,
        )
    }

    #[test]
    fn delivers_to_listed_devices_except_the_sender() {
        let mut sessions = Sessions::default();
        let (a1, mut a1_rx) = session(1, 1, 8);
        let (a2, mut a2_rx) = session(2, 2, 8);
        let (b1, mut b1_rx) = session(3, 1, 8);
        sessions.insert("alice", a1);
        sessions.insert("alice", a2);
        sessions.insert("bob", b1);
        let recipients: Arc<[(String, DeviceId)]> =
            vec![("alice".into(), 1), ("alice".into(), 2), ("bob".into(), 1)].into();
        let fanout = Fanout::shared(
            recipients,
            Some(Caller {
                user: "alice".into(),
                device: 1,
            }),
            Bytes::from_static(b"f"),
        );
        assert_eq!(
            sessions.deliver(&fanout),
            FanoutResult {
                delivered: 2,
                closed_slow: 0
            }
        );
        assert!(a1_rx.try_recv().is_err());
        assert_eq!(a2_rx.try_recv().unwrap().frame, Bytes::from_static(b"f"));
        assert_eq!(b1_rx.try_recv().unwrap().frame, Bytes::from_static(b"f"));
        sessions.remove("bob", 3);
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn full_queue_counts_as_slow() {
        let mut sessions = Sessions::default();
        let (b1, _rx) = session(1, 1, 1);
        sessions.insert("bob", b1);
        let fanout = Fanout::shared(vec![("bob".to_owned(), 1)].into(), None, Bytes::new());
        assert_eq!(sessions.deliver(&fanout).delivered, 1);
        assert_eq!(
            sessions.deliver(&fanout),
            FanoutResult {
                delivered: 0,
                closed_slow: 1
            }
        );
    }
}
