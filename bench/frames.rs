//! Frame codec costs: encode, verify+decode, and the streaming decoder, for
//! a small Send and for a Deliver with a 1 KiB ciphertext.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use tern_proto::body::messaging;
use tern_proto::codec::LEN_PREFIX;
use tern_proto::{Body, Frame, FrameDecoder, Limits, Message};

fn send_frame(payload: usize) -> Frame {
    Frame::new(
        7,
        Body::Send(messaging::Send {
            conversation_id: 42,
            client_message_id: 9,
            expires_in_secs: 0,
            flags: 0,
            payload: Bytes::from(vec![0xab; payload]),
        }),
    )
}

fn deliver_frame(payload: usize) -> Frame {
    Frame::new(
        0,
        Body::Deliver(Message {
            conversation_id: 42,
            seq: 1000,
            sender_user: "alice".into(),
            sender_device: 1,
            client_message_id: 9,
            server_time_ms: 1_700_000_000_000,
            expires_at_ms: 1_702_592_000_000,
            flags: 0,
            payload: Bytes::from(vec![0xab; payload]),
        }),
    )
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame");
    group.throughput(Throughput::Elements(1));
    for (name, frame) in [
        ("send_64B", send_frame(64)),
        ("deliver_1KiB", deliver_frame(1024)),
    ] {
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| black_box(frame.encode()))
        });
        let wire = frame.encode();
        let body = wire.slice(LEN_PREFIX..);
        let limits = Limits::server_inbound();
        group.bench_function(format!("verify/{name}"), |b| {
            b.iter(|| black_box(limits.verify(black_box(&body)).is_ok()))
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| black_box(Frame::decode(black_box(&body), &limits).unwrap()))
        });
        group.bench_function(format!("stream_split/{name}"), |b| {
            let mut decoder = FrameDecoder::new(256 * 1024);
            b.iter(|| {
                decoder.push(&wire);
                black_box(decoder.next_frame().unwrap().unwrap());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
