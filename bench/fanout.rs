//! Owner-shard fan-out: encode one Deliver and queue it for 1,500 recipient
//! devices on a shard (the per-recipient server cost of a group message).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tern_proto::{Body, Frame, Message};
use tern_server::delivery::Fanout;
use tern_server::mesh::Caller;
use tern_server::outbound::Outbound;
use tern_server::sessions::{Closer, Session, Sessions};

const RECIPIENTS: usize = 1_500;

fn deliver(seq: u64) -> Bytes {
    let message = Message {
        conversation_id: 42,
        seq,
        sender_user: "u0".into(),
        sender_device: 1,
        client_message_id: seq,
        server_time_ms: 1,
        expires_at_ms: 2,
        flags: 0,
        payload: Bytes::from_static(&[0xab; 256]),
    };
    Frame::new(0, Body::Deliver(message)).encode()
}

fn fanout(c: &mut Criterion) {
    let mut sessions = Sessions::default();
    let mut receivers = Vec::with_capacity(RECIPIENTS);
    for i in 0..RECIPIENTS {
        let (outbound, rx) = Outbound::channel(64, 8 << 20);
        sessions.insert(
            &format!("u{i}"),
            Session {
                conn_id: i as u64,
                device: 1,
                outbound,
                closer: Closer::detached(),
            },
        );
        receivers.push(rx);
    }
    let recipients: Arc<[(String, u32)]> = (0..RECIPIENTS)
        .map(|i| (format!("u{i}"), 1))
        .collect::<Vec<_>>()
        .into();
    let mut group = c.benchmark_group("fanout");
    group.throughput(Throughput::Elements(RECIPIENTS as u64));
    group.bench_function("group_1500_encode_and_queue", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for seq in 0..iters {
                let start = Instant::now();
                let out = Fanout::shared(
                    recipients.clone(),
                    Some(Caller {
                        user: "u0".into(),
                        device: 1,
                    }),
                    deliver(seq),
                );
                let result = sessions.deliver(&out);
                spent += start.elapsed();
                assert_eq!(result.delivered, RECIPIENTS as u64 - 1);
                receivers
                    .iter_mut()
                    .for_each(|rx| while rx.try_recv().is_ok() {});
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
