//! Cluster membership in Redis (`fred`). Each node writes
//! `tern:node:{id}` = its link address with a TTL (`SET .. PX ttl`) and
//! lists its id in the hash `tern:nodes` (id → address), rewriting both
//! every `ttl / 3`; in the same pipeline it reads the hash and then the
//! listed keys (`MGET`). A listed id whose key is gone (expired: the node
//! stopped heartbeating) is not live, and is pruned from the hash. The
//! view is published on a `watch` channel when it changes.
//!
//! - **Why a hash index, not `SCAN tern:node:*`.** SCAN walks the whole
//!   keyspace, which the presence keys (one per user) make large, on every
//!   heartbeat of every node; the index costs O(nodes). The key's TTL, on
//!   Redis' clock, stays the one source of liveness, so node clocks need
//!   not agree. A reader pruning an id whose node re-registers at that very
//!   moment hides it until its next heartbeat (ttl/3): only a node that had
//!   already expired.
//! - **Leaving.** [`Registry::leave`] deletes the key and the index entry
//!   at once: the others drop the node at their next heartbeat, not after
//!   a TTL. Dropping a [`Registry`] without `leave` stops its heartbeat
//!   only (a crash): the others drop the node within ttl + one heartbeat.
//! - **Redis lost.** Every command is bounded by [`COMMAND_TIMEOUT`] (or
//!   ttl/3 if shorter). While Redis does not answer, the last view is kept,
//!   however long: routing stays as agreed as it was, and the store's
//!   fencing keeps every append correct whatever a view says, so
//!   availability wins over shrinking to {self} (which would make every
//!   node claim every conversation). One log line when Redis is lost, one
//!   when it is back; nothing panics.
//! - **Id taken over.** A node whose key expired (cut off from Redis past
//!   its ttl) may find its id claimed by another node when it is back: it
//!   then writes nothing, drops itself from its view (it owns nothing and
//!   forwards every request) and logs an error, until the key is free again.
//! - **Flushed.** After a `FLUSHALL` each node's next heartbeat writes its
//!   key and index entry again: views shrink meanwhile and are whole again
//!   within one heartbeat of every node.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{
    Builder, Client, ClientLike, Config, Expiration, HashesInterface, KeysInterface,
    ReconnectPolicy, SetOptions, Value,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::view::View;
use super::{check_node_id, NodeId, NodeInfo};

/// The hash listing the registered node ids (id → address).
pub const NODES_KEY: &str = "tern:nodes";
/// Prefix of a node's membership key (`tern:node:{id}` → address, with a TTL).
pub const NODE_KEY_PREFIX: &str = "tern:node:";
/// The longest any one Redis call of the registry may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Shortest and longest membership TTL.
pub const TTL_RANGE: std::ops::RangeInclusive<Duration> =
    Duration::from_millis(300)..=Duration::from_secs(600);
/// Most nodes a view holds (an index grown past it is read in part).
pub const MAX_NODES: usize = 1024;

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The node id is not valid.
    #[error("{0}")]
    NodeId(String),
    /// The TTL is outside [`TTL_RANGE`].
    #[error("membership ttl {0:?} must be 300 ms to 10 min")]
    Ttl(Duration),
    /// fred cannot use the URL.
    #[error("redis_url: {0}; expected redis://[user:password@]host:port[/db]")]
    Url(fred::error::Error),
    /// Redis did not answer the first registration.
    #[error("cannot register in Redis: {0}; check redis_url and that Redis runs and is reachable")]
    Unreachable(String),
    /// A live node already holds this id at another address.
    #[error("node id {id} is already registered by a live node at {addr}: give each node its own id (or, after a crash, wait one ttl for its key to expire)")]
    Duplicate { id: NodeId, addr: String },
}

/// This node's membership: a heartbeat task on the runtime `join` ran on,
/// and the current [`View`]. Dropping it stops the heartbeat (like a
/// crash); [`Registry::leave`] also removes the node at once.
pub struct Registry {
    me: NodeInfo,
    client: Client,
    view: watch::Receiver<Arc<View>>,
    heartbeat: JoinHandle<()>,
}

impl Registry {
    /// Registers `me` in the Redis at `redis_url` with key lifetime `ttl`,
    /// reads the first view, and starts heartbeating every `ttl / 3` on
    /// the current tokio runtime (which must outlive the registry).
    ///
    /// # Errors
    /// [`RegistryError`]: a bad id, ttl or URL, Redis not answering within
    /// twice the command timeout, or the id held by another live node.
    pub async fn join(
        redis_url: &str,
        me: NodeInfo,
        ttl: Duration,
    ) -> Result<Registry, RegistryError> {
        check_node_id(&me.id).map_err(RegistryError::NodeId)?;
        if !TTL_RANGE.contains(&ttl) {
            return Err(RegistryError::Ttl(ttl));
        }
        let config = Config::from_url(redis_url).map_err(RegistryError::Url)?;
        let node = Node::new(config, me.clone(), ttl)?;
        let first = async {
            node.claim().await?;
            node.beat().await
        };
        let view = match tokio::time::timeout(node.timeout * 2, first).await {
            Ok(Ok(view)) => view,
            Ok(Err(Beat::Duplicate(addr))) => {
                return Err(RegistryError::Duplicate { id: me.id, addr })
            }
            Ok(Err(Beat::Redis(e))) => return Err(RegistryError::Unreachable(e)),
            Err(_) => {
                return Err(RegistryError::Unreachable(format!(
                    "no answer within {:?}",
                    node.timeout * 2
                )))
            }
        };
        let (publish, receiver) = watch::channel(Arc::new(view));
        let client = node.client.clone();
        let heartbeat = tokio::spawn(node.run(publish));
        Ok(Registry {
            me,
            client,
            view: receiver,
            heartbeat,
        })
    }

    /// The live nodes, updated at every heartbeat that finds a change.
    pub fn view(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// This node.
    pub fn me(&self) -> &NodeInfo {
        &self.me
    }

    /// Stops heartbeating and deletes this node's key and index entry at
    /// once (a graceful stop), bounded by the command timeout; a Redis that
    /// does not answer leaves the key to expire.
    pub async fn leave(self) {
        self.heartbeat.abort();
        let key = node_key(&self.me.id);
        let remove = async {
            let pipeline = self.client.pipeline();
            let _: () = pipeline.del(key.as_str()).await?;
            let _: () = pipeline.hdel(NODES_KEY, self.me.id.as_str()).await?;
            let _: Vec<Value> = pipeline.all().await?;
            Ok::<(), fred::error::Error>(())
        };
        match tokio::time::timeout(COMMAND_TIMEOUT, remove).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(%e, "cluster: could not remove this node from Redis; the others drop it within one ttl")
            }
            Err(_) => tracing::warn!(
                "cluster: Redis did not answer the leave; the others drop this node within one ttl"
            ),
        }
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.client.quit()).await;
    }
}

impl Drop for Registry {
    /// Stops heartbeating and closes the Redis connection, leaving the key
    /// to expire (as a crash would; [`Registry::leave`] removes it).
    fn drop(&mut self) {
        self.heartbeat.abort();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            drop(runtime.spawn(async move {
                let _ = tokio::time::timeout(COMMAND_TIMEOUT, client.quit()).await;
            }));
        }
    }
}

fn node_key(id: &str) -> String {
    format!("{NODE_KEY_PREFIX}{id}")
}

/// Why a heartbeat failed.
enum Beat {
    Redis(String),
    Duplicate(String),
}

impl From<fred::error::Error> for Beat {
    fn from(e: fred::error::Error) -> Self {
        Beat::Redis(e.to_string())
    }
}

/// The heartbeat task's state.
struct Node {
    client: Client,
    me: NodeInfo,
    key: String,
    addr: String,
    ttl: Duration,
    timeout: Duration,
}

impl Node {
    fn new(config: Config, me: NodeInfo, ttl: Duration) -> Result<Node, RegistryError> {
        let timeout = COMMAND_TIMEOUT.min(ttl / 3);
        let mut builder = Builder::from_config(config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .with_config(|c| c.fail_fast = false)
            .with_performance_config(|p| p.default_command_timeout = timeout)
            .with_connection_config(|c| {
                c.connection_timeout = timeout;
                c.internal_command_timeout = timeout;
            });
        let client = builder.build().map_err(RegistryError::Url)?;
        let _connection = client.connect();
        Ok(Node {
            key: node_key(&me.id),
            addr: me.addr.to_string(),
            client,
            me,
            ttl,
            timeout,
        })
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX)
    }

    /// Takes the id: refused when its key holds another live address.
    async fn claim(&self) -> Result<(), Beat> {
        let expiry = Some(Expiration::PX(self.ttl_ms()));
        let set: Option<String> = self
            .client
            .set(
                self.key.as_str(),
                self.addr.as_str(),
                expiry,
                Some(SetOptions::NX),
                false,
            )
            .await?;
        if set.is_some() {
            return Ok(());
        }
        let holder: Option<String> = self.client.get(self.key.as_str()).await?;
        match holder {
            Some(addr) if addr != self.addr => Err(Beat::Duplicate(addr)),
            _ => Ok(()),
        }
    }

    /// Heartbeats until aborted, publishing each changed view; keeps the
    /// last view while Redis does not answer.
    async fn run(self, publish: watch::Sender<Arc<View>>) {
        let (mut lost, mut taken) = (false, false);
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match tokio::time::timeout(self.timeout * 2, self.beat()).await {
                Ok(Ok(view)) => {
                    taken = false;
                    if std::mem::take(&mut lost) {
                        tracing::warn!(
                            "cluster: Redis is reachable again; the view of live nodes is current"
                        );
                    }
                    publish.send_if_modified(|current| {
                        let changed = **current != view;
                        if changed {
                            *current = Arc::new(view);
                        }
                        changed
                    });
                }
                Ok(Err(Beat::Duplicate(addr))) => {
                    if !std::mem::replace(&mut taken, true) {
                        tracing::error!(node = %self.me.id, other = %addr, "cluster: another node registered this node's id (its key had expired here); this node stops heartbeating and owns nothing, forwarding every request: give each node its own id and restart this one");
                    }
                    publish.send_if_modified(|current| {
                        let mine = current.get(&self.me.id).is_some();
                        if mine {
                            let others = current.nodes().iter().filter(|n| n.id != self.me.id);
                            *current = Arc::new(View::new(others.cloned().collect()));
                        }
                        mine
                    });
                }
                Ok(Err(Beat::Redis(error))) if !lost => {
                    lost = true;
                    tracing::warn!(%error, "cluster: Redis is unreachable; keeping the last view of live nodes (the store's fencing keeps writes correct) until it answers again");
                }
                Err(_) if !lost => {
                    lost = true;
                    tracing::warn!("cluster: Redis does not answer; keeping the last view of live nodes (the store's fencing keeps writes correct) until it answers again");
                }
                _ => {}
            }
        }
    }

    /// Refreshes this node's key and index entry, then reads the live nodes;
    /// [`Beat::Duplicate`] (nothing written) when the key names another
    /// address: while this node's key had expired, another node claimed
    /// its id. Best effort: a claim between the read and the write is
    /// overwritten, and seen by that node's next beat.
    async fn beat(&self) -> Result<View, Beat> {
        let holder: Option<String> = self.client.get(self.key.as_str()).await?;
        if let Some(addr) = holder.filter(|addr| *addr != self.addr) {
            return Err(Beat::Duplicate(addr));
        }
        let pipeline = self.client.pipeline();
        let expiry = Some(Expiration::PX(self.ttl_ms()));
        let _: () = pipeline
            .set(self.key.as_str(), self.addr.as_str(), expiry, None, false)
            .await?;
        let _: () = pipeline
            .hset(NODES_KEY, (self.me.id.as_str(), self.addr.as_str()))
            .await?;
        let _: () = pipeline.hgetall(NODES_KEY).await?;
        let replies: Vec<Value> = pipeline.all().await?;
        let index: HashMap<String, String> = match replies.into_iter().nth(2) {
            Some(hash) => hash.convert()?,
            None => HashMap::new(),
        };
        let mut ids: Vec<String> = index.into_keys().collect();
        ids.sort();
        ids.truncate(MAX_NODES);
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let addrs: Vec<Option<String>> = match keys.is_empty() {
            true => Vec::new(),
            false => self.client.mget(keys).await?,
        };
        let mut live = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, addr) in ids.into_iter().zip(addrs) {
            match addr.and_then(|a| a.parse::<SocketAddr>().ok()) {
                Some(addr) => live.push(NodeInfo { id, addr }),
                None => gone.push(id),
            }
        }
        self.prune(gone).await;
        Ok(View::new(live))
    }

    /// Drops expired ids from the index (best effort: the next beat retries).
    async fn prune(&self, gone: Vec<String>) {
        let gone: Vec<String> = gone.into_iter().filter(|id| *id != self.me.id).collect();
        if !gone.is_empty() {
            let result: Result<(), _> = self.client.hdel(NODES_KEY, gone).await;
            if let Err(error) = result {
                tracing::debug!(%error, "cluster: could not prune expired nodes from the index");
            }
        }
    }
}
