//! Client-side 1:1 end-to-end encryption: one Olm account per device
//! (vodozemac, Matrix's audited Olm: triple-DH session setup with one-time and
//! fallback keys, then the Double Ratchet), and one or more Olm sessions per
//! peer device.
//!
//! # Keys and how they map onto tern's prekey bundle
//!
//! - **Identity key**: the account's long-term Curve25519 key
//!   ([`OlmDevice::identity_key`]). The server's key directory must bind it
//!   to `(user, device)` under the device's Ed25519 signature (the key in
//!   `identity.toml`; the Olm account's own Ed25519 key is not used).
//! - **One-time keys**: single-use Curve25519 keys
//!   ([`OlmDevice::generate_one_time_keys`]), each with a numeric id we assign
//!   (`u32`, unique per device, never reused, distinct from fallback-key ids).
//! - **Fallback key**: a reusable Curve25519 key used when the server has run
//!   out of one-time keys ([`OlmDevice::fallback_key`]). Olm has no separate
//!   *signed prekey*: tern uploads the fallback key as **both** the "signed
//!   prekey" and the "last-resort prekey" of the bundle. Its authenticity
//!   comes from the device's Ed25519 signature over the bundle, made by the
//!   caller, not from Olm. Olm's handshake is triple-DH:
//!   `DH(IK_a, K_b)`, `DH(EK_a, IK_b)`, `DH(EK_a, K_b)` where `K_b` is the
//!   one-time key or, failing that, the fallback key.
//!
//! The SDK fetches a peer device's bundle, builds a [`PeerDevice`] with its
//! identity key and one claimed one-time key (or only the fallback key when
//! none is left), and calls [`OlmDevice::encrypt`]. Check
//! [`OlmDevice::has_session`] first: while a session exists it is used and
//! prekeys are not needed, so do not claim (and waste) a one-time key.
//!
//! # Ciphertext wire format (version 1)
//!
//! ```text
//! +---------+----------+-------------------------------+------------------------+
//! | version | type     | sender's Curve25519 identity  | vodozemac message      |
//! | u8 = 1  | 0 pre-key| key, 32 bytes                 | bytes (PreKeyMessage   |
//! |         | 1 normal |                               | or Message to_bytes()) |
//! +---------+----------+-------------------------------+------------------------+
//! ```
//!
//! Messages are sent as pre-key messages until the sender's session has
//! received a reply; after that they are normal messages.
//!
//! # Replays
//!
//! A normal message decrypts at most once (its message key is deleted).
//! A pre-key message is matched to an existing session by its session id and
//! never creates a second session: the ids of every inbound session ever
//! created are remembered (also after [`OlmDevice::forget_device`]), so a
//! pre-key message made with the reusable fallback key cannot be replayed to
//! create a fresh session. Replays are rejected with
//! [`CryptoError::Replay`]; a replay of a message from a ratchet chain that
//! has already been discarded is rejected too, but may be reported as
//! [`CryptoError::Undecryptable`].
//!
//! # Persistence — read this before integrating
//!
//! State lives in the client's state directory: `olm.json` (the vodozemac
//! account and session pickles, each encrypted with vodozemac's pickle
//! encryption under a 32-byte key, plus plaintext bookkeeping: peer user
//! names and device numbers, our key ids and *public* keys, seen session ids)
//! and `olm.key` (that 32-byte pickle key, raw). Both are written atomically
//! through [`StateDir`] (temp file with mode 0600, fsync, rename, directory
//! fsync).
//! Because the pickle key sits next to the pickles, **the at-rest protection
//! is the operating system's file permissions** (and whatever disk encryption
//! the host has), nothing more; the pickle encryption only keeps the secrets
//! out of plain sight. A platform keystore could hold `olm.key` later.
//!
//! Nothing is written implicitly: every `encrypt`, `decrypt`,
//! `generate_one_time_keys` and fallback-key call changes state that only
//! [`OlmDevice::save`] persists. Call `save` **after encrypting and before the
//! ciphertext leaves the process** (or a crash makes the next message reuse a
//! message key), **after decrypting and before acknowledging** the message
//! (or a crash loses the ability to decrypt it again), and **after generating
//! keys and before uploading them** (or a crash leaves the server handing
//! out keys this device cannot use). One batch of operations may share one
//! `save`. Only one process may use a state directory at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use vodozemac::olm::{
    Account, AccountPickle, DecryptionError, Message, OlmMessage, PreKeyMessage, Session,
    SessionConfig, SessionCreationError, SessionPickle,
};
use vodozemac::{Curve25519PublicKey, KeyId};

use super::state_dir::{StateDir, StateDirError};

/// File holding the pickled account and sessions, inside the state directory.
pub const OLM_STATE_FILE: &str = "olm.json";
/// File holding the 32-byte pickle key, inside the state directory.
pub const OLM_KEY_FILE: &str = "olm.key";

/// First byte of every ciphertext [`OlmDevice::encrypt`] makes.
pub const WIRE_VERSION: u8 = 1;
/// Second byte: a pre-key message (establishes a session).
pub const MESSAGE_TYPE_PRE_KEY: u8 = 0;
/// Second byte: a normal message on an established session.
pub const MESSAGE_TYPE_NORMAL: u8 = 1;
/// Version, type, and the sender's identity key.
pub const HEADER_LEN: usize = 2 + 32;

/// Most sessions kept per peer device (the least recently used is dropped).
/// Several exist only when both sides started a session at the same time.
pub const MAX_SESSIONS_PER_DEVICE: usize = 8;

/// Version of the `olm.json` layout.
const STATE_VERSION: u32 = 1;

/// The Olm flavour every session uses (AES-256-CBC, HMAC-SHA-256 truncated to
/// 8 bytes: libolm-compatible v1; v2 is still experimental in vodozemac).
fn session_config() -> SessionConfig {
    SessionConfig::version_1()
}

/// Why an encryption operation failed. Each message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    #[error(transparent)]
    State(#[from] StateDirError),
    #[error(
        "encryption state {path} is unreadable ({message}); restore olm.json and olm.key together from a backup, \
         or move both away to start this device's encryption afresh (peers must then fetch its new keys)"
    )]
    Corrupt { path: PathBuf, message: String },
    #[error(
        "{state} exists but its key file {key} is missing; restore {key} from the backup made with it, \
         or move {state} away to start afresh (peers must then fetch this device's new keys)"
    )]
    MissingPickleKey { state: PathBuf, key: PathBuf },
    #[error("ciphertext is malformed ({0}); it was damaged or not made by tern: drop it")]
    Malformed(String),
    #[error("ciphertext uses wire version {0}, this build understands {WIRE_VERSION}; upgrade tern to read it")]
    UnsupportedVersion(u8),
    #[error(
        "no prekey for {user}/{device}: its key bundle has neither a one-time key nor a fallback key; \
         fetch the device's keys again"
    )]
    NoPrekey { user: String, device: u32 },
    #[error(
        "the keys of {user}/{device} include an invalid Curve25519 key (a weak, low-order point); \
         do not use this device's key bundle"
    )]
    InvalidKey { user: String, device: u32 },
    #[error(
        "{user}/{device} presents a different identity key than the one our sessions with it use; \
         verify the device out of band, then call forget_device and start over"
    )]
    IdentityKeyChanged { user: String, device: u32 },
    #[error(
        "refusing to encrypt for this device's own identity key; encrypt only for other devices"
    )]
    OwnDevice,
    #[error(
        "no session with {user}/{device} matches this message (never had one, or it was forgotten); \
         drop it and ask the sender to send again, which starts a new session"
    )]
    NoSession { user: String, device: u32 },
    #[error("this message from {user}/{device} was already decrypted (a replay or duplicate delivery); ignore it")]
    Replay { user: String, device: u32 },
    #[error(
        "the pre-key message from {user}/{device} uses a prekey this device no longer holds (already used or \
         rotated away); drop it and ask the sender to fetch fresh prekeys and send again"
    )]
    UnknownPrekey { user: String, device: u32 },
    #[error(
        "cannot decrypt the message from {user}/{device} ({reason}): it was tampered with or made for a session \
         we no longer have; drop it, and ask the sender to resend if it matters"
    )]
    Undecryptable {
        user: String,
        device: u32,
        reason: String,
    },
    #[error("unexpected encryption failure ({0}); this is a bug in tern, please report it")]
    Internal(String),
}

/// A peer device as the key directory describes it: who it is, its
/// Curve25519 identity key, and the prekey to start a session with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerDevice {
    pub user: String,
    pub device: u32,
    /// Long-term Curve25519 identity key.
    pub identity_key: [u8; 32],
    /// A one-time key claimed from the directory, if it had one left.
    pub one_time_key: Option<[u8; 32]>,
    /// The device's fallback key (the bundle's signed / last-resort prekey).
    pub fallback_key: Option<[u8; 32]>,
}

/// Serde helper: a 32-byte key as lowercase hex.
mod hex_key {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(key: &[u8; 32], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(key))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut key = [0u8; 32];
        hex::decode_to_slice(text, &mut key).map_err(serde::de::Error::custom)?;
        Ok(key)
    }
}

/// One of our published one-time keys that vodozemac still holds.
#[derive(Clone, Serialize, Deserialize)]
struct OneTimeKeyRecord {
    key_id: KeyId,
    #[serde(with = "hex_key")]
    public: [u8; 32],
}

/// Our current fallback key.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct FallbackRecord {
    id: u32,
    #[serde(with = "hex_key")]
    public: [u8; 32],
}

/// Sessions with one peer device, the preferred (most recently used) first.
struct PeerSessions {
    identity_key: [u8; 32],
    sessions: Vec<Session>,
}

#[derive(Serialize, Deserialize)]
struct PeerFile {
    user: String,
    device: u32,
    #[serde(with = "hex_key")]
    identity_key: [u8; 32],
    /// Encrypted session pickles, preferred first.
    sessions: Vec<String>,
}

/// The layout of `olm.json`.
#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    /// Encrypted account pickle.
    account: String,
    next_key_id: u32,
    one_time_keys: BTreeMap<u32, OneTimeKeyRecord>,
    fallback: Option<FallbackRecord>,
    peers: Vec<PeerFile>,
    seen_inbound_sessions: BTreeSet<String>,
}

/// This device's Olm account and its sessions with peer devices, persisted in
/// the state directory. See the module docs for the save discipline.
pub struct OlmDevice {
    dir: StateDir,
    pickle_key: [u8; 32],
    account: Account,
    next_key_id: u32,
    one_time_keys: BTreeMap<u32, OneTimeKeyRecord>,
    fallback: Option<FallbackRecord>,
    peers: BTreeMap<String, BTreeMap<u32, PeerSessions>>,
    seen_inbound_sessions: BTreeSet<String>,
}

impl std::fmt::Debug for OlmDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OlmDevice")
            .field("state_dir", &self.dir.path())
            .field("identity_key", &hex::encode(self.identity_key()))
            .field("one_time_keys", &self.one_time_keys.len())
            .field(
                "peer_devices",
                &self.peers.values().map(BTreeMap::len).sum::<usize>(),
            )
            .finish_non_exhaustive()
    }
}

impl OlmDevice {
    /// Loads this device's Olm state from `state_dir`, or creates a new
    /// account (and saves it) when there is none.
    pub fn load_or_create(state_dir: &Path) -> Result<OlmDevice, CryptoError> {
        let dir = StateDir::new(state_dir);
        match dir.read(OLM_STATE_FILE)? {
            Some(bytes) => {
                let pickle_key = match read_pickle_key(&dir)? {
                    Some(key) => key,
                    None => {
                        return Err(CryptoError::MissingPickleKey {
                            state: dir.file(OLM_STATE_FILE)?,
                            key: dir.file(OLM_KEY_FILE)?,
                        })
                    }
                };
                Self::from_state(dir, pickle_key, &bytes)
            }
            None => {
                // A key without state is left over from a crash during creation: reuse it.
                let pickle_key = match read_pickle_key(&dir)? {
                    Some(key) => key,
                    None => {
                        let mut key = [0u8; 32];
                        rand::rngs::OsRng.fill_bytes(&mut key);
                        dir.write(OLM_KEY_FILE, &key)?;
                        key
                    }
                };
                Self::create(dir, pickle_key, Account::new())
            }
        }
    }

    /// Creates this device's Olm state in `state_dir` around an existing
    /// vodozemac account instead of a fresh one, and saves it: for test
    /// vectors made from fixed keys (docs/vectors/e2ee.json), or an account
    /// imported from elsewhere. Its one-time and fallback keys are not
    /// given tern key ids. Refuses a directory that already holds Olm state.
    pub fn create_with_account(
        state_dir: &Path,
        account: Account,
    ) -> Result<OlmDevice, CryptoError> {
        let dir = StateDir::new(state_dir);
        if dir.exists(OLM_STATE_FILE) {
            return Err(CryptoError::Internal(format!(
                "{} already holds Olm state; import an account only into an empty state directory",
                state_dir.display()
            )));
        }
        let mut pickle_key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut pickle_key);
        dir.write(OLM_KEY_FILE, &pickle_key)?;
        Self::create(dir, pickle_key, account)
    }

    /// New state around `account`, saved.
    fn create(
        dir: StateDir,
        pickle_key: [u8; 32],
        account: Account,
    ) -> Result<OlmDevice, CryptoError> {
        let device = OlmDevice {
            dir,
            pickle_key,
            account,
            next_key_id: 1,
            one_time_keys: BTreeMap::new(),
            fallback: None,
            peers: BTreeMap::new(),
            seen_inbound_sessions: BTreeSet::new(),
        };
        device.save()?;
        Ok(device)
    }

    fn from_state(
        dir: StateDir,
        pickle_key: [u8; 32],
        bytes: &[u8],
    ) -> Result<OlmDevice, CryptoError> {
        let path = dir.file(OLM_STATE_FILE)?;
        let corrupt = |message: String| CryptoError::Corrupt {
            path: path.clone(),
            message,
        };
        let file: StateFile = serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.version != STATE_VERSION {
            return Err(corrupt(format!(
                "layout version {} is not {STATE_VERSION}; a newer tern wrote it",
                file.version
            )));
        }
        let account = AccountPickle::from_encrypted(&file.account, &pickle_key).map_err(|e| {
            corrupt(format!(
                "account: {e} (is olm.key the one written with it?)"
            ))
        })?;
        let mut peers: BTreeMap<String, BTreeMap<u32, PeerSessions>> = BTreeMap::new();
        for peer in file.peers {
            let mut sessions = Vec::with_capacity(peer.sessions.len());
            for pickle in &peer.sessions {
                let pickle = SessionPickle::from_encrypted(pickle, &pickle_key).map_err(|e| {
                    corrupt(format!("session with {}/{}: {e}", peer.user, peer.device))
                })?;
                sessions.push(Session::from_pickle(pickle));
            }
            if !sessions.is_empty() {
                peers.entry(peer.user).or_default().insert(
                    peer.device,
                    PeerSessions {
                        identity_key: peer.identity_key,
                        sessions,
                    },
                );
            }
        }
        Ok(OlmDevice {
            dir,
            pickle_key,
            account: Account::from_pickle(account),
            next_key_id: file.next_key_id.max(1),
            one_time_keys: file.one_time_keys,
            fallback: file.fallback,
            peers,
            seen_inbound_sessions: file.seen_inbound_sessions,
        })
    }

    /// Writes the whole state to `olm.json` atomically (mode 0600).
    pub fn save(&self) -> Result<(), CryptoError> {
        let mut peers = Vec::new();
        for (user, devices) in &self.peers {
            for (device, entry) in devices {
                peers.push(PeerFile {
                    user: user.clone(),
                    device: *device,
                    identity_key: entry.identity_key,
                    sessions: entry
                        .sessions
                        .iter()
                        .map(|s| s.pickle().encrypt(&self.pickle_key))
                        .collect(),
                });
            }
        }
        let file = StateFile {
            version: STATE_VERSION,
            account: self.account.pickle().encrypt(&self.pickle_key),
            next_key_id: self.next_key_id,
            one_time_keys: self.one_time_keys.clone(),
            fallback: self.fallback,
            peers,
            seen_inbound_sessions: self.seen_inbound_sessions.clone(),
        };
        let bytes = serde_json::to_vec(&file)
            .map_err(|e| CryptoError::Internal(format!("serialising olm state: {e}")))?;
        Ok(self.dir.write(OLM_STATE_FILE, &bytes)?)
    }

    /// The state directory this device persists to.
    pub fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    /// This device's long-term Curve25519 identity key.
    pub fn identity_key(&self) -> [u8; 32] {
        self.account.curve25519_key().to_bytes()
    }

    fn allocate_key_id(&mut self) -> u32 {
        let id = self.next_key_id;
        // Ids start at 1; wrapping takes 2^32 keys.
        self.next_key_id = self.next_key_id.wrapping_add(1).max(1);
        id
    }

    /// Generates `count` one-time keys and returns them with the ids to upload
    /// them under. They are marked as published at once: save, then upload.
    /// vodozemac keeps at most 5000 unused one-time keys and drops the oldest
    /// beyond that, so keep the server's supply modest (say 50-100).
    pub fn generate_one_time_keys(&mut self, count: usize) -> Vec<(u32, [u8; 32])> {
        let result = self.account.generate_one_time_keys(count);
        if !result.removed.is_empty() {
            let removed: BTreeSet<[u8; 32]> = result
                .removed
                .iter()
                .map(Curve25519PublicKey::to_bytes)
                .collect();
            self.one_time_keys
                .retain(|_, record| !removed.contains(&record.public));
        }
        let mut fresh: Vec<(KeyId, Curve25519PublicKey)> =
            self.account.one_time_keys().into_iter().collect();
        fresh.sort_by_key(|(key_id, _)| *key_id);
        self.account.mark_keys_as_published();
        let mut out = Vec::with_capacity(fresh.len());
        for (key_id, public) in fresh {
            let id = self.allocate_key_id();
            let public = public.to_bytes();
            self.one_time_keys
                .insert(id, OneTimeKeyRecord { key_id, public });
            out.push((id, public));
        }
        out
    }

    /// Ids of our one-time keys that are published and still unused (as far as
    /// this device knows: a key the server handed out is removed only when its
    /// pre-key message arrives).
    pub fn one_time_key_ids(&self) -> Vec<u32> {
        self.one_time_keys.keys().copied().collect()
    }

    /// The current fallback key and its id, generating one if there is none.
    /// Upload it as the bundle's signed prekey and last-resort prekey.
    pub fn fallback_key(&mut self) -> Result<(u32, [u8; 32]), CryptoError> {
        match self.fallback {
            Some(record) => Ok((record.id, record.public)),
            None => self.rotate_fallback_key(),
        }
    }

    /// Replaces the fallback key with a new one (new id). The previous one
    /// still decrypts pre-key messages already in flight until
    /// [`OlmDevice::forget_previous_fallback_key`]; rotating again also
    /// forgets it. Save, then upload the new key.
    pub fn rotate_fallback_key(&mut self) -> Result<(u32, [u8; 32]), CryptoError> {
        self.account.generate_fallback_key();
        let (_, public) = self
            .account
            .fallback_key()
            .into_iter()
            .next()
            .ok_or_else(|| CryptoError::Internal("vodozemac generated no fallback key".into()))?;
        self.account.mark_keys_as_published();
        let record = FallbackRecord {
            id: self.allocate_key_id(),
            public: public.to_bytes(),
        };
        self.fallback = Some(record);
        Ok((record.id, record.public))
    }

    /// Forgets the fallback key that the last rotation replaced; returns
    /// whether there was one. Do this once pre-key messages made with it can
    /// no longer arrive (for example a while after the new key was uploaded).
    pub fn forget_previous_fallback_key(&mut self) -> bool {
        self.account.forget_fallback_key()
    }

    /// Whether a session with this peer device exists (then [`OlmDevice::encrypt`]
    /// needs no prekey).
    pub fn has_session(&self, user: &str, device: u32) -> bool {
        self.peers
            .get(user)
            .and_then(|d| d.get(&device))
            .is_some_and(|p| !p.sessions.is_empty())
    }

    /// The identity key our sessions with this peer device use, if any.
    /// Compare it with the key directory's to detect a changed device.
    pub fn peer_identity_key(&self, user: &str, device: u32) -> Option<[u8; 32]> {
        self.peers
            .get(user)
            .and_then(|d| d.get(&device))
            .map(|p| p.identity_key)
    }

    /// Drops every session with a peer device (revoked devices). Its old
    /// pre-key messages stay rejected as replays. Returns whether any existed.
    pub fn forget_device(&mut self, user: &str, device: u32) -> bool {
        let Some(devices) = self.peers.get_mut(user) else {
            return false;
        };
        let removed = devices.remove(&device).is_some();
        if devices.is_empty() {
            self.peers.remove(user);
        }
        removed
    }

    /// Encrypts `plaintext` for one peer device: on the preferred existing
    /// session with it, or on a new outbound session started from its
    /// one-time key (or fallback key when it has none). Save before sending.
    pub fn encrypt(&mut self, peer: &PeerDevice, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if peer.identity_key == self.identity_key() {
            return Err(CryptoError::OwnDevice);
        }
        let invalid = || CryptoError::InvalidKey {
            user: peer.user.clone(),
            device: peer.device,
        };
        let own_key = self.identity_key();
        if let Some(entry) = self
            .peers
            .get_mut(peer.user.as_str())
            .and_then(|d| d.get_mut(&peer.device))
        {
            if entry.identity_key != peer.identity_key {
                return Err(CryptoError::IdentityKeyChanged {
                    user: peer.user.clone(),
                    device: peer.device,
                });
            }
            if let Some(session) = entry.sessions.first_mut() {
                let message = session.encrypt(plaintext).map_err(|_| invalid())?;
                return Ok(envelope(&own_key, &message));
            }
        }
        let prekey =
            peer.one_time_key
                .or(peer.fallback_key)
                .ok_or_else(|| CryptoError::NoPrekey {
                    user: peer.user.clone(),
                    device: peer.device,
                })?;
        let mut session = self
            .account
            .create_outbound_session(
                session_config(),
                Curve25519PublicKey::from_bytes(peer.identity_key),
                Curve25519PublicKey::from_bytes(prekey),
            )
            .map_err(|_| invalid())?;
        let message = session.encrypt(plaintext).map_err(|_| invalid())?;
        self.add_session(&peer.user, peer.device, peer.identity_key, session);
        Ok(envelope(&own_key, &message))
    }

    /// Puts a new session first for this peer device, dropping the least
    /// recently used beyond [`MAX_SESSIONS_PER_DEVICE`].
    fn add_session(&mut self, user: &str, device: u32, identity_key: [u8; 32], session: Session) {
        let entry = self
            .peers
            .entry(user.to_owned())
            .or_default()
            .entry(device)
            .or_insert_with(|| PeerSessions {
                identity_key,
                sessions: Vec::new(),
            });
        entry.identity_key = identity_key;
        entry.sessions.insert(0, session);
        entry.sessions.truncate(MAX_SESSIONS_PER_DEVICE);
    }

    /// Decrypts a ciphertext that the server says `sender_user`/`sender_device`
    /// sent. A pre-key message creates the inbound session (using up the
    /// one-time key it names). Save before acknowledging the message.
    ///
    /// The sender's identity key is taken from the message: after decrypting
    /// a message that started a session, check [`OlmDevice::peer_identity_key`]
    /// against the key directory.
    pub fn decrypt(
        &mut self,
        sender_user: &str,
        sender_device: u32,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let (message_type, sender_key, body) = parse_envelope(ciphertext)?;
        let replay = || CryptoError::Replay {
            user: sender_user.to_owned(),
            device: sender_device,
        };
        let undecryptable = |reason: String| CryptoError::Undecryptable {
            user: sender_user.to_owned(),
            device: sender_device,
            reason,
        };
        let known = self
            .peers
            .get_mut(sender_user)
            .and_then(|d| d.get_mut(&sender_device));

        if message_type == MESSAGE_TYPE_NORMAL {
            let message =
                Message::from_bytes(body).map_err(|e| CryptoError::Malformed(e.to_string()))?;
            let entry = known.ok_or_else(|| CryptoError::NoSession {
                user: sender_user.to_owned(),
                device: sender_device,
            })?;
            if entry.identity_key != sender_key {
                return Err(CryptoError::Malformed(
                    "the sender identity key in the header is not the one of our session with the sender".into(),
                ));
            }
            return match try_sessions(&mut entry.sessions, &OlmMessage::Normal(message), None) {
                Ok(plaintext) => Ok(plaintext),
                Err(Failure::Replay) => Err(replay()),
                Err(Failure::Other(reason)) => Err(undecryptable(reason)),
                Err(Failure::NoMatch) => Err(undecryptable("no session matched".into())),
            };
        }

        let message =
            PreKeyMessage::from_bytes(body).map_err(|e| CryptoError::Malformed(e.to_string()))?;
        if message.identity_key().to_bytes() != sender_key {
            return Err(CryptoError::Malformed(
                "the sender identity key in the header differs from the one in the pre-key message"
                    .into(),
            ));
        }
        let session_id = message.session_id();
        if let Some(entry) = known {
            if entry.identity_key != sender_key {
                return Err(CryptoError::IdentityKeyChanged {
                    user: sender_user.to_owned(),
                    device: sender_device,
                });
            }
            match try_sessions(
                &mut entry.sessions,
                &OlmMessage::PreKey(message.clone()),
                Some(&session_id),
            ) {
                Ok(plaintext) => return Ok(plaintext),
                Err(Failure::Replay) => return Err(replay()),
                Err(Failure::Other(reason)) => return Err(undecryptable(reason)),
                Err(Failure::NoMatch) => {}
            }
        }
        if self.seen_inbound_sessions.contains(&session_id) {
            // The session it starts existed once (forgotten, evicted, or
            // another sender relays it): never build it a second time.
            return Err(replay());
        }
        let created = self
            .account
            .create_inbound_session(
                session_config(),
                Curve25519PublicKey::from_bytes(sender_key),
                &message,
            )
            .map_err(|e| match e {
                SessionCreationError::MissingOneTimeKey(_) => CryptoError::UnknownPrekey {
                    user: sender_user.to_owned(),
                    device: sender_device,
                },
                SessionCreationError::NonContributoryKey => CryptoError::InvalidKey {
                    user: sender_user.to_owned(),
                    device: sender_device,
                },
                SessionCreationError::MismatchedIdentityKey(..) => {
                    CryptoError::Malformed(e.to_string())
                }
                other => undecryptable(other.to_string()),
            })?;
        let used = message.one_time_key().to_bytes();
        self.one_time_keys.retain(|_, record| record.public != used);
        self.seen_inbound_sessions.insert(session_id);
        self.add_session(sender_user, sender_device, sender_key, created.session);
        Ok(created.plaintext)
    }
}

/// Why no session decrypted a message.
enum Failure {
    /// A session had already used the message's key.
    Replay,
    /// Sessions were tried and failed otherwise (last reason).
    Other(String),
    /// No session was eligible.
    NoMatch,
}

/// Tries the sessions in order (only the one with `only_id` when given); the
/// one that decrypts moves to the front. A failed attempt changes no session.
fn try_sessions(
    sessions: &mut [Session],
    message: &OlmMessage,
    only_id: Option<&str>,
) -> Result<Vec<u8>, Failure> {
    let mut failure = Failure::NoMatch;
    for (index, session) in sessions.iter_mut().enumerate() {
        if only_id.is_some_and(|id| session.session_id() != id) {
            continue;
        }
        match session.decrypt(message) {
            Ok(plaintext) => {
                if let Some(head) = sessions.get_mut(..=index) {
                    head.rotate_right(1);
                }
                return Ok(plaintext);
            }
            Err(DecryptionError::MissingMessageKey(_)) => failure = Failure::Replay,
            Err(e) => {
                if !matches!(failure, Failure::Replay) {
                    failure = Failure::Other(e.to_string());
                }
            }
        }
    }
    Err(failure)
}

fn envelope(sender_key: &[u8; 32], message: &OlmMessage) -> Vec<u8> {
    let (message_type, bytes) = match message {
        OlmMessage::PreKey(m) => (MESSAGE_TYPE_PRE_KEY, m.to_bytes()),
        OlmMessage::Normal(m) => (MESSAGE_TYPE_NORMAL, m.to_bytes()),
    };
    encode_envelope(message_type, sender_key, &bytes)
}

/// Builds the ciphertext wire format (see the module docs) around an
/// encoded vodozemac message: version, `message_type`, the sender's
/// identity key, `body`. Used by [`OlmDevice::encrypt`]; public so test
/// vectors (docs/vectors/e2ee.json) check the exact layout.
pub fn encode_envelope(message_type: u8, sender_key: &[u8; 32], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN.saturating_add(body.len()));
    out.push(WIRE_VERSION);
    out.push(message_type);
    out.extend_from_slice(sender_key);
    out.extend_from_slice(body);
    out
}

/// Splits a ciphertext into (type, sender identity key, vodozemac bytes),
/// checking the version and type bytes and the length (the inverse of
/// [`encode_envelope`]; the vodozemac bytes are not parsed here).
pub fn parse_envelope(ciphertext: &[u8]) -> Result<(u8, [u8; 32], &[u8]), CryptoError> {
    let (header, body) = ciphertext.split_at_checked(HEADER_LEN).ok_or_else(|| {
        CryptoError::Malformed(format!(
            "{} bytes is shorter than the header",
            ciphertext.len()
        ))
    })?;
    let [version, message_type, key @ ..] = header else {
        return Err(CryptoError::Malformed("short header".into()));
    };
    if *version != WIRE_VERSION {
        return Err(CryptoError::UnsupportedVersion(*version));
    }
    if *message_type != MESSAGE_TYPE_PRE_KEY && *message_type != MESSAGE_TYPE_NORMAL {
        return Err(CryptoError::Malformed(format!(
            "unknown message type {message_type}"
        )));
    }
    let key = <[u8; 32]>::try_from(key)
        .map_err(|_| CryptoError::Malformed("short identity key".into()))?;
    Ok((*message_type, key, body))
}

/// Reads `olm.key`: `None` when absent, an error when not exactly 32 bytes.
fn read_pickle_key(dir: &StateDir) -> Result<Option<[u8; 32]>, CryptoError> {
    let Some(bytes) = dir.read(OLM_KEY_FILE)? else {
        return Ok(None);
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map(Some)
        .map_err(|_| CryptoError::Corrupt {
            path: dir.path().join(OLM_KEY_FILE),
            message: format!("the key file holds {} bytes, not 32", bytes.len()),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    struct Dev {
        user: &'static str,
        device: u32,
        dir: TempDir,
        olm: OlmDevice,
    }

    impl Dev {
        fn new(user: &'static str, device: u32) -> Dev {
            let dir = tempfile::tempdir().unwrap();
            let olm = OlmDevice::load_or_create(dir.path()).unwrap();
            Dev {
                user,
                device,
                dir,
                olm,
            }
        }

        /// A bundle with one fresh one-time key and the fallback key.
        fn bundle(&mut self) -> PeerDevice {
            let otk = self.olm.generate_one_time_keys(1);
            let (_, fallback) = self.olm.fallback_key().unwrap();
            PeerDevice {
                user: self.user.into(),
                device: self.device,
                identity_key: self.olm.identity_key(),
                one_time_key: Some(otk[0].1),
                fallback_key: Some(fallback),
            }
        }

        /// Addressing an existing session: no prekeys.
        fn addr(&self) -> PeerDevice {
            PeerDevice {
                user: self.user.into(),
                device: self.device,
                identity_key: self.olm.identity_key(),
                one_time_key: None,
                fallback_key: None,
            }
        }

        fn send(&mut self, to: &PeerDevice, text: &str) -> Vec<u8> {
            self.olm.encrypt(to, text.as_bytes()).unwrap()
        }

        fn recv(&mut self, from: &Dev, ciphertext: &[u8]) -> Result<String, CryptoError> {
            self.olm
                .decrypt(from.user, from.device, ciphertext)
                .map(|p| String::from_utf8(p).unwrap())
        }

        fn reload(&mut self) {
            self.olm.save().unwrap();
            self.olm = OlmDevice::load_or_create(self.dir.path()).unwrap();
        }
    }

    fn message_type(ciphertext: &[u8]) -> u8 {
        ciphertext[1]
    }

    #[test]
    fn two_users_two_devices_fan_out_and_reply() {
        let mut alice_phone = Dev::new("alice", 1);
        let mut alice_laptop = Dev::new("alice", 2);
        let mut bob_phone = Dev::new("bob", 1);
        let mut bob_laptop = Dev::new("bob", 2);

        // alice-phone sends to both of bob's devices and, as the sent
        // transcript, to her own laptop, each from a claimed one-time key.
        let targets = [
            bob_phone.bundle(),
            bob_laptop.bundle(),
            alice_laptop.bundle(),
        ];
        let mut sent = Vec::new();
        for target in &targets {
            assert!(!alice_phone.olm.has_session(&target.user, target.device));
            let ct = alice_phone.send(target, "hello, all");
            assert_eq!(ct[0], WIRE_VERSION);
            assert_eq!(message_type(&ct), MESSAGE_TYPE_PRE_KEY);
            assert_eq!(&ct[2..HEADER_LEN], &alice_phone.olm.identity_key());
            assert!(alice_phone.olm.has_session(&target.user, target.device));
            sent.push(ct);
        }
        // Distinct sessions: the three ciphertexts differ.
        assert_ne!(sent[0], sent[1]);

        let unused_before = bob_phone.olm.one_time_key_ids().len();
        assert_eq!(
            bob_phone.recv(&alice_phone, &sent[0]).unwrap(),
            "hello, all"
        );
        assert_eq!(
            bob_phone.olm.one_time_key_ids().len(),
            unused_before - 1,
            "the one-time key is used up"
        );
        assert_eq!(
            bob_laptop.recv(&alice_phone, &sent[1]).unwrap(),
            "hello, all"
        );
        assert_eq!(
            alice_laptop.recv(&alice_phone, &sent[2]).unwrap(),
            "hello, all"
        );
        assert_eq!(
            bob_phone.olm.peer_identity_key("alice", 1),
            Some(alice_phone.olm.identity_key())
        );

        // Replies flow back over the established sessions, without prekeys.
        let to_alice_phone = alice_phone.addr();
        for (replier, text) in [
            (&mut bob_phone, "hi from bob's phone"),
            (&mut bob_laptop, "hi from bob's laptop"),
            (&mut alice_laptop, "seen on laptop"),
        ] {
            let ct = replier.send(&to_alice_phone, text);
            assert_eq!(
                message_type(&ct),
                MESSAGE_TYPE_NORMAL,
                "the receiver's session is established"
            );
            assert_eq!(alice_phone.recv(replier, &ct).unwrap(), text);
        }

        // alice-phone's next messages are normal messages now that she heard back.
        let ct = alice_phone.send(&bob_phone.addr(), "second");
        assert_eq!(message_type(&ct), MESSAGE_TYPE_NORMAL);
        assert_eq!(bob_phone.recv(&alice_phone, &ct).unwrap(), "second");

        // Several messages each way, one delivered out of order.
        let a = alice_phone.send(&bob_laptop.addr(), "a");
        let b = alice_phone.send(&bob_laptop.addr(), "b");
        let c = alice_phone.send(&bob_laptop.addr(), "c");
        assert_eq!(bob_laptop.recv(&alice_phone, &c).unwrap(), "c");
        assert_eq!(bob_laptop.recv(&alice_phone, &a).unwrap(), "a");
        assert_eq!(bob_laptop.recv(&alice_phone, &b).unwrap(), "b");
        let d = bob_laptop.send(&alice_phone.addr(), "d");
        assert_eq!(alice_phone.recv(&bob_laptop, &d).unwrap(), "d");

        // Sessions are per device: bob-phone cannot read what went to bob-laptop.
        let e = alice_phone.send(&bob_laptop.addr(), "for the laptop only");
        assert!(bob_phone.recv(&alice_phone, &e).is_err());
        assert_eq!(
            bob_laptop.recv(&alice_phone, &e).unwrap(),
            "for the laptop only"
        );
    }

    #[test]
    fn sessions_and_keys_survive_save_and_reload() {
        let mut alice = Dev::new("alice", 1);
        let mut bob = Dev::new("bob", 1);
        let bob_bundle = bob.bundle();
        let bob_identity = bob.olm.identity_key();
        // bob reloads between publishing keys and receiving the pre-key message.
        bob.reload();
        assert_eq!(bob.olm.identity_key(), bob_identity);

        let first = alice.send(&bob_bundle, "before reload");
        alice.reload();
        assert!(alice.olm.has_session("bob", 1));
        // A second pre-key message on the same (reloaded) session.
        let second = alice.send(&bob.addr(), "still pre-key");
        assert_eq!(message_type(&second), MESSAGE_TYPE_PRE_KEY);

        assert_eq!(bob.recv(&alice, &first).unwrap(), "before reload");
        bob.reload();
        assert!(bob.olm.has_session("alice", 1));
        assert_eq!(bob.recv(&alice, &second).unwrap(), "still pre-key");
        bob.reload();
        // A replay of the first message is still rejected after reload.
        assert!(matches!(
            bob.recv(&alice, &first),
            Err(CryptoError::Replay { .. })
        ));

        let reply = bob.send(&alice.addr(), "after reload");
        alice.reload();
        assert_eq!(alice.recv(&bob, &reply).unwrap(), "after reload");
        alice.reload();
        let next = alice.send(&bob.addr(), "normal now");
        assert_eq!(message_type(&next), MESSAGE_TYPE_NORMAL);
        bob.reload();
        assert_eq!(bob.recv(&alice, &next).unwrap(), "normal now");

        // Key ids keep counting across reloads and are never reused.
        let before: Vec<u32> = bob
            .olm
            .generate_one_time_keys(3)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let (fallback_id, _) = bob.olm.fallback_key().unwrap();
        bob.reload();
        assert_eq!(
            bob.olm.fallback_key().unwrap().0,
            fallback_id,
            "the fallback key is stable"
        );
        let after: Vec<u32> = bob
            .olm
            .generate_one_time_keys(3)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert!(before.windows(2).all(|w| w[0] < w[1]));
        assert!(after
            .iter()
            .all(|id| !before.contains(id) && *id != fallback_id && *id > before[2]));
    }

    #[cfg(unix)]
    #[test]
    fn files_are_private_and_pickles_encrypted() {
        use std::os::unix::fs::PermissionsExt;
        let mut bob = Dev::new("bob", 1);
        bob.bundle();
        bob.olm.save().unwrap();
        for name in [OLM_KEY_FILE, OLM_STATE_FILE] {
            let mode = std::fs::metadata(bob.dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        assert_eq!(
            std::fs::read(bob.dir.path().join(OLM_KEY_FILE))
                .unwrap()
                .len(),
            32
        );
        let state = std::fs::read_to_string(bob.dir.path().join(OLM_STATE_FILE)).unwrap();
        assert!(
            !state.contains("signing_key") && !state.contains("diffie_hellman_key"),
            "account pickle is encrypted"
        );
        assert!(!bob.dir.path().join("olm.json.tmp").exists());
    }

    #[test]
    fn broken_state_gives_typed_errors() {
        let bob = Dev::new("bob", 1);
        let key = bob.dir.path().join(OLM_KEY_FILE);
        std::fs::write(&key, [7u8; 32]).unwrap();
        let err = OlmDevice::load_or_create(bob.dir.path()).unwrap_err();
        assert!(matches!(err, CryptoError::Corrupt { .. }), "{err}");
        std::fs::remove_file(&key).unwrap();
        let err = OlmDevice::load_or_create(bob.dir.path()).unwrap_err();
        assert!(matches!(err, CryptoError::MissingPickleKey { .. }), "{err}");
        assert!(err.to_string().contains("restore"));
    }

    #[test]
    fn fallback_key_when_no_one_time_key_left() {
        let mut alice = Dev::new("alice", 1);
        let mut carol = Dev::new("carol", 1);
        let mut bob = Dev::new("bob", 1);
        let (fallback_id, fallback) = bob.olm.fallback_key().unwrap();
        assert_eq!(
            bob.olm.fallback_key().unwrap(),
            (fallback_id, fallback),
            "stable until rotated"
        );
        let bundle = PeerDevice {
            one_time_key: None,
            fallback_key: Some(fallback),
            ..bob.addr()
        };

        // The fallback key is reusable: two senders start sessions with it.
        let from_alice = alice.send(&bundle, "via fallback");
        assert_eq!(message_type(&from_alice), MESSAGE_TYPE_PRE_KEY);
        let from_carol = carol.send(&bundle, "me too");
        assert_eq!(bob.recv(&alice, &from_alice).unwrap(), "via fallback");
        assert_eq!(bob.recv(&carol, &from_carol).unwrap(), "me too");
        let reply = bob.send(&alice.addr(), "got it");
        assert_eq!(alice.recv(&bob, &reply).unwrap(), "got it");

        // Replaying a fallback-key pre-key message does not build a new session,
        // not even after the sender's device was forgotten.
        assert!(matches!(
            bob.recv(&alice, &from_alice),
            Err(CryptoError::Replay { .. })
        ));
        assert!(bob.olm.forget_device("alice", 1));
        assert!(!bob.olm.has_session("alice", 1));
        assert!(!bob.olm.forget_device("alice", 1));
        assert!(matches!(
            bob.recv(&alice, &from_alice),
            Err(CryptoError::Replay { .. })
        ));
        // Nor when someone else relays it under their own name.
        assert!(matches!(
            bob.olm.decrypt("mallory", 9, &from_carol),
            Err(CryptoError::Replay { .. })
        ));

        // Rotation: a new id and key; the previous key keeps working for
        // messages in flight until it is forgotten.
        let (new_id, new_key) = bob.olm.rotate_fallback_key().unwrap();
        assert_ne!(new_id, fallback_id);
        assert_ne!(new_key, fallback);
        let mut dave = Dev::new("dave", 1);
        let late = dave.send(&bundle, "old fallback, in flight");
        assert_eq!(bob.recv(&dave, &late).unwrap(), "old fallback, in flight");
        assert!(bob.olm.forget_previous_fallback_key());
        let mut erin = Dev::new("erin", 1);
        let too_late = erin.send(&bundle, "old fallback, too late");
        assert!(matches!(
            bob.recv(&erin, &too_late),
            Err(CryptoError::UnknownPrekey { .. })
        ));
        // erin's session from the failed attempt is useless: she drops it and
        // starts over with the new fallback key.
        assert!(erin.olm.forget_device("bob", 1));
        let fresh = erin.send(
            &PeerDevice {
                fallback_key: Some(new_key),
                ..bundle
            },
            "new fallback",
        );
        assert_eq!(bob.recv(&erin, &fresh).unwrap(), "new fallback");
    }

    #[test]
    fn used_one_time_key_cannot_start_a_second_session() {
        let mut alice = Dev::new("alice", 1);
        let mut carol = Dev::new("carol", 1);
        let mut bob = Dev::new("bob", 1);
        let bundle = bob.bundle();
        let first = alice.send(&bundle, "first claim");
        assert_eq!(bob.recv(&alice, &first).unwrap(), "first claim");
        // A second sender handed the same one-time key (a faulty server).
        let second = carol.send(&bundle, "second claim");
        assert!(matches!(
            bob.recv(&carol, &second),
            Err(CryptoError::UnknownPrekey { .. })
        ));
    }

    #[test]
    fn tampered_ciphertexts_fail_with_typed_errors() {
        let mut alice = Dev::new("alice", 1);
        let mut bob = Dev::new("bob", 1);
        let pre_key = alice.send(&bob.bundle(), "pre-key");

        // A pre-key message with a flipped MAC byte does not create a session
        // and does not use up the one-time key.
        let mut bad = pre_key.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            bob.recv(&alice, &bad),
            Err(CryptoError::Undecryptable { .. })
        ));
        assert!(!bob.olm.has_session("alice", 1));
        assert_eq!(bob.recv(&alice, &pre_key).unwrap(), "pre-key");

        let normal = bob.send(&alice.addr(), "normal");
        for position in [HEADER_LEN + 40, normal.len() - 1] {
            let mut bad = normal.clone();
            bad[position] ^= 0x20;
            let err = alice.recv(&bob, &bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    CryptoError::Undecryptable { .. } | CryptoError::Malformed(_)
                ),
                "{err}"
            );
        }
        // The session is intact: the genuine message still decrypts.
        assert_eq!(alice.recv(&bob, &normal).unwrap(), "normal");

        // Header damage.
        let mut bad = normal.clone();
        bad[0] = 2;
        assert!(matches!(
            alice.recv(&bob, &bad),
            Err(CryptoError::UnsupportedVersion(2))
        ));
        let mut bad = normal.clone();
        bad[1] = 7;
        assert!(matches!(
            alice.recv(&bob, &bad),
            Err(CryptoError::Malformed(_))
        ));
        let mut bad = normal.clone();
        bad[5] ^= 1;
        assert!(matches!(
            alice.recv(&bob, &bad),
            Err(CryptoError::Malformed(_))
        ));
        assert!(matches!(
            alice.recv(&bob, &normal[..10]),
            Err(CryptoError::Malformed(_))
        ));
        assert!(matches!(
            alice.recv(&bob, &normal[..HEADER_LEN]),
            Err(CryptoError::Malformed(_))
        ));
        assert!(matches!(
            alice.recv(&bob, &[]),
            Err(CryptoError::Malformed(_))
        ));
        // A pre-key message whose header names another sender key.
        let mut carol = Dev::new("carol", 1);
        let mut bad = carol.send(&bob.bundle(), "x");
        bad[2..HEADER_LEN].copy_from_slice(&alice.olm.identity_key());
        assert!(matches!(
            bob.recv(&carol, &bad),
            Err(CryptoError::Malformed(_))
        ));
    }

    #[test]
    fn replayed_messages_fail() {
        let mut alice = Dev::new("alice", 1);
        let mut bob = Dev::new("bob", 1);
        let pre_key = alice.send(&bob.bundle(), "once");
        assert_eq!(bob.recv(&alice, &pre_key).unwrap(), "once");
        assert!(matches!(
            bob.recv(&alice, &pre_key),
            Err(CryptoError::Replay { .. })
        ));

        let reply = bob.send(&alice.addr(), "reply");
        assert_eq!(alice.recv(&bob, &reply).unwrap(), "reply");
        let normal = alice.send(&bob.addr(), "normal once");
        assert_eq!(bob.recv(&alice, &normal).unwrap(), "normal once");
        let err = bob.recv(&alice, &normal).unwrap_err();
        assert!(matches!(err, CryptoError::Replay { .. }), "{err}");
        assert!(err.to_string().contains("ignore it"));
        // Later messages are unaffected.
        let later = alice.send(&bob.addr(), "later");
        assert_eq!(bob.recv(&alice, &later).unwrap(), "later");
    }

    #[test]
    fn misuse_gives_typed_errors() {
        let mut alice = Dev::new("alice", 1);
        let mut bob = Dev::new("bob", 1);
        assert!(matches!(
            alice.olm.encrypt(&alice.addr(), b"x"),
            Err(CryptoError::OwnDevice)
        ));
        assert!(matches!(
            alice.olm.encrypt(&bob.addr(), b"x"),
            Err(CryptoError::NoPrekey { .. })
        ));
        let weak = PeerDevice {
            identity_key: [0u8; 32],
            one_time_key: Some([0u8; 32]),
            ..bob.addr()
        };
        assert!(matches!(
            alice.olm.encrypt(&weak, b"x"),
            Err(CryptoError::InvalidKey { .. })
        ));
        assert!(!alice.olm.has_session("bob", 1));

        // A normal message with no session at all.
        let mut carol = Dev::new("carol", 1);
        let pre_key = carol.send(&bob.bundle(), "hi");
        bob.recv(&carol, &pre_key).unwrap();
        let normal = bob.send(&carol.addr(), "normal");
        assert!(matches!(
            alice.recv(&bob, &normal),
            Err(CryptoError::NoSession { .. })
        ));

        // The same (user, device) presenting another identity key.
        let impostor = PeerDevice {
            identity_key: alice.olm.identity_key(),
            ..carol.addr()
        };
        assert!(matches!(
            bob.olm.encrypt(&impostor, b"x"),
            Err(CryptoError::IdentityKeyChanged { .. })
        ));
        let from_alice_as_carol = alice.send(&bob.bundle(), "I am carol");
        assert!(matches!(
            bob.olm.decrypt("carol", 1, &from_alice_as_carol),
            Err(CryptoError::IdentityKeyChanged { .. })
        ));
    }
}
