//! A real `redis-server` for the tests of the Redis presence backend:
//! started on a free loopback port over a temporary directory, without
//! persistence (a restart starts empty, like a lost Redis), killed on drop.
//! `scripts/install-redis.sh` installs Debian's package when it is missing
//! (`scripts/test.sh`, hence CI, runs it first); a test that finds no
//! `redis-server` fails saying so.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a started `redis-server` may take to answer PING.
const READY: Duration = Duration::from_secs(10);

/// One running `redis-server`.
pub struct RedisServer {
    pub port: u16,
    dir: TempDir,
    child: Option<Child>,
}

/// The `redis-server` binary: on PATH or where Debian's package puts it.
fn binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"));
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "redis-server not found: run scripts/install-redis.sh (apt-get install -y redis-server)"
    );
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> RedisServer {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut server = RedisServer {
            port,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:PORT`, for `redis_url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + READY;
        while self.command("PING").as_deref() != Some("+PONG") {
            assert!(
                Instant::now() < deadline,
                "redis-server on {} never answered",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills it (SIGKILL) and waits for it to be gone: everything it held is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again, empty, on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Empties it (`FLUSHALL`), as an operator or a failover would.
    pub fn flushall(&self) {
        assert_eq!(self.command("FLUSHALL").as_deref(), Some("+OK"));
    }

    /// Sends one inline command; its first reply line, if it answered.
    pub fn command(&self, line: &str) -> Option<String> {
        let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(format!("{line}\r\n").as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while !reply.ends_with(b"\r\n") {
            if stream.read(&mut byte).ok()? == 0 {
                return None;
            }
            reply.push(byte[0]);
        }
        reply.truncate(reply.len() - 2);
        String::from_utf8(reply).ok()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
