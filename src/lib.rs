//! tern: an end-to-end-encrypted messaging delivery service and key directory.
//!
//! Layers import downward only (checked by `scripts/check-layers.sh`):
//! `proto` (frames, codec, verification; no tokio, no I/O) ← `store` ← `server`;
//! `client` depends on `proto` only.

pub mod client;
pub mod proto;
pub mod server;
pub mod store;
