//! The Redis side of `presence_backend = "redis"` (issue 11, clusters),
//! through `fred`. Each shard keeps what the in-process backend keeps (the
//! home records of the users whose home it is, its connections'
//! subscriptions, the coalescing of one push per user per second: all of
//! [`super::local`]); only the exchange between homes and watchers goes
//! through Redis instead of the shard mesh:
//!
//! - **Keys.** `tern:presence:{user}` is a hash with one field per node
//!   (a random id drawn when the server starts) holding that node's
//!   [`View`] of the user. A home writes its view on every pushed change
//!   (coalesced) and its heartbeat task rewrites the views of every online
//!   user homed on it each `presence_heartbeat_ms`. Liveness is the view's
//!   write time: an online view older than three heartbeats is a node that
//!   stopped, and counts as offline (Redis 7.0 has no per-field TTL). The
//!   key's own TTL, refreshed on each write, is [`LAST_SEEN_RETENTION_MS`]:
//!   it only bounds how long an offline user's last seen and status text
//!   are kept.
//! - **Changes.** Published on a channel per user,
//!   `tern:presence-changed:{user}`, with an empty message; a shard
//!   subscribes to it while one of its connections watches the user, and
//!   re-reads the user's hash when told (one pipelined read per batch of
//!   messages), then pushes through its [`super::subs::Subscriptions`]
//!   exactly as it does with the mesh. A channel per user rather than per
//!   node: the publisher needs no registry of who watches whom (which
//!   Redis would lose on a flush and the nodes would have to rebuild), the
//!   pub/sub subscriptions live in the connections and survive a FLUSHALL,
//!   and a change reaches only the shards that watch the user.
//! - **Loss.** Redis never holds the only copy of anything: the views are
//!   rebuilt from the homes' records, the records from live connections,
//!   and the visibility setting lives in the store. After a FLUSHALL the
//!   next heartbeat rewrites every online user (and publishes those it
//!   had to create, so watchers re-read); after a restart the clients
//!   reconnect with backoff, each shard re-subscribes to its watched
//!   users and re-reads them, and each home's first heartbeat after its
//!   reconnection announces every user it writes, plus the users whose
//!   write failed meanwhile (gone offline included): writes fred queued
//!   during the outage are replayed with stale write times and a PUBLISH
//!   nobody is subscribed to yet, so neither HSET's "new field" nor the
//!   replayed message can be relied on. A watcher that re-subscribed
//!   before that announcement hears it; one that re-subscribes after it
//!   reads what it wrote. Offline users' last seen and status text
//!   written before the loss are gone (soft, like all presence).
//! - **Unavailable.** Every call is bounded by [`COMMAND_TIMEOUT`], and
//!   reads are not even tried while Redis is known to be lost: reads answer
//!   Offline (presence degrades), writes are dropped (the heartbeat
//!   rewrites them). Nothing
//!   of message delivery waits on Redis: connections tell their home shard
//!   over the mesh, and the home writes from a task of its own. One log
//!   line when Redis is lost and one when it is back.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{
    Builder, Client, ClientLike, Config, EventInterface, HashesInterface, KeysInterface,
    PubsubInterface, ReconnectPolicy, Value,
};
use tern_store::UserId;
use tokio::sync::broadcast::error::RecvError;

use super::cluster::{merge, View};
use super::local::{LocalPresence, Msg};
use super::record::Snapshot;
use super::PresenceBackend;
use crate::clock::Clock;
use crate::config::{check, ConfigError, ServerConfig};
use crate::mesh::Mesh;

/// Prefix of a user's presence hash.
pub const KEY_PREFIX: &str = "tern:presence:";
/// Prefix of a user's change channel.
pub const CHANNEL_PREFIX: &str = "tern:presence-changed:";
/// How long a user's hash outlives its last write: the retention of an
/// offline user's last seen and status text (30 days).
pub const LAST_SEEN_RETENTION_MS: i64 = 30 * 24 * 3600 * 1000;
/// Heartbeats a node may miss before its online views count as offline.
pub const STALE_HEARTBEATS: u64 = 3;
/// The longest any one Redis call may take before presence gives up on it.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// Users written or read per pipeline.
const BATCH: usize = 256;

/// The URL schemes of fred's `Config::from_url` (a Redis server, over TLS,
/// a Redis Cluster, a Sentinel deployment): any other would be parsed as a
/// plain server and fail only when it is dialled.
const REDIS_SCHEMES: [&str; 6] = [
    "redis",
    "rediss",
    "redis-cluster",
    "rediss-cluster",
    "redis-sentinel",
    "rediss-sentinel",
];

/// Checks the presence settings (before any port is bound).
///
/// # Errors
/// [`ConfigError::Invalid`] for a heartbeat outside 50..=600000 ms or, with
/// the Redis backend, a `redis_url` fred cannot parse.
pub fn validate(config: &ServerConfig) -> Result<(), ConfigError> {
    check(
        (50..=600_000).contains(&config.presence_heartbeat_ms),
        "presence_heartbeat_ms",
        "must be 50 to 600000 (milliseconds)",
    )?;
    if config.presence_backend == PresenceBackend::Redis {
        let scheme = config.redis_url.split_once("://").map(|(scheme, _)| scheme);
        check(
            scheme.is_some_and(|s| REDIS_SCHEMES.contains(&s)),
            "redis_url",
            "must start with redis:// (rediss:// for TLS; -cluster or -sentinel after \
             either for those deployments), e.g. redis://127.0.0.1:6379",
        )?;
        Config::from_url(&config.redis_url).map_err(|e| ConfigError::Invalid {
            field: "redis_url",
            message: format!("{e}; expected redis://[user:password@]host:port[/db]"),
        })?;
    }
    Ok(())
}

/// What every shard of one node shares: its id in the presence hashes,
/// the Redis settings, and whether Redis is known to be lost (for the log).
#[derive(Debug)]
pub struct RedisNode {
    id: String,
    config: Config,
    heartbeat: Duration,
    lost: Arc<AtomicBool>,
}

impl RedisNode {
    /// The node of `config` when its backend is Redis (`None` otherwise;
    /// the URL was validated before).
    pub fn new(config: &ServerConfig) -> Option<Arc<RedisNode>> {
        if config.presence_backend != PresenceBackend::Redis {
            return None;
        }
        let parsed = Config::from_url(&config.redis_url).ok()?;
        Some(Arc::new(RedisNode {
            id: format!("{:016x}", rand::random::<u64>()),
            config: parsed,
            heartbeat: Duration::from_millis(config.presence_heartbeat_ms),
            lost: Arc::default(),
        }))
    }

    /// The parsed `redis_url` (the admin port's readiness probe connects with it).
    pub(crate) fn client_config(&self) -> &Config {
        &self.config
    }

    fn stale_after_ms(&self) -> u64 {
        let ms = u64::try_from(self.heartbeat.as_millis()).unwrap_or(u64::MAX);
        ms.saturating_mul(STALE_HEARTBEATS)
    }
}

/// Why a Redis call did not happen or did not answer.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("not connected to Redis (reconnecting with backoff)")]
    Disconnected,
    #[error("Redis did not answer within {COMMAND_TIMEOUT:?}")]
    Timeout,
    #[error("Redis: {0}")]
    Redis(#[from] fred::error::Error),
}

/// One shard's connections to Redis: commands and subscriptions.
pub struct RedisPresence {
    node: Arc<RedisNode>,
    client: Client,
    subscriber: SubscriberClient,
    clock: Clock,
    /// Per watched subject, the presence this shard last handed its
    /// watchers: a re-read that finds the same (a heartbeat putting back
    /// what a flush took, a resync) pushes nothing.
    told: RefCell<HashMap<UserId, Snapshot>>,
    /// A re-read failed (Redis lost): the next heartbeat resyncs.
    resync_due: Cell<bool>,
    /// Users homed here whose last write or announcement failed (Redis
    /// lost), with the snapshot and change time last meant for Redis: the
    /// heartbeat writes and announces them once Redis answers, whatever
    /// HSET says (a write fred replays after reconnecting makes the field
    /// look old, and a replayed PUBLISH reaches nobody). Bounded by the
    /// users homed on this shard; emptied on recovery.
    owed: RefCell<HashMap<UserId, (Snapshot, u64)>>,
    /// The command client reconnected since the last heartbeat that
    /// wrote: the next one announces every user it writes. Writes fred
    /// queued during the outage are replayed on reconnection with write
    /// times already stale (read as offline) and their PUBLISH reaching
    /// nobody, and HSET no longer says the field is new.
    reconnected: Arc<AtomicBool>,
}

impl RedisPresence {
    /// Connects (in the background, retrying with backoff for ever) one
    /// shard's clients. Must run on the shard's runtime.
    ///
    /// # Errors
    /// fred refused the settings (they were validated: not expected).
    pub fn start(node: Arc<RedisNode>, clock: Clock) -> Result<Rc<Self>, RedisError> {
        let mut builder = Builder::from_config(node.config.clone());
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 50, 2_000, 2))
            .with_config(|c| c.fail_fast = false)
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
                p.broadcast_channel_capacity = 4096;
            })
            .with_connection_config(|c| {
                c.connection_timeout = COMMAND_TIMEOUT;
                c.internal_command_timeout = COMMAND_TIMEOUT;
            });
        let client = builder.build()?;
        let subscriber = builder.build_subscriber_client()?;
        client.log_outages(node.clone());
        subscriber.log_outages(node.clone());
        let _connection = client.connect();
        let _connection = subscriber.connect();
        // fred re-subscribes to what it tracks after a reconnection; the
        // listener's resync covers what was subscribed while disconnected.
        let _resubscribe = subscriber.manage_subscriptions();
        let reconnected = Arc::new(AtomicBool::new(false));
        let flag = reconnected.clone();
        let _reconnects = client.on_reconnect(move |_| {
            flag.store(true, Ordering::Relaxed);
            async { Ok::<(), fred::error::Error>(()) }
        });
        Ok(Rc::new(RedisPresence {
            node,
            client,
            subscriber,
            clock,
            told: RefCell::default(),
            resync_due: Cell::new(false),
            owed: RefCell::default(),
            reconnected,
        }))
    }

    /// Reads answer at once while Redis is known to be lost; otherwise
    /// (connected, or still connecting at start) they wait, bounded.
    fn reachable(&self) -> Result<(), RedisError> {
        if self.node.lost.load(Ordering::Relaxed) && !self.client.is_connected() {
            Err(RedisError::Disconnected)
        } else {
            Ok(())
        }
    }

    /// Writes this node's view of `user` and tells the watchers.
    pub async fn publish(&self, user: &str, snapshot: &Snapshot, changed_ms: u64) {
        let view = View::of(snapshot, changed_ms, self.clock.now_ms());
        let result = self.write(&[(user.to_owned(), view)], true).await;
        match &result {
            Ok(_) => self.settle(user, changed_ms),
            Err(_) => self.owe(user, snapshot, changed_ms),
        }
        self.note(result.map(|_| ()));
    }

    /// Writes this node's view of `user` without telling the watchers (a
    /// change whose announcement the home coalesces).
    pub async fn store(&self, user: &str, snapshot: &Snapshot, changed_ms: u64) {
        let view = View::of(snapshot, changed_ms, self.clock.now_ms());
        let result = self.write(&[(user.to_owned(), view)], false).await;
        if result.is_err() {
            self.owe(user, snapshot, changed_ms);
        }
        self.note(result.map(|_| ()));
    }

    /// Remembers that `user`'s change at `changed_ms` has not reached Redis
    /// (unless a later one is already owed).
    fn owe(&self, user: &str, snapshot: &Snapshot, changed_ms: u64) {
        let mut owed = self.owed.borrow_mut();
        match owed.get_mut(user) {
            Some(entry) if entry.1 > changed_ms => {}
            Some(entry) => *entry = (snapshot.clone(), changed_ms),
            None => {
                owed.insert(user.to_owned(), (snapshot.clone(), changed_ms));
            }
        }
    }

    /// `user`'s change at `changed_ms` was written and announced: nothing
    /// older is owed any more.
    fn settle(&self, user: &str, changed_ms: u64) {
        let mut owed = self.owed.borrow_mut();
        if owed.get(user).is_some_and(|entry| entry.1 <= changed_ms) {
            owed.remove(user);
        }
    }

    /// `users` (the online ones) plus every owed user not among them (gone
    /// offline while Redis was lost), with the view owed for them.
    fn with_owed(&self, mut users: Vec<(UserId, Snapshot, u64)>) -> Vec<(UserId, Snapshot, u64)> {
        let owed = self.owed.borrow();
        if owed.is_empty() {
            return users;
        }
        let online: std::collections::HashSet<UserId> =
            users.iter().map(|(user, _, _)| user.clone()).collect();
        let offline = owed
            .iter()
            .filter(|(user, _)| !online.contains(*user))
            .map(|(user, (snapshot, changed))| (user.clone(), snapshot.clone(), *changed));
        users.extend(offline);
        users
    }

    /// Rewrites this node's views of `users` (a heartbeat) and of the
    /// users whose change never reached Redis; publishes those and the
    /// users whose field Redis had lost, so that their watchers re-read.
    pub async fn refresh(&self, users: Vec<(UserId, Snapshot, u64)>) {
        let users = self.with_owed(users);
        let all = self.reconnected.swap(false, Ordering::Relaxed);
        let now = self.clock.now_ms();
        for chunk in users.chunks(BATCH) {
            let views: Vec<(UserId, View)> = chunk
                .iter()
                .map(|(user, snapshot, changed)| (user.clone(), View::of(snapshot, *changed, now)))
                .collect();
            let result = self.write(&views, false).await;
            let due: Vec<&(UserId, Snapshot, u64)> = match result {
                Ok(created) => {
                    let owed = self.owed.borrow();
                    let due = chunk.iter().zip(created);
                    due.filter_map(|(entry, new)| {
                        (all || new || owed.contains_key(&entry.0)).then_some(entry)
                    })
                    .collect()
                }
                Err(e) => {
                    chunk.iter().for_each(|(u, s, c)| self.owe(u, s, *c));
                    self.reconnected.fetch_or(all, Ordering::Relaxed);
                    return self.note(Err(e));
                }
            };
            let names: Vec<&UserId> = due.iter().map(|(user, _, _)| user).collect();
            let result = self.announce(&names).await;
            match &result {
                Ok(()) => {
                    for (user, _, changed) in &due {
                        self.settle(user, *changed);
                    }
                }
                Err(_) => {
                    due.iter().for_each(|(u, s, c)| self.owe(u, s, *c));
                    self.reconnected.fetch_or(all, Ordering::Relaxed);
                }
            }
            self.note(result);
        }
    }

    /// Writes run in their own tasks: they wait for a reconnection,
    /// bounded by [`COMMAND_TIMEOUT`].
    /// HSET + PEXPIRE (+ PUBLISH with `announce`) per user, one pipeline;
    /// per user whether its field was created (Redis had lost it).
    async fn write(
        &self,
        views: &[(UserId, View)],
        announce: bool,
    ) -> Result<Vec<bool>, RedisError> {
        let pipeline = self.client.pipeline();
        for (user, view) in views {
            let key = format!("{KEY_PREFIX}{user}");
            let field = (self.node.id.as_str(), view.encode());
            let _: () = pipeline.hset(key.as_str(), field).await?;
            let _: () = pipeline
                .pexpire(key.as_str(), LAST_SEEN_RETENTION_MS, None)
                .await?;
            if announce {
                let _: () = pipeline
                    .publish(format!("{CHANNEL_PREFIX}{user}"), "")
                    .await?;
            }
        }
        let values: Vec<Value> = bounded(pipeline.all()).await?;
        let per_user = if announce { 3 } else { 2 };
        let created = values
            .chunks(per_user)
            .map(|replies| replies.first().and_then(Value::as_u64) == Some(1))
            .collect();
        Ok(created)
    }

    async fn announce(&self, users: &[&UserId]) -> Result<(), RedisError> {
        if users.is_empty() {
            return Ok(());
        }
        let pipeline = self.client.pipeline();
        for user in users {
            let _: () = pipeline
                .publish(format!("{CHANNEL_PREFIX}{user}"), "")
                .await?;
        }
        let _: Vec<Value> = bounded(pipeline.all()).await?;
        Ok(())
    }

    /// The presence of `users`, merged from every node's view; Offline for
    /// all of them when Redis cannot answer (presence degrades).
    pub async fn read(&self, users: &[UserId]) -> Vec<Snapshot> {
        match self.try_read(users).await {
            Ok(snapshots) => snapshots,
            Err(e) => {
                self.note(Err(e));
                vec![Snapshot::offline(); users.len()]
            }
        }
    }

    async fn try_read(&self, users: &[UserId]) -> Result<Vec<Snapshot>, RedisError> {
        let mut out = Vec::with_capacity(users.len());
        let (now, stale) = (self.clock.now_ms(), self.node.stale_after_ms());
        for chunk in users.chunks(BATCH) {
            self.reachable()?;
            let pipeline = self.client.pipeline();
            for user in chunk {
                let _: () = pipeline.hgetall(format!("{KEY_PREFIX}{user}")).await?;
            }
            let hashes: Vec<Value> = bounded(pipeline.all()).await?;
            for hash in hashes {
                let fields: HashMap<String, String> = hash.convert().unwrap_or_default();
                let views = fields.values().filter_map(|v| View::decode(v));
                out.push(merge(views, now, stale));
            }
        }
        out.resize(users.len(), Snapshot::offline());
        Ok(out)
    }

    /// Subscribes to the change channels of `users`.
    pub async fn watch(&self, users: &[UserId]) {
        if users.is_empty() {
            return;
        }
        let channels: Vec<String> = users
            .iter()
            .map(|u| format!("{CHANNEL_PREFIX}{u}"))
            .collect();
        let result = bounded(self.subscriber.subscribe(channels)).await;
        self.note(result);
    }

    /// Ends the subscriptions to the change channels of `users`.
    pub async fn unwatch(&self, users: &[UserId]) {
        if users.is_empty() {
            return;
        }
        {
            let mut told = self.told.borrow_mut();
            for user in users {
                told.remove(user);
            }
        }
        let channels: Vec<String> = users
            .iter()
            .map(|u| format!("{CHANNEL_PREFIX}{u}"))
            .collect();
        if self.subscriber.is_connected() {
            let result = bounded(self.subscriber.unsubscribe(channels)).await;
            self.note(result);
        }
    }

    /// A failed call is expected while Redis is lost: the outage itself is
    /// logged once (by the clients' error events); this is debug detail.
    fn note(&self, result: Result<(), RedisError>) {
        if let Err(e) = result {
            tracing::debug!(error = %e, "presence: a Redis call failed");
        }
    }

    /// The heartbeat: every `presence_heartbeat_ms`, this shard's online
    /// users are rewritten into Redis.
    async fn heartbeat(self: Rc<Self>, presence: Rc<LocalPresence>) {
        let mut was_healthy = true;
        loop {
            self.clock.sleep(self.node.heartbeat).await;
            self.refresh(presence.online_views()).await;
            // Back from an outage (or a re-read failed): subscribe again
            // and re-read, whatever the clients' own events said.
            let healthy = self.client.is_connected() && self.subscriber.is_connected();
            let back = healthy && !was_healthy;
            was_healthy = healthy;
            if self.resync_due.replace(false) || back {
                presence.resync();
            }
        }
    }

    /// Turns change messages into `Changed` for this shard's watchers, and
    /// reconnections (and lost messages) into a full re-read.
    async fn listen(self: Rc<Self>, shard: usize, mesh: Arc<Mesh>) {
        let mut messages = self.subscriber.message_rx();
        let mut reconnects = self.subscriber.reconnect_rx();
        loop {
            let users = tokio::select! {
                message = messages.recv() => match message {
                    Ok(first) => drain(first, &mut messages),
                    Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => {
                        // fred replaces its event channels when it
                        // reconnects: listen to the new ones, re-read all.
                        self.clock.sleep(Duration::from_millis(10)).await;
                        messages = self.subscriber.message_rx();
                        None
                    }
                },
                reconnect = reconnects.recv() => match reconnect {
                    Ok(_) | Err(RecvError::Lagged(_)) => None,
                    Err(RecvError::Closed) => {
                        self.clock.sleep(Duration::from_millis(10)).await;
                        reconnects = self.subscriber.reconnect_rx();
                        None
                    }
                },
            };
            match users {
                Some(users) => self.forward(&users, shard, &mesh).await,
                None => mesh.to_presence(shard, Msg::Resync).await,
            }
        }
    }

    /// Reads `users` and hands each to this shard's watchers.
    /// Nothing when Redis cannot answer (watchers keep what they have).
    pub async fn forward(&self, users: &[UserId], shard: usize, mesh: &Mesh) {
        let snapshots = match self.try_read(users).await {
            Ok(snapshots) => snapshots,
            Err(e) => {
                self.resync_due.set(true);
                return self.note(Err(e));
            }
        };
        for (subject, snapshot) in users.iter().cloned().zip(snapshots) {
            if self.tell(&subject, &snapshot) {
                mesh.to_presence(shard, Msg::Changed { subject, snapshot })
                    .await;
            }
        }
    }

    /// Records that watchers of `subject` learn `snapshot`; false if they
    /// already know the same presence.
    pub fn tell(&self, subject: &str, snapshot: &Snapshot) -> bool {
        let mut told = self.told.borrow_mut();
        let key = |s: &Snapshot| (s.state, s.status_text.clone(), s.last_seen_ms);
        if told.get(subject).is_some_and(|t| key(t) == key(snapshot)) {
            return false;
        }
        told.insert(subject.to_owned(), snapshot.clone());
        true
    }

    /// Re-subscribes to every channel of `users` and re-reads them (after
    /// a reconnection, or when change messages were lost).
    pub async fn resync(&self, users: Vec<UserId>, shard: usize, mesh: &Mesh) {
        self.watch(&users).await;
        for chunk in users.chunks(BATCH) {
            self.forward(chunk, shard, mesh).await;
        }
    }
}

/// The users named by `first` and every message already queued after it
/// (deduplicated); `None` when messages were lost (re-read everything).
fn drain(
    first: fred::types::Message,
    messages: &mut tokio::sync::broadcast::Receiver<fred::types::Message>,
) -> Option<Vec<UserId>> {
    let mut users: Vec<UserId> = Vec::new();
    let mut next = Some(first);
    while let Some(message) = next {
        if let Some(user) = message.channel.strip_prefix(CHANNEL_PREFIX) {
            if !users.iter().any(|u| u == user) {
                users.push(user.to_owned());
            }
        }
        next = match messages.try_recv() {
            Ok(message) if users.len() < BATCH => Some(message),
            Ok(message) => {
                // Full batch: keep this one for the next round.
                let _ = message;
                return None;
            }
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => return None,
            Err(_) => None,
        };
    }
    Some(users)
}

/// Starts one shard's Redis tasks: the heartbeat and the change listener.
pub fn spawn_tasks(
    redis: Rc<RedisPresence>,
    presence: Rc<LocalPresence>,
    shard: usize,
    mesh: Arc<Mesh>,
) {
    tokio::task::spawn_local(redis.clone().heartbeat(presence));
    tokio::task::spawn_local(redis.listen(shard, mesh));
}

/// `call` within [`COMMAND_TIMEOUT`].
async fn bounded<T>(
    call: impl std::future::Future<Output = Result<T, fred::error::Error>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(RedisError::Timeout),
    }
}

/// The outage log lines of one client (once per outage per node).
trait Watchable {
    fn log_outages(&self, node: Arc<RedisNode>);
}

impl<C: EventInterface> Watchable for C {
    fn log_outages(&self, node: Arc<RedisNode>) {
        let lost = node.lost.clone();
        let _errors = self.on_error(move |(error, _)| {
            if !lost.swap(true, Ordering::Relaxed) {
                tracing::warn!(%error, "presence: Redis is unreachable; everyone shows as offline and presence changes are not shared until it is back (messages are not affected); reconnecting with backoff");
            }
            async { Ok::<(), fred::error::Error>(()) }
        });
        let lost = node.lost.clone();
        let _reconnects = self.on_reconnect(move |server| {
            if lost.swap(false, Ordering::Relaxed) {
                tracing::warn!(%server, "presence: Redis is reachable again; presence is rebuilt within one heartbeat");
            }
            async { Ok::<(), fred::error::Error>(()) }
        });
    }
}
