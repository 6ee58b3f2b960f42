//! One raw connection to a tern server ([`RawConnection`]): QUIC handshake
//! with the pinned certificate, the control stream, and frame-level reads
//! and writes, with no ordering, retries or reconnects. The SDK's
//! [`super::Client`] is built on it; tests and the load generator use it
//! directly to speak (or deliberately break) the protocol.
//!
//! (Linking a new device to an account is something else: see
//! [`super::Client::link`] and [`RawConnection::link_frame`].)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use futures_util::StreamExt;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::tls::{client_config, ClientTlsError, PinMismatch, TrustAnchor};
use tern_framing::{self as framing, CodecError, FrameCodec};
use tern_proto::auth::{
    authenticate_transcript, link_transcript, register_transcript, sign, EXPORTER_LABEL,
    EXPORTER_LEN,
};
use tern_proto::body::auth;
use tern_proto::{Frame, FrameError, Limits};

/// Server name the client sends (SNI) when none is given; the server's
/// self-signed certificate carries it.
pub const DEFAULT_SERVER_NAME: &str = "localhost";

/// How long connecting waits for a server to complete the QUIC handshake
/// when no other limit is given. Without it, a client pointed at an address
/// where nothing listens would wait for the whole idle timeout (60 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an operation on a raw connection failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(transparent)]
    Tls(#[from] ClientTlsError),
    #[error("cannot open a local UDP socket: {0}")]
    Socket(std::io::Error),
    #[error("cannot start connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: quinn::ConnectError,
    },
    #[error(
        "no tern server answered at {addr} within {}: check the address and that the server runs",
        seconds(.after)
    )]
    NoAnswer { addr: SocketAddr, after: Duration },
    #[error(
        "the server at {addr} presented certificate fingerprint {presented}, which does not \
         match the pinned fingerprint: \
         check the server address, or pin the fingerprint the server prints on start"
    )]
    PinMismatch { addr: SocketAddr, presented: String },
    /// The server refused the connection before its handshake
    /// (`CONNECTION_REFUSED`): too many connection attempts from this
    /// address (the server's `connections_per_address_*`), or the server
    /// is not accepting connections.
    #[error(
        "the server at {addr} refused the connection: too many connection attempts from this \
         address; wait a few seconds and connect again"
    )]
    Refused { addr: SocketAddr },
    #[error("connection to the server failed: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("writing to the server failed: {0}")]
    Write(std::io::Error),
    #[error("reading from the server failed: {0}")]
    Read(std::io::Error),
    #[error("the server sent a bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("the server closed the control stream")]
    Closed,
    #[error("TLS exporter unavailable on this connection")]
    Exporter,
}

/// A QUIC endpoint able to open tern connections.
pub fn client_endpoint(
    bind: SocketAddr,
    trust: &TrustAnchor,
) -> Result<quinn::Endpoint, ConnectionError> {
    let mut endpoint = quinn::Endpoint::client(bind).map_err(ConnectionError::Socket)?;
    endpoint.set_default_client_config(client_config(trust)?);
    Ok(endpoint)
}

/// The read half of a control stream: whole verified frames out.
pub struct FrameReceiver {
    frames: FramedRead<quinn::RecvStream, FrameCodec>,
    limits: Limits,
}

impl FrameReceiver {
    fn new(recv: quinn::RecvStream, limits: Limits) -> Self {
        // No initial buffer: the codec makes room as bytes arrive, and keeps
        // none between frames (beyond the few bytes reserved for a read).
        let codec = FrameCodec::new(limits.max_frame_len);
        FrameReceiver {
            frames: FramedRead::with_capacity(recv, codec, 0),
            limits,
        }
    }

    /// The next frame, or `Ok(None)` when the server finished the stream.
    pub async fn next(&mut self) -> Result<Option<Frame>, ConnectionError> {
        match self.frames.next().await {
            Some(Ok(bytes)) => Ok(Some(Frame::decode(&bytes, &self.limits)?)),
            Some(Err(CodecError::Frame(e))) => Err(ConnectionError::Frame(e)),
            Some(Err(CodecError::Io(e))) => Err(ConnectionError::Read(e)),
            // A stream finished inside a frame ends like a finished one.
            Some(Err(CodecError::Truncated)) | None => Ok(None),
        }
    }
}

/// The write half of a control stream.
pub struct FrameSender {
    frames: FramedWrite<quinn::SendStream, FrameCodec>,
}

impl FrameSender {
    fn new(send: quinn::SendStream) -> Self {
        FrameSender {
            frames: framing::framed_write(send),
        }
    }

    pub async fn frame(&mut self, frame: &Frame) -> Result<(), ConnectionError> {
        self.chunks(&mut [frame.encode()]).await
    }

    /// Writes bytes as they are (tests use this to send broken frames).
    pub async fn raw(&mut self, bytes: &[u8]) -> Result<(), ConnectionError> {
        self.chunks(&mut [Bytes::copy_from_slice(bytes)]).await
    }

    /// Writes several encoded frames in one go (taking them out of `frames`).
    pub async fn chunks(&mut self, frames: &mut [Bytes]) -> Result<(), ConnectionError> {
        framing::write_batch(&mut self.frames, frames)
            .await
            .map_err(ConnectionError::Write)
    }

    /// Finishes the stream (the server then ends the connection cleanly).
    pub fn finish(&mut self) {
        let _ = self.frames.get_mut().finish();
    }
}

/// An open connection with its control stream.
pub struct RawConnection {
    pub connection: quinn::Connection,
    pub sender: FrameSender,
    pub receiver: FrameReceiver,
}

impl RawConnection {
    /// Connects and opens the control stream (nothing is sent yet), giving
    /// up after [`DEFAULT_CONNECT_TIMEOUT`].
    pub async fn connect(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
    ) -> Result<RawConnection, ConnectionError> {
        Self::connect_within(endpoint, addr, server_name, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// Connects and opens the control stream (nothing is sent yet). Fails
    /// with [`ConnectionError::NoAnswer`] when no server completes the
    /// handshake within `timeout`.
    pub async fn connect_within(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        server_name: &str,
        timeout: Duration,
    ) -> Result<RawConnection, ConnectionError> {
        let connecting = endpoint
            .connect(addr, server_name)
            .map_err(|source| ConnectionError::Connect { addr, source })?;
        let connection = tokio::time::timeout(timeout, connecting)
            .await
            .map_err(|_| ConnectionError::NoAnswer {
                addr,
                after: timeout,
            })?
            .map_err(|e| handshake_error(addr, e))?;
        let (send, recv) = connection.open_bi().await?;
        Ok(RawConnection {
            connection,
            sender: FrameSender::new(send),
            receiver: FrameReceiver::new(recv, Limits::client_inbound()),
        })
    }

    /// This connection's channel-binding value.
    pub fn exporter(&self) -> Result<[u8; EXPORTER_LEN], ConnectionError> {
        exporter(&self.connection)
    }

    /// Sends one request and waits for the next frame (no pushes expected yet).
    pub async fn call(&mut self, frame: &Frame) -> Result<Frame, ConnectionError> {
        self.sender.frame(frame).await?;
        self.receiver.next().await?.ok_or(ConnectionError::Closed)
    }

    /// The Register frame for a new account, signed for this connection.
    pub fn register_frame(
        &self,
        request_id: u64,
        user: &str,
        device_name: &str,
        key: &SigningKey,
    ) -> Result<Frame, ConnectionError> {
        let device_key = key.verifying_key().to_bytes();
        let signature = sign(
            key,
            &register_transcript(&self.exporter()?, user, &device_key),
        );
        let body = auth::Register {
            user: user.to_owned(),
            device_name: device_name.to_owned(),
            device_key,
            signature,
        };
        Ok(Frame::new(request_id, body))
    }

    /// The Authenticate frame for an existing device, signed for this connection.
    pub fn authenticate_frame(
        &self,
        request_id: u64,
        user: &str,
        device: u32,
        key: &SigningKey,
    ) -> Result<Frame, ConnectionError> {
        let signature = sign(
            key,
            &authenticate_transcript(&self.exporter()?, user, device),
        );
        let body = auth::Authenticate {
            user: user.to_owned(),
            device,
            signature,
        };
        Ok(Frame::new(request_id, body))
    }

    /// The RequestLink frame for a new device of an existing account, signed for this connection.
    pub fn link_frame(
        &self,
        request_id: u64,
        user: &str,
        device_name: &str,
        key: &SigningKey,
    ) -> Result<Frame, ConnectionError> {
        let device_key = key.verifying_key().to_bytes();
        let signature = sign(key, &link_transcript(&self.exporter()?, user, &device_key));
        let body = auth::RequestLink {
            user: user.to_owned(),
            device_name: device_name.to_owned(),
            device_key,
            signature,
        };
        Ok(Frame::new(request_id, body))
    }

    /// Splits into the connection and its two halves.
    pub fn split(self) -> (quinn::Connection, FrameSender, FrameReceiver) {
        (self.connection, self.sender, self.receiver)
    }
}

/// The channel-binding exporter value of a connection.
pub fn exporter(connection: &quinn::Connection) -> Result<[u8; EXPORTER_LEN], ConnectionError> {
    let mut out = [0u8; EXPORTER_LEN];
    connection
        .export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| ConnectionError::Exporter)?;
    Ok(out)
}

/// A failed handshake as a typed error: a pin mismatch (which quinn hands
/// over only as text) becomes [`ConnectionError::PinMismatch`].
fn handshake_error(addr: SocketAddr, error: quinn::ConnectionError) -> ConnectionError {
    if let quinn::ConnectionError::ConnectionClosed(close) = &error {
        if close.error_code == quinn::TransportErrorCode::CONNECTION_REFUSED {
            return ConnectionError::Refused { addr };
        }
    }
    if let quinn::ConnectionError::TransportError(e) = &error {
        if let Some(mismatch) = PinMismatch::find_in(&e.reason) {
            return ConnectionError::PinMismatch {
                addr,
                presented: mismatch.presented,
            };
        }
    }
    ConnectionError::Connection(error)
}

/// A duration as seconds for messages: `10 s`, `0.3 s`.
fn seconds(d: &Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Shares one endpoint between many connections (the load generator multiplexes).
pub type SharedEndpoint = Arc<quinn::Endpoint>;
