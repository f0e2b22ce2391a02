//! Command-line flags of the operator (each also an environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fluxgate_platform_defaults::PlatformSettings;

/// Flags of `fluxgate-operator`.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fluxgate-operator",
    version,
    about = "Provisions a scoped reconciler per team namespace."
)]
pub struct Config {
    /// Namespace fluxgate runs in: holds the credential Secrets and the
    /// leader Lease, and is never a team target.
    #[arg(
        long,
        env = "FLUXGATE_PLATFORM_NAMESPACE",
        default_value = "fluxgate-system"
    )]
    pub platform_namespace: String,

    /// Reconciler image when no PlatformDefaults sets one.
    #[arg(
        long,
        env = "FLUXGATE_DEFAULT_RECONCILER_IMAGE",
        default_value = "ghcr.io/fluxgate-dev/reconciler:v0.1.0"
    )]
    pub default_reconciler_image: String,

    /// ClusterRole bound for reconcilers when no PlatformDefaults sets one.
    #[arg(
        long,
        env = "FLUXGATE_DEFAULT_CLUSTER_ROLE",
        default_value = "fluxgate-team-reconciler"
    )]
    pub default_cluster_role: String,

    /// Namespace pattern no team may target, besides `kube-*`, the platform
    /// namespace and PlatformDefaults' protectedNamespaces (repeat the flag,
    /// or comma-separate in the environment variable).
    #[arg(
        long = "protected-namespace",
        env = "FLUXGATE_PROTECTED_NAMESPACES",
        value_delimiter = ','
    )]
    pub protected_namespaces: Vec<String>,

    /// Directory of tera templates overriding the built-in ones.
    #[arg(long, env = "FLUXGATE_TEMPLATES_DIR")]
    pub templates_dir: Option<PathBuf>,

    /// Address of the plain-HTTP admin server (`/livez`, `/readyz`, `/metrics`).
    #[arg(long, env = "FLUXGATE_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,

    /// Run leader election (disable only when exactly one replica runs).
    #[arg(long, env = "FLUXGATE_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "FLUXGATE_LEADER_LEASE",
        default_value = "fluxgate-operator"
    )]
    pub leader_lease: String,

    /// This replica's identity in the election (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "fluxgate-operator")]
    pub identity: String,

    /// Lease duration in seconds.
    #[arg(long, env = "FLUXGATE_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,

    /// Resync interval in seconds: how often every FluxConfig is re-checked
    /// even without events (writes happen only when something drifted).
    #[arg(long, env = "FLUXGATE_RESYNC_SECONDS", default_value_t = 600)]
    pub resync_seconds: u64,

    /// Give every team's reconciler a NetworkPolicy: in, only its admin
    /// port; out, only DNS, the API server and the Git hosts (the flags
    /// below).
    #[arg(long, env = "FLUXGATE_NETWORK_POLICY", default_value_t = false, action = clap::ArgAction::Set)]
    pub network_policy: bool,

    /// CIDR of the API server endpoints the reconcilers may reach
    /// (repeatable); none: any destination on the API server ports.
    #[arg(
        long = "network-policy-api-server-cidr",
        env = "FLUXGATE_NETWORK_POLICY_API_SERVER_CIDRS",
        value_delimiter = ','
    )]
    pub network_policy_api_server_cidrs: Vec<String>,

    /// API server port the reconcilers may reach (repeatable).
    #[arg(long = "network-policy-api-server-port", env = "FLUXGATE_NETWORK_POLICY_API_SERVER_PORTS", value_delimiter = ',', default_values_t = [443u16, 6443])]
    pub network_policy_api_server_ports: Vec<u16>,

    /// CIDR of the Git hosts the reconcilers may reach (repeatable); none:
    /// any destination on the Git ports.
    #[arg(
        long = "network-policy-git-cidr",
        env = "FLUXGATE_NETWORK_POLICY_GIT_CIDRS",
        value_delimiter = ','
    )]
    pub network_policy_git_cidrs: Vec<String>,

    /// Git port the reconcilers may reach (repeatable).
    #[arg(long = "network-policy-git-port", env = "FLUXGATE_NETWORK_POLICY_GIT_PORTS", value_delimiter = ',', default_values_t = [443u16, 22])]
    pub network_policy_git_ports: Vec<u16>,

    /// Log format: `json` or `text`.
    #[arg(long, env = "FLUXGATE_LOG_FORMAT", default_value = "json")]
    pub log_format: String,
}

impl Config {
    /// The platform settings shared with the webhook and CLI.
    pub fn settings(&self) -> PlatformSettings {
        PlatformSettings {
            platform_namespace: self.platform_namespace.clone(),
            default_reconciler_image: self.default_reconciler_image.clone(),
            default_cluster_role: self.default_cluster_role.clone(),
            protected_namespaces: self.protected_namespaces.clone(),
        }
    }

    /// The reconcilers' NetworkPolicy, when `--network-policy` is on.
    pub fn reconciler_network_policy(
        &self,
    ) -> Option<fluxgate_platform_defaults::render::ReconcilerNetworkPolicy> {
        self.network_policy.then(
            || fluxgate_platform_defaults::render::ReconcilerNetworkPolicy {
                api_server_cidrs: self.network_policy_api_server_cidrs.clone(),
                api_server_ports: self.network_policy_api_server_ports.clone(),
                git_cidrs: self.network_policy_git_cidrs.clone(),
                git_ports: self.network_policy_git_ports.clone(),
            },
        )
    }

    /// The lease duration.
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_seconds.max(2))
    }
}
