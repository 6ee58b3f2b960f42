//! The tern client SDK over QUIC; depends on `proto` only.

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
