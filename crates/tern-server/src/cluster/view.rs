//! The set of live nodes at one moment and which of them owns a
//! conversation: rendezvous (highest-random-weight) hashing, Thaler and
//! Ravishankar, "Using name-based mappings to increase hit rates" (IEEE/ACM
//! ToN, 1998). Each node gets a weight per conversation and the heaviest
//! wins, so removing a node moves only the conversations it owned, and
//! adding one takes about `1/n` of them from the others.

use sha2::{Digest, Sha256};

use super::NodeInfo;

/// Domain separation of the rendezvous weight, versioned: changing the
/// weight function moves every conversation, so it is a new version.
const WEIGHT_DOMAIN: &[u8] = b"tern-rendezvous-v1";

/// The live nodes, sorted by id (each id once); an immutable snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    nodes: Vec<NodeInfo>,
}

impl View {
    /// A view of `nodes`, sorted by id; of two entries with one id the
    /// first is kept.
    pub fn new(mut nodes: Vec<NodeInfo>) -> View {
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        nodes.dedup_by(|later, earlier| later.id == earlier.id);
        View { nodes }
    }

    /// The live nodes, sorted by id.
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    /// Whether no node is live (Redis never answered, or every key expired).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node with this id, if live.
    pub fn get(&self, id: &str) -> Option<&NodeInfo> {
        self.nodes
            .binary_search_by(|node| node.id.as_str().cmp(id))
            .ok()
            .and_then(|at| self.nodes.get(at))
    }

    /// The live node owning `conversation`: the one of highest
    /// [`weight`]`(node id, conversation)`; ties (a 2^-64 chance) go to
    /// the smaller id. `None` only for an empty view.
    pub fn owner_of(&self, conversation: u64) -> Option<&NodeInfo> {
        self.nodes
            .iter()
            .map(|node| (weight(&node.id, conversation), node))
            .max_by(|(wa, a), (wb, b)| wa.cmp(wb).then_with(|| b.id.cmp(&a.id)))
            .map(|(_, node)| node)
    }
}

/// The rendezvous weight of `node` for `conversation`: the first 8 bytes,
/// big-endian, of SHA-256(`"tern-rendezvous-v1"` ‖ len(node) as u32 BE ‖
/// node ‖ conversation as u64 BE). SHA-256 rather than std's hasher
/// because every node, of every build, must compute the same owner.
pub fn weight(node: &str, conversation: u64) -> u64 {
    let mut hash = Sha256::new();
    hash.update(WEIGHT_DOMAIN);
    hash.update(u32::try_from(node.len()).unwrap_or(u32::MAX).to_be_bytes());
    hash.update(node.as_bytes());
    hash.update(conversation.to_be_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(first)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::collections::HashMap;
    use std::net::SocketAddr;

    use super::*;

    fn node(id: &str, port: u16) -> NodeInfo {
        NodeInfo {
            id: id.to_owned(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn three() -> View {
        View::new(vec![
            node("tern-2", 3),
            node("tern-0", 1),
            node("tern-1", 2),
        ])
    }

    #[test]
    fn nodes_are_sorted_and_found_by_id() {
        let view = View::new(vec![node("b", 2), node("a", 1), node("b", 9)]);
        let ids: Vec<&str> = view.nodes().iter().map(|n| n.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(view.get("b"), Some(&node("b", 2)));
        assert_eq!(view.get("c"), None);
        assert_eq!(View::default().owner_of(1), None);
    }

    #[test]
    fn the_weight_is_pinned() {
        // A changed weight function would move every conversation between
        // builds of a rolling upgrade: these values must never change
        // (computed independently with Python's hashlib).
        assert_eq!(weight("tern-0", 0), weight("tern-0", 0));
        assert_ne!(weight("tern-0", 1), weight("tern-1", 1));
        let pinned = [weight("tern-0", 42), weight("a", u64::MAX)];
        assert_eq!(pinned, [PINNED_TERN0_42, PINNED_A_MAX]);
    }

    const PINNED_TERN0_42: u64 = 5_803_231_629_589_746_832;
    const PINNED_A_MAX: u64 = 1_219_270_572_513_459_353;

    #[test]
    fn ownership_is_stable_and_spread() {
        let view = three();
        let mut counts: HashMap<String, usize> = HashMap::new();
        for id in 0..30_000u64 {
            let owner = view.owner_of(id).unwrap();
            assert_eq!(view.owner_of(id), Some(owner), "stable across calls");
            assert_eq!(three().owner_of(id), Some(owner), "stable across views");
            *counts.entry(owner.id.clone()).or_default() += 1;
        }
        assert_eq!(counts.len(), 3);
        for (id, count) in counts {
            // 10,000 expected each; 5 % is over 10 standard deviations.
            assert!((9_500..=10_500).contains(&count), "{id} owns {count}");
        }
    }

    #[test]
    fn removing_a_node_moves_only_what_it_owned() {
        let all = three();
        let without = View::new(vec![node("tern-0", 1), node("tern-2", 3)]);
        let mut moved = 0;
        for id in 0..30_000u64 {
            let before = all.owner_of(id).unwrap();
            let after = without.owner_of(id).unwrap();
            if before.id == "tern-1" {
                moved += 1;
            } else {
                assert_eq!(before, after, "conversation {id} moved");
            }
        }
        assert!(moved > 9_000, "tern-1 owned {moved}");
    }
}
