//! `fluxgate-reconciler`: see the library docs.

use std::process::ExitCode;

use clap::Parser as _;
use fluxgate_reconciler::{Cli, Command, Mode};

#[tokio::main]
async fn main() -> ExitCode {
    // Only ring is compiled in; installing it explicitly avoids a panic if a
    // dependency ever enables a second provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::<Mode>::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if cli.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let result = match cli.command {
        Mode::Team(Command::Reconcile(args)) => fluxgate_reconciler::run(args).await,
        Mode::Platform(args) => fluxgate_reconciler::run_platform(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %fluxgate_reconciler::error::chain(&err), "reconciler stopped");
            ExitCode::FAILURE
        }
    }
}
