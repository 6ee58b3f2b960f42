//! Readiness (`/readyz`): the server can serve requests only when its
//! store answers a cheap read and, with the Redis presence backend, Redis
//! answers a PING. Each check has [`CHECK_TIMEOUT`]; the first that fails
//! is the one-line reason of the 503.

use std::sync::Arc;
use std::time::Duration;

use fred::prelude::{Builder, Client, ClientLike, ReconnectPolicy};
use tern_store::Store;

use crate::presence::redis::RedisNode;

/// How long one readiness check may take before it counts as failed
/// (kubelet's default probe timeout is 1 s; Prometheus scrapes take 10 s).
pub const CHECK_TIMEOUT: Duration = Duration::from_millis(900);

/// A user name no account can have (`tern_proto::handle::validate_handle`
/// refuses spaces at registration), read to see that the store answers.
const PROBE_USER: &str = "tern readiness probe";

/// What `/readyz` checks.
pub struct Readiness {
    store: Arc<dyn Store>,
    redis: Option<Client>,
}

impl Readiness {
    /// The checks of a server on `store`, and on Redis when `redis` is its
    /// presence node. Must run on the admin thread's runtime (the Redis
    /// client connects in the background, retrying).
    pub fn new(store: Arc<dyn Store>, redis: Option<&RedisNode>) -> Self {
        let redis = redis.and_then(|node| {
            let mut builder = Builder::from_config(node.client_config().clone());
            builder
                .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
                .with_config(|c| c.fail_fast = true)
                .with_performance_config(|p| p.default_command_timeout = CHECK_TIMEOUT);
            let client = builder
                .build()
                .inspect_err(|e| tracing::warn!(error = %e, "readiness: no Redis client"))
                .ok()?;
            let _connection = client.connect();
            Some(client)
        });
        Readiness {
            store: store.clone(),
            redis,
        }
    }

    /// `Ok` when every check passes, else why not (one line).
    pub async fn check(&self) -> Result<(), String> {
        match tokio::time::timeout(CHECK_TIMEOUT, self.store.devices(PROBE_USER)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("store: {e}")),
            Err(_) => return Err(format!("store: no answer within {CHECK_TIMEOUT:?}")),
        }
        let Some(redis) = &self.redis else {
            return Ok(());
        };
        match tokio::time::timeout(CHECK_TIMEOUT, redis.ping::<String>(None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err(format!("redis: no answer within {CHECK_TIMEOUT:?}")),
        }
    }
}
