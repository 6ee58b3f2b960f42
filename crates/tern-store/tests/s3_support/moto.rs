//! A real S3-compatible server for tests: moto (`python3 -m moto.server`,
//! PyPI `moto[server]`, installed by `scripts/install-moto.sh`) on a free
//! port, killed on drop. Without moto, [`Moto::start`] prints a visible
//! "skipped" line and returns `None`, unless `CI` is set: there a missing
//! moto fails the test.

// Test support: a failed expect is a failed test, with its message.
#![allow(clippy::expect_used, dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tern_store::blob::s3::{S3BlobConfig, S3Credentials};

/// How long a started moto may take to answer.
const STARTUP: Duration = Duration::from_secs(60);

/// One running moto server.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl Moto {
    /// Starts moto on a free port and waits until it answers HTTP; `None`
    /// (after a "skipped" line) when moto is not installed and `CI` unset.
    pub fn start() -> Option<Moto> {
        Moto::start_checking(false)
    }

    /// Like [`Moto::start`]; with `check_keys`, moto checks signatures
    /// against its IAM users (it has none: every key is refused).
    pub fn start_checking(check_keys: bool) -> Option<Moto> {
        let installed = Command::new("python3")
            .args(["-c", "import moto.server, flask"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !installed {
            let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
            assert!(
                !ci,
                "moto (the S3 test server) is not installed: run scripts/install-moto.sh"
            );
            // Straight to the stderr handle: libtest captures eprintln! of a
            // passing test, and this line must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: moto (the S3 test server) is not installed; run \
                 scripts/install-moto.sh to install moto and run the S3 blob backend's tests"
            );
            return None;
        }
        // A free port may be taken between our probe and moto's bind by a
        // parallel test: then moto exits, and we try another.
        for _ in 0..3 {
            if let Some(moto) = Moto::spawn(check_keys) {
                return Some(moto);
            }
        }
        panic!("moto exited at start on three ports (python3 -m moto.server)");
    }

    /// Starts moto on a free port; `None` when it exits before answering.
    fn spawn(check_keys: bool) -> Option<Moto> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut command = Command::new("python3");
        if check_keys {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let child = command
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m moto.server starts");
        let mut moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            let answered = moto.request("GET", "/").is_some();
            // Alive after answering: the answer was ours, not another
            // test's moto that took the port first.
            match moto.child.try_wait() {
                Ok(None) if answered => return Some(moto),
                Ok(None) => {}
                _ => return None,
            }
            assert!(
                Instant::now() < deadline,
                "moto on port {port} never answered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates a bucket named after `bucket` (made unique, so that tests
    /// never share one) and returns the S3 backend's settings for it.
    pub fn bucket(&self, bucket: &str) -> S3BlobConfig {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let bucket = format!("{bucket}-{}-{n}", std::process::id());
        let status = self
            .request("PUT", &format!("/{bucket}"))
            .expect("moto answers");
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "create bucket: {status}"
        );
        self.config(&bucket)
    }

    /// The settings for `bucket` (created or not) on this server.
    pub fn config(&self, bucket: &str) -> S3BlobConfig {
        S3BlobConfig {
            endpoint: Some(self.endpoint.clone()),
            bucket: bucket.to_owned(),
            region: "us-east-1".to_owned(),
            prefix: "tern".to_owned(),
            credentials: Some(Self::credentials()),
        }
    }

    /// The key moto accepts (any).
    pub fn credentials() -> S3Credentials {
        S3Credentials {
            access_key_id: "testing".to_owned(),
            secret_access_key: "testing".to_owned(),
            session_token: None,
        }
    }

    /// One plain HTTP/1.1 request (moto takes unsigned ones); the status
    /// line, or `None` when nothing answers yet.
    fn request(&self, method: &str, path: &str) -> Option<String> {
        let addr = self.endpoint.trim_start_matches("http://");
        let mut stream = TcpStream::connect(addr).ok()?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).ok()?;
        let text = String::from_utf8_lossy(&answer);
        let line = text.lines().next()?.to_owned();
        line.starts_with("HTTP/").then_some(line)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
