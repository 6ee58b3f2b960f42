//! [`ScyllaConfig`]: where the cluster is and how the store talks to it
//! (consistency, timeouts), with the defaults an operator gets.

use std::time::Duration;

use scylla::statement::{Consistency, SerialConsistency};

/// How the ScyllaDB store connects. Every field has a default
/// ([`ScyllaConfig::new`] takes the nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScyllaConfig {
    /// Contact points, `host:port` (the CQL port, 9042 by default). The
    /// driver discovers the rest of the cluster from them and routes each
    /// request to a replica of its partition (token-aware, the driver's
    /// default load balancing).
    pub nodes: Vec<String>,
    /// The keyspace `tern migrate` created (default `tern`).
    pub keyspace: String,
    /// Consistency of every read and write (default
    /// [`ScyllaConsistency::LocalQuorum`]); lightweight transactions use
    /// `LOCAL_SERIAL` for their Paxos phase.
    pub consistency: ScyllaConsistency,
    /// Client-side limit of one request, retries included (default 5 s);
    /// past it the call fails with a retryable `Timeout`.
    pub request_timeout: Duration,
    /// Limit of opening one connection (default 5 s).
    pub connect_timeout: Duration,
    /// Limit of opening the session as a whole: every contact point tried
    /// and the cluster's topology read (default 30 s). A host that accepts
    /// TCP but never answers CQL is given up on after it.
    pub session_timeout: Duration,
}

/// The default keyspace.
pub const DEFAULT_KEYSPACE: &str = "tern";

impl ScyllaConfig {
    /// The defaults, with `nodes` as contact points.
    pub fn new(nodes: Vec<String>) -> Self {
        ScyllaConfig {
            nodes,
            keyspace: DEFAULT_KEYSPACE.to_string(),
            consistency: ScyllaConsistency::LocalQuorum,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            session_timeout: Duration::from_secs(30),
        }
    }
}

/// The consistency levels tern accepts (CQL names, case-insensitive:
/// `one`, `local_one`, `quorum`, `local_quorum`, `each_quorum`, `all`).
/// In a configuration file it is that name (`"LOCAL_QUORUM"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum ScyllaConsistency {
    One,
    LocalOne,
    Quorum,
    #[default]
    LocalQuorum,
    EachQuorum,
    All,
}

/// An unknown consistency name.
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown consistency {0:?}; use one of one, local_one, quorum, local_quorum, each_quorum, all"
)]
pub struct ConsistencyError(pub String);

impl std::str::FromStr for ScyllaConsistency {
    type Err = ConsistencyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "one" => ScyllaConsistency::One,
            "local_one" => ScyllaConsistency::LocalOne,
            "quorum" => ScyllaConsistency::Quorum,
            "local_quorum" => ScyllaConsistency::LocalQuorum,
            "each_quorum" => ScyllaConsistency::EachQuorum,
            "all" => ScyllaConsistency::All,
            _ => return Err(ConsistencyError(s.to_string())),
        })
    }
}

impl TryFrom<String> for ScyllaConsistency {
    type Error = ConsistencyError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<ScyllaConsistency> for String {
    fn from(level: ScyllaConsistency) -> String {
        level.name().to_owned()
    }
}

impl std::fmt::Display for ScyllaConsistency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl ScyllaConsistency {
    /// The CQL name, upper case (`LOCAL_QUORUM`).
    pub fn name(self) -> &'static str {
        match self {
            ScyllaConsistency::One => "ONE",
            ScyllaConsistency::LocalOne => "LOCAL_ONE",
            ScyllaConsistency::Quorum => "QUORUM",
            ScyllaConsistency::LocalQuorum => "LOCAL_QUORUM",
            ScyllaConsistency::EachQuorum => "EACH_QUORUM",
            ScyllaConsistency::All => "ALL",
        }
    }

    /// The driver's level.
    pub fn driver(self) -> Consistency {
        match self {
            ScyllaConsistency::One => Consistency::One,
            ScyllaConsistency::LocalOne => Consistency::LocalOne,
            ScyllaConsistency::Quorum => Consistency::Quorum,
            ScyllaConsistency::LocalQuorum => Consistency::LocalQuorum,
            ScyllaConsistency::EachQuorum => Consistency::EachQuorum,
            ScyllaConsistency::All => Consistency::All,
        }
    }

    /// The level reads run at: this one, except `EACH_QUORUM`, which
    /// ScyllaDB accepts for writes only ("EACH_QUORUM ConsistencyLevel is
    /// only supported for writes", db/consistency_level.cc
    /// `validate_for_read`): reads then run at `QUORUM`, which overlaps
    /// every `EACH_QUORUM` write (a quorum in each datacenter is a majority
    /// of all replicas).
    pub fn read(self) -> Consistency {
        match self {
            ScyllaConsistency::EachQuorum => Consistency::Quorum,
            other => other.driver(),
        }
    }

    /// Whether this level is below a quorum: reads may then miss writes
    /// the cluster acknowledged, and an LWT's learn phase (which runs at
    /// this level) may not reach the replica a later read asks.
    pub fn below_quorum(self) -> bool {
        matches!(self, ScyllaConsistency::One | ScyllaConsistency::LocalOne)
    }

    /// The Paxos consistency of lightweight transactions at this level:
    /// `SERIAL` for the cluster-wide levels, `LOCAL_SERIAL` otherwise.
    pub fn serial(self) -> SerialConsistency {
        match self {
            ScyllaConsistency::Quorum | ScyllaConsistency::EachQuorum | ScyllaConsistency::All => {
                SerialConsistency::Serial
            }
            _ => SerialConsistency::LocalSerial,
        }
    }
}

/// Parses a comma-separated node list (`host:port,host:port`); blanks are
/// skipped. A node without a port gets 9042.
pub fn parse_nodes(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| {
            if n.rsplit_once(':')
                .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            {
                n.to_string()
            } else {
                format!("{n}:9042")
            }
        })
        .collect()
}

/// Whether `name` is a keyspace name CQL accepts unquoted: 1–48 chars of
/// `[a-z0-9_]`, starting with a letter.
pub fn valid_keyspace(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_names_parse() {
        assert_eq!(
            "LOCAL_QUORUM".parse::<ScyllaConsistency>().ok(),
            Some(ScyllaConsistency::LocalQuorum)
        );
        assert_eq!(
            "one".parse::<ScyllaConsistency>().ok(),
            Some(ScyllaConsistency::One)
        );
        assert!("three".parse::<ScyllaConsistency>().is_err());
        for level in [
            ScyllaConsistency::One,
            ScyllaConsistency::LocalOne,
            ScyllaConsistency::Quorum,
            ScyllaConsistency::LocalQuorum,
            ScyllaConsistency::EachQuorum,
            ScyllaConsistency::All,
        ] {
            assert_eq!(
                level.to_string().parse::<ScyllaConsistency>().ok(),
                Some(level)
            );
        }
        assert_eq!(
            ScyllaConsistency::default().serial(),
            SerialConsistency::LocalSerial
        );
    }

    #[test]
    fn reads_never_run_at_each_quorum() {
        assert_eq!(ScyllaConsistency::EachQuorum.read(), Consistency::Quorum);
        assert_eq!(
            ScyllaConsistency::EachQuorum.driver(),
            Consistency::EachQuorum
        );
        assert_eq!(
            ScyllaConsistency::LocalQuorum.read(),
            Consistency::LocalQuorum
        );
        assert!(ScyllaConsistency::LocalOne.below_quorum());
        assert!(!ScyllaConsistency::Quorum.below_quorum());
    }

    #[test]
    fn nodes_and_keyspaces() {
        assert_eq!(
            parse_nodes(" a:1, b ,,"),
            vec!["a:1".to_string(), "b:9042".to_string()]
        );
        assert!(valid_keyspace("tern_1"));
        assert!(!valid_keyspace("1tern") && !valid_keyspace("Tern") && !valid_keyspace("a;b"));
    }
}
