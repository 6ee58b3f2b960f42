//! The embedded [`Store`] backend: [`FjallStore`] on fjall 3 (one LSM keyspace
//! per table, one shared journal) with a group-commit thread that owns fsync.
//!
//! Owns: the on-disk key and value encodings, [`OpenError`], the
//! `tern-commit` thread and the per-call atomicity rules of the trait.
//!
//! # Layout (all integers big-endian so range scans are ordered)
//! | keyspace             | key                                          | value              |
//! |----------------------|----------------------------------------------|--------------------|
//! | `devices`            | user¹ · device u32                           | device record      |
//! | `conversations`      | conversation u64                             | conversation record|
//! | `heads`              | conversation u64                             | head seq u64       |
//! | `unique_keys`        | 0x01 · unique key                            | conversation u64   |
//! | `user_conversations` | user¹ · conversation u64                     | empty              |
//! | `messages`           | conversation u64 · seq u64                   | message record     |
//! | `idempotency`        | conversation u64 · user¹ · device u32 · cmid u64 | seq u64        |
//! | `expiry`             | expires_at_ms u64 · conversation u64 · seq u64 | empty            |
//! | `cursors`            | user¹ · device u32 · conversation u64        | seq u64            |
//! | `accounts`           | user¹                                        | highest device id ever assigned u32 |
//! | `prekey_bundles`     | user¹ · device u32                           | bundle record²     |
//! | `one_time_prekeys`   | user¹ · device u32 · prekey id u32           | public key (32 bytes) |
//! | `key_packages`       | user¹ · device u32 · counter u64             | KeyPackage bytes   |
//! | `key_package_meta`   | user¹ · device u32                           | pool record³       |
//! | `group_epochs`       | conversation u64                             | epoch u64          |
//! | `group_infos`        | conversation u64                             | GroupInfo bytes    |
//!
//! ¹ a user is written as one length byte followed by its bytes, so a user's
//! keys form one prefix that no other user's keys share.
//! ² identity key and signature, signed prekey, last-resort prekey, KEM
//! prekey (each optional) and the number of one-time prekeys in the pool.
//! ³ the next KeyPackage counter, the number in the pool and the optional
//! last-resort KeyPackage.
//!
//! An account exists while it has a row in `accounts` or (stores written
//! before that table existed) at least one row in `devices`. Revoking devices
//! never removes it, so a handle is never freed and device ids are never
//! reused. The pool counters in records ² and ³ change in the same batch as
//! the pool rows, under the device's stripe lock.
//!
//! # Durability
//! Every call commits one fjall write batch, which fjall writes to the journal
//! and flushes to the OS (`PersistMode::Buffer`) before returning: a process
//! crash keeps it, power loss may not. [`Store::persist`] asks the commit
//! thread, which drains every waiting request, makes the journal durable once
//! (a `Buffer` persist, then `fdatasync` of the journal files through its own
//! handles, so fjall's journal lock is never held across the sync and writers
//! on shard threads do not stall; see `JournalSync`) and answers them all.
//!
//! # Recovery (fjall 3.1 semantics)
//! Opening replays the journal point-in-time: a torn or unreadable entry (bad
//! tag, bad trailer, short read) ends replay there and fjall truncates the
//! file, dropping every later batch, persisted ones included; a checksum
//! mismatch fails the open ([`OpenError::Corrupt`]). Batch-start seqnos are
//! not checksummed, so damage there can roll a key (e.g. a head) back to an
//! older value: `append_message` refuses to overwrite a stored seq, so such a
//! rollback surfaces as a [`BackendError`] instead of a replaced message.
//! Engine panics during open (debug assertions on damaged input) become
//! [`OpenError::Engine`].
//!
//! # Blocking
//! Reads and batch commits run inline on the caller's thread: they touch
//! memtables and do one buffered `write(2)`. While the commit thread syncs, it
//! holds fjall's journal lock, so a concurrent batch commit waits for that sync.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use tokio::sync::oneshot;

use tern_store::{
    AppendError, AppendOutcome, BackendError, ClaimedKeyPackage, ClaimedPrekeys, ConversationId,
    ConversationKind, ConversationRecord, CreateAccountError, CreateConversationError,
    CreateOutcome, DeviceId, DeviceRecord, EpochOutcome, MembersError, Prekey, PrekeyUpload, Seq,
    SignedPrekey, Store, StoredMessage, UserId, KEY_POOL_CAP,
};

/// Sync mode of the group commit. The journal is preallocated and only ever
/// appended to, so `fdatasync` (which still syncs size and block allocation)
/// is enough; fjall fsyncs the directory itself when it creates journals.
const COMMIT_MODE: PersistMode = PersistMode::SyncData;

/// Value of set-like tables.
const EMPTY: [u8; 0] = [];

/// Number of striped locks serialising read-modify-write calls per conversation.
const STRIPES: usize = 64;

/// Why [`FjallStore::open`] failed. Each message says what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("data directory {path} is in use by another process (is another tern server running on it?); stop that process or choose another data directory")]
    Locked { path: PathBuf },
    #[error("cannot open data directory {path}: {source}; check that the path is a directory writable by this user and that the disk has free space")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("data directory {path} is corrupt ({detail}); restore it from a backup, or move it aside to start with an empty store")]
    Corrupt { path: PathBuf, detail: String },
    #[error("data directory {path} was written in an incompatible storage format ({detail}); open it with the tern version that wrote it")]
    IncompatibleVersion { path: PathBuf, detail: String },
    #[error("storage engine failed while opening {path}: {detail}; check the logs and the disk, then restart")]
    Engine { path: PathBuf, detail: String },
}

/// The embedded store. Cloning is cheap (one `Arc`); the database, the commit
/// thread and the journal are shut down (with a last sync) when the last
/// clone is dropped.
#[derive(Clone)]
pub struct FjallStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Database,
    ks: Spaces,
    /// Serialises the insert-if-absent of accounts and conversations, and
    /// every change to a user's set of devices. Taken before a stripe, never
    /// while holding one.
    create_lock: Mutex<()>,
    /// Serialise read-modify-write calls that touch one conversation, or one
    /// device's key material (keyed by a hash of user and device).
    stripes: Vec<Mutex<()>>,
    /// Declared last so that it drops (joins the thread) after the handles.
    committer: Committer,
}

/// One handle per table; see the module docs for the layout.
struct Spaces {
    devices: Keyspace,
    convs: Keyspace,
    heads: Keyspace,
    uniq: Keyspace,
    user_convs: Keyspace,
    msgs: Keyspace,
    idem: Keyspace,
    expiry: Keyspace,
    cursors: Keyspace,
    accounts: Keyspace,
    bundles: Keyspace,
    one_time: Keyspace,
    key_packages: Keyspace,
    kp_meta: Keyspace,
    epochs: Keyspace,
    group_infos: Keyspace,
}

impl Spaces {
    fn open(db: &Database) -> fjall::Result<Self> {
        let ks = |name: &str| db.keyspace(name, KeyspaceCreateOptions::default);
        Ok(Self {
            devices: ks("devices")?,
            convs: ks("conversations")?,
            heads: ks("heads")?,
            uniq: ks("unique_keys")?,
            user_convs: ks("user_conversations")?,
            msgs: ks("messages")?,
            idem: ks("idempotency")?,
            expiry: ks("expiry")?,
            cursors: ks("cursors")?,
            accounts: ks("accounts")?,
            bundles: ks("prekey_bundles")?,
            one_time: ks("one_time_prekeys")?,
            key_packages: ks("key_packages")?,
            kp_meta: ks("key_package_meta")?,
            epochs: ks("group_epochs")?,
            group_infos: ks("group_infos")?,
        })
    }
}

impl FjallStore {
    /// Opens (creating if needed) the store in directory `path` and starts
    /// its commit thread. Recovers the journal: a torn last batch is dropped;
    /// damage fjall cannot repair is reported as [`OpenError::Corrupt`].
    pub fn open(path: &Path) -> Result<FjallStore, OpenError> {
        let (db, ks) = guarded_open(path)?;
        let committer =
            Committer::spawn(db.clone(), path.to_path_buf()).map_err(|source| OpenError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let stripes = (0..STRIPES).map(|_| Mutex::new(())).collect();
        let inner = Inner {
            db,
            ks,
            create_lock: Mutex::new(()),
            stripes,
            committer,
        };
        Ok(FjallStore {
            inner: Arc::new(inner),
        })
    }

    /// `(fsyncs done, persist requests served)` by the commit thread so far;
    /// the final sync at shutdown is not counted.
    pub fn commit_stats(&self) -> (u64, u64) {
        let s = &self.inner.committer.stats;
        (
            s.fsyncs.load(Ordering::SeqCst),
            s.served.load(Ordering::SeqCst),
        )
    }
}

/// Opens the database and keyspaces, turning engine panics into errors.
fn guarded_open(path: &Path) -> Result<(Database, Spaces), OpenError> {
    let attempt = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let db = Database::builder(path).open()?;
        let ks = Spaces::open(&db)?;
        Ok::<_, fjall::Error>((db, ks))
    }));
    match attempt {
        Ok(Ok(opened)) => Ok(opened),
        Ok(Err(e)) => Err(classify(path, e)),
        Err(panic) => Err(OpenError::Engine {
            path: path.to_path_buf(),
            detail: format!("panicked: {}", panic_text(panic.as_ref())),
        }),
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

fn classify(path: &Path, e: fjall::Error) -> OpenError {
    use fjall::{Error as E, LsmError as L};
    let path = path.to_path_buf();
    match e {
        E::Locked => OpenError::Locked { path },
        E::Io(source) | E::Storage(L::Io(source)) => OpenError::Io { path, source },
        E::InvalidVersion(v) => OpenError::IncompatibleVersion {
            path,
            detail: format!("{v:?}"),
        },
        E::Storage(L::InvalidVersion(v)) => OpenError::IncompatibleVersion {
            path,
            detail: format!("table version {v}"),
        },
        E::Poisoned | E::KeyspaceDeleted => OpenError::Engine {
            path,
            detail: e.to_string(),
        },
        other => OpenError::Corrupt {
            path,
            detail: other.to_string(),
        },
    }
}

// ---------------------------------------------------------------------------
// Group commit
// ---------------------------------------------------------------------------

type Waiter = oneshot::Sender<Result<(), BackendError>>;

#[derive(Default)]
struct CommitStats {
    fsyncs: AtomicU64,
    served: AtomicU64,
}

/// The `tern-commit` thread: the only place that syncs the journal.
struct Committer {
    tx: Option<mpsc::Sender<Waiter>>,
    handle: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

impl Committer {
    fn spawn(db: Database, dir: PathBuf) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let stats = Arc::new(CommitStats::default());
        let thread_stats = Arc::clone(&stats);
        let handle = std::thread::Builder::new()
            .name("tern-commit".to_string())
            .spawn(move || commit_loop(&db, &mut JournalSync::new(dir), &rx, &thread_stats))?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
            stats,
        })
    }

    /// Queues one persist request; the receiver completes after its sync.
    fn request(&self) -> Result<oneshot::Receiver<Result<(), BackendError>>, BackendError> {
        let (done, wait) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or_else(committer_gone)?;
        tx.send(done).map_err(|_| committer_gone())?;
        Ok(wait)
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(handle) = self.handle.take() {
            if handle.join().is_err() {
                tracing::error!("tern-commit thread panicked");
            }
        }
    }
}

fn committer_gone() -> BackendError {
    BackendError("the journal commit thread (tern-commit) is not running".to_string())
}

/// Serves requests until every sender is gone, then syncs once more.
/// Makes the journal durable WITHOUT holding fjall's journal lock for the
/// fsync. `Database::persist(SyncData)` keeps that lock for the whole sync,
/// which stalls every shard thread that commits a batch meanwhile (measured:
/// most shard sleeps under load sat in `Journal::get_writer`). Instead: a
/// `Buffer` persist (flush to the OS; the lock is held for one write at most),
/// then `fdatasync` of the journal files through our own handles. fsync acts
/// on the inode, so it covers bytes fjall wrote through its own handle. Sealed
/// journals were `SyncAll`ed by fjall when it rotated them; the directory is
/// synced whenever the set of journal files changes. If no `*.jnl` file is
/// found (another fjall layout) this falls back to `Database::persist`.
struct JournalSync {
    dir: PathBuf,
    files: BTreeMap<PathBuf, std::fs::File>,
}

impl JournalSync {
    fn new(dir: PathBuf) -> Self {
        JournalSync {
            dir,
            files: BTreeMap::new(),
        }
    }

    fn sync(&mut self, db: &Database) -> Result<(), String> {
        db.persist(PersistMode::Buffer).map_err(|e| e.to_string())?;
        let names = self.journal_names().map_err(|e| e.to_string())?;
        if names.is_empty() {
            return db.persist(COMMIT_MODE).map_err(|e| e.to_string());
        }
        if names.iter().ne(self.files.keys()) {
            self.reopen(&names).map_err(|e| e.to_string())?;
        }
        for file in self.files.values() {
            file.sync_data().map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn journal_names(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
            .collect();
        names.sort();
        Ok(names)
    }

    fn reopen(&mut self, names: &[PathBuf]) -> std::io::Result<()> {
        self.files.retain(|path, _| names.contains(path));
        for name in names {
            if !self.files.contains_key(name) {
                self.files.insert(name.clone(), std::fs::File::open(name)?);
            }
        }
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

fn commit_loop(
    db: &Database,
    journals: &mut JournalSync,
    rx: &mpsc::Receiver<Waiter>,
    stats: &CommitStats,
) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let result = journals.sync(db);
        stats.fsyncs.fetch_add(1, Ordering::SeqCst);
        stats
            .served
            .fetch_add(waiters.len() as u64, Ordering::SeqCst);
        for waiter in waiters {
            let reply = result
                .clone()
                .map_err(|e| BackendError(format!("journal sync failed: {e}")));
            // A caller that gave up waiting is not an error.
            let _ = waiter.send(reply);
        }
    }
    if let Err(e) = db.persist(COMMIT_MODE) {
        tracing::error!("final journal sync at shutdown failed: {e}");
    }
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

mod keys {
    use super::{BackendError, ConversationId, DeviceId, Seq};

    /// One length byte, then the user's bytes.
    pub fn user(user: &str) -> Result<Vec<u8>, BackendError> {
        let len = u8::try_from(user.len()).map_err(|_| {
            BackendError(format!(
                "user handle of {} bytes is too long to store",
                user.len()
            ))
        })?;
        let mut key = Vec::with_capacity(1 + user.len() + 16);
        key.push(len);
        key.extend_from_slice(user.as_bytes());
        Ok(key)
    }

    pub fn device(user: &str, device: DeviceId) -> Result<Vec<u8>, BackendError> {
        let mut key = self::user(user)?;
        key.extend_from_slice(&device.to_be_bytes());
        Ok(key)
    }

    pub fn conv(id: ConversationId) -> [u8; 8] {
        id.to_be_bytes()
    }

    pub fn unique(unique: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(1 + unique.len());
        key.push(1);
        key.extend_from_slice(unique);
        key
    }

    pub fn user_conv(user: &str, id: ConversationId) -> Result<Vec<u8>, BackendError> {
        let mut key = self::user(user)?;
        key.extend_from_slice(&id.to_be_bytes());
        Ok(key)
    }

    pub fn msg(id: ConversationId, seq: Seq) -> [u8; 16] {
        let mut key = [0u8; 16];
        let (a, b) = key.split_at_mut(8);
        a.copy_from_slice(&id.to_be_bytes());
        b.copy_from_slice(&seq.to_be_bytes());
        key
    }

    pub fn idem(
        id: ConversationId,
        user: &str,
        device: DeviceId,
        cmid: u64,
    ) -> Result<Vec<u8>, BackendError> {
        let mut key = id.to_be_bytes().to_vec();
        key.extend_from_slice(&self::user(user)?);
        key.extend_from_slice(&device.to_be_bytes());
        key.extend_from_slice(&cmid.to_be_bytes());
        Ok(key)
    }

    pub fn expiry(expires_at_ms: u64, id: ConversationId, seq: Seq) -> [u8; 24] {
        let mut key = [0u8; 24];
        let (a, rest) = key.split_at_mut(8);
        let (b, c) = rest.split_at_mut(8);
        a.copy_from_slice(&expires_at_ms.to_be_bytes());
        b.copy_from_slice(&id.to_be_bytes());
        c.copy_from_slice(&seq.to_be_bytes());
        key
    }

    pub fn cursor(
        user: &str,
        device: DeviceId,
        id: ConversationId,
    ) -> Result<Vec<u8>, BackendError> {
        let mut key = self::device(user, device)?;
        key.extend_from_slice(&id.to_be_bytes());
        Ok(key)
    }

    pub fn prekey(user: &str, device: DeviceId, id: u32) -> Result<Vec<u8>, BackendError> {
        let mut key = self::device(user, device)?;
        key.extend_from_slice(&id.to_be_bytes());
        Ok(key)
    }

    pub fn key_package(
        user: &str,
        device: DeviceId,
        counter: u64,
    ) -> Result<Vec<u8>, BackendError> {
        let mut key = self::device(user, device)?;
        key.extend_from_slice(&counter.to_be_bytes());
        Ok(key)
    }

    /// The big-endian u32 at `offset` of `bytes`.
    pub fn u32_at(bytes: &[u8], offset: usize, what: &str) -> Result<u32, BackendError> {
        bytes
            .get(offset..offset.saturating_add(4))
            .and_then(|s| <[u8; 4]>::try_from(s).ok())
            .map(u32::from_be_bytes)
            .ok_or_else(|| {
                BackendError(format!(
                    "corrupt {what}: expected 4 bytes at offset {offset} of {}",
                    bytes.len()
                ))
            })
    }

    /// The big-endian u32 that ends `bytes`.
    pub fn u32_tail(bytes: &[u8], what: &str) -> Result<u32, BackendError> {
        u32_at(bytes, bytes.len().saturating_sub(4), what)
    }

    /// The big-endian u64 at `offset` of `bytes`.
    pub fn u64_at(bytes: &[u8], offset: usize, what: &str) -> Result<u64, BackendError> {
        bytes
            .get(offset..offset.saturating_add(8))
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| {
                BackendError(format!(
                    "corrupt {what}: expected 8 bytes at offset {offset} of {}",
                    bytes.len()
                ))
            })
    }

    /// The big-endian u64 that ends `bytes`.
    pub fn u64_tail(bytes: &[u8], what: &str) -> Result<u64, BackendError> {
        u64_at(bytes, bytes.len().saturating_sub(8), what)
    }
}

// ---------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------

mod codec {
    use super::{
        BackendError, Bytes, ConversationKind, ConversationRecord, DeviceRecord, SignedPrekey,
        StoredMessage,
    };
    use super::{ConversationId, Seq};

    /// First byte of every record, bumped when a layout changes.
    const VERSION: u8 = 1;

    struct Enc(Vec<u8>);

    impl Enc {
        fn new(capacity: usize) -> Self {
            let mut buf = Vec::with_capacity(capacity + 1);
            buf.push(VERSION);
            Enc(buf)
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u64(mut self, v: u64) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        /// u32 length, then the bytes (values are far below 4 GiB).
        fn bytes(self, v: &[u8]) -> Self {
            let len = u32::try_from(v.len()).unwrap_or(u32::MAX);
            let mut this = self.u32(len);
            this.0.extend_from_slice(v);
            this
        }
    }

    struct Dec<'a> {
        buf: &'a [u8],
        what: &'static str,
    }

    impl<'a> Dec<'a> {
        fn new(buf: &'a [u8], what: &'static str) -> Result<Self, BackendError> {
            let mut dec = Dec { buf, what };
            match dec.u8()? {
                VERSION => Ok(dec),
                v => Err(dec.corrupt(&format!("unknown record version {v}"))),
            }
        }
        fn corrupt(&self, why: &str) -> BackendError {
            BackendError(format!("corrupt {} record: {why}", self.what))
        }
        fn take(&mut self, n: usize) -> Result<&'a [u8], BackendError> {
            let (head, rest) = self
                .buf
                .split_at_checked(n)
                .ok_or_else(|| self.corrupt("truncated"))?;
            self.buf = rest;
            Ok(head)
        }
        fn array<const N: usize>(&mut self) -> Result<[u8; N], BackendError> {
            let bytes = self.take(N)?;
            <[u8; N]>::try_from(bytes).map_err(|_| self.corrupt("truncated"))
        }
        fn u8(&mut self) -> Result<u8, BackendError> {
            Ok(u8::from_be_bytes(self.array()?))
        }
        fn u32(&mut self) -> Result<u32, BackendError> {
            Ok(u32::from_be_bytes(self.array()?))
        }
        fn u64(&mut self) -> Result<u64, BackendError> {
            Ok(u64::from_be_bytes(self.array()?))
        }
        fn bytes(&mut self) -> Result<&'a [u8], BackendError> {
            let len = usize::try_from(self.u32()?).map_err(|_| self.corrupt("length overflow"))?;
            self.take(len)
        }
        fn string(&mut self) -> Result<String, BackendError> {
            let bytes = self.bytes()?;
            String::from_utf8(bytes.to_vec()).map_err(|_| self.corrupt("string is not UTF-8"))
        }
        fn finish(&self) -> Result<(), BackendError> {
            match self.buf.is_empty() {
                true => Ok(()),
                false => Err(self.corrupt("trailing bytes")),
            }
        }
    }

    pub fn device(d: &DeviceRecord) -> Vec<u8> {
        Enc::new(d.name.len() + 52)
            .u32(d.device)
            .bytes(d.name.as_bytes())
            .bytes(&d.public_key)
            .u64(d.created_ms)
            .0
    }

    pub fn decode_device(buf: &[u8]) -> Result<DeviceRecord, BackendError> {
        let mut dec = Dec::new(buf, "device")?;
        let device = dec.u32()?;
        let name = dec.string()?;
        let public_key = <[u8; 32]>::try_from(dec.bytes()?)
            .map_err(|_| dec.corrupt("public key is not 32 bytes"))?;
        let created_ms = dec.u64()?;
        dec.finish()?;
        Ok(DeviceRecord {
            device,
            name,
            public_key,
            created_ms,
        })
    }

    fn kind_tag(kind: ConversationKind) -> u8 {
        match kind {
            ConversationKind::Direct => 1,
            ConversationKind::Group => 2,
            ConversationKind::NoteToSelf => 3,
        }
    }

    fn tag_kind(tag: u8) -> Option<ConversationKind> {
        match tag {
            1 => Some(ConversationKind::Direct),
            2 => Some(ConversationKind::Group),
            3 => Some(ConversationKind::NoteToSelf),
            _ => None,
        }
    }

    /// Everything but the id (the key) and the head (its own table).
    pub fn conversation(c: &ConversationRecord) -> Vec<u8> {
        let count = u32::try_from(c.members.len()).unwrap_or(u32::MAX);
        let mut enc = Enc::new(64 + c.members.len() * 16)
            .u8(kind_tag(c.kind))
            .bytes(c.creator.as_bytes())
            .u64(c.created_ms)
            .u32(count);
        for member in &c.members {
            enc = enc.bytes(member.as_bytes());
        }
        enc.0
    }

    pub fn decode_conversation(
        id: ConversationId,
        head_seq: Seq,
        buf: &[u8],
    ) -> Result<ConversationRecord, BackendError> {
        let mut dec = Dec::new(buf, "conversation")?;
        let kind = tag_kind(dec.u8()?).ok_or_else(|| dec.corrupt("unknown conversation kind"))?;
        let creator = dec.string()?;
        let created_ms = dec.u64()?;
        let count = dec.u32()?;
        let mut members = std::collections::BTreeSet::new();
        for _ in 0..count {
            members.insert(dec.string()?);
        }
        dec.finish()?;
        Ok(ConversationRecord {
            id,
            kind,
            creator,
            members,
            created_ms,
            head_seq,
        })
    }

    /// Everything but the conversation id and seq (the key).
    pub fn message(m: &StoredMessage) -> Vec<u8> {
        let mut enc = Enc::new(64 + m.sender_user.len() + m.payload.len())
            .bytes(m.sender_user.as_bytes())
            .u32(m.sender_device)
            .u64(m.client_message_id)
            .u64(m.server_time_ms)
            .u64(m.expires_at_ms)
            .u32(m.flags);
        enc.0.extend_from_slice(&m.payload);
        enc.0
    }

    /// A device's key-directory record (`prekey_bundles`).
    #[derive(Default)]
    pub struct Bundle {
        pub identity: Option<([u8; 32], [u8; 64])>,
        pub signed: Option<SignedPrekey>,
        pub last_resort: Option<SignedPrekey>,
        pub kem: Option<Bytes>,
        /// One-time prekeys in the pool.
        pub one_time: u32,
    }

    /// A device's KeyPackage pool record (`key_package_meta`).
    #[derive(Default)]
    pub struct KeyPackagePool {
        /// Counter of the next KeyPackage added (FIFO order of the pool).
        pub next: u64,
        /// KeyPackages in the pool.
        pub count: u32,
        pub last_resort: Option<Bytes>,
    }

    impl Enc {
        fn raw(mut self, v: &[u8]) -> Self {
            self.0.extend_from_slice(v);
            self
        }
        fn flag(self, present: bool) -> Self {
            self.u8(u8::from(present))
        }
        fn signed(self, key: Option<&SignedPrekey>) -> Self {
            match key {
                None => self.flag(false),
                Some(k) => self.flag(true).u32(k.id).raw(&k.public).raw(&k.signature),
            }
        }
        fn opt_bytes(self, v: Option<&Bytes>) -> Self {
            match v {
                None => self.flag(false),
                Some(v) => self.flag(true).bytes(v),
            }
        }
    }

    impl Dec<'_> {
        fn flag(&mut self) -> Result<bool, BackendError> {
            match self.u8()? {
                0 => Ok(false),
                1 => Ok(true),
                v => Err(self.corrupt(&format!("presence flag is {v}, not 0 or 1"))),
            }
        }
        fn signed(&mut self) -> Result<Option<SignedPrekey>, BackendError> {
            if !self.flag()? {
                return Ok(None);
            }
            Ok(Some(SignedPrekey {
                id: self.u32()?,
                public: self.array()?,
                signature: self.array()?,
            }))
        }
        fn opt_bytes(&mut self) -> Result<Option<Bytes>, BackendError> {
            if !self.flag()? {
                return Ok(None);
            }
            Ok(Some(Bytes::copy_from_slice(self.bytes()?)))
        }
    }

    pub fn bundle(b: &Bundle) -> Vec<u8> {
        let kem_len = b.kem.as_ref().map_or(0, Bytes::len);
        let mut enc = Enc::new(320 + kem_len);
        enc = match &b.identity {
            None => enc.flag(false),
            Some((key, signature)) => enc.flag(true).raw(key).raw(signature),
        };
        enc.signed(b.signed.as_ref())
            .signed(b.last_resort.as_ref())
            .opt_bytes(b.kem.as_ref())
            .u32(b.one_time)
            .0
    }

    pub fn decode_bundle(buf: &[u8]) -> Result<Bundle, BackendError> {
        let mut dec = Dec::new(buf, "prekey bundle")?;
        let identity = match dec.flag()? {
            false => None,
            true => Some((dec.array()?, dec.array()?)),
        };
        let bundle = Bundle {
            identity,
            signed: dec.signed()?,
            last_resort: dec.signed()?,
            kem: dec.opt_bytes()?,
            one_time: dec.u32()?,
        };
        dec.finish()?;
        Ok(bundle)
    }

    pub fn key_package_pool(p: &KeyPackagePool) -> Vec<u8> {
        let len = p.last_resort.as_ref().map_or(0, Bytes::len);
        Enc::new(32 + len)
            .u64(p.next)
            .u32(p.count)
            .opt_bytes(p.last_resort.as_ref())
            .0
    }

    pub fn decode_key_package_pool(buf: &[u8]) -> Result<KeyPackagePool, BackendError> {
        let mut dec = Dec::new(buf, "key package pool")?;
        let pool = KeyPackagePool {
            next: dec.u64()?,
            count: dec.u32()?,
            last_resort: dec.opt_bytes()?,
        };
        dec.finish()?;
        Ok(pool)
    }

    pub fn decode_message(
        conversation_id: ConversationId,
        seq: Seq,
        buf: &[u8],
    ) -> Result<StoredMessage, BackendError> {
        let mut dec = Dec::new(buf, "message")?;
        Ok(StoredMessage {
            conversation_id,
            seq,
            sender_user: dec.string()?,
            sender_device: dec.u32()?,
            client_message_id: dec.u64()?,
            server_time_ms: dec.u64()?,
            expires_at_ms: dec.u64()?,
            flags: dec.u32()?,
            payload: Bytes::copy_from_slice(dec.buf),
        })
    }
}

// ---------------------------------------------------------------------------
// Synchronous implementation
// ---------------------------------------------------------------------------

/// Adds what was being done to a fjall error.
trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, BackendError>;
}

impl<T> Ctx<T> for fjall::Result<T> {
    fn ctx(self, what: &str) -> Result<T, BackendError> {
        self.map_err(|e| BackendError(format!("{what}: {e}")))
    }
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    // The mutexes guard no data, so a poisoned one is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    fn stripe(&self, id: ConversationId) -> MutexGuard<'_, ()> {
        let index = (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % STRIPES;
        // `index < STRIPES == stripes.len()`, so the fallback is never taken.
        lock(self.stripes.get(index).unwrap_or(&self.create_lock))
    }

    fn create_account(&self, user: &str, first: &DeviceRecord) -> Result<(), CreateAccountError> {
        let _guard = lock(&self.create_lock);
        if self.highest_device(user)?.is_some() {
            return Err(CreateAccountError::UserExists(user.to_string()));
        }
        let mut batch = self.db.batch();
        batch.insert(
            &self.ks.devices,
            keys::device(user, first.device)?,
            codec::device(first),
        );
        batch.insert(
            &self.ks.accounts,
            keys::user(user)?,
            first.device.to_be_bytes(),
        );
        batch.commit().ctx("writing account")?;
        Ok(())
    }

    fn device(&self, user: &str, device: DeviceId) -> Result<Option<DeviceRecord>, BackendError> {
        let value = self
            .ks
            .devices
            .get(keys::device(user, device)?)
            .ctx("reading device")?;
        value.map(|v| codec::decode_device(&v)).transpose()
    }

    fn devices(&self, user: &str) -> Result<Vec<DeviceRecord>, BackendError> {
        let mut out = Vec::new();
        for guard in self.ks.devices.prefix(keys::user(user)?) {
            let value = guard.value().ctx("reading devices")?;
            out.push(codec::decode_device(&value)?);
        }
        Ok(out)
    }

    fn create_conversation(
        &self,
        record: &ConversationRecord,
        unique: Option<&[u8]>,
    ) -> Result<CreateOutcome, CreateConversationError> {
        let _guard = lock(&self.create_lock);
        if let Some(unique) = unique {
            if let Some(existing) = self
                .ks
                .uniq
                .get(keys::unique(unique))
                .ctx("reading unique key")?
            {
                let id = keys::u64_at(&existing, 0, "unique key entry")?;
                let found = self.conversation(id)?;
                let found = found.ok_or_else(|| {
                    BackendError(format!("unique key points to missing conversation {id}"))
                })?;
                return Ok(CreateOutcome::Existing(found));
            }
        }
        let id = record.id;
        if self
            .ks
            .convs
            .contains_key(keys::conv(id))
            .ctx("reading conversation")?
        {
            return Err(CreateConversationError::IdTaken(id));
        }
        let mut batch = self.db.batch();
        batch.insert(&self.ks.convs, keys::conv(id), codec::conversation(record));
        batch.insert(&self.ks.heads, keys::conv(id), 0u64.to_be_bytes());
        if let Some(unique) = unique {
            batch.insert(&self.ks.uniq, keys::unique(unique), keys::conv(id));
        }
        for member in &record.members {
            batch.insert(&self.ks.user_convs, keys::user_conv(member, id)?, EMPTY);
        }
        batch.commit().ctx("writing conversation")?;
        Ok(CreateOutcome::Created)
    }

    fn head(&self, id: ConversationId) -> Result<Option<Seq>, BackendError> {
        let value = self.ks.heads.get(keys::conv(id)).ctx("reading head")?;
        value.map(|v| keys::u64_at(&v, 0, "head")).transpose()
    }

    fn conversation(&self, id: ConversationId) -> Result<Option<ConversationRecord>, BackendError> {
        let Some(value) = self
            .ks
            .convs
            .get(keys::conv(id))
            .ctx("reading conversation")?
        else {
            return Ok(None);
        };
        let head = self
            .head(id)?
            .ok_or_else(|| BackendError(format!("conversation {id} has no head")))?;
        codec::decode_conversation(id, head, &value).map(Some)
    }

    fn update_members(
        &self,
        id: ConversationId,
        add: &[UserId],
        remove: &[UserId],
    ) -> Result<ConversationRecord, MembersError> {
        let _guard = self.stripe(id);
        let mut record = self
            .conversation(id)?
            .ok_or(MembersError::NoSuchConversation(id))?;
        let old = record.members.clone();
        record.members.extend(add.iter().cloned());
        for user in remove {
            record.members.remove(user);
        }
        let mut batch = self.db.batch();
        batch.insert(&self.ks.convs, keys::conv(id), codec::conversation(&record));
        for user in record.members.difference(&old) {
            batch.insert(&self.ks.user_convs, keys::user_conv(user, id)?, EMPTY);
        }
        for user in old.difference(&record.members) {
            batch.remove(&self.ks.user_convs, keys::user_conv(user, id)?);
        }
        batch.commit().ctx("writing members")?;
        Ok(record)
    }

    fn user_conversations(&self, user: &str) -> Result<Vec<ConversationId>, BackendError> {
        let mut out = Vec::new();
        for guard in self.ks.user_convs.prefix(keys::user(user)?) {
            let key = guard.key().ctx("reading user conversations")?;
            out.push(keys::u64_tail(&key, "user conversation key")?);
        }
        Ok(out)
    }

    /// The stored message a repeated idempotency key points to, if any.
    fn duplicate_of(
        &self,
        msg: &StoredMessage,
        idem_key: &[u8],
    ) -> Result<Option<StoredMessage>, BackendError> {
        let Some(seq) = self.ks.idem.get(idem_key).ctx("reading idempotency key")? else {
            return Ok(None);
        };
        let seq = keys::u64_at(&seq, 0, "idempotency entry")?;
        let id = msg.conversation_id;
        // Missing only if a sweep removed both just now: treat it as gone.
        let stored = self
            .ks
            .msgs
            .get(keys::msg(id, seq))
            .ctx("reading message")?;
        stored
            .map(|v| codec::decode_message(id, seq, &v))
            .transpose()
    }

    fn append_message(&self, msg: &StoredMessage) -> Result<AppendOutcome, AppendError> {
        let id = msg.conversation_id;
        let _guard = self.stripe(id);
        let idem_key = keys::idem(
            id,
            &msg.sender_user,
            msg.sender_device,
            msg.client_message_id,
        )?;
        if let Some(stored) = self.duplicate_of(msg, &idem_key)? {
            return Ok(AppendOutcome::Duplicate(stored));
        }
        let head = self.head(id)?.ok_or(AppendError::NoSuchConversation(id))?;
        if head.checked_add(1) != Some(msg.seq) {
            return Err(AppendError::SeqConflict {
                conversation: id,
                head,
                got: msg.seq,
            });
        }
        self.refuse_overwrite(id, msg.seq, head)?;
        let mut batch = self.db.batch();
        batch.insert(&self.ks.msgs, keys::msg(id, msg.seq), codec::message(msg));
        batch.insert(&self.ks.idem, idem_key, msg.seq.to_be_bytes());
        batch.insert(
            &self.ks.expiry,
            keys::expiry(msg.expires_at_ms, id, msg.seq),
            EMPTY,
        );
        batch.insert(&self.ks.heads, keys::conv(id), msg.seq.to_be_bytes());
        batch.commit().ctx("writing message")?;
        Ok(AppendOutcome::Appended)
    }

    /// Defence in depth: a message stored past the head means the head was
    /// rolled back (a damaged journal can do that, see the module docs);
    /// appending would silently replace an acknowledged message.
    fn refuse_overwrite(
        &self,
        id: ConversationId,
        seq: Seq,
        head: Seq,
    ) -> Result<(), BackendError> {
        match self.ks.msgs.contains_key(keys::msg(id, seq)).ctx("reading message")? {
            false => Ok(()),
            true => Err(BackendError(format!(
                "conversation {id} already stores seq {seq} but its head is {head}: the store is inconsistent (damaged journal?)"
            ))),
        }
    }

    fn messages(
        &self,
        id: ConversationId,
        from_seq: Seq,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, BackendError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        for guard in self
            .ks
            .msgs
            .range(keys::msg(id, from_seq)..=keys::msg(id, Seq::MAX))
        {
            let (key, value) = guard.into_inner().ctx("reading messages")?;
            let seq = keys::u64_at(&key, 8, "message key")?;
            let msg = codec::decode_message(id, seq, &value)?;
            if msg.expires_at_ms > now_ms {
                out.push(msg);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn advance_cursor(
        &self,
        user: &str,
        device: DeviceId,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Seq, BackendError> {
        let key = keys::cursor(user, device, id)?;
        let _guard = self.stripe(id);
        let current = self.ks.cursors.get(&key).ctx("reading cursor")?;
        let current = current
            .map(|v| keys::u64_at(&v, 0, "cursor"))
            .transpose()?
            .unwrap_or(0);
        if seq <= current {
            return Ok(current);
        }
        let mut batch = self.db.batch();
        batch.insert(&self.ks.cursors, key, seq.to_be_bytes());
        batch.commit().ctx("writing cursor")?;
        Ok(seq)
    }

    fn cursors(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<BTreeMap<ConversationId, Seq>, BackendError> {
        let mut out = BTreeMap::new();
        for guard in self.ks.cursors.prefix(keys::device(user, device)?) {
            let (key, value) = guard.into_inner().ctx("reading cursors")?;
            let id = keys::u64_tail(&key, "cursor key")?;
            out.insert(id, keys::u64_at(&value, 0, "cursor")?);
        }
        Ok(out)
    }

    fn sweep_expired(&self, now_ms: u64, limit: usize) -> Result<usize, BackendError> {
        if limit == 0 {
            return Ok(0);
        }
        let entries = match now_ms.checked_add(1) {
            Some(end) => self.ks.expiry.range(..end.to_be_bytes()),
            None => self.ks.expiry.iter(),
        };
        let mut batch = self.db.batch();
        let (mut visited, mut deleted) = (0usize, 0usize);
        for guard in entries {
            let key = guard.key().ctx("reading expiry index")?;
            batch.remove(&self.ks.expiry, key.clone());
            deleted += usize::from(self.sweep_one(&mut batch, &key)?);
            visited += 1;
            if visited >= limit {
                break;
            }
        }
        batch.commit().ctx("deleting expired messages")?;
        Ok(deleted)
    }

    /// Adds the removal of the message an expiry key names (and its
    /// idempotency key) to `batch`; false if it was already gone.
    fn sweep_one(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        expiry_key: &[u8],
    ) -> Result<bool, BackendError> {
        let id = keys::u64_at(expiry_key, 8, "expiry key")?;
        let seq = keys::u64_at(expiry_key, 16, "expiry key")?;
        let Some(value) = self
            .ks
            .msgs
            .get(keys::msg(id, seq))
            .ctx("reading message")?
        else {
            return Ok(false);
        };
        let msg = codec::decode_message(id, seq, &value)?;
        batch.remove(
            &self.ks.idem,
            keys::idem(
                id,
                &msg.sender_user,
                msg.sender_device,
                msg.client_message_id,
            )?,
        );
        batch.remove(&self.ks.msgs, keys::msg(id, seq));
        Ok(true)
    }
}

// ---------------------------------------------------------------------------
// Devices, key directory and MLS epochs
// ---------------------------------------------------------------------------

impl Inner {
    /// The stripe serialising the key-directory calls of one device. Shares
    /// the conversation stripes: a collision only costs contention.
    fn device_stripe(&self, user: &str, device: DeviceId) -> MutexGuard<'_, ()> {
        // FNV-1a over the user and the device; `stripe` mixes it further.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in user.bytes().chain(device.to_be_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.stripe(hash)
    }

    /// The highest device id ever assigned to `user` (active or revoked), or
    /// `None` if the user does not exist. Call with `create_lock` held.
    fn highest_device(&self, user: &str) -> Result<Option<DeviceId>, BackendError> {
        let prefix = keys::user(user)?;
        let recorded = match self.ks.accounts.get(&prefix).ctx("reading account")? {
            Some(value) if value.len() == 4 => Some(keys::u32_at(&value, 0, "account entry")?),
            Some(value) => {
                return Err(BackendError(format!(
                    "corrupt account entry of user {user:?}: {} bytes, expected 4",
                    value.len()
                )))
            }
            None => None,
        };
        // Devices are ordered by id, so the last one is the highest active.
        let active = match self.ks.devices.prefix(&prefix).next_back() {
            Some(guard) => {
                let key = guard.key().ctx("reading devices")?;
                Some(keys::u32_tail(&key, "device key")?)
            }
            None => None,
        };
        Ok(recorded.max(active))
    }

    fn add_device(
        &self,
        user: &str,
        name: &str,
        public_key: [u8; 32],
        created_ms: u64,
    ) -> Result<Option<DeviceId>, BackendError> {
        let _guard = lock(&self.create_lock);
        let Some(highest) = self.highest_device(user)? else {
            return Ok(None);
        };
        let device = highest
            .checked_add(1)
            .ok_or_else(|| BackendError(format!("user {user:?} has used up every device id")))?;
        let record = DeviceRecord {
            device,
            name: name.to_string(),
            public_key,
            created_ms,
        };
        let mut batch = self.db.batch();
        batch.insert(
            &self.ks.devices,
            keys::device(user, device)?,
            codec::device(&record),
        );
        batch.insert(&self.ks.accounts, keys::user(user)?, device.to_be_bytes());
        batch.commit().ctx("writing device")?;
        Ok(Some(device))
    }

    fn revoke_device(&self, user: &str, device: DeviceId) -> Result<bool, BackendError> {
        let _account = lock(&self.create_lock);
        let _device = self.device_stripe(user, device);
        let dev_key = keys::device(user, device)?;
        if !self
            .ks
            .devices
            .contains_key(&dev_key)
            .ctx("reading device")?
        {
            return Ok(false);
        }
        // Some(..) as the device exists; the account row keeps the handle
        // taken and the id counter alive after the last device goes.
        let highest = self.highest_device(user)?.unwrap_or(device).max(device);
        let mut batch = self.db.batch();
        batch.remove(&self.ks.devices, dev_key.clone());
        batch.insert(&self.ks.accounts, keys::user(user)?, highest.to_be_bytes());
        batch.remove(&self.ks.bundles, dev_key.clone());
        batch.remove(&self.ks.kp_meta, dev_key.clone());
        for (space, what) in [
            (&self.ks.one_time, "reading one-time prekeys"),
            (&self.ks.key_packages, "reading key packages"),
            (&self.ks.cursors, "reading cursors"),
        ] {
            for guard in space.prefix(&dev_key) {
                batch.remove(space, guard.key().ctx(what)?);
            }
        }
        batch.commit().ctx("revoking device")?;
        Ok(true)
    }

    fn is_active(&self, dev_key: &[u8]) -> Result<bool, BackendError> {
        self.ks.devices.contains_key(dev_key).ctx("reading device")
    }

    fn bundle(&self, dev_key: &[u8]) -> Result<Option<codec::Bundle>, BackendError> {
        let value = self.ks.bundles.get(dev_key).ctx("reading prekey bundle")?;
        value.map(|v| codec::decode_bundle(&v)).transpose()
    }

    fn put_prekeys(
        &self,
        user: &str,
        device: DeviceId,
        upload: &PrekeyUpload,
    ) -> Result<u32, BackendError> {
        let dev_key = keys::device(user, device)?;
        let _guard = self.device_stripe(user, device);
        // Under the stripe, so a concurrent revoke cannot leave keys behind.
        if !self.is_active(&dev_key)? {
            return Ok(0);
        }
        let mut bundle = self.bundle(&dev_key)?.unwrap_or_default();
        if *upload == PrekeyUpload::default() {
            // A pure count query: no journal write.
            return Ok(bundle.one_time);
        }
        if let Some(identity) = upload.identity {
            bundle.identity = Some(identity);
        }
        if let Some(signed) = &upload.signed_prekey {
            bundle.signed = Some(signed.clone());
        }
        if let Some(last_resort) = &upload.last_resort {
            bundle.last_resort = Some(last_resort.clone());
        }
        if let Some(kem) = &upload.kem_prekey {
            bundle.kem = Some(kem.clone());
        }
        let mut batch = self.db.batch();
        let mut added = std::collections::BTreeSet::new();
        for prekey in &upload.one_time {
            if bundle.one_time >= KEY_POOL_CAP {
                break;
            }
            let key = keys::prekey(user, device, prekey.id)?;
            if added.contains(&prekey.id)
                || self
                    .ks
                    .one_time
                    .contains_key(&key)
                    .ctx("reading one-time prekeys")?
            {
                continue;
            }
            batch.insert(&self.ks.one_time, key, prekey.public);
            added.insert(prekey.id);
            bundle.one_time = bundle.one_time.saturating_add(1);
        }
        batch.insert(&self.ks.bundles, dev_key, codec::bundle(&bundle));
        batch.commit().ctx("writing prekeys")?;
        Ok(bundle.one_time)
    }

    fn claim_prekeys(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<ClaimedPrekeys>, BackendError> {
        let dev_key = keys::device(user, device)?;
        let _guard = self.device_stripe(user, device);
        // Revoking deletes the bundle, so a bundle means an active device.
        let Some(mut bundle) = self.bundle(&dev_key)? else {
            return Ok(None);
        };
        let Some((identity_key, identity_signature)) = bundle.identity else {
            return Ok(None);
        };
        let first = self.ks.one_time.prefix(&dev_key).next();
        let one_time = match first {
            None => None,
            Some(guard) => {
                let (key, value) = guard.into_inner().ctx("reading one-time prekeys")?;
                let id = keys::u32_tail(&key, "one-time prekey key")?;
                let public = <[u8; 32]>::try_from(&*value).map_err(|_| {
                    BackendError(format!(
                        "corrupt one-time prekey {id} of {user:?} device {device}: {} bytes, expected 32",
                        value.len()
                    ))
                })?;
                bundle.one_time = bundle.one_time.saturating_sub(1);
                let mut batch = self.db.batch();
                batch.remove(&self.ks.one_time, key);
                batch.insert(&self.ks.bundles, dev_key, codec::bundle(&bundle));
                batch.commit().ctx("claiming one-time prekey")?;
                Some(Prekey { id, public })
            }
        };
        let (last_resort, remaining) = match one_time {
            Some(_) => (None, bundle.one_time),
            None => (bundle.last_resort, 0),
        };
        Ok(Some(ClaimedPrekeys {
            identity_key,
            identity_signature,
            signed_prekey: bundle.signed,
            one_time,
            last_resort,
            kem_prekey: bundle.kem,
            remaining,
        }))
    }

    fn prekey_count(&self, user: &str, device: DeviceId) -> Result<u32, BackendError> {
        let bundle = self.bundle(&keys::device(user, device)?)?;
        Ok(bundle.map_or(0, |b| b.one_time))
    }

    fn key_package_count(&self, user: &str, device: DeviceId) -> Result<u32, BackendError> {
        let pool = self.key_package_pool(&keys::device(user, device)?)?;
        Ok(pool.map_or(0, |p| p.count))
    }

    fn key_package_pool(
        &self,
        dev_key: &[u8],
    ) -> Result<Option<codec::KeyPackagePool>, BackendError> {
        let value = self
            .ks
            .kp_meta
            .get(dev_key)
            .ctx("reading key package pool")?;
        value
            .map(|v| codec::decode_key_package_pool(&v))
            .transpose()
    }

    fn put_key_packages(
        &self,
        user: &str,
        device: DeviceId,
        packages: &[Bytes],
        last_resort: Option<Bytes>,
    ) -> Result<u32, BackendError> {
        let dev_key = keys::device(user, device)?;
        let _guard = self.device_stripe(user, device);
        if !self.is_active(&dev_key)? {
            return Ok(0);
        }
        let mut pool = self.key_package_pool(&dev_key)?.unwrap_or_default();
        if packages.is_empty() && last_resort.is_none() {
            // A pure count query: no journal write.
            return Ok(pool.count);
        }
        let mut batch = self.db.batch();
        for package in packages {
            if pool.count >= KEY_POOL_CAP {
                break;
            }
            let key = keys::key_package(user, device, pool.next)?;
            batch.insert(&self.ks.key_packages, key, package.as_ref());
            pool.next = pool.next.checked_add(1).ok_or_else(|| {
                BackendError(format!(
                    "key package counter of {user:?} device {device} is exhausted"
                ))
            })?;
            pool.count = pool.count.saturating_add(1);
        }
        if let Some(last_resort) = last_resort {
            pool.last_resort = Some(last_resort);
        }
        batch.insert(&self.ks.kp_meta, dev_key, codec::key_package_pool(&pool));
        batch.commit().ctx("writing key packages")?;
        Ok(pool.count)
    }

    fn claim_key_package(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<ClaimedKeyPackage>, BackendError> {
        let dev_key = keys::device(user, device)?;
        let _guard = self.device_stripe(user, device);
        // Revoking deletes the pool record, so a record means an active device.
        let Some(mut pool) = self.key_package_pool(&dev_key)? else {
            return Ok(None);
        };
        let first = self.ks.key_packages.prefix(&dev_key).next();
        let Some(guard) = first else {
            return Ok(pool.last_resort.map(|key_package| ClaimedKeyPackage {
                key_package,
                last_resort: true,
                remaining: 0,
            }));
        };
        let (key, value) = guard.into_inner().ctx("reading key packages")?;
        pool.count = pool.count.saturating_sub(1);
        let mut batch = self.db.batch();
        batch.remove(&self.ks.key_packages, key);
        batch.insert(&self.ks.kp_meta, dev_key, codec::key_package_pool(&pool));
        batch.commit().ctx("claiming key package")?;
        Ok(Some(ClaimedKeyPackage {
            key_package: Bytes::copy_from_slice(&value),
            last_resort: false,
            remaining: pool.count,
        }))
    }

    fn group_epoch(&self, id: ConversationId) -> Result<u64, BackendError> {
        let value = self
            .ks
            .epochs
            .get(keys::conv(id))
            .ctx("reading group epoch")?;
        let epoch = value
            .map(|v| keys::u64_at(&v, 0, "group epoch"))
            .transpose()?;
        Ok(epoch.unwrap_or(0))
    }

    fn advance_epoch(
        &self,
        id: ConversationId,
        expected: u64,
        group_info: &Bytes,
    ) -> Result<EpochOutcome, BackendError> {
        let _guard = self.stripe(id);
        let current = self.group_epoch(id)?;
        if current != expected {
            return Ok(EpochOutcome::Stale { current });
        }
        let next = current.checked_add(1).ok_or_else(|| {
            BackendError(format!(
                "epoch of conversation {id} cannot advance past {current}"
            ))
        })?;
        let mut batch = self.db.batch();
        batch.insert(&self.ks.epochs, keys::conv(id), next.to_be_bytes());
        batch.insert(&self.ks.group_infos, keys::conv(id), group_info.as_ref());
        batch.commit().ctx("writing group epoch")?;
        Ok(EpochOutcome::Accepted)
    }

    fn group_info(&self, id: ConversationId) -> Result<Option<Bytes>, BackendError> {
        let value = self
            .ks
            .group_infos
            .get(keys::conv(id))
            .ctx("reading group info")?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }
}

// ---------------------------------------------------------------------------
// The trait
// ---------------------------------------------------------------------------

#[async_trait]
impl Store for FjallStore {
    async fn create_account(
        &self,
        user: &str,
        first: DeviceRecord,
    ) -> Result<(), CreateAccountError> {
        self.inner.create_account(user, &first)
    }

    async fn device(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        self.inner.device(user, device)
    }

    async fn devices(&self, user: &str) -> Result<Vec<DeviceRecord>, BackendError> {
        self.inner.devices(user)
    }

    async fn create_conversation(
        &self,
        record: &ConversationRecord,
        unique_key: Option<&[u8]>,
    ) -> Result<CreateOutcome, CreateConversationError> {
        self.inner.create_conversation(record, unique_key)
    }

    async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, BackendError> {
        self.inner.conversation(id)
    }

    async fn update_members(
        &self,
        id: ConversationId,
        add: &[UserId],
        remove: &[UserId],
    ) -> Result<ConversationRecord, MembersError> {
        self.inner.update_members(id, add, remove)
    }

    async fn user_conversations(&self, user: &str) -> Result<Vec<ConversationId>, BackendError> {
        self.inner.user_conversations(user)
    }

    async fn append_message(&self, msg: &StoredMessage) -> Result<AppendOutcome, AppendError> {
        self.inner.append_message(msg)
    }

    async fn messages(
        &self,
        id: ConversationId,
        from_seq: Seq,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, BackendError> {
        self.inner.messages(id, from_seq, limit, now_ms)
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: DeviceId,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Seq, BackendError> {
        self.inner.advance_cursor(user, device, id, seq)
    }

    async fn cursors(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<BTreeMap<ConversationId, Seq>, BackendError> {
        self.inner.cursors(user, device)
    }

    async fn sweep_expired(&self, now_ms: u64, limit: usize) -> Result<usize, BackendError> {
        self.inner.sweep_expired(now_ms, limit)
    }

    async fn add_device(
        &self,
        user: &str,
        name: &str,
        public_key: [u8; 32],
        created_ms: u64,
    ) -> Result<Option<DeviceId>, BackendError> {
        self.inner.add_device(user, name, public_key, created_ms)
    }

    async fn revoke_device(&self, user: &str, device: DeviceId) -> Result<bool, BackendError> {
        self.inner.revoke_device(user, device)
    }

    async fn put_prekeys(
        &self,
        user: &str,
        device: DeviceId,
        upload: &PrekeyUpload,
    ) -> Result<u32, BackendError> {
        self.inner.put_prekeys(user, device, upload)
    }

    async fn claim_prekeys(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<ClaimedPrekeys>, BackendError> {
        self.inner.claim_prekeys(user, device)
    }

    async fn prekey_count(&self, user: &str, device: DeviceId) -> Result<u32, BackendError> {
        self.inner.prekey_count(user, device)
    }

    async fn key_package_count(&self, user: &str, device: DeviceId) -> Result<u32, BackendError> {
        self.inner.key_package_count(user, device)
    }

    async fn put_key_packages(
        &self,
        user: &str,
        device: DeviceId,
        packages: &[Bytes],
        last_resort: Option<Bytes>,
    ) -> Result<u32, BackendError> {
        self.inner
            .put_key_packages(user, device, packages, last_resort)
    }

    async fn claim_key_package(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<ClaimedKeyPackage>, BackendError> {
        self.inner.claim_key_package(user, device)
    }

    async fn group_epoch(&self, id: ConversationId) -> Result<u64, BackendError> {
        self.inner.group_epoch(id)
    }

    async fn advance_epoch(
        &self,
        id: ConversationId,
        expected: u64,
        group_info: &Bytes,
    ) -> Result<EpochOutcome, BackendError> {
        self.inner.advance_epoch(id, expected, group_info)
    }

    async fn group_info(&self, id: ConversationId) -> Result<Option<Bytes>, BackendError> {
        self.inner.group_info(id)
    }

    async fn persist(&self) -> Result<(), BackendError> {
        let wait = self.inner.committer.request()?;
        wait.await.map_err(|_| committer_gone())?
    }
}
