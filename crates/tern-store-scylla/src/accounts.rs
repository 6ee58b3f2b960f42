//! [`AccountStore`] on ScyllaDB: one `devices` partition per user whose
//! static `highest` column is the highest device id ever given. Creating an
//! account (`IF highest = null`) and adding a device (`IF highest = ?`) are
//! conditional batches that write the device row with the new `highest`, so
//! each is atomic and ids are never reused. Revoking is `DELETE ... IF
//! EXISTS` of the device row, then its key pools and cursors are deleted
//! (unreachable already: every key call checks the device is active).

use async_trait::async_trait;
use tern_store::{AccountStore, BackendError, CreateAccountError, DeviceId, DeviceRecord, KeyPool};

use crate::codec::{dec, dec32, enc, enc32};
use crate::db::BatchBuilder;
use crate::error;
use crate::ScyllaStore;

/// `device, name, public_key, created_ms` of a `devices` row (device null
/// for a partition with only its static column left).
type DeviceRow = (Option<i32>, Option<String>, Option<Vec<u8>>, Option<i64>);

/// Attempts of a contended conditional write before giving up with a
/// retryable `Unavailable`.
pub(crate) const CAS_ATTEMPTS: usize = 64;

pub(crate) fn contended(what: &str) -> BackendError {
    BackendError::unavailable(format!(
        "{what}: still contended after {CAS_ATTEMPTS} conditional-write attempts"
    ))
}

fn record(row: DeviceRow) -> Result<Option<DeviceRecord>, BackendError> {
    let (Some(device), Some(name), Some(key), Some(created_ms)) = row else {
        return Ok(None);
    };
    let public_key = <[u8; 32]>::try_from(key.as_slice())
        .map_err(|_| error::decode("device", "public key is not 32 bytes"))?;
    Ok(Some(DeviceRecord {
        device: dec32(device),
        name,
        public_key,
        created_ms: dec(created_ms),
    }))
}

impl ScyllaStore {
    /// Whether `user`'s `device` is active (its row exists).
    pub(crate) async fn active(&self, user: &str, device: DeviceId) -> Result<bool, BackendError> {
        Ok(self.device(user, device).await?.is_some())
    }

    fn device_insert(&self, batch: &mut BatchBuilder, user: &str, d: &DeviceRecord) {
        let values = (
            user.to_string(),
            enc32(d.device),
            d.name.clone(),
            d.public_key.to_vec(),
            enc(d.created_ms),
        );
        batch.push(&self.db.st.device_insert, values);
    }
}

#[async_trait]
impl AccountStore for ScyllaStore {
    async fn create_account(
        &self,
        user: &str,
        first: DeviceRecord,
    ) -> Result<(), CreateAccountError> {
        let st = &self.db.st;
        let mut batch = BatchBuilder::default();
        batch.push(
            &st.account_create_highest,
            (enc32(first.device), user.to_string()),
        );
        self.device_insert(&mut batch, user, &first);
        if self.db.batch("create_account", batch).await? {
            Ok(())
        } else {
            Err(CreateAccountError::UserExists(user.to_string()))
        }
    }

    async fn device(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        let row: Option<DeviceRow> = self
            .db
            .first("device", &self.db.st.device_get, (user, enc32(device)))
            .await?;
        Ok(match row {
            Some(row) => record(row)?,
            None => None,
        })
    }

    async fn devices(&self, user: &str) -> Result<Vec<DeviceRecord>, BackendError> {
        let rows: Vec<DeviceRow> = self
            .db
            .rows("devices", &self.db.st.devices_get, (user,))
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.extend(record(row)?);
        }
        Ok(out)
    }

    async fn add_device(
        &self,
        user: &str,
        name: &str,
        public_key: [u8; 32],
        created_ms: u64,
    ) -> Result<Option<DeviceId>, BackendError> {
        let st = &self.db.st;
        for _ in 0..CAS_ATTEMPTS {
            let highest: Option<(Option<i32>,)> = self
                .db
                .first("add_device", &st.account_highest, (user,))
                .await?;
            let Some((Some(highest),)) = highest else {
                return Ok(None);
            };
            let device = dec32(highest)
                .checked_add(1)
                .ok_or_else(|| BackendError::corrupt(format!("device ids of {user} exhausted")))?;
            let record = DeviceRecord {
                device,
                name: name.to_string(),
                public_key,
                created_ms,
            };
            let mut batch = BatchBuilder::default();
            let bump = (enc32(device), user.to_string(), highest);
            batch.push(&st.account_bump_highest, bump);
            self.device_insert(&mut batch, user, &record);
            if self.db.batch("add_device", batch).await? {
                return Ok(Some(device));
            }
        }
        Err(contended("add_device"))
    }

    async fn revoke_device(&self, user: &str, device: DeviceId) -> Result<bool, BackendError> {
        let st = &self.db.st;
        let key = (user, enc32(device));
        if !self
            .db
            .applied("revoke_device", &st.device_delete, key)
            .await?
        {
            return Ok(false);
        }
        let mut batch = BatchBuilder::default();
        for pool in KeyPool::ALL {
            let pool_key = (user.to_string(), enc32(device), pool_tag(pool));
            batch.push(&st.pool_clear, pool_key.clone());
            batch.push(&st.last_resort_clear, pool_key);
        }
        batch.push(&st.cursors_delete, (user.to_string(), enc32(device)));
        self.db
            .batch("revoke_device: keys and cursors", batch)
            .await?;
        Ok(true)
    }

    async fn set_push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
        endpoint: Option<&[u8]>,
    ) -> Result<(), BackendError> {
        tern_store::check_push_endpoint(endpoint)?;
        let st = &self.db.st;
        match endpoint {
            Some(bytes) => {
                let values = (user, enc32(device), bytes);
                self.db
                    .run("set_push_endpoint", &st.push_put, values)
                    .await?
            }
            None => {
                let values = (user, enc32(device));
                self.db
                    .run("set_push_endpoint", &st.push_delete, values)
                    .await?
            }
        };
        Ok(())
    }

    async fn push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let row: Option<(Option<Vec<u8>>,)> = self
            .db
            .first("push_endpoint", &self.db.st.push_get, (user, enc32(device)))
            .await?;
        Ok(row.and_then(|(endpoint,)| endpoint))
    }
}

/// The `pool` column of a key pool.
pub(crate) fn pool_tag(pool: KeyPool) -> i8 {
    i8::try_from(pool.tag()).unwrap_or(i8::MAX)
}
