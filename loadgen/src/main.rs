//! `tern-load`: the load generator of tern. Each scenario is a subcommand
//! (`connect`, `chat`, `group`, `presence`, `sync`, `upload`, `waves`, `baseline`), `echo-server`
//! is the raw-QUIC baseline server the `baseline` scenario (and `upload --raw`) spawns, and `compare`
//! prints the ratios of two JSON reports. By default every scenario spawns a
//! fresh server on 127.0.0.1 port 0 over a temporary data dir; `--server`
//! targets a running one. See docs/PERFORMANCE.md for measured runs.

mod args;
mod blob;
mod conn;
mod drive;
mod echo;
mod error;
mod idle;
mod live;
mod minutes;
mod nodes;
mod plot;
mod procfs;
mod progress;
mod report;
mod scenario;
mod sched;
mod setup;
mod soak;
mod stats;
mod target;

use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{LoadError, Result};
use crate::report::{compare, compare_table, Report};

/// Load generator for the tern messaging server.
#[derive(Parser, Debug)]
#[command(name = "tern-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Open N authenticated connections at a ramp rate and hold them idle.
    Connect(Box<scenario::connect::Args>),
    /// Pairs of devices exchanging 1:1 messages at a fixed rate or at saturation.
    Chat(Box<scenario::chat::Args>),
    /// Group messages fanned out to G members: time to first and last recipient.
    Group(Box<scenario::group::Args>),
    /// N online users each subscribed to S others change their presence at a rate: push latency and CPU per push.
    Presence(Box<scenario::presence::Args>),
    /// Devices go offline, a backlog builds, they reconnect and drain it.
    Sync(Box<scenario::sync::Args>),
    /// N concurrent attachment uploads of S bytes over blob streams: throughput, CPU per MiB (--raw: the raw-QUIC baseline).
    Upload(Box<scenario::upload::Args>),
    /// Waves of connections that never authenticate: server RSS before, at each peak, after.
    Waves(Box<scenario::waves::Args>),
    /// The same client work against a bare quinn echo server (raw-QUIC baseline).
    Baseline(Box<scenario::baseline::Args>),
    /// Run the raw-QUIC echo server (the baseline scenario spawns it).
    EchoServer(echo::Args),
    /// Print B/A for every figure two JSON reports share.
    Compare {
        /// The reference report (e.g. the baseline).
        a: PathBuf,
        /// The report compared with it.
        b: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tern-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<()> {
    match command {
        Command::Connect(a) => scenario_run(
            a.client.threads,
            a.output.clone(),
            scenario::connect::run(*a),
        ),
        Command::Chat(a) => {
            scenario_run(a.client.threads, a.output.clone(), scenario::chat::run(*a))
        }
        Command::Group(a) => {
            scenario_run(a.client.threads, a.output.clone(), scenario::group::run(*a))
        }
        Command::Presence(a) => scenario_run(
            a.client.threads,
            a.output.clone(),
            scenario::presence::run(*a),
        ),
        Command::Sync(a) => {
            scenario_run(a.client.threads, a.output.clone(), scenario::sync::run(*a))
        }
        Command::Upload(a) => scenario_run(
            a.client.threads,
            a.output.clone(),
            scenario::upload::run(*a),
        ),
        Command::Waves(a) => {
            scenario_run(a.client.threads, a.output.clone(), scenario::waves::run(*a))
        }
        Command::Baseline(a) => scenario_run(
            a.client.threads,
            a.output.clone(),
            scenario::baseline::run(*a),
        ),
        Command::EchoServer(a) => echo::run(a),
        Command::Compare { a, b } => {
            let (ra, rb) = (Report::load(&a)?, Report::load(&b)?);
            print!(
                "{}",
                compare_table(
                    &a.display().to_string(),
                    &b.display().to_string(),
                    &compare(&ra, &rb)
                )
            );
            Ok(())
        }
    }
}

/// Runs a scenario on a multi-threaded runtime and prints/saves its report.
fn scenario_run(
    threads: Option<usize>,
    output: args::OutputArgs,
    run: impl Future<Output = Result<Report>>,
) -> Result<()> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    let rt = builder.enable_all().build().map_err(LoadError::Runtime)?;
    let report = rt.block_on(run)?;
    args::finish(report, &output)?;
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    Ok(())
}
