//! Which shards hold a live connection of each user, so that a fan-out goes
//! only to the shards that hold a recipient instead of to every shard.
//!
//! Each shard reports a user when it gets its first authenticated
//! connection of that user and forgets it when the last one closes. A shard
//! reports a user *before* it answers the authentication, and the device
//! syncs after that answer; an owner looks recipients up *after* the message
//! is stored. So a message is either in the device's sync, or its fan-out
//! sees the device's shard: nothing falls between.
//!
//! The map is striped by user so that connection churn on one shard and
//! fan-out lookups on another rarely meet on one lock.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tern_store::UserId;

/// Stripes of the user map.
const STRIPES: usize = 64;

/// A set of shard ids (at most 256, the server's limit is 255).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardSet([u64; 4]);

impl ShardSet {
    /// Shards `0..n`.
    pub fn first(n: usize) -> Self {
        let mut set = ShardSet::default();
        for shard in 0..n.min(256) {
            set.insert(shard);
        }
        set
    }

    pub fn insert(&mut self, shard: usize) {
        if let Some(word) = self.0.get_mut(shard / 64) {
            *word |= 1 << (shard % 64);
        }
    }

    pub fn remove(&mut self, shard: usize) {
        if let Some(word) = self.0.get_mut(shard / 64) {
            *word &= !(1 << (shard % 64));
        }
    }

    pub fn contains(&self, shard: usize) -> bool {
        self.0
            .get(shard / 64)
            .is_some_and(|word| word & (1 << (shard % 64)) != 0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|word| *word == 0)
    }

    pub fn union(&mut self, other: ShardSet) {
        for (mine, theirs) in self.0.iter_mut().zip(other.0) {
            *mine |= theirs;
        }
    }

    /// The shard ids in the set, ascending.
    pub fn iter(self) -> impl Iterator<Item = usize> {
        (0..256).filter(move |shard| self.contains(*shard))
    }
}

/// The user → shards map shared by every shard of one server.
#[derive(Debug)]
pub struct Locations {
    stripes: Vec<Mutex<HashMap<UserId, ShardSet>>>,
}

impl Default for Locations {
    fn default() -> Self {
        Locations {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Locations {
    fn stripe(&self, user: &str) -> Option<MutexGuard<'_, HashMap<UserId, ShardSet>>> {
        // FNV-1a: cheap and good enough to spread handles over stripes.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in user.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let index = (hash % STRIPES as u64) as usize;
        let stripe = self.stripes.get(index)?;
        Some(stripe.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// `shard` now holds a connection of `user`.
    pub fn arrive(&self, user: &str, shard: usize) {
        if let Some(mut map) = self.stripe(user) {
            map.entry(user.to_owned()).or_default().insert(shard);
        }
    }

    /// `shard` holds no connection of `user` any more.
    pub fn leave(&self, user: &str, shard: usize) {
        if let Some(mut map) = self.stripe(user) {
            if let Some(set) = map.get_mut(user) {
                set.remove(shard);
                if set.is_empty() {
                    map.remove(user);
                }
            }
        }
    }

    /// The shards holding any of `users`; stops looking once it has `all`.
    pub fn shards_of<'a>(
        &self,
        users: impl IntoIterator<Item = &'a str>,
        all: ShardSet,
    ) -> ShardSet {
        let mut found = ShardSet::default();
        for user in users {
            if let Some(set) = self.stripe(user).and_then(|map| map.get(user).copied()) {
                found.union(set);
                if found == all {
                    break;
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_sets_hold_every_shard_id() {
        let mut set = ShardSet::default();
        for shard in [0, 63, 64, 200, 255] {
            set.insert(shard);
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 63, 64, 200, 255]);
        set.remove(64);
        assert!(!set.contains(64) && set.contains(63));
        assert_eq!(ShardSet::first(3).iter().collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn a_user_is_found_on_exactly_the_shards_that_hold_them() {
        let locations = Locations::default();
        locations.arrive("alice", 1);
        locations.arrive("alice", 3);
        locations.arrive("bob", 0);
        let all = ShardSet::first(4);
        let alice = locations.shards_of(["alice"], all);
        assert_eq!(alice.iter().collect::<Vec<_>>(), vec![1, 3]);
        assert!(locations.shards_of(["carol"], all).is_empty());
        locations.leave("alice", 1);
        let both = locations.shards_of(["alice", "bob"], all);
        assert_eq!(both.iter().collect::<Vec<_>>(), vec![0, 3]);
        locations.leave("alice", 3);
        assert!(locations.shards_of(["alice"], all).is_empty());
    }
}
