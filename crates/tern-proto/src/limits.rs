//! The protocol's documented limits, one number for both sides: the server
//! refuses a request past one with `InvalidArgument` and the SDK refuses to
//! send it (`ClientError::OverLimit`), both through [`check`]. The table in
//! docs/PROTOCOL.md §6 lists them with what a client gets at each.
//!
//! | limit | value | where |
//! |---|---|---|
//! | frame length | [`crate::codec::DEFAULT_MAX_FRAME_LEN`] (256 KiB) | codec (configurable on both sides) |
//! | names per request | [`MAX_NAMES_PER_REQUEST`] | [`check`] |
//! | users per presence (un)subscription | [`presence::MAX_PRESENCE_USERS_PER_REQUEST`] | [`check`] |
//! | keys per upload | [`MAX_KEYS_PER_UPLOAD`] | [`check`] |
//! | KeyPackage size | [`MAX_KEY_PACKAGE_LEN`] | [`check`] |
//! | Sync page | [`crate::MAX_SYNC_PAGE`] | capped by the server |
//! | History page | [`MAX_HISTORY_PAGE`] | capped by the server |
//! | handle, device name | [`crate::handle::MAX_HANDLE_LEN`], [`crate::handle::MAX_DEVICE_NAME_LEN`] | `handle` |

use crate::body::{conversations, mls, prekeys, presence};
use crate::Body;

/// Most user names one request may carry: members of CreateConversation,
/// AddMembers and RemoveMembers, users of ClaimKeyPackages, a Commit's
/// `added` and `removed` together.
pub const MAX_NAMES_PER_REQUEST: usize = 2_000;

/// Most one-time prekeys (UploadPrekeys) or KeyPackages (UploadKeyPackages)
/// one upload may carry.
pub const MAX_KEYS_PER_UPLOAD: usize = 100;

/// Largest KeyPackage (or last-resort KeyPackage) in bytes; an empty one is
/// refused too.
pub const MAX_KEY_PACKAGE_LEN: usize = 16 * 1024;

/// Most messages one History page holds: the server's default
/// `max_history_page` and what the SDK asks for.
pub const MAX_HISTORY_PAGE: u32 = 500;

/// A request past one of the limits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {count} is more than the limit of {max}; split the request")]
pub struct OverLimit {
    /// What was counted, e.g. "members of CreateConversation".
    pub what: &'static str,
    pub count: usize,
    pub max: usize,
}

/// Checks a request body against the count and size limits above (the
/// frame length is the codec's). Bodies without such limits pass.
pub fn check(body: &Body) -> Result<(), OverLimit> {
    match body {
        Body::CreateConversation(conversations::CreateConversation { members, .. }) => {
            names("members of CreateConversation", members.len())
        }
        Body::AddMembers(b) => names("members of AddMembers", b.members.len()),
        Body::RemoveMembers(b) => names("members of RemoveMembers", b.members.len()),
        Body::ClaimKeyPackages(b) => names("users of ClaimKeyPackages", b.users.len()),
        Body::Commit(b) => names(
            "added and removed members of a Commit",
            b.added.len().saturating_add(b.removed.len()),
        ),
        Body::SubscribePresence(b) => presence_users("users of SubscribePresence", b.users.len()),
        Body::UnsubscribePresence(b) => {
            presence_users("users of UnsubscribePresence", b.users.len())
        }
        Body::UploadPrekeys(b) => upload_prekeys(b),
        Body::UploadKeyPackages(b) => upload_key_packages(b),
        _ => Ok(()),
    }
}

fn presence_users(what: &'static str, count: usize) -> Result<(), OverLimit> {
    at_most(what, count, presence::MAX_PRESENCE_USERS_PER_REQUEST)
}

fn names(what: &'static str, count: usize) -> Result<(), OverLimit> {
    at_most(what, count, MAX_NAMES_PER_REQUEST)
}

fn at_most(what: &'static str, count: usize, max: usize) -> Result<(), OverLimit> {
    match count <= max {
        true => Ok(()),
        false => Err(OverLimit { what, count, max }),
    }
}

fn upload_prekeys(b: &prekeys::UploadPrekeys) -> Result<(), OverLimit> {
    at_most(
        "one-time prekeys of UploadPrekeys",
        b.one_time.len(),
        MAX_KEYS_PER_UPLOAD,
    )
}

fn upload_key_packages(b: &mls::UploadKeyPackages) -> Result<(), OverLimit> {
    at_most(
        "KeyPackages of UploadKeyPackages",
        b.key_packages.len(),
        MAX_KEYS_PER_UPLOAD,
    )?;
    let largest = b
        .key_packages
        .iter()
        .chain(b.last_resort.as_ref())
        .map(|p| p.len())
        .max()
        .unwrap_or(0);
    at_most("bytes of a KeyPackage", largest, MAX_KEY_PACKAGE_LEN)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn create(n: usize) -> Body {
        Body::CreateConversation(conversations::CreateConversation {
            kind: crate::ConversationKind::Group,
            members: (0..n).map(|i| format!("u{i}")).collect(),
        })
    }

    #[test]
    fn names_are_checked_at_the_limit_and_one_over() {
        assert_eq!(check(&create(MAX_NAMES_PER_REQUEST)), Ok(()));
        let over = check(&create(MAX_NAMES_PER_REQUEST + 1)).unwrap_err();
        assert_eq!((over.count, over.max), (2_001, 2_000));
        assert!(over.to_string().contains("members of CreateConversation"));
    }

    #[test]
    fn key_packages_are_checked_by_count_and_size() {
        let upload = |n: usize, len: usize| {
            Body::UploadKeyPackages(mls::UploadKeyPackages {
                key_packages: vec![Bytes::from(vec![1u8; len]); n],
                last_resort: None,
            })
        };
        assert_eq!(check(&upload(MAX_KEYS_PER_UPLOAD, 10)), Ok(()));
        assert!(check(&upload(MAX_KEYS_PER_UPLOAD + 1, 10)).is_err());
        assert_eq!(check(&upload(1, MAX_KEY_PACKAGE_LEN)), Ok(()));
        assert!(check(&upload(1, MAX_KEY_PACKAGE_LEN + 1)).is_err());
    }
}
