//! Group commit: the `tern-commit` thread is the only place that syncs the
//! journal. Callers of `persist` queue a waiter; the thread drains every
//! waiter queued so far, syncs once and answers them all. A failed sync
//! poisons the store (see [`tern_store::Poison`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use fjall::{Database, PersistMode};
use tern_store::{BackendError, Poison};
use tokio::sync::oneshot;

/// Sync mode of the group commit. The journal is preallocated and only ever
/// appended to, so `fdatasync` (which still syncs size and block allocation)
/// is enough; fjall fsyncs the directory itself when it creates journals.
const COMMIT_MODE: PersistMode = PersistMode::SyncData;

type Waiter = oneshot::Sender<Result<(), BackendError>>;

/// What the commit thread shares with the store.
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
    /// Starts the thread; `interval` is the least time between the starts
    /// of two syncs (see [`space_out`]).
    pub fn spawn(
        db: Database,
        dir: PathBuf,
        interval: Duration,
        poison: Poison,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Waiter>();
        let shared = Arc::new(CommitShared {
            fsyncs: AtomicU64::new(0),
            served: AtomicU64::new(0),
            poison,
            #[cfg(test)]
            fail_next_sync: std::sync::atomic::AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let handle = std::thread::Builder::new()
            .name("tern-commit".to_string())
            .spawn(move || {
                let mut journals = JournalSync::new(dir);
                commit_loop(&db, &mut journals, &rx, &thread_shared, interval);
            })?;
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
/// then `fdatasync` of the active journal through our own handle. fsync acts
/// on the inode, so it covers bytes fjall wrote through its own handle. Sealed
/// journals were `SyncAll`ed by fjall when it rotated them (under the journal
/// lock, so after every write they hold), hence only the newest journal, the
/// active one, is synced; the directory is synced whenever the set of journal
/// files changes. If no `*.jnl` file is found (another fjall layout) this
/// falls back to `Database::persist`.
///
/// Only the active journal is ever held open: a handle on a sealed journal
/// would outlive fjall's deletion of it, and closing the last handle of a
/// deleted file frees its blocks right there — on this mount (`discard`)
/// with a synchronous discard of the whole 64–120 MB file, which an off-CPU
/// profile caught stalling this thread, and so every acknowledged write,
/// for 20–30 ms (issue 14).
struct JournalSync {
    dir: PathBuf,
    /// The active (newest) journal and our handle on it.
    active: Option<(PathBuf, std::fs::File)>,
    /// The directory's mtime when the journal files were last listed, and
    /// when that listing was made.
    listed: Option<(SystemTime, SystemTime)>,
}

/// A directory mtime this close to the listing that saw it may hide a
/// change made in the same coarse clock tick (file times use the kernel's
/// coarse clock, 1–10 ms): list again rather than trust it.
const RACY_MTIME: Duration = Duration::from_millis(50);

impl JournalSync {
    fn new(dir: PathBuf) -> Self {
        JournalSync {
            dir,
            active: None,
            listed: None,
        }
    }

    fn sync(&mut self, db: &Database) -> Result<(), String> {
        db.persist(PersistMode::Buffer).map_err(|e| e.to_string())?;
        if self.active.is_none() || self.journals_may_have_changed() {
            let names = self.journal_names().map_err(|e| e.to_string())?;
            let Some(newest) = names.last() else {
                return db.persist(COMMIT_MODE).map_err(|e| e.to_string());
            };
            if self.active.as_ref().is_none_or(|(path, _)| path != newest) {
                self.reopen(newest).map_err(|e| e.to_string())?;
            }
        }
        match &self.active {
            Some((_, file)) => file.sync_data().map_err(|e| e.to_string()),
            None => db.persist(COMMIT_MODE).map_err(|e| e.to_string()),
        }
    }

    /// Whether fjall may have created or removed a journal since the last
    /// listing: one `stat` of the directory instead of listing it on every
    /// sync. Every write a sync must cover returned before the sync was
    /// asked for, so any journal holding it existed before this check.
    fn journals_may_have_changed(&self) -> bool {
        let Some((seen, listed_at)) = self.listed else {
            return true;
        };
        let mtime = std::fs::metadata(&self.dir).and_then(|m| m.modified());
        match mtime {
            Ok(mtime) if mtime == seen => {
                listed_at.duration_since(mtime).unwrap_or(Duration::ZERO) < RACY_MTIME
            }
            _ => true,
        }
    }

    fn journal_names(&mut self) -> std::io::Result<Vec<PathBuf>> {
        let listed_at = SystemTime::now();
        let mtime = std::fs::metadata(&self.dir)?.modified()?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
            .collect();
        names.sort();
        self.listed = Some((mtime, listed_at));
        Ok(names)
    }

    /// Switches to journal `newest` and syncs the directory. The previous
    /// one is sealed and, that soon after its rotation, still on disk (fjall
    /// deletes a journal only after every keyspace flushed past it), so
    /// closing it frees nothing.
    fn reopen(&mut self, newest: &Path) -> std::io::Result<()> {
        self.active = Some((newest.to_path_buf(), std::fs::File::open(newest)?));
        std::fs::File::open(&self.dir)?.sync_all()
    }
}

/// Waits until `interval` has passed since the last sync started: a request
/// after a quiet period is synced at once, while under load the syncs are
/// spaced so that each covers the writes of more requests (group commit with
/// a delay, like PostgreSQL's `commit_delay` or MySQL's
/// `binlog_group_commit_sync_delay`, but only when syncs follow each other).
fn space_out(last_start: Option<Instant>, interval: Duration) {
    let Some(due) = last_start.and_then(|last| last.checked_add(interval)) else {
        return;
    };
    let now = Instant::now();
    if now < due {
        std::thread::sleep(due - now);
    }
}

fn commit_loop(
    db: &Database,
    journals: &mut JournalSync,
    rx: &mpsc::Receiver<Waiter>,
    shared: &CommitShared,
    interval: Duration,
) {
    let mut last_start: Option<Instant> = None;
    while let Ok(first) = rx.recv() {
        space_out(last_start, interval);
        let mut waiters = vec![first];
        waiters.extend(rx.try_iter());
        last_start = Some(Instant::now());
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
    // A poisoned store syncs nothing more: what failed was answered with an
    // error and must not become durable now.
    if shared.poison.is_set() {
        return;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A journal created after a listing is noticed by the next sync (the
    /// directory's mtime moved), and an unchanged directory is not listed.
    #[test]
    fn a_new_journal_is_noticed_without_listing_every_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0.jnl"), b"").unwrap();
        let ten_seconds_ago = SystemTime::now() - Duration::from_secs(10);
        std::fs::File::open(dir.path())
            .unwrap()
            .set_modified(ten_seconds_ago)
            .unwrap();
        let mut journals = JournalSync::new(dir.path().to_path_buf());
        assert!(journals.journals_may_have_changed(), "never listed yet");
        let names = journals.journal_names().unwrap();
        assert_eq!(names.len(), 1);
        assert!(!journals.journals_may_have_changed(), "nothing changed");
        std::fs::write(dir.path().join("1.jnl"), b"").unwrap();
        assert!(journals.journals_may_have_changed(), "a journal appeared");
        assert_eq!(journals.journal_names().unwrap().len(), 2);
        assert!(
            journals.journals_may_have_changed(),
            "an mtime as recent as the listing is not trusted"
        );
    }

    /// Open handles of this process on files named `*.jnl` in `dir`
    /// (`/proc/self/fd` links; a deleted file shows as `path (deleted)`).
    #[cfg(target_os = "linux")]
    fn open_journals(dir: &Path) -> Vec<String> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
            .filter(|target| target.starts_with(dir))
            .map(|target| target.display().to_string())
            .filter(|target| target.contains(".jnl"))
            .collect()
    }

    /// Only the active journal is held: after a rotation the sealed one is
    /// closed, so fjall's deletion of it later frees its blocks on fjall's
    /// thread, never on the commit thread when a handle closes (issue 14).
    #[cfg(target_os = "linux")]
    #[test]
    fn only_the_active_journal_is_held_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::builder(dir.path()).open().unwrap();
        let mut journals = JournalSync::new(dir.path().to_path_buf());
        journals.sync(&db).unwrap();
        let count = |name: &str| {
            open_journals(dir.path())
                .iter()
                .filter(|p| p.ends_with(name))
                .count()
        };
        // fjall's own handle on its active journal, and ours.
        let before = count("/0.jnl");
        assert!(before >= 2, "fjall's handle and ours on 0.jnl: {before}");
        // A rotation: a newer journal appears (fjall syncs the sealed one
        // itself when it rotates).
        std::fs::write(dir.path().join("1.jnl"), b"").unwrap();
        journals.listed = None;
        journals.sync(&db).unwrap();
        assert_eq!(count("/1.jnl"), 1, "ours on the new active journal");
        assert_eq!(count("/0.jnl"), before - 1, "ours on the sealed one closed");
    }
}
