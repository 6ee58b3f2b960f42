//! Checks of [`crate::ConsentStore`] (privacy settings, contacts,
//! invitations) and of the paged and counted reads of each user's
//! conversation index that consent and sync rely on.

use std::sync::Arc;

use super::{conversation, new_conversation, ok};
use crate::{ConversationKind, CreateOutcome, DirectStarts, GroupAdds, InvitationRecord, Store};

fn invitation(id: u64, inviter: &str, created_ms: u64) -> InvitationRecord {
    InvitationRecord {
        conversation_id: id,
        inviter: inviter.into(),
        created_ms,
        accepted: false,
    }
}

/// group_adds defaults to Contacts, is set per user and read back.
pub async fn group_adds_setting(s: Arc<dyn Store>) {
    let s = &*s;
    assert_eq!(
        ok(s.group_adds("bob").await, "group_adds"),
        GroupAdds::Contacts
    );
    ok(s.set_group_adds("bob", GroupAdds::Everyone).await, "set");
    assert_eq!(
        ok(s.group_adds("bob").await, "group_adds"),
        GroupAdds::Everyone
    );
    assert_eq!(
        ok(s.group_adds("bo").await, "group_adds"),
        GroupAdds::Contacts
    );
    ok(s.set_group_adds("bob", GroupAdds::Contacts).await, "set");
    assert_eq!(
        ok(s.group_adds("bob").await, "group_adds"),
        GroupAdds::Contacts
    );
}

/// direct_starts defaults to Everyone, is set per user apart from
/// group_adds (setting one keeps the other) and read back.
pub async fn direct_starts_setting(s: Arc<dyn Store>) {
    let s = &*s;
    let read = |user: &'static str| s.direct_starts(user);
    assert_eq!(ok(read("bob").await, "default"), DirectStarts::Everyone);
    ok(s.set_group_adds("bob", GroupAdds::Everyone).await, "group");
    ok(
        s.set_direct_starts("bob", DirectStarts::Nobody).await,
        "set",
    );
    assert_eq!(ok(read("bob").await, "read"), DirectStarts::Nobody);
    assert_eq!(ok(s.group_adds("bob").await, "kept"), GroupAdds::Everyone);
    ok(s.set_group_adds("bob", GroupAdds::Contacts).await, "group");
    assert_eq!(ok(read("bob").await, "kept"), DirectStarts::Nobody);
    assert_eq!(ok(read("bo").await, "prefix"), DirectStarts::Everyone);
    assert_eq!(ok(read("bobd").await, "suffix"), DirectStarts::Everyone);
    ok(
        s.set_direct_starts("bob", DirectStarts::Contacts).await,
        "set",
    );
    assert_eq!(ok(read("bob").await, "read"), DirectStarts::Contacts);
    ok(
        s.set_direct_starts("bob", DirectStarts::Everyone).await,
        "set",
    );
    assert_eq!(ok(read("bob").await, "read"), DirectStarts::Everyone);
}

/// presence_visibility defaults to Shared, is set per user apart from the
/// other privacy settings and read back.
pub async fn presence_visibility_setting(s: Arc<dyn Store>) {
    use crate::PresenceVisibility as V;
    let s = &*s;
    let read = |user: &'static str| s.presence_visibility(user);
    assert_eq!(ok(read("bob").await, "default"), V::Shared);
    ok(
        s.set_direct_starts("bob", DirectStarts::Nobody).await,
        "direct",
    );
    ok(s.set_presence_visibility("bob", V::Nobody).await, "set");
    assert_eq!(ok(read("bob").await, "read"), V::Nobody);
    assert_eq!(
        ok(s.direct_starts("bob").await, "kept"),
        DirectStarts::Nobody
    );
    assert_eq!(ok(s.group_adds("bob").await, "kept"), GroupAdds::Contacts);
    assert_eq!(ok(read("bo").await, "prefix"), V::Shared);
    assert_eq!(ok(read("bobp").await, "suffix"), V::Shared);
    ok(s.set_presence_visibility("bob", V::Everyone).await, "set");
    assert_eq!(ok(read("bob").await, "read"), V::Everyone);
    ok(s.set_presence_visibility("bob", V::Shared).await, "set");
    assert_eq!(ok(read("bob").await, "read"), V::Shared);
}

/// push endpoints are kept per device, replaced, removed, and bounded; they
/// do not touch the user's privacy settings.
pub async fn push_endpoints(s: Arc<dyn Store>) {
    use crate::PresenceVisibility as V;
    let s = &*s;
    assert_eq!(ok(s.push_endpoint("bob", 1).await, "absent"), None);
    ok(
        s.set_presence_visibility("bob", V::Nobody).await,
        "visibility",
    );
    ok(s.set_push_endpoint("bob", 1, Some(b"one")).await, "set");
    ok(s.set_push_endpoint("bob", 2, Some(b"two")).await, "set 2");
    ok(s.set_push_endpoint("bob", 1, Some(b"uno")).await, "replace");
    assert_eq!(
        ok(s.push_endpoint("bob", 1).await, "read").as_deref(),
        Some(&b"uno"[..])
    );
    assert_eq!(
        ok(s.push_endpoint("bob", 2).await, "read 2").as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(ok(s.push_endpoint("bo", 1).await, "prefix"), None);
    assert_eq!(ok(s.presence_visibility("bob").await, "kept"), V::Nobody);
    ok(s.set_push_endpoint("bob", 1, None).await, "remove");
    ok(s.set_push_endpoint("bob", 1, None).await, "remove again");
    assert_eq!(ok(s.push_endpoint("bob", 1).await, "removed"), None);
    let huge = vec![0u8; crate::MAX_PUSH_ENDPOINT_LEN + 1];
    assert!(
        s.set_push_endpoint("bob", 3, Some(&huge)).await.is_err(),
        "bounded"
    );
    assert_eq!(ok(s.push_endpoint("bob", 3).await, "not stored"), None);
}

/// conversation_by_key finds a conversation by its exact unique key only.
pub async fn conversation_by_key(s: Arc<dyn Store>) {
    let s = &*s;
    let key: &[u8] = b"direct\0alice\0bob\0";
    assert_eq!(ok(s.conversation_by_key(key).await, "absent"), None);
    let record = conversation(7, ConversationKind::Direct, "alice", &["alice", "bob"]);
    let created = ok(s.create_conversation(&record, Some(key)).await, "create");
    assert_eq!(created, CreateOutcome::Created);
    assert_eq!(ok(s.conversation_by_key(key).await, "found"), Some(7));
    let prefix = key.get(..key.len() - 1).unwrap_or_default();
    assert_eq!(ok(s.conversation_by_key(prefix).await, "prefix"), None);
    new_conversation(s, 8, &["alice", "bob"]).await;
    assert_eq!(ok(s.conversation_by_key(b"").await, "empty"), None);
}

/// Contacts are one-directional, idempotent, never the user itself.
pub async fn contacts(s: Arc<dyn Store>) {
    let s = &*s;
    assert!(!ok(s.is_contact("bob", "alice").await, "is_contact"));
    let chosen = ["alice".to_owned(), "bob".to_owned(), "alice".to_owned()];
    ok(s.add_contacts("bob", &chosen).await, "add_contacts");
    ok(
        s.add_contacts("bob", &chosen[..1]).await,
        "add_contacts again",
    );
    assert!(ok(s.is_contact("bob", "alice").await, "is_contact"));
    assert!(!ok(s.is_contact("alice", "bob").await, "reverse"));
    assert!(!ok(s.is_contact("bob", "bob").await, "self"));
    assert!(!ok(s.is_contact("bo", "alice").await, "prefix user"));
    assert!(!ok(s.is_contact("bob", "alic").await, "prefix contact"));
}

/// put replaces per conversation, keeps the newest `keep`, lists oldest
/// first; invitation and remove_invitation.
pub async fn invitations(s: Arc<dyn Store>) {
    let s = &*s;
    assert!(ok(s.invitations("bob").await, "invitations").is_empty());
    for (id, at) in [(7, 30), (5, 10), (6, 20)] {
        ok(
            s.put_invitation("bob", &invitation(id, "alice", at), 3)
                .await,
            "put",
        );
    }
    let ids = |v: Vec<InvitationRecord>| v.iter().map(|i| i.conversation_id).collect::<Vec<_>>();
    assert_eq!(ids(ok(s.invitations("bob").await, "list")), [5, 6, 7]);
    // Replacing one does not count twice; accepting rewrites it.
    let mut accepted = invitation(5, "carol", 40);
    accepted.accepted = true;
    ok(s.put_invitation("bob", &accepted, 3).await, "replace");
    assert_eq!(ids(ok(s.invitations("bob").await, "list")), [6, 7, 5]);
    assert_eq!(ok(s.invitation("bob", 5).await, "one"), Some(accepted));
    // A fourth drops the oldest (6, at 20).
    ok(
        s.put_invitation("bob", &invitation(8, "alice", 50), 3)
            .await,
        "put",
    );
    assert_eq!(ids(ok(s.invitations("bob").await, "list")), [7, 5, 8]);
    assert_eq!(ok(s.invitation("bob", 6).await, "dropped"), None);
    assert!(ok(s.invitations("bo").await, "other user").is_empty());
    assert!(ok(s.remove_invitation("bob", 7).await, "remove"));
    assert!(!ok(s.remove_invitation("bob", 7).await, "remove twice"));
    assert_eq!(ids(ok(s.invitations("bob").await, "list")), [5, 8]);
}

/// user_conversations_after pages the index; group_count counts groups only.
pub async fn conversation_index_pages(s: Arc<dyn Store>) {
    let s = &*s;
    for id in [10, 20, 30, 40] {
        new_conversation(s, id, &["alice", "bob"]).await;
    }
    let direct = conversation(15, ConversationKind::Direct, "bob", &["alice", "bob"]);
    ok(s.create_conversation(&direct, Some(b"d")).await, "direct");
    let page = |after, limit| s.user_conversations_after("bob", after, limit);
    assert_eq!(ok(page(0, 2).await, "page"), [10, 15]);
    assert_eq!(ok(page(15, 2).await, "page"), [20, 30]);
    assert_eq!(ok(page(30, 10).await, "page"), [40]);
    assert!(ok(page(40, 10).await, "page").is_empty());
    assert!(ok(page(0, 0).await, "page").is_empty());
    assert_eq!(ok(s.group_count("bob").await, "count"), 4);
    ok(s.update_members(20, &[], &["bob".into()]).await, "leave");
    assert_eq!(ok(s.group_count("bob").await, "count"), 3);
    assert_eq!(ok(s.group_count("carol").await, "count"), 0);
    assert_eq!(ok(page(10, 10).await, "page"), [15, 30, 40]);
}

/// Blocks are per user, one-directional, idempotent, bounded by `max`
/// (the bound is checked atomically with the write), listed in handle
/// order, and undone by unblock.
pub async fn blocks(s: Arc<dyn Store>) {
    use crate::BlockOutcome::{AlreadyBlocked, Blocked, Full};
    let s = &*s;
    assert!(!ok(s.is_blocked("bob", "alice").await, "is_blocked"));
    assert_eq!(ok(s.block("bob", "carol", 2).await, "block"), Blocked);
    assert_eq!(ok(s.block("bob", "alice", 2).await, "block"), Blocked);
    assert_eq!(
        ok(s.block("bob", "alice", 2).await, "again"),
        AlreadyBlocked
    );
    assert_eq!(ok(s.block("bob", "dave", 2).await, "past max"), Full);
    assert!(ok(s.is_blocked("bob", "alice").await, "is_blocked"));
    assert!(!ok(s.is_blocked("alice", "bob").await, "reverse"));
    assert!(!ok(s.is_blocked("bob", "dave").await, "refused one"));
    assert!(!ok(s.is_blocked("bo", "alice").await, "prefix user"));
    assert!(!ok(s.is_blocked("bob", "alic").await, "prefix other"));
    assert_eq!(
        ok(s.blocked_users("bob").await, "list"),
        ["alice".to_owned(), "carol".to_owned()]
    );
    assert!(ok(s.blocked_users("alice").await, "empty").is_empty());
    assert!(ok(s.unblock("bob", "alice").await, "unblock"));
    assert!(!ok(s.unblock("bob", "alice").await, "unblock again"));
    assert!(!ok(s.is_blocked("bob", "alice").await, "after unblock"));
    assert_eq!(ok(s.block("bob", "dave", 2).await, "room again"), Blocked);
    assert_eq!(
        ok(s.blocked_users("bob").await, "list"),
        ["carol".to_owned(), "dave".to_owned()]
    );
}

/// Concurrent blocks by one user never pass the bound.
pub async fn blocks_bound_race(s: Arc<dyn Store>) {
    for round in 0..super::RACE_ROUNDS {
        let user = format!("racer{round}");
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (s, user) = (Arc::clone(&s), user.clone());
                tokio::spawn(async move { s.block(&user, &format!("u{i}"), 3).await })
            })
            .collect();
        let mut blocked = 0;
        for task in tasks {
            let outcome = ok(ok(task.await, "join"), "block");
            blocked += usize::from(outcome == crate::BlockOutcome::Blocked);
        }
        assert_eq!(blocked, 3, "round {round}");
        let listed = ok(s.blocked_users(&user).await, "list");
        assert_eq!(listed.len(), 3, "round {round}");
    }
}
