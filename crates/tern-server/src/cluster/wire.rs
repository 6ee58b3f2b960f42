//! Framing of node-to-node streams: a message is a 4-byte big-endian
//! length and that many bytes, at most [`MAX_NODE_MESSAGE`]. A call is one
//! bidirectional stream (request, then response); a push one
//! unidirectional stream. A side that refuses a message resets or stops
//! the stream with one of the codes below.

use bytes::{Bytes, BytesMut};
use quinn::{RecvStream, SendStream, VarInt};

/// Largest request, response or push, in bytes (32 MiB).
pub const MAX_NODE_MESSAGE: usize = 32 << 20;

/// Stream error code: the message exceeds [`MAX_NODE_MESSAGE`].
pub const CODE_TOO_LARGE: VarInt = VarInt::from_u32(1);
/// Stream error code: the receiving node did not answer in time or is stopping.
pub const CODE_UNANSWERED: VarInt = VarInt::from_u32(2);
/// Connection close code: the peer's certificate names no node.
pub const CODE_NO_NODE_NAME: VarInt = VarInt::from_u32(3);
/// Connection close code: the node links are closing.
pub const CODE_CLOSING: VarInt = VarInt::from_u32(4);

/// Why a framed message could not be read or written.
#[derive(Debug)]
pub enum WireError {
    /// The announced length exceeds [`MAX_NODE_MESSAGE`].
    TooLarge(usize),
    /// The peer reset or stopped the stream with this code.
    Refused(VarInt),
    /// The connection failed.
    Lost(quinn::ConnectionError),
    /// The stream failed otherwise.
    Broken(String),
}

/// Writes `message` with its length and finishes the stream.
pub async fn write_message(send: &mut SendStream, message: &[u8]) -> Result<(), WireError> {
    let len = u32::try_from(message.len())
        .ok()
        .filter(|_| message.len() <= MAX_NODE_MESSAGE)
        .ok_or(WireError::TooLarge(message.len()))?;
    let write = |e: quinn::WriteError| match e {
        quinn::WriteError::Stopped(code) => WireError::Refused(code),
        quinn::WriteError::ConnectionLost(e) => WireError::Lost(e),
        other => WireError::Broken(other.to_string()),
    };
    send.write_all(&len.to_be_bytes()).await.map_err(write)?;
    send.write_all(message).await.map_err(write)?;
    send.finish().map_err(|e| WireError::Broken(e.to_string()))
}

/// Reads one length-prefixed message; an oversize one is refused (the
/// stream stopped with [`CODE_TOO_LARGE`]) before its body is read.
pub async fn read_message(recv: &mut RecvStream) -> Result<Bytes, WireError> {
    let len = read_len(recv).await?;
    read_body(recv, len).await
}

/// Reads a message's length; an oversize one is refused (the stream
/// stopped with [`CODE_TOO_LARGE`]).
pub async fn read_len(recv: &mut RecvStream) -> Result<usize, WireError> {
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(read_error)?;
    let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
    if len > MAX_NODE_MESSAGE {
        let _ = recv.stop(CODE_TOO_LARGE);
        return Err(WireError::TooLarge(len));
    }
    Ok(len)
}

/// Reads the `len` bytes of a message body (after [`read_len`]).
pub async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Bytes, WireError> {
    // Grown as bytes arrive (flow control bounds what a peer has in
    // flight), never sized up front from a length the peer announced.
    let mut body = BytesMut::with_capacity(len.min(INITIAL_BUFFER));
    while body.len() < len {
        let chunk = recv
            .read_chunk(len - body.len(), true)
            .await
            .map_err(|e| read_error(quinn::ReadExactError::ReadError(e)))?;
        match chunk {
            Some(chunk) => body.extend_from_slice(&chunk.bytes),
            None => {
                return Err(WireError::Broken(
                    "the stream ended inside a message".into(),
                ))
            }
        }
    }
    Ok(body.freeze())
}

/// Buffer first reserved for a message body.
const INITIAL_BUFFER: usize = 64 << 10;

fn read_error(error: quinn::ReadExactError) -> WireError {
    match error {
        quinn::ReadExactError::ReadError(quinn::ReadError::Reset(code)) => WireError::Refused(code),
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(e)) => WireError::Lost(e),
        other => WireError::Broken(other.to_string()),
    }
}
