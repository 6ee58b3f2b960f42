//! One device connection: accepts its control stream, authenticates it by its
//! first frame, then reads requests and routes them (conversation work to the
//! owner shard, the rest handled here). A writer task drains the connection's
//! bounded outbound queue, which both replies and deliveries feed.

use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::timeout;
use tokio_util::codec::FramedRead;
use tracing::Instrument;

use super::clock::{self, Clock};
use super::cmd;
use super::command::{Command, LocalCommand, OwnerCommand};
use super::effects::{self, Outcome};
use super::mesh::{encode_reply, Caller, OwnerRequest, Reject, Reply};
use super::outbound::{Outbound, Queued, Reservation};
use super::presence::ConnRef;
use super::realtime::{self, DatagramBudget};
use super::sessions::{Closer, Session};
use super::shard::{ServerStats, ShardCtx};
use super::staging::Staging;
use tern_framing::{CodecError, FrameCodec};
use tern_proto::auth::{EXPORTER_LABEL, EXPORTER_LEN};
use tern_proto::body::auth;
use tern_proto::codec::peek_request_id;
use tern_proto::fb::ErrorCode;
use tern_proto::{close, Body, Frame, FrameError, Limits};

/// Failed authentication attempts tolerated on one connection.
const MAX_AUTH_FAILURES: u32 = 3;
/// How long a closing connection waits for its last frames to be acknowledged.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a connection's read loop ended.
enum End {
    /// The peer finished its stream or closed the connection.
    PeerClosed,
    /// Shutdown was requested: drain and close.
    Shutdown,
    /// Close with this code after sending the queued error frame.
    Close(u32, &'static str),
}

/// Serves one incoming connection until it ends.
pub async fn serve(ctx: Rc<ShardCtx>, incoming: quinn::Incoming, shutdown: watch::Receiver<bool>) {
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "handshake failed");
            return;
        }
    };
    ServerStats::add(&ctx.stats.connections_open, 1);
    drive(&ctx, &connection, shutdown).await;
    ctx.stats
        .connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

async fn drive(
    ctx: &Rc<ShardCtx>,
    connection: &quinn::Connection,
    shutdown: watch::Receiver<bool>,
) {
    let auth_timeout = Duration::from_secs(ctx.config.auth_timeout_secs);
    let (send, recv) = match ctx
        .clock
        .timeout(auth_timeout, connection.accept_bi())
        .await
    {
        Ok(Ok(streams)) => streams,
        Ok(Err(_)) => return,
        Err(_) => {
            connection.close(close::TIMEOUT.into(), b"no control stream opened");
            return;
        }
    };
    let Some(exporter) = exporter(connection) else {
        connection.close(
            close::PROTOCOL_VIOLATION.into(),
            b"TLS exporter unavailable",
        );
        return;
    };
    let (out, out_rx) = Outbound::channel(
        ctx.config.outbound_queue_frames,
        ctx.config.outbound_queue_bytes,
    );
    let writer = tokio::task::spawn_local(write_loop(send, out_rx, ctx.stats.clone()));
    let mut shutdown = shutdown;
    let mut conn = Conn::new(ctx.clone(), connection.clone(), out, exporter, recv);
    let end = conn.run(&mut shutdown).await;
    conn.finish(end, writer).await;
}

fn exporter(connection: &quinn::Connection) -> Option<[u8; EXPORTER_LEN]> {
    let mut out = [0u8; EXPORTER_LEN];
    connection
        .export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .ok()?;
    Some(out)
}

/// Writes the outbound queue: frames already encoded (a fan-out's frame is
/// one `Bytes` shared by every recipient), handed to quinn without a copy.
/// A frame's bytes leave the connection's budget once quinn has taken it.
async fn write_loop(
    mut send: quinn::SendStream,
    mut rx: mpsc::Receiver<Queued>,
    stats: Arc<ServerStats>,
) {
    let mut queued = Vec::new();
    let mut chunks = Vec::new();
    while rx.recv_many(&mut queued, 64).await > 0 {
        for q in &queued {
            let frame = q
                .frame
                .get(tern_proto::codec::LEN_PREFIX..)
                .unwrap_or_default();
            stats.telemetry.frame_out(frame);
        }
        chunks.extend(queued.iter().map(|q| q.frame.clone()));
        if send.write_all_chunks(&mut chunks).await.is_err() {
            return;
        }
        chunks.clear();
        queued.clear();
        if queued.capacity() > 8 {
            // Give bursts' memory back; an idle connection keeps almost nothing.
            (queued, chunks) = (Vec::new(), Vec::new());
        }
    }
    let _ = send.finish();
    let _ = timeout(FLUSH_TIMEOUT, send.stopped()).await;
}

/// Reads whole frames off the control stream with the per-frame deadline:
/// once a frame's first bytes are in, the rest must follow within
/// `read_timeout`. Between frames it holds no timer and no frame buffer
/// (only the few bytes `FramedRead` reserves before each read).
struct FrameReader {
    frames: FramedRead<quinn::RecvStream, FrameCodec>,
    read_timeout: Duration,
    clock: Clock,
    /// Armed while a frame is incomplete; dropped when it completes.
    frame_deadline: Option<clock::Sleep>,
}

impl FrameReader {
    fn new(
        recv: quinn::RecvStream,
        max_frame_len: usize,
        read_timeout: Duration,
        clock: Clock,
    ) -> Self {
        FrameReader {
            // No initial buffer: the codec makes room as bytes arrive.
            frames: FramedRead::with_capacity(recv, FrameCodec::new(max_frame_len), 0),
            read_timeout,
            clock,
            frame_deadline: None,
        }
    }

    /// The next frame, `Ok(None)` at a clean end of stream.
    async fn next(&mut self) -> Result<Option<Bytes>, End> {
        poll_fn(|cx| self.poll_frame(cx)).await
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, End>> {
        if let Poll::Ready(item) = self.frames.poll_next_unpin(cx) {
            self.frame_deadline = None;
            return Poll::Ready(match item {
                Some(Ok(frame)) => Ok(Some(frame)),
                Some(Err(CodecError::Frame(FrameError::TooLarge { .. }))) => {
                    Err(End::Close(close::FRAME_TOO_LARGE, "frame too large"))
                }
                Some(Err(CodecError::Frame(_))) => {
                    Err(End::Close(close::PROTOCOL_VIOLATION, "empty frame"))
                }
                Some(Err(CodecError::Truncated)) => Err(End::Close(
                    close::PROTOCOL_VIOLATION,
                    "stream ended inside a frame",
                )),
                // A reset stream or a lost connection ends it like a finish.
                Some(Err(CodecError::Io(_))) | None => Ok(None),
            });
        }
        if self.frames.read_buffer().is_empty() {
            return Poll::Pending;
        }
        let (clock, read_timeout) = (&self.clock, self.read_timeout);
        let deadline = self
            .frame_deadline
            .get_or_insert_with(|| clock.sleep(read_timeout));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(End::Close(
                close::TIMEOUT,
                "frame not completed in time",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The state of one connection's request loop.
struct Conn {
    ctx: Rc<ShardCtx>,
    connection: quinn::Connection,
    out: Outbound,
    exporter: [u8; EXPORTER_LEN],
    reader: FrameReader,
    caller: Option<Caller>,
    conn_id: u64,
    auth_failures: u32,
    /// When an unauthenticated connection is closed (server clock, ms).
    auth_deadline_ms: u64,
    inflight: Arc<Semaphore>,
    limits: Limits,
    /// Datagrams this connection may still send (see `realtime`).
    datagrams: DatagramBudget,
    /// MLS handshake parts staged on this connection (`staging`).
    staging: Rc<Staging>,
}

impl Conn {
    fn new(
        ctx: Rc<ShardCtx>,
        connection: quinn::Connection,
        out: Outbound,
        exporter: [u8; EXPORTER_LEN],
        recv: quinn::RecvStream,
    ) -> Self {
        let config = &ctx.config;
        let reader = FrameReader::new(
            recv,
            config.max_frame_len,
            Duration::from_secs(config.frame_read_timeout_secs),
            ctx.clock.clone(),
        );
        let limits = Limits {
            max_frame_len: config.max_frame_len,
            ..Limits::server_inbound()
        };
        let inflight = Arc::new(Semaphore::new(config.max_inflight_per_connection));
        let conn_id = ctx.next_conn_id();
        let staging = Rc::new(Staging::new(ctx.clone()));
        Conn {
            ctx,
            connection,
            out,
            exporter,
            reader,
            caller: None,
            conn_id,
            auth_failures: 0,
            auth_deadline_ms: u64::MAX,
            inflight,
            limits,
            datagrams: DatagramBudget::default(),
            staging,
        }
    }

    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> End {
        if *shutdown.borrow() {
            return End::Shutdown;
        }
        let auth_secs = self.ctx.config.auth_timeout_secs;
        let auth_deadline_ms = self
            .ctx
            .clock
            .now_ms()
            .saturating_add(auth_secs.saturating_mul(1000));
        self.auth_deadline_ms = auth_deadline_ms;
        let connection = self.connection.clone();
        loop {
            // Datagrams (typing) count only once authenticated; before, they
            // wait in quinn's bounded receive buffer and are then dropped.
            let authenticated = self.caller.is_some();
            let next = tokio::select! {
                next = self.next_frame(auth_deadline_ms) => next,
                datagram = connection.read_datagram(), if authenticated => {
                    match datagram {
                        Ok(datagram) => self.datagram(datagram).await,
                        Err(_) => return End::PeerClosed,
                    }
                    continue;
                }
                // Streams after the control stream carry blobs (`blobs`);
                // before authentication they wait unaccepted.
                stream = connection.accept_bi(), if authenticated => {
                    match stream {
                        Ok((send, recv)) => self.blob_stream(send, recv),
                        Err(_) => return End::PeerClosed,
                    }
                    continue;
                }
                _ = shutdown.changed() => return End::Shutdown,
            };
            let bytes = match next {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return End::PeerClosed,
                Err(end) => return end,
            };
            if let Err(end) = self.handle(&bytes).await {
                return end;
            }
        }
    }

    /// Serves a blob stream of this authenticated connection on its own task.
    fn blob_stream(&self, send: quinn::SendStream, recv: quinn::RecvStream) {
        if let Some(caller) = &self.caller {
            let owner = caller.user.clone();
            let (ctx, staging) = (self.ctx.clone(), self.staging.clone());
            tokio::task::spawn_local(super::blobs::serve(ctx, staging, owner, send, recv));
        }
    }

    /// One QUIC datagram of this authenticated connection (`realtime`).
    async fn datagram(&mut self, datagram: Bytes) {
        if let Some(caller) = &self.caller {
            let (ctx, limits) = (&self.ctx, &self.limits);
            realtime::on_datagram(ctx, caller, &mut self.datagrams, limits, datagram).await;
        }
    }

    /// The next frame; before authentication, only until the server clock
    /// reaches `auth_deadline_ms`.
    async fn next_frame(&mut self, auth_deadline_ms: u64) -> Result<Option<Bytes>, End> {
        if self.caller.is_some() {
            return self.reader.next().await;
        }
        let clock = self.ctx.clock.clone();
        let left = Duration::from_millis(auth_deadline_ms.saturating_sub(clock.now_ms()));
        clock
            .timeout(left, self.reader.next())
            .await
            .unwrap_or(Err(End::Close(close::TIMEOUT, "not authenticated in time")))
    }

    async fn handle(&mut self, bytes: &[u8]) -> Result<(), End> {
        self.ctx.stats.telemetry.frame_in(bytes);
        let frame = match Frame::decode(bytes, &self.limits) {
            Ok(frame) => frame,
            Err(e) => {
                ServerStats::add(&self.ctx.stats.frame_errors, 1);
                let request_id = peek_request_id(bytes).unwrap_or(0);
                self.reply(request_id, Err(Reject::new(e.code(), e.to_string())))
                    .await;
                return Ok(());
            }
        };
        if frame.request_id == 0 {
            let why = "request id 0 is reserved for server pushes; number requests from 1";
            self.reply(0, Err(Reject::new(ErrorCode::InvalidArgument, why)))
                .await;
            return Ok(());
        }
        match &self.caller {
            None => self.handle_unauthenticated(frame).await,
            Some(caller) => {
                let caller = caller.clone();
                self.handle_request(caller, frame).await
            }
        }
    }

    /// Answers a request that reserved no room (handshakes, refusals
    /// before a request runs, the last error before a close).
    async fn reply(&self, request_id: u64, reply: Reply) {
        let _ = self
            .out
            .send_unreserved(encode_reply(request_id, reply))
            .await;
    }

    /// Answers under the room the request reserved.
    async fn reply_reserved(&self, request_id: u64, reply: Reply, held: Reservation) {
        let _ = self
            .out
            .send_reserved(encode_reply(request_id, reply), held)
            .await;
    }

    /// Reserves room for a request's answer, waiting while the client does
    /// not read; closes the connection as too slow after the patience.
    async fn reserve(&self, bytes: usize) -> Result<Reservation, End> {
        let patience = Duration::from_secs(self.ctx.config.slow_reader_timeout_secs);
        self.out
            .reserve(bytes, &self.ctx.clock, patience)
            .await
            .map_err(|_| {
                ServerStats::add(&self.ctx.stats.closed_slow, 1);
                End::Close(close::TOO_SLOW, "outbound queue full; read your answers")
            })
    }

    async fn handle_unauthenticated(&mut self, frame: Frame) -> Result<(), End> {
        let id = frame.request_id;
        let source = self.connection.remote_address().ip();
        let handshake = match frame.body {
            Body::Register(register) => {
                cmd::register::apply(&self.ctx, &self.exporter, source, register.into()).await
            }
            Body::Authenticate(auth::Authenticate {
                user,
                device,
                signature,
            }) => {
                cmd::authenticate::apply(&self.ctx, &self.exporter, user, device, signature).await
            }
            Body::RequestLink(link) => {
                let deadline = self.auth_deadline_ms;
                cmd::devices::request_link(&self.ctx, &self.exporter, source, link.into(), deadline)
                    .await
            }
            _ => Err(Reject::new(
                ErrorCode::NotAuthenticated,
                "authenticate first: the first frame must be Register or Authenticate",
            )),
        };
        let (caller, mut outcome) = match handshake {
            Ok(done) => done,
            Err(reject) => return self.auth_refused(id, reject).await,
        };
        // Durable first: a device is authenticated only once its account is.
        effects::settle(self.ctx.store.as_ref(), [&mut outcome]).await;
        let authenticated = outcome.reply.is_ok();
        if authenticated {
            let user = caller.user.clone();
            let generation = self.authenticated(caller);
            // The other nodes of a cluster route this user's deliveries here
            // before the device hears it is in (and syncs).
            self.ctx.delivery.user_arrived(&user, generation).await;
        }
        // Every owner (on every node) forgets the account's old device set
        // before the new device hears it is in: a message sent to it after
        // that reaches it.
        let (forget, effects): (Vec<_>, Vec<_>) = std::mem::take(&mut outcome.effects)
            .into_iter()
            .partition(|e| matches!(e, effects::Effect::ForgetUser(_)));
        effects::perform(self.ctx.delivery.as_ref(), forget).await;
        outcome.effects = effects;
        self.reply(id, outcome.reply).await;
        if let Some(caller) = self.caller.as_ref().filter(|_| authenticated) {
            crate::realtime::calls::replay(&self.ctx, caller);
        }
        if let Some(conn) = self.presence_ref().filter(|_| authenticated) {
            self.ctx.presence.connected(&conn).await;
        }
        effects::perform(self.ctx.delivery.as_ref(), outcome.effects).await;
        Ok(())
    }

    async fn auth_refused(&mut self, id: u64, reject: Reject) -> Result<(), End> {
        let counts = matches!(
            reject.code,
            ErrorCode::AuthFailed | ErrorCode::NotAuthenticated
        );
        self.reply(id, Err(reject)).await;
        if counts {
            self.auth_failures += 1;
        }
        if self.auth_failures >= MAX_AUTH_FAILURES {
            return Err(End::Close(
                close::AUTH_FAILED,
                "too many failed authentication attempts",
            ));
        }
        Ok(())
    }

    /// Registers the authenticated connection; returns the arrival's
    /// generation (`Locations`), for `Delivery::user_arrived`.
    fn authenticated(&mut self, caller: Caller) -> u64 {
        ServerStats::add(&self.ctx.stats.authenticated, 1);
        let session = Session {
            conn_id: self.conn_id,
            device: caller.device,
            outbound: self.out.clone(),
            closer: Closer::new(self.connection.clone()),
        };
        // Located before the answer goes out, so that a message stored after
        // the device's first sync reaches it here (see `locations`).
        let locations = &self.ctx.mesh.locations;
        let generation = match self.ctx.sessions.borrow_mut().insert(&caller.user, session) {
            true => locations.arrive(&caller.user, self.ctx.id),
            false => locations.next_generation(),
        };
        let live = &self.ctx.mesh.live;
        live.arrive(&caller.user, caller.device, self.conn_id);
        self.caller = Some(caller);
        generation
    }

    async fn handle_request(&mut self, caller: Caller, mut frame: Frame) -> Result<(), End> {
        let id = frame.request_id;
        if let Body::Commit(commit) = &mut frame.body {
            if let Err(reject) = self.staging.resolve(commit) {
                self.reply(id, Err(reject)).await;
                return Ok(());
            }
        }
        let command = match Command::from_body(frame.body) {
            Ok(command) => command,
            Err(reject) => {
                self.reply(id, Err(reject)).await;
                return Ok(());
            }
        };
        // One span per request (cheap when debug is off: the callsite is
        // disabled and nothing is recorded); `conversation` only for
        // conversation work.
        let conversation = match &command {
            Command::Owner(command) => Some(command.conversation()),
            Command::Local(_) => None,
        };
        let span = tracing::debug_span!("request", request_id = id, conversation);
        self.run_request(id, caller, command).instrument(span).await
    }

    /// Runs one decoded request: reserves room for its answer, then applies
    /// it here or forwards it to its conversation's owner.
    async fn run_request(&mut self, id: u64, caller: Caller, command: Command) -> Result<(), End> {
        let held = self
            .reserve(command.answer_reservation(&self.ctx.config))
            .await?;
        match command {
            Command::Local(command) => {
                let revokes_self =
                    matches!(&command, LocalCommand::RevokeDevice(r) if r.device == caller.device);
                let outcome = command.apply(&self.ctx, &caller, self.conn_id).await;
                if self
                    .conclude(id, outcome, held, revokes_self.then_some(&caller))
                    .await
                {
                    // Nothing this connection sent after its own revocation
                    // is applied; its Done is flushed before the close.
                    return Err(End::Close(close::AUTH_FAILED, "device revoked"));
                }
            }
            Command::Owner(command) => self.forward(id, caller, command, held).await,
        }
        Ok(())
    }

    /// The local driver: persists if the outcome needs it, answers, then
    /// performs the effects (the owner's batch loop does the same per batch).
    /// With `detach`, a successful request also takes this connection out of
    /// the shard's sessions before the effects run (it revoked its own
    /// device), and the answer is true.
    async fn conclude(
        &self,
        request_id: u64,
        mut outcome: Outcome,
        held: Reservation,
        detach: Option<&Caller>,
    ) -> bool {
        effects::settle(self.ctx.store.as_ref(), [&mut outcome]).await;
        let detached = detach.filter(|_| outcome.reply.is_ok());
        self.reply_reserved(request_id, outcome.reply, held).await;
        if let Some(caller) = detached {
            self.leave_sessions(caller);
        }
        effects::perform(self.ctx.delivery.as_ref(), outcome.effects).await;
        detached.is_some()
    }

    /// This connection as presence knows it, once authenticated.
    fn presence_ref(&self) -> Option<ConnRef> {
        self.caller.as_ref().map(|caller| ConnRef {
            user: caller.user.clone(),
            device: caller.device,
            conn_id: self.conn_id,
        })
    }

    /// Takes this connection out of the shard's sessions (and the shard out
    /// of the user's locations if it was the user's last connection here).
    fn leave_sessions(&self, caller: &Caller) {
        let last = self
            .ctx
            .sessions
            .borrow_mut()
            .remove(&caller.user, self.conn_id);
        let live = &self.ctx.mesh.live;
        live.leave(&caller.user, caller.device, self.conn_id);
        let gone = last
            .then(|| self.ctx.mesh.locations.leave(&caller.user, self.ctx.id))
            .flatten();
        if let Some(generation) = gone {
            self.ctx.delivery.user_left(&caller.user, generation);
        }
    }

    /// Sends a conversation request to its owner; the reply is written when it comes.
    async fn forward(
        &self,
        request_id: u64,
        caller: Caller,
        command: OwnerCommand,
        held: Reservation,
    ) {
        let Ok(permit) = self.inflight.clone().acquire_owned().await else {
            return;
        };
        let (reply, reply_rx) = oneshot::channel();
        let conversation = command.conversation();
        let request = OwnerRequest::Command {
            request_id,
            caller,
            command,
            reply,
        };
        if let Err(reject) = self.ctx.mesh.to_owner(conversation, request).await {
            return self.reply_reserved(request_id, Err(reject), held).await;
        }
        let out = self.out.clone();
        tokio::task::spawn_local(async move {
            let frame = reply_rx.await.unwrap_or_else(|_| {
                encode_reply(
                    request_id,
                    Err(Reject::new(
                        ErrorCode::ShuttingDown,
                        "server is shutting down; retry after reconnecting",
                    )),
                )
            });
            let _ = out.send_reserved(frame, held).await;
            drop(permit);
        });
    }

    /// Ends the connection: drain in-flight requests, flush, close with a
    /// reason. A client closed as too slow does not read: it is closed at
    /// once, without a last frame it would not read either.
    async fn finish(self, end: End, writer: tokio::task::JoinHandle<()>) {
        if let Some(caller) = &self.caller {
            self.leave_sessions(caller);
        }
        if let Some(conn) = self.presence_ref() {
            self.ctx.presence.disconnected(&conn).await;
        }
        if let End::Close(close::TOO_SLOW, why) = end {
            writer.abort();
            self.connection
                .close(close::TOO_SLOW.into(), why.as_bytes());
            return;
        }
        // One Error before every close the client can still read
        // (docs/PROTOCOL.md §1.3).
        let last = match &end {
            End::Close(code, why) => Some(Reject::new(close_error_code(*code), *why)),
            End::Shutdown => Some(Reject::new(
                ErrorCode::ShuttingDown,
                "server shutting down; reconnect later",
            )),
            End::PeerClosed => None,
        };
        if let Some(reject) = last {
            self.reply(0, Err(reject)).await;
        }
        let drain = Duration::from_secs(self.ctx.config.drain_timeout_secs);
        let all = u32::try_from(self.ctx.config.max_inflight_per_connection).unwrap_or(u32::MAX);
        let _ = timeout(drain, self.inflight.acquire_many(all)).await;
        let Conn {
            out, connection, ..
        } = self;
        drop(out);
        let _ = timeout(drain, writer).await;
        match end {
            End::PeerClosed => connection.close(close::NORMAL.into(), b"bye"),
            End::Shutdown => connection.close(close::SHUTTING_DOWN.into(), b"server shutting down"),
            End::Close(code, why) => connection.close(code.into(), why.as_bytes()),
        }
    }
}

/// The error code reported in the last frame before a close with `code`.
fn close_error_code(code: u32) -> ErrorCode {
    match code {
        close::FRAME_TOO_LARGE => ErrorCode::FrameTooLarge,
        close::TIMEOUT => ErrorCode::Timeout,
        close::AUTH_FAILED => ErrorCode::AuthFailed,
        _ => ErrorCode::Malformed,
    }
}
