//! Message kind flags. The low 16 bits belong to clients (opaque to the
//! server); the server sets the high bits on messages it sequences for the
//! MLS delivery service and for per-device sends.

/// Bits a client may set on `Send`.
pub const CLIENT_MASK: u32 = 0x0000_ffff;
/// The message is an accepted MLS Commit.
pub const MLS_COMMIT: u32 = 1 << 16;
/// The message is an MLS Welcome for members added by the preceding Commit.
pub const MLS_WELCOME: u32 = 1 << 17;
/// The message was sent with one ciphertext per device; each device sees its own.
pub const PER_DEVICE: u32 = 1 << 18;
/// The message was deleted for everyone (`PurgeMessage`): a tombstone with
/// an empty payload in its place.
pub const TOMBSTONE: u32 = 1 << 19;
/// The message disappears: the server shortened its lifetime below the
/// server's retention (`message_ttl_secs`), by the conversation's
/// disappearing-message timer or the sender's `expires_in_secs`, so its
/// `expires_at_ms` is when every device deletes its copy too (E2EE.md
/// §3.7). Without it `expires_at_ms` is only the server's retention and
/// local history keeps the message. Kept on the message's tombstone.
pub const DISAPPEARING: u32 = 1 << 20;

/// Client flag (convention of the tern SDK): payload is an Olm (1:1) ciphertext.
pub const CLIENT_OLM: u32 = 1 << 0;
/// Client flag (convention of the tern SDK): payload is an MLS application message.
pub const CLIENT_MLS: u32 = 1 << 1;
