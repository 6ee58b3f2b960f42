//! The filesystem [`BlobStore`], the default: one file per blob under a
//! root directory (the server uses `<data_dir>/blobs`).
//!
//! Layout: `complete/<hex id>` holds a complete blob;
//! `partial/<hex owner>-<hex id>` an owner's unfinished upload (owner: the
//! UTF-8 user handle in hex, so no name can escape the directory);
//! `owned/<hex owner>/<hex id>` a second hard link to each complete blob,
//! naming its owner (for [`BlobStore::usage`]) with the blob's last write
//! as its completion time (for [`BlobStore::sweep_expired`]). The owner's
//! link is made before the blob's name, so a crash between the two leaves
//! at worst a link counted against its owner until the expiry sweep.
//! Completing fsyncs the partial file, hard-links it into `complete/`
//! (atomic on POSIX, and refused when the name exists, so a blob is never
//! replaced: readers see the whole blob or none), fsyncs `complete/` so the
//! name survives a crash, and then unlinks the partial, before it returns. A dropped writer fsyncs
//! its partial's data, so the length [`BlobStore::status`] reports after a
//! crash is bytes that were really written.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{hex, BlobError, BlobId, BlobReader, BlobStatus, BlobStore, BlobWriter};

/// Longest owner handle, in bytes, that fits a file name in hex.
const MAX_OWNER_BYTES: usize = 100;

/// Blobs as files under one directory. See the module docs.
#[derive(Debug)]
pub struct FsBlobStore {
    complete: PathBuf,
    partial: PathBuf,
    owned: PathBuf,
    /// Partial files with an open writer (one writer per upload).
    writing: Arc<Mutex<HashSet<PathBuf>>>,
}

impl FsBlobStore {
    /// Opens (creating) the store under `root`.
    ///
    /// # Errors
    /// [`BlobError::Io`] when the directories cannot be created.
    pub fn open(root: impl AsRef<Path>) -> Result<FsBlobStore, BlobError> {
        let root = root.as_ref();
        let store = FsBlobStore {
            complete: root.join("complete"),
            partial: root.join("partial"),
            owned: root.join("owned"),
            writing: Arc::default(),
        };
        fs::create_dir_all(&store.complete)?;
        fs::create_dir_all(&store.partial)?;
        fs::create_dir_all(&store.owned)?;
        Ok(store)
    }

    fn complete_path(&self, id: &BlobId) -> PathBuf {
        self.complete.join(hex(id))
    }

    fn partial_path(&self, owner: &str, id: &BlobId) -> Result<PathBuf, BlobError> {
        if owner.len() > MAX_OWNER_BYTES {
            return Err(BlobError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "owner handle too long for a blob file name",
            )));
        }
        Ok(self
            .partial
            .join(format!("{}-{}", hex(owner.as_bytes()), hex(id))))
    }

    /// Deletes `complete/<name>` when it is the same file as `link` (an
    /// owner's link), then the link; a missing file is no error.
    fn delete_owned(&self, link: &Path, name: &std::ffi::OsStr) -> Result<(), BlobError> {
        let blob = self.complete.join(name);
        if let (Some(a), Some(b)) = (file_id(link)?, file_id(&blob)?) {
            if a == b {
                remove_if_present(&blob)?;
            }
        }
        remove_if_present(link)
    }
}

/// The (device, inode) of the file at `path`, `None` when there is none.
fn file_id(path: &Path) -> Result<Option<(u64, u64)>, BlobError> {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Removes the file at `path`; one already gone is fine.
fn remove_if_present(path: &Path) -> Result<(), BlobError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// The sum of the lengths of the files in `dir` whose name starts with
/// `prefix` (a missing directory holds nothing).
fn dir_bytes(dir: &Path, prefix: &str) -> Result<u64, BlobError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut total = 0u64;
    for entry in entries {
        let entry = entry?;
        if !entry.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        match entry.metadata() {
            Ok(m) => total = total.saturating_add(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(total)
}

/// The length of the file at `path`, `None` when there is none.
fn file_len(path: &Path) -> Result<Option<u64>, BlobError> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl BlobStore for FsBlobStore {
    fn status(&self, owner: &str, id: &BlobId) -> Result<BlobStatus, BlobError> {
        if let Some(len) = file_len(&self.complete_path(id))? {
            return Ok(BlobStatus::Complete(len));
        }
        Ok(match file_len(&self.partial_path(owner, id)?)? {
            Some(len) => BlobStatus::Partial(len),
            None => BlobStatus::Absent,
        })
    }

    fn writer(
        &self,
        owner: &str,
        id: &BlobId,
        offset: u64,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        let target = self.complete_path(id);
        if file_len(&target)?.is_some() {
            return Err(BlobError::AlreadyExists);
        }
        let path = self.partial_path(owner, id)?;
        let guard = WritingGuard::claim(&self.writing, &path)?;
        let have = file_len(&path)?.unwrap_or(0);
        if have != offset {
            return Err(BlobError::OffsetMismatch {
                have,
                asked: offset,
            });
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let owned = self.owned.join(hex(owner.as_bytes()));
        Ok(Box::new(FsWriter {
            owned_link: owned.join(hex(id)),
            owned,
            _guard: guard,
            file: Some(file),
            path,
            target,
            dir: self.complete.clone(),
            len: have,
        }))
    }

    fn reader(&self, id: &BlobId) -> Result<Box<dyn BlobReader>, BlobError> {
        let file = match File::open(self.complete_path(id)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::NotFound),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        Ok(Box::new(FsReader { file, len }))
    }

    fn delete(&self, id: &BlobId) -> Result<(), BlobError> {
        let found = match fs::remove_file(self.complete_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::NotFound),
            Err(e) => Err(e.into()),
        };
        // The owner's link, so the bytes leave its usage.
        let name = hex(id);
        for owner in fs::read_dir(&self.owned)? {
            remove_if_present(&owner?.path().join(&name))?;
        }
        found
    }

    fn usage(&self, owner: &str) -> Result<u64, BlobError> {
        let hex_owner = hex(owner.as_bytes());
        let complete = dir_bytes(&self.owned.join(&hex_owner), "")?;
        let partial = dir_bytes(&self.partial, &format!("{hex_owner}-"))?;
        Ok(complete.saturating_add(partial))
    }

    fn sweep_expired(&self, before: std::time::SystemTime) -> Result<u64, BlobError> {
        let mut swept = 0;
        for owner in fs::read_dir(&self.owned)? {
            for link in fs::read_dir(owner?.path())? {
                let link = link?;
                let modified = match link.metadata().and_then(|m| m.modified()) {
                    Ok(t) => t,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e.into()),
                };
                if modified < before {
                    self.delete_owned(&link.path(), &link.file_name())?;
                    swept += 1;
                }
            }
        }
        Ok(swept)
    }

    fn sweep_abandoned(&self, before: std::time::SystemTime) -> Result<u64, BlobError> {
        let mut swept = 0;
        for entry in fs::read_dir(&self.partial)? {
            let path = entry?.path();
            let modified = match fs::metadata(&path).and_then(|m| m.modified()) {
                Ok(t) => t,
                // Gone meanwhile (completed or abandoned): nothing to do.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            if modified >= before {
                continue;
            }
            // Held while deleting, so no writer opens it meanwhile.
            let Ok(_guard) = WritingGuard::claim(&self.writing, &path) else {
                continue;
            };
            match fs::remove_file(&path) {
                Ok(()) => swept += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(swept)
    }

    fn abandon(&self, owner: &str, id: &BlobId) -> Result<(), BlobError> {
        match fs::remove_file(self.partial_path(owner, id)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

/// Marks a partial file as written to until dropped.
struct WritingGuard {
    set: Arc<Mutex<HashSet<PathBuf>>>,
    path: PathBuf,
}

impl WritingGuard {
    fn claim(set: &Arc<Mutex<HashSet<PathBuf>>>, path: &Path) -> Result<WritingGuard, BlobError> {
        let mut writing = set.lock().unwrap_or_else(|e| e.into_inner());
        if !writing.insert(path.to_owned()) {
            return Err(BlobError::Busy);
        }
        Ok(WritingGuard {
            set: set.clone(),
            path: path.to_owned(),
        })
    }
}

impl Drop for WritingGuard {
    fn drop(&mut self) {
        let mut writing = self.set.lock().unwrap_or_else(|e| e.into_inner());
        writing.remove(&self.path);
    }
}

struct FsWriter {
    /// Released only after `Drop::drop` synced the file (fields drop after it).
    _guard: WritingGuard,
    /// `None` once completed.
    file: Option<File>,
    path: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    /// The owner's directory under `owned/` and the link to make there.
    owned: PathBuf,
    owned_link: PathBuf,
    len: u64,
}

impl BlobWriter for FsWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        let file = self.file.as_mut().ok_or(BlobError::NotFound)?;
        file.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn complete(mut self: Box<Self>, total: u64) -> Result<(), BlobError> {
        if self.len != total {
            return Err(BlobError::Incomplete {
                have: self.len,
                total,
            });
        }
        let file = self.file.take().ok_or(BlobError::NotFound)?;
        file.sync_all()?;
        drop(file);
        // The owner's link first (a stale one of a crash is replaced).
        fs::create_dir_all(&self.owned)?;
        remove_if_present(&self.owned_link)?;
        fs::hard_link(&self.path, &self.owned_link)?;
        // A hard link is created atomically and never replaces a blob that
        // another upload completed meanwhile (a rename would).
        match fs::hard_link(&self.path, &self.target) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                remove_if_present(&self.owned_link)?;
                return Err(BlobError::AlreadyExists);
            }
            other => other?,
        }
        File::open(&self.owned)?.sync_all()?;
        File::open(&self.dir)?.sync_all()?;
        fs::remove_file(&self.path)?;
        Ok(())
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        // An interrupted upload: what status() reports must be on disk.
        if let Some(file) = self.file.take() {
            let _ = file.sync_data();
        }
    }
}

struct FsReader {
    file: File,
    len: u64,
}

impl BlobReader for FsReader {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize, BlobError> {
        if offset >= self.len {
            return Ok(0);
        }
        self.file.seek(SeekFrom::Start(offset))?;
        let n = self.file.read(buf)?;
        Ok(n)
    }
}
