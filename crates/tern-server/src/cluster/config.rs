//! The cluster settings of one node, typed and validated before any port
//! is bound (the server's config wires them in; defaults in
//! [`ClusterConfig::default`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::check_node_id;
use super::links::LinkSettings;

/// One node's cluster settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id ([`super::NodeId`] rules). Default `tern-0`.
    pub node_id: String,
    /// UDP address the node-to-node endpoint binds. Default `0.0.0.0:4434`.
    pub listen: SocketAddr,
    /// Address the other nodes dial, registered in Redis. Default: `listen`,
    /// which must then not be unspecified (`0.0.0.0`, `[::]`); with port 0
    /// the port bound is registered.
    pub advertise: Option<SocketAddr>,
    /// Redis holding the membership (`redis://[user:password@]host:port[/db]`).
    /// Default `redis://127.0.0.1:6379`.
    pub redis_url: String,
    /// Lifetime of this node's membership key; heartbeats every third of
    /// it, and a stopped node leaves the others' views within `ttl` plus
    /// one heartbeat. 300 ms to 10 min; default 6 s.
    pub ttl: Duration,
    /// The cluster CA certificate (PEM), made by `tern cluster-ca`.
    pub ca_cert: PathBuf,
    /// The cluster CA private key (PEM, mode 0600).
    pub ca_key: PathBuf,
    /// Bound on one node-to-node call, connecting included. 100 ms to
    /// 10 min; default 5 s.
    pub call_timeout: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: "tern-0".to_owned(),
            listen: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 4434)),
            advertise: None,
            redis_url: "redis://127.0.0.1:6379".to_owned(),
            ttl: Duration::from_secs(6),
            ca_cert: PathBuf::from("cluster/ca.pem"),
            ca_key: PathBuf::from("cluster/ca.key"),
            call_timeout: LinkSettings::default().call_timeout,
        }
    }
}

/// A cluster setting that cannot work; `field` is the server setting's
/// name (`cluster_node_id`, `cluster_node_ttl_ms`, `cluster_advertise`,
/// `redis_url`), which the operator looks up, or `call_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("cluster setting {field}: {message}")]
pub struct ClusterConfigError {
    /// The setting.
    pub field: &'static str,
    /// What is wrong and what to set instead.
    pub message: String,
}

fn check(ok: bool, field: &'static str, message: &str) -> Result<(), ClusterConfigError> {
    match ok {
        true => Ok(()),
        false => Err(ClusterConfigError {
            field,
            message: message.to_owned(),
        }),
    }
}

impl ClusterConfig {
    /// Checks every setting (before any port is bound).
    ///
    /// # Errors
    /// The first setting that cannot work, saying why.
    pub fn validate(&self) -> Result<(), ClusterConfigError> {
        check_node_id(&self.node_id).map_err(|message| ClusterConfigError {
            field: "cluster_node_id",
            message,
        })?;
        let ttl_ok = (Duration::from_millis(300)..=Duration::from_secs(600)).contains(&self.ttl);
        check(
            ttl_ok,
            "cluster_node_ttl_ms",
            "must be 300 to 600000 (300 ms to 10 min)",
        )?;
        let call_ok =
            (Duration::from_millis(100)..=Duration::from_secs(600)).contains(&self.call_timeout);
        check(call_ok, "call_timeout", "must be 100 ms to 10 min")?;
        // Port 0 without `advertise` registers the port bound (tests, one host).
        let advertised = self.advertised();
        check(
            !advertised.ip().is_unspecified()
                && (advertised.port() != 0 || self.advertise.is_none()),
            "cluster_advertise",
            "set the address other nodes dial (cluster_listen binds an unspecified address)",
        )?;
        fred::prelude::Config::from_url(&self.redis_url).map_err(|e| ClusterConfigError {
            field: "redis_url",
            message: format!("{e}; expected redis://[user:password@]host:port[/db]"),
        })?;
        Ok(())
    }

    /// The address registered for the other nodes to dial.
    pub fn advertised(&self) -> SocketAddr {
        self.advertise.unwrap_or(self.listen)
    }

    /// The link settings these describe.
    pub fn link_settings(&self) -> LinkSettings {
        LinkSettings {
            call_timeout: self.call_timeout,
            ..LinkSettings::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_an_advertised_address() {
        let mut config = ClusterConfig::default();
        assert_eq!(
            config.validate().map_err(|e| e.field).err(),
            Some("cluster_advertise")
        );
        config.advertise = Some(SocketAddr::from(([10, 0, 0, 7], 4434)));
        assert!(config.validate().is_ok());
        for (field, bad) in [
            (
                "cluster_node_id",
                ClusterConfig {
                    node_id: "A".into(),
                    ..config.clone()
                },
            ),
            (
                "cluster_node_ttl_ms",
                ClusterConfig {
                    ttl: Duration::from_millis(10),
                    ..config.clone()
                },
            ),
            (
                "call_timeout",
                ClusterConfig {
                    call_timeout: Duration::ZERO,
                    ..config.clone()
                },
            ),
            (
                "redis_url",
                ClusterConfig {
                    redis_url: "not a url".into(),
                    ..config.clone()
                },
            ),
        ] {
            assert_eq!(bad.validate().map_err(|e| e.field).err(), Some(field));
        }
    }
}
