//! [`KeyDirectory`] on ScyllaDB: long-term keys are columns of the device's
//! row, updated with `IF EXISTS` so a revoked device stores nothing; each
//! single-use pool is one `pool_keys` partition (lowest id first) and a
//! claim is `DELETE ... IF EXISTS` of its lowest key, retried on the next
//! key when a racing claim took it, so each key is handed out exactly once.
//! Keys are written by LWTs too (`INSERT ... IF NOT EXISTS`, in conditional
//! batches of at most [`KEY_BATCH_BYTES`]): a plain write carries its
//! coordinator's clock as timestamp, an LWT its Paxos ballot, and mixed on
//! the same rows a claim's delete could be ordered before the insert it
//! consumed under clock skew, handing the key out again (ScyllaDB, "LWT
//! limitations": do not mix conditional and plain writes on the same data).
//! One logged batch of a whole upload could also pass ScyllaDB's
//! `batch_size_fail_threshold_in_kb` (1024: 100 KeyPackages of 16 KiB).
//!
//! The pool cap ([`KEY_POOL_CAP`]) is checked against the pool read just
//! before the upload's write: two uploads of one device racing each other
//! may together go past it (by at most one upload); claims never race it.

use async_trait::async_trait;
use bytes::Bytes;
use scylla::value::MaybeUnset;
use tern_store::{
    BackendError, ClaimedKey, DeviceId, DeviceKeys, DeviceKeysUpdate, KeyDirectory, KeyPool,
    PoolKey, SignedPrekey, KEY_POOL_CAP,
};

use crate::accounts::{contended, pool_tag, CAS_ATTEMPTS};
use crate::codec::{dec, dec32, enc, enc32};
use crate::db::BatchBuilder;
use crate::error;
use crate::ScyllaStore;

/// Key bytes of one conditional batch of a key upload, well under
/// ScyllaDB's `batch_size_fail_threshold_in_kb` (1024 by default).
const KEY_BATCH_BYTES: usize = 128 * 1024;

/// Statements of one conditional batch of a key upload.
const KEY_BATCH_KEYS: usize = 100;

/// Splits `keys` into consecutive runs of at most [`KEY_BATCH_KEYS`] keys
/// and [`KEY_BATCH_BYTES`] bytes (a run holds at least one key).
fn key_batches<'k>(keys: &[&'k PoolKey]) -> Vec<Vec<&'k PoolKey>> {
    let mut out: Vec<Vec<&PoolKey>> = Vec::new();
    let mut current: Vec<&PoolKey> = Vec::new();
    let mut bytes = 0;
    for key in keys {
        let full = current.len() >= KEY_BATCH_KEYS || bytes + key.key.len() > KEY_BATCH_BYTES;
        if !current.is_empty() && full {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += key.key.len();
        current.push(key);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

type KeysRow = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<i32>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
);

fn array<const N: usize>(what: &str, bytes: Vec<u8>) -> Result<[u8; N], BackendError> {
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| error::decode(what, format!("not {N} bytes")))
}

fn keys(row: KeysRow) -> Result<Option<DeviceKeys>, BackendError> {
    let (Some(identity), Some(signature), spk_id, spk_public, spk_signature, kem) = row else {
        return Ok(None);
    };
    let signed_prekey = match (spk_id, spk_public, spk_signature) {
        (Some(id), Some(public), Some(signature)) => Some(SignedPrekey {
            id: dec32(id),
            public: array("signed prekey", public)?,
            signature: array("signed prekey signature", signature)?,
        }),
        _ => None,
    };
    Ok(Some(DeviceKeys {
        identity_key: array("identity key", identity)?,
        identity_signature: array("identity signature", signature)?,
        signed_prekey,
        kem_prekey: kem.map(Bytes::from),
    }))
}

fn set<T>(value: Option<T>) -> MaybeUnset<T> {
    value.map_or(MaybeUnset::Unset, MaybeUnset::Set)
}

impl ScyllaStore {
    async fn pool_len(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<u32, BackendError> {
        let key = (user, enc32(device), pool_tag(pool));
        let count: Option<(i64,)> = self
            .db
            .first("key_count", &self.db.st.pool_count, key)
            .await?;
        Ok(count.map_or(0, |(n,)| u32::try_from(n).unwrap_or(u32::MAX)))
    }

    /// Inserts `keys` (ids not in the pool when read) with `IF NOT EXISTS`,
    /// a conditional batch per [`key_batches`] run; a run refused because a
    /// racing upload stored one of its ids is retried key by key.
    async fn insert_pool_keys(
        &self,
        (user, device, pool): (&str, DeviceId, KeyPool),
        keys: &[&PoolKey],
    ) -> Result<(), BackendError> {
        let st = &self.db.st;
        let values = |k: &PoolKey| {
            let id = enc(k.id);
            (
                user.to_string(),
                enc32(device),
                pool_tag(pool),
                id,
                k.key.to_vec(),
            )
        };
        for run in key_batches(keys) {
            let mut batch = BatchBuilder::default();
            for k in &run {
                batch.push(&st.pool_insert, values(k));
            }
            if self.db.batch("put_keys", batch).await? {
                continue;
            }
            for k in run {
                self.db
                    .applied("put_keys", &st.pool_insert, values(k))
                    .await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl KeyDirectory for ScyllaStore {
    async fn put_device_keys(
        &self,
        user: &str,
        device: DeviceId,
        update: &DeviceKeysUpdate,
    ) -> Result<bool, BackendError> {
        if update.is_empty() {
            return self.active(user, device).await;
        }
        let spk = update.signed_prekey.as_ref();
        let values = (
            set(update.identity.map(|(key, _)| key.to_vec())),
            set(update.identity.map(|(_, sig)| sig.to_vec())),
            set(spk.map(|s| enc32(s.id))),
            set(spk.map(|s| s.public.to_vec())),
            set(spk.map(|s| s.signature.to_vec())),
            set(update.kem_prekey.as_ref().map(|k| k.to_vec())),
            user,
            enc32(device),
        );
        let st = &self.db.st.device_keys_update;
        self.db.applied("put_device_keys", st, values).await
    }

    async fn device_keys(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceKeys>, BackendError> {
        let st = &self.db.st.device_keys_get;
        let row: Option<KeysRow> = self
            .db
            .first("device_keys", st, (user, enc32(device)))
            .await?;
        match row {
            Some(row) => keys(row),
            None => Ok(None),
        }
    }

    async fn put_keys(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
        keys: &[PoolKey],
        last_resort: Option<&PoolKey>,
    ) -> Result<u32, BackendError> {
        if !self.active(user, device).await? {
            return Ok(0);
        }
        let st = &self.db.st;
        let key = (user, enc32(device), pool_tag(pool));
        let ids: Vec<(i64,)> = self.db.rows("put_keys", &st.pool_ids, key).await?;
        let mut present: std::collections::BTreeSet<u64> =
            ids.into_iter().map(|(id,)| dec(id)).collect();
        let cap = usize::try_from(KEY_POOL_CAP).unwrap_or(usize::MAX);
        let mut fresh: Vec<&PoolKey> = Vec::new();
        for k in keys {
            if present.len() >= cap {
                break;
            }
            if present.insert(k.id) {
                fresh.push(k);
            }
        }
        self.insert_pool_keys((user, device, pool), &fresh).await?;
        if let Some(k) = last_resort {
            let values = (
                user,
                enc32(device),
                pool_tag(pool),
                enc(k.id),
                k.key.to_vec(),
            );
            self.db.run("put_keys", &st.last_resort_put, values).await?;
        }
        Ok(u32::try_from(present.len()).unwrap_or(u32::MAX))
    }

    async fn claim_key(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<Option<ClaimedKey>, BackendError> {
        if !self.active(user, device).await? {
            return Ok(None);
        }
        let st = &self.db.st;
        let key = (user, enc32(device), pool_tag(pool));
        for _ in 0..CAS_ATTEMPTS {
            let first: Option<(i64, Option<Vec<u8>>)> =
                self.db.first("claim_key", &st.pool_first, key).await?;
            let Some((id, bytes)) = first else {
                let last: Option<(Option<i64>, Option<Vec<u8>>)> =
                    self.db.first("claim_key", &st.last_resort_get, key).await?;
                return Ok(match last {
                    Some((Some(id), Some(bytes))) => Some(ClaimedKey {
                        key: PoolKey {
                            id: dec(id),
                            key: Bytes::from(bytes),
                        },
                        last_resort: true,
                        remaining: 0,
                    }),
                    _ => None,
                });
            };
            let claim = (user, enc32(device), pool_tag(pool), id);
            if self.db.applied("claim_key", &st.pool_claim, claim).await? {
                return Ok(Some(ClaimedKey {
                    key: PoolKey {
                        id: dec(id),
                        key: Bytes::from(bytes.unwrap_or_default()),
                    },
                    last_resort: false,
                    remaining: self.pool_len(user, device, pool).await?,
                }));
            }
        }
        Err(contended("claim_key"))
    }

    async fn key_count(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<u32, BackendError> {
        if !self.active(user, device).await? {
            return Ok(0);
        }
        self.pool_len(user, device, pool).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u64, len: usize) -> PoolKey {
        PoolKey {
            id,
            key: Bytes::from(vec![0; len]),
        }
    }

    #[test]
    fn uploads_split_under_the_batch_limits() {
        // 100 KeyPackages of 16 KiB: 1.6 MB, over the 1024 KiB batch limit.
        let packages: Vec<PoolKey> = (0..100).map(|i| key(i, 16 * 1024)).collect();
        let refs: Vec<&PoolKey> = packages.iter().collect();
        let runs = key_batches(&refs);
        assert_eq!(runs.len(), 13, "8 keys of 16 KiB per 128 KiB run");
        for run in &runs {
            let bytes: usize = run.iter().map(|k| k.key.len()).sum();
            assert!(bytes <= KEY_BATCH_BYTES && run.len() <= KEY_BATCH_KEYS);
        }
        let ids: Vec<u64> = runs.iter().flatten().map(|k| k.id).collect();
        assert_eq!(ids, (0..100).collect::<Vec<u64>>(), "every key, in order");

        // 990 small prekeys: by count.
        let prekeys: Vec<PoolKey> = (0..990).map(|i| key(i, 32)).collect();
        let refs: Vec<&PoolKey> = prekeys.iter().collect();
        let runs = key_batches(&refs);
        assert_eq!(runs.len(), 10);
        assert!(runs.iter().all(|r| r.len() <= KEY_BATCH_KEYS));

        // A key over the byte limit still goes, alone.
        let big = [key(1, 10), key(2, KEY_BATCH_BYTES + 1), key(3, 10)];
        let refs: Vec<&PoolKey> = big.iter().collect();
        let sizes: Vec<usize> = key_batches(&refs).iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert!(key_batches(&[]).is_empty());
    }
}
