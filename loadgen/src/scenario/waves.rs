//! `tern-load waves`: waves of connections that complete the QUIC handshake
//! and never authenticate (issue 9 item 11). Each wave opens `--connections`
//! connections at `--ramp` per second, each opening its control stream and
//! (with `--send request`, the default) sending one request that needs
//! authentication, which the server answers with `NotAuthenticated`; then
//! nothing more. The server closes them at its authentication timeout (10 s
//! by default). The wave ends when every connection is closed; after
//! `--settle` seconds the next one starts. The server's RSS (VmRSS) is read
//! before the first wave, every 100 ms during each wave (its peak), and
//! after each wave; the report gives RSS per connection (peak of the first
//! wave over the start), RSS after each wave and after all of them, and how
//! long the server took to close the connections.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tern_client::connection::RawConnection;
use tern_proto::body::devices;
use tern_proto::Frame;
use tokio::task::JoinSet;

use crate::args::{ClientArgs, OutputArgs};
use crate::conn::Endpoints;
use crate::error::Result;
use crate::nodes::ServerProcs;
use crate::report::Report;
use crate::scenario::Ctx;
use crate::target::{Target, TargetArgs};

/// What an unauthenticated connection sends before it falls silent.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Send {
    /// Nothing: the control stream is opened but no byte is written.
    Nothing,
    /// One request that needs authentication (answered `NotAuthenticated`).
    Request,
}

/// Flags of `tern-load waves`.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Args {
    /// Connections per wave.
    #[arg(long, default_value_t = 750)]
    pub connections: usize,
    /// Waves.
    #[arg(long, default_value_t = 8)]
    pub waves: usize,
    /// New connections per second within a wave (open-loop ramp).
    #[arg(long, default_value_t = 1000.0)]
    pub ramp: f64,
    /// What each connection sends before falling silent.
    #[arg(long, value_enum, default_value_t = Send::Request)]
    pub send: Send,
    /// Seconds after the last connection of a wave closed before RSS is read and the next wave starts.
    #[arg(long, default_value_t = 2)]
    pub settle: u64,
    /// Seconds a wave may wait for the server to close its connections.
    #[arg(long, default_value_t = 60)]
    pub close_wait: u64,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How one wave went.
struct Wave {
    opened: usize,
    failed: usize,
    first_error: Option<String>,
    /// Connections the server had not closed by `--close-wait`.
    still_open: usize,
    /// Seconds from the last connection up to the last close.
    closed_after_s: f64,
    peak_rss: Option<u64>,
    after_rss: Option<u64>,
    peak_anon: Option<u64>,
    after_anon: Option<u64>,
}

/// One reading of the server's memory: VmRSS and RssAnon, bytes.
#[derive(Clone, Copy, Default)]
struct Mem {
    rss: Option<u64>,
    anon: Option<u64>,
}

impl Mem {
    fn read(procs: &ServerProcs) -> Mem {
        Mem {
            rss: procs.sample().map(|s| s.rss_bytes),
            anon: procs.rss_anon(),
        }
    }

    fn max(self, other: Mem) -> Mem {
        Mem {
            rss: self.rss.max(other.rss),
            anon: self.anon.max(other.anon),
        }
    }
}

pub async fn run(args: Args) -> Result<Report> {
    let target = Target::tern(&args.target)?;
    let mut ctx = Ctx::new("waves", &args, target, &args.client)?;
    let procs = ctx.target.procs.clone();
    let cpu_before = procs.sample();
    let mem = move || Mem::read(&procs);
    // One throw-away connection first, so the start excludes one-time setup
    // (the first handshake's TLS and runtime allocations).
    if let Ok(conn) = ctx.endpoints.connect(0).await {
        conn.connection.close(0u32.into(), b"warm-up");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = mem();
    let mut waves = Vec::with_capacity(args.waves);
    for w in 0..args.waves {
        let wave = one_wave(&ctx.endpoints, &args, &mem).await;
        if !args.output.quiet {
            eprintln!(
                "wave {}: {} open ({} failed), closed {:.1} s after the last, RSS peak {} MiB, after {} MiB (anonymous: {} / {} MiB)",
                w + 1,
                wave.opened,
                wave.failed,
                wave.closed_after_s,
                mib(wave.peak_rss),
                mib(wave.after_rss),
                mib(wave.peak_anon),
                mib(wave.after_anon),
            );
        }
        waves.push(wave);
    }
    figures(&mut ctx.report, &args, before, &waves);
    if let (Some(a), Some(b)) = (cpu_before, ctx.target.procs.sample()) {
        let opened: usize = waves.iter().map(|w| w.opened).sum();
        let cpu = b.since(&a).cpu_s;
        ctx.report.figure("server_cpu_s", cpu);
        ctx.report
            .figure("server_cpu_per_conn_us", cpu * 1e6 / opened.max(1) as f64);
    }
    ctx.report.note(
        "waves: connections that complete the QUIC handshake and never authenticate; \
         server_rss_per_conn_bytes = (peak of wave 1 - before) / connections; \
         server_rss_after_bytes = after the last wave's connections closed and --settle passed; \
         server_anon_*: RssAnon, the same without the binary's code pages (VmRSS counts those \
         once they are first run, and they stay: clean, shared, reclaimable)",
    );
    Ok(ctx.close().await)
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "?".into(), |b| format!("{:.1}", b as f64 / 1048576.0))
}

async fn one_wave(endpoints: &Arc<Endpoints>, args: &Args, mem: &impl Fn() -> Mem) -> Wave {
    let mut peak = mem();
    let mut tasks = JoinSet::new();
    let gap = Duration::from_secs_f64(1.0 / args.ramp.max(1.0));
    let started = Instant::now();
    for i in 0..args.connections {
        let due = started + gap.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (endpoints, send) = (endpoints.clone(), args.send);
        tasks.spawn(async move { silent_connection(&endpoints, i, send).await });
        peak = peak.max(mem());
    }
    let mut conns = Vec::with_capacity(args.connections);
    let (mut failed, mut first_error) = (0, None);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(conn)) => conns.push(conn),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let all_up = Instant::now();
    let deadline = all_up + Duration::from_secs(args.close_wait);
    let mut still_open = conns.len();
    while still_open > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(mem());
        still_open = conns
            .iter()
            .filter(|c| c.connection.close_reason().is_none())
            .count();
    }
    let closed_after_s = all_up.elapsed().as_secs_f64();
    let opened = conns.len();
    drop(conns);
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let after = mem();
    Wave {
        opened,
        failed,
        first_error,
        still_open,
        closed_after_s,
        peak_rss: peak.rss,
        after_rss: after.rss,
        peak_anon: peak.anon,
        after_anon: after.anon,
    }
}

/// Handshake, control stream, and (with `Send::Request`) one request that
/// needs authentication; the connection is kept without another byte.
async fn silent_connection(endpoints: &Endpoints, i: usize, send: Send) -> Result<RawConnection> {
    let mut conn = endpoints.connect(i).await?;
    if send == Send::Request {
        let frame = Frame::new(
            1,
            devices::ListDevices {
                user: "anyone".into(),
            },
        );
        conn.sender
            .frame(&frame)
            .await
            .map_err(crate::error::LoadError::Connection)?;
    }
    Ok(conn)
}

fn figures(report: &mut Report, args: &Args, before: Mem, waves: &[Wave]) {
    let n = args.connections as f64;
    report.figure("connections_per_wave", n);
    report.figure("waves", waves.len() as f64);
    report.figure(
        "connections_opened",
        waves.iter().map(|w| w.opened).sum::<usize>() as f64,
    );
    report.figure(
        "connect_failures",
        waves.iter().map(|w| w.failed).sum::<usize>() as f64,
    );
    report.figure(
        "left_open_by_server",
        waves.iter().map(|w| w.still_open).sum::<usize>() as f64,
    );
    if let Some(e) = waves.iter().find_map(|w| w.first_error.clone()) {
        report.note(format!("first connect failure: {e}"));
    }
    let closed_max = waves.iter().map(|w| w.closed_after_s).fold(0.0, f64::max);
    report.figure("closed_after_last_connect_max_s", closed_max);
    if let Some(before) = before.anon {
        report.figure("server_anon_before_bytes", before as f64);
        if let Some(peak) = waves.first().and_then(|w| w.peak_anon) {
            report.figure(
                "server_anon_per_conn_bytes",
                (peak as f64 - before as f64) / n.max(1.0),
            );
        }
        if let Some(peak) = waves.iter().filter_map(|w| w.peak_anon).max() {
            report.figure("server_anon_peak_bytes", peak as f64);
        }
        if let Some(after) = waves.last().and_then(|w| w.after_anon) {
            report.figure("server_anon_after_bytes", after as f64);
        }
    }
    let Some(before) = before.rss else {
        report
            .note("server RSS not measured: pass --server-pid PID for a server started elsewhere");
        return;
    };
    report.figure("server_rss_before_bytes", before as f64);
    for (w, wave) in waves.iter().enumerate() {
        if let Some(peak) = wave.peak_rss {
            report.figure(&format!("server_rss_peak_bytes.wave{}", w + 1), peak as f64);
        }
        if let Some(after) = wave.after_rss {
            report.figure(
                &format!("server_rss_after_bytes.wave{}", w + 1),
                after as f64,
            );
        }
    }
    if let Some(peak) = waves.first().and_then(|w| w.peak_rss) {
        report.figure(
            "server_rss_per_conn_bytes",
            (peak as f64 - before as f64) / n.max(1.0),
        );
    }
    let peak_max = waves.iter().filter_map(|w| w.peak_rss).max();
    if let Some(peak) = peak_max {
        report.figure("server_rss_peak_bytes", peak as f64);
    }
    if let Some(after) = waves.last().and_then(|w| w.after_rss) {
        report.figure("server_rss_after_bytes", after as f64);
        report.figure(
            "server_rss_after_growth_bytes",
            after as f64 - before as f64,
        );
    }
}
