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
            // The verifier's running total of the ranges it checked, which
            // counts some bytes twice (vtables shared, union and vector
            // headers): twice the frame bounds the work without refusing a
            // frame at the cap.
            max_apparent_size: self.max_frame_len.saturating_mul(2),
            ignore_missing_null_terminator: false,
        };
        fb::root_as_frame_with_opts(&opts, buf).map_err(|e| FrameError::Malformed(e.to_string()))
    }
}

/// Room a reader makes, while a frame is incomplete, for the next read at
/// least (see [`FrameDecoder::read_room`]).
pub const READ_SLACK: usize = 4 * 1024;

/// Splits a byte stream into frames. Never allocates more than one frame cap
/// plus one read chunk, and holds no buffer at all between frames.
///
/// It either owns its buffer ([`FrameDecoder::push`] then
/// [`FrameDecoder::next_frame`]) or works on one an I/O framework owns
/// ([`FrameDecoder::split`] and [`FrameDecoder::read_room`]: tokio-util's
/// `FramedRead` hands its read buffer to a `Decoder`, and the server's and
/// client's adapters call these with it), with the same limits either way.
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
        split_frame(&mut self.buf, self.max_frame_len)
    }

    /// Whether the decoder holds part of a frame (a truncated frame if the
    /// stream ends now).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// [`FrameDecoder::next_frame`] over a buffer the caller owns: splits
    /// the next whole frame off the front of `buf`, and leaves `buf` without
    /// an allocation when that empties it.
    pub fn split(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        split_frame(buf, self.max_frame_len)
    }

    /// How many more bytes a reader should make room for in `buf` before
    /// its next read: none between frames (an idle connection keeps no
    /// buffer), else the larger of what is buffered and [`READ_SLACK`].
    /// Never sized by the announced length, so memory follows the bytes
    /// that actually arrived (at most about double, plus the slack) and
    /// announcing a large frame and trickling costs the peer as much as it
    /// costs us.
    pub fn read_room(&self, buf: &BytesMut) -> usize {
        if buf.is_empty() {
            0
        } else {
            buf.len().max(READ_SLACK)
        }
    }
}

fn split_frame(buf: &mut BytesMut, max_frame_len: usize) -> Result<Option<Bytes>, FrameError> {
    let Some(len) = peek_len(buf) else {
        return Ok(None);
    };
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max_frame_len {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame_len,
        });
    }
    if buf.len() < LEN_PREFIX + len {
        // No up-front reserve: memory follows the bytes that actually
        // arrived, so announcing a large frame and trickling costs the
        // peer as much as it costs us.
        return Ok(None);
    }
    buf.advance(LEN_PREFIX);
    let frame = buf.split_to(len).freeze();
    if buf.is_empty() {
        // Idle connections keep no buffer (memory per connection matters at 100k).
        *buf = BytesMut::new();
    }
    Ok(Some(frame))
}

/// The `request_id` of a frame that may fail verification, read with
/// bounds checks only: the root offset, the root table's vtable and its
/// first field (`Frame.request_id`, vtable slot 4). `None` when any of
/// these is out of bounds; `Some(0)` when the field is absent (its default).
/// A server answers a refused frame with this id, so the client learns
/// which request failed (docs/PROTOCOL.md §2.1).
pub fn peek_request_id(buf: &[u8]) -> Option<u64> {
    let table = read_u32(buf, 0)? as usize;
    let soffset = i64::from(read_u32(buf, table)? as i32);
    let vtable = usize::try_from(i64::try_from(table).ok()?.checked_sub(soffset)?).ok()?;
    let vtable_len = usize::from(read_u16(buf, vtable)?);
    let slot = usize::from(fb::Frame::VT_REQUEST_ID);
    if vtable_len < slot + 2 {
        return Some(0);
    }
    let field = usize::from(read_u16(buf, vtable.checked_add(slot)?)?);
    if field == 0 {
        return Some(0);
    }
    let at = table.checked_add(field)?;
    let bytes: [u8; 8] = buf.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// The body type of a frame, read with bounds checks only (like
/// [`peek_request_id`]): `Frame.body_type` (vtable slot 6), `NONE` when
/// absent, `None` when out of bounds. Servers count frames by it without
/// decoding them (the metrics of docs/OPERATING.md).
pub fn peek_body_type(buf: &[u8]) -> Option<fb::Body> {
    let table = read_u32(buf, 0)? as usize;
    match field_at(buf, table, fb::Frame::VT_BODY_TYPE)? {
        None => Some(fb::Body::NONE),
        Some(at) => buf.get(at).map(|b| fb::Body(*b)),
    }
}

/// The `code` of an Error frame's body, read with bounds checks only;
/// `None` when out of bounds or the body is absent. Call it only on a frame
/// whose [`peek_body_type`] is `Error`.
pub fn peek_error_code(buf: &[u8]) -> Option<fb::ErrorCode> {
    let table = read_u32(buf, 0)? as usize;
    let body_ref = field_at(buf, table, fb::Frame::VT_BODY)??;
    let body = body_ref.checked_add(read_u32(buf, body_ref)? as usize)?;
    match field_at(buf, body, fb::Error::VT_CODE)? {
        None => Some(fb::ErrorCode(0)),
        Some(at) => read_u16(buf, at).map(fb::ErrorCode),
    }
}

/// Where field `slot` of the table at `table` lies: `Some(None)` when the
/// field is absent (its default), `None` when out of bounds.
fn field_at(buf: &[u8], table: usize, slot: u16) -> Option<Option<usize>> {
    let soffset = i64::from(read_u32(buf, table)? as i32);
    let vtable = usize::try_from(i64::try_from(table).ok()?.checked_sub(soffset)?).ok()?;
    let vtable_len = usize::from(read_u16(buf, vtable)?);
    let slot = usize::from(slot);
    if vtable_len < slot + 2 {
        return Some(None);
    }
    let field = usize::from(read_u16(buf, vtable.checked_add(slot)?)?);
    if field == 0 {
        return Some(None);
    }
    table.checked_add(field).map(Some)
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

fn read_u16(buf: &[u8], at: usize) -> Option<u16> {
    let bytes: [u8; 2] = buf.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(u16::from_le_bytes(bytes))
}

fn peek_len(buf: &BytesMut) -> Option<usize> {
    let prefix: [u8; LEN_PREFIX] = buf.get(..LEN_PREFIX)?.try_into().ok()?;
    Some(u32::from_le_bytes(prefix) as usize)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn request_id_is_read_from_frames_that_fail_verification() {
        use crate::body::messaging::Ack;
        let encoded = crate::Frame::new(
            0x0102_0304_0506_0708,
            Ack {
                conversation_id: 9,
                seq: 1,
            },
        )
        .encode();
        let frame = &encoded[LEN_PREFIX..];
        assert_eq!(peek_request_id(frame), Some(0x0102_0304_0506_0708));
        // Break the body (its union value offset points past the end):
        // verification fails, the id is still readable.
        let mut broken = frame.to_vec();
        let len = broken.len();
        broken.truncate(len - 4);
        assert!(Limits::server_inbound().verify(&broken).is_err());
        assert_eq!(peek_request_id(&broken), Some(0x0102_0304_0506_0708));
        // Garbage and short buffers give None, never a panic.
        assert_eq!(peek_request_id(&[]), None);
        assert_eq!(peek_request_id(&[0xff; 3]), None);
        assert_eq!(peek_request_id(&[0xff; 64]), None);
        for cut in 0..frame.len() {
            let _ = peek_request_id(&frame[..cut]);
        }
    }
    use crate::body::{messaging, sync};
    use crate::frame::Frame;

    #[test]
    fn body_type_and_error_code_are_read_without_decoding() {
        use crate::body::errors::ErrorBody;
        let done = crate::Frame::new(3, crate::body::messaging::Done).encode();
        assert_eq!(peek_body_type(&done[LEN_PREFIX..]), Some(fb::Body::Done));
        let error = crate::Frame::new(
            4,
            ErrorBody {
                code: fb::ErrorCode::RateLimited,
                message: "slow down".into(),
                retry_after_ms: 10,
            },
        )
        .encode();
        let frame = &error[LEN_PREFIX..];
        assert_eq!(peek_body_type(frame), Some(fb::Body::Error));
        assert_eq!(peek_error_code(frame), Some(fb::ErrorCode::RateLimited));
        assert_eq!(peek_body_type(&[]), None);
        assert_eq!(peek_error_code(&[0xff; 64]), None);
        for cut in 0..frame.len() {
            let _ = (
                peek_body_type(&frame[..cut]),
                peek_error_code(&frame[..cut]),
            );
        }
    }

    #[test]
    fn splits_frames_across_arbitrary_chunks() {
        let a = Frame::new(
            1,
            sync::Sync {
                all: true,
                ..Default::default()
            },
        )
        .encode();
        let b = Frame::new(2, messaging::Done).encode();
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
    fn split_over_a_callers_buffer_matches_next_frame() {
        let a = Frame::new(
            1,
            sync::Sync {
                all: true,
                ..Default::default()
            },
        )
        .encode();
        let b = Frame::new(2, messaging::Done).encode();
        let d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&a);
        buf.extend_from_slice(&b[..3]);
        assert_eq!(d.split(&mut buf), Ok(Some(a.slice(LEN_PREFIX..))));
        assert_eq!(d.split(&mut buf), Ok(None));
        buf.extend_from_slice(&b[3..]);
        assert_eq!(d.split(&mut buf), Ok(Some(b.slice(LEN_PREFIX..))));
        assert!(buf.is_empty());
        assert_eq!(buf.capacity(), 0, "no buffer kept between frames");
        assert_eq!(d.read_room(&buf), 0);
    }

    #[test]
    fn read_room_follows_arrived_bytes_not_the_announced_length() {
        let d = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(DEFAULT_MAX_FRAME_LEN as u32).to_le_bytes());
        assert_eq!(d.split(&mut buf), Ok(None));
        assert_eq!(d.read_room(&buf), READ_SLACK);
        buf.extend_from_slice(&vec![0u8; 3 * READ_SLACK]);
        assert_eq!(d.split(&mut buf), Ok(None));
        assert_eq!(d.read_room(&buf), buf.len());
    }

    #[test]
    fn split_refuses_oversize_and_empty_lengths() {
        let d = FrameDecoder::new(1024);
        let mut buf = BytesMut::from(&(1025u32).to_le_bytes()[..]);
        assert_eq!(
            d.split(&mut buf),
            Err(FrameError::TooLarge {
                len: 1025,
                max: 1024
            })
        );
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0][..]);
        assert_eq!(d.split(&mut buf), Err(FrameError::Empty));
    }

    #[test]
    fn zero_length_is_refused() {
        let mut d = FrameDecoder::new(1024);
        d.push(&[0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(FrameError::Empty));
    }

    #[test]
    fn truncated_frame_stays_partial() {
        let wire = Frame::new(1, messaging::Done).encode();
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
            messaging::Send {
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
