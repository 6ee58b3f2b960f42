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
//!
//! In a cluster the other nodes route deliveries by the same news one
//! level up (`crate::node::interest`): each arrival and each last leave
//! carries a generation, drawn under the user's stripe lock from one
//! counter that never goes back (microseconds of the wall clock, or one
//! more than the last), so that news about one user is ordered even when
//! it travels out of order, and across restarts of this server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// The last generation handed out (see the module doc).
    generation: AtomicU64,
}

impl Default for Locations {
    fn default() -> Self {
        Locations {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            generation: AtomicU64::new(0),
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

    /// The next generation: the wall clock in microseconds since the Unix
    /// epoch, or one more than the last one if the clock has not moved on.
    pub fn next_generation(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        let mut last = self.generation.load(Ordering::Relaxed);
        loop {
            let next = now.max(last.saturating_add(1));
            match self.generation.compare_exchange_weak(
                last,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => last = seen,
            }
        }
    }

    /// `shard` now holds a connection of `user`; returns the arrival's
    /// generation.
    pub fn arrive(&self, user: &str, shard: usize) -> u64 {
        let Some(mut map) = self.stripe(user) else {
            return self.next_generation();
        };
        map.entry(user.to_owned()).or_default().insert(shard);
        self.next_generation()
    }

    /// `shard` holds no connection of `user` any more; when no shard of
    /// this server does, returns that departure's generation.
    pub fn leave(&self, user: &str, shard: usize) -> Option<u64> {
        let mut map = self.stripe(user)?;
        let set = map.get_mut(user)?;
        set.remove(shard);
        if !set.is_empty() {
            return None;
        }
        map.remove(user);
        Some(self.next_generation())
    }

    /// Every user with a connection here, and a generation drawn before
    /// the first stripe was read: any arrival the list misses is newer.
    pub fn users(&self) -> (u64, Vec<UserId>) {
        let generation = self.next_generation();
        let mut users = Vec::new();
        for stripe in &self.stripes {
            let map = stripe.lock().unwrap_or_else(PoisonError::into_inner);
            users.extend(map.keys().cloned());
        }
        (generation, users)
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

    #[test]
    fn generations_grow_and_only_the_last_leave_has_one() {
        let locations = Locations::default();
        let first = locations.arrive("alice", 1);
        let second = locations.arrive("alice", 2);
        assert!(second > first);
        assert_eq!(locations.leave("alice", 1), None, "still on shard 2");
        let gone = locations.leave("alice", 2).unwrap_or_default();
        assert!(gone > second);
        assert_eq!(locations.leave("alice", 2), None, "already gone");
        let back = locations.arrive("alice", 1);
        locations.arrive("bob", 0);
        let (snapshot, mut users) = locations.users();
        users.sort();
        assert!(snapshot > back && snapshot > gone);
        assert_eq!(users, vec!["alice".to_owned(), "bob".to_owned()]);
        // Far above the clock, the counter still moves on by one.
        locations.generation.store(u64::MAX - 1, Ordering::Relaxed);
        assert_eq!(locations.next_generation(), u64::MAX);
    }
}
