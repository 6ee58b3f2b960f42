//! Durable state of the delivery service behind one narrow [`Store`] trait:
//! accounts, devices, conversations, members, messages (ciphertext only),
//! per-device cursors and idempotency keys.
//!
//! Every backend must pass [`conformance`]. The embedded default is
//! [`fjall::FjallStore`] (one journal, group commit).
//!
//! # Concurrency contract
//! The server serialises all writes that concern one conversation on that
//! conversation's owner shard, so a backend only has to make each call atomic
//! on its own; it does not have to order concurrent calls on one conversation.
//! Account creation and conversation creation *can* race across shards and
//! must be atomic (insert-if-absent) in the backend.
//!
//! # Durability contract
//! Writes become visible to reads at once but are only guaranteed to survive a
//! crash once a later [`Store::persist`] call has returned `Ok`. The server
//! acknowledges nothing before that.

pub mod conformance;
pub mod fjall;

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use bytes::Bytes;

/// A user's handle: 1–32 chars of `[a-z0-9_.-]` (validated by the server).
pub type UserId = String;
/// A device number within its user, assigned by the server from 1.
pub type DeviceId = u32;
/// A conversation id, assigned by the server (random, non-zero).
pub type ConversationId = u64;
/// A message's position in its conversation: dense and gapless from 1.
pub type Seq = u64;

/// One registered device of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device: DeviceId,
    pub name: String,
    /// Ed25519 public key the device authenticates with.
    pub public_key: [u8; 32],
    pub created_ms: u64,
}

/// What kind of conversation this is; fixes who may be a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConversationKind {
    /// Exactly two users; one conversation per pair.
    Direct,
    /// Any number of users; the creator administers membership.
    Group,
    /// One user's own devices; one per user.
    NoteToSelf,
}

/// A conversation and its current membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationRecord {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub creator: UserId,
    pub members: BTreeSet<UserId>,
    pub created_ms: u64,
    /// Highest seq appended so far (0 when empty). Ignored on create.
    pub head_seq: Seq,
}

/// One stored message. The payload is ciphertext the server never parses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub conversation_id: ConversationId,
    pub seq: Seq,
    pub sender_user: UserId,
    pub sender_device: DeviceId,
    pub client_message_id: u64,
    pub server_time_ms: u64,
    pub expires_at_ms: u64,
    pub flags: u32,
    pub payload: Bytes,
}

/// Result of [`Store::create_conversation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// A conversation with the same unique key already exists; nothing written.
    Existing(ConversationRecord),
}

/// Result of [`Store::append_message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended,
    /// The `(conversation, sender user, sender device, client_message_id)`
    /// key was already stored: this is the stored message, nothing written.
    Duplicate(StoredMessage),
}

/// A backend failure: I/O, corruption, or the backend being unreachable.
/// The operation may or may not have taken effect *in memory* but nothing that
/// was not persisted may be acknowledged. Retrying is safe for every call.
#[derive(Debug, thiserror::Error)]
#[error("storage backend failed: {0}; check disk space and permissions of the data directory, then restart")]
pub struct BackendError(pub String);

/// Errors of [`Store::create_account`].
#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    #[error("user {0:?} already exists; pick another handle or authenticate as it")]
    UserExists(UserId),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Errors of [`Store::create_conversation`].
#[derive(Debug, thiserror::Error)]
pub enum CreateConversationError {
    #[error("conversation id {0} is taken; retry with a fresh random id")]
    IdTaken(ConversationId),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Errors of [`Store::update_members`].
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    #[error("conversation {0} does not exist")]
    NoSuchConversation(ConversationId),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Errors of [`Store::append_message`].
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("conversation {0} does not exist")]
    NoSuchConversation(ConversationId),
    /// The message's seq is not `head + 1`: two writers sequence one
    /// conversation, or the caller's cached head is stale. Reload the head.
    #[error("seq {got} does not follow head {head} of conversation {conversation}; reload the head")]
    SeqConflict { conversation: ConversationId, head: Seq, got: Seq },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The delivery service's durable state. See the module docs for the
/// concurrency and durability contracts every implementation must keep.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates `user` with its first device (normally device 1).
    /// Fails with `UserExists` if the handle is taken (atomic across callers).
    async fn create_account(&self, user: &str, first: DeviceRecord) -> Result<(), CreateAccountError>;

    /// One device of a user, or `None` if the user or device is unknown.
    async fn device(&self, user: &str, device: DeviceId) -> Result<Option<DeviceRecord>, BackendError>;

    /// All devices of a user, ordered by device id; empty if the user is unknown.
    async fn devices(&self, user: &str) -> Result<Vec<DeviceRecord>, BackendError>;

    /// Creates a conversation (members' indexes included). When `unique_key`
    /// is given (direct pairs, note-to-self) and a conversation with that key
    /// exists, returns `Existing` with it and writes nothing; this check is
    /// atomic across callers. `record.head_seq` is ignored (starts at 0).
    async fn create_conversation(
        &self,
        record: &ConversationRecord,
        unique_key: Option<&[u8]>,
    ) -> Result<CreateOutcome, CreateConversationError>;

    /// A conversation with its members and current head, or `None`.
    async fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRecord>, BackendError>;

    /// Adds then removes members (either may be empty), keeping each user's
    /// conversation index in step. Returns the updated record.
    async fn update_members(
        &self,
        id: ConversationId,
        add: &[UserId],
        remove: &[UserId],
    ) -> Result<ConversationRecord, MembersError>;

    /// Ids of all conversations `user` is currently a member of, ascending.
    async fn user_conversations(&self, user: &str) -> Result<Vec<ConversationId>, BackendError>;

    /// Appends one message. `msg.seq` must be `head + 1`; the message, its
    /// idempotency key, its expiry index entry and the new head are written
    /// atomically. A repeated idempotency key returns `Duplicate` (checked
    /// before the seq) and writes nothing.
    async fn append_message(&self, msg: &StoredMessage) -> Result<AppendOutcome, AppendError>;

    /// Messages with `seq >= from_seq` in ascending order, at most `limit`,
    /// skipping those expired at `now_ms` (`expires_at_ms <= now_ms`) and
    /// those already swept.
    async fn messages(
        &self,
        id: ConversationId,
        from_seq: Seq,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, BackendError>;

    /// Raises a device's cursor in a conversation to `seq` (never lowers it).
    /// Returns the cursor after the call.
    async fn advance_cursor(
        &self,
        user: &str,
        device: DeviceId,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Seq, BackendError>;

    /// All cursors of one device: conversation id → acknowledged seq.
    async fn cursors(&self, user: &str, device: DeviceId) -> Result<BTreeMap<ConversationId, Seq>, BackendError>;

    /// Deletes up to `limit` messages (and their idempotency keys) whose
    /// `expires_at_ms <= now_ms`. Returns how many were deleted. Heads never
    /// move backwards: seqs are not reused after expiry.
    async fn sweep_expired(&self, now_ms: u64, limit: usize) -> Result<usize, BackendError>;

    /// Durability barrier: when this returns `Ok`, every write that returned
    /// before the call started survives a crash (process kill or power loss).
    /// Concurrent callers are batched (group commit): one sync serves many.
    async fn persist(&self) -> Result<(), BackendError>;
}
