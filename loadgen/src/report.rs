//! What a run produces: a [`Report`] with the configuration, scalar figures,
//! latency percentiles, per-second timelines and (for `chat`) the soak
//! report of stalled windows and per-minute server cost. It prints as a summary
//! table, saves as JSON (`--json`), and two reports compare key by key
//! (`tern-load compare A.json B.json` prints B/A).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{LoadError, Result};
use crate::nodes::NodeReport;
use crate::soak::SoakReport;

/// Percentiles of one latency series, in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

/// Percentiles of one timeline window, ending at `t_s` seconds after the
/// window origin (the start of sending in `chat`, the start of the run
/// otherwise).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowPoint {
    pub t_s: f64,
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// What was measured: a spawned tern, a spawned echo server, or a remote one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetInfo {
    pub kind: String,
    pub addr: String,
    pub pid: Option<u32>,
    pub shards: Option<usize>,
}

/// Everything one run measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub scenario: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix_s: u64,
    pub config: serde_json::Value,
    pub target: TargetInfo,
    /// Scalar results (counts, rates, bytes, CPU), by name.
    pub figures: BTreeMap<String, f64>,
    pub latency: BTreeMap<String, LatencySummary>,
    pub timeline: BTreeMap<String, Vec<WindowPoint>>,
    /// Stalled one-second windows and server cost per minute (`chat` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakReport>,
    /// Each node of the target (one, or every `--server` of a cluster):
    /// connections, and CPU and RSS over the last measured phase. The
    /// whole-run figures above stay the totals over the nodes' processes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeReport>,
    /// Human remarks (what a figure means, what was skipped).
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, config: serde_json::Value, target: TargetInfo) -> Self {
        let started_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Report {
            tool: format!("tern-load {}", env!("CARGO_PKG_VERSION")),
            scenario: scenario.to_owned(),
            started_unix_s,
            config,
            target,
            ..Report::default()
        }
    }

    pub fn figure(&mut self, name: &str, value: f64) {
        self.figures.insert(name.to_owned(), value);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|source| LoadError::Json {
            path: path.into(),
            source,
        })?;
        std::fs::write(path, text).map_err(|source| LoadError::Write {
            path: path.into(),
            source,
        })
    }

    pub fn load(path: &Path) -> Result<Report> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.into(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| LoadError::Json {
            path: path.into(),
            source,
        })
    }

    /// Every comparable number, flattened: figures by name and latency
    /// percentiles as `series.p99_us`.
    pub fn flat(&self) -> BTreeMap<String, f64> {
        let mut out: BTreeMap<String, f64> = self.figures.clone();
        for (name, l) in &self.latency {
            for (field, v) in latency_fields(l) {
                out.insert(format!("{name}.{field}"), v);
            }
        }
        out.extend(self.soak.iter().flat_map(SoakReport::flat));
        out
    }

    /// The summary table printed at the end of a run.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "tern-load {} against {} {} (pid {})",
            self.scenario,
            self.target.kind,
            self.target.addr,
            opt(self.target.pid)
        );
        for (name, value) in &self.figures {
            let _ = writeln!(s, "  {name:<34} {}", fmt_num(*value));
        }
        if !self.latency.is_empty() {
            let _ = writeln!(
                s,
                "  {:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max"
            );
        }
        for (name, l) in &self.latency {
            let ms = |us: u64| format!("{:.3}", us as f64 / 1000.0);
            let _ = writeln!(
                s,
                "  {name:<18} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
                l.count,
                ms(l.p50_us),
                ms(l.p90_us),
                ms(l.p99_us),
                ms(l.p999_us),
                ms(l.max_us)
            );
        }
        if let Some(soak) = &self.soak {
            s.push_str(&soak.summary());
        }
        for (i, node) in self.nodes.iter().enumerate() {
            s.push_str(&node.line(i));
        }
        for note in &self.notes {
            let _ = writeln!(s, "  note: {note}");
        }
        s
    }
}

fn opt(v: Option<u32>) -> String {
    v.map_or_else(|| "unknown".to_owned(), |v| v.to_string())
}

fn latency_fields(l: &LatencySummary) -> [(&'static str, f64); 7] {
    [
        ("count", l.count as f64),
        ("p50_us", l.p50_us as f64),
        ("p90_us", l.p90_us as f64),
        ("p99_us", l.p99_us as f64),
        ("p999_us", l.p999_us as f64),
        ("max_us", l.max_us as f64),
        ("mean_us", l.mean_us),
    ]
}

/// A number for a table: integers without decimals, others with three.
pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Latency series that measure the same round trip under different names:
/// the baseline's `echo` stands for tern's send→ack and send→deliver.
const EQUIVALENT: &[(&str, &str)] = &[("echo", "send_deliver"), ("echo", "send_ack")];

/// One row of a comparison: a value in A, in B, and B/A.
#[derive(Clone, Debug, PartialEq)]
pub struct Ratio {
    pub key: String,
    pub a: f64,
    pub b: f64,
    /// `b / a`, `None` when `a` is zero.
    pub ratio: Option<f64>,
}

/// Compares every number present in both reports (and the equivalent
/// latency series of a baseline), as B/A.
pub fn compare(a: &Report, b: &Report) -> Vec<Ratio> {
    let (fa, fb) = (a.flat(), b.flat());
    let mut rows: Vec<Ratio> = fa
        .iter()
        .filter_map(|(key, va)| fb.get(key).map(|vb| ratio(key.clone(), *va, *vb)))
        .collect();
    for (x, y) in EQUIVALENT {
        for (from, to) in [(x, y), (y, x)] {
            rows.extend(equivalent_rows(&fa, &fb, from, to));
        }
    }
    rows
}

fn equivalent_rows(
    fa: &BTreeMap<String, f64>,
    fb: &BTreeMap<String, f64>,
    in_a: &str,
    in_b: &str,
) -> Vec<Ratio> {
    let prefix = format!("{in_a}.");
    fa.iter()
        .filter_map(|(key, va)| {
            let field = key.strip_prefix(&prefix)?;
            let vb = fb.get(&format!("{in_b}.{field}"))?;
            Some(ratio(format!("{in_a}→{in_b}.{field}"), *va, *vb))
        })
        .collect()
}

fn ratio(key: String, a: f64, b: f64) -> Ratio {
    let ratio = if a == 0.0 { None } else { Some(b / a) };
    Ratio { key, a, b, ratio }
}

/// The comparison as a table.
pub fn compare_table(a_name: &str, b_name: &str, rows: &[Ratio]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "A = {a_name}\nB = {b_name}");
    let _ = writeln!(
        s,
        "  {:<40} {:>16} {:>16} {:>10}",
        "figure", "A", "B", "B/A"
    );
    for r in rows {
        let ratio = r
            .ratio
            .map_or_else(|| "-".to_owned(), |x| format!("{x:.3}"));
        let _ = writeln!(
            s,
            "  {:<40} {:>16} {:>16} {:>10}",
            r.key,
            fmt_num(r.a),
            fmt_num(r.b),
            ratio
        );
    }
    s
}

/// Adds `vs_baseline.*` figures (this run / baseline) for every number the
/// two reports share, so one report states its ratio to raw QUIC.
pub fn add_baseline_ratios(report: &mut Report, baseline: &Report) {
    let rows = compare(baseline, report);
    for row in rows {
        if let Some(r) = row.ratio {
            report.figures.insert(format!("vs_baseline.{}", row.key), r);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn sample(scenario: &str, rss: f64, series: &str, p99: u64) -> Report {
        let mut r = Report::new(
            scenario,
            serde_json::json!({"connections": 10}),
            TargetInfo {
                kind: "tern".into(),
                addr: "127.0.0.1:1".into(),
                pid: Some(7),
                shards: Some(2),
            },
        );
        r.figure("server_rss_per_conn_bytes", rss);
        r.figure("errors", 0.0);
        r.latency.insert(
            series.into(),
            LatencySummary {
                count: 5,
                p50_us: 10,
                p90_us: 20,
                p99_us: p99,
                p999_us: p99,
                max_us: p99,
                mean_us: 12.5,
            },
        );
        r.timeline.insert(
            series.into(),
            vec![WindowPoint {
                t_s: 1.0,
                count: 5,
                p50_us: 10,
                p90_us: 20,
                p99_us: p99,
                p999_us: p99,
                max_us: p99,
            }],
        );
        r.note("a note");
        r
    }

    #[test]
    fn json_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let r = sample("connect", 1234.5, "connect", 900);
        r.save(&path).unwrap();
        assert_eq!(Report::load(&path).unwrap(), r);
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(Report::load(&path), Err(LoadError::Json { .. })));
    }

    #[test]
    fn compare_gives_b_over_a_and_maps_echo_to_delivery() {
        let base = sample("baseline", 1000.0, "echo", 400);
        let tern = sample("chat", 1100.0, "send_deliver", 600);
        let rows = compare(&base, &tern);
        let get = |k: &str| {
            rows.iter()
                .find(|r| r.key == k)
                .unwrap_or_else(|| panic!("{k} in {rows:?}"))
                .clone()
        };
        assert!((get("server_rss_per_conn_bytes").ratio.unwrap() - 1.1).abs() < 1e-9);
        assert_eq!(get("errors").ratio, None);
        assert!((get("echo→send_deliver.p99_us").ratio.unwrap() - 1.5).abs() < 1e-9);
        let mut t = tern.clone();
        add_baseline_ratios(&mut t, &base);
        assert!((t.figures["vs_baseline.echo→send_deliver.p99_us"] - 1.5).abs() < 1e-9);
        assert!(compare_table("a", "b", &rows).contains("1.100"));
    }

    #[test]
    fn node_entries_print_round_trip_and_old_reports_still_load() {
        let mut r = sample("chat", 1000.0, "send_deliver", 600);
        let old = serde_json::to_string(&r).unwrap();
        assert!(
            !old.contains("\"nodes\""),
            "an empty list is left out: {old}"
        );
        assert_eq!(serde_json::from_str::<Report>(&old).unwrap(), r);
        r.nodes = ["127.0.0.1:1", "127.0.0.1:2"]
            .into_iter()
            .map(|addr| NodeReport {
                addr: addr.into(),
                pid: Some(7),
                shared_pid: true,
                connections: 5,
                cpu_s: Some(0.5),
                cpu_pct: Some(25.0),
                rss_peak_bytes: Some(3_000_000),
                rss_last_bytes: Some(2_000_000),
                ..NodeReport::default()
            })
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        r.save(&path).unwrap();
        assert_eq!(Report::load(&path).unwrap(), r);
        let t = r.table();
        assert!(t.contains("node 1 127.0.0.1:2 (pid 7, shared): 5 connections, CPU 0.500 s (25.0 % of a core), RSS peak 3.0 MB, last 2.0 MB"), "{t}");
        let old: Report = serde_json::from_str(&old).unwrap();
        assert!(compare(&old, &r)
            .iter()
            .any(|row| row.key == "send_deliver.p99_us"));
    }

    #[test]
    fn table_lists_figures_and_percentiles() {
        let t = sample("connect", 2048.0, "connect", 1500).table();
        assert!(t.contains("server_rss_per_conn_bytes"));
        assert!(t.contains("1.500"), "{t}");
    }
}
