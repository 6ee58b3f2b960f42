//! Object names and the two small records of the S3 blob backend: the
//! manifest of a complete blob and the record of a partial upload.
//!
//! Under the configured prefix:
//! - `blobs/<hex id>`: a complete blob's manifest, `tern-blob-1 <hex
//!   owner> <nonce> <length>\n`, created only if absent (`If-None-Match:
//!   *`), so exactly one upload completes an id;
//! - `data/<hex owner>/<hex id>/<nonce>`: that blob's bytes, one object
//!   (the nonce is new per upload, so an id uploaded again after a delete
//!   never meets the old object);
//! - `partial/<hex owner>/<hex id>`: an unfinished upload, a header line of
//!   [`HEAD_LEN`] bytes (`tern-partial-1 <length> <parts> <nonce> <upload
//!   id or ->`, space-padded), one line per uploaded part (its ETag), then
//!   the tail: the bytes after the last part, fewer than [`PART_LEN`].
//!   The header alone (a ranged read) answers the upload's length.

use bytes::Bytes;
use object_store::multipart::PartId;
use object_store::path::Path;

use crate::blob::{hex, BlobError, BlobId, BLOB_ID_LEN};

/// Bytes of each multipart part but the last: S3's minimum part size (5 MiB,
/// "Amazon S3 multipart upload limits"), and the most an open writer buffers.
pub const PART_LEN: usize = 5 * 1024 * 1024;

/// Most parts one upload may have (S3's limit): blobs up to
/// `MAX_PARTS * PART_LEN` (48.8 GiB; the server's `max_attachment_bytes` is at
/// most 16 GiB).
pub const MAX_PARTS: usize = 10_000;

/// Bytes of the header line of a partial upload's record, newline included.
pub const HEAD_LEN: usize = 1024;

/// Longest owner handle, in bytes (as in the filesystem backend).
pub const MAX_OWNER_BYTES: usize = 100;

const PARTIAL_TAG: &str = "tern-partial-1";
const BLOB_TAG: &str = "tern-blob-1";

/// The object names of one owner's upload of one id.
#[derive(Clone, Debug)]
pub struct Names {
    pub owner_hex: String,
    pub id_hex: String,
    pub partial: Path,
    root: Path,
}

impl Names {
    /// The names under `root` of `owner`'s upload of `id`.
    pub fn new(root: &Path, owner: &str, id: &BlobId) -> Result<Names, BlobError> {
        if owner.len() > MAX_OWNER_BYTES {
            return Err(invalid("owner handle too long for a blob object name"));
        }
        let owner_hex = hex(owner.as_bytes());
        let id_hex = hex(id);
        Ok(Names {
            partial: root
                .clone()
                .join("partial")
                .join(owner_hex.as_str())
                .join(id_hex.as_str()),
            root: root.clone(),
            owner_hex,
            id_hex,
        })
    }

    /// The data object of the upload with `nonce`.
    pub fn data(&self, nonce: &str) -> Path {
        data(&self.root, &self.owner_hex, &self.id_hex, nonce)
    }
}

/// The manifest of the complete blob `id`.
pub fn manifest(root: &Path, id: &BlobId) -> Path {
    root.clone().join("blobs").join(hex(id).as_str())
}

/// A data object's name.
pub fn data(root: &Path, owner_hex: &str, id_hex: &str, nonce: &str) -> Path {
    root.clone()
        .join("data")
        .join(owner_hex)
        .join(id_hex)
        .join(nonce)
}

/// The path parts of `location` below `root/<dir>` (`None`: not below it).
pub fn below(root: &Path, dir: &str, location: &Path) -> Option<Vec<String>> {
    let prefix = root.clone().join(dir);
    let parts = location.prefix_match(&prefix)?;
    Some(parts.map(|p| p.as_ref().to_owned()).collect())
}

/// The id whose lowercase hex is `text`.
pub fn unhex_id(text: &str) -> Option<BlobId> {
    let bytes = text.as_bytes();
    if bytes.len() != BLOB_ID_LEN * 2 {
        return None;
    }
    let mut id = [0u8; BLOB_ID_LEN];
    for (out, pair) in id.iter_mut().zip(bytes.chunks_exact(2)) {
        let s = std::str::from_utf8(pair).ok()?;
        *out = u8::from_str_radix(s, 16).ok()?;
    }
    Some(id)
}

/// A fresh nonce for a data object's name: the clock in nanoseconds and a
/// process-wide counter, unique among the uploads of one owner and id.
pub fn nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{nanos:x}-{:x}-{n:x}", std::process::id())
}

/// A complete blob's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub owner_hex: String,
    pub nonce: String,
    pub len: u64,
}

impl Manifest {
    pub fn encode(&self) -> Bytes {
        Bytes::from(format!(
            "{BLOB_TAG} {} {} {}\n",
            self.owner_hex, self.nonce, self.len
        ))
    }

    pub fn decode(bytes: &[u8]) -> Result<Manifest, BlobError> {
        let text = std::str::from_utf8(bytes).map_err(|_| corrupt("blob manifest"))?;
        let mut fields = text.split_ascii_whitespace();
        let (Some(BLOB_TAG), Some(owner), Some(nonce), Some(len), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(corrupt("blob manifest"));
        };
        Ok(Manifest {
            owner_hex: owner.to_owned(),
            nonce: nonce.to_owned(),
            len: len.parse().map_err(|_| corrupt("blob manifest"))?,
        })
    }
}

/// The header of a partial upload's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialHead {
    /// Bytes the upload holds (its parts and its tail).
    pub len: u64,
    pub parts: usize,
    pub nonce: String,
    /// The S3 multipart upload, once the first part went out.
    pub upload: Option<String>,
}

impl PartialHead {
    pub fn decode(bytes: &[u8]) -> Result<PartialHead, BlobError> {
        let line = bytes
            .get(..HEAD_LEN)
            .ok_or_else(|| corrupt("partial upload"))?;
        let text = std::str::from_utf8(line).map_err(|_| corrupt("partial upload"))?;
        let mut fields = text.split_ascii_whitespace();
        let (Some(PARTIAL_TAG), Some(len), Some(parts), Some(nonce), Some(upload), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(corrupt("partial upload"));
        };
        Ok(PartialHead {
            len: len.parse().map_err(|_| corrupt("partial upload"))?,
            parts: parts.parse().map_err(|_| corrupt("partial upload"))?,
            nonce: nonce.to_owned(),
            upload: (upload != "-").then(|| upload.to_owned()),
        })
    }
}

/// A partial upload's whole record.
#[derive(Clone, Debug, Default)]
pub struct PartialRecord {
    pub nonce: String,
    pub upload: Option<String>,
    pub parts: Vec<PartId>,
}

impl PartialRecord {
    /// The record with `tail` after its parts, as the object's chunks (the
    /// tail is not copied).
    pub fn encode(&self, tail: Bytes) -> Result<Vec<Bytes>, BlobError> {
        let len = (self.parts.len() as u64)
            .saturating_mul(PART_LEN as u64)
            .saturating_add(tail.len() as u64);
        let upload = self.upload.as_deref().unwrap_or("-");
        let mut head = format!(
            "{PARTIAL_TAG} {len} {} {} {upload}",
            self.parts.len(),
            self.nonce
        );
        if head.len() >= HEAD_LEN || head.contains('\n') {
            return Err(invalid("the S3 multipart upload id is too long"));
        }
        head.extend(std::iter::repeat_n(' ', HEAD_LEN - 1 - head.len()));
        head.push('\n');
        for part in &self.parts {
            if part.content_id.contains(['\n', ' ']) || part.content_id.is_empty() {
                return Err(invalid("S3 returned a part ETag tern cannot record"));
            }
            head.push_str(&part.content_id);
            head.push('\n');
        }
        Ok(vec![Bytes::from(head), tail])
    }

    /// The record and its tail.
    pub fn decode(bytes: Bytes) -> Result<(PartialRecord, Bytes), BlobError> {
        let head = PartialHead::decode(&bytes)?;
        let mut at = HEAD_LEN;
        let mut parts = Vec::with_capacity(head.parts.min(MAX_PARTS));
        for _ in 0..head.parts {
            let rest = bytes.get(at..).ok_or_else(|| corrupt("partial upload"))?;
            let end = rest
                .iter()
                .position(|b| *b == b'\n')
                .ok_or_else(|| corrupt("partial upload"))?;
            let line = rest.get(..end).ok_or_else(|| corrupt("partial upload"))?;
            let content_id =
                String::from_utf8(line.to_vec()).map_err(|_| corrupt("partial upload"))?;
            parts.push(PartId { content_id });
            at += end + 1;
        }
        let tail = bytes.slice(at.min(bytes.len())..);
        let expected = (head.parts as u64)
            .saturating_mul(PART_LEN as u64)
            .saturating_add(tail.len() as u64);
        if expected != head.len || tail.len() >= PART_LEN {
            return Err(corrupt("partial upload"));
        }
        let record = PartialRecord {
            nonce: head.nonce,
            upload: head.upload,
            parts,
        };
        Ok((record, tail))
    }
}

fn invalid(what: &str) -> BlobError {
    BlobError::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, what))
}

fn corrupt(what: &str) -> BlobError {
    BlobError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("the S3 object of a {what} is not tern's (corrupt, or another tool wrote it)"),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn partial_record_round_trips() {
        let record = PartialRecord {
            nonce: nonce(),
            upload: Some("upload-1".into()),
            parts: vec![PartId {
                content_id: "\"etag\"".into(),
            }],
        };
        let chunks = record.encode(Bytes::from_static(b"tail")).unwrap();
        let whole: Vec<u8> = chunks.concat();
        let head = PartialHead::decode(&whole).unwrap();
        assert_eq!(head.len, PART_LEN as u64 + 4);
        assert_eq!(head.upload.as_deref(), Some("upload-1"));
        let (back, tail) = PartialRecord::decode(Bytes::from(whole)).unwrap();
        assert_eq!(back.parts.len(), 1);
        assert_eq!(back.parts[0].content_id, "\"etag\"");
        assert_eq!(&tail[..], b"tail");
        let m = Manifest {
            owner_hex: "61".into(),
            nonce: "n".into(),
            len: 9,
        };
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
        assert_eq!(unhex_id(&hex(&[0xab; 16])), Some([0xab; 16]));
    }
}
