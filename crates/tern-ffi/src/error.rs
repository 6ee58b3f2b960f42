//! [`TernError`]: the one error type the bindings raise (a Swift `Error`,
//! a Kotlin exception, a Python exception), one variant per kind of failure
//! the SDK reports. Every variant carries the SDK's own sentence, which says
//! what went wrong and what to do about it.

use tern_client::attachment::{AttachmentError, SealError};
use tern_client::content::group_info::GroupInfoError;
use tern_client::message_store::{DeleteRefusal, EditRefusal, MessageStoreError};
use tern_client::secure::content_ops::{DeleteError, EditError, ReactError, ReplyError};
use tern_client::secure::group_info::SetGroupInfoError;
use tern_client::secure::receipts::MarkReadError;
use tern_client::secure::requests::RequestError;
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
    /// A reaction, reply, edit or delete names message `seq`, which this
    /// device does not hold (or which is a reaction, edit or receipt, not a
    /// message): pick one from [`crate::TernClient::history_view`].
    /// Nothing was sent.
    #[error("{message}")]
    NoSuchMessage { seq: u64, message: String },
    /// Message `seq` was deleted (or is already deleted here): nothing to
    /// react to, reply to, edit or delete. Nothing was sent.
    #[error("{message}")]
    MessageDeleted { seq: u64, message: String },
    /// A rule of the SDK forbids the call (`reason` says which); nothing
    /// was sent.
    #[error("{message}")]
    Refused { reason: Refusal, message: String },
    /// A delete for everyone reached every member's device (they erase
    /// message `seq`), but the server refused to erase its encrypted copy
    /// (older than its purge window, say); that copy expires as usual.
    #[error("{message}")]
    NotPurged { seq: u64, message: String },
    /// The conversation is marked read on this device, but the read receipt
    /// could not be sent; marking it read again retries.
    #[error("{message}")]
    ReceiptNotSent { message: String },
    /// A local file could not be read or written (an attachment to send, or
    /// where a fetched one goes).
    #[error("{message}")]
    File { message: String },
    /// An attachment's upload or download failed: the server refused it
    /// (too large for it, the account's quota, or its byte rate: then
    /// `retry_after_ms` says when to try again) or the connection kept
    /// failing (`retryable`: sending the same file again resumes).
    #[error("{message}")]
    Transfer {
        retryable: bool,
        retry_after_ms: u64,
        message: String,
    },
}

/// Which rule refused a call ([`TernError::Refused`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, uniffi::Enum)]
pub enum Refusal {
    /// Only the message's sender may edit it or delete it for everyone.
    NotSender,
    /// An edit more than 24 hours after the message (as in WhatsApp's and
    /// Signal's edit windows, whose lengths differ).
    TooLate,
    /// Only texts and replies can be edited.
    NotText,
    /// Only groups have a name, topic and avatar.
    NotAGroup,
    /// The conversation is no pending message request (accepted already,
    /// deleted here, from a blocked user, or not a stranger's direct
    /// conversation): `requests` lists them.
    NotARequest,
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
            | SecureError::NoKeyPackages { .. }
            | SecureError::NotAGroup(_) => TernError::Membership { message },
            SecureError::MessageStore(e) => e.into(),
            SecureError::CommitOutcomeUnknown { group, .. } => {
                TernError::CommitOutcomeUnknown { group, message }
            }
            SecureError::MembersNotAdded { .. } => TernError::Membership { message },
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

impl From<ReactError> for TernError {
    fn from(e: ReactError) -> TernError {
        let message = e.to_string();
        match e {
            ReactError::NoEmoji | ReactError::EmojiTooLong(_) => TernError::invalid(message),
            ReactError::NoSuchMessage { seq, .. } => TernError::NoSuchMessage { seq, message },
            ReactError::Deleted { seq } => TernError::MessageDeleted { seq, message },
            ReactError::Store(e) => e.into(),
            ReactError::Send(e) => e.into(),
        }
    }
}

impl From<ReplyError> for TernError {
    fn from(e: ReplyError) -> TernError {
        let message = e.to_string();
        match e {
            ReplyError::NoSuchMessage { seq, .. } => TernError::NoSuchMessage { seq, message },
            ReplyError::Deleted { seq } => TernError::MessageDeleted { seq, message },
            ReplyError::Store(e) => e.into(),
            ReplyError::Send(e) => e.into(),
        }
    }
}

impl From<EditError> for TernError {
    fn from(e: EditError) -> TernError {
        let message = e.to_string();
        let (seq, refusal) = match e {
            EditError::Refused { seq, refusal } => (seq, refusal),
            EditError::Store(e) => return e.into(),
            EditError::Send(e) => return e.into(),
        };
        let reason = match refusal {
            EditRefusal::NotFound => return TernError::NoSuchMessage { seq, message },
            EditRefusal::Deleted => return TernError::MessageDeleted { seq, message },
            EditRefusal::NotSender => Refusal::NotSender,
            EditRefusal::TooLate => Refusal::TooLate,
            EditRefusal::NotText => Refusal::NotText,
        };
        TernError::Refused { reason, message }
    }
}

impl From<DeleteError> for TernError {
    fn from(e: DeleteError) -> TernError {
        let message = e.to_string();
        match e {
            DeleteError::Refused { seq, refusal } => match refusal {
                DeleteRefusal::NotSender => TernError::Refused {
                    reason: Refusal::NotSender,
                    message,
                },
                DeleteRefusal::NotFound | DeleteRefusal::NotAMessage => {
                    TernError::NoSuchMessage { seq, message }
                }
            },
            DeleteError::AlreadyDeleted { seq } => TernError::MessageDeleted { seq, message },
            DeleteError::NotPurged { seq, .. } => TernError::NotPurged { seq, message },
            DeleteError::PurgeRefused { source, .. } => source.into(),
            DeleteError::Store(e) => e.into(),
            DeleteError::Send(e) => e.into(),
        }
    }
}

impl From<AttachmentError> for TernError {
    fn from(e: AttachmentError) -> TernError {
        let message = e.to_string();
        match e {
            AttachmentError::Source { .. } | AttachmentError::Io(_) => TernError::File { message },
            AttachmentError::Seal(SealError::TooLarge(_)) | AttachmentError::Pointer(_) => {
                TernError::InvalidArgument { message }
            }
            AttachmentError::Seal(_) => TernError::File { message },
            AttachmentError::Transfer(t) => TernError::Transfer {
                retryable: t.is_retryable(),
                retry_after_ms: t
                    .retry_after()
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                message,
            },
            AttachmentError::Open(_) => TernError::Encryption { message },
            AttachmentError::Send(e) => e.into(),
        }
    }
}

impl From<SetGroupInfoError> for TernError {
    fn from(e: SetGroupInfoError) -> TernError {
        let message = e.to_string();
        match e {
            SetGroupInfoError::Invalid(e) => e.into(),
            SetGroupInfoError::NotAGroup(_) => TernError::Refused {
                reason: Refusal::NotAGroup,
                message,
            },
            SetGroupInfoError::Send(e) => e.into(),
        }
    }
}

impl From<GroupInfoError> for TernError {
    fn from(e: GroupInfoError) -> TernError {
        TernError::invalid(e.to_string())
    }
}

impl From<MarkReadError> for TernError {
    fn from(e: MarkReadError) -> TernError {
        let message = e.to_string();
        match e {
            MarkReadError::Store(e) => e.into(),
            MarkReadError::Send(_) => TernError::ReceiptNotSent { message },
        }
    }
}

impl From<RequestError> for TernError {
    fn from(e: RequestError) -> TernError {
        let message = e.to_string();
        match e {
            RequestError::Secure(e) => e.into(),
            RequestError::Store(e) => e.into(),
            RequestError::NotARequest(_) => TernError::Refused {
                reason: Refusal::NotARequest,
                message,
            },
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

    #[test]
    fn edit_refusals_become_typed_reasons() {
        let refused = |refusal| TernError::from(EditError::Refused { seq: 4, refusal });
        match refused(EditRefusal::TooLate) {
            TernError::Refused { reason, message } => {
                assert_eq!(reason, Refusal::TooLate);
                assert!(message.contains("24 hours"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let missing = refused(EditRefusal::NotFound);
        assert!(
            matches!(missing, TernError::NoSuchMessage { seq: 4, .. }),
            "{missing:?}"
        );
        let deleted = refused(EditRefusal::Deleted);
        assert!(
            matches!(deleted, TernError::MessageDeleted { seq: 4, .. }),
            "{deleted:?}"
        );
    }

    #[test]
    fn delete_and_request_refusals_are_typed() {
        let not_mine = TernError::from(DeleteError::Refused {
            seq: 2,
            refusal: DeleteRefusal::NotSender,
        });
        let expected = Refusal::NotSender;
        assert!(matches!(not_mine, TernError::Refused { reason, .. } if reason == expected));
        let again = TernError::from(DeleteError::AlreadyDeleted { seq: 2 });
        assert!(
            matches!(again, TernError::MessageDeleted { seq: 2, .. }),
            "{again:?}"
        );
        let request = TernError::from(RequestError::NotARequest(9));
        let expected = Refusal::NotARequest;
        assert!(matches!(request, TernError::Refused { reason, .. } if reason == expected));
        assert!(request.to_string().contains("conversation 9"), "{request}");
        let emoji = TernError::from(ReactError::NoEmoji);
        assert!(
            matches!(emoji, TernError::InvalidArgument { .. }),
            "{emoji:?}"
        );
    }
}
