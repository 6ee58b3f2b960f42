//! Giving freed memory back to the kernel once a wave of connections has
//! ended (issue 9 item 11).
//!
//! Each shard is a thread, and glibc's malloc gives each thread its own
//! arena. What a shard frees when its connections close stays in that
//! arena: it is reused by the next connections, but the arena returns pages
//! to the kernel only from its top, and one long-lived allocation above the
//! freed ones pins them all. Measured: 750 connections that never
//! authenticate take the server from 11 to 38 MiB; once all are closed the
//! allocator holds under 1 MiB of them in use, yet RSS stays at 38 MiB
//! (docs/PERFORMANCE.md, "Unauthenticated connection waves"). glibc's
//! `malloc_trim(0)` returns every wholly free page of every arena: RSS goes
//! back to 17 MiB (pages that still hold a live allocation next to freed
//! ones stay). mimalloc as the global allocator was measured too, and kept
//! more (same section).
//!
//! So `tern serve` watches the number of open connections once a second.
//! When it has fallen by at least [`MIN_DROP`] and to at most half of its
//! peak, it trims [`TRIM_AFTER`] seconds after that reading: 1, 2, 4 and 8,
//! because a closed connection's state is freed only when quinn has drained
//! it (three probe timeouts, seconds when a handshake storm has inflated the
//! round-trip estimate). Steady traffic, with a stable number of
//! connections, never trims.

use std::time::Duration;

/// Connections that must have closed since the peak before trimming.
pub const MIN_DROP: u64 = 64;
/// How often the number of open connections is read.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Readings after a fall at which to trim.
pub const TRIM_AFTER: [u32; 4] = [1, 2, 4, 8];

/// When to trim, from the number of open connections read every [`INTERVAL`].
#[derive(Debug, Default)]
pub struct TrimPolicy {
    /// The most connections open since the last fall.
    peak: u64,
    /// Readings since the last fall, while trims after it are still due.
    since_fall: Option<u32>,
}

impl TrimPolicy {
    /// Reads `open` connections now; true when it is time to trim.
    pub fn observe(&mut self, open: u64) -> bool {
        self.peak = self.peak.max(open);
        if self.peak.saturating_sub(open) >= MIN_DROP && open <= self.peak / 2 {
            // A fall (again): trims are due 1, 2, 4 and 8 readings from now.
            self.peak = open;
            self.since_fall = Some(0);
            return false;
        }
        let Some(n) = self.since_fall else {
            return false;
        };
        let n = n + 1;
        let last = TRIM_AFTER.last().copied().unwrap_or(0);
        self.since_fall = (n < last).then_some(n);
        TRIM_AFTER.contains(&n)
    }
}

/// Reads `open()` (the server's count of open connections) every
/// [`INTERVAL`] until the runtime ends, trimming as [`TrimPolicy`] says.
pub async fn watch(open: impl Fn() -> u64) {
    let mut policy = TrimPolicy::default();
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = open();
        if policy.observe(now) {
            let started = std::time::Instant::now();
            let released = release_free_memory();
            tracing::debug!(
                open = now,
                released,
                took_us = started.elapsed().as_micros() as u64,
                "connections closed: free allocator memory returned to the kernel"
            );
        }
    }
}

/// Returns the allocator's free pages to the kernel; true if any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_free_memory() -> bool {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: glibc's malloc_trim takes no pointer and may be called from
    // any thread at any time; it locks each arena while it walks it.
    unsafe { malloc_trim(0) != 0 }
}

/// Other allocators return memory by themselves (or offer no call for it).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The readings at which `p` trims, of the `open` counts given.
    fn trims(p: &mut TrimPolicy, open: &[u64]) -> Vec<usize> {
        open.iter()
            .enumerate()
            .filter(|(_, o)| p.observe(**o))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn trims_a_few_times_after_a_wave_has_closed_then_stops() {
        let mut p = TrimPolicy::default();
        // A wave of 750 opens: nothing to do.
        assert!(trims(&mut p, &[0, 200, 750, 750]).is_empty());
        // It closes (reading 1 sees the fall); trims 1, 2, 4 and 8 readings
        // later, then never again while nothing changes much.
        let mut closing = vec![300, 0];
        closing.extend([0; 20]);
        assert_eq!(trims(&mut p, &closing), vec![2, 3, 5, 9]);
        assert!(trims(&mut p, &[40, 10, 0, 60, 0, 0]).is_empty());
    }

    #[test]
    fn a_wave_that_opens_while_trims_are_due_is_trimmed_too() {
        let mut p = TrimPolicy::default();
        assert!(trims(&mut p, &[250, 250, 0]).is_empty());
        // Trims 1, 2 and 4 of the first wave (the second is open by then),
        // then 1 and 2 of the second.
        assert_eq!(
            trims(&mut p, &[0, 0, 250, 250, 0, 0, 0]),
            vec![0, 1, 3, 5, 6]
        );
    }

    #[test]
    fn steady_or_briefly_dipping_connections_never_trim() {
        let mut p = TrimPolicy::default();
        assert!(trims(&mut p, &[1000, 990, 1010, 600, 1000, 980, 1000]).is_empty());
    }

    #[test]
    fn a_gradual_fall_trims_after_each_halving_only() {
        let mut p = TrimPolicy::default();
        let open: Vec<u64> = (0..=100).rev().map(|k| k * 100).collect();
        let n = trims(&mut p, &open).len();
        assert!((4..=24).contains(&n), "{n} trims over 100 readings");
    }

    #[test]
    fn trimming_is_safe_to_call() {
        let v: Vec<Vec<u8>> = (0..1000).map(|_| vec![1u8; 4096]).collect();
        drop(v);
        let _ = release_free_memory();
    }
}
