//! The one integration harness: boots a real tern server on 127.0.0.1 port 0
//! (in-process, or as a child process for kill -9 tests) over a temporary data
//! directory, and makes real clients that connect to it over QUIC.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

pub mod admin;
pub mod pushes;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use bytes::Bytes;
use std::sync::Arc;
use tempfile::TempDir;
use tern_client::connection::{client_endpoint, RawConnection};
use tern_client::identity::Identity;
use tern_client::{Client, ClientOptions, TrustAnchor};
use tern_proto::fingerprint::parse_fingerprint;
use tern_proto::{Body, ConversationKind, Frame, Message};
use tokio::time::timeout;

use tern_server::{start, start_with, Clock, ServerConfig, ServerHandle, Services};
use tern_store::Store;
use tern_store_fjall::FjallStore;

/// Longest a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// A raw connection (nothing sent yet) to the server at `addr` with this
/// certificate fingerprint. Its endpoint lives as long as the test.
pub async fn raw_connection_to(addr: SocketAddr, fingerprint: [u8; 32]) -> RawConnection {
    let endpoint = client_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        &TrustAnchor::Fingerprint(fingerprint),
    )
    .unwrap();
    let conn = RawConnection::connect(&endpoint, addr, "localhost")
        .await
        .expect("connects");
    std::mem::forget(endpoint);
    conn
}

/// Moves a server's manual clock forward `step_ms` at a time until `event`
/// completes, giving the server 50 ms of real time before each step (the
/// event is polled throughout, never restarted). Returns how far the clock
/// moved, and the event's output; fails after 24 steps.
pub async fn advance_until<T>(
    clock: &Clock,
    step_ms: u64,
    event: impl std::future::Future<Output = T>,
) -> (u64, T) {
    tokio::pin!(event);
    let mut moved = 0;
    loop {
        if let Ok(out) = timeout(Duration::from_millis(50), &mut event).await {
            return (moved, out);
        }
        assert!(
            moved < 24 * step_ms,
            "nothing happened in {moved} ms of server time"
        );
        clock.advance(step_ms);
        moved += step_ms;
    }
}

/// A server running in this process.
pub struct TestServer {
    handle: Option<ServerHandle>,
    pub addr: SocketAddr,
    pub fingerprint: [u8; 32],
    pub config: ServerConfig,
    data: TempDir,
}

/// Settings every test server uses unless a test changes them.
pub fn test_config(data: &Path, shards: usize) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.to_path_buf(),
        shards,
        // A store failure in an in-process server must not end the test run.
        exit_on_store_failure: false,
        ..ServerConfig::default()
    }
}

impl TestServer {
    pub fn start(shards: usize) -> TestServer {
        Self::start_with(shards, |_| {})
    }

    pub fn start_with(shards: usize, adjust: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(data.path(), shards);
        adjust(&mut config);
        let handle = start(config.clone()).expect("server starts");
        Self::running(handle, config, data)
    }

    /// A server on a store the test made (a fault-injecting wrapper, say).
    pub fn start_on_store(shards: usize, store: Arc<dyn Store>) -> TestServer {
        let data = tempfile::tempdir().expect("temp dir");
        let config = test_config(data.path(), shards);
        let services = Services {
            store,
            clock: Clock::system(),
        };
        let handle = start_with(config.clone(), services).expect("server starts");
        Self::running(handle, config, data)
    }

    /// A server on a store the test made, with its configuration adjusted.
    pub fn start_on_store_with(
        shards: usize,
        store: Arc<dyn Store>,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(data.path(), shards);
        adjust(&mut config);
        let services = Services {
            store,
            clock: Clock::system(),
        };
        let handle = start_with(config.clone(), services).expect("server starts");
        Self::running(handle, config, data)
    }

    /// A server on the embedded store whose clock the test moves.
    pub fn start_with_clock(
        shards: usize,
        clock: Clock,
        adjust: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let data = tempfile::tempdir().expect("temp dir");
        let mut config = test_config(data.path(), shards);
        adjust(&mut config);
        let store = FjallStore::open(&data.path().join("store")).expect("store opens");
        let services = Services {
            store: Arc::new(store),
            clock,
        };
        let handle = start_with(config.clone(), services).expect("server starts");
        Self::running(handle, config, data)
    }

    fn running(handle: ServerHandle, config: ServerConfig, data: TempDir) -> TestServer {
        let fingerprint = parse_fingerprint(&handle.fingerprint).expect("fingerprint");
        TestServer {
            addr: handle.local_addr,
            fingerprint,
            handle: Some(handle),
            config,
            data,
        }
    }

    pub fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().expect("server running")
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn options(&self, state: &Path) -> ClientOptions {
        let mut o =
            ClientOptions::new(self.addr, TrustAnchor::Fingerprint(self.fingerprint), state);
        o.request_timeout = WAIT;
        o.reconnect_max = Duration::from_millis(500);
        o
    }

    /// Registers a new account that anyone may add to groups (for tests
    /// that are not about consent) and returns its connected client.
    pub async fn register(&self, user: &str) -> TestClient {
        let client = self.register_private(user).await;
        client
            .set_privacy(tern_proto::GroupAdds::Everyone)
            .await
            .expect("set privacy");
        client
    }

    /// Registers a new account as an end-to-end-encrypting device (a
    /// `SecureClient`) that anyone may add to groups; returns it with its
    /// state directory (keep it for the client's life).
    pub async fn register_secure(
        &self,
        user: &str,
    ) -> (tern_client::secure::SecureClient, TempDir) {
        let state = tempfile::tempdir().expect("temp dir");
        let client =
            tern_client::secure::SecureClient::register(self.options(state.path()), user, "phone")
                .await
                .expect("register");
        client
            .transport()
            .set_privacy(tern_proto::GroupAdds::Everyone)
            .await
            .expect("set privacy");
        (client, state)
    }

    /// Registers a new account with the default privacy (only contacts
    /// may add it to groups) and returns its connected client.
    pub async fn register_private(&self, user: &str) -> TestClient {
        let state = tempfile::tempdir().expect("temp dir");
        let client = Client::register(self.options(state.path()), user, "test")
            .await
            .expect("register");
        TestClient {
            client: Some(client),
            state,
        }
    }

    /// A raw connection with its control stream open, nothing sent.
    pub async fn raw_connection(&self) -> RawConnection {
        raw_connection_to(self.addr, self.fingerprint).await
    }

    /// A second, raw connection of `client`'s own device, authenticated:
    /// the server pushes it every frame it pushes to that device, so it sees
    /// what the SDK would filter out before a test could.
    pub async fn raw_connection_of(&self, client: &TestClient) -> RawConnection {
        let identity = Identity::load(client.state.path()).expect("identity");
        let mut conn = self.raw_connection().await;
        let frame = conn
            .authenticate_frame(1, &identity.user, identity.device, &identity.key)
            .unwrap();
        let reply = tokio::time::timeout(WAIT, conn.call(&frame))
            .await
            .expect("authenticated in time")
            .expect("answer");
        assert!(matches!(reply.body, Body::Authenticated(_)), "{reply:?}");
        conn
    }

    /// Graceful shutdown (drains and persists), then a fresh start on the same
    /// data directory and port 0 (the address changes).
    pub async fn restart(&mut self) {
        self.stop().await;
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..self.config.clone()
        };
        let handle = tokio::task::spawn_blocking(move || start(config))
            .await
            .unwrap()
            .expect("restarts");
        self.addr = handle.local_addr;
        self.handle = Some(handle);
    }

    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            tokio::task::spawn_blocking(move || handle.shutdown())
                .await
                .unwrap();
        }
    }
}

/// A registered client and the state directory it keeps its identity in.
pub struct TestClient {
    client: Option<Client>,
    pub state: TempDir,
}

impl Deref for TestClient {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("client open")
    }
}

impl TestClient {
    /// Closes the connection (the device goes offline), keeping its state.
    pub async fn go_offline(&mut self) {
        if let Some(client) = self.client.take() {
            client.close().await;
        }
    }

    /// Reconnects from the saved identity to `server`.
    pub async fn come_online(&mut self, server: &TestServer) {
        let client = Client::connect(server.options(self.state.path()))
            .await
            .expect("reconnect");
        self.client = Some(client);
    }

    /// The next delivered message, failing the test after [`WAIT`].
    pub async fn expect_message(&self) -> Message {
        tokio::time::timeout(WAIT, self.next_message())
            .await
            .expect("a message arrives in time")
            .expect("client open")
    }

    /// Sends a uniquely marked sentinel message into `conversation` and
    /// returns its payload, for [`TestClient::expect_next_is`].
    pub async fn send_sentinel(&self, conversation: u64) -> Bytes {
        let payload = Bytes::from(format!("sentinel {:016x}", rand::random::<u64>()));
        self.send(conversation, payload.clone())
            .await
            .expect("sentinel sent");
        payload
    }

    /// The negative check, without sleeping: asserts that the next message
    /// this client receives is exactly `payload` in `conversation` (a
    /// sentinel sent after the event under test), so nothing arrived before
    /// it. Within one conversation pushes keep their order; across
    /// conversations, send the sentinel only after the event under test
    /// was observed elsewhere.
    pub async fn expect_next_is(&self, conversation: u64, payload: &[u8]) -> Message {
        let m = self.expect_message().await;
        assert_eq!(
            (m.conversation_id, &m.payload[..]),
            (conversation, payload),
            "expected the sentinel next, got {m:?}"
        );
        m
    }
}

/// The next frame the server pushes on a raw connection (request id 0),
/// failing the test after [`WAIT`].
pub async fn next_push(conn: &mut RawConnection) -> Frame {
    let frame = tokio::time::timeout(WAIT, conn.receiver.next())
        .await
        .expect("a push arrives in time")
        .expect("reading the push succeeds")
        .expect("the stream is still open");
    assert_eq!(frame.request_id, 0, "not a push: {frame:?}");
    frame
}

/// A server running as a child process of the real `tern` binary.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    pub fingerprint: [u8; 32],
}

impl ServerProcess {
    pub fn spawn(data: &Path, shards: usize) -> ServerProcess {
        Self::spawn_with_config(data, shards, "")
    }

    /// Like [`ServerProcess::spawn`], with `toml` as its configuration file
    /// (written next to `data`), e.g. `"auth_timeout_secs = 1"`; none if
    /// `toml` is empty.
    pub fn spawn_with_config(data: &Path, shards: usize, toml: &str) -> ServerProcess {
        Self::spawn_with_config_env(data, shards, toml, &[])
    }

    /// Like [`ServerProcess::spawn_with_config`], with `env` added to the
    /// process's environment (e.g. the S3 key of a shared bucket).
    pub fn spawn_with_config_env(
        data: &Path,
        shards: usize,
        toml: &str,
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tern"));
        command.envs(env.iter().copied());
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--shards",
                &shards.to_string(),
                "--data",
            ])
            .arg(data);
        if !toml.is_empty() {
            let config = data.with_extension("toml");
            std::fs::write(&config, toml).expect("config written");
            command.arg("--config").arg(config);
        }
        let mut child = command
            // TERN_TEST_SERVER_LOG (e.g. `warn,tern::trim=debug`) shows more.
            .env(
                "RUST_LOG",
                std::env::var("TERN_TEST_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn tern serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().expect("address line").expect("utf8");
        let second = lines.next().expect("fingerprint line").expect("utf8");
        let addr = first
            .split_whitespace()
            .nth(3)
            .expect("address")
            .parse()
            .expect("socket address");
        let fingerprint =
            parse_fingerprint(second.rsplit(' ').next().expect("fp")).expect("fingerprint");
        ServerProcess {
            child,
            addr,
            fingerprint,
        }
    }

    pub fn options(&self, state: &Path) -> ClientOptions {
        let mut o =
            ClientOptions::new(self.addr, TrustAnchor::Fingerprint(self.fingerprint), state);
        o.request_timeout = WAIT;
        o
    }

    /// A raw connection to this server (nothing sent yet).
    pub async fn raw_connection(&self) -> RawConnection {
        raw_connection_to(self.addr, self.fingerprint).await
    }

    /// The server's process id (for its RSS in `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (polling) for the process to exit by itself, at most `limit`.
    pub fn wait_exit(mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM and wait for a graceful exit.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM");
        self.child.wait().expect("exits")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory path that outlives one server process.
/// How long one `tern` command of a test may run before it counts as hung.
pub const TERN_RUN_LIMIT: Duration = Duration::from_secs(120);

/// Runs the `tern` binary built for these tests with `args` (logging at
/// `warn`) and returns its output, whatever its exit status. A command
/// still running after [`TERN_RUN_LIMIT`] (a `tern listen --count N` that
/// never gets N messages, say) is killed and the test fails, instead of
/// hanging the suite.
pub fn run_tern(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<_>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<_>));
    let deadline = std::time::Instant::now() + TERN_RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "tern {} did not finish within {TERN_RUN_LIMIT:?}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout"),
        stderr: stderr.join().expect("stderr"),
    }
}

/// The standard output of a `tern` run that succeeded; panics with its
/// standard error otherwise.
pub fn tern_ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Creates account `user` (device 1, a placeholder key) directly in
/// `store`, open to being added to groups by anyone: for tests that need
/// many members and none of them connected.
pub async fn seed_account(store: &tern_store::memory::MemStore, user: &str) {
    use tern_store::{AccountStore, ConsentStore, DeviceRecord, GroupAdds};
    let device = DeviceRecord {
        device: 1,
        name: "seed".into(),
        public_key: [7; 32],
        created_ms: 0,
    };
    store.create_account(user, device).await.expect("account");
    store
        .set_group_adds(user, GroupAdds::Everyone)
        .await
        .expect("privacy");
}

pub fn data_dir() -> (TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data");
    (dir, path)
}

/// Two authenticated clients with a direct conversation that must keep
/// working whatever another connection does.
pub struct Bystanders {
    pub a: TestClient,
    pub b: TestClient,
    pub conversation: u64,
    pub sent: u32,
}

impl Bystanders {
    pub async fn new(server: &TestServer) -> Bystanders {
        let a = server.register("bystander-a").await;
        let b = server.register("bystander-b").await;
        let info = a
            .create_conversation(ConversationKind::Direct, &["bystander-b"])
            .await
            .expect("create");
        let mut pair = Bystanders {
            a,
            b,
            conversation: info.id,
            sent: 0,
        };
        pair.check().await;
        pair
    }

    /// One send from a, acked durable, and its delivery to b.
    pub async fn check(&mut self) {
        self.sent += 1;
        let payload = Bytes::from(format!("bystander message {}", self.sent));
        let receipt = timeout(WAIT, self.a.send(self.conversation, payload.clone()))
            .await
            .expect("bystander send answered in time")
            .expect("bystander send succeeds");
        assert_eq!(receipt.seq, u64::from(self.sent));
        let m = self.b.expect_message().await;
        assert_eq!(
            (m.conversation_id, m.seq, &m.payload),
            (self.conversation, receipt.seq, &payload)
        );
    }
}

/// Paths of the files under `dir` (recursively) whose bytes contain
/// `needle`, appended to `found`: the data-directory scan of the
/// server-blind and erasure tests (e2ee.rs, content.rs, authority.rs).
pub fn files_containing(dir: &Path, needle: &[u8], found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_containing(&path, needle, found);
        } else if let Ok(bytes) = std::fs::read(&path) {
            if bytes.windows(needle.len()).any(|w| w == needle) {
                found.push(path.display().to_string());
            }
        }
    }
}

/// The server-blind check: the data directory under `dir` holds `control`
/// (a payload sent around the encryption layer, so the scan provably sees
/// stored payloads) and none of the plaintext `markers`.
pub fn assert_server_blind(dir: &Path, control: &[u8], markers: &[impl AsRef<str>]) {
    let mut control_hits = Vec::new();
    files_containing(dir, control, &mut control_hits);
    assert!(
        !control_hits.is_empty(),
        "the scan cannot see stored payloads"
    );
    for marker in markers {
        let marker = marker.as_ref();
        let mut hits = Vec::new();
        files_containing(dir, marker.as_bytes(), &mut hits);
        assert!(hits.is_empty(), "plaintext {marker} found in {hits:?}");
    }
}

/// Links a second device to `user`'s account, approved from `first`.
pub async fn link_device(server: &TestServer, first: &TestClient, user: &str) -> Client {
    let state = tempfile::tempdir().unwrap();
    let options = server.options(state.path());
    std::mem::forget(state);
    let user = user.to_owned();
    let linking = tokio::spawn(async move { Client::link(options, &user, "laptop").await });
    loop {
        let notice = timeout(WAIT, first.next_notice()).await.unwrap().unwrap();
        if let Body::LinkPrompt(tern_proto::body::devices::LinkPrompt { link_id, .. }) = notice {
            first.approve_link(link_id, true).await.unwrap();
            break;
        }
    }
    linking.await.unwrap().unwrap()
}
