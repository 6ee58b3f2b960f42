//! Certificate fingerprints: the lowercase hex SHA-256 of a certificate's DER
//! bytes, as printed by the server on start and pinned by clients. Pure
//! functions, no I/O.

use sha2::{Digest, Sha256};
use thiserror::Error;

/// Length in bytes of a SHA-256 certificate fingerprint.
pub const FINGERPRINT_LEN: usize = 32;

/// A fingerprint string that could not be parsed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum FingerprintError {
    /// The string does not hold exactly 64 hex digits.
    #[error(
        "certificate fingerprint must be 64 hex digits (SHA-256, ':' separators allowed), \
         got {0} digits: copy it again from the server's start-up log"
    )]
    WrongLength(usize),
    /// The string holds a character that is neither a hex digit nor ':'.
    #[error("certificate fingerprint holds {0:?}, which is not a hex digit or ':'")]
    BadCharacter(char),
}

/// SHA-256 of `der`, as 64 lowercase hex digits without separators.
pub fn cert_fingerprint(der: &[u8]) -> String {
    hex::encode(cert_digest(der))
}

/// SHA-256 of `der` as raw bytes (what a pinning verifier compares).
pub fn cert_digest(der: &[u8]) -> [u8; FINGERPRINT_LEN] {
    Sha256::digest(der).into()
}

/// Parses a fingerprint written as hex (either case), with optional ':'
/// separators between digits (as `openssl x509 -fingerprint` prints it) and
/// surrounding whitespace.
pub fn parse_fingerprint(s: &str) -> Result<[u8; FINGERPRINT_LEN], FingerprintError> {
    let mut digits = String::with_capacity(2 * FINGERPRINT_LEN);
    for c in s.trim().chars() {
        match c {
            ':' => {}
            c if c.is_ascii_hexdigit() => digits.push(c),
            c => return Err(FingerprintError::BadCharacter(c)),
        }
    }
    if digits.len() != 2 * FINGERPRINT_LEN {
        return Err(FingerprintError::WrongLength(digits.len()));
    }
    let mut out = [0u8; FINGERPRINT_LEN];
    hex::decode_to_slice(&digits, &mut out)
        .map_err(|_| FingerprintError::WrongLength(digits.len()))?;
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_lowercase_sha256_hex() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            cert_fingerprint(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn parse_round_trips_with_and_without_colons() {
        let fp = cert_fingerprint(b"cert");
        let want = cert_digest(b"cert");
        assert_eq!(parse_fingerprint(&fp), Ok(want));
        let colons: Vec<String> = fp
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_uppercase())
            .collect();
        assert_eq!(
            parse_fingerprint(&format!(" {} \n", colons.join(":"))),
            Ok(want)
        );
    }

    #[test]
    fn parse_rejects_bad_input() {
        assert_eq!(
            parse_fingerprint("abcd"),
            Err(FingerprintError::WrongLength(4))
        );
        assert_eq!(
            parse_fingerprint("zz"),
            Err(FingerprintError::BadCharacter('z'))
        );
        let too_long = "a".repeat(66);
        assert_eq!(
            parse_fingerprint(&too_long),
            Err(FingerprintError::WrongLength(66))
        );
    }
}
