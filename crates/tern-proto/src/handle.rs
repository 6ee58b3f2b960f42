//! User handles: the public name of an account.

/// Longest accepted handle, in bytes.
pub const MAX_HANDLE_LEN: usize = 32;

/// Why a handle was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("handle must be 1 to {MAX_HANDLE_LEN} characters long")]
    Length,
    #[error("handle {0:?} may only contain lowercase a-z, digits, '_', '.' and '-'")]
    Characters(String),
}

/// Checks a handle: 1–32 chars of `[a-z0-9_.-]`.
pub fn validate_handle(handle: &str) -> Result<(), HandleError> {
    if handle.is_empty() || handle.len() > MAX_HANDLE_LEN {
        return Err(HandleError::Length);
    }
    let ok = handle
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(HandleError::Characters(handle.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_refuses() {
        assert_eq!(validate_handle("alice_1.x-y"), Ok(()));
        assert_eq!(validate_handle(""), Err(HandleError::Length));
        assert_eq!(validate_handle(&"a".repeat(33)), Err(HandleError::Length));
        assert!(validate_handle("Alice").is_err());
        assert!(validate_handle("a b").is_err());
        assert!(validate_handle("ä").is_err());
    }
}
