//! The MLS delivery service's durable state per group conversation (RFC 9420
//! §14, RFC 9750 §5): its epoch, the latest GroupInfo, and accepting a
//! Commit as **one** atomic operation.

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    AppendError, BackendError, ConversationId, ConversationRecord, FenceToken, StoredMessage,
    UserId,
};

/// One Commit for the delivery service to accept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitRecord {
    pub conversation_id: ConversationId,
    /// The epoch the Commit was made in; accepted only if the group is there.
    pub epoch: u64,
    /// The GroupInfo of the new epoch (kept for external joins).
    pub group_info: Bytes,
    /// Membership changes the Commit makes (users added, then removed).
    pub add: Vec<UserId>,
    pub remove: Vec<UserId>,
    /// The Commit as the conversation's next message (`seq = head + 1`).
    pub commit: StoredMessage,
    /// The Welcome for added members, right after it (`seq = head + 2`).
    pub welcome: Option<StoredMessage>,
    /// The owner's fencing token for the conversation (a cluster node), or
    /// `None` unfenced: checked like a fenced append's (`Fenced`).
    pub fence: Option<FenceToken>,
}

/// Result of [`GroupStore::accept_commit`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The group moved to `epoch + 1`; this is the conversation afterwards
    /// (new members, new head).
    Accepted(ConversationRecord),
    /// The group is not at the Commit's epoch (another Commit won, or the
    /// Commit names a future epoch): it is at `current`; nothing was written.
    Stale { current: u64 },
}

/// MLS groups.
#[async_trait]
pub trait GroupStore: Send + Sync + 'static {
    /// The MLS epoch of a group conversation (0 before the first commit, and
    /// for unknown conversations).
    async fn group_epoch(&self, id: ConversationId) -> Result<u64, BackendError>;

    /// Accepts a Commit in one atomic write, or writes nothing. Checks, in
    /// this order: the fence, when `commit.fence` is set (else `Fenced`,
    /// see [`crate::MessageLog::append_messages`]), the conversation exists (else `NoSuchConversation`), the
    /// group is at `commit.epoch` (else `Stale`, also for a future epoch),
    /// the messages follow the head (else `SeqConflict` with the head). The
    /// Commit and Welcome must belong to `commit.conversation_id`. Writes the
    /// epoch
    /// compare-and-set (`epoch` → `epoch + 1`), the GroupInfo, the
    /// membership change (with each user's conversation index), and the
    /// Commit and Welcome appended as [`crate::MessageLog::append_message`]
    /// would (seqs must follow the head; idempotency keys and expiry entries
    /// written; no duplicate check). Atomic across callers: of two racing
    /// Commits for one epoch exactly one is accepted. Errors:
    /// `Fenced`, `NoSuchConversation`, `SeqConflict` (nothing written), `Backend`.
    async fn accept_commit(&self, commit: &CommitRecord) -> Result<CommitOutcome, AppendError>;

    /// The GroupInfo stored by the latest accepted commit (for external
    /// joins), or `None` before the first.
    async fn group_info(&self, id: ConversationId) -> Result<Option<Bytes>, BackendError>;
}
