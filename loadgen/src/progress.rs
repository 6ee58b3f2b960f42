//! The live progress bar (indicatif, on stderr, hidden when stderr is not a
//! terminal or with `--quiet`): position, elapsed time, and a message with
//! the current rate and p99, refreshed by a ticker task.

use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;

/// How often the ticker refreshes the bar.
const TICK: Duration = Duration::from_millis(250);

/// A progress bar for one phase of a run.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `len` steps (`None`: a spinner) labelled `label`.
    pub fn new(label: &str, len: Option<u64>, quiet: bool) -> Progress {
        let bar = match len {
            Some(len) => ProgressBar::new(len),
            None => ProgressBar::new_spinner(),
        };
        if quiet {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let template = if len.is_some() {
            "{prefix:>10} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}"
        } else {
            "{prefix:>10} [{elapsed_precise}] {spinner} {pos} {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_prefix(label.to_owned());
        Progress { bar }
    }

    pub fn set(&self, pos: u64, message: String) {
        self.bar.set_position(pos);
        self.bar.set_message(message);
    }

    pub fn finish(&self) {
        self.bar.finish();
    }

    /// Refreshes the bar from `status` (position, message) until aborted.
    pub fn ticker(&self, status: impl Fn() -> (u64, String) + Send + Sync + 'static) -> Ticker {
        let me = self.clone();
        let status = Arc::new(status);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                let (pos, msg) = status();
                me.set(pos, msg);
            }
        });
        Ticker {
            task,
            progress: self.clone(),
        }
    }
}

/// A running refresher; stopping it finishes the bar.
pub struct Ticker {
    task: JoinHandle<()>,
    progress: Progress,
}

impl Ticker {
    pub fn stop(self) {
        self.task.abort();
        self.progress.finish();
    }
}

/// "12345/s p99 3.210 ms" for a bar message.
pub fn rate_message(rate: f64, p99_us: Option<u64>) -> String {
    match p99_us {
        Some(p) => format!("{rate:.0}/s p99 {:.3} ms", p as f64 / 1000.0),
        None => format!("{rate:.0}/s"),
    }
}
