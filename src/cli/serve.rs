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
    super::init_logging("info,fjall=warn,lsm_tree=warn");
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
    Ok(())
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
