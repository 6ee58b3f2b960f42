//! The client's state directory: the one place that reads and writes its
//! files (identity, Olm and MLS state, the CLI's server settings).
//!
//! Every write is atomic and durable: the bytes go to a temp file in the
//! same directory (mode 0600), the file is fsynced, renamed over the target,
//! and the directory is fsynced so the rename itself survives a crash. A
//! reader therefore sees the old file or the new one, never a mix, and a
//! crash before the rename leaves the old file as it was (plus a stray temp
//! file that the next write of that file replaces). Directories this module
//! creates get mode 0700.
//!
//! Only one process may use a state directory at a time: the SDK holds
//! [`super::state_lock::StateLock`] on it while a client is open.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Why a state-directory operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; check that the state directory is writable and the disk is not full")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid UTF-8 text")]
    NotText { path: PathBuf },
    #[error("{0:?} is not a plain file name (no separators, not empty, not . or ..)")]
    BadName(String),
}

/// Suffix of the temp file a write goes through (`NAME.tmp`).
pub const TEMP_SUFFIX: &str = ".tmp";

/// A state directory (or a subdirectory of one). Creating the value does no
/// I/O; the directory is created by the first write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> StateDir {
        StateDir { path: path.into() }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A subdirectory (e.g. `mls`), also written atomically.
    pub fn subdir(&self, name: &str) -> Result<StateDir, StateDirError> {
        Ok(StateDir::new(self.file(name)?))
    }

    /// The path of file `name` in this directory.
    pub fn file(&self, name: &str) -> Result<PathBuf, StateDirError> {
        check_name(name)?;
        Ok(self.path.join(name))
    }

    /// Whether file `name` exists (a temp file left by a crash does not count).
    pub fn exists(&self, name: &str) -> bool {
        self.file(name).is_ok_and(|p| p.exists())
    }

    /// The contents of file `name`, or `None` when there is none.
    pub fn read(&self, name: &str) -> Result<Option<Vec<u8>>, StateDirError> {
        let path = self.file(name)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateDirError::Read { path, source }),
        }
    }

    /// The text of file `name`, or `None` when there is none.
    pub fn read_text(&self, name: &str) -> Result<Option<String>, StateDirError> {
        match self.read(name)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes)
                .map(Some)
                .map_err(|_| StateDirError::NotText {
                    path: self.path.join(name),
                }),
        }
    }

    /// Replaces file `name` with `bytes`, atomically and durably (see the
    /// module docs), with mode 0600. Creates the directory if needed.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<(), StateDirError> {
        self.stage(name, bytes)?.commit()
    }

    /// The first half of [`StateDir::write`]: the bytes are durable in the
    /// temp file, and the target is untouched until [`Staged::commit`].
    fn stage(&self, name: &str, bytes: &[u8]) -> Result<Staged, StateDirError> {
        let target = self.file(name)?;
        self.create()?;
        let temp = self.path.join(format!("{name}{TEMP_SUFFIX}"));
        let write = |source| StateDirError::Write {
            path: temp.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp).map_err(write)?;
        // A temp file left by a crash may have been created with another mode.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(write)?;
        }
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(write)?;
        Ok(Staged {
            dir: self.path.clone(),
            temp,
            target,
        })
    }

    /// Creates the directory (and missing parents, mode 0700) if it does
    /// not exist, and makes the new entries durable.
    pub fn create_dir(&self) -> Result<(), StateDirError> {
        self.create()
    }

    /// Creates the directory (and missing parents, mode 0700) and makes the
    /// new entries durable.
    fn create(&self) -> Result<(), StateDirError> {
        let mut missing = Vec::new();
        let mut dir = self.path.as_path();
        while !dir.is_dir() {
            missing.push(dir);
            match dir.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => dir = parent,
                _ => break,
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let error = |source| StateDirError::CreateDir {
            path: self.path.clone(),
            source,
        };
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&self.path).map_err(error)?;
        // Each new directory is an entry in its parent: sync the parents.
        for created in missing {
            let parent = match created.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            sync_dir(parent).map_err(error)?;
        }
        Ok(())
    }
}

/// A write whose temp file is complete and synced, not yet renamed.
#[derive(Debug)]
struct Staged {
    dir: PathBuf,
    temp: PathBuf,
    target: PathBuf,
}

impl Staged {
    /// Renames the temp file over the target and syncs the directory.
    fn commit(self) -> Result<(), StateDirError> {
        let write = |source| StateDirError::Write {
            path: self.target.clone(),
            source,
        };
        std::fs::rename(&self.temp, &self.target).map_err(write)?;
        sync_dir(&self.dir).map_err(write)
    }
}

/// Makes a directory's entries (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Directories cannot be opened for syncing here; NTFS journals renames.
        let _ = dir;
        Ok(())
    }
}

fn check_name(name: &str) -> Result<(), StateDirError> {
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.ends_with(TEMP_SUFFIX);
    if plain {
        Ok(())
    } else {
        Err(StateDirError::BadName(name.to_owned()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_roundtrips_and_replaces() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::new(root.path());
        assert_eq!(dir.read("a.toml").unwrap(), None);
        assert!(!dir.exists("a.toml"));
        dir.write("a.toml", b"one").unwrap();
        assert!(dir.exists("a.toml"));
        assert_eq!(dir.read("a.toml").unwrap().as_deref(), Some(&b"one"[..]));
        dir.write("a.toml", b"two, longer than one").unwrap();
        assert_eq!(
            dir.read_text("a.toml").unwrap().as_deref(),
            Some("two, longer than one")
        );
        dir.write("a.toml", b"3").unwrap();
        assert_eq!(dir.read_text("a.toml").unwrap().as_deref(), Some("3"));
        // Only the file itself is left: no temp files.
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.toml"]);
    }

    #[test]
    fn a_crash_before_the_rename_leaves_the_old_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::new(root.path());
        dir.write("state.bin", b"old state").unwrap();
        // The new bytes are written and synced, then the process dies.
        let staged = dir
            .stage("state.bin", b"new state, never committed")
            .unwrap();
        assert!(staged.temp.exists());
        drop(staged);
        // Reopening reads the old file, whole.
        let reopened = StateDir::new(root.path());
        assert_eq!(
            reopened.read("state.bin").unwrap().as_deref(),
            Some(&b"old state"[..])
        );
        // The next write replaces the stray temp file and succeeds.
        reopened.write("state.bin", b"next").unwrap();
        assert_eq!(
            reopened.read("state.bin").unwrap().as_deref(),
            Some(&b"next"[..])
        );
        assert!(!root.path().join("state.bin.tmp").exists());
    }

    #[test]
    fn a_stray_partial_temp_file_is_ignored_and_replaced() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::new(root.path());
        dir.write("identity.toml", b"user = \"alice\"").unwrap();
        // A crash mid-write left a truncated temp file, with a loose mode.
        let stray = root.path().join("identity.toml.tmp");
        std::fs::write(&stray, b"user = \"al").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&stray, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let reopened = StateDir::new(root.path());
        assert_eq!(
            reopened.read_text("identity.toml").unwrap().as_deref(),
            Some("user = \"alice\"")
        );
        reopened.write("identity.toml", b"user = \"bob\"").unwrap();
        assert_eq!(
            reopened.read_text("identity.toml").unwrap().as_deref(),
            Some("user = \"bob\"")
        );
        assert!(!stray.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(root.path().join("identity.toml"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn the_first_write_creates_missing_directories_privately() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::new(root.path().join("state"))
            .subdir("mls")
            .unwrap();
        assert!(!dir.path().exists());
        assert_eq!(dir.read("storage.bin").unwrap(), None);
        dir.write("storage.bin", &[1, 2, 3]).unwrap();
        assert_eq!(dir.read("storage.bin").unwrap(), Some(vec![1, 2, 3]));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for path in [root.path().join("state"), root.path().join("state/mls")] {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                assert_eq!(mode & 0o777, 0o700, "{}", path.display());
            }
            let mode = std::fs::metadata(dir.file("storage.bin").unwrap())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn names_must_be_plain_file_names() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::new(root.path());
        for bad in ["", ".", "..", "../escape", "a/b", "a\\b", "x.tmp"] {
            assert!(
                matches!(dir.write(bad, b"x"), Err(StateDirError::BadName(_))),
                "{bad:?}"
            );
            assert!(matches!(dir.read(bad), Err(StateDirError::BadName(_))));
            assert!(!dir.exists(bad));
        }
    }

    #[test]
    fn read_errors_are_typed() {
        let root = tempfile::tempdir().unwrap();
        let dir = StateDir::new(root.path());
        // A directory where a file is expected cannot be read as one.
        std::fs::create_dir(root.path().join("olm.json")).unwrap();
        assert!(matches!(
            dir.read("olm.json"),
            Err(StateDirError::Read { .. })
        ));
        assert!(matches!(
            dir.write("olm.json", b"{}"),
            Err(StateDirError::Write { .. })
        ));
        std::fs::write(root.path().join("bin"), [0xff, 0xfe]).unwrap();
        assert!(matches!(
            dir.read_text("bin"),
            Err(StateDirError::NotText { .. })
        ));
    }
}
