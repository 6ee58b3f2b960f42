//! The S3 backend's requests, as async methods run on its runtime: records
//! read and written, blobs deleted, the sweeps, and the translation of
//! `object_store` errors into [`BlobError`]s that say what to fix.

use std::collections::HashMap;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};

use super::layout::{self, Manifest, Names, PartialHead, PartialRecord, HEAD_LEN};
use super::{Inner, Writing, WritingGuard};
use crate::blob::{BlobError, BlobId, BlobStatus};

impl Inner {
    /// `e` as a [`BlobError`]: a missing object is [`BlobError::NotFound`],
    /// the rest [`BlobError::Io`] naming the cause and the fix.
    pub(super) fn err(&self, e: object_store::Error) -> BlobError {
        use object_store::Error as E;
        let text = chain(&e);
        let (bucket, endpoint) = (&self.bucket, &self.endpoint);
        let refused = text.contains("InvalidAccessKeyId")
            || text.contains("SignatureDoesNotMatch")
            || text.contains("AccessDenied");
        let message = match &e {
            _ if text.contains("NoSuchBucket") => format!(
                "the S3 bucket {bucket:?} does not exist at {endpoint}: create it, or fix \
                 blob_store.s3_bucket ({text})"
            ),
            E::NotFound { .. } => return BlobError::NotFound,
            E::Unauthenticated { .. } | E::PermissionDenied { .. } => refused_message(self, &text),
            _ if refused => refused_message(self, &text),
            // Without a key the client asked the instance metadata service.
            _ if !self.has_key && text.contains("169.254.169.254") => refused_message(self, &text),
            _ if text.contains("error sending request")
                || text.contains("onnection refused")
                || text.contains("dns error")
                || text.contains("timed out") =>
            {
                format!(
                    "the S3 endpoint {endpoint} is unreachable: check blob_store.s3_endpoint and \
                     the network ({text})"
                )
            }
            _ => format!("an S3 request failed (bucket {bucket:?} at {endpoint}): {text}"),
        };
        BlobError::Io(std::io::Error::other(message))
    }

    /// Lists the prefix once: the bucket exists, the endpoint answers and
    /// the credentials are accepted.
    pub(super) async fn check(&self) -> Result<(), BlobError> {
        let prefix = self.root.clone().join("blobs");
        match self.s3.list_with_delimiter(Some(&prefix)).await {
            Ok(_) => Ok(()),
            Err(e) => Err(match self.err(e) {
                BlobError::NotFound => BlobError::Io(std::io::Error::other(format!(
                    "the S3 bucket {:?} does not exist at {}: create it, or fix \
                     blob_store.s3_bucket",
                    self.bucket, self.endpoint
                ))),
                other => other,
            }),
        }
    }

    /// The manifest of `id` and when it was written, if the blob exists.
    pub(super) async fn manifest(
        &self,
        id: &BlobId,
    ) -> Result<Option<(Manifest, SystemTime)>, BlobError> {
        let path = layout::manifest(&self.root, id);
        let got = match self.s3.get(&path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let written = SystemTime::from(got.meta.last_modified);
        let bytes = got.bytes().await.map_err(|e| self.err(e))?;
        Ok(Some((Manifest::decode(&bytes)?, written)))
    }

    /// The header of the partial record at `path`, if any.
    pub(super) async fn partial_head(&self, path: &Path) -> Result<Option<PartialHead>, BlobError> {
        let options = GetOptions {
            range: Some(GetRange::Bounded(0..HEAD_LEN as u64)),
            ..GetOptions::default()
        };
        let got = match self.s3.get_opts(path, options).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let bytes = got.bytes().await.map_err(|e| self.err(e))?;
        PartialHead::decode(&bytes).map(Some)
    }

    /// The whole partial record at `path` and its tail, if any.
    pub(super) async fn partial(
        &self,
        path: &Path,
    ) -> Result<Option<(PartialRecord, Bytes)>, BlobError> {
        let got = match self.s3.get(path).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        let bytes = got.bytes().await.map_err(|e| self.err(e))?;
        PartialRecord::decode(bytes).map(Some)
    }

    /// Writes the partial record at `path` with `tail`.
    pub(super) async fn put_partial(
        &self,
        path: &Path,
        record: &PartialRecord,
        tail: Bytes,
    ) -> Result<(), BlobError> {
        let payload: PutPayload = record.encode(tail)?.into_iter().collect();
        self.s3
            .put(path, payload)
            .await
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Creates the manifest of `id` unless one exists: `Ok(false)` when one did.
    pub(super) async fn create_manifest(
        &self,
        id: &BlobId,
        manifest: &Manifest,
    ) -> Result<bool, BlobError> {
        let path = layout::manifest(&self.root, id);
        let options = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .s3
            .put_opts(&path, manifest.encode().into(), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.err(e)),
        }
    }

    /// Deletes the object at `path`; one already gone is fine.
    pub(super) async fn delete_quietly(&self, path: &Path) -> Result<(), BlobError> {
        match self.s3.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    /// What `names` holds; `open`: the bytes of its writer open here.
    pub(super) async fn status(
        &self,
        names: &Names,
        open: Option<u64>,
    ) -> Result<BlobStatus, BlobError> {
        if let Some((manifest, _)) = self.manifest(&id_of(names)?).await? {
            return Ok(BlobStatus::Complete(manifest.len));
        }
        if let Some(len) = open {
            return Ok(BlobStatus::Partial(len));
        }
        Ok(match self.partial_head(&names.partial).await? {
            Some(head) => BlobStatus::Partial(head.len),
            None => BlobStatus::Absent,
        })
    }

    pub(super) async fn delete_blob(&self, id: &BlobId) -> Result<(), BlobError> {
        let Some((manifest, _)) = self.manifest(id).await? else {
            return Err(BlobError::NotFound);
        };
        self.delete_quietly(&layout::manifest(&self.root, id))
            .await?;
        let data = layout::data(
            &self.root,
            &manifest.owner_hex,
            &crate::blob::hex(id),
            &manifest.nonce,
        );
        self.delete_quietly(&data).await
    }

    /// Aborts the multipart upload of `owner_hex`'s partial upload of
    /// `id_hex` (if it has one) and deletes its record.
    pub(super) async fn drop_partial(&self, path: &Path) -> Result<(), BlobError> {
        let Some(head) = self.partial_head(path).await? else {
            return Ok(());
        };
        let parts = layout::below(&self.root, "partial", path).unwrap_or_default();
        if let (Some(upload), [owner_hex, id_hex]) = (&head.upload, parts.as_slice()) {
            let data = layout::data(&self.root, owner_hex, id_hex, &head.nonce);
            match self.s3.abort_multipart(&data, upload).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                // Completed meanwhile, or already aborted: nothing to free.
                Err(e) if chain(&e).contains("NoSuchUpload") => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        self.delete_quietly(path).await
    }

    pub(super) async fn sweep_abandoned(
        &self,
        before: SystemTime,
        writing: &Writing,
    ) -> Result<u64, BlobError> {
        let prefix = self.root.clone().join("partial");
        let mut listing = self.s3.list(Some(&prefix));
        let mut swept = 0;
        while let Some(object) = listing.try_next().await.map_err(|e| self.err(e))? {
            if SystemTime::from(object.last_modified) >= before {
                continue;
            }
            // Held while deleting, so no writer opens it meanwhile.
            let Ok(_guard) = WritingGuard::claim(writing, &object.location) else {
                continue;
            };
            self.drop_partial(&object.location).await?;
            swept += 1;
        }
        Ok(swept)
    }

    /// The owner's bytes; `open`: its writers open here (by record path)
    /// and their bytes, which count instead of their records.
    pub(super) async fn usage(
        &self,
        owner_hex: &str,
        mut open: HashMap<String, u64>,
    ) -> Result<u64, BlobError> {
        let mut total = 0u64;
        let complete = self.root.clone().join("data").join(owner_hex);
        let mut listing = self.s3.list(Some(&complete));
        while let Some(object) = listing.try_next().await.map_err(|e| self.err(e))? {
            total = total.saturating_add(object.size);
        }
        let partial = self.root.clone().join("partial").join(owner_hex);
        let mut listing = self.s3.list(Some(&partial));
        while let Some(object) = listing.try_next().await.map_err(|e| self.err(e))? {
            if open.contains_key(object.location.as_ref()) {
                continue;
            }
            if let Some(head) = self.partial_head(&object.location).await? {
                total = total.saturating_add(head.len);
            }
        }
        Ok(open
            .drain()
            .fold(total, |t, (_, len)| t.saturating_add(len)))
    }

    /// Deletes the blobs whose manifest was written before `before` and the
    /// data objects older than that which no manifest names.
    pub(super) async fn sweep_expired(&self, before: SystemTime) -> Result<u64, BlobError> {
        let prefix = self.root.clone().join("data");
        let mut listing = self.s3.list(Some(&prefix));
        let mut swept = 0;
        while let Some(object) = listing.try_next().await.map_err(|e| self.err(e))? {
            if SystemTime::from(object.last_modified) >= before {
                continue;
            }
            let parts = layout::below(&self.root, "data", &object.location).unwrap_or_default();
            let [owner_hex, id_hex, nonce] = parts.as_slice() else {
                continue;
            };
            let Some(id) = layout::unhex_id(id_hex) else {
                continue;
            };
            match self.manifest(&id).await? {
                Some((m, written)) if m.owner_hex == *owner_hex && m.nonce == *nonce => {
                    if written >= before {
                        continue;
                    }
                    self.delete_quietly(&layout::manifest(&self.root, &id))
                        .await?;
                    swept += 1;
                }
                // No manifest names it: left by a crash while completing.
                _ => {}
            }
            self.delete_quietly(&object.location).await?;
        }
        Ok(swept)
    }
}

/// The id of `names` (its hex is ours, so this does not fail).
fn id_of(names: &Names) -> Result<BlobId, BlobError> {
    layout::unhex_id(&names.id_hex).ok_or(BlobError::NotFound)
}

fn refused_message(inner: &Inner, text: &str) -> String {
    if !inner.has_key {
        return format!(
            "no S3 key for bucket {:?} at {}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
             (without them only a cloud instance role can give one) ({text})",
            inner.bucket, inner.endpoint
        );
    }
    format!(
        "S3 at {} refused the credentials for bucket {:?}: set AWS_ACCESS_KEY_ID and \
         AWS_SECRET_ACCESS_KEY to a key that may list, read and write it ({text})",
        inner.endpoint, inner.bucket
    )
}

/// `e` and its sources, one after the other.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}
