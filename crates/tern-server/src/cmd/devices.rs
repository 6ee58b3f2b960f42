//! Multi-device: listing a user's devices, linking a new device (approved by
//! an already linked one), revoking a device. Device-set changes are pushed
//! to everyone who shares a conversation with the user, and owners drop the
//! recipient sets they cached, so senders encrypt for the right devices.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::effects::{Effect, Outcome};
use crate::links::{LinkFull, LinkState, LinkTicket, MAX_PENDING_PER_USER};
use crate::mesh::{Caller, Reject};
use crate::shard::ShardCtx;
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

/// RequestLink: asks the user's devices to approve this new device. The
/// request leaves a small record in the server-wide registry (`links`), not
/// a waiting connection: this connection waits for the decision only until
/// its authentication deadline (`deadline_ms`, server clock), then is told
/// `LinkPending` and reconnects to repeat the request, which finds the
/// record (no new prompt, no rate-limit token). On approval the connection
/// is authenticated as the new device. Limited per source address and per
/// named user (`ratelimit`) when a record is made, and bounded in number.
pub async fn request_link(
    ctx: &ShardCtx,
    exporter: &[u8; EXPORTER_LEN],
    source: IpAddr,
    op: NewDevice,
    deadline_ms: u64,
) -> Result<(Caller, Outcome), Reject> {
    op.check(&link_transcript(exporter, &op.user, &op.device_key))?;
    let devices = ctx.store.devices(&op.user).await.map_err(Reject::store)?;
    if devices.is_empty() {
        return Err(Reject::new(
            ErrorCode::NotFound,
            format!("user {:?} does not exist", op.user),
        ));
    }
    let now = ctx.clock.now_ms();
    let ttl_ms = ctx.config.link_timeout_secs.saturating_mul(1000);
    let ticket = ctx
        .links
        .find_or_create(&op.user, &op.device_key, now, ttl_ms, || {
            ctx.limits.request_link(source, &op.user, now)
        })?
        .map_err(|full| too_many_links(&op.user, full))?;
    if ticket.fresh {
        prompt(ctx, &op, ticket.link_id).await;
    }
    match decision(ctx, &ticket, deadline_ms).await {
        Some(LinkState::Approved) => {
            ctx.links.take(ticket.link_id);
            add_linked_device(ctx, op).await
        }
        Some(LinkState::Denied) => {
            ctx.links.take(ticket.link_id);
            Err(Reject::new(
                ErrorCode::AuthFailed,
                "a linked device denied this link request",
            ))
        }
        Some(LinkState::Waiting) => Err(pending(ctx)),
        None => Err(Reject::new(
            ErrorCode::Timeout,
            "no linked device approved the request in time; try again",
        )),
    }
}

/// Pushes the LinkPrompt to the account's devices, through the delivery
/// seam at once (the request does not wait for an outcome).
async fn prompt(ctx: &ShardCtx, op: &NewDevice, link_id: u64) {
    let ask = Body::LinkPrompt(devices::LinkPrompt {
        link_id,
        user: op.user.clone(),
        device_name: op.device_name.clone(),
        device_key: op.device_key,
    });
    let users: Arc<[String]> = vec![op.user.clone()].into();
    ctx.delivery
        .notify(users, Frame::new(0, ask).encode())
        .await;
}

/// Waits for the decision until `deadline_ms` on the server clock; the
/// state then (`None`: the record expired).
async fn decision(ctx: &ShardCtx, ticket: &LinkTicket, deadline_ms: u64) -> Option<LinkState> {
    let decided = ticket.decided.notified();
    tokio::pin!(decided);
    decided.as_mut().enable();
    let state = ctx.links.state(ticket.link_id, ctx.clock.now_ms());
    if state != Some(LinkState::Waiting) {
        return state;
    }
    let left = Duration::from_millis(deadline_ms.saturating_sub(ctx.clock.now_ms()));
    let _ = ctx.clock.timeout(left, decided).await;
    ctx.links.state(ticket.link_id, ctx.clock.now_ms())
}

/// The answer while no device has decided: reconnect and ask again.
fn pending(ctx: &ShardCtx) -> Reject {
    let mut reject = Reject::new(
        ErrorCode::LinkPending,
        format!(
            "waiting for one of the account's devices to approve; reconnect and send \
             RequestLink again with the same device key (the request stays open for {} s \
             from the first one)",
            ctx.config.link_timeout_secs
        ),
    );
    reject.retry_after_ms = LINK_RETRY_MS;
    reject
}

/// How long a new device waits before asking again (milliseconds).
const LINK_RETRY_MS: u32 = 1_000;

fn too_many_links(user: &str, full: LinkFull) -> Reject {
    let why = match full {
        LinkFull::User => format!(
            "user {user:?} already has {MAX_PENDING_PER_USER} pending link requests; \
             approve or deny them first"
        ),
        LinkFull::Server => "too many pending link requests on this server".to_owned(),
    };
    let mut reject = Reject::new(ErrorCode::RateLimited, format!("{why}; retry later"));
    reject.retry_after_ms = LINK_RETRY_MS.saturating_mul(10);
    reject
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

/// ApproveLink: records the decision on one of the caller's account's
/// pending link requests (server-wide registry); NotFound if none waits
/// under `link_id`.
pub async fn approve(
    ctx: &ShardCtx,
    caller: &Caller,
    link_id: u64,
    approve: bool,
) -> Result<Outcome, Reject> {
    let now = ctx.clock.now_ms();
    let mut taken = ctx.links.decide(link_id, &caller.user, approve, now);
    if let (false, Some(node)) = (taken, ctx.mesh.cluster.get()) {
        // In a cluster the request lives on the new device's node.
        taken = node.decide_link(link_id, &caller.user, approve).await;
    }
    match taken {
        true => Ok(Outcome::immediate(Ok(Done.into()))),
        false => Err(Reject::new(ErrorCode::NotFound, "no such link request")),
    }
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
