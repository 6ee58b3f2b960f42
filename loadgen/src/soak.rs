//! The soak report of a long run: how many one-second windows of a latency
//! series stalled (p99 above [`OUTLIER_FACTOR`] × the median window's p99,
//! and above the absolute [`ABSOLUTE_THRESHOLD_US`]), the worst window, and
//! the server's RSS and CPU per delivered message minute by minute (see
//! [`crate::minutes`]). Whole-run percentiles hide a second-long freeze every
//! minute; these figures show it. Built from the per-second histograms
//! [`crate::stats::Stats`] keeps anyway.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::minutes::MinuteBucket;
use crate::stats::{Stats, WindowP99};

/// A window stalls when its p99 exceeds this many times the median window's p99.
pub const OUTLIER_FACTOR: u64 = 5;
/// The absolute bound on a window's p99, in microseconds (50 ms).
pub const ABSOLUTE_THRESHOLD_US: u64 = 50_000;

/// One one-second window of the soak series: window `second` covers what
/// completed in `[second, second + 1)` seconds after the start of sending.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub second: u64,
    /// Samples that completed in the window.
    pub count: u64,
    /// The window's p99, in microseconds.
    pub p99_us: u64,
}

impl From<WindowP99> for Window {
    fn from(w: WindowP99) -> Self {
        Window {
            second: w.second,
            count: w.count,
            p99_us: w.p99_us,
        }
    }
}

/// Window statistics of one latency series.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowStats {
    /// Windows from the start of sending to the last completion, empty ones included.
    pub windows: u64,
    /// Windows in which nothing completed (a stall of a whole second or more).
    pub empty_windows: u64,
    /// Median of the non-empty windows' p99s (mean of the middle two for an even count), µs.
    pub median_window_p99_us: u64,
    /// `OUTLIER_FACTOR × median_window_p99_us`, µs.
    pub outlier_threshold_us: u64,
    /// Windows whose p99 exceeds `outlier_threshold_us`.
    pub windows_over_outlier: u64,
    /// The absolute threshold, µs.
    pub absolute_threshold_us: u64,
    /// Windows whose p99 exceeds `absolute_threshold_us`.
    pub windows_over_absolute: u64,
    /// The window with the highest p99 (the earliest of equals).
    pub worst_window: Option<Window>,
    /// Every window over either threshold, in time order.
    pub flagged: Vec<Window>,
}

/// Everything the soak report adds to a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SoakReport {
    /// The latency series the windows are taken from (e.g. `send_deliver`).
    pub series: String,
    #[serde(flatten)]
    pub windows: WindowStats,
    /// Server resource use per minute of the measured phase.
    pub minutes: Vec<MinuteBucket>,
}

/// Median of `values` (sorted here); the mean of the middle two, rounded
/// down, for an even count; 0 for none.
pub fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    let n = values.len();
    match (values.get(n / 2), n % 2) {
        (None, _) => 0,
        (Some(hi), 1) => *hi,
        (Some(hi), _) => {
            let lo = values.get(n / 2 - 1).copied().unwrap_or(*hi);
            lo / 2 + hi / 2 + (lo % 2 + hi % 2) / 2
        }
    }
}

/// Window statistics of the non-empty windows `windows` (any order) against
/// `OUTLIER_FACTOR` × their median p99 and `absolute_us`.
pub fn window_stats(windows: &[Window], absolute_us: u64) -> WindowStats {
    let mut sorted = windows.to_vec();
    sorted.sort_by_key(|w| w.second);
    let mut p99s: Vec<u64> = sorted.iter().map(|w| w.p99_us).collect();
    let median_us = median(&mut p99s);
    let outlier_us = median_us.saturating_mul(OUTLIER_FACTOR);
    let span = sorted.last().map_or(0, |w| w.second + 1);
    let over = |limit: u64| sorted.iter().filter(|w| w.p99_us > limit).count() as u64;
    let worst = sorted
        .iter()
        .copied()
        .reduce(|a, b| if b.p99_us > a.p99_us { b } else { a });
    WindowStats {
        windows: span,
        empty_windows: span - sorted.len() as u64,
        median_window_p99_us: median_us,
        outlier_threshold_us: outlier_us,
        windows_over_outlier: over(outlier_us),
        absolute_threshold_us: absolute_us,
        windows_over_absolute: over(absolute_us),
        worst_window: worst,
        flagged: sorted
            .into_iter()
            .filter(|w| w.p99_us > outlier_us.min(absolute_us))
            .collect(),
    }
}

impl SoakReport {
    /// The soak report of `series` in `stats` (windows against
    /// [`ABSOLUTE_THRESHOLD_US`]) with the per-minute buckets `minutes`.
    pub fn from_stats(stats: &Stats, series: &str, minutes: Vec<MinuteBucket>) -> Self {
        let windows: Vec<Window> = stats
            .window_p99s(series)
            .into_iter()
            .map(Window::from)
            .collect();
        SoakReport {
            series: series.to_owned(),
            windows: window_stats(&windows, ABSOLUTE_THRESHOLD_US),
            minutes,
        }
    }

    /// Scalar figures for `compare`, as `soak.NAME`.
    pub fn flat(&self) -> Vec<(String, f64)> {
        let w = &self.windows;
        let mut out = vec![
            ("windows", w.windows as f64),
            ("empty_windows", w.empty_windows as f64),
            ("median_window_p99_us", w.median_window_p99_us as f64),
            ("windows_over_outlier", w.windows_over_outlier as f64),
            ("windows_over_absolute", w.windows_over_absolute as f64),
        ];
        if let Some(worst) = w.worst_window {
            out.push(("worst_window_p99_us", worst.p99_us as f64));
        }
        out.into_iter()
            .map(|(k, v)| (format!("soak.{k}"), v))
            .collect()
    }

    /// The lines of the summary table.
    pub fn summary(&self) -> String {
        let w = &self.windows;
        let ms = |us: u64| us as f64 / 1000.0;
        let mut s = format!(
            "  soak ({}): {} one-second windows ({} empty), median p99 {:.3} ms; {} over {}× median ({:.3} ms), {} over {:.0} ms",
            self.series,
            w.windows,
            w.empty_windows,
            ms(w.median_window_p99_us),
            w.windows_over_outlier,
            OUTLIER_FACTOR,
            ms(w.outlier_threshold_us),
            w.windows_over_absolute,
            ms(w.absolute_threshold_us),
        );
        if let Some(worst) = w.worst_window {
            let _ = write!(
                s,
                "; worst: second {} at {:.3} ms",
                worst.second,
                ms(worst.p99_us)
            );
        }
        s.push('\n');
        s.push_str(&crate::minutes::summary(&self.minutes));
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::stats::Clock;

    const S: u64 = 1_000_000_000;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&mut [5, 1, 3]), 3);
        assert_eq!(median(&mut [4, 1, 3, 10]), 3);
        assert_eq!(median(&mut [u64::MAX, u64::MAX]), u64::MAX);
        assert_eq!(median(&mut [7, 8]), 7);
        assert_eq!(median(&mut []), 0);
    }

    /// Per-second histograms of a 10-second phase: 100 samples a second,
    /// 2 ms every second but three outliers (second 3 at 30 ms, second 6 at
    /// 80 ms, second 8 at 12 ms: only the 80 ms one is over 50 ms) and an
    /// empty second 5; the phase starts 0.4 s into the clock.
    #[test]
    fn counts_outlier_windows_from_per_second_histograms() {
        let stats = Stats::new(Clock::new());
        let origin = 400_000_000;
        stats.start_windows(origin);
        let slow = [(3, 30_000), (6, 80_000), (8, 12_000)];
        for second in (0..10u64).filter(|s| *s != 5) {
            let us = slow
                .iter()
                .find(|(s, _)| *s == second)
                .map_or(2_000, |(_, us)| *us);
            for i in 0..100 {
                let done = origin + second * S + i * 5_000_000;
                stats.record("send_deliver", done - us * 1_000, done);
            }
        }
        let w = SoakReport::from_stats(&stats, "send_deliver", Vec::new()).windows;
        let eq = |us: u64| {
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 2)
                .unwrap()
                .highest_equivalent(us)
        };
        assert_eq!(w.windows, 10);
        assert_eq!(w.empty_windows, 1);
        assert_eq!(w.median_window_p99_us, eq(2_000));
        assert_eq!(w.outlier_threshold_us, 5 * eq(2_000));
        assert_eq!(w.windows_over_outlier, 3);
        assert_eq!(w.windows_over_absolute, 1);
        let worst = w.worst_window.unwrap();
        assert_eq!((worst.second, worst.count), (6, 100));
        assert_eq!(worst.p99_us, eq(80_000));
        let flagged: Vec<u64> = w.flagged.iter().map(|f| f.second).collect();
        assert_eq!(flagged, vec![3, 6, 8]);
    }

    #[test]
    fn thresholds_are_strict_and_the_earliest_worst_wins() {
        let win = |second, p99_us| Window {
            second,
            count: 1,
            p99_us,
        };
        let windows = [win(2, 500), win(0, 100), win(1, 100), win(3, 500)];
        let w = window_stats(&windows, 500);
        assert_eq!(w.median_window_p99_us, 300);
        assert_eq!(w.windows_over_outlier, 0);
        assert_eq!(w.windows_over_absolute, 0);
        assert_eq!(w.worst_window, Some(win(2, 500)));
        assert!(w.flagged.is_empty());
        let none = window_stats(&[], 500);
        assert_eq!((none.windows, none.worst_window), (0, None));
    }

    #[test]
    fn summary_and_flat_name_the_figures() {
        let windows = [0, 1, 2].map(|second| Window {
            second,
            count: 10,
            p99_us: 1_000 + 60_000 * (second / 2),
        });
        let r = SoakReport {
            series: "send_deliver".into(),
            windows: window_stats(&windows, ABSOLUTE_THRESHOLD_US),
            minutes: Vec::new(),
        };
        let s = r.summary();
        assert!(s.contains("3 one-second windows (0 empty)"), "{s}");
        assert!(
            s.contains("1 over 5× median (5.000 ms), 1 over 50 ms"),
            "{s}"
        );
        assert!(s.contains("worst: second 2 at 61.000 ms"), "{s}");
        let flat = r.flat();
        assert!(flat.contains(&("soak.windows_over_absolute".into(), 1.0)));
    }
}
