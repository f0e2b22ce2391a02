//! The fluxgate validating admission webhook for `FluxConfig` and
//! `PlatformDefaults`.
//!
//! - [`review`] is the decision, a pure function of an admission request and
//!   a [`Snapshot`]; every rule it applies lives in
//!   `fluxgate_platform_defaults`, and its denials are that crate's
//!   `Violations` text verbatim.
//! - [`router`] adapts `POST /validate` AdmissionReviews to [`review`];
//!   tests drive it with [`AppState::from_snapshot`] and JSON fixtures.
//! - [`run`] starts everything from a [`Config`]: reflectors keep the
//!   snapshot current (no API call on the request path), HTTPS with a
//!   certificate reloaded from disk, a plain-HTTP admin port with `/livez`,
//!   `/readyz` and `/metrics`, and a graceful shutdown on SIGTERM.

mod http;
mod metrics;
mod review;
mod server;
mod snapshot;
mod tls;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;

use fluxgate_platform_defaults::PlatformSettings;

pub use http::{AppState, DEFAULT_MAX_BODY_BYTES, admin_router, router};
pub use metrics::{Metrics, Outcome};
pub use review::{MAX_NAMED_IN_WARNINGS, review};
pub use server::{CERT_POLL_INTERVAL, DRAIN_TIMEOUT, Webhook, shutdown_signal};
pub use snapshot::{Labels, Snapshot};
pub use tls::{CertReloader, TlsError};

/// The webhook's flags; each can also be set through its environment
/// variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fluxgate-admission-webhook", version, about)]
pub struct Config {
    /// PEM file with the serving certificate chain; reloaded when it changes.
    #[arg(long, env = "FLUXGATE_TLS_CERT_FILE")]
    pub tls_cert_file: PathBuf,

    /// PEM file with the serving certificate's private key; reloaded when it
    /// changes.
    #[arg(long, env = "FLUXGATE_TLS_KEY_FILE")]
    pub tls_key_file: PathBuf,

    /// Address of the HTTPS admission port (`POST /validate`).
    #[arg(long, env = "FLUXGATE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP admin port (`/livez`, `/readyz`,
    /// `/metrics`).
    #[arg(long, env = "FLUXGATE_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,

    /// Namespace fluxgate runs in; never an allowed target namespace.
    #[arg(
        long,
        env = "FLUXGATE_PLATFORM_NAMESPACE",
        default_value = "fluxgate-system"
    )]
    pub platform_namespace: String,

    /// Reconciler image when no PlatformDefaults sets one (default: the
    /// policy core's built-in image).
    #[arg(long, env = "FLUXGATE_DEFAULT_RECONCILER_IMAGE")]
    pub default_reconciler_image: Option<String>,

    /// ClusterRole bound for the reconciler when no PlatformDefaults sets
    /// one (default: the policy core's built-in role).
    #[arg(long, env = "FLUXGATE_DEFAULT_CLUSTER_ROLE")]
    pub default_cluster_role: Option<String>,

    /// Namespace pattern no team may target, besides `kube-*`, the platform
    /// namespace and PlatformDefaults' protectedNamespaces (repeat the flag,
    /// or comma-separate in the environment variable).
    #[arg(long = "protected-namespace", env = "FLUXGATE_PROTECTED_NAMESPACES", value_delimiter = ',')]
    pub protected_namespaces: Vec<String>,

    /// Largest AdmissionReview body accepted; larger ones get HTTP 413.
    #[arg(long, env = "FLUXGATE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
}

impl Config {
    /// The platform settings these flags describe.
    pub fn platform_settings(&self) -> PlatformSettings {
        let builtin = PlatformSettings::default();
        PlatformSettings {
            platform_namespace: self.platform_namespace.clone(),
            default_reconciler_image: self
                .default_reconciler_image
                .clone()
                .unwrap_or(builtin.default_reconciler_image),
            default_cluster_role: self
                .default_cluster_role
                .clone()
                .unwrap_or(builtin.default_cluster_role),
            protected_namespaces: self.protected_namespaces.clone(),
        }
    }
}

/// Why the webhook could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Kubernetes client configuration (kubeconfig or in-cluster).
    #[error("cannot configure a Kubernetes client")]
    Client(#[source] kube::Error),
    /// The serving certificate could not be loaded.
    #[error("cannot set up TLS")]
    Tls(#[source] TlsError),
    /// A port could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A bound socket has no local address.
    #[error("cannot read the local address of a listener")]
    LocalAddr(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("cannot listen for SIGTERM")]
    Signal(#[source] std::io::Error),
    /// The admin server failed.
    #[error("the admin server failed")]
    Admin(#[source] std::io::Error),
    /// The watch streams ended, which they do not under normal operation.
    #[error("the watch streams ended")]
    WatchEnded,
    /// The watch task panicked or was cancelled.
    #[error("the watch task failed")]
    WatchTask(#[source] tokio::task::JoinError),
}

/// Starts the webhook with a client from the environment (kubeconfig or
/// in-cluster) and serves until SIGTERM or Ctrl-C, then drains and returns.
pub async fn run(config: Config) -> Result<(), Error> {
    let shutdown = shutdown_signal()?;
    let client = kube::Client::try_default().await.map_err(Error::Client)?;
    let webhook = Webhook::bind(&config).await?;
    tracing::info!(
        listen = %webhook.local_addr()?,
        admin = %webhook.admin_addr()?,
        platform_namespace = %config.platform_namespace,
        "fluxgate admission webhook starting"
    );
    webhook.serve(client, shutdown).await
}

/// The message of an error with its causes, `a: b: c` (the core's one
/// implementation, shared with the operator and the CLI).
pub use fluxgate_platform_defaults::violation::error_chain;

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn flags_have_defaults_and_map_to_platform_settings() {
        let config = Config::try_parse_from([
            "fluxgate-admission-webhook",
            "--tls-cert-file=/tls/tls.crt",
            "--tls-key-file=/tls/tls.key",
            "--default-cluster-role=team-role",
        ])
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(config.admin_listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        let settings = config.platform_settings();
        assert_eq!(settings.platform_namespace, "fluxgate-system");
        assert_eq!(settings.default_cluster_role, "team-role");
        assert_eq!(
            settings.default_reconciler_image,
            PlatformSettings::default().default_reconciler_image
        );
    }
}
