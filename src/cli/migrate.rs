//! `tern migrate`: applies the CQL migrations this binary carries
//! (`migrations/*.cql`) to a ScyllaDB keyspace, creating it with the given
//! replication, and records each in `schema_migrations`. Idempotent; refuses
//! a keyspace newer than this binary or an applied file that changed.

use tern_store_scylla::{migrate, parse_nodes, ScyllaConfig};

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// ScyllaDB contact points, host:port,... (CQL port, 9042 by default).
    #[arg(long, env = "TERN_SCYLLA_NODES")]
    nodes: String,
    /// Keyspace to create or migrate.
    #[arg(long, env = "TERN_SCYLLA_KEYSPACE", default_value = "tern")]
    keyspace: String,
    /// Replication of a keyspace this creates (a CQL map; an existing one keeps its own),
    /// e.g. "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}".
    #[arg(long, default_value = migrate::DEFAULT_REPLICATION)]
    replication: String,
}

pub fn run(args: MigrateArgs) -> Result<(), String> {
    super::init_logging("warn");
    let mut config = ScyllaConfig::new(parse_nodes(&args.nodes));
    config.keyspace = args.keyspace;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let report = runtime
        .block_on(migrate::run(&config, &args.replication))
        .map_err(|e| format!("tern migrate: {e}"))?;
    for (version, name) in &report.applied {
        println!("applied migration {version:04} {name}");
    }
    if report.applied.is_empty() {
        println!(
            "keyspace {} is up to date (schema version {})",
            config.keyspace, report.version
        );
    } else {
        println!(
            "keyspace {} is at schema version {}",
            config.keyspace, report.version
        );
    }
    Ok(())
}
