//! Which other nodes of the cluster hold a connection of which user, so
//! that a delivery goes only to the nodes holding one of its recipients
//! instead of to every node (the shard-level `crate::locations`, one level
//! up).
//!
//! What a node says of its own users, and how each is ordered:
//! - **Arrived** (`NodeCall::Arrived`), for every authenticated connection,
//!   is a call each node answers once it has recorded it, and the
//!   connection's authentication is answered only after that (bounded by
//!   [`ANNOUNCE_WAIT`]): a message stored after the device's first sync is
//!   then routed to its node, as `locations` argues for shards.
//! - **Left** (`NodePush::Left`), when a user's last connection on the node
//!   closes, is a push: losing it costs only pushes the node drops.
//! - **Present** (`NodeCall::Present`), the node's whole list of users, is
//!   sent to a node it sees join and again every [`RESYNC`]: it replaces
//!   what the receiver held for the sender (so lost or stale news heals),
//!   and until it came the receiver sends that node every delivery, as if
//!   it held every user.
//!
//! Each item carries the sender's generation (`Locations::next_generation`,
//! growing across restarts): an item older than what is recorded for the
//! user changes nothing, so news that travelled out of order never removes
//! a newer arrival.
//!
//! Memory: one entry per (user, node) pair with a connection, bounded by the
//! cluster's connections; a node that leaves the view is forgotten whole.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tern_store::UserId;

/// How long a connection's authentication waits for the other nodes to
/// record its arrival. A node slower than this (or unreachable) may miss
/// live deliveries for that user until the next [`RESYNC`]; the client
/// catches up on the next message of the conversation (a seq gap is
/// fetched) or its next sync.
pub const ANNOUNCE_WAIT: Duration = Duration::from_secs(1);

/// How often each node sends every other node its whole user list.
pub const RESYNC: Duration = Duration::from_secs(10);

const STRIPES: usize = 64;

/// user → (node, generation) of each other node holding a connection of it.
type Stripe = HashMap<UserId, Vec<(String, u64)>>;

/// The other nodes' users, as they told this node.
#[derive(Debug)]
pub struct Interest {
    stripes: Vec<Mutex<Stripe>>,
    /// Nodes whose whole list came: the others get every delivery.
    synced: Mutex<HashSet<String>>,
}

impl Default for Interest {
    fn default() -> Self {
        Interest {
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            synced: Mutex::default(),
        }
    }
}

fn stripe_of(user: &str) -> usize {
    let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % STRIPES as u64).unwrap_or(0)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Interest {
    fn stripe(&self, user: &str) -> Option<MutexGuard<'_, Stripe>> {
        self.stripes.get(stripe_of(user)).map(lock)
    }

    /// `node` holds a connection of `user` as of `generation`.
    pub fn arrived(&self, node: &str, user: &str, generation: u64) {
        let Some(mut map) = self.stripe(user) else {
            return;
        };
        let nodes = map.entry(user.to_owned()).or_default();
        match nodes.iter_mut().find(|(n, _)| n == node) {
            Some(entry) => entry.1 = entry.1.max(generation),
            None => nodes.push((node.to_owned(), generation)),
        }
    }

    /// `node` holds no connection of `user` as of `generation`: forgotten
    /// unless an arrival at least as new is recorded.
    pub fn left(&self, node: &str, user: &str, generation: u64) {
        let Some(mut map) = self.stripe(user) else {
            return;
        };
        let Some(nodes) = map.get_mut(user) else {
            return;
        };
        nodes.retain(|(n, g)| n != node || *g >= generation);
        if nodes.is_empty() {
            map.remove(user);
        }
    }

    /// `node`'s whole list as of `generation`: its users are recorded, and
    /// those recorded for it before `generation` but not listed are
    /// forgotten. From now on `node` gets only the deliveries it wants.
    pub fn replace(&self, node: &str, generation: u64, users: &[UserId]) {
        let listed: HashSet<&str> = users.iter().map(String::as_str).collect();
        for stripe in &self.stripes {
            let mut map = lock(stripe);
            map.retain(|user, nodes| {
                nodes.retain(|(n, g)| {
                    n != node || *g > generation || listed.contains(user.as_str())
                });
                !nodes.is_empty()
            });
        }
        for user in users {
            self.arrived(node, user, generation);
        }
        lock(&self.synced).insert(node.to_owned());
    }

    /// `node` left the view: everything it said is dropped, and if it comes
    /// back it gets every delivery until its list comes again.
    pub fn forget_node(&self, node: &str) {
        lock(&self.synced).remove(node);
        for stripe in &self.stripes {
            lock(stripe).retain(|_, nodes| {
                nodes.retain(|(n, _)| n != node);
                !nodes.is_empty()
            });
        }
    }

    /// Whether `node` should get a delivery for `users`: it holds one of
    /// them, or its list has not come yet.
    pub fn wants<'a>(&self, node: &str, mut users: impl Iterator<Item = &'a str>) -> bool {
        if !lock(&self.synced).contains(node) {
            return true;
        }
        users.any(|user| {
            self.stripe(user).is_some_and(|map| {
                map.get(user)
                    .is_some_and(|nodes| nodes.iter().any(|(n, _)| n == node))
            })
        })
    }

    /// Whether `node`'s whole list has come.
    pub fn is_synced(&self, node: &str) -> bool {
        lock(&self.synced).contains(node)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn wants(interest: &Interest, node: &str, users: &[&str]) -> bool {
        interest.wants(node, users.iter().copied())
    }

    #[test]
    fn a_node_gets_everything_until_its_list_comes_then_only_its_users() {
        let interest = Interest::default();
        assert!(wants(&interest, "b", &["bob"]), "no list yet");
        interest.replace("b", 10, &["bob".to_owned()]);
        assert!(wants(&interest, "b", &["alice", "bob"]));
        assert!(!wants(&interest, "b", &["alice"]));
        assert!(!wants(&interest, "b", &[]));
        assert!(wants(&interest, "c", &["alice"]), "c sent no list");
        interest.arrived("b", "alice", 11);
        assert!(wants(&interest, "b", &["alice"]));
        interest.forget_node("b");
        assert!(wants(&interest, "b", &["carol"]), "back to everything");
        interest.replace("b", 20, &[]);
        assert!(!wants(&interest, "b", &["alice", "bob"]), "forgotten whole");
    }

    #[test]
    fn news_older_than_what_is_recorded_changes_nothing() {
        let interest = Interest::default();
        interest.replace("b", 1, &[]);
        interest.arrived("b", "bob", 7);
        interest.left("b", "bob", 5);
        assert!(
            wants(&interest, "b", &["bob"]),
            "a late leave keeps the newer arrival"
        );
        interest.left("b", "bob", 8);
        assert!(!wants(&interest, "b", &["bob"]));
        // A list drawn before an arrival does not remove it.
        interest.arrived("b", "carol", 30);
        interest.replace("b", 25, &[]);
        assert!(wants(&interest, "b", &["carol"]));
        // A newer list without a user removes it; one with it keeps it.
        interest.arrived("b", "dave", 31);
        interest.replace("b", 40, &["dave".to_owned()]);
        assert!(!wants(&interest, "b", &["carol"]));
        assert!(wants(&interest, "b", &["dave"]));
        // Another node's entries are untouched by b's news.
        interest.replace("c", 1, &[]);
        interest.arrived("c", "dave", 2);
        interest.left("b", "dave", 50);
        assert!(wants(&interest, "c", &["dave"]));
        assert!(!wants(&interest, "b", &["dave"]));
    }
}
