//! A device under load: its connection split into a writer task (draining a
//! bounded queue of jobs, writing them in batches) and a reader task (handing
//! acks, deliveries, echoes and errors to the scenario's [`Sink`], and
//! acknowledging deliveries every `ack_interval` like a real client).
//!
//! Payloads carry their own timing: bytes 0..8 are the message number `k`,
//! bytes 8..16 the intended send time in clock nanoseconds, the rest padding.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use tern_client::connection::{FrameReceiver, FrameSender, RawConnection};
use tern_proto::body::messaging;
use tern_proto::{Body, ErrorBody, Frame, Message};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::conn::CONTROL_ID_BASE;
use crate::stats::Clock;

/// Bytes of timing header at the start of every payload.
pub const HEADER: usize = 16;
/// Most jobs written in one batch.
const BATCH: usize = 64;

/// Work for a device's writer.
#[derive(Debug)]
pub enum Job {
    /// A message send (`request_id` = message number + 1).
    Send {
        request_id: u64,
        conversation_id: u64,
        payload: Bytes,
    },
    /// Raise this device's cursor.
    Ack { conversation_id: u64, seq: u64 },
    /// Any pre-built frame (the baseline's echo frames).
    Raw(Bytes),
}

/// What a scenario does with what its devices receive.
pub trait Sink: Send + Sync + 'static {
    /// A SendAck for `request_id` arrived at `now_ns`.
    fn on_ack(&self, _device: usize, _request_id: u64, _now_ns: u64) {}
    /// A message was delivered to `device`.
    fn on_deliver(&self, _device: usize, _message: &Message, _now_ns: u64) {}
    /// A frame came back from the echo server.
    fn on_echo(&self, _device: usize, _request_id: u64, _payload: &[u8], _now_ns: u64) {}
    /// The server answered `request_id` with an error.
    fn on_error(&self, _device: usize, _request_id: u64, _error: &ErrorBody) {}
    /// The connection ended.
    fn on_closed(&self, _device: usize, _why: &str) {}
    /// Any other frame: a push (`request_id` 0, e.g. `PresenceChanged`) or
    /// another answer (e.g. `Done` to a `SetPresence`).
    fn on_other(&self, _device: usize, _request_id: u64, _body: &Body, _now_ns: u64) {}
}

/// A payload of `size` bytes (at least the header) for message `k`.
pub fn payload(k: u64, intended_ns: u64, size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(HEADER));
    b.put_u64_le(k);
    b.put_u64_le(intended_ns);
    b.resize(size.max(HEADER), 0x5a);
    b.freeze()
}

/// (k, intended_ns) from a payload made by [`payload`].
pub fn parse_payload(p: &[u8]) -> Option<(u64, u64)> {
    let k = u64::from_le_bytes(p.get(0..8)?.try_into().ok()?);
    let t = u64::from_le_bytes(p.get(8..16)?.try_into().ok()?);
    Some((k, t))
}

/// Intended send times of requests awaiting their SendAck, by request id
/// (sharded locks: every device's reader takes from it).
pub struct Pending {
    shards: Vec<std::sync::Mutex<HashMap<u64, u64>>>,
}

impl Pending {
    pub fn new() -> Self {
        Pending {
            shards: (0..64)
                .map(|_| std::sync::Mutex::new(HashMap::new()))
                .collect(),
        }
    }

    fn shard(&self, id: u64) -> Option<&std::sync::Mutex<HashMap<u64, u64>>> {
        self.shards.get((id % 64) as usize)
    }

    pub fn insert(&self, request_id: u64, intended_ns: u64) {
        if let Some(Ok(mut m)) = self.shard(request_id).map(|s| s.lock()) {
            m.insert(request_id, intended_ns);
        }
    }

    pub fn take(&self, request_id: u64) -> Option<u64> {
        self.shard(request_id)?.lock().ok()?.remove(&request_id)
    }
}

impl Default for Pending {
    fn default() -> Self {
        Self::new()
    }
}

/// A running device.
pub struct LiveDevice {
    pub jobs: mpsc::Sender<Job>,
    pub connection: quinn::Connection,
    writer: JoinHandle<()>,
    reader: JoinHandle<()>,
}

impl LiveDevice {
    /// Starts the writer and reader of device `index` over `conn`.
    pub fn start(
        index: usize,
        conn: RawConnection,
        sink: Arc<dyn Sink>,
        clock: Clock,
        ack_interval: Option<Duration>,
        queue: usize,
    ) -> LiveDevice {
        let (connection, sender, receiver) = conn.split();
        let (jobs, rx) = mpsc::channel(queue.max(1));
        let writer = tokio::spawn(write_loop(sender, rx, index, sink.clone()));
        let reader_state = Reader {
            index,
            sink,
            clock,
            jobs: jobs.clone(),
            acks: AckState::new(ack_interval),
        };
        let reader = tokio::spawn(read_loop(receiver, reader_state));
        LiveDevice {
            jobs,
            connection,
            writer,
            reader,
        }
    }

    /// Closes the connection and stops both tasks.
    pub fn close(self) {
        self.connection.close(0u32.into(), b"load run over");
        self.writer.abort();
        self.reader.abort();
    }
}

static CONTROL_IDS: AtomicU64 = AtomicU64::new(CONTROL_ID_BASE);

fn encode(job: Job) -> Bytes {
    match job {
        Job::Send {
            request_id,
            conversation_id,
            payload,
        } => {
            let body = Body::Send(messaging::Send {
                conversation_id,
                client_message_id: request_id,
                expires_in_secs: 0,
                flags: 0,
                payload,
            });
            Frame::new(request_id, body).encode()
        }
        Job::Ack {
            conversation_id,
            seq,
        } => Frame::new(
            CONTROL_IDS.fetch_add(1, Ordering::Relaxed),
            Body::Ack(messaging::Ack {
                conversation_id,
                seq,
            }),
        )
        .encode(),
        Job::Raw(bytes) => bytes,
    }
}

async fn write_loop(
    mut sender: FrameSender,
    mut rx: mpsc::Receiver<Job>,
    index: usize,
    sink: Arc<dyn Sink>,
) {
    let mut jobs = Vec::with_capacity(BATCH);
    let mut frames = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut jobs, BATCH).await > 0 {
        frames.extend(jobs.drain(..).map(encode));
        if let Err(e) = sender.chunks(&mut frames).await {
            sink.on_closed(index, &e.to_string());
            return;
        }
        frames.clear();
    }
}

/// Per-conversation highest delivered and acknowledged seqs.
struct AckState {
    interval: Option<Duration>,
    last: Instant,
    highest: HashMap<u64, (u64, u64)>,
}

impl AckState {
    fn new(interval: Option<Duration>) -> Self {
        AckState {
            interval,
            last: Instant::now(),
            highest: HashMap::new(),
        }
    }

    fn delivered(&mut self, conversation_id: u64, seq: u64) {
        let entry = self.highest.entry(conversation_id).or_insert((0, 0));
        entry.0 = entry.0.max(seq);
    }

    /// The acks due now (none before the interval has passed).
    fn due(&mut self, now: Instant) -> Vec<(u64, u64)> {
        let Some(interval) = self.interval else {
            return Vec::new();
        };
        if now.saturating_duration_since(self.last) < interval {
            return Vec::new();
        }
        self.last = now;
        let mut out = Vec::new();
        for (conv, (high, acked)) in self.highest.iter_mut() {
            if *high > *acked {
                *acked = *high;
                out.push((*conv, *high));
            }
        }
        out
    }
}

struct Reader {
    index: usize,
    sink: Arc<dyn Sink>,
    clock: Clock,
    jobs: mpsc::Sender<Job>,
    acks: AckState,
}

async fn read_loop(mut receiver: FrameReceiver, mut r: Reader) {
    loop {
        let frame = match receiver.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return r.sink.on_closed(r.index, "the server finished the stream"),
            Err(e) => return r.sink.on_closed(r.index, &e.to_string()),
        };
        r.handle(frame);
    }
}

impl Reader {
    fn handle(&mut self, frame: Frame) {
        let now = self.clock.now_ns();
        match frame.body {
            Body::SendAck(messaging::SendAck { .. }) => {
                self.sink.on_ack(self.index, frame.request_id, now)
            }
            Body::Deliver(message) => {
                self.sink.on_deliver(self.index, &message, now);
                self.acks.delivered(message.conversation_id, message.seq);
                for (conversation_id, seq) in self.acks.due(Instant::now()) {
                    let _ = self.jobs.try_send(Job::Ack {
                        conversation_id,
                        seq,
                    });
                }
            }
            Body::Send(messaging::Send { payload, .. }) => {
                self.sink
                    .on_echo(self.index, frame.request_id, &payload, now)
            }
            Body::Error(e) => self.sink.on_error(self.index, frame.request_id, &e),
            other => self
                .sink
                .on_other(self.index, frame.request_id, &other, now),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn payload_carries_number_and_intended_time() {
        let p = payload(42, 123_456_789, 100);
        assert_eq!(p.len(), 100);
        assert_eq!(parse_payload(&p), Some((42, 123_456_789)));
        assert_eq!(payload(1, 2, 0).len(), HEADER);
        assert_eq!(parse_payload(&[1, 2, 3]), None);
    }

    #[test]
    fn pending_gives_each_intended_time_once() {
        let p = Pending::new();
        p.insert(5, 77);
        p.insert(69, 88);
        assert_eq!(p.take(5), Some(77));
        assert_eq!(p.take(5), None);
        assert_eq!(p.take(69), Some(88));
    }

    #[test]
    fn acks_wait_for_the_interval_and_carry_the_highest_seq() {
        let mut a = AckState::new(Some(Duration::from_secs(3600)));
        let t0 = a.last;
        a.delivered(7, 3);
        assert!(a.due(t0).is_empty());
        a.delivered(7, 5);
        assert_eq!(a.due(t0 + Duration::from_secs(3601)), vec![(7, 5)]);
        assert!(a.due(t0 + Duration::from_secs(9000)).is_empty());
        assert!(AckState::new(None).due(t0).is_empty());
    }
}
