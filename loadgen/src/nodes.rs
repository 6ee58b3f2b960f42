//! The server processes behind a run's nodes (one node, or every node of a
//! cluster given as `--server a,b,c`): whole-run readings summed over the
//! distinct pids ([`ServerProcs`]), a [`NodeWatch`] that samples each pid's
//! CPU time and RSS from `/proc` every [`WATCH_EVERY`] over a measured
//! phase (peak and last RSS, CPU), and the per-node entries of the report
//! ([`NodeReport`]). Nodes that run in one process (the in-process test
//! cluster) share a pid: each reports what that pid gives, flagged
//! `shared_pid`, since one process's CPU and RSS cannot be split by node.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::procfs::{rss_anon, sample, thread_cpu_ns, ProcSample};
use crate::report::fmt_num;

/// How often a [`NodeWatch`] reads each node's process.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);

/// One node of the target: its client address and, when known, its pid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeProc {
    pub addr: SocketAddr,
    pub pid: Option<u32>,
}

/// The processes of every node of the target, in `--server` order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerProcs {
    pub nodes: Vec<NodeProc>,
}

impl ServerProcs {
    /// The distinct known pids, in node order.
    pub fn pids(&self) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for pid in self.nodes.iter().filter_map(|n| n.pid) {
            if !out.contains(&pid) {
                out.push(pid);
            }
        }
        out
    }

    /// The first known pid (the report's `target.pid`).
    pub fn first_pid(&self) -> Option<u32> {
        self.nodes.iter().find_map(|n| n.pid)
    }

    /// RSS and CPU time summed over the distinct pids; `None` when no pid
    /// is known or one of them cannot be read.
    pub fn sample(&self) -> Option<ProcSample> {
        let pids = self.pids();
        if pids.is_empty() {
            return None;
        }
        let mut sum = ProcSample {
            at: Instant::now(),
            rss_bytes: 0,
            cpu_ns: 0,
        };
        for pid in pids {
            let s = sample(pid).ok()?;
            sum.rss_bytes += s.rss_bytes;
            sum.cpu_ns += s.cpu_ns;
            sum.at = s.at;
        }
        Some(sum)
    }

    /// Anonymous RSS summed over the distinct pids (see [`rss_anon`]).
    pub fn rss_anon(&self) -> Option<u64> {
        let pids = self.pids();
        if pids.is_empty() {
            return None;
        }
        pids.into_iter().map(rss_anon).sum()
    }

    /// CPU time (ns) by thread name, summed over the distinct pids (the
    /// shards of several nodes share names such as `tern-shard-0`).
    pub fn thread_cpu_ns(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for pid in self.pids() {
            for (name, ns) in thread_cpu_ns(pid) {
                *out.entry(name).or_insert(0) += ns;
            }
        }
        out
    }

    /// Whether two or more nodes name the same pid.
    pub fn shared(&self, pid: u32) -> bool {
        self.nodes.iter().filter(|n| n.pid == Some(pid)).count() > 1
    }
}

/// What a watch saw of one pid: its first and last reading and its peak RSS.
#[derive(Clone, Copy, Debug)]
struct Track {
    first: ProcSample,
    last: ProcSample,
    peak_rss: u64,
}

impl Track {
    fn update(&mut self, s: ProcSample) {
        self.last = s;
        self.peak_rss = self.peak_rss.max(s.rss_bytes);
    }
}

type Tracks = Arc<Mutex<BTreeMap<u32, Track>>>;

/// Samples every distinct pid of the nodes every [`WATCH_EVERY`] on a
/// thread of its own until [`NodeWatch::finish`] (or drop).
pub struct NodeWatch {
    procs: ServerProcs,
    tracks: Tracks,
    stop: Arc<AtomicBool>,
}

impl NodeWatch {
    /// Takes the first reading of each pid now and starts sampling (no
    /// thread when no pid is known).
    pub fn start(procs: &ServerProcs) -> NodeWatch {
        let pids = procs.pids();
        let tracks: Tracks = Arc::new(Mutex::new(BTreeMap::new()));
        read_all(&pids, &tracks);
        let stop = Arc::new(AtomicBool::new(false));
        if !pids.is_empty() {
            let (tracks, stop) = (tracks.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(WATCH_EVERY);
                    read_all(&pids, &tracks);
                }
            });
        }
        NodeWatch {
            procs: procs.clone(),
            tracks,
            stop,
        }
    }

    /// Takes a last reading, stops sampling and gives one entry per node:
    /// CPU over the watch, peak and last RSS (see [`NodeReport::per_unit`]
    /// for the CPU per unit of work).
    pub fn finish(&self) -> Vec<NodeReport> {
        self.stop.store(true, Ordering::Relaxed);
        read_all(&self.procs.pids(), &self.tracks);
        let tracks = self.tracks.lock().map(|t| t.clone()).unwrap_or_default();
        self.procs
            .nodes
            .iter()
            .map(|node| {
                let track = node.pid.and_then(|p| tracks.get(&p));
                NodeReport::measured(node, &self.procs, track)
            })
            .collect()
    }
}

impl Drop for NodeWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn read_all(pids: &[u32], tracks: &Tracks) {
    let Ok(mut tracks) = tracks.lock() else {
        return;
    };
    for pid in pids {
        let Ok(s) = sample(*pid) else { continue };
        tracks
            .entry(*pid)
            .and_modify(|t| t.update(s))
            .or_insert(Track {
                first: s,
                last: s,
                peak_rss: s.rss_bytes,
            });
    }
}

/// One node's figures in the report (`nodes: [...]` of the JSON).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    /// The node's client address, as given with `--server`.
    pub addr: String,
    pub pid: Option<u32>,
    /// True when other nodes name the same pid (nodes in one process): the
    /// CPU and RSS below are that whole process's.
    #[serde(default)]
    pub shared_pid: bool,
    /// Connections this run opened to the node (setup probes not counted;
    /// a reconnect counts again).
    #[serde(default)]
    pub connections: u64,
    /// The measured phase the CPU figures cover (e.g. `send_phase`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Wall time of the phase, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_s: Option<f64>,
    /// CPU time (user + system) of the pid over the phase, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_s: Option<f64>,
    /// `cpu_s` as a percentage of one core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_pct: Option<f64>,
    /// What `cpu_per_unit_us` divides by (e.g. `delivery`: the run's units
    /// over all nodes, since a message crosses nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// CPU µs of this pid per unit of the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_per_unit_us: Option<f64>,
    /// Highest RSS sampled over the phase, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_peak_bytes: Option<u64>,
    /// RSS at the end of the phase, bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_last_bytes: Option<u64>,
}

impl NodeReport {
    /// A node without measurements (its address, pid and sharing only).
    pub fn unmeasured(node: &NodeProc, procs: &ServerProcs) -> NodeReport {
        NodeReport {
            addr: node.addr.to_string(),
            pid: node.pid,
            shared_pid: node.pid.is_some_and(|p| procs.shared(p)),
            ..NodeReport::default()
        }
    }

    fn measured(node: &NodeProc, procs: &ServerProcs, track: Option<&Track>) -> NodeReport {
        let mut r = NodeReport::unmeasured(node, procs);
        if let Some(t) = track {
            let d = t.last.since(&t.first);
            r.wall_s = Some(d.wall_s);
            r.cpu_s = Some(d.cpu_s);
            r.cpu_pct = Some(d.cpu_pct_of_core());
            r.rss_peak_bytes = Some(t.peak_rss);
            r.rss_last_bytes = Some(t.last.rss_bytes);
        }
        r
    }

    /// Sets the CPU per `unit` (µs of this node's CPU per unit of the
    /// whole run, `units` of them), when its CPU was measured.
    pub fn per_unit(&mut self, unit: &str, units: u64) {
        self.unit = Some(unit.to_owned());
        self.cpu_per_unit_us = self.cpu_s.map(|cpu| cpu * 1e6 / units.max(1) as f64);
    }

    /// The node's line of the summary table.
    pub fn line(&self, index: usize) -> String {
        let mut s = format!(
            "  node {index} {} (pid {}{}): {} connections",
            self.addr,
            self.pid
                .map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
            if self.shared_pid { ", shared" } else { "" },
            self.connections
        );
        match (self.cpu_s, self.cpu_pct) {
            (Some(cpu), Some(pct)) => {
                let _ = write!(s, ", CPU {} s ({pct:.1} % of a core", fmt_num(cpu));
                if let (Some(us), Some(unit)) = (self.cpu_per_unit_us, &self.unit) {
                    let _ = write!(s, ", {us:.1} µs per {unit}");
                }
                s.push(')');
            }
            _ if self.pid.is_none() => s.push_str(", CPU not measured (pass --server-pid)"),
            _ => s.push_str(", CPU not measured in this scenario"),
        }
        if let (Some(peak), Some(last)) = (self.rss_peak_bytes, self.rss_last_bytes) {
            let mb = |b: u64| b as f64 / 1e6;
            let _ = write!(s, ", RSS peak {:.1} MB, last {:.1} MB", mb(peak), mb(last));
        }
        s.push('\n');
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn procs(pids: &[Option<u32>]) -> ServerProcs {
        ServerProcs {
            nodes: pids
                .iter()
                .enumerate()
                .map(|(i, pid)| NodeProc {
                    addr: format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                    pid: *pid,
                })
                .collect(),
        }
    }

    #[test]
    fn distinct_pids_and_sharing() {
        let p = procs(&[Some(7), Some(9), Some(7)]);
        assert_eq!(p.pids(), vec![7, 9]);
        assert!(p.shared(7));
        assert!(!p.shared(9));
        assert_eq!(procs(&[None, None]).sample().map(|s| s.rss_bytes), None);
    }

    #[test]
    fn a_shared_pid_is_counted_once_and_every_node_reports_it() {
        let me = std::process::id();
        let p = procs(&[Some(me), Some(me), Some(me)]);
        let one = sample(me).unwrap();
        let sum = p.sample().unwrap();
        // One process read once, not three times (RSS moves a little between reads).
        assert!(sum.rss_bytes < 2 * one.rss_bytes, "{sum:?} vs {one:?}");
        let watch = NodeWatch::start(&p);
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let mut nodes = watch.finish();
        nodes.iter_mut().for_each(|n| n.per_unit("delivery", 10));
        assert!(x > 0);
        assert_eq!(nodes.len(), 3);
        for n in &nodes {
            assert!(n.shared_pid);
            assert_eq!(n.pid, Some(me));
            assert!(n.rss_peak_bytes.unwrap() >= n.rss_last_bytes.unwrap());
            assert!(n.cpu_s.is_some());
            assert!(n.cpu_per_unit_us.is_some());
            assert!(n.line(0).contains("shared"), "{}", n.line(0));
        }
        assert_eq!(nodes[0].cpu_s, nodes[2].cpu_s);
    }

    /// Two processes (this one and a child): the totals add both, each
    /// node reports its own, neither is shared.
    #[test]
    fn distinct_pids_add_up_and_report_apart() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let (me, other) = (std::process::id(), child.id());
        let p = procs(&[Some(me), Some(other)]);
        let watch = NodeWatch::start(&p);
        let (a, b, sum) = (
            sample(me).unwrap(),
            sample(other).unwrap(),
            p.sample().unwrap(),
        );
        let nodes = watch.finish();
        let _ = child.kill();
        let _ = child.wait();
        // Both, read a moment apart (this process's RSS moves a little meanwhile).
        assert!(
            sum.rss_bytes > b.rss_bytes + a.rss_bytes / 2,
            "{sum:?} {a:?} {b:?}"
        );
        assert!(sum.cpu_ns >= b.cpu_ns);
        assert_eq!(nodes[1].pid, Some(other));
        assert!(nodes
            .iter()
            .all(|n| !n.shared_pid && n.rss_last_bytes.is_some()));
        assert!(
            nodes[1].rss_last_bytes < nodes[0].rss_last_bytes,
            "sleep is smaller than a test binary"
        );
    }

    #[test]
    fn an_unknown_pid_says_how_to_measure() {
        let p = procs(&[None]);
        let nodes = NodeWatch::start(&p).finish();
        assert_eq!(nodes[0].cpu_s, None);
        assert!(nodes[0].line(0).contains("pass --server-pid"));
    }
}
