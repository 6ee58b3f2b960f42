//! The store settings of `tern serve` that choose and reach the backend:
//! `store` (`fjall`, the embedded store, or `scylla`), the ScyllaDB
//! contact points, keyspace, consistency and timeouts, their `TERN_*`
//! variables, their validation (before any port is bound) and the
//! [`ScyllaConfig`] they describe. The fjall tuning (`store_*_mib`,
//! `journal_sync_interval_us`) stays in `config.rs`.

use std::time::Duration;

use tern_store_scylla::{parse_nodes, ScyllaConfig};

use crate::config::{check, ConfigError, ServerConfig};

/// Which store `tern serve` opens (`store`, `TERN_STORE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// The embedded fjall store in `<data_dir>/store` (the default): one
    /// process, so no cluster.
    #[default]
    Fjall,
    /// A ScyllaDB (or Cassandra) cluster at `scylla_nodes`, in the keyspace
    /// `tern migrate` prepared: shared by the nodes of a cluster.
    Scylla,
}

impl std::str::FromStr for StoreBackend {
    type Err = String;

    /// `fjall` or `scylla`, as in the config file.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fjall" => Ok(StoreBackend::Fjall),
            "scylla" => Ok(StoreBackend::Scylla),
            other => Err(format!("unknown store {other:?}: use fjall or scylla")),
        }
    }
}

/// Accepted range of the ScyllaDB timeouts, milliseconds.
const TIMEOUT_MS: std::ops::RangeInclusive<u64> = 100..=600_000;

impl ServerConfig {
    /// Reads `TERN_STORE`, `TERN_SCYLLA_NODES` (comma-separated, the
    /// variable `tern migrate` reads too), `TERN_SCYLLA_KEYSPACE`,
    /// `TERN_SCYLLA_CONSISTENCY`, `TERN_SCYLLA_REQUEST_TIMEOUT_MS`,
    /// `TERN_SCYLLA_CONNECT_TIMEOUT_MS` and `TERN_SCYLLA_OPEN_TIMEOUT_SECS`.
    pub(crate) fn apply_store_env(
        &mut self,
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        crate::config::env_parse(get, "TERN_STORE", &mut self.store)?;
        if let Some(list) = get("TERN_SCYLLA_NODES") {
            self.scylla_nodes = parse_nodes(&list);
        }
        if let Some(keyspace) = get("TERN_SCYLLA_KEYSPACE") {
            self.scylla_keyspace = keyspace;
        }
        crate::config::env_parse(get, "TERN_SCYLLA_CONSISTENCY", &mut self.scylla_consistency)?;
        crate::config::env_parse(
            get,
            "TERN_SCYLLA_REQUEST_TIMEOUT_MS",
            &mut self.scylla_request_timeout_ms,
        )?;
        crate::config::env_parse(
            get,
            "TERN_SCYLLA_CONNECT_TIMEOUT_MS",
            &mut self.scylla_connect_timeout_ms,
        )?;
        crate::config::env_parse(
            get,
            "TERN_SCYLLA_OPEN_TIMEOUT_SECS",
            &mut self.scylla_open_timeout_secs,
        )
    }

    /// Checks the ScyllaDB settings when `store = "scylla"` (the fields
    /// are ignored with fjall): at least one contact point, a plain CQL
    /// keyspace name, timeouts in range.
    pub(crate) fn validate_store_backend(&self) -> Result<(), ConfigError> {
        if self.store != StoreBackend::Scylla {
            return Ok(());
        }
        check(
            !self.scylla_nodes.is_empty(),
            "scylla_nodes",
            "store = \"scylla\" needs the ScyllaDB contact points: set scylla_nodes \
             (TERN_SCYLLA_NODES=host:9042,host:9042)",
        )?;
        check(
            self.scylla_nodes.iter().all(|n| !n.trim().is_empty()),
            "scylla_nodes",
            "an entry is empty; give host:port (the CQL port, 9042 by default)",
        )?;
        check(
            tern_store_scylla::config::valid_keyspace(&self.scylla_keyspace),
            "scylla_keyspace",
            "must be 1 to 48 of a-z, 0-9, _ starting with a letter (the keyspace `tern migrate` made)",
        )?;
        check(
            TIMEOUT_MS.contains(&self.scylla_request_timeout_ms),
            "scylla_request_timeout_ms",
            "must be 100 to 600000",
        )?;
        check(
            TIMEOUT_MS.contains(&self.scylla_connect_timeout_ms),
            "scylla_connect_timeout_ms",
            "must be 100 to 600000",
        )?;
        check(
            (1..=600).contains(&self.scylla_open_timeout_secs),
            "scylla_open_timeout_secs",
            "must be 1 to 600",
        )
    }

    /// A cluster node of `tern serve` keeps nothing a client needs in its
    /// own process or disk: its store must be ScyllaDB (each node would
    /// sequence into and read from its own embedded store) and its blob
    /// store S3 (with `fs`, an attachment uploaded through one node could
    /// not be downloaded through another). Checked by `start` before
    /// anything is opened or bound; a program calling `start_with` with a
    /// store of its own makes the same promise itself.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the setting to change.
    pub fn check_cluster_shares_stores(&self) -> Result<(), ConfigError> {
        if self.cluster_node_id.is_none() {
            return Ok(());
        }
        check(
            self.store == StoreBackend::Scylla,
            "cluster_node_id",
            "a cluster needs one store shared by its nodes, and the embedded store \
             belongs to one process: set store = \"scylla\" (TERN_STORE) with \
             scylla_nodes (README, Operating a cluster), or unset cluster_node_id",
        )?;
        check(
            self.blob_store.backend == crate::blob_backend::BlobBackend::S3,
            "blob_store.backend",
            "a cluster's nodes must share one blob store, or an attachment uploaded \
             through one node cannot be downloaded through another: set \
             blob_store.backend = \"s3\" with its bucket (TERN_BLOB_STORE_BACKEND=s3, \
             TERN_BLOB_STORE_S3_BUCKET; README, Attachments in S3)",
        )
    }

    /// How the ScyllaDB store connects, `None` unless `store = "scylla"`.
    /// Contact points without a port get 9042.
    pub fn scylla_config(&self) -> Option<ScyllaConfig> {
        if self.store != StoreBackend::Scylla {
            return None;
        }
        let mut config = ScyllaConfig::new(parse_nodes(&self.scylla_nodes.join(",")));
        config.keyspace = self.scylla_keyspace.clone();
        config.consistency = self.scylla_consistency;
        config.request_timeout = Duration::from_millis(self.scylla_request_timeout_ms);
        config.connect_timeout = Duration::from_millis(self.scylla_connect_timeout_ms);
        Some(config)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;
    use tern_store_scylla::ScyllaConsistency;

    #[test]
    fn a_cluster_node_must_share_its_store_and_blob_store() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            let mut c = ServerConfig::default();
            c.apply_env(|n| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| (*v).to_owned())
            })
            .expect("env");
            c
        };
        assert!(env(&[]).check_cluster_shares_stores().is_ok(), "one server");
        let on_fjall = env(&[("TERN_CLUSTER_NODE_ID", "tern-0")]);
        let refused = on_fjall.check_cluster_shares_stores().unwrap_err();
        assert!(refused.to_string().contains("cluster_node_id"), "{refused}");
        let blobs_on_disk = env(&[("TERN_CLUSTER_NODE_ID", "tern-0"), ("TERN_STORE", "scylla")]);
        let refused = blobs_on_disk.check_cluster_shares_stores().unwrap_err();
        assert!(
            refused.to_string().contains("blob_store.backend"),
            "{refused}"
        );
        let shared = env(&[
            ("TERN_CLUSTER_NODE_ID", "tern-0"),
            ("TERN_STORE", "scylla"),
            ("TERN_BLOB_STORE_BACKEND", "s3"),
            ("TERN_BLOB_STORE_S3_BUCKET", "tern-attachments"),
            ("TERN_BLOB_STORE_S3_ENDPOINT", "http://minio:9000"),
            ("TERN_BLOB_STORE_S3_REGION", "eu-west-1"),
            ("TERN_BLOB_STORE_S3_PREFIX", "prod"),
        ]);
        assert!(shared.check_cluster_shares_stores().is_ok());
        let blobs = &shared.blob_store;
        assert_eq!(blobs.s3_endpoint.as_deref(), Some("http://minio:9000"));
        assert_eq!(
            (
                blobs.s3_bucket.as_str(),
                blobs.s3_region.as_str(),
                blobs.s3_prefix.as_str()
            ),
            ("tern-attachments", "eu-west-1", "prod")
        );
        let mut c = ServerConfig::default();
        let bad = c.apply_env(|n| (n == "TERN_BLOB_STORE_BACKEND").then(|| "ftp".into()));
        assert!(bad.unwrap_err().to_string().contains("use fs or s3"));
    }

    #[test]
    fn fjall_is_the_default_and_ignores_the_scylla_settings() {
        let c = ServerConfig::default();
        assert_eq!(c.store, StoreBackend::Fjall);
        assert_eq!(c.scylla_keyspace, "tern");
        assert_eq!(c.scylla_consistency, ScyllaConsistency::LocalQuorum);
        assert!(c.scylla_config().is_none());
        let c = ServerConfig {
            scylla_keyspace: "Not valid".into(),
            ..ServerConfig::default()
        };
        c.validate().expect("scylla settings are unused with fjall");
    }

    #[test]
    fn scylla_without_nodes_is_refused() {
        let c: ServerConfig = toml::from_str("store = \"scylla\"").expect("parses");
        let err = c.validate().expect_err("no nodes");
        let text = err.to_string();
        assert!(
            text.contains("scylla_nodes") && text.contains("TERN_SCYLLA_NODES"),
            "{text}"
        );
    }

    #[test]
    fn scylla_settings_from_toml_and_env() {
        let c: ServerConfig = toml::from_str(
            "store = \"scylla\"\nscylla_nodes = [\"10.0.0.1\", \"10.0.0.2:19042\"]\n\
             scylla_consistency = \"QUORUM\"\nscylla_request_timeout_ms = 2000\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        let scylla = c.scylla_config().expect("scylla");
        assert_eq!(scylla.nodes, ["10.0.0.1:9042", "10.0.0.2:19042"]);
        assert_eq!(scylla.consistency, ScyllaConsistency::Quorum);
        assert_eq!(scylla.request_timeout, Duration::from_secs(2));

        let mut c = ServerConfig::default();
        let env = |name: &str| match name {
            "TERN_STORE" => Some("scylla".to_owned()),
            "TERN_SCYLLA_NODES" => Some("a:1, b".to_owned()),
            "TERN_SCYLLA_KEYSPACE" => Some("tern_prod".to_owned()),
            "TERN_SCYLLA_CONSISTENCY" => Some("local_one".to_owned()),
            _ => None,
        };
        c.apply_env(env).expect("valid");
        c.validate().expect("valid");
        let scylla = c.scylla_config().expect("scylla");
        assert_eq!(scylla.nodes, ["a:1", "b:9042"]);
        assert_eq!(scylla.keyspace, "tern_prod");
        assert_eq!(scylla.consistency, ScyllaConsistency::LocalOne);
    }

    #[test]
    fn bad_scylla_settings_name_their_field() {
        let mut c = ServerConfig::default();
        let err = c
            .apply_env(|n| (n == "TERN_STORE").then(|| "postgres".to_owned()))
            .expect_err("unknown store");
        assert!(err.to_string().contains("TERN_STORE"), "{err}");
        let err = c
            .apply_env(|n| (n == "TERN_SCYLLA_CONSISTENCY").then(|| "three".to_owned()))
            .expect_err("unknown level");
        assert!(err.to_string().contains("TERN_SCYLLA_CONSISTENCY"), "{err}");
        let base = "store = \"scylla\"\nscylla_nodes = [\"127.0.0.1:9042\"]\n";
        for (extra, field) in [
            ("scylla_keyspace = \"1tern\"", "scylla_keyspace"),
            ("scylla_request_timeout_ms = 0", "scylla_request_timeout_ms"),
            (
                "scylla_connect_timeout_ms = 700000",
                "scylla_connect_timeout_ms",
            ),
            ("scylla_open_timeout_secs = 0", "scylla_open_timeout_secs"),
            ("scylla_nodes = [\" \"]", "scylla_nodes"),
        ] {
            let text = if extra.starts_with("scylla_nodes") {
                format!("store = \"scylla\"\n{extra}")
            } else {
                format!("{base}{extra}")
            };
            let c: ServerConfig = toml::from_str(&text).expect("parses");
            let err = c.validate().expect_err(extra);
            assert!(err.to_string().contains(field), "{extra}: {err}");
        }
        assert!(toml::from_str::<ServerConfig>("scylla_consistency = \"three\"").is_err());
    }
}
