//! The key directory, applied on the connection's shard: prekey and
//! KeyPackage uploads (signatures checked against the device key), claims
//! (one per active device, each one-time key handed out exactly once by the
//! store, rate limited per claimer and target), and the low-keys notice that
//! tells a device to replenish.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::mesh::{Caller, Fanout, Reject};
use crate::shard::ShardCtx;
use tern_proto::auth::{identity_key_transcript, prekey_transcript, verify};
use tern_proto::fb::ErrorCode;
use tern_proto::keys::{
    ClaimedKeyPackageData, DeviceBundleData, OneTimePrekeyData, SignedPrekeyData, UploadPrekeysBody,
};
use tern_proto::{Body, Frame};
use tern_store::{DeviceRecord, Prekey, PrekeyUpload, SignedPrekey};

/// Most one-time prekeys or KeyPackages accepted in one upload.
pub const MAX_UPLOAD: usize = 100;
/// Largest KeyPackage accepted, bytes.
pub const MAX_KEY_PACKAGE: usize = 16 * 1024;

fn invalid(message: impl Into<String>) -> Reject {
    Reject::new(ErrorCode::InvalidArgument, message)
}

/// UploadPrekeys: checks every signature, then stores the material.
pub async fn upload_prekeys(
    ctx: &ShardCtx,
    caller: &Caller,
    body: UploadPrekeysBody,
) -> Result<Body, Reject> {
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
    let upload = PrekeyUpload {
        identity: body.identity,
        signed_prekey: body.signed_prekey.map(to_store_signed),
        one_time: body
            .one_time
            .into_iter()
            .map(|k| Prekey {
                id: k.id,
                public: k.public_key,
            })
            .collect(),
        last_resort: body.last_resort.map(to_store_signed),
        kem_prekey: body.kem_prekey,
    };
    let store = &ctx.store;
    let one_time_prekeys = store
        .put_prekeys(&caller.user, caller.device, &upload)
        .await
        .map_err(Reject::internal)?;
    let key_packages = store
        .key_package_count(&caller.user, caller.device)
        .await
        .map_err(Reject::internal)?;
    store.persist().await.map_err(Reject::internal)?;
    Ok(Body::KeyCounts {
        one_time_prekeys,
        key_packages,
    })
}

async fn caller_device(ctx: &ShardCtx, caller: &Caller) -> Result<DeviceRecord, Reject> {
    ctx.store
        .device(&caller.user, caller.device)
        .await
        .map_err(Reject::internal)?
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

/// Refuses a claim over the (claimer, target) rate limit with a retry-after.
fn rate_limit(ctx: &ShardCtx, caller: &Caller, target: &str) -> Result<(), Reject> {
    let wait = match ctx
        .claims
        .borrow_mut()
        .check(&caller.user, target, Instant::now())
    {
        Ok(()) => return Ok(()),
        Err(wait) => wait,
    };
    let retry_after_ms = u32::try_from(wait.as_millis()).unwrap_or(u32::MAX).max(1);
    let mut reject = Reject::new(
        ErrorCode::RateLimited,
        format!("too many key claims for {target}; retry in {retry_after_ms} ms"),
    );
    reject.retry_after_ms = retry_after_ms;
    Err(reject)
}

/// ClaimPrekeys: one bundle per active device of the target user.
pub async fn claim_prekeys(ctx: &ShardCtx, caller: &Caller, user: String) -> Result<Body, Reject> {
    rate_limit(ctx, caller, &user)?;
    let devices = ctx.store.devices(&user).await.map_err(Reject::internal)?;
    if devices.is_empty() {
        return Err(Reject::new(
            ErrorCode::NotFound,
            format!("user {user:?} does not exist"),
        ));
    }
    let mut bundles = Vec::with_capacity(devices.len());
    for device in devices {
        let Some(claimed) = ctx
            .store
            .claim_prekeys(&user, device.device)
            .await
            .map_err(Reject::internal)?
        else {
            continue;
        };
        if claimed.remaining < ctx.config.low_keys_threshold {
            notify_low(ctx, &user, device.device).await;
        }
        bundles.push(DeviceBundleData {
            device: device.device,
            device_key: device.public_key,
            identity_key: claimed.identity_key,
            identity_signature: claimed.identity_signature,
            signed_prekey: claimed.signed_prekey.map(to_wire_signed),
            one_time_prekey: claimed.one_time.map(|k| OneTimePrekeyData {
                id: k.id,
                public_key: k.public,
            }),
            last_resort: claimed.last_resort.map(to_wire_signed),
            kem_prekey: claimed.kem_prekey,
        });
    }
    ctx.store.persist().await.map_err(Reject::internal)?;
    Ok(Body::PrekeyBundle {
        user,
        devices: bundles,
    })
}

/// Pushes KeysLow with the device's current pool sizes.
async fn notify_low(ctx: &ShardCtx, user: &str, device: u32) {
    let one_time_prekeys = ctx.store.prekey_count(user, device).await.unwrap_or(0);
    let key_packages = ctx.store.key_package_count(user, device).await.unwrap_or(0);
    let frame = Frame::new(
        0,
        Body::KeysLow {
            one_time_prekeys,
            key_packages,
        },
    )
    .encode();
    let recipients: Arc<[(String, u32)]> = vec![(user.to_owned(), device)].into();
    ctx.mesh
        .fan_out(Fanout::shared(recipients, None, frame))
        .await;
}

/// UploadKeyPackages: adds MLS KeyPackages (opaque) to the device's pool.
pub async fn upload_key_packages(
    ctx: &ShardCtx,
    caller: &Caller,
    packages: Vec<Bytes>,
    last_resort: Option<Bytes>,
) -> Result<Body, Reject> {
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
    let store = &ctx.store;
    let before = store
        .key_package_count(&caller.user, caller.device)
        .await
        .map_err(Reject::internal)?;
    let key_packages = store
        .put_key_packages(&caller.user, caller.device, &packages, last_resort)
        .await
        .map_err(Reject::internal)?;
    let one_time_prekeys = store
        .prekey_count(&caller.user, caller.device)
        .await
        .map_err(Reject::internal)?;
    store.persist().await.map_err(Reject::internal)?;
    if before == 0 && key_packages > 0 {
        // The device just became addable to MLS groups (a freshly linked
        // device publishes its first KeyPackages): tell its peers again.
        super::devices::devices_changed(ctx, &caller.user).await;
    }
    Ok(Body::KeyCounts {
        one_time_prekeys,
        key_packages,
    })
}

/// ClaimKeyPackages: one KeyPackage per active device of each named user.
pub async fn claim_key_packages(
    ctx: &ShardCtx,
    caller: &Caller,
    users: Vec<String>,
) -> Result<Body, Reject> {
    if users.len() > super::MAX_MEMBERS_PER_REQUEST {
        return Err(invalid("too many users in one claim; split it"));
    }
    for user in &users {
        rate_limit(ctx, caller, user)?;
    }
    let mut entries = Vec::new();
    for user in users {
        let devices = ctx.store.devices(&user).await.map_err(Reject::internal)?;
        if devices.is_empty() {
            return Err(Reject::new(
                ErrorCode::NotFound,
                format!("user {user:?} does not exist"),
            ));
        }
        for device in devices {
            let Some(claimed) = ctx
                .store
                .claim_key_package(&user, device.device)
                .await
                .map_err(Reject::internal)?
            else {
                continue;
            };
            if claimed.remaining < ctx.config.low_keys_threshold {
                notify_low(ctx, &user, device.device).await;
            }
            entries.push(ClaimedKeyPackageData {
                user: user.clone(),
                device: device.device,
                key_package: claimed.key_package,
                last_resort: claimed.last_resort,
            });
        }
    }
    ctx.store.persist().await.map_err(Reject::internal)?;
    Ok(Body::KeyPackages(entries))
}
