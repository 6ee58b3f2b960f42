//! Checks of [`crate::ConversationStore`]: creation (unique keys, races),
//! reads, membership and each user's index.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::Barrier;

use super::{append_ok, commit, conversation, message, new_conversation, ok, welcome};
use crate::{
    ConversationId, ConversationKind, CreateConversationError, CreateOutcome, MembersError, Store,
};

/// create_conversation (`Created`, `Existing`, `IdTaken`), conversation,
/// user_conversations ordering.
pub async fn conversations(s: Arc<dyn Store>) {
    let s = &*s;
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
pub async fn update_members(s: Arc<dyn Store>) {
    let s = &*s;
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

/// member_since: 1 for the members a conversation was created with,
/// `head + 1` for a member added later, `None` once removed, afresh after
/// being added again; adding a member again keeps their start.
pub async fn member_since(s: Arc<dyn Store>) {
    let s = &*s;
    let since =
        |user: &'static str| async move { ok(s.member_since(50, user).await, "member_since") };
    new_conversation(s, 50, &["alice", "bob"]).await;
    assert_eq!(since("alice").await, Some(1));
    assert_eq!(since("zed").await, None);
    assert_eq!(ok(s.member_since(51, "alice").await, "member_since"), None);
    append_ok(s, &message(50, 1, 1)).await;
    append_ok(s, &message(50, 2, 2)).await;
    let carol = vec!["carol".to_string()];
    ok(s.update_members(50, &carol, &[]).await, "update_members");
    assert_eq!(since("carol").await, Some(3), "added at head 2");
    let bob = vec!["bob".to_string()];
    ok(s.update_members(50, &[], &bob).await, "update_members");
    assert_eq!(since("bob").await, None, "removed");
    append_ok(s, &message(50, 3, 3)).await;
    ok(s.update_members(50, &bob, &[]).await, "update_members");
    assert_eq!(since("bob").await, Some(4), "added again: a new period");
    ok(s.update_members(50, &carol, &[]).await, "update_members");
    assert_eq!(
        since("carol").await,
        Some(3),
        "adding a member keeps their start"
    );
    // Added by a Commit (at seq 4): from its Welcome on, seq 5.
    let mut added = commit(50, 0, 4);
    added.add = vec!["erin".to_string()];
    added.welcome = Some(welcome(50, 0, 5));
    ok(s.accept_commit(&added).await, "accept_commit");
    assert_eq!(
        since("erin").await,
        Some(5),
        "a joiner starts at its Welcome"
    );
}

/// Settings default to no timer, are stored per conversation and replaced
/// whole.
pub async fn conversation_settings(s: Arc<dyn Store>) {
    let s = &*s;
    let none = crate::ConversationSettings::default();
    assert_eq!(ok(s.settings(1).await, "settings"), none);
    let timer = crate::ConversationSettings {
        timer_secs: 3600,
        admins: ["alice".to_owned(), "bob".to_owned()].into(),
        everyone_adds: true,
    };
    ok(s.put_settings(1, &timer).await, "put_settings");
    assert_eq!(ok(s.settings(1).await, "settings"), timer);
    assert_eq!(ok(s.settings(2).await, "other"), none);
    ok(s.put_settings(1, &none).await, "off again");
    assert_eq!(ok(s.settings(1).await, "settings"), none);
}
