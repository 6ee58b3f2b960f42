//! Regression test for issue 14: flushes and compactions must build their
//! tables at the lowest CPU and I/O priority, never at the priority of the
//! threads that serve requests.
//!
//! Writing a 64 MiB memtable into a table costs 0.3–1.6 s of CPU; at normal
//! priority that took a core away from the shard threads and every flush
//! showed up as a second whose p99 rose to 100–340 ms (docs/PERFORMANCE.md).
//! The vendored lsm-tree (vendor/README.md, patch 3) runs that work on a
//! thread at nice 19 in the idle I/O class while the fjall worker, which
//! holds the locks writers need, keeps its normal priority.
//!
//! This test counts, with a global allocator that wraps the system one, the
//! large allocations (≥ 4 KiB: block buffers, index and filter) made while a
//! memtable is flushed and the tables are compacted, split by the CPU and I/O
//! priority of the allocating thread. Without the patch they are all made at
//! normal priority and the test fails. It times nothing.

#![cfg(target_os = "linux")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fjall::{Database, KeyspaceCreateOptions};

/// Whether allocations are being counted.
static COUNTING: AtomicBool = AtomicBool::new(false);
/// Large allocations made at nice 19 in the idle I/O class.
static LOW: AtomicU64 = AtomicU64::new(0);
/// Large allocations made at any other priority.
static NORMAL: AtomicU64 = AtomicU64::new(0);

/// Smallest allocation counted, in bytes.
const LARGE: usize = 4096;

struct Counting;

/// Whether the calling thread runs at nice 19 in the idle I/O class
/// (`ioprio_get(2)`: class = value >> 13, idle = 3).
#[allow(unsafe_code)]
fn lowest_priority() -> bool {
    // SAFETY: plain syscalls on the calling thread; they allocate nothing.
    let (nice, ioprio) = unsafe {
        let tid = libc::gettid();
        (
            libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t),
            libc::syscall(libc::SYS_ioprio_get, 1, tid),
        )
    };
    nice == 19 && ioprio >> 13 == 3
}

#[allow(unsafe_code)]
// SAFETY: every call is forwarded unchanged to the system allocator; the
// bookkeeping touches only atomics and makes one syscall.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= LARGE && COUNTING.load(Ordering::Relaxed) {
            let counter = if lowest_priority() { &LOW } else { &NORMAL };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Fills `ks` with `entries` fresh entries (in the caller's thread, not
/// counted).
fn fill(ks: &fjall::Keyspace, round: u64, entries: u64) -> fjall::Result<()> {
    let value = [7u8; 64];
    for i in 0..entries {
        ks.insert(format!("conversation-{round}-{i:016}"), value.as_slice())?;
    }
    Ok(())
}

/// Runs `work` with counting on and returns `(low, normal)` large
/// allocations made meanwhile.
fn counted(work: impl FnOnce()) -> (u64, u64) {
    LOW.store(0, Ordering::Relaxed);
    NORMAL.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    work();
    COUNTING.store(false, Ordering::Relaxed);
    (LOW.load(Ordering::Relaxed), NORMAL.load(Ordering::Relaxed))
}

#[test]
fn flushes_and_compactions_build_tables_at_the_lowest_priority() {
    const ENTRIES: u64 = 100_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::builder(dir.path()).open().expect("opens");
    let ks = db
        .keyspace("msgs", KeyspaceCreateOptions::default)
        .expect("keyspace");

    fill(&ks, 0, ENTRIES).expect("fills");
    let (low, normal) = counted(|| ks.rotate_memtable_and_wait().expect("flush"));
    assert!(
        low > 9 * normal,
        "a flush made {low} large allocations at the lowest priority and {normal} \
         at normal priority: is vendor/lsm-tree's low-priority patch still applied \
         (vendor/README.md)?"
    );

    fill(&ks, 1, ENTRIES).expect("fills");
    ks.rotate_memtable_and_wait().expect("second flush");
    let (low, normal) = counted(|| ks.major_compact().expect("compaction"));
    assert!(
        low > 9 * normal,
        "a compaction made {low} large allocations at the lowest priority and {normal} \
         at normal priority: is vendor/lsm-tree's low-priority patch still applied \
         (vendor/README.md)?"
    );
}
