//! The database half of `tern migrate`: creates the keyspace (with the
//! operator's replication, and tablets off where the cluster cannot run
//! lightweight transactions on them: [`crate::tablets`]), the
//! `schema_migrations` table, and applies the
//! pending migrations of [`crate::plan`] in order, recording each (version,
//! name, sha256, applied_at). Safe to re-run: every migration statement is
//! `IF NOT EXISTS`, so a migration interrupted halfway is applied again
//! whole, and applied ones are skipped. [`check_current`] is what the store
//! runs at open: it refuses a keyspace that is behind or ahead of this
//! binary.

use scylla::client::session::Session;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;
use tern_store::BackendError;

use crate::config::ScyllaConfig;
use crate::error;
use crate::plan::{self, Applied, Migration, PlanError};
use crate::tablets::{self, Features, Tablets, TabletsError};
use crate::OpenError;

/// The replication of a keyspace created on a laptop: one copy.
pub const DEFAULT_REPLICATION: &str = "{'class': 'SimpleStrategy', 'replication_factor': 1}";

const CREATE_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS schema_migrations (version int PRIMARY KEY, \
     name text, sha256 text, applied_at timestamp)";
const SELECT_APPLIED: &str = "SELECT version, name, sha256 FROM schema_migrations";
const RECORD: &str = "INSERT INTO schema_migrations (version, name, sha256, applied_at) \
     VALUES (?, ?, ?, toTimestamp(now())) IF NOT EXISTS";

/// Why the keyspace's schema does not fit this binary.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(
        "keyspace is at schema version {database} but this binary needs {binary}; run \
         `tern migrate` with this binary first"
    )]
    Behind { database: u32, binary: u32 },
    #[error(
        "replication {0:?} is not a CQL map; give e.g. \"{{'class': \
         'NetworkTopologyStrategy', 'replication_factor': 3}}\""
    )]
    BadReplication(String),
    #[error(transparent)]
    Tablets(#[from] TabletsError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// What one `tern migrate` run did.
#[derive(Debug, Default)]
pub struct Report {
    /// `(version, name)` of each migration applied now, in order.
    pub applied: Vec<(u32, String)>,
    /// The schema version after the run.
    pub version: u32,
}

/// [`run_with`] with [`Tablets::Auto`].
pub async fn run(config: &ScyllaConfig, replication: &str) -> Result<Report, OpenError> {
    run_with(config, replication, Tablets::Auto).await
}

/// Applies every pending migration to `config.keyspace`, creating it with
/// `replication` (a CQL map, optionally followed by `AND tablets = {...}`)
/// and the tablets option [`tablets::keyspace_options`] decides if it does
/// not exist. An existing keyspace keeps its replication and tablets; one
/// that uses tablets on a cluster that cannot run LWTs on them is refused
/// ([`TabletsError::KeyspaceNeedsLwt`]).
pub async fn run_with(
    config: &ScyllaConfig,
    replication: &str,
    tablets: Tablets,
) -> Result<Report, OpenError> {
    let replication = replication.trim();
    if !replication.starts_with('{') || !replication.ends_with('}') || replication.contains(';') {
        return Err(SchemaError::BadReplication(replication.to_string()).into());
    }
    let known = plan::embedded().map_err(SchemaError::from)?;
    let session = crate::connect(config, None).await?;
    let keyspace = &config.keyspace;
    let features = Features::read(&session).await;
    let options =
        tablets::keyspace_options(replication, tablets, features).map_err(SchemaError::from)?;
    let mut create =
        format!("CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication}");
    if let Some(options) = options {
        create = format!("{create} AND {options}");
    }
    ddl(&session, &create).await?;
    let uses_tablets = tablets::keyspace_uses_tablets(&session, keyspace).await;
    tablets::check_keyspace(keyspace, uses_tablets, features).map_err(SchemaError::from)?;
    session
        .use_keyspace(keyspace.as_str(), false)
        .await
        .map_err(|e| {
            SchemaError::Backend(BackendError::unavailable(format!("USE {keyspace}: {e}")))
        })?;
    ddl(&session, CREATE_TABLE).await?;
    let applied = applied(&session, config.consistency.read()).await?;
    let pending = plan::pending(&known, &applied).map_err(SchemaError::from)?;
    let mut report = Report::default();
    for migration in pending {
        apply(&session, migration).await?;
        report
            .applied
            .push((migration.version, migration.name.clone()));
    }
    report.version = plan::latest(&known);
    Ok(report)
}

/// Refuses a keyspace whose recorded migrations are not exactly this
/// binary's (behind: run `tern migrate`; ahead or edited: see [`PlanError`]).
pub async fn check_current(session: &Session, read: Consistency) -> Result<(), SchemaError> {
    let known = plan::embedded()?;
    let applied = applied(session, read).await?;
    let pending = plan::pending(&known, &applied)?;
    if pending.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Behind {
            database: applied.iter().map(|a| a.version).max().unwrap_or(0),
            binary: plan::latest(&known),
        })
    }
}

async fn apply(session: &Session, migration: &Migration) -> Result<(), SchemaError> {
    for statement in &migration.statements {
        ddl(session, statement).await?;
    }
    let values = (
        i32::try_from(migration.version).unwrap_or(i32::MAX),
        migration.name.as_str(),
        migration.sha256.as_str(),
    );
    session
        .query_unpaged(RECORD, values)
        .await
        .map_err(|e| error::execution("recording a migration", &e))?;
    Ok(())
}

/// Runs one schema statement and waits until every node agrees on the schema.
async fn ddl(session: &Session, cql: &str) -> Result<(), SchemaError> {
    session
        .query_unpaged(cql, ())
        .await
        .map_err(|e| error::execution(&format!("schema statement `{cql}`"), &e))?;
    session.await_schema_agreement().await.map_err(|e| {
        BackendError::unavailable(format!(
            "nodes did not agree on the schema after `{cql}`: {e}"
        ))
    })?;
    Ok(())
}

/// The migrations the keyspace recorded (none when it has no table yet),
/// read at `read`.
async fn applied(session: &Session, read: Consistency) -> Result<Vec<Applied>, SchemaError> {
    let what = "reading schema_migrations";
    let mut select = Statement::new(SELECT_APPLIED);
    select.set_consistency(read);
    let result = match session.query_unpaged(select, ()).await {
        Ok(result) => result,
        Err(e) => {
            let message = e.to_string();
            if message.contains("schema_migrations") || message.contains("unconfigured table") {
                return Err(SchemaError::Behind {
                    database: 0,
                    binary: plan::latest(&plan::embedded()?),
                });
            }
            return Err(error::execution(what, &e).into());
        }
    };
    let rows = result
        .into_rows_result()
        .map_err(|e| error::decode(what, e))?;
    let mut out = Vec::new();
    for row in rows
        .rows::<(i32, Option<String>, Option<String>)>()
        .map_err(|e| error::decode(what, e))?
    {
        let (version, name, sha256) = row.map_err(|e| error::decode(what, e))?;
        out.push(Applied {
            version: u32::try_from(version).map_err(|e| error::decode(what, e))?,
            name: name.unwrap_or_default(),
            sha256: sha256.unwrap_or_default(),
        });
    }
    Ok(out)
}
