//! The transport client's call support (issue 11, docs/PROTOCOL.md §4.10):
//! TURN relay credentials for a call's ICE agent. The credentials follow
//! draft-uberti-behave-turn-rest-00 §2.2 (coturn's TURN REST API): pass
//! `urls`, `username` and `password` as one WebRTC `RTCIceServer`, and ask
//! again before `ttl_secs` run out.
//!
//! Call signalling (§4.11): [`Client::call_signal`] sends one payload per
//! listed device (already end-to-end encrypted by the caller: the
//! [`crate::secure::SecureClient`] calls of [`crate::secure::calls`] seal
//! each with Olm and drive [`machine`]) as an ephemeral urgent signal; signals for this device arrive as notices
//! ([`Client::next_notice`]) carrying `CallSignalled`, which
//! [`call_signalled`] picks out. A device that reconnects within a minute
//! of a signal gets it again with the same `signal_id`: drop repeats.
//! [`machine`] is the sans-IO state machine of one device's calls;
//! [`wire`] the plaintext layout of one signal (docs/E2EE.md §8.3).

pub mod machine;
pub mod wire;

use tern_proto::body::calls::{CallSignal, CallSignalled, GetTurnCredentials, TurnCredentials};
use tern_proto::body::messaging::DevicePayload;
use tern_proto::fb::ErrorCode;
use tern_proto::Body;

use crate::sdk::{Client, ClientError};

/// Why [`Client::turn_credentials`] gave none.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The server has no TURN relay configured: calls can use direct (and
    /// STUN-discovered) paths only. The server's message says so.
    #[error("no TURN relay: {0}")]
    NotConfigured(String),
    /// The request failed (connection, timeout, another refusal).
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Client {
    /// Asks the server for TURN credentials valid for `ttl_secs` seconds.
    ///
    /// # Errors
    /// [`TurnError::NotConfigured`] where the server has no relay;
    /// [`TurnError::Client`] for anything else.
    pub async fn turn_credentials(&self) -> Result<TurnCredentials, TurnError> {
        match self.request(GetTurnCredentials).await {
            Ok(credentials) => Ok(credentials),
            Err(ClientError::Server {
                code: ErrorCode::NotConfigured,
                message,
                ..
            }) => Err(TurnError::NotConfigured(message)),
            Err(other) => Err(other.into()),
        }
    }

    /// Sends call signals for listed devices of `conversation_id`'s members
    /// (this account's other devices included): pushed at once, held a
    /// minute for devices that connect later, never stored in history.
    ///
    /// # Errors
    /// `NotMember`, `NotFound`; `InvalidArgument` for a device that is not
    /// a member's current device, this device, a device named twice, or a
    /// payload over 16 KiB.
    pub async fn call_signal(
        &self,
        conversation_id: u64,
        device_payloads: Vec<DevicePayload>,
    ) -> Result<(), ClientError> {
        let signal = CallSignal {
            conversation_id,
            device_payloads,
        };
        self.request(signal).await?;
        Ok(())
    }
}

/// The call signal a notice carries, if it is one.
pub fn call_signalled(notice: &Body) -> Option<&CallSignalled> {
    match notice {
        Body::CallSignalled(signal) => Some(signal),
        _ => None,
    }
}
