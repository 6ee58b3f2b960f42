//! The server under load: an existing one (`--server ADDR --fingerprint HEX`,
//! with `--server-pid PID` when it is local), the nodes of an existing
//! cluster (`--server A,B,C` with one fingerprint for all or one per node,
//! and optionally one pid per node; connection `i` goes to node `i % n`),
//! or one this run starts on a
//! fresh temporary data directory (`--spawn-server`, the default): the `tern`
//! binary found next to `tern-load` (or `--tern-bin PATH`), or, for the
//! baseline, `tern-load echo-server` itself. A spawned server announces
//! `... listening on ADDR (N shards)` and `certificate fingerprint: HEX` on
//! stdout; both lines are parsed, its stderr goes to `server.log`, and it is
//! stopped with SIGTERM (then SIGKILL) when the run ends.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tempfile::TempDir;
use tern_proto::fingerprint::parse_fingerprint;

use crate::error::{LoadError, Result};
use crate::nodes::{NodeProc, ServerProcs};
use crate::report::TargetInfo;

/// The settings of a spawned tern server: a load run measures what the
/// server can carry, not its policy, so the send limits, which hold one
/// account to 100 messages a second by default, are lifted (`sync` builds
/// its whole backlog from one account; `chat --rate 0` may pass that per
/// device). Likewise the attachment limits (`upload` measures throughput,
/// not the 10 MiB/s per-account byte rate or the 1 GiB quota): the largest
/// blob the server allows (16 GiB), and a quota and byte bucket of 1 PiB.
/// A server given with `--server` keeps its own settings.
const SPAWNED_CONFIG: &str = "\
sends_per_account_burst = 4294967295
sends_per_account_per_minute = 4294967295
sends_per_conversation_burst = 4294967295
sends_per_conversation_per_minute = 4294967295
max_attachment_bytes = 17179869184
upload_quota_bytes = 1125899906842624
upload_bytes_per_second = 1125899906842624
upload_burst_bytes = 1125899906842624
";

/// How long a spawned server may take to print its two lines.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stopping server may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Where the server under load is.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct TargetArgs {
    /// Address of an already running server (loopback for local runs); several (comma-separated or repeated) for the nodes of a cluster, connection i going to node i % n; without it a server is spawned.
    #[arg(long, value_delimiter = ',')]
    pub server: Vec<SocketAddr>,
    /// Certificate fingerprint printed by the server given with --server: one for all nodes, or one per node in --server order.
    #[arg(long, value_delimiter = ',')]
    pub fingerprint: Vec<String>,
    /// PID of the --server process, to report its RSS and CPU from /proc: one per node in --server order (nodes in one process repeat it).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Start a fresh server on a temporary data dir (the default when --server is absent).
    #[arg(long)]
    pub spawn_server: bool,
    /// The tern binary to spawn [default: `tern` next to tern-load].
    #[arg(long)]
    pub tern_bin: Option<PathBuf>,
    /// Shards of the spawned server [default: the server's own, one per core].
    #[arg(long)]
    pub shards: Option<usize>,
    /// Parent directory of the spawned server's temporary data dir [default: the system temp dir].
    #[arg(long)]
    pub data_parent: Option<PathBuf>,
    /// Keep the spawned server's data dir and log after the run.
    #[arg(long)]
    pub keep_data: bool,
}

/// One node of the target: where it listens and which certificate it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Node {
    pub addr: SocketAddr,
    pub fingerprint: [u8; 32],
}

/// A server (or the nodes of a cluster) this run talks to.
pub struct Target {
    /// At least one; the first is the spawned or only server.
    pub nodes: Vec<Node>,
    /// The nodes' processes, for CPU and RSS from /proc.
    pub procs: ServerProcs,
    pub shards: Option<usize>,
    pub kind: &'static str,
    child: Option<Child>,
    data: Option<TempDir>,
}

impl Target {
    /// The tern server the arguments name, spawning one if asked (or by default).
    pub fn tern(args: &TargetArgs) -> Result<Target> {
        if let Some(existing) = Target::existing(args, "tern")? {
            return Ok(existing);
        }
        let bin = match &args.tern_bin {
            Some(bin) => bin.clone(),
            None => sibling_binary("tern")?,
        };
        let mut cmd = Command::new(&bin);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]);
        if let Some(shards) = args.shards {
            cmd.args(["--shards", &shards.to_string()]);
        }
        Target::spawn(cmd, &bin, args, "tern", true)
    }

    /// The raw-QUIC echo server: `tern-load echo-server` in its own process.
    pub fn echo(args: &TargetArgs) -> Result<Target> {
        if args.server.len() > 1 {
            return Err(LoadError::Usage(
                "the raw-QUIC baseline measures one echo server: give one --server".into(),
            ));
        }
        if let Some(existing) = Target::existing(args, "echo")? {
            return Ok(existing);
        }
        let bin = std::env::current_exe().map_err(|source| LoadError::Spawn {
            bin: "tern-load".into(),
            source,
        })?;
        let mut cmd = Command::new(&bin);
        cmd.args(["echo-server", "--listen", "127.0.0.1:0"]);
        if let Some(shards) = args.shards {
            cmd.args(["--shards", &shards.to_string()]);
        }
        Target::spawn(cmd, &bin, args, "echo", false)
    }

    /// The servers given with `--server`, or `None` when one is to be spawned.
    fn existing(args: &TargetArgs, kind: &'static str) -> Result<Option<Target>> {
        let Some(nodes) = existing_nodes(args)? else {
            return Ok(None);
        };
        let procs = ServerProcs {
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, node)| NodeProc {
                    addr: node.addr,
                    pid: args.server_pid.get(i).copied(),
                })
                .collect(),
        };
        Ok(Some(Target {
            nodes,
            procs,
            shards: None,
            kind,
            child: None,
            data: None,
        }))
    }

    fn spawn(
        mut cmd: Command,
        bin: &Path,
        args: &TargetArgs,
        kind: &'static str,
        with_data: bool,
    ) -> Result<Target> {
        let data = temp_dir(args)?;
        let log_path = data.path().join("server.log");
        let log = std::fs::File::create(&log_path).map_err(|source| LoadError::Write {
            path: log_path.clone(),
            source,
        })?;
        if with_data {
            cmd.arg("--data").arg(data.path().join("data"));
            let config = data.path().join("tern.toml");
            std::fs::write(&config, SPAWNED_CONFIG).map_err(|source| LoadError::Write {
                path: config.clone(),
                source,
            })?;
            cmd.arg("--config").arg(config);
        }
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().map_err(|source| LoadError::Spawn {
            bin: bin.into(),
            source,
        })?;
        let announced = read_announcement(&mut child, &log_path);
        let (addr, shards, fingerprint) = match announced {
            Ok(a) => a,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let data = if args.keep_data {
            keep(data)
        } else {
            Some(data)
        };
        let pid = Some(child.id());
        Ok(Target {
            nodes: vec![Node { addr, fingerprint }],
            procs: ServerProcs {
                nodes: vec![NodeProc { addr, pid }],
            },
            shards: Some(shards),
            kind,
            child: Some(child),
            data,
        })
    }

    /// What the report names as its target: the first node's address and
    /// pid (all nodes' are in the report's `nodes`).
    pub fn info(&self) -> TargetInfo {
        TargetInfo {
            kind: self.kind.to_owned(),
            addr: self
                .nodes
                .iter()
                .map(|n| n.addr.to_string())
                .collect::<Vec<_>>()
                .join(","),
            pid: self.procs.first_pid(),
            shards: self.shards,
        }
    }

    /// Stops a spawned server: SIGTERM, then SIGKILL after a grace period.
    pub fn stop(mut self) {
        self.stop_child();
    }

    fn stop_child(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        drop(self.data.take());
    }
}

fn keep(data: TempDir) -> Option<TempDir> {
    let path = data.keep();
    eprintln!(
        "keeping the server's data dir and log in {}",
        path.display()
    );
    None
}

fn temp_dir(args: &TargetArgs) -> Result<TempDir> {
    let parent = args.data_parent.clone().unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("tern-load-")
        .tempdir_in(&parent)
        .map_err(|source| LoadError::Write {
            path: parent,
            source,
        })
}

/// `name` in the directory of the running tern-load binary.
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|source| LoadError::Spawn {
        bin: name.into(),
        source,
    })?;
    let path = exe
        .parent()
        .map(|dir| dir.join(name))
        .unwrap_or_else(|| PathBuf::from(name));
    if path.is_file() {
        Ok(path)
    } else {
        Err(LoadError::MissingBinary(path))
    }
}

/// The nodes `--server` names with their fingerprints, checked against
/// each other: `None` when a server is to be spawned instead.
fn existing_nodes(args: &TargetArgs) -> Result<Option<Vec<Node>>> {
    let n = args.server.len();
    if n == 0 {
        return Ok(None);
    }
    if args.spawn_server {
        if n > 1 {
            return Err(LoadError::Usage(
                "--spawn-server starts one server: drop it to load the nodes given with --server, or give no --server".into(),
            ));
        }
        return Ok(None);
    }
    let fingerprints = match args.fingerprint.len() {
        0 => return Err(LoadError::Usage("--server needs --fingerprint HEX (the one the server printed), or drop --server to spawn one".into())),
        1 => vec![args.fingerprint.first().map(String::as_str).unwrap_or_default(); n],
        k if k == n => args.fingerprint.iter().map(String::as_str).collect(),
        k => return Err(LoadError::Usage(format!("{k} fingerprints for {n} servers: give one --fingerprint for all nodes or one per node, in --server order"))),
    };
    if !args.server_pid.is_empty() && args.server_pid.len() != n {
        return Err(LoadError::Usage(format!(
            "{} pids for {n} servers: give one --server-pid per node, in --server order (nodes in one process repeat it)",
            args.server_pid.len()
        )));
    }
    let nodes = args
        .server
        .iter()
        .zip(fingerprints)
        .map(|(addr, hex)| {
            Ok(Node {
                addr: *addr,
                fingerprint: parse_fingerprint(hex)?,
            })
        })
        .collect::<Result<Vec<Node>>>()?;
    Ok(Some(nodes))
}

type Announcement = (SocketAddr, usize, [u8; 32]);

/// Reads the two announcement lines from the child's stdout, then keeps
/// draining stdout on a thread so the child never blocks on a full pipe.
fn read_announcement(child: &mut Child, log: &Path) -> Result<Announcement> {
    let fail = |detail: String| LoadError::ServerStartup {
        detail,
        log: log.into(),
    };
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| fail("no stdout pipe".into()))?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut listening = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .map_err(|_| fail(exit_detail(child, log)))?;
        if let Some(parsed) = parse_listening(&line) {
            listening = Some(parsed);
        } else if let (Some(hex), Some((addr, shards))) =
            (line.strip_prefix("certificate fingerprint: "), listening)
        {
            return Ok((addr, shards, parse_fingerprint(hex)?));
        }
    }
}

fn exit_detail(child: &mut Child, log: &Path) -> String {
    let tail = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = tail.lines().rev().take(5).collect();
    let status = match child.try_wait() {
        Ok(Some(status)) => format!("it exited ({status})"),
        _ => format!("no announcement within {} s", STARTUP_TIMEOUT.as_secs()),
    };
    format!(
        "{status}; last log lines: {}",
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    )
}

/// `tern listening on 127.0.0.1:4433 (2 shards)` → (address, shards).
pub fn parse_listening(line: &str) -> Option<(SocketAddr, usize)> {
    let rest = line.split(" listening on ").nth(1)?;
    let (addr, shards) = rest.split_once(" (")?;
    let shards = shards
        .strip_suffix(" shards)")
        .or_else(|| shards.strip_suffix(" shard)"))?;
    Some((addr.parse().ok()?, shards.parse().ok()?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_announcement() {
        assert_eq!(
            parse_listening("tern listening on 127.0.0.1:4433 (2 shards)"),
            Some(("127.0.0.1:4433".parse().unwrap(), 2))
        );
        assert_eq!(
            parse_listening("tern-load echo listening on [::1]:9 (1 shard)"),
            Some(("[::1]:9".parse().unwrap(), 1))
        );
        assert_eq!(parse_listening("certificate fingerprint: ab"), None);
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        target: TargetArgs,
    }

    fn nodes(args: &[&str]) -> Result<Option<Vec<Node>>> {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
        existing_nodes(&cli.target)
    }

    const A: &str = "aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa:aa";

    #[test]
    fn several_servers_take_one_fingerprint_or_one_each() {
        let b = A.replace("aa", "bb");
        let one = nodes(&[
            "--server",
            "127.0.0.1:1,127.0.0.1:2",
            "--server",
            "127.0.0.1:3",
            "--fingerprint",
            A,
        ])
        .unwrap()
        .unwrap();
        assert_eq!(one.len(), 3);
        assert!(one.iter().all(|n| n.fingerprint == [0xaa; 32]));
        assert_eq!(one[2].addr, "127.0.0.1:3".parse().unwrap());
        let each = nodes(&[
            "--server",
            "127.0.0.1:1,127.0.0.1:2",
            "--fingerprint",
            &format!("{A},{b}"),
            "--server-pid",
            "7,7",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(each[1].fingerprint, [0xbb; 32]);
        assert!(nodes(&[]).unwrap().is_none());
        assert!(nodes(&["--server", "127.0.0.1:1", "--spawn-server"])
            .unwrap()
            .is_none());
    }

    #[test]
    fn senseless_combinations_are_usage_errors() {
        let usage = |args: &[&str], says: &str| match nodes(args) {
            Err(LoadError::Usage(m)) => assert!(m.contains(says), "{m}"),
            other => panic!("{args:?} gave {:?}", other.map(|n| n.map(|v| v.len()))),
        };
        let two = "127.0.0.1:1,127.0.0.1:2";
        usage(
            &["--server", two, "--spawn-server"],
            "--spawn-server starts one server",
        );
        usage(&["--server", two], "--server needs --fingerprint");
        let three = format!("{A},{A},{A}");
        usage(
            &["--server", two, "--fingerprint", &three],
            "3 fingerprints for 2 servers",
        );
        usage(
            &["--server", two, "--fingerprint", A, "--server-pid", "7"],
            "1 pids for 2 servers",
        );
    }
}
