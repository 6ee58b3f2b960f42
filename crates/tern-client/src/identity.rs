//! The device identity a client keeps in its state directory: who it is
//! (user, device number) and its Ed25519 signing key, in `identity.toml`
//! written atomically with mode 0600 (through [`StateDir`]).

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::state_dir::{StateDir, StateDirError};

/// File name of the identity inside the state directory.
pub const IDENTITY_FILE: &str = "identity.toml";

/// Why the identity could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no identity in {0}; register first (tern register --state DIR USER)")]
    Missing(PathBuf),
    #[error(transparent)]
    State(#[from] StateDirError),
    #[error("identity file {path} is corrupt: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{0} already holds an identity; use another state directory for another account")]
    Exists(PathBuf),
}

/// A registered device of a user.
#[derive(Clone)]
pub struct Identity {
    pub user: String,
    pub device: u32,
    pub key: SigningKey,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("user", &self.user)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    user: String,
    device: u32,
    signing_key: String,
}

impl Identity {
    /// A fresh key for a device about to register.
    pub fn generate(user: &str) -> Identity {
        Identity {
            user: user.to_owned(),
            device: 0,
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Loads the identity from `state_dir`.
    pub fn load(state_dir: &Path) -> Result<Identity, IdentityError> {
        let dir = StateDir::new(state_dir);
        let path = dir.file(IDENTITY_FILE)?;
        let Some(text) = dir.read_text(IDENTITY_FILE)? else {
            return Err(IdentityError::Missing(state_dir.into()));
        };
        let corrupt = |message: String| IdentityError::Corrupt {
            path: path.clone(),
            message,
        };
        let file: IdentityFile = toml::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        let mut raw = [0u8; 32];
        hex::decode_to_slice(file.signing_key.trim(), &mut raw)
            .map_err(|e| corrupt(format!("signing_key: {e}")))?;
        Ok(Identity {
            user: file.user,
            device: file.device,
            key: SigningKey::from_bytes(&raw),
        })
    }

    /// Whether `state_dir` already holds an identity.
    pub fn exists(state_dir: &Path) -> bool {
        StateDir::new(state_dir).exists(IDENTITY_FILE)
    }

    /// Saves atomically and durably, mode 0600 (see [`StateDir::write`]).
    pub fn save(&self, state_dir: &Path) -> Result<(), IdentityError> {
        let dir = StateDir::new(state_dir);
        let file = IdentityFile {
            user: self.user.clone(),
            device: self.device,
            signing_key: hex::encode(self.key.to_bytes()),
        };
        let text = toml::to_string(&file).map_err(|e| IdentityError::Corrupt {
            path: state_dir.join(IDENTITY_FILE),
            message: e.to_string(),
        })?;
        Ok(dir.write(IDENTITY_FILE, text.as_bytes())?)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_roundtrip() {
        let root = tempfile::tempdir().expect("temp dir");
        let dir = root.path().join("state");
        let mut id = Identity::generate("alice");
        id.device = 3;
        id.save(&dir).expect("saves");
        let back = Identity::load(&dir).expect("loads");
        assert_eq!(back.user, "alice");
        assert_eq!(back.device, 3);
        assert_eq!(back.key.to_bytes(), id.key.to_bytes());
        std::fs::remove_dir_all(&dir).expect("removed");
        assert!(matches!(
            Identity::load(&dir),
            Err(IdentityError::Missing(_))
        ));
    }

    #[test]
    fn a_crash_while_saving_keeps_the_saved_identity() {
        let root = tempfile::tempdir().expect("temp dir");
        let mut id = Identity::generate("alice");
        id.device = 1;
        id.save(root.path()).expect("saves");
        // A save of another identity died before its rename: a partial temp file.
        std::fs::write(
            root.path().join(format!("{IDENTITY_FILE}.tmp")),
            "user = \"mallo",
        )
        .expect("stray temp");
        assert!(Identity::exists(root.path()));
        let back = Identity::load(root.path()).expect("loads the saved one");
        assert_eq!((back.user.as_str(), back.device), ("alice", 1));
        assert_eq!(back.key.to_bytes(), id.key.to_bytes());
    }
}
