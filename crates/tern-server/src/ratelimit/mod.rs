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
//!
//! Addresses in `rate_limit_exempt` (default: loopback) skip the address
//! limits, so a load generator or tests on the same host are not throttled.
//! In a cluster each node keeps its own buckets (issue #13 moves them to the
//! shared store).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use ipnet::IpNet;

use crate::config::ServerConfig;
use crate::mesh::Reject;
use tern_proto::fb::ErrorCode;

/// Buckets kept per limiter before full (idle) ones are dropped.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

/// A set of token buckets with one burst size and refill rate, by key.
pub struct RateLimiter {
    burst: f64,
    per_ms: f64,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    /// `burst` tokens at most, refilled at `per_hour` an hour.
    pub fn per_hour(burst: u32, per_hour: u32) -> Self {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            per_ms: f64::from(per_hour) / 3_600_000.0,
            buckets: HashMap::new(),
        }
    }

    /// `burst` tokens at most, refilled at `per_minute` a minute.
    pub fn per_minute(burst: u32, per_minute: u32) -> Self {
        Self::per_hour(burst, per_minute.saturating_mul(60))
    }

    /// Takes one token of `key` at `now_ms`, or says how long to wait.
    pub fn check(&mut self, key: &str, now_ms: u64) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_BUCKETS {
            self.forget_full(now_ms);
        }
        let (burst, per_ms) = (self.burst, self.per_ms);
        let bucket = self.buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(bucket.updated_ms) as f64;
        bucket.tokens = (bucket.tokens + elapsed * per_ms).min(burst);
        bucket.updated_ms = bucket.updated_ms.max(now_ms);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        if per_ms <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_millis(
            ((1.0 - bucket.tokens) / per_ms).ceil() as u64,
        ))
    }

    /// Drops buckets that have refilled completely (they equal a new one).
    fn forget_full(&mut self, now_ms: u64) {
        let (burst, per_ms) = (self.burst, self.per_ms);
        self.buckets
            .retain(|_, b| b.tokens + now_ms.saturating_sub(b.updated_ms) as f64 * per_ms < burst);
    }
}

/// The server-wide limits, shared by every shard.
pub struct ServerLimits {
    claims_by_pair: Mutex<RateLimiter>,
    claims_by_target: Mutex<RateLimiter>,
    registrations: Mutex<RateLimiter>,
    links_by_address: Mutex<RateLimiter>,
    links_by_user: Mutex<RateLimiter>,
    creations: Mutex<RateLimiter>,
    invitations: Mutex<RateLimiter>,
    exempt: Vec<IpNet>,
}

impl ServerLimits {
    pub fn new(config: &ServerConfig) -> Self {
        let limiter = |burst, rate| Mutex::new(RateLimiter::per_hour(burst, rate));
        ServerLimits {
            claims_by_pair: Mutex::new(RateLimiter::per_minute(
                config.claim_burst,
                config.claim_refill_per_minute,
            )),
            claims_by_target: Mutex::new(RateLimiter::per_minute(
                config.claims_per_target_burst,
                config.claims_per_target_per_minute,
            )),
            registrations: limiter(
                config.registrations_per_address_burst,
                config.registrations_per_address_per_hour,
            ),
            links_by_address: limiter(
                config.link_requests_per_address_burst,
                config.link_requests_per_address_per_hour,
            ),
            links_by_user: limiter(
                config.link_requests_per_user_burst,
                config.link_requests_per_user_per_hour,
            ),
            creations: limiter(
                config.conversations_per_account_burst,
                config.conversations_per_account_per_day.div_ceil(24),
            ),
            invitations: limiter(
                config.invitations_per_account_burst,
                config.invitations_per_account_per_day.div_ceil(24),
            ),
            exempt: config.rate_limit_exempt.clone(),
        }
    }

    /// One key claim by `claimer` of `target`'s keys.
    ///
    /// # Errors
    /// `RateLimited` with a retry-after, naming the target.
    pub fn claim(&self, claimer: &str, target: &str, now_ms: u64) -> Result<(), Reject> {
        let pair = format!("{claimer}\u{0}{target}");
        take(&self.claims_by_pair, &pair, now_ms)
            .and_then(|()| take(&self.claims_by_target, target, now_ms))
            .map_err(|wait| limited(wait, &format!("too many key claims for {target}")))
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
        if !self.is_exempt(address) {
            take(&self.links_by_address, &address_key(address), now_ms)
                .map_err(|wait| limited(wait, "too many link requests from this address"))?;
        }
        take(&self.links_by_user, user, now_ms)
            .map_err(|wait| limited(wait, &format!("too many link requests for {user}")))
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

    fn is_exempt(&self, address: IpAddr) -> bool {
        let address = canonical(address);
        self.exempt.iter().any(|net| net.contains(&address))
    }
}

fn take(limiter: &Mutex<RateLimiter>, key: &str, now_ms: u64) -> Result<(), Duration> {
    // A panic while holding the lock leaves at worst one bucket half-updated.
    let mut limiter = limiter
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    limiter.check(key, now_ms)
}

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
/// usually holds a whole /64).
fn address_key(address: IpAddr) -> String {
    match canonical(address) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_key() {
        let mut limiter = RateLimiter::per_minute(3, 60);
        for _ in 0..3 {
            assert!(limiter.check("a", 0).is_ok());
        }
        let wait = limiter.check("a", 0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(1000));
        assert!(
            limiter.check("b", 0).is_ok(),
            "another key has its own bucket"
        );
        assert!(limiter.check("a", 999).is_err());
        assert!(limiter.check("a", 1000).is_ok());
    }

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
}
