//! `tern-load upload`: N concurrent attachment uploads of S bytes each over
//! tern's blob streams (docs/PROTOCOL.md §4.12), `--rounds` times over.
//! Setup (not measured) registers one account per uploader, each on its own
//! connection (so the per-account quota and byte rate, lifted on a spawned
//! server anyway, never couple the uploaders). The measured phase: each
//! uploader sends its blob under a fresh random id, waits for the server's
//! answer (given once the blob is durable: fsynced and linked into place),
//! and starts the next; a completion time per upload goes to the `upload`
//! HdrHistogram. Figures: aggregate throughput (MiB/s of acknowledged
//! bytes over the phase's wall time), server and client CPU per MiB (from
//! `/proc/PID/stat`: the spawned server's child pid, or `--server-pid`),
//! server CPU by thread, and `blobs_stored`, the uploads the server answers
//! `complete` with the right length for when asked afterwards (status op).
//!
//! The bytes are random and not encrypted: the server sees ciphertext
//! either way, and the SDK's encryption (E2EE.md §10) runs on the client
//! only. `--raw` runs the same uploads against the raw-QUIC sink of
//! `tern-load echo-server` (same transport, TLS and tuning; it reads the
//! bytes and drops them): its report, passed as `--baseline`, adds the
//! `vs_baseline.*` ratios (tern / raw QUIC) to a tern run's report.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rand::RngCore;
use serde::Serialize;
use tern_client::connection::RawConnection;
use tern_proto::blob_stream::{State, BLOB_ID_LEN};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::args::{ClientArgs, OutputArgs};
use crate::blob::{self, parse_size};
use crate::conn::{register, user_name, Endpoints};
use crate::drive::{with_progress, Phase, PhaseCost};
use crate::error::{LoadError, Result};
use crate::report::Report;
use crate::scenario::Ctx;
use crate::stats::{Counters, Stats};
use crate::target::{Target, TargetArgs};

/// Bytes in a MiB, the unit of the throughput and CPU figures.
const MIB: f64 = 1_048_576.0;

/// Flags of `tern-load upload`.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Args {
    /// Uploads in flight at once, each on its own account and connection.
    #[arg(long, default_value_t = 8)]
    pub uploads: usize,
    /// Bytes per upload: plain bytes or with a unit (64KiB, 1MiB, 32MiB, 1.5GB).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub size: u64,
    /// Uploads each uploader makes one after the other (N x rounds in all).
    #[arg(long, default_value_t = 3)]
    pub rounds: u32,
    /// Upload to the raw-QUIC sink of `tern-load echo-server` instead of tern (the baseline).
    #[arg(long)]
    pub raw: bool,
    /// Seconds one upload may take before it counts as failed.
    #[arg(long, default_value_t = 600)]
    pub upload_timeout: u64,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn run(args: Args) -> Result<Report> {
    if args.uploads == 0 || args.rounds == 0 {
        return Err(LoadError::Usage(
            "--uploads and --rounds must be at least 1".into(),
        ));
    }
    let payload = random_payload(args.size)?;
    let (scenario, target) = if args.raw {
        ("upload-baseline", Target::echo(&args.target)?)
    } else {
        ("upload", Target::tern(&args.target)?)
    };
    let mut ctx = Ctx::new(scenario, &args, target, &args.client)?;
    let conns = open_uploaders(&ctx, &args).await?;
    let connections: Vec<quinn::Connection> = conns.iter().map(|c| c.connection.clone()).collect();
    let phase = Phase::start(&ctx.target.procs);
    let stats = ctx.stats.clone();
    stats.start_windows(stats.clock.now_ns());
    let work = upload_all(&stats, &connections, &payload, &args);
    let done = with_progress(&stats, "upload", "upload", args.output.quiet, work).await;
    let cost = phase.end();
    figures(&mut ctx.report, &args, &done, &cost);
    if !args.raw {
        let stored = count_stored(&connections, &done.ids, args.size).await;
        ctx.report.figure("blobs_stored", stored as f64);
    }
    notes(&mut ctx.report, &args, &done);
    drop(conns);
    Ok(ctx.close().await)
}

/// One payload shared by every upload (random, so nothing compresses it).
fn random_payload(size: u64) -> Result<Bytes> {
    let len = usize::try_from(size)
        .map_err(|_| LoadError::Usage(format!("--size {size} does not fit in memory here")))?;
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    Ok(Bytes::from(bytes))
}

/// Opens one authenticated connection per uploader: a tern account
/// registered on it, or for `--raw` one Register-sized frame echoed (the
/// baseline's authentication, as in `tern-load baseline`). The first is
/// opened alone so an unreachable server fails clearly.
async fn open_uploaders(ctx: &Ctx, args: &Args) -> Result<Vec<RawConnection>> {
    let first = open_one(
        ctx.endpoints.clone(),
        user_name(&ctx.run, "u", 0),
        0,
        args.raw,
    )
    .await
    .map_err(|e| match e {
        refused @ LoadError::Refused { .. } => refused,
        e => LoadError::Unreachable {
            addr: ctx.endpoints.addr,
            detail: e.to_string(),
        },
    })?;
    let limit = Arc::new(Semaphore::new(args.client.setup_concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for i in 1..args.uploads {
        let (endpoints, limit) = (ctx.endpoints.clone(), limit.clone());
        let (user, raw) = (user_name(&ctx.run, "u", i), args.raw);
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            open_one(endpoints, user, i, raw).await.map(|c| (i, c))
        });
    }
    let mut slots: Vec<Option<RawConnection>> = (0..args.uploads).map(|_| None).collect();
    if let Some(slot) = slots.first_mut() {
        *slot = Some(first);
    }
    while let Some(joined) = tasks.join_next().await {
        let (i, conn) = joined.map_err(|e| LoadError::Task(e.to_string()))??;
        if let Some(slot) = slots.get_mut(i) {
            *slot = Some(conn);
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

async fn open_one(
    endpoints: Arc<Endpoints>,
    user: String,
    i: usize,
    raw: bool,
) -> Result<RawConnection> {
    let mut conn = endpoints.connect(i).await?;
    if raw {
        echo_first_frame(&mut conn, &user, endpoints.timeout).await?;
    } else {
        register(&mut conn, &user, endpoints.timeout).await?;
    }
    Ok(conn)
}

async fn echo_first_frame(conn: &mut RawConnection, user: &str, timeout: Duration) -> Result<()> {
    let key = ed25519_dalek::SigningKey::generate(&mut rand::thread_rng());
    let frame = conn.register_frame(1, user, "tern-load", &key)?;
    let exchange = async {
        conn.sender.frame(&frame).await?;
        match conn.receiver.next().await? {
            Some(back) if back == frame => Ok(()),
            Some(other) => Err(crate::conn::unexpected("the echoed frame", &other.body)),
            None => Err(LoadError::Closed("the echo handshake".into())),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| LoadError::Timeout {
            what: "the echo of the first frame".into(),
            secs: timeout.as_secs(),
        })?
}

/// What the measured phase did.
#[derive(Default)]
struct Done {
    /// The ids each uploader completed, by uploader.
    ids: Vec<Vec<[u8; BLOB_ID_LEN]>>,
    ok: u64,
    failed: u64,
    first_error: Option<String>,
}

/// Runs every uploader to the end of its rounds.
async fn upload_all(
    stats: &Arc<Stats>,
    connections: &[quinn::Connection],
    payload: &Bytes,
    args: &Args,
) -> Done {
    let mut tasks = JoinSet::new();
    let limit = Duration::from_secs(args.upload_timeout.max(1));
    for (i, connection) in connections.iter().enumerate() {
        let (stats, connection, payload) = (stats.clone(), connection.clone(), payload.clone());
        let rounds = args.rounds;
        tasks.spawn(async move {
            let out = uploader(&stats, &connection, &payload, rounds, limit).await;
            (i, out)
        });
    }
    let mut done = Done {
        ids: vec![Vec::new(); connections.len()],
        ..Done::default()
    };
    while let Some(joined) = tasks.join_next().await {
        let Ok((i, (ids, errors))) = joined else {
            done.failed += u64::from(args.rounds);
            continue;
        };
        done.ok += ids.len() as u64;
        done.failed += errors.len() as u64;
        if done.first_error.is_none() {
            done.first_error = errors.into_iter().next();
        }
        if let Some(slot) = done.ids.get_mut(i) {
            *slot = ids;
        }
    }
    done
}

/// One uploader's rounds: the ids it completed and the errors it met.
async fn uploader(
    stats: &Stats,
    connection: &quinn::Connection,
    payload: &Bytes,
    rounds: u32,
    limit: Duration,
) -> (Vec<[u8; BLOB_ID_LEN]>, Vec<String>) {
    let (mut ids, mut errors) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let id = blob::random_id();
        let t0 = stats.clock.now_ns();
        Counters::add(&stats.counters.sent, 1);
        match tokio::time::timeout(limit, blob::upload(connection, id, payload)).await {
            Ok(Ok(_)) => {
                stats.record("upload", t0, stats.clock.now_ns());
                Counters::add(&stats.counters.delivered, 1);
                ids.push(id);
            }
            Ok(Err(e)) => errors.push(e.to_string()),
            Err(_) => errors.push(format!("an upload took over {} s", limit.as_secs())),
        }
        if errors.len() > ids.len() && connection.close_reason().is_some() {
            break;
        }
    }
    if !errors.is_empty() {
        Counters::add(&stats.counters.errors, errors.len() as u64);
    }
    (ids, errors)
}

/// Asks the server (status op) about every completed upload: how many it
/// holds complete with the length sent.
async fn count_stored(
    connections: &[quinn::Connection],
    ids: &[Vec<[u8; BLOB_ID_LEN]>],
    size: u64,
) -> u64 {
    let mut stored = 0;
    for (connection, ids) in connections.iter().zip(ids) {
        for id in ids {
            if let Ok((State::Complete, len)) = blob::status(connection, *id).await {
                stored += u64::from(len == size);
            }
        }
    }
    stored
}

fn figures(r: &mut Report, args: &Args, done: &Done, cost: &PhaseCost) {
    let mib = (done.ok as f64 * args.size as f64) / MIB;
    r.figure("concurrent_uploads", args.uploads as f64);
    r.figure("upload_size_bytes", args.size as f64);
    r.figure(
        "uploads_planned",
        (args.uploads as f64) * f64::from(args.rounds),
    );
    r.figure("uploads_ok", done.ok as f64);
    r.figure("upload_failures", done.failed as f64);
    r.figure("mib_uploaded", mib);
    r.figure("throughput_mib_per_s", mib / cost.wall_s.max(1e-9));
    cost.figures(r, "upload", "upload", done.ok);
    let per_mib = |cpu_s: f64| 1000.0 * cpu_s / mib.max(1e-9);
    if let Some(cpu) = cost.server_cpu_s {
        r.figure("server_cpu_ms_per_mib", per_mib(cpu));
    }
    if let Some(cpu) = cost.client_cpu_s {
        r.figure("client_cpu_ms_per_mib", per_mib(cpu));
    }
}

fn notes(r: &mut Report, args: &Args, done: &Done) {
    r.note(format!(
        "upload: {} uploaders x {} rounds of {} bytes, each uploader on its own {} and connection, the next upload once the last is acknowledged; MiB = 1,048,576 bytes; throughput counts acknowledged bytes over the phase's wall time; the payload is random and not encrypted (the server sees ciphertext either way)",
        args.uploads,
        args.rounds,
        args.size,
        if args.raw { "echo client" } else { "account" }
    ));
    if args.raw {
        r.note("baseline: the raw-QUIC sink of tern-load echo-server (tern's transport, TLS and tuning) reads each upload's bytes and drops them: no disk, no fsync, no accounts");
    } else {
        r.note("the server answers an upload once the blob is fsynced and linked into place (PROTOCOL.md §4.12); blobs_stored: uploads it reports complete with the right length afterwards");
    }
    if let Some(e) = &done.first_error {
        r.note(format!("first upload failure: {e}"));
    }
}
