//! User handles (the public name of an account) and device names (what a
//! user calls one of their devices, shown in device lists and link prompts).

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

/// Longest accepted device name, in bytes of UTF-8.
pub const MAX_DEVICE_NAME_LEN: usize = 64;

/// Why a device name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceNameError {
    #[error("device name must be 1 to {MAX_DEVICE_NAME_LEN} bytes long and not only spaces")]
    Length,
    #[error("device name may not contain control or text-direction characters (found {0:?})")]
    Characters(char),
}

/// Checks a device name: 1–64 bytes of UTF-8, not blank, with no control
/// characters (C0, DEL, C1: newlines and terminal escape sequences could
/// fake or clear lines where the name is printed) and no bidirectional
/// formatting characters (U+061C, U+200E–U+200F, U+202A–U+202E,
/// U+2066–U+2069, which reorder the text around them; cf. CVE-2021-42574).
pub fn validate_device_name(name: &str) -> Result<(), DeviceNameError> {
    if name.trim().is_empty() || name.len() > MAX_DEVICE_NAME_LEN {
        return Err(DeviceNameError::Length);
    }
    match name.chars().find(|c| !is_printable(*c)) {
        Some(c) => Err(DeviceNameError::Characters(c)),
        None => Ok(()),
    }
}

/// False for control characters and bidirectional formatting characters.
pub fn is_printable(c: char) -> bool {
    !(c.is_control()
        || matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'))
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_printable_and_bounded() {
        assert_eq!(validate_device_name("Alice's phone (work) ☎"), Ok(()));
        assert_eq!(validate_device_name(&"x".repeat(64)), Ok(()));
        assert_eq!(
            validate_device_name(&"x".repeat(65)),
            Err(DeviceNameError::Length)
        );
        assert_eq!(validate_device_name(""), Err(DeviceNameError::Length));
        assert_eq!(validate_device_name("   "), Err(DeviceNameError::Length));
        for bad in [
            "a\0b",
            "a\nb",
            "\u{1b}[2J",
            "a\u{7f}",
            "a\u{9b}b",
            "a\u{202E}b",
            "\u{2066}x",
        ] {
            assert!(
                matches!(
                    validate_device_name(bad),
                    Err(DeviceNameError::Characters(_))
                ),
                "{bad:?} accepted"
            );
        }
    }

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
