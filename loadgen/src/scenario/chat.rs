//! `tern-load chat`: pairs of devices exchange 1:1 messages. Open loop at a
//! fixed total `--rate` (message `k` is sent by device `k mod 2P` to its
//! partner at its intended time), or at saturation with `--rate 0` (each
//! device keeps `--window` sends in flight, closed loop). Measures send→ack
//! (SendAck at the sender) and send→deliver (Deliver at the partner; the
//! intended send time rides in the payload), throughput, drops, errors, and
//! the server's CPU per delivered message. Receivers acknowledge their
//! cursor every `--ack-interval-ms`, like a real client. Every run carries a
//! soak report ([`crate::soak`]): send→deliver windows counted from the
//! start of sending, stalled windows, server RSS and CPU per message per
//! minute.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use tern_proto::{ConversationKind, ErrorBody, Message};
use tokio::sync::mpsc;

use crate::args::{ClientArgs, OutputArgs};
use crate::conn::{user_name, CONTROL_ID_BASE};
use crate::drive::{open_loop, wait_until, with_progress, Phase};
use crate::error::{LoadError, Result};
use crate::live::{parse_payload, payload, Job, LiveDevice, Pending, Sink};
use crate::minutes::Sampler;
use crate::report::Report;
use crate::scenario::Ctx;
use crate::sched::OpenLoop;
use crate::setup::{create_conversations, register_many, CreateJob};
use crate::soak::SoakReport;
use crate::stats::{Counters, Stats};
use crate::target::{Target, TargetArgs};

/// Flags of `tern-load chat`.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Args {
    /// Connections (devices), two per pair.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Messages per second over all pairs (open loop); 0 = saturation (closed loop, --window per device).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop after this many messages.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Payload bytes per message (at least 16: message number and intended send time).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Sends in flight per device in saturation mode.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Receivers ack their cursor this often (0 = never).
    #[arg(long, default_value_t = 1000)]
    pub ack_interval_ms: u64,
    /// Sends queued per device before further ones count as dropped.
    #[arg(long, default_value_t = 1024)]
    pub queue: usize,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Closed-loop refill for saturation mode.
struct Saturation {
    senders: OnceLock<Vec<mpsc::Sender<Job>>>,
    next_k: AtomicU64,
    stopped: AtomicBool,
    limit: u64,
}

struct ChatSink {
    stats: Arc<Stats>,
    pending: Pending,
    convs: Vec<u64>,
    size: usize,
    saturation: Option<Saturation>,
    closing: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl ChatSink {
    /// Queues message `k` on `device` now (saturation mode).
    fn refill(&self, device: usize, now_ns: u64) {
        let Some(sat) = &self.saturation else { return };
        if sat.stopped.load(Ordering::Relaxed) {
            return;
        }
        let k = sat.next_k.fetch_add(1, Ordering::Relaxed);
        if k >= sat.limit {
            return;
        }
        let job = self.job(device, k, now_ns);
        let queued = sat
            .senders
            .get()
            .and_then(|s| s.get(device))
            .is_some_and(|tx| tx.try_send(job).is_ok());
        let c = &self.stats.counters;
        Counters::add(if queued { &c.sent } else { &c.dropped }, 1);
    }

    fn job(&self, device: usize, k: u64, intended: u64) -> Job {
        self.pending.insert(k + 1, intended);
        let conversation_id = self.convs.get(device / 2).copied().unwrap_or(0);
        Job::Send {
            request_id: k + 1,
            conversation_id,
            payload: payload(k, intended, self.size),
        }
    }
}

impl Sink for ChatSink {
    fn on_ack(&self, device: usize, request_id: u64, now_ns: u64) {
        if let Some(intended) = self.pending.take(request_id) {
            self.stats.record("send_ack", intended, now_ns);
            Counters::add(&self.stats.counters.acked, 1);
            self.refill(device, now_ns);
        }
    }

    fn on_deliver(&self, _device: usize, message: &Message, now_ns: u64) {
        if let Some((_, intended)) = parse_payload(&message.payload) {
            self.stats.record("send_deliver", intended, now_ns);
            Counters::add(&self.stats.counters.delivered, 1);
        }
    }

    fn on_error(&self, device: usize, request_id: u64, error: &ErrorBody) {
        Counters::add(&self.stats.counters.errors, 1);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| format!("{:?}: {}", error.code, error.message));
        }
        if request_id < CONTROL_ID_BASE && self.pending.take(request_id).is_some() {
            self.refill(device, self.stats.clock.now_ns());
        }
    }

    fn on_closed(&self, device: usize, why: &str) {
        if !self.closing.load(Ordering::Relaxed) {
            self.on_error(
                device,
                0,
                &ErrorBody {
                    code: tern_proto::fb::ErrorCode::Unknown,
                    message: format!("connection closed: {why}"),
                    retry_after_ms: 0,
                },
            );
        }
    }
}

pub async fn run(args: Args) -> Result<Report> {
    if args.connections < 2 {
        return Err(LoadError::Usage(
            "chat needs --connections of at least 2 (one pair)".into(),
        ));
    }
    let target = Target::tern(&args.target)?;
    let mut ctx = Ctx::new("chat", &args, target, &args.client)?;
    let (_, probe) = ctx.endpoints.probe(&user_name(&ctx.run, "p", 0)).await?;
    let pairs = args.connections / 2;
    let devices = register_many(
        &ctx.endpoints,
        &ctx.run,
        "u",
        pairs * 2,
        args.client.setup_concurrency,
        args.output.quiet,
    )
    .await?;
    let mut slots: Vec<_> = devices.into_iter().map(Some).collect();
    let jobs = (0..pairs)
        .map(|p| CreateJob {
            creator: 2 * p,
            kind: ConversationKind::Direct,
            members: vec![user_name(&ctx.run, "u", 2 * p + 1)],
        })
        .collect();
    let convs = create_conversations(
        &mut slots,
        jobs,
        args.client.setup_concurrency,
        args.client.timeout(),
    )
    .await?;
    let sink = Arc::new(ChatSink {
        stats: ctx.stats.clone(),
        pending: Pending::new(),
        convs,
        size: args.payload,
        saturation: saturation(&args),
        closing: AtomicBool::new(false),
        first_error: Mutex::new(None),
    });
    let ack = (args.ack_interval_ms > 0).then(|| Duration::from_millis(args.ack_interval_ms));
    let live: Vec<LiveDevice> = slots
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, (_, conn))| {
            LiveDevice::start(i, conn, sink.clone(), ctx.stats.clock, ack, args.queue)
        })
        .collect();
    send_phase(&args, &mut ctx, &sink, &live).await;
    sink.closing.store(true, Ordering::Relaxed);
    live.into_iter().for_each(LiveDevice::close);
    drop(probe);
    Ok(ctx.close().await)
}

fn saturation(args: &Args) -> Option<Saturation> {
    if args.rate > 0.0 {
        return None;
    }
    Some(Saturation {
        senders: OnceLock::new(),
        next_k: AtomicU64::new(0),
        stopped: AtomicBool::new(false),
        limit: args.messages.unwrap_or(u64::MAX),
    })
}

async fn send_phase(args: &Args, ctx: &mut Ctx, sink: &Arc<ChatSink>, live: &[LiveDevice]) {
    let senders: Vec<_> = live.iter().map(|d| d.jobs.clone()).collect();
    let stats = ctx.stats.clone();
    let phase = Phase::start(&ctx.target.procs);
    let start_ns = stats.clock.now_ns();
    stats.start_windows(start_ns);
    let sampler = Sampler::start(stats.clone(), &ctx.target.procs);
    let dispatched = if let Some(sat) = &sink.saturation {
        saturate(args, sink, sat, senders).await;
        None
    } else {
        let n = senders.len().max(1) as u64;
        let sched = OpenLoop::new(
            args.rate,
            start_ns,
            args.messages,
            Some(Duration::from_secs(args.duration)),
        );
        let make =
            |k: u64, intended: u64| ((k % n) as usize, sink.job((k % n) as usize, k, intended));
        Some(
            with_progress(
                &stats,
                "chat",
                "send_deliver",
                args.output.quiet,
                open_loop(&stats, sched, &senders, make),
            )
            .await,
        )
    };
    let c = &stats.counters;
    let drained = wait_until(Duration::from_secs(15), || {
        let acked = Counters::get(&c.acked);
        acked + Counters::get(&c.errors) >= Counters::get(&c.sent)
            && Counters::get(&c.delivered) >= acked
    })
    .await;
    let cost = phase.end();
    let minutes = sampler.stop();
    ctx.report.soak = Some(SoakReport::from_stats(&stats, "send_deliver", minutes));
    figures(
        &mut ctx.report,
        &stats,
        args,
        cost,
        drained,
        dispatched.is_none(),
    );
    if let Ok(Some(first)) = sink.first_error.lock().map(|e| e.clone()) {
        ctx.report.note(format!("first error: {first}"));
    }
}

async fn saturate(
    args: &Args,
    sink: &Arc<ChatSink>,
    sat: &Saturation,
    senders: Vec<mpsc::Sender<Job>>,
) {
    let n = senders.len();
    let _ = sat.senders.set(senders);
    let now = sink.stats.clock.now_ns();
    for device in 0..n {
        for _ in 0..args.window.max(1) {
            sink.refill(device, now);
        }
    }
    let stats = sink.stats.clone();
    let duration = Duration::from_secs(args.duration);
    with_progress(
        &stats,
        "chat",
        "send_deliver",
        args.output.quiet,
        tokio::time::sleep(duration),
    )
    .await;
    sat.stopped.store(true, Ordering::Relaxed);
}

fn figures(
    r: &mut Report,
    stats: &Stats,
    args: &Args,
    cost: crate::drive::PhaseCost,
    drained: bool,
    closed_loop: bool,
) {
    let c = &stats.counters;
    let (sent, acked, delivered) = (
        Counters::get(&c.sent),
        Counters::get(&c.acked),
        Counters::get(&c.delivered),
    );
    r.figure("pairs", (args.connections / 2) as f64);
    r.figure("target_rate_per_s", args.rate);
    r.figure("messages_sent", sent as f64);
    r.figure("messages_acked", acked as f64);
    r.figure("messages_delivered", delivered as f64);
    r.figure("dropped_sends", Counters::get(&c.dropped) as f64);
    r.figure("errors", Counters::get(&c.errors) as f64);
    r.figure("lost_deliveries", acked.saturating_sub(delivered) as f64);
    r.figure(
        "throughput_delivered_per_s",
        delivered as f64 / cost.wall_s.max(1e-9),
    );
    cost.figures(r, "send_phase", "delivery", delivered);
    if !drained {
        r.note("not every send was acked and delivered within 15 s of the end of sending");
    }
    if closed_loop {
        r.note(
            "saturation (closed loop): latencies are measured from each send's actual issue time",
        );
    } else {
        r.note("open loop: latencies are measured from each message's intended send time (coordinated-omission corrected)");
    }
}
