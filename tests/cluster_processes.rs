//! The cluster of `tests/cluster.rs` with separate `tern serve` processes
//! on a real ScyllaDB (issue 13): `tern migrate` into a fresh keyspace,
//! the cluster CA from `tern cluster-ca`, a real `redis-server`, moto as
//! the attachment bucket every node shares (`scripts/install-moto.sh`), three
//! node processes (`store = "scylla"`, `cluster_node_id = node-0..2`, each
//! with its own TLS identity: a client trusts its node's fingerprint).
//! Clients on different nodes chat 1:1 and in a group; then the owner node
//! of a busy conversation is killed with SIGKILL mid-stream, and every
//! acknowledged message is stored and delivered exactly once with dense
//! seqs, and the dead owner's fencing token is refused by the store.
//!
//! It needs a cluster: set `TERN_SCYLLA_NODES=host:9042[,...]` (README,
//! "ScyllaDB"). Without it, it prints a `skipped:` line and returns;
//! `cluster_processes_skipped_without_scylla` says so in every run and
//! checks the node configuration the processes would get.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "cluster/clients.rs"]
mod clients;
mod common;
#[path = "../crates/tern-store/tests/s3_support/moto.rs"]
mod moto;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{run_tern, tern_ok, ServerProcess, WAIT};
use redis_server::RedisServer;
use tempfile::TempDir;
use tern_client::Client;
use tern_proto::ConversationKind;
use tern_server::ServerConfig;
use tern_store::{AppendError, Fences, MessageLog, OwnershipStore};
use tern_store_scylla::{parse_nodes, ScyllaConfig, ScyllaStore};

const SKIPPED: &str =
    "skipped: set TERN_SCYLLA_NODES=host:9042 to run the multi-process cluster test";

/// Membership lifetime of the nodes: a SIGKILLed node is out of the
/// others' views within it plus one heartbeat.
const TTL_MS: u64 = 3000;

/// How long a send may keep failing while a dead owner's conversations
/// move (its key's TTL, the views' update, one LWT claim).
const FAILOVER: Duration = Duration::from_secs(30);

/// The configured ScyllaDB contact points, or `None` (skip line printed).
fn scylla_nodes() -> Option<Vec<String>> {
    let nodes = parse_nodes(&std::env::var("TERN_SCYLLA_NODES").unwrap_or_default());
    if nodes.is_empty() {
        eprintln!("{SKIPPED}");
        None
    } else {
        Some(nodes)
    }
}

/// Where one node process finds the shared services.
struct Shared<'a> {
    scylla: &'a [String],
    keyspace: &'a str,
    redis_url: &'a str,
    ca_dir: &'a Path,
    /// The S3 endpoint and bucket of the nodes' shared blob store.
    s3: (&'a str, &'a str),
}

/// The TOML of node `i`: the shared store and Redis, its cluster id, a
/// loopback node-to-node port (the bound port is registered), and its
/// admin port for `tern_cluster_nodes_live`.
fn node_config(i: usize, shared: &Shared<'_>, admin_port: u16) -> String {
    let quoted: Vec<String> = shared.scylla.iter().map(|n| format!("{n:?}")).collect();
    format!(
        "store = \"scylla\"\nscylla_nodes = [{nodes}]\nscylla_keyspace = {keyspace:?}\n\
         presence_backend = \"redis\"\nredis_url = {redis:?}\n\
         cluster_node_id = \"node-{i}\"\ncluster_listen = \"127.0.0.1:0\"\n\
         cluster_ca_cert = {cert:?}\ncluster_ca_key = {key:?}\ncluster_node_ttl_ms = {TTL_MS}\n\
         admin_addr = \"127.0.0.1:{admin_port}\"\n\
         [blob_store]\nbackend = \"s3\"\ns3_endpoint = {endpoint:?}\ns3_bucket = {bucket:?}\n",
        endpoint = shared.s3.0,
        bucket = shared.s3.1,
        nodes = quoted.join(", "),
        keyspace = shared.keyspace,
        redis = shared.redis_url,
        cert = shared.ca_dir.join("ca.pem").display().to_string(),
        key = shared.ca_dir.join("ca.key").display().to_string(),
    )
}

/// Always runs: states whether the multi-process test ran, and checks
/// that the configuration each node process gets loads and validates.
#[test]
fn cluster_processes_skipped_without_scylla() {
    let nodes = scylla_nodes();
    match &nodes {
        None => eprintln!("multi-process cluster test NOT run ({SKIPPED})"),
        Some(nodes) => eprintln!("multi-process cluster test runs against {nodes:?}"),
    }
    let scylla = nodes.unwrap_or_else(|| vec!["127.0.0.1:9042".to_owned()]);
    let shared = Shared {
        scylla: &scylla,
        keyspace: "tern_cluster_0123456789abcdef",
        redis_url: "redis://127.0.0.1:6379",
        ca_dir: Path::new("/tmp/cluster"),
        s3: ("http://127.0.0.1:9000", "tern-attachments"),
    };
    for i in 0..3 {
        let config: ServerConfig = toml::from_str(&node_config(i, &shared, 9464)).unwrap();
        config.validate().unwrap();
        config.check_cluster_shares_stores().unwrap();
        let cluster = config.cluster().expect("a cluster node");
        assert_eq!(cluster.node_id, format!("node-{i}"));
        let store = config.scylla_config().expect("the ScyllaDB store");
        assert_eq!(store.keyspace, shared.keyspace);
    }
}

/// A free loopback TCP port for an admin address (picked, then released).
fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `tern_cluster_nodes_live` from a node's `/metrics`, if it answers.
fn live_nodes(admin_port: u16) -> Option<u64> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", admin_port)).ok()?;
    stream.set_read_timeout(Some(WAIT)).ok()?;
    let request = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix("tern_cluster_nodes_live "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

/// Three node processes on one keyspace, one Redis and one cluster CA.
struct Cluster {
    nodes: Vec<Option<ServerProcess>>,
    admin_ports: Vec<u16>,
    store: ScyllaStore,
    _redis: RedisServer,
    _moto: moto::Moto,
    _dirs: TempDir,
}

impl Cluster {
    async fn start(scylla: Vec<String>) -> Cluster {
        let dirs = tempfile::tempdir().unwrap();
        let keyspace = format!("tern_cluster_{:016x}", rand::random::<u64>());
        let nodes_arg = scylla.join(",");
        let migrated = tern_ok(run_tern(&[
            "migrate",
            "--nodes",
            &nodes_arg,
            "--keyspace",
            &keyspace,
        ]));
        assert!(migrated.contains("schema version"), "{migrated}");
        let ca_dir = dirs.path().join("cluster");
        tern_ok(run_tern(&["cluster-ca", "--out", ca_dir.to_str().unwrap()]));
        let redis = RedisServer::start();
        let redis_url = redis.url();
        let moto = moto::Moto::start().expect("moto, the nodes' shared bucket");
        let bucket = moto.bucket("tern-cluster");
        let shared = Shared {
            scylla: &scylla,
            keyspace: &keyspace,
            redis_url: &redis_url,
            ca_dir: &ca_dir,
            s3: (&moto.endpoint, &bucket.bucket),
        };
        let key = moto::Moto::credentials();
        let s3_key = [
            ("AWS_ACCESS_KEY_ID", key.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", key.secret_access_key.as_str()),
        ];
        let admin_ports: Vec<u16> = (0..3).map(|_| free_tcp_port()).collect();
        let nodes = (0..3)
            .map(|i| {
                let data = dirs.path().join(format!("node-{i}"));
                let toml = node_config(i, &shared, admin_ports[i]);
                Some(ServerProcess::spawn_with_config_env(
                    &data, 2, &toml, &s3_key,
                ))
            })
            .collect();
        let mut config = ScyllaConfig::new(scylla);
        config.keyspace = keyspace;
        let store = ScyllaStore::open(&config).await.expect("the test's store");
        let cluster = Cluster {
            nodes,
            admin_ports,
            store,
            _redis: redis,
            _moto: moto,
            _dirs: dirs,
        };
        for i in 0..3 {
            cluster.until_live(i, 3).await;
        }
        cluster
    }

    fn node(&self, i: usize) -> &ServerProcess {
        self.nodes[i].as_ref().expect("node running")
    }

    /// Waits until node `i` reports `count` live nodes on its admin port.
    async fn until_live(&self, i: usize, count: u64) {
        let port = self.admin_ports[i];
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let seen = tokio::task::spawn_blocking(move || live_nodes(port))
                .await
                .unwrap();
            if seen == Some(count) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node-{i} never saw {count} live nodes (last: {seen:?})"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Registers `user` on node `i` (anyone may add it to groups).
    async fn register(&self, i: usize, user: &str) -> (Client, TempDir) {
        let state = tempfile::tempdir().unwrap();
        let mut options = self.node(i).options(state.path());
        options.reconnect_max = Duration::from_millis(500);
        let client = Client::register(options, user, "test").await.unwrap();
        client
            .set_privacy(tern_proto::GroupAdds::Everyone)
            .await
            .unwrap();
        (client, state)
    }
}

async fn collect(client: &Client, conversation: u64, payloads: &[Bytes]) -> BTreeMap<u64, Bytes> {
    clients::collect_within(client, conversation, payloads, FAILOVER).await
}

async fn send_until_acknowledged(client: &Client, id: u64, payload: &Bytes, cmid: u64) -> u64 {
    clients::send_within(client, id, payload, cmid, FAILOVER).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_processes_chat_and_survive_a_killed_owner() {
    let Some(scylla) = scylla_nodes() else { return };
    let mut cluster = Cluster::start(scylla).await;
    let (alice, _a) = cluster.register(0, "alice").await;
    let (bob, _b) = cluster.register(1, "bob").await;
    let (carol, _c) = cluster.register(2, "carol").await;

    // 1:1 across nodes, both ways.
    let direct = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;
    let hi = Bytes::from_static(b"hi bob");
    alice.send(direct, hi.clone()).await.unwrap();
    collect(&bob, direct, &[hi]).await;
    let back = Bytes::from_static(b"hi alice");
    bob.send(direct, back.clone()).await.unwrap();
    collect(&alice, direct, &[back]).await;

    // A group of the three, one client per node.
    let group = carol
        .create_conversation(ConversationKind::Group, &["alice", "bob"])
        .await
        .unwrap()
        .id;
    let from_carol = Bytes::from_static(b"carol to the group");
    carol.send(group, from_carol.clone()).await.unwrap();
    collect(&alice, group, std::slice::from_ref(&from_carol)).await;
    collect(&bob, group, &[from_carol]).await;
    carol.close().await;

    // A group owned by node-2, where neither alice nor bob is connected.
    let id = clients::group_owned_by(&alice, &bob, &cluster.store, "node-2", FAILOVER).await;
    let stale = cluster.store.ownership(id).await.unwrap().unwrap();

    // 60 sends; node-2 is SIGKILLed after the 20th is acknowledged.
    let payloads: Vec<Bytes> = (0..60)
        .map(|i| Bytes::from(format!("message {i}")))
        .collect();
    let mut acked = Vec::new();
    for (i, payload) in payloads.iter().enumerate() {
        if i == 20 {
            cluster.nodes[2].take().expect("node-2 running").kill9();
        }
        acked.push(send_until_acknowledged(&alice, id, payload, i as u64 + 1).await);
    }
    let got = collect(&bob, id, &payloads).await;

    // Stored once each, at the acknowledged seq, dense from the probe on.
    let stored = cluster.store.messages(id, 1, 1000, 0).await.unwrap();
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    assert_eq!(
        seqs,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "dense seqs"
    );
    assert_eq!(stored.len(), 61, "the probe and 60 messages, each once");
    for (payload, seq) in payloads.iter().zip(&acked) {
        assert_eq!(got.get(seq), Some(payload), "bob got it at its seq");
    }

    // A surviving node owns it under a higher token; the dead owner's
    // token is refused.
    let now = cluster.store.ownership(id).await.unwrap().unwrap();
    assert_ne!(now.node, "node-2");
    assert!(now.token > stale.token, "{now:?} after {stale:?}");
    let mut late = stored.last().unwrap().clone();
    (late.seq, late.client_message_id) = (late.seq + 1, 0xdead);
    let mut fences = Fences::none();
    fences.insert(id, stale.token);
    let refused = cluster
        .store
        .append_messages(&[late], &fences)
        .await
        .unwrap();
    assert!(
        matches!(refused[0], Err(AppendError::Fenced { .. })),
        "{refused:?}"
    );
    cluster.until_live(0, 2).await;
}
