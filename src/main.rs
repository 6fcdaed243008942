use std::process::ExitCode;

use clap::Parser;
use identity_migrator::cli::{Cli, Command, LogFormat, dispatch};

fn main() -> ExitCode {
    // Both ring and aws-lc-rs are linked: pick one for every rustls user (kube included).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let default_format = match cli.command {
        Command::Controller(_) => LogFormat::Json,
        _ => LogFormat::Text,
    };
    identity_migrator::telemetry::init(cli.log_format.unwrap_or(default_format));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.exit(),
    }
}
