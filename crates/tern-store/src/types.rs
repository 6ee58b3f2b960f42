//! The value types every store concern shares: ids, device and conversation
//! records, stored messages. Backends encode these however they like; the
//! server and the conformance suite only see these shapes.

use std::collections::BTreeSet;

use bytes::Bytes;

/// A user's handle: 1–32 chars of `[a-z0-9_.-]` (validated by the server).
pub type UserId = String;
/// A device number within its user, assigned by the server from 1.
pub type DeviceId = u32;
/// A conversation id, assigned by the server (random, non-zero).
pub type ConversationId = u64;
/// A message's position in its conversation: dense and gapless from 1.
pub type Seq = u64;

/// One registered device of a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    pub device: DeviceId,
    pub name: String,
    /// Ed25519 public key the device authenticates with.
    pub public_key: [u8; 32],
    pub created_ms: u64,
}

/// What kind of conversation this is; fixes who may be a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConversationKind {
    /// Exactly two users; one conversation per pair.
    Direct,
    /// Any number of users; the creator administers membership.
    Group,
    /// One user's own devices; one per user.
    NoteToSelf,
}

/// A conversation and its current membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConversationRecord {
    pub id: ConversationId,
    pub kind: ConversationKind,
    pub creator: UserId,
    pub members: BTreeSet<UserId>,
    pub created_ms: u64,
    /// Highest seq appended so far (0 when empty). Ignored on create.
    pub head_seq: Seq,
}

/// One stored message. The payload is ciphertext the server never parses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMessage {
    pub conversation_id: ConversationId,
    pub seq: Seq,
    pub sender_user: UserId,
    pub sender_device: DeviceId,
    pub client_message_id: u64,
    pub server_time_ms: u64,
    pub expires_at_ms: u64,
    pub flags: u32,
    pub payload: Bytes,
}
