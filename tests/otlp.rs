//! Trace export (issue 13): a `tern serve` process with `otlp_endpoint` set
//! posts its `request` and `owner` spans, with their request and
//! conversation ids, to an OTLP/HTTP collector; a collector that is down
//! costs the server nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{data_dir, pushes, ServerProcess, WAIT};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tern_client::Client;
use tern_proto::ConversationKind;

/// Registers alice and bob on `server`; alice sends bob one message. Returns
/// the conversation id once bob has it.
async fn chat(server: &ServerProcess) -> u64 {
    let states = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = Client::register(server.options(states.0.path()), "alice", "test")
        .await
        .unwrap();
    let bob = Client::register(server.options(states.1.path()), "bob", "test")
        .await
        .unwrap();
    let conv = alice
        .create_conversation(ConversationKind::Direct, &["bob"])
        .await
        .unwrap();
    alice.send(conv.id, &b"traced"[..]).await.unwrap();
    let got = tokio::time::timeout(WAIT, bob.next_message())
        .await
        .expect("bob gets the message in time")
        .expect("bob's client open");
    assert_eq!(got.conversation_id, conv.id);
    alice.close().await;
    bob.close().await;
    conv.id
}

/// A u64 field as exported: OTLP integers are signed 64-bit, so
/// tracing-opentelemetry sends a u64 above `i64::MAX` as a decimal string.
fn u64_attribute(attributes: &[KeyValue], key: &str) -> Option<u64> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        any_value::Value::IntValue(v) => u64::try_from(*v).ok(),
        any_value::Value::StringValue(s) => s.parse().ok(),
        _ => None,
    }
}

fn string_attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match value.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_owner_spans_reach_the_collector_with_their_ids() {
    let (url, posts) = pushes::receiver(&[]);
    let (_tmp, data) = data_dir();
    let server =
        ServerProcess::spawn_with_config(&data, 2, &format!("otlp_endpoint = \"{url}\"\n"));
    let conversation = chat(&server).await;
    // SIGTERM: shutting down sends the last batch.
    assert!(server.terminate().success());

    let mut spans: Vec<Span> = Vec::new();
    let mut service = None;
    while let Ok(post) = posts.recv_timeout(Duration::from_secs(2)) {
        assert!(
            post.request_line.starts_with("POST /wake/bob-phone "),
            "{post:?}"
        );
        assert_eq!(post.header("content-type"), Some("application/x-protobuf"));
        let export = ExportTraceServiceRequest::decode(&post.body[..]).expect("OTLP protobuf");
        for resource_spans in export.resource_spans {
            if let Some(resource) = &resource_spans.resource {
                service = string_attribute(&resource.attributes, "service.name");
            }
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans);
            }
        }
    }
    assert_eq!(service.as_deref(), Some("tern"));
    for name in ["request", "owner"] {
        let found = spans.iter().find(|span| {
            span.name == name
                && u64_attribute(&span.attributes, "conversation") == Some(conversation)
                && u64_attribute(&span.attributes, "request_id").is_some()
        });
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        let found =
            found.unwrap_or_else(|| panic!("no {name} span for {conversation} in {names:?}"));
        assert!(found.end_time_unix_nano >= found.start_time_unix_nano);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_the_server_nothing() {
    // A port nothing listens on: each export is refused.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (_tmp, data) = data_dir();
    let server =
        ServerProcess::spawn_with_config(&data, 2, &format!("otlp_endpoint = \"{url}\"\n"));
    chat(&server).await;
    // Served, and it still shuts down cleanly with a batch it cannot send.
    assert!(server.terminate().success());
}
