//! The tern client SDK over QUIC, with end-to-end encryption (Olm, MLS).
//! Depends on `tern-proto` only: no store backend, no server code.

pub mod content;
pub mod identity;
pub mod link;
pub mod mls;
pub mod olm;
pub mod sdk;
pub mod secure;
pub mod tls;

pub use sdk::{
    Client, ClientError, ClientOptions, ConversationInfo, HistoryPage, SendOptions, SendReceipt,
};
pub use tls::TrustAnchor;
