//! `fluxgate-operator`: see the library docs.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    // Only ring is compiled in; installing it explicitly avoids a panic if a
    // dependency ever enables a second provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = fluxgate_operator::Config::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if config.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    match fluxgate_operator::run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %fluxgate_operator::error::chain(&err), "operator stopped");
            ExitCode::FAILURE
        }
    }
}
