//! [`TernError`]: the one error type the bindings raise (a Swift `Error`,
//! a Kotlin exception, a Python exception), one variant per kind of failure
//! the SDK reports. Every variant carries the SDK's own sentence, which says
//! what went wrong and what to do about it.

use tern_client::message_store::MessageStoreError;
use tern_client::secure::SecureError;
use tern_client::ClientError;

/// Why a [`crate::TernClient`] call failed.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum TernError {
    /// The state directory is held by another client, in this process or
    /// another (a running `tern listen`, say); nothing in it was touched.
    #[error("{message}")]
    StateInUse { message: String },
    /// The device identity is missing (not registered yet), damaged, or
    /// already there (registering into a used state directory), or the
    /// state directory cannot be read or written.
    #[error("{message}")]
    Identity { message: String },
    /// The server could not be reached, its certificate did not match, or
    /// the connection was lost before the answer came (then the call may be
    /// retried).
    #[error("{message}")]
    Connection { message: String },
    /// The server refused the request; `code` is the protocol's error code
    /// (`NotFound`, `ConsentRequired`, `Conflict`, ... see docs/PROTOCOL.md).
    #[error("{message}")]
    Server { code: String, message: String },
    /// No answer within the request timeout.
    #[error("{message}")]
    Timeout { message: String },
    /// The client was closed ([`crate::TernClient::close`]), or closed
    /// itself after a message could not be stored.
    #[error("{message}")]
    Closed { message: String },
    /// An argument was refused before anything was sent: a malformed
    /// address, fingerprint or handle, an empty search, a limit of 0, a
    /// request over a protocol limit.
    #[error("{message}")]
    InvalidArgument { message: String },
    /// End-to-end encryption failed (Olm for 1:1, MLS for groups), or a
    /// peer's key bundle is not signed by its device key.
    #[error("{message}")]
    Encryption { message: String },
    /// A group change names a user already in (or not in) the group, or a
    /// user without published KeyPackages.
    #[error("{message}")]
    Membership { message: String },
    /// The answer to a change of group `group` was lost: it may or may not
    /// have happened. It is settled when the client reconnects; then check
    /// the members and retry if needed.
    #[error("{message}")]
    CommitOutcomeUnknown { group: u64, message: String },
    /// The local message store (SQLite) failed: a full disk, a damaged file.
    #[error("{message}")]
    Store { message: String },
    /// The server answered something this SDK does not expect.
    #[error("{message}")]
    Protocol { message: String },
}

impl TernError {
    /// An [`TernError::InvalidArgument`] with this sentence.
    pub(crate) fn invalid(message: impl Into<String>) -> TernError {
        TernError::InvalidArgument {
            message: message.into(),
        }
    }
}

impl From<ClientError> for TernError {
    fn from(e: ClientError) -> TernError {
        let message = e.to_string();
        match e {
            ClientError::Identity(_) => TernError::Identity { message },
            ClientError::Connection(_) | ClientError::Disconnected => {
                TernError::Connection { message }
            }
            ClientError::Server { code, .. } => TernError::Server {
                code: code_name(code),
                message,
            },
            ClientError::Conflict(ref c) => TernError::Server {
                code: code_name(c.error.code),
                message,
            },
            ClientError::Timeout => TernError::Timeout { message },
            ClientError::Closed => TernError::Closed { message },
            ClientError::Unexpected(_) => TernError::Protocol { message },
            ClientError::TooLarge { .. }
            | ClientError::OverLimit(_)
            | ClientError::Handle(_)
            | ClientError::DeviceName(_) => TernError::InvalidArgument { message },
        }
    }
}

impl From<SecureError> for TernError {
    fn from(e: SecureError) -> TernError {
        let message = e.to_string();
        match e {
            SecureError::Lock(tern_client::state_lock::StateLockError::InUse { .. }) => {
                TernError::StateInUse { message }
            }
            SecureError::Lock(_) => TernError::Identity { message },
            SecureError::Client(e) => e.into(),
            SecureError::Olm(_) | SecureError::Mls(_) | SecureError::BadBundle(_) => {
                TernError::Encryption { message }
            }
            SecureError::AlreadyMembers { .. }
            | SecureError::NotMembers { .. }
            | SecureError::NoKeyPackages { .. } => TernError::Membership { message },
            SecureError::MessageStore(e) => e.into(),
            SecureError::CommitOutcomeUnknown { group, .. } => {
                TernError::CommitOutcomeUnknown { group, message }
            }
            SecureError::Protocol(_) => TernError::Protocol { message },
        }
    }
}

impl From<MessageStoreError> for TernError {
    fn from(e: MessageStoreError) -> TernError {
        let message = e.to_string();
        match e {
            MessageStoreError::EmptySearch | MessageStoreError::ZeroLimit => {
                TernError::InvalidArgument { message }
            }
            _ => TernError::Store { message },
        }
    }
}

/// The protocol's name of an error code (`NotFound`), or its number.
fn code_name(code: tern_proto::fb::ErrorCode) -> String {
    code.variant_name()
        .map_or_else(|| format!("{}", code.0), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_refusals_keep_their_code_and_sentence() {
        let e = ClientError::Server {
            code: tern_proto::fb::ErrorCode::NotFound,
            message: "no such user".into(),
            retry_after_ms: 0,
        };
        match TernError::from(SecureError::from(e)) {
            TernError::Server { code, message } => {
                assert_eq!(code, "NotFound");
                assert_eq!(message, "the server refused: no such user");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_search_is_an_invalid_argument() {
        let e = TernError::from(MessageStoreError::EmptySearch);
        assert!(matches!(e, TernError::InvalidArgument { .. }), "{e:?}");
        assert!(e.to_string().contains("no words"));
    }
}
