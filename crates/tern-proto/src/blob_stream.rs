//! Blob streams (docs/PROTOCOL.md §4.12): attachment uploads and downloads
//! each on a bidirectional QUIC stream of their own, beside the control
//! stream, so that megabytes never queue behind (or in front of) messages.
//! The connection's authentication covers them; there are no frames, only
//! a fixed header each way and then raw bytes.
//!
//! Request, the first [`REQUEST_LEN`] bytes the client sends (integers
//! little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | `op`: 1 status, 2 upload, 3 download, 4 stage ([`Op`]) |
//! | 1 | 16 | `blob_id` |
//! | 17 | 8 | `offset`: upload: where the bytes that follow start; download: first byte wanted; status, stage: 0 |
//! | 25 | 8 | `length`: upload: the blob's total length; download: most bytes wanted; stage: the part's length; status: 0 |
//!
//! An upload then sends the blob's bytes `offset..length` and finishes the
//! stream. Response, the server's first bytes ([`Response`]):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 1 | `status` ([`Status`]): 0 ok, otherwise why not |
//! | 1 | 1 | `state` (status op): 0 absent, 1 partial, 2 complete |
//! | 2 | 8 | `value`: status: bytes held; upload: bytes stored; download: the blob's length; errors: see [`Status`] |
//! | 10 | 2 | `message_len` |
//! | 12 | `message_len` | UTF-8: what to do (errors), empty otherwise |
//!
//! A download's response is followed by the requested bytes, then the
//! stream's end.

/// Bytes of a request header.
pub const REQUEST_LEN: usize = 33;
/// Bytes of a response before its message.
pub const RESPONSE_FIXED_LEN: usize = 12;
/// Longest response message, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Bytes of a blob id.
pub const BLOB_ID_LEN: usize = 16;

/// What a blob stream does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// How many bytes the server holds of the caller's upload (resume).
    Status = 1,
    /// Upload bytes `offset..length`.
    Upload = 2,
    /// Download from `offset`, at most `length` bytes.
    Download = 3,
    /// Hold an MLS handshake part (a Commit, Welcome or GroupInfo too
    /// large for a frame) of `length` bytes in the connection's memory,
    /// under `blob_id` as its stage id, for a `Commit` request on the same
    /// connection to name (docs/PROTOCOL.md §4.12.1). `offset` is 0.
    Stage = 4,
}

/// A blob stream's request header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobRequest {
    pub op: Op,
    pub blob_id: [u8; BLOB_ID_LEN],
    pub offset: u64,
    pub length: u64,
}

/// Why a request header was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("blob stream header is {0} bytes, not {REQUEST_LEN}")]
    Short(usize),
    #[error("unknown blob stream op {0}; use 1 status, 2 upload, 3 download, 4 stage")]
    UnknownOp(u8),
    #[error("a staged part is sent whole: its offset must be 0, not {0}")]
    StageOffset(u64),
    #[error("upload offset {offset} is past its length {length}")]
    OffsetPastLength { offset: u64, length: u64 },
}

impl BlobRequest {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut out = [0u8; REQUEST_LEN];
        let mut w = out.iter_mut();
        let fields = std::iter::once(self.op as u8)
            .chain(self.blob_id)
            .chain(self.offset.to_le_bytes())
            .chain(self.length.to_le_bytes());
        for (slot, byte) in (&mut w).zip(fields) {
            *slot = byte;
        }
        out
    }

    /// Parses a header.
    ///
    /// # Errors
    /// [`HeaderError`] for a short header, an unknown op, an upload
    /// offset past its length, or a stage with an offset.
    pub fn decode(bytes: &[u8]) -> Result<BlobRequest, HeaderError> {
        let header: &[u8; REQUEST_LEN] = bytes
            .get(..REQUEST_LEN)
            .and_then(|h| h.try_into().ok())
            .ok_or(HeaderError::Short(bytes.len()))?;
        let [op, rest @ ..] = header;
        let op = match op {
            1 => Op::Status,
            2 => Op::Upload,
            3 => Op::Download,
            4 => Op::Stage,
            other => return Err(HeaderError::UnknownOp(*other)),
        };
        let (id, rest) = rest.split_at(BLOB_ID_LEN);
        let (offset, length) = rest.split_at(8);
        let blob_id = id.try_into().map_err(|_| HeaderError::Short(bytes.len()))?;
        let le = |b: &[u8]| b.try_into().map(u64::from_le_bytes);
        let (Ok(offset), Ok(length)) = (le(offset), le(length)) else {
            return Err(HeaderError::Short(bytes.len()));
        };
        if op == Op::Upload && offset > length {
            return Err(HeaderError::OffsetPastLength { offset, length });
        }
        if op == Op::Stage && offset != 0 {
            return Err(HeaderError::StageOffset(offset));
        }
        Ok(BlobRequest {
            op,
            blob_id,
            offset,
            length,
        })
    }
}

/// A blob stream's answer (the `status` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Done (upload: stored durably; download: the bytes follow).
    Ok = 0,
    /// The connection is not authenticated yet: authenticate on the
    /// control stream first.
    NotAuthenticated = 1,
    /// The header is malformed (the message says how).
    Malformed = 2,
    /// No complete blob with this id (download).
    NotFound = 3,
    /// The upload's offset is not what the server holds; `value` is what
    /// it holds: continue from there.
    OffsetMismatch = 4,
    /// The id is taken by a complete blob: pick a new random id.
    AlreadyExists = 5,
    /// The blob is longer than the server's `max_attachment_bytes`,
    /// which is `value`.
    TooLarge = 6,
    /// The stream ended before the announced length (upload); the bytes
    /// received are kept, `value` of them: resume.
    Incomplete = 7,
    /// The server could not store or read the blob; retry later.
    Unavailable = 8,
    /// Another stream of this upload is still open (a lost connection's,
    /// winding down); ask the status again in a moment and resume.
    Busy = 9,
    /// The upload would take the account past its storage quota
    /// (`upload_quota_bytes`); `value` is the bytes still free. Complete
    /// blobs leave the quota when they expire (the message retention).
    QuotaExceeded = 10,
    /// The account uploads faster than the server's per-account byte rate
    /// (`upload_bytes_per_second` with a burst of `upload_burst_bytes`);
    /// `value` is `retry_after_ms`: ask the status and resume then, as
    /// with the control stream's `RateLimited`.
    RateLimited = 11,
    /// A status byte this build does not know (a newer server).
    Unknown = 255,
}

impl Status {
    fn from_byte(b: u8) -> Status {
        match b {
            0 => Status::Ok,
            1 => Status::NotAuthenticated,
            2 => Status::Malformed,
            3 => Status::NotFound,
            4 => Status::OffsetMismatch,
            5 => Status::AlreadyExists,
            6 => Status::TooLarge,
            7 => Status::Incomplete,
            8 => Status::Unavailable,
            9 => Status::Busy,
            10 => Status::QuotaExceeded,
            11 => Status::RateLimited,
            _ => Status::Unknown,
        }
    }
}

/// What a status op found (the `state` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Absent = 0,
    Partial = 1,
    Complete = 2,
}

/// A blob stream's response header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub state: State,
    pub value: u64,
    pub message: String,
}

impl Response {
    /// A success carrying `value`.
    pub fn ok(state: State, value: u64) -> Response {
        Response {
            status: Status::Ok,
            state,
            value,
            message: String::new(),
        }
    }

    /// A refusal with `value` (see [`Status`]) and what to do.
    pub fn refuse(status: Status, value: u64, message: impl Into<String>) -> Response {
        Response {
            status,
            state: State::Absent,
            value,
            message: message.into(),
        }
    }

    /// The response's bytes (a message past [`MAX_MESSAGE_LEN`] is cut).
    pub fn encode(&self) -> Vec<u8> {
        let mut end = self.message.len().min(MAX_MESSAGE_LEN);
        while !self.message.is_char_boundary(end) {
            end -= 1;
        }
        let message = self.message.get(..end).unwrap_or_default().as_bytes();
        let mut out = Vec::with_capacity(RESPONSE_FIXED_LEN + message.len());
        out.push(self.status as u8);
        out.push(self.state as u8);
        out.extend_from_slice(&self.value.to_le_bytes());
        out.extend_from_slice(&(message.len() as u16).to_le_bytes());
        out.extend_from_slice(message);
        out
    }

    /// The fixed part's fields: status, state, value, message length.
    ///
    /// # Errors
    /// [`HeaderError::Short`] when fewer than [`RESPONSE_FIXED_LEN`] bytes.
    pub fn decode_fixed(bytes: &[u8]) -> Result<(Response, usize), HeaderError> {
        let short = || HeaderError::Short(bytes.len());
        let fixed = bytes.get(..RESPONSE_FIXED_LEN).ok_or_else(short)?;
        let (&status, rest) = fixed.split_first().ok_or_else(short)?;
        let (&state, rest) = rest.split_first().ok_or_else(short)?;
        let (value, len) = rest.split_at(8);
        let value = u64::from_le_bytes(value.try_into().map_err(|_| short())?);
        let len = u16::from_le_bytes(len.try_into().map_err(|_| short())?);
        let state = match state {
            1 => State::Partial,
            2 => State::Complete,
            _ => State::Absent,
        };
        let response = Response {
            status: Status::from_byte(status),
            state,
            value,
            message: String::new(),
        };
        Ok((response, usize::from(len).min(MAX_MESSAGE_LEN)))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_with_exact_bytes() {
        let r = BlobRequest {
            op: Op::Upload,
            blob_id: [0xab; 16],
            offset: 0x0102,
            length: 0x0304,
        };
        let bytes = r.encode();
        assert_eq!(bytes[0], 2);
        assert_eq!(&bytes[1..17], &[0xab; 16]);
        assert_eq!(&bytes[17..25], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[25..33], &[4, 3, 0, 0, 0, 0, 0, 0]);
        assert_eq!(BlobRequest::decode(&bytes).unwrap(), r);
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        assert_eq!(BlobRequest::decode(&[2; 10]), Err(HeaderError::Short(10)));
        let mut bytes = [0u8; REQUEST_LEN];
        bytes[0] = 9;
        assert_eq!(BlobRequest::decode(&bytes), Err(HeaderError::UnknownOp(9)));
        let past = BlobRequest {
            op: Op::Upload,
            blob_id: [1; 16],
            offset: 5,
            length: 4,
        };
        assert!(matches!(
            BlobRequest::decode(&past.encode()),
            Err(HeaderError::OffsetPastLength { .. })
        ));
        let staged_at = BlobRequest {
            op: Op::Stage,
            ..past
        };
        assert_eq!(
            BlobRequest::decode(&staged_at.encode()),
            Err(HeaderError::StageOffset(5))
        );
    }

    #[test]
    fn response_round_trips() {
        let r = Response::refuse(Status::OffsetMismatch, 42, "continue from 42");
        let bytes = r.encode();
        let (fixed, len) = Response::decode_fixed(&bytes).unwrap();
        assert_eq!(fixed.status, Status::OffsetMismatch);
        assert_eq!(fixed.value, 42);
        assert_eq!(
            &bytes[RESPONSE_FIXED_LEN..RESPONSE_FIXED_LEN + len],
            b"continue from 42"
        );
        let ok = Response::ok(State::Partial, 7).encode();
        assert_eq!(ok, [0, 1, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Response::decode_fixed(&[0; 3]), Err(HeaderError::Short(3)));
    }
}
