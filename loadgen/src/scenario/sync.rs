//! `tern-load sync`: `--devices` receivers register and go offline; one
//! sender opens a direct conversation with each and builds a backlog of
//! `--backlog` messages per receiver (pipelined sends, all acked = durable);
//! then every receiver reconnects at once (at most `--reconnect-concurrency`
//! at a time), authenticates, asks Sync which conversations moved, pages
//! through History from its cursor, and acks the head. Measures reconnect
//! latency, per-device drain time, History page latency, and the drain rate
//! (backlog messages fetched per second over all devices).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tern_client::connection::RawConnection;
use tern_proto::body::{conversations, messaging, sync};
use tern_proto::{Body, ConversationKind, ConversationState, Frame};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::args::{ClientArgs, OutputArgs};
use crate::conn::{authenticate, call, unexpected, user_name, Device, Endpoints};
use crate::drive::Phase;
use crate::error::{LoadError, Result};
use crate::live::payload;
use crate::progress::Progress;
use crate::report::Report;
use crate::scenario::Ctx;
use crate::setup::{pipeline, register_many};
use crate::stats::Stats;
use crate::target::{Target, TargetArgs};

/// Flags of `tern-load sync`.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Args {
    /// Receiving devices that go offline and reconnect.
    #[arg(long, default_value_t = 100)]
    pub devices: usize,
    /// Messages waiting for each device when it reconnects.
    #[arg(long, default_value_t = 100)]
    pub backlog: usize,
    /// Payload bytes per message (at least 16).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
    /// History page size asked for (0 = the server's default, 500).
    #[arg(long, default_value_t = 0)]
    pub page: u32,
    /// Sends the backlog builder keeps in flight.
    #[arg(long, default_value_t = 128)]
    pub window: usize,
    /// Devices reconnecting at the same time.
    #[arg(long, default_value_t = 256)]
    pub reconnect_concurrency: usize,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn run(args: Args) -> Result<Report> {
    if args.devices == 0 || args.backlog == 0 {
        return Err(LoadError::Usage(
            "sync needs --devices and --backlog of at least 1".into(),
        ));
    }
    let target = Target::tern(&args.target)?;
    let mut ctx = Ctx::new("sync", &args, target, &args.client)?;
    let (_, mut sender) = ctx.endpoints.probe(&user_name(&ctx.run, "s", 0)).await?;
    let receivers = register_many(
        &ctx.endpoints,
        &ctx.run,
        "r",
        args.devices,
        args.client.setup_concurrency,
        args.output.quiet,
    )
    .await?;
    let receivers: Vec<Device> = receivers
        .into_iter()
        .map(|(device, conn)| {
            conn.connection.close(0u32.into(), b"going offline");
            device
        })
        .collect();
    let convs = create_direct(
        &mut sender,
        &ctx.run,
        args.devices,
        args.window,
        args.client.timeout(),
    )
    .await?;
    build_backlog(&args, &mut ctx, &mut sender, &convs).await?;
    drain(&args, &mut ctx, receivers).await;
    drop(sender);
    Ok(ctx.close().await)
}

async fn create_direct(
    sender: &mut RawConnection,
    run: &str,
    devices: usize,
    window: usize,
    timeout: Duration,
) -> Result<Vec<u64>> {
    let frames = (0..devices).map(|i| {
        Frame::new(
            i as u64 + 1,
            Body::CreateConversation(conversations::CreateConversation {
                kind: ConversationKind::Direct,
                members: vec![user_name(run, "r", i)],
            }),
        )
    });
    let mut convs = vec![0u64; devices];
    let mut bad = None;
    pipeline(
        sender,
        frames,
        window,
        "conversation creation",
        timeout,
        |id, body| match body {
            Body::ConversationInfo(info) => {
                if let Some(slot) = convs.get_mut(id as usize - 1) {
                    *slot = info.conversation_id;
                }
            }
            other => bad = Some(unexpected("conversation creation", &other)),
        },
    )
    .await?;
    bad.map_or(Ok(convs), Err)
}

async fn build_backlog(
    args: &Args,
    ctx: &mut Ctx,
    sender: &mut RawConnection,
    convs: &[u64],
) -> Result<()> {
    let total = (args.devices * args.backlog) as u64;
    let clock = ctx.stats.clock;
    let frames = (0..total).map(|k| {
        let conversation_id = convs
            .get((k % convs.len() as u64) as usize)
            .copied()
            .unwrap_or(0);
        let body = Body::Send(messaging::Send {
            conversation_id,
            client_message_id: k + 1,
            expires_in_secs: 0,
            flags: 0,
            payload: payload(k, clock.now_ns(), args.payload),
        });
        Frame::new(k + 1, body)
    });
    let phase = Phase::start(&ctx.target.procs);
    let progress = Progress::new("backlog", Some(total), args.output.quiet);
    let mut acked = 0u64;
    pipeline(
        sender,
        frames,
        args.window,
        "building the backlog",
        args.client.timeout(),
        |_, _| {
            acked += 1;
            if acked % 1024 == 0 {
                progress.set(acked, String::new());
            }
        },
    )
    .await?;
    progress.finish();
    let cost = phase.end();
    ctx.report.figure("backlog_messages", acked as f64);
    ctx.report
        .figure("backlog_rate_per_s", acked as f64 / cost.wall_s.max(1e-9));
    cost.figures(&mut ctx.report, "backlog", "stored_message", acked);
    Ok(())
}

/// Totals of the reconnect storm.
#[derive(Default)]
struct Drained {
    messages: AtomicU64,
    devices_ok: AtomicU64,
    failures: AtomicU64,
}

async fn drain(args: &Args, ctx: &mut Ctx, receivers: Vec<Device>) {
    let totals = Arc::new(Drained::default());
    let limit = Arc::new(Semaphore::new(args.reconnect_concurrency.max(1)));
    let progress = Progress::new("drain", Some(receivers.len() as u64), args.output.quiet);
    let t = totals.clone();
    let ticker = progress.ticker(move || {
        (
            t.devices_ok.load(Ordering::Relaxed) + t.failures.load(Ordering::Relaxed),
            format!("{} messages", t.messages.load(Ordering::Relaxed)),
        )
    });
    let phase = Phase::start(&ctx.target.procs);
    let mut tasks = JoinSet::new();
    let first_error = Arc::new(std::sync::Mutex::new(None));
    for (i, device) in receivers.into_iter().enumerate() {
        let (endpoints, stats, totals, limit, first_error) = (
            ctx.endpoints.clone(),
            ctx.stats.clone(),
            totals.clone(),
            limit.clone(),
            first_error.clone(),
        );
        let page = args.page;
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            match catch_up(&endpoints, &stats, i, &device, page).await {
                Ok(n) => {
                    totals.messages.fetch_add(n, Ordering::Relaxed);
                    totals.devices_ok.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    totals.failures.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut f) = first_error.lock() {
                        f.get_or_insert(e.to_string());
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    ticker.stop();
    let cost = phase.end();
    let messages = totals.messages.load(Ordering::Relaxed);
    let r = &mut ctx.report;
    r.figure("devices", args.devices as f64);
    r.figure(
        "devices_drained",
        totals.devices_ok.load(Ordering::Relaxed) as f64,
    );
    r.figure("errors", totals.failures.load(Ordering::Relaxed) as f64);
    r.figure("messages_drained", messages as f64);
    r.figure(
        "missing_messages",
        ((args.devices * args.backlog) as u64).saturating_sub(messages) as f64,
    );
    r.figure("drain_rate_per_s", messages as f64 / cost.wall_s.max(1e-9));
    cost.figures(r, "drain", "drained_message", messages);
    if let Ok(Some(e)) = first_error.lock().map(|e| e.clone()) {
        r.note(format!("first failure: {e}"));
    }
    r.note("drain: from a device's reconnect start to its last History page; drain_rate = messages fetched / wall time of the whole storm");
}

/// One device: reconnect, authenticate, Sync, page through History, Ack.
async fn catch_up(
    endpoints: &Arc<Endpoints>,
    stats: &Stats,
    i: usize,
    device: &Device,
    page: u32,
) -> Result<u64> {
    let start = stats.clock.now_ns();
    let mut conn = endpoints.connect(i).await?;
    authenticate(&mut conn, device, endpoints.timeout).await?;
    stats.record("reconnect", start, stats.clock.now_ns());
    let ask = sync::Sync {
        all: false,
        ..Default::default()
    };
    let states = call(&mut conn, 2, ask, "sync", endpoints.timeout)
        .await?
        .conversations;
    let mut total = 0;
    for state in states {
        total += fetch(&mut conn, stats, &state, page, endpoints.timeout).await?;
        let ack = messaging::Ack {
            conversation_id: state.conversation_id,
            seq: state.head_seq,
        };
        call(&mut conn, 3, ack, "ack", endpoints.timeout).await?;
    }
    stats.record("drain", start, stats.clock.now_ns());
    conn.connection.close(0u32.into(), b"drained");
    Ok(total)
}

async fn fetch(
    conn: &mut RawConnection,
    stats: &Stats,
    state: &ConversationState,
    page: u32,
    timeout: Duration,
) -> Result<u64> {
    let (mut from, mut total, mut id) = (state.cursor + 1, 0u64, 10u64);
    while from <= state.head_seq {
        let asked = stats.clock.now_ns();
        let history = messaging::History {
            conversation_id: state.conversation_id,
            from_seq: from,
            limit: page,
        };
        let page = call(conn, id, history, "history", timeout).await?;
        let (messages, next) = (page.messages.len() as u64, page.next_seq);
        stats.record("history_page", asked, stats.clock.now_ns());
        total += messages;
        if next <= from {
            break;
        }
        (from, id) = (next, id + 1);
    }
    Ok(total)
}
