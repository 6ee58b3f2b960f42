//! The transport client's call support (issue 11, docs/PROTOCOL.md §4.10):
//! TURN relay credentials for a call's ICE agent. The credentials follow
//! draft-uberti-behave-turn-rest-00 §2.2 (coturn's TURN REST API): pass
//! `urls`, `username` and `password` as one WebRTC `RTCIceServer`, and ask
//! again before `ttl_secs` run out.

use tern_proto::body::calls::{GetTurnCredentials, TurnCredentials};
use tern_proto::fb::ErrorCode;

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
}
