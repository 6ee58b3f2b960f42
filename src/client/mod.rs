//! The tern client SDK over QUIC; depends on `proto` only.

pub mod tls;
pub mod identity;
pub mod link;
pub mod sdk;
pub mod secure;
pub mod olm;
pub mod content;
pub mod mls;

pub use sdk::{Client, ClientError, ClientOptions, ConversationInfo, HistoryPage, SendOptions, SendReceipt};
pub use tls::TrustAnchor;
