//! The README's two-terminal walkthrough, run with the real `tern` binary
//! against a real server process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::{Command, Output, Stdio};

use common::{data_dir, ServerProcess};

use common::{run_tern as tern, tern_ok as ok};

#[test]
fn two_terminal_chat_walkthrough() {
    let (_tmp, data) = data_dir();
    let server = ServerProcess::spawn(&data, 2);
    let clients = tempfile::tempdir().unwrap();
    let state = |u: &str| clients.path().join(u).to_string_lossy().into_owned();
    let (alice, bob) = (state("alice"), state("bob"));
    let addr = server.addr.to_string();
    let fp = hex::encode(server.fingerprint);
    for (dir, user) in [(&alice, "alice"), (&bob, "bob")] {
        let out = ok(tern(&[
            "register",
            "--state",
            dir,
            "--server",
            &addr,
            "--fingerprint",
            &fp,
            user,
        ]));
        assert!(out.contains(&format!("registered {user}/1")));
    }
    let conv = ok(tern(&["create", "--state", &alice, "direct", "bob"]))
        .trim()
        .to_owned();
    conv.parse::<u64>()
        .expect("create prints the conversation id");

    ok(tern(&[
        "send",
        "--state",
        &alice,
        &conv,
        "sent while bob was away",
    ]));
    let listener = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["listen", "--state", &bob, "--count", "2"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    ok(tern(&["send", "--state", &alice, &conv, "hello bob"]));
    let heard = ok(listener.wait_with_output().unwrap());
    let lines: Vec<&str> = heard.lines().collect();
    assert_eq!(lines.len(), 2, "{heard}");
    assert!(
        lines[0].ends_with("alice/1: sent while bob was away"),
        "{heard}"
    );
    assert!(lines[1].ends_with("alice/1: hello bob"), "{heard}");

    // History is read from each device's own message store: text,
    // sender and time of what it received and what it sent.
    let history = ok(tern(&["history", "--state", &bob, &conv]));
    let shown: Vec<&str> = history.lines().collect();
    assert_eq!(shown.len(), 2, "{history}");
    assert!(
        shown[0].starts_with(&format!("[{conv} #1] 20")),
        "{history}"
    );
    assert!(
        shown[0].contains(" UTC alice/1: sent while bob was away"),
        "{history}"
    );
    assert!(shown[1].starts_with(&format!("[{conv} #2] ")), "{history}");
    assert!(shown[1].ends_with(" UTC alice/1: hello bob"), "{history}");
    // alice's own messages also show where they got to (she has not
    // listened since, so bob's delivered receipt has not reached her).
    let sent: String = history.lines().map(|l| format!("{l}  (sent)\n")).collect();
    assert_eq!(ok(tern(&["history", "--state", &alice, &conv])), sent);
    let last = ok(tern(&["history", "--state", &bob, &conv, "--limit", "1"]));
    assert_eq!(last, format!("{}\n", shown[1]));
    let found = ok(tern(&["search", "--state", &bob, "AWAY"]));
    assert_eq!(found, format!("{}\n", shown[0]));
    // alice is not bob's contact, so her conversation is a message request:
    // bob's client sends no receipt for it until he accepts it.
    let requests = ok(tern(&["requests", "--state", &bob]));
    assert!(
        requests.starts_with(&format!("{conv}\talice\t")),
        "{requests}"
    );
    ok(tern(&["requests", "--state", &bob, "accept", &conv]));
    let listing = ok(tern(&["conversations", "--state", &bob]));
    // Seq 3 is bob's delivered receipt, sent once he accepted the request.
    assert!(listing.contains("head 3\tdelivered up to 2"), "{listing}");
    let bad = tern(&["send", "--state", &bob, "12345", "to nowhere"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not one of yours"));
    let empty = tern(&["send", "--state", &bob, &conv, ""]);
    assert!(!empty.status.success(), "an empty message is refused");
    assert!(String::from_utf8_lossy(&empty.stderr).contains("value is required"));

    // The walkthrough was end-to-end encrypted: the server holds no plaintext.
    assert_eq!(server.terminate().code(), Some(0));
    for text in ["sent while bob was away", "hello bob"] {
        assert!(
            !dir_contains(&data, text.as_bytes()),
            "{text:?} stored in plaintext"
        );
    }
}

fn dir_contains(dir: &std::path::Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir).unwrap().any(|entry| {
        let path = entry.unwrap().path();
        if path.is_dir() {
            return dir_contains(&path, needle);
        }
        std::fs::read(&path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
    })
}

/// `tern remove` naming yourself leaves the group (MLS forbids a Commit that
/// removes its own sender, so the CLI leaves on the server instead).
#[test]
fn removing_yourself_leaves_the_group() {
    let (_tmp, data) = data_dir();
    let server = ServerProcess::spawn(&data, 2);
    let clients = tempfile::tempdir().unwrap();
    let state = |u: &str| clients.path().join(u).to_string_lossy().into_owned();
    let (alice, bob) = (state("alice"), state("bob"));
    let (addr, fp) = (server.addr.to_string(), hex::encode(server.fingerprint));
    for (dir, user) in [(&alice, "alice"), (&bob, "bob")] {
        let register = ["register", "--state", dir, "--server", &addr];
        ok(tern(
            &[&register[..], &["--fingerprint", &fp, user]].concat(),
        ));
        // Not a consent test: anyone may add these users to groups.
        ok(tern(&[
            "privacy",
            "--state",
            dir,
            "--group-adds",
            "everyone",
        ]));
    }
    let group = ok(tern(&["create", "--state", &alice, "group", "bob"]))
        .trim()
        .to_owned();
    let before = ok(tern(&["conversations", "--state", &bob]));
    assert!(before.contains(&group), "{before}");
    let left = ok(tern(&["remove", "--state", &bob, &group, "bob"]));
    assert!(left.contains(&format!("left group {group}")), "{left}");
    let after = ok(tern(&["conversations", "--state", &bob]));
    assert!(!after.contains(&group), "{after}");
    let refused = tern(&["send", "--state", &bob, &group, "still here?"]);
    assert!(!refused.status.success());
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn help_explains_every_command() {
    let top = ok(tern(&["--help"]));
    for cmd in [
        "serve",
        "register",
        "create",
        "add",
        "remove",
        "send",
        "listen",
        "history",
        "search",
        "conversations",
        "link",
        "approve",
        "devices",
        "group-info",
        "admin",
        "call",
        "answer",
        "hangup",
        "calls",
        "send-file",
        "fetch",
        "push",
        "cluster-ca",
        "tls-identity",
    ] {
        assert!(top.contains(cmd), "{cmd} missing from --help");
        let help = ok(tern(&[cmd, "--help"]));
        assert!(help.contains("Usage:"), "{cmd} --help");
    }
    let admin = ok(tern(&["admin", "--help"]));
    assert!(admin.contains("--list") && admin.contains("--member-adds"));
    let serve = ok(tern(&["serve", "--help"]));
    assert!(serve.contains("--listen") && serve.contains("--data") && serve.contains("--shards"));
}

/// `tern migrate` against a host that accepts TCP but never answers CQL
/// gives up after `--open-timeout-secs`, and its advice fits: the nodes,
/// not "run tern migrate".
#[test]
fn migrate_gives_up_on_a_silent_host_in_time() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = tern(&["migrate", "--nodes", &addr, "--open-timeout-secs", "2"]);
    drop(silent);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot connect to ScyllaDB"), "{stderr}");
    assert!(!stderr.contains("(`tern migrate`)"), "{stderr}");
    let refused = tern(&["migrate", "--nodes", &addr, "--open-timeout-secs", "0"]);
    assert!(!refused.status.success());
}

/// Nodes behind one address share one identity: `tern tls-identity` makes
/// it, every server given it as `tls_dir` presents its fingerprint, and a
/// client pinning that fingerprint reaches each of them.
#[test]
fn servers_given_one_tls_dir_present_one_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let made = ok(tern(&["tls-identity", "--out", tls.to_str().unwrap()]));
    let printed = made
        .lines()
        .find_map(|l| l.strip_prefix("certificate fingerprint: "))
        .expect("the fingerprint is printed")
        .to_owned();
    let again = tern(&["tls-identity", "--out", tls.to_str().unwrap()]);
    assert!(
        !again.status.success(),
        "an identity is never replaced silently"
    );
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let toml = format!("tls_dir = {:?}\n", tls.display().to_string());
    let servers: Vec<_> = (0..2)
        .map(|i| {
            let data = dir.path().join(format!("node-{i}"));
            ServerProcess::spawn_with_config(&data, 1, &toml)
        })
        .collect();
    for server in &servers {
        assert_eq!(hex::encode(server.fingerprint), printed);
    }
    // A client pinning the shared fingerprint registers on each.
    for (i, server) in servers.iter().enumerate() {
        let state = dir.path().join(format!("client-{i}"));
        let out = ok(tern(&[
            "register",
            "--state",
            state.to_str().unwrap(),
            "--server",
            &server.addr.to_string(),
            "--fingerprint",
            &printed,
            &format!("user{i}"),
        ]));
        assert!(out.contains(&format!("registered user{i}/1")), "{out}");
    }
    // A tls_dir without the files is refused: the server never makes a shared identity.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(
        dir.path().join("e.toml"),
        format!("tls_dir = {:?}\n", empty.display().to_string()),
    )
    .unwrap();
    let e_toml = dir.path().join("e.toml");
    let refused = tern(&[
        "serve",
        "--config",
        e_toml.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("tern tls-identity"));
}

#[test]
fn invalid_config_is_refused_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tern.toml");
    std::fs::write(&file, "shards = 999\n").unwrap();
    let out = tern(&[
        "serve",
        "--config",
        file.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shards"));
    for (toml, field) in [
        ("[push]\ncoalesce_ms = 1\n", "push.coalesce_ms"),
        (
            "[push]\ngateway_url = \"http://example.org/n\"\n",
            "push.gateway_url",
        ),
        (
            "[push]\nretry_initial_ms = 900\nretry_max_ms = 800\n",
            "push.retry_max_ms",
        ),
        ("[blob_store]\nbackend = \"s3\"\n", "blob_store.s3_bucket"),
        (
            "[blob_store]\nbackend = \"s3\"\ns3_bucket = \"b1\"\n",
            "blob_store.s3_bucket",
        ),
        (
            "[blob_store]\nbackend = \"s3\"\ns3_bucket = \"tern\"\ns3_endpoint = \"localhost:9000\"\n",
            "blob_store.s3_endpoint",
        ),
        ("[blob_store]\nbackend = \"ftp\"\n", "backend"),
        ("otlp_endpoint = \"collector:4318\"\n", "otlp_endpoint"),
        // A tls_dir without the identity, on a ScyllaDB that is not there:
        // the identity is refused first, before the store is dialled.
        (
            "tls_dir = \"/nonexistent-tls\"\nstore = \"scylla\"\nscylla_nodes = [\"127.0.0.1:1\"]\n",
            "/nonexistent-tls",
        ),
        (
            "presence_backend = \"redis\"\nredis_url = \"http://127.0.0.1:6379\"\n",
            "redis_url: must start with redis://",
        ),
        // A cluster node with presence in the process: refused.
        (
            "cluster_node_id = \"tern-0\"\ncluster_listen = \"127.0.0.1:0\"\n",
            "presence_backend",
        ),
        // A cluster on the embedded store (one process's) cannot be served.
        (
            "cluster_node_id = \"tern-0\"\npresence_backend = \"redis\"\ncluster_listen = \"127.0.0.1:0\"\n",
            "cluster_node_id",
        ),
        ("cluster_node_id = \"Tern_0\"\npresence_backend = \"redis\"\n", "node_id"),
        // A cluster on ScyllaDB whose attachments would stay on each node.
        (
            "cluster_node_id = \"tern-0\"\npresence_backend = \"redis\"\ncluster_listen = \"127.0.0.1:0\"\nstore = \"scylla\"\nscylla_nodes = [\"127.0.0.1:9\"]\n",
            "blob_store.backend",
        ),
        // Cluster errors name the setting as the operator writes it.
        (
            "cluster_node_id = \"tern-0\"\npresence_backend = \"redis\"\ncluster_node_ttl_ms = 10\n",
            "cluster_node_ttl_ms",
        ),
        (
            "cluster_node_id = \"tern-0\"\npresence_backend = \"redis\"\n",
            "invalid setting cluster_advertise",
        ),
        // The ScyllaDB store without contact points.
        ("store = \"scylla\"\n", "TERN_SCYLLA_NODES"),
        // ... and with one where nothing listens: refused at once, saying
        // what to check (before the client port is bound).
        (
            "store = \"scylla\"\nscylla_nodes = [\"127.0.0.1:1\"]\nscylla_connect_timeout_ms = 1000\n",
            "check that the nodes are up",
        ),
        // A cluster node on ScyllaDB and S3 without its CA files: refused
        // before the store is reached.
        (
            "store = \"scylla\"\nscylla_nodes = [\"127.0.0.1:1\"]\ncluster_node_id = \"tern-0\"\n\
             presence_backend = \"redis\"\ncluster_listen = \"127.0.0.1:0\"\n\
             cluster_ca_cert = \"/nonexistent/ca.pem\"\n\
             [blob_store]\nbackend = \"s3\"\ns3_bucket = \"tern-attachments\"\n",
            "cluster CA: cannot read /nonexistent/ca.pem",
        ),
    ] {
        std::fs::write(&file, toml).unwrap();
        let out = tern(&["serve", "--config", file.to_str().unwrap()]);
        assert!(!out.status.success(), "{toml}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(field), "{toml}: {stderr}");
    }
    // With its CA, such a node is refused for nothing it set: it gets as
    // far as the store.
    let ca = dir.path().join("cluster");
    ok(tern(&["cluster-ca", "--out", ca.to_str().unwrap()]));
    let toml = format!(
        "store = \"scylla\"\nscylla_nodes = [\"127.0.0.1:1\"]\nscylla_connect_timeout_ms = 1000\n\
         cluster_node_id = \"tern-0\"\npresence_backend = \"redis\"\ncluster_listen = \"127.0.0.1:0\"\n\
         cluster_ca_cert = {:?}\ncluster_ca_key = {:?}\n\
         [blob_store]\nbackend = \"s3\"\ns3_bucket = \"tern-attachments\"\n",
        ca.join("ca.pem").display().to_string(),
        ca.join("ca.key").display().to_string(),
    );
    std::fs::write(&file, toml).unwrap();
    let out = tern(&["serve", "--config", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("check that the nodes are up"), "{stderr}");
}

/// A running server and registered accounts, each in its own state directory.
struct Accounts {
    server: ServerProcess,
    _data: tempfile::TempDir,
    dirs: tempfile::TempDir,
}

impl Accounts {
    fn register(users: &[&str]) -> Accounts {
        let (data_tmp, data) = data_dir();
        let server = ServerProcess::spawn(&data, 1);
        let accounts = Accounts {
            server,
            _data: data_tmp,
            dirs: tempfile::tempdir().unwrap(),
        };
        let (addr, fp) = (
            accounts.server.addr.to_string(),
            hex::encode(accounts.server.fingerprint),
        );
        for user in users {
            let state = accounts.state(user);
            let register = ["register", "--state", &state, "--server", &addr];
            ok(tern(
                &[&register[..], &["--fingerprint", &fp, user]].concat(),
            ));
            // Not a consent test: anyone may add these users to groups.
            ok(tern(&[
                "privacy",
                "--state",
                &state,
                "--group-adds",
                "everyone",
            ]));
        }
        accounts
    }

    fn state(&self, user: &str) -> String {
        self.dirs.path().join(user).to_string_lossy().into_owned()
    }
}

/// A failed command: non-zero exit, and its stderr (which must say `says`).
fn refused(output: Output, says: &str) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "succeeded: {stderr}");
    assert!(stderr.contains(says), "{stderr}");
    stderr
}

/// `tern push register URL` stores the endpoint, a plain-http URL is
/// refused with the server's reason, `tern push unregister` removes it.
#[test]
fn push_endpoints_are_registered_and_removed() {
    let accounts = Accounts::register(&["alice"]);
    let alice = accounts.state("alice");
    let url = "https://push.example.org/wake/alice";
    let done = ok(tern(&["push", "register", "--state", &alice, url]));
    assert_eq!(done, "push endpoint registered\n");
    refused(
        tern(&[
            "push",
            "register",
            "--state",
            &alice,
            "http://example.org/x",
        ]),
        "must start with https://",
    );
    refused(
        tern(&["push", "register", "--state", &alice, "--gateway", "tok"]),
        "no push gateway",
    );
    let removed = ok(tern(&["push", "unregister", "--state", &alice]));
    assert_eq!(removed, "push endpoint removed\n");
}

#[test]
fn approving_or_denying_an_unknown_link_request_fails() {
    let accounts = Accounts::register(&["alice"]);
    let alice = accounts.state("alice");
    refused(
        tern(&["approve", "--state", &alice, "42"]),
        "no such link request",
    );
    refused(
        tern(&["approve", "--state", &alice, "42", "--deny"]),
        "no such link request",
    );
}

#[test]
fn adding_a_member_twice_or_removing_a_stranger_fails_without_a_new_epoch() {
    let accounts = Accounts::register(&["alice", "bob", "carol", "dave"]);
    let alice = accounts.state("alice");
    let group = ok(tern(&["create", "--state", &alice, "group", "bob"]))
        .trim()
        .to_owned();
    refused(
        tern(&["add", "--state", &alice, &group, "bob"]),
        "already a member",
    );
    refused(
        tern(&["add", "--state", &alice, &group, "carol", "alice"]),
        "already a member",
    );
    refused(
        tern(&["remove", "--state", &alice, &group, "dave"]),
        "not a member",
    );
    // Epoch 1 was the create's Commit; the refusals made none.
    let added = ok(tern(&["add", "--state", &alice, &group, "carol"]));
    assert!(added.contains("now at MLS epoch 2"), "{added}");
    let removed = ok(tern(&["remove", "--state", &alice, &group, "carol"]));
    assert!(removed.contains("now at MLS epoch 3"), "{removed}");
}

#[test]
fn creating_a_group_with_an_unknown_user_creates_nothing() {
    let accounts = Accounts::register(&["alice", "bob"]);
    let alice = accounts.state("alice");
    refused(
        tern(&["create", "--state", &alice, "group", "bob", "zed"]),
        "zed",
    );
    let listing = ok(tern(&["conversations", "--state", &alice]));
    assert_eq!(listing, "", "a group was left behind");
    let listing = ok(tern(&["conversations", "--state", &accounts.state("bob")]));
    assert_eq!(listing, "", "a group was left behind");
}

/// `tern` with the user's default logging (no `RUST_LOG`).
fn tern_plain(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("runs")
}

/// An error as a user should read it: one `error: ` line, a sentence, no
/// Rust debug output.
fn assert_sentence(stderr: &str) {
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for debug in [
        "Other(",
        "OtherError",
        "Error {",
        "(NotFound)",
        "Some(",
        "\\\"",
    ] {
        assert!(
            !stderr.contains(debug),
            "debug output {debug:?} in: {stderr}"
        );
    }
}

#[test]
fn errors_read_as_sentences_and_registering_logs_nothing() {
    let accounts = Accounts::register(&[]);
    let (addr, fp) = (
        accounts.server.addr.to_string(),
        hex::encode(accounts.server.fingerprint),
    );
    let alice = accounts.state("alice");
    let registered = tern_plain(&[
        "register",
        "--state",
        &alice,
        "--server",
        &addr,
        "--fingerprint",
        &fp,
        "alice",
    ]);
    let stderr = String::from_utf8_lossy(&registered.stderr);
    assert!(registered.status.success(), "{stderr}");
    assert_eq!(stderr, "", "a successful register logs nothing");

    let wrong_pin = "42".repeat(32);
    let mallory = accounts.state("mallory");
    let register = ["register", "--state", &mallory, "--server", &addr];
    let stderr = refused(
        tern_plain(&[&register[..], &["--fingerprint", &wrong_pin, "mallory"]].concat()),
        &format!("presented certificate fingerprint {fp}, which does not match the pinned"),
    );
    assert_sentence(&stderr);
    let stderr = refused(
        tern_plain(&["approve", "--state", &alice, "42"]),
        "the server refused: no such link request",
    );
    assert_sentence(&stderr);
}

/// The `tern approve` line that `tern listen` prints is a complete command:
/// run exactly as printed, it links the waiting device.
#[test]
fn the_approve_hint_is_a_command_that_works_when_copied() {
    use std::io::{BufRead, BufReader};
    let accounts = Accounts::register(&["bob"]);
    let (addr, fp) = (
        accounts.server.addr.to_string(),
        hex::encode(accounts.server.fingerprint),
    );
    let bob = accounts.state("bob");
    let mut listener = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["listen", "--state", &bob, "--server", &addr])
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stderr = listener.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    let next_line = || lines.recv_timeout(common::WAIT).expect("listen prints");
    assert!(next_line().starts_with("listening as bob/1"));
    let laptop = accounts.state("bob-laptop");
    let link = Command::new(env!("CARGO_BIN_EXE_tern"))
        .args(["link", "--state", &laptop, "--server", &addr])
        .args(["--fingerprint", &fp, "bob"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let prompt = next_line();
    let command = prompt
        .split_once("another terminal: ")
        .and_then(|(_, rest)| rest.split("   (").next())
        .unwrap_or_else(|| panic!("no command in {prompt:?}"));
    let words: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(words[..2], ["tern", "approve"], "{command}");
    assert!(
        command.contains(&format!("--state {bob} --server {addr}")),
        "{command}"
    );
    // Run while the listener still holds bob's state: it performs it.
    let approved = ok(tern(&words[1..]));
    assert!(approved.starts_with("approved link request"), "{approved}");
    let linked = ok(link.wait_with_output().unwrap());
    assert!(linked.contains("linked bob/2"), "{linked}");
    listener.kill().unwrap();
    listener.wait().unwrap();
}

/// A `tern listen` child process whose stdout and stderr lines arrive on
/// channels; killed on drop.
struct Listener {
    child: std::process::Child,
    stdout: std::sync::mpsc::Receiver<String>,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Listener {
    /// Starts `tern listen --state STATE` and waits for its "listening as"
    /// line (by then it serves other commands on STATE).
    fn start(state: &str) -> Listener {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(["listen", "--state", state])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let listener = Listener {
            child,
            stdout,
            stderr,
        };
        let first = listener.err_line();
        assert!(first.starts_with("listening as"), "{first}");
        listener
    }

    fn out_line(&self) -> String {
        self.stdout
            .recv_timeout(common::WAIT)
            .expect("listen prints")
    }

    fn err_line(&self) -> String {
        self.stderr
            .recv_timeout(common::WAIT)
            .expect("listen prints")
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines_of(stream: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            if tx.send(line.unwrap()).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next message `tern listen --state STATE --count 1` prints.
fn read_one(state: &str) -> String {
    ok(tern(&["listen", "--state", state, "--count", "1"]))
}

/// Issue 8 item 1: bob listens in one terminal and replies from another
/// with `tern send --state bob` (performed by the listener); alice reads
/// the replies, and bob's listener still decrypts what alice sends after
/// them, in a direct conversation and in a group. Other commands on bob's
/// state are performed by the listener too; a second listener is refused.
#[test]
fn reply_while_listening() {
    let accounts = Accounts::register(&["alice", "bob"]);
    let (alice, bob) = (accounts.state("alice"), accounts.state("bob"));
    let direct = ok(tern(&["create", "--state", &alice, "direct", "bob"]))
        .trim()
        .to_owned();
    let listener = Listener::start(&bob);
    ok(tern(&["send", "--state", &alice, &direct, "hello bob"]));
    assert!(listener.out_line().ends_with("alice/1: hello bob"));
    for round in 1..=2 {
        let sent = ok(tern(&[
            "send",
            "--state",
            &bob,
            &direct,
            &format!("reply {round}"),
        ]));
        assert!(
            sent.starts_with(&format!("sent: conversation {direct} seq")),
            "{sent}"
        );
        assert!(read_one(&alice).ends_with(&format!("bob/1: reply {round}\n")));
        ok(tern(&[
            "send",
            "--state",
            &alice,
            &direct,
            &format!("again {round}"),
        ]));
        let heard = listener.out_line();
        assert!(
            heard.ends_with(&format!("alice/1: again {round}")),
            "{heard}"
        );
    }

    // A group: bob's listener joins it from the Welcome.
    let group = ok(tern(&["create", "--state", &alice, "group", "bob"]))
        .trim()
        .to_owned();
    let joined = format!("joined group {group}");
    while listener.err_line() != joined {}
    ok(tern(&["send", "--state", &alice, &group, "hello group"]));
    let heard = listener.out_line();
    assert!(heard.ends_with("alice/1: hello group"), "{heard}");
    for round in 1..=2 {
        ok(tern(&[
            "send",
            "--state",
            &bob,
            &group,
            &format!("group reply {round}"),
        ]));
        let read = read_one(&alice);
        assert!(
            read.ends_with(&format!("bob/1: group reply {round}\n")),
            "{read}"
        );
        ok(tern(&[
            "send",
            "--state",
            &alice,
            &group,
            &format!("group again {round}"),
        ]));
        let heard = listener.out_line();
        assert!(
            heard.ends_with(&format!("alice/1: group again {round}")),
            "{heard}"
        );
    }

    // A timer change and a call ringing are shown too (not counted).
    ok(tern(&["timer", "--state", &alice, &group, "60"]));
    let timer = listener.out_line();
    assert_eq!(
        timer,
        format!("alice set disappearing messages in {group}: later messages disappear after 60 s")
    );
    let mut call = Terminal::start(&["call", "--state", &alice, "bob"]);
    assert!(call.line().starts_with("calling bob (call "));
    let ringing = listener.out_line();
    assert!(
        ringing.starts_with("incoming call from alice (device 1): to take it, stop this listener"),
        "{ringing}"
    );
    call.enter();
    assert_eq!(call.line(), "cancelled");
    call.finishes();
    assert_eq!(
        listener.out_line(),
        "missed call from alice: alice cancelled it"
    );

    // Other commands reach the listener with their own output and exit code.
    let note = ok(tern(&["create", "--state", &bob, "note"]));
    note.trim().parse::<u64>().expect("create prints the id");
    let history = ok(tern(&["history", "--state", &bob, &direct]));
    let said: Vec<String> = history
        .lines()
        .map(|l| l.split_once(" UTC ").unwrap().1)
        // bob's own messages end with their receipt state: "  (delivered)".
        .map(|l| l.split("  (").next().unwrap().to_owned())
        .collect();
    let expected = [
        "alice/1: hello bob",
        "bob/1: reply 1",
        "alice/1: again 1",
        "bob/1: reply 2",
        "alice/1: again 2",
    ];
    assert_eq!(said, expected, "{history}");
    let found = ok(tern(&["search", "--state", &bob, "reply"]));
    assert_eq!(found.lines().count(), 4, "{found}");
    assert!(found.contains("bob/1: group reply 2"), "{found}");
    let listing = ok(tern(&["conversations", "--state", &bob]));
    assert!(
        listing.contains(&direct) && listing.contains(&group),
        "{listing}"
    );
    refused(
        tern(&["send", "--state", &bob, "12345", "to nowhere"]),
        "not one of yours",
    );
    refused(
        tern(&["add", "--state", &bob, &group, "alice"]),
        "already a member",
    );
    let pid = listener.child.id();
    let second = refused(
        tern(&["listen", "--state", &bob]),
        &format!("is in use by another tern process (pid {pid})"),
    );
    assert_eq!(second.lines().count(), 1, "{second}");
}

/// A socket file left by a listener that is gone (nothing holds the state
/// directory) blocks nothing: commands run on their own, and a new
/// listener replaces it and serves.
#[test]
fn a_stale_listener_socket_blocks_nothing() {
    let accounts = Accounts::register(&["alice", "bob"]);
    let (alice, bob) = (accounts.state("alice"), accounts.state("bob"));
    let socket = std::path::Path::new(&bob).join("tern.sock");
    let stale = || drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    stale();
    assert!(socket.exists());
    let direct = ok(tern(&["create", "--state", &bob, "direct", "alice"]))
        .trim()
        .to_owned();
    assert!(!socket.exists(), "the stale socket was left");
    stale();
    let listener = Listener::start(&bob);
    ok(tern(&[
        "send",
        "--state",
        &bob,
        &direct,
        "through the new listener",
    ]));
    assert!(read_one(&alice).ends_with("bob/1: through the new listener\n"));
    ok(tern(&["send", "--state", &alice, &direct, "and back"]));
    assert!(listener.out_line().ends_with("alice/1: and back"));
    drop(listener);
}

/// Issue 8 item 2: what a one-device account writes to itself, and what
/// it sends to others, can be read back and searched on that device.
#[test]
fn notes_to_self_and_sent_messages_are_read_back_and_searched() {
    let accounts = Accounts::register(&["alice", "bob"]);
    let alice = accounts.state("alice");
    let note = ok(tern(&["create", "--state", &alice, "note"]))
        .trim()
        .to_owned();
    ok(tern(&["send", "--state", &alice, &note, "buy oat milk"]));
    ok(tern(&[
        "send",
        "--state",
        &alice,
        &note,
        "call the plumber",
    ]));
    let direct = ok(tern(&["create", "--state", &alice, "direct", "bob"]))
        .trim()
        .to_owned();
    ok(tern(&[
        "send",
        "--state",
        &alice,
        &direct,
        "the plumber comes at 9",
    ]));

    let history = ok(tern(&["history", "--state", &alice, &note]));
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert!(lines[0].starts_with(&format!("[{note} #1] ")), "{history}");
    assert!(
        lines[0].ends_with(" UTC alice/1: buy oat milk"),
        "{history}"
    );
    assert!(
        lines[1].ends_with(" UTC alice/1: call the plumber"),
        "{history}"
    );

    let found = ok(tern(&["search", "--state", &alice, "plumber"]));
    let lines: Vec<&str> = found.lines().collect();
    assert_eq!(lines.len(), 2, "{found}");
    assert!(lines[0].starts_with(&format!("[{note} #2] ")), "{found}");
    assert!(lines[1].starts_with(&format!("[{direct} #1] ")), "{found}");
    assert!(
        lines[1].ends_with("alice/1: the plumber comes at 9"),
        "{found}"
    );
    let none = tern(&["search", "--state", &alice, "electrician"]);
    assert_eq!(ok(none), "");
    refused(tern(&["search", "--state", &alice, " "]), "has no words");
    let empty = tern(&["history", "--state", &accounts.state("bob"), &note]);
    assert!(String::from_utf8_lossy(&empty.stderr).contains("no messages of conversation"));
    // Both read only the device's own store: they work with the server gone.
    let Accounts {
        server,
        _data,
        dirs,
    } = accounts;
    server.kill9();
    assert_eq!(ok(tern(&["history", "--state", &alice, &note])), history);
    assert_eq!(ok(tern(&["search", "--state", &alice, "plumber"])), found);
    drop(dirs);
}

/// A `tern` command running in its own terminal: its output lines, and
/// its standard input to type into.
struct Terminal {
    child: std::process::Child,
    stdout: std::sync::mpsc::Receiver<String>,
}

impl Terminal {
    fn start(args: &[&str]) -> Terminal {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tern"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        Terminal { child, stdout }
    }

    fn line(&self) -> String {
        self.stdout
            .recv_timeout(common::WAIT)
            .expect("the command prints in time")
    }

    /// Presses Enter.
    fn enter(&mut self) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// Waits for the command to exit; it must succeed.
    fn finishes(mut self) {
        let deadline = std::time::Instant::now() + common::WAIT;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{status}");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the command did not exit");
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Issue 11: `tern call` and `tern answer` between two terminals. Bob
/// declines with `tern hangup` (started after the call: the server holds
/// the offer); then he answers, carol's call meanwhile finds him busy,
/// alice hangs up with Enter; `tern calls` lists each side's history.
#[test]
fn calls_between_two_terminals() {
    let accounts = Accounts::register(&["alice", "bob", "carol"]);
    let (alice, bob, carol) = (
        accounts.state("alice"),
        accounts.state("bob"),
        accounts.state("carol"),
    );
    let call = Terminal::start(&["call", "--state", &alice, "bob", "--sdp", "v=0 cli-offer"]);
    assert!(call.line().starts_with("calling bob (call "));
    let declined = ok(tern(&["hangup", "--state", &bob]));
    assert_eq!(
        declined.lines().collect::<Vec<_>>(),
        [
            "incoming call from alice (device 1)",
            "offer: v=0 cli-offer",
            "declined the call from alice"
        ]
    );
    assert_eq!(call.line(), "bob declined or cancelled the call");
    call.finishes();

    let mut call = Terminal::start(&["call", "--state", &alice, "bob"]);
    assert!(call.line().starts_with("calling bob (call "));
    let answer = Terminal::start(&["answer", "--state", &bob, "--sdp", "v=0 cli-answer"]);
    assert_eq!(answer.line(), "incoming call from alice (device 1)");
    // The placeholder offer, printed raw: one SDP line a terminal line.
    assert_eq!(answer.line(), "offer: v=0");
    assert_eq!(answer.line(), "  o=- 0 0 IN IP4 0.0.0.0");
    assert_eq!(answer.line(), "  s=tern terminal call (no media)");
    assert_eq!(answer.line(), "  t=0 0");
    assert_eq!(answer.line(), "connected with alice (device 1)");
    assert_eq!(call.line(), "answered by bob (device 1)");
    assert_eq!(call.line(), "answer: v=0 cli-answer");
    let busy = ok(tern(&["call", "--state", &carol, "bob"]));
    assert!(busy.ends_with("bob is busy\n"), "{busy}");
    call.enter();
    assert_eq!(call.line(), "hung up");
    assert_eq!(answer.line(), "alice hung up");
    call.finishes();
    answer.finishes();

    let history = |state: &str| -> Vec<String> {
        ok(tern(&["calls", "--state", state]))
            .lines()
            .map(|l| l.split(" UTC ").nth(1).unwrap().to_owned())
            .collect()
    };
    let alice_calls = history(&alice);
    assert_eq!(alice_calls.len(), 2, "{alice_calls:?}");
    assert!(alice_calls[0].starts_with("outgoing bob answered"));
    assert_eq!(alice_calls[1], "outgoing bob declined");
    let bob_calls = history(&bob);
    assert_eq!(bob_calls.len(), 2, "{bob_calls:?}");
    assert!(bob_calls[0].starts_with("incoming alice answered"));
    assert_eq!(bob_calls[1], "incoming alice declined");
    assert_eq!(history(&carol), ["outgoing bob busy"]);
}
