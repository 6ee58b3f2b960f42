//! Conversations and their membership: create (insert-if-absent on a unique
//! key for direct pairs and note-to-self), read, change members, and each
//! user's index of the conversations they belong to.

use async_trait::async_trait;

use std::collections::BTreeSet;

use crate::{BackendError, ConversationId, ConversationRecord, Seq, UserId};

/// Result of [`ConversationStore::create_conversation`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateOutcome {
    Created,
    /// A conversation with the same unique key already exists; nothing written.
    Existing(ConversationRecord),
}

/// Errors of [`ConversationStore::create_conversation`].
#[derive(Debug, thiserror::Error)]
pub enum CreateConversationError {
    #[error("conversation id {0} is taken; retry with a fresh random id")]
    IdTaken(ConversationId),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Errors of [`ConversationStore::update_members`].
#[derive(Debug, thiserror::Error)]
pub enum MembersError {
    #[error("conversation {0} does not exist")]
    NoSuchConversation(ConversationId),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Conversations and membership.
#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
    /// Creates a conversation (members' indexes included). When `unique_key`
    /// is given (direct pairs, note-to-self) and a conversation with that key
    /// exists, returns `Existing` with it and writes nothing; this check is
    /// atomic across callers. `record.head_seq` is ignored (starts at 0).
    async fn create_conversation(
        &self,
        record: &ConversationRecord,
        unique_key: Option<&[u8]>,
    ) -> Result<CreateOutcome, CreateConversationError>;

    /// The conversation created with `unique_key` (see
    /// [`ConversationStore::create_conversation`]), or `None`: whether a
    /// direct pair or a note-to-self conversation exists already.
    async fn conversation_by_key(
        &self,
        unique_key: &[u8],
    ) -> Result<Option<ConversationId>, BackendError>;

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

    /// One page of [`ConversationStore::user_conversations`]: the ids
    /// greater than `after`, ascending, at most `limit` of them.
    async fn user_conversations_after(
        &self,
        user: &str,
        after: ConversationId,
        limit: usize,
    ) -> Result<Vec<ConversationId>, BackendError>;

    /// How many group conversations `user` is currently a member of
    /// (direct and note-to-self conversations are not counted).
    async fn group_count(&self, user: &str) -> Result<usize, BackendError>;

    /// The first seq of `user`'s current membership of conversation `id`:
    /// 1 for the members it was created with, `head + 1` at the time a
    /// member was added by `update_members`, the seq after the Commit (its
    /// Welcome's) for one added by `accept_commit`; a member removed and
    /// added again starts afresh. `None` if `user` is not a member. History serves a member
    /// nothing before it (issue #9: a re-added member is not handed what
    /// was said while they were out).
    async fn member_since(
        &self,
        id: ConversationId,
        user: &str,
    ) -> Result<Option<Seq>, BackendError>;

    /// The settings of conversation `id`; the default (no timer) when none
    /// were ever stored, also for an unknown conversation.
    async fn settings(&self, id: ConversationId) -> Result<ConversationSettings, BackendError>;

    /// Stores the settings of conversation `id`, replacing any.
    async fn put_settings(
        &self,
        id: ConversationId,
        settings: &ConversationSettings,
    ) -> Result<(), BackendError>;
}

/// Per-conversation settings the server enforces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConversationSettings {
    /// Disappearing-message timer, seconds; 0 = off. Every later message of
    /// the conversation expires at most this long after it is sent.
    pub timer_secs: u32,
    /// A group's administrators, as last stored; empty until first stored
    /// (the server then takes the creator).
    pub admins: BTreeSet<UserId>,
    /// Whether every member of a group may add members (else only its
    /// administrators).
    pub everyone_adds: bool,
}
