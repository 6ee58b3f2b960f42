//! Resource use of a local process from `/proc`: resident memory
//! (`/proc/PID/status` VmRSS) and CPU time (`/proc/PID/stat` utime+stime, in
//! clock ticks of 10 ms: Linux reports them in USER_HZ, which is 100).

use std::time::Instant;

use crate::error::{LoadError, Result};

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ).
const USER_HZ: u64 = 100;

/// One reading of a process's resource use.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub at: Instant,
    pub rss_bytes: u64,
    /// User plus system CPU time, in nanoseconds.
    pub cpu_ns: u64,
}

/// The difference between two readings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProcDelta {
    pub wall_s: f64,
    pub cpu_s: f64,
    pub rss_delta_bytes: f64,
}

impl ProcDelta {
    /// CPU use as a percentage of one core.
    pub fn cpu_pct_of_core(&self) -> f64 {
        if self.wall_s <= 0.0 {
            0.0
        } else {
            100.0 * self.cpu_s / self.wall_s
        }
    }
}

impl ProcSample {
    pub fn since(&self, before: &ProcSample) -> ProcDelta {
        ProcDelta {
            wall_s: self.at.saturating_duration_since(before.at).as_secs_f64(),
            cpu_s: self.cpu_ns.saturating_sub(before.cpu_ns) as f64 / 1e9,
            rss_delta_bytes: self.rss_bytes as f64 - before.rss_bytes as f64,
        }
    }
}

/// Reads process `pid` now.
pub fn sample(pid: u32) -> Result<ProcSample> {
    let err = |detail: String| LoadError::Proc { pid, detail };
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| err(e.to_string()))?;
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| err(e.to_string()))?;
    let rss_bytes = parse_vm_rss(&status).ok_or_else(|| err("no VmRSS line in status".into()))?;
    let ticks =
        parse_cpu_ticks(&stat).ok_or_else(|| err("cannot parse utime/stime in stat".into()))?;
    Ok(ProcSample {
        at: Instant::now(),
        rss_bytes,
        cpu_ns: ticks * (1_000_000_000 / USER_HZ),
    })
}

/// Samples this very process (the load generator's own cost).
pub fn sample_self() -> Result<ProcSample> {
    sample(std::process::id())
}

/// CPU time (ns) of each thread of `pid`, summed by thread name (the
/// `comm`, e.g. `tern-shard-0`), so a phase can show which thread was busy.
pub fn thread_cpu_ns(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        let name = std::fs::read_to_string(path.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_owned();
        if let Some(ticks) = parse_cpu_ticks(&stat) {
            *out.entry(name).or_insert(0) += ticks * (1_000_000_000 / USER_HZ);
        }
    }
    out
}

/// CPU time (ns) that all cores of the machine spent busy (not idle or
/// waiting for I/O) since boot, from the first line of `/proc/stat`: the
/// difference over a phase, minus the server's and the load generator's own,
/// is what other processes took (another build on a shared machine).
pub fn system_busy_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_system_busy(&stat).map(|ticks| ticks * (1_000_000_000 / USER_HZ))
}

/// Busy ticks of the `cpu` line: user+nice+system+irq+softirq+steal.
pub fn parse_system_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let get = |i: usize| f.get(i).copied().unwrap_or(0);
    Some(get(0) + get(1) + get(2) + get(5) + get(6) + get(7))
}

/// `VmRSS:   1234 kB` → bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    parse_status_kb(status, "VmRSS:")
}

/// A `Name:   1234 kB` line of `/proc/PID/status` → bytes.
pub fn parse_status_kb(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Anonymous resident memory of `pid` (`RssAnon`: the heap and stacks,
/// without the binary's code pages, which VmRSS also counts), bytes.
pub fn rss_anon(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&status, "RssAnon:")
}

/// utime + stime (fields 14 and 15) of a stat line; the command name in
/// parentheses may hold spaces, so fields are counted after its `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_stat() {
        assert_eq!(
            parse_vm_rss("Name:\ttern\nVmRSS:\t   2048 kB\n"),
            Some(2048 * 1024)
        );
        assert_eq!(
            parse_status_kb("VmRSS:\t 3 kB\nRssAnon:\t   7 kB\n", "RssAnon:"),
            Some(7 * 1024)
        );
        let stat = "42 (tern shard 0) S 1 42 42 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
        assert_eq!(
            parse_system_busy("cpu  10 1 5 100 7 2 3 4 0 0\ncpu0 1 1 1 1\n"),
            Some(25)
        );
        let me = sample_self().unwrap();
        assert!(me.rss_bytes > 0);
    }
}
