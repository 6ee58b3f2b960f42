//! The in-process three-node cluster of `tests/cluster.rs` and
//! `tests/cluster_attacks.rs`: a real `redis-server`, one store shared
//! through the trait, one cluster CA; helpers that wait on events.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tempfile::TempDir;
use tern_server::cluster::{ClusterTls, NodeHandler, NodeId, NodeInfo, NodeLinks};
use tern_server::node::Route;
use tern_server::presence::PresenceBackend;
use tern_store::memory::MemStore;
use tern_store::{OwnershipStore, Store};

use super::clients;
use super::common::{TestClient, TestServer, WAIT};
use super::redis_server::RedisServer;

/// Membership lifetime of the test nodes (a heartbeat every second): long
/// enough that a node of a loaded test machine does not expire between two
/// heartbeats, which would move conversations mid-test.
pub const TTL_MS: u64 = 3000;

pub struct Cluster {
    pub nodes: Vec<TestServer>,
    pub store: Arc<MemStore>,
    pub _redis: RedisServer,
    pub _ca: TempDir,
}

impl Cluster {
    /// Three nodes `node-0..2`, each with two shards, all in one view.
    pub async fn start() -> Cluster {
        let redis = RedisServer::start();
        let ca = tempfile::tempdir().unwrap();
        let (cert, key) = ClusterTls::generate_ca().unwrap();
        std::fs::write(ca.path().join("ca.pem"), cert).unwrap();
        std::fs::write(ca.path().join("ca.key"), key).unwrap();
        let store = Arc::new(MemStore::new());
        let mut cluster = Cluster {
            nodes: Vec::new(),
            store,
            _redis: redis,
            _ca: ca,
        };
        for _ in 0..3 {
            cluster.add_node();
        }
        for i in 0..3 {
            cluster.until_live(i, 3).await;
        }
        cluster
    }

    /// Starts `node-{n}`, n the number of nodes so far, on the shared store,
    /// Redis and CA (the others see it join at their next heartbeat).
    pub fn add_node(&mut self) {
        let i = self.nodes.len();
        let shared: Arc<dyn Store> = self.store.clone();
        let (redis, ca) = (self._redis.url(), self._ca.path());
        let node = TestServer::start_on_store_with(2, shared, |c| {
            c.presence_backend = PresenceBackend::Redis;
            c.redis_url = redis;
            c.cluster_node_id = Some(format!("node-{i}"));
            c.cluster_listen = "127.0.0.1:0".parse().unwrap();
            c.cluster_ca_cert = ca.join("ca.pem");
            c.cluster_ca_key = ca.join("ca.key");
            c.cluster_node_ttl_ms = TTL_MS;
            c.admin_addr = Some("127.0.0.1:0".parse().unwrap());
            c.push.allow_http_loopback = true;
            c.push.coalesce_ms = 100;
        });
        self.nodes.push(node);
    }

    /// Waits until node `i` sees `count` live nodes.
    pub async fn until_live(&self, i: usize, count: usize) {
        let node = self.nodes[i]
            .handle()
            .cluster_node()
            .expect("a cluster node");
        let mut view = node.view();
        let seen = tokio::time::timeout(WAIT, view.wait_for(|v| v.nodes().len() == count)).await;
        assert!(seen.is_ok(), "node-{i} never saw {count} live nodes");
    }

    /// Waits until every node has every other node's list of users (until
    /// then a node sends that one every delivery).
    pub async fn until_nodes_know_their_peers(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        for (i, node) in self.nodes.iter().enumerate() {
            let node = node.handle().cluster_node().expect("a cluster node");
            while !node.knows_every_peer() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "node-{i} never got every peer's list of users"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// The node that claimed conversation `id` last (its owner).
    pub async fn owner(&self, id: u64) -> String {
        let ownership = self.store.ownership(id).await.unwrap();
        ownership.expect("the conversation was claimed").node
    }
}

/// [`clients::collect_within`] with the harness's [`WAIT`] per message.
pub async fn collect(
    client: &TestClient,
    conversation: u64,
    payloads: &[Bytes],
) -> BTreeMap<u64, Bytes> {
    clients::collect_within(client, conversation, payloads, WAIT).await
}

/// [`clients::send_within`] for up to [`WAIT`].
pub async fn send_until_acknowledged(
    client: &TestClient,
    id: u64,
    payload: &Bytes,
    cmid: u64,
) -> u64 {
    clients::send_within(client, id, payload, cmid, WAIT).await
}

/// The links of a peer that only calls: answers and takes nothing.
pub struct Mute;

#[async_trait::async_trait]
impl NodeHandler for Mute {
    async fn call(&self, _: &NodeId, _: Bytes) -> Bytes {
        Bytes::new()
    }
    async fn push(&self, _: &NodeId, _: Bytes) {}
}

impl Cluster {
    /// Links of `node-9`, issued by this cluster's CA but never registered:
    /// what a faulty or hostile node can send.
    pub fn rogue(&self) -> NodeLinks {
        let read = |file: &str| std::fs::read_to_string(self._ca.path().join(file)).unwrap();
        let tls = ClusterTls::load(&read("ca.pem"), &read("ca.key"), "node-9").unwrap();
        NodeLinks::start(&tls, "127.0.0.1:0".parse().unwrap(), Arc::new(Mute)).unwrap()
    }

    /// Node `i` as the view lists it.
    pub fn info(&self, i: usize) -> NodeInfo {
        let node = self.nodes[i].handle().cluster_node().unwrap();
        let view = node.view().borrow().clone();
        view.get(&format!("node-{i}")).cloned().unwrap()
    }

    /// A new group of `creator` with `members` that node `i` owns in its
    /// view (groups are made until one is; at most 60 tries).
    pub async fn group_owned_by_node(
        &self,
        creator: &tern_client::Client,
        members: &[&str],
        i: usize,
    ) -> u64 {
        for _ in 0..60 {
            let id = creator
                .create_conversation(tern_proto::ConversationKind::Group, members)
                .await
                .unwrap()
                .id;
            if self.owns(i, id) {
                return id;
            }
        }
        panic!("node-{i} owns none of 60 groups");
    }

    /// Whether node `i` owns conversation `id` in its view.
    pub fn owns(&self, i: usize, id: u64) -> bool {
        let node = self.nodes[i].handle().cluster_node().unwrap();
        node.route(id) == Route::Here
    }
}
