//! Length-prefixed framing with no I/O: bytes go in with
//! [`FrameDecoder::push`], whole frames come out of [`FrameDecoder::next_frame`].
//! The length is checked against the cap *before* any buffer grows for it, and
//! every frame is run through the FlatBuffers verifier under [`Limits`].

use bytes::{Buf, Bytes, BytesMut};
use flatbuffers::VerifierOptions;

use super::fb;

/// Default cap on one frame's length (the FlatBuffer, excluding the prefix).
pub const DEFAULT_MAX_FRAME_LEN: usize = 256 * 1024;
/// Size of the little-endian length prefix.
pub const LEN_PREFIX: usize = 4;

/// Why a frame could not be accepted. Each maps to a wire [`fb::ErrorCode`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit; split the payload or send media on its own stream")]
    TooLarge { len: usize, max: usize },
    #[error("zero-length frame; every frame must hold a Frame table")]
    Empty,
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("unsupported frame body tag {0}; upgrade the peer or use protocol tern/1 bodies only")]
    UnsupportedBody(u8),
}

impl FrameError {
    /// The wire error code that reports this failure to the peer.
    pub fn code(&self) -> fb::ErrorCode {
        match self {
            FrameError::TooLarge { .. } => fb::ErrorCode::FrameTooLarge,
            FrameError::Empty | FrameError::Malformed(_) => fb::ErrorCode::Malformed,
            FrameError::UnsupportedBody(_) => fb::ErrorCode::UnsupportedBody,
        }
    }

    /// Whether the byte stream is still in sync after this error (the frame
    /// was skipped whole) so the connection can go on.
    pub fn is_recoverable(&self) -> bool {
        !matches!(self, FrameError::TooLarge { .. } | FrameError::Empty)
    }
}

/// Limits applied to every inbound frame before it is used.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_frame_len: usize,
    pub max_depth: usize,
    pub max_tables: usize,
}

impl Limits {
    /// What a server accepts from clients: small frames, few tables.
    pub fn server_inbound() -> Self {
        Limits {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_depth: 8,
            max_tables: 1_100,
        }
    }

    /// What a client accepts from a server: history pages hold many messages.
    pub fn client_inbound() -> Self {
        Limits {
            max_frame_len: 4 * 1024 * 1024,
            max_depth: 8,
            max_tables: 8_192,
        }
    }

    /// Runs the FlatBuffers verifier over one frame.
    pub fn verify<'a>(&self, buf: &'a [u8]) -> Result<fb::Frame<'a>, FrameError> {
        if buf.is_empty() {
            return Err(FrameError::Empty);
        }
        if buf.len() > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len: buf.len(),
                max: self.max_frame_len,
            });
        }
        let opts = VerifierOptions {
            max_depth: self.max_depth,
            max_tables: self.max_tables,
            max_apparent_size: self.max_frame_len,
            ignore_missing_null_terminator: false,
        };
        fb::root_as_frame_with_opts(&opts, buf).map_err(|e| FrameError::Malformed(e.to_string()))
    }
}

/// Splits a byte stream into frames. Never allocates more than one frame cap
/// plus one read chunk, and holds no buffer at all between frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: BytesMut,
    max_frame_len: usize,
}

impl FrameDecoder {
    pub fn new(max_frame_len: usize) -> Self {
        FrameDecoder {
            buf: BytesMut::new(),
            max_frame_len,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame (without its prefix), `None` if more bytes are
    /// needed, or an error for a length that can never be accepted. After
    /// an error the stream is out of sync and must be closed.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let Some(len) = self.peek_len() else {
            return Ok(None);
        };
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame_len {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        if self.buf.len() < LEN_PREFIX + len {
            // No up-front reserve: memory follows the bytes that actually
            // arrived, so announcing a large frame and trickling costs the
            // peer as much as it costs us.
            return Ok(None);
        }
        self.buf.advance(LEN_PREFIX);
        let frame = self.buf.split_to(len).freeze();
        if self.buf.is_empty() {
            // Idle connections keep no buffer (memory per connection matters at 100k).
            self.buf = BytesMut::new();
        }
        Ok(Some(frame))
    }

    /// Whether the decoder holds part of a frame (a truncated frame if the
    /// stream ends now).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    fn peek_len(&self) -> Option<usize> {
        let prefix: [u8; LEN_PREFIX] = self.buf.get(..LEN_PREFIX)?.try_into().ok()?;
        Some(u32::from_le_bytes(prefix) as usize)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::frame::{Body, Frame};

    #[test]
    fn splits_frames_across_arbitrary_chunks() {
        let a = Frame::new(1, Body::Sync { all: true }).encode();
        let b = Frame::new(2, Body::Done).encode();
        let wire: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        for chunk in 1..wire.len() {
            let mut d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                d.push(piece);
                while let Some(f) = d.next_frame().expect("valid") {
                    got.push(Frame::decode(&f, &Limits::server_inbound()).expect("decodes"));
                }
            }
            assert_eq!(got.len(), 2, "chunk size {chunk}");
            assert!(!d.has_partial());
        }
    }

    #[test]
    fn oversize_length_is_refused_before_buffering() {
        let mut d = FrameDecoder::new(1024);
        d.push(&(1025u32).to_le_bytes());
        assert_eq!(
            d.next_frame(),
            Err(FrameError::TooLarge {
                len: 1025,
                max: 1024
            })
        );
        assert!(d.buf.capacity() < 1025 + 4096);
    }

    #[test]
    fn zero_length_is_refused() {
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn truncated_frame_stays_partial() {
        let wire = Frame::new(1, Body::Done).encode();
        let mut d = FrameDecoder::new(1024);
        d.push(&wire[..wire.len() - 1]);
        assert_eq!(d.next_frame(), Ok(None));
        assert!(d.has_partial());
    }

    #[test]
    fn garbage_fails_verification_without_panicking() {
        let mut seed = 0x1234_5678_u64;
        for len in 1..400 {
            let buf: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = Frame::decode(&buf, &Limits::server_inbound());
        }
    }

    #[test]
    fn mutated_valid_frames_never_panic() {
        let wire = Frame::new(
            3,
            Body::Send {
                conversation_id: 1,
                client_message_id: 2,
                expires_in_secs: 0,
                flags: 0,
                payload: Bytes::from_static(b"hello"),
            },
        )
        .encode();
        let body = &wire[LEN_PREFIX..];
        for i in 0..body.len() {
            for bit in 0..8 {
                let mut m = body.to_vec();
                if let Some(byte) = m.get_mut(i) {
                    *byte ^= 1 << bit;
                }
                let _ = Frame::decode(&m, &Limits::server_inbound());
            }
        }
    }
}
