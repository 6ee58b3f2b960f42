//! The control stream's framing at the I/O boundary, shared by the server
//! and the SDK: tokio-util's `FramedRead`/`FramedWrite` over quinn's
//! streams, with [`FrameCodec`]
//! adapting tern-proto's I/O-free [`FrameDecoder`] (the frame cap checked
//! before any buffer grows, zero-length frames refused, read room that
//! follows the bytes that arrived, no buffer kept between frames) to
//! tokio-util's `Decoder` and `Encoder`. It is its own crate so that
//! tern-proto stays free of tokio and the adapter exists once.
//!
//! The server writes its outbound queue with quinn's `write_all_chunks`
//! instead of [`framed_write`]: its queue holds frames already encoded and
//! shared by every recipient of a fan-out, and `FramedWrite` would copy each
//! into its buffer (measured: about 20 % more server CPU per recipient for
//! 64 KiB group messages).

use std::io;

use bytes::{Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::io::AsyncWrite;
use tokio_util::codec::{Decoder, Encoder, FramedWrite};

use tern_proto::{FrameDecoder, FrameError};

/// Largest run of encoded frames buffered before it is handed to the stream.
pub const WRITE_BATCH_BYTES: usize = 64 * 1024;

/// Why no (more) frames could be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// A length that can never be accepted (too large, zero): the stream is out of sync.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// The peer finished its stream with part of a frame buffered.
    #[error("stream ended inside a frame")]
    Truncated,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Splits inbound bytes into whole frames (each without its prefix, to be
/// verified and decoded by the caller) and writes already encoded frames
/// (prefix included) as they are.
#[derive(Debug)]
pub struct FrameCodec {
    decoder: FrameDecoder,
}

impl FrameCodec {
    pub fn new(max_frame_len: usize) -> Self {
        FrameCodec {
            decoder: FrameDecoder::new(max_frame_len),
        }
    }
}

/// The write half only passes encoded frames through; its limit is unused.
impl Default for FrameCodec {
    fn default() -> Self {
        FrameCodec::new(tern_proto::codec::DEFAULT_MAX_FRAME_LEN)
    }
}

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let frame = self.decoder.split(buf)?;
        if frame.is_none() {
            // `FramedRead` reads into the spare capacity; make some, sized by
            // what arrived (never by the announced length).
            buf.reserve(self.decoder.read_room(buf));
        }
        Ok(frame)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(CodecError::Truncated),
        }
    }
}

impl Encoder<Bytes> for FrameCodec {
    type Error = io::Error;

    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        dst.extend_from_slice(&frame);
        Ok(())
    }
}

/// A write half without the 8 KiB buffer `FramedWrite` starts with, and
/// batching up to [`WRITE_BATCH_BYTES`] per stream write.
pub fn framed_write<W: AsyncWrite>(io: W) -> FramedWrite<W, FrameCodec> {
    let mut frames = FramedWrite::new(io, FrameCodec::default());
    *frames.write_buffer_mut() = BytesMut::new();
    frames.set_backpressure_boundary(WRITE_BATCH_BYTES);
    frames
}

/// Writes a batch of encoded frames with as few stream writes as the batch
/// size allows, then gives the write buffer back: an idle connection keeps
/// no buffer. Takes the frames out of `batch` (leaving empty `Bytes`).
pub async fn write_batch<W: AsyncWrite + Unpin>(
    frames: &mut FramedWrite<W, FrameCodec>,
    batch: &mut [Bytes],
) -> io::Result<()> {
    let total: usize = batch.iter().map(Bytes::len).sum();
    frames
        .write_buffer_mut()
        .reserve(total.min(WRITE_BATCH_BYTES));
    for frame in batch.iter_mut() {
        frames.feed(std::mem::take(frame)).await?;
    }
    frames.flush().await?;
    *frames.write_buffer_mut() = BytesMut::new();
    Ok(())
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use futures_util::StreamExt;
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::FramedRead;

    use super::*;
    use tern_proto::body::messaging;
    use tern_proto::codec::LEN_PREFIX;
    use tern_proto::Frame;

    #[tokio::test]
    async fn frames_cross_the_codec_both_ways() {
        let (a, b) = tokio::io::duplex(64);
        let mut writer = framed_write(a);
        let mut reader = FramedRead::with_capacity(b, FrameCodec::new(1024), 0);
        let one = Frame::new(1, messaging::Done).encode();
        let two = Frame::new(2, messaging::Done).encode();
        let mut batch = vec![one.clone(), two.clone()];
        let write = tokio::spawn(async move {
            write_batch(&mut writer, &mut batch).await.unwrap();
            assert!(batch.iter().all(Bytes::is_empty));
            assert_eq!(writer.write_buffer().capacity(), 0);
            writer
        });
        let got = reader.next().await.unwrap().unwrap();
        assert_eq!(got, one.slice(LEN_PREFIX..));
        let got = reader.next().await.unwrap().unwrap();
        assert_eq!(got, two.slice(LEN_PREFIX..));
        assert_eq!(
            reader.read_buffer().capacity(),
            0,
            "no buffer between frames"
        );
        // Waiting for the next frame, `FramedRead` holds only the few bytes
        // it reserves before every read.
        let idle = tokio::time::timeout(std::time::Duration::from_millis(20), reader.next());
        assert!(idle.await.is_err(), "nothing to read yet");
        assert!(reader.read_buffer().capacity() <= 8);
        drop(write.await.unwrap());
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn truncated_and_oversize_frames_are_errors() {
        let (mut a, b) = tokio::io::duplex(64);
        let mut reader = FramedRead::with_capacity(b, FrameCodec::new(1024), 0);
        let wire = Frame::new(1, messaging::Done).encode();
        a.write_all(&wire[..wire.len() - 1]).await.unwrap();
        drop(a);
        assert!(matches!(
            reader.next().await,
            Some(Err(CodecError::Truncated))
        ));

        let (mut a, b) = tokio::io::duplex(64);
        let mut reader = FramedRead::with_capacity(b, FrameCodec::new(1024), 0);
        a.write_all(&(1025u32).to_le_bytes()).await.unwrap();
        assert!(matches!(
            reader.next().await,
            Some(Err(CodecError::Frame(FrameError::TooLarge { .. })))
        ));
        assert!(reader.read_buffer().capacity() < 1025);
    }
}
