//! The client side of blob streams (docs/PROTOCOL.md §4.12, layout in
//! [`tern_proto::blob_stream`]): each status, upload or download opens its
//! own bidirectional QUIC stream on the authenticated connection. Uploads
//! send from a file one piece at a time (QUIC flow control paces them);
//! downloads hand each received piece to a sink as it comes. Nothing holds
//! a whole blob in memory.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use tern_proto::blob_stream::{BlobRequest, Op, Response, State, Status, RESPONSE_FIXED_LEN};

use super::pointer::BLOB_ID_LEN;

/// Bytes read from the file per write to the stream.
const PIECE_LEN: usize = 64 * 1024;

/// Why a blob transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// No live connection (reconnecting): retry once connected.
    #[error("not connected to the server; retry once the connection is back")]
    NotConnected,
    #[error("the connection was lost during the transfer ({0}); retry: an upload resumes where the server stopped")]
    Lost(String),
    /// The server refused: `status` says why, `value` carries its number
    /// (bytes held, the size limit, the quota's free bytes, the
    /// `retry_after_ms` of `RateLimited`), `message` what to do.
    #[error("the server refused the transfer ({status:?}): {message}")]
    Refused {
        status: Status,
        value: u64,
        message: String,
    },
    #[error("the server's answer on the blob stream is malformed")]
    Malformed,
    #[error("reading or writing the local file failed: {0}")]
    Io(#[from] std::io::Error),
}

impl TransferError {
    /// Whether retrying (after a reconnect) can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            TransferError::NotConnected | TransferError::Lost(_) => true,
            TransferError::Refused { status, .. } => {
                matches!(
                    status,
                    Status::Incomplete
                        | Status::Unavailable
                        | Status::Busy
                        | Status::OffsetMismatch
                )
            }
            _ => false,
        }
    }

    /// When the server asks to be retried later (`RateLimited`: its value
    /// is `retry_after_ms`), how long to wait before resuming.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            TransferError::Refused {
                status: Status::RateLimited,
                value,
                ..
            } => Some(std::time::Duration::from_millis(*value)),
            _ => None,
        }
    }
}

fn lost(e: impl std::fmt::Display) -> TransferError {
    TransferError::Lost(e.to_string())
}

/// Why a write to an upload stream failed: the server stops reading when
/// it refuses an upload (too large, quota, rate) and answers why, so its
/// answer is read first; without one the connection was lost.
async fn refused_or_lost(recv: &mut quinn::RecvStream, e: quinn::WriteError) -> TransferError {
    match response(recv).await {
        Err(refused @ TransferError::Refused { .. }) => refused,
        _ => lost(e),
    }
}

/// Opens a blob stream and sends its header.
async fn open(
    connection: &quinn::Connection,
    request: BlobRequest,
) -> Result<(quinn::SendStream, quinn::RecvStream), TransferError> {
    let (mut send, recv) = connection.open_bi().await.map_err(lost)?;
    send.write_all(&request.encode()).await.map_err(lost)?;
    Ok((send, recv))
}

/// Reads the server's response header; a refusal becomes
/// [`TransferError::Refused`].
async fn response(recv: &mut quinn::RecvStream) -> Result<Response, TransferError> {
    let mut fixed = [0u8; RESPONSE_FIXED_LEN];
    recv.read_exact(&mut fixed).await.map_err(lost)?;
    let (mut response, len) =
        Response::decode_fixed(&fixed).map_err(|_| TransferError::Malformed)?;
    let mut message = vec![0u8; len];
    recv.read_exact(&mut message).await.map_err(lost)?;
    response.message = String::from_utf8_lossy(&message).into_owned();
    if response.status != Status::Ok {
        return Err(TransferError::Refused {
            status: response.status,
            value: response.value,
            message: response.message,
        });
    }
    Ok(response)
}

/// What the server holds under `id` for this user: `(state, bytes)`.
pub async fn status(
    connection: &quinn::Connection,
    id: &[u8; BLOB_ID_LEN],
) -> Result<(State, u64), TransferError> {
    let request = BlobRequest {
        op: Op::Status,
        blob_id: *id,
        offset: 0,
        length: 0,
    };
    let (mut send, mut recv) = open(connection, request).await?;
    let _ = send.finish();
    let r = response(&mut recv).await?;
    Ok((r.state, r.value))
}

/// Stages `part` (an MLS handshake part too large for a frame) under
/// stage id `id` on `connection`, for a `Commit` on the same connection to
/// name (docs/PROTOCOL.md §4.12.1). Returns once the server holds it.
///
/// # Errors
/// [`TransferError`]: `Refused` with `TooLarge` (`value` = the server's
/// `max_mls_handshake_bytes`) or `Busy` (the server stages too much now:
/// retry shortly); `Lost` when the connection went.
pub async fn stage(
    connection: &quinn::Connection,
    id: &[u8; BLOB_ID_LEN],
    part: &[u8],
) -> Result<(), TransferError> {
    let request = BlobRequest {
        op: Op::Stage,
        blob_id: *id,
        offset: 0,
        length: part.len() as u64,
    };
    let (mut send, mut recv) = open(connection, request).await?;
    if let Err(e) = send.write_all(part).await {
        return Err(refused_or_lost(&mut recv, e).await);
    }
    let _ = send.finish();
    response(&mut recv).await.map(drop)
}

/// What an upload did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Uploaded {
    /// Where this attempt started (what the server already held).
    pub resumed_from: u64,
    /// Bytes this attempt sent.
    pub sent: u64,
}

/// Uploads `file` (the whole ciphertext, `total` bytes) as blob `id`,
/// continuing from what the server already holds; `progress(done, total)`
/// after each piece. Returns once the server stored it durably.
///
/// # Errors
/// [`TransferError`]; a lost connection leaves the bytes sent so far on
/// the server, and a retry sends only the rest.
pub async fn upload(
    connection: &quinn::Connection,
    id: &[u8; BLOB_ID_LEN],
    file: &Path,
    total: u64,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Uploaded, TransferError> {
    let offset = match status(connection, id).await? {
        (State::Complete, len) if len == total => {
            progress(total, total);
            return Ok(Uploaded {
                resumed_from: total,
                sent: 0,
            });
        }
        (State::Partial, held) => held,
        _ => 0,
    };
    let request = BlobRequest {
        op: Op::Upload,
        blob_id: *id,
        offset,
        length: total,
    };
    let mut source = std::fs::File::open(file)?;
    source.seek(SeekFrom::Start(offset))?;
    let (mut send, mut recv) = open(connection, request).await?;
    let mut buf = vec![0u8; PIECE_LEN];
    let mut done = offset;
    progress(done, total);
    while done < total {
        let want = usize::try_from(total - done)
            .unwrap_or(PIECE_LEN)
            .min(PIECE_LEN);
        let piece = buf.get_mut(..want).unwrap_or_default();
        source.read_exact(piece)?;
        if let Err(e) = send.write_all(piece).await {
            return Err(refused_or_lost(&mut recv, e).await);
        }
        done += want as u64;
        progress(done, total);
    }
    let _ = send.finish();
    response(&mut recv).await?;
    Ok(Uploaded {
        resumed_from: offset,
        sent: total - offset,
    })
}

/// Downloads blob `id` from byte `offset`, at most `length` bytes, handing
/// each piece to `sink` as it arrives; returns the blob's whole length.
///
/// # Errors
/// [`TransferError`]; [`TransferError::Lost`] when the stream ends before
/// the bytes asked for (a blob deleted meanwhile, a lost connection).
pub async fn download(
    connection: &quinn::Connection,
    id: &[u8; BLOB_ID_LEN],
    offset: u64,
    length: u64,
    sink: &mut (dyn FnMut(&[u8]) -> Result<(), TransferError> + Send),
) -> Result<u64, TransferError> {
    let request = BlobRequest {
        op: Op::Download,
        blob_id: *id,
        offset,
        length,
    };
    let (mut send, mut recv) = open(connection, request).await?;
    let _ = send.finish();
    let len = response(&mut recv).await?.value;
    let want = len.saturating_sub(offset).min(length);
    let mut got = 0u64;
    while got < want {
        let chunk = recv
            .read_chunk(PIECE_LEN, true)
            .await
            .map_err(lost)?
            .ok_or_else(|| lost(format!("the stream ended after {got} of {want} bytes")))?;
        got += chunk.bytes.len() as u64;
        if got > want {
            return Err(TransferError::Malformed);
        }
        sink(&chunk.bytes)?;
    }
    Ok(len)
}
