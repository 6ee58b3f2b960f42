//! Who may reach this account (issue 10): blocking, the privacy settings
//! (who may add it to groups, who may start a direct conversation with it)
//! and message requests, the direct conversations strangers start, as
//! Signal and WhatsApp hold them until accepted (no receipts meanwhile).

use tern_proto::{DirectStarts as WireDirectStarts, GroupAdds as WireGroupAdds};

use crate::{TernClient, TernError};

/// Who may add this account to groups without an invitation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum GroupAdds {
    /// Only contacts (the default): users this account created a
    /// conversation with, added to a group, or answered.
    Contacts,
    /// Anyone not blocked.
    Everyone,
}

/// Who may start a direct conversation with this account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum DirectStarts {
    /// Anyone (the default, as in Signal and WhatsApp); a stranger's
    /// conversation arrives as a message request.
    Everyone,
    /// Only contacts; others are refused with `ConsentRequired`.
    Contacts,
    /// Nobody; existing conversations stay.
    Nobody,
}

/// This account's privacy settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Privacy {
    pub group_adds: GroupAdds,
    pub direct_starts: DirectStarts,
}

/// A direct conversation a stranger started, waiting to be accepted.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct MessageRequest {
    pub conversation_id: u64,
    /// Who started it.
    pub sender: String,
    /// The conversation's latest seq on the server.
    pub head_seq: u64,
    /// The text of the first message this device has from them (`None`
    /// before one arrived here, or when it is not text).
    pub preview: Option<String>,
}

#[uniffi::export]
impl TernClient {
    /// Blocks `user` for this account (every device): the server drops
    /// their sends to the direct conversation with this account without
    /// telling them, and they cannot add this account to groups or invite
    /// it. Blocking again does nothing.
    ///
    /// # Errors
    /// `InvalidArgument` (a bad handle), `Server` with `InvalidArgument`
    /// (this account), `NotFound` (no such user), `LimitExceeded` (10,000
    /// blocked already).
    pub fn block(&self, user: String) -> Result<(), TernError> {
        self.run(self.client.transport().block(&user))
    }

    /// Unblocks `user`: their later sends are delivered again (what they
    /// sent meanwhile is gone). Unblocking a user not blocked does nothing.
    pub fn unblock(&self, user: String) -> Result<(), TernError> {
        self.run(self.client.transport().unblock(&user))
    }

    /// The users this account blocked, by handle.
    pub fn blocked(&self) -> Result<Vec<String>, TernError> {
        self.run(self.client.transport().blocked())
    }

    /// This account's privacy settings.
    pub fn privacy(&self) -> Result<Privacy, TernError> {
        let privacy = self.run(self.client.transport().privacy())?;
        Ok(Privacy {
            group_adds: match privacy.group_adds {
                WireGroupAdds::Contacts => GroupAdds::Contacts,
                WireGroupAdds::Everyone => GroupAdds::Everyone,
            },
            direct_starts: match privacy.direct_starts {
                WireDirectStarts::Everyone => DirectStarts::Everyone,
                WireDirectStarts::Contacts => DirectStarts::Contacts,
                WireDirectStarts::Nobody => DirectStarts::Nobody,
            },
        })
    }

    /// Changes the privacy settings given and keeps the others (`None`:
    /// unchanged; both `None` sends nothing). Existing conversations and
    /// groups stay.
    pub fn set_privacy(
        &self,
        group_adds: Option<GroupAdds>,
        direct_starts: Option<DirectStarts>,
    ) -> Result<(), TernError> {
        let groups = group_adds.map(|g| match g {
            GroupAdds::Contacts => WireGroupAdds::Contacts,
            GroupAdds::Everyone => WireGroupAdds::Everyone,
        });
        let direct = direct_starts.map(|d| match d {
            DirectStarts::Everyone => WireDirectStarts::Everyone,
            DirectStarts::Contacts => WireDirectStarts::Contacts,
            DirectStarts::Nobody => WireDirectStarts::Nobody,
        });
        self.run(self.client.transport().update_privacy(groups, direct))
    }

    /// This account's pending message requests, by conversation id
    /// (leaving out those deleted here that got nothing newer since).
    pub fn requests(&self) -> Result<Vec<MessageRequest>, TernError> {
        let found = self.run(self.client.requests())?;
        let requests = found.into_iter().map(|r| MessageRequest {
            conversation_id: r.conversation_id,
            sender: r.from,
            head_seq: r.head_seq,
            preview: r.preview,
        });
        Ok(requests.collect())
    }

    /// Accepts a message request: its sender becomes this account's
    /// contact (on every device), and the delivered and read receipts held
    /// back meanwhile are sent.
    ///
    /// # Errors
    /// `Server` with `NotFound` (not a conversation of this account's) or
    /// `Forbidden` (not a direct conversation).
    pub fn accept_request(&self, conversation_id: u64) -> Result<(), TernError> {
        self.run(self.client.accept_request(conversation_id))
    }

    /// Deletes a message request: blocks its sender first when `block`,
    /// forgets the conversation on this device and skips what it holds.
    /// Returns the sender's handle.
    ///
    /// # Errors
    /// `Refused` (`NotARequest`: no pending request), or the server's.
    pub fn delete_request(&self, conversation_id: u64, block: bool) -> Result<String, TernError> {
        self.run(self.client.delete_request(conversation_id, block))
    }
}
