//! Call support (issue 11, docs/PROTOCOL.md §4.10): [`GetTurnCredentials`],
//! answered by [`TurnCredentials`], hands a device short-lived credentials
//! for the server's TURN relays (RFC 8656) in the shape of
//! draft-uberti-behave-turn-rest-00 §2.2 (coturn's `use-auth-secret`):
//! `username` is `"<expiry, unix seconds>:<user>"` and `password` is
//! `base64(HMAC-SHA1(turn_secret, username))`, which the relay recomputes
//! from the shared secret, so the server stores nothing per credential.

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
        ]
    }

    #[test]
    fn call_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
