//! The server's clock: wall time in milliseconds since the Unix epoch, read
//! by every command that stamps or expires something (server time of a
//! message, expiry, account and device creation, the expiry sweeper), and
//! the timers of the server's own deadlines (authentication, the per-frame
//! read deadline, device-link decisions). The server owns it and passes it
//! in, so a test drives time with a manual clock instead of sleeping (cf.
//! quinn-proto, which takes `now` as input; tokio's paused time does the
//! same for one runtime, but the server runs one runtime per shard).
//!
//! Transport-level timers that belong to QUIC (idle timeout, keep-alive,
//! retransmission) and shutdown grace periods stay on tokio's clock.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

/// A timer of a [`Clock`]: completes once the clock has passed its deadline.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// [`Clock::timeout`]'s deadline passed before the future completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("deadline passed")]
pub struct Elapsed;

/// A cheap, cloneable handle on the server's time source.
#[derive(Clone, Debug)]
pub struct Clock(Arc<Source>);

#[derive(Debug)]
enum Source {
    System,
    /// Moves only when [`Clock::advance`] is called; timers watch it.
    Manual(watch::Sender<u64>),
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
        Clock(Arc::new(Source::Manual(watch::Sender::new(start_ms))))
    }

    /// Milliseconds since the Unix epoch (0 if the system clock is before it).
    pub fn now_ms(&self) -> u64 {
        match &*self.0 {
            Source::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                .unwrap_or(0),
            Source::Manual(now) => *now.borrow(),
        }
    }

    /// A timer that completes `duration` from now on this clock (tokio's
    /// timer on the system clock; on a manual clock, once [`Clock::advance`]
    /// has moved it that far). Resolution: milliseconds.
    pub fn sleep(&self, duration: Duration) -> Sleep {
        match &*self.0 {
            Source::System => Box::pin(tokio::time::sleep(duration)),
            Source::Manual(now) => {
                let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
                let at = now.borrow().saturating_add(millis);
                let mut moves = now.subscribe();
                Box::pin(async move {
                    // Err only once every handle on the clock is gone: then
                    // time never moves again.
                    if moves.wait_for(|now| *now >= at).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                })
            }
        }
    }

    /// Runs `future` until it completes or `duration` passes on this clock.
    ///
    /// # Errors
    /// [`Elapsed`] if the deadline passed first (`future` is dropped).
    pub async fn timeout<F: Future>(
        &self,
        duration: Duration,
        future: F,
    ) -> Result<F::Output, Elapsed> {
        tokio::select! {
            biased;
            out = future => Ok(out),
            () = self.sleep(duration) => Err(Elapsed),
        }
    }

    /// Moves a manual clock forward by `ms`; returns false (and does
    /// nothing) on the system clock.
    pub fn advance(&self, ms: u64) -> bool {
        match &*self.0 {
            Source::System => false,
            Source::Manual(now) => {
                now.send_modify(|now| *now = now.saturating_add(ms));
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

    #[tokio::test]
    async fn manual_timers_fire_when_the_clock_passes_their_deadline() {
        let clock = Clock::manual(0);
        let mut early = clock.sleep(Duration::from_millis(1_000));
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(early.as_mut().poll(&mut cx).is_pending());
        clock.advance(999);
        assert!(early.as_mut().poll(&mut cx).is_pending(), "1 ms early");
        clock.advance(1);
        assert!(early.as_mut().poll(&mut cx).is_ready());
        let slow = clock.timeout(Duration::from_millis(5), std::future::pending::<()>());
        let ticker = async {
            tokio::task::yield_now().await;
            clock.advance(5);
        };
        let (result, ()) = tokio::join!(slow, ticker);
        assert_eq!(result, Err(Elapsed));
        let quick = clock.timeout(Duration::from_millis(5), async { 7 }).await;
        assert_eq!(quick, Ok(7));
    }
}
