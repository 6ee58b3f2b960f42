//! The key directory and MLS delivery service against a real server: signed
//! uploads, exactly-once claims under concurrency, low-key notices, claim
//! rate limits, one Commit per epoch, Welcome after Commit, device linking,
//! revocation and stale device sets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{TestClient, TestServer, WAIT};
use ed25519_dalek::SigningKey;
use tern_client::identity::Identity;
use tern_client::{Client, ClientError};
use tern_proto::auth::{identity_key_transcript, prekey_transcript, sign};
use tern_proto::body::messaging::{self, DevicePayload};
use tern_proto::body::prekeys::{self, OneTimePrekeyData, SignedPrekeyData, UploadPrekeys};
use tern_proto::body::{devices, mls};
use tern_proto::fb::ErrorCode;
use tern_proto::{flags, Body, ConversationKind, Request};

fn device_key(client: &TestClient) -> SigningKey {
    Identity::load(client.state.path()).unwrap().key
}

fn signed(key: &SigningKey, user: &str, device: u32, id: u32) -> SignedPrekeyData {
    let public_key = [id as u8; 32];
    SignedPrekeyData {
        id,
        public_key,
        signature: sign(key, &prekey_transcript(user, device, id, &public_key)),
    }
}

fn upload(client: &TestClient, one_time: std::ops::Range<u32>) -> UploadPrekeys {
    let key = device_key(client);
    let (user, device) = (client.user().to_owned(), client.device());
    let identity_key = [9u8; 32];
    UploadPrekeys {
        identity: Some((
            identity_key,
            sign(&key, &identity_key_transcript(&user, device, &identity_key)),
        )),
        signed_prekey: Some(signed(&key, &user, device, 1000)),
        one_time: one_time
            .map(|id| OneTimePrekeyData {
                id,
                public_key: [id as u8; 32],
            })
            .collect(),
        last_resort: Some(signed(&key, &user, device, 2000)),
        kem_prekey: Some(Bytes::from_static(b"kem-prekey")),
    }
}

async fn counts<R: Request<Response = prekeys::KeyCounts>>(
    client: &Client,
    upload: R,
) -> (u32, u32) {
    let counts = client.request(upload).await.unwrap();
    (counts.one_time_prekeys, counts.key_packages)
}

async fn register_many(server: &TestServer, prefix: &str, n: usize) -> Vec<Arc<TestClient>> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Arc::new(server.register(&format!("{prefix}{i}")).await));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_signature_checked() {
    let server = TestServer::start(2);
    let bob = server.register("bob").await;
    assert_eq!(counts(&bob, upload(&bob, 0..5)).await, (5, 0));

    let mut forged = upload(&bob, 5..6);
    forged.identity = Some(([1; 32], [0; 64]));
    let err = bob.request(forged).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument));
    let mut forged = upload(&bob, 5..6);
    forged.signed_prekey = Some(SignedPrekeyData {
        id: 1,
        public_key: [1; 32],
        signature: [7; 64],
    });
    assert_eq!(
        bob.request(forged).await.unwrap_err().code(),
        Some(ErrorCode::InvalidArgument)
    );
    // Past the per-upload limit the SDK does not send it (tests/limits.rs
    // has the server's side).
    let too_many = upload(&bob, 0..101);
    assert!(matches!(
        bob.request(too_many).await.unwrap_err(),
        ClientError::OverLimit(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_prekeys_are_handed_out_exactly_once_under_64_concurrent_claims() {
    let server = TestServer::start(2);
    let bob = server.register("bob").await;
    counts(&bob, upload(&bob, 0..40)).await;
    let claimers = register_many(&server, "c", 64).await;
    let mut tasks = Vec::new();
    for claimer in &claimers {
        let claimer = claimer.clone();
        tasks.push(tokio::spawn(async move {
            claimer
                .request(prekeys::ClaimPrekeys { user: "bob".into() })
                .await
                .unwrap()
        }));
    }
    let mut handed = Vec::new();
    let mut fell_back = 0;
    for task in tasks {
        let devices = task.await.unwrap().devices;
        assert_eq!(devices.len(), 1);
        let bundle = &devices[0];
        assert_eq!(bundle.identity_key, [9; 32]);
        assert_eq!(bundle.signed_prekey.as_ref().unwrap().id, 1000);
        match &bundle.one_time_prekey {
            Some(otk) => handed.push(otk.id),
            None => {
                assert_eq!(
                    bundle.last_resort.as_ref().unwrap().id,
                    2000,
                    "last resort when none are left"
                );
                fell_back += 1;
            }
        }
    }
    let distinct: BTreeSet<u32> = handed.iter().copied().collect();
    assert_eq!(handed.len(), 40, "every one-time prekey handed out");
    assert_eq!(distinct.len(), 40, "none twice");
    assert_eq!(fell_back, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_prekeys_are_announced_and_replenished() {
    let server = TestServer::start(2);
    let bob = server.register("bob").await;
    let alice = server.register("alice").await;
    counts(&bob, upload(&bob, 0..11)).await;
    alice
        .request(prekeys::ClaimPrekeys { user: "bob".into() })
        .await
        .unwrap();
    alice
        .request(prekeys::ClaimPrekeys { user: "bob".into() })
        .await
        .unwrap();
    let notice = tokio::time::timeout(WAIT, bob.next_notice())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        notice,
        Body::KeysLow(prekeys::KeysLow {
            one_time_prekeys: 9,
            key_packages: 0
        })
    );
    let (one_time, _) = counts(&bob, upload(&bob, 100..150)).await;
    assert_eq!(one_time, 59);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_are_rate_limited_per_claimer_and_target() {
    let server = TestServer::start_with(1, |c| {
        c.claim_burst = 3;
        c.claim_refill_per_minute = 6;
    });
    let bob = server.register("bob").await;
    let carol = server.register("carol").await;
    let alice = server.register("alice").await;
    counts(&bob, upload(&bob, 0..20)).await;
    counts(&carol, upload(&carol, 0..20)).await;
    for _ in 0..3 {
        alice
            .request(prekeys::ClaimPrekeys { user: "bob".into() })
            .await
            .unwrap();
    }
    match alice
        .request(prekeys::ClaimPrekeys { user: "bob".into() })
        .await
        .unwrap_err()
    {
        ClientError::Server {
            code,
            retry_after_ms,
            message,
        } => {
            assert_eq!(code, ErrorCode::RateLimited);
            assert!(
                retry_after_ms > 0 && retry_after_ms <= 10_000,
                "{retry_after_ms}"
            );
            assert!(message.contains("retry"), "{message}");
        }
        other => panic!("unexpected {other:?}"),
    }
    alice
        .request(prekeys::ClaimPrekeys {
            user: "carol".into(),
        })
        .await
        .expect("another target has its own budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_packages_are_single_use_under_64_concurrent_claims_except_last_resort() {
    let server = TestServer::start(2);
    let bob = server.register("bob").await;
    let packages: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 64])).collect();
    let last = Bytes::from_static(b"last-resort-key-package");
    assert_eq!(
        counts(
            &bob,
            mls::UploadKeyPackages {
                key_packages: packages,
                last_resort: Some(last.clone())
            }
        )
        .await
        .1,
        40
    );
    let claimers = register_many(&server, "k", 64).await;
    let mut tasks = Vec::new();
    for claimer in &claimers {
        let claimer = claimer.clone();
        tasks.push(tokio::spawn(async move {
            claimer
                .request(mls::ClaimKeyPackages {
                    users: vec!["bob".into()],
                })
                .await
                .unwrap()
        }));
    }
    let mut single = BTreeSet::new();
    let mut last_resort = 0;
    for task in tasks {
        let entries = task.await.unwrap().entries;
        assert_eq!(entries.len(), 1);
        if entries[0].last_resort {
            assert_eq!(entries[0].key_package, last);
            last_resort += 1;
        } else {
            assert!(
                single.insert(entries[0].key_package.clone()),
                "handed out twice"
            );
        }
    }
    assert_eq!((single.len(), last_resort), (40, 24));
}

async fn group_of(server: &TestServer, creator: &TestClient, members: &[&str]) -> u64 {
    let _ = server;
    creator
        .create_conversation(ConversationKind::Group, members)
        .await
        .unwrap()
        .id
}

fn commit(
    conversation_id: u64,
    epoch: u64,
    tag: &str,
    added: &[&str],
    welcome: bool,
) -> mls::Commit {
    mls::Commit {
        conversation_id,
        epoch,
        commit: Bytes::from(format!("commit-{tag}")),
        welcome: welcome.then(|| Bytes::from(format!("welcome-{tag}"))),
        group_info: Bytes::from(format!("group-info-{tag}")),
        added: added.iter().map(|s| (*s).to_owned()).collect(),
        removed: vec![],
        staged: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_commit_per_epoch_and_welcome_after_commit() {
    let server = TestServer::start(2);
    let alice = Arc::new(server.register("alice").await);
    let bob = Arc::new(server.register("bob").await);
    let carol = server.register("carol").await;
    let dave = server.register("dave").await;
    let group = group_of(&server, &alice, &["bob"]).await;
    // Both may add members (only administrators may, issue 10).
    alice.set_admin(group, "bob", true).await.unwrap();

    let (a, b) = (alice.clone(), bob.clone());
    let race_a =
        tokio::spawn(async move { a.request(commit(group, 0, "alice", &["carol"], true)).await });
    let race_b =
        tokio::spawn(async move { b.request(commit(group, 0, "bob", &["dave"], true)).await });
    let results = [race_a.await.unwrap(), race_b.await.unwrap()];
    let accepted: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
    assert_eq!(accepted.len(), 1, "{results:?}");
    let Ok(mls::CommitAccepted { epoch, seq, .. }) = accepted[0] else {
        panic!("{results:?}")
    };
    assert_eq!(*epoch, 1);
    let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
    let ClientError::Conflict(conflict) = loser else {
        panic!("{loser:?}")
    };
    assert_eq!(
        (conflict.error.code, conflict.current_epoch),
        (ErrorCode::StaleEpoch, 1)
    );

    let winner_added = if results[0].is_ok() { &carol } else { &dave };
    let tag = if results[0].is_ok() { "alice" } else { "bob" };
    // The added member joins from the Commit's Welcome, sequenced right
    // after the Commit; it is not sent the Commit itself (RFC 9420 §12.4.3).
    let welcome = winner_added.expect_message().await;
    assert_eq!(
        (welcome.seq, welcome.flags & flags::MLS_WELCOME),
        (*seq + 1, flags::MLS_WELCOME)
    );
    assert_eq!(&welcome.payload[..], format!("welcome-{tag}").as_bytes());
    let info = winner_added
        .request(mls::GetGroupInfo {
            conversation_id: group,
        })
        .await
        .unwrap();
    assert_eq!(
        (info.epoch, &info.group_info[..]),
        (1, format!("group-info-{tag}").as_bytes())
    );
    // A stale or future epoch is refused with the current one.
    let err = alice
        .request(commit(group, 5, "late", &[], false))
        .await
        .unwrap_err();
    let ClientError::Conflict(c) = err else {
        panic!("{err:?}")
    };
    assert_eq!(c.current_epoch, 1);
    let next = bob
        .request(commit(group, 1, "next", &[], false))
        .await
        .unwrap();
    assert_eq!(next.epoch, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linked_device_joins_then_stale_device_sets_are_refused() {
    let server = TestServer::start(2);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;
    let to = |devices: &[(&str, u32)]| messaging::SendToDevices {
        conversation_id: conv,
        client_message_id: rand::random::<u64>() | 1,
        expires_in_secs: 0,
        flags: flags::CLIENT_OLM,
        device_payloads: devices
            .iter()
            .map(|(u, d)| DevicePayload {
                user: (*u).into(),
                device: *d,
                payload: Bytes::from(format!("for {u}/{d}")),
            })
            .collect(),
    };
    alice.request(to(&[("bob", 1)])).await.unwrap();
    assert_eq!(&bob.expect_message().await.payload[..], b"for bob/1");

    // A second device for bob, approved by bob's first device.
    let laptop_state = tempfile::tempdir().unwrap();
    let options = server.options(laptop_state.path());
    let linking = tokio::spawn(async move { Client::link(options, "bob", "laptop").await });
    let Body::LinkPrompt(devices::LinkPrompt {
        link_id,
        device_name,
        ..
    }) = tokio::time::timeout(WAIT, bob.next_notice())
        .await
        .unwrap()
        .unwrap()
    else {
        panic!("no link request")
    };
    assert_eq!(device_name, "laptop");
    bob.approve_link(link_id, true).await.unwrap();
    let laptop = linking.await.unwrap().unwrap();
    assert_eq!(laptop.device(), 2);
    let changed = tokio::time::timeout(WAIT, alice.next_notice())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        changed,
        Body::DeviceListChanged(devices::DeviceListChanged {
            user: "bob".into(),
            devices: vec![1, 2]
        })
    );

    // The old device set is refused with the current one; the retry works.
    let err = alice.request(to(&[("bob", 1)])).await.unwrap_err();
    let ClientError::Conflict(c) = err else {
        panic!("{err:?}")
    };
    assert_eq!(c.error.code, ErrorCode::StaleDevices);
    assert_eq!(
        c.devices,
        vec![("bob".to_owned(), 1), ("bob".to_owned(), 2)]
    );
    let seq = alice
        .request(to(&[("bob", 1), ("bob", 2)]))
        .await
        .unwrap()
        .seq;
    let on_phone = bob.expect_message().await;
    assert_eq!(
        (on_phone.seq, &on_phone.payload[..]),
        (seq, &b"for bob/1"[..])
    );
    let on_laptop = tokio::time::timeout(WAIT, async {
        loop {
            let m = laptop.next_message().await.unwrap();
            if m.seq == seq {
                return m;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        &on_laptop.payload[..],
        b"for bob/2",
        "each device sees only its own ciphertext"
    );
    let page = laptop.history(conv, seq, 1).await.unwrap();
    assert_eq!(&page.messages[0].payload[..], b"for bob/2");

    // Revoking the laptop closes it, and the device set shrinks again.
    let list = laptop
        .request(devices::ListDevices { user: "bob".into() })
        .await
        .unwrap();
    assert_eq!(
        list.devices.iter().map(|d| d.device).collect::<Vec<_>>(),
        vec![1, 2]
    );
    bob.request(devices::RevokeDevice { device: 2 })
        .await
        .unwrap();
    let err = alice
        .request(to(&[("bob", 1), ("bob", 2)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::StaleDevices));
    let again = Client::connect(server.options(laptop_state.path())).await;
    assert!(
        matches!(
            again,
            Err(ClientError::Server {
                code: ErrorCode::AuthFailed,
                ..
            })
        ),
        "revoked device cannot authenticate"
    );
    let _ = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_link_is_refused() {
    let server = TestServer::start(1);
    let bob = server.register("bob").await;
    let state = tempfile::tempdir().unwrap();
    let options = server.options(state.path());
    let linking = tokio::spawn(async move { Client::link(options, "bob", "intruder").await });
    let Body::LinkPrompt(devices::LinkPrompt { link_id, .. }) =
        tokio::time::timeout(WAIT, bob.next_notice())
            .await
            .unwrap()
            .unwrap()
    else {
        panic!()
    };
    // Another account cannot approve bob's link: to it, no such link exists.
    let mallory = server.register("mallory").await;
    let refused = mallory.approve_link(link_id, true).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::NotFound), "{refused}");
    bob.approve_link(link_id, false).await.unwrap();
    let refused = linking.await.unwrap();
    assert!(
        matches!(
            refused,
            Err(ClientError::Server {
                code: ErrorCode::AuthFailed,
                ..
            })
        ),
        "{:?}",
        refused.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_approved_after_the_first_connection_gave_up_still_completes() {
    // The new device's first connection is told LinkPending at its 1 s
    // authentication deadline; the SDK reconnects and asks again until the
    // approval (given here after that deadline) is collected.
    let server = TestServer::start_with(2, |c| c.auth_timeout_secs = 1);
    let bob = server.register("bob").await;
    let laptop_state = tempfile::tempdir().unwrap();
    let options = server.options(laptop_state.path());
    let linking = tokio::spawn(async move { Client::link(options, "bob", "laptop").await });
    let Body::LinkPrompt(devices::LinkPrompt { link_id, .. }) =
        tokio::time::timeout(WAIT, bob.next_notice())
            .await
            .unwrap()
            .unwrap()
    else {
        panic!("no link request")
    };
    // Wait until the SDK has reconnected to ask again (its first connection
    // was told LinkPending at the deadline), so the approval below reaches
    // a record, not a waiting connection.
    let stats = server.handle().stats.clone();
    let before = stats.connections_accepted.load(Ordering::Relaxed);
    tokio::time::timeout(WAIT, async {
        while stats.connections_accepted.load(Ordering::Relaxed) == before {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the SDK asks again on a new connection");
    assert!(!linking.is_finished(), "the SDK keeps asking");
    bob.approve_link(link_id, true).await.unwrap();
    let laptop = tokio::time::timeout(WAIT, linking)
        .await
        .expect("linked after the approval")
        .unwrap()
        .unwrap();
    assert_eq!(laptop.device(), 2);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), bob.next_notice())
            .await
            .map_or(true, |notice| !matches!(notice, Some(Body::LinkPrompt(_)))),
        "asking again does not prompt the account again"
    );
}
