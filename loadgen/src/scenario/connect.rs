//! `tern-load connect`: opens N authenticated connections at a ramp rate
//! (each registers a fresh user `lg{run}-c{i}`), holds them idle, and reports
//! connect latency percentiles (from each connection's intended start time),
//! failures, time until all were up, the server's RSS and CPU per
//! connection, and its idle CPU during the hold (percent of one core; the
//! clients keep alive every 25 s).

use serde::Serialize;

use crate::args::{ClientArgs, OutputArgs};
use crate::conn::{register, user_name};
use crate::error::Result;
use crate::idle::{ramp_and_hold, IdleArgs};
use crate::report::Report;
use crate::scenario::Ctx;
use crate::target::{Target, TargetArgs};

/// Flags of `tern-load connect`.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Args {
    #[command(flatten)]
    pub idle: IdleArgs,
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

pub async fn run(args: Args) -> Result<Report> {
    let target = Target::tern(&args.target)?;
    let mut ctx = Ctx::new("connect", &args, target, &args.client)?;
    let (_, probe) = ctx.endpoints.probe(&user_name(&ctx.run, "p", 0)).await?;
    let (run, stats) = (ctx.run.clone(), ctx.stats.clone());
    let handshake = move |endpoints: std::sync::Arc<crate::conn::Endpoints>, i: usize| {
        let (user, stats) = (user_name(&run, "c", i), stats.clone());
        async move {
            let t0 = stats.clock.now_ns();
            let mut conn = endpoints.connect(i).await?;
            let t1 = stats.clock.now_ns();
            stats.record("step_handshake", t0, t1);
            register(&mut conn, &user, endpoints.timeout).await?;
            stats.record("step_register", t1, stats.clock.now_ns());
            Ok(conn)
        }
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
    ctx.report.note("connect latency: QUIC handshake + Register round trip (fsynced by the server), from each connection's intended start on the ramp; step_handshake / step_register: the two steps alone, from their actual start");
    drop(probe);
    drop(conns);
    Ok(ctx.close().await)
}
