//! Key encodings of every keyspace (see the crate docs for the table). All
//! integers are big-endian so that range scans follow numeric order; a user
//! is one length byte then its bytes, so one user's keys share a prefix no
//! other user's keys have.

use tern_store::{BackendError, ConversationId, DeviceId, KeyPool, Seq};

/// One length byte, then the user's bytes.
pub fn user(user: &str) -> Result<Vec<u8>, BackendError> {
    let len = u8::try_from(user.len()).map_err(|_| {
        BackendError::corrupt(format!(
            "user handle of {} bytes is too long to store",
            user.len()
        ))
    })?;
    let mut key = Vec::with_capacity(1 + user.len() + 16);
    key.push(len);
    key.extend_from_slice(user.as_bytes());
    Ok(key)
}

pub fn device(user: &str, device: DeviceId) -> Result<Vec<u8>, BackendError> {
    let mut key = self::user(user)?;
    key.extend_from_slice(&device.to_be_bytes());
    Ok(key)
}

pub fn conv(id: ConversationId) -> [u8; 8] {
    id.to_be_bytes()
}

pub fn unique(unique: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + unique.len());
    key.push(1);
    key.extend_from_slice(unique);
    key
}

pub fn user_conv(user: &str, id: ConversationId) -> Result<Vec<u8>, BackendError> {
    let mut key = self::user(user)?;
    key.extend_from_slice(&id.to_be_bytes());
    Ok(key)
}

pub fn msg(id: ConversationId, seq: Seq) -> [u8; 16] {
    let mut key = [0u8; 16];
    let (a, b) = key.split_at_mut(8);
    a.copy_from_slice(&id.to_be_bytes());
    b.copy_from_slice(&seq.to_be_bytes());
    key
}

pub fn idem(
    id: ConversationId,
    user: &str,
    device: DeviceId,
    cmid: u64,
) -> Result<Vec<u8>, BackendError> {
    let mut key = id.to_be_bytes().to_vec();
    key.extend_from_slice(&self::user(user)?);
    key.extend_from_slice(&device.to_be_bytes());
    key.extend_from_slice(&cmid.to_be_bytes());
    Ok(key)
}

pub fn expiry(expires_at_ms: u64, id: ConversationId, seq: Seq) -> [u8; 24] {
    let mut key = [0u8; 24];
    let (a, rest) = key.split_at_mut(8);
    let (b, c) = rest.split_at_mut(8);
    a.copy_from_slice(&expires_at_ms.to_be_bytes());
    b.copy_from_slice(&id.to_be_bytes());
    c.copy_from_slice(&seq.to_be_bytes());
    key
}

pub fn cursor(user: &str, device: DeviceId, id: ConversationId) -> Result<Vec<u8>, BackendError> {
    let mut key = self::device(user, device)?;
    key.extend_from_slice(&id.to_be_bytes());
    Ok(key)
}

/// A key pool of one device: `user¹ · device u32 · pool tag u8`.
pub fn pool(user: &str, device: DeviceId, pool: KeyPool) -> Result<Vec<u8>, BackendError> {
    let mut key = self::device(user, device)?;
    key.push(pool.tag());
    Ok(key)
}

/// One key of a pool: the pool's key, then the key id (u64).
pub fn pool_key(
    user: &str,
    device: DeviceId,
    pool: KeyPool,
    id: u64,
) -> Result<Vec<u8>, BackendError> {
    let mut key = self::pool(user, device, pool)?;
    key.extend_from_slice(&id.to_be_bytes());
    Ok(key)
}

/// The big-endian u32 at `offset` of `bytes`.
pub fn u32_at(bytes: &[u8], offset: usize, what: &str) -> Result<u32, BackendError> {
    bytes
        .get(offset..offset.saturating_add(4))
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| {
            BackendError::corrupt(format!(
                "corrupt {what}: expected 4 bytes at offset {offset} of {}",
                bytes.len()
            ))
        })
}

/// The big-endian u32 that ends `bytes`.
pub fn u32_tail(bytes: &[u8], what: &str) -> Result<u32, BackendError> {
    u32_at(bytes, bytes.len().saturating_sub(4), what)
}

/// The big-endian u64 at `offset` of `bytes`.
pub fn u64_at(bytes: &[u8], offset: usize, what: &str) -> Result<u64, BackendError> {
    bytes
        .get(offset..offset.saturating_add(8))
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| {
            BackendError::corrupt(format!(
                "corrupt {what}: expected 8 bytes at offset {offset} of {}",
                bytes.len()
            ))
        })
}

/// The big-endian u64 that ends `bytes`.
pub fn u64_tail(bytes: &[u8], what: &str) -> Result<u64, BackendError> {
    u64_at(bytes, bytes.len().saturating_sub(8), what)
}
