//! The cross-process lock on a state directory: one process at a time
//! holds a device's Olm and MLS state, because two processes that each load,
//! change and save it would overwrite each other's ratchets (a MAC mismatch
//! on the next direct message, an MLS epoch rolled back).
//!
//! [`StateLock::acquire`] takes an exclusive advisory lock (`flock` on Unix,
//! `LockFileEx` on Windows, through `fs4`) on `STATE_DIR/tern.lock` and
//! writes the holder's pid into it. The lock is released when the value is
//! dropped, and by the operating system when the process ends, however it
//! ends: a crashed holder never leaves a stale lock. A second acquirer, in
//! this process or another, gets [`StateLockError::InUse`] naming the
//! holder's pid, and touches nothing else in the directory.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::state_dir::{StateDir, StateDirError};

/// Name of the lock file in the state directory.
pub const LOCK_FILE: &str = "tern.lock";

/// Why the state directory could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum StateLockError {
    /// Another holder (another process, or another client in this one) has
    /// the directory; `pid` is what it wrote in the lock file (`None` if it
    /// could not be read, e.g. the holder had not written it yet).
    #[error("state directory {} is in use by another tern process ({}); one process at a time may use it (while `tern listen` runs there, most tern commands on it are passed to that listener; send-file, fetch, call, answer and hangup are not: stop the listener first)", .dir.display(), holder(*.pid))]
    InUse { dir: PathBuf, pid: Option<u32> },
    /// The state directory could not be created.
    #[error(transparent)]
    Dir(#[from] StateDirError),
    /// The lock file could not be created, locked or written.
    #[error("cannot lock the state directory {}: {source}", .dir.display())]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_owned(),
    }
}

/// An exclusive hold on a state directory, released on drop.
#[derive(Debug)]
pub struct StateLock {
    dir: PathBuf,
    file: File,
}

impl StateLock {
    /// Locks `dir` (created, mode 0700, if missing) for this process, or
    /// fails at once with [`StateLockError::InUse`] if someone holds it.
    pub fn acquire(dir: &Path) -> Result<StateLock, StateLockError> {
        let io = |source| StateLockError::Io {
            dir: dir.to_owned(),
            source,
        };
        StateDir::new(dir).create_dir()?;
        let path = dir.join(LOCK_FILE);
        let mut options = OpenOptions::new();
        // Never truncate before holding the lock: that would erase the
        // holder's pid.
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(io)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(fs4::TryLockError::WouldBlock) => {
                return Err(StateLockError::InUse {
                    dir: dir.to_owned(),
                    pid: read_pid(&mut file),
                })
            }
            Err(fs4::TryLockError::Error(e)) => return Err(io(e)),
        }
        write_pid(&mut file).map_err(io)?;
        Ok(StateLock {
            dir: dir.to_owned(),
            file,
        })
    }

    /// The locked directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes
        // the release immediate even if a clone of the descriptor lives on.
        let _ = fs4::FileExt::unlock(&self.file);
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("bob");
        let held = StateLock::acquire(&state).unwrap();
        match StateLock::acquire(&state) {
            Err(StateLockError::InUse { dir, pid }) => {
                assert_eq!(dir, state);
                assert_eq!(pid, Some(std::process::id()));
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(held);
        let again = StateLock::acquire(&state).unwrap();
        assert_eq!(again.dir(), state);
    }

    #[test]
    fn the_in_use_error_names_the_directory_and_the_pid() {
        let error = StateLockError::InUse {
            dir: PathBuf::from("/tmp/bob"),
            pid: Some(42),
        };
        let text = error.to_string();
        assert!(
            text.starts_with("state directory /tmp/bob is in use by another tern process (pid 42)"),
            "{text}"
        );
    }
}
