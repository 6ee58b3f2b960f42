//! Privacy settings and consent to join groups: each account's
//! [`GroupAdds`] and [`DirectStarts`] settings, its contacts (users it chose to talk to), and the
//! invitations it was sent ([`InvitationRecord`]), pending or accepted, and
//! the users it blocked. The server decides who may add whom and whose
//! messages are dropped; this stores the facts it decides on.

use async_trait::async_trait;

use crate::{BackendError, ConversationId, UserId};

/// Who may add an account to groups without an invitation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GroupAdds {
    /// Only the account's contacts (the default for an account that never set it).
    #[default]
    Contacts,
    /// Anyone.
    Everyone,
}

/// Who may start a direct conversation with an account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DirectStarts {
    /// Anyone (the default for an account that never set it, as in Signal
    /// and WhatsApp); a stranger's conversation is a message request.
    #[default]
    Everyone,
    /// Only the account's contacts.
    Contacts,
    /// Nobody new (existing direct conversations stay).
    Nobody,
}

/// Who sees an account's presence (state, status text, last seen).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PresenceVisibility {
    /// Users the account shares a conversation with (the default).
    #[default]
    Shared,
    /// Any user the account does not block.
    Everyone,
    /// No one (and, reciprocally, the account sees no one's).
    Nobody,
}

/// An invitation of one user to one group. At most one per (user, group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvitationRecord {
    pub conversation_id: ConversationId,
    /// The member who invited the user.
    pub inviter: UserId,
    /// Server time of the invitation, or of its acceptance once accepted (ms).
    pub created_ms: u64,
    /// True once the user accepted it: the user consents to be added.
    pub accepted: bool,
}

/// What [`ConsentStore::block`] made of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockOutcome {
    /// The user is now blocked.
    Blocked,
    /// The user was blocked already; nothing changed.
    AlreadyBlocked,
    /// The block list holds `max` users already; nothing changed.
    Full,
}

/// Privacy settings, contacts, invitations and blocks. Every call is atomic on its
/// own; calls about one user may come from several shards at once.
#[async_trait]
pub trait ConsentStore: Send + Sync + 'static {
    /// Sets `user`'s group-adds setting.
    async fn set_group_adds(&self, user: &str, setting: GroupAdds) -> Result<(), BackendError>;

    /// `user`'s group-adds setting; [`GroupAdds::Contacts`] if never set.
    async fn group_adds(&self, user: &str) -> Result<GroupAdds, BackendError>;

    /// Sets `user`'s direct-starts setting (its group-adds setting is kept).
    async fn set_direct_starts(
        &self,
        user: &str,
        setting: DirectStarts,
    ) -> Result<(), BackendError>;

    /// `user`'s direct-starts setting; [`DirectStarts::Everyone`] if never set.
    async fn direct_starts(&self, user: &str) -> Result<DirectStarts, BackendError>;

    /// Sets who sees `user`'s presence (its other settings are kept).
    async fn set_presence_visibility(
        &self,
        user: &str,
        setting: PresenceVisibility,
    ) -> Result<(), BackendError>;

    /// Who sees `user`'s presence; [`PresenceVisibility::Shared`] if never set.
    async fn presence_visibility(&self, user: &str) -> Result<PresenceVisibility, BackendError>;

    /// Records `contacts` as contacts of `user` (one direction only: `user`
    /// chose them). Recording one twice is a no-op; `user` itself is ignored.
    async fn add_contacts(&self, user: &str, contacts: &[UserId]) -> Result<(), BackendError>;

    /// Whether `user` recorded `other` as a contact.
    async fn is_contact(&self, user: &str, other: &str) -> Result<bool, BackendError>;

    /// Stores `invitation` for `user`, replacing any invitation of `user`
    /// to the same conversation; then, while `user` holds more than `keep`
    /// invitations, drops the one with the lowest `created_ms` (ties: the
    /// lowest conversation id), atomically with the write.
    async fn put_invitation(
        &self,
        user: &str,
        invitation: &InvitationRecord,
        keep: usize,
    ) -> Result<(), BackendError>;

    /// Every invitation `user` holds, pending and accepted, by ascending
    /// `created_ms` (ties: conversation id).
    async fn invitations(&self, user: &str) -> Result<Vec<InvitationRecord>, BackendError>;

    /// `user`'s invitation to `conversation`, if any.
    async fn invitation(
        &self,
        user: &str,
        conversation: ConversationId,
    ) -> Result<Option<InvitationRecord>, BackendError>;

    /// Deletes `user`'s invitation to `conversation`; false if there was none.
    async fn remove_invitation(
        &self,
        user: &str,
        conversation: ConversationId,
    ) -> Result<bool, BackendError>;

    /// Adds `other` to `user`'s block list unless it is there already or
    /// the list holds `max` users (checked and written atomically, so
    /// concurrent blocks by one user keep the bound).
    async fn block(
        &self,
        user: &str,
        other: &str,
        max: usize,
    ) -> Result<BlockOutcome, BackendError>;

    /// Removes `other` from `user`'s block list; false if it was not there.
    async fn unblock(&self, user: &str, other: &str) -> Result<bool, BackendError>;

    /// Whether `user` blocked `other`.
    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, BackendError>;

    /// The users `user` blocked, in ascending byte order of their handles.
    async fn blocked_users(&self, user: &str) -> Result<Vec<UserId>, BackendError>;
}

/// Sorts invitations oldest first (ties: conversation id), the order
/// [`ConsentStore::invitations`] returns and eviction follows.
pub fn oldest_first(invitations: &mut [InvitationRecord]) {
    invitations.sort_by_key(|i| (i.created_ms, i.conversation_id));
}
