//! Push notifications (issue 11, docs/PROTOCOL.md §4.13): a device
//! registers where the server wakes it while it has no connection
//! ([`RegisterPush`]) and removes it ([`UnregisterPush`]); both are answered
//! with `Done`. The endpoint is a Web Push / UnifiedPush URL (RFC 8030 §5:
//! the server POSTs to it) or a token for the server's configured push
//! gateway (the shape of Matrix's Sygnal, which relays to APNs and FCM).
//! The wake-up carries a conversation id and a count, nothing else.

use crate::body::messaging::Done;
use crate::body::{Builder, Union, WireBody};
use crate::codec::FrameError;
use crate::fb;
use crate::request::Request;

/// Longest Web Push endpoint URL, in bytes (longer: `InvalidArgument`).
pub const MAX_PUSH_URL_LEN: usize = 512;
/// Longest gateway token, in bytes (an APNs token is 64 hex digits, an FCM
/// registration token about 160 characters; longer: `InvalidArgument`).
pub const MAX_PUSH_TOKEN_LEN: usize = 4096;

/// Where the server wakes a device that has no connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushEndpoint {
    /// The device's own Web Push / UnifiedPush endpoint: the server POSTs
    /// the wake-up to this URL (https; http to loopback only where the
    /// server allows it for tests).
    WebPush { url: String },
    /// A token the server hands to its configured push gateway with each
    /// wake-up (`NotConfigured` where the server has none).
    Gateway { token: String },
}

/// Registers (or replaces) the calling device's push endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterPush {
    pub endpoint: PushEndpoint,
}

impl WireBody for RegisterPush {
    const TAG: fb::Body = fb::Body::RegisterPush;
    type Table<'a> = fb::RegisterPush<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        let (kind, url, token) = match &self.endpoint {
            PushEndpoint::WebPush { url } => {
                (fb::PushKind::WebPush, Some(b.create_string(url)), None)
            }
            PushEndpoint::Gateway { token } => {
                (fb::PushKind::Gateway, None, Some(b.create_string(token)))
            }
        };
        let args = fb::RegisterPushArgs { kind, url, token };
        fb::RegisterPush::create(b, &args).as_union_value()
    }

    fn decode(t: fb::RegisterPush<'_>) -> Result<Self, FrameError> {
        let malformed = |what: &str| FrameError::Malformed(format!("RegisterPush: {what}"));
        let endpoint = match (t.kind(), t.url(), t.token()) {
            (fb::PushKind::WebPush, Some(url), None) => PushEndpoint::WebPush { url: url.into() },
            (fb::PushKind::Gateway, None, Some(token)) => PushEndpoint::Gateway {
                token: token.into(),
            },
            (fb::PushKind::WebPush, _, _) => return Err(malformed("WebPush takes a url only")),
            (fb::PushKind::Gateway, _, _) => return Err(malformed("Gateway takes a token only")),
            (other, _, _) => return Err(malformed(&format!("unknown kind {}", other.0))),
        };
        Ok(RegisterPush { endpoint })
    }
}

impl Request for RegisterPush {
    type Response = Done;
}

/// Removes the calling device's push endpoint (a no-op if it has none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnregisterPush;

impl WireBody for UnregisterPush {
    const TAG: fb::Body = fb::Body::UnregisterPush;
    type Table<'a> = fb::UnregisterPush<'a>;

    fn encode(&self, b: &mut Builder<'_>) -> Union {
        fb::UnregisterPush::create(b, &fb::UnregisterPushArgs {}).as_union_value()
    }

    fn decode(_: fb::UnregisterPush<'_>) -> Result<Self, FrameError> {
        Ok(UnregisterPush)
    }
}

impl Request for UnregisterPush {
    type Response = Done;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::frame::Body;

    /// One of each body of this family.
    pub(crate) fn samples() -> Vec<Body> {
        vec![
            RegisterPush {
                endpoint: PushEndpoint::WebPush {
                    url: "https://push.example.org/wake/abc".into(),
                },
            }
            .into(),
            RegisterPush {
                endpoint: PushEndpoint::Gateway {
                    token: "fcm-token-1".into(),
                },
            }
            .into(),
            UnregisterPush.into(),
        ]
    }

    #[test]
    fn push_bodies_roundtrip() {
        crate::body::tests::roundtrip_all(samples());
    }
}
