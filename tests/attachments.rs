//! Encrypted attachments end to end (issue 12) against a real server: a
//! file round-trips byte-identical between two users, the server's data
//! directory holds only ciphertext, an upload cut by a lost connection
//! resumes without re-sending what the server had, a tampered blob is
//! refused by chunk, and the size limit answers with a typed error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;
#[path = "common/attachments.rs"]
mod helpers;

use common::{assert_server_blind, TestServer, WAIT};
use helpers::{
    abandoned_upload_is_swept, cut_and_resume, next_pointer, pair, register, send_and_fetch,
    sha256, write_file, MARKER,
};
use tern_client::attachment::{transfer, AttachmentError, OpenError, TransferError};
use tern_proto::blob_stream::Status;

async fn round_trip(len: usize) {
    let mut server = TestServer::start(2);
    let (alice, bob, group) = pair(&server).await;
    let files = tempfile::tempdir().unwrap();
    send_and_fetch(&alice, &bob, group, len, files.path()).await;

    let control = b"UNENCRYPTED-CONTROL-MARKER-a7c1";
    alice
        .client
        .transport()
        .send(group, &control[..])
        .await
        .unwrap();
    server.stop().await;
    let marker = String::from_utf8(MARKER.to_vec()).unwrap();
    assert_server_blind(server.data_dir(), control, &[marker]);
}

#[tokio::test]
async fn a_file_round_trips_between_two_users_and_the_server_holds_only_ciphertext() {
    round_trip(3 * 1024 * 1024 + 12_345).await;
}

#[tokio::test]
#[ignore = "50 MB, the issue's figure; slow in debug builds"]
async fn a_50_mb_file_round_trips() {
    round_trip(50 * 1024 * 1024).await;
}

#[tokio::test]
async fn an_upload_cut_at_40_percent_resumes_without_resending() {
    let server = TestServer::start(2);
    let (alice, bob, group) = pair(&server).await;
    let files = tempfile::tempdir().unwrap();
    cut_and_resume(&alice, &bob, group, 8 * 1024 * 1024, files.path()).await;
}

#[tokio::test]
async fn a_tampered_blob_is_refused_by_chunk_and_leaves_no_file() {
    let mut server = TestServer::start(1);
    let (alice, bob, group) = pair(&server).await;
    let files = tempfile::tempdir().unwrap();
    let path = write_file(files.path(), "doc.pdf", 300_000);
    let sent = alice
        .client
        .send_attachment(group, &path, &mut |_, _| {})
        .await
        .unwrap();
    let pointer = next_pointer(&bob).await;
    // Flip one byte of the second chunk in the server's stored blob.
    let blob = server
        .data_dir()
        .join("blobs/complete")
        .join(hex::encode(sent.pointer.blob_id));
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[70_000] ^= 0x40;
    std::fs::write(&blob, &bytes).unwrap();

    let out = files.path().join("doc-received.pdf");
    let err = bob
        .client
        .download_attachment(&pointer, &out)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AttachmentError::Open(OpenError::ChunkRefused { index: 1 })
        ),
        "{err}"
    );
    assert!(!out.exists(), "no output file");
    assert!(
        !files.path().join("doc-received.pdf.part").exists(),
        "no partial file"
    );
    server.stop().await;
}

#[tokio::test]
async fn the_size_limit_and_unknown_blobs_answer_typed_errors() {
    let server = TestServer::start_with(1, |c| c.max_attachment_bytes = 100_000);
    let alice = register(&server, "alice").await;
    let files = tempfile::tempdir().unwrap();
    let path = write_file(files.path(), "too-big.bin", 200_000);
    let prepared = alice.client.prepare_attachment(&path).unwrap();
    let err = alice
        .client
        .upload_attachment(&prepared, &mut |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AttachmentError::Transfer(TransferError::Refused {
                status: Status::TooLarge,
                value: 100_000,
                ..
            })
        ),
        "{err}"
    );
    let connection = alice
        .client
        .transport()
        .blob_connection(WAIT)
        .await
        .unwrap();
    let err = transfer::download(&connection, &[9; 16], 0, 10, &mut |_| Ok(()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            TransferError::Refused {
                status: Status::NotFound,
                ..
            }
        ),
        "{err}"
    );
}

mod cli {
    //! `tern send-file` and `tern fetch` against a server process.

    use super::common::{data_dir, ServerProcess};
    use super::{sha256, write_file};

    use super::common::{run_tern as tern, tern_ok as ok};

    #[test]
    fn send_file_and_fetch_from_the_command_line() {
        let (_tmp, data) = data_dir();
        let server = ServerProcess::spawn(&data, 2);
        let clients = tempfile::tempdir().unwrap();
        let state = |u: &str| clients.path().join(u).to_string_lossy().into_owned();
        let (alice, bob) = (state("alice"), state("bob"));
        let (addr, fp) = (server.addr.to_string(), hex::encode(server.fingerprint));
        for (dir, user) in [(&alice, "alice"), (&bob, "bob")] {
            let flags = ["--server", &addr, "--fingerprint", &fp];
            ok(tern(
                &[&["register", "--state", dir][..], &flags, &[user]].concat(),
            ));
            ok(tern(&["privacy", "--state", dir, "--groups", "everyone"]));
        }
        let group = ok(tern(&["create", "--state", &alice, "group", "bob"]));
        let group = group.trim();
        let path = write_file(clients.path(), "notes.pdf", 700_000);
        ok(tern(&["send", "--state", &alice, group, "before the file"]));
        let sent = ok(tern(&[
            "send-file",
            "--state",
            &alice,
            group,
            &path.to_string_lossy(),
        ]));
        assert!(
            sent.starts_with("sent notes.pdf (700000 bytes, application/pdf)"),
            "{sent}"
        );
        let seq = sent.trim().rsplit(' ').next().unwrap();
        let out = clients.path().join("fetched.pdf");
        let out_arg = out.to_string_lossy().into_owned();
        let fetched = ok(tern(&[
            "fetch", "--state", &bob, group, seq, "-o", &out_arg,
        ]));
        assert!(fetched.starts_with("saved "), "{fetched}");
        assert_eq!(sha256(&out), sha256(&path));
        // What fetch received on the way is still shown by the next listen.
        let heard = ok(tern(&["listen", "--state", &bob, "--count", "2"]));
        let heard: Vec<&str> = heard.lines().collect();
        assert!(heard[0].ends_with("alice/1: before the file"), "{heard:?}");
        assert!(heard[1].contains("<file \"notes.pdf\""), "{heard:?}");
        let history = ok(tern(&["history", "--state", &bob, group]));
        assert!(
            history.contains(&format!("#{seq}] "))
                && history
                    .contains("<file \"notes.pdf\" (700000 bytes, application/pdf): tern fetch>"),
            "{history}"
        );
        let again = tern(&["fetch", "--state", &bob, group, seq, "-o", &out_arg]);
        assert!(
            !again.status.success(),
            "an existing file is never replaced"
        );
        assert!(String::from_utf8_lossy(&again.stderr).contains("exists"));
        assert_eq!(sha256(&out), sha256(&path));
        let missing = tern(&["fetch", "--state", &bob, group, "999"]);
        assert!(!missing.status.success());

        // A photo with a preview and its size: the preview travels in the
        // message (no download), history shows what the pointer says.
        let photo = write_file(clients.path(), "beach.jpg", 50_000);
        let thumb = clients.path().join("beach-thumb.jpg");
        std::fs::write(&thumb, [0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]).unwrap();
        let sent = ok(tern(&[
            "send-file",
            "--state",
            &alice,
            group,
            &photo.to_string_lossy(),
            "--thumbnail",
            &thumb.to_string_lossy(),
            "--dimensions",
            "1920x1080",
        ]));
        let seq = sent.trim().rsplit(' ').next().unwrap();
        let saved = clients.path().join("preview.jpg");
        let saved_arg = saved.to_string_lossy().into_owned();
        ok(tern(&[
            "fetch",
            "--state",
            &bob,
            group,
            seq,
            "--thumbnail",
            "-o",
            &saved_arg,
        ]));
        assert_eq!(
            std::fs::read(&saved).unwrap(),
            std::fs::read(&thumb).unwrap()
        );
        let history = ok(tern(&["history", "--state", &bob, group]));
        let described = "(50000 bytes, image/jpeg, 1920x1080, thumbnail: tern fetch --thumbnail)";
        assert!(history.contains(described), "{history}");
        let big = clients.path().join("big-thumb.jpg");
        std::fs::write(&big, vec![0u8; 16 * 1024 + 1]).unwrap();
        let refused = tern(&[
            "send-file",
            "--state",
            &alice,
            group,
            &photo.to_string_lossy(),
            "--thumbnail",
            &big.to_string_lossy(),
        ]);
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("thumbnail"));
        let bad = tern(&[
            "send-file",
            "--state",
            &alice,
            group,
            "x",
            "--dimensions",
            "wide",
        ]);
        assert!(String::from_utf8_lossy(&bad.stderr).contains("WIDTHxHEIGHT"));
        let zero = tern(&[
            "send-file",
            "--state",
            &alice,
            group,
            "x",
            "--dimensions",
            "0x0",
        ]);
        assert!(String::from_utf8_lossy(&zero.stderr).contains("positive"));

        // Refused before any byte is uploaded: a directory, and a
        // conversation that is not alice's.
        let blobs = || {
            std::fs::read_dir(data.join("blobs/complete"))
                .unwrap()
                .count()
        };
        let before = blobs();
        let dir = clients.path().to_string_lossy().into_owned();
        let not_a_file = tern(&["send-file", "--state", &alice, group, &dir]);
        let why = String::from_utf8_lossy(&not_a_file.stderr).into_owned();
        assert!(
            why.contains("not a regular file") && why.contains(&dir),
            "{why}"
        );
        let photo_arg = photo.to_string_lossy().into_owned();
        let stranger = tern(&["send-file", "--state", &alice, "12345", &photo_arg]);
        let why = String::from_utf8_lossy(&stranger.stderr).into_owned();
        assert!(why.contains("not one of yours"), "{why}");
        assert_eq!(blobs(), before, "nothing was uploaded");
        drop(server);
    }
}

#[tokio::test]
async fn an_upload_abandoned_for_24_hours_is_swept() {
    abandoned_upload_is_swept(|_| {}).await;
}
