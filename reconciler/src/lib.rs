//! The per-team fluxgate reconciler: syncs a team's Git repositories into
//! its namespaces. The same binary, in cluster mode, syncs the platform
//! config repository (see below).
//!
//! One instance runs per team namespace, as the ServiceAccount the operator
//! provisioned there, so the API server enforces what it may touch. It
//! serves the FluxConfigs named in `FLUXGATE_FLUXCONFIGS` and reads each
//! one's configuration from `status.effective`, which the operator resolved
//! (the reconciler never applies defaults itself).
//!
//! Modules, in pipeline order: [`git`] (the only one using libgit2),
//! [`manifests`] (read and validate a checkout), [`apply`] (dry run, apply,
//! prune), [`inventory`], [`drift`] (watches of what was applied),
//! [`status`]; [`worker`] drives them per FluxConfig, [`run_with_client`]
//! wires everything to a FluxConfig watch.
//!
//! # Contract with the rest of fluxgate
//!
//! - Every applied object carries the labels `fluxgate.dev/fluxconfig:
//!   <name>` and `fluxgate.dev/fluxconfig-namespace: <namespace>`, and is
//!   owned by the field manager `fluxgate.dev/reconciler`.
//! - The full inventory is the ConfigMap `fluxgate-inventory-<name>` in the
//!   team namespace; `status.inventory` has the total and up to 100
//!   entries.
//! - Status fields written (server-side apply, manager
//!   `fluxgate.dev/reconciler`): conditions `Ready`, `Reconciling`,
//!   `Stalled`, `lastAppliedRevision` and `lastAttemptedRevision`
//!   (`<ref>@sha1:<sha>`), `inventory`, `lastError`.
//!
//! # Cluster mode
//!
//! `fluxgate-reconciler platform` ([`run_platform_with_client`]) runs one
//! instance for the platform config repository, as the platform team's
//! ServiceAccount `fluxgate-platform-sync`, configured by the `spec` of one
//! FluxConfig in the platform namespace ([`cluster`]) and reporting on its
//! status like a team reconciler. The repository may hold Namespaces,
//! PlatformDefaults and FluxConfigs (plus `--allow-kind` kinds); they are
//! applied in that order, so team FluxConfigs pass the admission webhook
//! like any other write, and a denial stalls the instance with the
//! webhook's message.

pub mod apply;
pub mod cluster;
pub mod config;
pub mod drift;
pub mod error;
pub mod git;
pub mod inventory;
pub mod manifests;
pub mod metrics;
pub mod status;
pub mod worker;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fluxgate_crds::FluxConfig;
use futures::StreamExt as _;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tracing::{error, info, warn};

pub use config::{Cli, Command, CommonArgs, Mode, PlatformArgs, ReconcileArgs};

/// Why the reconciler stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No Kubernetes client could be configured.
    #[error("cannot configure a Kubernetes client")]
    Client(#[source] kube::Error),
    /// The admin port could not be opened.
    #[error("cannot listen on the admin address {addr}")]
    Admin {
        /// The address.
        addr: std::net::SocketAddr,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The work directory could not be created.
    #[error("cannot create the work directory {}", path.display())]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
}

/// Everything a running reconciler exposes to tests and the admin server.
#[derive(Debug, Clone)]
pub struct Handle {
    /// Metrics (write counters among them).
    pub metrics: Arc<metrics::Metrics>,
    /// True once the FluxConfig watch has synced.
    pub ready: Arc<AtomicBool>,
}

impl Default for Handle {
    fn default() -> Self {
        Self {
            metrics: Arc::new(metrics::Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Runs the reconciler with `client` until `shutdown` resolves. Tests call
/// this with a client holding only the team ServiceAccount's token.
pub async fn run_with_client(
    client: kube::Client,
    args: ReconcileArgs,
    handle: Handle,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let served = args.served();
    let instance = Instance {
        namespace: args.namespace,
        served,
        common: args.common,
        mode: worker::SyncMode::Team,
    };
    run_instance(client, instance, handle, shutdown).await
}

/// Runs the platform instance (cluster mode) with `client` until
/// `shutdown` resolves. Tests call this with a client holding only the
/// token of the ServiceAccount `fluxgate-platform-sync`.
pub async fn run_platform_with_client(
    client: kube::Client,
    args: PlatformArgs,
    handle: Handle,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let instance = Instance {
        namespace: args.namespace,
        served: vec![args.name],
        common: args.common,
        mode: worker::SyncMode::Cluster(cluster::Settings {
            extra_kinds: args.allow_kinds,
            credentials_secret: args.credentials_secret,
        }),
    };
    run_instance(client, instance, handle, shutdown).await
}

/// What one running reconciler serves.
struct Instance {
    namespace: String,
    /// FluxConfig names; empty serves all of the namespace (team mode).
    served: Vec<String>,
    common: CommonArgs,
    mode: worker::SyncMode,
}

async fn run_instance(
    client: kube::Client,
    instance: Instance,
    handle: Handle,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), RunError> {
    let Instance {
        namespace,
        served,
        common: args,
        mode,
    } = instance;
    std::fs::create_dir_all(&args.work_dir).map_err(|source| RunError::WorkDir {
        path: args.work_dir.clone(),
        source,
    })?;
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "fluxgate-reconciler".into(),
            instance: Some(args.identity.clone()),
        },
    );
    let tracker = drift::Tracker::new(client.clone(), &namespace);
    let cluster_mode = matches!(mode, worker::SyncMode::Cluster(_));
    let shared = Arc::new(worker::Shared {
        client: client.clone(),
        namespace,
        args,
        mode,
        recorder,
        metrics: handle.metrics.clone(),
        tracker: tracker.clone(),
    });
    info!(namespace = %shared.namespace, flux_configs = ?served, cluster_mode, "starting fluxgate reconciler");

    let mut workers: HashMap<String, watch::Sender<Option<Arc<FluxConfig>>>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut spawn = |name: &str, workers: &mut HashMap<_, _>| {
        let (tx, rx) = watch::channel(None);
        workers.insert(name.to_owned(), tx);
        // Every log line of this FluxConfig's worker names the team
        // namespace and the FluxConfig (JSON: `span.namespace`,
        // `span.fluxconfig`).
        let span = tracing::info_span!(
            "worker",
            namespace = %shared.namespace,
            fluxconfig = %name,
        );
        tasks.spawn(tracing::Instrument::instrument(
            worker::Worker::new(shared.clone(), name).run(rx),
            span,
        ));
    };
    for name in &served {
        spawn(name, &mut workers);
    }
    let serve_all = served.is_empty();

    let api: Api<DeserializeGuard<FluxConfig>> = Api::namespaced(client.clone(), &shared.namespace);
    // The platform instance serves one FluxConfig: watch only that one.
    let config = match served.as_slice() {
        [only] if cluster_mode => {
            watcher::Config::default().fields(&format!("metadata.name={only}"))
        }
        _ => watcher::Config::default(),
    };
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let ready = handle.ready.clone();
    let watch_loop = async move {
        let mut listed: HashSet<String> = HashSet::new();
        while let Some(event) = stream.next().await {
            let (object, present) = match event {
                Ok(Event::Apply(o)) => (o, true),
                Ok(Event::InitApply(o)) => {
                    if let Some(name) = &o.0.as_ref().ok().and_then(|f| f.metadata.name.clone()) {
                        listed.insert(name.clone());
                    }
                    (o, true)
                }
                Ok(Event::Delete(o)) => (o, false),
                Ok(Event::Init) => {
                    listed.clear();
                    continue;
                }
                Ok(Event::InitDone) => {
                    // FluxConfigs deleted while the watch was down.
                    for (name, tx) in &workers {
                        if !listed.contains(name) {
                            tx.send_replace(None);
                        }
                    }
                    ready.store(true, Ordering::Relaxed);
                    continue;
                }
                Err(e) => {
                    warn!(error = %error::chain(&e), "FluxConfig watch failed; retrying");
                    continue;
                }
            };
            let fc = match object.0 {
                Ok(fc) => fc,
                Err(invalid) => {
                    warn!(name = ?invalid.metadata.name, error = %invalid.error, "ignoring a FluxConfig that cannot be read");
                    continue;
                }
            };
            let Some(name) = fc.metadata.name.clone() else {
                continue;
            };
            if serve_all && !workers.contains_key(&name) && present {
                spawn(&name, &mut workers);
            }
            if let Some(tx) = workers.get(&name) {
                tx.send_replace(present.then(|| Arc::new(fc)));
            }
        }
    };
    tokio::select! {
        () = watch_loop => error!("FluxConfig watch ended"),
        () = shutdown => info!("shutting down"),
    }
    tracker.shutdown();
    Ok(())
}

/// Runs the reconciler as deployed: in-cluster (or kubeconfig) client,
/// admin server, until SIGTERM or Ctrl-C.
pub async fn run(args: ReconcileArgs) -> Result<(), RunError> {
    let (client, handle) = deployed(args.common.admin_listen).await?;
    run_with_client(client, args, handle, shutdown_signal()).await
}

/// Runs the platform instance as deployed, like [`run`].
pub async fn run_platform(args: PlatformArgs) -> Result<(), RunError> {
    let (client, handle) = deployed(args.common.admin_listen).await?;
    run_platform_with_client(client, args, handle, shutdown_signal()).await
}

/// The client and a handle whose admin server listens on `admin_listen`.
async fn deployed(admin_listen: std::net::SocketAddr) -> Result<(kube::Client, Handle), RunError> {
    let client = kube::Client::try_default()
        .await
        .map_err(RunError::Client)?;
    let handle = Handle::default();
    let listener = tokio::net::TcpListener::bind(admin_listen)
        .await
        .map_err(|source| RunError::Admin {
            addr: admin_listen,
            source,
        })?;
    let admin = metrics::admin_router(metrics::Health {
        metrics: handle.metrics.clone(),
        ready: handle.ready.clone(),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, admin).await {
            error!(error = %e, "admin server stopped");
        }
    });
    Ok((client, handle))
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
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
