//! Command line of `fluxgate-reconciler` (each flag also an environment
//! variable). The operator's Deployment runs
//! `fluxgate-reconciler reconcile --namespace=<ns>` with
//! `FLUXGATE_FLUXCONFIGS=<names>`; everything else has a default that fits
//! the provisioned pod.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fluxgate_platform_defaults::render::{ADMIN_PORT, CREDENTIALS_MOUNT_DIR};

use crate::manifests::{DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, Limits};

/// `fluxgate-reconciler`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fluxgate-reconciler",
    version,
    about = "Syncs a team's Git repositories into its namespaces."
)]
pub struct Cli {
    /// Log format: `json` or `text`.
    #[arg(
        long,
        env = "FLUXGATE_LOG_FORMAT",
        default_value = "json",
        global = true
    )]
    pub log_format: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Serve the FluxConfigs of one namespace until stopped.
    Reconcile(ReconcileArgs),
}

/// Flags of `reconcile`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// The team namespace: where the FluxConfigs are, and the
    /// ServiceAccount the reconciler runs as.
    #[arg(long, env = "FLUXGATE_NAMESPACE")]
    pub namespace: String,

    /// Names of the FluxConfigs to serve, comma-separated. Empty serves
    /// every FluxConfig of the namespace (for running by hand).
    #[arg(
        long,
        env = "FLUXGATE_FLUXCONFIGS",
        value_delimiter = ',',
        default_value = ""
    )]
    pub flux_configs: Vec<String>,

    /// Directory holding one directory per credentials Secret, named like
    /// the platform Secret, with `username` and `password` files.
    #[arg(long, env = "FLUXGATE_CREDENTIALS_DIR", default_value = CREDENTIALS_MOUNT_DIR)]
    pub credentials_dir: PathBuf,

    /// Address of the plain-HTTP admin server (`/livez`, `/readyz`,
    /// `/metrics`).
    #[arg(long, env = "FLUXGATE_ADMIN_LISTEN", default_value_t = default_admin_listen())]
    pub admin_listen: SocketAddr,

    /// Scratch directory for Git caches and checkouts.
    #[arg(long, env = "FLUXGATE_WORK_DIR", default_value = "/tmp/fluxgate")]
    pub work_dir: PathBuf,

    /// Most manifest files read from a FluxConfig's path. The platform's
    /// `limits.maxFiles` is not visible to the reconciler (PlatformDefaults
    /// are cluster-scoped), so it defaults to 2000.
    #[arg(long, env = "FLUXGATE_MAX_FILES", default_value_t = DEFAULT_MAX_FILES)]
    pub max_files: usize,

    /// Largest repository transfer and checkout, in bytes (the platform's
    /// `limits.maxRepoBytes`; defaults to 100 MiB for the same reason).
    #[arg(long, env = "FLUXGATE_MAX_REPO_BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    pub max_repo_bytes: u64,

    /// Longest a Git operation may take, in seconds.
    #[arg(long, env = "FLUXGATE_GIT_TIMEOUT_SECONDS", default_value_t = 60)]
    pub git_timeout_seconds: u64,

    /// This instance's name in events (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "fluxgate-reconciler")]
    pub identity: String,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT))
}

impl ReconcileArgs {
    /// The manifest limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_files: self.max_files,
            max_bytes: self.max_repo_bytes,
        }
    }

    /// The Git timeout.
    pub fn git_timeout(&self) -> Duration {
        Duration::from_secs(self.git_timeout_seconds.max(1))
    }

    /// The FluxConfig names to serve (empty: all).
    pub fn served(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .flux_configs
            .iter()
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use clap::Parser as _;

    use super::*;

    #[test]
    fn parses_what_the_operator_renders() {
        let cli = Cli::try_parse_from([
            "fluxgate-reconciler",
            "reconcile",
            "--namespace=team-a",
            "--flux-configs=web, api,web",
        ])
        .unwrap();
        let Command::Reconcile(args) = cli.command;
        assert_eq!(args.namespace, "team-a");
        assert_eq!(args.served(), ["api", "web"]);
        assert_eq!(args.credentials_dir, PathBuf::from("/var/run/fluxgate/git"));
        assert_eq!(args.admin_listen.port(), 8080);
        assert_eq!(args.work_dir, PathBuf::from("/tmp/fluxgate"));
        assert_eq!(args.limits(), Limits::default());
    }
}
