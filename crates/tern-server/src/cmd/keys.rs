//! The key directory, applied on the connection's shard: prekey and
//! KeyPackage uploads (signatures checked against the device key), claims
//! (one per active device, each one-time key handed out exactly once by the
//! store, rate limited per claimer and target), and the low-keys notice that
//! tells a device to replenish.

use std::sync::Arc;

use bytes::Bytes;

use crate::delivery::Fanout;
use crate::effects::{Effect, Outcome};
use crate::mesh::{Caller, Reject};
use crate::shard::ShardCtx;
use sha2::{Digest, Sha256};
use tern_proto::auth::{identity_key_transcript, prekey_transcript, verify};
use tern_proto::body::mls::{self, ClaimedKeyPackageData};
use tern_proto::body::prekeys::{
    self, DeviceBundleData, OneTimePrekeyData, SignedPrekeyData, UploadPrekeys,
};
use tern_proto::fb::ErrorCode;
use tern_proto::handle::validate_handle;
use tern_proto::{Body, Frame};
use tern_store::{DeviceKeysUpdate, DeviceRecord, KeyPool, PoolKey, SignedPrekey, Store};

/// Most one-time prekeys or KeyPackages accepted in one upload.
pub const MAX_UPLOAD: usize = tern_proto::limits::MAX_KEYS_PER_UPLOAD;
/// Largest KeyPackage accepted, bytes.
pub const MAX_KEY_PACKAGE: usize = tern_proto::limits::MAX_KEY_PACKAGE_LEN;

fn invalid(message: impl Into<String>) -> Reject {
    Reject::new(ErrorCode::InvalidArgument, message)
}

/// UploadPrekeys: checks every signature, then stores the material.
pub async fn upload_prekeys(
    ctx: &ShardCtx,
    caller: &Caller,
    body: UploadPrekeys,
) -> Result<Outcome, Reject> {
    if body.one_time.len() > MAX_UPLOAD {
        return Err(invalid(format!(
            "at most {MAX_UPLOAD} one-time prekeys per upload"
        )));
    }
    let device = caller_device(ctx, caller).await?;
    if let Some((key, signature)) = &body.identity {
        let transcript = identity_key_transcript(&caller.user, caller.device, key);
        verify(&device.public_key, &transcript, signature)
            .map_err(|_| invalid("identity_signature does not verify with this device's key"))?;
    }
    for (what, prekey) in [
        ("signed_prekey", &body.signed_prekey),
        ("last_resort", &body.last_resort),
    ] {
        if let Some(k) = prekey {
            let transcript = prekey_transcript(&caller.user, caller.device, k.id, &k.public_key);
            verify(&device.public_key, &transcript, &k.signature).map_err(|_| {
                invalid(format!(
                    "{what} signature does not verify with this device's key"
                ))
            })?;
        }
    }
    let update = DeviceKeysUpdate {
        identity: body.identity,
        signed_prekey: body.signed_prekey.map(to_store_signed),
        kem_prekey: body.kem_prekey,
    };
    let one_time: Vec<PoolKey> = body
        .one_time
        .into_iter()
        .map(|k| PoolKey {
            id: u64::from(k.id),
            key: Bytes::copy_from_slice(&k.public_key),
        })
        .collect();
    let last_resort = body.last_resort.map(|k| last_resort_prekey(&k));
    let (user, device) = (caller.user.as_str(), caller.device);
    let store = &ctx.store;
    store
        .put_device_keys(user, device, &update)
        .await
        .map_err(Reject::store)?;
    let one_time_prekeys = store
        .put_keys(
            user,
            device,
            KeyPool::OneTimePrekey,
            &one_time,
            last_resort.as_ref(),
        )
        .await
        .map_err(Reject::store)?;
    let key_packages = key_count(store, user, device, KeyPool::KeyPackage).await?;
    Ok(Outcome::durable(Ok(Body::KeyCounts(prekeys::KeyCounts {
        one_time_prekeys,
        key_packages,
    }))))
}

async fn key_count(
    store: &Arc<dyn Store>,
    user: &str,
    device: u32,
    pool: KeyPool,
) -> Result<u32, Reject> {
    store
        .key_count(user, device, pool)
        .await
        .map_err(Reject::store)
}

/// A last-resort prekey as its pool stores it: public key ‖ signature.
fn last_resort_prekey(k: &SignedPrekeyData) -> PoolKey {
    let mut key = Vec::with_capacity(96);
    key.extend_from_slice(&k.public_key);
    key.extend_from_slice(&k.signature);
    PoolKey {
        id: u64::from(k.id),
        key: key.into(),
    }
}

/// A claimed prekey back in wire form: the one-time key, or the last resort.
fn claimed_prekey(
    key: &PoolKey,
    last_resort: bool,
) -> Result<(Option<OneTimePrekeyData>, Option<SignedPrekeyData>), Reject> {
    let corrupt = || Reject::internal("a stored prekey has the wrong shape");
    let id = u32::try_from(key.id).map_err(|_| corrupt())?;
    let public_key = key.key.get(..32).and_then(|b| <[u8; 32]>::try_from(b).ok());
    let public_key = public_key.ok_or_else(corrupt)?;
    if !last_resort {
        return Ok((Some(OneTimePrekeyData { id, public_key }), None));
    }
    let signature = key
        .key
        .get(32..96)
        .and_then(|b| <[u8; 64]>::try_from(b).ok());
    let signature = signature.ok_or_else(corrupt)?;
    let signed = SignedPrekeyData {
        id,
        public_key,
        signature,
    };
    Ok((None, Some(signed)))
}

/// A KeyPackage's id in its pool: the first 8 bytes of its SHA-256, so an
/// upload repeating a package stores it once (cf. the KeyPackageRef of
/// RFC 9420 §5.2).
fn key_package_id(package: &[u8]) -> u64 {
    let digest = Sha256::digest(package);
    let mut id = [0u8; 8];
    id.copy_from_slice(digest.get(..8).unwrap_or(&[0; 8]));
    u64::from_be_bytes(id)
}

async fn caller_device(ctx: &ShardCtx, caller: &Caller) -> Result<DeviceRecord, Reject> {
    ctx.store
        .device(&caller.user, caller.device)
        .await
        .map_err(Reject::store)?
        .ok_or_else(|| Reject::new(ErrorCode::AuthFailed, "this device was revoked"))
}

fn to_store_signed(k: SignedPrekeyData) -> SignedPrekey {
    SignedPrekey {
        id: k.id,
        public: k.public_key,
        signature: k.signature,
    }
}

fn to_wire_signed(k: SignedPrekey) -> SignedPrekeyData {
    SignedPrekeyData {
        id: k.id,
        public_key: k.public,
        signature: k.signature,
    }
}

/// Refuses a claim over the server-wide (claimer, target) or per-target
/// rate limit, with a retry-after.
fn rate_limit(ctx: &ShardCtx, caller: &Caller, target: &str) -> Result<(), Reject> {
    ctx.limits.claim(&caller.user, target, ctx.clock.now_ms())
}

/// ClaimPrekeys: one bundle per active device of the target user.
pub async fn claim_prekeys(
    ctx: &ShardCtx,
    caller: &Caller,
    user: String,
) -> Result<Outcome, Reject> {
    rate_limit(ctx, caller, &user)?;
    let devices = existing_devices(ctx, &user).await?;
    let mut bundles = Vec::with_capacity(devices.len());
    let mut effects = Vec::new();
    for device in devices {
        if let Some(bundle) = claim_bundle(ctx, &user, &device, &mut effects).await? {
            bundles.push(bundle);
        }
    }
    let bundle = Body::PrekeyBundle(prekeys::PrekeyBundle {
        user,
        devices: bundles,
    });
    let mut outcome = Outcome::durable(Ok(bundle));
    outcome.effects = effects;
    Ok(outcome)
}

/// The active devices of an existing user; `NotFound` for an unknown user or
/// a string that cannot be a handle (never a store lookup with it).
async fn existing_devices(ctx: &ShardCtx, user: &str) -> Result<Vec<DeviceRecord>, Reject> {
    let not_found = || Reject::new(ErrorCode::NotFound, format!("user {user:?} does not exist"));
    if validate_handle(user).is_err() {
        return Err(not_found());
    }
    let devices = ctx.store.devices(user).await.map_err(Reject::store)?;
    match devices.is_empty() {
        true => Err(not_found()),
        false => Ok(devices),
    }
}

/// One device's bundle, consuming one of its one-time prekeys; `None` if it
/// never published an identity key.
async fn claim_bundle(
    ctx: &ShardCtx,
    user: &str,
    device: &DeviceRecord,
    effects: &mut Vec<Effect>,
) -> Result<Option<DeviceBundleData>, Reject> {
    let store = &ctx.store;
    let id = device.device;
    let Some(keys) = store.device_keys(user, id).await.map_err(Reject::store)? else {
        return Ok(None);
    };
    let claimed = store
        .claim_key(user, id, KeyPool::OneTimePrekey)
        .await
        .map_err(Reject::store)?;
    let (one_time_prekey, last_resort) = match &claimed {
        Some(c) => claimed_prekey(&c.key, c.last_resort)?,
        None => (None, None),
    };
    if claimed.map_or(0, |c| c.remaining) < ctx.config.low_keys_threshold {
        effects.push(keys_low(ctx, user, id).await);
    }
    Ok(Some(DeviceBundleData {
        device: id,
        device_key: device.public_key,
        identity_key: keys.identity_key,
        identity_signature: keys.identity_signature,
        signed_prekey: keys.signed_prekey.map(to_wire_signed),
        one_time_prekey,
        last_resort,
        kem_prekey: keys.kem_prekey,
    }))
}

/// A KeysLow push to the device, with its current pool sizes.
async fn keys_low(ctx: &ShardCtx, user: &str, device: u32) -> Effect {
    let store = &ctx.store;
    let count = |pool| store.key_count(user, device, pool);
    let one_time_prekeys = count(KeyPool::OneTimePrekey).await.unwrap_or(0);
    let key_packages = count(KeyPool::KeyPackage).await.unwrap_or(0);
    let frame = Frame::new(
        0,
        Body::KeysLow(prekeys::KeysLow {
            one_time_prekeys,
            key_packages,
        }),
    )
    .encode();
    let recipients: Arc<[(String, u32)]> = vec![(user.to_owned(), device)].into();
    Effect::Signal(Fanout::shared(recipients, None, frame))
}

/// UploadKeyPackages: adds MLS KeyPackages (opaque) to the device's pool.
pub async fn upload_key_packages(
    ctx: &ShardCtx,
    caller: &Caller,
    packages: Vec<Bytes>,
    last_resort: Option<Bytes>,
) -> Result<Outcome, Reject> {
    if packages.len() > MAX_UPLOAD {
        return Err(invalid(format!(
            "at most {MAX_UPLOAD} KeyPackages per upload"
        )));
    }
    if packages
        .iter()
        .chain(last_resort.iter())
        .any(|p| p.is_empty() || p.len() > MAX_KEY_PACKAGE)
    {
        return Err(invalid(format!(
            "each KeyPackage must be 1 to {MAX_KEY_PACKAGE} bytes"
        )));
    }
    caller_device(ctx, caller).await?;
    let (user, device) = (caller.user.as_str(), caller.device);
    let store = &ctx.store;
    let pool_key = |package: Bytes| PoolKey {
        id: key_package_id(&package),
        key: package,
    };
    let packages: Vec<PoolKey> = packages.into_iter().map(pool_key).collect();
    let last_resort = last_resort.map(pool_key);
    let before = key_count(store, user, device, KeyPool::KeyPackage).await?;
    let key_packages = store
        .put_keys(
            user,
            device,
            KeyPool::KeyPackage,
            &packages,
            last_resort.as_ref(),
        )
        .await
        .map_err(Reject::store)?;
    let one_time_prekeys = key_count(store, user, device, KeyPool::OneTimePrekey).await?;
    let mut outcome = Outcome::durable(Ok(Body::KeyCounts(prekeys::KeyCounts {
        one_time_prekeys,
        key_packages,
    })));
    if before == 0 && key_packages > 0 {
        // The device just became addable to MLS groups (a freshly linked
        // device publishes its first KeyPackages): tell its peers again.
        outcome.effects = super::devices::devices_changed(ctx, &caller.user).await;
    }
    Ok(outcome)
}

/// ClaimKeyPackages: one KeyPackage per active device of each named user.
pub async fn claim_key_packages(
    ctx: &ShardCtx,
    caller: &Caller,
    users: Vec<String>,
) -> Result<Outcome, Reject> {
    if users.len() > super::MAX_MEMBERS_PER_REQUEST {
        return Err(invalid("too many users in one claim; split it"));
    }
    for user in &users {
        rate_limit(ctx, caller, user)?;
    }
    // Every user must exist before any single-use key is spent.
    let mut targets = Vec::with_capacity(users.len());
    for user in users {
        let devices = existing_devices(ctx, &user).await?;
        targets.push((user, devices));
    }
    let mut entries = Vec::new();
    let mut effects = Vec::new();
    for (user, devices) in targets {
        for device in devices {
            let Some(claimed) = ctx
                .store
                .claim_key(&user, device.device, KeyPool::KeyPackage)
                .await
                .map_err(Reject::store)?
            else {
                continue;
            };
            if claimed.remaining < ctx.config.low_keys_threshold {
                effects.push(keys_low(ctx, &user, device.device).await);
            }
            entries.push(ClaimedKeyPackageData {
                user: user.clone(),
                device: device.device,
                key_package: claimed.key.key,
                last_resort: claimed.last_resort,
            });
        }
    }
    let mut outcome = Outcome::durable(Ok(mls::KeyPackages { entries }.into()));
    outcome.effects = effects;
    Ok(outcome)
}
