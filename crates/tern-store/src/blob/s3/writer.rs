//! The S3 backend's [`BlobWriter`] (one part buffered at most; see the
//! module docs of [`super`]) and [`BlobReader`] (ranged GETs).

use bytes::Bytes;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::ObjectStoreExt;

use super::layout::{self, Manifest, Names, PartialRecord, MAX_PARTS, PART_LEN};
use super::{Bridge, Writing, WritingGuard};
use crate::blob::{BlobError, BlobId, BlobReader, BlobWriter};

/// Appends to one partial upload; see the module docs of [`super`].
pub(super) struct S3Writer {
    bridge: Bridge,
    names: Names,
    record: PartialRecord,
    /// The bytes after the last part: fewer than [`PART_LEN`].
    buf: Vec<u8>,
    /// Whether `buf` (or the record) holds what S3 does not have yet.
    dirty: bool,
    /// A request failed or the upload completed: nothing more is written
    /// (the record in S3 stays as it last was, and the client resumes from
    /// the status).
    closed: bool,
    guard: WritingGuard,
}

impl S3Writer {
    /// The writer of the upload `names`, continued from `offset`.
    pub(super) fn open(
        bridge: Bridge,
        writing: &Writing,
        names: Names,
        offset: u64,
    ) -> Result<S3Writer, BlobError> {
        let id = layout::unhex_id(&names.id_hex).ok_or(BlobError::NotFound)?;
        let guard = WritingGuard::claim(writing, &names.partial)?;
        let partial = names.partial.clone();
        let found = bridge.run(move |inner| async move {
            if inner.manifest(&id).await?.is_some() {
                return Err(BlobError::AlreadyExists);
            }
            inner.partial(&partial).await
        })?;
        let fresh = found.is_none();
        let (record, tail) = found.unwrap_or_else(|| {
            let record = PartialRecord {
                nonce: layout::nonce(),
                ..PartialRecord::default()
            };
            (record, Bytes::new())
        });
        let have = (record.parts.len() as u64) * PART_LEN as u64 + tail.len() as u64;
        if have != offset {
            return Err(BlobError::OffsetMismatch {
                have,
                asked: offset,
            });
        }
        guard.set_len(have);
        Ok(S3Writer {
            bridge,
            names,
            record,
            buf: tail.to_vec(),
            // A new upload exists (empty) once its writer goes, as a file would.
            dirty: fresh,
            closed: false,
            guard,
        })
    }

    /// Sends the full buffer as the next part (creating the multipart
    /// upload with the first), then records it.
    fn flush_part(&mut self) -> Result<(), BlobError> {
        if self.record.parts.len() >= MAX_PARTS {
            return Err(BlobError::Io(std::io::Error::other(
                "the blob is larger than S3 multipart uploads allow",
            )));
        }
        let part = Bytes::from(std::mem::take(&mut self.buf));
        let mut record = self.record.clone();
        let names = self.names.clone();
        let result = self.bridge.run(move |inner| async move {
            let data = names.data(&record.nonce);
            let upload = match &record.upload {
                Some(upload) => upload.clone(),
                None => inner
                    .s3
                    .create_multipart(&data)
                    .await
                    .map_err(|e| inner.err(e))?,
            };
            let idx = record.parts.len();
            let part = inner
                .s3
                .put_part(&data, &upload, idx, part.into())
                .await
                .map_err(|e| inner.err(e))?;
            record.upload = Some(upload);
            record.parts.push(part);
            inner
                .put_partial(&names.partial, &record, Bytes::new())
                .await?;
            Ok(record)
        });
        match result {
            Ok(record) => {
                self.record = record;
                self.dirty = false;
                Ok(())
            }
            Err(e) => {
                self.closed = true;
                Err(e)
            }
        }
    }

    /// Makes the bytes one object and, unless another upload completed the
    /// id first, the blob.
    fn finish(&mut self, total: u64) -> Result<(), BlobError> {
        let tail = Bytes::from(std::mem::take(&mut self.buf));
        let record = std::mem::take(&mut self.record);
        let names = self.names.clone();
        let id = layout::unhex_id(&names.id_hex).ok_or(BlobError::NotFound)?;
        self.bridge.run(move |inner| async move {
            let data = names.data(&record.nonce);
            let made = match record.upload.clone() {
                None => inner.s3.put(&data, tail.into()).await.map(drop),
                Some(upload) => {
                    let mut parts: Vec<PartId> = record.parts.clone();
                    let mut sent = Ok(());
                    if !tail.is_empty() {
                        sent = inner
                            .s3
                            .put_part(&data, &upload, parts.len(), tail.into())
                            .await
                            .map(|part| parts.push(part));
                    }
                    match sent {
                        Ok(()) => inner
                            .s3
                            .complete_multipart(&data, &upload, parts)
                            .await
                            .map(drop),
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = made {
                // A retried request whose first try completed finds the
                // upload gone: the object is there, whole, all the same.
                match inner.s3.head(&data).await {
                    Ok(meta) if meta.size == total => {}
                    _ => return Err(inner.err(e)),
                }
            }
            let manifest = Manifest {
                owner_hex: names.owner_hex.clone(),
                nonce: record.nonce.clone(),
                len: total,
            };
            let outcome = claim(&inner, &id, &manifest).await;
            if matches!(outcome, Err(BlobError::AlreadyExists)) {
                // Lost the race: our object is nobody's.
                inner.delete_quietly(&data).await?;
            }
            // The upload is over either way (a loser can never complete).
            inner.delete_quietly(&names.partial).await?;
            outcome
        })
    }
}

/// Creates the manifest of `id` unless one exists, and says whether it is
/// `ours`: a retried request may meet the manifest its first try created.
///
/// # Errors
/// [`BlobError::AlreadyExists`] when another upload's manifest is there;
/// others when S3 fails (our data object is then kept: a manifest may name
/// it, and the expiry sweep deletes it if none does).
async fn claim(inner: &super::Inner, id: &BlobId, ours: &Manifest) -> Result<(), BlobError> {
    let created = inner.create_manifest(id, ours).await;
    if matches!(created, Ok(true)) {
        return Ok(());
    }
    match inner.manifest(id).await? {
        Some((found, _)) if found == *ours => Ok(()),
        Some(_) => Err(BlobError::AlreadyExists),
        None => Err(created.err().unwrap_or_else(|| {
            BlobError::Io(std::io::Error::other(
                "S3 refused the blob's manifest as existing, then had none; retry the upload",
            ))
        })),
    }
}

impl BlobWriter for S3Writer {
    fn write(&mut self, mut bytes: &[u8]) -> Result<(), BlobError> {
        if self.closed {
            return Err(BlobError::Io(std::io::Error::other(
                "an earlier write of this upload failed: ask the status and resume",
            )));
        }
        while !bytes.is_empty() {
            let room = PART_LEN - self.buf.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            let want = self.buf.len() + now.len();
            if want > self.buf.capacity() {
                // Grow by doubling, never past one part.
                let cap = (self.buf.capacity() * 2).clamp(want, PART_LEN);
                self.buf.reserve_exact(cap - self.buf.len());
            }
            self.buf.extend_from_slice(now);
            self.dirty = true;
            self.guard.set_len(self.len());
            bytes = rest;
            if self.buf.len() == PART_LEN {
                self.flush_part()?;
            }
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        (self.record.parts.len() as u64) * PART_LEN as u64 + self.buf.len() as u64
    }

    fn complete(mut self: Box<Self>, total: u64) -> Result<(), BlobError> {
        if self.closed {
            return Err(BlobError::Io(std::io::Error::other(
                "an earlier write of this upload failed: ask the status and resume",
            )));
        }
        let have = self.len();
        if have != total {
            return Err(BlobError::Incomplete { have, total });
        }
        self.closed = true;
        self.finish(total)
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // An interrupted upload: what status() reports next must be in S3.
        if self.closed || !self.dirty {
            return;
        }
        let tail = Bytes::from(std::mem::take(&mut self.buf));
        let record = std::mem::take(&mut self.record);
        let path: Path = self.names.partial.clone();
        let _ = self
            .bridge
            .run(move |inner| async move { inner.put_partial(&path, &record, tail).await });
    }
}

/// Reads ranges of one complete blob by ranged GETs.
pub(super) struct S3Reader {
    bridge: Bridge,
    data: Path,
    len: u64,
}

impl S3Reader {
    pub(super) fn open(bridge: Bridge, id: &BlobId) -> Result<S3Reader, BlobError> {
        let id = *id;
        let manifest = bridge.run(move |inner| async move { inner.manifest(&id).await })?;
        let (manifest, _) = manifest.ok_or(BlobError::NotFound)?;
        let data = layout::data(
            &bridge.inner.root,
            &manifest.owner_hex,
            &crate::blob::hex(&id),
            &manifest.nonce,
        );
        Ok(S3Reader {
            bridge,
            data,
            len: manifest.len,
        })
    }
}

impl BlobReader for S3Reader {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, BlobError> {
        let end = self.len.min(offset.saturating_add(buf.len() as u64));
        if offset >= end {
            return Ok(0);
        }
        let data = self.data.clone();
        let bytes = self.bridge.run(move |inner| async move {
            inner
                .s3
                .get_range(&data, offset..end)
                .await
                .map_err(|e| inner.err(e))
        })?;
        let n = bytes.len().min(buf.len());
        let (dst, _) = buf.split_at_mut(n);
        dst.copy_from_slice(bytes.get(..n).unwrap_or_default());
        Ok(n)
    }
}
