//! Connection liveness as a user meets it: a client pointed at an address
//! where no server answers fails promptly with a clear error, instead of
//! hanging for the QUIC idle timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use tern_client::connection::ConnectionError;
use tern_client::{Client, ClientError, ClientOptions, TrustAnchor};

/// A UDP port that is bound (so no ICMP "port unreachable" comes back) but
/// where nothing ever reads or answers: a silent address.
fn silent_port() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

#[tokio::test]
async fn connecting_where_no_server_answers_fails_within_the_connect_timeout() {
    let silent = silent_port();
    let addr = silent.local_addr().unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut options = ClientOptions::new(addr, TrustAnchor::Fingerprint([7; 32]), state.path());
    options.connect_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let result = tokio::time::timeout(common::WAIT, Client::register(options, "alice", "terminal"))
        .await
        .expect("the connect timeout ends the attempt, not the test's safety net");
    let Err(error) = result else {
        panic!("registered with a silent address")
    };
    assert!(
        matches!(
            error,
            ClientError::Connection(ConnectionError::NoAnswer { addr: a, after })
                if a == addr && after == Duration::from_millis(300)
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .starts_with(&format!("no tern server answered at {addr}")),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn cli_connect_timeout_flag_reports_the_silent_address() {
    let silent = silent_port();
    let addr = silent.local_addr().unwrap().to_string();
    let state = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["register", "--state"])
        .arg(state.path())
        .args(["--server", &addr, "--fingerprint", &"ab".repeat(32)])
        .args(["--connect-timeout", "0.3", "alice"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("no tern server answered at {addr} within 0.3 s")),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "{stderr}");
    let bad = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["register", "--connect-timeout", "0", "alice"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("more than 0 seconds"));
}

/// A server idle timeout shorter than the clients' keep-alive (25 s) must
/// not drop idle clients: the server then pings every idle/3 itself. Two
/// clients stay idle for three idle periods; afterwards neither has
/// reconnected, and a sentinel sent over the same connections arrives.
#[tokio::test]
async fn idle_clients_outlive_a_short_server_idle_timeout() {
    let server = common::TestServer::start_with(1, |c| c.idle_timeout_secs = 5);
    let alice = server.register("alice").await;
    let bob = server.register("bob").await;
    let conversation = alice
        .create_conversation(tern_proto::ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;
    // The event under test is time passing with no traffic.
    tokio::time::sleep(Duration::from_secs(3 * 5 + 1)).await;
    assert_eq!((alice.reconnects(), bob.reconnects()), (0, 0));
    let sentinel = alice.send_sentinel(conversation).await;
    bob.expect_next_is(conversation, &sentinel).await;
    assert_eq!((alice.reconnects(), bob.reconnects()), (0, 0));
}

#[test]
fn server_and_client_agree_on_the_client_keep_alive() {
    assert_eq!(
        tern_server::tls::CLIENT_KEEP_ALIVE,
        tern_client::tls::CLIENT_KEEP_ALIVE
    );
}

/// `tern serve` as a child process on `listen`; returns it once it accepts
/// connections, with its address and certificate fingerprint.
fn serve(data: &std::path::Path, listen: &str) -> (ServerChild, SocketAddr, [u8; 32]) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["serve", "--listen", listen, "--shards", "2", "--data"])
        .arg(data)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let addr = first.split_whitespace().nth(3).unwrap().parse().unwrap();
    let fingerprint = second.rsplit(' ').next().unwrap();
    let fingerprint = tern_proto::fingerprint::parse_fingerprint(fingerprint).unwrap();
    (ServerChild(child), addr, fingerprint)
}

/// A server process, killed with SIGKILL when dropped (no shutdown code runs).
struct ServerChild(std::process::Child);

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// After a kill -9 and a restart on the same data directory and port, the
/// restarted server answers the old connections' packets with stateless
/// resets the clients accept (the reset key comes from a secret in the data
/// directory), so they reconnect at once: the first send succeeds within
/// 5 s, not after the 60 s idle timeout.
#[tokio::test]
async fn after_a_crash_and_restart_the_first_send_succeeds_within_five_seconds() {
    let (_tmp, data) = common::data_dir();
    let (server, addr, fingerprint) = serve(&data, "127.0.0.1:0");
    let options = |state: &std::path::Path| {
        let mut o = ClientOptions::new(addr, TrustAnchor::Fingerprint(fingerprint), state);
        o.reconnect_max = Duration::from_millis(500);
        o
    };
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let alice = Client::register(options(states[0].path()), "alice", "t")
        .await
        .unwrap();
    let bob = Client::register(options(states[1].path()), "bob", "t")
        .await
        .unwrap();
    let conversation = alice
        .create_conversation(tern_proto::ConversationKind::Direct, &["bob"])
        .await
        .unwrap()
        .id;
    alice
        .send(conversation, &b"before the crash"[..])
        .await
        .unwrap();
    assert_eq!(bob.next_message().await.unwrap().seq, 1);

    drop(server); // SIGKILL: no shutdown code runs
    let (_restarted, again, _) = serve(&data, &addr.to_string());
    assert_eq!(again, addr);
    let sent = tokio::time::timeout(
        Duration::from_secs(5),
        alice.send(conversation, &b"after the restart"[..]),
    )
    .await
    .expect("the first send after the restart succeeds within 5 s")
    .unwrap();
    assert_eq!(sent.seq, 2);
    // Bob's first request after the restart is prompt too, and his new
    // connection catches up on what he missed.
    let replied = tokio::time::timeout(
        Duration::from_secs(5),
        bob.send(conversation, &b"reply"[..]),
    )
    .await
    .expect("bob's first send after the restart succeeds within 5 s")
    .unwrap();
    assert_eq!(replied.seq, 3);
    let heard = tokio::time::timeout(common::WAIT, bob.next_message())
        .await
        .expect("bob hears alice")
        .unwrap();
    assert_eq!(
        (heard.seq, &heard.payload[..]),
        (2, &b"after the restart"[..])
    );
    assert!(alice.reconnects() >= 1 && bob.reconnects() >= 1);
}

/// Issue 8 item 9, second half: a connection on which requests go
/// unanswered is given up after two in a row and replaced, while one lost
/// answer alone keeps the connection. Answers are dropped deterministically
/// by the SDK's `lose_next_answer` hook (the server did answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_answers_is_replaced_after_two_timeouts() {
    use tern_client::sdk::AnswerLoss;
    use tern_proto::body::devices;
    use tern_proto::Body;
    let server = common::TestServer::start(1);
    let state = tempfile::tempdir().unwrap();
    let mut options = server.options(state.path());
    options.request_timeout = Duration::from_millis(300);
    let client = Client::register(options, "alice", "test").await.unwrap();
    // ListDevices: a request the SDK itself never sends (its ordering
    // driver syncs on every connect, concurrently with the test, so a lost
    // SyncResult could be the driver's), so each armed loss hits ours.
    let device_list = |b: &Body| matches!(b, Body::DeviceList(_));
    let list = || devices::ListDevices {
        user: "alice".into(),
    };
    client.request(list()).await.unwrap();

    client.lose_next_answer(device_list, AnswerLoss::Silent);
    let got = client.request(list()).await;
    assert!(matches!(got, Err(ClientError::Timeout)), "{got:?}");
    client
        .request(list())
        .await
        .expect("one lost answer keeps the connection");
    assert_eq!(client.reconnects(), 0);

    client.lose_next_answer(device_list, AnswerLoss::Silent);
    client.lose_next_answer(device_list, AnswerLoss::Silent);
    for _ in 0..2 {
        let got = client.request(list()).await;
        assert!(matches!(got, Err(ClientError::Timeout)), "{got:?}");
    }
    // The connection was given up: the next request runs on a new one.
    // (Disconnected until the new connection is up: poll, bounded.)
    let deadline = Instant::now() + common::WAIT;
    let mut outcome = client.request(list()).await;
    while matches!(outcome, Err(ClientError::Disconnected)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        outcome = client.request(list()).await;
    }
    outcome.expect("answered on a fresh connection");
    assert_eq!(client.reconnects(), 1);
    client.close().await;
}
