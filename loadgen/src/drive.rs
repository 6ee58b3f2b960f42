//! Driving live devices: the open-loop dispatcher (each scheduled message
//! goes to its device's bounded queue at its intended time; a full queue
//! counts as a dropped send, never as a wait), waiting for stragglers, and
//! measuring the server's and the load generator's CPU over a phase.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::live::Job;
use crate::nodes::{NodeReport, NodeWatch, ServerProcs};
use crate::procfs::{sample_self, system_busy_ns, ProcSample};
use crate::report::Report;
use crate::sched::OpenLoop;
use crate::stats::{Counters, Stats};

/// What the dispatcher did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dispatched {
    pub issued: u64,
    pub dropped: u64,
}

/// Issues every event of `sched` at its intended time: `make(k, intended_ns)`
/// names the device and the job.
pub async fn open_loop(
    stats: &Stats,
    mut sched: OpenLoop,
    senders: &[mpsc::Sender<Job>],
    mut make: impl FnMut(u64, u64) -> (usize, Job),
) -> Dispatched {
    let mut out = Dispatched::default();
    while let Some(next) = sched.next_ns() {
        tokio::time::sleep_until(stats.clock.instant(next).into()).await;
        for k in sched.due(stats.clock.now_ns()) {
            let (device, job) = make(k, sched.intended_ns(k));
            out.issued += 1;
            let sent = senders
                .get(device)
                .is_some_and(|tx| tx.try_send(job).is_ok());
            if sent {
                Counters::add(&stats.counters.sent, 1);
            } else {
                out.dropped += 1;
                Counters::add(&stats.counters.dropped, 1);
            }
        }
    }
    out
}

/// Waits until `done()` holds or `timeout` passes; returns whether it held.
pub async fn wait_until(timeout: Duration, done: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// Resource readings at the start of a measured phase; the server's are
/// summed over the distinct pids of the target's nodes, and a
/// [`NodeWatch`] follows each node over the phase.
pub struct Phase {
    started: Instant,
    server: Option<ProcSample>,
    client: Option<ProcSample>,
    system_ns: Option<u64>,
    threads: BTreeMap<String, u64>,
    procs: ServerProcs,
    watch: NodeWatch,
}

/// CPU and wall time of a finished phase.
#[derive(Clone, Debug, Default)]
pub struct PhaseCost {
    pub wall_s: f64,
    pub server_cpu_s: Option<f64>,
    pub client_cpu_s: Option<f64>,
    /// CPU all other processes of the machine used meanwhile.
    pub other_cpu_s: Option<f64>,
    /// Server CPU by thread name over the phase, in seconds.
    pub server_threads: BTreeMap<String, f64>,
    /// Each node's CPU and RSS over the phase, in node order.
    pub nodes: Vec<NodeReport>,
}

impl Phase {
    pub fn start(procs: &ServerProcs) -> Phase {
        let system_ns = system_busy_ns();
        let threads = procs.thread_cpu_ns();
        Phase {
            started: Instant::now(),
            server: procs.sample(),
            client: sample_self().ok(),
            system_ns,
            threads,
            procs: procs.clone(),
            watch: NodeWatch::start(procs),
        }
    }

    /// The phase's cost, the server's and each node's.
    pub fn end(&self) -> PhaseCost {
        let server_now = self.procs.sample();
        let client_now = sample_self().ok();
        let system_s = self
            .system_ns
            .zip(system_busy_ns())
            .map(|(a, b)| b.saturating_sub(a) as f64 / 1e9);
        let server_cpu_s = self
            .server
            .as_ref()
            .zip(server_now.as_ref())
            .map(|(a, b)| b.since(a).cpu_s);
        let client_cpu_s = self
            .client
            .as_ref()
            .zip(client_now.as_ref())
            .map(|(a, b)| b.since(a).cpu_s);
        let other_cpu_s = system_s
            .map(|s| (s - server_cpu_s.unwrap_or(0.0) - client_cpu_s.unwrap_or(0.0)).max(0.0));
        let now = self.procs.thread_cpu_ns();
        let server_threads = now
            .iter()
            .map(|(name, ns)| {
                (
                    name.clone(),
                    ns.saturating_sub(self.threads.get(name).copied().unwrap_or(0)) as f64 / 1e9,
                )
            })
            .filter(|(_, s)| *s > 0.0)
            .collect();
        PhaseCost {
            wall_s: self.started.elapsed().as_secs_f64(),
            server_cpu_s,
            client_cpu_s,
            other_cpu_s,
            server_threads,
            nodes: self.watch.finish(),
        }
    }
}

impl PhaseCost {
    /// Writes `{prefix}_wall_s`, server/client CPU (s and % of one core),
    /// server CPU per `unit` in µs (`server_cpu_per_{unit}_us`), and each
    /// node's entry (`report.nodes`, replacing an earlier phase's).
    pub fn figures(&self, report: &mut Report, prefix: &str, unit: &str, units: u64) {
        self.node_figures(report, prefix);
        for node in &mut report.nodes {
            node.per_unit(unit, units);
        }
        report.figure(&format!("{prefix}_wall_s"), self.wall_s);
        if let Some(cpu) = self.server_cpu_s {
            report.figure(&format!("{prefix}_server_cpu_s"), cpu);
            report.figure(
                &format!("{prefix}_server_cpu_pct"),
                100.0 * cpu / self.wall_s.max(1e-9),
            );
            report.figure(
                &format!("server_cpu_per_{unit}_us"),
                cpu * 1e6 / (units.max(1) as f64),
            );
        } else {
            report.note(
                "server CPU not measured: pass --server-pid PID for a server started elsewhere",
            );
        }
        if let Some(cpu) = self.client_cpu_s {
            report.figure(&format!("{prefix}_client_cpu_s"), cpu);
            report.figure(
                &format!("{prefix}_client_cpu_pct"),
                100.0 * cpu / self.wall_s.max(1e-9),
            );
        }
        if let Some(cpu) = self.other_cpu_s {
            report.figure(
                &format!("{prefix}_other_cpu_pct"),
                100.0 * cpu / self.wall_s.max(1e-9),
            );
        }
        self.thread_figures(report, prefix);
    }

    /// Each node's CPU and RSS over this phase, named `prefix`, as the
    /// report's `nodes` (replacing an earlier phase's).
    pub fn node_figures(&self, report: &mut Report, prefix: &str) {
        report.nodes = self
            .nodes
            .iter()
            .cloned()
            .map(|mut n| {
                n.phase = Some(prefix.to_owned());
                n
            })
            .collect();
    }

    /// `{prefix}_thread_cpu_pct.{thread}`: each server thread's CPU as a
    /// percentage of one core (shows a saturated shard).
    pub fn thread_figures(&self, report: &mut Report, prefix: &str) {
        for (name, cpu) in &self.server_threads {
            report.figure(
                &format!("{prefix}_thread_cpu_pct.{name}"),
                100.0 * cpu / self.wall_s.max(1e-9),
            );
        }
    }
}

/// Runs `fut` with a progress ticker showing deliveries and a series' p99.
pub async fn with_progress<T>(
    stats: &Arc<Stats>,
    label: &str,
    series: &'static str,
    quiet: bool,
    fut: impl Future<Output = T>,
) -> T {
    let progress = crate::progress::Progress::new(label, None, quiet);
    let s = stats.clone();
    let started = Instant::now();
    let ticker = progress.ticker(move || {
        let n = Counters::get(&s.counters.delivered);
        let rate = n as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let msg = format!(
            "{} sent {} dropped {} errors {}",
            crate::progress::rate_message(rate, s.current_p99_us(series)),
            Counters::get(&s.counters.sent),
            Counters::get(&s.counters.dropped),
            Counters::get(&s.counters.errors)
        );
        (n, msg)
    });
    let out = fut.await;
    ticker.stop();
    out
}
