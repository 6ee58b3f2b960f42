//! Encrypted blobs (attachments; issue 12, docs/PROTOCOL.md §4.12) behind
//! [`BlobStore`]: opaque ciphertext bytes under a 16-byte id the uploader
//! chose, written once by an upload that may be resumed, then read by
//! range. The server never interprets a blob's bytes.
//!
//! Backends: [`fs::FsBlobStore`] (the default: files in the data
//! directory), `s3::S3BlobStore` (feature `s3`: an S3-compatible bucket,
//! for clusters) and [`memory::MemBlobStore`] (tests). All pass the blob
//! conformance checks (`conformance::blob`, feature `conformance`).
//!
//! # Calls block
//! Every method may do file or network I/O and blocks the calling thread:
//! the server calls them on tokio's blocking pool (`spawn_blocking`),
//! never on a shard's thread.
//!
//! # Uploads
//! An upload belongs to one owner (the uploading user): each owner has its
//! own partial upload per blob id, so nobody can append to or complete
//! another user's upload, and two users racing for one id each write their
//! own partial; the first to complete wins, the other gets
//! [`BlobError::AlreadyExists`]. A partial upload survives a lost
//! connection (its writer dropped): [`BlobStore::status`] says how many
//! bytes it holds and [`BlobStore::writer`] continues it from there.
//! [`BlobWriter::complete`] makes the bytes durable (fsync), then visible
//! under the id atomically (rename), then durable as a name (directory
//! fsync) before it returns, so an acknowledged blob survives a crash and
//! a reader never sees a half-written one.
//!
//! # Lifecycle
//! A complete blob remembers its owner (the user whose upload completed
//! it) and when it completed: [`BlobStore::usage`] sums an owner's bytes
//! (complete and partial) for the upload quota, and
//! [`BlobStore::sweep_expired`] deletes blobs past the message retention.
//!
//! # Failure modes
//! - [`BlobError::NotFound`]: no complete blob under the id (a read), no
//!   partial upload (completing), or nothing to delete.
//! - [`BlobError::OffsetMismatch`]: a writer asked for at an offset other
//!   than the bytes the partial holds (the client must ask
//!   [`BlobStore::status`] and continue from there).
//! - [`BlobError::AlreadyExists`]: the id is taken by a complete blob.
//! - [`BlobError::Busy`]: a writer of the same owner's upload is still
//!   open (the stream of a lost connection not yet wound down); retry in
//!   a moment. Two writers never append to one partial at once.
//! - [`BlobError::Incomplete`]: completing with fewer or more bytes than
//!   announced; the partial stays as it is.
//! - [`BlobError::Io`]: the operating system failed (disk full, EIO). The
//!   partial upload keeps what was written before; nothing complete is
//!   changed. Retryable once the operator freed space.

pub mod fs;
pub mod memory;
#[cfg(feature = "s3")]
pub mod s3;

/// Bytes of a blob id.
pub const BLOB_ID_LEN: usize = 16;

/// A blob's id: 16 random bytes chosen by the uploader.
pub type BlobId = [u8; BLOB_ID_LEN];

/// What the store holds under an id for one owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobStatus {
    /// Nothing: no complete blob and no partial upload of this owner.
    Absent,
    /// The owner's unfinished upload holds this many bytes.
    Partial(u64),
    /// A complete blob of this many bytes (uploaded by anyone).
    Complete(u64),
}

/// Why a blob operation failed. See the module docs for when each happens.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("no such blob or upload")]
    NotFound,
    #[error("the upload holds {have} bytes, not {asked}; continue from {have}")]
    OffsetMismatch { have: u64, asked: u64 },
    #[error("a blob with this id already exists; pick a new random id")]
    AlreadyExists,
    #[error("another upload of this blob is still open; retry in a moment")]
    Busy,
    #[error("the upload holds {have} bytes where {total} were announced")]
    Incomplete { have: u64, total: u64 },
    #[error("blob storage failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Where blobs live. See the module docs.
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// What `owner` finds under `id`: a complete blob first, else the
    /// owner's partial upload, else nothing.
    fn status(&self, owner: &str, id: &BlobId) -> Result<BlobStatus, BlobError>;

    /// A writer appending to `owner`'s upload of `id` from byte `offset`,
    /// which must be what the partial holds (0 starts a new one).
    ///
    /// # Errors
    /// [`BlobError::AlreadyExists`] when `id` is complete,
    /// [`BlobError::Busy`] while another writer of this upload is open,
    /// [`BlobError::OffsetMismatch`] when `offset` is not the partial's length.
    fn writer(
        &self,
        owner: &str,
        id: &BlobId,
        offset: u64,
    ) -> Result<Box<dyn BlobWriter>, BlobError>;

    /// A reader of the complete blob `id`.
    ///
    /// # Errors
    /// [`BlobError::NotFound`] when no complete blob has the id.
    fn reader(&self, id: &BlobId) -> Result<Box<dyn BlobReader>, BlobError>;

    /// Deletes the complete blob `id` (readers already open may finish).
    ///
    /// # Errors
    /// [`BlobError::NotFound`] when there is none.
    fn delete(&self, id: &BlobId) -> Result<(), BlobError>;

    /// Forgets `owner`'s partial upload of `id`, if any.
    fn abandon(&self, owner: &str, id: &BlobId) -> Result<(), BlobError>;

    /// Deletes every partial upload last written before `before` and
    /// without an open writer (uploads abandoned half way; the server
    /// sweeps those idle for 24 h). Returns how many it deleted.
    fn sweep_abandoned(&self, before: std::time::SystemTime) -> Result<u64, BlobError>;

    /// Bytes `owner` holds: its complete blobs (those its upload completed)
    /// plus its partial uploads. The server's per-account upload quota
    /// counts this; it drops as blobs are deleted or swept.
    fn usage(&self, owner: &str) -> Result<u64, BlobError>;

    /// Deletes every complete blob whose upload completed before `before`
    /// (the server passes its clock minus the message retention, so a blob
    /// lives as long as the messages that point to it). Readers already
    /// open may finish. Returns how many it deleted.
    fn sweep_expired(&self, before: std::time::SystemTime) -> Result<u64, BlobError>;
}

/// Appends to one partial upload. Dropping it without
/// [`BlobWriter::complete`] keeps the partial for a later resume; that drop
/// may block on I/O (the filesystem backend syncs the file, the S3 one
/// writes its buffered tail), so drop writers where blocking is allowed.
pub trait BlobWriter: Send {
    /// Appends `bytes`.
    fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError>;

    /// Bytes the partial holds (the offset the next write lands at).
    fn len(&self) -> u64;

    /// Whether nothing was written yet.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes the upload the blob: durable, then visible atomically.
    ///
    /// # Errors
    /// [`BlobError::Incomplete`] when it holds other than `total` bytes,
    /// [`BlobError::AlreadyExists`] when another upload completed the id.
    fn complete(self: Box<Self>, total: u64) -> Result<(), BlobError>;
}

/// Reads ranges of one complete blob.
pub trait BlobReader: Send {
    /// The blob's length in bytes.
    fn len(&self) -> u64;

    /// Whether the blob is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads up to `buf.len()` bytes from `offset`; 0 at or past the end.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, BlobError>;
}

/// Lowercase hex of `bytes` (file names of the filesystem backend).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            out.push(char::from(
                DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0'),
            ));
        }
    }
    out
}
