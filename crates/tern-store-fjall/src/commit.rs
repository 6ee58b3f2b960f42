//! Group commit: the `tern-commit` thread is the only place that syncs the
//! journal. Callers of `persist` queue a waiter; the thread drains every
//! waiter queued so far, syncs once and answers them all. A failed sync
//! poisons the store (see [`tern_store::Poison`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use fjall::{Database, PersistMode};
use tern_store::{BackendError, Poison};
use tokio::sync::oneshot;

/// Sync mode of the group commit. The journal is preallocated and only ever
/// appended to, so `fdatasync` (which still syncs size and block allocation)
/// is enough; fjall fsyncs the directory itself when it creates journals.
const COMMIT_MODE: PersistMode = PersistMode::SyncData;

type Waiter = oneshot::Sender<Result<(), BackendError>>;

/// What the commit thread shares with the store.
#[derive(Default)]
pub struct CommitShared {
    pub fsyncs: AtomicU64,
    pub served: AtomicU64,
    /// Set when a sync fails: the store then refuses writes until reopened.
    pub poison: Poison,
    /// Tests only: fail the next sync as if `fdatasync` had.
    #[cfg(test)]
    pub fail_next_sync: std::sync::atomic::AtomicBool,
}

/// The `tern-commit` thread: the only place that syncs the journal.
pub struct Committer {
    tx: Option<mpsc::Sender<Waiter>>,
    handle: Option<JoinHandle<()>>,
    pub shared: Arc<CommitShared>,
}

impl Committer {
    pub fn spawn(db: Database, dir: PathBuf) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let shared = Arc::new(CommitShared::default());
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("tern-commit".to_string())
            .spawn(move || commit_loop(&db, &mut JournalSync::new(dir), &rx, &thread_shared))?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
            shared,
        })
    }

    /// Queues one persist request; the receiver completes after its sync.
    pub fn request(&self) -> Result<oneshot::Receiver<Result<(), BackendError>>, BackendError> {
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
    BackendError::unavailable("the journal commit thread (tern-commit) is not running")
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
    shared: &CommitShared,
) {
    while let Ok(first) = rx.recv() {
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        let result = sync_once(db, journals, shared);
        shared.fsyncs.fetch_add(1, Ordering::SeqCst);
        shared
            .served
            .fetch_add(waiters.len() as u64, Ordering::SeqCst);
        for waiter in waiters {
            let reply = result.clone();
            // A caller that gave up waiting is not an error.
            let _ = waiter.send(reply);
        }
    }
    if let Err(e) = db.persist(COMMIT_MODE) {
        tracing::error!("final journal sync at shutdown failed: {e}");
    }
}

/// One sync of the journal. A failure poisons the store: what the journal
/// holds after a failed `fdatasync` is unknown (the kernel may have dropped
/// the dirty pages), so no later write may be acknowledged on top of it.
fn sync_once(
    db: &Database,
    journals: &mut JournalSync,
    shared: &CommitShared,
) -> Result<(), BackendError> {
    shared.poison.check()?;
    #[cfg(test)]
    if shared.fail_next_sync.swap(false, Ordering::SeqCst) {
        let why = "journal sync failed: injected by a test".to_string();
        shared.poison.set(why.clone());
        return Err(BackendError::io(why));
    }
    journals.sync(db).map_err(|e| {
        let why = format!("journal sync failed: {e}");
        shared.poison.set(why.clone());
        BackendError::io(why)
    })
}
