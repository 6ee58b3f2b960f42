//! Typed message content, carried **inside** the end-to-end ciphertext so the
//! server never parses (or even sees the kind of) what users send.
//!
//! # Encoding (format version 1)
//!
//! ```text
//! +---------+------+-------------------+-----------------+-------------+
//! | version | kind | payload length    | payload         | zero padding|
//! | u8 = 1  | u8   | u64 little-endian | `length` bytes  | to 64 bytes |
//! +---------+------+-------------------+-----------------+-------------+
//! ```
//!
//! The whole encoding is padded with zeros to a multiple of [`PAD_BLOCK`]
//! (64) bytes so the ciphertext length only reveals the content size to the
//! nearest 64 bytes. The real length is the `payload length` field; decoders
//! ignore whatever follows the payload.
//!
//! Kind tags ([`kind`]), each payload's exact layout in docs/E2EE.md §3:
//!
//! | tag | kind | payload |
//! |---|---|---|
//! | `1` | text | UTF-8 body |
//! | `2` | reaction | target seq (u64 LE), emoji (UTF-8, 0..=[`MAX_EMOJI_BYTES`]; empty = remove) |
//! | `3` | edit | target seq (u64 LE), new body (UTF-8) |
//! | `4` | receipt | receipt type (u8: 1 delivered, 2 read), up-to seq (u64 LE) |
//! | `5` | reply | target seq (u64 LE), quote length (u16 LE), quote (UTF-8, at most [`MAX_QUOTE_BYTES`]), body (UTF-8) |
//! | `6` | delete for everyone | target seq (u64 LE) |
//! | `7` | group info | name, topic (each u16 LE length + UTF-8), avatar (rest); [`group_info`] |
//! | `8` | attachment | an [`AttachmentPointer`] ([`crate::attachment::pointer`]) |
//!
//! Every target is a seq of the conversation the content is sent in.
//! Fixed-size payloads (receipt, delete) may carry more bytes after their
//! fields; decoders ignore them (room for later fields).
//!
//! # Forward compatibility
//!
//! A kind this build does not know decodes to [`Content::Unknown`] with the
//! raw payload, not to an error: an old client keeps the message (it can show
//! "this message needs a newer tern" and re-decode the stored bytes after an
//! upgrade), and `Unknown` re-encodes to the same kind and payload. A newer
//! *format version* (the first byte) is an error
//! ([`ContentError::UnsupportedVersion`]), because the framing itself may have
//! changed. `Content` is `#[non_exhaustive]`: match it with a `_` arm.

pub mod emoji;
pub mod group_info;

pub use crate::attachment::AttachmentPointer;
pub use group_info::{GroupInfo, GroupInfoUpdate};

/// Format version written by [`Content::encode`].
pub const CONTENT_VERSION: u8 = 1;

/// Encodings are padded to a multiple of this many bytes.
pub const PAD_BLOCK: usize = 64;

/// Bytes before the payload: version, kind, u64 length.
const HEADER_LEN: usize = 1 + 1 + 8;

/// Kind tags on the wire.
pub mod kind {
    /// Never sent by tern: in a device's local message store, the mark of a
    /// message it could not decrypt or decode; the payload is the reason
    /// (UTF-8). See [`super::Content::unreadable`].
    pub const UNREADABLE: u8 = 0;
    /// [`super::Content::Text`].
    pub const TEXT: u8 = 1;
    /// [`super::Content::Reaction`].
    pub const REACTION: u8 = 2;
    /// [`super::Content::Edit`].
    pub const EDIT: u8 = 3;
    /// [`super::Content::Receipt`] (delivered and read).
    pub const RECEIPT: u8 = 4;
    /// [`super::Content::Reply`].
    pub const REPLY: u8 = 5;
    /// [`super::Content::Delete`] (delete for everyone).
    pub const DELETE: u8 = 6;
    /// [`super::Content::GroupInfo`].
    pub const GROUP_INFO: u8 = 7;
    /// [`super::Content::Attachment`].
    pub const ATTACHMENT: u8 = 8;
}

/// Longest reaction emoji, in UTF-8 bytes (the longest standard emoji
/// sequences, families with skin tones, take about 35).
pub const MAX_EMOJI_BYTES: usize = 64;

/// Longest quoted snippet a reply carries, in UTF-8 bytes;
/// [`Content::reply`] cuts longer quotes at a character boundary.
pub const MAX_QUOTE_BYTES: usize = 256;

/// What a [`Content::Receipt`] says about the messages up to its seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReceiptKind {
    /// Stored on one of the recipient's devices (wire value 1).
    Delivered = 1,
    /// Shown to the recipient (wire value 2); implies delivered.
    Read = 2,
}

impl ReceiptKind {
    /// The wire value.
    pub fn tag(self) -> u8 {
        self as u8
    }

    fn from_tag(tag: u8) -> Option<ReceiptKind> {
        match tag {
            1 => Some(ReceiptKind::Delivered),
            2 => Some(ReceiptKind::Read),
            _ => None,
        }
    }
}

/// What a message says. Encoded with [`Content::encode`] and then encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Content {
    /// A plain text message.
    Text { body: String },
    /// This user's reaction to message `target_seq` of the same
    /// conversation, replacing their earlier one; an empty `emoji` removes it.
    Reaction { target_seq: u64, emoji: String },
    /// The sender's new text for their own message `target_seq`.
    Edit { target_seq: u64, body: String },
    /// Every message of the conversation up to `up_to_seq` reached this
    /// user (delivered) or was shown to them (read).
    Receipt {
        receipt: ReceiptKind,
        up_to_seq: u64,
    },
    /// A text message answering message `target_seq`, with a snippet of
    /// the quoted text (at most [`MAX_QUOTE_BYTES`]).
    Reply {
        target_seq: u64,
        quote: String,
        body: String,
    },
    /// The sender (or a group administrator) deletes message
    /// `target_seq` for everyone.
    Delete { target_seq: u64 },
    /// A change to the group's name, topic or avatar (the fields it
    /// carries; each field's latest value wins).
    GroupInfo(GroupInfoUpdate),
    /// A file, photo, video or voice message: where its encrypted blob
    /// lies and its key (boxed: it is much larger than the other kinds).
    Attachment(Box<AttachmentPointer>),
    /// A kind this build does not understand (sent by a newer client). The
    /// payload is kept as is so it can be stored and decoded after an upgrade.
    Unknown { kind: u8, payload: Vec<u8> },
}

/// Why bytes could not be decoded as [`Content`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContentError {
    #[error("message content is empty or shorter than its {HEADER_LEN}-byte header ({0} bytes); it is damaged, drop it")]
    TooShort(usize),
    #[error("message content uses format version {0}, this build understands {CONTENT_VERSION}; upgrade tern to read it")]
    UnsupportedVersion(u8),
    #[error("message content claims a {claimed}-byte payload but only {available} bytes follow; it is damaged, drop it")]
    Truncated { claimed: u64, available: usize },
    #[error("text message body is not valid UTF-8: {0}; the sender's client is faulty, drop the message")]
    InvalidUtf8(String),
    /// A known kind whose payload does not follow its layout.
    #[error("message content of kind {kind} is malformed ({reason}); the sender's client is faulty, drop the message")]
    Malformed { kind: u8, reason: &'static str },
}

impl Content {
    /// A text message.
    pub fn text(body: impl Into<String>) -> Content {
        Content::Text { body: body.into() }
    }

    /// The local store's record of a message this device could not decrypt
    /// or decode, with why: kept so the app's history shows it and a
    /// redelivery is acknowledged, not decrypted again.
    pub fn unreadable(reason: impl Into<String>) -> Content {
        Content::Unknown {
            kind: kind::UNREADABLE,
            payload: reason.into().into_bytes(),
        }
    }

    /// Why the message is unreadable, if this is [`Content::unreadable`].
    pub fn unreadable_reason(&self) -> Option<String> {
        match self {
            Content::Unknown {
                kind: kind::UNREADABLE,
                payload,
            } => Some(String::from_utf8_lossy(payload).into_owned()),
            _ => None,
        }
    }

    /// A reply to message `target_seq` quoting `quoted` (cut to at most
    /// [`MAX_QUOTE_BYTES`] at a character boundary).
    pub fn reply(target_seq: u64, quoted: &str, body: impl Into<String>) -> Content {
        Content::Reply {
            target_seq,
            quote: snippet(quoted, MAX_QUOTE_BYTES).to_owned(),
            body: body.into(),
        }
    }

    /// The kind tag this content is encoded with.
    pub fn kind(&self) -> u8 {
        match self {
            Content::Text { .. } => kind::TEXT,
            Content::Reaction { .. } => kind::REACTION,
            Content::Edit { .. } => kind::EDIT,
            Content::Receipt { .. } => kind::RECEIPT,
            Content::Reply { .. } => kind::REPLY,
            Content::Delete { .. } => kind::DELETE,
            Content::GroupInfo(_) => kind::GROUP_INFO,
            Content::Attachment(_) => kind::ATTACHMENT,
            Content::Unknown { kind, .. } => *kind,
        }
    }

    /// Whether a user sees this as a message of its own in the history:
    /// text, replies, attachments, and kinds this build cannot read (shown as such). A
    /// reaction, edit, receipt or delete changes other messages instead;
    /// only visible messages are acknowledged with receipts.
    pub fn is_visible(&self) -> bool {
        !matches!(
            self,
            Content::Reaction { .. }
                | Content::Edit { .. }
                | Content::Receipt { .. }
                | Content::Delete { .. }
                | Content::GroupInfo(_)
        )
    }

    /// The text a user reads: the body of a text or a reply.
    pub fn body(&self) -> Option<&str> {
        match self {
            Content::Text { body } | Content::Reply { body, .. } => Some(body),
            _ => None,
        }
    }

    fn payload(&self) -> Vec<u8> {
        match self {
            Content::Text { body } => body.as_bytes().to_vec(),
            Content::Reaction { target_seq, emoji } => seq_then(*target_seq, emoji.as_bytes()),
            Content::Edit { target_seq, body } => seq_then(*target_seq, body.as_bytes()),
            Content::Receipt { receipt, up_to_seq } => {
                let mut out = vec![receipt.tag()];
                out.extend_from_slice(&up_to_seq.to_le_bytes());
                out
            }
            Content::Reply {
                target_seq,
                quote,
                body,
            } => {
                let quote = snippet(quote, MAX_QUOTE_BYTES).as_bytes();
                let mut out = seq_then(*target_seq, &(quote.len() as u16).to_le_bytes());
                out.extend_from_slice(quote);
                out.extend_from_slice(body.as_bytes());
                out
            }
            Content::Delete { target_seq } => target_seq.to_le_bytes().to_vec(),
            Content::GroupInfo(info) => info.payload(),
            Content::Attachment(pointer) => pointer.payload(),
            Content::Unknown { payload, .. } => payload.clone(),
        }
    }

    /// Encodes (see the module docs), padded to a multiple of [`PAD_BLOCK`].
    /// A reply's quote longer than [`MAX_QUOTE_BYTES`] is cut to it.
    pub fn encode(&self) -> Vec<u8> {
        let payload = self.payload();
        let payload = payload.as_slice();
        let unpadded = HEADER_LEN.saturating_add(payload.len());
        let padded = unpadded.div_ceil(PAD_BLOCK).saturating_mul(PAD_BLOCK);
        let mut out = Vec::with_capacity(padded);
        out.push(CONTENT_VERSION);
        out.push(self.kind());
        out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        out.extend_from_slice(payload);
        out.resize(padded, 0);
        out
    }

    /// Decodes what [`Content::encode`] produced (padding is ignored).
    pub fn decode(bytes: &[u8]) -> Result<Content, ContentError> {
        let (header, rest) = bytes
            .split_at_checked(HEADER_LEN)
            .ok_or(ContentError::TooShort(bytes.len()))?;
        let [version, kind, len @ ..] = header else {
            return Err(ContentError::TooShort(bytes.len()));
        };
        if *version != CONTENT_VERSION {
            return Err(ContentError::UnsupportedVersion(*version));
        }
        let mut raw_len = [0u8; 8];
        raw_len.copy_from_slice(len);
        let claimed = u64::from_le_bytes(raw_len);
        let payload = usize::try_from(claimed)
            .ok()
            .and_then(|n| rest.get(..n))
            .ok_or(ContentError::Truncated {
                claimed,
                available: rest.len(),
            })?;
        decode_payload(*kind, payload)
    }
}

/// The decoded payload of a content of kind `kind`.
fn decode_payload(kind: u8, payload: &[u8]) -> Result<Content, ContentError> {
    let malformed = |reason| ContentError::Malformed { kind, reason };
    match kind {
        kind::TEXT => Ok(Content::Text {
            body: utf8(payload)?,
        }),
        kind::REACTION => {
            let (target_seq, emoji) = split_seq(payload).ok_or(malformed("no target seq"))?;
            if emoji.len() > MAX_EMOJI_BYTES {
                return Err(malformed("emoji longer than 64 bytes"));
            }
            let emoji = utf8(emoji)?;
            Ok(Content::Reaction { target_seq, emoji })
        }
        kind::EDIT => {
            let (target_seq, body) = split_seq(payload).ok_or(malformed("no target seq"))?;
            let body = utf8(body)?;
            Ok(Content::Edit { target_seq, body })
        }
        kind::RECEIPT => {
            let (tag, rest) = payload.split_first().ok_or(malformed("no receipt type"))?;
            let receipt = ReceiptKind::from_tag(*tag).ok_or(malformed("unknown receipt type"))?;
            let (up_to_seq, _) = split_seq(rest).ok_or(malformed("no up-to seq"))?;
            Ok(Content::Receipt { receipt, up_to_seq })
        }
        kind::REPLY => decode_reply(payload).ok_or(malformed("reply layout"))?,
        kind::DELETE => {
            let (target_seq, _) = split_seq(payload).ok_or(malformed("no target seq"))?;
            Ok(Content::Delete { target_seq })
        }
        kind::GROUP_INFO => GroupInfoUpdate::decode(payload),
        kind::ATTACHMENT => AttachmentPointer::decode(payload),
        other => Ok(Content::Unknown {
            kind: other,
            payload: payload.to_vec(),
        }),
    }
}

/// A reply's payload; `None` when its fields do not fit the bytes (or the
/// quote is too long), `Some(Err)` when a text is not UTF-8.
fn decode_reply(payload: &[u8]) -> Option<Result<Content, ContentError>> {
    let (target_seq, rest) = split_seq(payload)?;
    let (len, rest) = rest.split_at_checked(2)?;
    let len = usize::from(u16::from_le_bytes([*len.first()?, *len.get(1)?]));
    if len > MAX_QUOTE_BYTES {
        return None;
    }
    let (quote, body) = rest.split_at_checked(len)?;
    Some(utf8(quote).and_then(|quote| {
        Ok(Content::Reply {
            target_seq,
            quote,
            body: utf8(body)?,
        })
    }))
}

/// The leading u64 (little-endian) of `bytes` and the rest.
fn split_seq(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let (seq, rest) = bytes.split_at_checked(8)?;
    let seq = u64::from_le_bytes(seq.try_into().ok()?);
    Some((seq, rest))
}

/// `seq` (u64 little-endian) followed by `rest`.
fn seq_then(seq: u64, rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + rest.len());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(rest);
    out
}

fn utf8(bytes: &[u8]) -> Result<String, ContentError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|e| ContentError::InvalidUtf8(e.to_string()))
}

/// The longest prefix of `text` of at most `max` bytes that ends at a
/// character boundary.
pub fn snippet(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for body in ["", "hello bob", "ünïcødé ✓ 🎉", &"x".repeat(1000)] {
            let content = Content::text(body);
            let bytes = content.encode();
            assert_eq!(Content::decode(&bytes).unwrap(), content);
        }
    }

    #[test]
    fn encodings_are_padded_to_64_bytes() {
        let cases = [
            (0, 64),
            (1, 64),
            (54, 64),
            (55, 128),
            (118, 128),
            (119, 192),
            (1000, 1024),
        ];
        for (len, expected) in cases {
            let bytes = Content::text("a".repeat(len)).encode();
            assert_eq!(bytes.len(), expected, "body of {len} bytes");
            assert_eq!(bytes.len() % PAD_BLOCK, 0);
            assert!(
                bytes[HEADER_LEN + len..].iter().all(|b| *b == 0),
                "padding is zeros"
            );
        }
        // Bodies of different lengths inside one block are indistinguishable by size.
        assert_eq!(
            Content::text("hi").encode().len(),
            Content::text("hello there, bob").encode().len()
        );
    }

    #[test]
    fn unknown_kind_is_kept_not_rejected() {
        let mut bytes = Content::text("from the future").encode();
        bytes[1] = 42;
        let decoded = Content::decode(&bytes).unwrap();
        assert_eq!(
            decoded,
            Content::Unknown {
                kind: 42,
                payload: b"from the future".to_vec()
            }
        );
        assert_eq!(decoded.kind(), 42);
        // Re-encoding an unknown kind reproduces the original bytes.
        assert_eq!(decoded.encode(), bytes);
    }

    #[test]
    fn bad_input_gives_typed_errors() {
        assert_eq!(Content::decode(&[]), Err(ContentError::TooShort(0)));
        assert_eq!(Content::decode(&[1, 1, 0]), Err(ContentError::TooShort(3)));

        let mut bytes = Content::text("hi").encode();
        bytes[0] = 9;
        assert_eq!(
            Content::decode(&bytes),
            Err(ContentError::UnsupportedVersion(9))
        );

        let mut bytes = Content::text("hi").encode();
        bytes[2..10].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(
            Content::decode(&bytes),
            Err(ContentError::Truncated {
                claimed: 1000,
                available: 54
            })
        );
        bytes[2..10].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            Content::decode(&bytes),
            Err(ContentError::Truncated { .. })
        ));

        let mut bytes = Content::text("hi").encode();
        bytes[HEADER_LEN] = 0xff;
        assert!(matches!(
            Content::decode(&bytes),
            Err(ContentError::InvalidUtf8(_))
        ));
    }

    #[test]
    fn every_new_kind_round_trips() {
        let cases = [
            Content::Reaction {
                target_seq: 7,
                emoji: "👍".into(),
            },
            Content::Reaction {
                target_seq: u64::MAX,
                emoji: String::new(),
            },
            Content::Edit {
                target_seq: 3,
                body: "fixed typo".into(),
            },
            Content::Receipt {
                receipt: ReceiptKind::Delivered,
                up_to_seq: 100,
            },
            Content::Receipt {
                receipt: ReceiptKind::Read,
                up_to_seq: 1,
            },
            Content::reply(4, "the original text", "my answer"),
            Content::reply(4, "", ""),
            Content::Delete { target_seq: 9 },
        ];
        for content in cases {
            let bytes = content.encode();
            assert_eq!(bytes.len() % PAD_BLOCK, 0);
            assert_eq!(bytes[1], content.kind());
            assert_eq!(Content::decode(&bytes).unwrap(), content);
        }
    }

    #[test]
    fn reply_quotes_are_cut_at_a_character_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let Content::Reply { quote, .. } = Content::reply(1, &long, "x") else {
            panic!("a reply")
        };
        assert_eq!(quote.len(), MAX_QUOTE_BYTES);
        assert!(long.starts_with(&quote));
        assert_eq!(snippet("aé", 2), "a");
        // An over-long quote built by hand is cut when encoded.
        let forged = Content::Reply {
            target_seq: 1,
            quote: "q".repeat(1000),
            body: "b".into(),
        };
        let decoded = Content::decode(&forged.encode()).unwrap();
        assert_eq!(decoded, Content::reply(1, &"q".repeat(1000), "b"));
    }

    #[test]
    fn malformed_payloads_of_known_kinds_are_typed_errors() {
        let raw = |kind: u8, payload: &[u8]| {
            Content::Unknown {
                kind,
                payload: payload.to_vec(),
            }
            .encode()
        };
        let malformed = |kind| move |r: Result<Content, ContentError>| matches!(r, Err(ContentError::Malformed { kind: k, .. }) if k == kind);
        assert!(malformed(kind::REACTION)(Content::decode(&raw(2, &[1, 2]))));
        let mut long_emoji = 1u64.to_le_bytes().to_vec();
        long_emoji.extend_from_slice(&[b'x'; MAX_EMOJI_BYTES + 1]);
        assert!(malformed(kind::REACTION)(Content::decode(&raw(
            2,
            &long_emoji
        ))));
        assert!(malformed(kind::EDIT)(Content::decode(&raw(3, &[]))));
        assert!(malformed(kind::RECEIPT)(Content::decode(&raw(4, &[]))));
        assert!(malformed(kind::RECEIPT)(Content::decode(&raw(
            4,
            &[9, 0, 0, 0, 0, 0, 0, 0, 0]
        ))));
        assert!(malformed(kind::RECEIPT)(Content::decode(&raw(
            4,
            &[1, 0, 0]
        ))));
        let mut reply = 1u64.to_le_bytes().to_vec();
        reply.extend_from_slice(&10u16.to_le_bytes());
        reply.extend_from_slice(b"short");
        assert!(malformed(kind::REPLY)(Content::decode(&raw(5, &reply))));
        let mut reply = 1u64.to_le_bytes().to_vec();
        reply.extend_from_slice(&300u16.to_le_bytes());
        reply.extend_from_slice(&[b'q'; 300]);
        assert!(malformed(kind::REPLY)(Content::decode(&raw(5, &reply))));
        assert!(malformed(kind::DELETE)(Content::decode(&raw(6, &[1]))));
        let mut edit = 1u64.to_le_bytes().to_vec();
        edit.push(0xff);
        assert!(matches!(
            Content::decode(&raw(3, &edit)),
            Err(ContentError::InvalidUtf8(_))
        ));
        // Later fields of fixed-size kinds are ignored.
        let mut delete = 5u64.to_le_bytes().to_vec();
        delete.extend_from_slice(b"later");
        assert_eq!(
            Content::decode(&raw(6, &delete)).unwrap(),
            Content::Delete { target_seq: 5 }
        );
    }

    #[test]
    fn unpadded_input_still_decodes() {
        let bytes = Content::text("hi").encode();
        assert_eq!(
            Content::decode(&bytes[..HEADER_LEN + 2]).unwrap(),
            Content::text("hi")
        );
    }
}
