//! Attachment limits and lifecycle (issue 12) against a real server on a
//! manual clock: the per-account storage quota refuses an upload past it
//! with the bytes still free (counting unfinished uploads, never charging
//! a resume twice), complete blobs expire after the message retention and
//! free their quota, and the per-account upload byte rate answers
//! `RateLimited` with `retry_after_ms`, charging neither refused uploads
//! nor bytes that never came.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{TestServer, WAIT};
use tern_client::attachment::{transfer, TransferError};
use tern_proto::blob_stream::{BlobRequest, Op, Response, State, Status, RESPONSE_FIXED_LEN};
use tern_server::Clock;

const DAY_MS: u64 = 24 * 3600 * 1000;

fn manual_clock() -> Clock {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    Clock::manual(now_ms)
}

/// Uploads `sent` bytes of blob `id` announced as `total` from `offset`
/// on a raw blob stream, then reads the server's answer.
async fn upload(
    connection: &quinn::Connection,
    id: [u8; 16],
    offset: u64,
    total: u64,
    sent: usize,
) -> Response {
    let header = BlobRequest {
        op: Op::Upload,
        blob_id: id,
        offset,
        length: total,
    };
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&header.encode()).await.unwrap();
    // A refused upload is stopped by the server: the answer says why.
    let _ = send.write_all(&vec![7u8; sent]).await;
    let _ = send.finish();
    let mut fixed = [0u8; RESPONSE_FIXED_LEN];
    tokio::time::timeout(WAIT, recv.read_exact(&mut fixed))
        .await
        .expect("answered in time")
        .unwrap();
    let (mut response, len) = Response::decode_fixed(&fixed).unwrap();
    let mut message = vec![0u8; len];
    recv.read_exact(&mut message).await.unwrap();
    response.message = String::from_utf8(message).unwrap();
    response
}

fn answer(r: &Response) -> (Status, u64) {
    (r.status, r.value)
}

#[tokio::test]
async fn the_quota_refuses_past_it_and_expired_blobs_free_it() {
    let clock = manual_clock();
    let server = TestServer::start_with_clock(1, clock.clone(), |c| {
        c.max_attachment_bytes = 100_000;
        c.upload_quota_bytes = 150_000;
        c.sweep_interval_secs = 1;
    });
    let alice = server.register("alice").await;
    let connection = alice.blob_connection(WAIT).await.unwrap();
    let (a, b, c) = ([1u8; 16], [2u8; 16], [3u8; 16]);

    let r = upload(&connection, a, 0, 100_000, 100_000).await;
    assert_eq!(answer(&r), (Status::Ok, 100_000), "{}", r.message);
    let r = upload(&connection, b, 0, 60_000, 60_000).await;
    assert_eq!(answer(&r), (Status::QuotaExceeded, 50_000), "{}", r.message);
    assert!(r.message.contains("50000 free"), "{}", r.message);
    assert_eq!(
        transfer::status(&connection, &b).await.unwrap(),
        (State::Absent, 0),
        "nothing of a refused upload is kept"
    );

    // An unfinished upload counts; resuming it is charged only the rest.
    let r = upload(&connection, c, 0, 40_000, 30_000).await;
    assert_eq!(answer(&r), (Status::Incomplete, 30_000), "{}", r.message);
    let r = upload(&connection, b, 0, 30_000, 30_000).await;
    assert_eq!(answer(&r), (Status::QuotaExceeded, 20_000), "{}", r.message);
    let r = upload(&connection, c, 30_000, 40_000, 10_000).await;
    assert_eq!(answer(&r), (Status::Ok, 40_000), "{}", r.message);

    // The SDK's upload surfaces the typed refusal.
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("b.bin");
    std::fs::write(&path, vec![1u8; 60_000]).unwrap();
    let err = transfer::upload(&connection, &b, &path, 60_000, &mut |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::Refused {
                status: Status::QuotaExceeded,
                value: 10_000,
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_retryable());

    // After the message retention (30 days) the blobs are swept.
    clock.advance(31 * DAY_MS);
    let swept = async {
        while transfer::status(&connection, &a).await.unwrap().0 != State::Absent
            || transfer::status(&connection, &c).await.unwrap().0 != State::Absent
        {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, swept)
        .await
        .expect("expired blobs swept");
    let r = upload(&connection, b, 0, 100_000, 100_000).await;
    assert_eq!(
        answer(&r),
        (Status::Ok, 100_000),
        "freed quota: {}",
        r.message
    );
}

#[tokio::test]
async fn the_upload_rate_answers_retry_after_and_charges_only_bytes_that_came() {
    let clock = manual_clock();
    let server = TestServer::start_with_clock(1, clock.clone(), |c| {
        c.max_attachment_bytes = 100_000;
        c.upload_burst_bytes = 100_000;
        c.upload_bytes_per_second = 1000;
    });
    let alice = server.register("alice").await;
    let connection = alice.blob_connection(WAIT).await.unwrap();
    let id = |n: u8| [n; 16];

    let r = upload(&connection, id(1), 0, 100_000, 100_000).await;
    assert_eq!(answer(&r), (Status::Ok, 100_000), "{}", r.message);
    let r = upload(&connection, id(2), 0, 50_000, 50_000).await;
    assert_eq!(
        answer(&r),
        (Status::RateLimited, 50_000),
        "50000 bytes at 1000 a second: {}",
        r.message
    );
    assert!(r.message.contains("retry in 50000 ms"), "{}", r.message);

    // The refusal took nothing: exactly the answered wait is enough.
    clock.advance(50_000);
    let r = upload(&connection, id(2), 0, 50_000, 50_000).await;
    assert_eq!(answer(&r), (Status::Ok, 50_000), "{}", r.message);
    let r = upload(&connection, id(3), 0, 1024, 1024).await;
    assert_eq!(answer(&r), (Status::RateLimited, 1024), "{}", r.message);

    // Bytes announced but never sent are given back.
    clock.advance(100_000);
    let r = upload(&connection, id(4), 0, 100_000, 40_000).await;
    assert_eq!(answer(&r), (Status::Incomplete, 40_000), "{}", r.message);
    let r = upload(&connection, id(5), 0, 60_000, 60_000).await;
    assert_eq!(
        answer(&r),
        (Status::Ok, 60_000),
        "the 60000 unsent came back: {}",
        r.message
    );
    let r = upload(&connection, id(4), 40_000, 100_000, 60_000).await;
    assert_eq!(answer(&r), (Status::RateLimited, 60_000), "{}", r.message);
    let err = TransferError::Refused {
        status: r.status,
        value: r.value,
        message: r.message,
    };
    assert_eq!(
        err.retry_after(),
        Some(std::time::Duration::from_millis(60_000))
    );
}
