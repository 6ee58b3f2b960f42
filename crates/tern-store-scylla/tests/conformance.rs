//! The shared conformance suite on [`ScyllaStore`], one test per check,
//! each in a fresh keyspace (random name) migrated by `tern migrate`'s
//! code. It needs a cluster: set `TERN_SCYLLA_NODES=host:9042[,...]`.
//! Without it every check prints a `skipped:` line to stderr and returns
//! (it does not pass silently: `scylla_skipped_without_nodes` says so in
//! every run, and `--nocapture` shows each check's line).

use tern_store_scylla::{migrate, parse_nodes, ScyllaConfig, ScyllaStore};

const SKIPPED: &str =
    "skipped: set TERN_SCYLLA_NODES=host:9042 to run the ScyllaDB conformance suite";

/// The configured cluster, or `None` (with the skip line printed).
fn nodes() -> Option<Vec<String>> {
    let nodes = parse_nodes(&std::env::var("TERN_SCYLLA_NODES").unwrap_or_default());
    if nodes.is_empty() {
        eprintln!("{SKIPPED}");
        None
    } else {
        Some(nodes)
    }
}

/// A store in a fresh, migrated keyspace; `None` without a cluster.
async fn fresh_store() -> Option<(ScyllaStore, ())> {
    let mut config = ScyllaConfig::new(nodes()?);
    config.keyspace = format!("tern_test_{:016x}", rand::random::<u64>());
    if let Err(e) = migrate::run(&config, migrate::DEFAULT_REPLICATION).await {
        panic!("migrating keyspace {}: {e}", config.keyspace);
    }
    match ScyllaStore::open(&config).await {
        Ok(store) => Some((store, ())),
        Err(e) => panic!("opening keyspace {}: {e}", config.keyspace),
    }
}

/// Always runs: states whether the ScyllaDB suite ran in this process.
#[test]
fn scylla_skipped_without_nodes() {
    match nodes() {
        None => eprintln!("ScyllaDB conformance suite NOT run ({SKIPPED})"),
        Some(nodes) => eprintln!("ScyllaDB conformance suite runs against {nodes:?}"),
    }
}

/// Migrating twice applies nothing the second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scylla_migrate_is_idempotent() {
    let Some(nodes) = nodes() else { return };
    let mut config = ScyllaConfig::new(nodes);
    config.keyspace = format!("tern_test_{:016x}", rand::random::<u64>());
    let first = migrate::run(&config, migrate::DEFAULT_REPLICATION).await;
    let first = first.unwrap_or_else(|e| panic!("first migrate: {e}"));
    assert!(!first.applied.is_empty());
    let again = migrate::run(&config, migrate::DEFAULT_REPLICATION).await;
    let again = again.unwrap_or_else(|e| panic!("second migrate: {e}"));
    assert!(again.applied.is_empty(), "{:?}", again.applied);
    assert_eq!(again.version, first.version);
}

mod conformance_suite {
    tern_store::conformance_tests!(optional_async: super::fresh_store);
}
