//! How tern's unsigned values are stored in CQL's signed columns: a u64 as a
//! `bigint` and a u32 as an `int` with the top bit flipped, which keeps the
//! order (so clustering ranges and `LIMIT` pages follow the unsigned order)
//! and round-trips every value. Also the TTL a message row gets.

/// A u64 as an order-preserving bigint.
pub(crate) fn enc(v: u64) -> i64 {
    i64::from_ne_bytes((v ^ (1 << 63)).to_ne_bytes())
}

/// The u64 [`enc`] stored.
pub(crate) fn dec(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes()) ^ (1 << 63)
}

/// A u32 as an order-preserving int.
pub(crate) fn enc32(v: u32) -> i32 {
    i32::from_ne_bytes((v ^ (1 << 31)).to_ne_bytes())
}

/// The u32 [`enc32`] stored.
pub(crate) fn dec32(v: i32) -> u32 {
    u32::from_ne_bytes(v.to_ne_bytes()) ^ (1 << 31)
}

/// Messages per partition of the `messages` table: message `seq` lives in
/// bucket `seq / BUCKET_SEQS` (Discord's fixed-range buckets), so no
/// partition holds more than this many rows.
pub const BUCKET_SEQS: u64 = 4096;

/// The bucket of `seq`.
pub(crate) fn bucket(seq: u64) -> i64 {
    enc(seq / BUCKET_SEQS)
}

/// Extra seconds every message TTL gets past its expiry, so that clock skew
/// between tern nodes and ScyllaDB never drops a row before `expires_at_ms`
/// (reads filter expired rows by `expires_at_ms` anyway).
pub const TTL_GRACE_SECS: u64 = 60;

/// The largest TTL ScyllaDB accepts (20 years, in seconds).
pub const MAX_TTL_SECS: u64 = 630_720_000;

/// The CQL TTL (seconds, 0 = none) of a message sent at `server_time_ms`
/// that expires at `expires_at_ms`: its lifetime rounded up, plus
/// [`TTL_GRACE_SECS`]; none when that is over [`MAX_TTL_SECS`] (a message
/// that never expires has `expires_at_ms = u64::MAX`). The lifetime is
/// measured from the message's own server time, so a row lives as long as
/// the message, whatever the clock of the node that writes it.
pub(crate) fn ttl_secs(server_time_ms: u64, expires_at_ms: u64) -> i32 {
    let lifetime_ms = expires_at_ms.saturating_sub(server_time_ms);
    let secs = lifetime_ms.div_ceil(1000).saturating_add(TTL_GRACE_SECS);
    if secs > MAX_TTL_SECS {
        0
    } else {
        i32::try_from(secs).unwrap_or(0)
    }
}

/// How long an expiry index entry outlives its message's TTL: the time a
/// lagging sweeper has to free the message's idempotency key early. Past
/// it the entry expires too (the message and its key went by their own
/// TTL), so the index stays bounded even when no sweeper runs.
pub const INDEX_GRACE_SECS: u64 = 24 * 3600;

/// The CQL TTL of the expiry index entry (and hour marker) of a message
/// with TTL [`ttl_secs`]: that plus [`INDEX_GRACE_SECS`], at most
/// [`MAX_TTL_SECS`]; 0 (none) for a message that is not indexed.
pub(crate) fn index_ttl_secs(server_time_ms: u64, expires_at_ms: u64) -> i32 {
    let ttl = ttl_secs(server_time_ms, expires_at_ms);
    if ttl == 0 {
        return 0;
    }
    let secs = u64::from(ttl.unsigned_abs())
        .saturating_add(INDEX_GRACE_SECS)
        .min(MAX_TTL_SECS);
    i32::try_from(secs).unwrap_or(0)
}

/// Hours of the expiry index: entries expiring at `ms` go to hour `ms / HOUR_MS`.
pub(crate) const HOUR_MS: u64 = 3_600_000;

/// Shards of one hour of the expiry index (by conversation id).
pub(crate) const EXPIRY_SHARDS: u64 = 16;

/// Whether a message expiring at `expires_at_ms` is indexed for the
/// sweeper: not when it never expires (no TTL either).
pub(crate) fn expires(server_time_ms: u64, expires_at_ms: u64) -> bool {
    ttl_secs(server_time_ms, expires_at_ms) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip_and_keep_order() {
        let values = [
            0,
            1,
            4095,
            1 << 62,
            (1 << 63) - 1,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        for pair in values.windows(2) {
            if let [a, b] = pair {
                assert!(enc(*a) < enc(*b), "{a} < {b}");
            }
        }
        for v in values {
            assert_eq!(dec(enc(v)), v);
        }
        for v in [0, 1, u32::MAX / 2, u32::MAX / 2 + 1, u32::MAX] {
            assert_eq!(dec32(enc32(v)), v);
        }
        assert!(enc32(1) < enc32(u32::MAX));
    }

    #[test]
    fn ttls_cover_the_lifetime_with_grace() {
        assert_eq!(ttl_secs(10_000, 20_000), 10 + TTL_GRACE_SECS as i32);
        assert_eq!(ttl_secs(10_000, 20_001), 11 + TTL_GRACE_SECS as i32);
        assert_eq!(
            ttl_secs(10_000, 5_000),
            TTL_GRACE_SECS as i32,
            "already expired"
        );
        assert_eq!(ttl_secs(10_000, u64::MAX), 0, "never expires");
        assert!(!expires(10_000, u64::MAX) && expires(0, 1));
        let grace = i32::try_from(INDEX_GRACE_SECS).unwrap_or(0);
        assert_eq!(
            index_ttl_secs(10_000, 20_000),
            10 + TTL_GRACE_SECS as i32 + grace
        );
        assert_eq!(index_ttl_secs(10_000, u64::MAX), 0);
        let near_max = 10_000 + (MAX_TTL_SECS - 100) * 1000;
        assert_eq!(
            index_ttl_secs(10_000, near_max),
            MAX_TTL_SECS as i32,
            "capped at ScyllaDB's 20 years"
        );
        assert_eq!(bucket(4095), enc(0));
        assert_eq!(bucket(4096), enc(1));
    }
}
