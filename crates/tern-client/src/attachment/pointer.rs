//! The attachment pointer, content kind `8` (docs/E2EE.md §10.2): what a
//! recipient needs to fetch and decrypt an attachment (blob id, key,
//! ciphertext digest, size) and to show it before fetching (content type,
//! file name, a small thumbnail, dimensions, duration), as Signal's
//! `AttachmentPointer`. It travels inside the end-to-end ciphertext only;
//! the server sees the blob id on the upload and download streams and
//! nothing else of it.
//!
//! Payload (integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | `scheme`: `01` = ChaCha20-Poly1305 STREAM-BE32, 64 KiB chunks ([`super::cipher`]) |
//! | 1 | 16 | `blob_id` |
//! | 17 | 32 | `key` |
//! | 49 | 32 | `digest`: SHA-256 of the whole ciphertext |
//! | 81 | 8 | `size`: plaintext bytes |
//! | 89 | 4 | `width` in pixels, 0 = none |
//! | 93 | 4 | `height` in pixels, 0 = none |
//! | 97 | 4 | `duration_ms`, 0 = none |
//! | 101 | 1 | `type_len`, at most [`MAX_CONTENT_TYPE_BYTES`] |
//! | 102 | `type_len` | `content_type`: printable ASCII MIME type (`audio/*` = a voice message) |
//! | … | 2 | `name_len`, at most [`MAX_FILE_NAME_BYTES`] |
//! | … | `name_len` | `file_name`: UTF-8, may be empty |
//! | … | rest | `thumbnail`: at most [`MAX_THUMBNAIL_BYTES`], may be empty |

use super::cipher::{AttachmentKey, DIGEST_LEN, KEY_LEN, MAX_PLAINTEXT_LEN};
use crate::content::{kind, Content, ContentError};

/// The one cipher scheme defined ([`super::cipher`]).
pub const SCHEME_STREAM_CHACHA20_64K: u8 = 1;
/// Bytes of a blob id (random, chosen by the uploader).
pub const BLOB_ID_LEN: usize = 16;
/// Longest content type, in bytes.
pub const MAX_CONTENT_TYPE_BYTES: usize = 127;
/// Longest file name, in UTF-8 bytes.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Largest thumbnail, in bytes (a small JPEG or WebP preview).
pub const MAX_THUMBNAIL_BYTES: usize = 16 * 1024;

/// Bytes before the content type.
const FIXED_LEN: usize = 1 + BLOB_ID_LEN + KEY_LEN + DIGEST_LEN + 8 + 4 + 4 + 4;

/// Where an attachment's ciphertext lies and how to open it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentPointer {
    pub blob_id: [u8; BLOB_ID_LEN],
    pub key: AttachmentKey,
    /// SHA-256 of the whole ciphertext.
    pub digest: [u8; DIGEST_LEN],
    /// Plaintext bytes.
    pub size: u64,
    /// MIME type, e.g. `image/jpeg`; `audio/*` marks a voice message.
    pub content_type: String,
    /// The sender's file name (a receiver keeps only its last component).
    pub file_name: String,
    /// A small preview, possibly empty.
    pub thumbnail: Vec<u8>,
    /// Pixels, for images and video; 0 when unknown.
    pub width: u32,
    pub height: u32,
    /// Milliseconds, for audio and video; 0 when unknown.
    pub duration_ms: u32,
}

/// Why an [`AttachmentPointer`] cannot be sent.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PointerError {
    #[error("the content type is {0} bytes, more than {MAX_CONTENT_TYPE_BYTES}, or not printable ASCII; give a MIME type such as image/jpeg")]
    BadContentType(usize),
    #[error("the file name is {0} bytes, more than {MAX_FILE_NAME_BYTES}; rename the file")]
    FileNameTooLong(usize),
    #[error("the thumbnail is {0} bytes, more than {MAX_THUMBNAIL_BYTES}; make it smaller")]
    ThumbnailTooLarge(usize),
    #[error("the attachment is {0} bytes, more than the format carries")]
    TooLarge(u64),
}

fn content_type_ok(t: &str) -> bool {
    t.len() <= MAX_CONTENT_TYPE_BYTES && t.bytes().all(|b| (0x20..0x7f).contains(&b))
}

impl AttachmentPointer {
    /// Whether this is a voice message (an `audio/*` content type).
    pub fn is_voice(&self) -> bool {
        self.content_type.starts_with("audio/")
    }

    /// The file name reduced to its last path component, without control
    /// characters, never empty: safe to save under in a chosen directory.
    pub fn safe_file_name(&self) -> String {
        let last = self
            .file_name
            .rsplit(['/', '\\'])
            .next()
            .unwrap_or_default();
        let clean: String = last.chars().filter(|c| !c.is_control()).collect();
        match clean.as_str() {
            "" | "." | ".." => "attachment".to_owned(),
            _ => clean,
        }
    }

    /// Checks the bounds above.
    pub fn check(&self) -> Result<(), PointerError> {
        if !content_type_ok(&self.content_type) {
            return Err(PointerError::BadContentType(self.content_type.len()));
        }
        if self.file_name.len() > MAX_FILE_NAME_BYTES {
            return Err(PointerError::FileNameTooLong(self.file_name.len()));
        }
        if self.thumbnail.len() > MAX_THUMBNAIL_BYTES {
            return Err(PointerError::ThumbnailTooLarge(self.thumbnail.len()));
        }
        if self.size > MAX_PLAINTEXT_LEN {
            return Err(PointerError::TooLarge(self.size));
        }
        Ok(())
    }

    /// The payload (see the module docs); fields past their bound are cut
    /// (callers [`AttachmentPointer::check`] first).
    pub(crate) fn payload(&self) -> Vec<u8> {
        let ctype = self
            .content_type
            .as_bytes()
            .get(..MAX_CONTENT_TYPE_BYTES)
            .unwrap_or(self.content_type.as_bytes());
        let name = crate::content::snippet(&self.file_name, MAX_FILE_NAME_BYTES).as_bytes();
        let thumb = self
            .thumbnail
            .get(..MAX_THUMBNAIL_BYTES)
            .unwrap_or(&self.thumbnail);
        let mut out = Vec::with_capacity(FIXED_LEN + 3 + ctype.len() + name.len() + thumb.len());
        out.push(SCHEME_STREAM_CHACHA20_64K);
        out.extend_from_slice(&self.blob_id);
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.digest);
        out.extend_from_slice(&self.size.to_le_bytes());
        for n in [self.width, self.height, self.duration_ms] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(ctype.len() as u8);
        out.extend_from_slice(ctype);
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(thumb);
        out
    }

    /// Decodes a payload. An unknown scheme, a field past its bound or not
    /// fitting is [`ContentError::Malformed`]; a file name not UTF-8 is
    /// [`ContentError::InvalidUtf8`].
    pub(crate) fn decode(payload: &[u8]) -> Result<Content, ContentError> {
        let malformed = |reason| ContentError::Malformed {
            kind: kind::ATTACHMENT,
            reason,
        };
        let mut r = Reader(payload);
        if r.byte().ok_or(malformed("empty"))? != SCHEME_STREAM_CHACHA20_64K {
            return Err(malformed("unknown cipher scheme; a newer client sent it"));
        }
        let fixed = || malformed("fixed fields cut short");
        let blob_id = r.array::<BLOB_ID_LEN>().ok_or_else(fixed)?;
        let key = AttachmentKey(r.array::<KEY_LEN>().ok_or_else(fixed)?);
        let digest = r.array::<DIGEST_LEN>().ok_or_else(fixed)?;
        let size = u64::from_le_bytes(r.array().ok_or_else(fixed)?);
        let mut dims = [0u32; 3];
        for d in &mut dims {
            *d = u32::from_le_bytes(r.array().ok_or_else(fixed)?);
        }
        let [width, height, duration_ms] = dims;
        let type_len = usize::from(r.byte().ok_or_else(fixed)?);
        let ctype = r.take(type_len).ok_or(malformed("content type layout"))?;
        let content_type = std::str::from_utf8(ctype)
            .ok()
            .filter(|t| content_type_ok(t))
            .ok_or(malformed("content type is not printable ASCII"))?
            .to_owned();
        let name_len = usize::from(u16::from_le_bytes(
            r.array().ok_or(malformed("file name layout"))?,
        ));
        if name_len > MAX_FILE_NAME_BYTES {
            return Err(malformed("file name longer than 255 bytes"));
        }
        let name = r.take(name_len).ok_or(malformed("file name layout"))?;
        let file_name = std::str::from_utf8(name)
            .map_err(|e| ContentError::InvalidUtf8(e.to_string()))?
            .to_owned();
        let thumbnail = r.0.to_vec();
        let pointer = AttachmentPointer {
            blob_id,
            key,
            digest,
            size,
            content_type,
            file_name,
            thumbnail,
            width,
            height,
            duration_ms,
        };
        match pointer.check() {
            Ok(()) => Ok(Content::Attachment(Box::new(pointer))),
            Err(PointerError::ThumbnailTooLarge(_)) => Err(malformed("thumbnail over 16 KiB")),
            Err(_) => Err(malformed("size past the format's bound")),
        }
    }
}

/// Reads fields off the front of a payload.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample() -> AttachmentPointer {
        AttachmentPointer {
            blob_id: [0x11; BLOB_ID_LEN],
            key: AttachmentKey([0x22; KEY_LEN]),
            digest: [0x33; DIGEST_LEN],
            size: 1_000_000,
            content_type: "image/jpeg".into(),
            file_name: "beach.jpg".into(),
            thumbnail: vec![0xff, 0xd8, 0xff],
            width: 4032,
            height: 3024,
            duration_ms: 0,
        }
    }

    #[test]
    fn round_trips_as_content() {
        let mut voice = sample();
        voice.content_type = "audio/ogg".into();
        voice.file_name = String::new();
        voice.thumbnail = Vec::new();
        voice.duration_ms = 5_300;
        for pointer in [sample(), voice] {
            let content = Content::Attachment(Box::new(pointer.clone()));
            let bytes = content.encode();
            assert_eq!(bytes[1], kind::ATTACHMENT);
            assert_eq!(Content::decode(&bytes).unwrap(), content);
            assert!(content.is_visible());
        }
    }

    #[test]
    fn malformed_pointers_are_typed_errors() {
        let raw = |payload: Vec<u8>| {
            Content::decode(
                &Content::Unknown {
                    kind: kind::ATTACHMENT,
                    payload,
                }
                .encode(),
            )
        };
        let malformed = |r: Result<Content, ContentError>| {
            matches!(
                r,
                Err(ContentError::Malformed {
                    kind: kind::ATTACHMENT,
                    ..
                })
            )
        };
        let good = sample().payload();
        assert!(malformed(raw(Vec::new())));
        let mut scheme = good.clone();
        scheme[0] = 2;
        assert!(malformed(raw(scheme)));
        assert!(malformed(raw(good[..FIXED_LEN].to_vec())));
        let mut ctype = good.clone();
        ctype[FIXED_LEN + 1] = 0x07;
        assert!(malformed(raw(ctype)));
        let mut thumb = good.clone();
        thumb.extend_from_slice(&[0; MAX_THUMBNAIL_BYTES]);
        assert!(malformed(raw(thumb)));
        let mut name = sample();
        name.file_name = "é".into();
        let mut bad = name.payload();
        let at = bad.len() - 3 - 1;
        bad[at] = 0xff;
        assert!(matches!(raw(bad), Err(ContentError::InvalidUtf8(_))));
    }

    #[test]
    fn bounds_are_checked_before_sending() {
        let mut p = sample();
        p.thumbnail = vec![0; MAX_THUMBNAIL_BYTES + 1];
        assert_eq!(
            p.check(),
            Err(PointerError::ThumbnailTooLarge(MAX_THUMBNAIL_BYTES + 1))
        );
        let mut p = sample();
        p.file_name = "n".repeat(256);
        assert_eq!(p.check(), Err(PointerError::FileNameTooLong(256)));
        let mut p = sample();
        p.content_type = "image/\u{7}".into();
        assert!(matches!(p.check(), Err(PointerError::BadContentType(_))));
    }

    #[test]
    fn file_names_are_reduced_to_a_safe_last_component() {
        let mut p = sample();
        for (name, safe) in [
            ("../../etc/passwd", "passwd"),
            ("a\\b\\c.txt", "c.txt"),
            ("..", "attachment"),
            ("", "attachment"),
            ("x\u{0}y", "xy"),
        ] {
            p.file_name = name.into();
            assert_eq!(p.safe_file_name(), safe);
        }
    }
}
