//! The key directory: long-term device keys and the generic single-use key
//! pools (one-time prekeys, KeyPackages), each pool's count and last resort
//! kept in its `key_pool_meta` row and changed in the same batch as its keys,
//! under the device's stripe lock.

use bytes::Bytes;
use tern_store::{
    BackendError, ClaimedKey, DeviceId, DeviceKeys, DeviceKeysUpdate, KeyPool, PoolKey,
    KEY_POOL_CAP,
};

use std::sync::MutexGuard;

use crate::codec::{PoolMeta, StoredDeviceKeys};
use crate::{codec, layout as keys, Ctx, Inner};

impl Inner {
    /// The stripe serialising the key-directory calls of one device. Shares
    /// the conversation stripes: a collision only costs contention.
    pub(crate) fn device_stripe(
        &self,
        user: &str,
        device: DeviceId,
    ) -> MutexGuard<'_, crate::Stripe> {
        // FNV-1a over the user and the device; `stripe` mixes it further.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in user.bytes().chain(device.to_be_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.stripe(hash)
    }

    pub(crate) fn is_active(&self, dev_key: &[u8]) -> Result<bool, BackendError> {
        self.ks.devices.contains_key(dev_key).ctx("reading device")
    }

    fn stored_device_keys(&self, dev_key: &[u8]) -> Result<Option<StoredDeviceKeys>, BackendError> {
        let value = self
            .ks
            .device_keys
            .get(dev_key)
            .ctx("reading device keys")?;
        value.map(|v| codec::decode_device_keys(&v)).transpose()
    }

    pub(crate) fn put_device_keys(
        &self,
        user: &str,
        device: DeviceId,
        update: &DeviceKeysUpdate,
    ) -> Result<bool, BackendError> {
        let dev_key = keys::device(user, device)?;
        let _guard = self.device_stripe(user, device);
        // Under the stripe, so a concurrent revoke cannot leave keys behind.
        if !self.is_active(&dev_key)? {
            return Ok(false);
        }
        if update.is_empty() {
            return Ok(true);
        }
        let mut stored = self.stored_device_keys(&dev_key)?.unwrap_or_default();
        if let Some(identity) = update.identity {
            stored.identity = Some(identity);
        }
        if let Some(signed) = &update.signed_prekey {
            stored.signed = Some(signed.clone());
        }
        if let Some(kem) = &update.kem_prekey {
            stored.kem = Some(kem.clone());
        }
        let mut batch = self.db.batch();
        batch.insert(&self.ks.device_keys, dev_key, codec::device_keys(&stored));
        self.write(batch, "writing device keys")?;
        Ok(true)
    }

    pub(crate) fn device_keys(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceKeys>, BackendError> {
        // Revoking deletes the row, so a row means an active device.
        let stored = self.stored_device_keys(&keys::device(user, device)?)?;
        Ok(stored.and_then(StoredDeviceKeys::complete))
    }

    fn pool_meta(&self, pool_key: &[u8]) -> Result<Option<PoolMeta>, BackendError> {
        let value = self.ks.pool_meta.get(pool_key).ctx("reading key pool")?;
        value.map(|v| codec::decode_pool_meta(&v)).transpose()
    }

    pub(crate) fn put_keys(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
        new_keys: &[PoolKey],
        last_resort: Option<&PoolKey>,
    ) -> Result<u32, BackendError> {
        let pool_key = keys::pool(user, device, pool)?;
        let _guard = self.device_stripe(user, device);
        if !self.is_active(&keys::device(user, device)?)? {
            return Ok(0);
        }
        let mut meta = self.pool_meta(&pool_key)?.unwrap_or_default();
        if new_keys.is_empty() && last_resort.is_none() {
            return Ok(meta.count);
        }
        let mut batch = self.db.batch();
        let mut added = std::collections::BTreeSet::new();
        for key in new_keys {
            if meta.count >= KEY_POOL_CAP {
                break;
            }
            let row = keys::pool_key(user, device, pool, key.id)?;
            if added.contains(&key.id)
                || self
                    .ks
                    .key_pool
                    .contains_key(&row)
                    .ctx("reading key pool")?
            {
                continue;
            }
            batch.insert(&self.ks.key_pool, row, key.key.as_ref());
            added.insert(key.id);
            meta.count = meta.count.saturating_add(1);
        }
        if let Some(last_resort) = last_resort {
            meta.last_resort = Some(last_resort.clone());
        }
        batch.insert(&self.ks.pool_meta, pool_key, codec::pool_meta(&meta));
        self.write(batch, "writing keys")?;
        Ok(meta.count)
    }

    pub(crate) fn claim_key(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<Option<ClaimedKey>, BackendError> {
        let pool_key = keys::pool(user, device, pool)?;
        let _guard = self.device_stripe(user, device);
        // Revoking deletes the pool record, so a record means an active device.
        let Some(mut meta) = self.pool_meta(&pool_key)? else {
            return Ok(None);
        };
        let Some(first) = self.ks.key_pool.prefix(&pool_key).next() else {
            return Ok(meta.last_resort.map(|key| ClaimedKey {
                key,
                last_resort: true,
                remaining: 0,
            }));
        };
        let (row, value) = first.into_inner().ctx("reading key pool")?;
        let id = keys::u64_tail(&row, "key pool row")?;
        meta.count = meta.count.saturating_sub(1);
        let mut batch = self.db.batch();
        batch.remove(&self.ks.key_pool, row);
        batch.insert(&self.ks.pool_meta, pool_key, codec::pool_meta(&meta));
        self.write(batch, "claiming a key")?;
        Ok(Some(ClaimedKey {
            key: PoolKey {
                id,
                key: Bytes::copy_from_slice(&value),
            },
            last_resort: false,
            remaining: meta.count,
        }))
    }

    pub(crate) fn key_count(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<u32, BackendError> {
        let meta = self.pool_meta(&keys::pool(user, device, pool)?)?;
        Ok(meta.map_or(0, |m| m.count))
    }
}
