//! Register, applied on the connection's shard as its first frame: creates
//! the account with device 1 after checking the proof of key possession
//! bound to this connection.

use std::net::IpAddr;

use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::shard::ShardCtx;
use tern_proto::auth::{register_transcript, verify, EXPORTER_LEN};
use tern_proto::body::auth;
use tern_proto::fb::ErrorCode;
use tern_proto::handle::{validate_device_name, validate_handle};
use tern_proto::Body;
use tern_store::{CreateAccountError, DeviceRecord};

/// A device key presented on a fresh connection (Register or RequestLink).
pub struct NewDevice {
    pub user: String,
    pub device_name: String,
    pub device_key: [u8; 32],
    pub signature: [u8; 64],
}

impl From<auth::Register> for NewDevice {
    fn from(r: auth::Register) -> Self {
        NewDevice {
            user: r.user,
            device_name: r.device_name,
            device_key: r.device_key,
            signature: r.signature,
        }
    }
}

impl From<auth::RequestLink> for NewDevice {
    fn from(r: auth::RequestLink) -> Self {
        NewDevice {
            user: r.user,
            device_name: r.device_name,
            device_key: r.device_key,
            signature: r.signature,
        }
    }
}

impl NewDevice {
    /// Checks the handle, the device name (printable, 1–64 bytes), and the proof of key possession
    /// over `transcript` (bound to this connection).
    pub fn check(&self, transcript: &[u8]) -> Result<(), Reject> {
        validate_handle(&self.user)
            .map_err(|e| Reject::new(ErrorCode::InvalidArgument, e.to_string()))?;
        validate_device_name(&self.device_name)
            .map_err(|e| Reject::new(ErrorCode::InvalidArgument, e.to_string()))?;
        verify(&self.device_key, transcript, &self.signature)
            .map_err(|e| Reject::new(ErrorCode::AuthFailed, e.to_string()))
    }
}

/// Creates the account; on success the connection is authenticated as the
/// returned caller. Limited per source address (`ratelimit`): every attempt
/// counts.
pub async fn apply(
    ctx: &ShardCtx,
    exporter: &[u8; EXPORTER_LEN],
    source: IpAddr,
    op: NewDevice,
) -> Result<(Caller, Outcome), Reject> {
    ctx.limits.register(source, ctx.clock.now_ms())?;
    op.check(&register_transcript(exporter, &op.user, &op.device_key))?;
    let device = DeviceRecord {
        device: 1,
        name: op.device_name,
        public_key: op.device_key,
        created_ms: ctx.clock.now_ms(),
    };
    match ctx.store.create_account(&op.user, device).await {
        Ok(()) => {}
        Err(CreateAccountError::UserExists(user)) => {
            return Err(Reject::new(
                ErrorCode::UserExists,
                format!("user {user:?} already exists; pick another handle"),
            ));
        }
        Err(CreateAccountError::Backend(e)) => return Err(Reject::store(e)),
    }
    let caller = Caller {
        user: op.user.clone(),
        device: 1,
    };
    let registered = Body::Registered(auth::Registered {
        user: op.user,
        device: 1,
    });
    Ok((caller, Outcome::durable(Ok(registered))))
}
