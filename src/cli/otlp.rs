//! Trace export over OTLP/HTTP (protobuf) for `tern serve` when
//! `otlp_endpoint` is set: the server's `request` and `owner` spans (each
//! carrying `request_id` and `conversation`, docs/OPERATING.md "Traces") go
//! to an OpenTelemetry collector, batched on the SDK's own thread so a slow
//! or absent collector never blocks a shard.
//!
//! Built with the `otlp` feature (on by default). The exporter is the
//! OpenTelemetry SDK's (`opentelemetry-otlp`, OTLP specification 1.x,
//! "OTLP/HTTP"); spans reach it through `tracing-opentelemetry`.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
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
        .with_endpoint(url)
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
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tern"))
        .with_filter(tern_spans());
    Ok((layer, Exporter { provider }))
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
    use super::traces_url;

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
