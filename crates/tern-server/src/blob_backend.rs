//! The `[blob_store]` table of the server configuration (issue 12): where
//! attachment blobs live, the filesystem of the data directory (the
//! default) or an S3-compatible bucket shared by a cluster
//! ([`tern_store::blob::s3`]); checked by [`BlobStoreConfig::validate`]
//! before any port is bound, opened by [`open`] when the server starts.
//!
//! S3 credentials are never in the file: they come from the environment
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optionally
//! `AWS_SESSION_TOKEN`), else from the instance's role; a program embedding
//! the server may set [`BlobStoreConfig::s3_credentials`].

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tern_store::blob::fs::FsBlobStore;
use tern_store::blob::s3::{S3BlobConfig, S3BlobStore, S3Credentials};
use tern_store::blob::{BlobError, BlobStore};

/// Which blob store the server uses.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BlobBackend {
    /// Files in `<data_dir>/blobs` (one server).
    #[default]
    Fs,
    /// An S3-compatible bucket (`s3_*` settings), for clusters.
    S3,
}

impl std::str::FromStr for BlobBackend {
    type Err = String;

    /// `fs` or `s3`, as in the config file (`TERN_BLOB_STORE_BACKEND`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fs" => Ok(BlobBackend::Fs),
            "s3" => Ok(BlobBackend::S3),
            other => Err(format!("unknown blob store {other:?}: use fs or s3")),
        }
    }
}

/// Blob store settings; every field has a default.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BlobStoreConfig {
    /// `"fs"` (default) or `"s3"`.
    pub backend: BlobBackend,
    /// The S3 endpoint URL, `http://` or `https://` with a host (MinIO,
    /// Ceph, R2, ...). Default unset: AWS S3 in `s3_region`.
    pub s3_endpoint: Option<String>,
    /// The bucket (it must exist; S3 naming rules: 3 to 63 lowercase
    /// letters, digits, `.` and `-`). Default empty: required with `s3`.
    pub s3_bucket: String,
    /// The bucket's region. Default `us-east-1`.
    pub s3_region: String,
    /// A prefix for tern's objects inside the bucket (segments separated by
    /// `/`, no empty one, no `.`/`..`). Default empty: the bucket's root.
    pub s3_prefix: String,
    /// The S3 key, set by a program embedding the server; never read from
    /// the file (unset: from the environment).
    #[serde(skip)]
    pub s3_credentials: Option<S3Credentials>,
}

impl Default for BlobStoreConfig {
    fn default() -> Self {
        BlobStoreConfig {
            backend: BlobBackend::Fs,
            s3_endpoint: None,
            s3_bucket: String::new(),
            s3_region: "us-east-1".to_owned(),
            s3_prefix: String::new(),
            s3_credentials: None,
        }
    }
}

/// A `[blob_store]` setting that is not valid: the field and what it must be.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting blob_store.{field}: {message}")]
pub struct BlobStoreConfigError {
    pub field: &'static str,
    pub message: String,
}

fn refuse(field: &'static str, message: impl Into<String>) -> BlobStoreConfigError {
    BlobStoreConfigError {
        field,
        message: message.into(),
    }
}

impl BlobStoreConfig {
    /// Checks the S3 settings when `backend` is `s3` (nothing to check for `fs`).
    ///
    /// # Errors
    /// The first setting out of its rules, with what it must be.
    pub fn validate(&self) -> Result<(), BlobStoreConfigError> {
        if self.backend == BlobBackend::Fs {
            return Ok(());
        }
        if let Some(url) = &self.s3_endpoint {
            check_http_url(url, "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
                .map_err(|m| refuse("s3_endpoint", m))?;
        }
        check_bucket(&self.s3_bucket).map_err(|m| refuse("s3_bucket", m))?;
        let region_ok = !self.s3_region.is_empty()
            && self
                .s3_region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !region_ok {
            return Err(refuse(
                "s3_region",
                "must be a region name such as us-east-1 (lowercase letters, digits, '-')",
            ));
        }
        check_prefix(&self.s3_prefix).map_err(|m| refuse("s3_prefix", m))
    }

    /// Reads `TERN_BLOB_STORE_BACKEND` (`fs` or `s3`),
    /// `TERN_BLOB_STORE_S3_ENDPOINT` (empty: AWS S3),
    /// `TERN_BLOB_STORE_S3_BUCKET`, `TERN_BLOB_STORE_S3_REGION` and
    /// `TERN_BLOB_STORE_S3_PREFIX` over the file's `[blob_store]` table,
    /// so container deployments need no config file for a shared bucket.
    ///
    /// # Errors
    /// An unknown backend name, as [`crate::config::ConfigError::Env`].
    pub(crate) fn apply_env(
        &mut self,
        get: &impl Fn(&str) -> Option<String>,
    ) -> Result<(), crate::config::ConfigError> {
        crate::config::env_parse(get, "TERN_BLOB_STORE_BACKEND", &mut self.backend)?;
        if let Some(endpoint) = get("TERN_BLOB_STORE_S3_ENDPOINT") {
            self.s3_endpoint = Some(endpoint).filter(|e| !e.is_empty());
        }
        for (name, slot) in [
            ("TERN_BLOB_STORE_S3_BUCKET", &mut self.s3_bucket),
            ("TERN_BLOB_STORE_S3_REGION", &mut self.s3_region),
            ("TERN_BLOB_STORE_S3_PREFIX", &mut self.s3_prefix),
        ] {
            if let Some(value) = get(name) {
                *slot = value;
            }
        }
        Ok(())
    }

    /// The S3 backend's settings.
    pub fn s3(&self) -> S3BlobConfig {
        S3BlobConfig {
            endpoint: self.s3_endpoint.clone(),
            bucket: self.s3_bucket.clone(),
            region: self.s3_region.clone(),
            prefix: self.s3_prefix.clone(),
            credentials: self.s3_credentials.clone(),
        }
    }
}

/// `http://` or `https://`, then a host (a name, an IPv4 address or a
/// bracketed IPv6 one), an optional port 1 to 65535 and an optional path:
/// no credentials (`credentials` says where they go instead), query,
/// fragment, spaces or control characters. What passes is a URL the HTTP
/// clients behind `s3_endpoint` and `otlp_endpoint` accept (an unclosed
/// `[` used to pass here and panic inside the S3 client).
pub(crate) fn check_http_url(url: &str, credentials: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces".into());
    }
    if rest.contains(['?', '#']) {
        return Err("must not have a query (?) or a fragment (#)".into());
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(format!("must not hold credentials: {credentials}"));
    }
    let (host, port) = split_host_port(authority)?;
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !host_ok {
        return Err(format!(
            "must name a host (letters, digits, '-', '.', or [IPv6]), not {host:?}"
        ));
    }
    match port.map(|p| (p, p.parse::<u16>())) {
        Some((port, Err(_) | Ok(0))) => Err(format!("has a bad port {port:?} (1 to 65535)")),
        _ => Ok(()),
    }
}

/// The host and the optional port of `authority`. A bracketed IPv6 host is
/// checked here and returned as `ipv6`, which passes the caller's name check.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    let Some(bracketed) = authority.strip_prefix('[') else {
        return Ok(match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        });
    };
    let (v6, after) = bracketed
        .split_once(']')
        .ok_or("has an unclosed '[': write an IPv6 host as [::1]")?;
    v6.parse::<std::net::Ipv6Addr>()
        .map_err(|_| format!("has a bad IPv6 address {v6:?}"))?;
    match after {
        "" => Ok(("ipv6", None)),
        _ => after
            .strip_prefix(':')
            .map(|port| ("ipv6", Some(port)))
            .ok_or_else(|| format!("has {after:?} after the IPv6 address; expected :port")),
    }
}

/// S3's bucket naming rules (general purpose buckets).
fn check_bucket(bucket: &str) -> Result<(), String> {
    let bytes = bucket.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let ok = (3..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && !bucket.contains("..");
    if ok {
        Ok(())
    } else if bucket.is_empty() {
        Err("is required with backend = \"s3\": name an existing bucket".into())
    } else {
        Err("must be 3 to 63 lowercase letters, digits, '.' and '-', starting and ending with a letter or digit".into())
    }
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() {
        return Ok(());
    }
    let bad = prefix.split('/').any(|segment| {
        segment.is_empty()
            || segment == "."
            || segment == ".."
            || segment.chars().any(|c| c.is_control() || c == '\\')
    });
    if bad {
        return Err(
            "must be '/'-separated names without empty, '.' or '..' segments, e.g. tern/prod"
                .into(),
        );
    }
    Ok(())
}

/// Why the blob store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenBlobsError {
    #[error("cannot create the blob directory {path}: {source}")]
    Dir {
        path: std::path::PathBuf,
        source: BlobError,
    },
    #[error("cannot use the S3 blob store: {0}")]
    S3(BlobError),
}

/// Opens the configured blob store (`fs`: in `<data_dir>/blobs`).
///
/// # Errors
/// [`OpenBlobsError`]: the directory cannot be made, or the bucket is
/// missing, refuses the credentials or cannot be reached.
pub fn open(
    config: &BlobStoreConfig,
    data_dir: &Path,
) -> Result<Arc<dyn BlobStore>, OpenBlobsError> {
    match config.backend {
        BlobBackend::Fs => {
            let path = data_dir.join("blobs");
            FsBlobStore::open(&path)
                .map(|s| Arc::new(s) as Arc<dyn BlobStore>)
                .map_err(|source| OpenBlobsError::Dir { path, source })
        }
        BlobBackend::S3 => S3BlobStore::open(&config.s3())
            .map(|s| Arc::new(s) as Arc<dyn BlobStore>)
            .map_err(OpenBlobsError::S3),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s3(adjust: impl FnOnce(&mut BlobStoreConfig)) -> Result<(), BlobStoreConfigError> {
        let mut config = BlobStoreConfig {
            backend: BlobBackend::S3,
            s3_bucket: "tern-blobs".into(),
            ..BlobStoreConfig::default()
        };
        adjust(&mut config);
        config.validate()
    }

    #[test]
    fn s3_settings_are_checked() {
        assert!(
            BlobStoreConfig::default().validate().is_ok(),
            "fs needs nothing"
        );
        assert!(s3(|_| {}).is_ok());
        assert!(s3(|c| c.s3_endpoint = Some("http://127.0.0.1:9000".into())).is_ok());
        assert!(s3(|c| c.s3_endpoint = Some("https://s3.example.org/".into())).is_ok());
        assert!(s3(|c| c.s3_prefix = "tern/prod".into()).is_ok());
        type Adjust = fn(&mut BlobStoreConfig);
        let cases: [(Adjust, &str); 9] = [
            (|c| c.s3_bucket.clear(), "s3_bucket"),
            (|c| c.s3_bucket = "Tern_Blobs".into(), "s3_bucket"),
            (|c| c.s3_endpoint = Some("ftp://x".into()), "s3_endpoint"),
            (|c| c.s3_endpoint = Some("http://".into()), "s3_endpoint"),
            (
                |c| c.s3_endpoint = Some("http://h:99999".into()),
                "s3_endpoint",
            ),
            (
                |c| c.s3_endpoint = Some("http://k:s@h".into()),
                "s3_endpoint",
            ),
            (|c| c.s3_region.clear(), "s3_region"),
            (|c| c.s3_prefix = "a//b".into(), "s3_prefix"),
            (|c| c.s3_prefix = "../x".into(), "s3_prefix"),
        ];
        for (adjust, field) in cases {
            let e = s3(adjust).unwrap_err();
            assert_eq!(e.field, field, "{e}");
        }
    }

    /// Every endpoint that passes is one the S3 client can build a request
    /// for: `http://[::1` passed and then panicked inside object_store.
    #[test]
    fn s3_endpoints_are_checked_to_the_authority() {
        let endpoint = |url: &str| s3(|c| c.s3_endpoint = Some(url.into()));
        for good in [
            "http://[::1]:9000",
            "https://[2001:db8::1]/",
            "http://minio_1:9000/base",
            "http://10.0.0.1",
        ] {
            assert!(endpoint(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("http://[::1", "unclosed"),
            ("http://[::1]x", "after the IPv6"),
            ("http://[zz]:9000", "IPv6"),
            ("http://h:12:34", "bad port"),
            ("http://h:0", "bad port"),
            ("http://:9000", "host"),
            ("http://h^st:9000", "host"),
            ("http://h:9000?x=1", "query"),
            ("http://h#f", "fragment"),
        ] {
            let refused = endpoint(bad).unwrap_err();
            assert_eq!(refused.field, "s3_endpoint");
            assert!(refused.message.contains(says), "{bad}: {refused}");
        }
    }
}
