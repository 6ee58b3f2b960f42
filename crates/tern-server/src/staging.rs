//! Staged MLS handshake parts (docs/PROTOCOL.md §4.12.1, issue 12): a
//! Commit, Welcome or GroupInfo too large for a frame (the Welcome and
//! GroupInfo of a 1,500-member group are about 264 KB, the frame cap 256 KiB)
//! is sent ahead on a stage stream (blob stream op 4) of the same
//! connection, held here in memory under the client's 16-byte stage id, and
//! put back into the `Commit` request that names it before the Commit runs
//! ([`Staging::resolve`]). Everything after that (the owner's checks, the
//! store, the fan-out) sees an ordinary Commit.
//!
//! Memory stays bounded: a part is at most `max_mls_handshake_bytes`
//! (default 2 MiB), a connection holds at most [`MAX_PARTS`] (staging
//! another drops its oldest), a part unused for [`STAGE_TTL`] is dropped
//! (by a timer, also on an idle connection), the parts of all connections
//! of a shard together stay under [`SHARD_BUDGET`] (a stage past it is
//! refused `Busy`: retry shortly), a part must arrive whole within
//! [`STAGE_DEADLINE`] (a slow sender does not hold its reservation
//! longer), and a connection's parts go when it closes. Staged bytes are
//! charged to the account's upload byte rate like attachment uploads
//! (`RateLimited` with `retry_after_ms`), so one account cannot keep a
//! shard's budget full. A part is used once: a Commit takes it, whether
//! the Commit is then accepted or not.
//!
//! Peers: RFC 9420 leaves the transport of handshake messages to the
//! delivery service (RFC 9750 §5); Matrix sends large events as media
//! uploads referenced from the event, which is the shape here.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tern_proto::blob_stream::{BlobRequest, Response, State, Status};
use tern_proto::body::mls::{Commit, StageId};
use tern_proto::fb::ErrorCode;

use crate::mesh::Reject;
use crate::shard::ShardCtx;

/// Parts one connection holds at most (a Commit has three).
pub const MAX_PARTS: usize = 3;

/// How long a staged part waits for the Commit that names it.
pub const STAGE_TTL: Duration = Duration::from_secs(120);

/// Staged bytes all connections of one shard hold at most.
pub const SHARD_BUDGET: u64 = 64 * 1024 * 1024;

/// How long a stage stream may take from its header to its last byte.
pub const STAGE_DEADLINE: Duration = Duration::from_secs(30);

/// One shard's staged bytes (in `ShardCtx`).
#[derive(Debug, Default)]
pub struct ShardBudget {
    used: Cell<u64>,
}

impl ShardBudget {
    fn take(&self, bytes: u64) -> bool {
        let used = self.used.get().saturating_add(bytes);
        if used > SHARD_BUDGET {
            return false;
        }
        self.used.set(used);
        true
    }

    fn give_back(&self, bytes: u64) {
        self.used.set(self.used.get().saturating_sub(bytes));
    }

    /// Bytes staged on this shard now.
    pub fn used(&self) -> u64 {
        self.used.get()
    }
}

struct Part {
    id: StageId,
    bytes: Bytes,
    staged_at_ms: u64,
}

/// One connection's staged parts.
pub struct Staging {
    ctx: Rc<ShardCtx>,
    parts: RefCell<VecDeque<Part>>,
}

impl Staging {
    pub fn new(ctx: Rc<ShardCtx>) -> Staging {
        Staging {
            ctx,
            parts: RefCell::new(VecDeque::new()),
        }
    }

    /// Keeps `bytes` under `id` (replacing a part of the same id; past
    /// [`MAX_PARTS`] the oldest goes) and arms the timer that drops it
    /// after [`STAGE_TTL`] if no Commit took it. The budget was taken
    /// already.
    fn keep(self: &Rc<Self>, id: StageId, bytes: Bytes) {
        self.hold(id, bytes);
        let staging = Rc::downgrade(self);
        let sleep = self.ctx.clock.sleep(STAGE_TTL);
        tokio::task::spawn_local(async move {
            sleep.await;
            if let Some(staging) = staging.upgrade() {
                staging.drop_stale();
            }
        });
    }

    fn hold(&self, id: StageId, bytes: Bytes) {
        self.drop_stale();
        let mut parts = self.parts.borrow_mut();
        let mut freed = 0u64;
        parts.retain(|p| {
            let same = p.id == id;
            if same {
                freed += p.bytes.len() as u64;
            }
            !same
        });
        while parts.len() >= MAX_PARTS {
            if let Some(oldest) = parts.pop_front() {
                freed += oldest.bytes.len() as u64;
            }
        }
        let staged_at_ms = self.ctx.clock.now_ms();
        parts.push_back(Part {
            id,
            bytes,
            staged_at_ms,
        });
        self.ctx.staged.give_back(freed);
    }

    /// Takes the part staged under `id` (it is used once).
    fn take(&self, id: &StageId) -> Option<Bytes> {
        self.drop_stale();
        let mut parts = self.parts.borrow_mut();
        let at = parts.iter().position(|p| p.id == *id)?;
        let part = parts.remove(at)?;
        self.ctx.staged.give_back(part.bytes.len() as u64);
        Some(part.bytes)
    }

    fn drop_stale(&self) {
        let now = self.ctx.clock.now_ms();
        let ttl = STAGE_TTL.as_millis() as u64;
        let mut parts = self.parts.borrow_mut();
        let mut freed = 0u64;
        parts.retain(|p| {
            let fresh = now.saturating_sub(p.staged_at_ms) < ttl;
            if !fresh {
                freed += p.bytes.len() as u64;
            }
            fresh
        });
        self.ctx.staged.give_back(freed);
    }

    /// Puts the staged parts a Commit names into it.
    ///
    /// # Errors
    /// `Malformed` when a staged part's inline field is not empty;
    /// `NotStaged` when a stage id names no part held for this connection
    /// (never staged here, used by an earlier Commit, dropped after
    /// [`STAGE_TTL`] or by newer parts, or staged on a connection since
    /// lost): stage it again, then send the Commit again.
    pub fn resolve(&self, commit: &mut Commit) -> Result<(), Reject> {
        let staged = commit.staged;
        if staged.is_empty() {
            return Ok(());
        }
        let inline = [
            (
                staged.commit.is_some() && !commit.commit.is_empty(),
                "commit",
            ),
            (
                staged.welcome.is_some() && commit.welcome.is_some(),
                "welcome",
            ),
            (
                staged.group_info.is_some() && !commit.group_info.is_empty(),
                "group_info",
            ),
        ];
        if let Some((_, field)) = inline.iter().find(|(both, _)| *both) {
            return Err(Reject::new(
                ErrorCode::Malformed,
                format!("Commit.{field} is both staged and inline; leave it empty when {field}_stage_id is set"),
            ));
        }
        if let Some(id) = staged.commit {
            commit.commit = self.take_named(&id, "commit")?;
        }
        if let Some(id) = staged.welcome {
            commit.welcome = Some(self.take_named(&id, "welcome")?);
        }
        if let Some(id) = staged.group_info {
            commit.group_info = self.take_named(&id, "group_info")?;
        }
        commit.staged = Default::default();
        Ok(())
    }

    fn take_named(&self, id: &StageId, field: &str) -> Result<Bytes, Reject> {
        self.take(id).ok_or_else(|| {
            Reject::new(
                ErrorCode::NotStaged,
                format!(
                    "Commit.{field}_stage_id {} names no part staged on this connection (used, expired after {} s, or staged on a lost connection): stage it again, then retry",
                    hex::encode(id),
                    STAGE_TTL.as_secs()
                ),
            )
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let held: u64 = self
            .parts
            .get_mut()
            .iter()
            .map(|p| p.bytes.len() as u64)
            .sum();
        self.ctx.staged.give_back(held);
    }
}

/// Serves a stage stream: reads the part's `length` bytes (each read with
/// the per-frame deadline) and keeps them for this connection. Answers
/// `Ok` with the length once held, `TooLarge` past
/// `max_mls_handshake_bytes` (`value` = the limit), `RateLimited` past the
/// account's upload byte rate (`value` = `retry_after_ms`), `Busy` while
/// the shard holds [`SHARD_BUDGET`] already, `Incomplete` when the stream
/// ends early or takes longer than [`STAGE_DEADLINE`] (nothing is kept: a
/// staged part is sent whole again).
pub async fn serve(
    ctx: &ShardCtx,
    staging: &Rc<Staging>,
    owner: &str,
    request: BlobRequest,
    recv: &mut quinn::RecvStream,
) -> Response {
    let length = request.length;
    if let Err(refused) = admit(ctx, owner, length) {
        return refused;
    }
    let read = ctx
        .clock
        .timeout(STAGE_DEADLINE, read_whole(ctx, length, recv));
    match read.await.unwrap_or(Err(0)) {
        Ok(bytes) => {
            staging.keep(request.blob_id, bytes);
            crate::shard::ServerStats::add(&ctx.stats.handshake_parts_staged, 1);
            Response::ok(State::Complete, length)
        }
        Err(have) => {
            ctx.staged.give_back(length);
            Response::refuse(
                Status::Incomplete,
                0,
                format!("the stream ended after {have} of {length} bytes; a staged part is sent whole: stage it again"),
            )
        }
    }
}

/// The size limit, the account's upload byte rate, then the shard's
/// budget (taken when all pass).
fn admit(ctx: &ShardCtx, owner: &str, length: u64) -> Result<(), Response> {
    let max = ctx.config.max_mls_handshake_bytes as u64;
    if length > max {
        return Err(Response::refuse(
            Status::TooLarge,
            max,
            format!("the handshake part is {length} bytes; this server stages at most {max} (max_mls_handshake_bytes)"),
        ));
    }
    let now = ctx.clock.now_ms();
    if let Err(wait) = ctx.limits.upload(owner, length, now) {
        let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        return Err(Response::refuse(
            Status::RateLimited,
            retry_after_ms,
            format!("this account uploads too fast; stage again in {retry_after_ms} ms"),
        ));
    }
    if !ctx.staged.take(length) {
        ctx.limits.upload_unused(owner, length, now);
        return Err(Response::refuse(
            Status::Busy,
            0,
            "the server holds as many staged handshake bytes as it takes; stage again in a moment",
        ));
    }
    Ok(())
}

/// Reads exactly `length` bytes, or says how many came before the stream
/// ended, was reset, or stalled past the per-frame deadline.
async fn read_whole(
    ctx: &ShardCtx,
    length: u64,
    recv: &mut quinn::RecvStream,
) -> Result<Bytes, u64> {
    let read_timeout = Duration::from_secs(ctx.config.frame_read_timeout_secs);
    let total = usize::try_from(length).unwrap_or(usize::MAX);
    let mut buf = BytesMut::with_capacity(total);
    while buf.len() < total {
        let want = total - buf.len();
        match ctx
            .clock
            .timeout(read_timeout, recv.read_chunk(want, true))
            .await
        {
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk.bytes),
            _ => return Err(buf.len() as u64),
        }
    }
    Ok(buf.freeze())
}
