//! Durable state of the delivery service, behind narrow traits split by
//! concern (after raft-rs's `Storage`): [`AccountStore`] (accounts and
//! devices), [`ConversationStore`] (conversations and membership),
//! [`MessageLog`] (ciphertext log, idempotency, expiry, delivery cursors),
//! [`KeyDirectory`] (long-term device keys and one generic single-use key
//! pool for prekeys and KeyPackages), [`GroupStore`] (MLS epochs, GroupInfo,
//! accepting a Commit atomically), [`ConsentStore`] (privacy settings,
//! contacts, invitations to groups, blocks) and [`OwnershipStore`] (which
//! cluster node sequences a conversation, under a fencing token). [`Store`] is all of them plus the
//! durability barrier, and is what the server holds. Encrypted attachment
//! bytes are not in it: they live behind [`blob::BlobStore`] (files in the
//! data directory by default), whose calls block.
//!
//! Backends: [`memory::MemStore`] (tests), `tern_store_fjall::FjallStore`
//! (the embedded default), and [`faulty::FaultyStore`], a wrapper that injects
//! failures. Every backend passes the conformance suite (feature
//! `conformance`, one `#[test]` per check via [`conformance_tests!`]).
//!
//! # Concurrency contract
//! The server serialises all writes that concern one conversation on that
//! conversation's owner shard, so a backend only has to make each call atomic
//! on its own; it does not have to order concurrent calls on one conversation.
//! Account creation and conversation creation *can* race across shards and
//! must be atomic (insert-if-absent) in the backend. So can everything keyed
//! by user and device (adding and revoking devices, uploading and claiming
//! keys): each such call is atomic, and a claim hands out each single-use key
//! at most once.
//!
//! # Durability contract
//! Writes become visible to reads at once but are only guaranteed to survive a
//! crash once a later [`Store::persist`] call has returned `Ok`. The server
//! acknowledges nothing before that. After a failed `persist`, or a write
//! that failed inside the backend itself (`Io`, `Corrupt`), a backend refuses
//! every later write and `persist` with [`BackendErrorKind::Poisoned`] until
//! it is reopened ([`Poison`]); reads still work. `Unavailable` and `Timeout`
//! (a remote backend that did not answer) do not poison: they are retried.
//!
//! # Failure modes
//! Every call may fail with a [`BackendError`] whose kind says whether a retry
//! can help ([`BackendError::is_retryable`]). Every call is safe to retry.

mod accounts;
pub mod blob;
#[cfg(feature = "conformance")]
pub mod conformance;
mod consent;
mod conversations;
mod error;
pub mod faulty;
mod fence;
mod groups;
mod keys;
mod log;
pub mod memory;
mod types;

use async_trait::async_trait;

pub use accounts::{check_push_endpoint, AccountStore, CreateAccountError, MAX_PUSH_ENDPOINT_LEN};
pub use consent::PresenceVisibility;
pub use consent::{
    oldest_first, BlockOutcome, ConsentStore, DirectStarts, GroupAdds, InvitationRecord,
};
pub use conversations::{
    ConversationSettings, ConversationStore, CreateConversationError, CreateOutcome, MembersError,
};
pub use error::{BackendError, BackendErrorKind, Poison, PoisonHook};
pub use fence::{FenceToken, Fences, Ownership, OwnershipStore};
pub use groups::{CommitOutcome, CommitRecord, GroupStore};
pub use keys::{
    ClaimedKey, DeviceKeys, DeviceKeysUpdate, KeyDirectory, KeyPool, PoolKey, SignedPrekey,
    KEY_POOL_CAP,
};
pub use log::{AppendError, AppendOutcome, MessageLog};
pub use types::{
    ConversationId, ConversationKind, ConversationRecord, DeviceId, DeviceRecord, Seq,
    StoredMessage, UserId,
};

/// Every store trait, for callers that hold a concrete backend
/// (`use tern_store::prelude::*;`); through `dyn Store` they are in reach
/// already.
pub mod prelude {
    pub use crate::{
        AccountStore, ConsentStore, ConversationStore, GroupStore, KeyDirectory, MessageLog,
        OwnershipStore, Store,
    };
}

/// The delivery service's durable state: every concern plus the durability
/// barrier. See the crate docs for the concurrency, durability and failure
/// contracts every implementation keeps.
#[async_trait]
pub trait Store:
    AccountStore
    + ConversationStore
    + MessageLog
    + KeyDirectory
    + GroupStore
    + ConsentStore
    + OwnershipStore
{
    /// Durability barrier: when this returns `Ok`, every write that returned
    /// before the call started survives a crash (process kill or power loss).
    /// Concurrent callers are batched (group commit): one sync serves many.
    /// A failure poisons the store (see the crate docs).
    async fn persist(&self) -> Result<(), BackendError>;
}
