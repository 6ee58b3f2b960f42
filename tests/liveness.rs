//! Connection liveness as a user meets it: a client pointed at an address
//! where no server answers fails promptly with a clear error, instead of
//! hanging for the QUIC idle timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::net::UdpSocket;
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
