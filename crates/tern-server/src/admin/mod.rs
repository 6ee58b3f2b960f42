//! The admin HTTP port (`admin_addr`, issue 13): Prometheus metrics
//! (`GET /metrics`), liveness (`GET /healthz`: 200 while the process
//! serves) and readiness (`GET /readyz`: 200 when the store and, with the
//! Redis presence backend, Redis answer; else 503 with a one-line reason).
//! See docs/OPERATING.md for every metric.
//!
//! It runs on its own thread with a current-thread runtime, away from the
//! shards: a scrape renders the metrics there, and a slow or hostile client
//! holds at most one of [`MAX_CONNECTIONS`] connections for
//! [`http::READ_TIMEOUT`]. The listener is bound in `runtime::start_with`,
//! before any shard starts, so a taken port fails the start cleanly.

pub mod http;
pub mod metrics;
pub mod ready;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::LocalSet;

use self::http::{Request, Response};
use self::metrics::Sources;
use self::ready::Readiness;
use crate::mesh::Mesh;
use crate::presence::redis::RedisNode;
use crate::shard::ServerStats;
use crate::socket::ForwardingStats;
use tern_store::Store;

/// Admin connections served at once; more are closed at accept.
pub const MAX_CONNECTIONS: usize = 32;
/// How often recorded histogram samples are folded into buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// The content type of the Prometheus text exposition format 0.0.4.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds the admin listener (before the shards start).
///
/// # Errors
/// The address is taken or not local.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// What the admin thread reads.
pub struct AdminSetup {
    pub listener: std::net::TcpListener,
    pub stats: Arc<ServerStats>,
    pub forwarding: Arc<ForwardingStats>,
    pub mesh: Arc<Mesh>,
    pub store: Arc<dyn Store>,
    /// This node in the Redis presence backend (`None`: in-process).
    pub redis: Option<Arc<RedisNode>>,
    /// The server's shutdown: once set, `/readyz` answers 503 while the
    /// shards drain (metrics are still served).
    pub draining: watch::Receiver<bool>,
    /// Set once the shards are gone: the admin thread ends.
    pub stop: watch::Receiver<bool>,
}

/// Starts the admin thread; it ends when `stop` is set.
///
/// # Errors
/// The thread or its runtime could not be created.
pub fn spawn(setup: AdminSetup) -> std::io::Result<JoinHandle<()>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("tern-admin".into())
        .spawn(move || LocalSet::new().block_on(&rt, run(setup)))
}

struct Admin {
    stats: Arc<ServerStats>,
    forwarding: Arc<ForwardingStats>,
    mesh: Arc<Mesh>,
    readiness: Readiness,
    draining: watch::Receiver<bool>,
}

async fn run(setup: AdminSetup) {
    let listener = match TcpListener::from_std(setup.listener) {
        Ok(listener) => listener,
        Err(e) => {
            tracing::error!(error = %e, "admin port: cannot serve the bound listener");
            return;
        }
    };
    let admin = Rc::new(Admin {
        readiness: Readiness::new(setup.store, setup.redis.as_deref()),
        stats: setup.stats,
        forwarding: setup.forwarding,
        mesh: setup.mesh,
        draining: setup.draining,
    });
    admin.stats.telemetry.serve();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut upkeep = tokio::time::interval(UPKEEP_INTERVAL);
    let mut stop = setup.stop;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let Ok(permit) = permits.clone().try_acquire_owned() else { continue };
                let admin = admin.clone();
                tokio::task::spawn_local(async move {
                    serve(&admin, stream).await;
                    drop(permit);
                });
            }
            _ = upkeep.tick() => admin.stats.telemetry.upkeep(),
            _ = stop.changed() => return,
        }
    }
}

async fn serve(admin: &Admin, mut stream: TcpStream) {
    let response = match http::read_request(&mut stream).await {
        Request::Get(path) => admin.route(&path).await,
        Request::OtherMethod => Response::text(405, "only GET is served\n"),
        Request::Bad => Response::text(400, "send an HTTP/1.1 GET request\n"),
    };
    http::write_response(&mut stream, response).await;
}

impl Admin {
    async fn route(&self, path: &str) -> Response {
        match path {
            "/metrics" => Response {
                status: 200,
                content_type: PROMETHEUS_TEXT,
                body: self.stats.telemetry.render(&Sources {
                    cluster: self.mesh.cluster.get().map(|node| node.as_ref()),
                    stats: &self.stats,
                    push: self.mesh.pusher.get().map(crate::push::Pusher::stats),
                    forwarding: &self.forwarding,
                    owner_queues: self.mesh.owner_queue_depths(),
                }),
            },
            "/healthz" => Response::text(200, "ok\n"),
            "/readyz" => self.ready().await,
            _ => Response::text(404, "not found: try /metrics, /healthz or /readyz\n"),
        }
    }

    async fn ready(&self) -> Response {
        if *self.draining.borrow() {
            return Response::text(503, "not ready: shutting down\n");
        }
        match self.readiness.check().await {
            Ok(()) => Response::text(200, "ready\n"),
            Err(why) => {
                let line = why.replace(['\r', '\n'], " ");
                Response::text(503, format!("not ready: {line}\n"))
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_is_503_while_the_shards_drain_and_metrics_still_served() {
        let (mesh, _inboxes) = Mesh::new(1);
        let store: Arc<dyn Store> = Arc::new(tern_store::memory::MemStore::new());
        let forwarding = crate::socket::ForwardingChannels::new(1, 16)
            .expect("channels")
            .stats();
        let (draining, draining_rx) = watch::channel(false);
        let admin = Admin {
            stats: Arc::default(),
            forwarding,
            mesh,
            readiness: Readiness::new(store, None),
            draining: draining_rx,
        };
        assert_eq!(admin.route("/readyz").await.status, 200);
        draining.send(true).unwrap();
        let answer = admin.route("/readyz").await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (503, "not ready: shutting down\n")
        );
        assert_eq!(admin.route("/healthz").await.status, 200);
        assert_eq!(admin.route("/metrics").await.status, 200);
    }
}
