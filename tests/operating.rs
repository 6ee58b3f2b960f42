//! What operators scrape and probe (issue 13): the admin HTTP port of a
//! real server (`admin_addr` on 127.0.0.1:0) serves Prometheus metrics that
//! move with traffic, `/healthz`, and `/readyz`, which turns 503 with a
//! one-line reason while the store fails and 200 again once it answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::net::SocketAddr;
use std::sync::Arc;

use common::admin::{get, sample};
use common::TestServer;
use tern_client::ClientError;
use tern_proto::ConversationKind;
use tern_store::faulty::{FaultyStore, Op};
use tern_store::memory::MemStore;
use tern_store::BackendErrorKind;

fn server_with_admin(store: Arc<FaultyStore<MemStore>>) -> (TestServer, SocketAddr) {
    let server = TestServer::start_on_store_with(2, store, |c| {
        c.admin_addr = Some("127.0.0.1:0".parse().unwrap());
    });
    let admin = server.handle().admin_addr.expect("admin port bound");
    (server, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_a_one_to_one_exchange() {
    let store = Arc::new(FaultyStore::new(MemStore::new()));
    let (server, admin) = server_with_admin(store);
    let (status, before) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&before, "tern_messages_stored_total"), 0.0);

    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    alice.send(conv.id, &b"one"[..]).await.unwrap();
    assert_eq!(bob.expect_message().await.seq, 1);
    bob.send(conv.id, &b"two"[..]).await.unwrap();
    assert_eq!(alice.expect_message().await.seq, 2);
    let Err(ClientError::Server { code, .. }) = alice.send(conv.id + 1000, &b"x"[..]).await else {
        panic!("a send to a conversation that does not exist is refused");
    };
    // A typing signal: a datagram in, a datagram out.
    alice.typing(conv.id, true).await.unwrap();
    loop {
        let notice = tokio::time::timeout(common::WAIT, bob.next_notice())
            .await
            .expect("a typing push arrives in time")
            .expect("client open");
        if tern_client::typing::typing_change(&notice).is_some() {
            break;
        }
    }

    let (status, m) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&m, "tern_messages_stored_total"), 2.0);
    assert!(sample(&m, "tern_deliveries_total") >= 2.0, "{m}");
    assert!(sample(&m, "tern_connections_accepted_total") >= 2.0);
    assert!(sample(&m, "tern_connections_open") >= 2.0);
    assert!(sample(&m, "tern_handshakes_authenticated_total") >= 2.0);
    assert_eq!(sample(&m, "tern_frames_received_total{body=\"Send\"}"), 3.0);
    assert!(sample(&m, "tern_frames_sent_total{body=\"Deliver\"}") >= 2.0);
    let code = code.variant_name().expect("a known code");
    let errors = format!("tern_errors_total{{code=\"{code}\"}}");
    assert_eq!(sample(&m, &errors), 1.0, "{m}");
    assert!(sample(&m, "tern_frames_sent_total{body=\"Error\"}") >= 1.0);
    assert_eq!(sample(&m, "tern_fanout_recipients_count"), 2.0, "{m}");
    assert_eq!(
        sample(&m, "tern_frames_received_total{body=\"Typing\"}"),
        1.0
    );
    assert!(sample(&m, "tern_datagrams_sent_total") >= 1.0);
    assert!(sample(&m, "tern_store_persist_seconds_count") >= 2.0);
    assert!(sample(&m, "tern_store_append_seconds_count") >= 2.0);
    assert_eq!(sample(&m, "tern_owner_queue_depth{shard=\"0\"}"), 0.0);
    assert_eq!(sample(&m, "tern_connections_closed_slow_total"), 0.0);
    assert!(
        m.contains("# TYPE tern_store_persist_seconds histogram"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_follow_the_store() {
    let store = Arc::new(FaultyStore::new(MemStore::new()));
    let (_server, admin) = server_with_admin(store.clone());
    assert_eq!(get(admin, "/healthz").await, (200, "ok\n".to_owned()));
    assert_eq!(get(admin, "/readyz").await, (200, "ready\n".to_owned()));

    store.inject(Op::Devices, BackendErrorKind::Unavailable);
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: store: "), "{body}");
    assert_eq!(body.lines().count(), 1, "{body}");
    // The process is still up: liveness does not depend on the store.
    assert_eq!(get(admin, "/healthz").await.0, 200);
    assert_eq!(get(admin, "/readyz").await.0, 200);
    assert_eq!(get(admin, "/nope").await.0, 404);
}

#[test]
fn a_taken_admin_port_fails_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = common::test_config(data.path(), 1);
    config.admin_addr = Some(addr);
    let Err(err) = tern_server::start(config) else {
        panic!("a server whose admin port is taken must not start");
    };
    let message = err.to_string();
    assert!(message.contains(&format!("admin_addr {addr}")), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis_with_the_redis_presence_backend() {
    let mut redis = redis_server::RedisServer::start();
    let url = redis.url();
    let store = Arc::new(FaultyStore::new(MemStore::new()));
    let server = TestServer::start_on_store_with(1, store, |c| {
        c.admin_addr = Some("127.0.0.1:0".parse().unwrap());
        c.presence_backend = tern_server::presence::PresenceBackend::Redis;
        c.redis_url = url;
    });
    let admin = server.handle().admin_addr.expect("admin port bound");
    // The probe's client connects in the background: wait for it, with a
    // deadline (ready is the expected state; only its timing is unknown).
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while get(admin, "/readyz").await.0 != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never ready with Redis up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    redis.kill();
    let (status, body) = get(admin, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("not ready: redis: "), "{body}");
    assert_eq!(get(admin, "/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachment_counters_move_with_an_upload_and_a_download() {
    let store = Arc::new(FaultyStore::new(MemStore::new()));
    let (server, admin) = server_with_admin(store);
    let (alice, _state) = server.register_secure("alice").await;
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("photo.bin");
    std::fs::write(&path, vec![7u8; 100_000]).unwrap();
    let prepared = alice.prepare_attachment(&path).unwrap();
    alice
        .upload_attachment(&prepared, &mut |_, _| {})
        .await
        .unwrap();
    let connection = alice
        .transport()
        .blob_connection(common::WAIT)
        .await
        .unwrap();
    let length = prepared.ciphertext_len;
    let mut got = 0u64;
    tern_client::attachment::transfer::download(
        &connection,
        &prepared.pointer.blob_id,
        0,
        length,
        &mut |bytes| {
            got += bytes.len() as u64;
            Ok(())
        },
    )
    .await
    .unwrap();
    assert_eq!(got, length);

    let (_, m) = get(admin, "/metrics").await;
    assert_eq!(sample(&m, "tern_blobs_uploaded_total"), 1.0, "{m}");
    assert_eq!(sample(&m, "tern_blob_bytes_received_total"), length as f64);
    assert_eq!(sample(&m, "tern_blobs_downloaded_total"), 1.0);
    assert_eq!(sample(&m, "tern_blob_bytes_sent_total"), length as f64);
    assert_eq!(sample(&m, "tern_blobs_swept_total"), 0.0);
}
