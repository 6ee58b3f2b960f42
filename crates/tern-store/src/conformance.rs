//! The conformance suite every [`Store`] backend must pass.
//!
//! Owns one check per behaviour the trait documents: every method, every
//! documented error, the atomicity of the insert-if-absent paths under a real
//! race, sweeping, `persist`, device ids and revocation, the key directory
//! (prekeys, KeyPackages: each single-use key handed out exactly once under a
//! real race) and the MLS epoch compare-and-set. A backend's integration test calls
//! [`run_all`] with a factory that returns a fresh, empty store; each check
//! gets its own store, so checks never see each other's data. Run it on a
//! multi-thread tokio runtime so that the race checks actually race.
//!
//! The checks panic (through `assert!`) on a violation, like any test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Barrier;

use crate::{
    AppendError, AppendOutcome, ClaimedKeyPackage, ClaimedPrekeys, ConversationId,
    ConversationKind, ConversationRecord, CreateAccountError, CreateConversationError,
    CreateOutcome, DeviceId, DeviceRecord, EpochOutcome, MembersError, Prekey, PrekeyUpload, Seq,
    SignedPrekey, Store, StoredMessage, KEY_POOL_CAP,
};

/// Runs every check, each on a fresh store from `make`.
pub async fn run_all<S: Store>(make: impl Fn() -> S) {
    accounts(&make()).await;
    create_account_race(Arc::new(make())).await;
    conversations(&make()).await;
    create_conversation_race(Arc::new(make())).await;
    update_members(&make()).await;
    append_seq_rules(&make()).await;
    duplicates(&make()).await;
    messages_paging(&make()).await;
    messages_expiry_filter(&make()).await;
    cursors(&make()).await;
    sweep(&make()).await;
    sweep_limit(&make()).await;
    persist(Arc::new(make())).await;
    add_device_ids(&make()).await;
    add_device_race(Arc::new(make())).await;
    revoke_device(&make()).await;
    prekeys(&make()).await;
    prekey_rotation(&make()).await;
    prekey_pool_cap(&make()).await;
    prekey_claim_race(Arc::new(make())).await;
    key_packages(&make()).await;
    key_package_claim_race(Arc::new(make())).await;
    epochs(&make()).await;
    epoch_race(Arc::new(make())).await;
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

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

async fn head(s: &dyn Store, id: ConversationId) -> Seq {
    let record = ok(s.conversation(id).await, "conversation");
    match record {
        Some(record) => record.head_seq,
        None => panic!("conformance: conversation {id} vanished"),
    }
}

async fn seqs(s: &dyn Store, id: ConversationId, from: Seq, limit: usize, now_ms: u64) -> Vec<Seq> {
    let msgs = ok(s.messages(id, from, limit, now_ms).await, "messages");
    msgs.iter().map(|m| m.seq).collect()
}

// ---------------------------------------------------------------------------
// Accounts and devices
// ---------------------------------------------------------------------------

/// create_account, device, devices and `UserExists`.
pub async fn accounts(s: &dyn Store) {
    ok(
        s.create_account("alice", device(7)).await,
        "create_account alice",
    );
    assert_eq!(ok(s.device("alice", 7).await, "device"), Some(device(7)));
    assert_eq!(
        ok(s.device("alice", 1).await, "device"),
        None,
        "unknown device"
    );
    assert_eq!(ok(s.device("bob", 7).await, "device"), None, "unknown user");
    assert_eq!(ok(s.devices("alice").await, "devices"), vec![device(7)]);
    assert_eq!(
        ok(s.devices("bob").await, "devices"),
        vec![],
        "unknown user has no devices"
    );

    let again = s.create_account("alice", device(8)).await;
    assert!(
        matches!(&again, Err(CreateAccountError::UserExists(u)) if u == "alice"),
        "{again:?}"
    );
    assert_eq!(
        ok(s.devices("alice").await, "devices"),
        vec![device(7)],
        "a refused create writes nothing"
    );

    // Handles that prefix one another are distinct users.
    assert_eq!(ok(s.devices("al").await, "devices"), vec![]);
    ok(s.create_account("al", device(1)).await, "create_account al");
    ok(
        s.create_account("alice.b-c_9", device(2)).await,
        "create_account alice.b-c_9",
    );
    assert_eq!(ok(s.devices("al").await, "devices"), vec![device(1)]);
    assert_eq!(ok(s.devices("alice").await, "devices"), vec![device(7)]);
    let long = "a".repeat(32);
    ok(
        s.create_account(&long, device(3)).await,
        "create_account 32-char handle",
    );
    assert_eq!(ok(s.device(&long, 3).await, "device"), Some(device(3)));
}

/// 16 concurrent creates of one handle: exactly one wins.
pub async fn create_account_race(s: Arc<dyn Store>) {
    const N: u32 = 16;
    let barrier = Arc::new(Barrier::new(N as usize));
    let mut tasks = Vec::new();
    for i in 1..=N {
        let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            (i, s.create_account("racer", device(i)).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match ok(task.await, "join create_account task") {
            (i, Ok(())) => winners.push(i),
            (_, Err(CreateAccountError::UserExists(u))) => assert_eq!(u, "racer"),
            (_, Err(e)) => panic!("conformance: create_account race: {e:?}"),
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "exactly one create_account wins: {winners:?}"
    );
    let devices = ok(s.devices("racer").await, "devices");
    assert_eq!(
        devices,
        winners.iter().map(|&i| device(i)).collect::<Vec<_>>(),
        "the winner's device is stored"
    );
}

// ---------------------------------------------------------------------------
// Conversations and membership
// ---------------------------------------------------------------------------

/// create_conversation (`Created`, `Existing`, `IdTaken`), conversation,
/// user_conversations ordering.
pub async fn conversations(s: &dyn Store) {
    let mut group = conversation(300, ConversationKind::Group, "alice", &["alice", "bob"]);
    group.head_seq = 99; // ignored on create
    assert_eq!(
        ok(s.create_conversation(&group, None).await, "create"),
        CreateOutcome::Created
    );
    group.head_seq = 0;
    assert_eq!(
        ok(s.conversation(300).await, "conversation"),
        Some(group.clone())
    );
    assert_eq!(ok(s.conversation(301).await, "conversation"), None);

    let clash = conversation(300, ConversationKind::Direct, "carol", &["carol", "dave"]);
    let taken = s.create_conversation(&clash, None).await;
    assert!(
        matches!(taken, Err(CreateConversationError::IdTaken(300))),
        "{taken:?}"
    );
    let taken = s.create_conversation(&clash, Some(b"carol|dave")).await;
    assert!(
        matches!(taken, Err(CreateConversationError::IdTaken(300))),
        "{taken:?}"
    );
    assert_eq!(
        ok(s.conversation(300).await, "conversation"),
        Some(group.clone()),
        "IdTaken writes nothing"
    );
    assert_eq!(
        ok(s.user_conversations("carol").await, "user_conversations"),
        Vec::<ConversationId>::new()
    );

    let direct = conversation(5, ConversationKind::Direct, "alice", &["alice", "bob"]);
    assert_eq!(
        ok(
            s.create_conversation(&direct, Some(b"alice|bob")).await,
            "create"
        ),
        CreateOutcome::Created
    );
    let dup = conversation(6, ConversationKind::Direct, "bob", &["alice", "bob", "eve"]);
    let existing = ok(
        s.create_conversation(&dup, Some(b"alice|bob")).await,
        "create existing",
    );
    assert_eq!(existing, CreateOutcome::Existing(direct.clone()));
    assert_eq!(
        ok(s.conversation(6).await, "conversation"),
        None,
        "Existing writes nothing"
    );
    assert_eq!(
        ok(s.user_conversations("eve").await, "user_conversations"),
        Vec::<ConversationId>::new()
    );

    // A unique key is matched exactly, not by prefix.
    let other = conversation(7, ConversationKind::NoteToSelf, "alice", &["alice"]);
    assert_eq!(
        ok(
            s.create_conversation(&other, Some(b"alice")).await,
            "create"
        ),
        CreateOutcome::Created
    );

    // Ids sort as unsigned integers, including the high bit.
    let high = [u64::MAX - 1, 1 << 63];
    for id in high {
        new_conversation(s, id, &["alice"]).await;
    }
    let mine = ok(s.user_conversations("alice").await, "user_conversations");
    assert_eq!(mine, vec![5, 7, 300, 1 << 63, u64::MAX - 1]);
    assert_eq!(
        ok(s.user_conversations("bob").await, "user_conversations"),
        vec![5, 300]
    );
    assert_eq!(
        ok(s.user_conversations("al").await, "user_conversations"),
        Vec::<ConversationId>::new(),
        "no prefix leak"
    );
    assert_eq!(
        ok(s.user_conversations("nobody").await, "user_conversations"),
        Vec::<ConversationId>::new()
    );
}

/// 16 concurrent creates with one unique key: one `Created`, the rest
/// `Existing` with the winner's record, one index entry.
pub async fn create_conversation_race(s: Arc<dyn Store>) {
    const N: u64 = 16;
    let barrier = Arc::new(Barrier::new(N as usize));
    let mut tasks = Vec::new();
    for id in 1..=N {
        let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            let record = conversation(id, ConversationKind::Direct, "alice", &["alice", "bob"]);
            barrier.wait().await;
            (
                id,
                s.create_conversation(&record, Some(b"pair:alice:bob"))
                    .await,
            )
        }));
    }
    let (mut created, mut existing) = (Vec::new(), Vec::new());
    for task in tasks {
        match ok(task.await, "join create_conversation task") {
            (id, Ok(CreateOutcome::Created)) => created.push(id),
            (_, Ok(CreateOutcome::Existing(record))) => existing.push(record.id),
            (_, Err(e)) => panic!("conformance: create_conversation race: {e:?}"),
        }
    }
    assert_eq!(created.len(), 1, "exactly one create wins: {created:?}");
    assert!(
        existing.iter().all(|id| created.contains(id)),
        "Existing returns the winner: {existing:?}"
    );
    assert_eq!(
        ok(s.user_conversations("alice").await, "user_conversations"),
        created
    );
    assert_eq!(
        ok(s.user_conversations("bob").await, "user_conversations"),
        created
    );
}

/// update_members keeps the record, the head and both users' indexes in step.
pub async fn update_members(s: &dyn Store) {
    new_conversation(s, 40, &["alice", "bob"]).await;
    append_ok(s, &message(40, 1, 1)).await;
    let add = vec!["carol".to_string(), "dave".to_string(), "alice".to_string()];
    let remove = vec!["bob".to_string(), "dave".to_string(), "zed".to_string()];
    let updated = ok(s.update_members(40, &add, &remove).await, "update_members");
    let expected: BTreeSet<String> = ["alice", "carol"].iter().map(|u| u.to_string()).collect();
    assert_eq!(updated.members, expected, "adds, then removes");
    assert_eq!(updated.head_seq, 1, "membership changes keep the head");
    assert_eq!(
        ok(s.conversation(40).await, "conversation"),
        Some(updated.clone())
    );
    assert_eq!(
        ok(s.user_conversations("carol").await, "user_conversations"),
        vec![40]
    );
    assert_eq!(
        ok(s.user_conversations("bob").await, "user_conversations"),
        Vec::<ConversationId>::new()
    );
    assert_eq!(
        ok(s.user_conversations("dave").await, "user_conversations"),
        Vec::<ConversationId>::new(),
        "add+remove: not a member"
    );
    assert_eq!(
        ok(s.user_conversations("alice").await, "user_conversations"),
        vec![40]
    );

    let same = ok(s.update_members(40, &[], &[]).await, "update_members no-op");
    assert_eq!(same, updated);
    let missing = s.update_members(41, &add, &[]).await;
    assert!(
        matches!(missing, Err(MembersError::NoSuchConversation(41))),
        "{missing:?}"
    );
    assert_eq!(
        ok(s.user_conversations("carol").await, "user_conversations"),
        vec![40],
        "failure writes nothing"
    );
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// seq must be head+1; `SeqConflict` on gap or repeat; `NoSuchConversation`.
pub async fn append_seq_rules(s: &dyn Store) {
    let missing = s.append_message(&message(9, 1, 1)).await;
    assert!(
        matches!(missing, Err(AppendError::NoSuchConversation(9))),
        "{missing:?}"
    );
    new_conversation(s, 9, &["alice"]).await;
    for (seq, head) in [(0, 0), (2, 0)] {
        let got = s.append_message(&message(9, seq, 100 + seq)).await;
        assert!(
            matches!(got, Err(AppendError::SeqConflict { conversation: 9, head: h, got: g }) if h == head && g == seq),
            "seq {seq} on head {head}: {got:?}"
        );
    }
    append_ok(s, &message(9, 1, 1)).await;
    assert_eq!(head(s, 9).await, 1);
    let repeat = s.append_message(&message(9, 1, 2)).await;
    assert!(
        matches!(
            repeat,
            Err(AppendError::SeqConflict {
                head: 1,
                got: 1,
                ..
            })
        ),
        "{repeat:?}"
    );
    let gap = s.append_message(&message(9, 3, 3)).await;
    assert!(
        matches!(
            gap,
            Err(AppendError::SeqConflict {
                head: 1,
                got: 3,
                ..
            })
        ),
        "{gap:?}"
    );
    append_ok(s, &message(9, 2, 2)).await;
    assert_eq!(head(s, 9).await, 2);
    assert_eq!(
        seqs(s, 9, 1, 10, 0).await,
        vec![1, 2],
        "refused appends wrote nothing"
    );
    // The refused gap attempt (seq 3, cmid 3) did not store its idempotency key.
    append_ok(s, &message(9, 3, 3)).await;
}

/// A repeated idempotency key returns the stored message and writes nothing;
/// it is checked before the seq; the key is scoped by conversation and device.
pub async fn duplicates(s: &dyn Store) {
    new_conversation(s, 12, &["alice"]).await;
    new_conversation(s, 13, &["alice"]).await;
    let first = message(12, 1, 42);
    append_ok(s, &first).await;

    let mut retry = message(12, 2, 42);
    retry.payload = Bytes::from_static(b"different bytes");
    assert_eq!(
        ok(s.append_message(&retry).await, "retry"),
        AppendOutcome::Duplicate(first.clone())
    );
    let stale = message(12, 1, 42);
    assert_eq!(
        ok(s.append_message(&stale).await, "stale retry"),
        AppendOutcome::Duplicate(first.clone())
    );
    let far = message(12, 77, 42);
    assert_eq!(
        ok(s.append_message(&far).await, "gap retry"),
        AppendOutcome::Duplicate(first.clone())
    );
    assert_eq!(head(s, 12).await, 1, "a duplicate does not move the head");
    assert_eq!(seqs(s, 12, 0, 10, 0).await, vec![1]);

    let mut other_device = message(12, 2, 42);
    other_device.sender_device = 2;
    append_ok(s, &other_device).await;
    let mut other_user = message(12, 3, 42);
    other_user.sender_user = "bob".to_string();
    append_ok(s, &other_user).await;
    append_ok(s, &message(13, 1, 42)).await;
    let again = ok(s.append_message(&message(12, 4, 42)).await, "retry");
    assert_eq!(again, AppendOutcome::Duplicate(first));
}

/// messages() pages in seq order and keeps conversations apart; every field
/// round-trips.
pub async fn messages_paging(s: &dyn Store) {
    for id in [1, 2, 256] {
        new_conversation(s, id, &["alice"]).await;
    }
    let mut sent = Vec::new();
    for seq in 1..=10 {
        let mut msg = message(2, seq, seq);
        msg.payload = match seq {
            1 => Bytes::new(),
            2 => Bytes::from(vec![0xA5; 64 * 1024]),
            _ => msg.payload,
        };
        append_ok(s, &msg).await;
        sent.push(msg);
    }
    append_ok(s, &message(1, 1, 1)).await;
    append_ok(s, &message(256, 1, 1)).await;

    let all = ok(s.messages(2, 1, 100, 0).await, "messages");
    assert_eq!(all, sent, "messages round-trip exactly");
    assert_eq!(
        seqs(s, 2, 0, 3, 0).await,
        vec![1, 2, 3],
        "from 0 is from the start"
    );
    assert_eq!(seqs(s, 2, 4, 3, 0).await, vec![4, 5, 6]);
    assert_eq!(seqs(s, 2, 9, 5, 0).await, vec![9, 10]);
    assert_eq!(seqs(s, 2, 11, 5, 0).await, Vec::<Seq>::new());
    assert_eq!(seqs(s, 2, 1, 0, 0).await, Vec::<Seq>::new(), "limit 0");
    assert_eq!(
        seqs(s, 3, 1, 5, 0).await,
        Vec::<Seq>::new(),
        "unknown conversation"
    );
    assert_eq!(seqs(s, 2, u64::MAX, 5, 0).await, Vec::<Seq>::new());
}

/// Messages with `expires_at_ms <= now_ms` are skipped, also when paging.
pub async fn messages_expiry_filter(s: &dyn Store) {
    new_conversation(s, 20, &["alice"]).await;
    let expiries = [500, 100, 300, 100, u64::MAX];
    for (i, expires) in (1..).zip(expiries) {
        let mut msg = message(20, i, i);
        msg.expires_at_ms = expires;
        append_ok(s, &msg).await;
    }
    assert_eq!(seqs(s, 20, 1, 10, 99).await, vec![1, 2, 3, 4, 5]);
    assert_eq!(
        seqs(s, 20, 1, 10, 100).await,
        vec![1, 3, 5],
        "expiry is inclusive"
    );
    assert_eq!(
        seqs(s, 20, 1, 2, 100).await,
        vec![1, 3],
        "limit counts live messages only"
    );
    assert_eq!(seqs(s, 20, 2, 10, 300).await, vec![5]);
    assert_eq!(head(s, 20).await, 5, "reads do not move the head");
}

// ---------------------------------------------------------------------------
// Cursors
// ---------------------------------------------------------------------------

/// advance_cursor never lowers; cursors() is per user and device.
pub async fn cursors(s: &dyn Store) {
    assert_eq!(ok(s.advance_cursor("alice", 1, 30, 5).await, "advance"), 5);
    assert_eq!(
        ok(s.advance_cursor("alice", 1, 30, 3).await, "lower"),
        5,
        "never lowers"
    );
    assert_eq!(ok(s.advance_cursor("alice", 1, 30, 5).await, "same"), 5);
    assert_eq!(ok(s.advance_cursor("alice", 1, 30, 7).await, "raise"), 7);
    assert_eq!(
        ok(s.advance_cursor("alice", 1, 1 << 63, 2).await, "advance"),
        2
    );
    assert_eq!(
        ok(s.advance_cursor("alice", 2, 30, 1).await, "other device"),
        1
    );
    assert_eq!(ok(s.advance_cursor("al", 1, 30, 9).await, "prefix user"), 9);
    assert_eq!(
        ok(s.advance_cursor("alice", 256, 30, 4).await, "device 256"),
        4
    );

    let expected: BTreeMap<ConversationId, Seq> = [(30, 7), (1 << 63, 2)].into_iter().collect();
    assert_eq!(ok(s.cursors("alice", 1).await, "cursors"), expected);
    assert_eq!(
        ok(s.cursors("alice", 2).await, "cursors"),
        [(30, 1)].into_iter().collect()
    );
    assert_eq!(
        ok(s.cursors("alice", 256).await, "cursors"),
        [(30, 4)].into_iter().collect()
    );
    assert_eq!(
        ok(s.cursors("al", 1).await, "cursors"),
        [(30, 9)].into_iter().collect()
    );
    assert_eq!(ok(s.cursors("bob", 1).await, "cursors"), BTreeMap::new());
    assert_eq!(ok(s.cursors("alice", 3).await, "cursors"), BTreeMap::new());
}

// ---------------------------------------------------------------------------
// Expiry sweeping
// ---------------------------------------------------------------------------

async fn append_expiring(
    s: &dyn Store,
    id: ConversationId,
    seq: Seq,
    cmid: u64,
    expires_at_ms: u64,
) {
    let mut msg = message(id, seq, cmid);
    msg.expires_at_ms = expires_at_ms;
    append_ok(s, &msg).await;
}

/// sweep_expired deletes exactly the expired messages and their idempotency
/// keys; heads never move and seqs are not reused.
pub async fn sweep(s: &dyn Store) {
    new_conversation(s, 50, &["alice"]).await;
    new_conversation(s, 51, &["alice"]).await;
    append_expiring(s, 50, 1, 1, 100).await;
    append_expiring(s, 50, 2, 2, 200).await;
    append_expiring(s, 50, 3, 3, 300).await;
    append_expiring(s, 51, 1, 1, 150).await;
    assert_eq!(
        ok(s.sweep_expired(99, 100).await, "sweep"),
        0,
        "nothing expired yet"
    );
    assert_eq!(
        ok(s.sweep_expired(150, 100).await, "sweep"),
        2,
        "expiry is inclusive"
    );
    assert_eq!(
        seqs(s, 50, 0, 10, 0).await,
        vec![2, 3],
        "deleted, not just hidden"
    );
    assert_eq!(seqs(s, 51, 0, 10, 0).await, Vec::<Seq>::new());
    assert_eq!(
        (head(s, 50).await, head(s, 51).await),
        (3, 1),
        "heads do not move"
    );
    assert_eq!(ok(s.sweep_expired(150, 100).await, "sweep again"), 0);

    let reused = s.append_message(&message(50, 1, 99)).await;
    assert!(
        matches!(
            reused,
            Err(AppendError::SeqConflict {
                head: 3,
                got: 1,
                ..
            })
        ),
        "{reused:?}"
    );
    // The swept message's idempotency key went with it.
    assert_eq!(
        ok(s.append_message(&message(50, 4, 1)).await, "re-send"),
        AppendOutcome::Appended
    );
    // Live messages keep theirs.
    let dup = ok(s.append_message(&message(50, 5, 2)).await, "duplicate");
    assert!(
        matches!(dup, AppendOutcome::Duplicate(m) if m.seq == 2),
        "live key kept"
    );
    assert_eq!(ok(s.sweep_expired(u64::MAX, 100).await, "sweep all"), 3);
    assert_eq!(head(s, 50).await, 4);
    assert_eq!(seqs(s, 50, 0, 10, 0).await, Vec::<Seq>::new());
}

/// sweep_expired honours `limit` and resumes where it stopped.
pub async fn sweep_limit(s: &dyn Store) {
    new_conversation(s, 60, &["alice"]).await;
    for seq in 1..=5 {
        append_expiring(s, 60, seq, seq, 10 * seq).await;
    }
    assert_eq!(ok(s.sweep_expired(1_000, 0).await, "sweep limit 0"), 0);
    assert_eq!(ok(s.sweep_expired(1_000, 2).await, "sweep"), 2);
    assert_eq!(
        seqs(s, 60, 0, 10, 0).await,
        vec![3, 4, 5],
        "oldest expiry first"
    );
    assert_eq!(ok(s.sweep_expired(1_000, 2).await, "sweep"), 2);
    assert_eq!(ok(s.sweep_expired(1_000, 2).await, "sweep"), 1);
    assert_eq!(ok(s.sweep_expired(1_000, 2).await, "sweep"), 0);
    assert_eq!(head(s, 60).await, 5);
}

// ---------------------------------------------------------------------------
// Durability barrier
// ---------------------------------------------------------------------------

/// persist succeeds alone, after writes and when called concurrently.
pub async fn persist(s: Arc<dyn Store>) {
    ok(s.persist().await, "persist on an empty store");
    new_conversation(s.as_ref(), 70, &["alice"]).await;
    append_ok(s.as_ref(), &message(70, 1, 1)).await;
    ok(s.persist().await, "persist after writes");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.persist().await })
        })
        .collect();
    for task in tasks {
        ok(ok(task.await, "join persist task"), "concurrent persist");
    }
    assert_eq!(seqs(s.as_ref(), 70, 1, 10, 0).await, vec![1]);
}

// ---------------------------------------------------------------------------
// Devices: ids and revocation
// ---------------------------------------------------------------------------

/// add_device numbers from the highest id ever assigned; ids of revoked
/// devices are never reused; unknown users get `None`; the account survives
/// the revocation of its last device.
pub async fn add_device_ids(s: &dyn Store) {
    assert_eq!(
        ok(
            s.add_device("alice", "phone", [9; 32], 77).await,
            "add_device"
        ),
        None,
        "unknown user"
    );
    ok(s.create_account("alice", device(1)).await, "create_account");
    ok(s.create_account("al", device(7)).await, "create_account al");
    let second = ok(
        s.add_device("alice", "laptop", [9; 32], 77).await,
        "add_device",
    );
    assert_eq!(second, Some(2));
    let stored = ok(s.device("alice", 2).await, "device");
    let expected = DeviceRecord {
        device: 2,
        name: "laptop".to_string(),
        public_key: [9; 32],
        created_ms: 77,
    };
    assert_eq!(
        stored,
        Some(expected.clone()),
        "the added device round-trips"
    );
    assert_eq!(
        ok(
            s.add_device("alice", "tablet", [3; 32], 78).await,
            "add_device"
        ),
        Some(3)
    );
    assert_eq!(
        ok(s.add_device("al", "x", [1; 32], 1).await, "add_device al"),
        Some(8),
        "next after the first device's id, per user"
    );
    let ids = |devices: Vec<DeviceRecord>| devices.iter().map(|d| d.device).collect::<Vec<_>>();
    assert_eq!(ids(ok(s.devices("alice").await, "devices")), vec![1, 2, 3]);

    // Revoking the highest id must not free it.
    assert!(ok(s.revoke_device("alice", 3).await, "revoke_device"));
    assert_eq!(
        ok(
            s.add_device("alice", "new", [4; 32], 79).await,
            "add_device"
        ),
        Some(4),
        "the id of a revoked device is not reused"
    );
    // Revoking every device keeps the account and its counter.
    for id in [1, 2, 4] {
        assert!(ok(s.revoke_device("alice", id).await, "revoke_device"));
    }
    assert_eq!(ok(s.devices("alice").await, "devices"), vec![]);
    let again = s.create_account("alice", device(1)).await;
    assert!(
        matches!(&again, Err(CreateAccountError::UserExists(u)) if u == "alice"),
        "a handle is not freed by revoking its devices: {again:?}"
    );
    assert_eq!(ok(s.device("alice", 1).await, "device"), None);
    assert_eq!(
        ok(
            s.add_device("alice", "back", [5; 32], 80).await,
            "add_device"
        ),
        Some(5)
    );
    assert_eq!(ids(ok(s.devices("alice").await, "devices")), vec![5]);
    assert_eq!(
        ids(ok(s.devices("al").await, "devices")),
        vec![7, 8],
        "no prefix leak"
    );
    assert_eq!(
        ok(
            s.add_device("alic", "x", [1; 32], 1).await,
            "add_device alic"
        ),
        None,
        "a prefix of a handle is not a user"
    );
}

/// 16 concurrent add_device calls for one user, racing a revoke of the
/// newest device, in [`RACE_ROUNDS`] * 4 rounds: each round's adds get 16
/// distinct ids following every id handed out before; all of them are stored.
pub async fn add_device_race(s: Arc<dyn Store>) {
    const N: u32 = 16;
    ok(s.create_account("racer", device(1)).await, "create_account");
    let mut all = BTreeSet::from([1]);
    for round in 0..RACE_ROUNDS * 4 {
        let highest = all.last().copied().unwrap_or(1);
        let barrier = Arc::new(Barrier::new(N as usize + 1));
        let mut tasks = Vec::new();
        for i in 0..N {
            let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                s.add_device("racer", &format!("device {round}/{i}"), [7; 32], 1)
                    .await
            }));
        }
        // The newest device is revoked meanwhile: its id must stay used.
        let revoker = {
            let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                s.revoke_device("racer", highest).await
            })
        };
        let mut ids = BTreeSet::new();
        for task in tasks {
            let id = ok(ok(task.await, "join add_device task"), "add_device");
            match id {
                Some(id) => assert!(ids.insert(id), "device id {id} handed out twice"),
                None => panic!("conformance: add_device of an existing user returned None"),
            }
        }
        assert!(ok(ok(revoker.await, "join revoke task"), "revoke_device"));
        assert_eq!(
            ids,
            (highest + 1..=highest + N).collect::<BTreeSet<_>>(),
            "round {round}"
        );
        all.remove(&highest);
        all.extend(ids);
        let stored: BTreeSet<DeviceId> = ok(s.devices("racer").await, "devices")
            .iter()
            .map(|d| d.device)
            .collect();
        assert_eq!(stored, all, "every added device is stored (round {round})");
    }
}

/// A revoked device is invisible, its keys and cursors are gone, later
/// uploads for it store nothing; other devices are untouched.
pub async fn revoke_device(s: &dyn Store) {
    assert!(
        !ok(s.revoke_device("alice", 1).await, "revoke unknown user"),
        "unknown user"
    );
    ok(s.create_account("alice", device(1)).await, "create_account");
    assert_eq!(
        ok(
            s.add_device("alice", "second", [2; 32], 2).await,
            "add_device"
        ),
        Some(2)
    );
    for id in [1, 2] {
        ok(
            s.put_prekeys("alice", id, &upload(&[1, 2, 3])).await,
            "put_prekeys",
        );
        ok(
            s.put_key_packages("alice", id, &packages(id, 3), Some(last_resort_package(id)))
                .await,
            "put_key_packages",
        );
        ok(s.advance_cursor("alice", id, 30, 5).await, "advance_cursor");
    }
    assert!(ok(s.revoke_device("alice", 2).await, "revoke_device"));
    assert!(
        !ok(s.revoke_device("alice", 2).await, "revoke again"),
        "a revoked device is not active"
    );
    assert!(!ok(
        s.revoke_device("alice", 9).await,
        "revoke unknown device"
    ));

    assert_eq!(
        ok(s.device("alice", 2).await, "device"),
        None,
        "cannot authenticate"
    );
    assert_eq!(ok(s.devices("alice").await, "devices"), vec![device(1)]);
    assert_eq!(ok(s.claim_prekeys("alice", 2).await, "claim_prekeys"), None);
    assert_eq!(ok(s.prekey_count("alice", 2).await, "prekey_count"), 0);
    assert_eq!(
        ok(s.claim_key_package("alice", 2).await, "claim_key_package"),
        None,
        "key packages and the last-resort one are gone"
    );
    assert_eq!(ok(s.cursors("alice", 2).await, "cursors"), BTreeMap::new());

    // A late upload for the revoked device stores nothing.
    assert_eq!(
        ok(
            s.put_prekeys("alice", 2, &upload(&[4])).await,
            "put_prekeys revoked"
        ),
        0
    );
    assert_eq!(ok(s.claim_prekeys("alice", 2).await, "claim_prekeys"), None);
    assert_eq!(
        ok(
            s.put_key_packages("alice", 2, &packages(2, 1), Some(last_resort_package(2)))
                .await,
            "put_key_packages revoked"
        ),
        0
    );
    assert_eq!(
        ok(s.claim_key_package("alice", 2).await, "claim_key_package"),
        None
    );

    // Device 1 keeps everything.
    assert_eq!(ok(s.prekey_count("alice", 1).await, "prekey_count"), 3);
    let claimed = ok(s.claim_key_package("alice", 1).await, "claim_key_package");
    assert_eq!(
        claimed.map(|c| (c.key_package, c.last_resort, c.remaining)),
        Some((package(1, 0), false, 2))
    );
    assert_eq!(
        ok(s.cursors("alice", 1).await, "cursors"),
        [(30, 5)].into_iter().collect()
    );

    // The next device starts clean.
    assert_eq!(
        ok(
            s.add_device("alice", "third", [3; 32], 3).await,
            "add_device"
        ),
        Some(3)
    );
    assert_eq!(ok(s.claim_prekeys("alice", 3).await, "claim_prekeys"), None);
    assert_eq!(
        ok(s.claim_key_package("alice", 3).await, "claim_key_package"),
        None
    );
}

// ---------------------------------------------------------------------------
// Key directory: prekeys
// ---------------------------------------------------------------------------

/// The identity key and its signature used by [`upload`].
pub const IDENTITY: ([u8; 32], [u8; 64]) = ([0x1d; 32], [0x5e; 64]);

/// A one-time prekey whose public key derives from `id`.
pub fn prekey(id: u32) -> Prekey {
    let mut public = [0xAB; 32];
    for (byte, id_byte) in public.iter_mut().zip(id.to_be_bytes()) {
        *byte = id_byte;
    }
    Prekey { id, public }
}

/// A signed prekey whose bytes derive from `id` and `tag`.
pub fn signed_prekey(id: u32, tag: u8) -> SignedPrekey {
    SignedPrekey {
        id,
        public: [tag; 32],
        signature: [tag ^ 0xFF; 64],
    }
}

/// A full upload: identity, signed prekey 1, last-resort prekey 2, a KEM
/// prekey and the one-time prekeys `ids`.
pub fn upload(ids: &[u32]) -> PrekeyUpload {
    PrekeyUpload {
        identity: Some(IDENTITY),
        signed_prekey: Some(signed_prekey(1, 0x51)),
        one_time: ids.iter().map(|&id| prekey(id)).collect(),
        last_resort: Some(signed_prekey(2, 0x52)),
        kem_prekey: Some(Bytes::from_static(b"kem prekey")),
    }
}

/// An upload of one-time prekeys only.
pub fn one_time_only(ids: &[u32]) -> PrekeyUpload {
    PrekeyUpload {
        one_time: ids.iter().map(|&id| prekey(id)).collect(),
        ..PrekeyUpload::default()
    }
}

async fn claim(s: &dyn Store, user: &str, device: DeviceId) -> ClaimedPrekeys {
    match ok(s.claim_prekeys(user, device).await, "claim_prekeys") {
        Some(claimed) => claimed,
        None => panic!("conformance: claim_prekeys of {user}/{device} returned None"),
    }
}

/// put_prekeys/claim_prekeys/prekey_count: identity required, lowest id
/// first, ids already present ignored, the last-resort key returned (not
/// consumed) once the pool is empty, devices and users kept apart.
pub async fn prekeys(s: &dyn Store) {
    ok(s.create_account("alice", device(1)).await, "create_account");
    ok(s.create_account("al", device(1)).await, "create_account al");
    assert_eq!(
        ok(s.add_device("alice", "two", [2; 32], 2).await, "add_device"),
        Some(2)
    );
    assert_eq!(
        ok(s.claim_prekeys("alice", 1).await, "claim before upload"),
        None
    );
    assert_eq!(ok(s.prekey_count("alice", 1).await, "prekey_count"), 0);
    assert_eq!(ok(s.prekey_count("nobody", 1).await, "prekey_count"), 0);

    // One-time keys without an identity: stored, but nothing to claim yet.
    assert_eq!(
        ok(
            s.put_prekeys("alice", 1, &one_time_only(&[20, 10])).await,
            "put_prekeys"
        ),
        2
    );
    assert_eq!(
        ok(s.claim_prekeys("alice", 1).await, "claim without identity"),
        None,
        "no identity uploaded"
    );
    assert_eq!(
        ok(s.prekey_count("alice", 1).await, "prekey_count"),
        2,
        "nothing consumed"
    );

    // Duplicate ids, in the pool or within the upload, are ignored.
    let mut full = upload(&[30, 10, 5, 30]);
    if let Some(ten) = full.one_time.get_mut(1) {
        ten.public = [0xEE; 32]; // id 10 again, other bytes: ignored
    }
    assert_eq!(ok(s.put_prekeys("alice", 1, &full).await, "put_prekeys"), 4);
    assert_eq!(ok(s.prekey_count("alice", 1).await, "prekey_count"), 4);
    // An empty upload changes nothing.
    assert_eq!(
        ok(
            s.put_prekeys("alice", 1, &PrekeyUpload::default()).await,
            "empty upload"
        ),
        4
    );

    let mut handed_out = Vec::new();
    for remaining in (0..4).rev() {
        let claimed = claim(s, "alice", 1).await;
        assert_eq!((claimed.identity_key, claimed.identity_signature), IDENTITY);
        assert_eq!(claimed.signed_prekey, Some(signed_prekey(1, 0x51)));
        assert_eq!(claimed.kem_prekey, Some(Bytes::from_static(b"kem prekey")));
        assert_eq!(
            claimed.last_resort, None,
            "no last resort while one-time keys last"
        );
        assert_eq!(claimed.remaining, remaining);
        match claimed.one_time {
            Some(key) => handed_out.push(key),
            None => panic!("conformance: pool of {} ran dry", remaining + 1),
        }
    }
    assert_eq!(
        handed_out,
        vec![prekey(5), prekey(10), prekey(20), prekey(30)],
        "lowest id first, and the first upload of id 10 kept"
    );
    assert_eq!(ok(s.prekey_count("alice", 1).await, "prekey_count"), 0);
    for _ in 0..2 {
        let empty = claim(s, "alice", 1).await;
        assert_eq!(empty.one_time, None);
        assert_eq!(empty.remaining, 0);
        assert_eq!(
            empty.last_resort,
            Some(signed_prekey(2, 0x52)),
            "last resort returned and not consumed"
        );
        assert_eq!((empty.identity_key, empty.identity_signature), IDENTITY);
    }
    // A claimed id can be uploaded again.
    assert_eq!(
        ok(
            s.put_prekeys("alice", 1, &one_time_only(&[5])).await,
            "put_prekeys"
        ),
        1
    );
    assert_eq!(claim(s, "alice", 1).await.one_time, Some(prekey(5)));

    // Devices and users are kept apart.
    assert_eq!(
        ok(s.claim_prekeys("alice", 2).await, "claim other device"),
        None
    );
    assert_eq!(
        ok(s.claim_prekeys("al", 1).await, "claim prefix user"),
        None
    );
    assert_eq!(
        ok(
            s.put_prekeys("alice", 2, &upload(&[1])).await,
            "put_prekeys"
        ),
        1
    );
    assert_eq!(ok(s.prekey_count("alice", 1).await, "prekey_count"), 0);
    assert_eq!(claim(s, "alice", 2).await.one_time, Some(prekey(1)));
    assert_eq!(
        ok(s.claim_prekeys("alice", 3).await, "claim unknown device"),
        None
    );
    assert_eq!(
        ok(s.claim_prekeys("nobody", 1).await, "claim unknown user"),
        None
    );
}

/// A new signed (or last-resort, KEM, identity) prekey replaces the old one;
/// fields left out of an upload keep their stored value.
pub async fn prekey_rotation(s: &dyn Store) {
    ok(s.create_account("alice", device(1)).await, "create_account");
    ok(s.put_prekeys("alice", 1, &upload(&[])).await, "put_prekeys");
    assert_eq!(
        claim(s, "alice", 1).await.signed_prekey,
        Some(signed_prekey(1, 0x51))
    );

    let rotate = PrekeyUpload {
        signed_prekey: Some(signed_prekey(3, 0x53)),
        ..PrekeyUpload::default()
    };
    ok(
        s.put_prekeys("alice", 1, &rotate).await,
        "rotate signed prekey",
    );
    let claimed = claim(s, "alice", 1).await;
    assert_eq!(
        claimed.signed_prekey,
        Some(signed_prekey(3, 0x53)),
        "rotated"
    );
    assert_eq!(
        (claimed.identity_key, claimed.identity_signature),
        IDENTITY,
        "kept"
    );
    assert_eq!(claimed.last_resort, Some(signed_prekey(2, 0x52)), "kept");
    assert_eq!(
        claimed.kem_prekey,
        Some(Bytes::from_static(b"kem prekey")),
        "kept"
    );

    let everything = PrekeyUpload {
        identity: Some(([0x2d; 32], [0x6e; 64])),
        signed_prekey: Some(signed_prekey(4, 0x54)),
        one_time: vec![],
        last_resort: Some(signed_prekey(5, 0x55)),
        kem_prekey: Some(Bytes::from_static(b"kem prekey 2")),
    };
    ok(
        s.put_prekeys("alice", 1, &everything).await,
        "replace everything",
    );
    let claimed = claim(s, "alice", 1).await;
    assert_eq!(claimed.identity_key, [0x2d; 32]);
    assert_eq!(claimed.identity_signature, [0x6e; 64]);
    assert_eq!(claimed.signed_prekey, Some(signed_prekey(4, 0x54)));
    assert_eq!(claimed.last_resort, Some(signed_prekey(5, 0x55)));
    assert_eq!(
        claimed.kem_prekey,
        Some(Bytes::from_static(b"kem prekey 2"))
    );
}

/// The one-time pool holds at most [`KEY_POOL_CAP`] keys; more are ignored
/// (the first ones of an upload are kept).
pub async fn prekey_pool_cap(s: &dyn Store) {
    ok(s.create_account("alice", device(1)).await, "create_account");
    let first: Vec<u32> = (1..=KEY_POOL_CAP - 10).collect();
    assert_eq!(
        ok(
            s.put_prekeys("alice", 1, &upload(&first)).await,
            "put_prekeys"
        ),
        KEY_POOL_CAP - 10
    );
    let more: Vec<u32> = (KEY_POOL_CAP + 1..KEY_POOL_CAP + 200).collect();
    assert_eq!(
        ok(
            s.put_prekeys("alice", 1, &one_time_only(&more)).await,
            "put_prekeys over cap"
        ),
        KEY_POOL_CAP
    );
    assert_eq!(
        ok(s.prekey_count("alice", 1).await, "prekey_count"),
        KEY_POOL_CAP
    );
    let claimed = claim(s, "alice", 1).await;
    assert_eq!(claimed.one_time, Some(prekey(1)));
    assert_eq!(claimed.remaining, KEY_POOL_CAP - 1);
    // Room for exactly one more.
    assert_eq!(
        ok(
            s.put_prekeys("alice", 1, &one_time_only(&[50_000, 50_001]))
                .await,
            "refill"
        ),
        KEY_POOL_CAP
    );
    // Which were kept: ids up to KEY_POOL_CAP + 10 and the first refill id.
    let mut last = None;
    for _ in 0..KEY_POOL_CAP {
        last = claim(s, "alice", 1).await.one_time.map(|k| k.id);
    }
    assert_eq!(last, Some(50_000), "the last key of the pool");
    assert_eq!(claim(s, "alice", 1).await.one_time, None);
}

/// Rounds of each claim race: a lost update shows only when two claims
/// interleave, so one round can pass by luck.
const RACE_ROUNDS: u32 = 5;

/// 64 concurrent claims over 40 one-time prekeys, in [`RACE_ROUNDS`] rounds:
/// each round hands out its 40 keys exactly once (distinct keys, distinct
/// `remaining` counts), and the other 24 claimers get the last-resort key.
pub async fn prekey_claim_race(s: Arc<dyn Store>) {
    const KEYS: u32 = 40;
    const CLAIMERS: usize = 64;
    ok(s.create_account("alice", device(1)).await, "create_account");
    for round in 0..RACE_ROUNDS {
        let ids: Vec<u32> = (1..=KEYS).map(|i| round * 1_000 + i).collect();
        assert_eq!(
            ok(
                s.put_prekeys("alice", 1, &upload(&ids)).await,
                "put_prekeys"
            ),
            KEYS
        );
        let barrier = Arc::new(Barrier::new(CLAIMERS));
        let mut tasks = Vec::new();
        for _ in 0..CLAIMERS {
            let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                s.claim_prekeys("alice", 1).await
            }));
        }
        let (mut keys, mut remaining, mut fallbacks) = (BTreeSet::new(), BTreeSet::new(), 0);
        for task in tasks {
            let claimed = ok(ok(task.await, "join claim task"), "claim_prekeys");
            let Some(claimed) = claimed else {
                panic!("conformance: claim_prekeys returned None during the race");
            };
            match claimed.one_time {
                Some(key) => {
                    assert_eq!(key, prekey(key.id), "intact key");
                    assert!(
                        keys.insert(key.id),
                        "one-time prekey {} handed out twice",
                        key.id
                    );
                    assert!(
                        remaining.insert(claimed.remaining),
                        "remaining {} seen twice: claims not serialised",
                        claimed.remaining
                    );
                    assert_eq!(claimed.last_resort, None);
                }
                None => {
                    fallbacks += 1;
                    assert_eq!(claimed.last_resort, Some(signed_prekey(2, 0x52)));
                    assert_eq!(claimed.remaining, 0);
                }
            }
        }
        assert_eq!(
            keys,
            ids.iter().copied().collect::<BTreeSet<_>>(),
            "every key exactly once (round {round})"
        );
        assert_eq!(remaining, (0..KEYS).collect::<BTreeSet<_>>());
        assert_eq!(fallbacks, CLAIMERS - KEYS as usize);
        assert_eq!(ok(s.prekey_count("alice", 1).await, "prekey_count"), 0);
    }
}

// ---------------------------------------------------------------------------
// MLS: KeyPackages
// ---------------------------------------------------------------------------

/// KeyPackage number `i` of `device` (opaque bytes; empty is allowed).
pub fn package(device: DeviceId, i: u32) -> Bytes {
    Bytes::from(format!("key package {device}/{i}"))
}

/// KeyPackages 0..n of `device`.
pub fn packages(device: DeviceId, n: u32) -> Vec<Bytes> {
    (0..n).map(|i| package(device, i)).collect()
}

/// The last-resort KeyPackage of `device`.
pub fn last_resort_package(device: DeviceId) -> Bytes {
    Bytes::from(format!("last resort key package {device}"))
}

async fn claim_package(s: &dyn Store, user: &str, device: DeviceId) -> Option<ClaimedKeyPackage> {
    ok(s.claim_key_package(user, device).await, "claim_key_package")
}

/// put_key_packages/claim_key_package: FIFO, counts, the last-resort
/// package (returned, never consumed, replaceable), the cap, isolation.
pub async fn key_packages(s: &dyn Store) {
    ok(s.create_account("alice", device(1)).await, "create_account");
    assert_eq!(
        ok(s.add_device("alice", "two", [2; 32], 2).await, "add_device"),
        Some(2)
    );
    assert_eq!(claim_package(s, "alice", 1).await, None, "nothing uploaded");
    assert_eq!(
        ok(
            s.put_key_packages("alice", 1, &[], None).await,
            "empty upload"
        ),
        0
    );
    assert_eq!(
        claim_package(s, "alice", 1).await,
        None,
        "neither pool nor last resort"
    );

    let mut batch = packages(1, 3);
    batch.push(Bytes::new());
    assert_eq!(
        ok(s.put_key_packages("alice", 1, &batch, None).await, "put"),
        4
    );
    assert_eq!(
        ok(
            s.put_key_packages("alice", 1, &[package(1, 9)], Some(last_resort_package(1)))
                .await,
            "put"
        ),
        5
    );
    assert_eq!(
        ok(s.key_package_count("alice", 1).await, "key_package_count"),
        5
    );
    assert_eq!(
        ok(s.key_package_count("alice", 2).await, "key_package_count"),
        0
    );
    assert_eq!(
        ok(s.key_package_count("nobody", 1).await, "key_package_count"),
        0
    );
    let expected = [
        package(1, 0),
        package(1, 1),
        package(1, 2),
        Bytes::new(),
        package(1, 9),
    ];
    for (i, want) in expected.iter().enumerate() {
        let got = claim_package(s, "alice", 1).await;
        let remaining = u32::try_from(expected.len() - 1 - i).unwrap_or(0);
        assert_eq!(
            got,
            Some(ClaimedKeyPackage {
                key_package: want.clone(),
                last_resort: false,
                remaining
            }),
            "first in, first out"
        );
        assert_eq!(
            ok(s.key_package_count("alice", 1).await, "key_package_count"),
            remaining
        );
    }
    for _ in 0..2 {
        assert_eq!(
            claim_package(s, "alice", 1).await,
            Some(ClaimedKeyPackage {
                key_package: last_resort_package(1),
                last_resort: true,
                remaining: 0
            }),
            "last resort returned and not consumed"
        );
    }
    // Replacing the last-resort package, alone.
    let newer = Bytes::from_static(b"newer last resort");
    assert_eq!(
        ok(
            s.put_key_packages("alice", 1, &[], Some(newer.clone()))
                .await,
            "replace last resort"
        ),
        0
    );
    assert_eq!(
        claim_package(s, "alice", 1)
            .await
            .map(|c| (c.key_package, c.last_resort)),
        Some((newer.clone(), true))
    );
    // Packages uploaded later are handed out before the last resort again.
    assert_eq!(
        ok(
            s.put_key_packages("alice", 1, &[package(1, 20)], None)
                .await,
            "put"
        ),
        1
    );
    assert_eq!(
        claim_package(s, "alice", 1)
            .await
            .map(|c| (c.key_package, c.last_resort)),
        Some((package(1, 20), false))
    );
    assert_eq!(
        claim_package(s, "alice", 1)
            .await
            .map(|c| (c.key_package, c.last_resort)),
        Some((newer, true)),
        "last resort kept when not given"
    );

    // The cap.
    let many = packages(2, KEY_POOL_CAP + 5);
    assert_eq!(
        ok(
            s.put_key_packages("alice", 2, &many, None).await,
            "put over cap"
        ),
        KEY_POOL_CAP
    );
    assert_eq!(
        ok(
            s.put_key_packages("alice", 2, &[package(2, 99_999)], None)
                .await,
            "put at cap"
        ),
        KEY_POOL_CAP
    );
    assert_eq!(
        claim_package(s, "alice", 2)
            .await
            .map(|c| (c.key_package, c.remaining)),
        Some((package(2, 0), KEY_POOL_CAP - 1))
    );

    // Isolation.
    assert_eq!(claim_package(s, "alice", 3).await, None, "unknown device");
    assert_eq!(claim_package(s, "al", 1).await, None, "prefix user");
    assert_eq!(
        ok(
            s.put_key_packages("nobody", 1, &packages(1, 2), None).await,
            "unknown user"
        ),
        0,
        "not an active device: nothing stored"
    );
    assert_eq!(claim_package(s, "nobody", 1).await, None);
}

/// 64 concurrent claims over 40 KeyPackages, in [`RACE_ROUNDS`] rounds:
/// each package handed out exactly once; the other 24 claimers get the
/// last-resort package.
pub async fn key_package_claim_race(s: Arc<dyn Store>) {
    const PACKAGES: u32 = 40;
    const CLAIMERS: usize = 64;
    ok(s.create_account("alice", device(1)).await, "create_account");
    for round in 0..RACE_ROUNDS {
        let pool: Vec<Bytes> = (0..PACKAGES)
            .map(|i| package(1, round * 1_000 + i))
            .collect();
        assert_eq!(
            ok(
                s.put_key_packages("alice", 1, &pool, Some(last_resort_package(1)))
                    .await,
                "put_key_packages"
            ),
            PACKAGES
        );
        let barrier = Arc::new(Barrier::new(CLAIMERS));
        let mut tasks = Vec::new();
        for _ in 0..CLAIMERS {
            let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                s.claim_key_package("alice", 1).await
            }));
        }
        let (mut handed_out, mut remaining, mut fallbacks) = (BTreeSet::new(), BTreeSet::new(), 0);
        for task in tasks {
            let claimed = ok(ok(task.await, "join claim task"), "claim_key_package");
            let Some(claimed) = claimed else {
                panic!("conformance: claim_key_package returned None during the race");
            };
            if claimed.last_resort {
                fallbacks += 1;
                assert_eq!(claimed.key_package, last_resort_package(1));
                assert_eq!(claimed.remaining, 0);
            } else {
                assert!(
                    handed_out.insert(claimed.key_package.clone()),
                    "KeyPackage {:?} handed out twice",
                    claimed.key_package
                );
                assert!(
                    remaining.insert(claimed.remaining),
                    "remaining {} seen twice: claims not serialised",
                    claimed.remaining
                );
            }
        }
        assert_eq!(
            handed_out,
            pool.into_iter().collect::<BTreeSet<_>>(),
            "every package exactly once (round {round})"
        );
        assert_eq!(remaining, (0..PACKAGES).collect::<BTreeSet<_>>());
        assert_eq!(fallbacks, CLAIMERS - PACKAGES as usize);
    }
}

// ---------------------------------------------------------------------------
// MLS: epochs
// ---------------------------------------------------------------------------

/// group_epoch/advance_epoch/group_info: starts at 0 with no GroupInfo;
/// compare-and-set; a stale commit writes nothing; groups are independent.
pub async fn epochs(s: &dyn Store) {
    new_conversation(s, 80, &["alice", "bob"]).await;
    new_conversation(s, 81, &["alice"]).await;
    assert_eq!(ok(s.group_epoch(80).await, "group_epoch"), 0);
    assert_eq!(ok(s.group_info(80).await, "group_info"), None);
    assert_eq!(ok(s.group_epoch(999).await, "group_epoch unknown"), 0);

    let info = |epoch: u64| Bytes::from(format!("group info after epoch {epoch}"));
    assert_eq!(
        ok(
            s.advance_epoch(80, 1, &info(1)).await,
            "advance from the future"
        ),
        EpochOutcome::Stale { current: 0 }
    );
    assert_eq!(
        ok(s.group_info(80).await, "group_info"),
        None,
        "stale writes nothing"
    );
    for epoch in 0..3 {
        assert_eq!(
            ok(s.advance_epoch(80, epoch, &info(epoch)).await, "advance"),
            EpochOutcome::Accepted
        );
        assert_eq!(ok(s.group_epoch(80).await, "group_epoch"), epoch + 1);
        assert_eq!(ok(s.group_info(80).await, "group_info"), Some(info(epoch)));
    }
    assert_eq!(
        ok(s.advance_epoch(80, 1, &info(99)).await, "stale advance"),
        EpochOutcome::Stale { current: 3 }
    );
    assert_eq!(ok(s.group_epoch(80).await, "group_epoch"), 3);
    assert_eq!(
        ok(s.group_info(80).await, "group_info"),
        Some(info(2)),
        "stale writes nothing"
    );

    assert_eq!(
        ok(s.group_epoch(81).await, "group_epoch"),
        0,
        "groups are independent"
    );
    assert_eq!(ok(s.group_info(81).await, "group_info"), None);
    assert_eq!(
        ok(s.advance_epoch(81, 0, &Bytes::new()).await, "advance"),
        EpochOutcome::Accepted
    );
    assert_eq!(
        ok(s.group_info(81).await, "group_info"),
        Some(Bytes::new()),
        "empty GroupInfo"
    );
    assert_eq!(ok(s.group_epoch(80).await, "group_epoch"), 3);
}

/// Racing commits for one epoch: exactly one `Accepted`, the others
/// `Stale { current: expected + 1 }`, and the winner's GroupInfo is stored.
/// Two racers per round, then eight, over 64 rounds.
pub async fn epoch_race(s: Arc<dyn Store>) {
    const ID: ConversationId = 82;
    new_conversation(s.as_ref(), ID, &["alice", "bob"]).await;
    for (expected, racers) in (0u64..).zip([2usize; 16].into_iter().chain([8; 48])) {
        let barrier = Arc::new(Barrier::new(racers));
        let mut tasks = Vec::new();
        for racer in 0..racers {
            let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
            tasks.push(tokio::spawn(async move {
                let info = Bytes::from(format!("commit {expected} by {racer}"));
                barrier.wait().await;
                let outcome = s.advance_epoch(ID, expected, &info).await;
                (info, outcome)
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            let (info, outcome) = ok(task.await, "join advance_epoch task");
            match ok(outcome, "advance_epoch") {
                EpochOutcome::Accepted => winners.push(info),
                EpochOutcome::Stale { current } => assert_eq!(current, expected + 1),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "exactly one commit for epoch {expected} wins: {winners:?}"
        );
        assert_eq!(ok(s.group_epoch(ID).await, "group_epoch"), expected + 1);
        assert_eq!(
            ok(s.group_info(ID).await, "group_info"),
            winners.pop(),
            "the accepted commit's GroupInfo"
        );
    }
}
