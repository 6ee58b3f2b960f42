//! Flags shared by every scenario (client endpoints, timeouts, output) and
//! the end of every run: print the table, add baseline ratios, write the
//! JSON report and the SVG plot.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::error::Result;
use crate::report::{add_baseline_ratios, Report};

/// How the load generator's own client side is set up.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct ClientArgs {
    /// Client QUIC endpoints (UDP sockets); connections are spread over them round-robin (shared out among the nodes of a cluster, at least one each).
    #[arg(long, default_value_t = 8)]
    pub endpoints: usize,
    /// Worker threads of the load generator's runtime [default: one per core].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seconds one handshake or setup request may take before it counts as failed.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Registrations (and other setup requests) in flight at once.
    #[arg(long, default_value_t = 256)]
    pub setup_concurrency: usize,
}

impl ClientArgs {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout.max(1))
    }
}

/// Where results go.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct OutputArgs {
    /// Write every figure and the configuration to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Draw latency percentiles over time to this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// A baseline report (from `tern-load baseline --json`): adds vs_baseline.* ratios (this run / baseline).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Prints and saves a finished report as the output flags ask.
pub fn finish(mut report: Report, out: &OutputArgs) -> Result<Report> {
    if let Some(path) = &out.baseline {
        let baseline = Report::load(path)?;
        add_baseline_ratios(&mut report, &baseline);
    }
    print!("{}", report.table());
    if let Some(path) = &out.json {
        report.save(path)?;
        println!("report written to {}", path.display());
    }
    if let Some(path) = &out.plot {
        crate::plot::plot(&report, path)?;
        println!("plot written to {}", path.display());
    }
    Ok(report)
}
