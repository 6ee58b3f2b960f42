//! Client plumbing shared by the scenarios: a handful of QUIC client
//! endpoints (each one UDP socket multiplexing many connections) per node
//! of the target, connection `i` going to node `i % n` (so the two
//! partners of a `chat` pair, users `2p` and `2p + 1`, sit on different
//! nodes of a cluster), counting the connections each node got, opening
//! connections with a timeout and a clear error when the server is unreachable,
//! registering and authenticating devices, and request/response helpers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use quinn::{EndpointConfig, TokioRuntime};
use socket2::{Domain, Protocol, Socket, Type};
use tern_client::connection::{RawConnection, DEFAULT_SERVER_NAME};
use tern_client::tls::client_config;
use tern_client::TrustAnchor;
use tern_proto::body::auth;
use tern_proto::{Body, Frame, Request};

use crate::error::{LoadError, Result};
use crate::target::Node;

/// Kernel buffer asked for on each client socket: a handshake storm of
/// thousands of connections must not overflow the default buffers.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;
/// Request ids at or above this are the load generator's own control
/// requests (creates, acks), never message sends.
pub const CONTROL_ID_BASE: u64 = 1 << 62;

/// The client endpoints of one node, trusting its certificate.
struct NodeEndpoints {
    addr: SocketAddr,
    list: Vec<quinn::Endpoint>,
    /// Connections opened to the node by [`Endpoints::connect`].
    opened: AtomicU64,
}

/// Client endpoints of every node; connections spread over nodes, then
/// over a node's endpoints, round-robin.
pub struct Endpoints {
    nodes: Vec<NodeEndpoints>,
    /// The first node's address (the only one but for a cluster).
    pub addr: SocketAddr,
    pub timeout: Duration,
}

impl Endpoints {
    /// Opens `count` endpoints in all (at least one per node), each
    /// trusting its node's fingerprint (call inside the runtime).
    pub fn new(count: usize, nodes: &[Node], timeout: Duration) -> Result<Arc<Endpoints>> {
        let first = nodes
            .first()
            .ok_or_else(|| LoadError::Usage("no server to connect to".into()))?;
        let per_node = count.div_ceil(nodes.len()).max(1);
        let nodes = nodes
            .iter()
            .map(|node| node_endpoints(node, per_node))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Endpoints {
            nodes,
            addr: first.addr,
            timeout,
        }))
    }

    /// A new raw connection (QUIC handshake done, control stream open) to
    /// node `i % nodes`, on that node's endpoint `(i / nodes) % count`.
    pub async fn connect(&self, i: usize) -> Result<RawConnection> {
        let n = self.nodes.len().max(1);
        let node = self.nodes.get(i % n);
        let conn = self.connect_to(node, i / n).await?;
        if let Some(node) = node {
            node.opened.fetch_add(1, Ordering::Relaxed);
        }
        Ok(conn)
    }

    async fn connect_to(&self, node: Option<&NodeEndpoints>, j: usize) -> Result<RawConnection> {
        let Some((node, endpoint)) =
            node.and_then(|n| n.list.get(j % n.list.len().max(1)).map(|e| (n, e)))
        else {
            return Err(LoadError::Usage("no client endpoint".into()));
        };
        let connect = RawConnection::connect(endpoint, node.addr, DEFAULT_SERVER_NAME);
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(LoadError::Connection(e)),
            Err(_) => Err(LoadError::Timeout {
                what: format!("the QUIC handshake with {}", node.addr),
                secs: self.timeout.as_secs(),
            }),
        }
    }

    /// Checks that every node answers a handshake, then opens one
    /// connection to the first and registers on it, turning any failure
    /// into a clear "unreachable" or "refused" error: run before a scenario
    /// starts. Probes are not counted as the nodes' connections.
    pub async fn probe(&self, user: &str) -> Result<(Device, RawConnection)> {
        let unreachable = |addr: SocketAddr| {
            move |e: LoadError| LoadError::Unreachable {
                addr,
                detail: e.to_string(),
            }
        };
        for node in self.nodes.iter().skip(1) {
            let conn = self
                .connect_to(Some(node), 0)
                .await
                .map_err(unreachable(node.addr))?;
            conn.connection.close(0u32.into(), b"probe");
        }
        let mut conn = self
            .connect_to(self.nodes.first(), 0)
            .await
            .map_err(unreachable(self.addr))?;
        let device = register(&mut conn, user, self.timeout).await?;
        Ok((device, conn))
    }

    /// Connections opened to each node so far, in node order.
    pub fn opened(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.opened.load(Ordering::Relaxed))
            .collect()
    }

    /// Closes every connection and waits (briefly) for the endpoints to go idle.
    pub async fn shutdown(&self) {
        let all = || self.nodes.iter().flat_map(|n| n.list.iter());
        for endpoint in all() {
            endpoint.close(0u32.into(), b"load run over");
        }
        for endpoint in all() {
            let _ = tokio::time::timeout(Duration::from_secs(3), endpoint.wait_idle()).await;
        }
    }
}

/// `count` endpoints trusting `node`'s fingerprint.
fn node_endpoints(node: &Node, count: usize) -> Result<NodeEndpoints> {
    let config = client_config(&TrustAnchor::Fingerprint(node.fingerprint))
        .map_err(tern_client::connection::ConnectionError::from)?;
    let bind: SocketAddr = if node.addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .map_err(|_| LoadError::Usage("bind address".into()))?;
    let mut list = Vec::with_capacity(count);
    for _ in 0..count {
        let mut endpoint = endpoint(bind)?;
        endpoint.set_default_client_config(config.clone());
        list.push(endpoint);
    }
    Ok(NodeEndpoints {
        addr: node.addr,
        list,
        opened: AtomicU64::new(0),
    })
}

fn endpoint(bind: SocketAddr) -> Result<quinn::Endpoint> {
    let socket = Socket::new(Domain::for_address(bind), Type::DGRAM, Some(Protocol::UDP))
        .map_err(LoadError::Socket)?;
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket.set_nonblocking(true).map_err(LoadError::Socket)?;
    socket.bind(&bind.into()).map_err(LoadError::Socket)?;
    quinn::Endpoint::new(
        EndpointConfig::default(),
        None,
        socket.into(),
        Arc::new(TokioRuntime),
    )
    .map_err(LoadError::Socket)
}

/// A registered device of a load-generator user.
#[derive(Clone)]
pub struct Device {
    pub user: String,
    pub device: u32,
    pub key: SigningKey,
}

/// A short random id that keeps user names of different runs apart.
pub fn run_id() -> String {
    format!("{:06x}", rand::random::<u32>() & 0x00ff_ffff)
}

/// The handle of user `i` of a run: `lg{run}-{tag}{i}`.
pub fn user_name(run: &str, tag: &str, i: usize) -> String {
    format!("lg{run}-{tag}{i}")
}

/// Registers `user` with a fresh Ed25519 key as the connection's first frame.
pub async fn register(conn: &mut RawConnection, user: &str, timeout: Duration) -> Result<Device> {
    let key = SigningKey::generate(&mut rand::thread_rng());
    let frame = conn.register_frame(1, user, "tern-load", &key)?;
    let body = request(conn, &frame, "registration", timeout).await?;
    let registered = expect::<auth::Register>("registration", body)?;
    Ok(Device {
        user: user.to_owned(),
        device: registered.device,
        key,
    })
}

/// Authenticates an existing device as the connection's first frame.
pub async fn authenticate(
    conn: &mut RawConnection,
    device: &Device,
    timeout: Duration,
) -> Result<()> {
    let frame = conn.authenticate_frame(1, &device.user, device.device, &device.key)?;
    let body = request(conn, &frame, "authentication", timeout).await?;
    expect::<auth::Authenticate>("authentication", body)?;
    Ok(())
}

/// Sends one request and waits for its response (skipping server pushes);
/// an `Error` answer becomes [`LoadError::Refused`].
pub async fn request(
    conn: &mut RawConnection,
    frame: &Frame,
    what: &str,
    timeout: Duration,
) -> Result<Body> {
    let exchange = async {
        conn.sender.frame(frame).await?;
        loop {
            let Some(reply) = conn.receiver.next().await? else {
                return Err(LoadError::Closed(what.to_owned()));
            };
            if reply.request_id == frame.request_id {
                return Ok(reply.body);
            }
        }
    };
    let body = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| LoadError::Timeout {
            what: what.to_owned(),
            secs: timeout.as_secs(),
        })??;
    refused(what, body)
}

/// Turns an `Error` body into [`LoadError::Refused`].
pub fn refused(what: &str, body: Body) -> Result<Body> {
    match body {
        Body::Error(e) => Err(LoadError::Refused {
            what: what.to_owned(),
            code: format!("{:?}", e.code),
            message: e.message,
        }),
        body => Ok(body),
    }
}

/// Sends `req` as frame `request_id` and returns its typed answer: an
/// `Error` is [`LoadError::Refused`], any other body than `R::Response`
/// [`LoadError::Unexpected`].
pub async fn call<R: Request>(
    conn: &mut RawConnection,
    request_id: u64,
    req: R,
    what: &str,
    timeout: Duration,
) -> Result<R::Response> {
    let body = request(conn, &Frame::new(request_id, req), what, timeout).await?;
    expect::<R>(what, body)
}

/// The answer to `R` in a non-refusal `body`, or [`LoadError::Unexpected`].
pub fn expect<R: Request>(what: &str, body: Body) -> Result<R::Response> {
    R::Response::try_from(body).map_err(|other| unexpected(what, &other))
}

pub fn unexpected(what: &str, body: &Body) -> LoadError {
    let got = format!("{body:?}");
    LoadError::Unexpected {
        what: what.to_owned(),
        got: got.chars().take(120).collect(),
    }
}
