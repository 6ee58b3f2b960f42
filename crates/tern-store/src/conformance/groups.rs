//! Checks of [`crate::GroupStore`]: accepting a Commit as one atomic write
//! (epoch compare-and-set, GroupInfo, membership, the Commit and Welcome
//! appended to the log), or writing nothing at all.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Barrier;

use super::{
    append_ok, commit, group_info, head, message, new_conversation, ok, record, seqs,
    user_conversations, users, welcome, RACERS, RACE_ROUNDS,
};
use crate::{
    AppendError, AppendOutcome, CommitOutcome, CommitRecord, ConversationId, ConversationRecord,
    Seq, Store, StoredMessage,
};

async fn accept(s: &dyn Store, commit: &CommitRecord) -> CommitOutcome {
    ok(s.accept_commit(commit).await, "accept_commit")
}

async fn epoch(s: &dyn Store, id: ConversationId) -> u64 {
    ok(s.group_epoch(id).await, "group_epoch")
}

async fn info(s: &dyn Store, id: ConversationId) -> Option<Bytes> {
    ok(s.group_info(id).await, "group_info")
}

async fn all_messages(s: &dyn Store, id: ConversationId, from: Seq) -> Vec<StoredMessage> {
    ok(s.messages(id, from, 100, 0).await, "messages")
}

/// Everything of a conversation a Commit can change.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    epoch: u64,
    info: Option<Bytes>,
    record: Option<ConversationRecord>,
    messages: Vec<StoredMessage>,
    indexes: Vec<Vec<ConversationId>>,
}

async fn snapshot(s: &dyn Store, id: ConversationId, members: &[&str]) -> Snapshot {
    let mut indexes = Vec::new();
    for user in members {
        indexes.push(user_conversations(s, user).await);
    }
    Snapshot {
        epoch: epoch(s, id).await,
        info: info(s, id).await,
        record: ok(s.conversation(id).await, "conversation"),
        messages: all_messages(s, id, 0).await,
        indexes,
    }
}

/// An accepted Commit moves the epoch to +1, stores its GroupInfo, adds then
/// removes members (record and indexes), appends the Commit and the Welcome
/// at head+1 and head+2 and returns the conversation afterwards; the log
/// goes on after them; groups are independent.
pub async fn accept_commit(s: Arc<dyn Store>) {
    let s = &*s;
    new_conversation(s, 80, &["alice", "bob"]).await;
    new_conversation(s, 81, &["alice"]).await;
    append_ok(s, &message(80, 1, 1)).await;
    assert_eq!((epoch(s, 80).await, info(s, 80).await), (0, None));
    let unknown = (epoch(s, 999).await, info(s, 999).await);
    assert_eq!(unknown, (0, None), "unknown conversation");
    first_commit(s).await;
    second_commit(s).await;

    // The log goes on after the Commits.
    let repeat = s.append_message(&message(80, 4, 4)).await;
    assert!(
        matches!(
            repeat,
            Err(AppendError::SeqConflict {
                head: 4,
                got: 4,
                ..
            })
        ),
        "{repeat:?}"
    );
    append_ok(s, &message(80, 5, 5)).await;

    // Groups are independent; an empty GroupInfo is stored as such.
    assert_eq!((epoch(s, 81).await, info(s, 81).await), (0, None));
    let mut other = commit(81, 0, 1);
    other.group_info = Bytes::new();
    let mut want = record(s, 81).await;
    want.head_seq = 1;
    assert_eq!(accept(s, &other).await, CommitOutcome::Accepted(want));
    let after = (epoch(s, 81).await, info(s, 81).await);
    assert_eq!(after, (1, Some(Bytes::new())));
    assert_eq!(epoch(s, 80).await, 2);
}

/// Group 80 at head 1: a Commit with adds, removes and a Welcome.
async fn first_commit(s: &dyn Store) {
    let mut first = commit(80, 0, 2);
    first.add = users(&["carol", "dave", "alice"]);
    first.remove = users(&["bob", "zed"]);
    first.welcome = Some(welcome(80, 0, 3));
    let mut want = record(s, 80).await;
    want.members = ["alice", "carol", "dave"].map(String::from).into();
    want.head_seq = 3;
    let outcome = accept(s, &first).await;
    assert_eq!(outcome, CommitOutcome::Accepted(want.clone()));
    assert_eq!(record(s, 80).await, want);
    assert_eq!(
        (epoch(s, 80).await, info(s, 80).await),
        (1, Some(group_info(80, 0)))
    );
    let appended: Vec<_> = [Some(first.commit), first.welcome]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(all_messages(s, 80, 2).await, appended, "at head+1, head+2");
    let indexes = [
        ("carol", vec![80]),
        ("bob", vec![]),
        ("alice", vec![80, 81]),
    ];
    for (user, want) in indexes {
        assert_eq!(user_conversations(s, user).await, want, "{user}");
    }
}

/// Group 80 in epoch 1 at head 3: a Commit without a Welcome; a user added
/// and removed at once is not a member.
async fn second_commit(s: &dyn Store) {
    let mut second = commit(80, 1, 4);
    second.add = users(&["erin"]);
    second.remove = users(&["dave", "erin"]);
    let mut want = record(s, 80).await;
    want.members.remove("dave");
    want.head_seq = 4;
    assert_eq!(accept(s, &second).await, CommitOutcome::Accepted(want));
    assert_eq!(all_messages(s, 80, 4).await, vec![second.commit]);
    for user in ["dave", "erin"] {
        let none = Vec::<ConversationId>::new();
        assert_eq!(user_conversations(s, user).await, none, "{user}");
    }
    assert_eq!(
        (epoch(s, 80).await, info(s, 80).await),
        (2, Some(group_info(80, 1)))
    );
}

/// A Commit for another epoch than the group's (from the future, late, or a
/// race's loser whose seq no longer follows the head either) is `Stale`
/// with the current epoch, and writes nothing: no epoch, GroupInfo, member,
/// message or idempotency key.
pub async fn accept_commit_stale(s: Arc<dyn Store>) {
    let s = &*s;
    let watched = ["alice", "bob", "eve"];
    new_conversation(s, 82, &["alice", "bob"]).await;
    let before = snapshot(s, 82, &watched).await;
    let future = accept(s, &commit(82, 1, 1)).await;
    assert_eq!(future, CommitOutcome::Stale { current: 0 });
    assert_eq!(snapshot(s, 82, &watched).await, before, "from the future");

    let first = commit(82, 0, 1);
    assert!(matches!(
        accept(s, &first).await,
        CommitOutcome::Accepted(_)
    ));
    let before = snapshot(s, 82, &watched).await;

    let mut late = commit(82, 0, 2);
    late.commit.client_message_id = 777;
    late.group_info = Bytes::from_static(b"late group info");
    late.add = users(&["eve"]);
    late.remove = users(&["bob"]);
    let mut late_welcome = welcome(82, 0, 3);
    late_welcome.client_message_id = 778;
    late.welcome = Some(late_welcome.clone());
    let outcome = accept(s, &late).await;
    assert_eq!(outcome, CommitOutcome::Stale { current: 1 });
    assert_eq!(snapshot(s, 82, &watched).await, before, "late");

    let mut lost = commit(82, 0, 1);
    lost.group_info = Bytes::from_static(b"lost the race");
    let outcome = accept(s, &lost).await;
    assert_eq!(
        outcome,
        CommitOutcome::Stale { current: 1 },
        "not a SeqConflict"
    );
    assert_eq!(snapshot(s, 82, &watched).await, before, "lost");

    // The late Commit stored no idempotency keys.
    append_ok(s, &late.commit).await;
    append_ok(s, &late_welcome).await;
}

/// A Commit (or its Welcome) whose seq does not follow the head is a
/// `SeqConflict` that writes NOTHING (epoch, GroupInfo, members, indexes,
/// head, messages, idempotency keys); then the right Commit for the same
/// epoch is accepted.
pub async fn accept_commit_seq_conflict(s: Arc<dyn Store>) {
    let s = &*s;
    let watched = ["alice", "bob", "carol"];
    new_conversation(s, 83, &["alice", "bob"]).await;
    append_ok(s, &message(83, 1, 1)).await;
    let before = snapshot(s, 83, &watched).await;
    let attempt = |seq: Seq, welcome_seq: Option<Seq>, cmid: u64| {
        let mut c = commit(83, 0, seq);
        c.commit.client_message_id = cmid;
        c.add = users(&["carol"]);
        c.remove = users(&["bob"]);
        c.welcome = welcome_seq.map(|w| StoredMessage {
            client_message_id: cmid + 100,
            ..welcome(83, 0, w)
        });
        c
    };
    let bad_commits = [(3, Some(4)), (1, Some(2)), (0, None), (3, None)];
    for (cmid, (seq, welcome_seq)) in (500..).zip(bad_commits) {
        let got = s.accept_commit(&attempt(seq, welcome_seq, cmid)).await;
        assert!(
            matches!(got, Err(AppendError::SeqConflict { conversation: 83, head: 1, got: g }) if g == seq),
            "commit seq {seq} on head 1: {got:?}"
        );
        assert_eq!(snapshot(s, 83, &watched).await, before, "commit seq {seq}");
    }
    let bad_welcomes = [4, 2, 1, 0];
    for (cmid, welcome_seq) in (510..).zip(bad_welcomes) {
        let got = s.accept_commit(&attempt(2, Some(welcome_seq), cmid)).await;
        assert!(
            matches!(got, Err(AppendError::SeqConflict { conversation: 83, got: g, .. }) if g == welcome_seq),
            "welcome seq {welcome_seq} after commit seq 2: {got:?}"
        );
        assert_eq!(
            snapshot(s, 83, &watched).await,
            before,
            "welcome {welcome_seq}"
        );
    }

    let good = attempt(2, Some(3), 700);
    let CommitOutcome::Accepted(after) = accept(s, &good).await else {
        panic!("conformance: the right Commit after a SeqConflict was refused");
    };
    assert_eq!((after.head_seq, epoch(s, 83).await), (3, 1));
    assert_eq!(after.members, ["alice", "carol"].map(String::from).into());
    assert_eq!(info(s, 83).await, Some(group_info(83, 0)));
    // The refused attempts stored no idempotency keys.
    let refused = (500..504).chain(510..514).chain(600..604).chain(610..614);
    for (seq, cmid) in (4..).zip(refused) {
        append_ok(s, &message(83, seq, cmid)).await;
    }
}

/// A Commit for a conversation that does not exist is `NoSuchConversation`
/// (whatever its epoch) and leaves nothing behind.
pub async fn accept_commit_no_such_conversation(s: Arc<dyn Store>) {
    let s = &*s;
    let mut c = commit(84, 0, 1);
    c.add = users(&["carol"]);
    c.welcome = Some(welcome(84, 0, 2));
    for at in [0, 3] {
        c.epoch = at;
        let got = s.accept_commit(&c).await;
        assert!(
            matches!(got, Err(AppendError::NoSuchConversation(84))),
            "epoch {at}: {got:?}"
        );
    }
    let nothing = Snapshot {
        epoch: 0,
        info: None,
        record: None,
        messages: Vec::new(),
        indexes: vec![Vec::new()],
    };
    assert_eq!(snapshot(s, 84, &["carol"]).await, nothing);

    new_conversation(s, 84, &["alice"]).await;
    c.epoch = 0;
    let CommitOutcome::Accepted(after) = accept(s, &c).await else {
        panic!("conformance: the Commit of a new conversation was refused");
    };
    assert_eq!(after.head_seq, 2);
    assert_eq!(after.members, ["alice", "carol"].map(String::from).into());
}

/// The Commit and Welcome are appended like `append_message` would: their
/// idempotency keys answer later retries with `Duplicate`, and their expiry
/// entries let reads skip them and `sweep_expired` delete them (keys too).
pub async fn accept_commit_log_entries(s: Arc<dyn Store>) {
    let s = &*s;
    new_conversation(s, 85, &["alice"]).await;
    let mut c = commit(85, 0, 1);
    c.commit.expires_at_ms = 100;
    let mut w = welcome(85, 0, 2);
    w.expires_at_ms = 200;
    c.welcome = Some(w.clone());
    assert!(matches!(accept(s, &c).await, CommitOutcome::Accepted(_)));
    assert_eq!(seqs(s, 85, 1, 10, 99).await, vec![1, 2]);
    assert_eq!(seqs(s, 85, 1, 10, 100).await, vec![2], "expiry applies");

    for stored in [&c.commit, &w] {
        let retry = StoredMessage {
            seq: 3,
            ..stored.clone()
        };
        let got = ok(s.append_message(&retry).await, "retry");
        assert_eq!(
            got,
            AppendOutcome::Duplicate(stored.clone()),
            "idempotency key"
        );
    }
    assert_eq!(
        ok(s.sweep_expired(100, 10).await, "sweep"),
        1,
        "expiry entry"
    );
    assert_eq!(seqs(s, 85, 0, 10, 0).await, vec![2]);
    assert_eq!(head(s, 85).await, 2);
    let resend = StoredMessage {
        seq: 3,
        expires_at_ms: u64::MAX,
        ..c.commit.clone()
    };
    append_ok(s, &resend).await;
    assert_eq!(ok(s.sweep_expired(200, 10).await, "sweep"), 1);
    assert_eq!(seqs(s, 85, 0, 10, 0).await, vec![3]);
}

/// [`RACERS`] Commits racing for one epoch, over 2 × [`RACE_ROUNDS`]
/// epochs: exactly one is accepted, the others are `Stale` with the next
/// epoch, and only the winner's GroupInfo, member and messages are stored.
pub async fn accept_commit_race(s: Arc<dyn Store>) {
    new_conversation(s.as_ref(), 86, &["alice", "bob"]).await;
    for at in 0..u64::from(RACE_ROUNDS) * 2 {
        commit_race_round(&s, at).await;
    }
}

/// Racer `racer`'s Commit for epoch `at` on head `head`: adds one user of
/// its own and brings a Welcome.
fn racing_commit(at: u64, head: Seq, racer: usize) -> CommitRecord {
    let tag = format!("epoch {at} by racer {racer}");
    let mut c = commit(86, at, head + 1);
    c.group_info = Bytes::from(format!("group info of {tag}"));
    c.commit.payload = Bytes::from(format!("commit of {tag}"));
    c.add = vec![format!("user-{at}-{racer}")];
    let mut w = welcome(86, at, head + 2);
    w.payload = Bytes::from(format!("welcome of {tag}"));
    c.welcome = Some(w);
    c
}

async fn commit_race_round(s: &Arc<dyn Store>, at: u64) {
    let head_before = head(s.as_ref(), 86).await;
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for racer in 0..RACERS {
        let (s, barrier) = (Arc::clone(s), Arc::clone(&barrier));
        let c = racing_commit(at, head_before, racer);
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let outcome = s.accept_commit(&c).await;
            (c, outcome)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        let (c, outcome) = ok(task.await, "join accept_commit task");
        match ok(outcome, "accept_commit") {
            CommitOutcome::Accepted(after) => winners.push((c, after)),
            CommitOutcome::Stale { current } => assert_eq!(current, at + 1),
        }
    }
    let [(won, after)] = <[_; 1]>::try_from(winners)
        .unwrap_or_else(|w| panic!("conformance: {} Commits accepted for epoch {at}", w.len()));
    let s = s.as_ref();
    assert_eq!(record(s, 86).await, after, "the returned record is stored");
    assert_eq!(after.head_seq, head_before + 2);
    assert_eq!(
        (epoch(s, 86).await, info(s, 86).await),
        (at + 1, Some(won.group_info))
    );
    let added: BTreeSet<_> = after
        .members
        .iter()
        .filter(|m| m.starts_with(&format!("user-{at}-")))
        .collect();
    assert_eq!(added, won.add.iter().collect(), "only the winner's member");
    let appended: Vec<_> = [Some(won.commit), won.welcome]
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(all_messages(s, 86, head_before + 1).await, appended);
}
