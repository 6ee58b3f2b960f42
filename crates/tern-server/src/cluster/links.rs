//! Node-to-node links: one quinn endpoint (its own UDP port) on a named
//! thread, `tern-cluster`, with its own current-thread runtime. The
//! [`NodeLinks`] handle is `Send + Sync`; its methods talk to the thread
//! through channels, so they work from any tokio runtime (each shard runs
//! its own). Connections to each peer are opened on first use, cached, and
//! reopened after they fail. A call is one bidirectional stream, a push one
//! unidirectional stream ([`super::wire`] framing); both are bounded by
//! [`MAX_NODE_MESSAGE`] and by [`LinkSettings::call_timeout`]. Every inbound
//! call and push goes to the [`NodeHandler`], on the link thread, with the
//! caller's node id as its verified client certificate names it.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch};

use super::links_thread::{self, Request, Setup};
use super::tls::{ClusterTls, ClusterTlsError};
use super::{NodeId, NodeInfo};

pub use super::wire::MAX_NODE_MESSAGE;

/// Requests waiting for the link thread, at most (callers then wait).
const REQUEST_QUEUE: usize = 1024;

/// What the server does with calls and pushes from other nodes. Runs on
/// the link thread: forward to the shards, do not block.
#[async_trait::async_trait]
pub trait NodeHandler: Send + Sync + 'static {
    /// Answers `request` from node `from` (its certificate's node id). The
    /// answer must not exceed [`MAX_NODE_MESSAGE`] (the caller then gets
    /// [`LinkError::TooLarge`]) and must come within the call timeout.
    async fn call(&self, from: &NodeId, request: Bytes) -> Bytes;
    /// Takes `message` from node `from`; nothing is answered.
    async fn push(&self, from: &NodeId, message: Bytes);
}

/// Tuning of the node links. `Default` gives the documented values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkSettings {
    /// Bound on one call or push, connecting included. Default 5 s.
    pub call_timeout: Duration,
    /// A connection with no packet for this long is closed; pings every
    /// third of it keep a live one open. Default 10 s.
    pub idle_timeout: Duration,
    /// Streams (calls in flight, pushes being read) one peer may have open
    /// at once, each direction. Default 64.
    pub max_streams_per_peer: u32,
    /// Inbound connections at once (one per peer node is the norm). Default 64.
    pub max_inbound_connections: usize,
    /// Bytes of inbound call and push bodies one peer connection holds at
    /// once until each is handled; a message waits for room within the
    /// call timeout (one larger than the budget takes all of it), and a
    /// peer that fills it stalls only its own messages. Without it, each of
    /// a peer's streams could hold [`MAX_NODE_MESSAGE`]. With
    /// `max_inbound_connections`, it bounds all inbound bodies. Default 64 MiB.
    pub inbound_buffer_bytes: usize,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            call_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            max_streams_per_peer: 64,
            max_inbound_connections: 64,
            inbound_buffer_bytes: 64 << 20,
        }
    }
}

/// Why a node-to-node call or push failed, or the links could not start.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No connection could be made to the node.
    #[error("cannot reach node {node} at {addr}: {reason}; check that it runs, that its cluster listen address is {addr}, and that UDP to it is open")]
    Unreachable {
        node: NodeId,
        addr: SocketAddr,
        reason: String,
    },
    /// The TLS handshake failed: a certificate from another CA, or a node
    /// answering under another id than the one dialled.
    #[error("node {node} refused the connection or was refused: {reason}; check that both nodes load the same cluster CA (ca.pem, ca.key) and that the view's address of {node} is really {node}")]
    Refused { node: NodeId, reason: String },
    /// A request, response or push exceeds [`MAX_NODE_MESSAGE`].
    #[error("the {what} exceeds {max} bytes: send it in parts")]
    TooLarge { what: &'static str, max: usize },
    /// The node did not answer within the call timeout.
    #[error("node {node} did not answer within {after:?}; it may be overloaded or stopping")]
    Timeout { node: NodeId, after: Duration },
    /// The connection failed during the call (the node stopped or restarted).
    #[error("lost the connection to node {node}: {reason}; the next call reconnects")]
    Lost { node: NodeId, reason: String },
    /// These links are closed (the server is stopping).
    #[error("node links are closed: the server is stopping")]
    Closed,
    /// The UDP port could not be bound.
    #[error(
        "cannot bind the cluster address {addr}: {source}; is another process using the port?"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The TLS configuration could not be made.
    #[error("cluster TLS: {0}")]
    Tls(#[from] ClusterTlsError),
    /// The link thread could not start.
    #[error("cannot start the cluster link thread: {0}")]
    Start(String),
}

/// The handle to the node links of this node. Closing it (or dropping it)
/// stops the thread; in-flight calls then fail with [`LinkError::Closed`].
pub struct NodeLinks {
    requests: mpsc::Sender<Request>,
    stop: watch::Sender<bool>,
    local: SocketAddr,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl NodeLinks {
    /// Binds `listen` (UDP) and starts the link thread with the default
    /// [`LinkSettings`].
    ///
    /// # Errors
    /// [`LinkError::Bind`], [`LinkError::Tls`] or [`LinkError::Start`].
    pub fn start(
        tls: &ClusterTls,
        listen: SocketAddr,
        handler: Arc<dyn NodeHandler>,
    ) -> Result<NodeLinks, LinkError> {
        Self::start_with(tls, listen, handler, LinkSettings::default())
    }

    /// [`NodeLinks::start`] with these settings.
    ///
    /// # Errors
    /// As [`NodeLinks::start`].
    pub fn start_with(
        tls: &ClusterTls,
        listen: SocketAddr,
        handler: Arc<dyn NodeHandler>,
        settings: LinkSettings,
    ) -> Result<NodeLinks, LinkError> {
        let socket = UdpSocket::bind(listen).map_err(|source| LinkError::Bind {
            addr: listen,
            source,
        })?;
        let (requests, queue) = mpsc::channel(REQUEST_QUEUE);
        let (stop, stopped) = watch::channel(false);
        let (ready, started) = std::sync::mpsc::channel();
        let setup = Setup::new(tls, socket, handler, settings, queue, stopped)?;
        let thread = std::thread::Builder::new()
            .name("tern-cluster".to_owned())
            .spawn(move || links_thread::run(setup, ready))
            .map_err(|e| LinkError::Start(e.to_string()))?;
        let local = started
            .recv()
            .map_err(|_| LinkError::Start("the thread exited at once".to_owned()))??;
        Ok(NodeLinks {
            requests,
            stop,
            local,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The bound UDP address (the port is real when `listen` asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Sends `request` to node `to` and waits for its answer.
    ///
    /// # Errors
    /// [`LinkError::TooLarge`] at once for an oversize request; otherwise
    /// any of [`LinkError`]'s call variants, within the call timeout.
    pub async fn call(&self, to: &NodeInfo, request: Bytes) -> Result<Bytes, LinkError> {
        check_size(&request, "request")?;
        let (reply, answer) = oneshot::channel();
        let to = to.clone();
        self.send(Request::Call { to, request, reply }).await?;
        answer.await.map_err(|_| LinkError::Closed)?
    }

    /// Sends `message` to node `to`; `Ok` once the node's QUIC stack has
    /// acknowledged all of it (not once its handler ran).
    ///
    /// # Errors
    /// As [`NodeLinks::call`].
    pub async fn push(&self, to: &NodeInfo, message: Bytes) -> Result<(), LinkError> {
        check_size(&message, "push")?;
        let (reply, answer) = oneshot::channel();
        let to = to.clone();
        self.send(Request::Push { to, message, reply }).await?;
        answer.await.map_err(|_| LinkError::Closed)?
    }

    async fn send(&self, request: Request) -> Result<(), LinkError> {
        self.requests
            .send(request)
            .await
            .map_err(|_| LinkError::Closed)
    }

    /// Stops the link thread (connections closed, the port released) and
    /// waits for it, briefly; in-flight calls fail with [`LinkError::Closed`].
    /// Idempotent.
    pub fn close(&self) {
        let _ = self.stop.send(true);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            // A handler closing its own links must not wait for itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for NodeLinks {
    fn drop(&mut self) {
        self.close();
    }
}

fn check_size(message: &Bytes, what: &'static str) -> Result<(), LinkError> {
    match message.len() <= MAX_NODE_MESSAGE {
        true => Ok(()),
        false => Err(LinkError::TooLarge {
            what,
            max: MAX_NODE_MESSAGE,
        }),
    }
}
