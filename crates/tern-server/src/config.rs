//! Typed server configuration: defaults, TOML file loading, `TERN_*`
//! environment overrides, and validation before any port is bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything `tern serve` can be told. Every field has a documented default,
/// so an empty TOML file (or none) is a valid configuration.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// UDP address to listen on. Default `127.0.0.1:4433`; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Directory for the embedded store and the TLS identity. Default `./tern-data`.
    pub data_dir: PathBuf,
    /// Which store to open: `fjall` (the embedded store in
    /// `<data_dir>/store`, one process; the default) or `scylla` (a
    /// ScyllaDB cluster at `scylla_nodes`, migrated by `tern migrate`,
    /// shared by the nodes of a cluster). See `store_config`.
    pub store: crate::store_config::StoreBackend,
    /// ScyllaDB contact points, `host:port` (the CQL port; 9042 when
    /// omitted); the driver discovers the other nodes. Default empty;
    /// required with `store = "scylla"`. `TERN_SCYLLA_NODES` takes them
    /// comma-separated, as `tern migrate` does.
    pub scylla_nodes: Vec<String>,
    /// The keyspace `tern migrate` created. Default `tern`.
    pub scylla_keyspace: String,
    /// Consistency of every ScyllaDB read and write (`ONE`, `LOCAL_ONE`,
    /// `QUORUM`, `LOCAL_QUORUM`, `EACH_QUORUM`, `ALL`); lightweight
    /// transactions use `LOCAL_SERIAL` (`SERIAL` for the cluster-wide
    /// levels). Default `LOCAL_QUORUM`: with replication factor 3 a message
    /// is acknowledged once two replicas have it (deploy/README.md).
    pub scylla_consistency: tern_store_scylla::ScyllaConsistency,
    /// Client-side limit of one ScyllaDB request, retries included, ms;
    /// past it the store call fails with a retryable error. Default 5000,
    /// 100 to 600000.
    pub scylla_request_timeout_ms: u64,
    /// Limit of opening one connection to a ScyllaDB node, ms. Default
    /// 5000, 100 to 600000.
    pub scylla_connect_timeout_ms: u64,
    /// Limit of opening the ScyllaDB store at start (connecting, checking
    /// the schema version, preparing the statements), seconds; past it
    /// `tern serve` exits saying what to check. Default 30, 1 to 600.
    pub scylla_open_timeout_secs: u64,
    /// Number of shards (threads). Default 0 = one per available core.
    pub shards: usize,
    /// Largest accepted frame in bytes. Default 262144 (256 KiB).
    pub max_frame_len: usize,
    /// Seconds a started frame may take to arrive in full. Default 10.
    pub frame_read_timeout_secs: u64,
    /// Seconds a new connection has to authenticate. Default 10.
    pub auth_timeout_secs: u64,
    /// Seconds of silence before a connection is dropped. Default 60, at
    /// least 5. Clients ping every 25 s; under 50 s the server also pings
    /// every third of it (`tls::server_keep_alive`), so idle clients stay.
    pub idle_timeout_secs: u64,
    /// Default and maximum lifetime of undelivered ciphertext, seconds. Default 30 days.
    pub message_ttl_secs: u64,
    /// Lifetime of MLS handshake messages (Commits and Welcomes), seconds.
    /// Longer than `message_ttl_secs` so that a device offline past the
    /// message retention still finds the Commits it missed; one offline
    /// even longer rejoins by an external commit. Default 365 days.
    pub mls_handshake_ttl_secs: u64,
    /// Seconds between expiry sweeps. Default 60.
    pub sweep_interval_secs: u64,
    /// How long after sending a message its sender may still purge it
    /// (`PurgeMessage`, delete for everyone), seconds of server time; later
    /// is refused with `PurgeWindowClosed`. Default 48 hours, at least 1 s
    /// (a window longer than `message_ttl_secs` ends when the message
    /// expires).
    pub purge_window_secs: u64,
    /// Seconds between two erasures of purged ciphertext from the store's
    /// files (fjall: a flush and a major compaction of the messages
    /// keyspace, whose cost grows with the whole log, not with the purges;
    /// see `tern_store_fjall` `purge.rs`). A purge replaces the message with
    /// its tombstone at once; the old bytes leave the tables at the next
    /// erasure, which runs only if something was purged since the last one,
    /// so a stream of purges costs one compaction per interval, not one each.
    /// Default 600 (10 minutes), 1 to 86400.
    pub purge_erase_interval_secs: u64,
    /// Requests one connection may have in flight. Default 256.
    pub max_inflight_per_connection: usize,
    /// Frames queued for one connection before it is closed as too slow. Default 4096.
    pub outbound_queue_frames: usize,
    /// Bytes queued for one connection, answers and pushes alike, before a
    /// push closes it as too slow and its requests wait for it to read.
    /// Default 8388608 (8 MiB). A frame is always taken into an empty queue.
    pub outbound_queue_bytes: usize,
    /// Seconds a request waits for room in its connection's outbound queue
    /// (the client does not read) before the connection is closed as too
    /// slow. Default 10.
    pub slow_reader_timeout_secs: u64,
    /// Least time between the starts of two journal syncs, microseconds:
    /// under load each sync then covers more sends (group commit with a
    /// delay); a send after a quiet period is synced at once. Default 500;
    /// 0 syncs back to back; at most 100000. See docs/PERFORMANCE.md.
    pub journal_sync_interval_us: u64,
    /// Largest memtable of one store keyspace, MiB, before it is flushed:
    /// smaller ones make each flush's write stall shorter and use less
    /// memory, but make compaction fall behind sooner (docs/PERFORMANCE.md).
    /// Default 64 (1–1024).
    pub store_memtable_mib: u64,
    /// Largest store journal on disk, MiB: past it the keyspaces holding
    /// its oldest file are flushed. Default 512; at least 128.
    pub store_journal_mib: u64,
    /// The store's block cache, MiB. Default 32.
    pub store_cache_mib: u64,
    /// Exit (code 75) when the store fails a write or a journal sync, so
    /// that a supervisor restarts the server on the recovered journal
    /// instead of it refusing every write while looking healthy; nothing
    /// acknowledged is lost, and what failed never becomes durable. Default
    /// true. False keeps the process up with the store refusing writes (for
    /// embedding and tests).
    pub exit_on_store_failure: bool,
    /// Most messages a History page returns. Default 500.
    pub max_history_page: u32,
    /// Seconds shutdown waits for connections to drain. Default 5.
    pub drain_timeout_secs: u64,
    /// Prekey / KeyPackage claims one user may make of one target in a burst. Default 30.
    pub claim_burst: u32,
    /// Claims per minute refilled per (claimer, target). Default 30.
    pub claim_refill_per_minute: u32,
    /// Key claims of one user's keys, by anyone, in a burst (so fresh
    /// accounts cannot drain them). Default 100.
    pub claims_per_target_burst: u32,
    /// Claims per minute refilled per target user. Default 60.
    pub claims_per_target_per_minute: u32,
    /// Registrations from one source address (IPv6: one /64) in a burst. Default 20.
    pub registrations_per_address_burst: u32,
    /// Registrations per hour refilled per source address. Default 20.
    pub registrations_per_address_per_hour: u32,
    /// Device-link requests from one source address in a burst. Default 5.
    pub link_requests_per_address_burst: u32,
    /// Link requests per hour refilled per source address. Default 20.
    pub link_requests_per_address_per_hour: u32,
    /// Link requests naming one user, from anywhere, in a burst. Default 3.
    pub link_requests_per_user_burst: u32,
    /// Link requests per hour refilled per named user. Default 10.
    pub link_requests_per_user_per_hour: u32,
    /// Conversations one account may create in a burst (every create
    /// request that names existing users counts). Default 200.
    pub conversations_per_account_burst: u32,
    /// Creations per day refilled per account. Default 500.
    pub conversations_per_account_per_day: u32,
    /// Most group conversations one user may be in: adding a user who is
    /// in this many already (by CreateConversation, AddMembers or a
    /// Commit) is refused with `LimitExceeded`. Default 1000, at least 1.
    pub groups_per_user: u32,
    /// Invitations (Invite) one account may send in a burst. Default 50.
    pub invitations_per_account_burst: u32,
    /// Invitations per day refilled per account. Default 200.
    pub invitations_per_account_per_day: u32,
    /// Messages one account, all its devices together, may append in a
    /// burst (every Send, SendGroup, SendToDevices and Commit counts one,
    /// whatever the source address); past it `RateLimited` with
    /// `retry_after_ms`, nothing stored. Default 500, at least 1.
    pub sends_per_account_burst: u32,
    /// Sends per minute refilled per account. Default 6000 (100 a second:
    /// far above a person, or `tern-load chat`'s 5 a second per device;
    /// a flood is held to it). At least 1.
    pub sends_per_account_per_minute: u32,
    /// Messages one conversation, all its senders together, may take in a
    /// burst (the same requests). Default 1000, at least 1.
    pub sends_per_conversation_burst: u32,
    /// Sends per minute refilled per conversation. Default 12000 (200 a
    /// second). At least 1.
    pub sends_per_conversation_per_minute: u32,
    /// New QUIC connection attempts from one source address (IPv6: one
    /// /64) in a burst, checked before any TLS work. Past it the server
    /// asks for address validation (QUIC Retry), and a validated address
    /// gets as many again before its attempts are refused
    /// (`CONNECTION_REFUSED`), so forged source addresses cannot use up a
    /// real host's attempts. Default 200, at least 1.
    pub connections_per_address_burst: u32,
    /// Connection attempts per minute refilled per source address (each of
    /// the two buckets). Default 1800 (30 a second). At least 1.
    pub connections_per_address_per_minute: u32,
    /// Source networks that skip the per-address limits (registrations,
    /// link requests, connection attempts), e.g. `["127.0.0.0/8",
    /// "::1/128"]` (the default) for load tests on the same host. Empty:
    /// every address is limited. The per-account and per-conversation
    /// limits apply to every address.
    pub rate_limit_exempt: Vec<ipnet::IpNet>,
    /// A device's key pool size under which it is told to upload more. Default 10.
    pub low_keys_threshold: u32,
    /// Seconds a new device waits for a linked device to approve it. Default 120.
    pub link_timeout_secs: u64,
    /// Where presence lives: `local` (in this process, one node; the
    /// default) or `redis` (shared by the nodes of a cluster through
    /// `redis_url`; see `presence::redis`). Either way it is soft state.
    pub presence_backend: crate::presence::PresenceBackend,
    /// The Redis server of `presence_backend = "redis"`, as a URL
    /// (`redis://[user:password@]host:port[/db]`). Default
    /// `redis://127.0.0.1:6379`; checked before any port is bound.
    pub redis_url: String,
    /// Milliseconds between two rewrites of this node's online users into
    /// Redis: after Redis is flushed or restarted presence is back within
    /// one of them, and a node silent for three of them counts as gone (its
    /// users offline). Default 5000, 50 to 600000. Unused with `local`.
    pub presence_heartbeat_ms: u64,
    /// TURN relay URIs handed out with call credentials (`GetTurnCredentials`),
    /// e.g. `["turn:turn.example.org:3478", "turns:turn.example.org:5349"]`.
    /// Default empty: no relay, the request answers `NotConfigured`. Set
    /// together with `turn_secret`; at most 16 (see `realtime::turn`).
    pub turn_urls: Vec<String>,
    /// The secret shared with the relays (coturn `static-auth-secret`), the
    /// HMAC-SHA1 key of draft-uberti-behave-turn-rest-00. Default unset.
    pub turn_secret: Option<crate::realtime::turn::TurnSecret>,
    /// Seconds TURN credentials stay valid. Default 86400, 60 to 604800.
    pub turn_ttl_secs: u32,
    /// Largest attachment blob accepted on an upload stream, in ciphertext
    /// bytes (docs/PROTOCOL.md §4.12). Default 100 MiB (104857600), 1 KiB
    /// to 16 GiB.
    pub max_attachment_bytes: u64,
    /// Largest MLS handshake part (a Commit, Welcome or GroupInfo) a client
    /// may stage on a stage stream when it does not fit a frame
    /// (docs/PROTOCOL.md §4.12.1), in bytes. The server hands these parts
    /// out in frames (Deliver, History, GroupInfo), which clients accept up
    /// to 4 MiB, so at most 3 MiB. Default 2 MiB (2097152): the Welcome and
    /// GroupInfo of a 1,500-member group are about 264 KB, so groups of
    /// about 11,000 fit.
    pub max_mls_handshake_bytes: usize,
    /// Attachment bytes one account may hold on the server (complete blobs
    /// until they expire with the message retention, plus unfinished
    /// uploads); an upload past it is refused with `QuotaExceeded`
    /// (docs/PROTOCOL.md §4.12). Default 1 GiB (1073741824), at least
    /// `max_attachment_bytes`.
    pub upload_quota_bytes: u64,
    /// Attachment bytes one account may upload per second, all its devices
    /// together, refilling a bucket of `upload_burst_bytes`; past it an
    /// upload is refused with `RateLimited` and `retry_after_ms`
    /// (docs/PROTOCOL.md §6.1). Default 10 MiB/s (10485760), at least 1.
    pub upload_bytes_per_second: u64,
    /// The upload byte bucket's size. Default 300 MiB (314572800), at
    /// least `max_attachment_bytes` (so every allowed attachment can pass).
    pub upload_burst_bytes: u64,
    /// Push notifications for devices with no connection (the `[push]`
    /// table: gateway, coalescing, retries, queue; see `push::config` and
    /// docs/PROTOCOL.md §4.13).
    pub push: crate::push::PushConfig,
    /// Where attachment blobs live (the `[blob_store]` table: `backend =
    /// "fs"` in the data directory, the default, or `"s3"` with the bucket;
    /// see `blob_backend`).
    pub blob_store: crate::blob_backend::BlobStoreConfig,
    /// TCP address of the admin HTTP port: Prometheus metrics (`/metrics`),
    /// liveness (`/healthz`) and readiness (`/readyz`); see
    /// docs/OPERATING.md. Default unset: no admin port (nothing is bound
    /// that the operator did not ask for, and the metrics, which name
    /// traffic volumes, are not exposed by accident); the deploy files set
    /// `0.0.0.0:9464`. Port 0 picks a free port (`ServerHandle::admin_addr`).
    pub admin_addr: Option<SocketAddr>,
    /// OpenTelemetry collector that `tern serve` exports its `request` and
    /// `owner` spans to, over OTLP/HTTP with protobuf bodies: a base URL
    /// such as `http://collector:4318` (the traces path `/v1/traces` is
    /// added) or a full traces URL. Default unset: no export. Needs a
    /// `tern` built with the `otlp` feature (the default); see
    /// docs/OPERATING.md, Traces.
    pub otlp_endpoint: Option<String>,
    /// A directory holding the TLS identity to serve (`cert.der` and
    /// `key.der`, made by `tern tls-identity`), instead of the one the
    /// server makes in `data_dir`. Default unset. Nodes behind one address
    /// (a UDP load balancer, a Kubernetes Service) must share one identity:
    /// a client pins a single fingerprint.
    pub tls_dir: Option<PathBuf>,
    /// This node's id in a cluster (1 to 63 of `a-z`, `0-9`, `-`, e.g. a
    /// StatefulSet pod name `tern-0`; see `cluster::NodeId`). Default
    /// unset: one node owning every conversation. Set, the node joins the
    /// cluster whose membership is in `redis_url` (see `crate::node` and
    /// docs/OPERATING.md), and `presence_backend` must be `redis`.
    pub cluster_node_id: Option<String>,
    /// UDP address of the node-to-node endpoint. Default `0.0.0.0:4434`.
    pub cluster_listen: SocketAddr,
    /// Address the other nodes dial (registered in Redis). Default:
    /// `cluster_listen`, whose IP must then be a specific one; with port 0
    /// the bound port is registered.
    pub cluster_advertise: Option<SocketAddr>,
    /// The cluster CA's certificate (PEM), made by `tern cluster-ca`; every
    /// node issues its own certificate from it at start. Default
    /// `cluster/ca.pem`.
    pub cluster_ca_cert: PathBuf,
    /// The cluster CA's private key (PEM, keep it mode 0600). Default
    /// `cluster/ca.key`.
    pub cluster_ca_key: PathBuf,
    /// Lifetime of this node's membership key in Redis, ms: heartbeats every
    /// third of it, and a node that stops is out of the others' views (its
    /// conversations taken over) within it plus one heartbeat. Default 6000,
    /// 300 to 600000.
    pub cluster_node_ttl_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4433)),
            data_dir: PathBuf::from("tern-data"),
            store: crate::store_config::StoreBackend::Fjall,
            scylla_nodes: Vec::new(),
            scylla_keyspace: tern_store_scylla::config::DEFAULT_KEYSPACE.to_owned(),
            scylla_consistency: tern_store_scylla::ScyllaConsistency::LocalQuorum,
            scylla_request_timeout_ms: 5000,
            scylla_connect_timeout_ms: 5000,
            scylla_open_timeout_secs: 30,
            shards: 0,
            max_frame_len: 256 * 1024,
            frame_read_timeout_secs: 10,
            auth_timeout_secs: 10,
            idle_timeout_secs: 60,
            message_ttl_secs: 30 * 24 * 3600,
            mls_handshake_ttl_secs: 365 * 24 * 3600,
            sweep_interval_secs: 60,
            purge_window_secs: 48 * 3600,
            purge_erase_interval_secs: 600,
            max_inflight_per_connection: 256,
            outbound_queue_frames: 4096,
            outbound_queue_bytes: 8 * 1024 * 1024,
            slow_reader_timeout_secs: 10,
            journal_sync_interval_us: 500,
            store_memtable_mib: 64,
            store_journal_mib: 512,
            store_cache_mib: 32,
            exit_on_store_failure: true,
            max_history_page: tern_proto::limits::MAX_HISTORY_PAGE,
            drain_timeout_secs: 5,
            claim_burst: 30,
            claim_refill_per_minute: 30,
            claims_per_target_burst: 100,
            claims_per_target_per_minute: 60,
            registrations_per_address_burst: 20,
            registrations_per_address_per_hour: 20,
            link_requests_per_address_burst: 5,
            link_requests_per_address_per_hour: 20,
            link_requests_per_user_burst: 3,
            link_requests_per_user_per_hour: 10,
            conversations_per_account_burst: 200,
            conversations_per_account_per_day: 500,
            groups_per_user: 1000,
            invitations_per_account_burst: 50,
            invitations_per_account_per_day: 200,
            sends_per_account_burst: 500,
            sends_per_account_per_minute: 6000,
            sends_per_conversation_burst: 1000,
            sends_per_conversation_per_minute: 12_000,
            connections_per_address_burst: 200,
            connections_per_address_per_minute: 1800,
            rate_limit_exempt: loopback(),
            low_keys_threshold: 10,
            link_timeout_secs: 120,
            presence_backend: crate::presence::PresenceBackend::Local,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            presence_heartbeat_ms: 5000,
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl_secs: 86_400,
            max_attachment_bytes: 100 * 1024 * 1024,
            max_mls_handshake_bytes: 2 * 1024 * 1024,
            upload_quota_bytes: 1 << 30,
            upload_bytes_per_second: 10 * 1024 * 1024,
            upload_burst_bytes: 300 * 1024 * 1024,
            push: crate::push::PushConfig::default(),
            blob_store: crate::blob_backend::BlobStoreConfig::default(),
            admin_addr: None,
            otlp_endpoint: None,
            tls_dir: None,
            cluster_node_id: None,
            cluster_listen: SocketAddr::from(([0, 0, 0, 0], 4434)),
            cluster_advertise: None,
            cluster_ca_cert: PathBuf::from("cluster/ca.pem"),
            cluster_ca_key: PathBuf::from("cluster/ca.key"),
            cluster_node_ttl_ms: 6000,
        }
    }
}

/// Why a configuration was refused. Nothing is bound before validation.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}={value:?} is not valid: {message}")]
    Env {
        name: String,
        value: String,
        message: String,
    },
    #[error("invalid setting {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error(transparent)]
    Push(#[from] crate::push::config::PushConfigError),
    #[error(transparent)]
    BlobStore(#[from] crate::blob_backend::BlobStoreConfigError),
}

impl ServerConfig {
    /// Loads a TOML file (if given) over the defaults, then applies `TERN_*`
    /// environment variables (e.g. `TERN_LISTEN`, `TERN_DATA_DIR`, `TERN_SHARDS`).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => ServerConfig::default(),
        };
        refuse_non_unicode_env(|name| std::env::var_os(name))?;
        config.apply_env(|name| std::env::var(name).ok())?;
        Ok(config)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// The store's memory and journal bounds (see `store_*_mib`).
    fn validate_store(&self) -> Result<(), ConfigError> {
        check(
            (1..=1024).contains(&self.store_memtable_mib),
            "store_memtable_mib",
            "must be 1 to 1024",
        )?;
        check(
            self.store_journal_mib >= 128,
            "store_journal_mib",
            "must be at least 128 (the store rotates journal files at 64 MB)",
        )?;
        check(
            self.store_cache_mib > 0,
            "store_cache_mib",
            "must be positive",
        )
    }

    /// `otlp_endpoint`, when set, is an http or https URL with a host, as
    /// `s3_endpoint` ([`crate::blob_backend::check_http_url`]): a query or a
    /// fragment used to be taken for the path (spans went to `/` or
    /// `/?x=1/v1/traces`), a port past 65535 or an empty host to be accepted
    /// and every export to fail unseen, and `user:password@` to be dropped.
    fn validate_otlp(&self) -> Result<(), ConfigError> {
        let Some(endpoint) = &self.otlp_endpoint else {
            return Ok(());
        };
        crate::blob_backend::check_http_url(
            endpoint,
            "the exporter sends none from the URL; set OTEL_EXPORTER_OTLP_HEADERS=authorization=...",
        )
        .map_err(|message| ConfigError::Invalid {
            field: "otlp_endpoint",
            message: format!(
                "{message} (the collector's OTLP/HTTP URL, e.g. http://collector:4318)"
            ),
        })
    }

    /// The send and connection-attempt limits: every burst and rate at
    /// least 1 (a zero rate would refuse forever once the burst is spent).
    fn validate_traffic_limits(&self) -> Result<(), ConfigError> {
        for (value, field) in [
            (self.sends_per_account_burst, "sends_per_account_burst"),
            (
                self.sends_per_account_per_minute,
                "sends_per_account_per_minute",
            ),
            (
                self.sends_per_conversation_burst,
                "sends_per_conversation_burst",
            ),
            (
                self.sends_per_conversation_per_minute,
                "sends_per_conversation_per_minute",
            ),
            (
                self.connections_per_address_burst,
                "connections_per_address_burst",
            ),
            (
                self.connections_per_address_per_minute,
                "connections_per_address_per_minute",
            ),
        ] {
            check(value > 0, field, "must be at least 1")?;
        }
        Ok(())
    }

    /// The store tuning these settings describe, in bytes.
    pub fn store_tuning(&self) -> tern_store_fjall::Tuning {
        const MIB: u64 = 1024 * 1024;
        tern_store_fjall::Tuning {
            memtable: self.store_memtable_mib.saturating_mul(MIB),
            journal: self.store_journal_mib.saturating_mul(MIB),
            cache: self.store_cache_mib.saturating_mul(MIB),
        }
    }

    /// Applies environment overrides read through `get` (injectable for tests).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        env_parse(&get, "TERN_LISTEN", &mut self.listen)?;
        if let Some(dir) = get("TERN_DATA_DIR") {
            self.data_dir = PathBuf::from(dir);
        }
        env_parse(&get, "TERN_SHARDS", &mut self.shards)?;
        env_parse(&get, "TERN_MAX_FRAME_LEN", &mut self.max_frame_len)?;
        env_parse(
            &get,
            "TERN_MAX_ATTACHMENT_BYTES",
            &mut self.max_attachment_bytes,
        )?;
        env_parse(
            &get,
            "TERN_MAX_MLS_HANDSHAKE_BYTES",
            &mut self.max_mls_handshake_bytes,
        )?;
        env_parse(
            &get,
            "TERN_UPLOAD_QUOTA_BYTES",
            &mut self.upload_quota_bytes,
        )?;
        env_parse(
            &get,
            "TERN_UPLOAD_BYTES_PER_SECOND",
            &mut self.upload_bytes_per_second,
        )?;
        env_parse(
            &get,
            "TERN_UPLOAD_BURST_BYTES",
            &mut self.upload_burst_bytes,
        )?;
        env_parse(&get, "TERN_IDLE_TIMEOUT_SECS", &mut self.idle_timeout_secs)?;
        env_parse(&get, "TERN_MESSAGE_TTL_SECS", &mut self.message_ttl_secs)?;
        env_parse(
            &get,
            "TERN_MLS_HANDSHAKE_TTL_SECS",
            &mut self.mls_handshake_ttl_secs,
        )?;
        env_parse(
            &get,
            "TERN_SWEEP_INTERVAL_SECS",
            &mut self.sweep_interval_secs,
        )?;
        env_parse(&get, "TERN_PRESENCE_BACKEND", &mut self.presence_backend)?;
        env_parse(&get, "TERN_REDIS_URL", &mut self.redis_url)?;
        env_parse_optional(&get, "TERN_ADMIN_ADDR", &mut self.admin_addr)?;
        env_parse_optional(&get, "TERN_OTLP_ENDPOINT", &mut self.otlp_endpoint)?;
        env_parse_optional(&get, "TERN_TLS_DIR", &mut self.tls_dir)?;
        self.apply_store_env(&get)?;
        self.blob_store.apply_env(&get)?;
        self.apply_cluster_env(&get)
    }

    fn apply_cluster_env(
        &mut self,
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        env_parse_optional(get, "TERN_CLUSTER_NODE_ID", &mut self.cluster_node_id)?;
        env_parse(get, "TERN_CLUSTER_LISTEN", &mut self.cluster_listen)?;
        env_parse_optional(get, "TERN_CLUSTER_ADVERTISE", &mut self.cluster_advertise)?;
        env_parse(get, "TERN_CLUSTER_CA_CERT", &mut self.cluster_ca_cert)?;
        env_parse(get, "TERN_CLUSTER_CA_KEY", &mut self.cluster_ca_key)?;
        env_parse(
            get,
            "TERN_CLUSTER_NODE_TTL_MS",
            &mut self.cluster_node_ttl_ms,
        )?;
        Ok(())
    }

    /// Every `TERN_*` environment variable [`ServerConfig::apply_env`]
    /// reads, in its order: taken from `apply_env` itself, so the list
    /// cannot drift (tests/deploy.rs checks the deploy files against it).
    pub fn env_names() -> Vec<String> {
        let names = std::cell::RefCell::new(Vec::new());
        let mut config = ServerConfig::default();
        let _ = config.apply_env(|name| {
            names.borrow_mut().push(name.to_owned());
            None
        });
        names.into_inner()
    }

    /// The cluster settings of this node, `None` unless `cluster_node_id` is set.
    pub fn cluster(&self) -> Option<crate::cluster::ClusterConfig> {
        let node_id = self.cluster_node_id.clone()?;
        Some(crate::cluster::ClusterConfig {
            node_id,
            listen: self.cluster_listen,
            advertise: self.cluster_advertise,
            redis_url: self.redis_url.clone(),
            ttl: Duration::from_millis(self.cluster_node_ttl_ms),
            ca_cert: self.cluster_ca_cert.clone(),
            ca_key: self.cluster_ca_key.clone(),
            ..crate::cluster::ClusterConfig::default()
        })
    }

    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let Some(cluster) = self.cluster() else {
            return Ok(());
        };
        cluster.validate().map_err(|e| ConfigError::Invalid {
            field: e.field,
            message: e.message,
        })?;
        check(
            self.presence_backend == crate::presence::PresenceBackend::Redis,
            "presence_backend",
            "must be \"redis\" in a cluster (cluster_node_id is set): presence is shared through redis_url",
        )
    }

    /// Checks every field; call before binding anything.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_cluster()?;
        self.validate_otlp()?;
        self.push.validate()?;
        self.blob_store.validate()?;
        check(
            self.shards <= 255,
            "shards",
            "at most 255 shards (connection ids carry the shard in one byte)",
        )?;
        check(
            self.max_frame_len >= 1024,
            "max_frame_len",
            "must be at least 1024 bytes",
        )?;
        check(
            self.max_frame_len <= 16 * 1024 * 1024,
            "max_frame_len",
            "must be at most 16 MiB",
        )?;
        check(
            (1024..=16 << 30).contains(&self.max_attachment_bytes),
            "max_attachment_bytes",
            "must be between 1024 bytes and 16 GiB",
        )?;
        check(
            (1024..=3 << 20).contains(&self.max_mls_handshake_bytes),
            "max_mls_handshake_bytes",
            "must be between 1024 bytes and 3 MiB (clients take frames of at most 4 MiB)",
        )?;
        check(
            self.upload_quota_bytes >= self.max_attachment_bytes,
            "upload_quota_bytes",
            "must be at least max_attachment_bytes",
        )?;
        check(
            self.upload_bytes_per_second > 0,
            "upload_bytes_per_second",
            "must be positive",
        )?;
        check(
            self.upload_burst_bytes >= self.max_attachment_bytes,
            "upload_burst_bytes",
            "must be at least max_attachment_bytes (or the largest attachment never passes)",
        )?;
        check(
            self.frame_read_timeout_secs > 0,
            "frame_read_timeout_secs",
            "must be positive",
        )?;
        check(
            self.auth_timeout_secs > 0,
            "auth_timeout_secs",
            "must be positive",
        )?;
        check(
            self.idle_timeout_secs >= 5,
            "idle_timeout_secs",
            "must be at least 5 seconds",
        )?;
        check(
            self.message_ttl_secs > 0,
            "message_ttl_secs",
            "must be positive",
        )?;
        check(
            self.mls_handshake_ttl_secs > 0,
            "mls_handshake_ttl_secs",
            "must be positive",
        )?;
        check(
            self.sweep_interval_secs > 0,
            "sweep_interval_secs",
            "must be positive",
        )?;
        check(
            self.purge_window_secs > 0,
            "purge_window_secs",
            "must be positive",
        )?;
        check(
            (1..=86_400).contains(&self.purge_erase_interval_secs),
            "purge_erase_interval_secs",
            "must be 1 to 86400 (seconds between erasures of purged ciphertext)",
        )?;
        check(
            self.max_inflight_per_connection > 0,
            "max_inflight_per_connection",
            "must be positive",
        )?;
        check(
            self.outbound_queue_frames >= 16,
            "outbound_queue_frames",
            "must be at least 16",
        )?;
        check(
            self.outbound_queue_bytes >= 64 * 1024,
            "outbound_queue_bytes",
            "must be at least 65536 bytes",
        )?;
        check(
            self.slow_reader_timeout_secs > 0,
            "slow_reader_timeout_secs",
            "must be positive",
        )?;
        check(
            self.journal_sync_interval_us <= 100_000,
            "journal_sync_interval_us",
            "must be at most 100000 (100 ms): every durable answer may wait this long",
        )?;
        check(
            self.max_history_page > 0,
            "max_history_page",
            "must be positive",
        )?;
        self.validate_store()?;
        self.validate_store_backend()?;
        check(self.claim_burst > 0, "claim_burst", "must be positive")?;
        for (value, field) in [
            (self.claims_per_target_burst, "claims_per_target_burst"),
            (
                self.registrations_per_address_burst,
                "registrations_per_address_burst",
            ),
            (
                self.link_requests_per_address_burst,
                "link_requests_per_address_burst",
            ),
            (
                self.link_requests_per_user_burst,
                "link_requests_per_user_burst",
            ),
            (
                self.conversations_per_account_burst,
                "conversations_per_account_burst",
            ),
            (self.groups_per_user, "groups_per_user"),
            (
                self.invitations_per_account_burst,
                "invitations_per_account_burst",
            ),
        ] {
            check(value > 0, field, "must be positive")?;
        }
        self.validate_traffic_limits()?;
        crate::presence::redis::validate(self)?;
        crate::realtime::turn::validate(self)?;
        check(
            self.link_timeout_secs > 0,
            "link_timeout_secs",
            "must be positive",
        )?;
        check(
            !self.data_dir.as_os_str().is_empty(),
            "data_dir",
            "must not be empty",
        )?;
        check(
            self.tls_dir
                .as_ref()
                .is_none_or(|dir| !dir.as_os_str().is_empty()),
            "tls_dir",
            "must not be empty: leave it out to serve the identity in data_dir",
        )
    }

    /// The number of shards to run: the configured count or one per core.
    pub fn effective_shards(&self) -> usize {
        if self.shards > 0 {
            return self.shards;
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(255)
    }

    pub fn message_ttl(&self) -> Duration {
        Duration::from_secs(self.message_ttl_secs)
    }
}

/// The default `rate_limit_exempt`: the loopback networks.
fn loopback() -> Vec<ipnet::IpNet> {
    let v4 = ipnet::Ipv4Net::new(std::net::Ipv4Addr::LOCALHOST, 8).map(ipnet::IpNet::V4);
    let v6 = ipnet::Ipv6Net::new(std::net::Ipv6Addr::LOCALHOST, 128).map(ipnet::IpNet::V6);
    [v4, v6].into_iter().filter_map(Result::ok).collect()
}

/// Refuses a `TERN_*` variable (one [`ServerConfig::env_names`] lists,
/// read through `get`) whose value is not UTF-8: reading it as unset used
/// to start the server on the default or the file's value instead (a
/// `TERN_TLS_DIR` so ignored served another certificate than the others).
fn refuse_non_unicode_env(
    get: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Result<(), ConfigError> {
    for name in ServerConfig::env_names() {
        if let Some(value) = get(&name).filter(|v| v.to_str().is_none()) {
            return Err(ConfigError::Env {
                value: value.to_string_lossy().into_owned(),
                name,
                message: "is not UTF-8 text: tern reads no other value (write the path or \
                          URL in UTF-8)"
                    .into(),
            });
        }
    }
    Ok(())
}

pub(crate) fn check(ok: bool, field: &'static str, message: &str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            field,
            message: message.to_owned(),
        })
    }
}

pub(crate) fn env_parse<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    slot: &mut T,
) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    if let Some(value) = get(name) {
        *slot = value.parse().map_err(|e: T::Err| ConfigError::Env {
            name: name.to_owned(),
            value: value.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(())
}

/// Like [`env_parse`] for an optional setting: an empty value unsets it
/// (overriding the config file).
fn env_parse_optional<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    slot: &mut Option<T>,
) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    match get(name) {
        None => Ok(()),
        Some(value) if value.is_empty() => {
            *slot = None;
            Ok(())
        }
        Some(value) => {
            let parsed = value.parse().map_err(|e: T::Err| ConfigError::Env {
                name: name.to_owned(),
                value: value.clone(),
                message: e.to_string(),
            })?;
            *slot = Some(parsed);
            Ok(())
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn empty_toml_is_the_defaults() {
        let parsed: ServerConfig = toml::from_str("").expect("parses");
        assert_eq!(parsed, ServerConfig::default());
        assert!(parsed.validate().is_ok());
    }

    #[test]
    fn toml_fields_and_unknown_keys() {
        let parsed: ServerConfig =
            toml::from_str("listen = \"0.0.0.0:9000\"\nshards = 3").expect("parses");
        assert_eq!(parsed.listen.port(), 9000);
        assert_eq!(parsed.effective_shards(), 3);
        assert!(toml::from_str::<ServerConfig>("lisen = \"x\"").is_err());
    }

    #[test]
    fn env_overrides_and_bad_env() {
        let mut c = ServerConfig::default();
        c.apply_env(|n| (n == "TERN_SHARDS").then(|| "4".to_owned()))
            .expect("valid");
        assert_eq!(c.shards, 4);
        let err = c
            .apply_env(|n| (n == "TERN_LISTEN").then(|| "nope".to_owned()))
            .expect_err("invalid");
        assert!(err.to_string().contains("TERN_LISTEN"));
    }

    #[test]
    fn validation_refuses_nonsense() {
        let c = ServerConfig {
            shards: 300,
            ..ServerConfig::default()
        };
        assert!(c.validate().is_err());
        let c = ServerConfig {
            max_frame_len: 10,
            ..ServerConfig::default()
        };
        assert!(c.validate().is_err());
        for bytes in [0, 1023, (16 << 30) + 1] {
            let c = ServerConfig {
                max_attachment_bytes: bytes,
                ..ServerConfig::default()
            };
            let err = c.validate().expect_err("out of range");
            assert!(err.to_string().contains("max_attachment_bytes"), "{err}");
        }
        let small = 1 << 20;
        for (c, field) in [
            (
                ServerConfig {
                    upload_quota_bytes: small,
                    ..ServerConfig::default()
                },
                "upload_quota_bytes",
            ),
            (
                ServerConfig {
                    upload_burst_bytes: small,
                    ..ServerConfig::default()
                },
                "upload_burst_bytes",
            ),
            (
                ServerConfig {
                    upload_bytes_per_second: 0,
                    ..ServerConfig::default()
                },
                "upload_bytes_per_second",
            ),
        ] {
            let err = c.validate().expect_err("out of range");
            assert!(err.to_string().contains(field), "{err}");
        }
    }

    #[test]
    fn groups_per_user_is_positive() {
        assert_eq!(ServerConfig::default().groups_per_user, 1000);
        let c = ServerConfig {
            groups_per_user: 0,
            ..ServerConfig::default()
        };
        let err = c.validate().expect_err("zero refused");
        assert!(err.to_string().contains("groups_per_user"), "{err}");
        let parsed: ServerConfig = toml::from_str("groups_per_user = 3").expect("parses");
        assert_eq!(parsed.groups_per_user, 3);
    }

    #[test]
    fn store_tuning_is_validated_and_given_in_bytes() {
        let tuning = ServerConfig::default().store_tuning();
        assert_eq!(tuning, tern_store_fjall::Tuning::default());
        for (toml, field) in [
            ("store_memtable_mib = 0", "store_memtable_mib"),
            ("store_memtable_mib = 1025", "store_memtable_mib"),
            ("store_journal_mib = 64", "store_journal_mib"),
            ("store_cache_mib = 0", "store_cache_mib"),
        ] {
            let c: ServerConfig = toml::from_str(toml).expect("parses");
            let err = c.validate().expect_err(toml);
            assert!(err.to_string().contains(field), "{err}");
        }
        let c: ServerConfig = toml::from_str("store_memtable_mib = 16").expect("parses");
        assert_eq!(c.store_tuning().memtable, 16 << 20);
    }

    #[test]
    fn purge_erase_interval_is_validated() {
        assert_eq!(ServerConfig::default().purge_erase_interval_secs, 600);
        for bad in [
            "purge_erase_interval_secs = 0",
            "purge_erase_interval_secs = 86401",
        ] {
            let c: ServerConfig = toml::from_str(bad).expect("parses");
            let err = c.validate().expect_err(bad);
            assert!(
                err.to_string().contains("purge_erase_interval_secs"),
                "{err}"
            );
        }
        let c: ServerConfig = toml::from_str("purge_erase_interval_secs = 1").expect("parses");
        c.validate().expect("1 s is allowed");
    }

    #[test]
    fn traffic_limits_are_at_least_one() {
        let d = ServerConfig::default();
        assert_eq!(
            (d.sends_per_account_burst, d.sends_per_account_per_minute),
            (500, 6000)
        );
        assert_eq!(d.connections_per_address_burst, 200);
        for field in [
            "sends_per_account_burst",
            "sends_per_account_per_minute",
            "sends_per_conversation_burst",
            "sends_per_conversation_per_minute",
            "connections_per_address_burst",
            "connections_per_address_per_minute",
        ] {
            let toml = format!("{field} = 0");
            let c: ServerConfig = toml::from_str(&toml).expect("parses");
            let err = c.validate().expect_err(&toml);
            assert!(err.to_string().contains(field), "{err}");
            let c: ServerConfig = toml::from_str(&format!("{field} = 1")).expect("parses");
            c.validate().expect("1 is allowed");
        }
    }

    #[test]
    fn purge_window_is_validated() {
        assert_eq!(ServerConfig::default().purge_window_secs, 172_800);
        let c: ServerConfig = toml::from_str("purge_window_secs = 0").expect("parses");
        let err = c.validate().expect_err("zero");
        assert!(err.to_string().contains("purge_window_secs"), "{err}");
        for toml in ["purge_window_secs = 1", "message_ttl_secs = 60"] {
            let c: ServerConfig = toml::from_str(toml).expect("parses");
            c.validate().expect(toml);
        }
    }

    #[test]
    fn otlp_endpoint_must_be_an_http_url() {
        let with = |endpoint: &str| ServerConfig {
            otlp_endpoint: Some(endpoint.into()),
            ..ServerConfig::default()
        };
        assert!(with("http://collector:4318").validate().is_ok());
        assert!(with("https://otel.example/v1/traces").validate().is_ok());
        for bad in [
            "collector:4318",
            "http://",
            "grpc://collector:4317",
            "",
            "http://c:4318?x=1",
            "http://c:4318/?x=1",
            "http://c:4318#f",
            "http://c:99999",
            "http://:4318",
            "http://user:secret@c:4318",
            "http://[::1",
        ] {
            let refused = with(bad).validate().expect_err(bad).to_string();
            assert!(refused.contains("otlp_endpoint"), "{refused}");
        }
        let mut c = ServerConfig::default();
        c.apply_env(|n| (n == "TERN_OTLP_ENDPOINT").then(|| "http://c:4318".into()))
            .expect("env");
        assert_eq!(c.otlp_endpoint.as_deref(), Some("http://c:4318"));
    }

    #[cfg(unix)]
    #[test]
    fn a_variable_that_is_not_utf8_is_refused_not_ignored() {
        use std::os::unix::ffi::OsStringExt as _;
        let bad = |name: &str| {
            (name == "TERN_TLS_DIR")
                .then(|| std::ffi::OsString::from_vec(b"/etc/tern\xff".to_vec()))
        };
        let refused = refuse_non_unicode_env(bad).expect_err("not UTF-8");
        assert!(refused.to_string().contains("TERN_TLS_DIR"), "{refused}");
        assert!(refused.to_string().contains("UTF-8"), "{refused}");
        let fine = |name: &str| (name == "TERN_TLS_DIR").then(|| "/etc/tern".into());
        assert!(refuse_non_unicode_env(fine).is_ok());
    }

    #[test]
    fn an_empty_tls_dir_is_refused_not_read_from_the_working_directory() {
        let c: ServerConfig = toml::from_str("tls_dir = \"\"").expect("parses");
        let refused = c.validate().expect_err("empty");
        assert!(refused.to_string().contains("tls_dir"), "{refused}");
    }

    #[test]
    fn admin_addr_is_unset_by_default_and_read_from_env() {
        assert_eq!(ServerConfig::default().admin_addr, None);
        let mut c = ServerConfig::default();
        c.apply_env(|n| (n == "TERN_ADMIN_ADDR").then(|| "127.0.0.1:9464".to_owned()))
            .expect("valid");
        assert_eq!(c.admin_addr, Some(SocketAddr::from(([127, 0, 0, 1], 9464))));
        c.apply_env(|n| (n == "TERN_ADMIN_ADDR").then(String::new))
            .expect("empty unsets");
        assert_eq!(c.admin_addr, None);
        let err = c
            .apply_env(|n| (n == "TERN_ADMIN_ADDR").then(|| "9464".to_owned()))
            .expect_err("a port alone is not an address");
        assert!(err.to_string().contains("TERN_ADMIN_ADDR"), "{err}");
        let parsed: ServerConfig = toml::from_str("admin_addr = \"0.0.0.0:9464\"").expect("parses");
        assert_eq!(parsed.admin_addr.map(|a| a.port()), Some(9464));
        c.apply_env(|n| (n == "TERN_PRESENCE_BACKEND").then(|| "redis".to_owned()))
            .expect("valid");
        assert_eq!(c.presence_backend, crate::presence::PresenceBackend::Redis);
    }

    #[test]
    fn env_names_are_the_ones_apply_env_reads() {
        let names = ServerConfig::env_names();
        for name in [
            "TERN_LISTEN",
            "TERN_DATA_DIR",
            "TERN_ADMIN_ADDR",
            "TERN_REDIS_URL",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
        assert!(names.iter().all(|n| n.starts_with("TERN_")), "{names:?}");
    }

    #[test]
    fn handshake_ttl_is_positive_and_outlives_messages_by_default() {
        let d = ServerConfig::default();
        assert!(d.mls_handshake_ttl_secs > d.message_ttl_secs);
        let c = ServerConfig {
            mls_handshake_ttl_secs: 0,
            ..ServerConfig::default()
        };
        let err = c.validate().expect_err("zero refused");
        assert!(err.to_string().contains("mls_handshake_ttl_secs"));
        let mut c = ServerConfig::default();
        c.apply_env(|n| (n == "TERN_MLS_HANDSHAKE_TTL_SECS").then(|| "7".to_owned()))
            .expect("valid");
        assert_eq!(c.mls_handshake_ttl_secs, 7);
    }
}
