//! Blob streams (docs/PROTOCOL.md §4.12; layout in
//! [`tern_proto::blob_stream`]): once a connection is authenticated, every
//! further bidirectional stream the client opens carries one status,
//! upload or download of an encrypted attachment, served here against the
//! [`BlobStore`] under the caller's user as the upload's owner, or one
//! staged MLS handshake part, held in memory by [`crate::staging`].
//!
//! Memory stays bounded per stream: an upload is read in pieces of at most
//! [`PIECE_LEN`] bytes, each written to the store (on tokio's blocking
//! pool) before the next is read, so QUIC flow control holds the sender
//! back while the disk is slower; a download reads one piece at a time and
//! waits for QUIC to take it. Every read and write on the stream has a
//! deadline, so a stalled peer releases its file. A lost connection keeps
//! the bytes already received for a resume.
//!
//! Limits (issue 12), checked in this order before any byte is read: the
//! size (`max_attachment_bytes`, `TooLarge`), the account's storage quota
//! (`upload_quota_bytes` against [`BlobStore::usage`], `QuotaExceeded`)
//! and its upload byte rate ([`ServerLimits::upload`](crate::ratelimit::ServerLimits::upload),
//! `RateLimited` with `retry_after_ms`). A refused upload is charged to
//! nothing. The quota is checked per upload, so uploads of one account
//! running at once may together pass it by at most what they announced.
//! Complete blobs expire with the message retention ([`sweep_expired`]),
//! which frees their quota.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tern_proto::blob_stream::{BlobRequest, Op, Response, State, Status, REQUEST_LEN};
use tern_store::blob::{BlobError, BlobStatus, BlobStore, BlobWriter};

use super::shard::{ServerStats, ShardCtx};
use super::staging::Staging;

/// Most bytes an upload or download holds in memory at once.
pub const PIECE_LEN: usize = 256 * 1024;

/// An upload not written to for this long (server clock) is abandoned and
/// swept (issue 12: 24 h).
pub const ABANDONED_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Deletes uploads abandoned for [`ABANDONED_AFTER`] of server time (the
/// sweep loop calls it); returns how many.
pub async fn sweep_abandoned(ctx: &ShardCtx) -> Result<u64, BlobError> {
    let now = std::time::UNIX_EPOCH + Duration::from_millis(ctx.clock.now_ms());
    let before = now
        .checked_sub(ABANDONED_AFTER)
        .unwrap_or(std::time::UNIX_EPOCH);
    let store = ctx.blobs.clone();
    blocking(move || store.sweep_abandoned(before)).await
}

/// Deletes complete blobs older than the message retention
/// (`message_ttl_secs`, server clock; the sweep loop calls it); returns
/// how many. Their bytes leave their owners' quota.
pub async fn sweep_expired(ctx: &ShardCtx) -> Result<u64, BlobError> {
    let now = std::time::UNIX_EPOCH + Duration::from_millis(ctx.clock.now_ms());
    let before = now
        .checked_sub(ctx.config.message_ttl())
        .unwrap_or(std::time::UNIX_EPOCH);
    let store = ctx.blobs.clone();
    blocking(move || store.sweep_expired(before)).await
}

/// Serves one blob stream of `owner`'s authenticated connection.
pub async fn serve(
    ctx: Rc<ShardCtx>,
    staging: Rc<Staging>,
    owner: String,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let read_timeout = Duration::from_secs(ctx.config.frame_read_timeout_secs);
    let mut header = [0u8; REQUEST_LEN];
    let read = ctx
        .clock
        .timeout(read_timeout, recv.read_exact(&mut header))
        .await;
    if !matches!(read, Ok(Ok(()))) {
        let _ = recv.stop(0u32.into());
        return;
    }
    let response = match BlobRequest::decode(&header) {
        Err(e) => Response::refuse(Status::Malformed, 0, e.to_string()),
        Ok(request) => match request.op {
            Op::Status => status(&ctx, owner, request).await,
            Op::Upload => upload(&ctx, owner, request, &mut recv).await,
            Op::Download => return download(&ctx, request, send).await,
            Op::Stage => crate::staging::serve(&ctx, &staging, &owner, request, &mut recv).await,
        },
    };
    let _ = recv.stop(0u32.into());
    let _ = write(&ctx, &mut send, &response.encode()).await;
    let _ = send.finish();
}

/// Runs a blocking store call on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BlobError> + Send + 'static,
) -> Result<T, BlobError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(BlobError::Io(std::io::Error::other(e.to_string()))))
}

/// A store failure as the stream's answer.
fn refusal(e: BlobError) -> Response {
    match e {
        BlobError::NotFound => Response::refuse(
            Status::NotFound,
            0,
            "no such blob: the sender may not have finished uploading it, or it expired",
        ),
        BlobError::OffsetMismatch { have, .. } => Response::refuse(
            Status::OffsetMismatch,
            have,
            format!("the server holds {have} bytes of this upload: continue from there"),
        ),
        BlobError::AlreadyExists => Response::refuse(
            Status::AlreadyExists,
            0,
            "a blob with this id exists: upload under a new random id",
        ),
        BlobError::Busy => Response::refuse(
            Status::Busy,
            0,
            "another stream of this upload is still open; ask the status again in a moment",
        ),
        BlobError::Incomplete { have, .. } => Response::refuse(
            Status::Incomplete,
            have,
            format!("the upload holds {have} bytes: send the rest"),
        ),
        BlobError::Io(e) => {
            tracing::warn!(error = %e, "blob store failed");
            Response::refuse(
                Status::Unavailable,
                0,
                "the server could not store or read the blob; retry later",
            )
        }
    }
}

async fn status(ctx: &ShardCtx, owner: String, request: BlobRequest) -> Response {
    let store = ctx.blobs.clone();
    let id = request.blob_id;
    match blocking(move || store.status(&owner, &id)).await {
        Ok(BlobStatus::Absent) => Response::ok(State::Absent, 0),
        Ok(BlobStatus::Partial(n)) => Response::ok(State::Partial, n),
        Ok(BlobStatus::Complete(n)) => Response::ok(State::Complete, n),
        Err(e) => refusal(e),
    }
}

async fn upload(
    ctx: &ShardCtx,
    owner: String,
    request: BlobRequest,
    recv: &mut quinn::RecvStream,
) -> Response {
    let max = ctx.config.max_attachment_bytes;
    if request.length > max {
        return Response::refuse(
            Status::TooLarge,
            max,
            format!(
                "the attachment is {} bytes; this server takes at most {max}",
                request.length
            ),
        );
    }
    if let Err(refused) = admit(ctx, &owner, &request).await {
        return refused;
    }
    let store: Arc<dyn BlobStore> = ctx.blobs.clone();
    let (id, offset) = (request.blob_id, request.offset);
    let user = owner.clone();
    let writer = match blocking(move || store.writer(&user, &id, offset)).await {
        Ok(w) => w,
        Err(e) => {
            let unused = request.length - offset;
            ctx.limits.upload_unused(&owner, unused, ctx.clock.now_ms());
            return refusal(e);
        }
    };
    let writer = match receive(ctx, writer, request.length, recv).await {
        Ok(w) => w,
        Err((response, have)) => {
            let unused = request.length - have.max(offset);
            ctx.limits.upload_unused(&owner, unused, ctx.clock.now_ms());
            return response;
        }
    };
    let total = request.length;
    match blocking(move || writer.complete(total)).await {
        Ok(()) => {
            ServerStats::add(&ctx.stats.blobs_uploaded, 1);
            Response::ok(State::Complete, total)
        }
        Err(e) => refusal(e),
    }
}

/// The quota, then the rate limit, for the bytes `request` will send
/// (`length - offset`: a resume is charged only for what is left). Takes
/// the bytes from the rate bucket when both pass.
async fn admit(ctx: &ShardCtx, owner: &str, request: &BlobRequest) -> Result<(), Response> {
    let coming = request.length - request.offset;
    let quota = ctx.config.upload_quota_bytes;
    let store = ctx.blobs.clone();
    let user = owner.to_owned();
    let used = blocking(move || store.usage(&user))
        .await
        .map_err(refusal)?;
    // The partial being resumed is counted in `used` already.
    if used.saturating_add(coming) > quota {
        let free = quota.saturating_sub(used);
        return Err(Response::refuse(
            Status::QuotaExceeded,
            free,
            format!(
                "this account holds {used} of its {quota} attachment bytes; {coming} more do not fit \
                 ({free} free): attachments expire after the message retention"
            ),
        ));
    }
    ctx.limits
        .upload(owner, coming, ctx.clock.now_ms())
        .map_err(|wait| {
            let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
            Response::refuse(
                Status::RateLimited,
                retry_after_ms,
                format!(
                    "this account uploads too fast; retry in {retry_after_ms} ms (resume from the status)"
                ),
            )
        })
}

/// Reads the upload's bytes up to `total` into `writer`, piece by piece.
/// A refusal comes with the bytes the partial then holds.
async fn receive(
    ctx: &ShardCtx,
    mut writer: Box<dyn BlobWriter>,
    total: u64,
    recv: &mut quinn::RecvStream,
) -> Result<Box<dyn BlobWriter>, (Response, u64)> {
    let read_timeout = Duration::from_secs(ctx.config.frame_read_timeout_secs);
    let mut piece = Vec::with_capacity(PIECE_LEN.min(total as usize));
    while writer.len() < total {
        let left = total - writer.len() - piece.len() as u64;
        let want = (PIECE_LEN - piece.len()).min(usize::try_from(left).unwrap_or(PIECE_LEN));
        let chunk = match ctx
            .clock
            .timeout(read_timeout, recv.read_chunk(want, true))
            .await
        {
            Ok(Ok(Some(chunk))) => Some(chunk.bytes),
            // The end of the stream, a reset, a lost connection or silence:
            // keep what came (below) for a resume.
            _ => None,
        };
        let ended = chunk.is_none();
        if let Some(bytes) = chunk {
            piece.extend_from_slice(&bytes);
        }
        let full = piece.len() == PIECE_LEN || writer.len() + piece.len() as u64 == total;
        if full || (ended && !piece.is_empty()) {
            let bytes = std::mem::take(&mut piece);
            let (before, count) = (writer.len(), bytes.len() as u64);
            writer = blocking(move || writer.write(&bytes).map(|()| writer))
                .await
                .map_err(|e| (refusal(e), before))?;
            ServerStats::add(&ctx.stats.blob_bytes_received, count);
            piece = Vec::with_capacity(PIECE_LEN.min((total - writer.len()) as usize));
        }
        if ended {
            let have = writer.len();
            // Dropping keeps the bytes for a resume, which is I/O (a file's
            // sync, the S3 backend's PUT of its buffered tail): on the
            // blocking pool, never on the shard's thread.
            let _ = blocking(move || {
                drop(writer);
                Ok(())
            })
            .await;
            let response = Response::refuse(
                Status::Incomplete,
                have,
                format!("the stream ended after {have} of {total} bytes: resume from {have}"),
            );
            return Err((response, have));
        }
    }
    Ok(writer)
}

async fn download(ctx: &ShardCtx, request: BlobRequest, mut send: quinn::SendStream) {
    let store = ctx.blobs.clone();
    let id = request.blob_id;
    let mut reader = match blocking(move || store.reader(&id)).await {
        Ok(r) => r,
        Err(e) => {
            let _ = write(ctx, &mut send, &refusal(e).encode()).await;
            let _ = send.finish();
            return;
        }
    };
    let len = reader.len();
    if write(ctx, &mut send, &Response::ok(State::Complete, len).encode())
        .await
        .is_err()
    {
        return;
    }
    ServerStats::add(&ctx.stats.blobs_downloaded, 1);
    let end = len.min(request.offset.saturating_add(request.length));
    let mut at = request.offset;
    while at < end {
        let n = usize::try_from(end - at)
            .unwrap_or(PIECE_LEN)
            .min(PIECE_LEN);
        let read = blocking(move || {
            let mut buf = vec![0u8; n];
            let got = reader.read_at(at, &mut buf)?;
            buf.truncate(got);
            Ok((reader, buf))
        })
        .await;
        let buf = match read {
            Ok((r, buf)) if !buf.is_empty() => {
                reader = r;
                buf
            }
            // The blob shrank under us (deleted) or the disk failed: the
            // client sees a short stream and refuses it.
            _ => {
                let _ = send.reset(1u32.into());
                return;
            }
        };
        at += buf.len() as u64;
        if write(ctx, &mut send, &buf).await.is_err() {
            return;
        }
        ServerStats::add(&ctx.stats.blob_bytes_sent, buf.len() as u64);
    }
    let _ = send.finish();
}

/// Writes `bytes` unless the peer stops reading for the slow-reader patience.
async fn write(ctx: &ShardCtx, send: &mut quinn::SendStream, bytes: &[u8]) -> Result<(), ()> {
    let patience = Duration::from_secs(ctx.config.slow_reader_timeout_secs);
    match ctx.clock.timeout(patience, send.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        _ => {
            let _ = send.reset(2u32.into());
            Err(())
        }
    }
}
