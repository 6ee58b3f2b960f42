//! The load generator's side of blob streams (docs/PROTOCOL.md §4.12,
//! layout in [`tern_proto::blob_stream`]): one upload is one bidirectional
//! stream carrying the 33-byte request header, then the blob's bytes, then
//! the stream's end; the server answers a 12-byte response (plus a
//! message). The same bytes go to tern (which stores them) and to the
//! raw-QUIC sink of `tern-load echo-server` (which discards them), so the
//! two runs differ only in what the server does with them. The payload is
//! one shared [`Bytes`] written without copying: the client's cost is the
//! transport's, not a file read or an encryption (the SDK's
//! `send_attachment` adds both, on the client only).
//!
//! Also: byte sizes on the command line (`8MiB`, `1.5GB`, `4096`).

use bytes::Bytes;
use tern_proto::blob_stream::{
    BlobRequest, Op, Response, State, Status, BLOB_ID_LEN, RESPONSE_FIXED_LEN,
};

use crate::error::{LoadError, Result};

/// A fresh random blob id (the uploader chooses it, §4.12).
pub fn random_id() -> [u8; BLOB_ID_LEN] {
    rand::random()
}

fn stream_err(what: &str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Stream(format!("{what}: {e}"))
}

/// Uploads `payload` whole as blob `id` on a new stream of `connection`
/// and returns the bytes the server says it holds (`value` of its `00`
/// answer), after checking it is the payload's length.
///
/// # Errors
/// [`LoadError::Refused`] with the status when the server refuses (a
/// refusal that stopped it reading is read before reporting the failed
/// write), [`LoadError::Stream`] when the stream or connection fails.
pub async fn upload(
    connection: &quinn::Connection,
    id: [u8; BLOB_ID_LEN],
    payload: &Bytes,
) -> Result<u64> {
    let length = payload.len() as u64;
    let request = BlobRequest {
        op: Op::Upload,
        blob_id: id,
        offset: 0,
        length,
    };
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| stream_err("opening an upload stream", e))?;
    let mut chunks = [Bytes::copy_from_slice(&request.encode()), payload.clone()];
    if let Err(e) = send.write_all_chunks(&mut chunks).await {
        return Err(match response(&mut recv).await {
            Err(refused @ LoadError::Refused { .. }) => refused,
            _ => stream_err("sending the blob", e),
        });
    }
    send.finish()
        .map_err(|e| stream_err("finishing the upload stream", e))?;
    let answer = response(&mut recv).await?;
    if answer.value != length {
        return Err(LoadError::Stream(format!(
            "the server acknowledged {} of the {length} bytes sent",
            answer.value
        )));
    }
    Ok(answer.value)
}

/// What the server holds under `id` for this connection's user: `(state, bytes)`.
///
/// # Errors
/// As [`upload`].
pub async fn status(connection: &quinn::Connection, id: [u8; BLOB_ID_LEN]) -> Result<(State, u64)> {
    let request = BlobRequest {
        op: Op::Status,
        blob_id: id,
        offset: 0,
        length: 0,
    };
    let (mut send, mut recv) = connection
        .open_bi()
        .await
        .map_err(|e| stream_err("opening a status stream", e))?;
    send.write_all(&request.encode())
        .await
        .map_err(|e| stream_err("sending a status request", e))?;
    let _ = send.finish();
    let answer = response(&mut recv).await?;
    Ok((answer.state, answer.value))
}

/// Reads a response header; a refusal becomes [`LoadError::Refused`].
async fn response(recv: &mut quinn::RecvStream) -> Result<Response> {
    let mut fixed = [0u8; RESPONSE_FIXED_LEN];
    recv.read_exact(&mut fixed)
        .await
        .map_err(|e| stream_err("reading the blob stream's answer", e))?;
    let (mut answer, len) = Response::decode_fixed(&fixed)
        .map_err(|e| stream_err("decoding the blob stream's answer", e))?;
    let mut message = vec![0u8; len];
    recv.read_exact(&mut message)
        .await
        .map_err(|e| stream_err("reading the blob stream's message", e))?;
    answer.message = String::from_utf8_lossy(&message).into_owned();
    if answer.status != Status::Ok {
        return Err(LoadError::Refused {
            what: "a blob stream".into(),
            code: format!("{:?} (value {})", answer.status, answer.value),
            message: answer.message,
        });
    }
    Ok(answer)
}

/// Parses a byte size: a number with an optional unit, `B`, `KB`/`MB`/`GB`
/// (powers of 1000) or `KiB`/`MiB`/`GiB` (powers of 1024), case-insensitive,
/// `K`/`M`/`G` alone meaning the binary ones (`8MiB`, `8M`, `1.5GB`, `4096`).
///
/// # Errors
/// A message naming the accepted forms (for clap).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || {
        format!("{text:?} is not a size: write bytes (4096) or a number with B, KB, MB, GB, KiB, MiB or GiB (8MiB)")
    };
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        _ => return Err(bad()),
    };
    let bytes = number * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 || bytes.fract() != 0.0 {
        return Err(format!(
            "{text:?} is not a whole number of bytes of at least 1"
        ));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("8m"), Ok(8 << 20));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("32 KiB"), Ok(32 << 10));
        assert_eq!(parse_size("1kb"), Ok(1000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1.5B").is_err());
        assert!(parse_size("8 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
