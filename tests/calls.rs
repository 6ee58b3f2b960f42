//! Calls (issue 11, docs/PROTOCOL.md §4.10) against a real server: TURN
//! credentials per draft-uberti-behave-turn-rest-00, checked with an HMAC-SHA1
//! computed here independently of the server's (RFC 2104 by hand over SHA-1),
//! and the typed NotConfigured answer of a server without a relay.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use base64::Engine;
use common::TestServer;
use tern_client::calls::TurnError;
use tern_server::realtime::turn::TurnSecret;

const SECRET: &str = "a shared coturn static-auth-secret";

/// HMAC-SHA1 (RFC 2104 §2) built from SHA-1 alone: H(K ^ opad, H(K ^ ipad, text)).
fn hmac_sha1(key: &[u8], text: &[u8]) -> Vec<u8> {
    use ring::digest::{digest, SHA1_FOR_LEGACY_USE_ONLY as SHA1};
    const BLOCK: usize = 64;
    let mut k = if key.len() > BLOCK {
        digest(&SHA1, key).as_ref().to_vec()
    } else {
        key.to_vec()
    };
    k.resize(BLOCK, 0);
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = digest(&SHA1, &[pad(0x36), text.to_vec()].concat());
    digest(&SHA1, &[pad(0x5c), inner.as_ref().to_vec()].concat())
        .as_ref()
        .to_vec()
}

#[test]
fn the_independent_hmac_matches_rfc_2202() {
    // RFC 2202 §3, test cases 2 and 6 (a key longer than the block).
    assert_eq!(
        hex::encode(hmac_sha1(b"Jefe", b"what do ya want for nothing?")),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    assert_eq!(
        hex::encode(hmac_sha1(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "aa4ae5e15272d00e95705637ce8a3b55ed402112"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn turn_credentials_verify_with_the_shared_secret() {
    let urls = vec![
        "turn:turn.example.org:3478?transport=udp".to_owned(),
        "turns:turn.example.org:5349?transport=tcp".to_owned(),
    ];
    let server = TestServer::start_with(2, |c| {
        c.turn_urls = urls.clone();
        c.turn_secret = Some(TurnSecret(SECRET.into()));
        c.turn_ttl_secs = 600;
    });
    let alice = server.register("alice").await;
    let before = unix_now();
    let made = alice.turn_credentials().await.unwrap();
    let after = unix_now();
    assert_eq!(made.urls, urls);
    assert_eq!(made.ttl_secs, 600);
    let (expiry, user) = made.username.split_once(':').expect("expiry:user");
    assert_eq!(user, "alice");
    let expiry: u64 = expiry.parse().expect("unix seconds");
    assert!((before + 600..=after + 600).contains(&expiry), "{expiry}");
    let password = base64::engine::general_purpose::STANDARD
        .decode(&made.password)
        .expect("base64");
    assert_eq!(
        password,
        hmac_sha1(SECRET.as_bytes(), made.username.as_bytes())
    );
    // Another user's credentials name that user and differ.
    let bob = server.register("bob").await;
    let theirs = bob.turn_credentials().await.unwrap();
    assert!(theirs.username.ends_with(":bob"));
    assert_ne!(theirs.password, made.password);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_relay_the_answer_is_not_configured() {
    let server = TestServer::start(1);
    let alice = server.register("alice").await;
    match alice.turn_credentials().await {
        Err(TurnError::NotConfigured(message)) => assert!(message.contains("turn_secret")),
        other => panic!("expected NotConfigured, got {other:?}"),
    }
    // A refusal, not a close: the same connection asks again.
    assert!(matches!(
        alice.turn_credentials().await,
        Err(TurnError::NotConfigured(_))
    ));
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
