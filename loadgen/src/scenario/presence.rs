//! `tern-load presence`: N online users, each subscribed to the presence of
//! `--subscriptions` S others (user `i` follows users `i+1 ..= i+S`, modulo
//! N), change their presence (Away, Busy, Online in turn, with a status
//! text) at a total `--rate` per second, open loop: change `k` is made by
//! user `k mod N` at its intended time. Measures change→push latency at
//! every subscriber (the change number and intended time ride in the
//! status text), SetPresence→Done, pushes received against the pushes an
//! uncoalesced server would send, and the server's CPU per presence push.
//!
//! Visibility is the default (`Shared`: users who share a conversation), so
//! the run creates the cheapest set of conversations that makes every
//! subscription legal: one group per block of S users, holding that block
//! and the next one (2S members), so that each user shares a group with
//! the S users after it; N/S groups in all, each user in two.
//!
//! Coalescing (PROTOCOL.md §4.8: at most one push per user per subscriber
//! per second, the latest state wins) means a change followed by another of
//! the same user within a second may never be pushed by itself. The report
//! counts such superseded changes, and checks the guarantee that matters:
//! after the run every subscriber has seen the last change of every user it
//! follows (`final_state_missed` counts the pairs where it has not).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tern_proto::body::presence::{
    PresenceState, SetPresence, MAX_PRESENCE_USERS_PER_REQUEST, PRESENCE_PUSH_INTERVAL_MS,
};
use tern_proto::{Body, ErrorBody, Frame};

use crate::args::{ClientArgs, OutputArgs};
use crate::conn::{user_name, CONTROL_ID_BASE};
use crate::drive::{open_loop, wait_until, with_progress, Phase, PhaseCost};
use crate::error::{LoadError, Result};
use crate::live::{Job, LiveDevice, Pending, Sink};
use crate::report::Report;
use crate::scenario::presence_setup::{follows, groups, subscribe_all};
use crate::scenario::Ctx;
use crate::sched::OpenLoop;
use crate::setup::{create_conversations, register_many};
use crate::stats::{Counters, Stats};
use crate::target::{Target, TargetArgs};

/// Flags of `tern-load presence`.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Args {
    /// Online users (one connection each).
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Users each user subscribes to (at most 256, fewer than --connections).
    #[arg(long, default_value_t = 50)]
    pub subscriptions: usize,
    /// Presence changes per second over all users (open loop).
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// Seconds of changes.
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// Changes queued per user before further ones count as dropped.
    #[arg(long, default_value_t = 256)]
    pub queue: usize,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// The status text of change `k` intended at `intended_ns`.
fn status_text(k: u64, intended_ns: u64) -> String {
    format!("lg {k} {intended_ns}")
}

/// (k, intended_ns) from a status text made by [`status_text`].
fn parse_status(text: &str) -> Option<(u64, u64)> {
    let mut parts = text.strip_prefix("lg ")?.split(' ');
    let k = parts.next()?.parse().ok()?;
    let t = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((k, t))
}

/// The state of change `k` by a user that makes every `users`-th change:
/// each change of a user differs from its previous one.
fn state_of(k: u64, users: u64) -> PresenceState {
    match (k / users.max(1)) % 3 {
        0 => PresenceState::Away,
        1 => PresenceState::Busy,
        _ => PresenceState::Online,
    }
}

struct PresenceSink {
    stats: Arc<Stats>,
    pending: Pending,
    users: usize,
    subs: usize,
    /// Per user: 1 + the highest change number the server confirmed (0: none).
    confirmed: Vec<AtomicU64>,
    /// Per (subscriber, followed index): 1 + the highest change number pushed.
    seen: Vec<AtomicU64>,
    unexpected: AtomicU64,
    repeated: AtomicU64,
    other_pushes: AtomicU64,
    closing: AtomicBool,
    first_error: Mutex<Option<String>>,
}

impl PresenceSink {
    fn new(stats: Arc<Stats>, users: usize, subs: usize) -> Self {
        PresenceSink {
            stats,
            pending: Pending::new(),
            users,
            subs,
            confirmed: (0..users).map(|_| AtomicU64::new(0)).collect(),
            seen: (0..users * subs).map(|_| AtomicU64::new(0)).collect(),
            unexpected: AtomicU64::new(0),
            repeated: AtomicU64::new(0),
            other_pushes: AtomicU64::new(0),
            closing: AtomicBool::new(false),
            first_error: Mutex::new(None),
        }
    }

    /// Change `k` of user `k mod N` as a SetPresence frame (request id k+1).
    fn job(&self, k: u64, intended_ns: u64) -> Job {
        self.pending.insert(k + 1, intended_ns);
        let body = SetPresence {
            state: state_of(k, self.users as u64),
            status_text: Some(status_text(k, intended_ns)),
        };
        Job::Raw(Frame::new(k + 1, body).encode())
    }

    /// A push to `device`: counted (and timed) only when it carries change
    /// `k`'s own state and text; anything else (a user going offline keeps
    /// its last status text) is an other push.
    fn on_push(&self, device: usize, state: PresenceState, text: Option<&str>, now_ns: u64) {
        let change = text.and_then(parse_status);
        let Some((k, intended)) = change.filter(|(k, _)| state == state_of(*k, self.users as u64))
        else {
            Counters::add(&self.other_pushes, 1);
            return;
        };
        let n = self.users.max(1);
        let subject = (k % n as u64) as usize;
        // Subscriber d follows d+1 ..= d+S: subject s is its (s-d-1 mod N)-th.
        let index = (subject + n - device % n + n - 1) % n;
        let slot = (index < self.subs)
            .then(|| self.seen.get(device * self.subs + index))
            .flatten();
        let Some(slot) = slot else {
            Counters::add(&self.unexpected, 1);
            return;
        };
        if slot.fetch_max(k + 1, Ordering::Relaxed) > k {
            // This change, or a later one, was already pushed to `device`.
            Counters::add(&self.repeated, 1);
            return;
        }
        self.stats.record("change_push", intended, now_ns);
        Counters::add(&self.stats.counters.delivered, 1);
    }

    /// (subscriber, followed) pairs whose last confirmed change was never pushed.
    fn final_state_missed(&self) -> u64 {
        let mut missed = 0;
        for d in 0..self.users {
            for (j, subject) in follows(d, self.users, self.subs).enumerate() {
                let want = self
                    .confirmed
                    .get(subject)
                    .map_or(0, |c| c.load(Ordering::Relaxed));
                let got = self
                    .seen
                    .get(d * self.subs + j)
                    .map_or(0, |s| s.load(Ordering::Relaxed));
                missed += u64::from(got < want);
            }
        }
        missed
    }
}

impl Sink for PresenceSink {
    fn on_other(&self, device: usize, request_id: u64, body: &Body, now_ns: u64) {
        match body {
            Body::PresenceChanged(p)
                if request_id == 0 && !self.closing.load(Ordering::Relaxed) =>
            {
                let text = p.entry.status_text.as_deref();
                self.on_push(device, p.entry.state, text, now_ns)
            }
            Body::Done(_) if request_id < CONTROL_ID_BASE => {
                if let Some(intended) = self.pending.take(request_id) {
                    self.stats.record("set_done", intended, now_ns);
                    Counters::add(&self.stats.counters.acked, 1);
                    let k = request_id.saturating_sub(1);
                    let subject = (k % self.users.max(1) as u64) as usize;
                    if let Some(c) = self.confirmed.get(subject) {
                        c.fetch_max(request_id, Ordering::Relaxed);
                    }
                }
            }
            _ => {}
        }
    }

    fn on_error(&self, _device: usize, request_id: u64, error: &ErrorBody) {
        Counters::add(&self.stats.counters.errors, 1);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert_with(|| format!("{:?}: {}", error.code, error.message));
        }
        self.pending.take(request_id);
    }

    fn on_closed(&self, device: usize, why: &str) {
        if !self.closing.load(Ordering::Relaxed) {
            let error = ErrorBody {
                code: tern_proto::fb::ErrorCode::Unknown,
                message: format!("connection closed: {why}"),
                retry_after_ms: 0,
            };
            self.on_error(device, 0, &error);
        }
    }
}

fn check(args: &Args) -> Result<()> {
    if args.subscriptions == 0
        || args.subscriptions > MAX_PRESENCE_USERS_PER_REQUEST
        || args.subscriptions >= args.connections
    {
        return Err(LoadError::Usage(format!(
            "presence needs 1 <= --subscriptions <= {MAX_PRESENCE_USERS_PER_REQUEST} and fewer than --connections ({} and {} given)",
            args.subscriptions, args.connections
        )));
    }
    if args.rate <= 0.0 || !args.rate.is_finite() {
        return Err(LoadError::Usage(
            "presence needs a positive --rate (changes per second)".into(),
        ));
    }
    Ok(())
}

pub async fn run(args: Args) -> Result<Report> {
    check(&args)?;
    let target = Target::tern(&args.target)?;
    let mut ctx = Ctx::new("presence", &args, target, &args.client)?;
    let (_, probe) = ctx.endpoints.probe(&user_name(&ctx.run, "p", 0)).await?;
    let (n, s) = (args.connections, args.subscriptions);
    let devices = register_many(
        &ctx.endpoints,
        &ctx.run,
        "u",
        n,
        args.client.setup_concurrency,
        args.output.quiet,
    )
    .await?;
    let mut slots: Vec<_> = devices.into_iter().map(Some).collect();
    let jobs = groups(&ctx.run, n, s);
    let group_count = jobs.len();
    create_conversations(
        &mut slots,
        jobs,
        args.client.setup_concurrency,
        args.client.timeout(),
    )
    .await?;
    let devices: Vec<_> = slots.into_iter().flatten().collect();
    let conns = subscribe_all(&ctx.run, devices, s, &args.client).await?;
    let sink = Arc::new(PresenceSink::new(ctx.stats.clone(), n, s));
    let live: Vec<LiveDevice> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let ack = Some(Duration::from_secs(1));
            LiveDevice::start(i, conn, sink.clone(), ctx.stats.clock, ack, args.queue)
        })
        .collect();
    change_phase(&args, &mut ctx, &sink, &live, group_count).await;
    sink.closing.store(true, Ordering::Relaxed);
    live.into_iter().for_each(LiveDevice::close);
    drop(probe);
    Ok(ctx.close().await)
}

async fn change_phase(
    args: &Args,
    ctx: &mut Ctx,
    sink: &Arc<PresenceSink>,
    live: &[LiveDevice],
    groups: usize,
) {
    let senders: Vec<_> = live.iter().map(|d| d.jobs.clone()).collect();
    let stats = ctx.stats.clone();
    let phase = Phase::start(&ctx.target.procs);
    let start_ns = stats.clock.now_ns();
    stats.start_windows(start_ns);
    let n = senders.len().max(1) as u64;
    let sched = OpenLoop::new(
        args.rate,
        start_ns,
        None,
        Some(Duration::from_secs(args.duration)),
    );
    let make = |k: u64, intended: u64| ((k % n) as usize, sink.job(k, intended));
    let run = open_loop(&stats, sched, &senders, make);
    with_progress(&stats, "presence", "change_push", args.output.quiet, run).await;
    // Coalescing holds a push back for at most one interval; allow ten.
    let grace = Duration::from_millis(10 * PRESENCE_PUSH_INTERVAL_MS + 5_000);
    let c = &stats.counters;
    let drained = wait_until(grace, || {
        Counters::get(&c.acked) + Counters::get(&c.errors) >= Counters::get(&c.sent)
            && sink.final_state_missed() == 0
    })
    .await;
    let cost = phase.end();
    figures(&mut ctx.report, sink, args, cost, drained, groups);
    if let Ok(Some(first)) = sink.first_error.lock().map(|e| e.clone()) {
        ctx.report.note(format!("first error: {first}"));
    }
}

/// Changes of one user less than one push interval before its next change:
/// a coalescing server may push them only as part of the later state.
fn superseded(changes: u64, users: u64, rate: f64) -> u64 {
    let per_user_gap_ms = users as f64 * 1e3 / rate.max(1e-9);
    if per_user_gap_ms >= PRESENCE_PUSH_INTERVAL_MS as f64 {
        return 0;
    }
    changes.saturating_sub(users.min(changes))
}

fn figures(
    r: &mut Report,
    sink: &PresenceSink,
    args: &Args,
    cost: PhaseCost,
    drained: bool,
    groups: usize,
) {
    let c = &sink.stats.counters;
    let (sent, done, pushes) = (
        Counters::get(&c.sent),
        Counters::get(&c.acked),
        Counters::get(&c.delivered),
    );
    let subs = args.subscriptions as u64;
    let expected = done * subs;
    let missed = sink.final_state_missed();
    r.figure("users", args.connections as f64);
    r.figure("subscriptions_per_user", subs as f64);
    r.figure("groups_created", groups as f64);
    r.figure("target_rate_per_s", args.rate);
    r.figure("changes_sent", sent as f64);
    r.figure("changes_done", done as f64);
    r.figure("dropped_changes", Counters::get(&c.dropped) as f64);
    r.figure("errors", Counters::get(&c.errors) as f64);
    r.figure("pushes_received", pushes as f64);
    r.figure("pushes_expected_uncoalesced", expected as f64);
    r.figure(
        "pushes_received_ratio",
        pushes as f64 / (expected.max(1) as f64),
    );
    let coalescible = superseded(done, args.connections as u64, args.rate);
    r.figure("changes_coalescible", coalescible as f64);
    r.figure("final_state_missed", missed as f64);
    r.figure("unexpected_pushes", Counters::get(&sink.unexpected) as f64);
    r.figure("repeated_pushes", Counters::get(&sink.repeated) as f64);
    r.figure("other_pushes", Counters::get(&sink.other_pushes) as f64);
    r.figure("pushes_per_s", pushes as f64 / cost.wall_s.max(1e-9));
    if let Some(cpu) = cost.server_cpu_s {
        r.figure("server_cpu_per_change_us", cpu * 1e6 / (done.max(1) as f64));
    }
    cost.figures(r, "change_phase", "presence_push", pushes);
    if !drained {
        r.note("not every change was confirmed and pushed to every subscriber within 15 s of the end of changes");
    }
    r.note(format!(
        "each user changes every {:.1} s; the server pushes at most one change per user per subscriber per {PRESENCE_PUSH_INTERVAL_MS} ms (the latest wins), so pushes_expected_uncoalesced is an upper bound",
        args.connections as f64 / args.rate.max(1e-9)
    ));
    r.note("open loop: latencies are measured from each change's intended time (coordinated-omission corrected); change_push counts every subscriber's push");
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn status_text_round_trips_and_rejects_others() {
        let t = status_text(42, 123_456_789);
        assert!(t.chars().count() <= tern_proto::body::presence::MAX_STATUS_TEXT_CHARS);
        assert_eq!(parse_status(&t), Some((42, 123_456_789)));
        assert_eq!(parse_status("out to lunch"), None);
        assert_eq!(parse_status("lg 1 2 3"), None);
    }

    #[test]
    fn a_users_consecutive_changes_differ() {
        for k in 0..30 {
            assert_ne!(state_of(k, 10), state_of(k + 10, 10));
        }
    }

    #[test]
    fn only_changes_closer_than_the_push_interval_are_coalescible() {
        assert_eq!(superseded(1000, 1000, 200.0), 0);
        assert_eq!(superseded(1000, 100, 200.0), 900);
        assert_eq!(superseded(50, 100, 200.0), 0);
    }

    #[test]
    fn pushes_land_in_the_subscribers_slot() {
        let sink = PresenceSink::new(Arc::new(Stats::new(Default::default())), 10, 3);
        // Change 9 is user 9's; user 7 follows 8, 9, 0: user 9 is its slot 1.
        let away = state_of(9, 10);
        sink.on_push(7, away, Some(&status_text(9, 1)), 2);
        assert_eq!(sink.seen[7 * 3 + 1].load(Ordering::Relaxed), 10);
        // The same change again, and user 9 going offline with its text.
        sink.on_push(7, away, Some(&status_text(9, 1)), 3);
        assert_eq!(sink.repeated.load(Ordering::Relaxed), 1);
        sink.on_push(7, PresenceState::Offline, Some(&status_text(9, 1)), 4);
        assert_eq!(sink.other_pushes.load(Ordering::Relaxed), 1);
        // User 0 follows 1, 2, 3, not 9.
        sink.on_push(0, away, Some(&status_text(9, 1)), 2);
        assert_eq!(sink.unexpected.load(Ordering::Relaxed), 1);
        sink.confirmed[9].store(10, Ordering::Relaxed);
        // Followers of 9: 6, 7, 8; only 7 saw it.
        assert_eq!(sink.final_state_missed(), 2);
    }
}
