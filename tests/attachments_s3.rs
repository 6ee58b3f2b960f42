//! Attachments through the S3 blob backend (issue 12) against a real
//! server configured with `[blob_store] backend = "s3"` and a real
//! S3-compatible server, moto (`scripts/install-moto.sh`; started on a free
//! port by the harness, killed when the test ends): a file round-trips
//! byte-identical between two users, an upload cut at ~40% resumes from
//! what S3 holds, the blobs are in the bucket and the data directory holds
//! none of their bytes; an abandoned upload is swept after 24 h of server
//! time (its multipart upload aborted). Without moto the test prints "skipped" and passes,
//! unless `CI` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/attachments.rs"]
mod helpers;
#[path = "../crates/tern-store/tests/s3_support/moto.rs"]
mod moto;

use common::{assert_server_blind, TestServer};
use helpers::{abandoned_upload_is_swept, cut_and_resume, pair, send_and_fetch, MARKER};
use tern_server::blob_backend::{BlobBackend, BlobStoreConfig};
use tern_store::blob::s3::{S3BlobConfig, S3BlobStore};
use tern_store::blob::{BlobStatus, BlobStore};

/// The server's `[blob_store]` for the backend's settings `s3`.
fn blob_store(s3: &S3BlobConfig) -> BlobStoreConfig {
    BlobStoreConfig {
        backend: BlobBackend::S3,
        s3_endpoint: s3.endpoint.clone(),
        s3_bucket: s3.bucket.clone(),
        s3_region: s3.region.clone(),
        s3_prefix: s3.prefix.clone(),
        s3_credentials: s3.credentials.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_round_trip_and_resume_through_s3() {
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    let s3 = moto.bucket("tern-attachments");
    let blob_store = blob_store(&s3);
    let mut server = TestServer::start_with(2, |c| c.blob_store = blob_store);
    let (alice, bob, group) = pair(&server).await;
    let files = tempfile::tempdir().unwrap();
    // Past one 5 MiB part, so both go through S3 multipart uploads.
    let whole = 7 * 1024 * 1024 + 12_345;
    let sent = send_and_fetch(&alice, &bob, group, whole, files.path()).await;
    let resumed = cut_and_resume(&alice, &bob, group, 12 * 1024 * 1024, files.path()).await;

    let control = b"UNENCRYPTED-CONTROL-MARKER-5b3e";
    alice
        .client
        .transport()
        .send(group, &control[..])
        .await
        .unwrap();
    server.stop().await;

    // The blobs are in the bucket...
    let bucket = tokio::task::spawn_blocking(move || S3BlobStore::open(&s3))
        .await
        .unwrap()
        .expect("the bucket opens");
    let held = tokio::task::spawn_blocking(move || {
        let sent = bucket.status("carol", &sent).unwrap();
        let resumed = bucket.status("carol", &resumed).unwrap();
        (sent, resumed, bucket.usage("alice").unwrap())
    })
    .await
    .unwrap();
    let (BlobStatus::Complete(a), BlobStatus::Complete(b)) = (held.0, held.1) else {
        panic!("both blobs complete in S3: {held:?}");
    };
    assert!(a > whole as u64, "ciphertext is longer than the file");
    assert_eq!(held.2, a + b, "alice's usage is her two blobs, in S3");
    // ...and the data directory holds none of their bytes, nor plaintext.
    assert!(
        !server.data_dir().join("blobs").exists(),
        "no blob directory with the S3 backend"
    );
    let marker = String::from_utf8(MARKER.to_vec()).unwrap();
    assert_server_blind(server.data_dir(), control, &[marker]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_in_s3_is_swept() {
    let Some(moto) = moto::Moto::start() else {
        return;
    };
    let s3 = moto.bucket("tern-abandoned");
    let config = blob_store(&s3);
    abandoned_upload_is_swept(|c| c.blob_store = config).await;
}
