//! The group-info content kind (`7`, docs/E2EE.md §3.8): changes to a
//! group's name, topic and avatar as end-to-end encrypted metadata that
//! only members read (as Signal's encrypted group attributes), sent in the
//! group like any content. An update carries only the fields it changes
//! ([`GroupInfoUpdate`]); each field's latest value wins on every device
//! ([`GroupInfo::apply`]), so a device that is behind never sends back a
//! stale field it did not mean to change.
//!
//! Payloads, told apart by their first two bytes (a full update's name
//! length is at most 128, so never `FF FF`):
//! * full (all three fields; what older SDKs send and read): name length
//!   (u16 LE), name (UTF-8, at most [`MAX_NAME_BYTES`]), topic length (u16
//!   LE), topic (UTF-8, at most [`MAX_TOPIC_BYTES`]), avatar (the remaining
//!   bytes, at most [`MAX_AVATAR_BYTES`]);
//! * partial: `FF FF`, a field mask byte ([`field`]: 1 name, 2 topic, 4
//!   avatar; no other bit), then the fields the mask names, laid out as in
//!   the full payload (the avatar, when named, is the rest).

use super::{Content, ContentError};

/// Longest group name, in UTF-8 bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// Longest group topic, in UTF-8 bytes.
pub const MAX_TOPIC_BYTES: usize = 1024;
/// Largest avatar, in bytes (a thumbnail or an attachment reference).
pub const MAX_AVATAR_BYTES: usize = 16 * 1024;

/// The first two bytes of a partial update's payload.
const PARTIAL: [u8; 2] = [0xff, 0xff];

/// The bits of a partial update's field mask.
pub mod field {
    /// The update carries a name.
    pub const NAME: u8 = 1;
    /// The update carries a topic.
    pub const TOPIC: u8 = 2;
    /// The update carries an avatar.
    pub const AVATAR: u8 = 4;
}

/// A group's name, topic and avatar, each possibly empty: the result of
/// every update in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub topic: String,
    pub avatar: Vec<u8>,
}

/// One change to a group's info: the fields it sets (`None`: left as it
/// is; `Some` of an empty value clears it). The content of kind 7.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupInfoUpdate {
    pub name: Option<String>,
    pub topic: Option<String>,
    pub avatar: Option<Vec<u8>>,
}

/// Why a [`GroupInfoUpdate`] cannot be sent.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupInfoError {
    #[error("the group name is {0} bytes long, more than {MAX_NAME_BYTES}; shorten it")]
    NameTooLong(usize),
    #[error("the group topic is {0} bytes long, more than {MAX_TOPIC_BYTES}; shorten it")]
    TopicTooLong(usize),
    #[error("the avatar is {0} bytes, more than {MAX_AVATAR_BYTES}; send it as an attachment and put its reference here")]
    AvatarTooLarge(usize),
    #[error("the update changes nothing; give a name, a topic or an avatar")]
    Empty,
}

impl GroupInfo {
    /// Sets the fields `update` carries (latest wins, field by field).
    pub fn apply(&mut self, update: &GroupInfoUpdate) {
        if let Some(name) = &update.name {
            self.name.clone_from(name);
        }
        if let Some(topic) = &update.topic {
            self.topic.clone_from(topic);
        }
        if let Some(avatar) = &update.avatar {
            self.avatar.clone_from(avatar);
        }
    }
}

impl From<GroupInfo> for GroupInfoUpdate {
    /// The update that sets all three fields.
    fn from(info: GroupInfo) -> GroupInfoUpdate {
        GroupInfoUpdate {
            name: Some(info.name),
            topic: Some(info.topic),
            avatar: Some(info.avatar),
        }
    }
}

impl GroupInfoUpdate {
    /// Checks the bounds ([`MAX_NAME_BYTES`], [`MAX_TOPIC_BYTES`],
    /// [`MAX_AVATAR_BYTES`]) and that some field is set.
    pub fn check(&self) -> Result<(), GroupInfoError> {
        let len = |f: Option<usize>| f.unwrap_or(0);
        if len(self.name.as_ref().map(String::len)) > MAX_NAME_BYTES {
            return Err(GroupInfoError::NameTooLong(len(self
                .name
                .as_ref()
                .map(String::len))));
        }
        if len(self.topic.as_ref().map(String::len)) > MAX_TOPIC_BYTES {
            return Err(GroupInfoError::TopicTooLong(len(self
                .topic
                .as_ref()
                .map(String::len))));
        }
        if len(self.avatar.as_ref().map(Vec::len)) > MAX_AVATAR_BYTES {
            return Err(GroupInfoError::AvatarTooLarge(len(self
                .avatar
                .as_ref()
                .map(Vec::len))));
        }
        if self.mask() == 0 {
            return Err(GroupInfoError::Empty);
        }
        Ok(())
    }

    /// The [`field`] bits of the fields this update sets.
    pub fn mask(&self) -> u8 {
        let bit = |set: bool, bit: u8| if set { bit } else { 0 };
        bit(self.name.is_some(), field::NAME)
            | bit(self.topic.is_some(), field::TOPIC)
            | bit(self.avatar.is_some(), field::AVATAR)
    }

    /// The payload (see the module docs): full when all three fields are
    /// set, partial otherwise; fields past their bound are cut (callers
    /// [`GroupInfoUpdate::check`] first).
    pub(super) fn payload(&self) -> Vec<u8> {
        let mask = self.mask();
        let mut out = Vec::new();
        if mask != field::NAME | field::TOPIC | field::AVATAR {
            out.extend_from_slice(&PARTIAL);
            out.push(mask);
        }
        for (text, max) in [(&self.name, MAX_NAME_BYTES), (&self.topic, MAX_TOPIC_BYTES)] {
            if let Some(text) = text {
                let bytes = super::snippet(text, max).as_bytes();
                out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
                out.extend_from_slice(bytes);
            }
        }
        if let Some(avatar) = &self.avatar {
            out.extend_from_slice(avatar.get(..MAX_AVATAR_BYTES).unwrap_or(avatar));
        }
        out
    }

    /// Decodes a payload, full or partial; a field past its bound or not
    /// fitting the bytes, an unknown mask bit or bytes after the last
    /// named field is [`ContentError::Malformed`], a name or topic not
    /// UTF-8 [`ContentError::InvalidUtf8`].
    pub(super) fn decode(payload: &[u8]) -> Result<Content, ContentError> {
        let malformed = |reason| ContentError::Malformed {
            kind: super::kind::GROUP_INFO,
            reason,
        };
        let (mask, mut rest) = match payload.split_first_chunk::<2>() {
            Some((&PARTIAL, rest)) => {
                let (&mask, rest) = rest.split_first().ok_or(malformed("no field mask"))?;
                if mask & !(field::NAME | field::TOPIC | field::AVATAR) != 0 {
                    return Err(malformed("unknown field in the mask"));
                }
                (mask, rest)
            }
            _ => (field::NAME | field::TOPIC | field::AVATAR, payload),
        };
        let mut update = GroupInfoUpdate::default();
        if mask & field::NAME != 0 {
            let (name, after) = text_field(rest, MAX_NAME_BYTES).ok_or(malformed("name layout"))?;
            update.name = Some(super::utf8(name)?);
            rest = after;
        }
        if mask & field::TOPIC != 0 {
            let (topic, after) =
                text_field(rest, MAX_TOPIC_BYTES).ok_or(malformed("topic layout"))?;
            update.topic = Some(super::utf8(topic)?);
            rest = after;
        }
        if mask & field::AVATAR != 0 {
            if rest.len() > MAX_AVATAR_BYTES {
                return Err(malformed("avatar larger than 16 KiB"));
            }
            update.avatar = Some(rest.to_vec());
        } else if !rest.is_empty() {
            return Err(malformed("bytes after the last field"));
        }
        Ok(Content::GroupInfo(update))
    }
}

/// A u16-LE-length-prefixed field of at most `max` bytes, and the rest.
fn text_field(bytes: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
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

    fn full() -> GroupInfoUpdate {
        GroupInfo {
            name: "Climbing 🧗".into(),
            topic: "Saturdays at 10".into(),
            avatar: vec![0x89, b'P', b'N', b'G'],
        }
        .into()
    }

    #[test]
    fn group_info_round_trips_and_is_bounded() {
        let content = Content::GroupInfo(full());
        assert_eq!(Content::decode(&content.encode()).unwrap(), content);
        assert_eq!(content.kind(), super::super::kind::GROUP_INFO);
        assert!(!content.is_visible());
        let empty = Content::GroupInfo(GroupInfo::default().into());
        assert_eq!(Content::decode(&empty.encode()).unwrap(), empty);

        let long = GroupInfoUpdate {
            name: Some("n".repeat(MAX_NAME_BYTES + 1)),
            ..full()
        };
        assert_eq!(long.check(), Err(GroupInfoError::NameTooLong(129)));
        let big = GroupInfoUpdate {
            avatar: Some(vec![0; MAX_AVATAR_BYTES + 1]),
            ..full()
        };
        assert!(matches!(
            big.check(),
            Err(GroupInfoError::AvatarTooLarge(_))
        ));
        assert_eq!(
            GroupInfoUpdate::default().check(),
            Err(GroupInfoError::Empty)
        );
    }

    #[test]
    fn a_full_update_keeps_the_old_layout_and_a_partial_one_only_its_fields() {
        let full = full();
        assert_eq!(&full.payload()[..2], &[13, 0], "the name's length first");
        let topic_only = GroupInfoUpdate {
            topic: Some("Sundays".into()),
            ..GroupInfoUpdate::default()
        };
        let payload = topic_only.payload();
        assert_eq!(
            payload,
            [&[0xff, 0xff, field::TOPIC, 7, 0][..], b"Sundays"].concat()
        );
        let content = Content::GroupInfo(topic_only.clone());
        assert_eq!(Content::decode(&content.encode()).unwrap(), content);
        let avatar_only = GroupInfoUpdate {
            avatar: Some(Vec::new()),
            ..GroupInfoUpdate::default()
        };
        let content = Content::GroupInfo(avatar_only);
        assert_eq!(Content::decode(&content.encode()).unwrap(), content);

        let mut info = GroupInfo::default();
        info.apply(&full);
        info.apply(&topic_only);
        assert_eq!(
            (info.name.as_str(), info.topic.as_str(), info.avatar.len()),
            ("Climbing 🧗", "Sundays", 4),
            "only the topic changed"
        );
    }

    #[test]
    fn malformed_group_info_is_a_typed_error() {
        for payload in [
            &[][..],
            &[5, 0, b'a'],
            &[0, 0, 200, 0],
            &[0xff, 0xff],
            &[0xff, 0xff, 8],
            &[0xff, 0xff, field::NAME, 1, 0, b'a', b'b'],
            &[0xff, 0xff, field::TOPIC, 5, 0],
        ] {
            assert!(
                matches!(
                    GroupInfoUpdate::decode(payload),
                    Err(ContentError::Malformed { kind: 7, .. })
                ),
                "{payload:?}"
            );
        }
        assert!(matches!(
            GroupInfoUpdate::decode(&[1, 0, 0xff, 0, 0]),
            Err(ContentError::InvalidUtf8(_))
        ));
    }
}
