//! The key directory: each device's long-term public keys (identity key,
//! signed prekey, KEM prekey) and **one generic single-use key pool** per
//! device and [`KeyPool`], used alike for Olm one-time prekeys and MLS
//! KeyPackages: keys are handed out exactly once, lowest id first, and a
//! last-resort key is returned (never consumed) when the pool is empty
//! (Signal's last-resort prekey; RFC 9420 §16.8 last-resort KeyPackages).
//!
//! The store checks no signature: the server verifies every key against the
//! device's Ed25519 key before it calls in.

use async_trait::async_trait;
use bytes::Bytes;

use crate::{BackendError, DeviceId};

/// Most keys one device's pool holds (per [`KeyPool`]); what an upload brings
/// beyond it is ignored.
pub const KEY_POOL_CAP: u32 = 1_000;

/// Which of a device's single-use pools a call addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyPool {
    /// Curve25519 one-time prekeys for Olm sessions (value: 32-byte public
    /// key; last resort: public key ‖ signature, 96 bytes).
    OneTimePrekey,
    /// Serialized MLS KeyPackages (opaque to the store).
    KeyPackage,
}

impl KeyPool {
    /// Both pools, in a fixed order (for backends that iterate them).
    pub const ALL: [KeyPool; 2] = [KeyPool::OneTimePrekey, KeyPool::KeyPackage];

    /// A one-byte tag backends may use in their keys.
    pub fn tag(self) -> u8 {
        match self {
            KeyPool::OneTimePrekey => 1,
            KeyPool::KeyPackage => 2,
        }
    }
}

/// One key in a pool: an id (unique within the pool; claims go lowest id
/// first) and its opaque bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolKey {
    pub id: u64,
    pub key: Bytes,
}

/// What [`KeyDirectory::claim_key`] hands out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedKey {
    pub key: PoolKey,
    /// True when the pool was empty and this is the last-resort key, which
    /// stays (it is not consumed).
    pub last_resort: bool,
    /// Keys left in the pool after this claim (last resort not counted).
    pub remaining: u32,
}

/// A prekey signed by the device's Ed25519 key (checked by the server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedPrekey {
    pub id: u32,
    pub public: [u8; 32],
    pub signature: [u8; 64],
}

/// A device's long-term public keys as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceKeys {
    /// The device's Curve25519 identity key and the device key's signature over it.
    pub identity_key: [u8; 32],
    pub identity_signature: [u8; 64],
    pub signed_prekey: Option<SignedPrekey>,
    /// Post-quantum (KEM) prekey, stored opaquely.
    pub kem_prekey: Option<Bytes>,
}

/// An update of a device's long-term keys: each given field replaces what is
/// stored (a new signed prekey is a rotation); `None` leaves it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DeviceKeysUpdate {
    pub identity: Option<([u8; 32], [u8; 64])>,
    pub signed_prekey: Option<SignedPrekey>,
    pub kem_prekey: Option<Bytes>,
}

impl DeviceKeysUpdate {
    pub fn is_empty(&self) -> bool {
        self.identity.is_none() && self.signed_prekey.is_none() && self.kem_prekey.is_none()
    }
}

/// The public key directory. Every call is atomic across callers; a claim
/// hands out each single-use key at most once, also under concurrency.
/// A device that is not active (unknown or revoked) stores nothing.
#[async_trait]
pub trait KeyDirectory: Send + Sync + 'static {
    /// Applies `update` to a device's long-term keys. A signed or KEM prekey
    /// given before any identity key is stored is kept, but the device has
    /// no [`DeviceKeys`] until its identity key arrives. Returns false
    /// (writing nothing) when the device is not active. An empty update
    /// writes nothing.
    async fn put_device_keys(
        &self,
        user: &str,
        device: DeviceId,
        update: &DeviceKeysUpdate,
    ) -> Result<bool, BackendError>;

    /// A device's long-term keys; `None` if the device is not active or
    /// never uploaded an identity key.
    async fn device_keys(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceKeys>, BackendError>;

    /// Adds `keys` whose ids are not already in the pool, in the order
    /// given, up to [`KEY_POOL_CAP`] in all (the rest are ignored), and
    /// replaces the pool's last-resort key if one is given. Returns the
    /// number of keys now in the pool (last resort not counted); 0, writing
    /// nothing, for a device that is not active. A call with no keys and no
    /// last resort writes nothing.
    async fn put_keys(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
        keys: &[PoolKey],
        last_resort: Option<&PoolKey>,
    ) -> Result<u32, BackendError>;

    /// Claims the lowest-id key of a device's pool and deletes it, exactly
    /// once under concurrency. When the pool is empty, returns its
    /// last-resort key without consuming it (`last_resort: true`); `None`
    /// when there is neither or the device is not active.
    async fn claim_key(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<Option<ClaimedKey>, BackendError>;

    /// Keys left in a device's pool (last resort not counted; 0 for devices
    /// that are not active).
    async fn key_count(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<u32, BackendError>;
}
