//! `tern migrate`: applies the CQL migrations this binary carries
//! (`migrations/*.cql`) to a ScyllaDB keyspace, creating it with the given
//! replication, and records each in `schema_migrations`. Idempotent; refuses
//! a keyspace newer than this binary or an applied file that changed, and a
//! keyspace with tablets on a ScyllaDB that cannot run lightweight
//! transactions on them (`--tablets`, see `tern_store_scylla::tablets`).

use tern_store_scylla::tablets::Tablets;
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
    /// Tablets of a keyspace this creates: auto (off with SimpleStrategy and where
    /// ScyllaDB cannot run lightweight transactions on tablets, i.e. 6.0 to
    /// 2025.3; the server's default otherwise), off, or on. Nothing is added where the cluster has
    /// no tablets (Cassandra, ScyllaDB before 6.0) or --replication already
    /// names them.
    #[arg(long, default_value = "auto", value_parser = parse_tablets)]
    tablets: Tablets,
    /// Give up when no session with the nodes is open within this many
    /// seconds (a host that accepts TCP but never answers CQL).
    #[arg(long, env = "TERN_SCYLLA_OPEN_TIMEOUT_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    open_timeout_secs: u64,
}

fn parse_tablets(value: &str) -> Result<Tablets, String> {
    value.parse().map_err(|e| format!("{e}"))
}

pub fn run(args: MigrateArgs) -> Result<(), String> {
    super::init_logging("warn");
    let mut config = ScyllaConfig::new(parse_nodes(&args.nodes));
    config.keyspace = args.keyspace;
    config.session_timeout = std::time::Duration::from_secs(args.open_timeout_secs);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let report = runtime
        .block_on(migrate::run_with(&config, &args.replication, args.tablets))
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
