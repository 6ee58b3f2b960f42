//! The `tern-cluster` thread behind [`super::NodeLinks`]: its runtime, the
//! endpoint, the cache of outbound connections (one per peer node, opened
//! on first use, dropped when it closes) and the inbound side that hands
//! calls and pushes to the [`NodeHandler`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use quinn::{Connection, ConnectionError, Endpoint, EndpointConfig, TransportConfig, VarInt};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{spawn_local, LocalSet};
use tokio::time::{timeout_at, Instant};

use super::links::{LinkError, LinkSettings, NodeHandler};
use super::tls::ClusterTls;
use super::wire::{
    read_body, read_len, read_message, write_message, WireError, CODE_CLOSING, CODE_NO_NODE_NAME,
    CODE_TOO_LARGE, CODE_UNANSWERED, MAX_NODE_MESSAGE,
};
use super::{NodeId, NodeInfo};

/// How long a closing endpoint waits for its close to reach the peers.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// After a dial that got no answer, how long calls to that address fail at
/// once before it is dialled again (a restarted node is reachable again
/// at most this late).
const SILENT_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// One request from the handle.
pub(super) enum Request {
    Call {
        to: NodeInfo,
        request: Bytes,
        reply: oneshot::Sender<Result<Bytes, LinkError>>,
    },
    Push {
        to: NodeInfo,
        message: Bytes,
        reply: oneshot::Sender<Result<(), LinkError>>,
    },
}

/// What the thread starts from.
pub(super) struct Setup {
    socket: UdpSocket,
    endpoint_config: EndpointConfig,
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
    handler: Arc<dyn NodeHandler>,
    settings: LinkSettings,
    queue: mpsc::Receiver<Request>,
    stop: watch::Receiver<bool>,
}

impl Setup {
    pub(super) fn new(
        tls: &ClusterTls,
        socket: UdpSocket,
        handler: Arc<dyn NodeHandler>,
        settings: LinkSettings,
        queue: mpsc::Receiver<Request>,
        stop: watch::Receiver<bool>,
    ) -> Result<Setup, LinkError> {
        let transport = Arc::new(transport(&settings)?);
        let mut server = tls.server_config()?;
        server.transport_config(transport.clone());
        let mut client = tls.client_config()?;
        client.transport_config(transport);
        Ok(Setup {
            socket,
            endpoint_config: EndpointConfig::new(tls.reset_key()),
            server,
            client,
            handler,
            settings,
            queue,
            stop,
        })
    }
}

fn transport(settings: &LinkSettings) -> Result<TransportConfig, LinkError> {
    let idle = quinn::IdleTimeout::try_from(settings.idle_timeout).map_err(|_| {
        LinkError::Start(format!(
            "idle timeout {:?} too large",
            settings.idle_timeout
        ))
    })?;
    let streams = VarInt::from_u32(settings.max_streams_per_peer);
    let mut t = TransportConfig::default();
    t.max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(settings.idle_timeout / 3))
        .max_concurrent_bidi_streams(streams)
        .max_concurrent_uni_streams(streams)
        .stream_receive_window(VarInt::from_u32(4 << 20))
        .receive_window(VarInt::from_u32(16 << 20))
        .send_window(16 << 20);
    Ok(t)
}

/// The thread's body: reports the bound address (or why not) on `ready`,
/// then serves until stopped.
pub(super) fn run(setup: Setup, ready: std::sync::mpsc::Sender<Result<SocketAddr, LinkError>>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(LinkError::Start(e.to_string())));
            return;
        }
    };
    LocalSet::new().block_on(&runtime, serve(setup, ready));
}

async fn serve(setup: Setup, ready: std::sync::mpsc::Sender<Result<SocketAddr, LinkError>>) {
    let Setup {
        socket,
        endpoint_config,
        server,
        client,
        handler,
        settings,
        mut queue,
        mut stop,
    } = setup;
    let runtime = Arc::new(quinn::TokioRuntime);
    let mut endpoint = match Endpoint::new(endpoint_config, Some(server), socket, runtime) {
        Ok(endpoint) => endpoint,
        Err(e) => {
            let _ = ready.send(Err(LinkError::Start(e.to_string())));
            return;
        }
    };
    endpoint.set_default_client_config(client);
    let bound = endpoint
        .local_addr()
        .map_err(|e| LinkError::Start(e.to_string()));
    if ready.send(bound).is_err() {
        return;
    }
    let links = Rc::new(Links {
        endpoint: endpoint.clone(),
        peers: RefCell::default(),
        inbound: Cell::new(0),
        handler,
        settings,
    });
    spawn_local(accept(links.clone()));
    loop {
        tokio::select! {
            request = queue.recv() => match request {
                Some(request) => drop(spawn_local(links.clone().handle(request))),
                None => break,
            },
            _ = stop.changed() => break,
        }
    }
    endpoint.close(CODE_CLOSING, b"node stopping");
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
}

/// The thread's state.
struct Links {
    endpoint: Endpoint,
    peers: RefCell<HashMap<NodeId, Rc<Peer>>>,
    inbound: Cell<usize>,
    handler: Arc<dyn NodeHandler>,
    settings: LinkSettings,
}

/// The cached connection to one peer node at one address.
struct Peer {
    addr: SocketAddr,
    connection: tokio::sync::Mutex<Option<Connection>>,
    /// When a dial of this address last got no answer within the call
    /// timeout (a wrong advertised address, a firewall, a stopped node);
    /// cleared by a connection. Calls then fail at once for
    /// [`SILENT_BACKOFF`], and while the next dial is under way, instead of
    /// each waiting the full timeout (holding its client's in-flight slot)
    /// for an answer that is not coming.
    silent_since: Cell<Option<Instant>>,
}

impl Links {
    async fn handle(self: Rc<Self>, request: Request) {
        let deadline = Instant::now() + self.settings.call_timeout;
        match request {
            Request::Call { to, request, reply } => {
                let result = self.call(&to, request, deadline).await;
                let _ = reply.send(result);
            }
            Request::Push { to, message, reply } => {
                let result = self.push(&to, message, deadline).await;
                let _ = reply.send(result);
            }
        }
    }

    async fn call(
        self: &Rc<Self>,
        to: &NodeInfo,
        request: Bytes,
        deadline: Instant,
    ) -> Result<Bytes, LinkError> {
        let connection = self.connection(to, deadline).await?;
        let exchange = async {
            let (mut send, mut recv) = connection.open_bi().await.map_err(WireError::Lost)?;
            write_message(&mut send, &request).await?;
            read_message(&mut recv).await
        };
        match timeout_at(deadline, exchange).await {
            Ok(result) => result.map_err(|e| wire_error(to, "response", e)),
            Err(_) => Err(self.timeout(to)),
        }
    }

    async fn push(
        self: &Rc<Self>,
        to: &NodeInfo,
        message: Bytes,
        deadline: Instant,
    ) -> Result<(), LinkError> {
        let connection = self.connection(to, deadline).await?;
        let exchange = async {
            let mut send = connection.open_uni().await.map_err(WireError::Lost)?;
            write_message(&mut send, &message).await?;
            match send.stopped().await {
                Ok(None) => Ok(()),
                Ok(Some(code)) => Err(WireError::Refused(code)),
                Err(quinn::StoppedError::ConnectionLost(e)) => Err(WireError::Lost(e)),
                Err(e) => Err(WireError::Broken(e.to_string())),
            }
        };
        match timeout_at(deadline, exchange).await {
            Ok(result) => result.map_err(|e| wire_error(to, "push", e)),
            Err(_) => Err(self.timeout(to)),
        }
    }

    fn timeout(&self, to: &NodeInfo) -> LinkError {
        LinkError::Timeout {
            node: to.id.clone(),
            after: self.settings.call_timeout,
        }
    }

    /// The open connection to `to`, dialling it (once, however many calls
    /// wait) when there is none or it closed, before `deadline`.
    async fn connection(
        self: &Rc<Self>,
        to: &NodeInfo,
        deadline: Instant,
    ) -> Result<Connection, LinkError> {
        let peer = self.peer(to);
        let unreachable = |reason: String| LinkError::Unreachable {
            node: to.id.clone(),
            addr: to.addr,
            reason,
        };
        if let Some(since) = peer.silent_since.get() {
            let waited = since.elapsed();
            if waited < SILENT_BACKOFF || peer.connection.try_lock().is_err() {
                return Err(unreachable(format!(
                    "its last dial, {waited:?} ago, got no answer within {:?}; it is dialled again {SILENT_BACKOFF:?} after",
                    self.settings.call_timeout
                )));
            }
        }
        let dial = async {
            let mut slot = peer.connection.lock().await;
            if let Some(open) = slot.as_ref().filter(|c| c.close_reason().is_none()) {
                return Ok(open.clone());
            }
            let name = ClusterTls::server_name(&to.id);
            let connecting = self
                .endpoint
                .connect(to.addr, &name)
                .map_err(|e| unreachable(e.to_string()))?;
            let connection = connecting.await.map_err(|e| connection_error(to, e))?;
            *slot = Some(connection.clone());
            peer.silent_since.set(None);
            spawn_local(forget_when_closed(
                Rc::downgrade(self),
                to.id.clone(),
                peer.clone(),
                connection.clone(),
            ));
            Ok(connection)
        };
        match timeout_at(deadline, dial).await {
            Ok(result) => result,
            Err(_) => {
                peer.silent_since.set(Some(Instant::now()));
                Err(unreachable(format!(
                    "no answer within {:?}",
                    self.settings.call_timeout
                )))
            }
        }
    }

    /// The cache entry of `to` (a new one when its address changed).
    fn peer(&self, to: &NodeInfo) -> Rc<Peer> {
        let mut peers = self.peers.borrow_mut();
        match peers.get(&to.id) {
            Some(peer) if peer.addr == to.addr => peer.clone(),
            _ => {
                let peer = Rc::new(Peer {
                    addr: to.addr,
                    connection: tokio::sync::Mutex::new(None),
                    silent_since: Cell::new(None),
                });
                peers.insert(to.id.clone(), peer.clone());
                peer
            }
        }
    }
}

/// Once `connection` closes, empties its slot, and drops the peer's cache
/// entry unless a call is using it (the cache holds live peers only).
async fn forget_when_closed(
    links: std::rc::Weak<Links>,
    id: NodeId,
    peer: Rc<Peer>,
    connection: Connection,
) {
    connection.closed().await;
    {
        let mut slot = peer.connection.lock().await;
        if slot.as_ref().map(Connection::stable_id) == Some(connection.stable_id()) {
            *slot = None;
        }
    }
    let Some(links) = links.upgrade() else { return };
    let mut peers = links.peers.borrow_mut();
    let cached = peers.get(&id).is_some_and(|p| Rc::ptr_eq(p, &peer));
    // Two holders: the cache and this task; more means a call waits on it.
    if cached && Rc::strong_count(&peer) == 2 {
        peers.remove(&id);
    }
}

/// Whether a QUIC transport error code is a TLS alert (RFC 9001 §4.8).
fn is_tls_alert(code: quinn_proto::TransportErrorCode) -> bool {
    (0x100..0x200).contains(&u64::from(code))
}

fn connection_error(to: &NodeInfo, error: ConnectionError) -> LinkError {
    let node = to.id.clone();
    let reason = error.to_string();
    match error {
        ConnectionError::LocallyClosed => LinkError::Closed,
        ConnectionError::TransportError(e) if is_tls_alert(e.code) => {
            LinkError::Refused { node, reason }
        }
        ConnectionError::ConnectionClosed(c) if is_tls_alert(c.error_code) => {
            LinkError::Refused { node, reason }
        }
        ConnectionError::ApplicationClosed(c) if c.error_code == CODE_NO_NODE_NAME => {
            LinkError::Refused { node, reason }
        }
        ConnectionError::VersionMismatch => LinkError::Refused { node, reason },
        ConnectionError::TimedOut => LinkError::Unreachable {
            node,
            addr: to.addr,
            reason,
        },
        _ => LinkError::Lost { node, reason },
    }
}

fn wire_error(to: &NodeInfo, what: &'static str, error: WireError) -> LinkError {
    match error {
        WireError::TooLarge(_) => LinkError::TooLarge { what, max: MAX_NODE_MESSAGE },
        WireError::Refused(code) if code == CODE_TOO_LARGE => LinkError::TooLarge { what, max: MAX_NODE_MESSAGE },
        WireError::Refused(code) => LinkError::Lost {
            node: to.id.clone(),
            reason: format!("the node dropped the stream (code {code}: it did not answer in time or is stopping)"),
        },
        WireError::Lost(e) => connection_error(to, e),
        WireError::Broken(reason) => LinkError::Lost { node: to.id.clone(), reason },
    }
}

/// Accepts inbound connections (at most `max_inbound_connections` at once).
async fn accept(links: Rc<Links>) {
    while let Some(incoming) = links.endpoint.accept().await {
        if links.inbound.get() >= links.settings.max_inbound_connections {
            incoming.refuse();
            continue;
        }
        links.inbound.set(links.inbound.get() + 1);
        let serving = links.clone();
        spawn_local(async move {
            serve_connection(&serving, incoming).await;
            serving.inbound.set(serving.inbound.get().saturating_sub(1));
        });
    }
}

/// Completes the handshake, reads the peer's node id from its verified
/// certificate, and serves its streams until the connection closes.
async fn serve_connection(links: &Rc<Links>, incoming: quinn::Incoming) {
    let deadline = Instant::now() + links.settings.call_timeout;
    let Ok(Ok(connection)) = timeout_at(deadline, incoming).await else {
        return;
    };
    let chain = connection.peer_identity().and_then(|any| {
        any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
            .ok()
    });
    let Some(from) = chain.and_then(|chain| ClusterTls::peer_node_id(&chain)) else {
        connection.close(
            CODE_NO_NODE_NAME,
            b"the client certificate names no tern node",
        );
        return;
    };
    // Room for this peer's message bodies, in [`BUDGET_UNIT`]s: one peer
    // filling it stalls only its own calls and pushes.
    let room = budget(&links.settings);
    loop {
        let peer = (links.clone(), from.clone(), room.clone());
        tokio::select! {
            bi = connection.accept_bi() => match bi {
                Ok((send, recv)) => drop(spawn_local(answer(peer, send, recv))),
                Err(_) => break,
            },
            uni = connection.accept_uni() => match uni {
                Ok(recv) => drop(spawn_local(receive(peer, recv))),
                Err(_) => break,
            },
        }
    }
}

/// One inbound call: read the request, ask the handler, write its answer,
/// all within the call timeout (else the stream is reset).
async fn answer(
    (links, from, room): (Rc<Links>, NodeId, Arc<Semaphore>),
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let deadline = Instant::now() + links.settings.call_timeout;
    let read = read_budgeted(&links.settings, &room, &mut recv);
    let (request, _room) = match timeout_at(deadline, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(WireError::TooLarge(_))) => {
            let _ = send.reset(CODE_TOO_LARGE);
            return;
        }
        _ => {
            let _ = send.reset(CODE_UNANSWERED);
            return;
        }
    };
    let Ok(response) = timeout_at(deadline, links.handler.call(&from, request)).await else {
        tracing::warn!(node = %from, "cluster: a call from another node was not answered within the call timeout");
        let _ = send.reset(CODE_UNANSWERED);
        return;
    };
    if let Err(WireError::TooLarge(len)) = write_message(&mut send, &response).await {
        tracing::warn!(node = %from, len, "cluster: a response exceeds the node message limit; the caller gets TooLarge");
        let _ = send.reset(CODE_TOO_LARGE);
    }
}

/// One inbound push: read it within the call timeout, hand it over.
async fn receive(
    (links, from, room): (Rc<Links>, NodeId, Arc<Semaphore>),
    mut recv: quinn::RecvStream,
) {
    let deadline = Instant::now() + links.settings.call_timeout;
    let read = read_budgeted(&links.settings, &room, &mut recv);
    let Ok(Ok((message, _room))) = timeout_at(deadline, read).await else {
        let _ = recv.stop(CODE_UNANSWERED);
        return;
    };
    if timeout_at(deadline, links.handler.push(&from, message))
        .await
        .is_err()
    {
        tracing::warn!(node = %from, "cluster: a push from another node was not taken within the call timeout");
    }
}

/// Reads one inbound message once its peer's budget has `room` for it
/// ([`LinkSettings::inbound_buffer_bytes`]); the permit is held until the
/// message has been handled, so the bodies of one peer's calls and pushes
/// stay within the budget however many streams it opens.
async fn read_budgeted(
    settings: &LinkSettings,
    room: &Arc<Semaphore>,
    recv: &mut quinn::RecvStream,
) -> Result<(Bytes, OwnedSemaphorePermit), WireError> {
    let len = read_len(recv).await?;
    // A message larger than the whole budget takes all of it.
    let units = budget_units(len).min(budget_units(settings.inbound_buffer_bytes));
    let room = room.clone().acquire_many_owned(units);
    let permit = room
        .await
        .map_err(|_| WireError::Broken("the node links are closing".to_owned()))?;
    let body = read_body(recv, len).await?;
    Ok((body, permit))
}

/// The budget's unit: one KiB (so a `u32` of permits covers any budget).
const BUDGET_UNIT: usize = 1024;

/// Budget units for a message of `len` bytes (at least one).
fn budget_units(len: usize) -> u32 {
    u32::try_from(len.div_ceil(BUDGET_UNIT).max(1)).unwrap_or(u32::MAX)
}

/// The inbound budget of `settings`.
fn budget(settings: &LinkSettings) -> Arc<Semaphore> {
    let units = budget_units(settings.inbound_buffer_bytes);
    Arc::new(Semaphore::new(usize::try_from(units).unwrap_or(usize::MAX)))
}
