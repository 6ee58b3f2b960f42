//! Tracing spans per request (issue 13): with `tern_server=debug`, each
//! request a connection dispatches opens a `request` span with its request
//! id and conversation id, and the owner applies it in an `owner` span with
//! the same fields. Its own test binary: it installs the process-wide
//! subscriber that the shard threads log to.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::TestServer;
use tern_proto::ConversationKind;
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

/// Log lines collected in memory.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_run_in_spans_carrying_request_and_conversation_ids() {
    let sink = Sink::default();
    let writer = sink.clone();
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new("tern_server=debug"))
        .with_span_events(FmtSpan::NEW)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let server = TestServer::start(2);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    alice.send(conv.id, &b"traced"[..]).await.unwrap();
    assert_eq!(bob.expect_message().await.seq, 1);

    let log = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    let fields = format!(" conversation={}}}", conv.id);
    for span in ["request{request_id=", "owner{request_id="] {
        assert!(
            log.lines()
                .any(|line| line.contains(span) && line.contains(&fields)),
            "no {span}..{fields} span in:\n{log}"
        );
    }
    // A request that is not conversation work has no conversation field.
    assert!(log
        .lines()
        .any(|line| line.contains("request{request_id=") && !line.contains("conversation=")));
}
