//! The transport client's push registration (issue 11, docs/PROTOCOL.md
//! §4.13): where the server wakes this device while it has no connection.
//! A wake-up carries a conversation id and a count only; the app answers
//! it by connecting and syncing.

use tern_proto::body::push::{PushEndpoint, RegisterPush, UnregisterPush};
use tern_proto::fb::ErrorCode;

use crate::sdk::{Client, ClientError};

/// Why [`Client::register_push`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The endpoint is refused (not https, too long, empty token...); the
    /// server's message says what to fix.
    #[error("push endpoint refused: {0}")]
    Invalid(String),
    /// A gateway token where the server has no push gateway: register a
    /// Web Push URL instead.
    #[error("no push gateway: {0}")]
    NotConfigured(String),
    /// The request failed (connection, timeout, another refusal).
    #[error(transparent)]
    Client(#[from] ClientError),
}

impl Client {
    /// Registers (or replaces) this device's push endpoint: a Web Push /
    /// UnifiedPush URL (`https://`), or a token for the server's gateway.
    ///
    /// # Errors
    /// [`PushError::Invalid`], [`PushError::NotConfigured`], or
    /// [`PushError::Client`] for anything else.
    pub async fn register_push(&self, endpoint: PushEndpoint) -> Result<(), PushError> {
        match self.request(RegisterPush { endpoint }).await {
            Ok(_) => Ok(()),
            Err(ClientError::Server {
                code: ErrorCode::InvalidArgument,
                message,
                ..
            }) => Err(PushError::Invalid(message)),
            Err(ClientError::Server {
                code: ErrorCode::NotConfigured,
                message,
                ..
            }) => Err(PushError::NotConfigured(message)),
            Err(other) => Err(other.into()),
        }
    }

    /// Removes this device's push endpoint (nothing happens if it has none).
    ///
    /// # Errors
    /// [`ClientError`] when the request fails.
    pub async fn unregister_push(&self) -> Result<(), ClientError> {
        self.request(UnregisterPush).await.map(|_| ())
    }
}
