//! The attachment cipher (docs/E2EE.md §10.1): ChaCha20-Poly1305 (RFC 8439)
//! in the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár
//! ("Online Authenticated-Encryption and its Nonce-Reuse
//! Misuse-Resistance", 2015, §7), as `aead::stream::StreamBE32`, over
//! fixed [`CHUNK_LEN`]-byte plaintext chunks, and the SHA-256 digest of the
//! whole ciphertext.
//!
//! Why STREAM rather than Signal's AES-CBC + HMAC-SHA256 over the whole
//! file: every chunk carries its own tag, so a download is checked piece
//! by piece (a ranged read can be verified without the rest) and nothing
//! unauthenticated is ever handed to the app; the position and a
//! last-chunk flag in each nonce refuse reordered, dropped or cut chunks.
//!
//! Nonce of chunk `i` (12 bytes): 7 zero bytes, `i` as u32 big-endian, and
//! `01` for the last chunk, `00` otherwise. The key is fresh and random for
//! every attachment and never reused, so the zero prefix keeps nonces
//! unique. A plaintext of `n` bytes makes `max(1, ceil(n / CHUNK_LEN))`
//! chunks (an empty file is one empty last chunk); each sealed chunk is its
//! plaintext plus a [`TAG_LEN`]-byte tag.

use chacha20poly1305::aead::stream::{NewStream, StreamBE32, StreamPrimitive};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Plaintext bytes per chunk (64 KiB); the last chunk may be shorter.
pub const CHUNK_LEN: usize = 64 * 1024;
/// Poly1305 tag bytes after each chunk.
pub const TAG_LEN: usize = 16;
/// Bytes of one full sealed chunk.
pub const SEALED_CHUNK_LEN: usize = CHUNK_LEN + TAG_LEN;
/// Bytes of an attachment key.
pub const KEY_LEN: usize = 32;
/// Bytes of the ciphertext digest (SHA-256).
pub const DIGEST_LEN: usize = 32;
/// Largest plaintext this format can carry: 2^32 chunks (the STREAM
/// counter is 32 bits), 256 TiB; servers cap far lower.
pub const MAX_PLAINTEXT_LEN: u64 = (u32::MAX as u64 + 1) * CHUNK_LEN as u64;

/// Nonce prefix bytes (the 12-byte nonce less the 4-byte counter and flag).
const PREFIX_LEN: usize = 7;

/// A fresh random key for one attachment. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AttachmentKey(pub [u8; KEY_LEN]);

impl std::fmt::Debug for AttachmentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttachmentKey(..)")
    }
}

impl AttachmentKey {
    /// A new key from the operating system's random source.
    pub fn random() -> AttachmentKey {
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        AttachmentKey(key)
    }

    fn stream(&self) -> StreamBE32<ChaCha20Poly1305> {
        let aead = ChaCha20Poly1305::new(&self.0.into());
        StreamBE32::from_aead(aead, &[0u8; PREFIX_LEN].into())
    }
}

/// How many chunks a plaintext of `plaintext_len` bytes makes (at least one).
pub fn chunk_count(plaintext_len: u64) -> u64 {
    plaintext_len.div_ceil(CHUNK_LEN as u64).max(1)
}

/// Ciphertext bytes for a plaintext of `plaintext_len` bytes: the plaintext
/// plus one tag per chunk.
pub fn ciphertext_len(plaintext_len: u64) -> u64 {
    plaintext_len.saturating_add(chunk_count(plaintext_len).saturating_mul(TAG_LEN as u64))
}

/// Why an attachment could not be encrypted.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "the file is {0} bytes, more than an attachment can carry ({MAX_PLAINTEXT_LEN}); split it"
    )]
    TooLarge(u64),
    #[error("the file changed while it was encrypted: {read} bytes read where {expected} were expected; send it again")]
    LengthChanged { expected: u64, read: u64 },
    #[error("reading the file or writing its ciphertext failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Why an attachment's ciphertext was refused. Nothing of a refused chunk
/// is ever handed out.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Chunk `index` (from 0) failed authentication: it was altered,
    /// moved, cut, or is not the last chunk where one was expected.
    #[error("chunk {index} of the attachment failed authentication (tampered with, reordered or cut); the download is refused, fetch it again or ask the sender to resend")]
    ChunkRefused { index: u64 },
    /// The ciphertext is not the length its pointer announced.
    #[error("the attachment's ciphertext is {got} bytes where its pointer says {expected}; it was cut or padded, the download is refused")]
    WrongLength { expected: u64, got: u64 },
    /// Every chunk was authentic but the whole ciphertext's SHA-256 is not
    /// the pointer's digest (a different blob under the same id).
    #[error("the attachment's digest does not match its pointer; the download is refused, ask the sender to resend")]
    DigestMismatch,
    #[error(
        "the attachment is {0} bytes, more than this format can carry; the pointer is damaged"
    )]
    TooLarge(u64),
    #[error("writing the decrypted attachment failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Seals chunk `index` (`last`: whether it is the final chunk).
fn seal_chunk(
    stream: &StreamBE32<ChaCha20Poly1305>,
    index: u32,
    last: bool,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    stream
        .encrypt(index, last, plaintext)
        // The ChaCha20-Poly1305 encryption itself fails only past 2^38 bytes per chunk.
        .map_err(|_| SealError::TooLarge(plaintext.len() as u64))
}

/// Opens chunk `index` of an attachment with `key`; `last` says whether it
/// is the final chunk. For ranged downloads: chunk `i` starts at ciphertext
/// offset `i * SEALED_CHUNK_LEN`.
///
/// # Errors
/// [`OpenError::ChunkRefused`] naming `index` when the chunk is not
/// authentic at that position with that flag.
pub fn open_chunk(
    key: &AttachmentKey,
    index: u64,
    last: bool,
    sealed: &[u8],
) -> Result<Vec<u8>, OpenError> {
    let position = u32::try_from(index).map_err(|_| OpenError::ChunkRefused { index })?;
    key.stream()
        .decrypt(position, last, sealed)
        .map_err(|_| OpenError::ChunkRefused { index })
}

/// What [`seal`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// SHA-256 of the whole ciphertext.
    pub digest: [u8; DIGEST_LEN],
    /// Ciphertext bytes written ([`ciphertext_len`] of the plaintext length).
    pub ciphertext_len: u64,
}

/// Encrypts exactly `plaintext_len` bytes from `src` into `dst` with `key`,
/// one chunk in memory at a time.
///
/// # Errors
/// [`SealError::TooLarge`] past [`MAX_PLAINTEXT_LEN`],
/// [`SealError::LengthChanged`] when `src` holds more or fewer bytes,
/// [`SealError::Io`] when reading or writing fails.
pub fn seal(
    key: &AttachmentKey,
    plaintext_len: u64,
    mut src: impl std::io::Read,
    mut dst: impl std::io::Write,
) -> Result<Sealed, SealError> {
    if plaintext_len > MAX_PLAINTEXT_LEN {
        return Err(SealError::TooLarge(plaintext_len));
    }
    let stream = key.stream();
    let chunks = chunk_count(plaintext_len);
    let mut digest = Sha256::new();
    let mut buf = vec![0u8; CHUNK_LEN];
    let mut read = 0u64;
    let mut written = 0u64;
    for index in 0..chunks {
        let want = (plaintext_len - read).min(CHUNK_LEN as u64) as usize;
        let piece = buf.get_mut(..want).unwrap_or_default();
        src.read_exact(piece).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => SealError::LengthChanged {
                expected: plaintext_len,
                read,
            },
            _ => SealError::Io(e),
        })?;
        read += want as u64;
        let last = index + 1 == chunks;
        let sealed = seal_chunk(&stream, index as u32, last, piece)?;
        digest.update(&sealed);
        dst.write_all(&sealed)?;
        written += sealed.len() as u64;
    }
    if src.read(&mut [0u8; 1])? != 0 {
        return Err(SealError::LengthChanged {
            expected: plaintext_len,
            read: plaintext_len + 1,
        });
    }
    dst.flush()?;
    Ok(Sealed {
        digest: digest.finalize().into(),
        ciphertext_len: written,
    })
}

/// Decrypts a ciphertext fed in pieces of any size, checking each chunk as
/// it completes and the length and digest at the end; plaintext leaves
/// only chunk by chunk, after its tag was checked.
pub struct Opener {
    stream: StreamBE32<ChaCha20Poly1305>,
    expected_len: u64,
    chunks: u64,
    next_chunk: u64,
    received: u64,
    pending: Vec<u8>,
    digest: Sha256,
    expected_digest: [u8; DIGEST_LEN],
}

impl Opener {
    /// An opener for the attachment of `plaintext_len` bytes sealed with
    /// `key` whose ciphertext hashes to `digest`.
    ///
    /// # Errors
    /// [`OpenError::TooLarge`] past [`MAX_PLAINTEXT_LEN`].
    pub fn new(
        key: &AttachmentKey,
        plaintext_len: u64,
        digest: [u8; DIGEST_LEN],
    ) -> Result<Opener, OpenError> {
        if plaintext_len > MAX_PLAINTEXT_LEN {
            return Err(OpenError::TooLarge(plaintext_len));
        }
        Ok(Opener {
            stream: key.stream(),
            expected_len: ciphertext_len(plaintext_len),
            chunks: chunk_count(plaintext_len),
            next_chunk: 0,
            received: 0,
            pending: Vec::with_capacity(SEALED_CHUNK_LEN),
            digest: Sha256::new(),
            expected_digest: digest,
        })
    }

    /// Takes the next ciphertext bytes; writes the plaintext of every chunk
    /// they complete to `out`.
    ///
    /// # Errors
    /// [`OpenError::WrongLength`] when more bytes arrive than announced,
    /// [`OpenError::ChunkRefused`] for a chunk that is not authentic,
    /// [`OpenError::Io`] when writing fails.
    pub fn push(
        &mut self,
        mut bytes: &[u8],
        out: &mut impl std::io::Write,
    ) -> Result<(), OpenError> {
        let got = self.received.saturating_add(bytes.len() as u64);
        if got > self.expected_len {
            return Err(OpenError::WrongLength {
                expected: self.expected_len,
                got,
            });
        }
        self.received = got;
        self.digest.update(bytes);
        while !bytes.is_empty() {
            let room = self.chunk_len().saturating_sub(self.pending.len());
            if room == 0 {
                // Unreachable after the length check; refuse rather than spin.
                return Err(OpenError::WrongLength {
                    expected: self.expected_len,
                    got,
                });
            }
            let (take, rest) = bytes.split_at(room.min(bytes.len()));
            self.pending.extend_from_slice(take);
            bytes = rest;
            if self.pending.len() == self.chunk_len() {
                self.open_pending(out)?;
            }
        }
        Ok(())
    }

    /// Ends the ciphertext: checks its length and digest.
    ///
    /// # Errors
    /// [`OpenError::WrongLength`] when bytes are missing,
    /// [`OpenError::DigestMismatch`] when the digest differs.
    pub fn finish(self) -> Result<(), OpenError> {
        if self.received != self.expected_len || self.next_chunk != self.chunks {
            return Err(OpenError::WrongLength {
                expected: self.expected_len,
                got: self.received,
            });
        }
        let digest: [u8; DIGEST_LEN] = self.digest.finalize().into();
        if digest != self.expected_digest {
            return Err(OpenError::DigestMismatch);
        }
        Ok(())
    }

    /// Sealed bytes of the chunk being collected.
    fn chunk_len(&self) -> usize {
        let start = self.next_chunk.saturating_mul(SEALED_CHUNK_LEN as u64);
        (self.expected_len.saturating_sub(start)).min(SEALED_CHUNK_LEN as u64) as usize
    }

    fn open_pending(&mut self, out: &mut impl std::io::Write) -> Result<(), OpenError> {
        let index = self.next_chunk;
        let last = index + 1 == self.chunks;
        let position = u32::try_from(index).map_err(|_| OpenError::ChunkRefused { index })?;
        self.stream
            .decrypt_in_place(position, last, &[], &mut self.pending)
            .map_err(|_| OpenError::ChunkRefused { index })?;
        out.write_all(&self.pending)?;
        self.pending.clear();
        self.next_chunk += 1;
        Ok(())
    }
}

#[cfg(test)]
#[path = "cipher_tests.rs"]
mod tests;
