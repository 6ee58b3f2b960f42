//! One file per request: each validates its input, applies it (on the
//! connection's shard or on the conversation's owner) and builds the reply.

pub mod ack;
pub mod admin;
pub mod authenticate;
pub mod block;
pub mod commit;
pub mod consent;
pub mod create;
pub mod devices;
pub mod history;
pub mod keys;
pub mod members;
pub mod presence;
pub mod purge;
pub mod reach;
pub mod register;
pub mod send;
pub mod sync;
pub mod timer;

use tern_proto::fb::ErrorCode;
use tern_proto::handle::validate_handle;
use tern_store::{ConversationKind as StoreKind, Store};

use super::mesh::Reject;
use tern_proto::ConversationKind;

/// Most members one request may name.
pub const MAX_MEMBERS_PER_REQUEST: usize = tern_proto::limits::MAX_NAMES_PER_REQUEST;

/// Checks handles and that each names an existing user.
pub async fn require_users(store: &dyn Store, users: &[String]) -> Result<(), Reject> {
    if users.len() > MAX_MEMBERS_PER_REQUEST {
        return Err(Reject::new(
            ErrorCode::InvalidArgument,
            format!("at most {MAX_MEMBERS_PER_REQUEST} members per request; split it"),
        ));
    }
    for user in users {
        validate_handle(user)
            .map_err(|e| Reject::new(ErrorCode::InvalidArgument, e.to_string()))?;
        let devices = store.devices(user).await.map_err(Reject::store)?;
        if devices.is_empty() {
            return Err(Reject::new(
                ErrorCode::NotFound,
                format!("user {user:?} does not exist"),
            ));
        }
    }
    Ok(())
}

pub fn kind_to_store(kind: ConversationKind) -> StoreKind {
    match kind {
        ConversationKind::Direct => StoreKind::Direct,
        ConversationKind::Group => StoreKind::Group,
        ConversationKind::NoteToSelf => StoreKind::NoteToSelf,
    }
}

pub fn kind_to_wire(kind: StoreKind) -> ConversationKind {
    match kind {
        StoreKind::Direct => ConversationKind::Direct,
        StoreKind::Group => ConversationKind::Group,
        StoreKind::NoteToSelf => ConversationKind::NoteToSelf,
    }
}
