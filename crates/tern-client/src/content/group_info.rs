//! The group-info content kind (`7`, docs/E2EE.md §3.8): a group's name,
//! topic and avatar as end-to-end encrypted metadata that only members
//! read (as Signal's encrypted group attributes), sent in the group like
//! any content; the latest one in the conversation wins.
//!
//! Payload: name length (u16 LE), name (UTF-8, at most [`MAX_NAME_BYTES`]),
//! topic length (u16 LE), topic (UTF-8, at most [`MAX_TOPIC_BYTES`]),
//! avatar (the remaining bytes, at most [`MAX_AVATAR_BYTES`]: small image
//! bytes, or an attachment reference the app encodes).

use super::{Content, ContentError};

/// Longest group name, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest group topic, in UTF-8 bytes.
pub const MAX_TOPIC_BYTES: usize = 1024;
/// Largest avatar, in bytes (a thumbnail or an attachment reference).
pub const MAX_AVATAR_BYTES: usize = 16 * 1024;

/// A group's name, topic and avatar, each possibly empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub topic: String,
    pub avatar: Vec<u8>,
}

/// Why a [`GroupInfo`] cannot be sent.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupInfoError {
    #[error("the group name is {0} bytes long, more than {MAX_NAME_BYTES}; shorten it")]
    NameTooLong(usize),
    #[error("the group topic is {0} bytes long, more than {MAX_TOPIC_BYTES}; shorten it")]
    TopicTooLong(usize),
    #[error("the avatar is {0} bytes, more than {MAX_AVATAR_BYTES}; send it as an attachment and put its reference here")]
    AvatarTooLarge(usize),
}

impl GroupInfo {
    /// Checks the bounds ([`MAX_NAME_BYTES`], [`MAX_TOPIC_BYTES`],
    /// [`MAX_AVATAR_BYTES`]).
    pub fn check(&self) -> Result<(), GroupInfoError> {
        if self.name.len() > MAX_NAME_BYTES {
            return Err(GroupInfoError::NameTooLong(self.name.len()));
        }
        if self.topic.len() > MAX_TOPIC_BYTES {
            return Err(GroupInfoError::TopicTooLong(self.topic.len()));
        }
        if self.avatar.len() > MAX_AVATAR_BYTES {
            return Err(GroupInfoError::AvatarTooLarge(self.avatar.len()));
        }
        Ok(())
    }

    /// The payload (see the module docs); fields past their bound are cut
    /// (callers [`GroupInfo::check`] first).
    pub(super) fn payload(&self) -> Vec<u8> {
        let name = super::snippet(&self.name, MAX_NAME_BYTES).as_bytes();
        let topic = super::snippet(&self.topic, MAX_TOPIC_BYTES).as_bytes();
        let avatar = self.avatar.get(..MAX_AVATAR_BYTES).unwrap_or(&self.avatar);
        let mut out = Vec::with_capacity(4 + name.len() + topic.len() + avatar.len());
        for field in [name, topic] {
            out.extend_from_slice(&(field.len() as u16).to_le_bytes());
            out.extend_from_slice(field);
        }
        out.extend_from_slice(avatar);
        out
    }

    /// Decodes a payload; a field past its bound or not fitting the bytes
    /// is [`ContentError::Malformed`], a name or topic not UTF-8
    /// [`ContentError::InvalidUtf8`].
    pub(super) fn decode(payload: &[u8]) -> Result<Content, ContentError> {
        let malformed = |reason| ContentError::Malformed {
            kind: super::kind::GROUP_INFO,
            reason,
        };
        let (name, rest) = field(payload, MAX_NAME_BYTES).ok_or(malformed("name layout"))?;
        let (topic, avatar) = field(rest, MAX_TOPIC_BYTES).ok_or(malformed("topic layout"))?;
        if avatar.len() > MAX_AVATAR_BYTES {
            return Err(malformed("avatar larger than 16 KiB"));
        }
        Ok(Content::GroupInfo(GroupInfo {
            name: super::utf8(name)?,
            topic: super::utf8(topic)?,
            avatar: avatar.to_vec(),
        }))
    }
}

/// A u16-LE-length-prefixed field of at most `max` bytes, and the rest.
fn field(bytes: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let (len, rest) = bytes.split_at_checked(2)?;
    let len = usize::from(u16::from_le_bytes([*len.first()?, *len.get(1)?]));
    if len > max {
        return None;
    }
    rest.split_at_checked(len)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn group_info_round_trips_and_is_bounded() {
        let info = GroupInfo {
            name: "Climbing 🧗".into(),
            topic: "Saturdays at 10".into(),
            avatar: vec![0x89, b'P', b'N', b'G'],
        };
        let content = Content::GroupInfo(info.clone());
        assert_eq!(Content::decode(&content.encode()).unwrap(), content);
        assert_eq!(content.kind(), super::super::kind::GROUP_INFO);
        assert!(!content.is_visible());
        let empty = Content::GroupInfo(GroupInfo::default());
        assert_eq!(Content::decode(&empty.encode()).unwrap(), empty);

        let long = GroupInfo {
            name: "n".repeat(MAX_NAME_BYTES + 1),
            ..info.clone()
        };
        assert_eq!(long.check(), Err(GroupInfoError::NameTooLong(129)));
        let big = GroupInfo {
            avatar: vec![0; MAX_AVATAR_BYTES + 1],
            ..info
        };
        assert!(matches!(
            big.check(),
            Err(GroupInfoError::AvatarTooLarge(_))
        ));
    }

    #[test]
    fn malformed_group_info_is_a_typed_error() {
        for payload in [&[][..], &[5, 0, b'a'], &[0, 0, 200, 0], &[0xff, 0xff]] {
            assert!(matches!(
                GroupInfo::decode(payload),
                Err(ContentError::Malformed { kind: 7, .. })
            ));
        }
        assert!(matches!(
            GroupInfo::decode(&[1, 0, 0xff, 0, 0]),
            Err(ContentError::InvalidUtf8(_))
        ));
    }
}
