//! Store failures seen through the real server: a fault injected into the
//! store (`tern_store::faulty::FaultyStore`) is answered with a typed error,
//! and leaves nothing half-done behind it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::TestServer;
use tern_client::ClientError;
use tern_proto::body::mls;
use tern_proto::fb::ErrorCode;
use tern_proto::{flags, ConversationKind};
use tern_store::faulty::{FaultyStore, Op};
use tern_store::memory::MemStore;
use tern_store::BackendErrorKind;

fn commit(conversation_id: u64, epoch: u64, tag: &str, added: &[&str]) -> mls::Commit {
    mls::Commit {
        conversation_id,
        epoch,
        commit: Bytes::from(format!("commit-{tag}")),
        welcome: Some(Bytes::from(format!("welcome-{tag}"))),
        group_info: Bytes::from(format!("group-info-{tag}")),
        added: added.iter().map(|s| (*s).to_owned()).collect(),
        removed: vec![],
        staged: Default::default(),
    }
}

async fn epoch_of(client: &common::TestClient, group: u64) -> u64 {
    client
        .request(mls::GetGroupInfo {
            conversation_id: group,
        })
        .await
        .unwrap()
        .epoch
}

/// Accepting a Commit is one store operation: when the store fails it, the
/// committer gets a retryable `Internal` error, the group stays at its epoch
/// with its members, and the same Commit is accepted on retry — the group is
/// never wedged at an epoch whose Commit nobody has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_while_accepting_a_commit_leaves_the_group_usable() {
    let store = Arc::new(FaultyStore::new(MemStore::new()));
    let server = TestServer::start_on_store(2, store.clone());
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let group = alice
        .create_conversation(ConversationKind::Group, &["bob"])
        .await
        .unwrap()
        .id;

    store.inject(Op::AcceptCommit, BackendErrorKind::Unavailable);
    let err = alice
        .request(commit(group, 0, "first", &["carol"]))
        .await
        .unwrap_err();
    let ClientError::Server {
        code,
        retry_after_ms,
        ..
    } = err
    else {
        panic!("{err:?}")
    };
    assert_eq!(code, ErrorCode::Internal);
    assert!(
        retry_after_ms > 0,
        "a retryable failure carries a retry hint"
    );
    assert_eq!(store.calls(Op::AcceptCommit), 1);
    assert_eq!(epoch_of(&alice, group).await, 0, "epoch unchanged");

    let mls::CommitAccepted { epoch, seq, .. } = alice
        .request(commit(group, 0, "first", &["carol"]))
        .await
        .unwrap();
    assert_eq!((epoch, seq), (1, 1), "the retried Commit takes seq 1");
    // Bob gets the Commit; Carol, who joins from the Welcome, only her
    // Welcome (her membership starts there).
    let got = bob.expect_message().await;
    assert_eq!(
        (got.seq, got.flags & flags::MLS_COMMIT),
        (1, flags::MLS_COMMIT)
    );
    let got = carol.expect_message().await;
    assert_eq!((got.seq, &got.payload[..]), (2, &b"welcome-first"[..]));
    assert_eq!(epoch_of(&carol, group).await, 1);
}

/// A failed `persist` poisons the store: the batch's request is refused (not
/// acknowledged), and so is every later write, with an error that says an
/// operator must restart, until the store is reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_persist_refuses_later_writes_until_reopened() {
    let store = Arc::new(FaultyStore::new(MemStore::new()));
    let server = TestServer::start_on_store(1, store.clone());
    let alice = server.register("alice").await;
    let note = alice
        .create_conversation(ConversationKind::NoteToSelf, &[])
        .await
        .unwrap()
        .id;
    store.inject(Op::Persist, BackendErrorKind::Io);
    let first = alice.send(note, "one").await.unwrap_err();
    assert_eq!(first.code(), Some(ErrorCode::Internal), "{first:?}");
    let later = alice.send(note, "two").await.unwrap_err();
    let ClientError::Server {
        message,
        retry_after_ms,
        ..
    } = &later
    else {
        panic!("{later:?}")
    };
    assert!(message.contains("refuses writes"), "{message}");
    assert_eq!(*retry_after_ms, 0, "a poisoned store is not retryable");
    store.reopen();
    alice.send(note, "three").await.unwrap();
}
