//! Storage form of a per-device send: every recipient device's ciphertext in
//! one stored payload, so a message stays one row with one seq. Each device
//! is handed only its own ciphertext, on delivery and in history.
//!
//! Layout: `u16` count, then per entry `u8` user length, user, `u32` device,
//! `u32` payload length, payload (all big-endian).

use bytes::{BufMut, Bytes, BytesMut};

use tern_proto::body::messaging::DevicePayload;

/// Packs per-device payloads; `None` if a field is too large for the layout.
pub fn pack(payloads: &[DevicePayload]) -> Option<Bytes> {
    let count = u16::try_from(payloads.len()).ok()?;
    let size: usize = payloads
        .iter()
        .map(|p| 1 + p.user.len() + 8 + p.payload.len())
        .sum();
    let mut out = BytesMut::with_capacity(2 + size);
    out.put_u16(count);
    for p in payloads {
        out.put_u8(u8::try_from(p.user.len()).ok()?);
        out.put_slice(p.user.as_bytes());
        out.put_u32(p.device);
        out.put_u32(u32::try_from(p.payload.len()).ok()?);
        out.put_slice(&p.payload);
    }
    Some(out.freeze())
}

/// The ciphertext packed for `(user, device)`, if any (also `None` when the
/// stored bytes are damaged).
pub fn find(packed: &Bytes, user: &str, device: u32) -> Option<Bytes> {
    let mut at = 2usize;
    let count = u16::from_be_bytes(packed.get(..2)?.try_into().ok()?);
    for _ in 0..count {
        let user_len = usize::from(*packed.get(at)?);
        let entry_user = packed.get(at + 1..at + 1 + user_len)?;
        at += 1 + user_len;
        let entry_device = u32::from_be_bytes(packed.get(at..at + 4)?.try_into().ok()?);
        let len = u32::from_be_bytes(packed.get(at + 4..at + 8)?.try_into().ok()?) as usize;
        at += 8;
        if entry_user == user.as_bytes() && entry_device == device {
            packed.get(at..at + len)?;
            return Some(packed.slice(at..at + len));
        }
        at += len;
    }
    None
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_finds_each_device() {
        let payloads = vec![
            DevicePayload {
                user: "bob".into(),
                device: 1,
                payload: Bytes::from_static(b"for bob 1"),
            },
            DevicePayload {
                user: "bob".into(),
                device: 2,
                payload: Bytes::from_static(b"for bob 2"),
            },
            DevicePayload {
                user: "alice".into(),
                device: 2,
                payload: Bytes::new(),
            },
        ];
        let packed = pack(&payloads).unwrap();
        assert_eq!(
            find(&packed, "bob", 2).unwrap(),
            Bytes::from_static(b"for bob 2")
        );
        assert_eq!(find(&packed, "alice", 2).unwrap(), Bytes::new());
        assert!(find(&packed, "alice", 1).is_none());
        for cut in 0..packed.len() {
            let _ = find(&packed.slice(..cut), "bob", 2);
        }
    }
}
