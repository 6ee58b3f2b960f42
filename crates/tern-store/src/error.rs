//! [`BackendError`]: how a backend failed, typed so that callers can tell a
//! failure worth retrying (the backend is unavailable or slow) from one that
//! needs an operator (corrupt data, a failed write that poisoned the store).
//!
//! The per-operation errors (a taken handle, a seq conflict, ...) live beside
//! their trait; each wraps a `BackendError` for the backend's own failures.

/// What kind of backend failure this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendErrorKind {
    /// The backend cannot be reached or refused the request for now (a node
    /// down, an overloaded cluster). Nothing was written. Retryable.
    Unavailable,
    /// The backend did not answer in time. The write may or may not have
    /// landed; every store call is safe to retry. Retryable.
    Timeout,
    /// The operating system failed a read or write (disk full, EIO). Fatal
    /// for writes: the backend poisons itself (see [`BackendErrorKind::Poisoned`]).
    Io,
    /// Stored bytes do not decode, or an invariant of the layout is broken.
    /// Fatal: restore from a backup or repair the data directory.
    Corrupt,
    /// An earlier write or `persist` failed, so what is in memory may differ
    /// from what is durable; the store refuses every write until it is
    /// reopened (the process restarted). Reads still work. Fatal.
    Poisoned,
    /// A remote backend refused the request as invalid: its schema does not
    /// match this binary (run `tern migrate`), the credentials or
    /// permissions are wrong, or the request is malformed. Nothing was
    /// written. Fatal: an operator fixes the configuration.
    Misconfigured,
}

/// A backend failure. The operation may or may not have taken effect *in
/// memory*, but nothing that was not persisted may be acknowledged.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}: {message}; {}", .kind.summary(), .kind.advice())]
pub struct BackendError {
    kind: BackendErrorKind,
    message: String,
}

impl BackendErrorKind {
    fn summary(self) -> &'static str {
        match self {
            BackendErrorKind::Unavailable => "storage backend unavailable",
            BackendErrorKind::Timeout => "storage backend timed out",
            BackendErrorKind::Io => "storage I/O failed",
            BackendErrorKind::Corrupt => "stored data is corrupt",
            BackendErrorKind::Poisoned => "store refuses writes after an earlier failure",
            BackendErrorKind::Misconfigured => "storage backend refused the request as invalid",
        }
    }

    fn advice(self) -> &'static str {
        match self {
            BackendErrorKind::Unavailable | BackendErrorKind::Timeout => "retry later",
            BackendErrorKind::Io => {
                "check disk space and permissions of the data directory, then restart"
            }
            BackendErrorKind::Corrupt => "restore the data directory from a backup",
            BackendErrorKind::Poisoned => {
                "restart the server; it recovers the durable state on open"
            }
            BackendErrorKind::Misconfigured => {
                "run `tern migrate` for this binary and check the store's keyspace and credentials"
            }
        }
    }
}

impl BackendError {
    /// A failure of `kind` described by `message` (what was being done, and why it failed).
    pub fn new(kind: BackendErrorKind, message: impl Into<String>) -> Self {
        BackendError {
            kind,
            message: message.into(),
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Unavailable, message)
    }

    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Timeout, message)
    }

    pub fn io(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Io, message)
    }

    pub fn corrupt(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Corrupt, message)
    }

    pub fn poisoned(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Poisoned, message)
    }

    pub fn misconfigured(message: impl Into<String>) -> Self {
        Self::new(BackendErrorKind::Misconfigured, message)
    }

    pub fn kind(&self) -> BackendErrorKind {
        self.kind
    }

    /// True when the same call may succeed later without an operator
    /// ([`BackendErrorKind::Unavailable`], [`BackendErrorKind::Timeout`]).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.kind,
            BackendErrorKind::Unavailable | BackendErrorKind::Timeout
        )
    }

    /// The bare description, without the kind's summary and advice.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The poison flag of fjall's design: once a write or `persist` has failed,
/// a backend sets it and refuses every later write with
/// [`BackendErrorKind::Poisoned`] until it is reopened, instead of carrying
/// on over state whose durable copy is unknown.
/// Called once, with the reason, when a store poisons itself (a server
/// may exit so that a supervisor restarts it on the recovered journal).
pub type PoisonHook = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
pub struct Poison {
    reason: std::sync::OnceLock<String>,
    hook: Option<PoisonHook>,
}

impl std::fmt::Debug for Poison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Poison")
            .field("reason", &self.reason.get())
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

impl Poison {
    /// A poison flag that calls `hook` when it is first set.
    pub fn with_hook(hook: Option<PoisonHook>) -> Self {
        Poison {
            reason: std::sync::OnceLock::new(),
            hook,
        }
    }

    /// Poisons the store (the first reason is kept, and only the first
    /// call runs the hook).
    pub fn set(&self, reason: impl Into<String>) {
        if self.reason.set(reason.into()).is_ok() {
            if let (Some(hook), Some(reason)) = (&self.hook, self.reason.get()) {
                hook(reason);
            }
        }
    }

    pub fn is_set(&self) -> bool {
        self.reason.get().is_some()
    }

    /// `Err(Poisoned)` once poisoned; call before every write and `persist`.
    pub fn check(&self) -> Result<(), BackendError> {
        match self.reason.get() {
            Some(reason) => Err(BackendError::poisoned(format!(
                "an earlier write failed: {reason}"
            ))),
            None => Ok(()),
        }
    }
}
