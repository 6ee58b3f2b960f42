//! Authenticate, applied on the connection's shard as its first frame:
//! checks the device's signature over this connection's exporter value.

use crate::effects::Outcome;
use crate::mesh::{Caller, Reject};
use crate::shard::ShardCtx;
use tern_proto::auth::{authenticate_transcript, verify, EXPORTER_LEN};
use tern_proto::body::auth;
use tern_proto::fb::ErrorCode;
use tern_proto::handle::validate_handle;
use tern_proto::Body;

/// Authenticates the connection as `(user, device)` or says why not. Unknown
/// users and devices get the same answer as a bad signature.
pub async fn apply(
    ctx: &ShardCtx,
    exporter: &[u8; EXPORTER_LEN],
    user: String,
    device: u32,
    signature: [u8; 64],
) -> Result<(Caller, Outcome), Reject> {
    let refused = || {
        Reject::new(
            ErrorCode::AuthFailed,
            format!("authentication failed for {user}/{device}: unknown device or bad signature"),
        )
    };
    if validate_handle(&user).is_err() {
        return Err(refused());
    }
    let record = ctx
        .store
        .device(&user, device)
        .await
        .map_err(Reject::store)?;
    let Some(record) = record else {
        return Err(refused());
    };
    let transcript = authenticate_transcript(exporter, &user, device);
    verify(&record.public_key, &transcript, &signature).map_err(|_| refused())?;
    let caller = Caller {
        user: user.clone(),
        device,
    };
    let authenticated = Body::Authenticated(auth::Authenticated {
        user,
        device,
        server_time_ms: ctx.clock.now_ms(),
    });
    Ok((caller, Outcome::immediate(Ok(authenticated))))
}
