//! The server's clock: wall time in milliseconds since the Unix epoch, read
//! by every command that stamps or expires something (server time of a
//! message, expiry, account and device creation, the expiry sweeper). The
//! server owns it and passes it in, so a test drives time with a manual
//! clock instead of sleeping (cf. quinn-proto, which takes `now` as input).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A cheap, cloneable handle on the server's time source.
#[derive(Clone, Debug)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    /// Moves only when [`Clock::advance`] is called.
    Manual(AtomicU64),
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl Clock {
    /// The operating system's wall clock (the default).
    pub fn system() -> Self {
        Clock(Arc::new(Source::System))
    }

    /// A clock that starts at `start_ms` and moves only by [`Clock::advance`].
    pub fn manual(start_ms: u64) -> Self {
        Clock(Arc::new(Source::Manual(AtomicU64::new(start_ms))))
    }

    /// Milliseconds since the Unix epoch (0 if the system clock is before it).
    pub fn now_ms(&self) -> u64 {
        match &*self.0 {
            Source::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            Source::Manual(now) => now.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward by `ms`; returns false (and does
    /// nothing) on the system clock.
    pub fn advance(&self, ms: u64) -> bool {
        match &*self.0 {
            Source::System => false,
            Source::Manual(now) => {
                now.fetch_add(ms, Ordering::SeqCst);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced() {
        let clock = Clock::manual(1_000);
        let other = clock.clone();
        assert_eq!(clock.now_ms(), 1_000);
        assert!(other.advance(500));
        assert_eq!(clock.now_ms(), 1_500, "clones share one time");
        assert!(!Clock::system().advance(1));
        assert!(Clock::system().now_ms() > 1_700_000_000_000);
    }
}
