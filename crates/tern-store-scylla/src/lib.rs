//! [`ScyllaStore`]: tern's store on a ScyllaDB (or Cassandra) cluster,
//! through the official driver. It implements every trait of
//! [`tern_store::Store`] with the semantics of `tern_store::memory` and
//! passes the shared conformance suite (`tests/conformance.rs`, run when
//! `TERN_SCYLLA_NODES` names a cluster).
//!
//! # Layout
//! The schema is `migrations/*.cql` (applied by `tern migrate`, see
//! [`migrate`]). Messages live in `((conversation_id, bucket), seq)`
//! partitions of [`codec::BUCKET_SEQS`] seqs; a conversation's head, fencing
//! token and MLS epoch are static columns of its `conversations` partition,
//! whose clustering rows are the conversation's idempotency keys.
//!
//! # Requests
//! Every statement is prepared once at open ([`statements`]); the driver's
//! default load balancing routes each to a replica of its partition
//! (token-aware). Reads and writes run at [`ScyllaConfig::consistency`]
//! (`LOCAL_QUORUM` by default), lightweight transactions (LWT) at
//! `LOCAL_SERIAL`. Driver errors map onto [`tern_store::BackendErrorKind`]
//! ([`error`]).
//!
//! # Conditional writes
//! - Appends: ONE LWT per conversation per `append_messages` call: a
//!   conditional batch on the conversation's partition that advances the
//!   head (`IF head = ?`, and `AND fence = ?` when fenced) and writes the
//!   batch's idempotency keys with it. Only then are the messages and expiry
//!   entries written, in one logged batch (all or nothing across their
//!   partitions, so no message exists without its expiry entry). If that
//!   second write fails, the head names seqs whose rows are missing; the
//!   retry of such a message finds its idempotency key, writes the message at
//!   its reserved seq and returns `Duplicate` with it, so a retry is
//!   exactly-once and the log has no hole.
//! - Accounts (`highest` device id), blocks (`version`, for blocks and
//!   unblocks): conditional batches on a static column of the user's
//!   partition.
//! - Single-use keys: inserted `IF NOT EXISTS`, claimed by `DELETE ... IF
//!   EXISTS`, so each is handed out once.
//! - MLS epochs: `IF head = ? AND epoch = ?` in the Commit's LWT.
//! - Conversations: `IF kind = null` (the id), unique keys `IF NOT EXISTS`.
//! - Ownership: `IF fence = ?` with the read token, retried on contention.
//!
//! Cells and rows an LWT writes are written by LWTs only (the expiry sweep's
//! idempotency-key deletes excepted): an LWT's timestamp is its Paxos
//! ballot, a plain write's its coordinator's clock, and under clock skew the
//! two can be ordered against their real order. `README.md` ("Semantics
//! relied on") lists every CQL and driver behaviour this crate relies on,
//! with the documentation checked.
//!
//! # Durability
//! Every write is acknowledged by the cluster at the configured consistency
//! before the call returns, so [`Store::persist`] is a barrier with nothing
//! left to do: a message is acknowledged to its sender only after its write
//! was acknowledged. Nothing is cached, so the store never poisons itself.
//!
//! # Expiry
//! Message rows (and their idempotency keys) carry a CQL TTL computed from
//! `expires_at_ms` ([`codec::ttl_secs`]), so ScyllaDB drops them even if no
//! sweeper runs. [`tern_store::MessageLog::sweep_expired`] walks the expiry
//! index (`expiry_hours`, `expiry`), deletes each due message, its
//! idempotency key and its index entry at once, and counts them: it keeps
//! the trait's contract (a swept message's key can be reused) ahead of the
//! TTL and keeps the index small. Index entries carry their message's TTL
//! plus [`codec::INDEX_GRACE_SECS`], so the index stays bounded even where
//! no sweeper runs.

mod accounts;
mod codec;
pub mod config;
mod consent;
mod conversations;
mod db;
pub mod error;
mod groups;
mod keys;
mod log;
mod log_read;
pub mod migrate;
pub mod plan;
mod statements;
pub mod tablets;

use std::sync::Arc;

use async_trait::async_trait;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session_builder::SessionBuilder;
use tern_store::{BackendError, Store};

pub use codec::{BUCKET_SEQS, INDEX_GRACE_SECS, MAX_TTL_SECS, TTL_GRACE_SECS};
pub use config::{parse_nodes, ScyllaConfig, ScyllaConsistency};

use db::Db;

/// The ScyllaDB store. Cheap to clone (one shared session).
#[derive(Clone, Debug)]
pub struct ScyllaStore {
    db: Arc<Db>,
}

/// Why [`ScyllaStore::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("no ScyllaDB nodes configured; set scylla_nodes (TERN_SCYLLA_NODES) to host:port,...")]
    NoNodes,
    #[error(
        "keyspace {0:?} is not a plain CQL name (1-48 chars of [a-z0-9_], starting with a letter)"
    )]
    BadKeyspace(String),
    /// `hint` adds, when a keyspace was named, that it must exist.
    #[error(
        "cannot connect to ScyllaDB at {nodes}: {message}; check that the nodes are up and \
         reachable from this host on their CQL port{hint}"
    )]
    Connect {
        nodes: String,
        message: String,
        hint: &'static str,
    },
    #[error(transparent)]
    Schema(#[from] migrate::SchemaError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

impl ScyllaStore {
    /// Connects to the cluster, checks that the keyspace is migrated to
    /// exactly this binary's schema version and does not use tablets the
    /// cluster cannot run LWTs on ([`tablets::check`]), and prepares every
    /// statement.
    pub async fn open(config: &ScyllaConfig) -> Result<Self, OpenError> {
        let session = connect(config, Some(&config.keyspace)).await?;
        if config.consistency.below_quorum() {
            tracing::warn!(
                consistency = %config.consistency,
                "ScyllaDB consistency below a quorum: reads may miss acknowledged writes \
                 (messages, heads, idempotency keys); use LOCAL_QUORUM"
            );
        }
        migrate::check_current(&session, config.consistency.read()).await?;
        tablets::check(&session, &config.keyspace)
            .await
            .map_err(migrate::SchemaError::from)?;
        let db = Db::new(session, config.consistency.read()).await?;
        Ok(ScyllaStore { db: Arc::new(db) })
    }
}

/// A session on `config`'s nodes with its consistency and timeouts, in
/// `keyspace` when given.
pub async fn connect(
    config: &ScyllaConfig,
    keyspace: Option<&str>,
) -> Result<scylla::client::session::Session, OpenError> {
    if config.nodes.is_empty() {
        return Err(OpenError::NoNodes);
    }
    if !config::valid_keyspace(&config.keyspace) {
        return Err(OpenError::BadKeyspace(config.keyspace.clone()));
    }
    let profile = ExecutionProfile::builder()
        .consistency(config.consistency.driver())
        .serial_consistency(Some(config.consistency.serial()))
        .request_timeout(Some(config.request_timeout))
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.nodes)
        .connection_timeout(config.connect_timeout)
        .default_execution_profile_handle(profile.into_handle());
    if let Some(keyspace) = keyspace {
        builder = builder.use_keyspace(keyspace, false);
    }
    let hint = match keyspace {
        Some(_) => ", and that the keyspace exists (`tern migrate`)",
        None => "",
    };
    let refused = |message: String| OpenError::Connect {
        nodes: config.nodes.join(","),
        message,
        hint,
    };
    match tokio::time::timeout(config.session_timeout, builder.build()).await {
        Ok(session) => session.map_err(|e| refused(e.to_string())),
        Err(_) => Err(refused(format!(
            "no session within {} s",
            config.session_timeout.as_secs()
        ))),
    }
}

#[async_trait]
impl Store for ScyllaStore {
    /// A no-op barrier: every write returned only after the cluster
    /// acknowledged it at the configured consistency (see the crate docs).
    async fn persist(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
