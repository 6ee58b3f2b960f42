//! Regression test for issue 14: a fjall worker must not burn a core while
//! another worker compacts.
//!
//! fjall's worker 0 leaves compactions to the other workers so that it is
//! free for flushes: it hands a `Compact` message back to the pool's queue.
//! While every other worker is busy, that message is the next one worker 0
//! receives, so it handed it back again at once, for as long as the
//! compaction lasted — a busy loop at normal priority (6 % of the machine's
//! CPU in `worker_tick` and `flume::Shared::send` during each flush of the
//! soak run, and the request threads' p99 up to 300 ms; docs/PERFORMANCE.md).
//! The vendored fjall (vendor/README.md) pauses 1 ms after each hand-back.
//!
//! This test runs a compaction in the background on a two-worker pool and
//! compares the CPU time the `fjall:worker` threads used meanwhile (their
//! own, not the table-building threads') with the time it took: a busy loop
//! uses about all of it, the patched pool almost none.

#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use fjall::{Database, KeyspaceCreateOptions};

/// CPU time (user + system) used so far by this process's threads named
/// `fjall:worker`, in clock ticks.
fn worker_cpu_ticks() -> u64 {
    let tasks = std::fs::read_dir("/proc/self/task").expect("/proc/self/task");
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|c| c.trim_end() == "fjall:worker")
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .map(|stat| {
            // Fields after the command name: state is field 3, utime 14,
            // stime 15 (proc(5)).
            let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            after
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|f| f.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
#[allow(unsafe_code)]
fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the system; no memory is touched.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100).max(1)
}

/// Writes the same `entries` keys again (values name the round), so that
/// every flushed table overlaps the others and compacting them is a merge.
fn fill(ks: &fjall::Keyspace, round: u64, entries: u64) {
    let value = [round as u8; 64];
    for i in 0..entries {
        ks.insert(format!("conversation-{i:016}"), value.as_slice())
            .expect("insert");
    }
}

#[test]
fn no_worker_spins_while_another_compacts() {
    const ENTRIES: u64 = 100_000;
    const FLUSHES: u64 = 8;
    /// lsm-tree's leveled strategy merges level 0 at this many tables.
    const L0_THRESHOLD: usize = 4;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Database::builder(dir.path())
        .worker_threads(2)
        .open()
        .expect("opens");
    let ks = db
        .keyspace("msgs", KeyspaceCreateOptions::default)
        .expect("keyspace");

    // Each flush hands both workers a compaction: worker 1 merges level 0
    // once it holds four tables, worker 0 hands its message back. Measured:
    // from each flush until the compaction it started (if any) is done.
    let (mut cpu_ticks, mut wall) = (0, Duration::ZERO);
    for round in 0..FLUSHES {
        fill(&ks, round, ENTRIES);
        let cpu_before = worker_cpu_ticks();
        let start = Instant::now();
        ks.rotate_memtable_and_wait().expect("flush");
        let deadline = start + Duration::from_secs(120);
        while ks.l0_table_count() >= L0_THRESHOLD {
            assert!(Instant::now() < deadline, "level 0 was never compacted");
            std::thread::sleep(Duration::from_millis(10));
        }
        cpu_ticks += worker_cpu_ticks() - cpu_before;
        wall += start.elapsed();
    }
    assert!(
        ks.table_count() < FLUSHES as usize - 1,
        "no merge ran: {} tables after {FLUSHES} flushes",
        ks.table_count()
    );
    let wall_ticks = wall.as_millis() as u64 * ticks_per_second() / 1000;
    assert!(
        cpu_ticks * 4 <= wall_ticks + 20,
        "the fjall workers used {cpu_ticks} ticks of CPU during flushes and \
         compactions that took {wall_ticks} ticks: a worker is spinning; is \
         vendor/fjall's hand-back pause still applied (vendor/README.md)?"
    );
}
