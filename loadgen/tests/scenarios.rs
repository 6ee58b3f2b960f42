//! Runs every scenario tiny against the real `tern` server binary (and the
//! baseline against the real echo server), each as its own `tern-load`
//! process, and checks the JSON reports: no errors, no failures, latencies
//! recorded. The tern binary is built first with the same cargo and profile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// `target/<profile>` of this test binary (it lives in `target/<profile>/deps`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Builds the tern server binary and returns its path.
fn tern_binary() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut build = Command::new(env!("CARGO"));
    build
        .current_dir(workspace)
        .args(["build", "--bin", "tern"]);
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build --bin tern failed");
    let bin = profile_dir().join("tern");
    assert!(bin.is_file(), "tern binary not found at {}", bin.display());
    bin
}

/// Runs `tern-load <args> --json FILE -q` and returns the parsed report.
fn run(dir: &Path, name: &str, args: &[&str], tern: &Path) -> Value {
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(env!("CARGO_BIN_EXE_tern-load"))
        .args(args)
        .arg("--tern-bin")
        .arg(tern)
        .arg("--json")
        .arg(&json)
        .args(["-q", "--threads", "2", "--endpoints", "2"])
        .output()
        .expect("tern-load runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("latency (ms)"),
        "{name} printed no table:\n{stdout}"
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn figure(report: &Value, name: &str) -> f64 {
    report["figures"][name]
        .as_f64()
        .unwrap_or_else(|| panic!("figure {name} missing in {report:#}"))
}

fn latency_count(report: &Value, series: &str) -> u64 {
    report["latency"][series]["count"].as_u64().unwrap_or(0)
}

/// The soak report of a `seconds`-long chat run: one window per second of
/// sending (plus at most the seconds the last deliveries took), counts that
/// add up, and per-minute buckets that account for every delivery.
fn soak_is_sane(report: &Value, seconds: u64, delivered: f64) {
    let soak = &report["soak"];
    let int = |v: &Value| v.as_u64().unwrap_or_else(|| panic!("{v} in {soak:#}"));
    let windows = int(&soak["windows"]);
    let timeline = report["timeline"]["send_deliver"].as_array().unwrap();
    assert_eq!(soak["series"], "send_deliver");
    assert!(windows >= seconds, "{soak:#}");
    assert_eq!(windows, timeline.len() as u64 + int(&soak["empty_windows"]));
    let median = int(&soak["median_window_p99_us"]);
    assert!(
        median > 0
            && median
                <= report["latency"]["send_deliver"]["max_us"]
                    .as_u64()
                    .unwrap()
    );
    assert_eq!(int(&soak["outlier_threshold_us"]), 5 * median);
    assert_eq!(int(&soak["absolute_threshold_us"]), 50_000);
    let over = int(&soak["windows_over_outlier"]).max(int(&soak["windows_over_absolute"]));
    assert!(over <= soak["flagged"].as_array().unwrap().len() as u64);
    let worst = &soak["worst_window"];
    assert!(
        int(&worst["second"]) < windows && int(&worst["p99_us"]) >= median,
        "{soak:#}"
    );
    let minutes = soak["minutes"].as_array().unwrap();
    assert!(!minutes.is_empty(), "{soak:#}");
    let counted: u64 = minutes.iter().map(|m| int(&m["delivered"])).sum();
    assert_eq!(counted as f64, delivered, "{soak:#}");
    for m in minutes {
        assert!(int(&m["rss_end_bytes"]) > 0, "{m}");
        assert!(m["server_cpu_per_msg_us"].as_f64().unwrap() > 0.0, "{m}");
    }
}

#[test]
fn every_scenario_runs_tiny_against_the_real_server() {
    let tern = tern_binary();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    let connect = run(
        d,
        "connect",
        &[
            "connect",
            "--connections",
            "50",
            "--hold",
            "1",
            "--settle",
            "0",
        ],
        &tern,
    );
    assert_eq!(figure(&connect, "connections_ok"), 50.0);
    assert_eq!(figure(&connect, "connect_failures"), 0.0);
    assert_eq!(figure(&connect, "alive_after_hold"), 50.0);
    assert!(figure(&connect, "server_rss_per_conn_bytes").is_finite());
    assert_eq!(latency_count(&connect, "connect"), 50);

    let svg = d.join("chat.svg");
    let chat = run(
        d,
        "chat",
        &[
            "chat",
            "--connections",
            "4",
            "--rate",
            "200",
            "--duration",
            "3",
            "--ack-interval-ms",
            "100",
            "--plot",
            svg.to_str().unwrap(),
        ],
        &tern,
    );
    assert_eq!(figure(&chat, "errors"), 0.0);
    assert_eq!(figure(&chat, "dropped_sends"), 0.0);
    assert_eq!(figure(&chat, "lost_deliveries"), 0.0);
    assert!(figure(&chat, "messages_delivered") >= 590.0);
    assert!(latency_count(&chat, "send_deliver") >= 590);
    assert!(latency_count(&chat, "send_ack") >= 590);
    soak_is_sane(&chat, 3, figure(&chat, "messages_delivered"));
    let drawn = std::fs::read_to_string(&svg).unwrap();
    assert!(drawn.contains("CPU per message (µs) per minute"));

    let group = run(
        d,
        "group",
        &[
            "group",
            "--members",
            "20",
            "--rate",
            "20",
            "--duration",
            "1",
        ],
        &tern,
    );
    assert_eq!(figure(&group, "errors"), 0.0);
    assert_eq!(figure(&group, "incomplete_messages"), 0.0);
    assert_eq!(
        figure(&group, "deliveries"),
        figure(&group, "messages_acked") * 19.0
    );
    assert!(latency_count(&group, "last_recipient") >= 19);

    let sync = run(
        d,
        "sync",
        &["sync", "--devices", "5", "--backlog", "50"],
        &tern,
    );
    assert_eq!(figure(&sync, "errors"), 0.0);
    assert_eq!(figure(&sync, "messages_drained"), 250.0);
    assert_eq!(figure(&sync, "missing_messages"), 0.0);
    assert_eq!(latency_count(&sync, "drain"), 5);

    let baseline = run(
        d,
        "baseline",
        &[
            "baseline",
            "--connections",
            "50",
            "--hold",
            "1",
            "--settle",
            "0",
            "--rate",
            "200",
            "--duration",
            "1",
            "--echo-connections",
            "4",
        ],
        &tern,
    );
    assert_eq!(figure(&baseline, "connect_failures"), 0.0);
    assert_eq!(figure(&baseline, "errors"), 0.0);
    assert_eq!(figure(&baseline, "echo_lost"), 0.0);
    assert!(latency_count(&baseline, "echo") >= 190);

    let compare = Command::new(env!("CARGO_BIN_EXE_tern-load"))
        .arg("compare")
        .arg(d.join("baseline.json"))
        .arg(d.join("chat.json"))
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&compare.stdout);
    assert!(
        compare.status.success() && table.contains("echo→send_deliver.p99_us"),
        "{table}"
    );
}

/// Checks a presence report: every change confirmed, every subscriber saw
/// every followed user's last change, nothing pushed to a non-follower,
/// and one latency sample per push.
fn presence_is_sane(report: &Value) {
    assert_eq!(figure(report, "errors"), 0.0, "{report:#}");
    assert_eq!(figure(report, "dropped_changes"), 0.0);
    assert_eq!(
        figure(report, "changes_done"),
        figure(report, "changes_sent")
    );
    assert_eq!(figure(report, "final_state_missed"), 0.0, "{report:#}");
    assert_eq!(figure(report, "unexpected_pushes"), 0.0);
    assert_eq!(figure(report, "repeated_pushes"), 0.0);
    let pushes = figure(report, "pushes_received");
    assert!(pushes > 0.0, "{report:#}");
    assert!(pushes <= figure(report, "pushes_expected_uncoalesced"));
    assert_eq!(latency_count(report, "change_push") as f64, pushes);
    assert!(figure(report, "server_cpu_per_presence_push_us") > 0.0);
}

#[test]
fn presence_runs_tiny_against_the_real_server() {
    let tern = tern_binary();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = |rate: &'static str| {
        [
            "presence",
            "--connections",
            "20",
            "--subscriptions",
            "5",
            "--rate",
            rate,
            "--duration",
            "2",
        ]
    };

    // Each user changes every 2 s: nothing to coalesce, every change is pushed.
    let slow = run(d, "presence-slow", &args("10"), &tern);
    presence_is_sane(&slow);
    assert_eq!(figure(&slow, "changes_coalescible"), 0.0);
    assert_eq!(
        figure(&slow, "pushes_received"),
        figure(&slow, "pushes_expected_uncoalesced"),
        "{slow:#}"
    );

    // Each user changes every 0.2 s: the server coalesces to one push per
    // second per user and subscriber, and the last change still arrives.
    let fast = run(d, "presence-fast", &args("100"), &tern);
    presence_is_sane(&fast);
    assert!(figure(&fast, "changes_coalescible") > 0.0);
    assert!(
        figure(&fast, "pushes_received") < figure(&fast, "pushes_expected_uncoalesced"),
        "{fast:#}"
    );
}

/// Checks an upload report of `n` uploads of `size` bytes: all acknowledged,
/// none failed, one completion time each, and the per-MiB figures present.
fn upload_is_sane(report: &Value, n: f64, size: f64) {
    assert_eq!(figure(report, "uploads_planned"), n, "{report:#}");
    assert_eq!(figure(report, "uploads_ok"), n, "{report:#}");
    assert_eq!(figure(report, "upload_failures"), 0.0, "{report:#}");
    assert_eq!(figure(report, "upload_size_bytes"), size);
    assert_eq!(figure(report, "mib_uploaded"), n * size / 1_048_576.0);
    assert_eq!(latency_count(report, "upload") as f64, n);
    assert!(figure(report, "throughput_mib_per_s") > 0.0);
    assert!(figure(report, "server_cpu_ms_per_mib") >= 0.0);
    assert!(figure(report, "client_cpu_ms_per_mib") >= 0.0);
}

#[test]
fn upload_runs_tiny_against_the_real_server_and_the_raw_sink() {
    let tern = tern_binary();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tiny = ["--uploads", "3", "--size", "64KiB", "--rounds", "2"];
    let (n, size) = (6.0, 65536.0);

    let raw = run(
        d,
        "upload-raw",
        &[&["upload", "--raw"][..], &tiny].concat(),
        &tern,
    );
    upload_is_sane(&raw, n, size);
    assert_eq!(raw["scenario"], "upload-baseline");
    assert_eq!(raw["target"]["kind"], "echo");

    let kept = d.join("kept");
    std::fs::create_dir(&kept).unwrap();
    let baseline = d.join("upload-raw.json");
    let extra = [
        "--keep-data",
        "--data-parent",
        kept.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
    ];
    let stored = run(
        d,
        "upload",
        &[&["upload"][..], &tiny, &extra].concat(),
        &tern,
    );
    upload_is_sane(&stored, n, size);
    assert_eq!(stored["target"]["kind"], "tern");
    assert_eq!(figure(&stored, "blobs_stored"), n, "{stored:#}");
    assert!(figure(&stored, "vs_baseline.throughput_mib_per_s") > 0.0);
    assert!(figure(&stored, "vs_baseline.upload.p50_us") > 0.0);

    // The server's data directory holds the six blobs, whole.
    let run_dir = std::fs::read_dir(&kept)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.join("data").is_dir())
        .expect("the kept data dir");
    let complete = std::fs::read_dir(run_dir.join("data/blobs/complete")).unwrap();
    let whole = complete
        .map(|e| e.unwrap().metadata().unwrap().len())
        .filter(|len| *len as f64 == size)
        .count();
    assert_eq!(whole as f64, n);
}
