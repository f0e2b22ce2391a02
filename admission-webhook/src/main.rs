//! `fluxgate-admission-webhook`: the validating admission webhook for
//! FluxConfig and PlatformDefaults. Flags and environment variables are
//! described by `--help`; `RUST_LOG` filters the logs (`--log-format`
//! json or text).

use clap::Parser as _;
use fluxgate_admission_webhook::{Flags, error_chain, run};
use tracing_subscriber::EnvFilter;

/// A review allocates many small, short-lived strings; with the system
/// allocator a fifth of the webhook's CPU at saturation was malloc and free
/// (glibc; musl's, in the static images, is slower still). BENCHMARKS.md has
/// the figures.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Err only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let flags = Flags::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if flags.log_format == "text" {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    }
    match run(flags).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %error_chain(&err), "fluxgate admission webhook failed");
            std::process::ExitCode::FAILURE
        }
    }
}
