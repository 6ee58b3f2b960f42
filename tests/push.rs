//! Push notifications (issue 11, docs/PROTOCOL.md §4.13) against a real
//! server and a real HTTP receiver started here (a std `TcpListener` on
//! port 0 answering scripted status codes): an offline device gets one
//! wake-up at once and one coalesced wake-up for the messages after it,
//! whose bodies hold a conversation id and a count and nothing of the
//! message (the bytes are scanned for the ciphertext and the sender); an
//! online device gets none; an endpoint answering 410 is removed; a 500 is
//! retried; a call signal is pushed at once with `Urgency: high`; an https
//! endpoint is woken over TLS checked against `push.ca_file` (a receiver
//! with a certificate the server does not trust gets nothing).
//!
//! Waits are on events (the receiver's channel, the server's counters)
//! with a deadline, never on a sleep that hopes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pushes::{next_push, read_request, receiver, Pushed};
use common::{TestClient, TestServer, WAIT};
use tern_client::push::PushError;
use tern_proto::body::messaging::DevicePayload;
use tern_proto::body::push::PushEndpoint;
use tern_proto::ConversationKind;
use tern_server::push::PushStats;
use tern_store::memory::MemStore;
use tern_store::{AccountStore, Store};

/// An https receiver on 127.0.0.1:0 answering 201, with a fresh
/// self-signed certificate for `localhost`; returns the endpoint URL, the
/// certificate (PEM) and the requests.
fn tls_receiver() -> (String, String, Receiver<Pushed>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem = certified.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("https://localhost:{port}/wake/bob-phone");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let _ = stream.set_read_timeout(Some(WAIT));
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let Some(pushed) = read_request(&mut tls) else {
                continue;
            };
            let answer = "HTTP/1.1 201 Created\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            let _ = tls.write_all(answer.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
            if tx.send(pushed).is_err() {
                return;
            }
        }
    });
    (url, pem, rx)
}

/// A server on a memory store (so the test can read endpoints), with http
/// endpoints on loopback allowed and quick retries.
fn server(coalesce_ms: u64) -> (TestServer, Arc<MemStore>) {
    server_with(|c| c.push.coalesce_ms = coalesce_ms)
}

/// [`server`] with more of the configuration set by `adjust`.
fn server_with(adjust: impl FnOnce(&mut tern_server::ServerConfig)) -> (TestServer, Arc<MemStore>) {
    let store = Arc::new(MemStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let server = TestServer::start_on_store_with(2, dyn_store, |c| {
        c.push.allow_http_loopback = true;
        c.push.retry_initial_ms = 20;
        c.push.retry_max_ms = 100;
        adjust(c);
    });
    (server, store)
}

/// Waits until `user` has no connection left on the server.
async fn until_offline(server: &TestServer, user: &str) {
    let deadline = Instant::now() + WAIT;
    while !server.handle().shards_of(user).is_empty() {
        assert!(Instant::now() < deadline, "{user} still connected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until a push counter reaches `at_least`.
async fn until_counted(
    server: &TestServer,
    counter: impl Fn(&PushStats) -> &AtomicU64,
    at_least: u64,
) {
    let deadline = Instant::now() + WAIT;
    loop {
        let stats = server.handle().push_stats().expect("a pusher");
        if PushStats::get(counter(stats)) >= at_least {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the counter stayed below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Alice and bob in an accepted direct conversation; bob's phone registered
/// at `url` and then offline.
async fn offline_bob(server: &TestServer, url: &str) -> (TestClient, TestClient, u64) {
    let alice = server.register("alice").await;
    let mut bob = server.register("bob").await;
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;
    bob.accept_request(conv).await.unwrap();
    bob.register_push(PushEndpoint::WebPush { url: url.into() })
        .await
        .unwrap();
    bob.go_offline().await;
    until_offline(server, "bob").await;
    (alice, bob, conv)
}

const MARKER: &[u8] = b"ciphertext-marker-7f3a9c";

fn assert_content_free(p: &Pushed, conv: u64) {
    for needle in [MARKER, b"alice", b"bob-secret"] {
        assert!(
            !p.body.windows(needle.len()).any(|w| w == needle),
            "the push body leaks {:?}: {:?}",
            String::from_utf8_lossy(needle),
            String::from_utf8_lossy(&p.body)
        );
    }
    let json = p.json();
    let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(keys, vec!["conversation_id", "count"], "{json}");
    assert_eq!(json["conversation_id"], conv);
    assert!(
        p.request_line.starts_with("POST /wake/bob-phone "),
        "{}",
        p.request_line
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_offline_device_gets_coalesced_content_free_wake_ups() {
    let (url, rx) = receiver(&[]);
    let (server, store) = server(3000);
    let (alice, _bob, conv) = offline_bob(&server, &url).await;
    assert!(store.push_endpoint("bob", 1).await.unwrap().is_some());

    alice.send(conv, Bytes::from_static(MARKER)).await.unwrap();
    let first = next_push(&rx);
    assert_content_free(&first, conv);
    assert_eq!(first.json()["count"], 1, "the first goes at once");
    assert_eq!(first.header("urgency"), Some("normal"));
    assert_eq!(first.header("ttl"), Some("86400"));
    // Three more within the 3-s window that push opened: one wake-up for
    // them when it ends, and none after (the counts account for all four).
    for _ in 0..3 {
        alice.send(conv, Bytes::from_static(MARKER)).await.unwrap();
    }
    let merged = next_push(&rx);
    assert_content_free(&merged, conv);
    assert_eq!(merged.json()["count"], 3, "one wake-up for the rest");
    until_counted(&server, |s| &s.sent, 2).await;
    let stats = server.handle().push_stats().unwrap();
    assert_eq!(PushStats::get(&stats.sent), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_online_device_is_not_woken() {
    let (url, rx) = receiver(&[]);
    let (server, _store) = server(100);
    let alice = server.register("alice").await;
    let mut bob = server.register("bob").await;
    let online = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;
    bob.accept_request(online).await.unwrap();
    bob.register_push(PushEndpoint::WebPush { url: url.clone() })
        .await
        .unwrap();
    alice
        .send(online, Bytes::from_static(MARKER))
        .await
        .unwrap();
    assert_eq!(&bob.expect_message().await.payload[..], MARKER);

    // The sentinel: the first wake-up the receiver ever sees is for a
    // message sent after bob left, in another conversation.
    bob.go_offline().await;
    until_offline(&server, "bob").await;
    let carol = server.register("carol").await;
    let later = carol
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;
    carol.send(later, Bytes::from_static(MARKER)).await.unwrap();
    let first = next_push(&rx);
    assert_eq!(first.json()["conversation_id"], later, "woken while online");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gone_endpoint_is_removed_after_its_first_push() {
    let (url, rx) = receiver(&[410]);
    let (server, store) = server(100);
    let (alice, _bob, conv) = offline_bob(&server, &url).await;
    alice.send(conv, Bytes::from_static(MARKER)).await.unwrap();
    next_push(&rx);
    until_counted(&server, |s| &s.gone, 1).await;
    assert_eq!(store.push_endpoint("bob", 1).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_push_is_retried() {
    let (url, rx) = receiver(&[500]);
    let (server, _store) = server(100);
    let (alice, _bob, conv) = offline_bob(&server, &url).await;
    alice.send(conv, Bytes::from_static(MARKER)).await.unwrap();
    let failed = next_push(&rx);
    let retried = next_push(&rx);
    assert_eq!(failed.body, retried.body);
    assert_content_free(&retried, conv);
    until_counted(&server, |s| &s.sent, 1).await;
    let stats = server.handle().push_stats().unwrap();
    assert_eq!(PushStats::get(&stats.failures), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_is_pushed_as_urgent() {
    let (url, rx) = receiver(&[]);
    let (server, _store) = server(60_000);
    let (alice, _bob, conv) = offline_bob(&server, &url).await;
    // A message first opens bob's 60-s window: the call must not wait for it.
    alice.send(conv, Bytes::from_static(MARKER)).await.unwrap();
    assert_eq!(next_push(&rx).header("urgency"), Some("normal"));
    let offer = DevicePayload {
        user: "bob".into(),
        device: 1,
        payload: Bytes::from_static(MARKER),
    };
    alice.call_signal(conv, vec![offer]).await.unwrap();
    let call = next_push(&rx);
    assert_eq!(call.header("urgency"), Some("high"));
    assert_eq!(call.header("ttl"), Some("60"));
    assert_content_free(&call, conv);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_endpoints_are_refused() {
    let (server, store) = server(100);
    let bob = server.register("bob").await;
    for url in [
        "http://example.org/x",
        "ftp://h/",
        "https://",
        "https://u@h/",
        "https://169.254.169.254/latest/meta-data",
        "https://10.0.0.5:8443/admin",
    ] {
        let refused = bob
            .register_push(PushEndpoint::WebPush { url: url.into() })
            .await;
        assert!(
            matches!(refused, Err(PushError::Invalid(_))),
            "{url}: {refused:?}"
        );
    }
    let gateway = bob
        .register_push(PushEndpoint::Gateway { token: "t".into() })
        .await;
    assert!(
        matches!(gateway, Err(PushError::NotConfigured(_))),
        "{gateway:?}"
    );
    assert_eq!(store.push_endpoint("bob", 1).await.unwrap(), None);
    bob.register_push(PushEndpoint::WebPush {
        url: "https://push.example.org/w".into(),
    })
    .await
    .unwrap();
    assert!(store.push_endpoint("bob", 1).await.unwrap().is_some());
    bob.unregister_push().await.unwrap();
    assert_eq!(store.push_endpoint("bob", 1).await.unwrap(), None);
}

/// A gateway token: the wake-up goes to the server's gateway in Sygnal's
/// shape, naming the token and a count, nothing of the message; a 404 from
/// the gateway (the server's URL, not the device's) removes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_token_is_woken_through_the_gateway() {
    let (gateway, rx) = receiver(&[404]);
    let store = Arc::new(MemStore::new());
    let dyn_store: Arc<dyn Store> = store.clone();
    let server = TestServer::start_on_store_with(1, dyn_store, |c| {
        c.push.allow_http_loopback = true;
        c.push.gateway_url = Some(gateway.clone());
        c.push.coalesce_ms = 100;
    });
    let alice = server.register("alice").await;
    let mut bob = server.register("bob").await;
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;
    bob.accept_request(conv).await.unwrap();
    bob.register_push(PushEndpoint::Gateway {
        token: "fcm-tok-123".into(),
    })
    .await
    .unwrap();
    bob.go_offline().await;
    until_offline(&server, "bob").await;

    alice.send(conv, Bytes::from_static(MARKER)).await.unwrap();
    let refused = next_push(&rx);
    assert!(!refused.body.windows(MARKER.len()).any(|w| w == MARKER));
    let n = &refused.json()["notification"];
    assert_eq!(n["devices"][0]["pushkey"], "fcm-tok-123");
    assert_eq!(n["counts"]["unread"], 1);
    assert_eq!(n["conversation_id"], conv);
    assert_eq!(n["prio"], "low");
    until_counted(&server, |s| &s.abandoned, 1).await;
    assert!(store.push_endpoint("bob", 1).await.unwrap().is_some());
}

/// Web Push endpoints are https: the wake-up goes over TLS to a receiver
/// whose certificate the server checks against `push.ca_file`, and is the
/// same content-free body; a receiver whose certificate is not trusted gets
/// nothing (the failure is counted, never sent in clear).
#[tokio::test(flavor = "multi_thread")]
async fn an_https_endpoint_is_woken_over_checked_tls() {
    let (url, pem, rx) = tls_receiver();
    let (_other_url, other_pem, _) = tls_receiver();
    let roots = tempfile::tempdir().unwrap();
    let trusted = roots.path().join("trusted.pem");
    std::fs::write(&trusted, &pem).unwrap();
    let trusting = |ca: &std::path::Path| {
        let ca = ca.to_owned();
        server_with(move |c| {
            c.push.ca_file = ca;
            c.push.retry_attempts = 2;
        })
        .0
    };
    let server = trusting(&trusted);
    let (alice, _bob, conv) = offline_bob(&server, &url).await;
    alice.send(conv, Bytes::from_static(MARKER)).await.unwrap();
    let pushed = next_push(&rx);
    assert_content_free(&pushed, conv);
    assert_eq!(pushed.json()["count"], 1);

    // Another server trusting another certificate: the TLS check fails.
    let untrusted = roots.path().join("other.pem");
    std::fs::write(&untrusted, &other_pem).unwrap();
    let server = trusting(&untrusted);
    let (alice, _bob, conv) = offline_bob(&server, &url).await;
    alice.send(conv, Bytes::from_static(MARKER)).await.unwrap();
    until_counted(&server, |s| &s.failures, 1).await;
    assert!(rx.try_recv().is_err(), "nothing reached the receiver");
}
