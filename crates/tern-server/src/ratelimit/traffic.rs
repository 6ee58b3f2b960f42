//! The traffic limits: sends per conversation (kept by the conversation's
//! owner shard) joined with sends per account ([`ServerLimits::send`]), and
//! what the accept loop does with a connection attempt ([`Admission`]).
//!
//! Where the send buckets live: a conversation is sequenced by exactly one
//! owner shard, so its bucket is a plain field of that shard's owner (no
//! lock, no sharing). An account's devices may be connected to any shards
//! and its sends applied on the owners of many conversations, so its bucket
//! is server-wide ([`ServerLimits`], striped locks); in a cluster each node
//! keeps its own, like the other limits.

use super::{limited, RateLimiter, ServerLimits};
use crate::config::ServerConfig;
use crate::mesh::Reject;
use tern_store::ConversationId;

/// What the accept loop does with a new QUIC connection attempt, decided
/// before any TLS work (quinn's `Incoming`).
///
/// An address has two buckets of `connections_per_address_*`: one for
/// attempts whose source address is not validated and one for attempts
/// that proved it (they carry a QUIC Retry token, RFC 9000 §8.1.2). Past
/// the first the server asks for validation instead of refusing, so that
/// packets with a forged source address, which cannot answer a Retry,
/// cannot use up a real host's attempts; past the second it refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go on with the handshake.
    Admit,
    /// Answer with a QUIC Retry (`Incoming::retry`): a real client comes
    /// back at once with a token, a forged address never does.
    Validate,
    /// Answer with `CONNECTION_REFUSED` (`Incoming::refuse`); the client
    /// sees the connection refused and may try again later.
    Refuse,
}

/// The per-conversation send buckets of one owner shard.
pub struct ConversationSends {
    buckets: RateLimiter<ConversationId>,
}

impl ConversationSends {
    /// `sends_per_conversation_burst`, refilled at
    /// `sends_per_conversation_per_minute`.
    pub fn new(config: &ServerConfig) -> Self {
        ConversationSends {
            buckets: RateLimiter::per_minute(
                config.sends_per_conversation_burst,
                config.sends_per_conversation_per_minute,
            ),
        }
    }

    /// One message appended to conversation `id` by `user`: takes a token
    /// of the conversation's bucket and of the account's (`limits`), both
    /// or neither, so a refused send costs nothing.
    ///
    /// # Errors
    /// `RateLimited` with the retry-after of the bucket that is empty.
    pub fn take(
        &mut self,
        limits: &ServerLimits,
        user: &str,
        id: ConversationId,
        now_ms: u64,
    ) -> Result<(), Reject> {
        let refused = |wait| {
            limited(
                wait,
                "too many messages in this conversation (all its members together)",
            )
        };
        self.buckets.peek(&id, now_ms).map_err(refused)?;
        limits.send(user, now_ms)?;
        // Cannot fail: the owner is single-threaded and peek said yes.
        self.buckets.check(&id, now_ms).map_err(refused)
    }

    /// Conversations holding a bucket now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no conversation holds a bucket.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use tern_proto::fb::ErrorCode;

    fn config(adjust: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
        let mut config = ServerConfig::default();
        adjust(&mut config);
        config
    }

    #[test]
    fn sends_are_limited_per_account_and_per_conversation_both_or_neither() {
        let c = config(|c| {
            c.sends_per_account_burst = 3;
            c.sends_per_account_per_minute = 60;
            c.sends_per_conversation_burst = 4;
            c.sends_per_conversation_per_minute = 60;
        });
        let limits = ServerLimits::new(&c);
        let mut sends = ConversationSends::new(&c);
        for id in [1, 2, 3] {
            sends.take(&limits, "mallory", id, 0).unwrap();
        }
        let e = sends.take(&limits, "mallory", 4, 0).unwrap_err();
        assert_eq!((e.code, e.retry_after_ms), (ErrorCode::RateLimited, 1000));
        assert!(e.message.contains("this account"), "{}", e.message);
        // Mallory's refusal took nothing of conversation 1: three more fit.
        for user in ["a", "b", "c"] {
            sends.take(&limits, user, 1, 0).unwrap();
        }
        let e = sends.take(&limits, "d", 1, 0).unwrap_err();
        assert!(e.message.contains("this conversation"), "{}", e.message);
        // ...and d's refusal took nothing of d's account.
        for id in [5, 6, 7] {
            sends.take(&limits, "d", id, 0).unwrap();
        }
        sends.take(&limits, "mallory", 4, 1000).unwrap();
        assert_eq!(sends.len(), 7);
    }

    #[test]
    fn connection_attempts_ask_for_validation_then_refuse() {
        let c = config(|c| {
            c.connections_per_address_burst = 2;
            c.connections_per_address_per_minute = 60;
            c.rate_limit_exempt = vec!["10.0.0.0/8".parse().unwrap()];
        });
        let limits = ServerLimits::new(&c);
        let host: IpAddr = "192.0.2.7".parse().unwrap();
        let attempt = |validated, now| limits.connection_attempt(host, validated, now);
        assert_eq!(attempt(false, 0), Admission::Admit);
        assert_eq!(attempt(false, 0), Admission::Admit);
        // Forged packets could have spent those: a validated host goes on.
        assert_eq!(attempt(false, 0), Admission::Validate);
        assert_eq!(attempt(true, 0), Admission::Admit);
        assert_eq!(attempt(true, 0), Admission::Admit);
        assert_eq!(attempt(true, 0), Admission::Refuse);
        assert_eq!(attempt(true, 999), Admission::Refuse);
        assert_eq!(attempt(true, 1000), Admission::Admit, "refilled");
        assert_eq!(attempt(false, 1000), Admission::Admit);
        let v6 = |a: &str, validated| limits.connection_attempt(a.parse().unwrap(), validated, 0);
        assert_eq!(v6("2001:db8::1", false), Admission::Admit);
        assert_eq!(v6("2001:db8::2", false), Admission::Admit);
        assert_eq!(v6("2001:db8::3", false), Admission::Validate, "one /64");
        assert_eq!(v6("2001:db8:0:1::1", false), Admission::Admit);
        for _ in 0..10 {
            assert_eq!(
                limits.connection_attempt("10.9.8.7".parse().unwrap(), false, 0),
                Admission::Admit,
                "exempt"
            );
        }
    }
}
