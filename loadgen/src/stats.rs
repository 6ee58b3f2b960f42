//! Latency recording: one HdrHistogram per named series for the whole run,
//! plus one small histogram per time window for the progress bar, the plot
//! and the soak report (windows count from [`Stats::start_windows`]).
//! Latencies are measured from the *intended* send time of an open-loop
//! schedule, which is the coordinated-omission correction: a stall on the
//! server delays every send queued behind it, and each of those waits is
//! counted. (Closed-loop saturation runs measure from the actual send and
//! say so in their report.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::report::{LatencySummary, WindowPoint};

/// Highest latency tracked exactly, in microseconds (one hour); larger
/// values are clamped to it.
const MAX_US: u64 = 3_600_000_000;
/// Width of one timeline window.
pub const WINDOW: Duration = Duration::from_secs(1);

/// A monotonic time base shared by every task of a run; payloads carry
/// nanoseconds since its start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
        }
    }

    /// Nanoseconds since the start.
    pub fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    pub fn ns_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn instant(&self, ns: u64) -> Instant {
        self.start + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// A histogram of 1 µs .. 1 h at `sigfig` significant digits (`None` only
/// for invalid bounds, which the constants here never are).
fn histogram(sigfig: u8) -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, MAX_US, sigfig).ok()
}

/// One named latency series.
struct Series {
    total: Histogram<u64>,
    windows: BTreeMap<u64, Histogram<u64>>,
}

impl Series {
    fn new() -> Option<Self> {
        Some(Series {
            total: histogram(3)?,
            windows: BTreeMap::new(),
        })
    }

    fn record(&mut self, us: u64, window: u64, count: u64) {
        let us = us.clamp(1, MAX_US);
        self.total.saturating_record_n(us, count);
        if let std::collections::btree_map::Entry::Vacant(slot) = self.windows.entry(window) {
            let Some(h) = histogram(2) else { return };
            slot.insert(h);
        }
        if let Some(h) = self.windows.get_mut(&window) {
            h.saturating_record_n(us, count);
        }
    }
}

/// Counters every scenario keeps (lock-free).
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    pub dropped: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The p99 of one timeline window: `second` counts windows from the window
/// origin (window `s` holds what completed in `[s, s+1)` seconds after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowP99 {
    pub second: u64,
    /// Samples in the window.
    pub count: u64,
    /// The window's p99, in microseconds.
    pub p99_us: u64,
}

/// All latency series and counters of one run.
pub struct Stats {
    pub clock: Clock,
    pub counters: Counters,
    series: Mutex<BTreeMap<&'static str, Series>>,
    /// Clock nanoseconds where window 0 starts (0 until [`Stats::start_windows`]).
    origin_ns: AtomicU64,
}

impl Stats {
    pub fn new(clock: Clock) -> Self {
        Stats {
            clock,
            counters: Counters::default(),
            series: Mutex::new(BTreeMap::new()),
            origin_ns: AtomicU64::new(0),
        }
    }

    /// Counts timeline windows from `at_ns` (clock nanoseconds) on, so that
    /// window 0 starts with a measured phase; samples completing earlier
    /// fall into window 0. Call it before the phase records anything.
    pub fn start_windows(&self, at_ns: u64) {
        self.origin_ns.store(at_ns, Ordering::Relaxed);
    }

    /// Clock nanoseconds where window 0 starts.
    pub fn window_origin_ns(&self) -> u64 {
        self.origin_ns.load(Ordering::Relaxed)
    }

    /// Records the latency from `intended_ns` to `done_ns` (both on the clock).
    pub fn record(&self, name: &'static str, intended_ns: u64, done_ns: u64) {
        let us = done_ns.saturating_sub(intended_ns) / 1_000;
        self.record_us(name, us, done_ns, 1);
    }

    /// Records a latency in microseconds that completed at `done_ns`.
    pub fn record_us(&self, name: &'static str, us: u64, done_ns: u64, count: u64) {
        let window = window_of(done_ns.saturating_sub(self.window_origin_ns()));
        let Ok(mut all) = self.series.lock() else {
            return;
        };
        if !all.contains_key(name) {
            let Some(series) = Series::new() else { return };
            all.insert(name, series);
        }
        if let Some(series) = all.get_mut(name) {
            series.record(us, window, count);
        }
    }

    /// p99 of the most recent window of a series, in microseconds.
    pub fn current_p99_us(&self, name: &'static str) -> Option<u64> {
        let all = self.series.lock().ok()?;
        let series = all.get(name)?;
        let (_, last) = series.windows.iter().next_back()?;
        Some(last.value_at_quantile(0.99))
    }

    /// Summaries of every series.
    pub fn summaries(&self) -> BTreeMap<String, LatencySummary> {
        let Ok(all) = self.series.lock() else {
            return BTreeMap::new();
        };
        all.iter()
            .map(|(name, s)| ((*name).to_owned(), summarize(&s.total)))
            .collect()
    }

    /// The p99 of every non-empty window of series `name`, in window order.
    pub fn window_p99s(&self, name: &str) -> Vec<WindowP99> {
        let Ok(all) = self.series.lock() else {
            return Vec::new();
        };
        let Some(series) = all.get(name) else {
            return Vec::new();
        };
        series
            .windows
            .iter()
            .map(|(w, h)| WindowP99 {
                second: *w,
                count: h.len(),
                p99_us: h.value_at_quantile(0.99),
            })
            .collect()
    }

    /// Per-window percentiles of every series.
    pub fn timelines(&self) -> BTreeMap<String, Vec<WindowPoint>> {
        let Ok(all) = self.series.lock() else {
            return BTreeMap::new();
        };
        all.iter()
            .map(|(name, s)| ((*name).to_owned(), timeline(s)))
            .collect()
    }
}

/// The window of a sample completing `since_origin_ns` after the origin.
fn window_of(since_origin_ns: u64) -> u64 {
    let width = u64::try_from(WINDOW.as_nanos())
        .unwrap_or(1_000_000_000)
        .max(1);
    since_origin_ns / width
}

/// Percentiles of a histogram.
pub fn summarize(h: &Histogram<u64>) -> LatencySummary {
    LatencySummary {
        count: h.len(),
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        max_us: h.max(),
        mean_us: h.mean(),
    }
}

fn timeline(series: &Series) -> Vec<WindowPoint> {
    series
        .windows
        .iter()
        .map(|(w, h)| {
            let s = summarize(h);
            WindowPoint {
                t_s: (*w as f64 + 1.0) * WINDOW.as_secs_f64(),
                count: s.count,
                p50_us: s.p50_us,
                p90_us: s.p90_us,
                p99_us: s.p99_us,
                p999_us: s.p999_us,
                max_us: s.max_us,
            }
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A 1 kHz open-loop sender hits a 100 ms server stall: measured from the
    /// intended send times, the 100 sends queued behind the stall all show
    /// their wait, so p99 is large; measured from the actual send times it
    /// would look like one slow sample.
    #[test]
    fn intended_time_measurement_counts_the_stall() {
        let stats = Stats::new(Clock::new());
        let naive = Stats::new(Clock::new());
        let stall_end_ns = 100_000_000;
        for k in 0..1_000u64 {
            let intended = k * 1_000_000;
            let actual_send = intended.max(stall_end_ns);
            let done = actual_send + 200_000;
            stats.record("corrected", intended, done);
            naive.record("naive", actual_send, done);
        }
        let corrected = stats.summaries()["corrected"].clone();
        let uncorrected = naive.summaries()["naive"].clone();
        assert_eq!(corrected.count, 1_000);
        assert!(corrected.p99_us > 50_000, "{corrected:?}");
        assert!(corrected.mean_us > 5_000.0, "{corrected:?}");
        assert!(corrected.max_us >= 100_000, "{corrected:?}");
        assert!(uncorrected.p99_us < 300, "{uncorrected:?}");
    }

    #[test]
    fn windows_follow_completion_time() {
        let stats = Stats::new(Clock::new());
        stats.record("x", 0, 500_000_000);
        stats.record("x", 0, 1_500_000_000);
        stats.record("x", 1_000_000_000, 2_700_000_000);
        let t = &stats.timelines()["x"];
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].t_s, 1.0);
        assert_eq!(t[2].count, 1);
        assert!(stats.current_p99_us("x").unwrap() >= 1_690_000);
    }

    #[test]
    fn windows_count_from_the_origin() {
        let stats = Stats::new(Clock::new());
        stats.start_windows(2_600_000_000);
        stats.record("x", 2_600_000_000, 2_700_000_000);
        stats.record("x", 2_600_000_000, 4_650_000_000);
        let w = stats.window_p99s("x");
        assert_eq!(w.iter().map(|w| w.second).collect::<Vec<_>>(), [0, 2]);
        assert_eq!(w[1].count, 1);
        assert!(w[1].p99_us >= 2_050_000, "{w:?}");
        assert_eq!(stats.timelines()["x"][1].t_s, 3.0);
        assert!(stats.window_p99s("none").is_empty());
    }
}
