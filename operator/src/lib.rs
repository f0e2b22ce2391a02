//! The fluxgate meta-operator.
//!
//! For every namespace holding `FluxConfig`s it resolves the effective
//! configuration from the platform's `PlatformDefaults` (with the policy
//! core the admission webhook uses), renders the namespace's reconciler and
//! its rights from the platform's templates, applies them with server-side
//! apply, and reports on each FluxConfig's status. See [`reconcile`] for the
//! pipeline and [`controller`] for what triggers it.

pub mod config;
pub mod context;
pub mod controller;
pub mod defaults_status;
pub mod diff;
pub mod error;
pub mod guard;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod status;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use fluxgate_platform_defaults::render::Renderer;
use kube::runtime::events::{Recorder, Reporter};
use tracing::{error, info};

pub use config::Config;

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag is invalid (e.g. a protected-namespace pattern).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No Kubernetes client could be configured.
    #[error("cannot configure a Kubernetes client")]
    Client(#[source] kube::Error),
    /// The templates could not be loaded.
    #[error("cannot load the templates")]
    Templates(#[source] fluxgate_platform_defaults::render::RenderError),
    /// The admin port could not be opened.
    #[error("cannot listen on the admin address {addr}")]
    Admin {
        /// The address.
        addr: std::net::SocketAddr,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// Leadership was lost; the process should exit and restart.
    #[error("leadership lost")]
    Leader(#[source] leader::LeaderError),
}

/// Everything a running operator exposes to the admin server and tests.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Metrics (write counters among them).
    pub metrics: Arc<metrics::Metrics>,
    /// True once the caches synced (only a leader runs them).
    pub ready: Arc<AtomicBool>,
    /// True while this replica is a healthy follower in the election.
    pub standby: Arc<AtomicBool>,
}

impl Default for Handle {
    fn default() -> Self {
        Self::new()
    }
}

impl Handle {
    /// Fresh metrics, not ready.
    pub fn new() -> Self {
        Self {
            metrics: Arc::new(metrics::Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
            standby: Arc::new(AtomicBool::new(false)),
        }
    }

    /// What the admin endpoints serve.
    pub fn health(&self) -> metrics::Health {
        metrics::Health {
            metrics: self.metrics.clone(),
            ready: self.ready.clone(),
            standby: self.standby.clone(),
        }
    }
}

/// Runs the operator with `client` until `shutdown` resolves (or leadership
/// is lost). Tests call this with a client holding only the operator's RBAC.
///
/// With leader election, only the replica holding the Lease starts the
/// watches and the controller; the others wait and write nothing. A
/// graceful `shutdown` releases the Lease; dropping the returned future (or
/// the runtime) does not, like a crash.
pub async fn run_with_client(
    client: kube::Client,
    config: Config,
    handle: Handle,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), RunError> {
    config.settings().check().map_err(RunError::Config)?;
    let network_policy = config.reconciler_network_policy();
    if let Some(policy) = &network_policy {
        policy.check().map_err(RunError::Config)?;
    }
    let renderer = match &config.templates_dir {
        Some(dir) => Renderer::from_dir(dir),
        None => Renderer::new(),
    }
    .map_err(RunError::Templates)?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "fluxgate-operator".into(),
            instance: Some(config.identity.clone()),
        },
    );
    let parts = controller::ContextParts {
        settings: config.settings(),
        network_policy,
        renderer,
        metrics: handle.metrics.clone(),
        recorder,
        synced: handle.ready.clone(),
    };
    let resync = Duration::from_secs(config.resync_seconds.max(1));
    let work = controller::run(client.clone(), parts, resync, shutdown);
    if config.leader_election {
        let election = leader::Election {
            namespace: config.platform_namespace.clone(),
            name: config.leader_lease.clone(),
            identity: config.identity.clone(),
            lease_duration: config.lease_duration(),
            retry_period: (config.lease_duration() / 5).max(Duration::from_millis(500)),
        };
        let metrics = handle.metrics.clone();
        let led = async move {
            metrics.leader.set(1);
            work.await;
        };
        let result = leader::run_as_leader(client, election, handle.standby.clone(), led).await;
        handle.metrics.leader.set(0);
        handle
            .ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
        result.map_err(RunError::Leader)
    } else {
        work.await;
        Ok(())
    }
}

/// Runs the operator as deployed: in-cluster (or kubeconfig) client, admin
/// server, leader election, until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), RunError> {
    let client = kube::Client::try_default()
        .await
        .map_err(RunError::Client)?;
    let handle = Handle::new();
    let listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .map_err(|source| RunError::Admin {
            addr: config.admin_listen,
            source,
        })?;
    let admin = metrics::admin_router(handle.health());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, admin).await {
            error!(error = %e, "admin server stopped");
        }
    });
    info!(platform_namespace = %config.platform_namespace, "starting fluxgate operator");
    run_with_client(client, config, handle, shutdown_signal()).await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
