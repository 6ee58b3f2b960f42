//! `tern-load group`: `--groups` groups of `--members` devices each (up to
//! thousands: members beyond one request's limit join with AddMembers).
//! Messages go out open loop at `--rate` over all groups, each sent by one of
//! the first `--senders` members of its group; every other member receives
//! it. Measures time from the intended send to the first and to the last
//! recipient of each message, every delivery, send→ack, and the server's
//! CPU per recipient delivery.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tern_proto::{ConversationKind, ErrorBody, Message};

use crate::args::{ClientArgs, OutputArgs};
use crate::conn::user_name;
use crate::drive::{open_loop, wait_until, with_progress, Phase};
use crate::error::{LoadError, Result};
use crate::live::{parse_payload, payload, Job, LiveDevice, Pending, Sink};
use crate::report::Report;
use crate::scenario::Ctx;
use crate::sched::OpenLoop;
use crate::setup::{create_conversations, register_many, CreateJob};
use crate::stats::{Counters, Stats};
use crate::target::{Target, TargetArgs};

/// Most messages one run tracks (first/last recipient per message).
const MAX_TRACKED: u64 = 20_000_000;

/// Flags of `tern-load group`.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Args {
    /// Members (devices) per group, the sender included.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Groups (disjoint members).
    #[arg(long, default_value_t = 1)]
    pub groups: usize,
    /// Messages per second over all groups (open loop).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Stop after this many messages.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Payload bytes per message (at least 16).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// Members of each group that take turns sending.
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Members ack their cursor this often (0 = never).
    #[arg(long, default_value_t = 1000)]
    pub ack_interval_ms: u64,
    /// Sends queued per sender before further ones count as dropped.
    #[arg(long, default_value_t = 1024)]
    pub queue: usize,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Arrivals of one message at its recipients.
struct Track {
    intended: AtomicU64,
    first: AtomicU64,
    last: AtomicU64,
    count: AtomicU64,
}

impl Track {
    fn new() -> Self {
        Track {
            intended: AtomicU64::new(0),
            first: AtomicU64::new(u64::MAX),
            last: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

struct GroupSink {
    stats: Arc<Stats>,
    pending: Pending,
    tracks: Vec<Track>,
    closing: AtomicBool,
}

impl Sink for GroupSink {
    fn on_ack(&self, _device: usize, request_id: u64, now_ns: u64) {
        if let Some(intended) = self.pending.take(request_id) {
            self.stats.record("send_ack", intended, now_ns);
            Counters::add(&self.stats.counters.acked, 1);
        }
    }

    fn on_deliver(&self, _device: usize, message: &Message, now_ns: u64) {
        let Some((k, intended)) = parse_payload(&message.payload) else {
            return;
        };
        self.stats.record("deliver", intended, now_ns);
        Counters::add(&self.stats.counters.delivered, 1);
        if let Some(t) = usize::try_from(k).ok().and_then(|k| self.tracks.get(k)) {
            t.first.fetch_min(now_ns, Ordering::Relaxed);
            t.last.fetch_max(now_ns, Ordering::Relaxed);
            t.count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_error(&self, _device: usize, _request_id: u64, _error: &ErrorBody) {
        Counters::add(&self.stats.counters.errors, 1);
    }

    fn on_closed(&self, _device: usize, _why: &str) {
        if !self.closing.load(Ordering::Relaxed) {
            Counters::add(&self.stats.counters.errors, 1);
        }
    }
}

pub async fn run(args: Args) -> Result<Report> {
    if args.members < 2 || args.groups == 0 || args.rate <= 0.0 {
        return Err(LoadError::Usage(
            "group needs --members of at least 2, --groups of at least 1 and a positive --rate"
                .into(),
        ));
    }
    let target = Target::tern(&args.target)?;
    let mut ctx = Ctx::new("group", &args, target, &args.client)?;
    let (_, probe) = ctx.endpoints.probe(&user_name(&ctx.run, "p", 0)).await?;
    let sched = OpenLoop::new(
        args.rate,
        0,
        args.messages,
        Some(Duration::from_secs(args.duration)),
    );
    if sched.capacity() > MAX_TRACKED {
        return Err(LoadError::Usage(format!(
            "rate × duration exceeds {MAX_TRACKED} messages; lower them or set --messages"
        )));
    }
    let g = args.members;
    let devices = register_many(
        &ctx.endpoints,
        &ctx.run,
        "g",
        g * args.groups,
        args.client.setup_concurrency,
        args.output.quiet,
    )
    .await?;
    let mut slots: Vec<_> = devices.into_iter().map(Some).collect();
    let jobs = (0..args.groups)
        .map(|j| CreateJob {
            creator: j * g,
            kind: ConversationKind::Group,
            members: (j * g + 1..(j + 1) * g)
                .map(|i| user_name(&ctx.run, "g", i))
                .collect(),
        })
        .collect();
    let convs = create_conversations(
        &mut slots,
        jobs,
        args.client.setup_concurrency,
        args.client.timeout(),
    )
    .await?;
    let tracks = (0..sched.capacity()).map(|_| Track::new()).collect();
    let sink = Arc::new(GroupSink {
        stats: ctx.stats.clone(),
        pending: Pending::new(),
        tracks,
        closing: AtomicBool::new(false),
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
    send_phase(&args, &mut ctx, &sink, &live, &convs).await;
    sink.closing.store(true, Ordering::Relaxed);
    live.into_iter().for_each(LiveDevice::close);
    drop(probe);
    Ok(ctx.close().await)
}

async fn send_phase(
    args: &Args,
    ctx: &mut Ctx,
    sink: &Arc<GroupSink>,
    live: &[LiveDevice],
    convs: &[u64],
) {
    let senders: Vec<_> = live.iter().map(|d| d.jobs.clone()).collect();
    let stats = ctx.stats.clone();
    let (groups, g, s) = (
        args.groups as u64,
        args.members as u64,
        args.senders.clamp(1, args.members) as u64,
    );
    let phase = Phase::start(&ctx.target.procs);
    let sched = OpenLoop::new(
        args.rate,
        stats.clock.now_ns(),
        args.messages,
        Some(Duration::from_secs(args.duration)),
    );
    let make = |k: u64, intended: u64| {
        let (group, member) = (k % groups, (k / groups) % s);
        if let Some(t) = usize::try_from(k).ok().and_then(|k| sink.tracks.get(k)) {
            t.intended.store(intended, Ordering::Relaxed);
        }
        sink.pending.insert(k + 1, intended);
        let conversation_id = convs.get(group as usize).copied().unwrap_or(0);
        (
            (group * g + member) as usize,
            Job::Send {
                request_id: k + 1,
                conversation_id,
                payload: payload(k, intended, args.payload),
            },
        )
    };
    let dispatched = with_progress(
        &stats,
        "group",
        "deliver",
        args.output.quiet,
        open_loop(&stats, sched, &senders, make),
    )
    .await;
    let c = &stats.counters;
    let fan = g - 1;
    let drained = wait_until(Duration::from_secs(20), || {
        let acked = Counters::get(&c.acked);
        acked + Counters::get(&c.errors) >= Counters::get(&c.sent)
            && Counters::get(&c.delivered) >= acked * fan
    })
    .await;
    let cost = phase.end();
    let incomplete = record_spread(sink, dispatched.issued, fan).saturating_sub(dispatched.dropped);
    let r = &mut ctx.report;
    r.figure("members", g as f64);
    r.figure("groups", groups as f64);
    r.figure("target_rate_per_s", args.rate);
    r.figure("messages_sent", Counters::get(&c.sent) as f64);
    r.figure("messages_acked", Counters::get(&c.acked) as f64);
    r.figure("dropped_sends", dispatched.dropped as f64);
    r.figure("deliveries", Counters::get(&c.delivered) as f64);
    r.figure(
        "deliveries_expected",
        (Counters::get(&c.acked) * fan) as f64,
    );
    r.figure("incomplete_messages", incomplete as f64);
    r.figure("errors", Counters::get(&c.errors) as f64);
    r.figure(
        "deliveries_per_s",
        Counters::get(&c.delivered) as f64 / cost.wall_s.max(1e-9),
    );
    cost.figures(
        r,
        "send_phase",
        "recipient_delivery",
        Counters::get(&c.delivered),
    );
    if !drained {
        r.note("not every message reached every member within 20 s of the end of sending");
    }
    r.note("first_recipient / last_recipient: from a message's intended send time to its first / last of members-1 deliveries");
}

/// Records first/last-recipient latency of every fully delivered message;
/// returns how many were not delivered to all `fan` recipients.
fn record_spread(sink: &GroupSink, issued: u64, fan: u64) -> u64 {
    let mut incomplete = 0;
    for t in sink
        .tracks
        .iter()
        .take(usize::try_from(issued).unwrap_or(usize::MAX))
    {
        let intended = t.intended.load(Ordering::Relaxed);
        if t.count.load(Ordering::Relaxed) < fan {
            incomplete += 1;
            continue;
        }
        let (first, last) = (
            t.first.load(Ordering::Relaxed),
            t.last.load(Ordering::Relaxed),
        );
        sink.stats.record("first_recipient", intended, first);
        sink.stats.record("last_recipient", intended, last);
    }
    incomplete
}
