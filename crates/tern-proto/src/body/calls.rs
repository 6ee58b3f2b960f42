//! Call support (issue 11, docs/PROTOCOL.md §4.10): [`GetTurnCredentials`],
//! answered by [`TurnCredentials`], hands a device short-lived credentials
//! for the server's TURN relays (RFC 8656) in the shape of
//! draft-uberti-behave-turn-rest-00 §2.2 (coturn's `use-auth-secret`):
//! `username` is `"<expiry, unix seconds>:<user>"` and `password` is
//! `base64(HMAC-SHA1(turn_secret, username))`, which the relay recomputes
//! from the shared secret, so the server stores nothing per credential.
//!
//! Call signalling (§4.11): [`CallSignal`] carries one end-to-end encrypted
//! payload per listed device (offer, answer, ICE candidate, hangup, busy:
//! the kind is inside the ciphertext); the server pushes each as
//! [`CallSignalled`] at once and holds it at most [`CALL_HOLD_MS`] for a
//! device that connects later, never in history.

use bytes::Bytes;

use crate::body::messaging::{DevicePayload, Done};
use crate::body::{owned_strings, strings, Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Asks for TURN credentials; answered by [`TurnCredentials`], or the
/// error `NotConfigured` where the server has no TURN relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetTurnCredentials;

impl WireBody for GetTurnCredentials {
    const TAG: fb::Body = fb::Body::GetTurnCredentials;
    type Table<'a> = fb::GetTurnCredentials<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        fb::GetTurnCredentials::create(b, &fb::GetTurnCredentialsArgs {}).as_union_value()
    }

    fn decode(_: fb::GetTurnCredentials<'_>) -> Result<Self, FrameError> {
        Ok(GetTurnCredentials)
    }
}

impl Request for GetTurnCredentials {
    type Response = TurnCredentials;
}

/// TURN credentials valid for `ttl_secs` seconds from the answer: `urls`
/// are `turn:`/`turns:`/`stun:` URIs (RFC 7065, RFC 7064), `username` is
/// `"<expiry unix seconds>:<user>"`, `password` the base64 (RFC 4648 §4,
/// padded) of HMAC-SHA1 (RFC 2104) of `username` keyed by the server's
/// `turn_secret` (draft-uberti-behave-turn-rest-00 §2.2). A WebRTC client
/// passes all three as one `RTCIceServer`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnCredentials {
    pub urls: Vec<String>,
    pub username: String,
    pub password: String,
    pub ttl_secs: u32,
}

impl WireBody for TurnCredentials {
    const TAG: fb::Body = fb::Body::TurnCredentials;
    type Table<'a> = fb::TurnCredentials<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let urls = strings(b, &self.urls);
        let username = b.create_string(&self.username);
        let password = b.create_string(&self.password);
        let args = fb::TurnCredentialsArgs {
            urls: Some(urls),
            username: Some(username),
            password: Some(password),
            ttl_secs: self.ttl_secs,
        };
        fb::TurnCredentials::create(b, &args).as_union_value()
    }

    fn decode(t: fb::TurnCredentials<'_>) -> Result<Self, FrameError> {
        Ok(TurnCredentials {
            urls: owned_strings(Some(t.urls())),
            username: t.username().to_owned(),
            password: t.password().to_owned(),
            ttl_secs: t.ttl_secs(),
        })
    }
}

/// How long the server holds a call signal for a device that is not
/// connected, ms: a device connecting later than this after the signal
/// never gets it (a ring that old is over).
pub const CALL_HOLD_MS: u64 = 60_000;
/// Most call signals the server holds per device (the oldest dropped).
pub const CALL_HOLD_PER_DEVICE: usize = 32;
/// Largest payload of one device in a [`CallSignal`], bytes (an SDP offer
/// with many candidates stays well under it).
pub const MAX_CALL_PAYLOAD: usize = 16 * 1024;

/// Call signals for listed devices of `conversation_id`'s members (the
/// sender's own other devices included); answered by [`Done`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSignal {
    pub conversation_id: u64,
    pub device_payloads: Vec<DevicePayload>,
}

impl WireBody for CallSignal {
    const TAG: fb::Body = fb::Body::CallSignal;
    type Table<'a> = fb::CallSignal<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let items: Vec<_> = self.device_payloads.iter().map(|p| p.encode(b)).collect();
        let args = fb::CallSignalArgs {
            conversation_id: self.conversation_id,
            device_payloads: Some(b.create_vector(&items)),
        };
        fb::CallSignal::create(b, &args).as_union_value()
    }

    fn decode(t: fb::CallSignal<'_>) -> Result<Self, FrameError> {
        Ok(CallSignal {
            conversation_id: t.conversation_id(),
            device_payloads: t
                .device_payloads()
                .iter()
                .map(DevicePayload::decode)
                .collect(),
        })
    }
}

impl Request for CallSignal {
    type Response = Done;
}

/// Server push (request id 0): a call signal for this device from
/// `sender`'s device `sender_device`. `signal_id` repeats on a replay after
/// reconnecting: drop a signal id already seen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallSignalled {
    pub signal_id: u64,
    pub conversation_id: u64,
    pub sender: String,
    pub sender_device: u32,
    /// When the server took the signal, unix ms.
    pub server_time_ms: u64,
    pub payload: Bytes,
}

impl WireBody for CallSignalled {
    const TAG: fb::Body = fb::Body::CallSignalled;
    type Table<'a> = fb::CallSignalled<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let sender = b.create_string(&self.sender);
        let payload = b.create_vector(&self.payload[..]);
        let args = fb::CallSignalledArgs {
            signal_id: self.signal_id,
            conversation_id: self.conversation_id,
            sender: Some(sender),
            sender_device: self.sender_device,
            server_time_ms: self.server_time_ms,
            payload: Some(payload),
        };
        fb::CallSignalled::create(b, &args).as_union_value()
    }

    fn decode(t: fb::CallSignalled<'_>) -> Result<Self, FrameError> {
        Ok(CallSignalled {
            signal_id: t.signal_id(),
            conversation_id: t.conversation_id(),
            sender: t.sender().to_owned(),
            sender_device: t.sender_device(),
            server_time_ms: t.server_time_ms(),
            payload: Bytes::copy_from_slice(t.payload().bytes()),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            GetTurnCredentials.into(),
            TurnCredentials {
                urls: vec![
                    "turn:turn.example.org:3478?transport=udp".into(),
                    "turns:turn.example.org:5349?transport=tcp".into(),
                ],
                username: "1700086400:alice".into(),
                password: "c2VjcmV0LWhtYWMtc2hhMQ==".into(),
                ttl_secs: 86_400,
            }
            .into(),
            CallSignal {
                conversation_id: 4,
                device_payloads: vec![DevicePayload {
                    user: "bob".into(),
                    device: 2,
                    payload: Bytes::from_static(b"offer"),
                }],
            }
            .into(),
            CallSignalled {
                signal_id: 77,
                conversation_id: 4,
                sender: "alice".into(),
                sender_device: 1,
                server_time_ms: 1_700_000_000_000,
                payload: Bytes::from_static(b"offer"),
            }
            .into(),
        ]
    }

    #[test]
    fn call_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
