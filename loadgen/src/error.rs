//! The one error type of tern-load. Every message says what went wrong and
//! what to do about it, because a load run is usually started by hand.

use std::net::SocketAddr;
use std::path::PathBuf;

use tern_client::connection::ConnectionError;
use tern_proto::fingerprint::FingerprintError;

/// Why a load run (or one of its steps) failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid arguments: {0}")]
    Usage(String),
    #[error("cannot find the server binary at {0}; build it with `cargo build --release --bin tern` or pass --tern-bin PATH")]
    MissingBinary(PathBuf),
    #[error(
        "cannot start {bin}: {source}; check that it is an executable tern (or tern-load) binary"
    )]
    Spawn {
        bin: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the server did not announce its address and fingerprint: {detail}; its log is at {log}"
    )]
    ServerStartup { detail: String, log: PathBuf },
    #[error("cannot reach the server at {addr}: {detail}; check that it is running, that --server is right and that --fingerprint is the one it printed")]
    Unreachable { addr: SocketAddr, detail: String },
    #[error("the server refused {what}: {code} {message}")]
    Refused {
        what: String,
        code: String,
        message: String,
    },
    #[error("the server answered {what} with an unexpected {got}; is this a tern/1 server of the same version?")]
    Unexpected { what: String, got: String },
    #[error("timed out after {secs} s waiting for {what}; the server may be overloaded: lower the rate or the connection count")]
    Timeout { what: String, secs: u64 },
    #[error("the server closed the connection during {0}")]
    Closed(String),
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    #[error(transparent)]
    Fingerprint(#[from] FingerprintError),
    #[error("cannot open a client UDP socket: {0}; raise the file-descriptor limit (ulimit -n) or use fewer --endpoints")]
    Socket(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}; check that its directory exists and is writable")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a tern-load JSON report: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot draw the plot {path}: {detail}")]
    Plot { path: PathBuf, detail: String },
    #[error(
        "cannot read process {pid} in /proc: {detail}; --server-pid must name a live local process"
    )]
    Proc { pid: u32, detail: String },
    #[error("a load task failed: {0}")]
    Task(String),
    #[error("echo server: {0}")]
    Echo(String),
    #[error("a blob stream failed ({0}); the server may have closed the connection: see its log")]
    Stream(String),
}

/// Shorthand used across the crate.
pub type Result<T, E = LoadError> = std::result::Result<T, E>;
