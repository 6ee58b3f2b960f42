//! Cluster building blocks (issue 13): which nodes are alive and who owns a
//! conversation ([`Registry`], [`View`]), the nodes' mutual-TLS identity
//! issued from a cluster CA ([`ClusterTls`]), and authenticated
//! node-to-node QUIC calls and pushes ([`NodeLinks`]).
//!
//! This layer knows nothing of conversations beyond their `u64` id: the
//! server routes owner requests and deliveries over it, and the store's
//! fencing token keeps two nodes from sequencing one conversation even
//! while their views disagree (a view is advisory: it decides where work
//! is sent, never whether a write is correct).

mod config;
mod links;
mod links_thread;
mod registry;
mod tls;
mod view;
mod wire;

pub use config::{ClusterConfig, ClusterConfigError};
pub use links::{LinkError, LinkSettings, NodeHandler, NodeLinks, MAX_NODE_MESSAGE};
pub use registry::{Registry, RegistryError, NODES_KEY, NODE_KEY_PREFIX};
pub use tls::{ClusterTls, ClusterTlsError, NODE_ALPN, NODE_NAME_SUFFIX};
pub use view::View;

use std::net::SocketAddr;

/// A node's id: 1 to 63 characters of `a-z`, `0-9` and `-`, neither first
/// nor last a `-` (one DNS label, RFC 1035 §2.3.1, since it becomes the
/// node's certificate name, see [`ClusterTls`]). A StatefulSet pod name
/// such as `tern-0` fits.
pub type NodeId = String;

/// One live node: its id and the address of its node-to-node QUIC endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's id (see [`NodeId`]).
    pub id: NodeId,
    /// Where its [`NodeLinks`] listen (UDP).
    pub addr: SocketAddr,
}

/// Longest node id (one DNS label).
pub const MAX_NODE_ID_LEN: usize = 63;

/// Whether `id` is a valid [`NodeId`]; `Err` says what is wrong with it.
///
/// # Errors
/// A sentence naming the rule `id` breaks.
pub fn check_node_id(id: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    if id.is_empty() || id.len() > MAX_NODE_ID_LEN {
        return Err(format!(
            "node id {id:?} must be 1 to {MAX_NODE_ID_LEN} characters long"
        ));
    }
    if !id.chars().all(allowed) || id.starts_with('-') || id.ends_with('-') {
        return Err(format!(
            "node id {id:?} may hold only a-z, 0-9 and '-' (not first or last), like tern-0"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_node_id;

    #[test]
    fn node_ids_are_dns_labels() {
        for good in ["tern-0", "a", "node7", &"x".repeat(63)] {
            assert!(check_node_id(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "Tern", "a.b", "a_b", "né", &"x".repeat(64)] {
            assert!(check_node_id(bad).is_err(), "{bad}");
        }
    }
}
