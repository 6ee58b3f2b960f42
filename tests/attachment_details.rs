//! What an attachment's pointer carries beyond its bytes (issue 12: "the
//! attachment pointer (... optional thumbnail and, for images and video,
//! dimensions/duration)"; "`send_attachment(path | reader)`"): a voice
//! message prepared from a reader with its duration and audio type reaches
//! the other side with them and decrypts byte-identical; a reader that
//! gives fewer bytes than announced, and a thumbnail past 16 KiB, are typed
//! errors that send nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use common::{TestServer, WAIT};
use tern_client::attachment::{AttachmentDetails, AttachmentError, PointerError};
use tern_client::content::Content;
use tern_client::secure::SecureEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_message_from_a_reader_keeps_its_details() {
    let server = TestServer::start(2);
    let (alice, alice_state) = server.register_secure("alice").await;
    let (bob, _bob_state) = server.register_secure("bob").await;
    let group = alice.create_group(&["bob"]).await.unwrap();
    let audio: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    let details = AttachmentDetails {
        thumbnail: Vec::new(),
        duration_ms: 12_500,
        content_type: Some("audio/ogg".into()),
        ..Default::default()
    };
    let prepared = alice
        .prepare_attachment_from(&audio[..], audio.len() as u64, "note.ogg", details)
        .unwrap();
    let sent = alice
        .send_prepared(group, prepared, &mut |_, _| {})
        .await
        .unwrap();

    let pointer = loop {
        let event = tokio::time::timeout(WAIT, bob.next_event()).await.unwrap();
        if let Some(SecureEvent::Message(m)) = event {
            match m.content {
                Content::Attachment(p) => break *p,
                other => panic!("expected the voice message, got {other:?}"),
            }
        }
    };
    assert_eq!(pointer, sent.pointer);
    assert!(pointer.is_voice());
    assert_eq!(
        (pointer.duration_ms, pointer.file_name.as_str()),
        (12_500, "note.ogg")
    );
    let out = tempfile::tempdir().unwrap();
    let path = out.path().join("note.ogg");
    bob.download_attachment(&pointer, &path).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), audio);

    // A reader shorter than announced: refused, and no spool file stays.
    let short = alice.prepare_attachment_from(
        &audio[..1000],
        2000,
        "cut.ogg",
        AttachmentDetails::default(),
    );
    assert!(matches!(short, Err(AttachmentError::Seal(_))), "{short:?}");
    // A thumbnail past 16 KiB: refused before anything is encrypted.
    let big = AttachmentDetails {
        thumbnail: vec![0; 16 * 1024 + 1],
        ..Default::default()
    };
    let refused = alice.prepare_attachment_from(&audio[..], audio.len() as u64, "x.jpg", big);
    assert!(
        matches!(
            refused,
            Err(AttachmentError::Pointer(PointerError::ThumbnailTooLarge(_)))
        ),
        "{refused:?}"
    );
    let spool = alice_state.path().join("attachments");
    let left: Vec<_> = std::fs::read_dir(&spool).unwrap().collect();
    assert!(left.is_empty(), "spool files left: {left:?}");
}
