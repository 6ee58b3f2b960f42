//! Trace export over OTLP/HTTP (protobuf) for `tern serve` when
//! `otlp_endpoint` is set: the server's `request` and `owner` spans (each
//! carrying `request_id` and `conversation`, docs/OPERATING.md "Traces") go
//! to an OpenTelemetry collector, batched on the SDK's own thread so a slow
//! or absent collector never blocks a shard.
//!
//! Built with the `otlp` feature (on by default). The exporter is the
//! OpenTelemetry SDK's (`opentelemetry-otlp`, OTLP specification 1.x,
//! "OTLP/HTTP"); spans reach it through `tracing-opentelemetry`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing::Subscriber;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::Filter;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// How long one export POST may take before the batch is dropped.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for the last batch to be sent.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// At most one warning this often while exports keep failing.
const FAILURE_REPORT_EVERY: Duration = Duration::from_secs(60);

/// Why the exporter could not be set up; `tern serve` stops before binding.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("otlp_endpoint {endpoint:?} cannot be used: {message} (give the collector's OTLP/HTTP base URL, e.g. http://collector:4318)")]
    Endpoint { endpoint: String, message: String },
}

/// The running exporter: flushes what is batched when shut down.
pub struct Exporter {
    provider: SdkTracerProvider,
}

impl Exporter {
    /// Sends what is still batched (at most [`SHUTDOWN_TIMEOUT`]) and stops
    /// the export thread. A collector that does not answer loses those spans,
    /// with a warning; nothing else waits on it.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT) {
            tracing::warn!("the last traces were not exported: {e}");
        }
    }
}

/// The traces URL for `endpoint`: a base URL with no path gets the OTLP/HTTP
/// traces path `/v1/traces` (what `OTEL_EXPORTER_OTLP_ENDPOINT` means in the
/// OpenTelemetry specification); a URL with a path is used as it is.
pub fn traces_url(endpoint: &str) -> String {
    let after_scheme = endpoint.split_once("://").map_or("", |(_, rest)| rest);
    match after_scheme.find('/') {
        Some(slash) if after_scheme.len() > slash + 1 => endpoint.to_owned(),
        _ => format!("{}/v1/traces", endpoint.trim_end_matches('/')),
    }
}

/// A tracing layer exporting tern's spans to `endpoint`, and its
/// [`Exporter`] handle. `node` (the cluster node id, if any) becomes the
/// resource's `service.instance.id`; `service.name` is `tern`.
///
/// Only spans of tern's own crates at debug level or above are exported, not
/// events: each request costs one span, not one per log line.
pub fn layer<S>(endpoint: &str, node: Option<&str>) -> Result<(impl Layer<S>, Exporter), OtlpError>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let url = traces_url(endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http_client(endpoint)?)
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| OtlpError::Endpoint {
            endpoint: endpoint.to_owned(),
            message: e.to_string(),
        })?;
    let mut resource = Resource::builder().with_service_name("tern");
    if let Some(node) = node {
        resource = resource.with_attribute(KeyValue::new("service.instance.id", node.to_owned()));
    }
    let exporter = Reported {
        inner: exporter,
        url,
        failures: Mutex::default(),
    };
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tern"))
        .with_filter(tern_spans());
    Ok((layer, Exporter { provider }))
}

/// The OTLP exporter, saying on stderr when batches are lost: the SDK is
/// built without its internal log, so a collector answering 500, posting
/// to a wrong path or a closed port used to lose every span without a
/// line. A warning when exports fail (at most one every
/// [`FAILURE_REPORT_EVERY`], with the batches lost since the last one),
/// and a line when they succeed after a warning.
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    url: String,
    failures: Mutex<Failures>,
}

impl<E: SpanExporter> SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        let report = self
            .failures
            .lock()
            .ok()
            .and_then(|mut failures| failures.note(result.is_ok(), Instant::now()));
        match (report, &result) {
            (Some(Report::Failing { lost }), Err(e)) => tracing::warn!(
                "traces are not reaching the collector at {}: {e}; {lost} batch(es) of spans \
                 lost since the last warning (clients are served as before)",
                self.url
            ),
            (Some(Report::Recovered), _) => {
                tracing::info!("traces reach the collector at {} again", self.url)
            }
            _ => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// What [`Failures::note`] says to log.
#[derive(Debug, PartialEq, Eq)]
enum Report {
    /// Warn: `lost` batches failed since the last warning.
    Failing { lost: u64 },
    /// An export succeeded after a warning.
    Recovered,
}

/// The export results since the last warning.
#[derive(Debug, Default)]
struct Failures {
    /// Failed exports not yet told.
    lost: u64,
    /// When the last warning was logged.
    warned_at: Option<Instant>,
    /// A warning was logged and no export has succeeded since.
    failing: bool,
}

impl Failures {
    /// Notes one export's outcome at `now`; what to log, if anything.
    fn note(&mut self, ok: bool, now: Instant) -> Option<Report> {
        if ok {
            self.lost = 0;
            return std::mem::take(&mut self.failing).then_some(Report::Recovered);
        }
        self.lost += 1;
        let due = self
            .warned_at
            .is_none_or(|at| now.saturating_duration_since(at) >= FAILURE_REPORT_EVERY);
        if !due {
            return None;
        }
        self.warned_at = Some(now);
        self.failing = true;
        Some(Report::Failing {
            lost: std::mem::take(&mut self.lost),
        })
    }
}

/// The blocking HTTP client the exporter posts with. Built on a thread of its
/// own: reqwest's blocking client starts a runtime, which must not happen
/// inside another one.
fn http_client(endpoint: &str) -> Result<reqwest::blocking::Client, OtlpError> {
    // reqwest is built without a rustls provider of its own: ring, as everywhere in tern.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let built = std::thread::spawn(|| {
        reqwest::blocking::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .build()
    })
    .join();
    let refused = |message: String| OtlpError::Endpoint {
        endpoint: endpoint.to_owned(),
        message,
    };
    match built {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(refused(format!("the HTTP client cannot start: {e}"))),
        Err(_) => Err(refused("the HTTP client panicked while starting".into())),
    }
}

/// Spans (not events) of tern's crates, debug level and above.
fn tern_spans<S>() -> impl Filter<S> {
    filter_fn(|meta| {
        meta.is_span()
            && *meta.level() <= tracing::Level::DEBUG
            && meta.target().starts_with("tern")
    })
}

#[cfg(test)]
mod tests {
    use super::{traces_url, Failures, Report, FAILURE_REPORT_EVERY};
    use std::time::Instant;

    /// A collector that keeps failing is told once a minute, with the
    /// batches lost in between, and its return once; one that flaps costs
    /// at most a warning and a recovery line a minute.
    #[test]
    fn failed_exports_are_reported_once_a_minute() {
        let mut failures = Failures::default();
        let start = Instant::now();
        let at = |secs: u64| start + std::time::Duration::from_secs(secs);
        assert_eq!(failures.note(true, at(0)), None);
        assert_eq!(
            failures.note(false, at(1)),
            Some(Report::Failing { lost: 1 })
        );
        for secs in 2..12 {
            assert_eq!(failures.note(false, at(secs)), None);
        }
        let next = 1 + FAILURE_REPORT_EVERY.as_secs();
        assert_eq!(
            failures.note(false, at(next)),
            Some(Report::Failing { lost: 11 })
        );
        assert_eq!(failures.note(true, at(next + 1)), Some(Report::Recovered));
        assert_eq!(failures.note(true, at(next + 2)), None);
        // Failing again within the minute: not told until it is up.
        assert_eq!(failures.note(false, at(next + 3)), None);
        assert_eq!(failures.note(true, at(next + 4)), None);
        let later = next + FAILURE_REPORT_EVERY.as_secs();
        assert_eq!(
            failures.note(false, at(later)),
            Some(Report::Failing { lost: 1 })
        );
    }

    #[test]
    fn a_base_url_gets_the_traces_path_and_a_full_one_is_kept() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://otel.example/custom/traces"),
            "https://otel.example/custom/traces"
        );
    }
}
