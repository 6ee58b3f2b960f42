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
//! Kind tags ([`kind`]): `1` text (payload: UTF-8 body). Reserved for the kinds
//! planned next: `2` reaction, `3` edit, `4` read receipt.
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
    /// Reserved: reactions.
    pub const REACTION: u8 = 2;
    /// Reserved: edits.
    pub const EDIT: u8 = 3;
    /// Reserved: read receipts.
    pub const RECEIPT: u8 = 4;
}

/// What a message says. Encoded with [`Content::encode`] and then encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Content {
    /// A plain text message.
    Text { body: String },
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

    /// The kind tag this content is encoded with.
    pub fn kind(&self) -> u8 {
        match self {
            Content::Text { .. } => kind::TEXT,
            Content::Unknown { kind, .. } => *kind,
        }
    }

    fn payload(&self) -> &[u8] {
        match self {
            Content::Text { body } => body.as_bytes(),
            Content::Unknown { payload, .. } => payload,
        }
    }

    /// Encodes (see the module docs), padded to a multiple of [`PAD_BLOCK`].
    pub fn encode(&self) -> Vec<u8> {
        let payload = self.payload();
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
        match *kind {
            kind::TEXT => {
                let body = std::str::from_utf8(payload)
                    .map_err(|e| ContentError::InvalidUtf8(e.to_string()))?;
                Ok(Content::Text {
                    body: body.to_owned(),
                })
            }
            other => Ok(Content::Unknown {
                kind: other,
                payload: payload.to_vec(),
            }),
        }
    }
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
    fn unpadded_input_still_decodes() {
        let bytes = Content::text("hi").encode();
        assert_eq!(
            Content::decode(&bytes[..HEADER_LEN + 2]).unwrap(),
            Content::text("hi")
        );
    }
}
