//! Catching up: which conversations moved past this device's cursors
//! ([`Sync`]) and the answer listing each one's position ([`SyncResult`]).
//!
//! `Sync` shares its name with the std marker trait: write `sync::Sync`,
//! never glob-import this module.

use crate::body::conversations::ConversationKind;
use crate::body::{Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Most conversations one [`SyncResult`] lists, and the page size when a
/// [`Sync`] asks for 0: the server caps `limit` at it and the client asks
/// for it. A full page encodes to about 40 bytes and one table per
/// conversation (500 tables, ~20 KiB), far under the client's verifier
/// limits ([`crate::Limits::client_inbound`]: 8,192 tables, 4 MiB).
pub const MAX_SYNC_PAGE: u32 = 500;

/// Which conversations have messages past this device's cursor? With
/// `all`, every conversation of the user is listed. Paginated: the answer
/// lists conversations with id > `after` (0 = from the start) in ascending
/// id order, at most `limit` (0 = [`MAX_SYNC_PAGE`]; capped at it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sync {
    pub all: bool,
    pub after: u64,
    pub limit: u32,
}

impl WireBody for Sync {
    const TAG: fb::Body = fb::Body::Sync;
    type Table<'a> = fb::Sync<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let args = fb::SyncArgs {
            all: self.all,
            after: self.after,
            limit: self.limit,
        };
        fb::Sync::create(b, &args).as_union_value()
    }

    fn decode(s: fb::Sync<'_>) -> Result<Self, FrameError> {
        Ok(Sync {
            all: s.all(),
            after: s.after(),
            limit: s.limit(),
        })
    }
}

impl Request for Sync {
    type Response = SyncResult;
}

/// One conversation's position for a device, answered by `Sync`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationState {
    pub conversation_id: u64,
    pub kind: ConversationKind,
    pub head_seq: u64,
    /// This device's acknowledged seq.
    pub cursor: u64,
    /// The conversation's disappearing-message timer, seconds; 0 = off.
    pub timer_secs: u32,
    /// A message request: a direct conversation started by this user, who
    /// is not the caller's contact (`AcceptRequest` ends it); `None` when
    /// the conversation is not a request.
    pub request_from: Option<String>,
}

/// The answer to [`Sync`]: one page, in ascending id order. `more` is set
/// when conversations past the last listed one exist: ask again with
/// `after` = that id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncResult {
    pub conversations: Vec<ConversationState>,
    pub more: bool,
}

impl WireBody for SyncResult {
    const TAG: fb::Body = fb::Body::SyncResult;
    type Table<'a> = fb::SyncResult<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let items: Vec<_> = self
            .conversations
            .iter()
            .map(|s| {
                let request_from = s.request_from.as_deref().map(|u| b.create_string(u));
                let args = fb::ConversationStateArgs {
                    conversation_id: s.conversation_id,
                    kind: s.kind.to_fb(),
                    head_seq: s.head_seq,
                    cursor: s.cursor,
                    timer_secs: s.timer_secs,
                    request_from,
                };
                fb::ConversationState::create(b, &args)
            })
            .collect();
        let conversations = Some(b.create_vector(&items));
        let args = fb::SyncResultArgs {
            conversations,
            more: self.more,
        };
        fb::SyncResult::create(b, &args).as_union_value()
    }

    fn decode(r: fb::SyncResult<'_>) -> Result<Self, FrameError> {
        let conversations = r
            .conversations()
            .iter()
            .map(|s| {
                Ok(ConversationState {
                    conversation_id: s.conversation_id(),
                    kind: ConversationKind::from_fb(s.kind())?,
                    head_seq: s.head_seq(),
                    cursor: s.cursor(),
                    timer_secs: s.timer_secs(),
                    request_from: s.request_from().map(str::to_owned),
                })
            })
            .collect::<Result<_, FrameError>>()?;
        Ok(SyncResult {
            conversations,
            more: r.more(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::indexing_slicing)]
pub(crate) mod tests {
    // No glob import: `Sync` would shadow the std marker trait.
    use super::{ConversationState, SyncResult};
    use crate::body::conversations::ConversationKind;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            super::Sync {
                all: true,
                after: 0,
                limit: 0,
            }
            .into(),
            SyncResult {
                conversations: vec![ConversationState {
                    conversation_id: 1,
                    kind: ConversationKind::Group,
                    head_seq: 2,
                    cursor: 1,
                    timer_secs: 0,
                    request_from: None,
                }],
                more: false,
            }
            .into(),
        ]
    }

    /// The fields appended for pagination round-trip (kept out of
    /// `samples`, whose wire bytes are pinned).
    #[test]
    fn pagination_fields_roundtrip() {
        crate::body::tests::roundtrip_all(vec![
            super::Sync {
                all: false,
                after: 42,
                limit: 7,
            }
            .into(),
            SyncResult {
                conversations: vec![],
                more: true,
            }
            .into(),
            SyncResult {
                conversations: vec![ConversationState {
                    conversation_id: 1,
                    kind: ConversationKind::Direct,
                    head_seq: 2,
                    cursor: 1,
                    timer_secs: 86_400,
                    request_from: Some("mallory".into()),
                }],
                more: false,
            }
            .into(),
        ]);
    }

    /// A full page stays far under the client's verifier limits.
    #[test]
    fn a_full_page_fits_the_client_limits() {
        let state = ConversationState {
            conversation_id: u64::MAX,
            kind: ConversationKind::Group,
            head_seq: u64::MAX,
            cursor: u64::MAX,
            timer_secs: u32::MAX,
            request_from: Some("x".repeat(crate::handle::MAX_HANDLE_LEN)),
        };
        let page = SyncResult {
            conversations: vec![state; super::MAX_SYNC_PAGE as usize],
            more: true,
        };
        let wire = crate::Frame::new(1, page).encode();
        assert!(wire.len() < 64 * 1024, "{} bytes", wire.len());
        let limits = crate::Limits::client_inbound();
        crate::Frame::decode(&wire[crate::codec::LEN_PREFIX..], &limits).expect("verifies");
    }

    #[test]
    fn sync_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
