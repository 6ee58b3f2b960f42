//! Every documented limit at the limit and one over it, on both sides, with
//! the same number (`tern_proto::limits`, docs/PROTOCOL.md §6): at the limit
//! the server serves the request; one over, the SDK refuses to send it
//! (`ClientError::OverLimit` / `Handle` / `DeviceName`, nothing leaves the
//! device) and the server, sent the same request as a raw frame, refuses it
//! with `InvalidArgument` and keeps the connection. The frame cap is in
//! `robustness.rs` (`a_valid_frame_of_exactly_the_cap_...`) and
//! `messaging.rs` (the SDK side); page caps in `attacks.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{TestServer, WAIT};
use tern_client::connection::RawConnection;
use tern_client::ClientError;
use tern_proto::body::prekeys::{OneTimePrekeyData, UploadPrekeys};
use tern_proto::body::{conversations, mls};
use tern_proto::fb::ErrorCode;
use tern_proto::handle::{MAX_DEVICE_NAME_LEN, MAX_HANDLE_LEN};
use tern_proto::limits::{MAX_KEYS_PER_UPLOAD, MAX_KEY_PACKAGE_LEN, MAX_NAMES_PER_REQUEST};
use tern_proto::{Body, ConversationKind, Frame};
use tern_store::memory::MemStore;
use tern_store::Store;
use tokio::time::timeout;

/// Sends a raw request and returns its answer, skipping pushes.
async fn raw_call(conn: &mut RawConnection, request_id: u64, body: Body) -> Body {
    conn.sender
        .frame(&Frame::new(request_id, body))
        .await
        .unwrap();
    loop {
        let frame = timeout(WAIT, conn.receiver.next())
            .await
            .expect("answered in time")
            .unwrap()
            .expect("connection open");
        if frame.request_id == request_id {
            return frame.body;
        }
    }
}

#[track_caller]
fn assert_invalid(body: &Body) {
    match body {
        Body::Error(e) => assert_eq!(e.code, ErrorCode::InvalidArgument, "{}", e.message),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[track_caller]
fn assert_over_limit(result: Result<impl std::fmt::Debug, ClientError>, max: usize) {
    match result {
        Err(ClientError::OverLimit(over)) => assert_eq!(over.max, max, "{over}"),
        other => panic!("expected the SDK to refuse before sending, got {other:?}"),
    }
}

/// A memory store holding `n` accounts `m0..m{n-1}` that anyone may add to groups.
async fn store_with_members(n: usize) -> Arc<dyn Store> {
    let store = Arc::new(MemStore::new());
    for i in 0..n {
        common::seed_account(&store, &format!("m{i}")).await;
    }
    store
}

fn group(members: Vec<String>) -> conversations::CreateConversation {
    conversations::CreateConversation {
        kind: ConversationKind::Group,
        members,
    }
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("m{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_per_request_at_the_limit_and_one_over() {
    let server = TestServer::start_on_store(2, store_with_members(MAX_NAMES_PER_REQUEST + 1).await);
    let alice = server.register("alice").await;
    // At the limit: a group of 2,000 others is created.
    let info = alice
        .request(group(names(MAX_NAMES_PER_REQUEST)))
        .await
        .unwrap();
    assert_eq!(info.members.len(), MAX_NAMES_PER_REQUEST + 1);
    // One over: the SDK does not send it, for every request that names users.
    let over = names(MAX_NAMES_PER_REQUEST + 1);
    assert_over_limit(
        alice.request(group(over.clone())).await,
        MAX_NAMES_PER_REQUEST,
    );
    let add = conversations::AddMembers {
        conversation_id: info.conversation_id,
        members: over.clone(),
    };
    assert_over_limit(alice.request(add.clone()).await, MAX_NAMES_PER_REQUEST);
    let claim = mls::ClaimKeyPackages {
        users: over.clone(),
    };
    assert_over_limit(alice.request(claim.clone()).await, MAX_NAMES_PER_REQUEST);
    let commit = mls::Commit {
        conversation_id: info.conversation_id,
        epoch: 0,
        commit: Bytes::from_static(b"opaque"),
        welcome: None,
        group_info: Bytes::from_static(b"opaque"),
        added: over[..1000].to_vec(),
        removed: over[1000..].to_vec(),
        staged: Default::default(),
    };
    assert_over_limit(alice.request(commit.clone()).await, MAX_NAMES_PER_REQUEST);
    // The server refuses the same requests sent raw, and goes on serving.
    let mut raw = server.raw_connection_of(&alice).await;
    let bodies = [
        Body::CreateConversation(group(over)),
        Body::AddMembers(add),
        Body::ClaimKeyPackages(claim),
        Body::Commit(Box::new(commit)),
    ];
    for (id, body) in (10..).zip(bodies) {
        assert_invalid(&raw_call(&mut raw, id, body).await);
    }
    let info = alice.request(group(names(2))).await.unwrap();
    assert_eq!(info.members.len(), 3);
}

fn prekeys(n: usize) -> UploadPrekeys {
    UploadPrekeys {
        identity: None,
        signed_prekey: None,
        one_time: (0..n)
            .map(|i| OneTimePrekeyData {
                id: u32::try_from(i).unwrap() + 1,
                public_key: [9; 32],
            })
            .collect(),
        last_resort: None,
        kem_prekey: None,
    }
}

fn key_packages(n: usize, len: usize) -> mls::UploadKeyPackages {
    mls::UploadKeyPackages {
        // Distinct contents: the pool keeps one copy of identical packages.
        key_packages: (0..n)
            .map(|i| {
                let mut package = vec![0x4B; len];
                package[..8].copy_from_slice(&(i as u64).to_be_bytes());
                Bytes::from(package)
            })
            .collect(),
        last_resort: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_per_upload_and_key_package_size_at_the_limit_and_one_over() {
    let server = TestServer::start(2);
    let alice = server.register("alice").await;
    let counts = alice.request(prekeys(MAX_KEYS_PER_UPLOAD)).await.unwrap();
    assert_eq!(counts.one_time_prekeys as usize, MAX_KEYS_PER_UPLOAD);
    let counts = alice
        .request(key_packages(MAX_KEYS_PER_UPLOAD, 64))
        .await
        .unwrap();
    assert_eq!(counts.key_packages as usize, MAX_KEYS_PER_UPLOAD);
    let counts = alice
        .request(key_packages(1, MAX_KEY_PACKAGE_LEN))
        .await
        .unwrap();
    assert_eq!(counts.key_packages as usize, MAX_KEYS_PER_UPLOAD + 1);
    assert_over_limit(
        alice.request(prekeys(MAX_KEYS_PER_UPLOAD + 1)).await,
        MAX_KEYS_PER_UPLOAD,
    );
    let many = key_packages(MAX_KEYS_PER_UPLOAD + 1, 64);
    assert_over_limit(alice.request(many.clone()).await, MAX_KEYS_PER_UPLOAD);
    let big = key_packages(1, MAX_KEY_PACKAGE_LEN + 1);
    assert_over_limit(alice.request(big.clone()).await, MAX_KEY_PACKAGE_LEN);
    let mut raw = server.raw_connection_of(&alice).await;
    let bodies = [
        Body::UploadPrekeys(Box::new(prekeys(MAX_KEYS_PER_UPLOAD + 1))),
        Body::UploadKeyPackages(many),
        Body::UploadKeyPackages(big),
    ];
    for (id, body) in (10..).zip(bodies) {
        assert_invalid(&raw_call(&mut raw, id, body).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_and_device_names_at_the_limit_and_one_over() {
    let server = TestServer::start(2);
    let longest = "h".repeat(MAX_HANDLE_LEN);
    let state = tempfile::tempdir().unwrap();
    let name = "d".repeat(MAX_DEVICE_NAME_LEN);
    let client = tern_client::Client::register(server.options(state.path()), &longest, &name)
        .await
        .expect("a 32-byte handle and a 64-byte device name are accepted");
    assert_eq!(client.user(), longest);
    let state = tempfile::tempdir().unwrap();
    let options = server.options(state.path());
    let over = "h".repeat(MAX_HANDLE_LEN + 1);
    match tern_client::Client::register(options, &over, "phone").await {
        Err(ClientError::Handle(_)) => {}
        other => panic!(
            "expected the SDK to refuse the handle, got {:?}",
            other.err()
        ),
    }
    let state = tempfile::tempdir().unwrap();
    let options = server.options(state.path());
    let long_name = "d".repeat(MAX_DEVICE_NAME_LEN + 1);
    match tern_client::Client::register(options, "bob", &long_name).await {
        Err(ClientError::DeviceName(_)) => {}
        other => panic!("expected the SDK to refuse the name, got {:?}", other.err()),
    }
    // The server refuses both raw.
    let mut raw = server.raw_connection().await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let frame = raw.register_frame(1, &over, "phone", &key).unwrap();
    assert_invalid(&raw_call(&mut raw, 1, frame.body).await);
    let frame = raw.register_frame(2, "bob", &long_name, &key).unwrap();
    assert_invalid(&raw_call(&mut raw, 2, frame.body).await);
}
