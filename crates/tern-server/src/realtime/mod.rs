//! Realtime signals (issue 11): what travels between online devices and is
//! never stored. This module owns the QUIC datagram receive path of a
//! connection ([`on_datagram`]: decode, budget, route) and the per-connection
//! datagram budget; [`typing`] owns typing indicators on the owner shard;
//! [`calls`] relays and briefly holds call signals; [`turn`] hands out
//! TURN relay credentials for calls.
//!
//! A datagram (RFC 9221) carries exactly one frame FlatBuffer, without the
//! stream's 4-byte length prefix (the datagram has its own length), with
//! request id 0: it is never answered. Only bodies listed in
//! docs/PROTOCOL.md §1.4 (today `Typing`) may come as datagrams. Anything
//! else (a FlatBuffer that does not verify, another body, a non-zero request
//! id, more datagrams than the connection's budget) is dropped and counted
//! (`ServerStats::datagrams_dropped`), never answered, and never closes the
//! connection: datagrams are unreliable, so a sender cannot tell a drop from
//! a loss anyway.

pub mod calls;
pub mod turn;
pub mod typing;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::command::OwnerCommand;
use crate::mesh::{Caller, OwnerRequest, Reject};
use crate::shard::{ServerStats, ShardCtx};
use tern_proto::{Body, Frame, Limits};

/// Datagrams one connection may send at once before they are dropped.
pub const DATAGRAM_BURST: f64 = 16.0;
/// Datagrams per second one connection regains.
pub const DATAGRAMS_PER_SECOND: f64 = 8.0;

/// One connection's datagram budget: a token bucket on the server clock,
/// checked before a datagram costs anything beyond its decoding (so a flood
/// on one connection never reaches the owner shards).
#[derive(Debug)]
pub struct DatagramBudget {
    tokens: f64,
    updated_ms: u64,
}

impl Default for DatagramBudget {
    fn default() -> Self {
        DatagramBudget {
            tokens: DATAGRAM_BURST,
            updated_ms: 0,
        }
    }
}

impl DatagramBudget {
    /// Takes one datagram's token at `now_ms`; false if none is left.
    pub fn take(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.updated_ms) as f64;
        self.updated_ms = self.updated_ms.max(now_ms);
        self.tokens = (self.tokens + elapsed * DATAGRAMS_PER_SECOND / 1000.0).min(DATAGRAM_BURST);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// The command a datagram carries, if it is one a datagram may carry.
pub fn decode_datagram(datagram: &[u8], limits: &Limits) -> Option<OwnerCommand> {
    let frame = Frame::decode(datagram, limits).ok()?;
    match (frame.request_id, frame.body) {
        (0, Body::Typing(typing)) => Some(OwnerCommand::Typing(typing)),
        _ => None,
    }
}

/// Handles one datagram of an authenticated connection: within the
/// connection's budget, a well-formed `Typing` goes to its conversation's
/// owner like a request whose answer nobody reads; anything else is dropped
/// and counted.
pub async fn on_datagram(
    ctx: &ShardCtx,
    caller: &Caller,
    budget: &mut DatagramBudget,
    limits: &Limits,
    datagram: Bytes,
) {
    let command = match budget.take(ctx.clock.now_ms()) {
        true => decode_datagram(&datagram, limits),
        false => None,
    };
    let Some(command) = command else {
        ServerStats::add(&ctx.stats.datagrams_dropped, 1);
        return;
    };
    ctx.stats.telemetry.frame_in(&datagram);
    let (reply, _unread) = oneshot::channel();
    let conversation = command.conversation();
    let request = OwnerRequest::Command {
        request_id: 0,
        caller: caller.clone(),
        command,
        reply,
    };
    // Fails only while shutting down: the signal is lost, as a datagram may be.
    let _ = ctx.mesh.to_owner(conversation, request).await;
}

/// Whether `user` blocks the caller or the caller blocks `user` (typing and
/// call signals reach neither side of a block).
async fn blocked(ctx: &ShardCtx, caller: &Caller, user: &str) -> Result<bool, Reject> {
    let store = ctx.store.as_ref();
    let either = store
        .is_blocked(user, &caller.user)
        .await
        .map_err(Reject::store)?
        || store
            .is_blocked(&caller.user, user)
            .await
            .map_err(Reject::store)?;
    Ok(either)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tern_proto::body::typing::Typing;

    #[test]
    fn budget_allows_a_burst_then_its_rate() {
        let mut budget = DatagramBudget::default();
        let taken = (0..100).filter(|_| budget.take(1_000)).count();
        assert_eq!(taken, DATAGRAM_BURST as usize);
        assert!(!budget.take(1_000));
        assert!(budget.take(1_125), "one token back after 125 ms at 8/s");
        assert!(!budget.take(1_125));
    }

    #[test]
    fn only_typing_with_request_id_zero_is_taken() {
        let limits = Limits::server_inbound();
        let typing = Typing {
            conversation_id: 7,
            typing: true,
        };
        let bare = |id: u64, body: Body| Frame::new(id, body).encode().slice(4..);
        assert!(matches!(
            decode_datagram(&bare(0, typing.into()), &limits),
            Some(OwnerCommand::Typing(t)) if t == typing
        ));
        assert!(decode_datagram(&bare(5, typing.into()), &limits).is_none());
        let sync = tern_proto::body::sync::Sync {
            all: true,
            after: 0,
            limit: 10,
        };
        assert!(decode_datagram(&bare(0, sync.into()), &limits).is_none());
        assert!(decode_datagram(b"\x01\x02garbage", &limits).is_none());
        assert!(decode_datagram(&[], &limits).is_none());
        // With the stream's length prefix left on, it does not verify.
        let prefixed = Frame::new(0, typing).encode();
        assert!(decode_datagram(&prefixed, &limits).is_none());
    }
}
