//! Starting and stopping a server: validates the configuration, opens the
//! store and TLS identity, binds one `SO_REUSEPORT` socket per shard and runs
//! each shard on a named thread with a current-thread tokio runtime.
//!
//! Shutdown is two-phase: every shard stops accepting and drains its
//! connections (their in-flight requests are answered), then all shards meet
//! at a barrier so no owner stops while another shard still waits on it;
//! finally the store is persisted.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use quinn::{Endpoint, TokioRuntime};
use tokio::sync::{watch, Barrier};
use tokio::task::{spawn_local, JoinSet, LocalSet};

use super::cid::shard_endpoint_config_with_reset;
use super::clock::Clock;
use super::config::{ConfigError, ServerConfig};
use super::connection;
use super::delivery::Push;
use super::links::LinkRequests;
use super::mesh::{Control, Mesh, ShardInbox};
use super::owner;
use super::presence;
use super::ratelimit::{Admission, ServerLimits};
use super::shard::{ServerStats, Services, ShardCtx};
use super::socket::{
    bind_shard_sockets, shard_socket, ForwardingChannels, ForwardingStats, ShardSocketParts,
    DEFAULT_INBOX_CAPACITY,
};
use super::tls::{
    load_or_create_identity, load_or_create_reset_key, server_config, ServerTransportTuning,
    TlsError,
};
use tern_proto::close;
use tern_store::blob::BlobStore;
use tern_store::Store;
use tern_store_fjall::{FjallOptions, FjallStore, OpenError};

/// The exit code of a server whose store failed (`EX_TEMPFAIL`).
pub const EXIT_STORE_FAILED: i32 = 75;

/// The store's poison hook of `tern serve`: log, then exit at once, without
/// running destructors, so no buffered journal write is flushed after the
/// failure (a write answered with an error must not become durable later).
/// On restart, fjall's recovery drops a torn last batch.
fn exit_on_poison() -> tern_store::PoisonHook {
    Arc::new(|reason: &str| {
        tracing::error!(
            reason,
            "the store failed a write or a journal sync; exiting with code {EXIT_STORE_FAILED} \
             so that a supervisor restarts tern (nothing acknowledged is lost): free disk space \
             or fix the disk first"
        );
        eprintln!("tern: store failure ({reason}); exiting with code {EXIT_STORE_FAILED}");
        std::process::exit(EXIT_STORE_FAILED);
    })
}

/// Why the server could not start. Nothing is left bound after an error.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store: {0}")]
    Store(#[from] OpenError),
    #[error("TLS identity: {0}")]
    Tls(#[from] TlsError),
    /// `port` names the setting: `listen` (UDP, clients) or `admin_addr`
    /// (TCP, metrics and probes).
    #[error("cannot bind {port} {addr}: {source}; is another process using the port?")]
    Bind {
        port: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("shard {shard} failed to start: {message}")]
    Shard { shard: usize, message: String },
    #[error(transparent)]
    Blobs(#[from] crate::blob_backend::OpenBlobsError),
    #[error("cannot start the admin port's thread: {0}")]
    Admin(std::io::Error),
    #[error("cannot join the cluster: {0}")]
    Cluster(#[from] crate::node::JoinError),
    #[error(transparent)]
    Scylla(#[from] crate::scylla_runtime::ScyllaStartError),
}

/// A running server. Dropping it without [`ServerHandle::shutdown`] stops
/// the shards too but does not wait for them.
pub struct ServerHandle {
    pub local_addr: SocketAddr,
    /// The admin HTTP port's address (`admin_addr`), once bound.
    pub admin_addr: Option<SocketAddr>,
    pub fingerprint: String,
    pub shards: usize,
    pub stats: Arc<ServerStats>,
    pub forwarding_stats: Arc<ForwardingStats>,
    mesh: Arc<Mesh>,
    store: Arc<dyn Store>,
    shutdown: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    /// The admin port's thread and its stop signal: it outlives the
    /// shards' drain, so `/readyz` answers 503 during it.
    admin: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    /// The ScyllaDB driver's runtime (`store = "scylla"`), kept for the
    /// server's life; last, so it stops after everything else here.
    store_runtime: Option<crate::scylla_runtime::StoreRuntime>,
}

impl ServerHandle {
    /// The shards holding an authenticated connection of `user` now
    /// (tests place a subscriber and its subject on different shards).
    pub fn shards_of(&self, user: &str) -> Vec<usize> {
        let all = self.mesh.all_shards();
        self.mesh.locations.shards_of([user], all).iter().collect()
    }

    /// The push notification counters (`crate::push`).
    pub fn push_stats(&self) -> Option<&crate::push::PushStats> {
        self.mesh.pusher.get().map(crate::push::Pusher::stats)
    }

    /// Stops accepting, drains connections, joins the shards, persists the
    /// store. A cluster node leaves the membership first, so the other
    /// nodes take its conversations over at once.
    pub fn shutdown(mut self) {
        self.leave_cluster();
        let _ = self.shutdown.send(true);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some((stop, thread)) = self.admin.take() {
            let _ = stop.send(true);
            let _ = thread.join();
        }
        // The pusher holds the store too: it must be gone before a restart
        // opens the same directory.
        if let Some(pusher) = self.mesh.pusher.get() {
            pusher.stop();
        }
        persist_blocking(self.store.as_ref());
    }
}

impl ServerHandle {
    /// Leaves the cluster (nothing on a single node); idempotent.
    pub fn leave_cluster(&self) {
        if let Some(node) = self.mesh.cluster.get() {
            node.leave();
        }
    }

    /// This server's node of a cluster, if it is one.
    pub fn cluster_node(&self) -> Option<&Arc<crate::node::ClusterNode>> {
        self.mesh.cluster.get()
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.leave_cluster();
        let _ = self.shutdown.send(true);
        if let Some((stop, _)) = &self.admin {
            let _ = stop.send(true);
        }
    }
}

fn persist_blocking(store: &dyn Store) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    if let Err(e) = rt.block_on(store.persist()) {
        tracing::error!(error = %e, "final persist failed");
    }
}

/// Everything one shard thread needs, moved into it.
struct ShardSetup {
    id: usize,
    limits: Arc<ServerLimits>,
    links: Arc<LinkRequests>,
    /// This node in the Redis presence backend (`None`: in-process).
    presence_node: Option<Arc<presence::redis::RedisNode>>,
    blobs: Arc<dyn BlobStore>,
    parts: ShardSocketParts,
    socket: std::net::UdpSocket,
    inbox: ShardInbox,
    quic: quinn::ServerConfig,
    reset_key: Arc<dyn quinn::crypto::HmacKey>,
    mesh: Arc<Mesh>,
    services: Services,
    config: Arc<ServerConfig>,
    stats: Arc<ServerStats>,
    shutdown: watch::Receiver<bool>,
    barrier: Arc<Barrier>,
}

/// Validates `config`, opens its store (the embedded one in
/// `<data_dir>/store`, or ScyllaDB on its own runtime, see
/// `scylla_runtime`), then starts every shard; returns once all listen.
pub fn start(config: ServerConfig) -> Result<ServerHandle, StartError> {
    config.validate()?;
    config.check_cluster_shares_stores()?;
    // Before the store opens: a file a setting names is part of the setting.
    let files = SettingFiles::load(&config)?;
    if let Some(scylla) = config.scylla_config() {
        let limit = Duration::from_secs(config.scylla_open_timeout_secs);
        let (store, runtime) = crate::scylla_runtime::open(&scylla, limit)?;
        let clock = Clock::system();
        let mut handle = start_checked(config, files, Services { store, clock })?;
        handle.store_runtime = Some(runtime);
        return Ok(handle);
    }
    create_data_dir(&config)?;
    let options = FjallOptions {
        sync_interval: Duration::from_micros(config.journal_sync_interval_us),
        on_poison: config.exit_on_store_failure.then(exit_on_poison),
        tuning: config.store_tuning(),
    };
    let store = Arc::new(FjallStore::open_with(
        &config.data_dir.join("store"),
        options,
    )?);
    let clock = Clock::system();
    start_checked(config, files, Services { store, clock })
}

/// What the files named by the settings hold, read with the settings and
/// before anything is opened or bound: the cluster CA's certificate for
/// this node, and a shared TLS identity (`tls_dir`).
struct SettingFiles {
    cluster_tls: Option<crate::cluster::ClusterTls>,
    identity: Option<crate::tls::ServerIdentity>,
}

impl SettingFiles {
    fn load(config: &ServerConfig) -> Result<SettingFiles, StartError> {
        let cluster_tls = config
            .cluster()
            .map(|cluster| crate::node::load_tls(&cluster))
            .transpose()?;
        let identity = config
            .tls_dir
            .as_deref()
            .map(crate::tls::load_identity)
            .transpose()?;
        Ok(SettingFiles {
            cluster_tls,
            identity,
        })
    }
}

/// Like [`start`], on services the caller made: another store backend, a
/// fault-injecting store or a manual clock in tests. The data directory
/// still holds the TLS identity.
pub fn start_with(config: ServerConfig, services: Services) -> Result<ServerHandle, StartError> {
    config.validate()?;
    let files = SettingFiles::load(&config)?;
    start_checked(config, files, services)
}

/// [`start_with`] once the settings and their files are checked.
fn start_checked(
    config: ServerConfig,
    files: SettingFiles,
    services: Services,
) -> Result<ServerHandle, StartError> {
    let store = services.store.clone();
    create_data_dir(&config)?;
    let data_dir = config.data_dir.clone();
    let identity = match files.identity {
        Some(identity) => identity,
        None => load_or_create_identity(&data_dir)?,
    };
    let blobs = crate::blob_backend::open(&config.blob_store, &data_dir)?;
    let reset_key = load_or_create_reset_key(&data_dir)?;
    let tuning = ServerTransportTuning {
        max_idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        ..ServerTransportTuning::default()
    };
    let quic = server_config(&identity, &tuning)?;
    let shards = config.effective_shards();
    let sockets = bind_shard_sockets(config.listen, shards).map_err(|source| StartError::Bind {
        port: "listen",
        addr: config.listen,
        source,
    })?;
    let local_addr = sockets
        .first()
        .and_then(|s| s.local_addr().ok())
        .unwrap_or(config.listen);
    let admin_listener = config
        .admin_addr
        .map(|addr| {
            crate::admin::bind(addr).map_err(|source| StartError::Bind {
                port: "admin_addr",
                addr,
                source,
            })
        })
        .transpose()?;
    let admin_addr = admin_listener.as_ref().and_then(|l| l.local_addr().ok());
    let datagrams =
        ForwardingChannels::new(shards, DEFAULT_INBOX_CAPACITY).map_err(|e| StartError::Shard {
            shard: 0,
            message: e.to_string(),
        })?;
    let forwarding_stats = datagrams.stats();
    let (mesh, inboxes) = Mesh::new(shards);
    let pusher = crate::push::Pusher::start(&config.push, store.clone(), mesh.live.clone())
        .map_err(|e| StartError::Shard {
            shard: 0,
            message: format!("cannot start the pusher thread: {e}"),
        })?;
    let _ = mesh.pusher.set(pusher);
    let links = Arc::new(LinkRequests::default());
    if let (Some(cluster), Some(tls)) = (config.cluster(), files.cluster_tls) {
        let shared = crate::node::Shared {
            mesh: mesh.clone(),
            links: links.clone(),
            clock: services.clock.clone(),
            max_frame_len: config.max_frame_len,
        };
        let node = crate::node::ClusterNode::join(&cluster, tls, shared)?;
        let _ = mesh.cluster.set(node);
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let stats = Arc::new(ServerStats::default());
    let limits = Arc::new(ServerLimits::new(&config));
    let presence_node = presence::redis::RedisNode::new(&config);
    let config = Arc::new(config);
    let barrier = Arc::new(Barrier::new(shards));
    let setups = datagrams
        .into_parts()
        .into_iter()
        .zip(sockets)
        .zip(inboxes)
        .enumerate()
        .map(|(id, ((parts, socket), inbox))| ShardSetup {
            id,
            parts,
            socket,
            inbox,
            quic: quic.clone(),
            reset_key: reset_key.clone(),
            mesh: mesh.clone(),
            services: services.clone(),
            config: config.clone(),
            stats: stats.clone(),
            limits: limits.clone(),
            links: links.clone(),
            presence_node: presence_node.clone(),
            blobs: blobs.clone(),
            shutdown: shutdown_rx.clone(),
            barrier: barrier.clone(),
        });
    let threads = spawn_shards(setups.collect())?;
    let mut admin = None;
    if let Some(listener) = admin_listener {
        let (stop, stopped) = watch::channel(false);
        let thread = crate::admin::spawn(crate::admin::AdminSetup {
            listener,
            stats: stats.clone(),
            forwarding: forwarding_stats.clone(),
            mesh: mesh.clone(),
            store: store.clone(),
            redis: presence_node,
            draining: shutdown_rx,
            stop: stopped,
        });
        // On an error the shards stop when `shutdown_tx` drops.
        admin = Some((stop, thread.map_err(StartError::Admin)?));
        if let Some(addr) = admin_addr {
            tracing::info!(%addr, "admin port serving /metrics, /healthz, /readyz");
        }
    }
    tracing::info!(%local_addr, shards, fingerprint = %identity.fingerprint, "tern listening");
    Ok(ServerHandle {
        local_addr,
        admin_addr,
        fingerprint: identity.fingerprint,
        shards,
        stats,
        forwarding_stats,
        mesh,
        store,
        shutdown: shutdown_tx,
        threads,
        admin,
        store_runtime: None,
    })
}

fn create_data_dir(config: &ServerConfig) -> Result<(), StartError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })
}

fn spawn_shards(setups: Vec<ShardSetup>) -> Result<Vec<JoinHandle<()>>, StartError> {
    let mut threads = Vec::with_capacity(setups.len());
    let mut ready = Vec::with_capacity(setups.len());
    for setup in setups {
        let id = setup.id;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("tern-shard-{id}"))
            .spawn(move || run_shard(setup, ready_tx))
            .map_err(|e| StartError::Shard {
                shard: id,
                message: e.to_string(),
            })?;
        threads.push(thread);
        ready.push((id, ready_rx));
    }
    for (id, rx) in ready {
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(message)) => return Err(StartError::Shard { shard: id, message }),
            Err(_) => {
                return Err(StartError::Shard {
                    shard: id,
                    message: "thread exited during start".into(),
                })
            }
        }
    }
    Ok(threads)
}

/// Threads of one shard's blocking pool, where the embedded store's calls
/// run (`FjallStore::off`): enough for the owner's batched appends, the
/// acks and the reads of one shard waiting on the store at once, bounded
/// so a store that stalls cannot make a shard spawn hundreds of threads.
const STORE_THREADS_PER_SHARD: usize = 8;

fn run_shard(setup: ShardSetup, ready: std::sync::mpsc::Sender<Result<(), String>>) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(STORE_THREADS_PER_SHARD)
        .thread_name(format!("tern-store-{}", setup.id))
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    LocalSet::new().block_on(&rt, shard_main(setup, ready));
}

async fn shard_main(setup: ShardSetup, ready: std::sync::mpsc::Sender<Result<(), String>>) {
    let endpoint = match shard_endpoint(
        setup.id,
        setup.parts,
        setup.socket,
        setup.quic,
        setup.reset_key,
    ) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let ctx = Rc::new(ShardCtx::new(
        setup.id,
        setup.mesh,
        setup.services,
        setup.config,
        setup.stats,
        setup.limits,
        setup.links,
        setup.presence_node,
        setup.blobs,
    ));
    let presence = ctx.local_presence();
    spawn_local(presence::local::run(
        presence,
        ctx.clone(),
        setup.inbox.presence,
    ));
    spawn_local(owner::run(ctx.clone(), setup.inbox.owner));
    spawn_local(push_loop(ctx.clone(), setup.inbox.push));
    spawn_local(control_loop(ctx.clone(), setup.inbox.control));
    if setup.id == 0 {
        spawn_local(sweep_loop(ctx.clone(), setup.shutdown.clone()));
        spawn_local(erase_loop(ctx.clone(), setup.shutdown.clone()));
    }
    let mut connections = accept_loop(&ctx, &endpoint, setup.shutdown).await;
    let drain = Duration::from_secs(ctx.config.drain_timeout_secs + 1);
    let _ = tokio::time::timeout(drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    setup.barrier.wait().await;
    endpoint.close(close::SHUTTING_DOWN.into(), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

fn shard_endpoint(
    id: usize,
    parts: ShardSocketParts,
    socket: std::net::UdpSocket,
    quic: quinn::ServerConfig,
    reset_key: Arc<dyn quinn::crypto::HmacKey>,
) -> Result<Endpoint, String> {
    let shard_id = u8::try_from(id).map_err(|_| format!("shard id {id} exceeds 255"))?;
    let socket = shard_socket(parts, socket).map_err(|e| e.to_string())?;
    Endpoint::new_with_abstract_socket(
        shard_endpoint_config_with_reset(shard_id, reset_key),
        Some(quic),
        socket,
        Arc::new(TokioRuntime),
    )
    .map_err(|e| e.to_string())
}

async fn accept_loop(
    ctx: &Rc<ShardCtx>,
    endpoint: &Endpoint,
    mut shutdown: watch::Receiver<bool>,
) -> JoinSet<()> {
    let mut connections = JoinSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let Some(incoming) = screen(ctx, incoming) else { continue };
                ServerStats::add(&ctx.stats.connections_accepted, 1);
                connections.spawn_local(connection::serve(ctx.clone(), incoming, shutdown.clone()));
            }
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    endpoint.set_server_config(None);
    connections
}

/// Applies `connections_per_address_*` to a connection attempt before any
/// TLS work: the attempt to go on with, or None once it was answered with a
/// QUIC Retry (address validation) or refused (`CONNECTION_REFUSED`).
fn screen(ctx: &ShardCtx, incoming: quinn::Incoming) -> Option<quinn::Incoming> {
    let address = incoming.remote_address().ip();
    let validated = incoming.remote_address_validated();
    match ctx
        .limits
        .connection_attempt(address, validated, ctx.clock.now_ms())
    {
        Admission::Admit => return Some(incoming),
        Admission::Validate if incoming.may_retry() => {
            ServerStats::add(&ctx.stats.connections_validated, 1);
            if let Err(e) = incoming.retry() {
                e.into_incoming().refuse();
            }
            return None;
        }
        Admission::Validate | Admission::Refuse => incoming.refuse(),
    }
    ServerStats::add(&ctx.stats.connections_refused, 1);
    tracing::debug!(%address, "connection attempt refused: too many from this address");
    None
}

/// Delivers the pushes other shards (or this one) hand to this shard.
async fn push_loop(ctx: Rc<ShardCtx>, mut inbox: tokio::sync::mpsc::Receiver<Push>) {
    let mut batch = Vec::with_capacity(256);
    while inbox.recv_many(&mut batch, 256).await > 0 {
        let sessions = ctx.sessions.borrow();
        for push in batch.drain(..) {
            let result = match &push {
                Push::Devices(fanout) => sessions.deliver(fanout),
                Push::Ephemeral(fanout) => {
                    let (result, datagrams) = sessions.deliver_ephemeral(fanout);
                    ServerStats::add(&ctx.stats.datagrams_sent, datagrams);
                    result
                }
                Push::Users { users, frame } => sessions.deliver_to_users(users, frame),
            };
            ServerStats::add(&ctx.stats.deliveries, result.delivered);
            ServerStats::add(&ctx.stats.closed_slow, result.closed_slow);
        }
    }
}

async fn control_loop(ctx: Rc<ShardCtx>, mut inbox: tokio::sync::mpsc::Receiver<Control>) {
    while let Some(msg) = inbox.recv().await {
        match msg {
            Control::CloseDevice { user, device } => {
                ctx.sessions.borrow().close_device(&user, device)
            }
        }
    }
}

/// Erases purged ciphertext from the store's files every
/// `purge_erase_interval_secs` (runs on shard 0). `erase_purged` returns at
/// once when nothing was purged since the last erasure, so an idle server
/// never compacts for it; a burst of purges shares one erasure.
async fn erase_loop(ctx: Rc<ShardCtx>, mut shutdown: watch::Receiver<bool>) {
    let period = Duration::from_secs(ctx.config.purge_erase_interval_secs);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if let Err(error) = ctx.store.erase_purged().await {
            tracing::warn!(%error, "could not erase purged ciphertext from the store's files; the next erasure tries again");
        }
    }
}

/// Deletes expired ciphertext every `sweep_interval_secs` (runs on shard 0).
async fn sweep_loop(ctx: Rc<ShardCtx>, mut shutdown: watch::Receiver<bool>) {
    const SWEEP_BATCH: usize = 10_000;
    let mut tick = tokio::time::interval(Duration::from_secs(ctx.config.sweep_interval_secs));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        loop {
            match ctx
                .store
                .sweep_expired(ctx.clock.now_ms(), SWEEP_BATCH)
                .await
            {
                Ok(n) => {
                    ServerStats::add(&ctx.stats.expired_swept, n as u64);
                    if n < SWEEP_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "expiry sweep failed; will retry");
                    break;
                }
            }
        }
        match super::blobs::sweep_abandoned(&ctx).await {
            Ok(0) => {}
            Ok(n) => {
                ServerStats::add(&ctx.stats.blobs_swept, n);
                tracing::info!(uploads = n, "abandoned uploads swept");
            }
            Err(e) => tracing::warn!(error = %e, "sweeping abandoned uploads failed; will retry"),
        }
        match super::blobs::sweep_expired(&ctx).await {
            Ok(0) => {}
            Ok(n) => {
                ServerStats::add(&ctx.stats.blobs_swept, n);
                tracing::info!(blobs = n, "expired attachments swept");
            }
            Err(e) => tracing::warn!(error = %e, "sweeping expired attachments failed; will retry"),
        }
    }
}
