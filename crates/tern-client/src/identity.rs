//! The device identity a client keeps in its state directory: who it is
//! (user, device number) and its Ed25519 signing key, in `identity.toml`
//! written atomically with mode 0600.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

/// File name of the identity inside the state directory.
pub const IDENTITY_FILE: &str = "identity.toml";

/// Why the identity could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("no identity in {0}; register first (tern register --state DIR USER)")]
    Missing(PathBuf),
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
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
        let path = state_dir.join(IDENTITY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::Missing(state_dir.into()))
            }
            Err(source) => return Err(IdentityError::Io { path, source }),
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
        state_dir.join(IDENTITY_FILE).exists()
    }

    /// Saves atomically (temp file with mode 0600, fsync, rename).
    pub fn save(&self, state_dir: &Path) -> Result<(), IdentityError> {
        let path = state_dir.join(IDENTITY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state_dir).map_err(io)?;
        let file = IdentityFile {
            user: self.user.clone(),
            device: self.device,
            signing_key: hex::encode(self.key.to_bytes()),
        };
        let text = toml::to_string(&file).map_err(|e| IdentityError::Corrupt {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let tmp = path.with_extension("toml.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&tmp).map_err(io)?;
        out.write_all(text.as_bytes())
            .and_then(|()| out.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_roundtrip() {
        let dir = std::env::temp_dir().join(format!("tern-identity-{}", std::process::id()));
        let mut id = Identity::generate("alice");
        id.device = 3;
        id.save(&dir).expect("saves");
        let back = Identity::load(&dir).expect("loads");
        assert_eq!(back.user, "alice");
        assert_eq!(back.device, 3);
        assert_eq!(back.key.to_bytes(), id.key.to_bytes());
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(
            Identity::load(&dir),
            Err(IdentityError::Missing(_))
        ));
    }
}
