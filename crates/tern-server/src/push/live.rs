//! What the delivery path checks before offering a wake-up, striped by
//! user like `locations` so that shards rarely meet on one lock:
//! [`LiveDevices`], which devices have an authenticated connection to this
//! server now (each shard adds a connection when it authenticates and
//! removes it when it ends; removing twice is harmless), and
//! [`NoEndpoint`], which devices the pusher found without an endpoint.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tern_store::{DeviceId, UserId};

const STRIPES: usize = 64;

/// One stripe: user → (device, connection id) of each live connection
/// (keyed by user alone so that a lookup by `&str` allocates nothing).
type Stripe = HashMap<UserId, Vec<(DeviceId, u64)>>;

/// user → its devices' live connections.
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

/// The stripe of `user` (FNV-1a of the name).
fn stripe_of(user: &str) -> usize {
    let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % STRIPES as u64).unwrap_or(0)
}

impl LiveDevices {
    fn stripe(&self, user: &str) -> Option<MutexGuard<'_, Stripe>> {
        self.stripes
            .get(stripe_of(user))
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Connection `conn_id` of `user`'s `device` is authenticated.
    pub fn arrive(&self, user: &str, device: DeviceId, conn_id: u64) {
        if let Some(mut map) = self.stripe(user) {
            let conns = map.entry(user.to_owned()).or_default();
            if !conns.contains(&(device, conn_id)) {
                conns.push((device, conn_id));
            }
        }
    }

    /// Connection `conn_id` ended (a no-op if it was not there).
    pub fn leave(&self, user: &str, device: DeviceId, conn_id: u64) {
        if let Some(mut map) = self.stripe(user) {
            if let Some(conns) = map.get_mut(user) {
                conns.retain(|c| *c != (device, conn_id));
                if conns.is_empty() {
                    map.remove(user);
                }
            }
        }
    }

    /// Whether `user`'s `device` has a live connection.
    pub fn is_live(&self, user: &str, device: DeviceId) -> bool {
        self.stripe(user).is_some_and(|map| {
            map.get(user)
                .is_some_and(|conns| conns.iter().any(|(d, _)| *d == device))
        })
    }
}

/// Most users one stripe of [`NoEndpoint`] remembers; past it the stripe
/// is cleared (so about 100 000 users in all).
const NO_ENDPOINT_PER_STRIPE: usize = 1600;
/// Most devices [`NoEndpoint`] remembers per user (a user has a few).
const MAX_DEVICES_PER_USER: usize = 64;

/// Devices the pusher found without an endpoint, so that messages for them
/// cost no queue slot and no store read; registering removes the device.
#[derive(Debug)]
pub struct NoEndpoint {
    stripes: Vec<Mutex<HashMap<UserId, Vec<DeviceId>>>>,
}

impl Default for NoEndpoint {
    fn default() -> Self {
        NoEndpoint {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
        }
    }
}

impl NoEndpoint {
    fn stripe(&self, user: &str) -> Option<MutexGuard<'_, HashMap<UserId, Vec<DeviceId>>>> {
        self.stripes
            .get(stripe_of(user))
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// `user`'s `device` has no endpoint (bounded: see [`NO_ENDPOINT_PER_STRIPE`]).
    pub fn insert(&self, user: &str, device: DeviceId) {
        if let Some(mut set) = self.stripe(user) {
            if set.len() >= NO_ENDPOINT_PER_STRIPE {
                set.clear();
            }
            let devices = set.entry(user.to_owned()).or_default();
            if !devices.contains(&device) && devices.len() < MAX_DEVICES_PER_USER {
                devices.push(device);
            }
        }
    }

    /// `user`'s `device` registered or removed an endpoint: forget it.
    pub fn remove(&self, user: &str, device: DeviceId) {
        if let Some(mut set) = self.stripe(user) {
            if let Some(devices) = set.get_mut(user) {
                devices.retain(|d| *d != device);
                if devices.is_empty() {
                    set.remove(user);
                }
            }
        }
    }

    /// Whether the pusher found `user`'s `device` without an endpoint.
    pub fn contains(&self, user: &str, device: DeviceId) -> bool {
        self.stripe(user)
            .is_some_and(|set| set.get(user).is_some_and(|d| d.contains(&device)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn devices_without_endpoint_are_remembered_until_they_register() {
        let none = NoEndpoint::default();
        none.insert("bob", 1);
        assert!(none.contains("bob", 1) && !none.contains("bob", 2));
        none.remove("bob", 1);
        assert!(!none.contains("bob", 1));
        for device in 0..10_000 {
            none.insert("carol", device);
        }
        let kept = (0..10_000).filter(|d| none.contains("carol", *d)).count();
        assert_eq!(kept, MAX_DEVICES_PER_USER, "bounded per user");
        for n in 0..(STRIPES * NO_ENDPOINT_PER_STRIPE * 2) {
            none.insert(&format!("u{n}"), 1);
        }
        let users: usize = none.stripes.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(
            users <= STRIPES * NO_ENDPOINT_PER_STRIPE,
            "bounded: {users}"
        );
    }
}
