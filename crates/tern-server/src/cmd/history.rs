//! History, applied on the conversation's owner: one page of live (not
//! expired) messages from a seq, bounded by count and by bytes, and never
//! from before the caller's current membership (a member removed and added
//! again is not handed what was said while they were out).

use super::send::to_wire_for;
use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::owner::Owner;
use tern_proto::body::messaging;
use tern_proto::Body;
use tern_store::{ConversationId, Seq};

/// Payload bytes one page carries at most (keeps pages under the client's frame cap).
const MAX_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// The largest encoded page: [`MAX_PAGE_BYTES`] of payload (or one larger
/// message, up to a frame or a staged MLS handshake part: a page always
/// holds at least one) and the per-message fields.
/// A History request reserves this much of its connection's outbound budget
/// before it runs (see `outbound`).
pub fn max_page_frame(config: &crate::config::ServerConfig) -> usize {
    let per_message = 256usize;
    MAX_PAGE_BYTES
        .max(config.max_frame_len)
        .max(config.max_mls_handshake_bytes)
        .saturating_add(per_message.saturating_mul(config.max_history_page as usize))
}

pub async fn apply(
    owner: &mut Owner,
    caller: &Caller,
    id: ConversationId,
    from_seq: Seq,
    limit: u32,
) -> Outcome {
    Outcome::immediate(history(owner, caller, id, from_seq, limit).await)
}

async fn history(
    owner: &mut Owner,
    caller: &Caller,
    id: ConversationId,
    from_seq: Seq,
    limit: u32,
) -> Result<Body, Reject> {
    let max = owner.ctx.config.max_history_page;
    let limit = if limit == 0 { max } else { limit.min(max) };
    let store = owner.ctx.store.clone();
    let now = owner.ctx.clock.now_ms();
    let state = owner.conversation(id).await?;
    state.require_member(caller)?;
    let head = state.record.head_seq;
    let since = store
        .member_since(id, &caller.user)
        .await
        .map_err(Reject::store)?
        .unwrap_or(1);
    let from = from_seq.max(since);
    let stored = read_page(store.as_ref(), id, from, limit as usize, now).await?;
    let mut bytes = 0usize;
    let mut messages = Vec::with_capacity(stored.len());
    for msg in &stored {
        bytes += msg.payload.len();
        if bytes > MAX_PAGE_BYTES && !messages.is_empty() {
            break;
        }
        messages.push(to_wire_for(msg, &caller.user, caller.device));
    }
    let next_seq = next_seq(&messages, stored.len(), limit as usize, head, from);
    Ok(Body::HistoryPage(messaging::HistoryPage {
        conversation_id: id,
        messages,
        head_seq: head,
        next_seq,
    }))
}

/// Messages read from the store per call while a page is filled: a page of
/// 500 large messages is read a few at a time and stops at
/// [`MAX_PAGE_BYTES`], instead of loading all 500 (up to 128 MB) first.
const READ_CHUNK: usize = 16;

/// Up to `limit` live messages from `from`, read in chunks until the page's
/// payload bytes pass [`MAX_PAGE_BYTES`] (the message that passes it is
/// included, so the caller sees that more exist).
async fn read_page(
    store: &dyn tern_store::Store,
    id: ConversationId,
    from: Seq,
    limit: usize,
    now: u64,
) -> Result<Vec<tern_store::StoredMessage>, Reject> {
    let mut page: Vec<tern_store::StoredMessage> = Vec::new();
    let mut bytes = 0usize;
    let mut next = from;
    while page.len() < limit && bytes <= MAX_PAGE_BYTES {
        let want = READ_CHUNK.min(limit - page.len());
        let chunk = store
            .messages(id, next, want, now)
            .await
            .map_err(Reject::store)?;
        let Some(last) = chunk.last() else { break };
        next = last.seq.saturating_add(1);
        let short = chunk.len() < want;
        bytes += chunk.iter().map(|m| m.payload.len()).sum::<usize>();
        page.extend(chunk);
        if short {
            break;
        }
    }
    Ok(page)
}

/// Where the next page starts: after the last message returned, or past the
/// head when the store had nothing more.
fn next_seq(page: &[tern_proto::Message], found: usize, limit: usize, head: Seq, from: Seq) -> Seq {
    match page.last() {
        Some(last) if page.len() < found || found >= limit => last.seq + 1,
        Some(_) => head + 1,
        None => (head + 1).max(from),
    }
}
