//! This server as one node of a cluster (issue 13): joins the membership
//! in Redis ([`crate::cluster::Registry`]), routes each owner request to
//! the conversation's owner node (rendezvous hashing over the live nodes,
//! [`crate::cluster::View::owner_of`]) over the authenticated node links,
//! and sends every delivery effect to the other nodes too
//! ([`delivery::ClusterDelivery`]), which hand it to their own connections.
//!
//! Correctness does not rest on the views agreeing: an owner claims each
//! conversation in the store before sequencing it (`tern_store::OwnershipStore`)
//! and every append carries that fencing token, so a node that lost
//! ownership without noticing is refused by the store (`Fenced`), never
//! sequences next to the new owner. While views disagree a request may be
//! refused with a retryable error; it is never applied twice (idempotency
//! keys) or lost once acknowledged (the store).
//!
//! Fan-out goes only to the nodes holding a recipient: each node tells the
//! others which users it holds ([`interest`]: an arrival before the
//! device's authentication is answered, a departure, and its whole list
//! when it sees a node join and every [`interest::RESYNC`]), and a node
//! whose list has not come yet gets every delivery. Pushes to one node go
//! in order (one queue and one sender task per peer).

pub mod delivery;
mod inbound;
pub mod interest;
mod probe;
pub mod wire;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::cluster::{ClusterConfig, ClusterTls, NodeInfo, NodeLinks, Registry, View};
use crate::command::OwnerCommand;
use crate::mesh::{encode_reply, Caller, Mesh, Reject, STORE_RETRY_AFTER_MS};
use interest::Interest;
use tern_proto::codec::{peek_request_id, LEN_PREFIX};
use tern_proto::fb::ErrorCode;
use tern_proto::Frame;
use tern_store::ConversationId;
use wire::{NodeCall, NodePush};

/// Pushes queued for one peer before further ones are dropped (the
/// recipients then catch up by sync, as after any lost push).
const PEER_QUEUE: usize = 8192;

/// Where an owner request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// This node owns the conversation (or there is no other live node).
    Here,
    /// Another live node owns it.
    Node(NodeInfo),
}

/// Why this node could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "cluster CA: cannot read {path}: {source}; create it with `tern cluster-ca --out DIR`"
    )]
    ReadCa {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cluster TLS: {0}")]
    Tls(#[from] crate::cluster::ClusterTlsError),
    #[error("cluster links: {0}")]
    Links(#[from] crate::cluster::LinkError),
    #[error("cluster membership: {0}")]
    Registry(#[from] crate::cluster::RegistryError),
    /// A call to this node's own advertised address did not reach it.
    #[error("cluster_advertise {addr} does not lead to this node: {reason}; set cluster_advertise (TERN_CLUSTER_ADVERTISE) to the address at which the other nodes reach this node's cluster_listen port")]
    Advertise {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("cannot start the cluster node's runtime: {0}")]
    Runtime(std::io::Error),
    /// Every live node that answered refused this node's certificate.
    #[error("the live cluster nodes refuse this node's certificate: {refused}; this node and they load different cluster CAs: give every node the same ca.pem and ca.key (from one `tern cluster-ca`), or stop the nodes on the wrong one")]
    ForeignCa { refused: String },
}

/// What the inbound side of a node hands its requests to: this server's
/// shard mesh, its pending device-link requests and its clock.
#[derive(Clone)]
pub struct Shared {
    pub mesh: Arc<Mesh>,
    pub links: Arc<crate::links::LinkRequests>,
    pub clock: crate::clock::Clock,
    /// This server's `max_frame_len` (bytes): the largest request frame a
    /// forwarded request may be, as for a client of this node.
    pub max_frame_len: usize,
}

/// This server's membership of its cluster.
pub struct ClusterNode {
    me: NodeInfo,
    view: watch::Receiver<Arc<View>>,
    links: Arc<NodeLinks>,
    /// Runs the registry's heartbeat and the per-peer senders; shut down
    /// in the background on drop (a runtime may not be dropped in async code).
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
    handle: tokio::runtime::Handle,
    registry: Mutex<Option<Registry>>,
    peers: Mutex<HashMap<String, mpsc::Sender<Bytes>>>,
    stats: Arc<NodeStats>,
    /// Which users the other nodes hold.
    interest: Arc<Interest>,
}

/// What this node counts of its cluster traffic (the admin port's
/// `tern_cluster_*` metrics, docs/OPERATING.md).
#[derive(Debug, Default)]
pub struct NodeStats {
    /// Owner requests sent to another node.
    pub forwarded: AtomicU64,
    /// Of those, the ones that got no answer (the node was unreachable or
    /// left): answered with a retryable error.
    pub forward_failed: AtomicU64,
    /// Deliveries and notices sent to other nodes.
    pub pushes_sent: AtomicU64,
    /// Deliveries and notices for other nodes dropped (a full queue or a
    /// failed send); their recipients catch up by sync.
    pub pushes_dropped: AtomicU64,
    /// Push wake-ups decided after asking the other nodes which of their
    /// candidates are connected there.
    pub wake_checks: AtomicU64,
    /// Deliveries and notices not sent to a node because it holds none of
    /// their recipients (its list of users came; see [`interest`]).
    pub pushes_spared: AtomicU64,
    /// Deliveries other nodes sent this node.
    pub deliveries_received: AtomicU64,
}

impl NodeStats {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The value of one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode")
            .field("me", &self.me)
            .finish_non_exhaustive()
    }
}

impl ClusterNode {
    /// With `tls`, this node's certificate from the cluster CA
    /// ([`load_tls`]), starts its node links (their inbound side hands
    /// requests and pushes to `mesh`) and joins the membership in Redis.
    ///
    /// # Errors
    /// [`JoinError`]: the link port, the advertised address, Redis, or a
    /// foreign CA.
    pub fn join(
        config: &ClusterConfig,
        tls: ClusterTls,
        shared: Shared,
    ) -> Result<Arc<ClusterNode>, JoinError> {
        let views = Arc::new(OnceLock::new());
        let (interest, stats) = (
            Arc::new(Interest::default()),
            Arc::new(NodeStats::default()),
        );
        let mesh = shared.mesh.clone();
        let handler = Arc::new(inbound::Inbound::new(
            shared,
            views.clone(),
            config.node_id.clone(),
            (interest.clone(), stats.clone()),
        ));
        let links = NodeLinks::start_with(&tls, config.listen, handler, config.link_settings())?;
        let me = NodeInfo {
            id: config.node_id.clone(),
            addr: advertised(config, links.local_addr()),
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tern-node")
            .enable_all()
            .build()
            .map_err(JoinError::Runtime)?;
        let reached = outside_async(|| runtime.block_on(probe::reach_self(&links, &me)));
        if let Err(reason) = reached {
            links.close();
            runtime.shutdown_background();
            let addr = me.addr;
            return Err(JoinError::Advertise { addr, reason });
        }
        let join = Registry::join(&config.redis_url, me.clone(), config.ttl);
        let registry = match outside_async(|| runtime.block_on(join)) {
            Ok(registry) => registry,
            Err(e) => {
                runtime.shutdown_background();
                return Err(e.into());
            }
        };
        let view = registry.view();
        let current = view.borrow().clone();
        let probe = outside_async(|| runtime.block_on(probe::probe(&links, &me.id, &current)));
        if probe.foreign() {
            outside_async(|| runtime.block_on(registry.leave()));
            links.close();
            runtime.shutdown_background();
            let refused = probe.refused.join("; ");
            return Err(JoinError::ForeignCa { refused });
        }
        let _ = views.set(view.clone());
        tracing::info!(node = %me.id, addr = %me.addr, "joined the cluster");
        let links = Arc::new(links);
        let informer = inform_peers(
            (links.clone(), me.id.clone()),
            view.clone(),
            mesh,
            interest.clone(),
        );
        runtime.spawn(informer);
        Ok(Arc::new(ClusterNode {
            me,
            view,
            links,
            handle: runtime.handle().clone(),
            runtime: Mutex::new(Some(runtime)),
            registry: Mutex::new(Some(registry)),
            peers: Mutex::new(HashMap::new()),
            stats,
            interest,
        }))
    }

    /// This node's id.
    pub fn id(&self) -> &str {
        &self.me.id
    }

    /// The live nodes as this node sees them, updated at each heartbeat.
    pub fn view(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// Changes whenever the live nodes change (owners drop their claims).
    pub fn view_version(&self) -> u64 {
        let view = self.view.borrow();
        let mut h = 0xcbf2_9ce4_8422_2325_u64;
        for node in view.nodes() {
            for b in node.id.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
        }
        h
    }

    /// Where the owner request of conversation `id` goes.
    pub fn route(&self, id: ConversationId) -> Route {
        route_in(&self.view.borrow(), &self.me.id, id)
    }

    /// Forwards `command` of `caller` to node `to` and returns the encoded
    /// reply frame; a node that cannot be reached answers a retryable
    /// `Internal` (the client retries, and the request lands on the new
    /// owner once the views moved on).
    pub async fn forward(
        &self,
        to: &NodeInfo,
        request_id: u64,
        caller: Caller,
        command: OwnerCommand,
    ) -> Bytes {
        let create_id = match &command {
            OwnerCommand::Create(id, _) => Some(*id),
            _ => None,
        };
        let frame = Frame::new(request_id, command.into_body()).encode();
        let call = NodeCall::Owner {
            user: caller.user,
            device: caller.device,
            frame: frame.slice(LEN_PREFIX.min(frame.len())..),
            create_id,
        };
        NodeStats::add(&self.stats.forwarded);
        let answer = match wire::encode(&call) {
            Ok(bytes) => self.links.call(to, bytes).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let answer = answer.and_then(|a| check_answer(&a, request_id).map(|()| a));
        answer.unwrap_or_else(|e| {
            NodeStats::add(&self.stats.forward_failed);
            tracing::warn!(node = %to.id, error = %e, "owner node unreachable");
            encode_reply(
                request_id,
                Err(moved(&format!("owner node {} unreachable: {e}", to.id))),
            )
        })
    }

    /// Offers `approver`'s decision on device-link request `link_id` to the
    /// other live nodes (the request lives where the new device is
    /// connected); true when one of them held it and took the decision.
    pub async fn decide_link(&self, link_id: u64, approver: &str, approve: bool) -> bool {
        let call = NodeCall::LinkDecision {
            link_id,
            approver: approver.to_owned(),
            approve,
        };
        let Ok(bytes) = wire::encode(&call) else {
            return false;
        };
        let view = self.view.borrow().clone();
        for node in view.nodes().iter().filter(|n| n.id != self.me.id) {
            match self.links.call(node, bytes.clone()).await {
                Ok(answer) if answer.as_ref() == [1] => return true,
                Ok(_) => {}
                Err(e) => tracing::debug!(node = %node.id, error = %e, "link decision not offered"),
            }
        }
        false
    }

    /// The devices of `devices` connected to another live node. A node that
    /// does not answer counts as having none of them (a wake-up too many
    /// is better than a message nobody is woken for).
    pub async fn live_elsewhere(&self, devices: &[(String, u32)]) -> Vec<(String, u32)> {
        let call = NodeCall::Live {
            devices: devices.to_vec(),
        };
        let Ok(bytes) = wire::encode(&call) else {
            return Vec::new();
        };
        let view = self.view.borrow().clone();
        let mut live = Vec::new();
        for node in view.nodes().iter().filter(|n| n.id != self.me.id) {
            let answer = self.links.call(node, bytes.clone()).await;
            match answer.map(|a| wire::decode::<Vec<(String, u32)>>(&a)) {
                Ok(Ok(there)) => live.extend(there),
                Ok(Err(e)) => tracing::debug!(node = %node.id, error = %e, "liveness answer"),
                Err(e) => tracing::debug!(node = %node.id, error = %e, "liveness not asked"),
            }
        }
        live
    }

    /// Tells every other live node that `user`'s devices changed and waits
    /// until each has queued the news for its owners (or failed to answer
    /// within the call timeout: its owners then learn of the device on its
    /// first request, see `Owner::refresh_for`).
    pub async fn forget_user_everywhere(&self, user: &str) {
        let call = NodeCall::ForgetUser {
            user: user.to_owned(),
        };
        let Ok(bytes) = wire::encode(&call) else {
            return;
        };
        let view = self.view.borrow().clone();
        let others = view.nodes().iter().filter(|n| n.id != self.me.id);
        let calls = others.map(|node| self.links.call(node, bytes.clone()));
        for (answer, node) in futures_util::future::join_all(calls)
            .await
            .into_iter()
            .zip(view.nodes().iter().filter(|n| n.id != self.me.id))
        {
            if let Err(e) = answer {
                tracing::debug!(node = %node.id, error = %e, "device change not told");
            }
        }
    }

    /// Tells every other live node that this node has a new connection of
    /// `user` (as of `generation`, `Locations::arrive`) and waits until
    /// each recorded it, at most [`interest::ANNOUNCE_WAIT`] in all.
    pub async fn announce_arrival(&self, user: &str, generation: u64) {
        let call = NodeCall::Arrived {
            user: user.to_owned(),
            generation,
        };
        let Ok(bytes) = wire::encode(&call) else {
            return;
        };
        let view = self.view.borrow().clone();
        let others = view.nodes().iter().filter(|n| n.id != self.me.id);
        let calls = others.map(|node| self.links.call(node, bytes.clone()));
        let all = futures_util::future::join_all(calls);
        match tokio::time::timeout(interest::ANNOUNCE_WAIT, all).await {
            Ok(answers) if answers.iter().all(Result::is_ok) => {}
            _ => tracing::debug!(user, "not every node recorded a connection in time"),
        }
    }

    /// Tells every other live node that this node's last connection of
    /// `user` closed (as of `generation`, `Locations::leave`).
    pub fn announce_departure(&self, user: &str, generation: u64) {
        let user = user.to_owned();
        self.broadcast(&NodePush::Left { user, generation });
    }

    /// Queues `push`, a delivery or notice for `users`, for each other live
    /// node that holds one of them or has not sent its list of users yet.
    pub fn send_where_wanted<'a>(
        &self,
        users: impl Iterator<Item = &'a str> + Clone,
        push: &NodePush,
    ) {
        let view = self.view.borrow().clone();
        let mut bytes = None;
        for node in view.nodes().iter().filter(|n| n.id != self.me.id) {
            if !self.interest.wants(&node.id, users.clone()) {
                NodeStats::add(&self.stats.pushes_spared);
                continue;
            }
            let encoded = bytes.get_or_insert_with(|| wire::encode(push));
            match encoded {
                Ok(encoded) => self.enqueue(node, encoded.clone()),
                Err(e) => return tracing::error!(error = %e, "cannot encode a node push"),
            }
        }
    }

    /// Whether every other live node has sent this node its list of users
    /// (until then, each of them gets every delivery).
    pub fn knows_every_peer(&self) -> bool {
        let view = self.view.borrow().clone();
        let mut others = view.nodes().iter().filter(|n| n.id != self.me.id);
        others.all(|node| self.interest.is_synced(&node.id))
    }

    /// Queues encoded `bytes` for `node`; counted as dropped if its queue is full.
    fn enqueue(&self, node: &NodeInfo, bytes: Bytes) {
        if self.queue(node).try_send(bytes).is_err() {
            NodeStats::add(&self.stats.pushes_dropped);
        }
    }

    /// Queues `push` for every other live node (in order per node).
    pub fn broadcast(&self, push: &NodePush) {
        let bytes = match wire::encode(push) {
            Ok(bytes) => bytes,
            Err(e) => return tracing::error!(error = %e, "cannot encode a node push"),
        };
        let view = self.view.borrow().clone();
        for node in view.nodes().iter().filter(|n| n.id != self.me.id) {
            self.enqueue(node, bytes.clone());
        }
    }

    /// The queue of `node`, with its sender task started on first use.
    fn queue(&self, node: &NodeInfo) -> mpsc::Sender<Bytes> {
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = peers.get(&node.id).filter(|tx| !tx.is_closed()) {
            return tx.clone();
        }
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let links = (self.links.clone(), self.stats.clone());
        let sender = send_pushes(links, self.view.clone(), node.clone(), rx);
        self.handle.spawn(sender);
        peers.insert(node.id.clone(), tx.clone());
        tx
    }

    /// This node's cluster counters.
    pub fn stats(&self) -> &NodeStats {
        &self.stats
    }

    /// How many nodes this node sees alive (itself included).
    pub fn live_nodes(&self) -> usize {
        self.view.borrow().nodes().len()
    }

    /// Leaves the membership at once (the others take over this node's
    /// conversations at their next heartbeat) and closes the links.
    pub fn leave(&self) {
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(registry) = registry {
            outside_async(|| self.handle.block_on(registry.leave()));
        }
        self.peers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.links.close();
    }
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
}

/// This node's certificate, issued from the cluster CA files of `config`:
/// read with the other settings, before any store is opened or port bound,
/// so that a missing or wrong CA file is refused like any other setting;
/// [`ClusterNode::join`] then uses it.
///
/// # Errors
/// [`JoinError::ReadCa`] or [`JoinError::Tls`].
pub fn load_tls(config: &ClusterConfig) -> Result<ClusterTls, JoinError> {
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|source| JoinError::ReadCa {
            path: path.to_owned(),
            source,
        })
    };
    let tls = ClusterTls::load(
        &read(&config.ca_cert)?,
        &read(&config.ca_key)?,
        &config.node_id,
    )?;
    Ok(tls)
}

/// Runs `f` (which blocks on this node's runtime) on a thread of its own
/// when called from async code, where blocking on a runtime is refused.
fn outside_async<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(out) => out,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// The route of conversation `id` in `view` from node `me`.
fn route_in(view: &View, me: &str, id: ConversationId) -> Route {
    match view.owner_of(id) {
        Some(owner) if owner.id != me => Route::Node(owner.clone()),
        _ => Route::Here,
    }
}

/// The address the other nodes dial: `advertise`, else the bound address.
fn advertised(config: &ClusterConfig, bound: std::net::SocketAddr) -> std::net::SocketAddr {
    match config.advertise {
        Some(addr) => addr,
        None if config.listen.port() == 0 => bound,
        None => config.listen,
    }
}

/// Checks that `answer` is one length-prefixed reply frame to request
/// `request_id`: the caller's connection writes it unchanged, so a peer's
/// bad answer (another tern version, a bug) must neither break the
/// client's stream nor answer another of its requests.
fn check_answer(answer: &[u8], request_id: u64) -> Result<(), String> {
    let prefix = answer
        .get(..LEN_PREFIX)
        .and_then(|p| <[u8; 4]>::try_from(p).ok());
    let frame = answer.get(LEN_PREFIX..).unwrap_or_default();
    let len = prefix.map(|p| usize::try_from(u32::from_le_bytes(p)).unwrap_or(usize::MAX));
    if len != Some(frame.len()) || frame.is_empty() {
        let n = answer.len();
        return Err(format!(
            "the owner node answered {n} bytes that are not one frame"
        ));
    }
    match peek_request_id(frame) {
        Some(id) if id == request_id => Ok(()),
        other => Err(format!(
            "the owner node answered request {other:?}, not {request_id}"
        )),
    }
}

/// The refusal of a request whose conversation is moving between nodes.
pub fn moved(detail: &str) -> Reject {
    let mut reject = Reject::new(
        ErrorCode::Internal,
        format!("{detail}; the conversation is moving to another node, retry the request"),
    );
    reject.retry_after_ms = STORE_RETRY_AFTER_MS;
    reject
}

/// Sends this node's list of users (`Present`) to each node it sees join,
/// and to every other live node each [`interest::RESYNC`]; forgets what a
/// node that left the view had said. Runs until the view's sender is gone.
async fn inform_peers(
    (links, me): (Arc<NodeLinks>, String),
    mut view: watch::Receiver<Arc<View>>,
    mesh: Arc<Mesh>,
    interest: Arc<Interest>,
) {
    let mut known = std::collections::HashSet::new();
    let mut tick = tokio::time::interval(interest::RESYNC);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let joined_only = tokio::select! {
            changed = view.changed() => match changed {
                Ok(()) => true,
                Err(_) => return,
            },
            _ = tick.tick() => false,
        };
        let current = view.borrow_and_update().clone();
        let others: Vec<&NodeInfo> = current.nodes().iter().filter(|n| n.id != me).collect();
        let ids: std::collections::HashSet<String> = others.iter().map(|n| n.id.clone()).collect();
        for gone in known.difference(&ids) {
            interest.forget_node(gone);
        }
        let targets: Vec<&NodeInfo> = others
            .into_iter()
            .filter(|n| !joined_only || !known.contains(&n.id))
            .collect();
        known = ids;
        if !targets.is_empty() {
            send_present(&links, &mesh, &targets).await;
        }
    }
}

/// One `Present` call to each of `targets`, at once.
async fn send_present(links: &NodeLinks, mesh: &Mesh, targets: &[&NodeInfo]) {
    let (generation, users) = mesh.locations.users();
    let Ok(call) = wire::encode(&NodeCall::Present { generation, users }) else {
        return;
    };
    let calls = targets.iter().map(|node| links.call(node, call.clone()));
    for (answer, node) in futures_util::future::join_all(calls)
        .await
        .into_iter()
        .zip(targets)
    {
        if let Err(e) = answer {
            tracing::debug!(node = %node.id, error = %e, "list of users not sent");
        }
    }
}

/// Sends the pushes queued for `node`, one after another, until the queue
/// closes or the node leaves the view; a push that fails is dropped (its
/// recipients catch up by sync).
async fn send_pushes(
    (links, stats): (Arc<NodeLinks>, Arc<NodeStats>),
    view: watch::Receiver<Arc<View>>,
    node: NodeInfo,
    mut queue: mpsc::Receiver<Bytes>,
) {
    while let Some(push) = queue.recv().await {
        if view.borrow().get(&node.id).is_none() {
            break;
        }
        match links.push(&node, push).await {
            Ok(()) => NodeStats::add(&stats.pushes_sent),
            Err(e) => {
                NodeStats::add(&stats.pushes_dropped);
                tracing::debug!(node = %node.id, error = %e, "node push lost");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn node(id: &str, port: u16) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            addr: ([127, 0, 0, 1], port).into(),
        }
    }

    #[test]
    fn routes_follow_the_view_and_stay_here_alone() {
        let alone = View::new(vec![node("a", 1)]);
        assert_eq!(route_in(&alone, "a", 42), Route::Here);
        let empty = View::new(vec![]);
        assert_eq!(route_in(&empty, "a", 42), Route::Here);
        let three = View::new(vec![node("a", 1), node("b", 2), node("c", 3)]);
        let mut elsewhere = 0;
        for id in 1..300u64 {
            match route_in(&three, "a", id) {
                Route::Here => assert_eq!(three.owner_of(id).unwrap().id, "a"),
                Route::Node(n) => {
                    assert_eq!(three.owner_of(id), Some(&n));
                    elsewhere += 1;
                }
            }
        }
        assert!((150..250).contains(&elsewhere), "{elsewhere}");
    }

    #[test]
    fn only_one_whole_frame_answering_the_request_is_passed_on() {
        let reply = encode_reply(9, Err(Reject::new(ErrorCode::NotFound, "no")));
        assert_eq!(check_answer(&reply, 9), Ok(()));
        assert!(check_answer(&reply, 8).is_err(), "another request's answer");
        let mut longer = reply.to_vec();
        longer.push(0);
        assert!(check_answer(&longer, 9).is_err(), "bytes after the frame");
        assert!(
            check_answer(&reply[..reply.len() - 1], 9).is_err(),
            "cut short"
        );
        assert!(check_answer(&[], 9).is_err());
        assert!(check_answer(&[0, 0, 0, 0], 9).is_err(), "an empty frame");
        assert!(
            check_answer(&[3, 0, 0, 0, 1, 2, 3], 9).is_err(),
            "not a frame"
        );
    }
}
