//! The check a node makes as it joins: can it talk to the live nodes?
//! A node given another cluster CA than theirs registers in Redis like any
//! other, so every node would route about `1/n` of the conversations to it
//! and have each of those requests refused at the TLS handshake, for as
//! long as it heartbeats. Before serving, a joining node therefore calls
//! every other live node once (an empty `NodeCall::Live`); if each node
//! that answers refuses its certificate, it leaves the membership and
//! fails to start, naming them. Unreachable or slow nodes say nothing about
//! the CA and are not counted.
//!
//! Before registering at all, a node also calls itself at the address it
//! is about to advertise ([`reach_self`]), so a wrong `cluster_advertise`
//! fails the start instead of sending the others to another node or to
//! nothing.

use super::wire::{self, NodeCall};
use crate::cluster::{LinkError, NodeInfo, NodeLinks, View};

/// What the other live nodes said to this node's first call.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Probe {
    /// Nodes that answered.
    pub accepted: usize,
    /// Nodes whose TLS handshake failed, each with the reason.
    pub refused: Vec<String>,
}

impl Probe {
    /// Refused by every node that answered (and by at least one): this
    /// node and the cluster load different CAs (or the view's address of
    /// each names another node).
    pub(crate) fn foreign(&self) -> bool {
        self.accepted == 0 && !self.refused.is_empty()
    }

    /// Counts one node's answer.
    fn count(&mut self, node: &NodeInfo, answer: Result<bytes::Bytes, LinkError>) {
        match answer {
            Ok(_) => self.accepted += 1,
            Err(LinkError::Refused { reason, .. }) => {
                self.refused
                    .push(format!("{} at {} ({reason})", node.id, node.addr));
            }
            Err(e) => tracing::debug!(node = %node.id, error = %e, "no answer to the join probe"),
        }
    }
}

/// Calls every live node of `view` but `me` at once (each bounded by the
/// call timeout) and counts who accepts this node.
pub(crate) async fn probe(links: &NodeLinks, me: &str, view: &View) -> Probe {
    let mut probe = Probe::default();
    let Ok(call) = wire::encode(&NodeCall::Live {
        devices: Vec::new(),
    }) else {
        return probe;
    };
    let others: Vec<&NodeInfo> = view.nodes().iter().filter(|n| n.id != me).collect();
    let calls = others.iter().map(|node| links.call(node, call.clone()));
    let answers = futures_util::future::join_all(calls).await;
    for (node, answer) in others.into_iter().zip(answers) {
        probe.count(node, answer);
    }
    if !probe.refused.is_empty() && !probe.foreign() {
        tracing::error!(refused = %probe.refused.join("; "), "cluster: these live nodes refuse this node's certificate (another cluster CA?); requests for the conversations they own fail until they are stopped or given this cluster's CA");
    }
    probe
}

/// Calls this node at its own advertised address, as the other nodes
/// will: the address must lead back to this node (its certificate names
/// `me.id`). A wrong `cluster_advertise` would otherwise register an
/// address where another node, or nothing, answers, and every request
/// routed here would fail for as long as this node heartbeats.
///
/// # Errors
/// The link error of the call, as a sentence: refused (another node
/// answered there), timed out or unreachable (nothing answered).
pub(crate) async fn reach_self(links: &NodeLinks, me: &NodeInfo) -> Result<(), String> {
    let call = wire::encode(&NodeCall::Live {
        devices: Vec::new(),
    })
    .map_err(|e| e.to_string())?;
    links
        .call(me, call)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            addr: ([127, 0, 0, 1], 1).into(),
        }
    }

    fn refused(id: &str) -> Result<bytes::Bytes, LinkError> {
        Err(LinkError::Refused {
            node: id.into(),
            reason: "bad certificate".into(),
        })
    }

    #[test]
    fn foreign_only_when_every_answering_node_refuses() {
        let mut alone = Probe::default();
        assert!(!alone.foreign(), "no other node: nothing to refuse");
        let timeout = Err(LinkError::Timeout {
            node: "b".into(),
            after: std::time::Duration::from_secs(1),
        });
        alone.count(&node("b"), timeout);
        assert!(!alone.foreign(), "a silent node says nothing of the CA");
        alone.count(&node("c"), refused("c"));
        assert!(alone.foreign());
        assert!(
            alone.refused[0].starts_with("c at 127.0.0.1:1"),
            "{alone:?}"
        );
        alone.count(&node("d"), Ok(bytes::Bytes::new()));
        assert!(!alone.foreign(), "d accepts: c is the odd one");
    }
}
