//! Running a group: its administrators and who may add members (kept by
//! the server, docs/PROTOCOL.md `SetAdmin`, `SetMemberAdds`, `ListAdmins`),
//! invitations (`Invite`, `ListInvitations`), and its name, topic and avatar (end-to-end encrypted
//! content kind 7, docs/E2EE.md §3.8, which only members read, as Signal
//! keeps group attributes).

use crate::{TernClient, TernError};

/// A group's administrators and who may add members.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct AdminSettings {
    /// The administrators, by handle.
    pub admins: Vec<String>,
    /// Every member may add members; `false`: only administrators (the
    /// default). Removing others is always the administrators'.
    pub everyone_adds: bool,
}

/// A group's current name, topic and avatar, and who set them.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct GroupInfo {
    /// At most 128 bytes of UTF-8.
    pub name: String,
    /// At most 1024 bytes of UTF-8.
    pub topic: String,
    /// At most 16 KiB: small image bytes or an attachment reference.
    pub avatar: Vec<u8>,
    /// The member who set them.
    pub set_by: String,
    /// The seq of the message that set them.
    pub seq: u64,
    /// When the server stored it (ms since the Unix epoch).
    pub server_time_ms: u64,
}

/// An invitation to a group, waiting for this account's answer.
#[derive(Clone, Debug, PartialEq, Eq, uniffi::Record)]
pub struct Invitation {
    pub conversation_id: u64,
    /// The member who invited this account.
    pub inviter: String,
    /// When it was made (server time, ms since the Unix epoch).
    pub created_ms: u64,
}

#[uniffi::export]
impl TernClient {
    /// Makes member `user` of a group an administrator (`admin`) or not;
    /// this account must be one. Returns the administrators after the
    /// change.
    ///
    /// # Errors
    /// `Server` with `Forbidden` (not an administrator, or not a group),
    /// `InvalidArgument` (`user` is no member, or the last administrator
    /// would step down), `NotFound`, `NotMember`.
    pub fn set_admin(
        &self,
        group: u64,
        user: String,
        admin: bool,
    ) -> Result<Vec<String>, TernError> {
        self.run(self.client.transport().set_admin(group, &user, admin))
    }

    /// Lets every member add members (`everyone`) or only administrators;
    /// this account must be an administrator.
    ///
    /// # Errors
    /// `Server` with `Forbidden`, `NotFound`, `NotMember`.
    pub fn set_member_adds(&self, group: u64, everyone: bool) -> Result<(), TernError> {
        self.run(self.client.transport().set_member_adds(group, everyone))
    }

    /// A group's administrators and who may add members.
    ///
    /// # Errors
    /// `Server` with `Forbidden` (not a group), `NotFound`, `NotMember`.
    pub fn admin_settings(&self, group: u64) -> Result<AdminSettings, TernError> {
        let settings = self.run(self.client.transport().admin_settings(group))?;
        Ok(AdminSettings {
            admins: settings.admins,
            everyone_adds: settings.everyone_adds,
        })
    }

    /// Invites `user` to a group; their devices get
    /// [`crate::Event::Invited`], and once they accept, a member may add
    /// them (even past their "who may add me" privacy setting).
    ///
    /// # Errors
    /// `Server` with `NotFound`, `NotMember`, `Forbidden` (not a group),
    /// `InvalidArgument` (already a member), `RateLimited`.
    pub fn invite(&self, group: u64, user: String) -> Result<(), TernError> {
        self.run(self.client.transport().invite(group, &user))
    }

    /// This account's pending invitations, oldest first (at most 100);
    /// answer each with [`TernClient::answer_invitation`].
    pub fn invitations(&self) -> Result<Vec<Invitation>, TernError> {
        let found = self.run(self.client.transport().invitations())?;
        let invitations = found.into_iter().map(|i| Invitation {
            conversation_id: i.conversation_id,
            inviter: i.inviter,
            created_ms: i.created_ms,
        });
        Ok(invitations.collect())
    }

    /// Sets a group's name, topic and avatar (each may be empty), sent to
    /// the members end-to-end encrypted; returns the message's seq. Members
    /// get it as a [`crate::MessageContent::GroupInfo`] message.
    ///
    /// # Errors
    /// `InvalidArgument` (name over 128 bytes, topic over 1024, avatar over
    /// 16 KiB), `Refused` (`NotAGroup`), or the send's.
    pub fn set_group_info(
        &self,
        group: u64,
        name: String,
        topic: String,
        avatar: Vec<u8>,
    ) -> Result<u64, TernError> {
        let set = self.client.set_group_info(group, &name, &topic, &avatar);
        Ok(self.run(set)?.receipt.seq)
    }

    /// The latest name, topic and avatar this device holds for a group
    /// (set here or received), or `None` if none was ever set.
    pub fn group_info(&self, group: u64) -> Result<Option<GroupInfo>, TernError> {
        self.open_client()?;
        let current = self.client.group_info(group)?;
        Ok(current.map(|c| GroupInfo {
            name: c.info.name,
            topic: c.info.topic,
            avatar: c.info.avatar,
            set_by: c.set_by,
            seq: c.seq,
            server_time_ms: c.server_time_ms,
        }))
    }
}
