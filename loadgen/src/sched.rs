//! Open-loop scheduling: event `k` is *intended* to happen at
//! `start + k / rate`, whatever happened to earlier events. The dispatcher
//! wakes up, issues every event whose intended time has come, and sleeps
//! until the next one; latencies are then measured from the intended time
//! (see `stats`). A run stops at a count, at a deadline, or at both.

use std::ops::Range;
use std::time::Duration;

/// The intended times of a fixed-rate sequence of events.
#[derive(Clone, Debug)]
pub struct OpenLoop {
    /// Events per second (must be positive).
    rate: f64,
    /// Clock nanoseconds of event 0.
    start_ns: u64,
    /// Events not to go past (`u64::MAX` = no count limit).
    limit: u64,
    /// Clock nanoseconds after which no event is issued (`u64::MAX` = none).
    deadline_ns: u64,
    /// The next event not yet issued.
    next: u64,
}

impl OpenLoop {
    /// A schedule of `rate` events per second from `start_ns`, bounded by
    /// `limit` events and/or `duration`.
    pub fn new(rate: f64, start_ns: u64, limit: Option<u64>, duration: Option<Duration>) -> Self {
        let deadline_ns = duration
            .and_then(|d| u64::try_from(d.as_nanos()).ok())
            .map_or(u64::MAX, |d| start_ns.saturating_add(d));
        OpenLoop {
            rate: rate.max(1e-9),
            start_ns,
            limit: limit.unwrap_or(u64::MAX),
            deadline_ns,
            next: 0,
        }
    }

    /// Intended clock time (ns) of event `k`.
    pub fn intended_ns(&self, k: u64) -> u64 {
        let offset = (k as f64) * 1e9 / self.rate;
        self.start_ns.saturating_add(offset.round() as u64)
    }

    /// Events whose intended time is at or before `now_ns` and not issued
    /// yet; they count as issued after this call.
    pub fn due(&mut self, now_ns: u64) -> Range<u64> {
        let first = self.next;
        while self.next < self.limit {
            let t = self.intended_ns(self.next);
            if t > now_ns || t >= self.deadline_ns {
                break;
            }
            self.next += 1;
        }
        first..self.next
    }

    /// Clock time of the next event, or `None` when the schedule is over.
    pub fn next_ns(&self) -> Option<u64> {
        if self.finished() {
            return None;
        }
        Some(self.intended_ns(self.next))
    }

    /// Whether every event has been issued.
    pub fn finished(&self) -> bool {
        self.next >= self.limit || self.intended_ns(self.next) >= self.deadline_ns
    }

    /// How many events the schedule holds at most (for sizing tables).
    pub fn capacity(&self) -> u64 {
        if self.deadline_ns == u64::MAX {
            return self.limit;
        }
        let span = (self.deadline_ns - self.start_ns) as f64 / 1e9;
        self.limit.min((span * self.rate).ceil() as u64 + 1)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn intended_times_are_evenly_spaced() {
        let s = OpenLoop::new(20_000.0, 1_000, None, None);
        assert_eq!(s.intended_ns(0), 1_000);
        assert_eq!(s.intended_ns(1), 51_000);
        assert_eq!(s.intended_ns(20_000), 1_000_001_000);
    }

    #[test]
    fn due_issues_everything_whose_time_came_even_after_a_stall() {
        let mut s = OpenLoop::new(1_000.0, 0, None, None);
        assert_eq!(s.due(0), 0..1);
        assert_eq!(s.due(999_999), 1..1);
        // A 100 ms stall of the dispatcher: the 100 missed events are all due
        // now, each keeping its own intended time.
        assert_eq!(s.due(100_000_000), 1..101);
        assert_eq!(s.intended_ns(50), 50_000_000);
        assert_eq!(s.next_ns(), Some(101_000_000));
    }

    #[test]
    fn count_and_deadline_bound_the_run() {
        let mut by_count = OpenLoop::new(1_000.0, 0, Some(10), None);
        assert_eq!(by_count.due(u64::MAX / 2), 0..10);
        assert!(by_count.finished());
        assert_eq!(by_count.next_ns(), None);
        let mut by_time = OpenLoop::new(1_000.0, 0, None, Some(Duration::from_millis(50)));
        assert_eq!(by_time.due(10_000_000_000), 0..50);
        assert!(by_time.finished());
        assert_eq!(by_time.capacity(), 51);
        assert_eq!(
            OpenLoop::new(5.0, 0, Some(3), Some(Duration::from_secs(10))).capacity(),
            3
        );
    }
}
