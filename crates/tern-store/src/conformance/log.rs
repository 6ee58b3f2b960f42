//! Checks of [`crate::MessageLog`] and of [`Store::persist`]: seq rules,
//! idempotency, paging, expiry, cursors, sweeping, the durability barrier.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::{append_ok, head, message, new_conversation, ok, seqs};
use crate::{AppendError, AppendOutcome, ConversationId, Fences, Seq, Store};

/// append_messages: each message is checked against the heads and keys the
/// messages before it left (seq conflicts, duplicates within the call and
/// with the store, unknown conversations), and refusals stop nothing else.
pub async fn append_batch(s: Arc<dyn Store>) {
    let s = &*s;
    new_conversation(s, 1, &["alice"]).await;
    new_conversation(s, 2, &["alice"]).await;
    append_ok(s, &message(2, 1, 50)).await;
    let batch = [
        message(1, 1, 1),
        message(2, 2, 2),
        message(1, 2, 3),
        message(1, 2, 4),  // conflict: the batch moved the head to 2
        message(1, 3, 1),  // the first message again: a duplicate within the call
        message(2, 3, 50), // a duplicate of what the store held before
        message(9, 1, 9),  // no such conversation
        message(1, 3, 5),
    ];
    let out = ok(
        s.append_messages(&batch, &Fences::none()).await,
        "append_messages",
    );
    assert_eq!(out.len(), batch.len());
    let appended = |i: usize| matches!(out.get(i), Some(Ok(AppendOutcome::Appended)));
    assert!(
        appended(0) && appended(1) && appended(2) && appended(7),
        "{out:?}"
    );
    assert!(
        matches!(
            out.get(3),
            Some(Err(AppendError::SeqConflict {
                head: 2,
                got: 2,
                ..
            }))
        ),
        "{out:?}"
    );
    assert!(
        matches!(out.get(4), Some(Ok(AppendOutcome::Duplicate(m))) if m.seq == 1 && m.conversation_id == 1),
        "{out:?}"
    );
    assert!(
        matches!(out.get(5), Some(Ok(AppendOutcome::Duplicate(m))) if m.seq == 1 && m.conversation_id == 2),
        "{out:?}"
    );
    assert!(
        matches!(out.get(6), Some(Err(AppendError::NoSuchConversation(9)))),
        "{out:?}"
    );
    assert_eq!(seqs(s, 1, 1, 10, 0).await, vec![1, 2, 3]);
    assert_eq!(seqs(s, 2, 1, 10, 0).await, vec![1, 2]);
    let third = ok(s.messages(1, 3, 1, 0).await, "messages");
    assert_eq!(
        third.first().map(|m| m.client_message_id),
        Some(5),
        "the refused messages wrote nothing"
    );
    assert!(ok(s.append_messages(&[], &Fences::none()).await, "empty batch").is_empty());
}

/// seq must be head+1; `SeqConflict` on gap or repeat; `NoSuchConversation`.
pub async fn append_seq_rules(s: Arc<dyn Store>) {
    let s = &*s;
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
pub async fn duplicates(s: Arc<dyn Store>) {
    let s = &*s;
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
pub async fn messages_paging(s: Arc<dyn Store>) {
    let s = &*s;
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
pub async fn messages_expiry_filter(s: Arc<dyn Store>) {
    let s = &*s;
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
pub async fn cursors(s: Arc<dyn Store>) {
    let s = &*s;
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
pub async fn sweep(s: Arc<dyn Store>) {
    let s = &*s;
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
pub async fn sweep_limit(s: Arc<dyn Store>) {
    let s = &*s;
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

/// purge_message: the record keeps its place, sender, id, time and expiry,
/// loses its payload and takes the given flags; reads return the
/// tombstone; a retry of the purged send is answered with the tombstone
/// (never stored again); a missing seq is `None`; the head does not move.
pub async fn purge_message(s: Arc<dyn Store>) {
    let s = &*s;
    new_conversation(s, 1, &["alice"]).await;
    for seq in 1..=3 {
        append_ok(s, &message(1, seq, seq)).await;
    }
    const TOMBSTONE: u32 = 1 << 19;
    let tombstone = ok(s.purge_message(1, 2, TOMBSTONE).await, "purge_message");
    let expected = crate::StoredMessage {
        payload: Bytes::new(),
        flags: TOMBSTONE,
        ..message(1, 2, 2)
    };
    assert_eq!(tombstone.as_ref(), Some(&expected));
    assert_eq!(seqs(s, 1, 1, 10, 0).await, [1, 2, 3]);
    let read = ok(s.messages(1, 1, 10, 0).await, "messages");
    assert_eq!(read.get(1), Some(&expected));
    assert_eq!(read.get(2), Some(&message(1, 3, 3)), "others untouched");
    let retry = ok(s.append_message(&message(1, 4, 2)).await, "retry");
    assert_eq!(retry, AppendOutcome::Duplicate(expected.clone()));
    assert_eq!(head(s, 1).await, 3);
    assert_eq!(
        ok(s.purge_message(1, 2, TOMBSTONE).await, "again"),
        Some(expected)
    );
    assert_eq!(ok(s.purge_message(1, 9, TOMBSTONE).await, "missing"), None);
    assert_eq!(ok(s.purge_message(7, 1, TOMBSTONE).await, "no such"), None);
    ok(s.erase_purged().await, "erase_purged");
    assert_eq!(
        read.get(1),
        ok(s.messages(1, 2, 1, 0).await, "after").first()
    );
}
