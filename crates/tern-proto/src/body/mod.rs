//! One owned Rust struct per frame body, grouped by family, each with its
//! FlatBuffers encoding and decoding side by side ([`WireBody`]). Decoding
//! checks what the verifier cannot (key and signature lengths, paired
//! fields) so the server only sees sane values. [`crate::frame`] wraps the
//! structs in [`crate::Body`] and dispatches on the union tag;
//! [`crate::Request`] ties each client request to the body that answers it.
//!
//! Structs are named after their wire tables, so some (`messaging::Send`,
//! `sync::Sync`) share a name with a std marker trait: refer to them through
//! their family module, never by glob import.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};

use crate::codec::FrameError;
use crate::fb;

pub mod auth;
pub mod calls;
pub mod conversations;
pub mod devices;
pub mod errors;
pub mod messaging;
pub mod mls;
pub mod prekeys;
pub mod presence;
pub mod privacy;
pub mod push;
pub mod reach;
pub mod safety;
pub mod settings;
pub mod sync;
pub mod typing;

pub(crate) type Builder<'a> = FlatBufferBuilder<'a>;
pub(crate) type Union = WIPOffset<flatbuffers::UnionWIPOffset>;

/// A frame body: how it is written into a union value and read back from
/// its verified table.
pub(crate) trait WireBody: Sized {
    /// The union tag the body is written with (several bodies may share
    /// one; [`crate::frame`] tells them apart by their fields).
    const TAG: fb::Body;
    /// The verified FlatBuffers table the body is read from.
    type Table<'a>;

    /// Writes the body's table; its offset as a union value.
    fn encode(&self, b: &mut Builder<'_>) -> Union;

    /// Reads the body from its verified table, checking what the verifier cannot.
    fn decode(t: Self::Table<'_>) -> Result<Self, FrameError>;
}

pub(crate) fn missing(what: &str) -> FrameError {
    FrameError::Malformed(format!(
        "the frame's {what} is missing or of the wrong type"
    ))
}

pub(crate) fn fixed<const N: usize>(v: Vector<'_, u8>, what: &str) -> Result<[u8; N], FrameError> {
    <[u8; N]>::try_from(v.bytes())
        .map_err(|_| FrameError::Malformed(format!("{what} must be {N} bytes, got {}", v.len())))
}

pub(crate) fn owned_strings(v: Option<Vector<'_, ForwardsUOffset<&str>>>) -> Vec<String> {
    v.map(|v| v.iter().map(str::to_owned).collect())
        .unwrap_or_default()
}

pub(crate) fn strings<'a>(
    b: &mut Builder<'a>,
    items: &[String],
) -> WIPOffset<Vector<'a, ForwardsUOffset<&'a str>>> {
    let offsets: Vec<_> = items.iter().map(|s| b.create_string(s)).collect();
    b.create_vector(&offsets)
}

pub(crate) fn bytes_of(v: Option<Vector<'_, u8>>) -> Option<Bytes> {
    v.map(|v| Bytes::copy_from_slice(v.bytes()))
}

pub(crate) fn opt_bytes<'a>(
    b: &mut Builder<'a>,
    v: &Option<Bytes>,
) -> Option<WIPOffset<Vector<'a, u8>>> {
    v.as_ref().map(|v| b.create_vector(&v[..]))
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
pub(crate) mod tests {
    use crate::codec::{Limits, LEN_PREFIX};
    use crate::frame::{Body, Frame};

    /// Encodes each body in a frame, checks the prefix, and decodes it back unchanged.
    pub(crate) fn roundtrip_all(bodies: Vec<Body>) {
        for body in bodies {
            let frame = Frame::new(7, body);
            let wire = frame.encode();
            let len = u32::from_le_bytes([wire[0], wire[1], wire[2], wire[3]]) as usize;
            assert_eq!(len, wire.len() - LEN_PREFIX);
            let back =
                Frame::decode(&wire[LEN_PREFIX..], &Limits::client_inbound()).expect("decodes");
            assert_eq!(back, frame);
        }
    }
}
