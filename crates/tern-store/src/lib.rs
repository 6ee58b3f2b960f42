//! Durable state of the delivery service behind one narrow [`Store`] trait:
//! accounts, devices, conversations, members, messages (ciphertext only),
//! per-device cursors and idempotency keys, the public key directory
//! (prekeys, MLS KeyPackages) and per-group MLS epochs with their GroupInfo.
//!
//! Every backend must pass the conformance suite (feature `conformance`).
//! The embedded default is `tern_store_fjall::FjallStore` (one journal,
//! group commit).
//!
//! # Concurrency contract
//! The server serialises all writes that concern one conversation on that
//! conversation's owner shard, so a backend only has to make each call atomic
//! on its own; it does not have to order concurrent calls on one conversation.
//! Account creation and conversation creation *can* race across shards and
//! must be atomic (insert-if-absent) in the backend. So can everything keyed
//! by user and device (adding and revoking devices, uploading and claiming
//! prekeys and KeyPackages): each such call is atomic, and a claim hands out
//! each single-use key at most once.
//!
//! # Durability contract
//! Writes become visible to reads at once but are only guaranteed to survive a
//! crash once a later [`Store::persist`] call has returned `Ok`. The server
//! acknowledges nothing before that.

#[cfg(feature = "conformance")]
pub mod conformance;

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

/// A Curve25519 prekey with its id, as uploaded by a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prekey {
    pub id: u32,
    pub public: [u8; 32],
}

/// A prekey signed by the device's Ed25519 key (checked by the server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPrekey {
    pub id: u32,
    pub public: [u8; 32],
    pub signature: [u8; 64],
}

/// One upload of a device's key material. `None` / empty fields leave what
/// is stored unchanged; a new `signed_prekey` replaces the old one (rotation).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PrekeyUpload {
    /// The device's Curve25519 identity key and the device key's signature over it.
    pub identity: Option<([u8; 32], [u8; 64])>,
    pub signed_prekey: Option<SignedPrekey>,
    /// Added to the pool; an id already stored is ignored.
    pub one_time: Vec<Prekey>,
    pub last_resort: Option<SignedPrekey>,
    /// Post-quantum (KEM) prekey, stored opaquely.
    pub kem_prekey: Option<Bytes>,
}

/// What a claim of one device's prekeys returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedPrekeys {
    pub identity_key: [u8; 32],
    pub identity_signature: [u8; 64],
    pub signed_prekey: Option<SignedPrekey>,
    /// The one-time prekey handed out (and deleted), or `None` when the pool is empty.
    pub one_time: Option<Prekey>,
    /// Returned (not consumed) when the one-time pool is empty.
    pub last_resort: Option<SignedPrekey>,
    pub kem_prekey: Option<Bytes>,
    /// One-time prekeys left after this claim.
    pub remaining: u32,
}

/// A claimed MLS KeyPackage (serialized, opaque to the server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKeyPackage {
    pub key_package: Bytes,
    /// True when the pool was empty and the last-resort package was returned (not consumed).
    pub last_resort: bool,
    pub remaining: u32,
}

/// Result of [`Store::advance_epoch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EpochOutcome {
    /// The commit for `expected` was accepted; the group is now at `expected + 1`.
    Accepted,
    /// Another commit won; the group is at `current`.
    Stale { current: u64 },
}

/// Most one-time prekeys, and separately most KeyPackages, a device's pool
/// holds; what an upload brings beyond it is ignored.
pub const KEY_POOL_CAP: u32 = 1_000;

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
    #[error(
        "seq {got} does not follow head {head} of conversation {conversation}; reload the head"
    )]
    SeqConflict {
        conversation: ConversationId,
        head: Seq,
        got: Seq,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// The delivery service's durable state. See the module docs for the
/// concurrency and durability contracts every implementation must keep.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates `user` with its first device (normally device 1).
    /// Fails with `UserExists` if the handle is taken (atomic across callers),
    /// also when every device of that user has been revoked.
    async fn create_account(
        &self,
        user: &str,
        first: DeviceRecord,
    ) -> Result<(), CreateAccountError>;

    /// One device of a user, or `None` if the user or device is unknown.
    async fn device(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceRecord>, BackendError>;

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
    async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, BackendError>;

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
    async fn cursors(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<BTreeMap<ConversationId, Seq>, BackendError>;

    /// Deletes up to `limit` messages (and their idempotency keys) whose
    /// `expires_at_ms <= now_ms`. Returns how many were deleted. Heads never
    /// move backwards: seqs are not reused after expiry.
    async fn sweep_expired(&self, now_ms: u64, limit: usize) -> Result<usize, BackendError>;

    // ----- devices (multi-device) -----

    /// Adds a device to an existing user with the next free device id: one
    /// more than the highest id the user was ever given (by `create_account`
    /// or `add_device`), so ids are never reused, even after revocation.
    /// Atomic across callers: concurrent adds get distinct ids.
    /// Returns the id, or `None` if the user does not exist.
    async fn add_device(
        &self,
        user: &str,
        name: &str,
        public_key: [u8; 32],
        created_ms: u64,
    ) -> Result<Option<DeviceId>, BackendError>;

    /// Revokes a device, atomically: it disappears from `device`/`devices`
    /// (so it can no longer authenticate), and its prekeys, key packages and
    /// cursors are deleted. The account survives the revocation of its last
    /// device: the handle stays taken and `add_device` still works.
    /// Returns false (writing nothing) if the device was not active.
    async fn revoke_device(&self, user: &str, device: DeviceId) -> Result<bool, BackendError>;

    // ----- key directory (1:1 Signal-style sessions) -----

    /// Stores a device's key material (see [`PrekeyUpload`]): replaces the
    /// identity, signed (rotation), last-resort and KEM prekeys that are
    /// given, and adds the one-time prekeys whose ids are not already in the
    /// pool, up to [`KEY_POOL_CAP`] in all (the rest are ignored). The
    /// signatures are the caller's to check. Returns the number of one-time
    /// prekeys now in the pool. A device that is not active (unknown or
    /// revoked) stores nothing and gets 0. An empty upload writes nothing.
    async fn put_prekeys(
        &self,
        user: &str,
        device: DeviceId,
        upload: &PrekeyUpload,
    ) -> Result<u32, BackendError>;

    /// Claims one device's bundle, consuming exactly one one-time prekey
    /// (the lowest id) atomically: no two callers ever get the same one, also
    /// under concurrency. When the pool is empty, `one_time` is `None` and the
    /// last-resort prekey (if any) is returned without being consumed.
    /// `None` if the device is not active or never uploaded an identity key.
    async fn claim_prekeys(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<ClaimedPrekeys>, BackendError>;

    /// One-time prekeys left for a device (0 if it has none or is unknown).
    async fn prekey_count(&self, user: &str, device: DeviceId) -> Result<u32, BackendError>;

    /// Single-use KeyPackages left for a device (0 for unknown devices).
    async fn key_package_count(&self, user: &str, device: DeviceId) -> Result<u32, BackendError>;

    // ----- MLS delivery service -----

    /// Adds KeyPackages to a device's pool, in order, up to [`KEY_POOL_CAP`]
    /// in all (the rest are ignored), and replaces its last-resort one if
    /// given. Returns the pool size (last-resort not counted). A device that
    /// is not active (unknown or revoked) stores nothing and gets 0. A call
    /// with no packages and no last resort writes nothing (a count query).
    async fn put_key_packages(
        &self,
        user: &str,
        device: DeviceId,
        packages: &[Bytes],
        last_resort: Option<Bytes>,
    ) -> Result<u32, BackendError>;

    /// Claims one KeyPackage of a device, oldest first, exactly once under
    /// concurrency; the last-resort one (not consumed, `last_resort: true`)
    /// when the pool is empty; `None` if neither (or the device is not active).
    async fn claim_key_package(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<ClaimedKeyPackage>, BackendError>;

    /// The MLS epoch of a group conversation (0 before the first commit, and
    /// for unknown conversations).
    async fn group_epoch(&self, id: ConversationId) -> Result<u64, BackendError>;

    /// Compare-and-set: accepts the commit for epoch `expected` if the group
    /// is at `expected`, moving it to `expected + 1` and storing `group_info`
    /// in one atomic write; else writes nothing and reports the current
    /// epoch. Atomic across callers (of two racing commits for one epoch
    /// exactly one is accepted). Called only by the conversation's owner,
    /// which has checked that the conversation exists.
    async fn advance_epoch(
        &self,
        id: ConversationId,
        expected: u64,
        group_info: &Bytes,
    ) -> Result<EpochOutcome, BackendError>;

    /// The GroupInfo stored by the latest accepted commit (for external
    /// joins), or `None` before the first.
    async fn group_info(&self, id: ConversationId) -> Result<Option<Bytes>, BackendError>;

    /// Durability barrier: when this returns `Ok`, every write that returned
    /// before the call started survives a crash (process kill or power loss).
    /// Concurrent callers are batched (group commit): one sync serves many.
    async fn persist(&self) -> Result<(), BackendError>;
}
