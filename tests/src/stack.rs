//! The whole fluxgate stack on a control plane, for the journey test and the
//! demo: installed from the Helm chart (`deploy/charts/fluxgate`), the admission webhook and
//! the operator running in-process (each on its own thread and runtime, the
//! operator with the token of the ServiceAccount its RBAC binds), and the
//! local runner starting the reconciler Deployments as processes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluxgate_crds::{FluxConfig, FluxConfigSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingWebhookConfiguration, WebhookClientConfig,
};
use kube::api::{Api, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::testenv::{self, ControlPlane, Error};

/// fluxgate's own namespace in the stack.
pub const PLATFORM_NAMESPACE: &str = "fluxgate-system";
/// Field manager of what the stack installs (the platform team's tooling).
pub const INSTALLER: &str = "fluxgate.dev/installer";

/// Why the stack could not start.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The control plane failed.
    #[error("control plane")]
    ControlPlane(#[from] Error),
    /// An API call failed.
    #[error("{0} failed")]
    Kube(String, #[source] kube::Error),
    /// A manifest could not be read.
    #[error("cannot read manifest {}", .0.display())]
    Manifest(PathBuf, #[source] std::io::Error),
    /// A manifest is not valid YAML or not an object.
    #[error("manifest {}: {message}", path.display())]
    ManifestParse {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A component did not come up in time.
    #[error("{0} did not start within {1:?}")]
    Timeout(&'static str, Duration),
    /// A component failed to start.
    #[error("{0}")]
    Start(String),
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Reads a multi-document manifest under the repository root.
pub fn manifest(path: &str) -> Result<Vec<serde_json::Value>, StackError> {
    let file = repo_root().join(path);
    let text = std::fs::read_to_string(&file).map_err(|e| StackError::Manifest(file.clone(), e))?;
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| StackError::ManifestParse {
            path: file.clone(),
            message: e.to_string(),
        })?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

/// Server-side applies objects of any kind as the installer (admin).
pub async fn apply_all(client: &Client, docs: &[serde_json::Value]) -> Result<(), StackError> {
    apply_docs(client, docs, &PatchParams::apply(INSTALLER).force()).await
}

/// Server-side applies objects of any kind with `params` (for example a
/// dry run), resolving each kind through discovery; namespaced objects
/// without a namespace go to the client's default namespace.
pub async fn apply_docs(
    client: &Client,
    docs: &[serde_json::Value],
    params: &PatchParams,
) -> Result<(), StackError> {
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| StackError::Kube("discovery".into(), e))?;
    for doc in docs {
        let obj: DynamicObject =
            serde_json::from_value(doc.clone()).map_err(|e| StackError::ManifestParse {
                path: PathBuf::from("<object>"),
                message: e.to_string(),
            })?;
        let types = obj.types.clone().unwrap_or_default();
        let gvk = kube::core::GroupVersionKind::try_from(&types).map_err(|e| {
            StackError::ManifestParse {
                path: PathBuf::from("<object>"),
                message: e.to_string(),
            }
        })?;
        let Some((ar, caps)) = discovery.resolve_gvk(&gvk) else {
            return Err(StackError::Start(format!("unknown kind {}", gvk.kind)));
        };
        let api: Api<DynamicObject> = match (caps.scope, obj.metadata.namespace.as_deref()) {
            (kube::discovery::Scope::Namespaced, Some(ns)) => {
                Api::namespaced_with(client.clone(), ns, &ar)
            }
            (kube::discovery::Scope::Namespaced, None) => {
                Api::default_namespaced_with(client.clone(), &ar)
            }
            (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &ar),
        };
        api.patch(&obj.name_any(), params, &Patch::Apply(doc))
            .await
            .map_err(|e| StackError::Kube(format!("apply {} {}", gvk.kind, obj.name_any()), e))?;
    }
    Ok(())
}

/// Every object of the plain manifests (`deploy/manifests/fluxgate.yaml`,
/// the chart rendered with its defaults; `tests/tests/chart.rs` keeps the
/// file current), in file order.
pub fn installed_manifests() -> Result<Vec<serde_json::Value>, StackError> {
    manifest(crate::helm::PLAIN_MANIFESTS)
}

/// The objects of the plain manifests whose `app.kubernetes.io/component`
/// label is `component` (`operator`, `admission-webhook`, `platform-sync`,
/// `reconciler`) and whose kind is one of `kinds`.
pub fn installed(component: &str, kinds: &[&str]) -> Result<Vec<serde_json::Value>, StackError> {
    Ok(installed_manifests()?
        .into_iter()
        .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == component)
        .filter(|d| kinds.iter().any(|k| d["kind"] == *k))
        .collect())
}

/// The RBAC kinds, for [`installed`].
pub const RBAC_KINDS: &[&str] = &[
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
];

/// Installs fluxgate the way the README says, from the chart: the release
/// namespace (restricted Pod Security enforced), CRDs, RBAC, the webhook
/// configuration, the Deployments (nothing runs them but the local runner,
/// which runs the platform sync's) and the platform sync's FluxConfig.
/// `sets` are extra `--set` values. Needs helm (built on first use).
pub async fn install_with(client: &Client, sets: &[String]) -> Result<(), StackError> {
    let mut args: Vec<&str> = vec![
        "--include-crds",
        "--namespace",
        PLATFORM_NAMESPACE,
        "--set",
        "namespace.create=true",
    ];
    for set in sets {
        args.extend(["--set", set.as_str()]);
    }
    let yaml =
        crate::helm::template("fluxgate", &args).map_err(|e| StackError::Start(chain(&e)))?;
    let docs = crate::helm::documents(&yaml).map_err(|message| StackError::ManifestParse {
        path: crate::helm::chart_dir(),
        message,
    })?;
    let (crds, rest): (Vec<_>, Vec<_>) = docs
        .into_iter()
        .partition(|d| d["kind"] == "CustomResourceDefinition");
    let crds = crds
        .into_iter()
        .map(serde_json::from_value)
        .collect::<Result<Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>, _>>()
        .map_err(|e| StackError::ManifestParse {
            path: crate::helm::chart_dir(),
            message: e.to_string(),
        })?;
    testenv::install_crds(client, crds).await?;
    // The namespace first, then everything in it.
    let (namespaces, rest): (Vec<_>, Vec<_>) =
        rest.into_iter().partition(|d| d["kind"] == "Namespace");
    apply_all(client, &namespaces).await?;
    apply_all(client, &rest).await
}

/// [`install_with`] the chart's default values.
pub async fn install(client: &Client) -> Result<(), StackError> {
    install_with(client, &[]).await
}

/// Runs `future` on a new thread with its own runtime until it ends; returns
/// a handle that stops it (dropping the runtime) on drop.
#[derive(Debug)]
pub struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Spawns `make(stop)`; the future should end when `stop` resolves.
    pub fn spawn<F, Fut>(name: &str, make: F) -> Result<Self, StackError>
    where
        F: FnOnce(tokio::sync::oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(make(rx));
            })
            .map_err(|e| StackError::Start(format!("cannot start {name}: {e}")))?;
        Ok(Self {
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Background {
    /// Whether the thread is still running (it ends when the future does,
    /// or panics).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The admission webhook, running in-process.
#[derive(Debug)]
pub struct RunningWebhook {
    /// Where it serves `POST /validate` (HTTPS).
    pub addr: SocketAddr,
    /// Its plain-HTTP admin port.
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
    _task: Background,
}

/// The chart's `ValidatingWebhookConfiguration` (rules, selectors,
/// matchConditions, failure policy, timeout, as installed), named `name`
/// and pointed at a webhook reachable at `url` with CA `ca_pem` instead of
/// the chart's Service.
pub fn webhook_configuration(
    name: &str,
    url: &str,
    ca_pem: &str,
) -> Result<ValidatingWebhookConfiguration, StackError> {
    let doc = installed_manifests()?
        .into_iter()
        .find(|d| d["kind"] == "ValidatingWebhookConfiguration")
        .ok_or_else(|| {
            StackError::Start(format!(
                "{} has no ValidatingWebhookConfiguration",
                crate::helm::PLAIN_MANIFESTS
            ))
        })?;
    let mut config: ValidatingWebhookConfiguration =
        serde_json::from_value(doc).map_err(|e| StackError::ManifestParse {
            path: PathBuf::from(crate::helm::PLAIN_MANIFESTS),
            message: e.to_string(),
        })?;
    config.metadata = ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    };
    for webhook in config.webhooks.iter_mut().flatten() {
        webhook.client_config = WebhookClientConfig {
            url: Some(url.into()),
            ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
            service: None,
        };
    }
    Ok(config)
}

/// Starts the webhook with a certificate from the control plane's CA,
/// registers it, and waits until the API server enforces it.
pub async fn start_webhook(cp: &'static ControlPlane) -> Result<RunningWebhook, StackError> {
    let dir = tempfile::tempdir().map_err(|e| StackError::Start(e.to_string()))?;
    let cert = cp.ca().issue_serving_cert(&["127.0.0.1", "localhost"])?;
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).map_err(|e| StackError::Start(e.to_string()))
    };
    write("tls.crt", &cert.cert_pem)?;
    write("tls.key", &cert.key_pem)?;
    let config = fluxgate_admission_webhook::Config {
        tls_cert_file: dir.path().join("tls.crt"),
        tls_key_file: dir.path().join("tls.key"),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        platform_namespace: PLATFORM_NAMESPACE.into(),
        default_reconciler_image: None,
        default_cluster_role: None,
        max_body_bytes: fluxgate_admission_webhook::DEFAULT_MAX_BODY_BYTES,
        protected_namespaces: Vec::new(),
    };
    let (addrs_tx, addrs_rx) = tokio::sync::oneshot::channel();
    let task = Background::spawn("webhook", move |stop| async move {
        let Ok(client) = cp.client() else {
            return;
        };
        let webhook = match fluxgate_admission_webhook::Webhook::bind(&config).await {
            Ok(w) => w,
            Err(e) => {
                let _ = addrs_tx.send(Err(e.to_string()));
                return;
            }
        };
        let addrs = (webhook.local_addr(), webhook.admin_addr());
        let _ = addrs_tx.send(match addrs {
            (Ok(a), Ok(b)) => Ok((a, b)),
            _ => Err("no local address".to_owned()),
        });
        let _ = webhook
            .serve(client, async {
                let _ = stop.await;
            })
            .await;
    })?;
    let (addr, admin) = tokio::time::timeout(Duration::from_secs(30), addrs_rx)
        .await
        .map_err(|_| StackError::Timeout("webhook", Duration::from_secs(30)))?
        .map_err(|_| StackError::Start("webhook thread ended".into()))?
        .map_err(StackError::Start)?;
    let running = RunningWebhook {
        addr,
        admin,
        _dir: dir,
        _task: task,
    };
    let client = cp.client()?;
    let config = webhook_configuration(
        "fluxgate",
        &format!("https://{addr}/validate"),
        cp.ca_cert_pem(),
    )?;
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(
            "fluxgate",
            &PatchParams::apply(INSTALLER).force(),
            &Patch::Apply(&config),
        )
        .await
        .map_err(|e| StackError::Kube("register the webhook".into(), e))?;
    // In force once an invalid FluxConfig is denied by it (dry run).
    wait_enforced(&client, Duration::from_secs(30)).await?;
    Ok(running)
}

/// The container arguments of the chart's Deployment for `component`
/// (plain manifests, default values).
pub fn chart_args(component: &str) -> Result<Vec<String>, StackError> {
    let deployment = installed(component, &["Deployment"])?
        .into_iter()
        .next()
        .ok_or_else(|| StackError::Start(format!("the chart has no {component} Deployment")))?;
    serde_json::from_value(deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone())
        .map_err(|e| StackError::ManifestParse {
            path: PathBuf::from(crate::helm::PLAIN_MANIFESTS),
            message: format!("{component} args: {e}"),
        })
}

/// The Service the chart puts in front of the webhook.
pub const WEBHOOK_SERVICE: &str = "fluxgate-webhook";

/// Starts the webhook the way the chart deploys it: as the chart's
/// ServiceAccount `fluxgate-webhook` (so only the chart's RBAC applies), in
/// the self-managed certificate mode (it creates its CA and serving
/// certificate in Secret `fluxgate-webhook-tls` and injects the CA into the
/// chart's ValidatingWebhookConfiguration `fluxgate`), reached by the API
/// server through the chart's Service (an EndpointSlice points it at this
/// process, see `testenv::route_service`). Waits until the API server
/// enforces it. Needs [`install_with`] first.
pub async fn start_chart_webhook(cp: &'static ControlPlane) -> Result<RunningWebhook, StackError> {
    let admin = cp.client()?;
    let token =
        testenv::service_account_token(&admin, PLATFORM_NAMESPACE, "fluxgate-webhook").await?;
    let client = cp.client_for_token(&token)?;
    let ip = testenv::routable_ip()?;
    // The chart's arguments (self-managed certificates by default), with
    // addresses of this machine.
    let mut argv = vec!["fluxgate-admission-webhook".to_owned()];
    argv.extend(chart_args("admission-webhook")?);
    let flags = <fluxgate_admission_webhook::Flags as clap::Parser>::try_parse_from(&argv)
        .map_err(|e| StackError::Start(format!("the chart's webhook arguments: {e}")))?;
    let certificates = flags.certificates;
    let config = fluxgate_admission_webhook::Config {
        listen: SocketAddr::new(ip, 0),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..flags.webhook
    };
    let dir = tempfile::tempdir().map_err(|e| StackError::Start(e.to_string()))?;
    let (addrs_tx, addrs_rx) = tokio::sync::oneshot::channel();
    let task = Background::spawn("webhook", move |stop| async move {
        let webhook =
            match fluxgate_admission_webhook::Webhook::bind_with(&config, &certificates).await {
                Ok(w) => w,
                Err(e) => {
                    let _ = addrs_tx.send(Err(chain(&e)));
                    return;
                }
            };
        let addrs = (webhook.local_addr(), webhook.admin_addr());
        let _ = addrs_tx.send(match addrs {
            (Ok(a), Ok(b)) => Ok((a, b)),
            _ => Err("no local address".to_owned()),
        });
        if let Err(e) = webhook
            .serve(client, async {
                let _ = stop.await;
            })
            .await
        {
            tracing::error!(error = %chain(&e), "the webhook stopped");
        }
    })?;
    let (addr, admin_addr) = tokio::time::timeout(Duration::from_secs(30), addrs_rx)
        .await
        .map_err(|_| StackError::Timeout("webhook", Duration::from_secs(30)))?
        .map_err(|_| StackError::Start("webhook thread ended".into()))?
        .map_err(StackError::Start)?;
    testenv::route_service(
        &admin,
        PLATFORM_NAMESPACE,
        WEBHOOK_SERVICE,
        "https",
        443,
        addr,
    )
    .await?;
    let running = RunningWebhook {
        addr,
        admin: admin_addr,
        _dir: dir,
        _task: task,
    };
    wait_enforced(&admin, Duration::from_secs(60)).await?;
    Ok(running)
}

/// Waits until the API server denies an invalid FluxConfig (dry run) with
/// the webhook's words: the webhook is registered, trusted and reachable.
async fn wait_enforced(client: &Client, timeout: Duration) -> Result<(), StackError> {
    let fcs = Api::<FluxConfig>::namespaced(client.clone(), "default");
    let probe = FluxConfig::new(
        "webhook-probe",
        FluxConfigSpec {
            repo: "https://probe.invalid/x.git".into(),
            ..FluxConfigSpec::default()
        },
    );
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let deadline = Instant::now() + timeout;
    loop {
        let last = match fcs.create(&dry_run, &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains("denied the request") => return Ok(()),
            Err(e) => e.to_string(),
            Ok(_) => "admitted".to_owned(),
        };
        if Instant::now() > deadline {
            return Err(StackError::Start(format!(
                "the webhook was not enforced within {timeout:?}; last answer: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The operator, running in-process with its ServiceAccount's token.
#[derive(Debug)]
pub struct RunningOperator {
    /// Its metrics (write counters among them).
    pub metrics: Arc<fluxgate_operator::metrics::Metrics>,
    /// How many times the operator stopped and was started again, like a
    /// pod's restart count (a crash loop shows here).
    pub restarts: Arc<AtomicUsize>,
    /// Why it stopped each time, oldest first.
    pub exits: Arc<Mutex<Vec<String>>>,
    /// True while it leads and its caches have synced (its `/readyz`).
    pub ready: Arc<AtomicBool>,
    _task: Background,
}

impl RunningOperator {
    /// Whether its thread still runs (false after a panic).
    pub fn is_running(&self) -> bool {
        self._task.is_running()
    }
}

/// Starts the operator as the chart's operator RBAC (`deploy/charts/fluxgate/templates/rbac-operator.yaml`)'s ServiceAccount.
pub async fn start_operator(cp: &'static ControlPlane) -> Result<RunningOperator, StackError> {
    let admin = cp.client()?;
    let token =
        testenv::service_account_token(&admin, PLATFORM_NAMESPACE, "fluxgate-operator").await?;
    let client = cp.client_for_token(&token)?;
    // The chart's arguments, so they are proven to parse and to work.
    let mut argv = vec!["fluxgate-operator".to_owned()];
    argv.extend(chart_args("operator")?);
    argv.push("--identity=fluxgate-operator-local".to_owned());
    let config = <fluxgate_operator::Config as clap::Parser>::try_parse_from(&argv)
        .map_err(|e| StackError::Start(format!("the chart's operator arguments: {e}")))?;
    let handle = fluxgate_operator::Handle::new();
    let metrics = handle.metrics.clone();
    let ready = handle.ready.clone();
    let restarts = Arc::new(AtomicUsize::new(0));
    let exits = Arc::new(Mutex::new(Vec::new()));
    let (restarts_in_task, exits_in_task) = (restarts.clone(), exits.clone());
    let task = Background::spawn("operator", move |mut stop| async move {
        // Like a pod restarted by its kubelet: an operator that lost its
        // lease (a loaded machine can miss renewals) exits and starts again.
        loop {
            let run = fluxgate_operator::run_with_client(
                client.clone(),
                config.clone(),
                handle.clone(),
                futures::future::pending::<()>(),
            );
            tokio::select! {
                _ = &mut stop => return,
                result = run => {
                    tracing::warn!(?result, "operator stopped; restarting it");
                    let reason = match &result {
                        Ok(()) => "returned".to_owned(),
                        Err(e) => chain(e),
                    };
                    if let Ok(mut exits) = exits_in_task.lock() {
                        exits.push(reason);
                    }
                    restarts_in_task.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })?;
    Ok(RunningOperator {
        metrics,
        restarts,
        exits,
        ready,
        _task: task,
    })
}

/// An error with its causes, `a: b: c` (the core's one implementation).
pub use fluxgate_platform_defaults::violation::error_chain as chain;
