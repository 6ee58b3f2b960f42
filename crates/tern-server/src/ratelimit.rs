//! Token buckets keyed by (claimer, target), local to one shard. A claimer's
//! requests are checked on the shard holding its connection; a claimer with
//! connections on several shards gets one bucket per shard.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Buckets kept before idle ones are dropped.
const MAX_BUCKETS: usize = 100_000;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A set of token buckets with one burst size and refill rate.
pub struct RateLimiter {
    burst: f64,
    per_sec: f64,
    buckets: HashMap<(String, String), Bucket>,
}

impl RateLimiter {
    pub fn new(burst: u32, per_minute: u32) -> Self {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            per_sec: f64::from(per_minute) / 60.0,
            buckets: HashMap::new(),
        }
    }

    /// Takes one token for `(claimer, target)`, or says how long to wait.
    pub fn check(&mut self, claimer: &str, target: &str, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_BUCKETS {
            let (burst, per_sec) = (self.burst, self.per_sec);
            self.buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.updated).as_secs_f64() * per_sec < burst
            });
        }
        let burst = self.burst;
        let bucket = self
            .buckets
            .entry((claimer.to_owned(), target.to_owned()))
            .or_insert(Bucket {
                tokens: burst,
                updated: now,
            });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_sec;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        if self.per_sec <= 0.0 {
            return Err(Duration::from_secs(3600));
        }
        Err(Duration::from_secs_f64(
            (1.0 - bucket.tokens) / self.per_sec,
        ))
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill_per_pair() {
        let mut limiter = RateLimiter::new(3, 60);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check("a", "b", t0).is_ok());
        }
        let wait = limiter.check("a", "b", t0).unwrap_err();
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::from_millis(900),
            "{wait:?}"
        );
        assert!(
            limiter.check("a", "c", t0).is_ok(),
            "other target has its own bucket"
        );
        assert!(limiter.check("a", "b", t0 + Duration::from_secs(1)).is_ok());
    }
}
