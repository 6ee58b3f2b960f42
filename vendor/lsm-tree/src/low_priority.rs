//! tern patch: runs the CPU-heavy part of background work — writing a
//! flushed memtable into a table, merging tables in a compaction — on a
//! short-lived thread at the lowest scheduling priority (nice 19).
//!
//! A 64 MiB flush costs 0.3–1.6 s of CPU. At normal priority it takes a
//! core away from the threads that serve requests, and on a busy machine
//! the requests queue behind it (tern issue 14: with every lock problem
//! gone, the seconds whose p99 still rose were exactly the flushes). The
//! whole worker thread cannot be lowered instead: it also takes the
//! journal and version locks that writers wait for, and a nice-19 thread
//! preempted while holding one makes every writer wait behind the
//! scheduler (priority inversion). So only the lock-free middle of the work
//! moves to a thread of its own; the caller waits for it, holding nothing.
//!
//! Lowering a thread's priority needs no privilege (raising it back would,
//! which is why a fresh thread is used rather than the caller's). Where the
//! thread cannot be started the work runs on the caller, as upstream does.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Mutex;

/// Nice value of the worker threads (the lowest priority there is).
const NICE: i32 = 19;

/// How many pieces of work ran on a low-priority thread (for tests).
static RUNS: AtomicU64 = AtomicU64::new(0);

/// Nice value the last such thread read back after lowering itself.
static LAST_NICE: AtomicI32 = AtomicI32::new(0);

/// Runs `work` on a thread named `name` at nice 19 and returns its result;
/// a panic in `work` is resumed on the caller.
pub fn run<T: Send>(name: &str, work: impl FnOnce() -> T + Send) -> T {
    let slot = Mutex::new(Some(work));
    let take = || slot.lock().ok().and_then(|mut w| w.take());
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(scope, || {
                LAST_NICE.store(lower_priority(), Ordering::Relaxed);
                RUNS.fetch_add(1, Ordering::Relaxed);
                take().map(|work| work())
            });
        let done = match spawned {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            Err(_) => None,
        };
        match done {
            Some(result) => result,
            #[expect(clippy::expect_used, reason = "the work is taken exactly once")]
            None => (take().expect("work not yet run"))(),
        }
    })
}

/// Like [`run`], for work whose captures lsm-tree never declared `Send`
/// (`dyn CompactionStrategy`, `dyn DroppedKvCallback` and the compaction
/// flavours are plain data or own only `Send` parts, but their traits carry
/// no `Send` bound).
///
/// # Safety
///
/// Everything `work` captures or returns must be safe to use from another
/// thread while the caller is blocked: no thread-affine value (`Rc`, a held
/// `MutexGuard`, thread-local state).
pub(crate) unsafe fn run_unchecked<T>(name: &str, work: impl FnOnce() -> T) -> T {
    let work = AssertSend(work);
    run(name, move || AssertSend(work.call())).0
}

/// A value moved to the low-priority thread and back (see [`run_unchecked`]).
struct AssertSend<T>(T);

// SAFETY: only built in `run_unchecked`, whose caller guarantees the value
// may cross threads; the caller is blocked meanwhile (scoped thread), so it
// is never used from two threads at once.
#[expect(unsafe_code, reason = "see run_unchecked")]
unsafe impl<T> Send for AssertSend<T> {}

impl<T, F: FnOnce() -> T> AssertSend<F> {
    /// Calls the wrapped closure (a method, so that closures capture the
    /// whole wrapper rather than its field).
    fn call(self) -> T {
        (self.0)()
    }
}

/// `(runs, nice)`: how many pieces of work ran on a low-priority thread and
/// the nice value the last one had (19 on Linux; 0 elsewhere).
#[doc(hidden)]
#[must_use]
pub fn observed() -> (u64, i32) {
    (RUNS.load(Ordering::Relaxed), LAST_NICE.load(Ordering::Relaxed))
}

/// Lowers the calling thread to nice 19 and to the idle I/O class, and
/// returns the nice value it then has (0 where threads have no nice value
/// of their own).
///
/// The I/O class matters as much as the CPU share: a table's writes and its
/// final `fsync` share the device queue with the journal's group commit,
/// which every acknowledged write waits for. Block-layer schedulers that
/// honour I/O priorities (mq-deadline since Linux 5.14, BFQ) serve the idle
/// class only when nothing else waits, with aging against starvation
/// (mq-deadline's `prio_aging_expire`, 10 s); ioprio_set(2). Buffered
/// writes are tagged when they are submitted, which the table writer does
/// itself (`sync_file_range` every 1 MiB, then `fsync`), on this thread.
#[cfg(target_os = "linux")]
#[expect(unsafe_code, reason = "setpriority(2), getpriority(2), ioprio_set(2)")]
pub(crate) fn lower_priority() -> i32 {
    // SAFETY: plain syscalls on the calling thread's own id; no memory is
    // passed. On Linux the nice value and the I/O priority are per thread
    // (`PRIO_PROCESS` / `IOPRIO_WHO_PROCESS` with a thread id), see
    // setpriority(2), "BUGS", and ioprio_set(2). A failure leaves the
    // thread's priority as it was, which is only slower, never wrong.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE);
        libc::syscall(
            libc::SYS_ioprio_set,
            IOPRIO_WHO_PROCESS,
            tid,
            IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
        );
        libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t)
    }
}

/// `ioprio_set(2)` target kind: one thread (`linux/ioprio.h`).
#[cfg(target_os = "linux")]
const IOPRIO_WHO_PROCESS: libc::c_int = 1;
/// The idle I/O scheduling class (`linux/ioprio.h`).
#[cfg(target_os = "linux")]
const IOPRIO_CLASS_IDLE: libc::c_int = 3;
/// Bit position of the class in an I/O priority value (`linux/ioprio.h`).
#[cfg(target_os = "linux")]
const IOPRIO_CLASS_SHIFT: libc::c_int = 13;

/// Lowers the calling thread's priority (nothing to do here) and returns 0.
#[cfg(not(target_os = "linux"))]
pub(crate) fn lower_priority() -> i32 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_elsewhere_and_returns() {
        let caller = std::thread::current().id();
        let (other, value) = run("lsm-tree:test", || (std::thread::current().id(), 7));
        assert_ne!(other, caller);
        assert_eq!(value, 7);
        #[cfg(target_os = "linux")]
        assert_eq!(observed().1, NICE);
    }
}
