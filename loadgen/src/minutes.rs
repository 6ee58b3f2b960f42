//! Server resource use minute by minute: a [`Sampler`] reads the server's
//! `/proc/PID` (RSS, CPU time; see [`crate::procfs`]) and the delivered
//! counter every [`SAMPLE_EVERY`], and [`per_minute`] turns the samples into
//! one [`MinuteBucket`] per minute of the phase: RSS at its end and at most,
//! server CPU per delivered message. A leak or a growing per-message cost
//! shows as a trend here, where the phase totals only give an average.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::nodes::ServerProcs;
use crate::stats::{Counters, Stats};

/// How often the sampler reads the server.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// Seconds in one bucket.
const MINUTE_S: f64 = 60.0;

/// One reading: seconds since the window origin, deliveries so far, and the
/// server's RSS (bytes) and CPU time (ns) when its pid is known.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ResourceSample {
    pub t_s: f64,
    pub delivered: u64,
    pub rss_bytes: Option<u64>,
    pub cpu_ns: Option<u64>,
}

/// Server resource use over one minute of the phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MinuteBucket {
    /// 0 for the first minute.
    pub minute: u64,
    /// What the bucket covers, in seconds since the start of sending (the
    /// previous bucket's last sample to this one's last).
    pub start_s: f64,
    pub end_s: f64,
    /// Messages delivered in the bucket.
    pub delivered: u64,
    /// Server CPU time (user + system) in the bucket, seconds.
    pub server_cpu_s: Option<f64>,
    /// Server CPU per delivered message, µs (none when nothing was delivered).
    pub server_cpu_per_msg_us: Option<f64>,
    /// Server RSS at the bucket's last sample, bytes.
    pub rss_end_bytes: Option<u64>,
    /// Highest server RSS sampled in the bucket, bytes.
    pub rss_max_bytes: Option<u64>,
}

/// Buckets `samples` (in time order) by minute: the first sample is the
/// baseline, every later one falls into minute `floor(t_s / 60)`.
pub fn per_minute(samples: &[ResourceSample]) -> Vec<MinuteBucket> {
    let Some((first, rest)) = samples.split_first() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut start = *first;
    let mut group: Vec<ResourceSample> = Vec::new();
    for s in rest {
        let minute = minute_of(s.t_s);
        if group.first().is_some_and(|g| minute_of(g.t_s) != minute) {
            out.extend(bucket(&start, &group));
            start = group.last().copied().unwrap_or(start);
            group.clear();
        }
        group.push(*s);
    }
    out.extend(bucket(&start, &group));
    out
}

fn minute_of(t_s: f64) -> u64 {
    (t_s.max(0.0) / MINUTE_S) as u64
}

/// The bucket from `start` to the last of `group` (none for an empty group).
fn bucket(start: &ResourceSample, group: &[ResourceSample]) -> Option<MinuteBucket> {
    let end = group.last()?;
    let delivered = end.delivered.saturating_sub(start.delivered);
    let server_cpu_s = start
        .cpu_ns
        .zip(end.cpu_ns)
        .map(|(a, b)| b.saturating_sub(a) as f64 / 1e9);
    Some(MinuteBucket {
        minute: minute_of(end.t_s),
        start_s: start.t_s,
        end_s: end.t_s,
        delivered,
        server_cpu_s,
        server_cpu_per_msg_us: server_cpu_s
            .filter(|_| delivered > 0)
            .map(|cpu| cpu * 1e6 / delivered as f64),
        rss_end_bytes: end.rss_bytes,
        rss_max_bytes: group.iter().filter_map(|s| s.rss_bytes).max(),
    })
}

/// The summary-table line: RSS (MB) and CPU per message (µs) of each minute.
pub fn summary(minutes: &[MinuteBucket]) -> String {
    let mut rss = String::new();
    let mut cpu = String::new();
    for m in minutes {
        let _ = write!(
            rss,
            " {}",
            m.rss_end_bytes
                .map_or_else(|| "-".into(), |b| format!("{:.0}", b as f64 / 1e6))
        );
        let _ = write!(
            cpu,
            " {}",
            m.server_cpu_per_msg_us
                .map_or_else(|| "-".into(), |us| format!("{us:.1}"))
        );
    }
    format!("  soak per minute: server RSS MB{rss}; server CPU µs/msg{cpu}\n")
}

/// Samples the server (its nodes' processes summed, when their pids are
/// known) and `stats`' delivered counter every [`SAMPLE_EVERY`] until stopped.
pub struct Sampler {
    stats: Arc<Stats>,
    procs: ServerProcs,
    samples: Arc<Mutex<Vec<ResourceSample>>>,
    task: JoinHandle<()>,
}

impl Sampler {
    /// Takes the baseline sample now and starts sampling.
    pub fn start(stats: Arc<Stats>, procs: &ServerProcs) -> Sampler {
        let samples = Arc::new(Mutex::new(vec![read(&stats, procs)]));
        let (s, out, pid) = (stats.clone(), samples.clone(), procs.clone());
        let task = tokio::spawn(async move {
            let first = tokio::time::Instant::now() + SAMPLE_EVERY;
            let mut tick = tokio::time::interval_at(first, SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let now = read(&s, &pid);
                if let Ok(mut v) = out.lock() {
                    v.push(now);
                }
            }
        });
        Sampler {
            stats,
            procs: procs.clone(),
            samples,
            task,
        }
    }

    /// Stops, takes a last sample, and buckets them all by minute.
    pub fn stop(self) -> Vec<MinuteBucket> {
        self.task.abort();
        let last = read(&self.stats, &self.procs);
        let mut samples = self.samples.lock().map(|v| v.clone()).unwrap_or_default();
        samples.push(last);
        per_minute(&samples)
    }
}

fn read(stats: &Stats, procs: &ServerProcs) -> ResourceSample {
    let since = stats
        .clock
        .now_ns()
        .saturating_sub(stats.window_origin_ns());
    let proc = procs.sample();
    ResourceSample {
        t_s: since as f64 / 1e9,
        delivered: Counters::get(&stats.counters.delivered),
        rss_bytes: proc.map(|p| p.rss_bytes),
        cpu_ns: proc.map(|p| p.cpu_ns),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::stats::Clock;

    /// A sample every 10 s for 150 s: 1,000 deliveries and 50 ms of CPU per
    /// sample, RSS growing 1 MB per sample.
    fn samples() -> Vec<ResourceSample> {
        (0..=15u64)
            .map(|i| ResourceSample {
                t_s: i as f64 * 10.0 + 0.5,
                delivered: i * 1_000,
                rss_bytes: Some(100_000_000 + i * 1_000_000),
                cpu_ns: Some(i * 50_000_000),
            })
            .collect()
    }

    #[test]
    fn buckets_by_minute_from_the_previous_end() {
        let m = per_minute(&samples());
        assert_eq!(m.len(), 3);
        assert_eq!(m.iter().map(|b| b.minute).collect::<Vec<_>>(), [0, 1, 2]);
        // minute 0: samples 1..=5 after the baseline at 0.5 s
        assert_eq!((m[0].start_s, m[0].end_s), (0.5, 50.5));
        assert_eq!(m[0].delivered, 5_000);
        assert!((m[0].server_cpu_s.unwrap() - 0.25).abs() < 1e-12);
        assert!((m[0].server_cpu_per_msg_us.unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(m[0].rss_end_bytes, Some(105_000_000));
        // minute 1 starts at minute 0's last sample: samples 6..=11
        assert_eq!((m[1].start_s, m[1].delivered), (50.5, 6_000));
        assert_eq!(m[1].rss_max_bytes, Some(111_000_000));
        // the partial last minute: samples 12..=15
        assert_eq!((m[2].end_s, m[2].delivered), (150.5, 4_000));
        let total: u64 = m.iter().map(|b| b.delivered).sum();
        assert_eq!(total, 15_000);
    }

    #[test]
    fn unknown_pid_and_idle_minutes_have_no_per_message_cost() {
        let mut s = samples();
        for x in &mut s {
            x.delivered = 7;
            x.rss_bytes = None;
        }
        s[3].cpu_ns = None;
        let m = per_minute(&s);
        assert_eq!(m[0].delivered, 0);
        assert_eq!(m[0].server_cpu_per_msg_us, None);
        assert_eq!((m[0].rss_end_bytes, m[0].rss_max_bytes), (None, None));
        assert!(per_minute(&s[..1]).is_empty());
        assert!(per_minute(&[]).is_empty());
        let line = summary(&m);
        assert!(line.contains("server RSS MB - - -"), "{line}");
    }

    #[test]
    fn summary_lists_each_minute() {
        let line = summary(&per_minute(&samples()));
        assert!(line.contains("server RSS MB 105 111 115"), "{line}");
        assert!(line.contains("server CPU µs/msg 50.0 50.0 50.0"), "{line}");
    }

    /// The sampler reads this very process; a phase shorter than a minute
    /// still gives one bucket.
    #[tokio::test]
    async fn sampler_reads_a_live_process() {
        let stats = Arc::new(Stats::new(Clock::new()));
        stats.start_windows(stats.clock.now_ns());
        let procs = ServerProcs {
            nodes: vec![crate::nodes::NodeProc {
                addr: "127.0.0.1:1".parse().unwrap(),
                pid: Some(std::process::id()),
            }],
        };
        let sampler = Sampler::start(stats.clone(), &procs);
        Counters::add(&stats.counters.delivered, 3);
        let m = sampler.stop();
        assert_eq!(m.len(), 1);
        assert!(m[0].rss_end_bytes.unwrap() > 0);
        assert!(m[0].server_cpu_s.is_some());
        assert_eq!(m[0].delivered, 3);
    }
}
