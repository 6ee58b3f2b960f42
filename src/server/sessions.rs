//! The shard-local table of authenticated connections, by user and device,
//! and delivery of fanned-out frames to them. Lives on one shard thread only
//! (no locks); a connection whose outbound queue is full is closed as too
//! slow, and its device catches up with Sync on reconnect.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::mesh::{Caller, Fanout};
use crate::proto::close;
use crate::store::{DeviceId, UserId};

/// One live, authenticated connection on this shard.
pub struct Session {
    pub conn_id: u64,
    pub device: DeviceId,
    pub outbound: mpsc::Sender<Bytes>,
    pub connection: quinn::Connection,
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
    pub fn insert(&mut self, user: &str, session: Session) {
        self.by_user.entry(user.to_owned()).or_default().push(session);
    }

    pub fn remove(&mut self, user: &str, conn_id: u64) {
        if let Some(list) = self.by_user.get_mut(user) {
            list.retain(|s| s.conn_id != conn_id);
            if list.is_empty() {
                self.by_user.remove(user);
            }
        }
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
        for (user, device) in fanout.recipients.iter() {
            let Some(list) = self.by_user.get(user) else { continue };
            for session in list.iter().filter(|s| s.device == *device) {
                if is_excluded(&fanout.except, user, *device) {
                    continue;
                }
                push(session, &fanout.frame, &mut result);
            }
        }
        result
    }
}

fn is_excluded(except: &Option<Caller>, user: &str, device: DeviceId) -> bool {
    except.as_ref().is_some_and(|c| c.device == device && c.user == user)
}

fn push(session: &Session, frame: &Bytes, result: &mut FanoutResult) {
    match session.outbound.try_send(frame.clone()) {
        Ok(()) => result.delivered += 1,
        Err(mpsc::error::TrySendError::Full(_)) => {
            session.connection.close(close::TOO_SLOW.into(), b"outbound queue full; reconnect and sync");
            result.closed_slow += 1;
        }
        Err(mpsc::error::TrySendError::Closed(_)) => {}
    }
}
