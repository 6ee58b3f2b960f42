//! The S3-compatible [`BlobStore`] (feature `s3`, issue 12): blobs as
//! objects in a bucket shared by the servers of a cluster, through the
//! `object_store` crate (AWS S3, MinIO, Ceph RGW, Cloudflare R2, moto).
//! Same contract as the filesystem backend (the module docs of
//! [`crate::blob`]); it passes the same conformance checks
//! (`tests/blob_conformance_s3.rs`). Object names: the `layout` submodule.
//!
//! # Resumable uploads with bounded memory
//! A partial upload is an S3 multipart upload plus one small record object
//! (`partial/<owner>/<id>`: the multipart upload's id, the ETags of the
//! parts uploaded so far, and the tail). The writer buffers at most one
//! part, [`PART_LEN`] = 5 MiB (S3's smallest part but the last): when the
//! buffer fills it goes out as the next part (the multipart upload is
//! created with the first), then the record is rewritten. Dropping a writer
//! (a lost connection) writes the buffered tail into the record, and a
//! resume reads it back into the buffer. So the record is the one source of
//! truth: [`BlobStore::status`] reports what it holds, bytes durably in S3
//! (while a writer of the upload is open in this process: that writer's
//! bytes, which its drop puts in S3, as a file's written bytes count in
//! the filesystem backend; if that last PUT fails, the client resumes from
//! the shorter length the status then reports). A part uploaded but not
//! yet recorded (a crash in between) is uploaded again under the same part
//! number, which replaces it. A blob smaller
//! than one part never creates a multipart upload: completing writes it
//! with one PUT.
//!
//! Why not one object per chunk with a manifest over them: that keeps
//! every chunk as a separate object forever (reads of a range then cross
//! objects, and each blob costs many objects), where multipart leaves one
//! ordinary object per blob that any S3 tool can read.
//!
//! **Memory bound:** an open writer holds at most [`PART_LEN`] (5 MiB)
//! besides the piece being written (the server's pieces are 256 KiB), so
//! the server holds at most 5 MiB per upload stream in flight, and the
//! number of those is capped by the existing limits (five blob streams per
//! connection, `docs/PROTOCOL.md` §1.2, times the connections). A reader
//! holds nothing: each read is one ranged GET of the caller's buffer.
//!
//! # Completing, atomically
//! Completing turns the upload into one object `data/<owner>/<id>/<nonce>`
//! (CompleteMultipartUpload, or one PUT), then creates the manifest
//! `blobs/<id>` only if absent (`If-None-Match: *`, S3 conditional writes,
//! 2024). The first upload to create the manifest wins across every
//! server of the cluster; a loser deletes its data object and gets
//! [`BlobError::AlreadyExists`] (its upload, which can never complete, is
//! dropped). A reader finds a blob only through its manifest, so it never
//! sees a half-written one. Requests are retried, so a retry may meet what
//! its first try did: a completed multipart upload is recognised by its
//! object (there, of the whole length), and our own manifest by its nonce.
//!
//! # Lifecycle
//! [`BlobStore::usage`] sums the sizes of the owner's data objects and the
//! lengths in its partial records. [`BlobStore::sweep_expired`] deletes
//! blobs whose manifest was written before the cut-off (its S3
//! `LastModified`), and data objects no manifest names (left by a crash
//! during completion). [`BlobStore::sweep_abandoned`] aborts the multipart
//! upload and deletes the record of partial uploads whose record was last
//! written before the cut-off and that have no open writer in this
//! process. Each sweep lists its prefix of the bucket (one LIST request per
//! 1,000 objects), and every server of a cluster sweeps, every
//! `sweep_interval_secs`: so a sweep whose cut-off is less than
//! [`SWEEP_STEP`] (10 minutes) past the last one's returns 0 without
//! listing, and blobs and uploads go at most that much later than their
//! time (30 days, 24 h). A crash between creating a multipart upload and recording it
//! leaves an incomplete multipart upload nothing names: give the bucket a
//! lifecycle rule `AbortIncompleteMultipartUpload` (e.g. 2 days).
//!
//! Differences from the filesystem backend: a reader open when its blob is
//! deleted fails its next read ([`BlobError::NotFound`]) instead of
//! finishing; [`BlobError::Busy`] is per process (two servers of a cluster
//! may each open a writer of one upload; the record of the last to write
//! wins, and the client resumes from the status it reports).
//!
//! # Calls block: the bridge
//! The trait is synchronous and `object_store` asynchronous. The backend
//! owns a small tokio runtime (two worker threads, `tern-s3`); each call
//! spawns its future there and waits on a channel, so it works on any
//! thread, including tokio's blocking pool where the server calls it
//! (`spawn_blocking`). It must not be called on an async worker thread
//! (that thread would block for the S3 round trip). A dropped
//! [`BlobWriter`] writes its tail to S3, so drop writers on a blocking
//! thread too.
//!
//! # Failure modes
//! Beyond those of [`crate::blob`]: a missing bucket, credentials S3
//! refuses, or an unreachable endpoint are [`BlobError::Io`] whose message
//! says which and what to fix; [`S3BlobStore::open`] checks all three
//! before the server takes traffic. Each request is retried with backoff
//! for up to [`RETRY_FOR`] and times out after [`REQUEST_TIMEOUT`].

mod layout;
mod ops;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, RetryConfig};

use super::{BlobError, BlobId, BlobReader, BlobStatus, BlobStore, BlobWriter};
pub use layout::PART_LEN;

/// How long one S3 request may take before it fails (and is retried).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a failing request is retried before the call fails.
pub const RETRY_FOR: Duration = Duration::from_secs(20);

/// How long [`S3BlobStore::open`] waits for its first listing (the
/// endpoint answers, the bucket exists, the key is accepted): room for
/// the retries of a slow start, not the whole [`REQUEST_TIMEOUT`] a
/// silent endpoint would hold the server's start for.
pub const OPEN_CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the S3 backend keeps blobs, and the key to sign with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3BlobConfig {
    /// The endpoint URL (`http://` or `https://`); `None`: AWS S3 itself.
    pub endpoint: Option<String>,
    /// The bucket; it must exist.
    pub bucket: String,
    /// The region (AWS: the bucket's; others: usually `us-east-1`).
    pub region: String,
    /// A path prefix inside the bucket (`""`: the bucket's root), so that
    /// several deployments can share one bucket.
    pub prefix: String,
    /// The key to sign with; `None`: [`S3Credentials::from_env`], else the
    /// instance's role (EC2/ECS/web identity).
    pub credentials: Option<S3Credentials>,
}

/// An S3 access key. Never read from a config file: from the environment
/// ([`S3Credentials::from_env`]) or given by an embedding program.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// For temporary credentials (STS).
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl S3Credentials {
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (and
    /// `AWS_SESSION_TOKEN` if set), when both are set.
    pub fn from_env() -> Option<S3Credentials> {
        let access_key_id = std::env::var("AWS_ACCESS_KEY_ID").ok()?;
        let secret_access_key = std::env::var("AWS_SECRET_ACCESS_KEY").ok()?;
        Some(S3Credentials {
            access_key_id,
            secret_access_key,
            session_token: std::env::var("AWS_SESSION_TOKEN").ok(),
        })
    }
}

/// The S3-compatible blob store. See the module docs.
#[derive(Debug)]
pub struct S3BlobStore {
    bridge: Bridge,
    /// Partial records (their paths) with an open writer in this process,
    /// and the bytes each writer holds.
    writing: Writing,
    /// The cut-offs of the last abandoned and expired sweeps that ran.
    swept: Mutex<[Option<std::time::SystemTime>; 2]>,
}

/// How far a sweep's cut-off must pass the last one's before the bucket
/// is listed again (see "Lifecycle" in the module docs).
pub const SWEEP_STEP: Duration = Duration::from_secs(600);

type Writing = Arc<Mutex<HashMap<String, Arc<AtomicU64>>>>;

/// The S3 client and where the blobs are.
#[derive(Debug)]
struct Inner {
    s3: AmazonS3,
    root: Path,
    bucket: String,
    endpoint: String,
    /// A key was given (settings or `AWS_*` variables); without one the
    /// client asks the instance metadata service for a role's.
    has_key: bool,
}

/// Runs futures on the backend's own runtime for synchronous callers.
#[derive(Clone, Debug)]
struct Bridge {
    runtime: Arc<OwnedRuntime>,
    inner: Arc<Inner>,
}

/// The runtime, shut down without blocking when the last user goes (it may
/// be dropped on an async thread, where a plain drop would panic).
#[derive(Debug)]
struct OwnedRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnedRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Bridge {
    /// Runs the future `f` makes on the backend's runtime and waits for it.
    fn run<T, F>(&self, f: impl FnOnce(Arc<Inner>) -> F) -> Result<T, BlobError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, BlobError>> + Send + 'static,
    {
        let Some(rt) = self.runtime.0.as_ref() else {
            return Err(stopped());
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let future = f(self.inner.clone());
        rt.spawn(async move {
            let _ = tx.send(future.await);
        });
        rx.recv().unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> BlobError {
    BlobError::Io(std::io::Error::other(
        "the S3 blob store's runtime stopped (the server is shutting down)",
    ))
}

impl S3BlobStore {
    /// Connects to the bucket and checks that it exists and that the
    /// credentials may list it.
    ///
    /// # Errors
    /// [`BlobError::Io`] saying what to fix: a bad endpoint URL, a missing
    /// bucket, refused credentials, an unreachable endpoint.
    pub fn open(config: &S3BlobConfig) -> Result<S3BlobStore, BlobError> {
        Self::open_within(config, OPEN_CHECK_TIMEOUT)
    }

    /// [`S3BlobStore::open`], giving the check at most `limit`.
    fn open_within(config: &S3BlobConfig, limit: Duration) -> Result<S3BlobStore, BlobError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tern-s3")
            .enable_all()
            .build()?;
        let inner = Arc::new(build(config)?);
        let store = S3BlobStore {
            bridge: Bridge {
                runtime: Arc::new(OwnedRuntime(Some(runtime))),
                inner,
            },
            writing: Arc::default(),
            swept: Mutex::default(),
        };
        store.bridge.run(move |inner| async move {
            match tokio::time::timeout(limit, inner.check()).await {
                Ok(checked) => checked,
                Err(_) => Err(BlobError::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the S3 endpoint {} did not answer within {} s: check \
                         blob_store.s3_endpoint and that it is reachable from this host",
                        inner.endpoint,
                        limit.as_secs()
                    ),
                ))),
            }
        })?;
        Ok(store)
    }
}

/// The `object_store` client for `config`.
fn build(config: &S3BlobConfig) -> Result<Inner, BlobError> {
    // reqwest's rustls needs a process-wide crypto provider: tern uses ring
    // (an error means one is installed already, which is as good).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let retry = RetryConfig {
        max_retries: 5,
        retry_timeout: RETRY_FOR,
        ..RetryConfig::default()
    };
    let options = ClientOptions::new()
        .with_timeout(REQUEST_TIMEOUT)
        .with_connect_timeout(Duration::from_secs(5));
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&config.bucket)
        .with_region(&config.region)
        .with_retry(retry)
        .with_client_options(options);
    let endpoint = match &config.endpoint {
        Some(url) => {
            builder = builder
                .with_endpoint(url)
                .with_allow_http(url.starts_with("http://"));
            url.clone()
        }
        None => format!("https://s3.{}.amazonaws.com", config.region),
    };
    let key = config.credentials.clone().or_else(S3Credentials::from_env);
    let has_key = key.is_some();
    if let Some(key) = key {
        builder = builder
            .with_access_key_id(key.access_key_id)
            .with_secret_access_key(key.secret_access_key);
        if let Some(token) = key.session_token {
            builder = builder.with_token(token);
        }
    }
    let s3 = builder.build().map_err(|e| {
        BlobError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the S3 blob store's settings are invalid: {e}"),
        ))
    })?;
    let root = Path::parse(config.prefix.trim_matches('/')).map_err(|e| {
        BlobError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "the S3 prefix {:?} is no valid object path: {e}",
                config.prefix
            ),
        ))
    })?;
    Ok(Inner {
        s3,
        root,
        bucket: config.bucket.clone(),
        endpoint,
        has_key,
    })
}

/// Marks an upload as written to until dropped (one writer per upload in
/// this process), with the bytes its writer holds: those count in
/// [`BlobStore::status`] and [`BlobStore::usage`] like a file's written
/// bytes (the writer puts them in S3 when dropped).
#[derive(Debug)]
struct WritingGuard {
    set: Writing,
    key: String,
    len: Arc<AtomicU64>,
}

impl WritingGuard {
    fn claim(set: &Writing, path: &Path) -> Result<WritingGuard, BlobError> {
        let key = path.to_string();
        let mut writing = set.lock().unwrap_or_else(|e| e.into_inner());
        if writing.contains_key(&key) {
            return Err(BlobError::Busy);
        }
        let len = Arc::new(AtomicU64::new(0));
        writing.insert(key.clone(), len.clone());
        Ok(WritingGuard {
            set: set.clone(),
            key,
            len,
        })
    }

    fn set_len(&self, len: u64) {
        self.len.store(len, Ordering::Relaxed);
    }
}

impl Drop for WritingGuard {
    fn drop(&mut self) {
        let mut writing = self.set.lock().unwrap_or_else(|e| e.into_inner());
        writing.remove(&self.key);
    }
}

impl S3BlobStore {
    /// Whether sweep `which` (0: abandoned, 1: expired) with cut-off
    /// `before` should list the bucket: the first one, or one whose cut-off
    /// passed the last one's by [`SWEEP_STEP`].
    fn sweep_due(&self, which: usize, before: std::time::SystemTime) -> bool {
        let swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        match swept.get(which).copied().flatten() {
            Some(last) => last
                .checked_add(SWEEP_STEP)
                .is_some_and(|next| before >= next),
            None => true,
        }
    }

    fn swept_to(&self, which: usize, before: std::time::SystemTime) {
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = swept.get_mut(which) {
            *slot = Some(before);
        }
    }
}

/// The open writers' lengths of the partial records under `prefix`.
fn open_writers(set: &Writing, prefix: &Path) -> HashMap<String, u64> {
    let writing = set.lock().unwrap_or_else(|e| e.into_inner());
    writing
        .iter()
        .filter(|(key, _)| Path::from(key.as_str()).prefix_matches(prefix))
        .map(|(key, len)| (key.clone(), len.load(Ordering::Relaxed)))
        .collect()
}

impl BlobStore for S3BlobStore {
    fn status(&self, owner: &str, id: &BlobId) -> Result<BlobStatus, BlobError> {
        let names = layout::Names::new(&self.bridge.inner.root, owner, id)?;
        let open = open_writers(&self.writing, &names.partial);
        let open = open.get(names.partial.as_ref()).copied();
        self.bridge
            .run(move |inner| async move { inner.status(&names, open).await })
    }

    fn writer(
        &self,
        owner: &str,
        id: &BlobId,
        offset: u64,
    ) -> Result<Box<dyn BlobWriter>, BlobError> {
        let names = layout::Names::new(&self.bridge.inner.root, owner, id)?;
        writer::S3Writer::open(self.bridge.clone(), &self.writing, names, offset)
            .map(|w| Box::new(w) as Box<dyn BlobWriter>)
    }

    fn reader(&self, id: &BlobId) -> Result<Box<dyn BlobReader>, BlobError> {
        writer::S3Reader::open(self.bridge.clone(), id).map(|r| Box::new(r) as Box<dyn BlobReader>)
    }

    fn delete(&self, id: &BlobId) -> Result<(), BlobError> {
        let id = *id;
        self.bridge
            .run(move |inner| async move { inner.delete_blob(&id).await })
    }

    fn abandon(&self, owner: &str, id: &BlobId) -> Result<(), BlobError> {
        let names = layout::Names::new(&self.bridge.inner.root, owner, id)?;
        self.bridge
            .run(|inner| async move { inner.drop_partial(&names.partial).await })
    }

    fn sweep_abandoned(&self, before: std::time::SystemTime) -> Result<u64, BlobError> {
        if !self.sweep_due(0, before) {
            return Ok(0);
        }
        let writing = self.writing.clone();
        let swept = self
            .bridge
            .run(move |inner| async move { inner.sweep_abandoned(before, &writing).await })?;
        self.swept_to(0, before);
        Ok(swept)
    }

    fn usage(&self, owner: &str) -> Result<u64, BlobError> {
        if owner.len() > layout::MAX_OWNER_BYTES {
            return Ok(0);
        }
        let owner_hex = super::hex(owner.as_bytes());
        let prefix = self
            .bridge
            .inner
            .root
            .clone()
            .join("partial")
            .join(owner_hex.as_str());
        let open = open_writers(&self.writing, &prefix);
        self.bridge
            .run(move |inner| async move { inner.usage(&owner_hex, open).await })
    }

    fn sweep_expired(&self, before: std::time::SystemTime) -> Result<u64, BlobError> {
        if !self.sweep_due(1, before) {
            return Ok(0);
        }
        let swept = self
            .bridge
            .run(move |inner| async move { inner.sweep_expired(before).await })?;
        self.swept_to(1, before);
        Ok(swept)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn config(endpoint: String, credentials: Option<S3Credentials>) -> S3BlobConfig {
        S3BlobConfig {
            endpoint: Some(endpoint),
            bucket: "tern-blobs".into(),
            region: "us-east-1".into(),
            prefix: String::new(),
            credentials,
        }
    }

    fn key() -> S3Credentials {
        S3Credentials {
            access_key_id: "id".into(),
            secret_access_key: "secret".into(),
            session_token: None,
        }
    }

    #[test]
    fn an_endpoint_that_never_answers_fails_the_open_within_its_limit() {
        // Accepts the connection (the kernel's backlog) and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", silent.local_addr().unwrap());
        let limit = Duration::from_secs(1);
        let Err(e) = S3BlobStore::open_within(&config(endpoint.clone(), Some(key())), limit) else {
            panic!("opened a silent endpoint");
        };
        let message = e.to_string();
        assert!(
            message.contains(&format!("{endpoint} did not answer within 1 s")),
            "{message}"
        );
    }

    #[test]
    fn a_refusal_without_a_key_says_to_set_one() {
        let unauthenticated = || object_store::Error::Unauthenticated {
            path: "blobs/".into(),
            source: "no credentials".into(),
        };
        let keyless = build(&config("http://127.0.0.1:9".into(), None));
        // The test's environment may hold a key: only the flag matters here.
        let keyless = Inner {
            has_key: false,
            ..keyless.unwrap()
        };
        let said = keyless.err(unauthenticated()).to_string();
        assert!(said.contains("no S3 key for bucket"), "{said}");
        let keyed = build(&config("http://127.0.0.1:9".into(), Some(key()))).unwrap();
        let said = keyed.err(unauthenticated()).to_string();
        assert!(said.contains("refused the credentials"), "{said}");
    }
}
