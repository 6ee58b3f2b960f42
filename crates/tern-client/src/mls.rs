//! MLS (RFC 9420) group encryption for one device, over openmls.
//!
//! An [`MlsClient`] is one device in any number of MLS groups. Its identity is
//! the string `"user/device"` carried in a basic credential; it signs with its
//! own Ed25519 key (ciphersuite `MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519`).
//! A group's id is the server's conversation id as 8 big-endian bytes, so the
//! API speaks `u64` throughout.
//!
//! Everything the client produces or consumes is a serialized `MLSMessage`
//! (KeyPackage, Commit, Welcome, GroupInfo, application message). Handshake
//! and application messages are both encrypted (openmls's pure-ciphertext
//! policy), so the server sees neither who is added nor who speaks; it orders
//! what it gets and fans it out.
//!
//! # Changing membership
//!
//! [`MlsClient::add_members`] and [`MlsClient::remove_members`] stage a commit
//! and return it **without** applying it: only the server decides which commit
//! wins an epoch. Send the [`CommitBundle`] (the server should accept it only if
//! `epoch` is the conversation's current MLS epoch), then
//!
//! * accepted: [`MlsClient::confirm_commit`], and deliver the Welcome to the
//!   added devices;
//! * rejected because another commit won the epoch: [`MlsClient::discard_commit`],
//!   [`MlsClient::process`] the winning commit (and everything before it), and
//!   call `add_members` / `remove_members` again at the new epoch.
//!
//! While a commit is pending the group cannot encrypt
//! ([`MlsError::PendingCommit`]). Processing someone else's commit also drops
//! a pending own commit (openmls clears it when it merges).
//!
//! **Leaving** needs no special call: a device asks to leave (to the server)
//! and any remaining member commits its removal with `remove_members`. A
//! removed device learns it from [`Processed::Commit`] with `removed_me: true`;
//! after that every message of the group fails with [`MlsError::Removed`].
//! openmls's `leave_group` (a self-remove *proposal*) is deliberately not used:
//! a pending proposal blocks every member from sending until someone commits it.
//!
//! # Persistence
//!
//! State lives in `STATE_DIR/mls/`: `signer.json` (identity and signature key,
//! written once) and `storage.bin` (a dump of openmls's key/value storage: key
//! packages, group trees and secrets). Both are written atomically through
//! [`StateDir`] (temp file with mode 0600, fsync, rename, fsync of the
//! directory). Changes live in
//! memory until [`MlsClient::save`]; the rules are:
//!
//! * `key_packages` / `last_resort_key_package` save before returning, so a
//!   published KeyPackage always has its private keys on disk;
//! * call `save` after `create_group`, `join`, `confirm_commit` and after
//!   processing messages, **before** acknowledging them to the server: a crash
//!   before `save` rolls the state back to the last save, and the server
//!   redelivers everything after the acknowledged cursor, which replays
//!   consistently. Do not acknowledge past an unsaved state: the ratchet keys
//!   consumed by those messages would be gone;
//! * call `save` after `add_members` / `remove_members` and **before**
//!   sending the Commit: the pending commit and its encoded Commit
//!   ([`MlsClient::pending_commit`]) are then on disk, so a device that dies
//!   before it learns the outcome can still merge or discard it when it
//!   starts again.
//!
//! Own messages echoed back by the server must be skipped by the caller (the
//! server tells the sending device); fed to `process` they yield
//! [`MlsError::OwnMessage`] or [`MlsError::StaleEpoch`].

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use openmls::prelude::tls_codec::Deserialize as _;
use openmls::prelude::{
    BasicCredential, Capabilities, Ciphersuite, Credential, CredentialType, CredentialWithKey,
    ExtensionType, GroupId, KeyPackage, LeafNodeIndex, LeafNodeParameters, MlsGroup,
    MlsGroupCreateConfig, MlsGroupJoinConfig, MlsGroupState, MlsGroupStateError, MlsMessageBodyIn,
    MlsMessageIn, MlsMessageOut, ProcessMessageError, ProcessedMessageContent, ProtocolMessage,
    ProtocolVersion, StagedWelcome, ValidationError, WelcomeError,
};
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::{MemoryStorageError, OpenMlsRustCrypto};
use openmls_traits::storage::StorageProvider as _;
use openmls_traits::OpenMlsProvider as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::state_dir::{StateDir, StateDirError};

/// The one ciphersuite tern speaks.
pub const CIPHERSUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519;
/// Directory inside the client's state directory.
pub const MLS_DIR: &str = "mls";
/// Identity and signature key, written once.
pub const SIGNER_FILE: &str = "signer.json";
/// Dump of the openmls storage, rewritten by every [`MlsClient::save`].
pub const STORAGE_FILE: &str = "storage.bin";
/// How many past epochs keep their application-message keys, so a message
/// sent just before a commit but sequenced after it still decrypts. Bounded:
/// keys older than this are deleted (forward secrecy).
pub const MAX_PAST_EPOCHS: usize = 3;
/// Application messages are padded to a multiple of this many bytes.
pub const PADDING: usize = 32;

const STORAGE_MAGIC: &[u8; 8] = b"TERNMLS1";
/// How openmls's memory storage labels a group's state: its keys are this
/// label, the JSON of the group id, and a two-byte storage version.
const GROUP_STATE_LABEL: &[u8] = b"GroupState";
/// tern's own storage entry (not openmls's): the encoded Commit of a
/// group's pending commit, keyed by this label and the group id (8 bytes,
/// big-endian), so it is saved with the pending commit itself.
const PENDING_COMMIT_LABEL: &[u8] = b"tern.PendingCommit";
/// Sanity cap on one storage entry when loading (a 1,500-member tree is a few MB).
const MAX_ENTRY_LEN: usize = 1 << 30;

/// Why an MLS operation failed. Each message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum MlsError {
    #[error(transparent)]
    State(#[from] StateDirError),
    #[error("MLS state {path} is corrupt ({message}); restore it from a backup, or delete the mls/ directory to start over (every group must then re-add this device)")]
    CorruptState { path: PathBuf, message: String },
    #[error("the MLS state in this directory belongs to {found}, not {expected}; use the state directory of {expected}")]
    IdentityMismatch { expected: String, found: String },
    #[error("this device is not in MLS group {0}; it must be added by a member and join from the Welcome")]
    UnknownGroup(u64),
    #[error("MLS group {0} already exists on this device; use it instead of creating or joining it again")]
    GroupExists(u64),
    #[error("this device was removed from MLS group {0}; a member must add it again (with a fresh KeyPackage)")]
    Removed(u64),
    #[error("MLS group {0} has a commit waiting for the server; call confirm_commit (accepted) or discard_commit (rejected) first")]
    PendingCommit(u64),
    #[error("MLS group {0} has no pending commit to confirm or discard")]
    NoPendingCommit(u64),
    #[error("{identity} is not a member of MLS group {group_id}; refresh the member list")]
    NotMember { group_id: u64, identity: String },
    #[error(
        "{identity} is already a member of MLS group {group_id}; remove it first to re-add it"
    )]
    AlreadyMember { group_id: u64, identity: String },
    #[error("nothing to do: {0}")]
    EmptyInput(&'static str),
    #[error("invalid KeyPackage ({0}); fetch a fresh one for that device from the server")]
    InvalidKeyPackage(String),
    #[error("cannot join from this Welcome: {0}")]
    InvalidWelcome(String),
    #[error("the Welcome is for a KeyPackage whose private keys this device no longer has (state lost or not saved); ask to be added again with a fresh KeyPackage")]
    NoMatchingKeyPackage,
    #[error("not a valid MLS message ({0}); drop it")]
    Malformed(String),
    #[error(
        "message belongs to MLS group {found}, not {expected}; route it to the right conversation"
    )]
    WrongGroup { expected: u64, found: String },
    #[error("message of MLS group {group_id} is from epoch {message_epoch}, whose keys are gone (group is at {current_epoch}); it cannot be decrypted any more, skip it")]
    StaleEpoch {
        group_id: u64,
        message_epoch: u64,
        current_epoch: u64,
    },
    #[error("message of MLS group {group_id} is from epoch {message_epoch} but this device is at {current_epoch}: a commit was missed; process the conversation in order (or get re-added)")]
    FutureEpoch {
        group_id: u64,
        message_epoch: u64,
        current_epoch: u64,
    },
    #[error("message of MLS group {group_id} cannot be decrypted ({reason}); skip it")]
    Undecryptable { group_id: u64, reason: String },
    #[error("message of MLS group {group_id} was rejected ({reason}); skip it")]
    Rejected { group_id: u64, reason: String },
    #[error("message of MLS group {0} was sent by this device; skip own messages")]
    OwnMessage(u64),
    #[error("MLS {op} failed for group {group_id}: {reason}")]
    Operation {
        group_id: u64,
        op: &'static str,
        reason: String,
    },
    #[error("MLS internal error: {0} (a bug in tern or openmls; please report it)")]
    Internal(String),
}

impl MlsError {
    /// Whether this is a message this device cannot (or can no longer) read:
    /// stale or future epoch, undecryptable, removed from the group.
    pub fn is_undecryptable(&self) -> bool {
        matches!(
            self,
            MlsError::StaleEpoch { .. }
                | MlsError::FutureEpoch { .. }
                | MlsError::Undecryptable { .. }
                | MlsError::Removed(_)
        )
    }
}

/// A staged (not yet applied) membership change, to send to the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitBundle {
    /// The epoch the commit is for (the group's epoch before it).
    pub epoch: u64,
    /// The Commit (`MLSMessage`), for every current member.
    pub commit: Vec<u8>,
    /// The Welcome (`MLSMessage`) for the added devices; `None` if none added.
    pub welcome: Option<Vec<u8>>,
    /// GroupInfo (`MLSMessage`) of the new epoch, with the ratchet tree.
    pub group_info: Vec<u8>,
    /// Identities added by this commit.
    pub added: Vec<String>,
    /// Identities removed by this commit.
    pub removed: Vec<String>,
}

/// A group's pending own commit, as [`MlsClient::pending_commit`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCommit {
    /// The epoch it is for: the group's current epoch.
    pub epoch: u64,
    /// Its encoded Commit (`MLSMessage`) as staged; `None` for one staged
    /// before tern kept it, which can then only be discarded.
    pub commit: Option<Vec<u8>>,
}

/// openmls's key/value storage (memory provider).
type StorageValues = HashMap<Vec<u8>, Vec<u8>>;

/// This device's external commit into a group (RFC 9420 §12.4.3.2),
/// already applied locally: send it to the server at `epoch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalJoin {
    /// The epoch the commit is for (the GroupInfo's epoch).
    pub epoch: u64,
    /// The Commit (`MLSMessage`, a `PublicMessage`), for every current member.
    pub commit: Vec<u8>,
    /// GroupInfo (`MLSMessage`) of the new epoch, with the ratchet tree and
    /// the external public key, for the server to keep.
    pub group_info: Vec<u8>,
}

/// What an incoming group message turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Processed {
    /// A message from `sender` ("user/device").
    Application { sender: String, plaintext: Vec<u8> },
    /// A commit, applied: the group is now at `epoch`. `removed_me`: this
    /// device is no longer in the group.
    Commit { epoch: u64, removed_me: bool },
    /// A standalone proposal. tern clients never send them (commits carry
    /// their proposals inline); it is reported and not stored, because a
    /// stored proposal would block sending until someone commits it.
    Proposal,
}

#[derive(Serialize, Deserialize)]
struct SignerFile {
    identity: String,
    signer: SignatureKeyPair,
}

/// One device's MLS state: its signer, key packages and groups.
pub struct MlsClient {
    dir: StateDir,
    identity: String,
    provider: OpenMlsRustCrypto,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    groups: HashMap<u64, MlsGroup>,
}

impl std::fmt::Debug for MlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlsClient")
            .field("identity", &self.identity)
            .field("dir", &self.dir.path())
            .field("groups_loaded", &self.groups.len())
            .finish_non_exhaustive()
    }
}

fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&[CIPHERSUITE]),
        Some(&[ExtensionType::LastResort]),
        None,
        Some(&[CredentialType::Basic]),
    )
}

fn join_config() -> MlsGroupJoinConfig {
    MlsGroupJoinConfig::builder()
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .padding_size(PADDING)
        .build()
}

fn create_config() -> MlsGroupCreateConfig {
    MlsGroupCreateConfig::builder()
        .ciphersuite(CIPHERSUITE)
        .use_ratchet_tree_extension(true)
        .max_past_epochs(MAX_PAST_EPOCHS)
        .padding_size(PADDING)
        .capabilities(capabilities())
        .build()
}

fn group_id_bytes(group_id: u64) -> GroupId {
    GroupId::from_slice(&group_id.to_be_bytes())
}

fn group_id_u64(id: &GroupId) -> Option<u64> {
    <[u8; 8]>::try_from(id.as_slice())
        .ok()
        .map(u64::from_be_bytes)
}

fn identity_of(credential: &Credential) -> Result<String, String> {
    let basic = BasicCredential::try_from(credential.clone())
        .map_err(|e| format!("not a basic credential: {e}"))?;
    String::from_utf8(basic.identity().to_vec()).map_err(|_| "identity is not UTF-8".to_owned())
}

fn to_bytes(message: &MlsMessageOut) -> Result<Vec<u8>, MlsError> {
    message
        .to_bytes()
        .map_err(|e| MlsError::Internal(format!("serializing an MLS message: {e}")))
}

/// The storage key of a group's pending Commit ([`PENDING_COMMIT_LABEL`]).
fn pending_key(group_id: u64) -> Vec<u8> {
    [PENDING_COMMIT_LABEL, &group_id.to_be_bytes()].concat()
}

fn parse(bytes: &[u8]) -> Result<MlsMessageBodyIn, MlsError> {
    MlsMessageIn::tls_deserialize_exact(bytes)
        .map(MlsMessageIn::extract)
        .map_err(|e| MlsError::Malformed(e.to_string()))
}

/// The group `group_id`, from the cache or else from storage.
fn group_entry<'a>(
    groups: &'a mut HashMap<u64, MlsGroup>,
    provider: &OpenMlsRustCrypto,
    group_id: u64,
) -> Result<&'a mut MlsGroup, MlsError> {
    match groups.entry(group_id) {
        Entry::Occupied(entry) => Ok(entry.into_mut()),
        Entry::Vacant(entry) => {
            let loaded = MlsGroup::load(provider.storage(), &group_id_bytes(group_id))
                .map_err(|e| MlsError::Internal(format!("loading group {group_id}: {e}")))?;
            loaded
                .map(|group| entry.insert(group))
                .ok_or(MlsError::UnknownGroup(group_id))
        }
    }
}

/// The local state of `group_id` that a Welcome into `epoch` replaces
/// (taken out of the cache), or `None` when there is none;
/// [`MlsError::GroupExists`] when the local group is active and already at
/// `epoch` or later (the Welcome is a repeat).
fn stale_group(
    groups: &mut HashMap<u64, MlsGroup>,
    provider: &OpenMlsRustCrypto,
    group_id: u64,
    epoch: u64,
) -> Result<Option<MlsGroup>, MlsError> {
    match group_entry(groups, provider, group_id) {
        Ok(old) if old.is_active() && old.epoch().as_u64() >= epoch => {
            Err(MlsError::GroupExists(group_id))
        }
        Ok(_) => Ok(groups.remove(&group_id)),
        Err(MlsError::UnknownGroup(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A group that can commit or send: active and without a pending commit.
fn operational<'a>(
    groups: &'a mut HashMap<u64, MlsGroup>,
    provider: &OpenMlsRustCrypto,
    group_id: u64,
) -> Result<&'a mut MlsGroup, MlsError> {
    let group = group_entry(groups, provider, group_id)?;
    if !group.is_active() {
        return Err(MlsError::Removed(group_id));
    }
    if group.pending_commit().is_some() {
        return Err(MlsError::PendingCommit(group_id));
    }
    Ok(group)
}

fn member_identities(group: &MlsGroup) -> Vec<(LeafNodeIndex, Option<String>)> {
    group
        .members()
        .map(|m| (m.index, identity_of(&m.credential).ok()))
        .collect()
}

/// `MAGIC | count u64 | (key_len u32, value_len u32, key, value)* | sha256`.
fn encode_storage(provider: &OpenMlsRustCrypto) -> Result<Vec<u8>, MlsError> {
    let values = provider
        .storage()
        .values
        .read()
        .map_err(|_| MlsError::Internal("MLS storage lock poisoned".into()))?;
    let size: usize = values.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(size + 48);
    out.extend_from_slice(STORAGE_MAGIC);
    out.extend_from_slice(&(values.len() as u64).to_be_bytes());
    for (key, value) in values.iter() {
        let key_len = u32::try_from(key.len())
            .map_err(|_| MlsError::Internal("storage key over 4 GiB".into()))?;
        let value_len = u32::try_from(value.len())
            .map_err(|_| MlsError::Internal("storage value over 4 GiB".into()))?;
        out.extend_from_slice(&key_len.to_be_bytes());
        out.extend_from_slice(&value_len.to_be_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(value);
    }
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    Ok(out)
}

fn decode_storage(bytes: &[u8]) -> Result<HashMap<Vec<u8>, Vec<u8>>, String> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
        let (head, tail) = rest.split_at_checked(n).ok_or("truncated")?;
        *rest = tail;
        Ok(head)
    }
    fn u32_at(rest: &mut &[u8]) -> Result<usize, String> {
        let raw: [u8; 4] = take(rest, 4)?.try_into().map_err(|_| "truncated")?;
        usize::try_from(u32::from_be_bytes(raw)).map_err(|_| "length overflow".to_owned())
    }
    let body_len = bytes.len().checked_sub(32).ok_or("truncated")?;
    let (body, digest) = bytes.split_at_checked(body_len).ok_or("truncated")?;
    if Sha256::digest(body).as_slice() != digest {
        return Err("checksum mismatch".into());
    }
    let mut rest = body;
    if take(&mut rest, 8)? != STORAGE_MAGIC {
        return Err("not a tern MLS storage file".into());
    }
    let count_raw: [u8; 8] = take(&mut rest, 8)?.try_into().map_err(|_| "truncated")?;
    let count = u64::from_be_bytes(count_raw);
    let mut values = HashMap::new();
    for _ in 0..count {
        let key_len = u32_at(&mut rest)?;
        let value_len = u32_at(&mut rest)?;
        if key_len > MAX_ENTRY_LEN || value_len > MAX_ENTRY_LEN {
            return Err("entry too large".into());
        }
        let key = take(&mut rest, key_len)?.to_vec();
        let value = take(&mut rest, value_len)?.to_vec();
        values.insert(key, value);
    }
    if !rest.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(values)
}

impl MlsClient {
    /// Loads the MLS state of `identity` ("user/device") from
    /// `state_dir/mls/`, or creates it (new Ed25519 signature key) if there
    /// is none yet.
    pub fn load_or_create(state_dir: &Path, identity: &str) -> Result<MlsClient, MlsError> {
        let dir = StateDir::new(state_dir).subdir(MLS_DIR)?;
        let signer_path = dir.file(SIGNER_FILE)?;
        let storage_path = dir.file(STORAGE_FILE)?;
        let provider = OpenMlsRustCrypto::default();
        let signer =
            match dir.read(SIGNER_FILE)? {
                Some(bytes) => {
                    let file: SignerFile =
                        serde_json::from_slice(&bytes).map_err(|e| MlsError::CorruptState {
                            path: signer_path.clone(),
                            message: e.to_string(),
                        })?;
                    if file.identity != identity {
                        return Err(MlsError::IdentityMismatch {
                            expected: identity.to_owned(),
                            found: file.identity,
                        });
                    }
                    if let Some(bytes) = dir.read(STORAGE_FILE)? {
                        let values =
                            decode_storage(&bytes).map_err(|message| MlsError::CorruptState {
                                path: storage_path.clone(),
                                message,
                            })?;
                        *provider.storage().values.write().map_err(|_| {
                            MlsError::Internal("MLS storage lock poisoned".into())
                        })? = values;
                    }
                    file.signer
                }
                None => {
                    if dir.exists(STORAGE_FILE) {
                        return Err(MlsError::CorruptState {
                            path: signer_path,
                            message: "missing, but storage exists".into(),
                        });
                    }
                    let signer =
                        SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(|e| {
                            MlsError::Internal(format!("generating a signature key: {e:?}"))
                        })?;
                    let file = SignerFile {
                        identity: identity.to_owned(),
                        signer,
                    };
                    let json =
                        serde_json::to_vec(&file).map_err(|e| MlsError::Internal(e.to_string()))?;
                    dir.write(SIGNER_FILE, &json)?;
                    file.signer
                }
            };
        let credential = CredentialWithKey {
            credential: BasicCredential::new(identity.as_bytes().to_vec()).into(),
            signature_key: signer.to_public_vec().into(),
        };
        Ok(MlsClient {
            dir,
            identity: identity.to_owned(),
            provider,
            signer,
            credential,
            groups: HashMap::new(),
        })
    }

    /// Writes the whole MLS state to `mls/storage.bin` atomically.
    pub fn save(&self) -> Result<(), MlsError> {
        let bytes = encode_storage(&self.provider)?;
        Ok(self.dir.write(STORAGE_FILE, &bytes)?)
    }

    /// This device's identity, "user/device".
    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn key_package(&mut self, last_resort: bool) -> Result<Vec<u8>, MlsError> {
        let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities());
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        let bundle = builder
            .build(
                CIPHERSUITE,
                &self.provider,
                &self.signer,
                self.credential.clone(),
            )
            .map_err(|e| MlsError::Internal(format!("building a KeyPackage: {e}")))?;
        to_bytes(&MlsMessageOut::from(bundle.key_package().clone()))
    }

    /// `count` fresh single-use KeyPackages (`MLSMessage` bytes) to upload.
    /// Their private keys are saved before this returns.
    pub fn key_packages(&mut self, count: usize) -> Result<Vec<Vec<u8>>, MlsError> {
        let packages = (0..count)
            .map(|_| self.key_package(false))
            .collect::<Result<Vec<_>, _>>()?;
        self.save()?;
        Ok(packages)
    }

    /// A last-resort KeyPackage (RFC 9420 last_resort extension): the server
    /// hands it out when the single-use ones run out, and it stays usable for
    /// any number of Welcomes. Replace it periodically (its lifetime is
    /// openmls's default, 12 weeks). Saved before this returns.
    pub fn last_resort_key_package(&mut self) -> Result<Vec<u8>, MlsError> {
        let package = self.key_package(true)?;
        self.save()?;
        Ok(package)
    }

    /// Creates group `group_id` (the conversation id) with this device as its
    /// only member, at epoch 0.
    pub fn create_group(&mut self, group_id: u64) -> Result<(), MlsError> {
        if self.has_group(group_id)? {
            return Err(MlsError::GroupExists(group_id));
        }
        let group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &create_config(),
            group_id_bytes(group_id),
            self.credential.clone(),
        )
        .map_err(|e| MlsError::Operation {
            group_id,
            op: "create group",
            reason: e.to_string(),
        })?;
        self.groups.insert(group_id, group);
        Ok(())
    }

    /// Whether this device has state for `group_id` (active or removed).
    pub fn has_group(&mut self, group_id: u64) -> Result<bool, MlsError> {
        match group_entry(&mut self.groups, &self.provider, group_id) {
            Ok(_) => Ok(true),
            Err(MlsError::UnknownGroup(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether this device has active state for `group_id` (not removed).
    pub fn is_active(&mut self, group_id: u64) -> Result<bool, MlsError> {
        match group_entry(&mut self.groups, &self.provider, group_id) {
            Ok(group) => Ok(group.is_active()),
            Err(MlsError::UnknownGroup(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The groups this device has active state for (not removed), in
    /// ascending order.
    pub fn active_groups(&mut self) -> Result<Vec<u64>, MlsError> {
        let mut ids = self.stored_groups()?;
        ids.sort_unstable();
        let mut active = Vec::with_capacity(ids.len());
        for id in ids {
            if group_entry(&mut self.groups, &self.provider, id)?.is_active() {
                active.push(id);
            }
        }
        Ok(active)
    }

    /// The ids of every group in storage, read from the keys of the groups'
    /// states.
    fn stored_groups(&self) -> Result<Vec<u64>, MlsError> {
        let values = self
            .provider
            .storage()
            .values
            .read()
            .map_err(|_| MlsError::Internal("MLS storage lock poisoned".into()))?;
        let ids = values.keys().filter_map(|key| {
            let rest = key.strip_prefix(GROUP_STATE_LABEL)?;
            let json = rest.get(..rest.len().checked_sub(2)?)?;
            let id: GroupId = serde_json::from_slice(json).ok()?;
            group_id_u64(&id)
        });
        Ok(ids.collect())
    }

    /// Marks the group inactive, as if this device had processed the Commit
    /// that removed it (used when it learns of the removal from the server
    /// instead: it was offline then). Afterwards the group encrypts and
    /// processes nothing ([`MlsError::Removed`]) and a Welcome replaces it.
    /// Returns whether it was active. Then `save`.
    pub fn deactivate(&mut self, group_id: u64) -> Result<bool, MlsError> {
        if !group_entry(&mut self.groups, &self.provider, group_id)?.is_active() {
            return Ok(false);
        }
        self.groups.remove(&group_id);
        self.provider
            .storage()
            .write_group_state(&group_id_bytes(group_id), &MlsGroupState::Inactive)
            .map_err(|e| MlsError::Internal(format!("deactivating group {group_id}: {e}")))?;
        Ok(true)
    }

    /// Stages a commit adding the devices of `key_packages` (`MLSMessage`
    /// bytes as uploaded by them). Not applied until [`Self::confirm_commit`].
    pub fn add_members(
        &mut self,
        group_id: u64,
        key_packages: &[Vec<u8>],
    ) -> Result<CommitBundle, MlsError> {
        if key_packages.is_empty() {
            return Err(MlsError::EmptyInput("no KeyPackages to add"));
        }
        let mut packages = Vec::with_capacity(key_packages.len());
        let mut added = Vec::with_capacity(key_packages.len());
        for bytes in key_packages {
            let MlsMessageBodyIn::KeyPackage(package) = parse(bytes)? else {
                return Err(MlsError::InvalidKeyPackage(
                    "the message is not a KeyPackage".into(),
                ));
            };
            let package = package
                .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                .map_err(|e| MlsError::InvalidKeyPackage(e.to_string()))?;
            if package.ciphersuite() != CIPHERSUITE {
                return Err(MlsError::InvalidKeyPackage(format!(
                    "ciphersuite {:?} is not tern's",
                    package.ciphersuite()
                )));
            }
            let identity = identity_of(package.leaf_node().credential())
                .map_err(MlsError::InvalidKeyPackage)?;
            if added.contains(&identity) {
                return Err(MlsError::InvalidKeyPackage(format!(
                    "two KeyPackages for {identity}"
                )));
            }
            added.push(identity);
            packages.push(package);
        }
        let group = operational(&mut self.groups, &self.provider, group_id)?;
        let current = member_identities(group);
        if let Some(identity) = added
            .iter()
            .find(|a| current.iter().any(|(_, m)| m.as_ref() == Some(*a)))
        {
            return Err(MlsError::AlreadyMember {
                group_id,
                identity: identity.clone(),
            });
        }
        let epoch = group.epoch().as_u64();
        let (commit, welcome, group_info) = group
            .add_members(&self.provider, &self.signer, &packages)
            .map_err(|e| MlsError::Operation {
                group_id,
                op: "add members",
                reason: e.to_string(),
            })?;
        let group_info =
            group_info.ok_or_else(|| MlsError::Internal("openmls made no GroupInfo".into()))?;
        let commit = to_bytes(&commit)?;
        self.keep_pending_commit(group_id, &commit)?;
        Ok(CommitBundle {
            epoch,
            commit,
            welcome: Some(to_bytes(&welcome)?),
            group_info: to_bytes(&MlsMessageOut::from(group_info))?,
            added,
            removed: Vec::new(),
        })
    }

    /// Stages a commit removing every device of `identities`
    /// ("user/device"). Not applied until [`Self::confirm_commit`].
    pub fn remove_members(
        &mut self,
        group_id: u64,
        identities: &[String],
    ) -> Result<CommitBundle, MlsError> {
        if identities.is_empty() {
            return Err(MlsError::EmptyInput("no members to remove"));
        }
        let group = operational(&mut self.groups, &self.provider, group_id)?;
        let current = member_identities(group);
        let mut leaves = Vec::with_capacity(identities.len());
        let mut removed = Vec::with_capacity(identities.len());
        for identity in identities {
            if removed.contains(identity) {
                continue;
            }
            let before = leaves.len();
            leaves.extend(
                current
                    .iter()
                    .filter(|(_, m)| m.as_ref() == Some(identity))
                    .map(|(index, _)| *index),
            );
            if leaves.len() == before {
                return Err(MlsError::NotMember {
                    group_id,
                    identity: identity.clone(),
                });
            }
            removed.push(identity.clone());
        }
        let epoch = group.epoch().as_u64();
        let (commit, welcome, group_info) = group
            .remove_members(&self.provider, &self.signer, &leaves)
            .map_err(|e| MlsError::Operation {
                group_id,
                op: "remove members",
                reason: e.to_string(),
            })?;
        let group_info =
            group_info.ok_or_else(|| MlsError::Internal("openmls made no GroupInfo".into()))?;
        let commit = to_bytes(&commit)?;
        self.keep_pending_commit(group_id, &commit)?;
        Ok(CommitBundle {
            epoch,
            commit,
            welcome: welcome.as_ref().map(to_bytes).transpose()?,
            group_info: to_bytes(&MlsMessageOut::from(group_info))?,
            added: Vec::new(),
            removed,
        })
    }

    /// The server accepted the pending commit: apply it (the group moves to
    /// the next epoch). Then `save`.
    pub fn confirm_commit(&mut self, group_id: u64) -> Result<(), MlsError> {
        let group = group_entry(&mut self.groups, &self.provider, group_id)?;
        if group.pending_commit().is_none() {
            return Err(MlsError::NoPendingCommit(group_id));
        }
        group
            .merge_pending_commit(&self.provider)
            .map_err(|e| MlsError::Operation {
                group_id,
                op: "merge commit",
                reason: e.to_string(),
            })?;
        self.drop_pending_commit(group_id)
    }

    /// The server rejected the pending commit: forget it; the group stays at
    /// its epoch. Process the winning commit, then retry the change.
    pub fn discard_commit(&mut self, group_id: u64) -> Result<(), MlsError> {
        let group = group_entry(&mut self.groups, &self.provider, group_id)?;
        if group.pending_commit().is_none() {
            return Err(MlsError::NoPendingCommit(group_id));
        }
        group
            .clear_pending_commit(self.provider.storage())
            .map_err(|e| MlsError::Operation {
                group_id,
                op: "discard commit",
                reason: e.to_string(),
            })?;
        self.drop_pending_commit(group_id)
    }

    /// The group's pending own commit, as staged by `add_members` /
    /// `remove_members`, if it has one.
    pub fn pending_commit(&mut self, group_id: u64) -> Result<Option<PendingCommit>, MlsError> {
        let group = group_entry(&mut self.groups, &self.provider, group_id)?;
        if group.pending_commit().is_none() {
            return Ok(None);
        }
        let epoch = group.epoch().as_u64();
        let values = self.storage_values()?;
        let commit = values.get(&pending_key(group_id)).cloned();
        Ok(Some(PendingCommit { epoch, commit }))
    }

    /// The active groups with a pending own commit, in ascending order.
    pub fn groups_with_pending_commits(&mut self) -> Result<Vec<u64>, MlsError> {
        let mut pending = Vec::new();
        for group_id in self.active_groups()? {
            if self.pending_commit(group_id)?.is_some() {
                pending.push(group_id);
            }
        }
        Ok(pending)
    }

    /// Keeps `commit` as the encoded Commit of the group's pending commit.
    fn keep_pending_commit(&mut self, group_id: u64, commit: &[u8]) -> Result<(), MlsError> {
        let mut values = self.storage_values_mut()?;
        values.insert(pending_key(group_id), commit.to_vec());
        Ok(())
    }

    /// Forgets the encoded Commit of the group's (merged or discarded)
    /// pending commit.
    fn drop_pending_commit(&mut self, group_id: u64) -> Result<(), MlsError> {
        self.storage_values_mut()?.remove(&pending_key(group_id));
        Ok(())
    }

    /// openmls's key/value storage, for reading.
    fn storage_values(&self) -> Result<std::sync::RwLockReadGuard<'_, StorageValues>, MlsError> {
        self.provider
            .storage()
            .values
            .read()
            .map_err(|_| MlsError::Internal("MLS storage lock poisoned".into()))
    }

    /// openmls's key/value storage, for writing.
    fn storage_values_mut(
        &self,
    ) -> Result<std::sync::RwLockWriteGuard<'_, StorageValues>, MlsError> {
        self.provider
            .storage()
            .values
            .write()
            .map_err(|_| MlsError::Internal("MLS storage lock poisoned".into()))
    }

    /// Joins a group from a Welcome (`MLSMessage` bytes; the ratchet tree
    /// travels inside it). Returns the group id. Then `save`.
    ///
    /// A Welcome back into a group this device has state for replaces that
    /// state when the state is stale: the device was removed (inactive), or
    /// the Welcome is for a later epoch (it left the group, or was removed
    /// by commits it never received, and was added again). A Welcome for an
    /// epoch the active local group has already reached is a repeat
    /// ([`MlsError::GroupExists`]) and changes nothing.
    pub fn join(&mut self, welcome: &[u8]) -> Result<u64, MlsError> {
        let MlsMessageBodyIn::Welcome(welcome) = parse(welcome)? else {
            return Err(MlsError::Malformed("the message is not a Welcome".into()));
        };
        let builder = StagedWelcome::build_from_welcome(&self.provider, &join_config(), welcome)
            .map_err(welcome_error)?;
        let info = builder.processed_welcome().unverified_group_info();
        let (raw_id, epoch) = (info.group_id().clone(), info.epoch().as_u64());
        let group_id = group_id_u64(&raw_id).ok_or_else(|| {
            MlsError::InvalidWelcome(format!(
                "group id has {} bytes, tern uses 8",
                raw_id.as_slice().len()
            ))
        })?;
        let stale = stale_group(&mut self.groups, &self.provider, group_id, epoch)?;
        // Leaf lifetimes are checked for the joiner's own KeyPackage and on
        // every add; leaves already in the tree keep their (by now possibly
        // expired) KeyPackage lifetime until their owner commits, which would
        // lock new members out of quiet groups, so the tree's are not checked.
        let staged = builder
            .skip_lifetime_validation()
            .replace_old_group()
            .build()
            .map_err(welcome_error)?;
        if let Some(mut old) = stale {
            old.delete(self.provider.storage())
                .map_err(|e| MlsError::Internal(format!("deleting stale group {group_id}: {e}")))?;
        }
        let group = staged.into_group(&self.provider).map_err(welcome_error)?;
        self.groups.insert(group_id, group);
        Ok(group_id)
    }

    /// Rejoins group `group_id` from its latest GroupInfo (`MLSMessage`
    /// bytes as stored by the server, with the ratchet tree and external
    /// public key) by an external commit, for a device that missed commits
    /// no longer available. The commit also removes this device's old leaf
    /// (same signature key). Any local state of the group is replaced, and
    /// the new group is already at the next epoch: send
    /// [`ExternalJoin::commit`] at [`ExternalJoin::epoch`], then `save` if
    /// the server accepts it; if it refuses, rejoin from the newer
    /// GroupInfo (the state is replaced again).
    pub fn external_join(
        &mut self,
        group_id: u64,
        group_info: &[u8],
    ) -> Result<ExternalJoin, MlsError> {
        let MlsMessageBodyIn::GroupInfo(info) = parse(group_info)? else {
            return Err(MlsError::Malformed("the message is not a GroupInfo".into()));
        };
        if info.group_id().as_slice() != group_id.to_be_bytes() {
            return Err(MlsError::WrongGroup {
                expected: group_id,
                found: hex::encode(info.group_id().as_slice()),
            });
        }
        let epoch = info.epoch().as_u64();
        self.forget_group(group_id)?;
        let failed = |reason: String| MlsError::Operation {
            group_id,
            op: "external join",
            reason,
        };
        let leaf = LeafNodeParameters::builder()
            .with_capabilities(capabilities())
            .build();
        let (group, bundle) = MlsGroup::external_commit_builder()
            .with_config(join_config())
            .skip_lifetime_validation()
            .build_group(&self.provider, info, self.credential.clone())
            .map_err(|e| failed(e.to_string()))?
            .leaf_node_parameters(leaf)
            .load_psks(self.provider.storage())
            .map_err(|e| failed(e.to_string()))?
            .build(
                self.provider.rand(),
                self.provider.crypto(),
                &self.signer,
                |_| true,
            )
            .map_err(|e| failed(e.to_string()))?
            .finalize(&self.provider)
            .map_err(|e| failed(e.to_string()))?;
        let (commit, _, new_info) = bundle.into_contents();
        let new_info =
            new_info.ok_or_else(|| MlsError::Internal("openmls made no GroupInfo".into()))?;
        self.groups.insert(group_id, group);
        Ok(ExternalJoin {
            epoch,
            commit: to_bytes(&commit)?,
            group_info: to_bytes(&MlsMessageOut::from(new_info))?,
        })
    }

    /// Deletes the local state of `group_id`, if any.
    fn forget_group(&mut self, group_id: u64) -> Result<(), MlsError> {
        match group_entry(&mut self.groups, &self.provider, group_id) {
            Ok(_) => {}
            Err(MlsError::UnknownGroup(_)) => return Ok(()),
            Err(e) => return Err(e),
        }
        if let Some(mut old) = self.groups.remove(&group_id) {
            old.delete(self.provider.storage())
                .map_err(|e| MlsError::Internal(format!("deleting stale group {group_id}: {e}")))?;
        }
        Ok(())
    }

    /// Encrypts an application message for the group's current epoch.
    pub fn encrypt(&mut self, group_id: u64, plaintext: &[u8]) -> Result<Vec<u8>, MlsError> {
        let group = operational(&mut self.groups, &self.provider, group_id)?;
        let message = group
            .create_message(&self.provider, &self.signer, plaintext)
            .map_err(|e| MlsError::Operation {
                group_id,
                op: "encrypt",
                reason: e.to_string(),
            })?;
        to_bytes(&message)
    }

    /// Decrypts and applies one message of the group, in the server's order.
    /// Commits are merged at once (the server already ordered them).
    pub fn process(&mut self, group_id: u64, message: &[u8]) -> Result<Processed, MlsError> {
        let message: ProtocolMessage = match parse(message)? {
            MlsMessageBodyIn::PrivateMessage(m) => m.into(),
            MlsMessageBodyIn::PublicMessage(m) => m.into(),
            _ => {
                return Err(MlsError::Malformed(
                    "not a group message (application, proposal or commit)".into(),
                ))
            }
        };
        if message.group_id().as_slice() != group_id.to_be_bytes() {
            return Err(MlsError::WrongGroup {
                expected: group_id,
                found: hex::encode(message.group_id().as_slice()),
            });
        }
        let group = group_entry(&mut self.groups, &self.provider, group_id)?;
        if !group.is_active() {
            return Err(MlsError::Removed(group_id));
        }
        let message_epoch = message.epoch().as_u64();
        let current_epoch = group.epoch().as_u64();
        if message_epoch > current_epoch {
            return Err(MlsError::FutureEpoch {
                group_id,
                message_epoch,
                current_epoch,
            });
        }
        let processed =
            group
                .process_message(&self.provider, message)
                .map_err(|e| {
                    let reason = e.to_string();
                    match e {
                        ProcessMessageError::ValidationError(
                            ValidationError::WrongEpoch | ValidationError::NoPastEpochData,
                        ) => MlsError::StaleEpoch {
                            group_id,
                            message_epoch,
                            current_epoch,
                        },
                        ProcessMessageError::ValidationError(ValidationError::UnableToDecrypt(
                            _,
                        )) if message_epoch < current_epoch => MlsError::StaleEpoch {
                            group_id,
                            message_epoch,
                            current_epoch,
                        },
                        ProcessMessageError::ValidationError(ValidationError::UnableToDecrypt(
                            _,
                        )) => MlsError::Undecryptable { group_id, reason },
                        ProcessMessageError::GroupStateError(
                            MlsGroupStateError::UseAfterEviction,
                        ) => MlsError::Removed(group_id),
                        ProcessMessageError::LibraryError(_)
                        | ProcessMessageError::StorageError(_) => MlsError::Internal(format!(
                            "processing a message of group {group_id}: {reason}"
                        )),
                        _ => MlsError::Rejected { group_id, reason },
                    }
                })?;
        let sender_credential = processed.credential().clone();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(message) => {
                let sender = identity_of(&sender_credential)
                    .map_err(|reason| MlsError::Rejected { group_id, reason })?;
                Ok(Processed::Application {
                    sender,
                    plaintext: message.into_bytes(),
                })
            }
            ProcessedMessageContent::ProposalMessage(_)
            | ProcessedMessageContent::ExternalJoinProposalMessage(_) => Ok(Processed::Proposal),
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                let removed_me = staged.self_removed();
                group
                    .merge_staged_commit(&self.provider, *staged)
                    .map_err(|e| MlsError::Operation {
                        group_id,
                        op: "merge commit",
                        reason: e.to_string(),
                    })?;
                Ok(Processed::Commit {
                    epoch: group.epoch().as_u64(),
                    removed_me,
                })
            }
            ProcessedMessageContent::OwnPrivateMessage
            | ProcessedMessageContent::OwnPendingCommit => Err(MlsError::OwnMessage(group_id)),
        }
    }

    /// The epoch an encoded group message (application, proposal or
    /// commit) was made in, read from its unencrypted header.
    pub fn message_epoch(message: &[u8]) -> Result<u64, MlsError> {
        let message: ProtocolMessage = match parse(message)? {
            MlsMessageBodyIn::PrivateMessage(m) => m.into(),
            MlsMessageBodyIn::PublicMessage(m) => m.into(),
            _ => return Err(MlsError::Malformed("not a group message".into())),
        };
        Ok(message.epoch().as_u64())
    }

    /// The group's current epoch (0 right after creation).
    pub fn epoch(&mut self, group_id: u64) -> Result<u64, MlsError> {
        Ok(group_entry(&mut self.groups, &self.provider, group_id)?
            .epoch()
            .as_u64())
    }

    /// The group's members ("user/device"), in tree order, this device included.
    pub fn members(&mut self, group_id: u64) -> Result<Vec<String>, MlsError> {
        let group = group_entry(&mut self.groups, &self.provider, group_id)?;
        group
            .members()
            .map(|m| {
                identity_of(&m.credential)
                    .map_err(|e| MlsError::Internal(format!("member credential: {e}")))
            })
            .collect()
    }
}

fn welcome_error(error: WelcomeError<MemoryStorageError>) -> MlsError {
    match error {
        WelcomeError::NoMatchingKeyPackage
        | WelcomeError::NoMatchingEncryptionKey
        | WelcomeError::PrivateInitKeyNotFound => MlsError::NoMatchingKeyPackage,
        WelcomeError::GroupAlreadyExists => {
            MlsError::InvalidWelcome("the group already exists on this device".into())
        }
        other => MlsError::InvalidWelcome(other.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    fn client(name: &str) -> (TempDir, MlsClient) {
        let dir = tempfile::tempdir().unwrap();
        let client = MlsClient::load_or_create(dir.path(), &format!("{name}/1")).unwrap();
        (dir, client)
    }

    fn kp(c: &mut MlsClient) -> Vec<u8> {
        c.key_packages(1).unwrap().pop().unwrap()
    }

    /// `creator` adds `joiners` to `group`; `others` process the commit.
    fn add(
        group: u64,
        creator: &mut MlsClient,
        joiners: &mut [&mut MlsClient],
        others: &mut [&mut MlsClient],
    ) {
        let kps: Vec<Vec<u8>> = joiners.iter_mut().map(|j| kp(j)).collect();
        let bundle = creator.add_members(group, &kps).unwrap();
        assert_eq!(bundle.epoch, creator.epoch(group).unwrap());
        creator.confirm_commit(group).unwrap();
        for o in others.iter_mut() {
            assert_eq!(
                o.process(group, &bundle.commit).unwrap(),
                Processed::Commit {
                    epoch: bundle.epoch + 1,
                    removed_me: false
                }
            );
        }
        let welcome = bundle.welcome.unwrap();
        for j in joiners.iter_mut() {
            assert_eq!(j.join(&welcome).unwrap(), group);
            assert_eq!(j.epoch(group).unwrap(), bundle.epoch + 1);
        }
    }

    fn app(sender: &str, text: &str) -> Processed {
        Processed::Application {
            sender: format!("{sender}/1"),
            plaintext: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_deactivated_group_is_removed_for_good_until_a_welcome() {
        let (_a, mut alice) = client("alice");
        let (bob_dir, mut bob) = client("bob");
        alice.create_group(9).unwrap();
        bob.create_group(4).unwrap();
        add(9, &mut alice, &mut [&mut bob], &mut []);
        assert_eq!(bob.active_groups().unwrap(), vec![4, 9]);
        assert!(bob.deactivate(9).unwrap());
        assert!(!bob.deactivate(9).unwrap(), "deactivated once");
        assert!(matches!(bob.encrypt(9, b"x"), Err(MlsError::Removed(9))));
        let m = alice.encrypt(9, b"still there?").unwrap();
        assert!(matches!(bob.process(9, &m), Err(MlsError::Removed(9))));
        bob.save().unwrap();
        let mut bob = MlsClient::load_or_create(bob_dir.path(), "bob/1").unwrap();
        assert_eq!(bob.active_groups().unwrap(), vec![4], "saved inactive");
        assert!(bob.has_group(9).unwrap());
        // Added again, the Welcome replaces the inactive state.
        alice.remove_members(9, &["bob/1".to_owned()]).unwrap();
        alice.confirm_commit(9).unwrap();
        add(9, &mut alice, &mut [&mut bob], &mut []);
        assert_eq!(bob.active_groups().unwrap(), vec![4, 9]);
    }

    /// A member that missed commits rejoins from the GroupInfo of the last
    /// one by an external commit (its old leaf is removed), the others
    /// process it, and everyone reads everyone again; a later Welcome-based
    /// add still works.
    #[test]
    fn a_member_behind_rejoins_by_external_commit() {
        let (_a, mut alice) = client("alice");
        let (_b, mut bob) = client("bob");
        let (_c, mut carol) = client("carol");
        let (_d, mut dave) = client("dave");
        alice.create_group(5).unwrap();
        add(5, &mut alice, &mut [&mut bob], &mut []);
        // Bob misses the next commit.
        let missed = alice.add_members(5, &[kp(&mut carol)]).unwrap();
        alice.confirm_commit(5).unwrap();
        carol.join(&missed.welcome.unwrap()).unwrap();
        let ahead = alice.encrypt(5, b"bob cannot read this").unwrap();
        assert!(matches!(
            bob.process(5, &ahead),
            Err(MlsError::FutureEpoch { .. })
        ));
        assert!(matches!(
            bob.external_join(6, &missed.group_info),
            Err(MlsError::WrongGroup { expected: 6, .. })
        ));
        let join = bob.external_join(5, &missed.group_info).unwrap();
        assert_eq!(join.epoch, 2);
        assert_eq!(bob.epoch(5).unwrap(), 3);
        for c in [&mut alice, &mut carol] {
            assert_eq!(
                c.process(5, &join.commit).unwrap(),
                Processed::Commit {
                    epoch: 3,
                    removed_me: false
                }
            );
            assert_eq!(c.members(5).unwrap().len(), 3, "the old leaf is gone");
        }
        let m = alice.encrypt(5, b"welcome back").unwrap();
        assert_eq!(bob.process(5, &m).unwrap(), app("alice", "welcome back"));
        let m = bob.encrypt(5, b"thanks").unwrap();
        assert_eq!(alice.process(5, &m).unwrap(), app("bob", "thanks"));
        assert_eq!(carol.process(5, &m).unwrap(), app("bob", "thanks"));
        // The GroupInfo of the external commit lets the next one rejoin too,
        // and Welcomes keep working.
        let again = carol.external_join(5, &join.group_info).unwrap();
        assert_eq!(again.epoch, 3);
        alice.process(5, &again.commit).unwrap();
        bob.process(5, &again.commit).unwrap();
        add(5, &mut alice, &mut [&mut dave], &mut [&mut bob, &mut carol]);
        let m = dave.encrypt(5, b"hi").unwrap();
        for c in [&mut alice, &mut bob, &mut carol] {
            assert_eq!(c.process(5, &m).unwrap(), app("dave", "hi"));
        }
    }

    #[test]
    fn three_members_create_add_exchange() {
        let (_a, mut alice) = client("alice");
        let (_b, mut bob) = client("bob");
        let (_c, mut carol) = client("carol");
        alice.create_group(7).unwrap();
        assert_eq!(alice.epoch(7).unwrap(), 0);
        assert!(matches!(
            alice.create_group(7),
            Err(MlsError::GroupExists(7))
        ));
        add(7, &mut alice, &mut [&mut bob], &mut []);
        add(7, &mut alice, &mut [&mut carol], &mut [&mut bob]);
        for c in [&mut alice, &mut bob, &mut carol] {
            assert_eq!(c.members(7).unwrap(), vec!["alice/1", "bob/1", "carol/1"]);
            assert_eq!(c.epoch(7).unwrap(), 2);
        }
        let m = alice.encrypt(7, b"hi all").unwrap();
        assert_eq!(bob.process(7, &m).unwrap(), app("alice", "hi all"));
        assert_eq!(carol.process(7, &m).unwrap(), app("alice", "hi all"));
        let m = bob.encrypt(7, b"hi from bob").unwrap();
        assert_eq!(alice.process(7, &m).unwrap(), app("bob", "hi from bob"));
        assert_eq!(carol.process(7, &m).unwrap(), app("bob", "hi from bob"));
        let m = carol.encrypt(7, b"and carol").unwrap();
        assert_eq!(alice.process(7, &m).unwrap(), app("carol", "and carol"));
        assert_eq!(bob.process(7, &m).unwrap(), app("carol", "and carol"));
        // Own echo, wrong group, garbage: typed errors, no panic.
        assert!(matches!(carol.process(7, &m), Err(MlsError::OwnMessage(7))));
        assert!(matches!(
            alice.process(8, &m),
            Err(MlsError::WrongGroup { expected: 8, .. })
        ));
        assert!(matches!(
            alice.process(7, b"garbage"),
            Err(MlsError::Malformed(_))
        ));
        assert!(matches!(
            alice.encrypt(99, b"x"),
            Err(MlsError::UnknownGroup(99))
        ));
    }

    #[test]
    fn fifty_members_in_one_commit() {
        let (_a, mut alice) = client("alice");
        let mut others: Vec<(TempDir, MlsClient)> =
            (0..49).map(|i| client(&format!("u{i}"))).collect();
        alice.create_group(50).unwrap();
        let kps: Vec<Vec<u8>> = others.iter_mut().map(|(_, c)| kp(c)).collect();
        let bundle = alice.add_members(50, &kps).unwrap();
        assert_eq!(bundle.added.len(), 49);
        alice.confirm_commit(50).unwrap();
        let welcome = bundle.welcome.unwrap();
        for (_, c) in &mut others {
            assert_eq!(c.join(&welcome).unwrap(), 50);
            assert_eq!(c.members(50).unwrap().len(), 50);
        }
        let m = alice.encrypt(50, b"welcome, 49").unwrap();
        for (_, c) in &mut others {
            assert_eq!(c.process(50, &m).unwrap(), app("alice", "welcome, 49"));
        }
        let m = others[10].1.encrypt(50, b"u10 here").unwrap();
        assert_eq!(alice.process(50, &m).unwrap(), app("u10", "u10 here"));
        for (i, (_, c)) in others.iter_mut().enumerate() {
            if i != 10 {
                assert_eq!(c.process(50, &m).unwrap(), app("u10", "u10 here"));
            }
        }
    }

    #[test]
    fn removed_members_cannot_decrypt_later_messages() {
        let (_a, mut alice) = client("alice");
        let (_b, mut bob) = client("bob");
        let (_c, mut carol) = client("carol");
        let (_d, mut dave) = client("dave");
        let (_e, mut erin) = client("erin");
        alice.create_group(3).unwrap();
        add(
            3,
            &mut alice,
            &mut [&mut bob, &mut carol, &mut dave, &mut erin],
            &mut [],
        );
        let bundle = alice
            .remove_members(3, &["carol/1".to_owned(), "dave/1".to_owned()])
            .unwrap();
        assert_eq!(bundle.removed, vec!["carol/1", "dave/1"]);
        assert!(bundle.welcome.is_none());
        // Not applied until confirmed.
        assert_eq!(alice.members(3).unwrap().len(), 5);
        assert!(matches!(
            alice.encrypt(3, b"x"),
            Err(MlsError::PendingCommit(3))
        ));
        alice.confirm_commit(3).unwrap();
        assert_eq!(
            alice.members(3).unwrap(),
            vec!["alice/1", "bob/1", "erin/1"]
        );
        for c in [&mut bob, &mut erin] {
            assert_eq!(
                c.process(3, &bundle.commit).unwrap(),
                Processed::Commit {
                    epoch: 2,
                    removed_me: false
                }
            );
        }
        // Carol processes her removal; dave never sees it.
        assert!(matches!(
            carol.process(3, &bundle.commit).unwrap(),
            Processed::Commit {
                removed_me: true,
                ..
            }
        ));
        let m = alice.encrypt(3, b"after removal").unwrap();
        assert_eq!(bob.process(3, &m).unwrap(), app("alice", "after removal"));
        assert_eq!(erin.process(3, &m).unwrap(), app("alice", "after removal"));
        let e = carol.process(3, &m).unwrap_err();
        assert!(
            matches!(e, MlsError::Removed(3)) && e.is_undecryptable(),
            "{e}"
        );
        let e = dave.process(3, &m).unwrap_err();
        assert!(
            matches!(
                e,
                MlsError::FutureEpoch {
                    message_epoch: 2,
                    current_epoch: 1,
                    ..
                }
            ) && e.is_undecryptable(),
            "{e}"
        );
        assert!(matches!(carol.encrypt(3, b"x"), Err(MlsError::Removed(3))));
        assert!(matches!(
            alice.remove_members(3, &["carol/1".to_owned()]),
            Err(MlsError::NotMember { group_id: 3, .. })
        ));
        // A removed device can be re-added with a fresh KeyPackage.
        add(3, &mut alice, &mut [&mut carol], &mut [&mut bob, &mut erin]);
        let m = bob.encrypt(3, b"welcome back").unwrap();
        assert_eq!(carol.process(3, &m).unwrap(), app("bob", "welcome back"));
    }

    #[test]
    fn concurrent_commits_loser_discards_and_retries() {
        let (_a, mut alice) = client("alice");
        let (_b, mut bob) = client("bob");
        let (_c, mut carol) = client("carol");
        let (_d, mut dave) = client("dave");
        let (_e, mut erin) = client("erin");
        alice.create_group(9).unwrap();
        add(9, &mut alice, &mut [&mut bob, &mut carol], &mut []);
        let epoch = alice.epoch(9).unwrap();
        // Both commit for the same epoch.
        let winner = alice.add_members(9, &[kp(&mut dave)]).unwrap();
        let loser = bob.add_members(9, &[kp(&mut erin)]).unwrap();
        assert_eq!((winner.epoch, loser.epoch), (epoch, epoch));
        // The "server" accepts the first commit for `epoch` only.
        alice.confirm_commit(9).unwrap();
        bob.discard_commit(9).unwrap();
        assert!(matches!(
            bob.discard_commit(9),
            Err(MlsError::NoPendingCommit(9))
        ));
        assert_eq!(
            bob.process(9, &winner.commit).unwrap(),
            Processed::Commit {
                epoch: epoch + 1,
                removed_me: false
            }
        );
        assert_eq!(
            carol.process(9, &winner.commit).unwrap(),
            Processed::Commit {
                epoch: epoch + 1,
                removed_me: false
            }
        );
        assert_eq!(dave.join(winner.welcome.as_ref().unwrap()).unwrap(), 9);
        // The losing commit is from an old epoch: nobody can apply it.
        assert!(matches!(
            carol.process(9, &loser.commit),
            Err(MlsError::StaleEpoch { .. })
        ));
        // Bob retries at the next epoch (erin's KeyPackage was never consumed).
        let kp_erin = kp(&mut erin);
        let retry = bob.add_members(9, &[kp_erin]).unwrap();
        assert_eq!(retry.epoch, epoch + 1);
        bob.confirm_commit(9).unwrap();
        for c in [&mut alice, &mut carol, &mut dave] {
            assert_eq!(
                c.process(9, &retry.commit).unwrap(),
                Processed::Commit {
                    epoch: epoch + 2,
                    removed_me: false
                }
            );
        }
        assert_eq!(erin.join(retry.welcome.as_ref().unwrap()).unwrap(), 9);
        let m = erin.encrypt(9, b"erin is in").unwrap();
        for c in [&mut alice, &mut bob, &mut carol, &mut dave] {
            assert_eq!(c.members(9).unwrap().len(), 5);
            assert_eq!(c.process(9, &m).unwrap(), app("erin", "erin is in"));
        }
    }

    #[test]
    fn processing_the_winning_commit_drops_a_pending_one() {
        let (_a, mut alice) = client("alice");
        let (_b, mut bob) = client("bob");
        let (_c, mut carol) = client("carol");
        alice.create_group(5).unwrap();
        add(5, &mut alice, &mut [&mut bob], &mut []);
        let winner = alice.remove_members(5, &["bob/1".to_owned()]).unwrap();
        let _loser = bob.add_members(5, &[kp(&mut carol)]).unwrap();
        alice.confirm_commit(5).unwrap();
        // Bob forgot to discard: processing the winner still works.
        assert_eq!(
            bob.process(5, &winner.commit).unwrap(),
            Processed::Commit {
                epoch: 2,
                removed_me: true
            }
        );
        assert!(matches!(
            bob.confirm_commit(5),
            Err(MlsError::Removed(5)) | Err(MlsError::NoPendingCommit(5))
        ));
    }

    #[test]
    fn state_survives_save_and_reload() {
        let (a_dir, mut alice) = client("alice");
        let (b_dir, mut bob) = client("bob");
        alice.create_group(11).unwrap();
        add(11, &mut alice, &mut [&mut bob], &mut []);
        for i in 0..3 {
            let m = alice.encrypt(11, format!("m{i}").as_bytes()).unwrap();
            assert_eq!(bob.process(11, &m).unwrap(), app("alice", &format!("m{i}")));
        }
        alice.save().unwrap();
        bob.save().unwrap();
        // A message sent after bob's save: bob crashes before saving again.
        let pending = alice.encrypt(11, b"in flight").unwrap();
        alice.save().unwrap();
        drop(alice);
        drop(bob);
        let mut alice = MlsClient::load_or_create(a_dir.path(), "alice/1").unwrap();
        let mut bob = MlsClient::load_or_create(b_dir.path(), "bob/1").unwrap();
        assert_eq!(alice.epoch(11).unwrap(), 1);
        assert_eq!(bob.members(11).unwrap(), vec!["alice/1", "bob/1"]);
        assert_eq!(
            bob.process(11, &pending).unwrap(),
            app("alice", "in flight")
        );
        let m = bob.encrypt(11, b"after reload").unwrap();
        assert_eq!(alice.process(11, &m).unwrap(), app("bob", "after reload"));
        // Commits keep working after a reload, including a pending one saved mid-flight.
        let (_c, mut carol) = client("carol");
        let bundle = alice.add_members(11, &[kp(&mut carol)]).unwrap();
        alice.save().unwrap();
        drop(alice);
        let mut alice = MlsClient::load_or_create(a_dir.path(), "alice/1").unwrap();
        assert!(matches!(
            alice.encrypt(11, b"x"),
            Err(MlsError::PendingCommit(11))
        ));
        let kept = Some(PendingCommit {
            epoch: bundle.epoch,
            commit: Some(bundle.commit.clone()),
        });
        assert_eq!(alice.pending_commit(11).unwrap(), kept);
        assert_eq!(alice.groups_with_pending_commits().unwrap(), vec![11]);
        alice.confirm_commit(11).unwrap();
        assert_eq!(alice.pending_commit(11).unwrap(), None);
        assert!(alice.groups_with_pending_commits().unwrap().is_empty());
        bob.process(11, &bundle.commit).unwrap();
        carol.join(bundle.welcome.as_ref().unwrap()).unwrap();
        let m = carol.encrypt(11, b"hello").unwrap();
        assert_eq!(alice.process(11, &m).unwrap(), app("carol", "hello"));
        assert_eq!(bob.process(11, &m).unwrap(), app("carol", "hello"));
        // Wrong identity and corrupt state are typed errors.
        alice.save().unwrap();
        assert!(matches!(
            MlsClient::load_or_create(a_dir.path(), "mallory/1"),
            Err(MlsError::IdentityMismatch { .. })
        ));
        let storage = a_dir.path().join(MLS_DIR).join(STORAGE_FILE);
        let mut bytes = std::fs::read(&storage).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        std::fs::write(&storage, &bytes).unwrap();
        assert!(matches!(
            MlsClient::load_or_create(a_dir.path(), "alice/1"),
            Err(MlsError::CorruptState { .. })
        ));
        std::fs::write(&storage, &bytes[..10]).unwrap();
        assert!(matches!(
            MlsClient::load_or_create(a_dir.path(), "alice/1"),
            Err(MlsError::CorruptState { .. })
        ));
    }

    #[test]
    fn last_resort_key_package_joins_many_groups() {
        let (_a, mut alice) = client("alice");
        let (_c, mut carol) = client("carol");
        let (b_dir, mut bob) = client("bob");
        let last = bob.last_resort_key_package().unwrap();
        alice.create_group(1).unwrap();
        carol.create_group(2).unwrap();
        let b1 = alice.add_members(1, std::slice::from_ref(&last)).unwrap();
        alice.confirm_commit(1).unwrap();
        let b2 = carol.add_members(2, std::slice::from_ref(&last)).unwrap();
        carol.confirm_commit(2).unwrap();
        assert_eq!(bob.join(b1.welcome.as_ref().unwrap()).unwrap(), 1);
        bob.save().unwrap();
        drop(bob);
        let mut bob = MlsClient::load_or_create(b_dir.path(), "bob/1").unwrap();
        assert_eq!(bob.join(b2.welcome.as_ref().unwrap()).unwrap(), 2);
        let m1 = alice.encrypt(1, b"group one").unwrap();
        let m2 = carol.encrypt(2, b"group two").unwrap();
        assert_eq!(bob.process(1, &m1).unwrap(), app("alice", "group one"));
        assert_eq!(bob.process(2, &m2).unwrap(), app("carol", "group two"));
        // A single-use KeyPackage is gone after one join.
        let single = kp(&mut bob);
        let (_d, mut dave) = client("dave");
        let (_e, mut erin) = client("erin");
        dave.create_group(3).unwrap();
        erin.create_group(4).unwrap();
        let b3 = dave.add_members(3, std::slice::from_ref(&single)).unwrap();
        let b4 = erin.add_members(4, std::slice::from_ref(&single)).unwrap();
        assert_eq!(bob.join(b3.welcome.as_ref().unwrap()).unwrap(), 3);
        assert!(matches!(
            bob.join(b4.welcome.as_ref().unwrap()),
            Err(MlsError::NoMatchingKeyPackage)
        ));
        // Invalid input is typed.
        assert!(matches!(
            alice.add_members(1, &[b"nope".to_vec()]),
            Err(MlsError::Malformed(_))
        ));
        assert!(matches!(
            alice.add_members(1, &[m1]),
            Err(MlsError::InvalidKeyPackage(_))
        ));
        assert!(matches!(
            alice.add_members(1, &[]),
            Err(MlsError::EmptyInput(_))
        ));
    }
}
