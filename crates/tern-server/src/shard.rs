//! What one shard thread owns: its context (store handle, mesh, local
//! sessions, stats) shared by the tasks of its current-thread runtime.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::clock::Clock;
use super::config::ServerConfig;
use super::delivery::Delivery;
use super::links::LinkRequests;
use super::mesh::Mesh;
use super::presence::redis::{RedisNode, RedisPresence};
use super::presence::{LocalPresence, Presence};
use super::ratelimit::ServerLimits;
use super::sessions::Sessions;
use tern_store::Store;

/// Process-wide counters, readable from any thread (tests, stats, loadgen).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections_accepted: AtomicU64,
    /// Connection attempts refused by `connections_per_address_*`.
    pub connections_refused: AtomicU64,
    /// Connection attempts answered with a QUIC Retry (address validation)
    /// because their address had used up its unvalidated attempts.
    pub connections_validated: AtomicU64,
    pub connections_open: AtomicU64,
    pub authenticated: AtomicU64,
    pub messages_stored: AtomicU64,
    pub duplicates: AtomicU64,
    pub deliveries: AtomicU64,
    pub closed_slow: AtomicU64,
    pub frame_errors: AtomicU64,
    pub expired_swept: AtomicU64,
    /// QUIC datagrams received and dropped: malformed, not a body carried
    /// by datagram, or past the connection's datagram budget (never a close).
    pub datagrams_dropped: AtomicU64,
    /// Typing signals dropped by the owner: unknown conversation, not a
    /// member, or past the per-device rate limit.
    pub typing_dropped: AtomicU64,
    /// Pushes sent as QUIC datagrams.
    pub datagrams_sent: AtomicU64,
    /// MLS handshake parts staged on stage streams (`staging`).
    pub handshake_parts_staged: AtomicU64,
    /// Attachment uploads completed (`blobs`).
    pub blobs_uploaded: AtomicU64,
    /// Attachment ciphertext bytes received on upload streams and written.
    pub blob_bytes_received: AtomicU64,
    /// Attachment downloads started (the blob existed).
    pub blobs_downloaded: AtomicU64,
    /// Attachment ciphertext bytes sent on download streams.
    pub blob_bytes_sent: AtomicU64,
    /// Abandoned uploads and expired blobs deleted by the sweep.
    pub blobs_swept: AtomicU64,
    /// What the admin port exports besides these counters: frames by body
    /// type, errors by code, fan-out and store latency histograms.
    pub telemetry: crate::admin::metrics::Telemetry,
}

impl ServerStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// State shared by every task of one shard (single-threaded: `Rc`, `RefCell`).
pub struct ShardCtx {
    pub id: usize,
    pub mesh: Arc<Mesh>,
    /// Where effects go: the local mesh today, other nodes in a cluster.
    pub delivery: Arc<dyn Delivery>,
    pub store: Arc<dyn Store>,
    /// Encrypted attachments (blob streams, `crate::blobs`).
    pub blobs: Arc<dyn tern_store::blob::BlobStore>,
    pub clock: Clock,
    pub config: Arc<ServerConfig>,
    pub stats: Arc<ServerStats>,
    pub sessions: RefCell<Sessions>,
    /// The server-wide rate limits (shared by every shard).
    pub limits: Arc<ServerLimits>,
    /// Pending device-link requests (shared by every shard).
    pub links: Arc<LinkRequests>,
    /// This shard's part of presence (in-process, or through Redis).
    pub presence: Rc<dyn Presence>,
    local_presence: Rc<LocalPresence>,
    next_conn_id: Cell<u64>,
    /// Bytes of MLS handshake parts staged on this shard's connections.
    pub staged: crate::staging::ShardBudget,
}

impl ShardCtx {
    /// Every argument is one of the server's shared parts (see `ShardSetup`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: usize,
        mesh: Arc<Mesh>,
        services: Services,
        config: Arc<ServerConfig>,
        stats: Arc<ServerStats>,
        limits: Arc<ServerLimits>,
        links: Arc<LinkRequests>,
        presence_node: Option<Arc<RedisNode>>,
        blobs: Arc<dyn tern_store::blob::BlobStore>,
    ) -> Self {
        let redis = presence_node.and_then(|node| {
            RedisPresence::start(node, services.clock.clone())
                .inspect_err(
                    |e| tracing::error!(error = %e, "presence: no Redis clients; in-process"),
                )
                .ok()
        });
        let local_presence = LocalPresence::new(id, mesh.clone(), services.clock.clone(), redis);
        let delivery: Arc<dyn Delivery> = match mesh.cluster.get() {
            Some(node) => Arc::new(crate::node::delivery::ClusterDelivery {
                mesh: mesh.clone(),
                node: node.clone(),
            }),
            None => mesh.clone(),
        };
        ShardCtx {
            id,
            delivery,
            mesh,
            store: services.store,
            blobs,
            clock: services.clock,
            config,
            stats,
            sessions: RefCell::default(),
            limits,
            links,
            presence: local_presence.clone(),
            local_presence,
            next_conn_id: Cell::new(1),
            staged: Default::default(),
        }
    }

    /// This node's id in a cluster (its ownership claims carry it); `None`
    /// on a single node, whose appends are not fenced.
    pub fn node_id(&self) -> Option<&str> {
        self.mesh.node_id()
    }

    /// This shard's presence, whose inbox task the runtime starts.
    pub fn local_presence(&self) -> Rc<LocalPresence> {
        self.local_presence.clone()
    }

    /// A connection id unique within this process.
    pub fn next_conn_id(&self) -> u64 {
        let n = self.next_conn_id.get();
        self.next_conn_id.set(n + 1);
        ((self.id as u64) << 48) | n
    }
}

/// What a server runs on besides its configuration: the store and the
/// clock (tests pass a fault-injecting store or a manual clock).
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub clock: Clock,
}
