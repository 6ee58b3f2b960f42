//! The tern server: shards, QUIC transport, connections and routing.

pub mod admin;
pub mod blob_backend;
pub mod blobs;
pub mod cid;
pub mod clock;
pub mod cluster;
pub mod cmd;
pub mod command;
pub mod config;
pub mod connection;
pub mod delivery;
pub mod effects;
pub mod links;
pub mod locations;
pub mod mesh;
pub mod node;
pub mod outbound;
pub mod owner;
pub mod payloads;
pub mod presence;
pub mod push;
pub mod ratelimit;
pub mod realtime;
pub mod runtime;
pub mod scylla_runtime;
pub mod sessions;
pub mod shard;
pub mod socket;
pub mod staging;
pub mod store_config;
pub mod tls;

pub use clock::Clock;
pub use config::ServerConfig;
pub use runtime::{start, start_with, ServerHandle, StartError};
pub use shard::Services;
