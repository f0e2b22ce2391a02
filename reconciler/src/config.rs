//! Command line of `fluxgate-reconciler` (each flag also an environment
//! variable). Two modes:
//!
//! - `reconcile` (team mode): the operator's Deployment runs
//!   `fluxgate-reconciler reconcile --namespace=<ns>` with
//!   `FLUXGATE_FLUXCONFIGS=<names>`; everything else has a default that fits
//!   the provisioned pod.
//! - `platform` (cluster mode): the platform team's Deployment runs
//!   `fluxgate-reconciler platform --namespace=fluxgate-system --name=platform`
//!   to sync the platform config repository (see the crate docs).

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use fluxgate_platform_defaults::render::{ADMIN_PORT, CREDENTIALS_MOUNT_DIR};

use crate::manifests::{
    DEFAULT_MAX_BYTES, DEFAULT_MAX_FILES, DEFAULT_MAX_OBJECTS, KindRef, Limits,
};

/// `fluxgate-reconciler`.
///
/// `Cli` alone (`Cli<Command>`) parses team mode only, which is what the
/// operator renders; the binary parses [`Cli<Mode>`](Mode), which adds
/// `platform`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fluxgate-reconciler",
    version,
    about = "Syncs a team's Git repositories into its namespaces, or the platform config repository into the cluster.",
    long_about = None
)]
pub struct Cli<C: clap::Subcommand = Command> {
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
    pub command: C,
}

/// Team-mode subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Serve the FluxConfigs of one namespace until stopped.
    Reconcile(ReconcileArgs),
}

/// Every subcommand of the binary.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Mode {
    /// Team mode.
    #[command(flatten)]
    Team(Command),
    /// Sync the platform config repository (Namespaces, PlatformDefaults,
    /// FluxConfigs) as configured by one FluxConfig in the platform
    /// namespace, until stopped.
    Platform(PlatformArgs),
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

    /// Flags both modes share.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags of `platform`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlatformArgs {
    /// The platform namespace: where the FluxConfig configuring this
    /// instance is, and where its inventory and events go.
    #[arg(long, env = "FLUXGATE_NAMESPACE", default_value = "fluxgate-system")]
    pub namespace: String,

    /// Name of that FluxConfig. Its `spec` is the configuration (no
    /// operator resolves it) and its `status` the report.
    #[arg(long, env = "FLUXGATE_PLATFORM_NAME", default_value = "platform")]
    pub name: String,

    /// Credentials Secret for the platform repository: a directory of that
    /// name under `--credentials-dir` with `username` and `password`.
    /// Without it the repository is fetched anonymously.
    #[arg(long, env = "FLUXGATE_CREDENTIALS_SECRET")]
    pub credentials_secret: Option<String>,

    /// One more kind the platform repository may hold, as `<group>/<Kind>`
    /// (`core/ConfigMap` for the core group), repeatable. Namespaces,
    /// PlatformDefaults and FluxConfigs are always allowed. What the
    /// instance may really write is still limited by its ClusterRole.
    #[arg(
        long = "allow-kind",
        env = "FLUXGATE_ALLOW_KINDS",
        value_delimiter = ','
    )]
    pub allow_kinds: Vec<KindRef>,

    /// Flags both modes share.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Flags of both modes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
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

    /// Most manifest files read from a FluxConfig's path. The operator sets
    /// it from the platform's `limits.maxFiles`; 2000 when no
    /// PlatformDefaults sets one.
    #[arg(long, env = "FLUXGATE_MAX_FILES", default_value_t = DEFAULT_MAX_FILES)]
    pub max_files: usize,

    /// Largest repository transfer and checkout, in bytes. The operator
    /// sets it from the platform's `limits.maxRepoBytes`; 100 MiB when no
    /// PlatformDefaults sets one.
    #[arg(long, env = "FLUXGATE_MAX_REPO_BYTES", default_value_t = DEFAULT_MAX_BYTES)]
    pub max_repo_bytes: u64,

    /// Most YAML documents (objects) read from a FluxConfig's path.
    #[arg(long, env = "FLUXGATE_MAX_OBJECTS", default_value_t = DEFAULT_MAX_OBJECTS)]
    pub max_objects: usize,

    /// Longest a Git operation (ls-remote, or fetch and checkout) may take,
    /// in seconds: every connection is closed then. A connection that
    /// carries nothing for half this time (at most 30 seconds) is closed
    /// before: the server stalls.
    #[arg(long, env = "FLUXGATE_GIT_TIMEOUT_SECONDS", default_value_t = 60)]
    pub git_timeout_seconds: u64,

    /// This instance's name in events (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "fluxgate-reconciler")]
    pub identity: String,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT))
}

impl CommonArgs {
    /// The manifest limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_files: self.max_files,
            max_bytes: self.max_repo_bytes,
            max_objects: self.max_objects,
        }
    }

    /// The Git timeout.
    pub fn git_timeout(&self) -> Duration {
        Duration::from_secs(self.git_timeout_seconds.max(1))
    }
}

impl ReconcileArgs {
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

/// Whether `name` is a single plain path component, so that joining it to
/// the credentials directory cannot leave it.
pub fn is_plain_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(
        (parts.next(), parts.next()),
        (Some(Component::Normal(_)), None)
    )
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
        let common = &args.common;
        assert_eq!(
            common.credentials_dir,
            PathBuf::from("/var/run/fluxgate/git")
        );
        assert_eq!(common.admin_listen.port(), 8080);
        assert_eq!(common.work_dir, PathBuf::from("/tmp/fluxgate"));
        assert_eq!(common.limits(), Limits::default());

        // The binary parses the same line.
        let cli =
            Cli::<Mode>::try_parse_from(["fluxgate-reconciler", "reconcile", "--namespace=a"])
                .unwrap();
        assert!(matches!(cli.command, Mode::Team(Command::Reconcile(_))));
    }

    #[test]
    fn parses_platform_mode_with_defaults_and_allowed_kinds() {
        let cli = Cli::<Mode>::try_parse_from([
            "fluxgate-reconciler",
            "platform",
            "--allow-kind=rbac.authorization.k8s.io/ClusterRole",
            "--allow-kind",
            "core/ConfigMap",
            "--credentials-secret=git-platform",
        ])
        .unwrap();
        let Mode::Platform(args) = cli.command else {
            panic!("platform mode expected");
        };
        assert_eq!(args.namespace, "fluxgate-system");
        assert_eq!(args.name, "platform");
        assert_eq!(args.credentials_secret.as_deref(), Some("git-platform"));
        let kinds: Vec<String> = args.allow_kinds.iter().map(ToString::to_string).collect();
        assert_eq!(
            kinds,
            ["rbac.authorization.k8s.io/ClusterRole", "core/ConfigMap"]
        );
        assert_eq!(args.common.admin_listen.port(), 8080);

        // A kind without its group is ambiguous.
        assert!(
            Cli::<Mode>::try_parse_from(["fluxgate-reconciler", "platform", "--allow-kind=Secret"])
                .is_err()
        );
        // Team mode does not know the platform subcommand.
        assert!(Cli::<Command>::try_parse_from(["fluxgate-reconciler", "platform"]).is_err());
    }

    #[test]
    fn credentials_names_must_be_plain() {
        assert!(is_plain_name("git-corp"));
        for bad in ["", "..", "../etc", "a/b", "/etc", "."] {
            assert!(!is_plain_name(bad), "{bad:?}");
        }
    }
}
