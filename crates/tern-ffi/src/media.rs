//! Attachments for apps (issue 12; docs/E2EE.md §10, docs/PROTOCOL.md
//! §4.12): send a file end-to-end encrypted with a progress callback, and
//! fetch the one a message carries, checked chunk by chunk and by digest.
//! A message carrying one shows as [`crate::MessageContent::Attachment`]
//! (name, type, size, preview, dimensions, duration); its key and blob id
//! stay in the SDK's store, so an app fetches it by conversation and seq.

use std::path::PathBuf;
use std::sync::Arc;

use tern_client::attachment::{AttachmentDetails, AttachmentPointer};
use tern_client::content::Content;

use crate::{TernClient, TernError};

/// What the app knows of a file beyond its bytes (as Signal's attachment
/// pointer carries it): a preview it made (JPEG or WebP, at most 16 KiB;
/// empty for none), dimensions in pixels (images, video), a duration in
/// ms (audio, video), and the MIME type (`None`: from the file name;
/// `audio/...` marks a voice message). 0 means unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, uniffi::Record)]
pub struct FileDetails {
    pub thumbnail: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub duration_ms: u32,
    pub content_type: Option<String>,
}

/// Told how a transfer advances: `done` of `total` ciphertext bytes, after
/// each piece (on the calling thread; keep it short).
#[uniffi::export(with_foreign)]
pub trait TransferProgress: Send + Sync {
    fn on_progress(&self, done: u64, total: u64);
}

#[uniffi::export]
impl TernClient {
    /// Encrypts the file at `path` with a fresh key, uploads it on blob
    /// streams (resuming after a lost connection from what the server
    /// holds) and sends its pointer to `conversation_id`, end-to-end
    /// encrypted. Returns the message's seq.
    ///
    /// # Errors
    /// `File` (unreadable, changed meanwhile), `InvalidArgument` (larger
    /// than an attachment carries, a thumbnail past 16 KiB, a bad type),
    /// `Transfer` (the server refused: too large for it, the quota, the
    /// rate with `retry_after_ms`; or the connection kept failing), or the
    /// send's.
    pub fn send_file(
        &self,
        conversation_id: u64,
        path: String,
        details: FileDetails,
        progress: Option<Arc<dyn TransferProgress>>,
    ) -> Result<u64, TernError> {
        let details = AttachmentDetails {
            thumbnail: details.thumbnail,
            width: details.width,
            height: details.height,
            duration_ms: details.duration_ms,
            content_type: details.content_type,
        };
        let prepared = self
            .client
            .prepare_attachment_with(&PathBuf::from(path), details)?;
        let mut report = |done: u64, total: u64| {
            if let Some(p) = &progress {
                p.on_progress(done, total);
            }
        };
        let sent = self.run(
            self.client
                .send_prepared(conversation_id, prepared, &mut report),
        )?;
        Ok(sent.sent.receipt.seq)
    }

    /// Downloads the attachment of message `seq` into `out_path` (written
    /// as `out_path.part` first; the file appears only once every chunk,
    /// the length and the digest were checked, replacing one of that
    /// name). Returns its size in bytes.
    ///
    /// # Errors
    /// `NoSuchMessage` (this device holds no attachment at `seq`),
    /// `Encryption` (a chunk, the length or the digest is wrong: the
    /// server's copy was altered), `Transfer` (not on the server: not
    /// uploaded yet, or expired; the connection), `File`.
    pub fn fetch_file(
        &self,
        conversation_id: u64,
        seq: u64,
        out_path: String,
    ) -> Result<u64, TernError> {
        let pointer = self.pointer(conversation_id, seq)?;
        self.run(
            self.client
                .download_attachment(&pointer, &PathBuf::from(out_path)),
        )
    }
}

impl TernClient {
    /// The attachment pointer message `seq` carries on this device.
    fn pointer(&self, conversation_id: u64, seq: u64) -> Result<AttachmentPointer, TernError> {
        let found = self.client.messages().get(conversation_id, seq)?;
        match found.map(|f| f.message.content) {
            Some(Content::Attachment(pointer)) => Ok(*pointer),
            _ => Err(TernError::NoSuchMessage {
                seq,
                message: format!(
                    "this device holds no attachment at seq {seq} of conversation {conversation_id}"
                ),
            }),
        }
    }
}
