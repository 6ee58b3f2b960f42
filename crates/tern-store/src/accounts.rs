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
}
