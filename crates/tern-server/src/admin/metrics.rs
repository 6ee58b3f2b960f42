//! The server's Prometheus metrics (issue 13): what the hot path counts
//! (frames by body type, errors by code, fan-out sizes, store latencies)
//! through pre-registered `metrics` handles, and what `ServerStats`,
//! `PushStats` and the mesh already count, copied in when `/metrics` is
//! rendered. Names, types, units and labels are listed in docs/OPERATING.md.
//!
//! Every handle is registered once at start on this server's own
//! [`PrometheusRecorder`] (no process-wide recorder: two servers in one
//! process keep apart), so recording is one relaxed atomic add, no lookup
//! and no lock. Histograms are recorded only while an admin port serves
//! them (their samples wait in memory for the next render or upkeep).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tern_proto::fb;

use crate::push::PushStats;
use crate::shard::ServerStats;
use crate::socket::ForwardingStats;

/// Buckets of `tern_fanout_recipients` (devices one message goes to).
const FANOUT_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 512.0, 2048.0];
/// Buckets of the store latency histograms, seconds (100 µs to 2.5 s).
const LATENCY_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.5,
];

/// The metrics of one server (held in its `ServerStats`).
pub struct Telemetry {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// An admin port serves the metrics: histograms are recorded.
    served: AtomicBool,
    /// `tern_frames_received_total{body}`, indexed by `fb::Body` value.
    frames_in: Vec<Counter>,
    /// `tern_frames_sent_total{body}`, indexed by `fb::Body` value.
    frames_out: Vec<Counter>,
    /// `tern_errors_total{code}`, indexed by `fb::ErrorCode` value.
    errors: Vec<Counter>,
    fanout: Histogram,
    persist: Histogram,
    append: Histogram,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("served", &self.served)
            .finish_non_exhaustive()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("tern_fanout_recipients".into()),
                &FANOUT_BUCKETS,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            })
            // Both bucket lists are constant and non-empty.
            .unwrap_or_default();
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        describe(&recorder);
        let frames_in = per_body(&recorder, "tern_frames_received_total");
        let frames_out = per_body(&recorder, "tern_frames_sent_total");
        let errors = fb::ErrorCode::ENUM_VALUES
            .iter()
            .map(|code| {
                let name = code.variant_name().unwrap_or("Unknown");
                counter(&recorder, "tern_errors_total", &[("code", name)])
            })
            .collect();
        Telemetry {
            fanout: histogram(&recorder, "tern_fanout_recipients"),
            persist: histogram(&recorder, "tern_store_persist_seconds"),
            append: histogram(&recorder, "tern_store_append_seconds"),
            recorder,
            handle,
            served: AtomicBool::new(false),
            frames_in,
            frames_out,
            errors,
        }
    }
}

impl Telemetry {
    /// Counts a frame received, by the body type its bytes name.
    pub fn frame_in(&self, frame: &[u8]) {
        if let Some(counter) = tern_proto::codec::peek_body_type(frame)
            .and_then(|body| self.frames_in.get(usize::from(body.0)))
        {
            counter.increment(1);
        }
    }

    /// Counts a frame handed to QUIC, by body type; an Error frame also
    /// counts its code.
    pub fn frame_out(&self, frame: &[u8]) {
        let Some(body) = tern_proto::codec::peek_body_type(frame) else {
            return;
        };
        if let Some(counter) = self.frames_out.get(usize::from(body.0)) {
            counter.increment(1);
        }
        if body == fb::Body::Error {
            let code = tern_proto::codec::peek_error_code(frame);
            if let Some(counter) = code.and_then(|c| self.errors.get(usize::from(c.0))) {
                counter.increment(1);
            }
        }
    }

    /// Records the size of one message's fan-out, in devices.
    pub fn fanout(&self, devices: usize) {
        if self.served.load(Ordering::Relaxed) {
            self.fanout.record(devices as f64);
        }
    }

    /// Records how long one `Store::persist` of an owner batch took.
    pub fn persisted(&self, took: Duration) {
        if self.served.load(Ordering::Relaxed) {
            self.persist.record(took.as_secs_f64());
        }
    }

    /// Records how long one batched `Store::append_messages` took.
    pub fn appended(&self, took: Duration) {
        if self.served.load(Ordering::Relaxed) {
            self.append.record(took.as_secs_f64());
        }
    }

    /// From now on histograms are recorded (an admin port serves them and
    /// runs [`Telemetry::upkeep`]).
    pub(crate) fn serve(&self) {
        self.served.store(true, Ordering::Relaxed);
    }

    /// Folds recorded histogram samples into their buckets (bounds the
    /// memory they hold between two scrapes).
    pub(crate) fn upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// The Prometheus text exposition of every metric, after copying in
    /// the counters kept elsewhere.
    pub fn render(&self, sources: &Sources<'_>) -> String {
        self.copy_counters(sources);
        self.handle.render()
    }

    fn copy_counters(&self, s: &Sources<'_>) {
        let st = s.stats;
        for (name, value) in [
            ("tern_connections_accepted_total", &st.connections_accepted),
            ("tern_connections_refused_total", &st.connections_refused),
            ("tern_connections_retried_total", &st.connections_validated),
            ("tern_handshakes_authenticated_total", &st.authenticated),
            ("tern_messages_stored_total", &st.messages_stored),
            ("tern_send_duplicates_total", &st.duplicates),
            ("tern_deliveries_total", &st.deliveries),
            ("tern_connections_closed_slow_total", &st.closed_slow),
            ("tern_frame_errors_total", &st.frame_errors),
            ("tern_messages_expired_total", &st.expired_swept),
            ("tern_datagrams_dropped_total", &st.datagrams_dropped),
            ("tern_datagrams_sent_total", &st.datagrams_sent),
            ("tern_typing_dropped_total", &st.typing_dropped),
            (
                "tern_handshake_parts_staged_total",
                &st.handshake_parts_staged,
            ),
            ("tern_blobs_uploaded_total", &st.blobs_uploaded),
            ("tern_blob_bytes_received_total", &st.blob_bytes_received),
            ("tern_blobs_downloaded_total", &st.blobs_downloaded),
            ("tern_blob_bytes_sent_total", &st.blob_bytes_sent),
            ("tern_blobs_swept_total", &st.blobs_swept),
        ] {
            counter(&self.recorder, name, &[]).absolute(ServerStats::get(value));
        }
        gauge(&self.recorder, "tern_connections_open", &[])
            .set(ServerStats::get(&st.connections_open) as f64);
        if let Some(push) = s.push {
            for (name, value) in [
                ("tern_push_sent_total", &push.sent),
                ("tern_push_dropped_total", &push.dropped),
                ("tern_push_failures_total", &push.failures),
                ("tern_push_abandoned_total", &push.abandoned),
                ("tern_push_endpoints_gone_total", &push.gone),
            ] {
                counter(&self.recorder, name, &[]).absolute(PushStats::get(value));
            }
        }
        let fwd = s.forwarding;
        for (name, value) in [
            ("tern_datagrams_forwarded_total", fwd.forwarded_out_total()),
            ("tern_datagrams_forward_dropped_total", fwd.dropped_total()),
        ] {
            counter(&self.recorder, name, &[]).absolute(value);
        }
        if let Some(node) = s.cluster {
            self.copy_cluster(node);
        }
        for (shard, depth) in s.owner_queues.iter().enumerate() {
            let shard = shard.to_string();
            gauge(
                &self.recorder,
                "tern_owner_queue_depth",
                &[("shard", &shard)],
            )
            .set(*depth as f64);
        }
    }
}

impl Telemetry {
    fn copy_cluster(&self, node: &crate::node::ClusterNode) {
        let st = node.stats();
        for (name, value) in [
            ("tern_cluster_requests_forwarded_total", &st.forwarded),
            ("tern_cluster_forward_failures_total", &st.forward_failed),
            ("tern_cluster_pushes_sent_total", &st.pushes_sent),
            ("tern_cluster_pushes_dropped_total", &st.pushes_dropped),
            ("tern_cluster_wake_checks_total", &st.wake_checks),
            ("tern_cluster_pushes_spared_total", &st.pushes_spared),
            (
                "tern_cluster_deliveries_received_total",
                &st.deliveries_received,
            ),
        ] {
            let value = crate::node::NodeStats::get(value);
            counter(&self.recorder, name, &[]).absolute(value);
        }
        gauge(&self.recorder, "tern_cluster_nodes_live", &[]).set(node.live_nodes() as f64);
    }
}

/// What [`Telemetry::render`] copies in besides its own handles.
pub struct Sources<'a> {
    /// This server's node of a cluster, if it is one.
    pub cluster: Option<&'a crate::node::ClusterNode>,
    pub stats: &'a ServerStats,
    pub push: Option<&'a PushStats>,
    pub forwarding: &'a ForwardingStats,
    /// Requests waiting in each shard's owner inbox, by shard.
    pub owner_queues: Vec<usize>,
}

fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::new(*k, (*v).to_owned()))
        .collect();
    Key::from_parts(name, labels)
}

fn counter(r: &PrometheusRecorder, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
    r.register_counter(&key(name, labels), &METADATA)
}

fn gauge(r: &PrometheusRecorder, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
    r.register_gauge(&key(name, labels), &METADATA)
}

fn histogram(r: &PrometheusRecorder, name: &'static str) -> Histogram {
    r.register_histogram(&key(name, &[]), &METADATA)
}

fn per_body(r: &PrometheusRecorder, name: &'static str) -> Vec<Counter> {
    fb::Body::ENUM_VALUES
        .iter()
        .map(|body| {
            counter(
                r,
                name,
                &[("body", body.variant_name().unwrap_or("Unknown"))],
            )
        })
        .collect()
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The `# HELP` lines.
fn describe(r: &PrometheusRecorder) {
    for (name, unit, help) in [
        (
            "tern_frames_received_total",
            None,
            "Frames received, by body type",
        ),
        (
            "tern_frames_sent_total",
            None,
            "Frames handed to QUIC, by body type",
        ),
        (
            "tern_errors_total",
            None,
            "Error frames sent, by error code",
        ),
        (
            "tern_fanout_recipients",
            None,
            "Devices one stored message is fanned out to",
        ),
        (
            "tern_store_persist_seconds",
            Some(Unit::Seconds),
            "Time of one store persist (journal sync) of an owner batch",
        ),
        (
            "tern_store_append_seconds",
            Some(Unit::Seconds),
            "Time of one batched message append to the store",
        ),
        ("tern_connections_open", None, "Connections open now"),
        (
            "tern_cluster_nodes_live",
            None,
            "Nodes of the cluster this node sees alive, itself included",
        ),
        (
            "tern_cluster_requests_forwarded_total",
            None,
            "Owner requests sent to the conversation's owner node",
        ),
        (
            "tern_cluster_forward_failures_total",
            None,
            "Forwarded requests the owner node did not answer (answered retryable)",
        ),
        (
            "tern_cluster_pushes_sent_total",
            None,
            "Deliveries and notices sent to other nodes",
        ),
        (
            "tern_cluster_pushes_dropped_total",
            None,
            "Deliveries and notices for other nodes dropped (recipients catch up by sync)",
        ),
        (
            "tern_cluster_wake_checks_total",
            None,
            "Push wake-ups decided after asking the other nodes which devices they hold",
        ),
        (
            "tern_cluster_pushes_spared_total",
            None,
            "Deliveries and notices not sent to a node that holds none of their recipients",
        ),
        (
            "tern_cluster_deliveries_received_total",
            None,
            "Deliveries other nodes sent this node",
        ),
        (
            "tern_owner_queue_depth",
            None,
            "Requests waiting in a shard's owner inbox",
        ),
    ] {
        match unit {
            Some(unit) => r.describe_histogram(name.into(), Some(unit), help.into()),
            None => r.describe_counter(name.into(), None, help.into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::expect_used, clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn render(stats: &ServerStats) -> String {
        let forwarding = crate::socket::ForwardingChannels::new(1, 16)
            .expect("channels")
            .stats();
        stats.telemetry.render(&Sources {
            cluster: None,
            stats,
            push: None,
            forwarding: &forwarding,
            owner_queues: vec![3],
        })
    }

    #[test]
    fn renders_types_help_and_labels() {
        let stats = ServerStats::default();
        ServerStats::add(&stats.deliveries, 5);
        let done = tern_proto::Frame::new(1, tern_proto::body::messaging::Done).encode();
        stats
            .telemetry
            .frame_out(&done[tern_proto::codec::LEN_PREFIX..]);
        let text = render(&stats);
        for line in [
            "# TYPE tern_deliveries_total counter",
            "tern_deliveries_total 5",
            "# HELP tern_frames_sent_total Frames handed to QUIC, by body type",
            "tern_frames_sent_total{body=\"Done\"} 1",
            "tern_frames_sent_total{body=\"Deliver\"} 0",
            "# TYPE tern_owner_queue_depth gauge",
            "tern_owner_queue_depth{shard=\"0\"} 3",
            "tern_errors_total{code=\"RateLimited\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
        }
    }

    #[test]
    fn histograms_wait_for_an_admin_port() {
        let stats = ServerStats::default();
        stats.telemetry.fanout(3);
        assert!(!render(&stats).contains("tern_fanout_recipients_count 1"));
        stats.telemetry.serve();
        stats.telemetry.fanout(3);
        let text = render(&stats);
        assert!(
            text.contains("# TYPE tern_fanout_recipients histogram"),
            "{text}"
        );
        assert!(text.contains("tern_fanout_recipients_count 1"), "{text}");
        assert!(
            text.contains("tern_fanout_recipients_bucket{le=\"4\"} 1"),
            "{text}"
        );
    }
}
