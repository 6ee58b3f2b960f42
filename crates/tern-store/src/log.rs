//! The message log of each conversation (dense seqs, ciphertext only,
//! idempotency keys, expiry) and each device's delivery cursors.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::{BackendError, ConversationId, DeviceId, FenceToken, Fences, Seq, StoredMessage};

/// Result of [`MessageLog::append_message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended,
    /// The `(conversation, sender user, sender device, client_message_id)`
    /// key was already stored: this is the stored message, nothing written.
    Duplicate(StoredMessage),
}

/// Errors of [`MessageLog::append_message`] (and of the appends inside
/// [`crate::GroupStore::accept_commit`]).
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
    /// The append was fenced with `held`, but the conversation's ownership
    /// was claimed since (`current`): another node owns it now. Drop what
    /// is cached about it and route the request to the current owner.
    #[error(
        "conversation {conversation} is owned under fencing token {current}, not {held}: another node took it over; retry through the current owner"
    )]
    Fenced {
        conversation: ConversationId,
        held: FenceToken,
        current: FenceToken,
    },
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Message log and delivery cursors.
#[async_trait]
pub trait MessageLog: Send + Sync + 'static {
    /// Appends one message. `msg.seq` must be `head + 1`; the message, its
    /// idempotency key, its expiry index entry and the new head are written
    /// atomically. A repeated idempotency key returns `Duplicate` (checked
    /// before the seq) and writes nothing.
    async fn append_message(&self, msg: &StoredMessage) -> Result<AppendOutcome, AppendError>;

    /// Appends several messages (of any conversations), in order, as one
    /// write where the backend can (fjall: one batch, one journal write, for
    /// an owner shard's whole batch). Each message is checked exactly as
    /// [`MessageLog::append_message`] would check it, against the heads and
    /// idempotency keys left by the messages before it in the slice, and
    /// gets its outcome at its index; a refused message (`SeqConflict`,
    /// `NoSuchConversation`, `Fenced`) writes nothing and does not stop the
    /// others. A message whose conversation has a token in `fences` is
    /// first checked against the stored ownership token
    /// ([`crate::OwnershipStore`]), atomically with its write: a different
    /// token refuses it with `Fenced`. A backend failure fails the whole
    /// call with `Err`: then some messages may have been written, none may
    /// be acknowledged, and a retry is exactly-once through the idempotency
    /// keys.
    async fn append_messages(
        &self,
        msgs: &[StoredMessage],
        fences: &Fences,
    ) -> Result<Vec<Result<AppendOutcome, AppendError>>, BackendError>;

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

    /// Raises a device's delivery cursor in a conversation to `seq` (never
    /// lowers it). Returns the cursor after the call.
    async fn advance_cursor(
        &self,
        user: &str,
        device: DeviceId,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Seq, BackendError>;

    /// All delivery cursors of one device: conversation id → acknowledged seq.
    async fn cursors(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<BTreeMap<ConversationId, Seq>, BackendError>;

    /// Deletes up to `limit` messages (and their idempotency keys) whose
    /// `expires_at_ms <= now_ms`. Returns how many were deleted. Heads never
    /// move backwards: seqs are not reused after expiry.
    async fn sweep_expired(&self, now_ms: u64, limit: usize) -> Result<usize, BackendError>;

    /// Replaces message `seq` of conversation `id` by its tombstone: the
    /// same record (sender, client message id, server time, expiry) with an
    /// empty payload and `flags` for flags; reads return the tombstone from
    /// then on. Returns it, or `None` when no such message is stored (never
    /// written, or swept). Purging a tombstone again rewrites it. The old
    /// payload may stay in the backend's files until [`Self::erase_purged`].
    async fn purge_message(
        &self,
        id: ConversationId,
        seq: Seq,
        flags: u32,
    ) -> Result<Option<StoredMessage>, BackendError>;

    /// Erases the payloads replaced by every `purge_message` that returned
    /// before this call from the backend's files, as far as the backend can
    /// (each documents how; it may be slow: the server calls it in the
    /// background). The default has nothing to erase.
    async fn erase_purged(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
