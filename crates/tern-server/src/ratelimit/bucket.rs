//! Token buckets by key (the classic rate limiter, as Signal's server and
//! most APIs use): each key holds up to `burst` tokens, refilled at a fixed
//! rate; an action takes one token or is told how long until one is back.
//!
//! Memory stays bounded: a bucket that has refilled completely equals a
//! new one, so idle keys are dropped by a sweep at most once a minute, and
//! past [`RateLimiter::with_capacity`]'s capacity the least recently used
//! half is dropped (a dropped key starts again with a full burst; to reach
//! that point a sender must first hold that many keys busy at once).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Buckets one limiter keeps by default before dropping the least recently
/// used half.
pub const MAX_BUCKETS: usize = 100_000;

/// How often full (idle) buckets are swept, milliseconds of the limiter's clock.
const SWEEP_EVERY_MS: u64 = 60_000;

/// Tokens a bucket may lack and still give one: the refill is in floating
/// point, so a bucket waited on for exactly the answered time may hold
/// 0.9999999999999999 tokens (1 an hour after 3600000 ms).
const EPSILON: f64 = 1e-9;

/// The wait answered when a limiter never refills (a rate of zero).
const NEVER: Duration = Duration::from_secs(3600);

struct Bucket {
    tokens: f64,
    updated_ms: u64,
}

/// A set of token buckets with one burst size and refill rate, by key.
pub struct RateLimiter<K> {
    burst: f64,
    per_ms: f64,
    capacity: usize,
    buckets: HashMap<K, Bucket>,
    swept_ms: u64,
}

impl<K: Hash + Eq> RateLimiter<K> {
    /// `burst` tokens at most (at least 1), refilled at `per_hour` an hour.
    pub fn per_hour(burst: u32, per_hour: u32) -> Self {
        Self::per_ms(burst, f64::from(per_hour) / 3_600_000.0)
    }

    /// `burst` tokens at most (at least 1), refilled at `per_minute` a minute.
    pub fn per_minute(burst: u32, per_minute: u32) -> Self {
        Self::per_ms(burst, f64::from(per_minute) / 60_000.0)
    }

    /// `burst` units at most (at least 1), refilled at `per_second` a
    /// second: a byte rate, taken with [`RateLimiter::take`].
    pub fn per_second(burst: u64, per_second: u64) -> Self {
        let mut limiter = Self::per_ms(1, per_second as f64 / 1000.0);
        limiter.burst = (burst as f64).max(1.0);
        limiter
    }

    fn per_ms(burst: u32, per_ms: f64) -> Self {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            per_ms,
            capacity: MAX_BUCKETS,
            buckets: HashMap::new(),
            swept_ms: 0,
        }
    }

    /// The same limiter keeping at most `capacity` buckets (at least 2).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(2);
        self
    }

    /// Takes one token of `key` at `now_ms` (milliseconds of any clock that
    /// does not go back), or says how long until one is back.
    ///
    /// # Errors
    /// The wait until the next token, at least 1 ms.
    pub fn check<Q>(&mut self, key: &Q, now_ms: u64) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.take(key, 1, now_ms)
    }

    /// Takes `n` tokens of `key` at once (bytes of an upload), or none and
    /// says how long until `n` are back. More than the burst takes the
    /// whole burst (the bucket never holds more).
    ///
    /// # Errors
    /// The wait until `n` tokens are back, at least 1 ms.
    pub fn take<Q>(&mut self, key: &Q, n: u64, now_ms: u64) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.evict(now_ms);
        let (burst, per_ms) = (self.burst, self.per_ms);
        let n = (n as f64).min(burst);
        if !self.buckets.contains_key(key) {
            self.buckets.insert(
                key.to_owned(),
                Bucket {
                    tokens: burst,
                    updated_ms: now_ms,
                },
            );
        }
        let Some(bucket) = self.buckets.get_mut(key) else {
            return Ok(());
        };
        refill(bucket, burst, per_ms, now_ms);
        if bucket.tokens + EPSILON >= n {
            bucket.tokens -= n;
            return Ok(());
        }
        Err(wait_for(n, bucket.tokens, per_ms))
    }

    /// Gives `n` tokens back to `key` (taken for bytes that never came),
    /// never past the burst.
    pub fn give_back<Q>(&mut self, key: &Q, n: u64, now_ms: u64)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let (burst, per_ms) = (self.burst, self.per_ms);
        if let Some(bucket) = self.buckets.get_mut(key) {
            refill(bucket, burst, per_ms, now_ms);
            bucket.tokens = (bucket.tokens + n as f64).min(burst);
        }
    }

    /// Whether [`RateLimiter::check`] would take a token now, without taking it.
    ///
    /// # Errors
    /// The wait until the next token, at least 1 ms.
    pub fn peek<Q>(&self, key: &Q, now_ms: u64) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(bucket) = self.buckets.get(key) else {
            return Ok(());
        };
        let elapsed = now_ms.saturating_sub(bucket.updated_ms) as f64;
        let tokens = (bucket.tokens + elapsed * self.per_ms).min(self.burst);
        match tokens + EPSILON >= 1.0 {
            true => Ok(()),
            false => Err(wait_for_one(tokens, self.per_ms)),
        }
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Drops full buckets once a minute, and the least recently used half
    /// when the limiter is at capacity.
    fn evict(&mut self, now_ms: u64) {
        let full = self.buckets.len() >= self.capacity;
        if full || now_ms.saturating_sub(self.swept_ms) >= SWEEP_EVERY_MS {
            self.swept_ms = now_ms;
            self.forget_full(now_ms);
        }
        if self.buckets.len() >= self.capacity.saturating_mul(3) / 4 && full {
            self.forget_oldest(self.capacity / 2);
        }
    }

    /// Drops buckets that have refilled completely (they equal a new one).
    fn forget_full(&mut self, now_ms: u64) {
        let (burst, per_ms) = (self.burst, self.per_ms);
        self.buckets
            .retain(|_, b| b.tokens + now_ms.saturating_sub(b.updated_ms) as f64 * per_ms < burst);
    }

    /// Keeps the `keep` most recently used buckets.
    fn forget_oldest(&mut self, keep: usize) {
        let mut times: Vec<u64> = self.buckets.values().map(|b| b.updated_ms).collect();
        let Some(cut) = times.len().checked_sub(keep) else {
            return;
        };
        let (_, oldest_kept, _) = times.select_nth_unstable(cut);
        let oldest_kept = *oldest_kept;
        let older = times.iter().filter(|t| **t < oldest_kept).count();
        // Of the buckets used at `oldest_kept` itself, drop as many as needed.
        let mut ties = cut.saturating_sub(older);
        self.buckets
            .retain(|_, b| match b.updated_ms.cmp(&oldest_kept) {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Equal if ties > 0 => {
                    ties -= 1;
                    false
                }
                _ => true,
            });
    }
}

fn refill(bucket: &mut Bucket, burst: f64, per_ms: f64, now_ms: u64) {
    let elapsed = now_ms.saturating_sub(bucket.updated_ms) as f64;
    bucket.tokens = (bucket.tokens + elapsed * per_ms).min(burst);
    bucket.updated_ms = bucket.updated_ms.max(now_ms);
}

fn wait_for_one(tokens: f64, per_ms: f64) -> Duration {
    wait_for(1.0, tokens, per_ms)
}

fn wait_for(n: f64, tokens: f64, per_ms: f64) -> Duration {
    if per_ms <= 0.0 {
        return NEVER;
    }
    // Less a rounding error, so that a whole number of milliseconds is not
    // answered as one more (1 token at 1 an hour is 3600000 ms, not 3600001).
    let ms = (n - tokens) / per_ms - 1e-6;
    Duration::from_millis((ms.ceil() as u64).max(1))
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_taken_at_once_and_given_back() {
        let mut limiter = RateLimiter::<String>::per_second(1000, 100);
        limiter.take("a", 800, 0).unwrap();
        assert_eq!(
            limiter.take("a", 300, 0),
            Err(Duration::from_millis(1000)),
            "200 left, 100 more come in a second"
        );
        limiter
            .take("b", 1000, 0)
            .expect("another key has its own burst");
        limiter.give_back("a", 500, 0);
        limiter.take("a", 700, 0).expect("700 after 500 came back");
        assert!(limiter.take("a", 1, 0).is_err());
        limiter
            .take("a", 5000, 10_000)
            .expect("a refilled burst covers any amount");
    }

    #[test]
    fn burst_then_refill_per_key() {
        let mut limiter = RateLimiter::<String>::per_minute(3, 60);
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

    #[test]
    fn the_answered_wait_is_exact_and_enough() {
        for (per_hour, wait_ms) in [(1, 3_600_000), (7, 514_286), (24, 150_000), (3600, 1000)] {
            let mut limiter = RateLimiter::<u64>::per_hour(1, per_hour);
            limiter.check(&1, 0).unwrap();
            let wait = limiter.check(&1, 0).unwrap_err();
            assert_eq!(wait, Duration::from_millis(wait_ms), "{per_hour} an hour");
            assert!(limiter.check(&1, wait_ms - 1).is_err());
            limiter.check(&1, wait_ms).expect("a token after the wait");
        }
    }

    #[test]
    fn peek_takes_nothing() {
        let mut limiter = RateLimiter::<u64>::per_minute(1, 60);
        assert!(limiter.peek(&7, 0).is_ok(), "an unknown key is full");
        limiter.check(&7, 0).unwrap();
        assert_eq!(limiter.peek(&7, 0), Err(Duration::from_millis(1000)));
        assert_eq!(limiter.peek(&7, 400), Err(Duration::from_millis(600)));
        assert!(limiter.peek(&7, 1000).is_ok());
        assert!(limiter.peek(&7, 1000).is_ok(), "still there");
        limiter.check(&7, 1000).unwrap();
    }

    #[test]
    fn idle_buckets_are_swept_and_busy_ones_kept() {
        let mut limiter = RateLimiter::<u64>::per_minute(2, 60);
        for key in 0..1000 {
            limiter.check(&key, 0).unwrap();
        }
        limiter.check(&5000, 0).unwrap();
        limiter.check(&5000, 0).unwrap();
        assert_eq!(limiter.len(), 1001);
        // A minute later every bucket but the one just used is full again.
        limiter.check(&5000, SWEEP_EVERY_MS).unwrap();
        assert_eq!(limiter.len(), 1, "only the key just used is held");
    }

    #[test]
    fn memory_is_bounded_by_the_capacity() {
        // Never refills: nothing is ever full, so only the cap bounds it.
        let mut limiter = RateLimiter::<u64>::per_minute(1, 0).with_capacity(100);
        for key in 0..10_000u64 {
            limiter.check(&key, key).unwrap();
            assert!(limiter.len() <= 100, "{} buckets", limiter.len());
        }
        // The most recently used keys are still limited.
        assert!(limiter.check(&9_999, 10_000).is_err());
        assert_eq!(limiter.check(&9_998, 10_000), Err(NEVER));
        // Keys all used in the same millisecond: still bounded.
        let mut same = RateLimiter::<u64>::per_minute(1, 0).with_capacity(100);
        for key in 0..1000u64 {
            same.check(&key, 5).unwrap();
            assert!(same.len() <= 100, "{} buckets", same.len());
        }
    }
}
