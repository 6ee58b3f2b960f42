//! One device connection: accepts its control stream, authenticates it by its
//! first frame, then reads requests and routes them (conversation work to the
//! owner shard, the rest handled here). A writer task drains the connection's
//! bounded outbound queue, which both replies and deliveries feed.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};

use super::cmd;
use super::mesh::{encode_reply, Caller, OwnerOp, OwnerRequest, Reject, Reply};
use super::sessions::{Closer, Session};
use super::shard::{ServerStats, ShardCtx};
use tern_proto::auth::{EXPORTER_LABEL, EXPORTER_LEN};
use tern_proto::fb::ErrorCode;
use tern_proto::{close, Body, Frame, FrameDecoder, FrameError, Limits};

/// Failed authentication attempts tolerated on one connection.
const MAX_AUTH_FAILURES: u32 = 3;
/// Largest chunk read from the stream at once.
const READ_CHUNK: usize = 64 * 1024;
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
    let (send, recv) = match timeout(auth_timeout, connection.accept_bi()).await {
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
    let (out, out_rx) = mpsc::channel(ctx.config.outbound_queue_frames);
    let writer = tokio::task::spawn_local(write_loop(send, out_rx));
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

async fn write_loop(mut send: quinn::SendStream, mut rx: mpsc::Receiver<Bytes>) {
    let mut batch = Vec::new();
    while rx.recv_many(&mut batch, 64).await > 0 {
        if send.write_all_chunks(&mut batch).await.is_err() {
            return;
        }
        batch.clear();
        if batch.capacity() > 8 {
            // Give bursts' memory back; an idle connection keeps almost nothing.
            batch = Vec::new();
        }
    }
    let _ = send.finish();
    let _ = timeout(FLUSH_TIMEOUT, send.stopped()).await;
}

/// Reads whole frames off the control stream with the per-frame deadline.
struct FrameReader {
    recv: quinn::RecvStream,
    decoder: FrameDecoder,
    read_timeout: Duration,
    frame_deadline: Option<Instant>,
}

impl FrameReader {
    /// The next frame, `Ok(None)` at a clean end of stream.
    async fn next(&mut self) -> Result<Option<Bytes>, End> {
        loop {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => {
                    self.frame_deadline = None;
                    return Ok(Some(frame));
                }
                Ok(None) => {}
                Err(FrameError::TooLarge { .. }) => {
                    return Err(End::Close(close::FRAME_TOO_LARGE, "frame too large"))
                }
                Err(_) => return Err(End::Close(close::PROTOCOL_VIOLATION, "empty frame")),
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    async fn read_more(&mut self) -> Result<bool, End> {
        let chunk = if self.decoder.has_partial() {
            let deadline = *self
                .frame_deadline
                .get_or_insert_with(|| Instant::now() + self.read_timeout);
            timeout_at(deadline, self.recv.read_chunk(READ_CHUNK, true))
                .await
                .map_err(|_| End::Close(close::TIMEOUT, "frame not completed in time"))?
        } else {
            self.recv.read_chunk(READ_CHUNK, true).await
        };
        match chunk {
            Ok(Some(chunk)) => {
                self.decoder.push(&chunk.bytes);
                Ok(true)
            }
            Ok(None) if self.decoder.has_partial() => Err(End::Close(
                close::PROTOCOL_VIOLATION,
                "stream ended inside a frame",
            )),
            Ok(None) | Err(_) => Ok(false),
        }
    }
}

/// The state of one connection's request loop.
struct Conn {
    ctx: Rc<ShardCtx>,
    connection: quinn::Connection,
    out: mpsc::Sender<Bytes>,
    exporter: [u8; EXPORTER_LEN],
    reader: FrameReader,
    caller: Option<Caller>,
    conn_id: u64,
    auth_failures: u32,
    inflight: Arc<Semaphore>,
    limits: Limits,
}

impl Conn {
    fn new(
        ctx: Rc<ShardCtx>,
        connection: quinn::Connection,
        out: mpsc::Sender<Bytes>,
        exporter: [u8; EXPORTER_LEN],
        recv: quinn::RecvStream,
    ) -> Self {
        let config = &ctx.config;
        let reader = FrameReader {
            recv,
            decoder: FrameDecoder::new(config.max_frame_len),
            read_timeout: Duration::from_secs(config.frame_read_timeout_secs),
            frame_deadline: None,
        };
        let limits = Limits {
            max_frame_len: config.max_frame_len,
            ..Limits::server_inbound()
        };
        let inflight = Arc::new(Semaphore::new(config.max_inflight_per_connection));
        let conn_id = ctx.next_conn_id();
        Conn {
            ctx,
            connection,
            out,
            exporter,
            reader,
            caller: None,
            conn_id,
            auth_failures: 0,
            inflight,
            limits,
        }
    }

    async fn run(&mut self, shutdown: &mut watch::Receiver<bool>) -> End {
        if *shutdown.borrow() {
            return End::Shutdown;
        }
        let auth_deadline = Instant::now() + Duration::from_secs(self.ctx.config.auth_timeout_secs);
        loop {
            let next = tokio::select! {
                next = self.next_frame(auth_deadline) => next,
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

    async fn next_frame(&mut self, auth_deadline: Instant) -> Result<Option<Bytes>, End> {
        if self.caller.is_some() {
            return self.reader.next().await;
        }
        timeout_at(auth_deadline, self.reader.next())
            .await
            .unwrap_or(Err(End::Close(close::TIMEOUT, "not authenticated in time")))
    }

    async fn handle(&mut self, bytes: &[u8]) -> Result<(), End> {
        let frame = match Frame::decode(bytes, &self.limits) {
            Ok(frame) => frame,
            Err(e) => {
                ServerStats::add(&self.ctx.stats.frame_errors, 1);
                let request_id = self
                    .limits
                    .verify(bytes)
                    .map(|f| f.request_id())
                    .unwrap_or(0);
                self.reply(request_id, Err(Reject::new(e.code(), e.to_string())))
                    .await;
                return Ok(());
            }
        };
        match &self.caller {
            None => self.handle_unauthenticated(frame).await,
            Some(caller) => {
                let caller = caller.clone();
                self.handle_request(caller, frame).await;
                Ok(())
            }
        }
    }

    async fn reply(&self, request_id: u64, reply: Reply) {
        let _ = self.out.send(encode_reply(request_id, reply)).await;
    }

    async fn handle_unauthenticated(&mut self, frame: Frame) -> Result<(), End> {
        let id = frame.request_id;
        let result = match frame.body {
            Body::Register {
                user,
                device_name,
                device_key,
                signature,
            } => {
                let op = cmd::register::NewDevice {
                    user,
                    device_name,
                    device_key,
                    signature,
                };
                cmd::register::apply(&self.ctx, &self.exporter, op).await
            }
            Body::Authenticate {
                user,
                device,
                signature,
            } => cmd::authenticate::apply(&self.ctx, &self.exporter, user, device, signature).await,
            Body::RequestLink {
                user,
                device_name,
                device_key,
                signature,
            } => {
                let op = cmd::register::NewDevice {
                    user,
                    device_name,
                    device_key,
                    signature,
                };
                cmd::devices::request_link(&self.ctx, &self.exporter, op).await
            }
            _ => Err(Reject::new(
                ErrorCode::NotAuthenticated,
                "authenticate first: the first frame must be Register or Authenticate",
            )),
        };
        match result {
            Ok((caller, body)) => {
                self.authenticated(caller);
                self.reply(id, Ok(body)).await;
                Ok(())
            }
            Err(reject) => self.auth_refused(id, reject).await,
        }
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

    fn authenticated(&mut self, caller: Caller) {
        ServerStats::add(&self.ctx.stats.authenticated, 1);
        let session = Session {
            conn_id: self.conn_id,
            device: caller.device,
            outbound: self.out.clone(),
            closer: Closer::new(self.connection.clone()),
        };
        self.ctx.sessions.borrow_mut().insert(&caller.user, session);
        self.caller = Some(caller);
    }

    async fn handle_request(&mut self, caller: Caller, frame: Frame) {
        let id = frame.request_id;
        let op = match frame.body {
            Body::Register { .. } | Body::Authenticate { .. } | Body::RequestLink { .. } => {
                return self
                    .reply(
                        id,
                        Err(Reject::new(
                            ErrorCode::AlreadyAuthenticated,
                            "this connection is already authenticated",
                        )),
                    )
                    .await;
            }
            Body::Sync { all } => {
                return self
                    .reply(id, cmd::sync::apply(&self.ctx, &caller, all).await)
                    .await
            }
            body @ (Body::UploadPrekeys(_)
            | Body::ClaimPrekeys { .. }
            | Body::UploadKeyPackages { .. }
            | Body::ClaimKeyPackages { .. }
            | Body::ListDevices { .. }
            | Body::RevokeDevice { .. }
            | Body::ApproveLink { .. }) => {
                return self.reply(id, self.directory(&caller, body).await).await
            }
            body => match owner_op(body) {
                Ok(op) => op,
                Err(reject) => return self.reply(id, Err(reject)).await,
            },
        };
        self.forward(id, caller, op).await;
    }

    /// Key-directory and device requests, answered on this shard.
    async fn directory(&self, caller: &Caller, body: Body) -> Reply {
        let ctx = &self.ctx;
        match body {
            Body::UploadPrekeys(upload) => cmd::keys::upload_prekeys(ctx, caller, *upload).await,
            Body::ClaimPrekeys { user } => cmd::keys::claim_prekeys(ctx, caller, user).await,
            Body::UploadKeyPackages {
                key_packages,
                last_resort,
            } => cmd::keys::upload_key_packages(ctx, caller, key_packages, last_resort).await,
            Body::ClaimKeyPackages { users } => {
                cmd::keys::claim_key_packages(ctx, caller, users).await
            }
            Body::ListDevices { user } => cmd::devices::list(ctx, user).await,
            Body::RevokeDevice { device } => cmd::devices::revoke(ctx, caller, device).await,
            Body::ApproveLink { link_id, approve } => {
                cmd::devices::approve(ctx, caller, link_id, approve).await
            }
            _ => Err(Reject::new(
                ErrorCode::UnsupportedBody,
                "not a directory request",
            )),
        }
    }

    /// Sends a conversation request to its owner; the reply is written when it comes.
    async fn forward(&self, request_id: u64, caller: Caller, op: OwnerOp) {
        let Ok(permit) = self.inflight.clone().acquire_owned().await else {
            return;
        };
        let (reply, reply_rx) = oneshot::channel();
        let conversation = op_conversation(&op);
        let request = OwnerRequest {
            request_id,
            caller,
            op,
            reply,
        };
        if let Err(reject) = self.ctx.mesh.to_owner(conversation, request).await {
            return self.reply(request_id, Err(reject)).await;
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
            let _ = out.send(frame).await;
            drop(permit);
        });
    }

    /// Ends the connection: drain in-flight requests, flush, close with a reason.
    async fn finish(self, end: End, writer: tokio::task::JoinHandle<()>) {
        if let Some(caller) = &self.caller {
            self.ctx
                .sessions
                .borrow_mut()
                .remove(&caller.user, self.conn_id);
        }
        if let End::Close(code, why) = &end {
            self.reply(0, Err(Reject::new(close_error_code(*code), *why)))
                .await;
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

/// The conversation operation a request body asks for, or why it cannot be one.
fn owner_op(body: Body) -> Result<OwnerOp, Reject> {
    Ok(match body {
        Body::CreateConversation { kind, members } => OwnerOp::Create {
            id: fresh_conversation_id(),
            kind,
            members,
        },
        Body::AddMembers {
            conversation_id,
            members,
        } => OwnerOp::AddMembers {
            id: conversation_id,
            members,
        },
        Body::RemoveMembers {
            conversation_id,
            members,
        } => OwnerOp::RemoveMembers {
            id: conversation_id,
            members,
        },
        Body::Send {
            conversation_id,
            client_message_id,
            expires_in_secs,
            flags,
            payload,
        } => OwnerOp::Send {
            id: conversation_id,
            client_message_id,
            expires_in_secs,
            flags,
            payload,
        },
        Body::Ack {
            conversation_id,
            seq,
        } => OwnerOp::Ack {
            id: conversation_id,
            seq,
        },
        Body::History {
            conversation_id,
            from_seq,
            limit,
        } => OwnerOp::History {
            id: conversation_id,
            from_seq,
            limit,
        },
        Body::SendToDevices {
            conversation_id,
            client_message_id,
            expires_in_secs,
            flags,
            device_payloads,
        } => OwnerOp::SendToDevices {
            id: conversation_id,
            client_message_id,
            expires_in_secs,
            flags,
            payloads: device_payloads,
        },
        Body::SendGroup {
            conversation_id,
            client_message_id,
            expires_in_secs,
            flags,
            epoch,
            payload,
        } => OwnerOp::SendGroup {
            id: conversation_id,
            client_message_id,
            expires_in_secs,
            flags,
            epoch,
            payload,
        },
        Body::Commit(commit) => OwnerOp::Commit(commit),
        Body::GetGroupInfo { conversation_id } => OwnerOp::GetGroupInfo {
            id: conversation_id,
        },
        _ => {
            return Err(Reject::new(
                ErrorCode::UnsupportedBody,
                "this body is sent by servers only",
            ))
        }
    })
}

fn op_conversation(op: &OwnerOp) -> u64 {
    match op {
        OwnerOp::Create { id, .. }
        | OwnerOp::AddMembers { id, .. }
        | OwnerOp::RemoveMembers { id, .. }
        | OwnerOp::Send { id, .. }
        | OwnerOp::Ack { id, .. }
        | OwnerOp::History { id, .. }
        | OwnerOp::SendToDevices { id, .. }
        | OwnerOp::SendGroup { id, .. }
        | OwnerOp::GetGroupInfo { id } => *id,
        OwnerOp::Commit(commit) => commit.conversation_id,
        OwnerOp::Invalidate { .. } => 0,
    }
}

/// A random non-zero conversation id.
fn fresh_conversation_id() -> u64 {
    loop {
        let id: u64 = rand::random();
        if id != 0 {
            return id;
        }
    }
}
