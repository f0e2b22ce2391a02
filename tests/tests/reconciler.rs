//! The team reconciler against a real control plane and a real Git server.
//!
//! Each test gets a team namespace with what the operator would provision
//! there (the ServiceAccount, the platform's ClusterRole bound by a
//! RoleBinding, the status Role from `status-role.yaml.tera`), writes the
//! FluxConfig's `status.effective` as the operator does (server-side apply
//! as `fluxgate.dev/operator`), and runs the reconciler in-process with a
//! client holding only that ServiceAccount's token: RBAC is enforced by the
//! API server. Repositories are served over smart HTTP by
//! `fluxgate_e2e::gitserver` (`git http-backend` on loopback).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fluxgate_crds::{FluxConfig, conditions};
use fluxgate_e2e::gitserver::{GitServer, Repo};
use fluxgate_e2e::testenv::{self, ControlPlane};
use fluxgate_reconciler::apply::{LABEL_FLUX_CONFIG, LABEL_FLUX_CONFIG_NAMESPACE};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const FC: &str = "app";
const SA: &str = "fluxgate-reconciler";
/// The poll interval every test FluxConfig gets.
const INTERVAL: &str = "2s";
use fluxgate_e2e::wait::{self, WAIT};

fn control_plane() -> &'static ControlPlane {
    testenv::shared().unwrap()
}

/// CRDs and the platform's ClusterRole, as the platform team installs them.
async fn install_platform(admin: &Client) {
    testenv::install_crds(admin, fluxgate_crds::all_crds())
        .await
        .unwrap();
    for doc in fluxgate_e2e::stack::installed("reconciler", &["ClusterRole"]).unwrap() {
        let api: Api<DynamicObject> = Api::all_with(
            admin.clone(),
            &kube::discovery::ApiResource::erase::<k8s_openapi::api::rbac::v1::ClusterRole>(&()),
        );
        api.patch(
            doc["metadata"]["name"].as_str().unwrap(),
            &PatchParams::apply("platform-team").force(),
            &Patch::Apply(&doc),
        )
        .await
        .unwrap();
    }
}

async fn apply_as_admin(admin: &Client, doc: Value) {
    apply_as(admin, doc, "fluxgate.dev/operator").await;
}

async fn apply_as(admin: &Client, doc: Value, manager: &str) {
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    let gvk = kube::core::GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
    let (ar, _) = kube::discovery::pinned_kind(admin, &gvk).await.unwrap();
    let api: Api<DynamicObject> = match obj.metadata.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(admin.clone(), ns, &ar),
        None => Api::all_with(admin.clone(), &ar),
    };
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&doc),
    )
    .await
    .unwrap();
}

/// What the operator provisions in a team namespace (see
/// `platform-defaults/templates/*.yaml.tera`), for `targets` namespaces.
async fn provision(admin: &Client, ns: &str, targets: &[&str]) {
    apply_as_admin(
        admin,
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": SA, "namespace": ns}}),
    )
    .await;
    apply_as_admin(
        admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "fluxgate-reconciler-status", "namespace": ns},
               "rules": [
                   {"apiGroups": ["fluxgate.dev"], "resources": ["fluxconfigs"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": ["fluxgate.dev"], "resources": ["fluxconfigs/status"], "verbs": ["get", "patch", "update"]},
                   {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
               ]}),
    )
    .await;
    apply_as_admin(
        admin,
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": SA, "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fluxgate-reconciler-status"},
               "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}]}),
    )
    .await;
    for target in targets {
        apply_as_admin(
            admin,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": {"name": format!("fluxgate-reconciler-{ns}"), "namespace": target},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "fluxgate-team-reconciler"},
                   "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}]}),
        )
        .await;
    }
}

async fn create_namespace(admin: &Client, name: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                testenv::TEST_LABEL.to_owned(),
                "true".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

async fn create_flux_config(admin: &Client, ns: &str, repo: &str) {
    let fc: FluxConfig = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {"name": FC, "namespace": ns},
        "spec": {"repo": repo, "interval": INTERVAL},
    }))
    .unwrap();
    Api::<FluxConfig>::namespaced(admin.clone(), ns)
        .create(&PostParams::default(), &fc)
        .await
        .unwrap();
}

/// The effective config the operator would resolve.
fn effective(ns: &str, repo: &str, path: &str, credentials: Option<&str>, suspend: bool) -> Value {
    let mut e = json!({
        "repo": {"value": repo, "source": "spec"},
        "ref": {"value": {"branch": "main"}, "source": "builtin"},
        "path": {"value": path, "source": "PlatformDefaults/test"},
        "targetNamespace": {"value": ns, "source": "builtin"},
        "allowedNamespaces": {"value": [ns, format!("{ns}-*")], "source": "PlatformDefaults/test"},
        "interval": {"value": INTERVAL, "source": "spec"},
        "suspend": {"value": suspend, "source": "builtin"},
        "reconcilerImage": {"value": "registry.corp.example/fluxgate/reconciler:v1", "source": "builtin"},
        "reconcilerClusterRole": {"value": "fluxgate-team-reconciler", "source": "builtin"},
    });
    if let Some(secret) = credentials {
        e["credentialsSecret"] = json!({"value": secret, "source": "PlatformDefaults/test"});
    }
    e
}

/// Writes the operator's part of the status, as the operator does.
async fn write_effective(admin: &Client, ns: &str, effective: Value) {
    let api: Api<FluxConfig> = Api::namespaced(admin.clone(), ns);
    let generation = api.get(FC).await.unwrap().metadata.generation.unwrap();
    let now = "2024-01-01T00:00:00Z";
    let status = json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "status": {
            "observedGeneration": generation,
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "the config satisfies the platform's rules", "observedGeneration": generation, "lastTransitionTime": now},
                {"type": "Provisioned", "status": "True", "reason": "Provisioned", "message": "Deployment fluxgate-reconciler and its rights are in place", "observedGeneration": generation, "lastTransitionTime": now},
            ],
            "effective": effective,
        },
    });
    api.patch_status(
        FC,
        &PatchParams::apply("fluxgate.dev/operator").force(),
        &Patch::Apply(&status),
    )
    .await
    .unwrap();
}

/// A reconciler running in-process as the team's ServiceAccount.
struct Reconciler {
    handle: fluxgate_reconciler::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _work: tempfile::TempDir,
}

impl Reconciler {
    async fn start(admin: &Client, ns: &str, credentials_dir: &std::path::Path) -> Self {
        let args = [
            "reconcile".to_owned(),
            format!("--namespace={ns}"),
            format!("--flux-configs={FC}"),
        ];
        Self::start_as(control_plane(), admin, ns, SA, &args, credentials_dir).await
    }

    /// Runs with `args` (as a Deployment gives them) as ServiceAccount `sa`.
    async fn start_as(
        cp: &ControlPlane,
        admin: &Client,
        ns: &str,
        sa: &str,
        args: &[String],
        credentials_dir: &std::path::Path,
    ) -> Self {
        let token = testenv::service_account_token(admin, ns, sa).await.unwrap();
        let client = cp.client_for_token(&token).unwrap();
        let work = tempfile::tempdir().unwrap();
        let mut argv = vec!["fluxgate-reconciler".to_owned()];
        argv.extend(args.iter().cloned());
        argv.extend([
            format!("--credentials-dir={}", credentials_dir.display()),
            format!("--work-dir={}", work.path().display()),
            "--git-timeout-seconds=10".to_owned(),
        ]);
        let cli = <fluxgate_reconciler::Cli as clap::Parser>::parse_from(argv);
        let fluxgate_reconciler::Command::Reconcile(args) = cli.command;
        let handle = fluxgate_reconciler::Handle::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(fluxgate_reconciler::run_with_client(
            client,
            args,
            handle.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        let task = tokio::spawn(async move {
            task.await.unwrap().unwrap();
        });
        Self {
            handle,
            stop: Some(tx),
            task,
            _work: work,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Polls until `check` gives `Some`; panics with `what` after [`WAIT`].
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    wait::eventually(what, WAIT, check).await
}

fn condition<'a>(
    fc: &'a FluxConfig,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    fc.condition(type_)
}

/// Waits until the FluxConfig satisfies `pred`; returns it.
async fn wait_fc(
    admin: &Client,
    ns: &str,
    what: &str,
    pred: impl Fn(&FluxConfig) -> bool,
) -> FluxConfig {
    wait::flux_config(admin, ns, FC, WAIT, what, pred).await
}

fn revision(sha: &str) -> String {
    format!("main@sha1:{sha}")
}

/// Ready=True for this generation with `revision` applied.
async fn wait_ready(admin: &Client, ns: &str, rev: &str) -> FluxConfig {
    wait::ready_at(admin, ns, FC, WAIT, rev).await
}

async fn wait_stalled(admin: &Client, ns: &str, attempted: &str) -> FluxConfig {
    wait::stalled_at(admin, ns, FC, WAIT, attempted).await
}

fn config_map(name: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  labels:\n    app: web\ndata:\n  value: {data:?}\n"
    )
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
    - port: 80
      targetPort: 8080
";

const DEPLOYMENT: &str = "# The web tier.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
        - name: web
          image: registry.corp.example/team/web:1.0
          ports:
            - containerPort: 8080
";

/// A repository with a ConfigMap, a Service and a Deployment under `deploy/`
/// (the last one nested, two documents in one file), plus a README.
fn seed(repo: &Repo) -> String {
    repo.commit_files(
        &[
            ("README.md", "# app\n"),
            ("deploy/config.yaml", &config_map("web-config", "v1")),
            (
                "deploy/web/service.yml",
                &format!("{SERVICE}---\n{DEPLOYMENT}"),
            ),
        ],
        "first",
    )
    .unwrap()
}

async fn get_cm(admin: &Client, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(admin.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

fn cm_value(cm: &ConfigMap) -> Option<String> {
    cm.data.as_ref()?.get("value").cloned()
}

/// A team namespace with everything set up; `with_temp_ns` deletes it.
async fn team(
    admin: &Client,
    ns: &str,
    server: &GitServer,
    credentials: Option<&str>,
) -> (Repo, tempfile::TempDir) {
    install_platform(admin).await;
    let staging = format!("{ns}-staging");
    create_namespace(admin, &staging).await;
    provision(admin, ns, &[ns, &staging]).await;
    let repo = server.create_repo("app").unwrap();
    create_flux_config(admin, ns, &server.url("app")).await;
    write_effective(
        admin,
        ns,
        effective(ns, &server.url("app"), "deploy", credentials, false),
    )
    .await;
    (repo, tempfile::tempdir().unwrap())
}

/// Writes of the reconciler's ServiceAccount in the audit log after line
/// `since`; returns the new line count and the writes.
fn reconciler_writes(ns: &str, since: usize) -> (usize, Vec<String>) {
    writes_in_audit_log(control_plane(), ns, since)
}

fn writes_in_audit_log(cp: &ControlPlane, ns: &str, since: usize) -> (usize, Vec<String>) {
    let user = format!("system:serviceaccount:{ns}:{SA}");
    let text = std::fs::read_to_string(cp.audit_log_path()).unwrap();
    let mut writes = Vec::new();
    let mut count = 0;
    for (i, line) in text.lines().enumerate() {
        count = i + 1;
        if i < since {
            continue;
        }
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let verb = event["verb"].as_str().unwrap_or_default();
        if event["user"]["username"] == user.as_str()
            && ["create", "update", "patch", "delete", "deletecollection"].contains(&verb)
        {
            writes.push(format!(
                "{verb} {}",
                event["requestURI"].as_str().unwrap_or_default()
            ));
        }
    }
    (count, writes)
}

async fn cleanup_staging(admin: &Client, ns: &str) {
    let _ = Api::<Namespace>::all(admin.clone())
        .delete(&format!("{ns}-staging"), &DeleteParams::default())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_commits_prunes_and_reverts_drift() {
    testenv::with_temp_ns("rec-sync", applies_commits_prunes_and_reverts_drift_in).await;
}

async fn applies_commits_prunes_and_reverts_drift_in(admin: Client, ns: String) {
    let server = GitServer::start().await.unwrap();
    let (repo, creds) = team(&admin, &ns, &server, None).await;
    let first = seed(&repo);
    let started = Instant::now();
    let reconciler = Reconciler::start(&admin, &ns, creds.path()).await;

    // First sync: everything under deploy/, labelled, inventoried.
    let fc = wait_ready(&admin, &ns, &revision(&first)).await;
    eprintln!("first sync applied {:?} after start", started.elapsed());
    let status = fc.status.clone().unwrap();
    let inventory = status.inventory.unwrap();
    assert_eq!(inventory.total, 3, "{inventory:?}");
    assert_eq!(status.last_attempted_revision, Some(revision(&first)));
    assert!(status.last_error.is_none());
    for c in [conditions::RECONCILING, conditions::STALLED] {
        assert_eq!(condition(&fc, c).unwrap().status, "False", "{c}");
    }
    let cm = get_cm(&admin, &ns, "web-config").await.unwrap();
    assert_eq!(cm_value(&cm).as_deref(), Some("v1"));
    let labels = cm.labels();
    assert_eq!(labels.get(LABEL_FLUX_CONFIG).map(String::as_str), Some(FC));
    assert_eq!(labels.get(LABEL_FLUX_CONFIG_NAMESPACE), Some(&ns));
    assert_eq!(labels.get("app").map(String::as_str), Some("web"));
    assert!(
        Api::<Service>::namespaced(admin.clone(), &ns)
            .get_opt("web")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<Deployment>::namespaced(admin.clone(), &ns)
            .get_opt("web")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        get_cm(&admin, &ns, "fluxgate-inventory-app")
            .await
            .is_some(),
        "full inventory kept"
    );

    // A new commit: changed and added objects, also in another allowed namespace.
    let second = repo
        .commit_files(
            &[
                ("deploy/config.yaml", &config_map("web-config", "v2")),
                (
                    "deploy/extra.yaml",
                    &format!(
                        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: staged\n  namespace: {ns}-staging\n",
                        config_map("extra", "x"),
                    ),
                ),
            ],
            "second",
        )
        .unwrap();
    let committed = Instant::now();
    wait_ready(&admin, &ns, &revision(&second)).await;
    eprintln!(
        "commit-to-applied: {:?} (interval {INTERVAL})",
        committed.elapsed()
    );
    assert_eq!(
        cm_value(&get_cm(&admin, &ns, "web-config").await.unwrap()).as_deref(),
        Some("v2")
    );
    assert!(get_cm(&admin, &ns, "extra").await.is_some());
    assert!(
        get_cm(&admin, &format!("{ns}-staging"), "staged")
            .await
            .is_some()
    );

    // A deleted file: its objects are pruned.
    let third = repo
        .delete_files(&["deploy/extra.yaml"], "drop extra")
        .unwrap();
    let fc = wait_ready(&admin, &ns, &revision(&third)).await;
    assert!(get_cm(&admin, &ns, "extra").await.is_none(), "pruned");
    assert!(
        get_cm(&admin, &format!("{ns}-staging"), "staged")
            .await
            .is_none(),
        "pruned across namespaces"
    );
    assert_eq!(fc.status.unwrap().inventory.unwrap().total, 3);

    // Drift: an edit (kubectl patch) is reverted within seconds...
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    let edited = Instant::now();
    cms.patch(
        "web-config",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"value": "hacked"}})),
    )
    .await
    .unwrap();
    eventually("edited ConfigMap reverted", || {
        let admin = admin.clone();
        let ns = ns.clone();
        async move {
            let cm = get_cm(&admin, &ns, "web-config").await?;
            (cm_value(&cm).as_deref() == Some("v2")).then_some(())
        }
    })
    .await;
    eprintln!(
        "drift (edit) reverted {:?} after the patch",
        edited.elapsed()
    );
    assert!(
        edited.elapsed()
            < Duration::from_secs(INTERVAL.trim_end_matches('s').parse::<u64>().unwrap() * 5)
    );

    // ... and so is a deletion.
    let services: Api<Service> = Api::namespaced(admin.clone(), &ns);
    let deleted = Instant::now();
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("deleted Service recreated", || {
        let services = services.clone();
        async move { services.get_opt("web").await.ok()?.map(|_| ()) }
    })
    .await;
    eprintln!(
        "drift (delete) reverted {:?} after the delete",
        deleted.elapsed()
    );
    assert!(
        reconciler
            .handle
            .metrics
            .encode()
            .contains("fluxgate_reconciler_drift_corrections_total")
    );

    // A label someone else adds is not drift: it stays.
    cms.patch(
        "web-config",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"extra": "yes"}}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        get_cm(&admin, &ns, "web-config")
            .await
            .unwrap()
            .labels()
            .get("extra")
            .map(String::as_str),
        Some("yes")
    );

    // Events tell the story.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(admin.clone(), &ns);
    let reasons: Vec<String> = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["RevisionApplied", "Pruned", "DriftCorrected"] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} missing in {reasons:?}"
        );
    }
    reconciler.stop().await;
    cleanup_staging(&admin, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_writes_nothing() {
    testenv::with_temp_ns("rec-steady", steady_state_writes_nothing_in).await;
}

async fn steady_state_writes_nothing_in(admin: Client, ns: String) {
    let server = GitServer::start().await.unwrap();
    let (repo, creds) = team(&admin, &ns, &server, None).await;
    let first = seed(&repo);
    let reconciler = Reconciler::start(&admin, &ns, creds.path()).await;
    wait_ready(&admin, &ns, &revision(&first)).await;
    // Let the controller manager finish with the Deployment (ReplicaSet,
    // status), which the drift watches see.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (mark, _) = reconciler_writes(&ns, 0);
    let writes_before = reconciler.handle.metrics.total_writes();
    let polls_before = server
        .counters()
        .ref_advertisements
        .load(std::sync::atomic::Ordering::Relaxed);
    let fetches_before = server
        .counters()
        .upload_packs
        .load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (_, writes) = reconciler_writes(&ns, mark);
    assert!(
        writes.is_empty(),
        "the reconciler wrote in a steady state: {writes:#?}"
    );
    assert_eq!(reconciler.handle.metrics.total_writes(), writes_before);
    let polls = server
        .counters()
        .ref_advertisements
        .load(std::sync::atomic::Ordering::Relaxed)
        - polls_before;
    let fetches = server
        .counters()
        .upload_packs
        .load(std::sync::atomic::Ordering::Relaxed)
        - fetches_before;
    eprintln!("steady state for 10s: {polls} polls, {fetches} fetches, 0 writes");
    assert!(polls >= 3, "it kept polling ({polls})");
    assert_eq!(
        fetches, 0,
        "a poll that finds the applied commit fetches nothing"
    );
    reconciler.stop().await;
    cleanup_staging(&admin, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_objects_outside_the_allowed_namespaces_and_cluster_scoped_objects() {
    testenv::with_temp_ns(
        "rec-scope",
        refuses_objects_outside_the_allowed_namespaces_and_cluster_scoped_objects_in,
    )
    .await;
}

async fn refuses_objects_outside_the_allowed_namespaces_and_cluster_scoped_objects_in(
    admin: Client,
    ns: String,
) {
    let server = GitServer::start().await.unwrap();
    let (repo, creds) = team(&admin, &ns, &server, None).await;
    let first = seed(&repo);
    let _reconciler = Reconciler::start(&admin, &ns, creds.path()).await;
    wait_ready(&admin, &ns, &revision(&first)).await;

    // Another team's namespace: refused before anything is applied.
    let other = repo
        .commit_files(
            &[
                ("deploy/config.yaml", &config_map("web-config", "v2")),
                ("deploy/z-other.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sneaky\n  namespace: kube-system\n"),
            ],
            "reach into kube-system",
        )
        .unwrap();
    let fc = wait_stalled(&admin, &ns, &revision(&other)).await;
    let status = fc.status.clone().unwrap();
    let error = status.last_error.clone().unwrap();
    assert_eq!(error.file.as_deref(), Some("deploy/z-other.yaml"));
    assert_eq!(error.line, Some(1));
    assert_eq!(
        error.object.as_deref(),
        Some("ConfigMap/kube-system/sneaky")
    );
    assert_eq!(error.revision, Some(revision(&other)));
    let ready = condition(&fc, conditions::READY).unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .contains("namespace kube-system, which is not allowed"),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains(&format!("allowed: {ns}, {ns}-*")),
        "{}",
        ready.message
    );
    assert_eq!(
        status.last_applied_revision,
        Some(revision(&first)),
        "the previous revision keeps running"
    );
    assert!(get_cm(&admin, "kube-system", "sneaky").await.is_none());
    assert_eq!(
        cm_value(&get_cm(&admin, &ns, "web-config").await.unwrap()).as_deref(),
        Some("v1"),
        "nothing of the bad commit was applied"
    );

    // A cluster-scoped object: refused, nothing created.
    let evil_ns = format!("{ns}-evil");
    let cluster = repo
        .amend_and_force_push(
            &[(
                "deploy/z-other.yaml",
                &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {evil_ns}\n"),
            )],
            "a namespace of my own",
        )
        .unwrap();
    let fc = wait_stalled(&admin, &ns, &revision(&cluster)).await;
    let ready = condition(&fc, conditions::READY).unwrap();
    assert!(
        ready
            .message
            .contains(&format!("Namespace/{evil_ns} is cluster-scoped")),
        "{}",
        ready.message
    );
    assert!(
        Api::<Namespace>::all(admin.clone())
            .get_opt(&evil_ns)
            .await
            .unwrap()
            .is_none()
    );

    // Fixed in a new commit: Ready again, the error cleared.
    let fixed = repo.delete_files(&["deploy/z-other.yaml"], "fix").unwrap();
    let fc = wait_ready(&admin, &ns, &revision(&fixed)).await;
    assert!(fc.status.unwrap().last_error.is_none());
    assert_eq!(
        cm_value(&get_cm(&admin, &ns, "web-config").await.unwrap()).as_deref(),
        Some("v2")
    );
    cleanup_staging(&admin, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_commit_keeps_the_previous_state() {
    testenv::with_temp_ns("rec-broken", a_broken_commit_keeps_the_previous_state_in).await;
}

async fn a_broken_commit_keeps_the_previous_state_in(admin: Client, ns: String) {
    let server = GitServer::start().await.unwrap();
    let (repo, creds) = team(&admin, &ns, &server, None).await;
    let first = seed(&repo);
    let _reconciler = Reconciler::start(&admin, &ns, creds.path()).await;
    wait_ready(&admin, &ns, &revision(&first)).await;

    // Broken YAML: file and line in lastError, nothing applied.
    let broken = repo
        .commit_files(
            &[
                ("deploy/config.yaml", &config_map("web-config", "v2")),
                (
                    "deploy/more.yaml",
                    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: more\ndata: {unclosed\n",
                ),
            ],
            "broken",
        )
        .unwrap();
    let fc = wait_stalled(&admin, &ns, &revision(&broken)).await;
    let error = fc.status.as_ref().unwrap().last_error.clone().unwrap();
    assert_eq!(error.file.as_deref(), Some("deploy/more.yaml"));
    let line = error.line.unwrap();
    assert!((4..=6).contains(&line), "line {line}: {}", error.message);
    assert!(
        error
            .message
            .starts_with(&format!("deploy/more.yaml:{line}: invalid YAML")),
        "{}",
        error.message
    );
    assert_eq!(
        condition(&fc, conditions::READY).unwrap().reason,
        "ValidationFailed"
    );
    assert_eq!(
        fc.status.as_ref().unwrap().last_applied_revision,
        Some(revision(&first))
    );
    assert_eq!(
        cm_value(&get_cm(&admin, &ns, "web-config").await.unwrap()).as_deref(),
        Some("v1")
    );

    // Valid YAML the API server rejects (a Deployment without selector):
    // the dry run catches it, so the ConfigMap change is not applied either.
    let rejected = repo
        .commit_files(
            &[(
                "deploy/more.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\nspec:\n  template:\n    spec:\n      containers: []\n",
            )],
            "rejected",
        )
        .unwrap();
    let fc = wait_stalled(&admin, &ns, &revision(&rejected)).await;
    let error = fc.status.as_ref().unwrap().last_error.clone().unwrap();
    assert_eq!(
        error.object.as_deref(),
        Some(format!("Deployment/{ns}/bad").as_str())
    );
    assert!(error.message.contains("dry run"), "{}", error.message);
    assert_eq!(
        condition(&fc, conditions::READY).unwrap().reason,
        "ApplyFailed"
    );
    assert_eq!(
        cm_value(&get_cm(&admin, &ns, "web-config").await.unwrap()).as_deref(),
        Some("v1"),
        "nothing partially applied"
    );
    assert!(
        Api::<Deployment>::namespaced(admin.clone(), &ns)
            .get_opt("bad")
            .await
            .unwrap()
            .is_none()
    );

    // kustomize is refused by name.
    let kustomize = repo
        .commit_files(
            &[
                ("deploy/more.yaml", &config_map("more", "m")),
                ("deploy/kustomization.yaml", "resources: []\n"),
            ],
            "kustomize",
        )
        .unwrap();
    let fc = wait_stalled(&admin, &ns, &revision(&kustomize)).await;
    let message = &fc.status.unwrap().last_error.unwrap().message;
    assert!(
        message.contains("deploy/kustomization.yaml: kustomize is not supported yet"),
        "{message}"
    );
    cleanup_staging(&admin, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_repositories_need_the_platform_credentials() {
    testenv::with_temp_ns(
        "rec-auth",
        private_repositories_need_the_platform_credentials_in,
    )
    .await;
}

async fn private_repositories_need_the_platform_credentials_in(admin: Client, ns: String) {
    let server = GitServer::start_with_auth("team-bot", "s3cret")
        .await
        .unwrap();
    let (repo, creds) = team(&admin, &ns, &server, None).await;
    let first = seed(&repo);
    let _reconciler = Reconciler::start(&admin, &ns, creds.path()).await;

    // No credentials configured: a clear, stalled failure.
    let fc = wait_fc(&admin, &ns, "authentication failure", |fc| {
        condition(fc, conditions::STALLED).is_some_and(|c| c.reason == "AuthenticationFailed")
    })
    .await;
    let ready = condition(&fc, conditions::READY).unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .contains("requires authentication and no credentials are configured"),
        "{}",
        ready.message
    );

    // The platform assigns a credentials Secret, but its password is wrong.
    let secret_dir = creds.path().join("git-team");
    std::fs::create_dir_all(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("username"), "team-bot").unwrap();
    std::fs::write(secret_dir.join("password"), "wrong").unwrap();
    write_effective(
        &admin,
        &ns,
        effective(&ns, &server.url("app"), "deploy", Some("git-team"), false),
    )
    .await;
    let fc = wait_fc(&admin, &ns, "credentials refused", |fc| {
        condition(fc, conditions::READY).is_some_and(|c| {
            c.message
                .contains("refused the credentials of Secret \"git-team\"")
        })
    })
    .await;
    assert_eq!(condition(&fc, conditions::STALLED).unwrap().status, "True");

    // The Secret is fixed (a remount, no new commit): it recovers.
    std::fs::write(secret_dir.join("password"), "s3cret").unwrap();
    wait_ready(&admin, &ns, &revision(&first)).await;
    assert!(get_cm(&admin, &ns, "web-config").await.is_some());
    cleanup_staging(&admin, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_outage_keeps_the_last_state_and_recovers() {
    testenv::with_temp_ns(
        "rec-outage",
        a_git_outage_keeps_the_last_state_and_recovers_in,
    )
    .await;
}

async fn a_git_outage_keeps_the_last_state_and_recovers_in(admin: Client, ns: String) {
    let server = GitServer::start().await.unwrap();
    let (repo, creds) = team(&admin, &ns, &server, None).await;
    let first = seed(&repo);
    let _reconciler = Reconciler::start(&admin, &ns, creds.path()).await;
    wait_ready(&admin, &ns, &revision(&first)).await;

    server.stop().await;
    let fc = wait_fc(&admin, &ns, "fetch failure", |fc| {
        condition(fc, conditions::READY).is_some_and(|c| c.reason == "FetchFailed")
    })
    .await;
    let ready = condition(&fc, conditions::READY).unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .contains(&format!("cannot reach {}", server.url("app"))),
        "{}",
        ready.message
    );
    // The cause as the connection attempt saw it, not a proxy's.
    assert!(
        ready.message.contains(&format!(
            "cannot connect to {}: Connection refused",
            server.addr()
        )),
        "{}",
        ready.message
    );
    assert!(
        ready
            .message
            .contains(&format!("revision {} keeps running", revision(&first))),
        "{}",
        ready.message
    );
    let reconciling = condition(&fc, conditions::RECONCILING).unwrap();
    assert_eq!(
        (reconciling.status.as_str(), reconciling.reason.as_str()),
        ("True", "ProgressingWithRetry")
    );
    assert_eq!(condition(&fc, conditions::STALLED).unwrap().status, "False");
    assert_eq!(
        fc.status.as_ref().unwrap().last_applied_revision,
        Some(revision(&first))
    );
    assert!(
        get_cm(&admin, &ns, "web-config").await.is_some(),
        "what runs is kept"
    );

    // A commit lands while the server is down; it is applied once it is back.
    let second = repo
        .commit_files(
            &[("deploy/config.yaml", &config_map("web-config", "v2"))],
            "while down",
        )
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let back = Instant::now();
    server.start_again().await.unwrap();
    let fc = wait_ready(&admin, &ns, &revision(&second)).await;
    eprintln!(
        "recovered {:?} after the git server came back",
        back.elapsed()
    );
    assert!(fc.status.as_ref().unwrap().last_error.is_none());
    let reconciling = condition(&fc, conditions::RECONCILING).unwrap();
    assert_eq!(reconciling.status, "False", "{}", reconciling.message);
    assert_eq!(
        cm_value(&get_cm(&admin, &ns, "web-config").await.unwrap()).as_deref(),
        Some("v2")
    );

    // Down again, and the host name no longer resolves either: the same
    // story, said with the resolver's words.
    server.stop().await;
    write_effective(
        &admin,
        &ns,
        effective(
            &ns,
            "http://fluxgate-gone.invalid/app.git",
            "deploy",
            None,
            false,
        ),
    )
    .await;
    let fc = wait_fc(&admin, &ns, "unknown host", |fc| {
        condition(fc, conditions::READY).is_some_and(|c| {
            c.reason == "FetchFailed" && c.message.contains("fluxgate-gone.invalid:80")
        })
    })
    .await;
    assert_eq!(
        fc.status.unwrap().last_applied_revision,
        Some(revision(&second)),
        "what runs is kept"
    );
    assert!(get_cm(&admin, &ns, "web-config").await.is_some());
    cleanup_staging(&admin, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_stops_syncing_and_drift_correction() {
    testenv::with_temp_ns("rec-suspend", suspend_stops_syncing_and_drift_correction_in).await;
}

async fn suspend_stops_syncing_and_drift_correction_in(admin: Client, ns: String) {
    let server = GitServer::start().await.unwrap();
    let (repo, creds) = team(&admin, &ns, &server, None).await;
    let first = seed(&repo);
    let _reconciler = Reconciler::start(&admin, &ns, creds.path()).await;
    wait_ready(&admin, &ns, &revision(&first)).await;

    write_effective(
        &admin,
        &ns,
        effective(&ns, &server.url("app"), "deploy", None, true),
    )
    .await;
    let fc = wait_fc(&admin, &ns, "suspended", |fc| {
        condition(fc, conditions::READY).is_some_and(|c| c.reason == "Suspended")
    })
    .await;
    assert_eq!(
        condition(&fc, conditions::READY).unwrap().status,
        "True",
        "Ready keeps its status"
    );
    repo.commit_files(
        &[("deploy/config.yaml", &config_map("web-config", "v2"))],
        "while suspended",
    )
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), &ns);
    cms.patch(
        "web-config",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"value": "manual"}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        cm_value(&get_cm(&admin, &ns, "web-config").await.unwrap()).as_deref(),
        Some("manual")
    );

    // Resumed: the new commit is applied, the manual edit overwritten.
    write_effective(
        &admin,
        &ns,
        effective(&ns, &server.url("app"), "deploy", None, false),
    )
    .await;
    let second = repo.head().unwrap();
    wait_ready(&admin, &ns, &revision(&second)).await;
    assert_eq!(
        cm_value(&get_cm(&admin, &ns, "web-config").await.unwrap()).as_deref(),
        Some("v2")
    );
    cleanup_staging(&admin, &ns).await;
}

/// The reconciler's Git seam against the smart-HTTP server, without a
/// cluster: branch, annotated tag and pinned commit, shallow fetches, a
/// force-pushed rewrite, symlinks, auth failures, an outage and the size
/// limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_source_fetches_over_smart_http() {
    use fluxgate_reconciler::git::{Credentials, GitError, RefName, Source};
    use fluxgate_reconciler::manifests::{self, Limits, ManifestError};

    let server = GitServer::start_with_auth("bot", "pw").await.unwrap();
    let repo = server.create_repo("lib").unwrap();
    let first = repo
        .commit_files(
            &[
                ("deploy/a.yaml", &config_map("a", "1")),
                ("secret.yaml", "x: 1\n"),
            ],
            "one",
        )
        .unwrap();
    repo.tag("v1").unwrap();
    let second = repo
        .commit_files(&[("deploy/b.yaml", &config_map("b", "2"))], "two")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = |reference: RefName| Source {
        url: server.url("lib"),
        reference,
        credentials: Some(Credentials::new("bot", "pw")),
        credentials_secret: Some("git-bot".into()),
        timeout: Duration::from_secs(10),
        max_bytes: 1 << 20,
    };
    let cache = dir.path().join("cache.git");
    let checkout = dir.path().join("checkout");

    // A branch: resolved by listing refs, fetched shallow.
    let main = source(RefName::Branch("main".into()));
    let resolved = main.resolve_async().await.unwrap();
    assert_eq!(resolved.sha, second);
    assert_eq!(resolved.revision(), revision(&second));
    let fetched = main
        .fetch_async(cache.clone(), checkout.clone())
        .await
        .unwrap();
    assert_eq!(fetched, resolved);
    assert!(checkout.join("deploy/b.yaml").is_file());
    assert!(cache.join("shallow").is_file(), "depth-1 fetch");

    // An annotated tag resolves to the commit it points to.
    let tag = source(RefName::Tag("v1".into()));
    assert_eq!(tag.resolve_async().await.unwrap().sha, first);
    let fetched = tag
        .fetch_async(cache.clone(), checkout.clone())
        .await
        .unwrap();
    assert_eq!(fetched.revision(), format!("v1@sha1:{first}"));
    assert!(!checkout.join("deploy/b.yaml").exists());

    // A pinned commit is fetched by id into a fresh cache.
    let pinned = source(RefName::Commit(first.clone()));
    let fetched = pinned
        .fetch_async(dir.path().join("fresh.git"), checkout.clone())
        .await
        .unwrap();
    assert_eq!(fetched.revision(), format!("sha1:{first}"));

    // History rewritten and force-pushed, with a symlink out of the path:
    // the shallow cache follows, and the link arrives as a link.
    repo.symlink("../secret.yaml", "deploy/evil.yaml").unwrap();
    let rewritten = repo
        .amend_and_force_push(&[("deploy/b.yaml", &config_map("b", "3"))], "two, again")
        .unwrap();
    assert_ne!(rewritten, second);
    let fetched = main
        .fetch_async(cache.clone(), checkout.clone())
        .await
        .unwrap();
    assert_eq!(fetched.sha, rewritten);
    let err = manifests::read(&checkout, "deploy", Limits::default()).unwrap_err();
    assert!(
        matches!(&err, ManifestError::SymlinkEscapes { file, .. } if file == "deploy/evil.yaml"),
        "{err}"
    );

    // What goes wrong, each said clearly.
    let anonymous = Source {
        credentials: None,
        credentials_secret: None,
        ..main.clone()
    };
    let err = anonymous.resolve_async().await.unwrap_err();
    assert!(
        matches!(err, GitError::AuthenticationRequired { .. }),
        "{err}"
    );
    let wrong = Source {
        credentials: Some(Credentials::new("bot", "nope")),
        ..main.clone()
    };
    let err = wrong.resolve_async().await.unwrap_err();
    assert!(
        matches!(err, GitError::AuthenticationFailed { .. }),
        "{err}"
    );
    let err = source(RefName::Branch("nope".into()))
        .resolve_async()
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::RefNotFound { .. }), "{err}");
    let tiny = Source {
        max_bytes: 100,
        ..main.clone()
    };
    let err = tiny
        .fetch_async(dir.path().join("tiny.git"), checkout.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, GitError::TooLarge { .. }), "{err}");
    server.stop().await;
    let err = main.resolve_async().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach {}", server.url("lib"))),
        "{err}"
    );
}

/// The whole chain: the real operator resolves the FluxConfig against a
/// PlatformDefaults and provisions the ServiceAccount, its RoleBindings,
/// the credentials copy and the Deployment; the reconciler then runs the
/// way that Deployment says (its args and `FLUXGATE_FLUXCONFIGS`, the
/// credentials Secret as files, the ServiceAccount's token), and the API
/// server confines it to what the operator granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_as_the_operator_provisioned_it() {
    // A control plane of its own: the operator serves every FluxConfig of
    // a cluster, and the other tests write their status by hand.
    let cp = tokio::task::spawn_blocking(ControlPlane::start)
        .await
        .unwrap()
        .unwrap();
    let admin = cp.client().unwrap();
    install_platform(&admin).await;
    create_namespace(&admin, PLATFORM_NS).await;
    for doc in fluxgate_e2e::stack::installed("operator", fluxgate_e2e::stack::RBAC_KINDS).unwrap()
    {
        apply_as(&admin, doc, "platform-team").await;
    }
    let server = GitServer::start_with_auth("team-bot", "s3cret")
        .await
        .unwrap();
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(json!({
        "metadata": {"name": "git-corp", "namespace": PLATFORM_NS},
        "stringData": {"username": "team-bot", "password": "s3cret"},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), PLATFORM_NS)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let token = testenv::service_account_token(&admin, PLATFORM_NS, "fluxgate-operator")
        .await
        .unwrap();
    let config = <fluxgate_operator::Config as clap::Parser>::parse_from([
        "fluxgate-operator",
        "--platform-namespace",
        PLATFORM_NS,
        "--leader-election",
        "false",
        "--log-format",
        "text",
    ]);
    let operator = tokio::spawn(fluxgate_operator::run_with_client(
        cp.client_for_token(&token).unwrap(),
        config,
        fluxgate_operator::Handle::default(),
        futures::future::pending(),
    ));

    let cp_ref = &cp;
    let server_ref = &server;
    cp.with_temp_ns("rec-op", move |admin, ns| async move {
        operator_provisioned(cp_ref, server_ref, admin, ns).await;
    })
    .await;
    operator.abort();
    tokio::task::spawn_blocking(move || drop(cp)).await.unwrap();
}

const PLATFORM_NS: &str = "fluxgate-system";

async fn operator_provisioned(cp: &ControlPlane, server: &GitServer, admin: Client, ns: String) {
    let staging = format!("{ns}-staging");
    create_namespace(&admin, &staging).await;
    let repos = format!("http://{}/**", server.addr());
    let defaults = json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "PlatformDefaults",
        "metadata": {"name": "test-defaults"},
        "spec": {
            "namespaceSelector": {"matchLabels": {testenv::TEST_LABEL: "true"}},
            "allowedRepos": [repos],
            "allowedTargetNamespaces": ["{namespace}", "{namespace}-*"],
            "defaults": {
                "path": "deploy",
                "interval": INTERVAL,
                "credentials": [{"repoPattern": repos, "secretRef": {"name": "git-corp"}}],
                "reconciler": {
                    "image": "registry.corp.example/fluxgate/reconciler:v1",
                    "clusterRole": "fluxgate-team-reconciler",
                },
            },
            "limits": {"minInterval": "1s"},
        },
    });
    apply_as(&admin, defaults, "platform-team").await;
    let repo = server.create_repo("app").unwrap();
    let first = repo
        .commit_files(
            &[
                ("deploy/config.yaml", &config_map("web-config", "v1")),
                (
                    "deploy/staging.yaml",
                    &format!(
                        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: staged\n  \
                         namespace: {staging}\n"
                    ),
                ),
            ],
            "first",
        )
        .unwrap();
    let fc: FluxConfig = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {"name": FC, "namespace": ns},
        "spec": {"repo": server.url("app")},
    }))
    .unwrap();
    Api::<FluxConfig>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &fc)
        .await
        .unwrap();
    let fc = wait_fc(&admin, &ns, "Provisioned", |fc| {
        fc.condition_is_true(conditions::PROVISIONED)
    })
    .await;
    let effective = fc.status.as_ref().unwrap().effective.clone().unwrap();
    assert_eq!(effective.path.value, "deploy");
    assert_eq!(effective.credentials_secret.unwrap().value, "git-corp");

    // Run it as the Deployment says, like a kubelet would.
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &ns)
        .get(SA)
        .await
        .unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    let container = &pod.containers[0];
    let mut args = container.args.clone().unwrap();
    for env in container.env.iter().flatten() {
        if env.name == "FLUXGATE_FLUXCONFIGS" {
            args.push(format!("--flux-configs={}", env.value.clone().unwrap()));
        }
    }
    let credentials = tempfile::tempdir().unwrap();
    for volume in pod.volumes.iter().flatten() {
        let Some(secret) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) else {
            continue;
        };
        let mount = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume.name)
            .unwrap();
        let relative = mount
            .mount_path
            .strip_prefix("/var/run/fluxgate/git/")
            .unwrap();
        let dir = credentials.path().join(relative);
        std::fs::create_dir_all(&dir).unwrap();
        let data = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(admin.clone(), &ns)
            .get(&secret)
            .await
            .unwrap()
            .data
            .unwrap();
        for (key, value) in data {
            std::fs::write(dir.join(key), value.0).unwrap();
        }
    }
    let sa = pod.service_account_name.clone().unwrap();
    let reconciler = Reconciler::start_as(cp, &admin, &ns, &sa, &args, credentials.path()).await;

    let fc = wait_ready(&admin, &ns, &revision(&first)).await;
    assert!(
        fc.condition_is_true(conditions::ACCEPTED),
        "the operator's conditions stay"
    );
    assert!(fc.condition_is_true(conditions::PROVISIONED));
    assert!(get_cm(&admin, &ns, "web-config").await.is_some());
    assert!(get_cm(&admin, &staging, "staged").await.is_some());

    // The ClusterRole grants no RBAC objects: the API server refuses a
    // Role in the dry run, and nothing of the commit is applied.
    let escalate = repo
        .commit_files(
            &[
                ("deploy/config.yaml", &config_map("web-config", "v2")),
                (
                    "deploy/role.yaml",
                    "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  \
                     name: admin\nrules:\n  - apiGroups: [\"*\"]\n    resources: [\"*\"]\n    \
                     verbs: [\"*\"]\n",
                ),
            ],
            "escalate",
        )
        .unwrap();
    let fc = wait_stalled(&admin, &ns, &revision(&escalate)).await;
    let error = fc.status.unwrap().last_error.unwrap();
    assert_eq!(error.object, Some(format!("Role/{ns}/admin")));
    assert!(error.message.contains("forbidden"), "{}", error.message);
    assert_eq!(
        cm_value(&get_cm(&admin, &ns, "web-config").await.unwrap()).as_deref(),
        Some("v1")
    );

    // Back to a good commit; then neither the operator nor the reconciler
    // undoes the other's status fields, and the reconciler writes nothing.
    let fixed = repo.delete_files(&["deploy/role.yaml"], "no role").unwrap();
    wait_ready(&admin, &ns, &revision(&fixed)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mark, _) = writes_in_audit_log(cp, &ns, 0);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, writes) = writes_in_audit_log(cp, &ns, mark);
    assert!(writes.is_empty(), "{writes:#?}");
    let fc = wait_ready(&admin, &ns, &revision(&fixed)).await;
    assert!(fc.condition_is_true(conditions::ACCEPTED));
    reconciler.stop().await;
    let _ = Api::<Namespace>::all(admin.clone())
        .delete(&staging, &DeleteParams::default())
        .await;
}
