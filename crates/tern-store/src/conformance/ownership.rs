//! Checks of [`crate::OwnershipStore`] and of fenced appends: claims raise
//! the token, a fenced append or Commit with an old token is refused and
//! writes nothing, unfenced appends are never checked, racing claims get
//! distinct tokens.

use std::sync::Arc;

use tokio::sync::Barrier;

use super::{append_ok, commit, head, message, new_conversation, ok};
use crate::{AppendError, AppendOutcome, Fences, Ownership, Store};

fn fenced(id: u64, token: u64) -> Fences {
    let mut fences = Fences::none();
    fences.insert(id, token);
    fences
}

/// Claims count up per conversation, from 1, and `ownership` reports the last.
pub async fn ownership_claims(s: Arc<dyn Store>) {
    let s = &*s;
    assert_eq!(ok(s.ownership(7).await, "ownership"), None);
    assert_eq!(ok(s.claim_ownership(7, "node-a").await, "claim"), 1);
    assert_eq!(ok(s.claim_ownership(7, "node-b").await, "claim"), 2);
    assert_eq!(
        ok(s.claim_ownership(8, "node-a").await, "claim"),
        1,
        "per conversation"
    );
    let owner = Ownership {
        node: "node-b".into(),
        token: 2,
    };
    assert_eq!(ok(s.ownership(7).await, "ownership"), Some(owner));
}

/// After a second claim, appends fenced with the first token are refused
/// with `Fenced` and write nothing; the current token appends; unfenced
/// appends are not checked; other conversations in the batch are unaffected.
pub async fn fenced_appends(s: Arc<dyn Store>) {
    let s = &*s;
    new_conversation(s, 1, &["alice"]).await;
    new_conversation(s, 2, &["alice"]).await;
    let stale = ok(s.claim_ownership(1, "node-a").await, "claim");
    let current = ok(s.claim_ownership(1, "node-b").await, "claim");
    let batch = [message(1, 1, 1), message(2, 1, 1)];
    let out = ok(s.append_messages(&batch, &fenced(1, stale)).await, "append");
    assert!(
        matches!(
            out.first(),
            Some(Err(AppendError::Fenced { conversation: 1, held, current: c }))
                if *held == stale && *c == current
        ),
        "{out:?}"
    );
    assert!(
        matches!(out.get(1), Some(Ok(AppendOutcome::Appended))),
        "{out:?}"
    );
    assert_eq!(head(s, 1).await, 0, "the fenced append wrote nothing");
    let out = ok(
        s.append_messages(&batch[..1], &fenced(1, current)).await,
        "append",
    );
    assert!(
        matches!(out.first(), Some(Ok(AppendOutcome::Appended))),
        "{out:?}"
    );
    append_ok(s, &message(1, 2, 2)).await;
    assert_eq!(head(s, 1).await, 2);
    // Never claimed: token 0 is current, anything else is stale.
    let out = ok(
        s.append_messages(&[message(2, 2, 2)], &fenced(2, 3)).await,
        "append",
    );
    assert!(
        matches!(
            out.first(),
            Some(Err(AppendError::Fenced { current: 0, .. }))
        ),
        "{out:?}"
    );
}

/// A Commit carrying a stale fence is refused and the epoch does not move.
pub async fn fenced_commit(s: Arc<dyn Store>) {
    let s = &*s;
    new_conversation(s, 3, &["alice", "bob"]).await;
    let stale = ok(s.claim_ownership(3, "node-a").await, "claim");
    let current = ok(s.claim_ownership(3, "node-b").await, "claim");
    let mut c = commit(3, 0, 1);
    c.fence = Some(stale);
    let refused = s.accept_commit(&c).await;
    assert!(
        matches!(refused, Err(AppendError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(ok(s.group_epoch(3).await, "epoch"), 0);
    c.fence = Some(current);
    assert!(s.accept_commit(&c).await.is_ok());
    assert_eq!(ok(s.group_epoch(3).await, "epoch"), 1);
}

/// Eight nodes claim one conversation at once: eight distinct tokens 1..=8.
pub async fn ownership_claim_race(s: Arc<dyn Store>) {
    const RACERS: usize = 8;
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for racer in 0..RACERS {
        let (s, barrier) = (Arc::clone(&s), Arc::clone(&barrier));
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            s.claim_ownership(9, &format!("node-{racer}")).await
        }));
    }
    let mut tokens = Vec::new();
    for task in tasks {
        let joined = task.await.map_err(|e| e.to_string());
        tokens.push(ok(ok(joined, "join"), "claim"));
    }
    tokens.sort_unstable();
    assert_eq!(tokens, (1..=RACERS as u64).collect::<Vec<_>>());
}
