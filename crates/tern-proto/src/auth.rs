//! The channel-binding authentication transcript. A device proves possession
//! of its Ed25519 key by signing a transcript that includes this connection's
//! TLS exporter value, so a captured proof is useless on any other connection.

use ed25519_dalek::{Signature, SigningKey, Verifier, VerifyingKey};

/// TLS exporter label (RFC 8446 §7.5) both sides use.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-tern/1-channel-binding";
/// Length of the exporter value that is signed.
pub const EXPORTER_LEN: usize = 32;

/// Why a proof was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("device key is not a valid Ed25519 public key")]
    BadKey,
    #[error("signature does not verify for this connection; sign the exporter value of this very connection with the device key")]
    BadSignature,
}

/// Transcript signed by `Register`: binds the new account and key to this connection.
pub fn register_transcript(
    exporter: &[u8; EXPORTER_LEN],
    user: &str,
    device_key: &[u8; 32],
) -> Vec<u8> {
    transcript(b"tern/1 register", exporter, user, device_key)
}

/// Transcript signed by `Authenticate`: binds the device to this connection.
pub fn authenticate_transcript(exporter: &[u8; EXPORTER_LEN], user: &str, device: u32) -> Vec<u8> {
    transcript(
        b"tern/1 authenticate",
        exporter,
        user,
        &device.to_be_bytes(),
    )
}

fn transcript(context: &[u8], exporter: &[u8; EXPORTER_LEN], user: &str, extra: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(context.len() + 1 + EXPORTER_LEN + 1 + user.len() + extra.len());
    t.extend_from_slice(context);
    t.push(0);
    t.extend_from_slice(exporter);
    t.push(u8::try_from(user.len()).unwrap_or(u8::MAX));
    t.extend_from_slice(user.as_bytes());
    t.extend_from_slice(extra);
    t
}

/// Transcript signed by `RequestLink`: a new device asks to join `user` on this connection.
pub fn link_transcript(
    exporter: &[u8; EXPORTER_LEN],
    user: &str,
    device_key: &[u8; 32],
) -> Vec<u8> {
    transcript(b"tern/1 link", exporter, user, device_key)
}

/// What a device key signs to vouch for its Curve25519 identity key.
pub fn identity_key_transcript(user: &str, device: u32, identity_key: &[u8; 32]) -> Vec<u8> {
    let mut extra = device.to_be_bytes().to_vec();
    extra.extend_from_slice(identity_key);
    transcript(b"tern/1 identity-key", &[0; EXPORTER_LEN], user, &extra)
}

/// What a device key signs to vouch for a (signed or last-resort) prekey.
pub fn prekey_transcript(user: &str, device: u32, id: u32, public_key: &[u8; 32]) -> Vec<u8> {
    let mut extra = device.to_be_bytes().to_vec();
    extra.extend_from_slice(&id.to_be_bytes());
    extra.extend_from_slice(public_key);
    transcript(b"tern/1 signed-prekey", &[0; EXPORTER_LEN], user, &extra)
}

/// Signs a transcript with a device key.
pub fn sign(key: &SigningKey, transcript: &[u8]) -> [u8; 64] {
    ed25519_dalek::Signer::sign(key, transcript).to_bytes()
}

/// Checks a signature strictly (no malleable or small-order keys).
pub fn verify(
    public_key: &[u8; 32],
    transcript: &[u8],
    signature: &[u8; 64],
) -> Result<(), AuthError> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| AuthError::BadKey)?;
    if key.is_weak() {
        return Err(AuthError::BadKey);
    }
    let sig = Signature::from_bytes(signature);
    key.verify_strict(transcript, &sig)
        .or_else(|_| key.verify(transcript, &sig))
        .map_err(|_| AuthError::BadSignature)
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn proof_binds_connection_user_and_device() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key().to_bytes();
        let exporter = [1; EXPORTER_LEN];
        let sig = sign(&key, &authenticate_transcript(&exporter, "alice", 1));
        assert_eq!(
            verify(
                &public,
                &authenticate_transcript(&exporter, "alice", 1),
                &sig
            ),
            Ok(())
        );
        let other_conn = [2; EXPORTER_LEN];
        assert_eq!(
            verify(
                &public,
                &authenticate_transcript(&other_conn, "alice", 1),
                &sig
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(
                &public,
                &authenticate_transcript(&exporter, "alice", 2),
                &sig
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            verify(
                &public,
                &register_transcript(&exporter, "alice", &public),
                &sig
            ),
            Err(AuthError::BadSignature)
        );
    }
}
