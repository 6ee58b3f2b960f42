//! One module per scenario; each has its flags (`Args`) and a `run` that
//! returns the finished [`crate::report::Report`].

pub mod baseline;
pub mod chat;
pub mod connect;
pub mod group;
pub mod presence;
pub mod presence_setup;
pub mod sync;
pub mod upload;
pub mod waves;

use std::sync::Arc;

use serde::Serialize;

use crate::conn::{run_id, Endpoints};
use crate::error::{LoadError, Result};
use crate::nodes::NodeReport;
use crate::report::Report;
use crate::stats::{Clock, Stats};
use crate::target::Target;

/// What every scenario starts with: its target, endpoints, stats and report.
pub struct Ctx {
    pub target: Target,
    pub endpoints: Arc<Endpoints>,
    pub stats: Arc<Stats>,
    pub report: Report,
    pub run: String,
}

impl Ctx {
    pub fn new(
        scenario: &str,
        config: &impl Serialize,
        target: Target,
        client: &crate::args::ClientArgs,
    ) -> Result<Ctx> {
        let endpoints = Endpoints::new(client.endpoints, &target.nodes, client.timeout())?;
        let config = serde_json::to_value(config).map_err(|e| LoadError::Usage(e.to_string()))?;
        let report = Report::new(scenario, config, target.info());
        Ok(Ctx {
            target,
            endpoints,
            stats: Arc::new(Stats::new(Clock::new())),
            report,
            run: run_id(),
        })
    }

    /// Shuts the client side and the spawned server down and hands back
    /// the report, with the connections each node got in its `nodes`.
    pub async fn close(mut self) -> Report {
        self.node_connections();
        self.endpoints.shutdown().await;
        self.report.latency = self.stats.summaries();
        self.report.timeline = self.stats.timelines();
        let target = self.target;
        let _ = tokio::task::spawn_blocking(move || target.stop()).await;
        self.report
    }

    /// Fills in each node entry's connection count (making the entries
    /// when no phase measured them).
    fn node_connections(&mut self) {
        let procs = &self.target.procs;
        if self.report.nodes.len() != procs.nodes.len() {
            self.report.nodes = procs
                .nodes
                .iter()
                .map(|n| NodeReport::unmeasured(n, procs))
                .collect();
        }
        for (entry, opened) in self.report.nodes.iter_mut().zip(self.endpoints.opened()) {
            entry.connections = opened;
        }
        for pid in procs.pids().into_iter().filter(|p| procs.shared(*p)) {
            self.report.note(format!(
                "the nodes with pid {pid} run in one process: each reports that whole process's CPU and RSS, which cannot be split by node"
            ));
        }
    }
}
