//! Multi-device: listing a user's devices, linking a new device (approved by
//! an already linked one), revoking a device. Device-set changes are pushed
//! to everyone who shares a conversation with the user, and owners drop the
//! recipient sets they cached, so senders encrypt for the right devices.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::effects::{Effect, Outcome};
use crate::mesh::{Caller, Reject};
use crate::shard::{PendingLink, ShardCtx};
use tern_proto::auth::{link_transcript, EXPORTER_LEN};
use tern_proto::body::devices::{self, DeviceInfoData};
use tern_proto::body::{auth, messaging::Done};
use tern_proto::fb::ErrorCode;
use tern_proto::handle::validate_handle;
use tern_proto::{Body, Frame};

use super::register::NewDevice;

/// ListDevices: the active devices of any user (senders need them to encrypt).
pub async fn list(ctx: &ShardCtx, user: String) -> Result<Outcome, Reject> {
    let unknown = validate_handle(&user).is_err();
    let devices = match unknown {
        true => Vec::new(),
        false => ctx.store.devices(&user).await.map_err(Reject::store)?,
    };
    if devices.is_empty() {
        return Err(Reject::new(
            ErrorCode::NotFound,
            format!("user {user:?} does not exist"),
        ));
    }
    let devices = devices
        .into_iter()
        .map(|d| DeviceInfoData {
            device: d.device,
            name: d.name,
            device_key: d.public_key,
            created_ms: d.created_ms,
        })
        .collect();
    let list = Body::DeviceList(devices::DeviceList { user, devices });
    Ok(Outcome::immediate(Ok(list)))
}

/// RequestLink: asks the user's devices to approve this new device and waits
/// for the answer. On approval the connection is authenticated as the new device.
/// Limited per source address and per named user (`ratelimit`), checked
/// once the request is well formed and names an existing user.
pub async fn request_link(
    ctx: &ShardCtx,
    exporter: &[u8; EXPORTER_LEN],
    source: IpAddr,
    op: NewDevice,
) -> Result<(Caller, Outcome), Reject> {
    op.check(&link_transcript(exporter, &op.user, &op.device_key))?;
    let devices = ctx.store.devices(&op.user).await.map_err(Reject::store)?;
    if devices.is_empty() {
        return Err(Reject::new(
            ErrorCode::NotFound,
            format!("user {:?} does not exist", op.user),
        ));
    }
    ctx.limits
        .request_link(source, &op.user, ctx.clock.now_ms())?;
    let link_id = ((ctx.id as u64) << 56) | (rand::random::<u64>() & 0x00ff_ffff_ffff_ffff);
    let (decision_tx, decision) = tokio::sync::oneshot::channel();
    ctx.pending_links.borrow_mut().insert(
        link_id,
        PendingLink {
            user: op.user.clone(),
            decision: decision_tx,
        },
    );
    let ask = Body::LinkPrompt(devices::LinkPrompt {
        link_id,
        user: op.user.clone(),
        device_name: op.device_name.clone(),
        device_key: op.device_key,
    });
    let users: Arc<[String]> = vec![op.user.clone()].into();
    // The request waits for the decision, so its push cannot wait for an
    // outcome: it goes out through the delivery seam at once.
    ctx.delivery
        .notify(users, Frame::new(0, ask).encode())
        .await;
    let waited = ctx
        .clock
        .timeout(Duration::from_secs(ctx.config.link_timeout_secs), decision)
        .await;
    ctx.pending_links.borrow_mut().remove(&link_id);
    match waited {
        Ok(Ok(true)) => add_linked_device(ctx, op).await,
        Ok(Ok(false)) => Err(Reject::new(
            ErrorCode::AuthFailed,
            "a linked device denied this link request",
        )),
        Ok(Err(_)) | Err(_) => Err(Reject::new(
            ErrorCode::Timeout,
            "no linked device approved the request in time; try again",
        )),
    }
}

async fn add_linked_device(ctx: &ShardCtx, op: NewDevice) -> Result<(Caller, Outcome), Reject> {
    let added = ctx
        .store
        .add_device(&op.user, &op.device_name, op.device_key, ctx.clock.now_ms())
        .await
        .map_err(Reject::store)?;
    let device = added.ok_or_else(|| {
        Reject::new(
            ErrorCode::NotFound,
            format!("user {:?} no longer exists", op.user),
        )
    })?;
    let caller = Caller {
        user: op.user.clone(),
        device,
    };
    let mut outcome = Outcome::durable(Ok(Body::Registered(auth::Registered {
        user: op.user.clone(),
        device,
    })));
    outcome.effects = devices_changed(ctx, &op.user).await;
    Ok((caller, outcome))
}

/// ApproveLink: hands the decision to the shard holding the waiting device
/// and answers NotFound if no link of the caller's account waits there.
pub async fn approve(
    ctx: &ShardCtx,
    caller: &Caller,
    link_id: u64,
    approve: bool,
) -> Result<Outcome, Reject> {
    let shard = (link_id >> 56) as usize;
    if shard >= ctx.mesh.shards() {
        return Err(Reject::new(ErrorCode::NotFound, "no such link request"));
    }
    let approver = caller.user.clone();
    let found = ctx
        .delivery
        .link_decision(shard, link_id, approver, approve)
        .await;
    match found {
        true => Ok(Outcome::immediate(Ok(Done.into()))),
        false => Err(Reject::new(ErrorCode::NotFound, "no such link request")),
    }
}

/// Applies a decision on this shard: only the user's own devices decide.
/// Returns whether a link of the approver's account waited under `link_id`.
pub fn decide(ctx: &ShardCtx, link_id: u64, approver: &str, approve: bool) -> bool {
    let mut pending = ctx.pending_links.borrow_mut();
    if pending.get(&link_id).is_none_or(|p| p.user != approver) {
        return false;
    }
    pending
        .remove(&link_id)
        .is_some_and(|link| link.decision.send(approve).is_ok())
}

/// RevokeDevice: removes one of the caller's own devices (possibly itself).
pub async fn revoke(ctx: &ShardCtx, caller: &Caller, device: u32) -> Result<Outcome, Reject> {
    let revoked = ctx
        .store
        .revoke_device(&caller.user, device)
        .await
        .map_err(Reject::store)?;
    if !revoked {
        return Err(Reject::new(
            ErrorCode::NotFound,
            format!("{}/{device} is not an active device", caller.user),
        ));
    }
    let close = Effect::CloseDevice {
        user: caller.user.clone(),
        device,
    };
    let mut outcome = Outcome::durable(Ok(Done.into())).with(close);
    outcome
        .effects
        .extend(devices_changed(ctx, &caller.user).await);
    Ok(outcome)
}

/// The effects of a change to `user`'s devices: owners drop cached
/// recipients, and every device sharing a conversation with `user` gets the
/// new device list.
pub async fn devices_changed(ctx: &ShardCtx, user: &str) -> Vec<Effect> {
    let mut effects = vec![Effect::ForgetUser(user.to_owned())];
    let Ok(devices) = ctx.store.devices(user).await else {
        return effects;
    };
    let ids: Vec<u32> = devices.iter().map(|d| d.device).collect();
    let mut users = BTreeSet::from([user.to_owned()]);
    for id in ctx.store.user_conversations(user).await.unwrap_or_default() {
        if let Ok(Some(record)) = ctx.store.conversation(id).await {
            users.extend(record.members);
        }
    }
    let frame = Frame::new(
        0,
        Body::DeviceListChanged(devices::DeviceListChanged {
            user: user.to_owned(),
            devices: ids,
        }),
    )
    .encode();
    let users: Vec<String> = users.into_iter().collect();
    effects.push(Effect::Notify {
        users: users.into(),
        frame,
    });
    effects
}
