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
//! | `user_conversations` | user¹ · conversation u64                     | first seq of the membership u64 (empty: 1) |
//! | `messages`           | conversation u64 · seq u64                   | message record     |
//! | `idempotency`        | conversation u64 · user¹ · device u32 · cmid u64 | seq u64        |
//! | `expiry`             | expires_at_ms u64 · conversation u64 · seq u64 | empty            |
//! | `cursors`            | user¹ · device u32 · conversation u64        | seq u64            |
//! | `accounts`           | user¹                                        | highest device id ever assigned u32 |
//! | `device_keys`        | user¹ · device u32                           | device keys²       |
//! | `key_pool`           | user¹ · device u32 · pool u8 · key id u64    | key bytes          |
//! | `key_pool_meta`      | user¹ · device u32 · pool u8                 | pool record³       |
//! | `group_epochs`       | conversation u64                             | epoch u64          |
//! | `group_infos`        | conversation u64                             | GroupInfo bytes    |
//! | `privacy`            | user¹                                        | group_adds u8 (0 contacts, 1 everyone) |
//! | `privacy`            | user¹ · `d`                                  | direct_starts u8 (0 everyone, 1 contacts, 2 nobody; absent: everyone) |
//! | `privacy`            | user¹ · `p`                                  | presence visibility u8 (0 shared, 1 everyone, 2 nobody; absent: shared) |
//! | `privacy`            | user¹ · `w` · device u32                     | the device's push endpoint, as the server encoded it (issue 11) |
//! | `contacts`           | user¹ · contact¹                             | empty              |
//! | `invitations`        | user¹ · conversation u64                     | created_ms u64 · accepted u8 · inviter¹ |
//! | `blocks`             | user¹ · blocked user¹                        | empty              |
//! | `erasures`           | `last`                                       | erasures run u64 (see `purge`) |
//! | `settings`           | conversation u64                             | version u8 · timer_secs u32 (see `settings`) |
//! | `owners`             | conversation u64                             | fencing token u64 · claiming node id (see `ownership`) |
//!
//! ¹ a user is written as one length byte followed by its bytes, so a user's
//! keys form one prefix that no other user's keys share.
//! ² identity key and signature, signed prekey, KEM prekey (each optional).
//! ³ the number of keys in the pool and the optional last-resort key. One
//! layout serves every [`tern_store::KeyPool`] (one-time prekeys: tag 1,
//! KeyPackages: tag 2). Stores written before the generic pool kept prekeys
//! and KeyPackages in other keyspaces, which are no longer read: devices of
//! such a store upload their keys again (the SDK does on `KeysLow`).
//!
//! An account exists while it has a row in `accounts` or (stores written
//! before that table existed) at least one row in `devices`. Revoking devices
//! never removes it, so a handle is never freed and device ids are never
//! reused. A pool's count in record ³ changes in the same batch as the pool
//! rows, under the device's stripe lock.
//!
//! # Durability
//! Every write call commits one fjall write batch (accepting an MLS Commit
//! too: epoch, GroupInfo, membership and both messages in one batch), which fjall writes to the journal
//! and flushes to the OS (`PersistMode::Buffer`) before returning: a process
//! crash keeps it, power loss may not. [`Store::persist`] asks the commit
//! thread, which drains every waiting request, makes the journal durable once
//! (a `Buffer` persist, then `fdatasync` of the journal files through its own
//! handles, so fjall's journal lock is never held across the sync and writers
//! on shard threads do not stall; see `JournalSync`) and answers them all.
//! A failed batch commit or sync poisons the store: every later write fails
//! with `Poisoned` until the store is reopened (fjall's own rule).
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

mod accounts;
mod codec;
mod commit;
mod consent;
mod conversations;
mod directory;
mod groups;
mod layout;
mod log;
mod ownership;
mod purge;
mod settings;

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch};

use commit::Committer;
use tern_store::{
    AccountStore, AppendError, AppendOutcome, BackendError, BlockOutcome, ClaimedKey,
    CommitOutcome, CommitRecord, ConsentStore, ConversationId, ConversationRecord,
    ConversationSettings, ConversationStore, CreateAccountError, CreateConversationError,
    CreateOutcome, DeviceId, DeviceKeys, DeviceKeysUpdate, DeviceRecord, DirectStarts, FenceToken,
    Fences, GroupAdds, GroupStore, InvitationRecord, KeyDirectory, KeyPool, MembersError,
    MessageLog, Ownership, OwnershipStore, Poison, PoisonHook, PoolKey, Seq, Store, StoredMessage,
    UserId,
};

/// Value of set-like tables.
const EMPTY: [u8; 0] = [];

/// Number of striped locks serialising read-modify-write calls per conversation.
const STRIPES: usize = 64;

/// Heads cached per stripe before that stripe's cache is reset (64 × 16,384
/// conversations, about 1 M heads, a few tens of MiB at most).
const HEADS_PER_STRIPE: usize = 16_384;

/// What a stripe's lock guards besides serialisation: the heads of its
/// conversations that appends may trust without reading the `heads` table.
/// A head enters the cache when it is read from disk and nothing is stored
/// past it (the overwrite guard, checked once per load instead of once per
/// append), and moves forward only after a batch carrying the new head was
/// committed. This process is the only writer of the data directory (the
/// directory lock) and every head change happens under the stripe, so the
/// cache cannot go stale; a failed commit poisons the store, and reopening
/// starts with an empty cache.
#[derive(Default)]
pub(crate) struct Stripe {
    heads: HashMap<ConversationId, Seq>,
}

impl Stripe {
    pub(crate) fn head(&self, id: ConversationId) -> Option<Seq> {
        self.heads.get(&id).copied()
    }

    /// Records the head of `id` after a committed write (or a checked read).
    pub(crate) fn set_head(&mut self, id: ConversationId, head: Seq) {
        if self.heads.len() >= HEADS_PER_STRIPE && !self.heads.contains_key(&id) {
            self.heads.clear();
        }
        self.heads.insert(id, head);
    }
}

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

pub(crate) struct Inner {
    pub(crate) db: Database,
    pub(crate) ks: Spaces,
    /// Serialises the insert-if-absent of accounts and conversations, and
    /// every change to a user's set of devices. Taken before a stripe, never
    /// while holding one.
    pub(crate) create_lock: Mutex<()>,
    /// Serialises the read-modify-write of a user's invitations (the cap)
    /// and of a user's block list (its bound).
    pub(crate) consent_lock: Mutex<()>,
    /// Serialise read-modify-write calls that touch one conversation, or one
    /// device's key material (keyed by a hash of user and device).
    pub(crate) stripes: Box<[Mutex<Stripe>; STRIPES]>,
    /// Declared last so that it drops (joins the thread) after the handles.
    /// Erases purged payloads from the `messages` tables (see `purge`).
    pub(crate) eraser: purge::Eraser,
    pub(crate) committer: Committer,
}

/// One handle per table; see the module docs for the layout.
pub(crate) struct Spaces {
    pub(crate) devices: Keyspace,
    pub(crate) convs: Keyspace,
    pub(crate) heads: Keyspace,
    pub(crate) uniq: Keyspace,
    pub(crate) user_convs: Keyspace,
    pub(crate) msgs: Keyspace,
    pub(crate) idem: Keyspace,
    pub(crate) expiry: Keyspace,
    pub(crate) cursors: Keyspace,
    pub(crate) accounts: Keyspace,
    pub(crate) device_keys: Keyspace,
    pub(crate) key_pool: Keyspace,
    pub(crate) pool_meta: Keyspace,
    pub(crate) epochs: Keyspace,
    pub(crate) group_infos: Keyspace,
    pub(crate) privacy: Keyspace,
    pub(crate) contacts: Keyspace,
    pub(crate) invitations: Keyspace,
    pub(crate) blocks: Keyspace,
    pub(crate) erasures: Keyspace,
    pub(crate) settings: Keyspace,
    pub(crate) owners: Keyspace,
}

impl Spaces {
    fn open(db: &Database, memtable: u64) -> fjall::Result<Self> {
        let options = || KeyspaceCreateOptions::default().max_memtable_size(memtable);
        let ks = |name: &str| db.keyspace(name, options);
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
            device_keys: ks("device_keys")?,
            key_pool: ks("key_pool")?,
            pool_meta: ks("key_pool_meta")?,
            epochs: ks("group_epochs")?,
            group_infos: ks("group_infos")?,
            privacy: ks("privacy")?,
            contacts: ks("contacts")?,
            invitations: ks("invitations")?,
            blocks: ks("blocks")?,
            erasures: ks("erasures")?,
            settings: ks("settings")?,
            owners: ks("owners")?,
        })
    }
}

/// How [`FjallStore::open_with`] runs the store.
#[derive(Clone)]
pub struct FjallOptions {
    /// Least time between the starts of two journal syncs. A persist after
    /// a quiet period is synced at once; under load, syncs are spaced by
    /// this much so each covers more writes (fewer `fdatasync` calls and
    /// larger write batches, at up to this much added latency). Default
    /// 500 µs; zero syncs back to back.
    pub sync_interval: Duration,
    /// Called once when the store poisons itself after a failed write or
    /// sync (see [`Poison`]); `tern serve` exits there so that a supervisor
    /// restarts it on the recovered journal. Default: none.
    pub on_poison: Option<PoisonHook>,
    /// How the engine holds and moves data (memtables, journal, cache).
    pub tuning: Tuning,
}

/// The engine's memory and journal bounds, in bytes; the defaults are
/// fjall's. Smaller memtables make each flush, and the slowdown of the
/// journal's syncs while its table is written, shorter, but at 16 MiB
/// compaction fell behind after nine minutes at 5,000 msg/s and writes
/// collapsed (measured before the vendored lsm-tree patches; see
/// docs/PERFORMANCE.md, "Stalls under sustained load"), so the default
/// stays 64 MiB. fjall 3.1 has no bound on the sum of memtables (its
/// `max_write_buffer_size` is deprecated and unused), so the store's memory
/// is about `memtable` times the keyspaces written heavily, plus `cache`.
/// See docs/PERFORMANCE.md, "Stalls under sustained load".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Largest memtable of one keyspace before it is sealed and flushed.
    /// Default 64 MiB.
    pub memtable: u64,
    /// Largest journal on disk: past it the keyspaces holding its oldest
    /// file are flushed so the file can go. Default 512 MiB.
    pub journal: u64,
    /// Block cache shared by every keyspace. Default 32 MiB.
    pub cache: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        const MIB: u64 = 1024 * 1024;
        Tuning {
            memtable: 64 * MIB,
            journal: 512 * MIB,
            cache: 32 * MIB,
        }
    }
}

impl Default for FjallOptions {
    fn default() -> Self {
        FjallOptions {
            sync_interval: Duration::from_micros(500),
            on_poison: None,
            tuning: Tuning::default(),
        }
    }
}

impl std::fmt::Debug for FjallOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallOptions")
            .field("sync_interval", &self.sync_interval)
            .field("on_poison", &self.on_poison.is_some())
            .field("tuning", &self.tuning)
            .finish()
    }
}

impl FjallStore {
    /// Runs one store call on the tokio runtime's blocking pool and waits
    /// for it there, so the caller's thread (a shard thread, which also
    /// drives its QUIC endpoint and every other connection on it) never
    /// runs fjall code. fjall can block a call for a long time: a batch
    /// commit waits for the journal lock while a flush fsyncs the journal
    /// under it, sleeps 100 ms at a time while four sealed memtables wait
    /// for flushing, and reads wait on a keyspace's version lock while a
    /// flush or compaction persists the new version (fsync) under it
    /// (fjall 3.1 `worker_pool.rs`, `keyspace/mod.rs`; lsm-tree 3.1
    /// `version/super_version.rs`). Such a wait now holds only the
    /// requests that need the store, not the shard (docs/PERFORMANCE.md,
    /// "Stalls under sustained load"). Outside a tokio runtime the call
    /// runs inline. A call that panics fails with `Unavailable`.
    async fn off<T, F>(&self, call: F) -> Result<T, BackendError>
    where
        F: FnOnce(&Inner) -> T + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Ok(call(&inner));
        };
        runtime
            .spawn_blocking(move || call(&inner))
            .await
            .map_err(|e| BackendError::unavailable(format!("a store call failed: {e}")))
    }

    /// Opens (creating if needed) the store in directory `path` with the
    /// default [`FjallOptions`]; see [`FjallStore::open_with`].
    pub fn open(path: &Path) -> Result<FjallStore, OpenError> {
        FjallStore::open_with(path, FjallOptions::default())
    }

    /// Opens (creating if needed) the store in directory `path` and starts
    /// its commit thread. Recovers the journal: a torn last batch is dropped;
    /// damage fjall cannot repair is reported as [`OpenError::Corrupt`].
    pub fn open_with(path: &Path, options: FjallOptions) -> Result<FjallStore, OpenError> {
        let (db, ks) = guarded_open(path, options.tuning)?;
        let poison = Poison::with_hook(options.on_poison);
        let committer = Committer::spawn(
            db.clone(),
            path.to_path_buf(),
            options.sync_interval,
            poison,
        )
        .map_err(|source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let stripes = Box::new(std::array::from_fn(|_| Mutex::default()));
        let inner = Inner {
            db,
            ks,
            create_lock: Mutex::new(()),
            consent_lock: Mutex::new(()),
            eraser: purge::Eraser::default(),
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
        let s = &self.inner.committer.shared;
        (
            s.fsyncs.load(Ordering::SeqCst),
            s.served.load(Ordering::SeqCst),
        )
    }
}

/// Opens the database and keyspaces, turning engine panics into errors.
fn guarded_open(path: &Path, tuning: Tuning) -> Result<(Database, Spaces), OpenError> {
    let attempt = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let db = Database::builder(path)
            .max_journaling_size(tuning.journal)
            .cache_size(tuning.cache)
            .open()?;
        let ks = Spaces::open(&db, tuning.memtable)?;
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

/// Adds what was being done to a fjall error, typed by what failed.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: &str) -> Result<T, BackendError>;
}

impl<T> Ctx<T> for fjall::Result<T> {
    fn ctx(self, what: &str) -> Result<T, BackendError> {
        self.map_err(|e| backend_error(e, what))
    }
}

fn backend_error(e: fjall::Error, what: &str) -> BackendError {
    use fjall::{Error as E, LsmError as L};
    let message = format!("{what}: {e}");
    match e {
        E::Io(_) | E::Storage(L::Io(_)) => BackendError::io(message),
        E::Poisoned => BackendError::poisoned(message),
        _ => BackendError::corrupt(message),
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under a stripe leaves at worst a stale-free head cache (heads
    // move only after a committed write), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    pub(crate) fn stripe_index(id: ConversationId) -> usize {
        (id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % STRIPES
    }

    pub(crate) fn stripe(&self, id: ConversationId) -> MutexGuard<'_, Stripe> {
        self.stripe_at(Self::stripe_index(id))
    }

    #[allow(clippy::indexing_slicing)] // `index % STRIPES` is in bounds of the array
    fn stripe_at(&self, index: usize) -> MutexGuard<'_, Stripe> {
        lock(&self.stripes[index % STRIPES])
    }

    /// The stripes of several conversations, taken in ascending order so
    /// that two callers never wait on each other in a cycle, by stripe index.
    pub(crate) fn stripes(
        &self,
        ids: impl Iterator<Item = ConversationId>,
    ) -> BTreeMap<usize, MutexGuard<'_, Stripe>> {
        let indexes: std::collections::BTreeSet<usize> = ids.map(Self::stripe_index).collect();
        indexes
            .into_iter()
            .map(|i| (i, self.stripe_at(i)))
            .collect()
    }

    /// Commits one write batch, refusing when the store is poisoned; a
    /// failed commit poisons it.
    pub(crate) fn write(&self, batch: OwnedWriteBatch, what: &str) -> Result<(), BackendError> {
        let poison = &self.committer.shared.poison;
        poison.check()?;
        batch.commit().map_err(|e| {
            let error = backend_error(e, what);
            poison.set(error.to_string());
            error
        })
    }
}

// ---------------------------------------------------------------------------
// The traits: each call runs on the runtime's blocking pool (`off`), never
// on the caller's thread.
// ---------------------------------------------------------------------------

#[async_trait]
impl AccountStore for FjallStore {
    async fn create_account(
        &self,
        user: &str,
        first: DeviceRecord,
    ) -> Result<(), CreateAccountError> {
        let user = user.to_owned();
        self.off(move |s| s.create_account(&user, &first)).await?
    }

    async fn device(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceRecord>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.device(&user, device)).await?
    }

    async fn devices(&self, user: &str) -> Result<Vec<DeviceRecord>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.devices(&user)).await?
    }

    async fn add_device(
        &self,
        user: &str,
        name: &str,
        public_key: [u8; 32],
        created_ms: u64,
    ) -> Result<Option<DeviceId>, BackendError> {
        let (user, name) = (user.to_owned(), name.to_owned());
        self.off(move |s| s.add_device(&user, &name, public_key, created_ms))
            .await?
    }

    async fn revoke_device(&self, user: &str, device: DeviceId) -> Result<bool, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.revoke_device(&user, device)).await?
    }

    async fn set_push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
        endpoint: Option<&[u8]>,
    ) -> Result<(), BackendError> {
        tern_store::check_push_endpoint(endpoint)?;
        let (user, endpoint) = (user.to_owned(), endpoint.map(<[u8]>::to_vec));
        self.off(move |s| s.set_push_endpoint(&user, device, endpoint.as_deref()))
            .await?
    }

    async fn push_endpoint(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<Vec<u8>>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.push_endpoint(&user, device)).await?
    }
}

#[async_trait]
impl ConversationStore for FjallStore {
    async fn create_conversation(
        &self,
        record: &ConversationRecord,
        unique_key: Option<&[u8]>,
    ) -> Result<CreateOutcome, CreateConversationError> {
        let (record, unique_key) = (record.clone(), unique_key.map(<[u8]>::to_vec));
        self.off(move |s| s.create_conversation(&record, unique_key.as_deref()))
            .await?
    }

    async fn conversation_by_key(
        &self,
        unique_key: &[u8],
    ) -> Result<Option<ConversationId>, BackendError> {
        let unique_key = unique_key.to_vec();
        self.off(move |s| s.conversation_by_key(&unique_key))
            .await?
    }

    async fn conversation(
        &self,
        id: ConversationId,
    ) -> Result<Option<ConversationRecord>, BackendError> {
        self.off(move |s| s.conversation(id)).await?
    }

    async fn update_members(
        &self,
        id: ConversationId,
        add: &[UserId],
        remove: &[UserId],
    ) -> Result<ConversationRecord, MembersError> {
        let (add, remove) = (add.to_vec(), remove.to_vec());
        self.off(move |s| s.update_members(id, &add, &remove))
            .await?
    }

    async fn user_conversations(&self, user: &str) -> Result<Vec<ConversationId>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.user_conversations(&user)).await?
    }

    async fn user_conversations_after(
        &self,
        user: &str,
        after: ConversationId,
        limit: usize,
    ) -> Result<Vec<ConversationId>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.user_conversations_after(&user, after, limit))
            .await?
    }

    async fn group_count(&self, user: &str) -> Result<usize, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.group_count(&user)).await?
    }

    async fn member_since(
        &self,
        id: ConversationId,
        user: &str,
    ) -> Result<Option<Seq>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.member_since(id, &user)).await?
    }

    async fn settings(&self, id: ConversationId) -> Result<ConversationSettings, BackendError> {
        self.off(move |s| s.settings(id)).await?
    }

    async fn put_settings(
        &self,
        id: ConversationId,
        settings: &ConversationSettings,
    ) -> Result<(), BackendError> {
        let settings = settings.clone();
        self.off(move |s| s.put_settings(id, &settings)).await?
    }
}

#[async_trait]
impl ConsentStore for FjallStore {
    async fn set_group_adds(&self, user: &str, setting: GroupAdds) -> Result<(), BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.set_group_adds(&user, setting)).await?
    }

    async fn group_adds(&self, user: &str) -> Result<GroupAdds, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.group_adds(&user)).await?
    }

    async fn set_direct_starts(
        &self,
        user: &str,
        setting: DirectStarts,
    ) -> Result<(), BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.set_direct_starts(&user, setting))
            .await?
    }

    async fn direct_starts(&self, user: &str) -> Result<DirectStarts, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.direct_starts(&user)).await?
    }

    async fn set_presence_visibility(
        &self,
        user: &str,
        setting: tern_store::PresenceVisibility,
    ) -> Result<(), BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.set_presence_visibility(&user, setting))
            .await?
    }

    async fn presence_visibility(
        &self,
        user: &str,
    ) -> Result<tern_store::PresenceVisibility, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.presence_visibility(&user)).await?
    }

    async fn add_contacts(&self, user: &str, contacts: &[UserId]) -> Result<(), BackendError> {
        let (user, contacts) = (user.to_owned(), contacts.to_vec());
        self.off(move |s| s.add_contacts(&user, &contacts)).await?
    }

    async fn is_contact(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        let (user, other) = (user.to_owned(), other.to_owned());
        self.off(move |s| s.is_contact(&user, &other)).await?
    }

    async fn put_invitation(
        &self,
        user: &str,
        invitation: &InvitationRecord,
        keep: usize,
    ) -> Result<(), BackendError> {
        let (user, invitation) = (user.to_owned(), invitation.clone());
        self.off(move |s| s.put_invitation(&user, &invitation, keep))
            .await?
    }

    async fn invitations(&self, user: &str) -> Result<Vec<InvitationRecord>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.invitations(&user)).await?
    }

    async fn invitation(
        &self,
        user: &str,
        conversation: ConversationId,
    ) -> Result<Option<InvitationRecord>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.invitation(&user, conversation)).await?
    }

    async fn remove_invitation(
        &self,
        user: &str,
        conversation: ConversationId,
    ) -> Result<bool, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.remove_invitation(&user, conversation))
            .await?
    }

    async fn block(
        &self,
        user: &str,
        other: &str,
        max: usize,
    ) -> Result<BlockOutcome, BackendError> {
        let (user, other) = (user.to_owned(), other.to_owned());
        self.off(move |s| s.block(&user, &other, max)).await?
    }

    async fn unblock(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        let (user, other) = (user.to_owned(), other.to_owned());
        self.off(move |s| s.unblock(&user, &other)).await?
    }

    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, BackendError> {
        let (user, other) = (user.to_owned(), other.to_owned());
        self.off(move |s| s.is_blocked(&user, &other)).await?
    }

    async fn blocked_users(&self, user: &str) -> Result<Vec<UserId>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.blocked_users(&user)).await?
    }
}

#[async_trait]
impl MessageLog for FjallStore {
    async fn append_message(&self, msg: &StoredMessage) -> Result<AppendOutcome, AppendError> {
        let msg = msg.clone();
        self.off(move |s| s.append_message(&msg)).await?
    }

    async fn append_messages(
        &self,
        msgs: &[StoredMessage],
        fences: &Fences,
    ) -> Result<Vec<Result<AppendOutcome, AppendError>>, BackendError> {
        let (msgs, fences) = (msgs.to_vec(), fences.clone());
        self.off(move |s| s.append_messages(&msgs, &fences)).await?
    }

    async fn messages(
        &self,
        id: ConversationId,
        from_seq: Seq,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<StoredMessage>, BackendError> {
        self.off(move |s| s.messages(id, from_seq, limit, now_ms))
            .await?
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: DeviceId,
        id: ConversationId,
        seq: Seq,
    ) -> Result<Seq, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.advance_cursor(&user, device, id, seq))
            .await?
    }

    async fn cursors(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<BTreeMap<ConversationId, Seq>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.cursors(&user, device)).await?
    }

    async fn sweep_expired(&self, now_ms: u64, limit: usize) -> Result<usize, BackendError> {
        self.off(move |s| s.sweep_expired(now_ms, limit)).await?
    }

    async fn purge_message(
        &self,
        id: ConversationId,
        seq: Seq,
        flags: u32,
    ) -> Result<Option<StoredMessage>, BackendError> {
        self.off(move |s| s.purge_message(id, seq, flags)).await?
    }

    /// See the `purge` module for what is erased from which file, and when.
    async fn erase_purged(&self) -> Result<(), BackendError> {
        self.off(|s| s.erase_purged()).await?
    }
}

#[async_trait]
impl KeyDirectory for FjallStore {
    async fn put_device_keys(
        &self,
        user: &str,
        device: DeviceId,
        update: &DeviceKeysUpdate,
    ) -> Result<bool, BackendError> {
        let (user, update) = (user.to_owned(), update.clone());
        self.off(move |s| s.put_device_keys(&user, device, &update))
            .await?
    }

    async fn device_keys(
        &self,
        user: &str,
        device: DeviceId,
    ) -> Result<Option<DeviceKeys>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.device_keys(&user, device)).await?
    }

    async fn put_keys(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
        keys: &[PoolKey],
        last_resort: Option<&PoolKey>,
    ) -> Result<u32, BackendError> {
        let (user, keys, last_resort) = (user.to_owned(), keys.to_vec(), last_resort.cloned());
        self.off(move |s| s.put_keys(&user, device, pool, &keys, last_resort.as_ref()))
            .await?
    }

    async fn claim_key(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<Option<ClaimedKey>, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.claim_key(&user, device, pool)).await?
    }

    async fn key_count(
        &self,
        user: &str,
        device: DeviceId,
        pool: KeyPool,
    ) -> Result<u32, BackendError> {
        let user = user.to_owned();
        self.off(move |s| s.key_count(&user, device, pool)).await?
    }
}

#[async_trait]
impl OwnershipStore for FjallStore {
    async fn claim_ownership(
        &self,
        id: ConversationId,
        node: &str,
    ) -> Result<FenceToken, BackendError> {
        let node = node.to_owned();
        self.off(move |s| s.claim_ownership(id, &node)).await?
    }

    async fn ownership(&self, id: ConversationId) -> Result<Option<Ownership>, BackendError> {
        self.off(move |s| s.ownership(id)).await?
    }
}

#[async_trait]
impl GroupStore for FjallStore {
    async fn group_epoch(&self, id: ConversationId) -> Result<u64, BackendError> {
        self.off(move |s| s.group_epoch(id)).await?
    }

    async fn accept_commit(&self, commit: &CommitRecord) -> Result<CommitOutcome, AppendError> {
        let commit = commit.clone();
        self.off(move |s| s.accept_commit(&commit)).await?
    }

    async fn group_info(&self, id: ConversationId) -> Result<Option<Bytes>, BackendError> {
        self.off(move |s| s.group_info(id)).await?
    }
}

#[async_trait]
impl Store for FjallStore {
    async fn persist(&self) -> Result<(), BackendError> {
        let wait = self.inner.committer.request()?;
        wait.await.map_err(|_| {
            BackendError::unavailable("the journal commit thread (tern-commit) stopped")
        })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_store::BackendErrorKind;

    fn device(device: DeviceId) -> DeviceRecord {
        DeviceRecord {
            device,
            name: "phone".to_owned(),
            public_key: [7; 32],
            created_ms: 1,
        }
    }

    /// A store call that blocks (here: on a stripe lock another thread
    /// holds, as fjall blocks on its journal or version locks during a
    /// flush) must not block the thread that awaits it: a single-threaded
    /// runtime, like a shard's, keeps running its other tasks meanwhile.
    /// Run inline, the call would hold the runtime until the safety
    /// release, and the ticks would come after it.
    #[test]
    fn a_blocked_store_call_does_not_block_the_callers_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path()).unwrap();
        let (locked_tx, locked_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<&str>();
        let inner = Arc::clone(&store.inner);
        let holder = std::thread::spawn(move || {
            let _held = inner.stripe(7);
            locked_tx.send(()).unwrap();
            // Released by the runtime's ticks, or by this safety timeout.
            release_rx
                .recv_timeout(Duration::from_secs(5))
                .unwrap_or("timeout")
        });
        locked_rx.recv().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let ack = store.advance_cursor("alice", 1, 7, 3);
            let ticks = async {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let _ = release_tx.send("ticks");
            };
            let (acked, ()) = tokio::join!(ack, ticks);
            assert_eq!(acked.unwrap(), 3);
        });
        assert_eq!(
            holder.join().unwrap(),
            "ticks",
            "the runtime's other tasks ran while the store call was blocked"
        );
    }

    /// A failed journal sync poisons the store: `persist` and every later
    /// write fail as `Poisoned` (reads still work) until it is reopened.
    #[tokio::test]
    async fn a_failed_sync_poisons_the_store_until_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let store = FjallStore::open(dir.path()).unwrap();
        store.create_account("alice", device(1)).await.unwrap();
        let shared = &store.inner.committer.shared;
        shared.fail_next_sync.store(true, Ordering::SeqCst);
        let failed = store.persist().await.unwrap_err();
        assert_eq!(failed.kind(), BackendErrorKind::Io);
        assert!(!failed.is_retryable());
        let refused = store.create_account("bob", device(1)).await.unwrap_err();
        let CreateAccountError::Backend(refused) = refused else {
            panic!("{refused:?}")
        };
        assert_eq!(refused.kind(), BackendErrorKind::Poisoned);
        let again = store.persist().await.unwrap_err();
        assert_eq!(again.kind(), BackendErrorKind::Poisoned);
        assert_eq!(store.devices("alice").await.unwrap().len(), 1, "reads work");
        drop(store);
        let store = FjallStore::open(dir.path()).unwrap();
        store.create_account("bob", device(1)).await.unwrap();
        store.persist().await.unwrap();
    }
}
