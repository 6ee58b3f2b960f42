//! Tablets and tern's lightweight transactions. Every conditional write of
//! the store is an LWT; ScyllaDB refuses LWTs on tables of a keyspace with
//! tablets before 2025.4 (`storage_proxy: cas: reject for tablets-enabled
//! tables`, scylladb#18066; the cluster feature `LWT_WITH_TABLETS` marks the
//! versions that run them), and from 6.0 a new `NetworkTopologyStrategy`
//! keyspace gets tablets unless created with `tablets = {'enabled':
//! false}` (docs/cql/ddl.rst, "The tablets property"). A `SimpleStrategy`
//! keyspace cannot have tablets: where tablets are the default, creating
//! one without `tablets = {'enabled': false}` fails ("SimpleStrategy
//! doesn't support tablet replication", locator/simple_strategy.cc). Older
//! ScyllaDB and Cassandra have no tablets (and refuse the `tablets`
//! option).
//!
//! This module decides the keyspace options `tern migrate` adds
//! ([`keyspace_options`], pure and unit-tested) from what the node says it
//! supports ([`Features`], read from `system.local.supported_features`), and
//! refuses a keyspace that uses tablets on a cluster that cannot run LWTs on
//! them ([`check_keyspace`]), at migrate and at open.

use scylla::client::session::Session;
use scylla::statement::unprepared::Statement;
use scylla::statement::Consistency;

/// Whether `tern migrate` creates the keyspace with tablets (`--tablets`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tablets {
    /// Off where the cluster has tablets but cannot run LWTs on them
    /// (ScyllaDB 6.0–2025.3) or the replication is `SimpleStrategy`, the
    /// server's default otherwise; nothing is added when `--replication`
    /// already names `tablets`.
    #[default]
    Auto,
    /// `tablets = {'enabled': false}` where the cluster knows tablets
    /// (nothing to add where it does not).
    Off,
    /// `tablets = {'enabled': true}`; refused where the cluster cannot run
    /// LWTs on tablets, and with `SimpleStrategy`.
    On,
}

/// A `--tablets` value that is not one of `auto`, `off`, `on`.
#[derive(Debug, thiserror::Error)]
#[error("unknown --tablets value {0:?}; use auto, off or on")]
pub struct TabletsParseError(pub String);

impl std::str::FromStr for Tablets {
    type Err = TabletsParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Tablets::Auto),
            "off" | "false" | "disabled" => Ok(Tablets::Off),
            "on" | "true" | "enabled" => Ok(Tablets::On),
            _ => Err(TabletsParseError(s.to_string())),
        }
    }
}

/// What the contacted node supports, from `system.local.supported_features`
/// (a comma-separated list on ScyllaDB; absent on Cassandra, read as none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `TABLETS`: the node knows the `tablets` keyspace option.
    pub tablets: bool,
    /// `LWT_WITH_TABLETS`: the node runs LWTs on tablet tables (2025.4+).
    pub lwt_with_tablets: bool,
}

impl Features {
    /// Parses a `supported_features` value.
    pub fn parse(list: &str) -> Self {
        let has = |name: &str| list.split(',').any(|f| f.trim() == name);
        Features {
            tablets: has("TABLETS"),
            lwt_with_tablets: has("LWT_WITH_TABLETS"),
        }
    }

    /// The features of the node `session` reaches first; none when it does
    /// not say (Cassandra, or a user who may not read `system.local`).
    pub async fn read(session: &Session) -> Self {
        let query = "SELECT supported_features FROM system.local WHERE key = 'local'";
        let Ok(result) = session.query_unpaged(local(query), ()).await else {
            return Features::default();
        };
        let Ok(rows) = result.into_rows_result() else {
            return Features::default();
        };
        match rows.maybe_first_row::<(Option<String>,)>() {
            Ok(Some((Some(list),))) => Features::parse(&list),
            _ => Features::default(),
        }
    }
}

/// Why the keyspace's tablets do not fit tern.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TabletsError {
    #[error(
        "--replication already sets tablets; drop `AND tablets = ...` from it or leave \
         --tablets at auto"
    )]
    Conflict,
    #[error("--tablets on: this cluster has no tablets (ScyllaDB before 6.0, or Cassandra)")]
    Unsupported,
    #[error(
        "--tablets on: SimpleStrategy has no tablets; give --replication \"{{'class': \
         'NetworkTopologyStrategy', 'replication_factor': 3}}\""
    )]
    SimpleStrategy,
    #[error(
        "--tablets on: this ScyllaDB cannot run lightweight transactions on tablets (needs \
         2025.4 or later, feature LWT_WITH_TABLETS), and every conditional write of tern is \
         one; use --tablets off"
    )]
    NoLwt,
    #[error(
        "keyspace {0} uses tablets, and this ScyllaDB refuses lightweight transactions on \
         tablets (before 2025.4), which every conditional write of tern is; create the \
         keyspace again with `tern migrate --tablets off` (tables with LWT cannot be moved \
         between tablets and vnodes), or upgrade ScyllaDB to 2025.4 or later"
    )]
    KeyspaceNeedsLwt(String),
}

/// The clause `tern migrate` appends to `WITH replication = {...}` when it
/// creates a keyspace (`None`: nothing), given the `--replication` text,
/// the `--tablets` choice and the node's features.
pub fn keyspace_options(
    replication: &str,
    tablets: Tablets,
    features: Features,
) -> Result<Option<&'static str>, TabletsError> {
    if replication.to_ascii_lowercase().contains("tablets") {
        return match tablets {
            Tablets::Auto => Ok(None),
            Tablets::Off | Tablets::On => Err(TabletsError::Conflict),
        };
    }
    const OFF: &str = "tablets = {'enabled': false}";
    let simple = replication.to_ascii_lowercase().contains("simplestrategy");
    match tablets {
        Tablets::Auto if features.tablets && (simple || !features.lwt_with_tablets) => {
            Ok(Some(OFF))
        }
        Tablets::Auto => Ok(None),
        Tablets::Off if features.tablets => Ok(Some(OFF)),
        Tablets::Off => Ok(None),
        Tablets::On if !features.tablets => Err(TabletsError::Unsupported),
        Tablets::On if simple => Err(TabletsError::SimpleStrategy),
        Tablets::On if !features.lwt_with_tablets => Err(TabletsError::NoLwt),
        Tablets::On => Ok(Some("tablets = {'enabled': true}")),
    }
}

/// Refuses `keyspace` when it uses tablets (`uses_tablets`) and the
/// cluster cannot run LWTs on them.
pub fn check_keyspace(
    keyspace: &str,
    uses_tablets: bool,
    features: Features,
) -> Result<(), TabletsError> {
    if uses_tablets && !features.lwt_with_tablets {
        return Err(TabletsError::KeyspaceNeedsLwt(keyspace.to_string()));
    }
    Ok(())
}

/// Whether `keyspace` uses tablets: ScyllaDB records a tablets keyspace's
/// `initial_tablets` in `system_schema.scylla_keyspaces`. False where the
/// table or the row is missing (vnodes, older ScyllaDB, Cassandra).
pub async fn keyspace_uses_tablets(session: &Session, keyspace: &str) -> bool {
    let query =
        "SELECT initial_tablets FROM system_schema.scylla_keyspaces WHERE keyspace_name = ?";
    let Ok(result) = session.query_unpaged(local(query), (keyspace,)).await else {
        return false;
    };
    let Ok(rows) = result.into_rows_result() else {
        return false;
    };
    matches!(
        rows.maybe_first_row::<(Option<i32>,)>(),
        Ok(Some((Some(_),)))
    )
}

/// A read of a node-local system table, at `ONE` (whatever the session's
/// level: `EACH_QUORUM` is refused for reads).
fn local(query: &str) -> Statement {
    let mut statement = Statement::new(query);
    statement.set_consistency(Consistency::One);
    statement
}

/// [`check_keyspace`] against the cluster `session` reaches.
pub async fn check(session: &Session, keyspace: &str) -> Result<(), TabletsError> {
    let uses = keyspace_uses_tablets(session, keyspace).await;
    if !uses {
        return Ok(());
    }
    check_keyspace(keyspace, uses, Features::read(session).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NTS: &str = "{'class': 'NetworkTopologyStrategy', 'replication_factor': 3}";

    fn features(tablets: bool, lwt_with_tablets: bool) -> Features {
        Features {
            tablets,
            lwt_with_tablets,
        }
    }

    #[test]
    fn features_parse_from_the_comma_list() {
        let f = Features::parse("CDC,TABLETS,LWT_WITH_TABLETS,VIEWS_WITH_TABLETS");
        assert_eq!(f, features(true, true));
        assert_eq!(
            Features::parse("CDC, TABLETS ,VIEWS_WITH_TABLETS"),
            features(true, false)
        );
        assert_eq!(
            Features::parse("COUNTERS_WITH_TABLETS"),
            features(false, false)
        );
        assert_eq!(Features::parse(""), Features::default());
    }

    #[test]
    fn auto_turns_tablets_off_only_where_lwt_cannot_run_on_them() {
        let off = Some("tablets = {'enabled': false}");
        assert_eq!(
            keyspace_options(NTS, Tablets::Auto, features(true, false)),
            Ok(off)
        );
        assert_eq!(
            keyspace_options(NTS, Tablets::Auto, features(true, true)),
            Ok(None)
        );
        assert_eq!(
            keyspace_options(NTS, Tablets::Auto, Features::default()),
            Ok(None),
            "Cassandra or ScyllaDB 5: the option would be a syntax error"
        );
    }

    #[test]
    fn simple_strategy_gets_tablets_off_wherever_tablets_exist() {
        let simple = crate::migrate::DEFAULT_REPLICATION;
        let off = Some("tablets = {'enabled': false}");
        assert_eq!(
            keyspace_options(simple, Tablets::Auto, features(true, true)),
            Ok(off),
            "tablets by default would refuse SimpleStrategy"
        );
        assert_eq!(
            keyspace_options(simple, Tablets::Auto, Features::default()),
            Ok(None)
        );
        assert_eq!(
            keyspace_options(simple, Tablets::On, features(true, true)),
            Err(TabletsError::SimpleStrategy)
        );
    }

    #[test]
    fn explicit_choices() {
        let off = Some("tablets = {'enabled': false}");
        assert_eq!(
            keyspace_options(NTS, Tablets::Off, features(true, true)),
            Ok(off)
        );
        assert_eq!(
            keyspace_options(NTS, Tablets::Off, Features::default()),
            Ok(None)
        );
        assert_eq!(
            keyspace_options(NTS, Tablets::On, features(true, true)),
            Ok(Some("tablets = {'enabled': true}"))
        );
        assert_eq!(
            keyspace_options(NTS, Tablets::On, features(true, false)),
            Err(TabletsError::NoLwt)
        );
        assert_eq!(
            keyspace_options(NTS, Tablets::On, Features::default()),
            Err(TabletsError::Unsupported)
        );
    }

    #[test]
    fn replication_that_names_tablets_is_kept_as_given() {
        let given = format!("{NTS} AND tablets = {{'enabled': false}}");
        assert_eq!(
            keyspace_options(&given, Tablets::Auto, features(true, false)),
            Ok(None)
        );
        assert_eq!(
            keyspace_options(&given, Tablets::Off, features(true, false)),
            Err(TabletsError::Conflict)
        );
    }

    #[test]
    fn a_tablets_keyspace_needs_lwt_on_tablets() {
        let refused = check_keyspace("tern", true, features(true, false));
        assert_eq!(refused, Err(TabletsError::KeyspaceNeedsLwt("tern".into())));
        assert!(refused
            .map_err(|e| e.to_string())
            .is_err_and(|m| m.contains("--tablets off")));
        assert_eq!(check_keyspace("tern", true, features(true, true)), Ok(()));
        assert_eq!(check_keyspace("tern", false, features(true, false)), Ok(()));
    }

    #[test]
    fn tablets_flag_parses() {
        assert_eq!("AUTO".parse::<Tablets>().ok(), Some(Tablets::Auto));
        assert_eq!("off".parse::<Tablets>().ok(), Some(Tablets::Off));
        assert_eq!("on".parse::<Tablets>().ok(), Some(Tablets::On));
        assert!("maybe".parse::<Tablets>().is_err());
    }
}
