//! Opening many connections at a ramp rate and holding them idle: the body of
//! the `connect` scenario and of the baseline's idle phase, so both report
//! the same figures under the same names (connect latency, failures, server
//! RSS and CPU per connection, idle CPU of the server during the hold).

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tern_client::connection::RawConnection;
use tokio::task::JoinSet;

use crate::conn::Endpoints;
use crate::drive::Phase;
use crate::error::Result;
use crate::nodes::ServerProcs;
use crate::procfs::{sample_self, ProcSample};
use crate::progress::{rate_message, Progress};
use crate::report::Report;
use crate::sched::OpenLoop;
use crate::stats::Stats;

/// How many connections, how fast, and for how long to hold them.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct IdleArgs {
    /// Connections to open (each authenticated, or echoed once for the baseline).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// New connections per second (open-loop ramp).
    #[arg(long, default_value_t = 2000.0)]
    pub ramp: f64,
    /// Seconds to hold the connections idle after the last one is up.
    #[arg(long, default_value_t = 30)]
    pub hold: u64,
    /// Seconds after the ramp before idle CPU is measured (lets stragglers settle).
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
}

/// Connections that came up, and how the ramp went.
pub struct Opened {
    pub conns: Vec<RawConnection>,
    pub failures: u64,
    pub first_error: Option<String>,
    /// Seconds from the first intended connect to the last successful one.
    pub all_connected_s: f64,
}

/// Shared by the ramp's tasks.
struct Ramp {
    stats: Arc<Stats>,
    conns: Mutex<Vec<RawConnection>>,
    failures: AtomicU64,
    last_ok_ns: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Ramp {
    fn done(&self, intended_ns: u64, result: Result<RawConnection>) {
        let now = self.stats.clock.now_ns();
        match result {
            Ok(conn) => {
                self.stats.record("connect", intended_ns, now);
                self.last_ok_ns.fetch_max(now, Ordering::Relaxed);
                if let Ok(mut conns) = self.conns.lock() {
                    conns.push(conn);
                }
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// Opens `args.connections` connections with `handshake`, `args.ramp` per second.
pub async fn open<F, Fut>(
    endpoints: &Arc<Endpoints>,
    args: &IdleArgs,
    stats: &Arc<Stats>,
    quiet: bool,
    handshake: F,
) -> Opened
where
    F: Fn(Arc<Endpoints>, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<RawConnection>> + Send + 'static,
{
    let ramp = Arc::new(Ramp {
        stats: stats.clone(),
        conns: Mutex::new(Vec::with_capacity(args.connections)),
        failures: AtomicU64::new(0),
        last_ok_ns: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });
    let ticker = ramp_ticker(&ramp, args.connections, quiet);
    let start_ns = stats.clock.now_ns();
    let mut sched = OpenLoop::new(args.ramp, start_ns, Some(args.connections as u64), None);
    let handshake = Arc::new(handshake);
    let mut tasks = JoinSet::new();
    while let Some(next) = sched.next_ns() {
        tokio::time::sleep_until(stats.clock.instant(next).into()).await;
        for k in sched.due(stats.clock.now_ns()) {
            let (ramp, handshake, endpoints) = (ramp.clone(), handshake.clone(), endpoints.clone());
            let intended = sched.intended_ns(k);
            tasks.spawn(async move { ramp.done(intended, handshake(endpoints, k as usize).await) });
        }
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    ticker.stop();
    let conns = ramp
        .conns
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    let last_ok = ramp.last_ok_ns.load(Ordering::Relaxed);
    let first_error = ramp.first_error.lock().ok().and_then(|e| e.clone());
    Opened {
        conns,
        failures: ramp.failures.load(Ordering::Relaxed),
        first_error,
        all_connected_s: last_ok.saturating_sub(start_ns) as f64 / 1e9,
    }
}

fn ramp_ticker(ramp: &Arc<Ramp>, total: usize, quiet: bool) -> crate::progress::Ticker {
    let progress = Progress::new("connect", Some(total as u64), quiet);
    let ramp = ramp.clone();
    let started = std::time::Instant::now();
    progress.ticker(move || {
        let ok = ramp.conns.lock().map(|l| l.len()).unwrap_or(0) as u64;
        let rate = ok as f64 / started.elapsed().as_secs_f64().max(1e-3);
        let failed = ramp.failures.load(Ordering::Relaxed);
        (
            ok + failed,
            format!(
                "{} failed {failed}",
                rate_message(rate, ramp.stats.current_p99_us("connect"))
            ),
        )
    })
}

/// Server and client readings around the phases of an idle run.
pub struct Readings {
    pub before: Option<ProcSample>,
    pub client_before: Option<ProcSample>,
}

impl Readings {
    pub fn take(procs: &ServerProcs) -> Readings {
        Readings {
            before: procs.sample(),
            client_before: sample_self().ok(),
        }
    }
}

/// Runs the ramp, then the hold, and writes the figures into `report`.
pub async fn ramp_and_hold<F, Fut>(
    endpoints: &Arc<Endpoints>,
    args: &IdleArgs,
    stats: &Arc<Stats>,
    procs: &ServerProcs,
    quiet: bool,
    report: &mut Report,
    handshake: F,
) -> Vec<RawConnection>
where
    F: Fn(Arc<Endpoints>, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<RawConnection>> + Send + 'static,
{
    let readings = Readings::take(procs);
    let phase = Phase::start(procs);
    let opened = open(endpoints, args, stats, quiet, handshake).await;
    let after_connect = procs.sample();
    let client_after = sample_self().ok();
    connect_figures(
        report,
        args,
        &opened,
        &readings,
        after_connect.as_ref(),
        client_after.as_ref(),
    );
    let cost = phase.end();
    if let Some(other) = cost.other_cpu_s {
        report.figure(
            "connect_other_cpu_pct",
            100.0 * other / cost.wall_s.max(1e-9),
        );
    }
    cost.thread_figures(report, "connect");
    cost.node_figures(report, "connect");
    hold(args, procs, quiet, report, &opened.conns).await;
    opened.conns
}

fn connect_figures(
    report: &mut Report,
    args: &IdleArgs,
    opened: &Opened,
    r: &Readings,
    after: Option<&ProcSample>,
    client_after: Option<&ProcSample>,
) {
    let ok = opened.conns.len() as f64;
    report.figure("connections_requested", args.connections as f64);
    report.figure("connections_ok", ok);
    report.figure("connect_failures", opened.failures as f64);
    report.figure("connect_all_s", opened.all_connected_s);
    report.figure("connect_rate_per_s", ok / opened.all_connected_s.max(1e-9));
    if let Some(e) = &opened.first_error {
        report.note(format!("first connect failure: {e}"));
    }
    if let (Some(before), Some(after)) = (&r.before, after) {
        let d = after.since(before);
        report.figure("server_rss_before_bytes", before.rss_bytes as f64);
        report.figure("server_rss_connected_bytes", after.rss_bytes as f64);
        report.figure("server_rss_per_conn_bytes", d.rss_delta_bytes / ok.max(1.0));
        report.figure("server_cpu_connect_s", d.cpu_s);
        report.figure("server_cpu_per_conn_us", d.cpu_s * 1e6 / ok.max(1.0));
    } else {
        report.note(
            "server RSS/CPU not measured: pass --server-pid PID for a server started elsewhere",
        );
    }
    if let (Some(before), Some(after)) = (&r.client_before, client_after) {
        let d = after.since(before);
        report.figure("client_cpu_connect_s", d.cpu_s);
        report.figure("client_rss_per_conn_bytes", d.rss_delta_bytes / ok.max(1.0));
    }
}

async fn hold(
    args: &IdleArgs,
    procs: &ServerProcs,
    quiet: bool,
    report: &mut Report,
    conns: &[RawConnection],
) {
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let start = procs.sample();
    let phase = Phase::start(procs);
    let progress = Progress::new("hold", Some(args.hold), quiet);
    for s in 0..args.hold {
        progress.set(s, format!("{} connections held", conns.len()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    progress.finish();
    let end = procs.sample();
    let alive = conns
        .iter()
        .filter(|l| l.connection.close_reason().is_none())
        .count();
    report.figure("hold_s", args.hold as f64);
    report.figure("alive_after_hold", alive as f64);
    report.figure("dropped_during_hold", (conns.len() - alive) as f64);
    if let (Some(start), Some(end)) = (start, end) {
        let d = end.since(&start);
        report.figure("server_idle_cpu_pct", d.cpu_pct_of_core());
        report.figure("server_rss_held_bytes", end.rss_bytes as f64);
    }
    let cost = phase.end();
    if let Some(cpu) = cost.client_cpu_s {
        report.figure("hold_client_cpu_pct", 100.0 * cpu / cost.wall_s.max(1e-9));
    }
    if let Some(cpu) = cost.other_cpu_s {
        report.figure("hold_other_cpu_pct", 100.0 * cpu / cost.wall_s.max(1e-9));
    }
}
