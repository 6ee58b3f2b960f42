//! The `[push]` table of the server configuration (issue 11,
//! docs/PROTOCOL.md §4.13): the push gateway, coalescing, retries and the
//! pusher's queue, checked by [`PushConfig::validate`] before any port is
//! bound.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::endpoint::{parse_url, UrlPolicy};

/// Push notification settings; every field has a default.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// The push gateway `Gateway` endpoints are woken through (a Sygnal
    /// style `POST` endpoint, e.g. `https://sygnal.example.org/_matrix/push/v1/notify`).
    /// Default unset: `RegisterPush{kind: Gateway}` answers `NotConfigured`.
    pub gateway_url: Option<String>,
    /// Allow `http://` endpoints (and gateway) on a loopback host
    /// (127.0.0.0/8, `::1`, `localhost`), for tests. Default false: https only.
    pub allow_http_loopback: bool,
    /// Least time between two wake-ups of one device, milliseconds: later
    /// messages are merged into one wake-up sent when it ends. Default
    /// 3000, 100 to 3600000.
    pub coalesce_ms: u64,
    /// First wait before retrying a failed wake-up, milliseconds; doubled
    /// after each failure up to `retry_max_ms`. Default 500, 10 to 60000.
    pub retry_initial_ms: u64,
    /// Longest wait between two tries, milliseconds. Default 60000, at
    /// least `retry_initial_ms`, at most 3600000.
    pub retry_max_ms: u64,
    /// Tries of one wake-up, the first included, before it is dropped.
    /// Default 5, 1 to 20.
    pub retry_attempts: u32,
    /// Wake-ups waiting for the pusher thread; past it a wake-up is dropped
    /// and counted, never waited for. Default 4096, 16 to 1000000.
    pub queue: usize,
    /// Time one request (connect, TLS, send, answer) may take, milliseconds.
    /// Default 5000, 100 to 60000.
    pub timeout_ms: u64,
    /// PEM file of the certificate authorities https endpoints are checked
    /// against. Default `/etc/ssl/certs/ca-certificates.crt` (Debian's
    /// bundle); read when the server starts (unreadable: https wake-ups fail
    /// and are logged).
    pub ca_file: PathBuf,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            gateway_url: None,
            allow_http_loopback: false,
            coalesce_ms: 3000,
            retry_initial_ms: 500,
            retry_max_ms: 60_000,
            retry_attempts: 5,
            queue: 4096,
            timeout_ms: 5000,
            ca_file: PathBuf::from("/etc/ssl/certs/ca-certificates.crt"),
        }
    }
}

/// A `[push]` setting out of its range: the field and what it must be.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting push.{field}: {message}")]
pub struct PushConfigError {
    pub field: &'static str,
    pub message: String,
}

impl PushConfig {
    /// What endpoint URLs may be.
    pub fn url_policy(&self) -> UrlPolicy {
        UrlPolicy {
            allow_http_loopback: self.allow_http_loopback,
        }
    }

    /// Checks every field's range and the gateway URL.
    ///
    /// # Errors
    /// The first field out of range, with what it must be.
    pub fn validate(&self) -> Result<(), PushConfigError> {
        let bad = |field: &'static str, message: &str| {
            Err(PushConfigError {
                field,
                message: message.to_owned(),
            })
        };
        if !(100..=3_600_000).contains(&self.coalesce_ms) {
            return bad("coalesce_ms", "must be 100 to 3600000");
        }
        if !(10..=60_000).contains(&self.retry_initial_ms) {
            return bad("retry_initial_ms", "must be 10 to 60000");
        }
        if !(self.retry_initial_ms..=3_600_000).contains(&self.retry_max_ms) {
            return bad("retry_max_ms", "must be retry_initial_ms to 3600000");
        }
        if !(1..=20).contains(&self.retry_attempts) {
            return bad("retry_attempts", "must be 1 to 20");
        }
        if !(16..=1_000_000).contains(&self.queue) {
            return bad("queue", "must be 16 to 1000000");
        }
        if !(100..=60_000).contains(&self.timeout_ms) {
            return bad("timeout_ms", "must be 100 to 60000");
        }
        if let Some(url) = &self.gateway_url {
            if let Err(e) = parse_url(url, self.url_policy()) {
                return bad("gateway_url", &e.to_string());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_ranges_are_checked() {
        assert!(PushConfig::default().validate().is_ok());
        let field = |c: PushConfig| c.validate().err().map(|e| e.field);
        let base = PushConfig::default;
        assert_eq!(
            field(PushConfig {
                coalesce_ms: 99,
                ..base()
            }),
            Some("coalesce_ms")
        );
        assert_eq!(
            field(PushConfig {
                retry_attempts: 0,
                ..base()
            }),
            Some("retry_attempts")
        );
        assert_eq!(field(PushConfig { queue: 1, ..base() }), Some("queue"));
        assert_eq!(
            field(PushConfig {
                timeout_ms: 50,
                ..base()
            }),
            Some("timeout_ms")
        );
        let inverted = PushConfig {
            retry_initial_ms: 900,
            retry_max_ms: 800,
            ..base()
        };
        assert_eq!(field(inverted), Some("retry_max_ms"));
        let plain = |allow| PushConfig {
            gateway_url: Some("http://127.0.0.1:9/notify".into()),
            allow_http_loopback: allow,
            ..base()
        };
        assert_eq!(field(plain(false)), Some("gateway_url"));
        assert_eq!(field(plain(true)), None);
    }
}
