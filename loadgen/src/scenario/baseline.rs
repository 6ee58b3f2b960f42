//! `tern-load baseline`: the same client work against a bare quinn echo
//! server (`tern-load echo-server`, spawned as its own process so its RSS and
//! CPU are measured alone; same transport stack, TLS and tuning as tern, one
//! thread per core with `SO_REUSEPORT`). Phase 1 opens N connections at the
//! ramp rate (handshake + one Register-sized frame echoed, the analogue of
//! tern's authentication round trip) and holds them idle: RSS and CPU per
//! connection, idle CPU. Phase 2 (with `--rate`) echoes Send frames over the
//! first `--echo-connections` connections, open loop: the `echo` latency that
//! tern's send→ack and send→deliver are compared with.

use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use serde::Serialize;
use tern_client::connection::RawConnection;
use tern_proto::body::messaging;
use tern_proto::{Body, Frame};

use crate::args::{ClientArgs, OutputArgs};
use crate::conn::{user_name, Endpoints};
use crate::drive::{open_loop, wait_until, with_progress, Phase};
use crate::error::{LoadError, Result};
use crate::idle::{ramp_and_hold, IdleArgs};
use crate::live::{parse_payload, payload, Job, LiveDevice, Sink};
use crate::report::Report;
use crate::scenario::Ctx;
use crate::sched::OpenLoop;
use crate::stats::{Counters, Stats};
use crate::target::{Target, TargetArgs};

/// Flags of `tern-load baseline`.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Args {
    #[command(flatten)]
    pub idle: IdleArgs,
    /// Echoed frames per second over all echo connections (0 = idle phase only).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Connections the echo phase uses (the first ones opened).
    #[arg(long, default_value_t = 1000)]
    pub echo_connections: usize,
    /// Seconds of the echo phase.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop the echo phase after this many frames.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Bytes of payload in each echoed Send frame (at least 16).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Frames queued per connection before further sends count as dropped.
    #[arg(long, default_value_t = 1024)]
    pub queue: usize,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The baseline's "authentication": one Register-sized frame, echoed.
async fn echo_handshake(
    endpoints: Arc<Endpoints>,
    stats: Arc<Stats>,
    user: String,
    i: usize,
) -> Result<RawConnection> {
    let t0 = stats.clock.now_ns();
    let mut conn = endpoints.connect(i).await?;
    let t1 = stats.clock.now_ns();
    stats.record("step_handshake", t0, t1);
    let key = SigningKey::generate(&mut rand::thread_rng());
    let frame = conn.register_frame(1, &user, "tern-load", &key)?;
    let exchange = async {
        conn.sender.frame(&frame).await?;
        match conn.receiver.next().await? {
            Some(back) if back == frame => Ok(()),
            Some(other) => Err(crate::conn::unexpected("the echoed frame", &other.body)),
            None => Err(LoadError::Closed("the echo handshake".into())),
        }
    };
    tokio::time::timeout(endpoints.timeout, exchange)
        .await
        .map_err(|_| LoadError::Timeout {
            what: "the echo of the first frame".into(),
            secs: endpoints.timeout.as_secs(),
        })??;
    stats.record("step_first_echo", t1, stats.clock.now_ns());
    Ok(conn)
}

pub async fn run(args: Args) -> Result<Report> {
    let target = Target::echo(&args.target)?;
    let mut ctx = Ctx::new("baseline", &args, target, &args.client)?;
    let probe = echo_handshake(
        ctx.endpoints.clone(),
        ctx.stats.clone(),
        user_name(&ctx.run, "p", 0),
        0,
    )
    .await
    .map_err(|e| LoadError::Unreachable {
        addr: ctx.endpoints.addr,
        detail: e.to_string(),
    })?;
    let (run, stats) = (ctx.run.clone(), ctx.stats.clone());
    let handshake = move |endpoints: Arc<Endpoints>, i: usize| {
        echo_handshake(endpoints, stats.clone(), user_name(&run, "c", i), i)
    };
    let conns = ramp_and_hold(
        &ctx.endpoints,
        &args.idle,
        &ctx.stats,
        &ctx.target.procs,
        args.output.quiet,
        &mut ctx.report,
        handshake,
    )
    .await;
    ctx.report.note("baseline: bare quinn echo server with tern's transport (SO_REUSEPORT shards, CID routing, TLS, ServerTransportTuning); connect = handshake + one echoed Register-sized frame");
    if args.rate > 0.0 {
        echo_phase(&args, &mut ctx, conns).await;
    }
    drop(probe);
    Ok(ctx.close().await)
}

/// Records the round trip of every echoed Send frame.
struct EchoSink {
    stats: Arc<Stats>,
}

impl Sink for EchoSink {
    fn on_echo(&self, _device: usize, _request_id: u64, payload: &[u8], now_ns: u64) {
        if let Some((_, intended)) = parse_payload(payload) {
            self.stats.record("echo", intended, now_ns);
            Counters::add(&self.stats.counters.delivered, 1);
        }
    }

    fn on_closed(&self, _device: usize, _why: &str) {
        Counters::add(&self.stats.counters.errors, 1);
    }
}

async fn echo_phase(args: &Args, ctx: &mut Ctx, conns: Vec<RawConnection>) {
    let sink: Arc<dyn Sink> = Arc::new(EchoSink {
        stats: ctx.stats.clone(),
    });
    let devices: Vec<LiveDevice> = conns
        .into_iter()
        .take(args.echo_connections.max(1))
        .enumerate()
        .map(|(i, conn)| {
            LiveDevice::start(i, conn, sink.clone(), ctx.stats.clock, None, args.queue)
        })
        .collect();
    let senders: Vec<_> = devices.iter().map(|d| d.jobs.clone()).collect();
    let n = senders.len().max(1) as u64;
    let stats = ctx.stats.clone();
    let phase = Phase::start(&ctx.target.procs);
    let sched = OpenLoop::new(
        args.rate,
        stats.clock.now_ns(),
        args.messages,
        Some(Duration::from_secs(args.duration)),
    );
    let size = args.payload;
    let make = |k: u64, intended: u64| {
        let body = Body::Send(messaging::Send {
            conversation_id: 1,
            client_message_id: k + 1,
            expires_in_secs: 0,
            flags: 0,
            payload: payload(k, intended, size),
        });
        ((k % n) as usize, Job::Raw(Frame::new(k + 1, body).encode()))
    };
    let dispatched = with_progress(
        &stats,
        "echo",
        "echo",
        args.output.quiet,
        open_loop(&stats, sched, &senders, make),
    )
    .await;
    let c = &stats.counters;
    wait_until(Duration::from_secs(10), || {
        Counters::get(&c.delivered) >= Counters::get(&c.sent)
    })
    .await;
    let cost = phase.end();
    let received = Counters::get(&c.delivered);
    let r = &mut ctx.report;
    r.figure("echo_connections", senders.len() as f64);
    r.figure("echo_sent", Counters::get(&c.sent) as f64);
    r.figure("echo_received", received as f64);
    r.figure("echo_dropped", dispatched.dropped as f64);
    r.figure(
        "echo_lost",
        Counters::get(&c.sent).saturating_sub(received) as f64,
    );
    r.figure(
        "echo_throughput_per_s",
        received as f64 / cost.wall_s.max(1e-9),
    );
    r.figure("errors", Counters::get(&c.errors) as f64);
    cost.figures(r, "echo", "echo", received);
    devices.into_iter().for_each(LiveDevice::close);
}
