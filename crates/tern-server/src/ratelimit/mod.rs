//! Rate limits, server-wide: one set of token buckets shared by every shard
//! (a user or an address with connections on several shards still gets one
//! bucket), on the server's clock.
//!
//! | limit | key | guards against |
//! |---|---|---|
//! | key claims | (claimer, target) | one account draining another's keys |
//! | key claims | target | many (fresh) accounts draining one user's one-time prekeys / KeyPackages |
//! | registrations | source address (IPv6: its /64) | mass account creation |
//! | link requests | source address | link-prompt spam from one host |
//! | link requests | target user | link-prompt spam at one user from many hosts |
//! | conversation creations | account | one account pulling others into endless conversations |
//! | invitations | inviting account | invitation spam (each one is stored and pushed to the invitee) |
//! | sends | account (all its devices) | one account flooding the store and its conversations' members |
//! | sends | conversation (all its senders) | many accounts flooding one conversation's members together |
//! | connection attempts | source address (IPv6: its /64) | handshake floods (TLS work per attempt) |
//! | upload bytes (per second, with a burst) | account | one account filling the disk or the uplink with attachments |
//!
//! Addresses in `rate_limit_exempt` (default: loopback) skip the address
//! limits, so a load generator or tests on the same host are not throttled.
//! Per-conversation send buckets live on the conversation's owner shard
//! ([`ConversationSends`], no lock); every other bucket is here, shared.
//! In a cluster each node keeps its own buckets (issue #13 moves them to the
//! shared store).

mod bucket;
mod traffic;

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::ServerConfig;
use crate::mesh::Reject;
use tern_proto::fb::ErrorCode;

pub use bucket::{RateLimiter, MAX_BUCKETS};
pub use traffic::{Admission, ConversationSends};

/// Stripes of the per-account send limiter: every send takes one lock, so
/// shards sending for different accounts rarely meet on the same one.
const SEND_STRIPES: usize = 16;

type Locked<K> = Mutex<RateLimiter<K>>;

/// The server-wide limits, shared by every shard.
pub struct ServerLimits {
    claims_by_pair: Locked<String>,
    claims_by_target: Locked<String>,
    registrations: Locked<IpAddr>,
    links_by_address: Locked<IpAddr>,
    links_by_user: Locked<String>,
    creations: Locked<String>,
    invitations: Locked<String>,
    /// Sends per account, striped by a hash of the handle.
    sends_by_account: Vec<Locked<String>>,
    /// Connection attempts per address whose source is not validated.
    connections: Locked<IpAddr>,
    /// Connection attempts per address that proved it receives (QUIC Retry token).
    validated_connections: Locked<IpAddr>,
    /// Attachment bytes uploaded per account (a byte bucket).
    uploads: Locked<String>,
    exempt: Vec<IpNet>,
}

impl ServerLimits {
    pub fn new(config: &ServerConfig) -> Self {
        fn hourly<K: Hash + Eq>(burst: u32, rate: u32) -> Locked<K> {
            Mutex::new(RateLimiter::per_hour(burst, rate))
        }
        fn minutely<K: Hash + Eq>(burst: u32, rate: u32) -> Locked<K> {
            Mutex::new(RateLimiter::per_minute(burst, rate))
        }
        let connections = || {
            minutely(
                config.connections_per_address_burst,
                config.connections_per_address_per_minute,
            )
        };
        ServerLimits {
            claims_by_pair: minutely(config.claim_burst, config.claim_refill_per_minute),
            claims_by_target: minutely(
                config.claims_per_target_burst,
                config.claims_per_target_per_minute,
            ),
            registrations: hourly(
                config.registrations_per_address_burst,
                config.registrations_per_address_per_hour,
            ),
            links_by_address: hourly(
                config.link_requests_per_address_burst,
                config.link_requests_per_address_per_hour,
            ),
            links_by_user: hourly(
                config.link_requests_per_user_burst,
                config.link_requests_per_user_per_hour,
            ),
            creations: hourly(
                config.conversations_per_account_burst,
                config.conversations_per_account_per_day.div_ceil(24),
            ),
            invitations: hourly(
                config.invitations_per_account_burst,
                config.invitations_per_account_per_day.div_ceil(24),
            ),
            sends_by_account: (0..SEND_STRIPES)
                .map(|_| {
                    Mutex::new(
                        RateLimiter::per_minute(
                            config.sends_per_account_burst,
                            config.sends_per_account_per_minute,
                        )
                        .with_capacity(MAX_BUCKETS / SEND_STRIPES),
                    )
                })
                .collect(),
            connections: connections(),
            validated_connections: connections(),
            uploads: Mutex::new(RateLimiter::per_second(
                config.upload_burst_bytes,
                config.upload_bytes_per_second,
            )),
            exempt: config.rate_limit_exempt.clone(),
        }
    }

    /// One key claim by `claimer` of `target`'s keys.
    ///
    /// # Errors
    /// `RateLimited` with a retry-after, naming the target.
    pub fn claim(&self, claimer: &str, target: &str, now_ms: u64) -> Result<(), Reject> {
        let pair = format!("{claimer}\u{0}{target}");
        let both = (&self.claims_by_pair, pair.as_str());
        take_both(both, (&self.claims_by_target, target), now_ms).map_err(|refused| {
            limited(refused.wait(), &format!("too many key claims for {target}"))
        })
    }

    /// One registration from `address`.
    ///
    /// # Errors
    /// `RateLimited` with a retry-after.
    pub fn register(&self, address: IpAddr, now_ms: u64) -> Result<(), Reject> {
        if self.is_exempt(address) {
            return Ok(());
        }
        take(&self.registrations, &address_key(address), now_ms)
            .map_err(|wait| limited(wait, "too many registrations from this address"))
    }

    /// One link request from `address` for `user`'s devices. The per-user
    /// limit applies to exempt addresses too: it protects the user.
    ///
    /// # Errors
    /// `RateLimited` with a retry-after.
    pub fn request_link(&self, address: IpAddr, user: &str, now_ms: u64) -> Result<(), Reject> {
        let for_user = |wait| limited(wait, &format!("too many link requests for {user}"));
        if self.is_exempt(address) {
            return take(&self.links_by_user, user, now_ms).map_err(for_user);
        }
        let key = address_key(address);
        take_both(
            (&self.links_by_address, &key),
            (&self.links_by_user, user),
            now_ms,
        )
        .map_err(|refused| match refused.second {
            Some(_) => for_user(refused.wait()),
            None => limited(refused.wait(), "too many link requests from this address"),
        })
    }

    /// Whether `user` may create a conversation now, taking nothing: a
    /// create checks it before its other checks, and takes the token
    /// ([`ServerLimits::create_conversation`]) only once they passed, so a
    /// refused create costs nothing (PROTOCOL.md §6.1).
    ///
    /// # Errors
    /// `RateLimited` with a retry-after.
    pub fn may_create_conversation(&self, user: &str, now_ms: u64) -> Result<(), Reject> {
        let limiter = self
            .creations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limiter
            .peek(user, now_ms)
            .map_err(|wait| limited(wait, "too many conversations created by this account"))
    }

    /// One conversation created by `user`.
    ///
    /// # Errors
    /// `RateLimited` with a retry-after.
    pub fn create_conversation(&self, user: &str, now_ms: u64) -> Result<(), Reject> {
        take(&self.creations, user, now_ms)
            .map_err(|wait| limited(wait, "too many conversations created by this account"))
    }

    /// One invitation sent by `user`.
    ///
    /// # Errors
    /// `RateLimited` with a retry-after.
    pub fn invite(&self, user: &str, now_ms: u64) -> Result<(), Reject> {
        take(&self.invitations, user, now_ms)
            .map_err(|wait| limited(wait, "too many invitations sent by this account"))
    }

    /// One message appended for `user`'s account, from any of its devices,
    /// into any conversation (see [`ConversationSends::take`], which calls
    /// it). Applies whatever the source address: it protects other users.
    ///
    /// # Errors
    /// `RateLimited` with a retry-after.
    pub fn send(&self, user: &str, now_ms: u64) -> Result<(), Reject> {
        let stripe = stripe_of(user, self.sends_by_account.len());
        let Some(limiter) = self.sends_by_account.get(stripe) else {
            return Ok(());
        };
        take(limiter, user, now_ms).map_err(|wait| {
            limited(
                wait,
                "too many messages sent by this account (all its devices together)",
            )
        })
    }

    /// `bytes` of attachment upload by `user` (all its devices), taken
    /// when the upload starts; whatever the source address.
    ///
    /// # Errors
    /// The wait until the bytes are allowed (`retry_after_ms` of the blob
    /// stream's `RateLimited`).
    pub fn upload(&self, user: &str, bytes: u64, now_ms: u64) -> Result<(), Duration> {
        let mut limiter = self
            .uploads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limiter.take(user, bytes, now_ms)
    }

    /// Gives back `bytes` taken by [`ServerLimits::upload`] that never
    /// came (the stream ended early), so a resume is not charged twice.
    pub fn upload_unused(&self, user: &str, bytes: u64, now_ms: u64) {
        let mut limiter = self
            .uploads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        limiter.give_back(user, bytes, now_ms);
    }

    /// What to do with a new QUIC connection attempt from `address`,
    /// before any TLS work: see [`Admission`]. Exempt addresses are always
    /// admitted.
    pub fn connection_attempt(&self, address: IpAddr, validated: bool, now_ms: u64) -> Admission {
        if self.is_exempt(address) {
            return Admission::Admit;
        }
        let key = address_key(address);
        match validated {
            true => match take(&self.validated_connections, &key, now_ms) {
                Ok(()) => Admission::Admit,
                Err(_) => Admission::Refuse,
            },
            false => match take(&self.connections, &key, now_ms) {
                Ok(()) => Admission::Admit,
                Err(_) => Admission::Validate,
            },
        }
    }

    fn is_exempt(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.exempt.iter().any(|net| net.contains(&address))
    }
}

fn take<K, Q>(limiter: &Locked<K>, key: &Q, now_ms: u64) -> Result<(), Duration>
where
    K: Borrow<Q> + Hash + Eq,
    Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
{
    // A panic while holding the lock leaves at worst one bucket half-updated.
    let mut limiter = limiter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    limiter.check(key, now_ms)
}

/// Which of two buckets refused, and how long each asks to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refused {
    first: Option<Duration>,
    second: Option<Duration>,
}

impl Refused {
    /// The longer wait: only then do both hold a token.
    fn wait(self) -> Duration {
        self.first
            .max(self.second)
            .unwrap_or(Duration::from_millis(1))
    }
}

/// One token from each of two buckets, or none: both are locked (always
/// first `a`, then `b`: every caller passes its pair in one fixed order, so
/// two callers never wait on each other), both are peeked, and only when
/// both hold a token are both taken (PROTOCOL.md §6.1: a refused request is
/// charged to no bucket).
fn take_both<K1, Q1, K2, Q2>(
    a: (&Locked<K1>, &Q1),
    b: (&Locked<K2>, &Q2),
    now_ms: u64,
) -> Result<(), Refused>
where
    K1: Borrow<Q1> + Hash + Eq,
    Q1: Hash + Eq + ToOwned<Owned = K1> + ?Sized,
    K2: Borrow<Q2> + Hash + Eq,
    Q2: Hash + Eq + ToOwned<Owned = K2> + ?Sized,
{
    let mut first =
        a.0.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut second =
        b.0.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
    let refused = Refused {
        first: first.peek(a.1, now_ms).err(),
        second: second.peek(b.1, now_ms).err(),
    };
    if refused.first.is_some() || refused.second.is_some() {
        return Err(refused);
    }
    // Cannot fail: both are locked and peek said yes.
    first.check(a.1, now_ms).map_err(|w| Refused {
        first: Some(w),
        second: None,
    })?;
    second.check(b.1, now_ms).map_err(|w| Refused {
        first: None,
        second: Some(w),
    })
}

/// The stripe of `user` among `stripes` (FNV-1a: cheap, and stable enough;
/// nothing depends on the spread but lock contention).
fn stripe_of(user: &str, stripes: usize) -> usize {
    let hash = user.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % stripes.max(1) as u64).unwrap_or(0)
}

/// `RateLimited` with `retry_after_ms` (at least 1) and a message saying
/// what was limited and when to retry.
fn limited(wait: Duration, what: &str) -> Reject {
    let retry_after_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
    let mut reject = Reject::new(
        ErrorCode::RateLimited,
        format!("{what}; retry in {retry_after_ms} ms"),
    );
    reject.retry_after_ms = retry_after_ms;
    reject
}

/// An IPv4-mapped IPv6 address as IPv4, so one host has one key.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// The bucket key of an address: IPv4 whole, IPv6 by its /64 (one host
/// usually holds a whole /64), as the /64's first address.
fn address_key(address: IpAddr) -> IpAddr {
    match canonical(address) {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn limits(adjust: impl FnOnce(&mut ServerConfig)) -> ServerLimits {
        let mut config = ServerConfig::default();
        adjust(&mut config);
        ServerLimits::new(&config)
    }

    #[test]
    fn claims_are_limited_per_target_whoever_claims() {
        let l = limits(|c| {
            c.claims_per_target_burst = 5;
            c.claims_per_target_per_minute = 1;
        });
        for i in 0..5 {
            l.claim(&format!("fresh{i}"), "bob", 0).unwrap();
        }
        let e = l.claim("fresh9", "bob", 0).unwrap_err();
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert!(e.retry_after_ms > 0);
        l.claim("fresh9", "carol", 0).unwrap();
    }

    #[test]
    fn address_limits_key_ipv6_by_its_64_and_skip_exempt_addresses() {
        let l = limits(|c| {
            c.registrations_per_address_burst = 1;
            c.rate_limit_exempt = vec!["10.0.0.0/8".parse().unwrap()];
        });
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        l.register(a, 0).unwrap();
        assert!(l.register(b, 0).is_err(), "same /64");
        l.register("2001:db8:1::1".parse().unwrap(), 0).unwrap();
        l.register("192.0.2.1".parse().unwrap(), 0).unwrap();
        assert!(l.register("::ffff:192.0.2.1".parse().unwrap(), 0).is_err());
        for _ in 0..10 {
            l.register("10.1.2.3".parse().unwrap(), 0).unwrap();
        }
    }

    #[test]
    fn link_requests_are_limited_per_address_and_per_user() {
        let l = limits(|c| {
            c.link_requests_per_address_burst = 2;
            c.link_requests_per_user_burst = 3;
            c.rate_limit_exempt = Vec::new();
        });
        let (x, y): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        l.request_link(x, "bob", 0).unwrap();
        l.request_link(x, "carol", 0).unwrap();
        assert!(l.request_link(x, "dave", 0).is_err(), "per address");
        l.request_link(y, "bob", 0).unwrap();
        l.request_link(y, "bob", 0).unwrap();
        assert!(
            l.request_link("192.0.2.3".parse().unwrap(), "bob", 0)
                .is_err(),
            "per user, from any address"
        );
    }

    fn full<K: Borrow<Q> + Hash + Eq, Q: Hash + Eq + ?Sized>(l: &Locked<K>, key: &Q) -> bool {
        l.lock().unwrap().peek(key, 0).is_ok()
    }

    /// PROTOCOL.md §6.1: a request refused by one of its two buckets takes
    /// no token from the other (bursts of 1, so a token taken would show).
    #[test]
    fn a_request_refused_by_one_bucket_is_charged_to_neither() {
        let l = limits(|c| {
            c.claim_burst = 1;
            c.claims_per_target_burst = 1;
            c.link_requests_per_address_burst = 1;
            c.link_requests_per_user_burst = 1;
            c.rate_limit_exempt = Vec::new();
        });
        l.claim("alice", "bob", 0).unwrap();
        assert!(l.claim("carol", "bob", 0).is_err(), "bob's target bucket");
        assert!(full(&l.claims_by_pair, "carol\u{0}bob"));
        l.claim("carol", "dave", 0).unwrap();
        assert!(l.claim("carol", "dave", 0).is_err(), "the pair's bucket");
        assert!(full(&l.claims_by_target, "erin"));

        let (x, y): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        l.request_link(x, "bob", 0).unwrap();
        let refused = l.request_link(y, "bob", 0).unwrap_err();
        assert!(refused.message.contains("for bob"), "{}", refused.message);
        assert!(full(&l.links_by_address, &address_key(y)));
        let refused = l.request_link(x, "carol", 0).unwrap_err();
        assert!(refused.message.contains("address"), "{}", refused.message);
        assert!(full(&l.links_by_user, "carol"));
        l.request_link(y, "carol", 0).unwrap();
    }
}
