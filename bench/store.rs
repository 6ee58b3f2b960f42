//! The embedded store: one append, and batches of concurrent appends made
//! durable by group commit (one fsync per batch), per message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tern_store::prelude::*;
use tern_store::{ConversationKind, ConversationRecord, StoredMessage};
use tern_store_fjall::FjallStore;

const CONVERSATIONS: u64 = 64;

fn setup() -> (tempfile::TempDir, Arc<FjallStore>, tokio::runtime::Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FjallStore::open(&dir.path().join("store")).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for id in 1..=CONVERSATIONS {
            let record = ConversationRecord {
                id,
                kind: ConversationKind::Group,
                creator: "bench".into(),
                members: BTreeSet::from(["bench".to_owned()]),
                created_ms: 0,
                head_seq: 0,
            };
            store.create_conversation(&record, None).await.unwrap();
        }
    });
    (dir, store, rt)
}

fn message(conversation_id: u64, seq: u64) -> StoredMessage {
    StoredMessage {
        conversation_id,
        seq,
        sender_user: "bench".into(),
        sender_device: 1,
        client_message_id: seq,
        server_time_ms: 1,
        expires_at_ms: u64::MAX / 2,
        flags: 0,
        payload: Bytes::from_static(&[0xab; 256]),
    }
}

/// Appends `batch` messages (one per conversation, concurrently) then one persist each.
async fn durable_batch(store: &Arc<FjallStore>, heads: &Arc<Vec<AtomicU64>>, batch: u64) {
    let mut tasks = Vec::with_capacity(batch as usize);
    for i in 0..batch {
        let (store, heads) = (store.clone(), heads.clone());
        tasks.push(tokio::spawn(async move {
            let conv = i % CONVERSATIONS;
            let seq = heads[conv as usize].fetch_add(1, Ordering::Relaxed) + 1;
            store.append_message(&message(conv + 1, seq)).await.unwrap();
            store.persist().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn append(c: &mut Criterion) {
    let (_dir, store, rt) = setup();
    let heads: Arc<Vec<AtomicU64>> =
        Arc::new((0..CONVERSATIONS).map(|_| AtomicU64::new(0)).collect());
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.bench_function("append_no_sync", |b| {
        b.iter(|| {
            let seq = heads[0].fetch_add(1, Ordering::Relaxed) + 1;
            rt.block_on(store.append_message(&message(1, seq))).unwrap();
        })
    });
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(4));
    for batch in [1u64, 64] {
        group.throughput(Throughput::Elements(batch));
        group.bench_with_input(
            BenchmarkId::new("append_durable_group_commit", batch),
            &batch,
            |b, &batch| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        rt.block_on(durable_batch(&store, &heads, batch));
                    }
                    start.elapsed()
                })
            },
        );
    }
    group.finish();
    let (fsyncs, served) = store.commit_stats();
    eprintln!("group commit: {served} persist requests served by {fsyncs} fsyncs");
}

criterion_group!(benches, append);
criterion_main!(benches);
