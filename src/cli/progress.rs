//! What `run` shows while it works: a progress bar on a terminal, plain log
//! lines otherwise; and the state file behind both.

use crate::metrics::{Here, Metrics, MigrationLabels, MigrationTotals};
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::api::{IdentityMigrationStatus, Phase};
use crate::engine::error::StoreError;
use crate::engine::{EngineEvent, FileStore, StatusSink};

/// How often plain (non-terminal) output reports progress.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

static BAR: OnceLock<ProgressBar> = OnceLock::new();

/// Whether stderr is a terminal that gets a progress bar.
pub fn wants_bar() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_PROGRESS").is_none()
}

/// Log output that first lifts the progress bar out of the way.
pub struct BarAwareStderr;

impl Write for BarAwareStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BAR.get() {
            Some(bar) if !bar.is_hidden() => bar.suspend(|| std::io::stderr().write_all(buf)).map(|()| buf.len()),
            _ => std::io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

pub struct TerminalSink {
    pub store: FileStore,
    bar: Option<ProgressBar>,
    /// Metrics served with `--metrics-addr`, with the migration's labels.
    metrics: Option<(Metrics, MigrationLabels, MigrationTotals)>,
    last_line: Option<Instant>,
    shown_phase: Option<Phase>,
}

impl TerminalSink {
    pub fn new(store: FileStore, bar: bool) -> Self {
        let bar = bar.then(|| {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(
                ProgressStyle::with_template("{spinner} {prefix:>15} [{bar:32}] {percent:>3}% {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            let _ = BAR.set(bar.clone());
            bar
        });
        Self { store, bar, metrics: None, last_line: None, shown_phase: None }
    }

    pub fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    /// Also keeps `metrics` current, labelled as `labels`.
    pub fn with_metrics(mut self, metrics: Metrics, labels: MigrationLabels) -> Self {
        self.metrics = Some((metrics, labels, MigrationTotals::default()));
        self
    }

    fn draw(&mut self, status: &IdentityMigrationStatus) {
        let line = status_line(status);
        if let Some(bar) = &self.bar {
            let (pos, len) = match &status.progress {
                Some(p) => (p.rows_copied.max(0) as u64, p.rows_total.max(1) as u64),
                None => (0, 1),
            };
            bar.set_length(len);
            bar.set_position(pos.min(len));
            bar.set_prefix(status.phase.to_string());
            bar.set_message(line);
            return;
        }
        if self.shown_phase != Some(status.phase) {
            // Start the clock at the phase change: the first line comes one interval in.
            self.last_line = Some(Instant::now());
            self.shown_phase = Some(status.phase);
        }
        let due = self.last_line.is_none_or(|t| t.elapsed() >= PLAIN_EVERY);
        if status.phase == Phase::Copying && due {
            eprintln!("{}: {line}", status.phase);
            self.last_line = Some(Instant::now());
        }
    }
}

/// `131072/1000000 rows, 41000 rows/s, ETA 21s`.
pub fn status_line(status: &IdentityMigrationStatus) -> String {
    let Some(p) = &status.progress else { return String::new() };
    let mut line = format!("{}/{} rows", p.rows_copied, p.rows_total);
    if status.phase == Phase::Copying {
        line.push_str(&format!(" ({}%)", p.percent));
        if p.rows_per_second > 0 {
            line.push_str(&format!(", {} rows/s", p.rows_per_second));
        }
        if let Some(eta) = &p.eta {
            line.push_str(&format!(", ETA {eta}"));
        }
        if let Some(pace) = p.pace.as_ref().filter(|pace| pace.reason != "Clear") {
            let rate = pace.rows_per_second.map_or("unlimited".to_string(), |r| format!("{r} rows/s"));
            line.push_str(&format!(", paced to {rate}: {}", pace.message));
        }
    }
    line
}

impl StatusSink for TerminalSink {
    async fn save(&mut self, status: &IdentityMigrationStatus) -> Result<(), StoreError> {
        Ok(self.store.write(status)?)
    }

    async fn event(&mut self, event: EngineEvent) {
        let line = event.message.clone();
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn observe(&mut self, status: &IdentityMigrationStatus) {
        self.draw(status);
        if let Some((metrics, labels, totals)) = &mut self.metrics {
            metrics.observe_status(labels, totals, status);
            metrics.observe_resource(labels, status, Here { engine_running: true, suspended: false });
            *totals = MigrationTotals::of(status);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::progress::progress;

    #[test]
    fn the_status_line_shows_rows_rate_and_eta() {
        let status = IdentityMigrationStatus {
            phase: Phase::Copying,
            progress: Some(progress(131_072, 1_000_000, 41_000, 0, false)),
            ..Default::default()
        };
        assert_eq!(status_line(&status), "131072/1000000 rows (13%), 41000 rows/s, ETA 22s");
    }
}
