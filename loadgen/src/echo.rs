//! `tern-load echo-server`: the raw-QUIC baseline. It is built exactly like
//! tern's transport (see tern's `server::runtime`): one thread per shard
//! (default one per core), each a current-thread tokio runtime owning a quinn
//! endpoint over its own `SO_REUSEPORT` UDP socket on the shared port, with
//! tern's shard-aware connection IDs and datagram routing, tern's TLS setup
//! (self-signed identity, TLS 1.3, ALPN `tern/1`, no 0-RTT) and tern's
//! default `ServerTransportTuning`. Each connection accepts one
//! bidirectional stream and writes every length-prefixed frame back as it
//! came (split into frames, not parsed): no store, no auth, no routing.
//! Every further bidirectional stream is an upload sink: the blob stream
//! request header (docs/PROTOCOL.md §4.12), the bytes read and dropped,
//! tern's answer (the `upload` scenario's baseline). It prints the same two
//! announcement lines as `tern serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use quinn::{Endpoint, TokioRuntime};
use serde::Serialize;
use tern_proto::blob_stream::{BlobRequest, Op, Response, State, Status, REQUEST_LEN};
use tern_proto::codec::{FrameDecoder, DEFAULT_MAX_FRAME_LEN, LEN_PREFIX};
use tern_server::cid::shard_endpoint_config;
use tern_server::socket::{
    bind_shard_sockets, shard_socket, ForwardingChannels, ShardSocketParts, DEFAULT_INBOX_CAPACITY,
};
use tern_server::tls::{load_or_create_identity, server_config, ServerTransportTuning};

use crate::error::{LoadError, Result};

/// Flags of `tern-load echo-server`.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Args {
    /// UDP address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Shards (threads, each with its own endpoint); 0 = one per core, like tern.
    #[arg(long, default_value_t = 0)]
    pub shards: usize,
}

/// Runs the echo server until SIGINT or SIGTERM.
pub fn run(args: Args) -> Result<()> {
    let shards = effective_shards(args.shards);
    let dir = tempfile::tempdir().map_err(|source| LoadError::Write {
        path: std::env::temp_dir(),
        source,
    })?;
    let identity =
        load_or_create_identity(dir.path()).map_err(|e| LoadError::Echo(e.to_string()))?;
    let quic = server_config(&identity, &ServerTransportTuning::default())
        .map_err(|e| LoadError::Echo(e.to_string()))?;
    let sockets = bind_shard_sockets(args.listen, shards)
        .map_err(|e| LoadError::Echo(format!("cannot bind {}: {e}", args.listen)))?;
    let local = sockets
        .first()
        .and_then(|s| s.local_addr().ok())
        .unwrap_or(args.listen);
    let mesh = ForwardingChannels::new(shards, DEFAULT_INBOX_CAPACITY)
        .map_err(|e| LoadError::Echo(e.to_string()))?;
    for (parts, socket) in mesh.into_parts().into_iter().zip(sockets) {
        let quic = quic.clone();
        std::thread::Builder::new()
            .name(format!("echo-shard-{}", parts.shard_id()))
            .spawn(move || shard_thread(parts, socket, quic))
            .map_err(|e| LoadError::Echo(format!("cannot start a shard thread: {e}")))?;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "tern-load echo listening on {local} ({shards} shards)");
    let _ = writeln!(out, "certificate fingerprint: {}", identity.fingerprint);
    let _ = out.flush();
    drop(out);
    wait_for_signal()
}

fn effective_shards(shards: usize) -> usize {
    if shards > 0 {
        return shards.min(255);
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(255)
}

fn shard_thread(parts: ShardSocketParts, socket: std::net::UdpSocket, quic: quinn::ServerConfig) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        eprintln!("echo shard {}: cannot start its runtime", parts.shard_id());
        return;
    };
    rt.block_on(async move {
        let id = parts.shard_id();
        let endpoint = shard_socket(parts, socket).and_then(|s| {
            Endpoint::new_with_abstract_socket(
                shard_endpoint_config(id),
                Some(quic),
                s,
                Arc::new(TokioRuntime),
            )
        });
        let endpoint = match endpoint {
            Ok(e) => e,
            Err(e) => return eprintln!("echo shard {id}: cannot open its endpoint: {e}"),
        };
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(serve(incoming));
        }
    });
}

async fn serve(incoming: quinn::Incoming) {
    let Ok(connection) = incoming.await else {
        return;
    };
    let Ok((mut send, mut recv)) = connection.accept_bi().await else {
        return;
    };
    tokio::spawn(sink_streams(connection.clone()));
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_FRAME_LEN);
    let mut frames: Vec<Bytes> = Vec::with_capacity(16);
    loop {
        match recv.read_chunk(64 * 1024, true).await {
            Ok(Some(chunk)) => decoder.push(&chunk.bytes),
            _ => break,
        }
        while let Ok(Some(frame)) = decoder.next_frame() {
            frames.push(prefixed(&frame));
        }
        if send.write_all_chunks(&mut frames).await.is_err() {
            break;
        }
        frames.clear();
    }
    let _ = send.finish();
    connection.close(0u32.into(), b"bye");
}

/// Every further bidirectional stream of a connection is an upload sink:
/// the raw-QUIC counterpart of tern's blob streams (§4.12).
async fn sink_streams(connection: quinn::Connection) {
    while let Ok((send, recv)) = connection.accept_bi().await {
        tokio::spawn(sink(send, recv));
    }
}

/// Reads a blob stream's 33-byte request header, then reads and discards
/// `length - offset` bytes and answers as tern does (`00`, `value` = the
/// length) without storing anything; a stream that ends early gets `07`
/// with the bytes read, any other op `02`.
async fn sink(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut header = [0u8; REQUEST_LEN];
    if recv.read_exact(&mut header).await.is_err() {
        return;
    }
    let answer = match BlobRequest::decode(&header) {
        Ok(r) if r.op == Op::Upload => discard(&mut recv, r.offset, r.length).await,
        Ok(_) => Response::refuse(Status::Malformed, 0, "the echo sink takes uploads only"),
        Err(e) => Response::refuse(Status::Malformed, 0, e.to_string()),
    };
    let _ = send.write_all(&answer.encode()).await;
    let _ = send.finish();
}

async fn discard(recv: &mut quinn::RecvStream, offset: u64, length: u64) -> Response {
    let mut got = offset;
    while got < length {
        match recv.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => got += chunk.bytes.len() as u64,
            _ => return Response::refuse(Status::Incomplete, got, "the stream ended early"),
        }
    }
    Response::ok(State::Complete, length)
}

fn prefixed(frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(LEN_PREFIX + frame.len());
    out.put_u32_le(u32::try_from(frame.len()).unwrap_or(u32::MAX));
    out.extend_from_slice(frame);
    out.freeze()
}

fn wait_for_signal() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(LoadError::Runtime)?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map_err(LoadError::Runtime),
            _ = term.recv() => Ok(()),
        }
    })
}
