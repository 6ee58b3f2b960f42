#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use super::*;

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn seal_vec(key: &AttachmentKey, plain: &[u8]) -> (Vec<u8>, Sealed) {
    let mut out = Vec::new();
    let sealed = seal(key, plain.len() as u64, plain, &mut out).unwrap();
    (out, sealed)
}

/// Opens `cipher` fed in pieces of `piece` bytes.
fn open_vec(
    key: &AttachmentKey,
    len: u64,
    digest: [u8; DIGEST_LEN],
    cipher: &[u8],
    piece: usize,
) -> Result<Vec<u8>, OpenError> {
    let mut opener = Opener::new(key, len, digest)?;
    let mut out = Vec::new();
    for part in cipher.chunks(piece) {
        opener.push(part, &mut out)?;
    }
    opener.finish()?;
    Ok(out)
}

#[test]
fn round_trips_at_chunk_boundaries() {
    let key = AttachmentKey::random();
    for len in [
        0,
        1,
        CHUNK_LEN - 1,
        CHUNK_LEN,
        CHUNK_LEN + 1,
        3 * CHUNK_LEN + 77,
    ] {
        let plain = plaintext(len);
        let (cipher, sealed) = seal_vec(&key, &plain);
        assert_eq!(cipher.len() as u64, ciphertext_len(len as u64), "len {len}");
        assert_eq!(sealed.ciphertext_len, cipher.len() as u64);
        assert_eq!(sealed.digest, <[u8; 32]>::from(Sha256::digest(&cipher)));
        for piece in [1000, SEALED_CHUNK_LEN, cipher.len().max(1)] {
            let opened = open_vec(&key, len as u64, sealed.digest, &cipher, piece).unwrap();
            assert_eq!(opened, plain, "len {len}, pieces of {piece}");
        }
    }
    assert_eq!(ciphertext_len(0), 16);
    assert_eq!(ciphertext_len(CHUNK_LEN as u64), SEALED_CHUNK_LEN as u64);
    assert_eq!(
        ciphertext_len(CHUNK_LEN as u64 + 1),
        SEALED_CHUNK_LEN as u64 + 17
    );
}

#[test]
fn fresh_keys_give_different_ciphertexts() {
    let plain = plaintext(100);
    let (a, _) = seal_vec(&AttachmentKey::random(), &plain);
    let (b, _) = seal_vec(&AttachmentKey::random(), &plain);
    assert_ne!(a, b);
    assert!(!a.windows(plain.len()).any(|w| w == plain));
    assert_eq!(format!("{:?}", AttachmentKey([7; 32])), "AttachmentKey(..)");
}

#[test]
fn a_tampered_chunk_is_refused_by_index_and_nothing_after_it_leaks() {
    let key = AttachmentKey::random();
    let plain = plaintext(3 * CHUNK_LEN);
    let (mut cipher, sealed) = seal_vec(&key, &plain);
    cipher[SEALED_CHUNK_LEN + 5] ^= 1;
    let mut opener = Opener::new(&key, plain.len() as u64, sealed.digest).unwrap();
    let mut out = Vec::new();
    let err = opener.push(&cipher, &mut out).unwrap_err();
    assert!(matches!(err, OpenError::ChunkRefused { index: 1 }), "{err}");
    assert!(err.to_string().contains("chunk 1"));
    assert_eq!(out, plain[..CHUNK_LEN], "only the authentic first chunk");
    // The same chunk opened on its own is refused too (ranged reads).
    let chunk = &cipher[SEALED_CHUNK_LEN..2 * SEALED_CHUNK_LEN];
    assert!(matches!(
        open_chunk(&key, 1, false, chunk),
        Err(OpenError::ChunkRefused { index: 1 })
    ));
    let good = &cipher[..SEALED_CHUNK_LEN];
    assert_eq!(
        open_chunk(&key, 0, false, good).unwrap(),
        plain[..CHUNK_LEN]
    );
}

#[test]
fn reordered_chunks_are_refused() {
    let key = AttachmentKey::random();
    let plain = plaintext(3 * CHUNK_LEN);
    let (cipher, sealed) = seal_vec(&key, &plain);
    let mut swapped = cipher.clone();
    swapped[..SEALED_CHUNK_LEN].copy_from_slice(&cipher[SEALED_CHUNK_LEN..2 * SEALED_CHUNK_LEN]);
    swapped[SEALED_CHUNK_LEN..2 * SEALED_CHUNK_LEN].copy_from_slice(&cipher[..SEALED_CHUNK_LEN]);
    let err = open_vec(&key, plain.len() as u64, sealed.digest, &swapped, 4096).unwrap_err();
    assert!(matches!(err, OpenError::ChunkRefused { index: 0 }), "{err}");
    // A chunk opened at another position is refused.
    assert!(open_chunk(&key, 1, false, &cipher[..SEALED_CHUNK_LEN]).is_err());
}

#[test]
fn truncation_is_refused() {
    let key = AttachmentKey::random();
    let plain = plaintext(3 * CHUNK_LEN);
    let (cipher, sealed) = seal_vec(&key, &plain);
    // Cut at a chunk boundary: the pointer's length says more must come.
    let cut = &cipher[..2 * SEALED_CHUNK_LEN];
    let err = open_vec(&key, plain.len() as u64, sealed.digest, cut, 4096).unwrap_err();
    assert!(matches!(err, OpenError::WrongLength { .. }), "{err}");
    // Even with a pointer that claims the shorter length, the last chunk
    // flag refuses a non-final chunk presented as the last one.
    let err = open_vec(&key, 2 * CHUNK_LEN as u64, sealed.digest, cut, 4096).unwrap_err();
    assert!(matches!(err, OpenError::ChunkRefused { index: 1 }), "{err}");
    // Extra bytes are refused.
    let mut long = cipher.clone();
    long.push(0);
    let err = open_vec(&key, plain.len() as u64, sealed.digest, &long, 4096).unwrap_err();
    assert!(matches!(err, OpenError::WrongLength { .. }), "{err}");
}

#[test]
fn another_blob_with_authentic_chunks_fails_the_digest() {
    let key = AttachmentKey::random();
    let plain = plaintext(10);
    let (cipher, _) = seal_vec(&key, &plain);
    let err = open_vec(&key, 10, [0; DIGEST_LEN], &cipher, 4096).unwrap_err();
    assert!(matches!(err, OpenError::DigestMismatch), "{err}");
    let err = open_vec(&AttachmentKey::random(), 10, [0; DIGEST_LEN], &cipher, 4096).unwrap_err();
    assert!(matches!(err, OpenError::ChunkRefused { index: 0 }), "{err}");
}

#[test]
fn a_source_of_another_length_is_refused() {
    let key = AttachmentKey::random();
    let plain = plaintext(100);
    let err = seal(&key, 101, plain.as_slice(), Vec::new()).unwrap_err();
    assert!(
        matches!(
            err,
            SealError::LengthChanged {
                expected: 101,
                read: 0
            }
        ),
        "{err}"
    );
    let err = seal(&key, 99, plain.as_slice(), Vec::new()).unwrap_err();
    assert!(
        matches!(err, SealError::LengthChanged { expected: 99, .. }),
        "{err}"
    );
    let err = seal(&key, MAX_PLAINTEXT_LEN + 1, plain.as_slice(), Vec::new()).unwrap_err();
    assert!(matches!(err, SealError::TooLarge(_)), "{err}");
}
