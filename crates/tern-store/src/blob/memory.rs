//! The in-memory [`BlobStore`] (tests): complete blobs and partial uploads
//! in maps behind one mutex. Nothing survives the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use super::{BlobError, BlobId, BlobReader, BlobStatus, BlobStore, BlobWriter};

#[derive(Debug, Default)]
struct Inner {
    complete: HashMap<BlobId, Complete>,
    /// Each partial upload's bytes and when it was last written.
    partial: HashMap<(String, BlobId), (Vec<u8>, SystemTime)>,
    /// Uploads with an open writer.
    writing: std::collections::HashSet<(String, BlobId)>,
}

/// A complete blob: its bytes, owner and completion time.
#[derive(Debug)]
struct Complete {
    bytes: Arc<Vec<u8>>,
    owner: String,
    at: SystemTime,
}

/// Blobs in memory. See the module docs.
#[derive(Debug, Default, Clone)]
pub struct MemBlobStore {
    inner: Arc<Mutex<Inner>>,
}

impl MemBlobStore {
    /// An empty store.
    pub fn new() -> MemBlobStore {
        MemBlobStore::default()
    }
}

fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock leaves the maps consistent (every
    // change is one insert or remove), so a poisoned lock is still usable.
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl BlobStore for MemBlobStore {
    fn status(&self, owner: &str, id: &BlobId) -> Result<BlobStatus, BlobError> {
        let inner = lock(&self.inner);
        if let Some(blob) = inner.complete.get(id) {
            return Ok(BlobStatus::Complete(blob.bytes.len() as u64));
        }
        Ok(match inner.partial.get(&(owner.to_owned(), *id)) {
            Some((bytes, _)) => BlobStatus::Partial(bytes.len() as u64),
            None => BlobStatus::Absent,
        })
    }

    fn writer(
        &self,
        owner: &str,
        id: &BlobId,
        offset: u64,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        let mut inner = lock(&self.inner);
        if inner.complete.contains_key(id) {
            return Err(BlobError::AlreadyExists);
        }
        let key = (owner.to_owned(), *id);
        if inner.writing.contains(&key) {
            return Err(BlobError::Busy);
        }
        let have = inner.partial.get(&key).map_or(0, |(b, _)| b.len() as u64);
        if have != offset {
            return Err(BlobError::OffsetMismatch {
                have,
                asked: offset,
            });
        }
        inner
            .partial
            .entry(key.clone())
            .or_insert_with(|| (Vec::new(), SystemTime::now()));
        inner.writing.insert(key.clone());
        Ok(Box::new(MemWriter {
            inner: self.inner.clone(),
            key,
            len: have,
        }))
    }

    fn reader(&self, id: &BlobId) -> Result<Box<dyn BlobReader>, BlobError> {
        let blob = lock(&self.inner)
            .complete
            .get(id)
            .map(|c| c.bytes.clone())
            .ok_or(BlobError::NotFound)?;
        Ok(Box::new(MemReader(blob)))
    }

    fn delete(&self, id: &BlobId) -> Result<(), BlobError> {
        lock(&self.inner)
            .complete
            .remove(id)
            .map(|_| ())
            .ok_or(BlobError::NotFound)
    }

    fn abandon(&self, owner: &str, id: &BlobId) -> Result<(), BlobError> {
        lock(&self.inner).partial.remove(&(owner.to_owned(), *id));
        Ok(())
    }

    fn sweep_abandoned(&self, before: SystemTime) -> Result<u64, BlobError> {
        let mut inner = lock(&self.inner);
        let Inner {
            partial, writing, ..
        } = &mut *inner;
        let old = partial.len();
        partial.retain(|key, (_, written)| *written >= before || writing.contains(key));
        Ok((old - partial.len()) as u64)
    }

    fn usage(&self, owner: &str) -> Result<u64, BlobError> {
        let inner = lock(&self.inner);
        let complete = inner.complete.values().filter(|c| c.owner == owner);
        let partial = inner.partial.iter().filter(|((o, _), _)| o == owner);
        Ok(complete.map(|c| c.bytes.len() as u64).sum::<u64>()
            + partial.map(|(_, (b, _))| b.len() as u64).sum::<u64>())
    }

    fn sweep_expired(&self, before: SystemTime) -> Result<u64, BlobError> {
        let mut inner = lock(&self.inner);
        let old = inner.complete.len();
        inner.complete.retain(|_, c| c.at >= before);
        Ok((old - inner.complete.len()) as u64)
    }
}

struct MemWriter {
    inner: Arc<Mutex<Inner>>,
    key: (String, BlobId),
    len: u64,
}

impl BlobWriter for MemWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        let mut inner = lock(&self.inner);
        // Abandoned meanwhile: the upload is gone.
        let (partial, written) = inner
            .partial
            .get_mut(&self.key)
            .ok_or(BlobError::NotFound)?;
        partial.extend_from_slice(bytes);
        *written = SystemTime::now();
        self.len = partial.len() as u64;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn complete(self: Box<Self>, total: u64) -> Result<(), BlobError> {
        let mut inner = lock(&self.inner);
        let have = inner
            .partial
            .get(&self.key)
            .ok_or(BlobError::NotFound)?
            .0
            .len() as u64;
        if have != total {
            return Err(BlobError::Incomplete { have, total });
        }
        if inner.complete.contains_key(&self.key.1) {
            return Err(BlobError::AlreadyExists);
        }
        let (bytes, _) = inner.partial.remove(&self.key).ok_or(BlobError::NotFound)?;
        let complete = Complete {
            bytes: Arc::new(bytes),
            owner: self.key.0.clone(),
            at: SystemTime::now(),
        };
        inner.complete.insert(self.key.1, complete);
        Ok(())
    }
}

impl Drop for MemWriter {
    fn drop(&mut self) {
        lock(&self.inner).writing.remove(&self.key);
    }
}

struct MemReader(Arc<Vec<u8>>);

impl BlobReader for MemReader {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, BlobError> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let rest = self.0.get(start..).unwrap_or_default();
        let n = rest.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), rest.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }
}
