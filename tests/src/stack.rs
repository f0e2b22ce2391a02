//! The whole fluxgate stack on a control plane, for the journey test and the
//! demo: CRDs and RBAC installed from `deploy/`, the admission webhook and
//! the operator running in-process (each on its own thread and runtime, the
//! operator with the token of the ServiceAccount its RBAC binds), and the
//! local runner starting the reconciler Deployments as processes.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate_crds::{FluxConfig, FluxConfigSpec};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MatchCondition, RuleWithOperations, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
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
        api.patch(
            &obj.name_any(),
            &PatchParams::apply(INSTALLER).force(),
            &Patch::Apply(doc),
        )
        .await
        .map_err(|e| StackError::Kube(format!("apply {} {}", gvk.kind, obj.name_any()), e))?;
    }
    Ok(())
}

/// Installs what the platform team installs: CRDs, fluxgate's namespace,
/// the operator's and the platform sync's RBAC, the teams' ClusterRole.
pub async fn install(client: &Client) -> Result<(), StackError> {
    testenv::install_crds(client, fluxgate_crds::all_crds()).await?;
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(PLATFORM_NAMESPACE.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(StackError::Kube("create namespace".into(), e)),
    }
    for path in [
        "deploy/rbac/operator.yaml",
        "deploy/rbac/team-reconciler.yaml",
        "deploy/platform-sync/rbac.yaml",
    ] {
        apply_all(client, &manifest(path)?).await?;
    }
    Ok(())
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

/// The namespaces a namespaced webhook rule must never cover: the control
/// plane's own and the platform's, so a broken webhook cannot lock them.
pub fn system_namespaces_excluded() -> LabelSelector {
    LabelSelector {
        match_expressions: Some(vec![LabelSelectorRequirement {
            key: "kubernetes.io/metadata.name".into(),
            operator: "NotIn".into(),
            values: Some(vec!["kube-system".into(), PLATFORM_NAMESPACE.into()]),
        }]),
        ..LabelSelector::default()
    }
}

/// The `ValidatingWebhookConfiguration` for a webhook reachable at `url`.
pub fn webhook_configuration(
    name: &str,
    url: &str,
    ca_pem: &str,
) -> ValidatingWebhookConfiguration {
    let entry = |name: &str, resource: &str, scope: &str, selector: Option<LabelSelector>| {
        ValidatingWebhook {
            name: name.into(),
            admission_review_versions: vec!["v1".into()],
            client_config: WebhookClientConfig {
                url: Some(url.into()),
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                service: None,
            },
            failure_policy: Some("Fail".into()),
            side_effects: "None".into(),
            timeout_seconds: Some(5),
            match_policy: Some("Equivalent".into()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![fluxgate_crds::GROUP.into()]),
                api_versions: Some(vec![fluxgate_crds::VERSION.into()]),
                operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
                resources: Some(vec![resource.into()]),
                scope: Some(scope.into()),
            }]),
            namespace_selector: selector,
            match_conditions: Some(vec![MatchCondition {
                name: "not-a-subresource".into(),
                expression: "!has(request.subResource) || request.subResource == ''".into(),
            }]),
            ..ValidatingWebhook::default()
        }
    };
    ValidatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![
            entry(
                "fluxconfigs.fluxgate.dev",
                "fluxconfigs",
                "Namespaced",
                Some(system_namespaces_excluded()),
            ),
            entry(
                "platformdefaults.fluxgate.dev",
                "platformdefaults",
                "Cluster",
                None,
            ),
        ]),
    }
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
        max_body_bytes: 1024 * 1024,
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
    );
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(
            "fluxgate",
            &PatchParams::apply(INSTALLER).force(),
            &Patch::Apply(&config),
        )
        .await
        .map_err(|e| StackError::Kube("register the webhook".into(), e))?;
    // In force once an invalid FluxConfig is denied by it (dry run).
    let fcs = Api::<FluxConfig>::namespaced(client, "default");
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match fcs.create(&dry_run, &probe).await {
            Err(kube::Error::Api(s)) if s.message.contains("denied the request") => break,
            _ if Instant::now() > deadline => {
                return Err(StackError::Timeout("webhook", Duration::from_secs(30)));
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    Ok(running)
}

/// The operator, running in-process with its ServiceAccount's token.
#[derive(Debug)]
pub struct RunningOperator {
    /// Its metrics (write counters among them).
    pub metrics: Arc<fluxgate_operator::metrics::Metrics>,
    _task: Background,
}

/// Starts the operator as `deploy/rbac/operator.yaml`'s ServiceAccount.
pub async fn start_operator(cp: &'static ControlPlane) -> Result<RunningOperator, StackError> {
    let admin = cp.client()?;
    let token =
        testenv::service_account_token(&admin, PLATFORM_NAMESPACE, "fluxgate-operator").await?;
    let client = cp.client_for_token(&token)?;
    let config = <fluxgate_operator::Config as clap::Parser>::try_parse_from([
        "fluxgate-operator",
        "--platform-namespace",
        PLATFORM_NAMESPACE,
        "--identity",
        "fluxgate-operator-local",
        "--log-format",
        "text",
    ])
    .map_err(|e| StackError::Start(e.to_string()))?;
    let handle = fluxgate_operator::Handle::new();
    let metrics = handle.metrics.clone();
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
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    })?;
    Ok(RunningOperator {
        metrics,
        _task: task,
    })
}

/// An error with its causes, `a: b: c` (the core's one implementation).
pub use fluxgate_platform_defaults::violation::error_chain as chain;
