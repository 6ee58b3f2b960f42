//! Regression test for issue 14: the store must never free a flushed
//! memtable while it holds the tree's version lock.
//!
//! lsm-tree's version garbage collection (`SuperVersions::maintenance`,
//! which runs under the version-history write lock at every memtable
//! rotation, flush and compaction) used to drop the last reference to a
//! flushed memtable in place: freeing a 64 MiB skiplist took 0.1–0.8 s, and
//! every read and write batch of the keyspace waited for it (the periodic
//! delivery freezes of issue 14). The vendored lsm-tree (vendor/README.md)
//! hands those versions to its `lsm-tree:reaper` thread instead.
//!
//! This test counts, with a global allocator that wraps the system one, the
//! deallocations made on the reaper thread while a memtable of 100,000
//! entries is flushed and its versions collected. Without the patch the
//! reaper thread does not exist and the frees happen on `fjall:worker`
//! under the lock: the test fails. It then checks that the reaper paused
//! while freeing (its voluntary context switches), so that a writer never
//! waits a whole time slice for a malloc arena lock the preempted reaper
//! holds. It does not time anything.

#![cfg(target_os = "linux")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fjall::{Database, KeyspaceCreateOptions};

/// Kernel thread id of `lsm-tree:reaper` once found (0 before).
static REAPER_TID: AtomicI64 = AtomicI64::new(0);
/// Deallocations made on that thread.
static REAPER_FREES: AtomicU64 = AtomicU64::new(0);

struct Counting;

thread_local! {
    /// This thread's kernel id, cached (`gettid` allocates nothing).
    static TID: i64 = i64::from(gettid());
}

#[allow(unsafe_code)]
fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping touches only atomics and a const-initialised thread local.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let reaper = REAPER_TID.load(Ordering::Relaxed);
        if reaper != 0 && TID.try_with(|tid| *tid == reaper).unwrap_or(false) {
            REAPER_FREES.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Thread id of this process's thread named `name`, if any.
fn thread_named(name: &str) -> Option<i64> {
    std::fs::read_dir("/proc/self/task")
        .ok()?
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })?
        .file_name()
        .to_str()?
        .parse()
        .ok()
}

#[test]
fn flushed_memtables_are_freed_on_the_reaper_thread_not_under_the_version_lock() {
    const ENTRIES: u64 = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::builder(dir.path()).open().expect("opens");
    let ks = db
        .keyspace("msgs", KeyspaceCreateOptions::default)
        .expect("keyspace");
    // Each entry is three heap blocks in the memtable (skiplist node, key,
    // value: both over byteview's 20-byte inline size).
    let value = [7u8; 64];
    for i in 0..ENTRIES {
        ks.insert(format!("conversation-key-{i:016}"), value.as_slice())
            .expect("insert");
    }
    // Seal and flush the memtable; then write again and rotate once more,
    // which collects the versions that still held the flushed memtable.
    ks.rotate_memtable_and_wait().expect("first flush");
    ks.insert("after-first-flush-key-0000000", value.as_slice())
        .expect("insert");
    ks.rotate_memtable_and_wait().expect("second flush");

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if REAPER_TID.load(Ordering::Relaxed) == 0 {
            if let Some(tid) = thread_named("lsm-tree:reaper") {
                REAPER_TID.store(tid, Ordering::Relaxed);
            }
        }
        // The reaper may have freed the memtable before we learnt its id:
        // then one more rotation hands it the next one to count.
        if REAPER_FREES.load(Ordering::Relaxed) >= ENTRIES {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the flushed memtable was not freed on the lsm-tree:reaper thread \
             (reaper thread {}, {} frees counted there): is vendor/lsm-tree's \
             patch still applied (vendor/README.md)?",
            REAPER_TID.load(Ordering::Relaxed),
            REAPER_FREES.load(Ordering::Relaxed),
        );
        for i in 0..ENTRIES {
            ks.insert(format!("conversation-key-{i:016}"), value.as_slice())
                .expect("insert");
        }
        ks.rotate_memtable_and_wait().expect("flush");
        ks.insert("after-flush-key-000000000000", value.as_slice())
            .expect("insert");
        ks.rotate_memtable_and_wait().expect("flush");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The reaper frees in batches of 256 entries with a pause after each,
    // so that it is not preempted holding the malloc arena lock of a
    // writer (vendor/README.md, patch 1): freeing 100,000 entries took at
    // least one voluntary sleep per batch. Without the pauses the reaper
    // sleeps only between batches of garbage (a handful of times).
    let reaper = REAPER_TID.load(Ordering::Relaxed);
    let paced = ENTRIES / 256 / 2;
    let deadline = Instant::now() + Duration::from_secs(20);
    while voluntary_switches(reaper) < paced {
        assert!(
            Instant::now() < deadline,
            "the reaper freed the memtable without pausing ({} voluntary context \
             switches, at least {paced} expected): is vendor/lsm-tree's paced \
             free still applied (vendor/README.md)?",
            voluntary_switches(reaper),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `voluntary_ctxt_switches` of thread `tid` of this process (0 if unread).
fn voluntary_switches(tid: i64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"));
    status
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}
