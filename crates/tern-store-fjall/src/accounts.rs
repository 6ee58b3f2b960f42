//! Accounts and devices on fjall: the `accounts` row keeps a handle taken
//! and its device-id counter alive after revocations.

use tern_store::{BackendError, CreateAccountError, DeviceId, DeviceRecord};

use crate::{codec, layout as keys, lock, Ctx, Inner};

impl Inner {
    pub(crate) fn create_account(
        &self,
        user: &str,
        first: &DeviceRecord,
    ) -> Result<(), CreateAccountError> {
        let _guard = lock(&self.create_lock);
        if self.highest_device(user)?.is_some() {
            return Err(CreateAccountError::UserExists(user.to_string()));
        }
        let mut batch = self.db.batch();
        batch.insert(
            &self.ks.devices,
            keys::device(user, first.device)?,
            codec::device(first),
        );
        batch.insert(
            &self.ks.accounts,
            keys::user(user)?,
            first.device.to_be_bytes(),
        );
        self.write(batch, "writing account")?;
        Ok(())
    }

    pub(crate) fn device(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        let value = self
            .ks
            .devices
            .get(keys::device(user, device)?)
            .ctx("reading device")?;
        value.map(|v| codec::decode_device(&v)).transpose()
    }

    pub(crate) fn devices(&self, user: &str) -> Result<Vec<DeviceRecord>, BackendError> {
        let mut out = Vec::new();
        for guard in self.ks.devices.prefix(keys::user(user)?) {
            let value = guard.value().ctx("reading devices")?;
            out.push(codec::decode_device(&value)?);
        }
        Ok(out)
    }

    /// The highest device id ever assigned to `user` (active or revoked), or
    /// `None` if the user does not exist. Call with `create_lock` held.
    pub(crate) fn highest_device(&self, user: &str) -> Result<Option<DeviceId>, BackendError> {
        let prefix = keys::user(user)?;
        let recorded = match self.ks.accounts.get(&prefix).ctx("reading account")? {
            Some(value) if value.len() == 4 => Some(keys::u32_at(&value, 0, "account entry")?),
            Some(value) => {
                return Err(BackendError::corrupt(format!(
                    "corrupt account entry of user {user:?}: {} bytes, expected 4",
                    value.len()
                )))
            }
            None => None,
        };
        // Devices are ordered by id, so the last one is the highest active.
        let active = match self.ks.devices.prefix(&prefix).next_back() {
            Some(guard) => {
                let key = guard.key().ctx("reading devices")?;
                Some(keys::u32_tail(&key, "device key")?)
            }
            None => None,
        };
        Ok(recorded.max(active))
    }

    pub(crate) fn add_device(
        &self,
        user: &str,
        name: &str,
        public_key: [u8; 32],
        created_ms: u64,
    ) -> Result<Option<DeviceId>, BackendError> {
        let _guard = lock(&self.create_lock);
        let Some(highest) = self.highest_device(user)? else {
            return Ok(None);
        };
        let device = highest.checked_add(1).ok_or_else(|| {
            BackendError::corrupt(format!("user {user:?} has used up every device id"))
        })?;
        let record = DeviceRecord {
            device,
            name: name.to_string(),
            public_key,
            created_ms,
        };
        let mut batch = self.db.batch();
        batch.insert(
            &self.ks.devices,
            keys::device(user, device)?,
            codec::device(&record),
        );
        batch.insert(&self.ks.accounts, keys::user(user)?, device.to_be_bytes());
        self.write(batch, "writing device")?;
        Ok(Some(device))
    }

    pub(crate) fn revoke_device(&self, user: &str, device: DeviceId) -> Result<bool, BackendError> {
        let _account = lock(&self.create_lock);
        let _device = self.device_stripe(user, device);
        let dev_key = keys::device(user, device)?;
        if !self
            .ks
            .devices
            .contains_key(&dev_key)
            .ctx("reading device")?
        {
            return Ok(false);
        }
        // Some(..) as the device exists; the account row keeps the handle
        // taken and the id counter alive after the last device goes.
        let highest = self.highest_device(user)?.unwrap_or(device).max(device);
        let mut batch = self.db.batch();
        batch.remove(&self.ks.devices, dev_key.clone());
        batch.insert(&self.ks.accounts, keys::user(user)?, highest.to_be_bytes());
        batch.remove(&self.ks.device_keys, dev_key.clone());
        for (space, what) in [
            (&self.ks.pool_meta, "reading key pools"),
            (&self.ks.key_pool, "reading key pools"),
            (&self.ks.cursors, "reading cursors"),
        ] {
            for guard in space.prefix(&dev_key) {
                batch.remove(space, guard.key().ctx(what)?);
            }
        }
        self.write(batch, "revoking device")?;
        Ok(true)
    }
}

/// `user¹ · w · device`: where a device's push endpoint is kept in `privacy`.
fn push_key(user: &str, device: DeviceId) -> Result<Vec<u8>, BackendError> {
    let mut key = keys::user(user)?;
    key.push(b'w');
    key.extend_from_slice(&device.to_be_bytes());
    Ok(key)
}

impl Inner {
    pub(crate) fn set_push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
        endpoint: Option<&[u8]>,
    ) -> Result<(), BackendError> {
        let key = push_key(user, device)?;
        let mut batch = self.db.batch();
        match endpoint {
            Some(bytes) => batch.insert(&self.ks.privacy, key, bytes),
            None => batch.remove(&self.ks.privacy, key),
        }
        self.write(batch, "writing a push endpoint")
    }

    pub(crate) fn push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let value = self
            .ks
            .privacy
            .get(push_key(user, device)?)
            .ctx("reading a push endpoint")?;
        Ok(value.map(|v| v.to_vec()))
    }
}
