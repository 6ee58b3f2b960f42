//! Encrypted attachments (issue 12; docs/E2EE.md §10): every attachment is
//! encrypted on the device with a fresh key ([`cipher`]: ChaCha20-Poly1305
//! STREAM over 64 KiB chunks, SHA-256 of the ciphertext), uploaded as an
//! opaque blob on a QUIC stream of its own ([`transfer`], resumable), and
//! announced by an [`AttachmentPointer`] (content kind `8`, [`pointer`])
//! inside an end-to-end encrypted message ([`send`]: the
//! [`crate::secure::SecureClient`] methods). The server stores and serves
//! only ciphertext.

pub mod cipher;
pub mod pointer;
pub mod send;
pub mod transfer;

pub use cipher::{AttachmentKey, OpenError, Opener, SealError, Sealed};
pub use pointer::{AttachmentPointer, PointerError, BLOB_ID_LEN};
pub use send::{AttachmentDetails, AttachmentError, Prepared, SentAttachment, UploadReport};
pub use transfer::{TransferError, Uploaded};
