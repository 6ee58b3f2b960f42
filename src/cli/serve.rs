//! `tern serve`: loads and validates the configuration (defaults, then the
//! TOML file, then `TERN_*` variables, then flags), starts the shards, and
//! shuts down gracefully on SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use tern_server::{start, ServerConfig};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// TOML configuration file (every key optional; see README for the keys and defaults).
    #[arg(long, env = "TERN_CONFIG")]
    config: Option<PathBuf>,
    /// UDP address to listen on [default: 127.0.0.1:4433; port 0 picks a free one].
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Data directory for the store and TLS identity [default: ./tern-data].
    #[arg(long)]
    data: Option<PathBuf>,
    /// Number of shards (threads) [default: one per core].
    #[arg(long)]
    shards: Option<usize>,
}

pub fn run(args: ServeArgs) -> Result<(), String> {
    let mut config = ServerConfig::load(args.config.as_deref()).map_err(|e| e.to_string())?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(data) = args.data {
        config.data_dir = data;
    }
    if let Some(shards) = args.shards {
        config.shards = shards;
    }
    config.validate().map_err(|e| e.to_string())?;
    let traces = init_logging(&config)?;
    let server = start(config).map_err(|e| e.to_string())?;
    announce(&server.local_addr, &server.fingerprint, server.shards);
    let stats = server.stats.clone();
    wait_for_signal(crate::trim::watch(move || {
        stats
            .connections_open
            .load(std::sync::atomic::Ordering::Relaxed)
    }))?;
    eprintln!("shutting down: draining connections and flushing the store");
    server.shutdown();
    finish_traces(traces);
    Ok(())
}

/// The trace exporter, when `otlp_endpoint` is set.
#[cfg(feature = "otlp")]
type Traces = Option<super::otlp::Exporter>;
#[cfg(not(feature = "otlp"))]
type Traces = Option<std::convert::Infallible>;

/// Sends the last batch of spans, if any are exported.
#[cfg(feature = "otlp")]
fn finish_traces(traces: Traces) {
    if let Some(exporter) = traces {
        exporter.shutdown();
    }
}
#[cfg(not(feature = "otlp"))]
fn finish_traces(_: Traces) {}

const LOG_DEFAULT: &str = "info,fjall=warn,lsm_tree=warn";

/// The log on stderr and, when `otlp_endpoint` is set, the trace exporter
/// (checked here, before any port is bound).
#[cfg(feature = "otlp")]
fn init_logging(config: &ServerConfig) -> Result<Traces, String> {
    let otlp = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| (endpoint, config.cluster_node_id.as_deref()));
    super::init_server_logging(LOG_DEFAULT, otlp)
}

/// The log on stderr; `otlp_endpoint` is refused by a build without `otlp`.
#[cfg(not(feature = "otlp"))]
fn init_logging(config: &ServerConfig) -> Result<Traces, String> {
    if config.otlp_endpoint.is_some() {
        return Err(
            "otlp_endpoint is set, but this tern was built without the `otlp` feature: \
             unset it, or build with the default features"
                .into(),
        );
    }
    super::init_logging(LOG_DEFAULT);
    Ok(None)
}

/// Prints what clients need, on stdout, flushed (scripts parse these lines).
fn announce(addr: &SocketAddr, fingerprint: &str, shards: usize) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "tern listening on {addr} ({shards} shards)");
    let _ = writeln!(out, "certificate fingerprint: {fingerprint}");
    let _ = out.flush();
}

/// Waits for SIGINT or SIGTERM, running `meanwhile` (the allocator trimmer).
fn wait_for_signal(meanwhile: impl std::future::Future<Output = ()>) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| e.to_string())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string()),
            _ = term.recv() => Ok(()),
            () = meanwhile => Ok(()),
        }
    })
}
