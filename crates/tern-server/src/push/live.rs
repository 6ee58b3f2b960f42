//! Which devices have an authenticated connection to this server now, so
//! that a wake-up goes only to devices that have none. Each shard adds a
//! connection when it authenticates and removes it when it ends (removing
//! twice is harmless). Striped by user, like `locations`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tern_store::{DeviceId, UserId};

const STRIPES: usize = 64;

/// One stripe: (user, device) → connection ids.
type Stripe = HashMap<(UserId, DeviceId), Vec<u64>>;

/// (user, device) → the ids of its live connections.
#[derive(Debug)]
pub struct LiveDevices {
    stripes: Vec<Mutex<Stripe>>,
}

impl Default for LiveDevices {
    fn default() -> Self {
        LiveDevices {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
        }
    }
}

impl LiveDevices {
    fn stripe(&self, user: &str) -> Option<MutexGuard<'_, Stripe>> {
        let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        let index = usize::try_from(hash % STRIPES as u64).unwrap_or(0);
        self.stripes
            .get(index)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Connection `conn_id` of `user`'s `device` is authenticated.
    pub fn arrive(&self, user: &str, device: DeviceId, conn_id: u64) {
        if let Some(mut map) = self.stripe(user) {
            let conns = map.entry((user.to_owned(), device)).or_default();
            if !conns.contains(&conn_id) {
                conns.push(conn_id);
            }
        }
    }

    /// Connection `conn_id` ended (a no-op if it was not there).
    pub fn leave(&self, user: &str, device: DeviceId, conn_id: u64) {
        if let Some(mut map) = self.stripe(user) {
            let key = (user.to_owned(), device);
            if let Some(conns) = map.get_mut(&key) {
                conns.retain(|c| *c != conn_id);
                if conns.is_empty() {
                    map.remove(&key);
                }
            }
        }
    }

    /// Whether `user`'s `device` has a live connection.
    pub fn is_live(&self, user: &str, device: DeviceId) -> bool {
        self.stripe(user)
            .is_some_and(|map| map.contains_key(&(user.to_owned(), device)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_live_while_any_connection_is() {
        let live = LiveDevices::default();
        live.arrive("bob", 1, 10);
        live.arrive("bob", 1, 11);
        assert!(live.is_live("bob", 1));
        assert!(!live.is_live("bob", 2));
        live.leave("bob", 1, 10);
        live.leave("bob", 1, 10);
        assert!(live.is_live("bob", 1));
        live.leave("bob", 1, 11);
        assert!(!live.is_live("bob", 1));
    }
}
