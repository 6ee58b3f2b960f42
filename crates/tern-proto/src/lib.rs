//! The tern wire protocol with no I/O: one struct per frame body
//! ([`body`]), requests typed against their answers ([`Request`]), the
//! length-prefixed codec, FlatBuffers verification under tight limits, and
//! the authentication transcript. The crate depends on no async runtime and
//! no transport (its Cargo.toml is the check), so server, client and tools
//! all share it.

pub mod auth;
pub mod blob_stream;
pub mod body;
pub mod close;
pub mod codec;
pub mod fingerprint;
pub mod flags;
pub mod frame;
pub mod handle;
pub mod limits;
pub mod request;

#[allow(
    clippy::all,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    unused_imports,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    mismatched_lifetime_syntaxes,
    unsafe_code
)]
#[rustfmt::skip]
#[path = "generated/tern_generated.rs"]
mod generated;

/// The FlatBuffers types generated from `schema/tern.fbs`.
pub use generated::tern::fb;

pub use body::conversations::ConversationKind;
pub use body::errors::{Conflict, ErrorBody};
pub use body::messaging::Message;
pub use body::privacy::GroupAdds;
pub use body::reach::DirectStarts;
pub use body::sync::{ConversationState, MAX_SYNC_PAGE};
pub use codec::{FrameDecoder, FrameError, Limits};
pub use frame::{Body, Frame};
pub use request::Request;

/// ALPN protocol id negotiated on every tern QUIC connection.
pub const ALPN: &[u8] = b"tern/1";
/// Semantic version of the wire protocol carried by the ALPN id.
pub const PROTOCOL_VERSION: u32 = 1;
