//! Sending and fetching attachments with a [`SecureClient`]: encrypt a file
//! into a spool file under the state directory (`attachments/`), upload
//! it on blob streams (resuming after a lost connection from what the
//! server holds), then send its [`AttachmentPointer`] as an end-to-end
//! encrypted message; on the other side, download the ciphertext and
//! decrypt it chunk by chunk into the output file, which appears only once
//! every chunk, the length and the digest were checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::RngCore;

use super::cipher::{self, AttachmentKey, OpenError, Opener, SealError};
use super::pointer::{AttachmentPointer, PointerError, BLOB_ID_LEN};
use super::transfer::{self, TransferError, Uploaded};
use crate::content::Content;
use crate::secure::{SecureClient, SecureError, Sent};

/// Upload attempts (each resuming the last) before giving up.
const MAX_ATTEMPTS: u32 = 5;
/// How long an attempt waits for the connection to come back.
const RECONNECT_WAIT: Duration = Duration::from_secs(30);
/// Pause before the n-th retry: n times this (the server may still be
/// winding down the lost connection's stream).
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Why sending or fetching an attachment failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    #[error("cannot read {path}: {source}")]
    Source {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Seal(#[from] SealError),
    #[error(transparent)]
    Pointer(#[from] PointerError),
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Send(#[from] SecureError),
    #[error("writing the attachment's local files failed: {0}")]
    Io(#[from] std::io::Error),
}

/// An attachment encrypted into its spool file, ready to upload.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub pointer: AttachmentPointer,
    /// The ciphertext, [`Prepared::ciphertext_len`] bytes.
    pub spool: PathBuf,
    pub ciphertext_len: u64,
}

/// What [`SecureClient::send_attachment`] did.
#[derive(Debug)]
pub struct SentAttachment {
    pub sent: Sent,
    pub pointer: AttachmentPointer,
    pub upload: UploadReport,
}

/// How an upload went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// The completing attempt: where it started (what the server already
    /// held) and how many bytes it sent.
    pub last: Uploaded,
    /// Attempts cut before it (a lost connection, the server busy).
    pub interrupted: u32,
}

/// A MIME type from a file name's extension (`application/octet-stream`
/// when unknown).
pub fn content_type_for(path: &Path) -> &'static str {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("mp4") => "video/mp4",
        Some("mov") => "video/quicktime",
        Some("ogg" | "opus") => "audio/ogg",
        Some("m4a") => "audio/mp4",
        Some("mp3") => "audio/mpeg",
        Some("pdf") => "application/pdf",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// What the sending app knows of an attachment beyond its bytes, carried in
/// its pointer as Signal's AttachmentPointer carries it (E2EE.md §10.2): a
/// preview it made (the SDK decodes no images), dimensions and duration,
/// and the content type when the file name does not tell it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttachmentDetails {
    /// A small preview (JPEG or WebP), at most
    /// [`super::pointer::MAX_THUMBNAIL_BYTES`]; empty for none.
    pub thumbnail: Vec<u8>,
    /// Pixels, for images and video; 0 when unknown.
    pub width: u32,
    pub height: u32,
    /// Milliseconds, for audio and video; 0 when unknown.
    pub duration_ms: u32,
    /// The MIME type (`audio/ogg` marks a voice message); `None` guesses it
    /// from the file name ([`content_type_for`]).
    pub content_type: Option<String>,
}

impl SecureClient {
    /// Encrypts `path` with a fresh key under a fresh random blob id into
    /// a spool file in the state directory.
    ///
    /// # Errors
    /// [`AttachmentError::Source`] when the file cannot be read,
    /// [`AttachmentError::Seal`] when it is too large or changes meanwhile.
    pub fn prepare_attachment(&self, path: &Path) -> Result<Prepared, AttachmentError> {
        self.prepare_attachment_with(path, AttachmentDetails::default())
    }

    /// [`SecureClient::prepare_attachment`] with what the app knows of it.
    ///
    /// # Errors
    /// As `prepare_attachment`; [`AttachmentError::Pointer`] for a
    /// thumbnail or content type past the pointer's limits.
    pub fn prepare_attachment_with(
        &self,
        path: &Path,
        details: AttachmentDetails,
    ) -> Result<Prepared, AttachmentError> {
        let source_err = |source| AttachmentError::Source {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(source_err)?;
        let metadata = file.metadata().map_err(source_err)?;
        if !metadata.is_file() {
            let kind = std::io::ErrorKind::InvalidInput;
            return Err(source_err(std::io::Error::new(kind, "not a regular file")));
        }
        let size = metadata.len();
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let details = AttachmentDetails {
            content_type: details
                .content_type
                .or_else(|| Some(content_type_for(path).to_owned())),
            ..details
        };
        let reader = std::io::BufReader::new(file);
        self.prepare_attachment_from(reader, size, &file_name, details)
    }

    /// Encrypts `size` bytes read from `reader` (a camera buffer, a pipe:
    /// anything but a file) as an attachment named `file_name`, into a
    /// spool file in the state directory.
    ///
    /// # Errors
    /// [`AttachmentError::Seal`] when it is too large or `reader` gives
    /// another number of bytes than `size` (or fails);
    /// [`AttachmentError::Pointer`] for details past the pointer's limits.
    pub fn prepare_attachment_from(
        &self,
        reader: impl std::io::Read,
        size: u64,
        file_name: &str,
        details: AttachmentDetails,
    ) -> Result<Prepared, AttachmentError> {
        let mut blob_id = [0u8; BLOB_ID_LEN];
        rand::rngs::OsRng.fill_bytes(&mut blob_id);
        let key = AttachmentKey::random();
        let pointer = AttachmentPointer {
            blob_id,
            key,
            digest: [0; cipher::DIGEST_LEN],
            size,
            content_type: details
                .content_type
                .unwrap_or_else(|| content_type_for(Path::new(file_name)).to_owned()),
            file_name: file_name.to_owned(),
            thumbnail: details.thumbnail,
            width: details.width,
            height: details.height,
            duration_ms: details.duration_ms,
        };
        pointer.check()?;
        let dir = self.transport().state_dir().join("attachments");
        std::fs::create_dir_all(&dir)?;
        let spool = dir.join(format!("{}.enc", hex::encode(blob_id)));
        let out = std::io::BufWriter::new(std::fs::File::create(&spool)?);
        let sealed = match cipher::seal(&pointer.key, size, reader, out) {
            Ok(sealed) => sealed,
            Err(e) => {
                let _ = std::fs::remove_file(&spool);
                return Err(e.into());
            }
        };
        Ok(Prepared {
            pointer: AttachmentPointer {
                digest: sealed.digest,
                ..pointer
            },
            spool,
            ciphertext_len: sealed.ciphertext_len,
        })
    }

    /// Uploads a prepared attachment, resuming after lost connections (up
    /// to five attempts, each waiting up to 30 s for the reconnect, the
    /// n-th after a pause of n × 200 ms);
    /// `progress(done, total)` in ciphertext bytes.
    ///
    /// # Errors
    /// [`AttachmentError::Transfer`] when the server refuses (too large)
    /// or the attempts run out.
    pub async fn upload_attachment(
        &self,
        prepared: &Prepared,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<UploadReport, AttachmentError> {
        let mut interrupted = 0;
        let mut last = TransferError::NotConnected;
        for attempt in 0..MAX_ATTEMPTS {
            tokio::time::sleep(RETRY_PAUSE * attempt).await;
            let Some(connection) = self.transport().blob_connection(RECONNECT_WAIT).await else {
                last = TransferError::NotConnected;
                continue;
            };
            let id = &prepared.pointer.blob_id;
            let total = prepared.ciphertext_len;
            match transfer::upload(&connection, id, &prepared.spool, total, progress).await {
                Ok(done) => {
                    return Ok(UploadReport {
                        last: done,
                        interrupted,
                    })
                }
                Err(e) if e.is_retryable() => {
                    tracing::debug!(error = %e, "attachment upload interrupted; resuming");
                    interrupted += 1;
                    last = e;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.into())
    }

    /// Encrypts `path`, uploads it and sends its pointer to `conversation`
    /// as an end-to-end encrypted message; `progress(done, total)` during
    /// the upload. The spool file is removed once the message is sent.
    ///
    /// # Errors
    /// [`AttachmentError`]: reading, encrypting, uploading or sending.
    pub async fn send_attachment(
        &self,
        conversation: u64,
        path: &Path,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<SentAttachment, AttachmentError> {
        let prepared = self.prepare_attachment(path)?;
        self.send_prepared(conversation, prepared, progress).await
    }

    /// Uploads `prepared` ([`SecureClient::prepare_attachment_with`],
    /// [`SecureClient::prepare_attachment_from`]) and sends its pointer to
    /// `conversation`; `progress(done, total)` during the upload. The
    /// spool file is removed once the message is sent.
    ///
    /// # Errors
    /// [`AttachmentError`]: uploading or sending (the spool file stays for
    /// a retry with the same `prepared`, which resumes the upload).
    pub async fn send_prepared(
        &self,
        conversation: u64,
        prepared: Prepared,
        progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<SentAttachment, AttachmentError> {
        // A conversation that is not this account's is refused before the
        // upload, not after it (the bytes would sit in the quota).
        self.conversation_kind(conversation).await?;
        let upload = self.upload_attachment(&prepared, progress).await?;
        let content = Content::Attachment(Box::new(prepared.pointer.clone()));
        let sent = self.send(conversation, &content).await?;
        let _ = std::fs::remove_file(&prepared.spool);
        Ok(SentAttachment {
            sent,
            pointer: prepared.pointer,
            upload,
        })
    }

    /// Downloads the attachment `pointer` names into `out`, checking every
    /// chunk, the length and the digest; `out` appears only when all hold
    /// (written as `out` + `.part` first, removed on failure), replacing a
    /// file of that name (callers that take the name from the pointer check
    /// first: it is the sender's choice). Returns its size.
    ///
    /// # Errors
    /// [`AttachmentError::Open`] naming the refused chunk, a wrong length
    /// or digest; [`AttachmentError::Transfer`] when the download fails.
    pub async fn download_attachment(
        &self,
        pointer: &AttachmentPointer,
        out: &Path,
    ) -> Result<u64, AttachmentError> {
        let mut part = out.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let result = self.download_into(pointer, &part).await;
        match result {
            Ok(()) => {
                std::fs::rename(&part, out)?;
                Ok(pointer.size)
            }
            Err(e) => {
                let _ = std::fs::remove_file(&part);
                Err(e)
            }
        }
    }

    async fn download_into(
        &self,
        pointer: &AttachmentPointer,
        part: &Path,
    ) -> Result<(), AttachmentError> {
        let connection = self
            .transport()
            .blob_connection(RECONNECT_WAIT)
            .await
            .ok_or(TransferError::NotConnected)?;
        let mut opener = Opener::new(&pointer.key, pointer.size, pointer.digest)?;
        let mut file = std::io::BufWriter::new(std::fs::File::create(part)?);
        let mut failed: Option<OpenError> = None;
        let mut sink = |bytes: &[u8]| match opener.push(bytes, &mut file) {
            Ok(()) => Ok(()),
            Err(e) => {
                let why = e.to_string();
                failed = Some(e);
                Err(TransferError::Io(std::io::Error::other(why)))
            }
        };
        let wanted = cipher::ciphertext_len(pointer.size);
        let got = transfer::download(&connection, &pointer.blob_id, 0, wanted, &mut sink).await;
        if let Some(e) = failed {
            return Err(e.into());
        }
        got?;
        opener.finish()?;
        std::io::Write::flush(&mut file)?;
        file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(())
    }
}
