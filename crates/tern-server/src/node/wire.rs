//! What nodes of a cluster say to each other over [`crate::cluster::NodeLinks`]:
//! an owner request forwarded by the node holding the caller's connection
//! ([`NodeCall`]), and the effects an owner sends to the other nodes
//! ([`NodePush`]). Encoded as CBOR (RFC 8949, `ciborium`); request and
//! reply frames travel inside as the client protocol's own encoded frames
//! (docs/PROTOCOL.md), so the owner decodes and checks them exactly as it
//! does a client's.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tern_store::{DeviceId, UserId};

/// A call to the owner node of a conversation; answered with the encoded
/// reply frame (length prefix included), ready for the caller's connection.
#[derive(Debug, Serialize, Deserialize)]
pub enum NodeCall {
    /// An owner request of `user`'s `device`, authenticated by the calling
    /// node: `frame` is the request frame (without its length prefix);
    /// `create_id` the conversation id a CreateConversation was routed by.
    Owner {
        user: UserId,
        device: DeviceId,
        frame: Bytes,
        create_id: Option<u64>,
    },
    /// `approver`'s decision on a device-link request, which lives on the
    /// node the new device is connected to; answered `[1]` when this node
    /// held the request and took the decision, `[0]` otherwise.
    LinkDecision {
        link_id: u64,
        approver: UserId,
        approve: bool,
    },
    /// Which of `devices` have a live connection on the called node
    /// (before a push wake-up: a device connected anywhere is not woken);
    /// answered with the CBOR list of those that do.
    Live { devices: Vec<(UserId, DeviceId)> },
    /// `user`'s devices changed: answered `[1]` once every owner shard of
    /// the called node has the news queued (before any later request).
    ForgetUser { user: UserId },
    /// The calling node has a new authenticated connection of `user`, as
    /// of its `generation` (see `super::interest`); answered `[1]` once
    /// recorded.
    Arrived { user: UserId, generation: u64 },
    /// Every user with a connection on the calling node, as of its
    /// `generation`: replaces what the called node held for it; answered
    /// `[1]`.
    Present { generation: u64, users: Vec<UserId> },
}

/// The frames of a fan-out: one for all recipients, or one per recipient.
#[derive(Debug, Serialize, Deserialize)]
pub enum WireFrames {
    Shared(Bytes),
    PerDevice(Vec<Bytes>),
}

/// An effect for the devices connected to the receiving node.
#[derive(Debug, Serialize, Deserialize)]
pub enum NodePush {
    /// A frame for the listed devices (skipping `except`); `ephemeral`:
    /// a realtime frame sent as a datagram where the connection takes one.
    Deliver {
        recipients: Vec<(UserId, DeviceId)>,
        except: Option<(UserId, DeviceId)>,
        frames: WireFrames,
        ephemeral: bool,
    },
    /// A frame for every connected device of each user.
    Notify { users: Vec<UserId>, frame: Bytes },
    /// Close every connection of a revoked device.
    CloseDevice { user: UserId, device: DeviceId },
    /// A device registered or removed its push endpoint: pushers forget
    /// that it had none.
    EndpointChanged { user: UserId, device: DeviceId },
    /// The sending node's last connection of `user` closed, as of its
    /// `generation` (see `super::interest`).
    Left { user: UserId, generation: u64 },
}

/// A node message that could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("node message: {0}; the nodes may run different tern versions, upgrade them to one")]
pub struct WireError(String);

/// CBOR bytes of `message`.
pub fn encode<T: Serialize>(message: &T) -> Result<Bytes, WireError> {
    let mut out = Vec::new();
    ciborium::into_writer(message, &mut out).map_err(|e| WireError(e.to_string()))?;
    Ok(out.into())
}

/// The message `bytes` encode.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, WireError> {
    ciborium::from_reader(bytes).map_err(|e| WireError(e.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn pushes_round_trip_and_garbage_is_an_error() {
        let push = NodePush::Deliver {
            recipients: vec![("bob".into(), 2)],
            except: Some(("alice".into(), 1)),
            frames: WireFrames::Shared(Bytes::from_static(b"\x01\x02frame")),
            ephemeral: false,
        };
        let bytes = encode(&push).unwrap();
        match decode::<NodePush>(&bytes).unwrap() {
            NodePush::Deliver {
                recipients,
                except,
                frames: WireFrames::Shared(frame),
                ephemeral: false,
            } => {
                assert_eq!(recipients, vec![("bob".to_owned(), 2)]);
                assert_eq!(except, Some(("alice".to_owned(), 1)));
                assert_eq!(&frame[..], b"\x01\x02frame");
            }
            other => panic!("{other:?}"),
        }
        assert!(decode::<NodePush>(b"\xff\x00garbage").is_err());
        assert!(decode::<NodeCall>(&bytes).is_err(), "a push is not a call");
    }
}
