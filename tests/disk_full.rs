//! A full disk under a real `tern serve` process (issue #9, "recovery after
//! disk errors"): the server must not go on refusing every write while
//! looking healthy. It exits with code 75 at the first failed write, so a
//! supervisor restarts it; restarted on the same data once space is free, it
//! holds every acknowledged message and takes writes again.
//!
//! Mounts a small tmpfs, so it needs root; without root it prints a
//! "skipped" line and passes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{ServerProcess, WAIT};
use ed25519_dalek::SigningKey;
use tern_client::connection::RawConnection;
use tern_proto::body::{conversations, messaging};
use tern_proto::{Body, ConversationKind, Frame};
use tokio::time::timeout;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { _dir: dir, path })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// Writes a file until the file system is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write_all(&chunk).is_ok() {}
    while file.write_all(&[0u8; 512]).is_ok() {}
    path
}

async fn call(conn: &mut RawConnection, frame: &Frame) -> Option<Frame> {
    call_within(WAIT, conn, frame).await
}

/// The answer, or None if the connection ends or `limit` passes first (a
/// server that exited sends no close: its client notices by the silence).
async fn call_within(limit: Duration, conn: &mut RawConnection, frame: &Frame) -> Option<Frame> {
    timeout(limit, conn.call(frame)).await.ok()?.ok()
}

async fn authenticated(server: &ServerProcess, key: &SigningKey, register: bool) -> RawConnection {
    let mut conn = server.raw_connection().await;
    let frame = match register {
        true => conn.register_frame(1, "alice", "disk", key).unwrap(),
        false => conn.authenticate_frame(1, "alice", 1, key).unwrap(),
    };
    let reply = call(&mut conn, &frame).await.expect("answer");
    assert!(
        matches!(reply.body, Body::Registered(_) | Body::Authenticated(_)),
        "{reply:?}"
    );
    conn
}

fn send(id: u64, conversation_id: u64, cmid: u64, payload: Bytes) -> Frame {
    Frame::new(
        id,
        messaging::Send {
            conversation_id,
            client_message_id: cmid,
            expires_in_secs: 0,
            flags: 0,
            payload,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_server_and_a_restart_recovers_every_acknowledged_message() {
    let Some(disk) = Tmpfs::mount(12 * 1024 * 1024) else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let data = disk.path.join("data");
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let server = ServerProcess::spawn(&data, 1);
    let mut conn = authenticated(&server, &key, true).await;
    let create = conversations::CreateConversation {
        kind: ConversationKind::NoteToSelf,
        members: Vec::new(),
    };
    let reply = call(&mut conn, &Frame::new(2, create)).await.unwrap();
    let Body::ConversationInfo(info) = reply.body else {
        panic!("{reply:?}")
    };
    let note = info.conversation_id;
    let filler = fill(&disk.path);
    // Sends of 8 kB until one is not acknowledged: the journal outgrows
    // its allocated pages within a few.
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for cmid in 1..=400u64 {
        let payload = Bytes::from(vec![cmid as u8; 8 * 1024]);
        let frame = send(10 + cmid, note, cmid, payload);
        match call_within(Duration::from_secs(2), &mut conn, &frame).await {
            Some(Frame {
                body: Body::SendAck(ack),
                ..
            }) => acked.push((cmid, ack.seq)),
            Some(Frame {
                body: Body::Error(_),
                ..
            }) => refused.push(cmid),
            _ => break,
        }
        if !refused.is_empty() {
            break;
        }
    }
    assert!(
        !acked.is_empty(),
        "nothing was stored before the disk filled"
    );
    let status = server
        .wait_exit(Duration::from_secs(20))
        .expect("the server exits after its store failed");
    assert_eq!(status.code(), Some(75), "{status:?}");
    // Space comes back; the supervisor (here: the test) restarts tern.
    std::fs::remove_file(filler).unwrap();
    let server = ServerProcess::spawn(&data, 1);
    let mut conn = authenticated(&server, &key, false).await;
    let history = messaging::History {
        conversation_id: note,
        from_seq: 1,
        limit: 0,
    };
    let reply = call(&mut conn, &Frame::new(2, history)).await.unwrap();
    let Body::HistoryPage(page) = reply.body else {
        panic!("{reply:?}")
    };
    let stored: Vec<(u64, u64)> = page
        .messages
        .iter()
        .map(|m| (m.client_message_id, m.seq))
        .collect();
    assert_eq!(
        stored.get(..acked.len()),
        Some(&acked[..]),
        "an acknowledged message is missing"
    );
    for cmid in &refused {
        assert!(
            stored.iter().all(|(c, _)| c != cmid),
            "message {cmid} was answered with an error and is stored"
        );
    }
    // And it takes writes again.
    let next = page.head_seq + 1;
    let reply = call(
        &mut conn,
        &send(3, note, 9_999, Bytes::from_static(b"after")),
    )
    .await
    .unwrap();
    assert!(
        matches!(&reply.body, Body::SendAck(a) if a.seq == next),
        "{reply:?}"
    );
    eprintln!(
        "disk full after {} acknowledged sends; {} refused; restarted with {} stored",
        acked.len(),
        refused.len(),
        stored.len()
    );
}
