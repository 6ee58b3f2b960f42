//! The tern client SDK over QUIC, with end-to-end encryption (Olm, MLS).
//! Depends on `tern-proto` only: no store backend, no server code.

pub mod attachment;
pub mod calls;
pub mod connection;
pub mod content;
pub mod identity;
pub mod message_store;
pub mod mls;
pub mod olm;
pub mod ordering;
pub mod presence;
pub mod privacy;
pub mod push;
pub mod sdk;
pub mod secure;
pub mod staging;
pub mod state_dir;
pub mod state_lock;
pub mod tls;
pub mod typing;

pub use sdk::{
    AnswerLoss, Client, ClientError, ClientOptions, ConversationInfo, HistoryPage, SendOptions,
    SendReceipt,
};
pub use tls::TrustAnchor;
