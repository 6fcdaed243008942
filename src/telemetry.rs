//! Logging: human-readable text on a terminal, JSON lines in a cluster.

use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;
use crate::cli::progress::BarAwareStderr;

/// `RUST_LOG` overrides the level: by default a terminal sees warnings (the
/// command prints its own progress and events) and a cluster sees info.
pub fn init(format: LogFormat) {
    let default = match format {
        LogFormat::Text => "warn",
        LogFormat::Json => "info",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(|| BarAwareStderr);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).init(),
        LogFormat::Text => builder.with_target(false).compact().init(),
    }
}
