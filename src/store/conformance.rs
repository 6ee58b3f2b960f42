//! The conformance suite every [`Store`] backend must pass.
//!
//! Owns one check per behaviour the trait documents: every method, every
//! documented error, the atomicity of the insert-if-absent paths under a real
//! race, sweeping, and `persist`. A backend's integration test calls
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

use super::{
    AppendError, AppendOutcome, ConversationId, ConversationKind, ConversationRecord,
    CreateAccountError, CreateConversationError, CreateOutcome, DeviceId, DeviceRecord,
    MembersError, Seq, Store, StoredMessage,
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
        vec![]
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
        vec![]
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
        vec![],
        "no prefix leak"
    );
    assert_eq!(
        ok(s.user_conversations("nobody").await, "user_conversations"),
        vec![]
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
        vec![]
    );
    assert_eq!(
        ok(s.user_conversations("dave").await, "user_conversations"),
        vec![],
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
