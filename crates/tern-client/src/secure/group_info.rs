//! A group's name, topic and avatar (docs/E2EE.md §3.8, content kind 7):
//! end-to-end encrypted metadata that only members read, as Signal keeps
//! group attributes encrypted. Any member may set them; an update carries
//! only the fields it changes, and each field's value from the update with
//! the highest seq wins, on every device alike (all see the same order).

use tern_proto::ConversationKind;

use super::{SecureClient, SecureError, Sent};
use crate::content::group_info::GroupInfoError;
use crate::content::{kind, Content, GroupInfo, GroupInfoUpdate};
use crate::message_store::MessageStoreError;

/// Why [`SecureClient::set_group_info`] failed (nothing was sent).
#[derive(Debug, thiserror::Error)]
pub enum SetGroupInfoError {
    #[error(transparent)]
    Invalid(#[from] GroupInfoError),
    #[error("conversation {0} is not a group; only groups have a name, topic and avatar")]
    NotAGroup(u64),
    #[error(transparent)]
    Send(#[from] SecureError),
}

/// A group's current metadata (every update applied in seq order) and
/// who sent the latest update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentGroupInfo {
    pub info: GroupInfo,
    /// The member who sent the latest update.
    pub set_by: String,
    /// Its seq in the group.
    pub seq: u64,
    /// When the server stored it (ms since the Unix epoch).
    pub server_time_ms: u64,
}

impl SecureClient {
    /// Sets group `conversation`'s name, topic and avatar (each may be
    /// empty; the avatar is small image bytes or an attachment reference),
    /// sent to the members end-to-end encrypted like a message.
    ///
    /// # Errors
    /// [`SetGroupInfoError::Invalid`] past a bound (name 128 bytes, topic
    /// 1024, avatar 16 KiB), [`SetGroupInfoError::NotAGroup`], or the send's.
    pub async fn set_group_info(
        &self,
        conversation: u64,
        name: &str,
        topic: &str,
        avatar: &[u8],
    ) -> Result<Sent, SetGroupInfoError> {
        let info = GroupInfo {
            name: name.to_owned(),
            topic: topic.to_owned(),
            avatar: avatar.to_vec(),
        };
        self.update_group_info(conversation, info.into()).await
    }

    /// Changes only the fields `update` carries of group `conversation`'s
    /// info (`None`: left as the members have it, even when this device
    /// is behind), sent like [`Self::set_group_info`].
    ///
    /// # Errors
    /// [`SetGroupInfoError::Invalid`] past a bound or with no field,
    /// [`SetGroupInfoError::NotAGroup`], or the send's.
    pub async fn update_group_info(
        &self,
        conversation: u64,
        update: GroupInfoUpdate,
    ) -> Result<Sent, SetGroupInfoError> {
        update.check()?;
        if self.inner.kind(conversation).await? != ConversationKind::Group {
            return Err(SetGroupInfoError::NotAGroup(conversation));
        }
        Ok(self.send(conversation, &Content::GroupInfo(update)).await?)
    }

    /// The group info this device holds for `conversation` (every update
    /// sent or received, applied field by field in seq order), or `None`
    /// if none was ever set.
    pub fn group_info(
        &self,
        conversation: u64,
    ) -> Result<Option<CurrentGroupInfo>, MessageStoreError> {
        let updates = self
            .messages()
            .all_of_kind(conversation, kind::GROUP_INFO)?;
        let mut current: Option<CurrentGroupInfo> = None;
        for m in updates {
            let Content::GroupInfo(update) = m.content else {
                continue;
            };
            let mut info = current.map(|c| c.info).unwrap_or_default();
            info.apply(&update);
            current = Some(CurrentGroupInfo {
                info,
                set_by: m.sender_user,
                seq: m.seq,
                server_time_ms: m.server_time_ms,
            });
        }
        Ok(current)
    }
}
