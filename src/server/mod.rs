//! The tern server: shards, QUIC transport, connections and routing.

pub mod cid;
pub mod socket;
pub mod tls;
pub mod cmd;
pub mod config;
pub mod connection;
pub mod mesh;
pub mod owner;
pub mod payloads;
pub mod ratelimit;
pub mod sessions;
pub mod shard;
pub mod runtime;

pub use config::ServerConfig;
pub use runtime::{start, ServerHandle, StartError};
