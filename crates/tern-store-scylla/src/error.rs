//! Driver errors mapped onto the store's [`BackendErrorKind`]s: what a
//! retry can fix (a node down, a timeout, an overloaded or bootstrapping
//! coordinator, a lost connection) is `Unavailable` or `Timeout`; what needs
//! an operator (a schema that does not match: run `tern migrate`; bad
//! credentials or permissions; a syntax error, i.e. a bug) is
//! `Misconfigured`; a row that does not decode is `Corrupt`.

use scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError};
use tern_store::{BackendError, BackendErrorKind};

/// The store error for a failed request doing `what`.
pub(crate) fn execution(what: &str, e: &ExecutionError) -> BackendError {
    BackendError::new(execution_kind(e), format!("ScyllaDB {what}: {e}"))
}

/// The store error for a row of `what` that does not decode.
pub(crate) fn decode(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::corrupt(format!("ScyllaDB {what}: unexpected row shape: {e}"))
}

/// The kind of a failed request.
pub fn execution_kind(e: &ExecutionError) -> BackendErrorKind {
    match e {
        ExecutionError::RequestTimeout(_) => BackendErrorKind::Timeout,
        ExecutionError::EmptyPlan
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::UseKeyspaceError(_)
        | ExecutionError::SchemaAgreementError(_)
        | ExecutionError::MetadataError(_) => BackendErrorKind::Unavailable,
        ExecutionError::LastAttemptError(attempt) => attempt_kind(attempt),
        ExecutionError::PrepareError(e) => prepare_kind(e),
        ExecutionError::BadQuery(_) => BackendErrorKind::Misconfigured,
        _ => BackendErrorKind::Unavailable,
    }
}

/// The kind of a failed (re-)preparation: the statement itself refused
/// (syntax, unknown table: the schema is older than this binary) is
/// `Misconfigured`; no connection, or connections that broke while
/// preparing (a node restarting: the driver re-prepares after a node drops
/// its statement cache), is retryable like any other request.
pub fn prepare_kind(e: &PrepareError) -> BackendErrorKind {
    match e {
        PrepareError::ConnectionPoolError(_) => BackendErrorKind::Unavailable,
        PrepareError::AllAttemptsFailed { first_attempt } => attempt_kind(first_attempt),
        PrepareError::PreparedStatementIdsMismatch => BackendErrorKind::Misconfigured,
        _ => BackendErrorKind::Unavailable,
    }
}

fn attempt_kind(e: &RequestAttemptError) -> BackendErrorKind {
    match e {
        RequestAttemptError::DbError(db, _) => db_kind(db),
        RequestAttemptError::SerializationError(_)
        | RequestAttemptError::CqlRequestSerialization(_) => BackendErrorKind::Misconfigured,
        RequestAttemptError::CqlResultParseError(_)
        | RequestAttemptError::CqlErrorParseError(_)
        | RequestAttemptError::BodyExtensionsParseError(_) => BackendErrorKind::Corrupt,
        _ => BackendErrorKind::Unavailable,
    }
}

/// The kind of an error the database answered with.
pub fn db_kind(e: &DbError) -> BackendErrorKind {
    match e {
        DbError::Unavailable { .. }
        | DbError::Overloaded
        | DbError::IsBootstrapping
        | DbError::RateLimitReached { .. }
        | DbError::ReadFailure { .. }
        | DbError::WriteFailure { .. }
        | DbError::TruncateError
        | DbError::ServerError => BackendErrorKind::Unavailable,
        DbError::ReadTimeout { .. } | DbError::WriteTimeout { .. } => BackendErrorKind::Timeout,
        DbError::SyntaxError
        | DbError::Invalid
        | DbError::AlreadyExists { .. }
        | DbError::AuthenticationError
        | DbError::Unauthorized
        | DbError::ConfigError
        | DbError::FunctionFailure { .. }
        | DbError::Unprepared { .. } => BackendErrorKind::Misconfigured,
        _ => BackendErrorKind::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use scylla::statement::Consistency;

    use super::*;

    #[test]
    fn retryable_and_fatal_database_errors() {
        let unavailable = DbError::Unavailable {
            consistency: Consistency::LocalQuorum,
            required: 2,
            alive: 1,
        };
        assert_eq!(db_kind(&unavailable), BackendErrorKind::Unavailable);
        assert_eq!(db_kind(&DbError::Overloaded), BackendErrorKind::Unavailable);
        let timeout = DbError::WriteTimeout {
            consistency: Consistency::LocalQuorum,
            received: 1,
            required: 2,
            write_type: scylla::errors::WriteType::Cas,
        };
        assert_eq!(db_kind(&timeout), BackendErrorKind::Timeout);
        assert_eq!(
            db_kind(&DbError::SyntaxError),
            BackendErrorKind::Misconfigured
        );
        assert_eq!(
            db_kind(&DbError::Unauthorized),
            BackendErrorKind::Misconfigured
        );
        let e = ExecutionError::RequestTimeout(std::time::Duration::from_secs(5));
        let mapped = execution("append", &e);
        assert!(mapped.is_retryable());
        assert!(mapped.to_string().contains("append"));
    }

    #[test]
    fn preparation_failures_are_retryable_unless_the_statement_is_refused() {
        let broken =
            PrepareError::ConnectionPoolError(scylla::errors::ConnectionPoolError::Initializing);
        assert_eq!(prepare_kind(&broken), BackendErrorKind::Unavailable);
        assert!(execution("re-prepare", &ExecutionError::PrepareError(broken)).is_retryable());
        let overloaded = PrepareError::AllAttemptsFailed {
            first_attempt: RequestAttemptError::DbError(DbError::Overloaded, "busy".into()),
        };
        assert_eq!(prepare_kind(&overloaded), BackendErrorKind::Unavailable);
        let refused = PrepareError::AllAttemptsFailed {
            first_attempt: RequestAttemptError::DbError(
                DbError::Invalid,
                "unconfigured table conversations".into(),
            ),
        };
        assert_eq!(prepare_kind(&refused), BackendErrorKind::Misconfigured);
        let e = ExecutionError::PrepareError(refused);
        assert_eq!(execution_kind(&e), BackendErrorKind::Misconfigured);
    }
}
