//! The tern client SDK over QUIC; depends on `proto` only.

pub mod tls;
pub mod identity;
pub mod link;
pub mod sdk;

pub use sdk::{Client, ClientError, ClientOptions, ConversationInfo, HistoryPage, SendOptions, SendReceipt};
pub use tls::TrustAnchor;
