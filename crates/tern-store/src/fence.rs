//! Conversation ownership for a cluster: which node sequences a
//! conversation, under a **fencing token** the store checks on every
//! fenced append, so that after a failover the old owner can never append
//! again (Kleppmann, "How to do distributed locking", 2016: a lease alone
//! cannot stop a paused owner; a token checked by the storage can).
//!
//! A node that becomes a conversation's owner (by rendezvous hashing over
//! the live nodes) calls [`OwnershipStore::claim_ownership`] before its
//! first append, and passes the token it got in [`Fences`] with every
//! append of that conversation. A later claim by another node raises the
//! token, and from then on the first node's appends are refused with
//! [`crate::AppendError::Fenced`]. A single-node server never claims and
//! appends unfenced ([`Fences::none`]): no check, no extra read.

use std::collections::HashMap;

use async_trait::async_trait;

use crate::{BackendError, ConversationId};

/// A conversation's ownership epoch: 0 before the first claim, raised by
/// one with every claim.
pub type FenceToken = u64;

/// The current owner of a conversation and its token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// The node id given to the claim that produced `token`.
    pub node: String,
    pub token: FenceToken,
}

/// The tokens an owner holds for the conversations of one append call:
/// conversation id → the token its claim returned. A message of a
/// conversation not listed is appended unfenced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fences {
    tokens: HashMap<ConversationId, FenceToken>,
}

impl Fences {
    /// No fencing (single-node servers, tools, tests).
    pub fn none() -> Self {
        Fences::default()
    }

    /// Fences conversation `id` at `token` (replacing any earlier entry).
    pub fn insert(&mut self, id: ConversationId, token: FenceToken) {
        self.tokens.insert(id, token);
    }

    /// The token appends of `id` must match, if they are fenced.
    pub fn of(&self, id: ConversationId) -> Option<FenceToken> {
        self.tokens.get(&id).copied()
    }

    /// True when no conversation is fenced.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// Ownership claims of conversations.
///
/// # Failure modes
/// A claim is a conditional write (compare-and-set on the stored token;
/// ScyllaDB: one lightweight transaction): of two racing claims both get
/// distinct tokens and the later one wins. A failed claim (`Err`) may or
/// may not have raised the token; the caller claims again before appending.
#[async_trait]
pub trait OwnershipStore: Send + Sync + 'static {
    /// Makes `node` the owner of conversation `id`: atomically sets the
    /// stored token to its current value plus one and returns it. Works for
    /// any id, existing conversation or not (a conversation's creation is
    /// itself an append by its owner). From the moment this returns, appends
    /// of `id` fenced with an older token are refused.
    async fn claim_ownership(
        &self,
        id: ConversationId,
        node: &str,
    ) -> Result<FenceToken, BackendError>;

    /// The last claim of `id`, or `None` if it was never claimed.
    async fn ownership(&self, id: ConversationId) -> Result<Option<Ownership>, BackendError>;
}
