//! The conformance suite every [`Store`] backend must pass.
//!
//! Owns one check per behaviour the traits document: every method, every
//! documented error, the atomicity of the insert-if-absent paths under a real
//! race, sweeping, `persist`, device ids and revocation, the key directory
//! (long-term device keys; the generic single-use key pool, run for every
//! [`KeyPool`](crate::KeyPool), each key handed out exactly once under a real race) and
//! accepting MLS Commits (the epoch compare-and-set with its GroupInfo,
//! membership change and log appends as one atomic write).
//!
//! A backend runs it with [`conformance_tests!`](crate::conformance_tests),
//! which expands to one `#[tokio::test]` per check, each on a fresh store
//! from the backend's factory, so checks never see each other's data. Every
//! check has the same signature, `async fn(Arc<dyn Store>)`, and panics
//! (through `assert!`) on a violation, like any test. The race checks need
//! a multi-thread runtime to actually race; the macro provides one.
//!
//! The fixtures below (`device`, `conversation`, `message`, `pool_key`,
//! `commit`, ...) are public so that backends' own tests can share them.

mod accounts;
pub mod blob;
mod consent;
mod conversations;
mod groups;
mod keys;
mod log;
mod ownership;

use std::fmt::Debug;

use bytes::Bytes;

pub use self::accounts::*;
pub use self::consent::*;
pub use self::conversations::*;
pub use self::groups::*;
pub use self::keys::*;
pub use self::log::*;
pub use self::ownership::*;
use crate::{
    AppendOutcome, CommitRecord, ConversationId, ConversationKind, ConversationRecord,
    CreateOutcome, DeviceId, DeviceKeys, DeviceKeysUpdate, DeviceRecord, PoolKey, Seq,
    SignedPrekey, Store, StoredMessage,
};

/// Expands, in the calling module, to one
/// `#[tokio::test(flavor = "multi_thread", worker_threads = 4)]` per
/// conformance check, named after the check. Each test builds a fresh store
/// with `let (store, _guard) = (factory)();` and runs the check on it;
/// `_guard` is whatever the backend needs kept alive until the check ends
/// (a `TempDir`, or `()`).
///
/// ```no_run
/// mod memory {
///     tern_store::conformance_tests!(|| (tern_store::memory::MemStore::new(), ()));
/// }
/// ```
///
/// The calling crate needs `tokio` (features `rt-multi-thread`, `macros`)
/// among its dev-dependencies. Adding a check means writing a `pub async fn
/// check(s: Arc<dyn Store>)` in a `conformance` submodule and adding its name
/// to the list below.
///
/// A backend that needs a server which may not be there (ScyllaDB) uses
/// `conformance_tests!(optional_async: factory)`: `factory()` is a future of
/// `Option<(store, guard)>`, and a check given `None` returns without
/// running; the factory prints why (a visible "skipped" line), so a skip is
/// never mistaken for a pass.
#[macro_export]
macro_rules! conformance_tests {
    (optional_async: $factory:expr $(,)?) => {
        $crate::conformance_tests!(@list optional_async $factory);
    };
    ($factory:expr $(,)?) => {
        $crate::conformance_tests!(@list plain $factory);
    };
    (@list $mode:ident $factory:expr) => {
        $crate::conformance_tests!(@checks $mode $factory;
            // accounts and devices
            accounts,
            create_account_race,
            add_device_ids,
            add_device_race,
            revoke_device,
            // conversations and membership
            conversations,
            create_conversation_race,
            update_members,
            member_since,
            // message log, cursors, expiry, durability
            append_seq_rules,
            duplicates,
            append_batch,
            messages_paging,
            messages_expiry_filter,
            cursors,
            sweep,
            sweep_limit,
            persist,
            // key directory
            device_keys_updates,
            key_pool_claims,
            key_pools_independent,
            key_pool_cap,
            key_pool_inactive_devices,
            key_pool_claim_race,
            // MLS groups
            accept_commit,
            accept_commit_stale,
            accept_commit_seq_conflict,
            accept_commit_no_such_conversation,
            accept_commit_log_entries,
            accept_commit_race,
            // privacy, contacts, invitations; the paged index
            group_adds_setting,
            direct_starts_setting,
            presence_visibility_setting,
            push_endpoints,
            conversation_by_key,
            contacts,
            invitations,
            conversation_index_pages,
            blocks,
            blocks_bound_race,
            purge_message,
            conversation_settings,
            // cluster ownership and fencing
            ownership_claims,
            fenced_appends,
            fenced_commit,
            ownership_claim_race,
        );
    };
    (@checks plain $factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let (store, _guard) = ($factory)();
                $crate::conformance::$check(::std::sync::Arc::new(store)).await
            }
        )+
    };
    (@checks optional_async $factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $check() {
                let Some((store, _guard)) = ($factory)().await else {
                    return;
                };
                $crate::conformance::$check(::std::sync::Arc::new(store)).await
            }
        )+
    };
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// Rounds of each race: a lost update shows only when two calls interleave,
/// so one round can pass by luck.
pub const RACE_ROUNDS: u32 = 8;

/// Tasks in each race.
pub const RACERS: usize = 16;

/// Unwraps `r` or fails the check with `what` and the error.
fn ok<T, E: Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("conformance: {what} failed: {e:?}"),
    }
}

/// A device record whose fields all derive from `device`.
pub fn device(device: DeviceId) -> DeviceRecord {
    let byte = u8::try_from(device % 251).unwrap_or(0);
    DeviceRecord {
        device,
        name: format!("device {device}"),
        public_key: [byte; 32],
        created_ms: 1_000 + u64::from(device),
    }
}

/// A conversation record of `kind` with `members`.
pub fn conversation(
    id: ConversationId,
    kind: ConversationKind,
    creator: &str,
    members: &[&str],
) -> ConversationRecord {
    ConversationRecord {
        id,
        kind,
        creator: creator.to_string(),
        members: members.iter().map(|m| m.to_string()).collect(),
        created_ms: 5_000,
        head_seq: 0,
    }
}

/// A message from alice's device 1 that never expires in these checks.
pub fn message(id: ConversationId, seq: Seq, client_message_id: u64) -> StoredMessage {
    StoredMessage {
        conversation_id: id,
        seq,
        sender_user: "alice".to_string(),
        sender_device: 1,
        client_message_id,
        server_time_ms: 10_000 + seq,
        expires_at_ms: u64::MAX,
        flags: 0x5a,
        payload: Bytes::from(format!("ciphertext {id}/{seq}/{client_message_id}")),
    }
}

/// A single-use pool key whose bytes derive from `id`.
pub fn pool_key(id: u64) -> PoolKey {
    PoolKey {
        id,
        key: Bytes::from(format!("pool key {id}")),
    }
}

/// Pool keys with `ids`, in that order.
pub fn pool_keys(ids: &[u64]) -> Vec<PoolKey> {
    ids.iter().map(|&id| pool_key(id)).collect()
}

/// A last-resort pool key whose bytes derive from `id`.
pub fn last_resort_key(id: u64) -> PoolKey {
    PoolKey {
        id,
        key: Bytes::from(format!("last resort key {id}")),
    }
}

/// The identity key and its signature used by [`full_keys_update`].
pub const IDENTITY: ([u8; 32], [u8; 64]) = ([0x1d; 32], [0x5e; 64]);

/// The KEM prekey used by [`full_keys_update`].
pub const KEM_PREKEY: &[u8] = b"kem prekey";

/// A signed prekey whose bytes derive from `id` and `tag`.
pub fn signed_prekey(id: u32, tag: u8) -> SignedPrekey {
    SignedPrekey {
        id,
        public: [tag; 32],
        signature: [tag ^ 0xFF; 64],
    }
}

/// An update giving every long-term key: [`IDENTITY`], signed prekey
/// `signed_prekey(1, 0x51)` and [`KEM_PREKEY`].
pub fn full_keys_update() -> DeviceKeysUpdate {
    DeviceKeysUpdate {
        identity: Some(IDENTITY),
        signed_prekey: Some(signed_prekey(1, 0x51)),
        kem_prekey: Some(Bytes::from_static(KEM_PREKEY)),
    }
}

/// What [`full_keys_update`] stores.
pub fn full_device_keys() -> DeviceKeys {
    DeviceKeys {
        identity_key: IDENTITY.0,
        identity_signature: IDENTITY.1,
        signed_prekey: Some(signed_prekey(1, 0x51)),
        kem_prekey: Some(Bytes::from_static(KEM_PREKEY)),
    }
}

/// The GroupInfo of the epoch after `epoch` of group `id`.
pub fn group_info(id: ConversationId, epoch: u64) -> Bytes {
    Bytes::from(format!("group info of {id} after epoch {epoch}"))
}

/// A Commit of group `id` made in `epoch`, appended as message `seq`
/// (client message id `1_000_000 + epoch`), changing no members, without a
/// Welcome.
pub fn commit(id: ConversationId, epoch: u64, seq: Seq) -> CommitRecord {
    let mut msg = message(id, seq, 1_000_000 + epoch);
    msg.payload = Bytes::from(format!("commit of {id} in epoch {epoch}"));
    CommitRecord {
        fence: None,
        conversation_id: id,
        epoch,
        group_info: group_info(id, epoch),
        add: Vec::new(),
        remove: Vec::new(),
        commit: msg,
        welcome: None,
    }
}

/// The Welcome of a Commit of group `id` in `epoch`, as message `seq`
/// (client message id `2_000_000 + epoch`).
pub fn welcome(id: ConversationId, epoch: u64, seq: Seq) -> StoredMessage {
    let mut msg = message(id, seq, 2_000_000 + epoch);
    msg.payload = Bytes::from(format!("welcome of {id} in epoch {epoch}"));
    msg
}

/// Users from handles.
fn users(names: &[&str]) -> Vec<String> {
    names.iter().map(|u| u.to_string()).collect()
}

async fn new_conversation(s: &dyn Store, id: ConversationId, members: &[&str]) {
    let record = conversation(id, ConversationKind::Group, "alice", members);
    let outcome = ok(
        s.create_conversation(&record, None).await,
        "create_conversation",
    );
    assert_eq!(outcome, CreateOutcome::Created);
}

async fn append_ok(s: &dyn Store, msg: &StoredMessage) {
    let outcome = ok(s.append_message(msg).await, "append_message");
    assert_eq!(
        outcome,
        AppendOutcome::Appended,
        "append of seq {}",
        msg.seq
    );
}

async fn record(s: &dyn Store, id: ConversationId) -> ConversationRecord {
    match ok(s.conversation(id).await, "conversation") {
        Some(record) => record,
        None => panic!("conformance: conversation {id} vanished"),
    }
}

async fn head(s: &dyn Store, id: ConversationId) -> Seq {
    record(s, id).await.head_seq
}

async fn seqs(s: &dyn Store, id: ConversationId, from: Seq, limit: usize, now_ms: u64) -> Vec<Seq> {
    let msgs = ok(s.messages(id, from, limit, now_ms).await, "messages");
    msgs.iter().map(|m| m.seq).collect()
}

async fn user_conversations(s: &dyn Store, user: &str) -> Vec<ConversationId> {
    ok(s.user_conversations(user).await, "user_conversations")
}
