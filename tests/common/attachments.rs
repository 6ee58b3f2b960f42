//! Attachment test helpers shared by `tests/attachments.rs` (filesystem
//! blob store) and `tests/attachments_s3.rs` (S3 blob store): two users in
//! a group, files with a plaintext marker, the pointer a device receives.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};
use tempfile::TempDir;
use tern_client::attachment::{transfer, AttachmentPointer};
use tern_client::content::Content;
use tern_client::secure::{SecureClient, SecureEvent};
use tern_proto::blob_stream::{BlobRequest, Op, Response, State, Status, RESPONSE_FIXED_LEN};

use crate::common::{TestServer, WAIT};
use tern_server::{Clock, ServerConfig};

/// Plaintext every test file carries every 64 KiB.
pub const MARKER: &[u8] = b"ATTACHMENT-PLAINTEXT-MARKER-5e21";

pub struct Device {
    pub client: SecureClient,
    _state: TempDir,
}

pub async fn register(server: &TestServer, user: &str) -> Device {
    let (client, state) = server.register_secure(user).await;
    Device {
        client,
        _state: state,
    }
}

/// A file of `len` bytes: the marker every 64 KiB, pseudo-random bytes between.
pub fn write_file(dir: &Path, name: &str, len: usize) -> PathBuf {
    let mut bytes = Vec::with_capacity(len);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while bytes.len() < len {
        if bytes.len() % (64 * 1024) == 0 {
            bytes.extend_from_slice(MARKER);
        } else {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
    }
    bytes.truncate(len);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    path
}

pub fn sha256(path: &Path) -> [u8; 32] {
    Sha256::digest(std::fs::read(path).unwrap()).into()
}

/// The next attachment pointer `device` receives.
pub async fn next_pointer(device: &Device) -> AttachmentPointer {
    loop {
        let event = tokio::time::timeout(WAIT, device.client.next_event())
            .await
            .expect("an event in time")
            .expect("the client runs");
        if let SecureEvent::Message(m) = event {
            match m.content {
                Content::Attachment(pointer) => return *pointer,
                other => panic!("expected an attachment, got {other:?}"),
            }
        }
    }
}

pub async fn pair(server: &TestServer) -> (Device, Device, u64) {
    let alice = register(server, "alice").await;
    let bob = register(server, "bob").await;
    let group = alice.client.create_group(&["bob"]).await.unwrap();
    (alice, bob, group)
}

/// `alice` sends a file of `len` bytes (with progress) to `bob` in `group`;
/// `bob` downloads it byte-identical (by hash). Returns the blob id.
pub async fn send_and_fetch(
    alice: &Device,
    bob: &Device,
    group: u64,
    len: usize,
    dir: &Path,
) -> [u8; 16] {
    let path = write_file(dir, "holiday.mp4", len);
    let mut last = (0, 0);
    let sent = alice
        .client
        .send_attachment(group, &path, &mut |done, total| last = (done, total))
        .await
        .unwrap();
    assert_eq!(last.0, last.1, "progress reached the end");
    assert_eq!(sent.pointer.size, len as u64);
    assert_eq!(sent.pointer.content_type, "video/mp4");
    assert_eq!(sent.upload.interrupted, 0);
    assert_eq!(sent.upload.last.resumed_from, 0);

    let pointer = next_pointer(bob).await;
    assert_eq!(pointer, sent.pointer);
    assert_eq!(pointer.file_name, "holiday.mp4");
    let out = dir.join("received.mp4");
    let size = bob
        .client
        .download_attachment(&pointer, &out)
        .await
        .unwrap();
    assert_eq!(size, len as u64);
    assert_eq!(sha256(&out), sha256(&path), "byte-identical");
    pointer.blob_id
}

/// `alice` uploads a file of `len` bytes whose connection is closed at
/// ~40%; the upload resumes from what the server holds without re-sending
/// it, and `bob` downloads the file byte-identical. Returns the blob id.
pub async fn cut_and_resume(
    alice: &Device,
    bob: &Device,
    group: u64,
    len: usize,
    dir: &Path,
) -> [u8; 16] {
    let path = write_file(dir, "big.bin", len);
    let prepared = alice.client.prepare_attachment(&path).unwrap();
    let total = prepared.ciphertext_len;
    let connection = alice
        .client
        .transport()
        .blob_connection(WAIT)
        .await
        .unwrap();
    let killed = AtomicBool::new(false);
    let mut progress = |done: u64, total: u64| {
        if done * 10 >= total * 4 && !killed.swap(true, Ordering::SeqCst) {
            connection.close(0u32.into(), b"test: connection lost at 40%");
        }
    };
    let report = alice
        .client
        .upload_attachment(&prepared, &mut progress)
        .await
        .unwrap();
    assert!(killed.load(Ordering::SeqCst));
    assert!(
        report.interrupted >= 1,
        "the first attempt was cut: {report:?}"
    );
    let last = report.last;
    assert!(last.resumed_from > 0, "resumed, not restarted: {report:?}");
    assert!(
        last.resumed_from < total * 5 / 10,
        "cut near 40%: {report:?}"
    );
    assert_eq!(
        last.sent,
        total - last.resumed_from,
        "only the rest was sent"
    );

    let content = Content::Attachment(Box::new(prepared.pointer.clone()));
    alice.client.send(group, &content).await.unwrap();
    let pointer = next_pointer(bob).await;
    let out = dir.join("out.bin");
    bob.client
        .download_attachment(&pointer, &out)
        .await
        .unwrap();
    assert_eq!(sha256(&out), sha256(&path));
    pointer.blob_id
}

/// An upload whose stream ends short is kept for a resume, then swept once
/// 24 h of server time passed (a manual clock), on a server `adjust`ed.
pub async fn abandoned_upload_is_swept(adjust: impl FnOnce(&mut ServerConfig)) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let clock = Clock::manual(now_ms);
    let server = TestServer::start_with_clock(1, clock.clone(), |c| {
        c.sweep_interval_secs = 1;
        adjust(c);
    });
    let alice = register(&server, "alice").await;
    let connection = alice
        .client
        .transport()
        .blob_connection(WAIT)
        .await
        .unwrap();
    let id = [0x5a; 16];
    let header = BlobRequest {
        op: Op::Upload,
        blob_id: id,
        offset: 0,
        length: 100_000,
    };
    let (mut send, mut recv) = connection.open_bi().await.unwrap();
    send.write_all(&header.encode()).await.unwrap();
    send.write_all(&[7u8; 40_000]).await.unwrap();
    // The stream ends short of the announced length: an abandoned upload.
    send.finish().unwrap();
    let mut answer = [0u8; RESPONSE_FIXED_LEN];
    tokio::time::timeout(WAIT, recv.read_exact(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let (answer, _) = Response::decode_fixed(&answer).unwrap();
    assert_eq!((answer.status, answer.value), (Status::Incomplete, 40_000));
    assert_eq!(
        transfer::status(&connection, &id).await.unwrap(),
        (State::Partial, 40_000),
        "what came is kept for a resume"
    );
    clock.advance(25 * 3600 * 1000);
    let swept = async {
        while transfer::status(&connection, &id).await.unwrap().0 != State::Absent {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(WAIT, swept)
        .await
        .expect("swept after 24 h of server time");
}
