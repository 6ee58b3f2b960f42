//! Opening the ScyllaDB store for `tern serve` (`store = "scylla"`): a
//! dedicated multi-thread tokio runtime (threads `tern-scylla`, 2 workers)
//! builds the driver session and keeps its background tasks (one router
//! task per connection, the pool refillers, the cluster metadata worker)
//! for the server's life, owned by [`StoreRuntime`] in the `ServerHandle`.
//!
//! The shards then call the store's async methods from their own
//! current-thread runtimes. That is sound with the `scylla` 1.x driver:
//! the tasks a session needs are spawned (`tokio::spawn`) when it is built
//! or when its pools refill, i.e. on this runtime, and a request hands its
//! frame to the connection's router task over channels, which work across
//! runtimes; the request's own timeout (`tokio::time::timeout` in
//! `client/execution.rs`) runs on the caller's runtime, whose timer the
//! shards enable. Paged iteration (`execute_iter`) would spawn its worker
//! on the caller's runtime; the store uses only single-page requests.

use std::sync::Arc;
use std::time::Duration;

use tern_store_scylla::{OpenError, ScyllaConfig, ScyllaStore};

/// Worker threads of the driver's runtime: its tasks only move frames
/// between sockets and channels (the shards do the work), so two suffice.
const WORKERS: usize = 2;

/// Why the ScyllaDB store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ScyllaStartError {
    #[error("cannot start the ScyllaDB driver's runtime: {0}")]
    Runtime(std::io::Error),
    #[error("ScyllaDB store: {0}")]
    Open(#[from] OpenError),
    #[error(
        "ScyllaDB at {nodes} did not answer within {secs} s (scylla_open_timeout_secs): check \
         that the nodes are up and reachable from this host on their CQL port, and that \
         scylla_nodes (TERN_SCYLLA_NODES) names them"
    )]
    Timeout { nodes: String, secs: u64 },
    #[error("the ScyllaDB driver's runtime stopped while opening the store")]
    Stopped,
}

/// The runtime that owns the driver's connections. Dropping it shuts it
/// down in the background (a runtime must not be dropped, blocking, inside
/// async code, and the server handle may be dropped there).
pub struct StoreRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for StoreRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreRuntime")
    }
}

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Starts the driver's runtime and opens the store on it: connects,
/// checks that the keyspace's schema version is exactly this binary's
/// newest migration (else asks for `tern migrate`, or a newer binary), and
/// prepares the statements, all within `open_timeout`. Blocks the calling
/// thread (it may be inside async code: nothing here blocks *on* a
/// runtime).
pub fn open(
    config: &ScyllaConfig,
    open_timeout: Duration,
) -> Result<(Arc<ScyllaStore>, StoreRuntime), ScyllaStartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .thread_name("tern-scylla")
        .enable_all()
        .build()
        .map_err(ScyllaStartError::Runtime)?;
    let runtime = StoreRuntime {
        runtime: Some(runtime),
    };
    let (done, opened) = std::sync::mpsc::channel();
    let owned = config.clone();
    if let Some(rt) = &runtime.runtime {
        rt.spawn(async move {
            let _ = done.send(ScyllaStore::open(&owned).await);
        });
    }
    let store = match opened.recv_timeout(open_timeout) {
        Ok(result) => result?,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            return Err(ScyllaStartError::Timeout {
                nodes: config.nodes.join(","),
                secs: open_timeout.as_secs(),
            })
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            return Err(ScyllaStartError::Stopped)
        }
    };
    tracing::info!(
        nodes = %config.nodes.join(","),
        keyspace = %config.keyspace,
        consistency = %config.consistency,
        "ScyllaDB store opened"
    );
    Ok((Arc::new(store), runtime))
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Nothing listens on port 1: the open fails (connection refused)
    /// well within its bound, saying what to check, and dropping the
    /// runtime inside async code does not panic.
    #[tokio::test]
    async fn an_unreachable_node_fails_with_what_to_check() {
        let mut config = ScyllaConfig::new(vec!["127.0.0.1:1".to_owned()]);
        config.connect_timeout = Duration::from_millis(500);
        let err = open(&config, Duration::from_secs(60)).expect_err("nothing listens");
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1:1") && text.contains("reachable"),
            "{text}"
        );
    }

    /// A node that accepts TCP connections but never speaks CQL: the open
    /// is cut off by its bound (the driver's connect timeout, 60 s here,
    /// covers only the TCP connect) with the timeout error.
    #[test]
    fn a_silent_node_is_cut_off_by_the_open_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let holder = std::thread::spawn(move || {
            let mut held = Vec::new();
            listener.set_nonblocking(true).unwrap();
            while stop_rx.try_recv().is_err() {
                match listener.accept() {
                    Ok((socket, _)) => held.push(socket),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        let mut config = ScyllaConfig::new(vec![addr.to_string()]);
        config.connect_timeout = Duration::from_secs(60);
        let err = open(&config, Duration::from_secs(1)).expect_err("never answers");
        assert!(
            matches!(err, ScyllaStartError::Timeout { secs: 1, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("scylla_open_timeout_secs"),
            "{err}"
        );
        let _ = stop_tx.send(());
        holder.join().unwrap();
    }
}
