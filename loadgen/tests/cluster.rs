//! `tern-load chat` against a three-node cluster: three `tern serve` nodes
//! in this test process (one shared `MemStore`, a real `redis-server` for
//! membership and presence, one cluster CA, node-to-node QUIC on
//! loopback, as in the root `tests/cluster.rs`) sharing one TLS identity,
//! and the real `tern-load` binary given the three addresses with
//! `--server a,b,c`: connections are spread 10/10/10 (so the partners of
//! every pair sit on different nodes and each message crosses nodes),
//! every message is delivered, and the JSON lists the three nodes with the
//! pid they share (this process) and its CPU and RSS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "../../tests/common/redis.rs"]
mod redis_server;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use redis_server::RedisServer;
use serde_json::Value;
use tempfile::TempDir;
use tern_server::cluster::ClusterTls;
use tern_server::presence::PresenceBackend;
use tern_server::{start_with, Clock, ServerConfig, ServerHandle, Services};
use tern_store::memory::MemStore;
use tern_store::Store;

/// Longest the nodes may take to see each other.
const WAIT: Duration = Duration::from_secs(10);
/// Membership lifetime of the nodes (see the root tests/cluster.rs).
const TTL_MS: u64 = 3000;

struct Cluster {
    nodes: Vec<ServerHandle>,
    _data: Vec<TempDir>,
    _redis: RedisServer,
    _ca: TempDir,
}

impl Cluster {
    /// Three nodes `node-0..2` with two shards each, sharing one TLS
    /// identity (`tls_dir`), so one fingerprint is pinned for all.
    async fn start() -> Cluster {
        let redis = RedisServer::start();
        let ca = tempfile::tempdir().unwrap();
        let (cert, key) = ClusterTls::generate_ca().unwrap();
        std::fs::write(ca.path().join("ca.pem"), cert).unwrap();
        std::fs::write(ca.path().join("ca.key"), key).unwrap();
        let tls = ca.path().join("tls");
        tern_server::tls::create_identity_in(&tls, false).unwrap();
        let store = Arc::new(MemStore::new());
        let mut data: Vec<TempDir> = Vec::new();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let config = ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                data_dir: dir.path().to_path_buf(),
                tls_dir: Some(tls.clone()),
                shards: 2,
                exit_on_store_failure: false,
                presence_backend: PresenceBackend::Redis,
                redis_url: redis.url(),
                cluster_node_id: Some(format!("node-{i}")),
                cluster_listen: "127.0.0.1:0".parse().unwrap(),
                cluster_ca_cert: ca.path().join("ca.pem"),
                cluster_ca_key: ca.path().join("ca.key"),
                cluster_node_ttl_ms: TTL_MS,
                ..ServerConfig::default()
            };
            let shared: Arc<dyn Store> = store.clone();
            let services = Services {
                store: shared,
                clock: Clock::system(),
            };
            nodes.push(start_with(config, services).expect("node starts"));
            data.push(dir);
        }
        for (i, node) in nodes.iter().enumerate() {
            let mut view = node.cluster_node().expect("a cluster node").view();
            let seen = tokio::time::timeout(WAIT, view.wait_for(|v| v.nodes().len() == 3)).await;
            assert!(seen.is_ok(), "node-{i} never saw 3 live nodes");
        }
        Cluster {
            nodes,
            _data: data,
            _redis: redis,
            _ca: ca,
        }
    }

    /// `a,b,c`: the nodes' client addresses.
    fn servers(&self) -> String {
        let addrs: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.local_addr.to_string())
            .collect();
        addrs.join(",")
    }
}

/// Runs the tern-load binary off the runtime's threads (the nodes' shards
/// run on their own).
async fn tern_load(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tern-load"))
            .args(&args)
            .output()
            .expect("tern-load runs")
    })
    .await
    .unwrap()
}

fn figure(report: &Value, name: &str) -> f64 {
    report["figures"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("figure {name} missing"))
}

fn check_report(json: &Path, servers: &str) {
    let report: Value = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    let sent = figure(&report, "messages_sent");
    assert!(sent > 0.0, "nothing was sent");
    assert_eq!(figure(&report, "messages_acked"), sent);
    assert_eq!(figure(&report, "messages_delivered"), sent);
    assert_eq!(figure(&report, "lost_deliveries"), 0.0);
    assert_eq!(figure(&report, "errors"), 0.0);
    assert_eq!(figure(&report, "dropped_sends"), 0.0);
    assert!(figure(&report, "send_phase_server_cpu_s") >= 0.0);
    let notes = report["notes"].to_string();
    assert!(notes.contains("run in one process"), "{notes}");
    let nodes = report["nodes"].as_array().expect("a nodes list");
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    let me = u64::from(std::process::id());
    for (node, addr) in nodes.iter().zip(servers.split(',')) {
        assert_eq!(node["addr"], addr);
        assert_eq!(node["connections"], 10, "{node}");
        assert_eq!(node["pid"], me);
        assert_eq!(node["shared_pid"], true);
        assert_eq!(node["phase"], "send_phase");
        assert_eq!(node["unit"], "delivery");
        assert!(node["cpu_s"].as_f64().is_some(), "{node}");
        assert!(node["cpu_per_unit_us"].as_f64().is_some(), "{node}");
        let (peak, last) = (
            node["rss_peak_bytes"].as_u64(),
            node["rss_last_bytes"].as_u64(),
        );
        assert!(
            peak.unwrap() >= last.unwrap() && last.unwrap() > 0,
            "{node}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chat_against_three_nodes_spreads_connections_and_delivers_everything() {
    let cluster = Cluster::start().await;
    let fingerprint = cluster.nodes[0].fingerprint.clone();
    assert!(cluster.nodes.iter().all(|n| n.fingerprint == fingerprint));
    let servers = cluster.servers();
    let pid = std::process::id().to_string();
    let out_dir = tempfile::tempdir().unwrap();
    let json = out_dir.path().join("chat.json");
    let args = [
        "chat",
        "--connections",
        "30",
        "--rate",
        "30",
        "--duration",
        "3",
        "--server",
        &servers,
        "--fingerprint",
        &fingerprint,
        "--server-pid",
        &format!("{pid},{pid},{pid}"),
        "-q",
        "--threads",
        "2",
        "--endpoints",
        "3",
        "--json",
    ];
    let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    args.push(json.display().to_string());
    let out = tern_load(args).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "tern-load failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..3 {
        assert!(
            stdout.contains(&format!("node {i} ")) && stdout.contains("shared"),
            "no line for node {i}:\n{stdout}"
        );
    }
    check_report(&json, &servers);
    for node in cluster.nodes {
        tokio::task::spawn_blocking(move || node.shutdown())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn spawn_server_with_several_servers_is_a_usage_error() {
    let args = [
        "chat",
        "--server",
        "127.0.0.1:1,127.0.0.1:2",
        "--spawn-server",
        "-q",
    ];
    let out = tern_load(args.iter().map(|s| s.to_string()).collect()).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("invalid arguments: --spawn-server starts one server"),
        "{stderr}"
    );
}
