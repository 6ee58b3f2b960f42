//! Accounts and their devices: create an account with its first device, add
//! and revoke devices, look devices up (authentication, fan-out recipients).

use async_trait::async_trait;

use crate::{BackendError, DeviceId, DeviceRecord, UserId};

/// Errors of [`AccountStore::create_account`].
#[derive(Debug, thiserror::Error)]
pub enum CreateAccountError {
    #[error("user {0:?} already exists; pick another handle or authenticate as it")]
    UserExists(UserId),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Accounts and devices. Every call is atomic across callers.
#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Creates `user` with its first device (normally device 1).
    /// Fails with `UserExists` if the handle is taken (atomic across callers),
    /// also when every device of that user has been revoked.
    async fn create_account(
        &self,
        user: &str,
        first: DeviceRecord,
    ) -> Result<(), CreateAccountError>;

    /// One device of a user, or `None` if the user or device is unknown.
    async fn device(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceRecord>, BackendError>;

    /// All devices of a user, ordered by device id; empty if the user is unknown.
    async fn devices(&self, user: &str) -> Result<Vec<DeviceRecord>, BackendError>;

    /// Adds a device to an existing user with the next free device id: one
    /// more than the highest id the user was ever given (by `create_account`
    /// or `add_device`), so ids are never reused, even after revocation.
    /// Atomic across callers: concurrent adds get distinct ids.
    /// Returns the id, or `None` if the user does not exist.
    async fn add_device(
        &self,
        user: &str,
        name: &str,
        public_key: [u8; 32],
        created_ms: u64,
    ) -> Result<Option<DeviceId>, BackendError>;

    /// Revokes a device, atomically: it disappears from `device`/`devices`
    /// (so it can no longer authenticate), and its keys (identity keys and
    /// every key pool) and cursors are deleted. The account survives the
    /// revocation of its last device: the handle stays taken and
    /// `add_device` still works. Returns false (writing nothing) if the
    /// device was not active.
    async fn revoke_device(&self, user: &str, device: DeviceId) -> Result<bool, BackendError>;

    /// Stores (`Some`) or removes (`None`) the push endpoint of `user`'s
    /// `device` (issue 11): bytes the server encodes and bounds (at most
    /// [`MAX_PUSH_ENDPOINT_LEN`]; longer is refused with `Corrupt`, as a
    /// caller bug). Replaces any earlier endpoint; removing none is a no-op.
    async fn set_push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
        endpoint: Option<&[u8]>,
    ) -> Result<(), BackendError>;

    /// The push endpoint of `user`'s `device`, or `None` if none is stored.
    async fn push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<Vec<u8>>, BackendError>;
}

/// The largest push endpoint [`AccountStore::set_push_endpoint`] stores, in
/// bytes: a kind byte and a 4096-byte gateway token fit with room to spare.
pub const MAX_PUSH_ENDPOINT_LEN: usize = 8192;

/// Refuses an endpoint over [`MAX_PUSH_ENDPOINT_LEN`] (for backends).
pub fn check_push_endpoint(endpoint: Option<&[u8]>) -> Result<(), BackendError> {
    match endpoint {
        Some(bytes) if bytes.len() > MAX_PUSH_ENDPOINT_LEN => Err(BackendError::corrupt(format!(
            "push endpoint of {} bytes is over the {MAX_PUSH_ENDPOINT_LEN}-byte bound",
            bytes.len()
        ))),
        _ => Ok(()),
    }
}
