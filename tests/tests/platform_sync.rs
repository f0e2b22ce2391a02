//! Cluster mode end to end: the platform config repository synced by a
//! platform-level instance of the reconciler (`fluxgate-reconciler
//! platform`), against a real control plane, a real Git server and the real
//! admission webhook.
//!
//! The platform team's objects come from the chart's platform-sync RBAC (`deploy/charts/fluxgate/templates/rbac-platform-sync.yaml`)
//! (applied as admin); the instance runs in-process with a client holding
//! only the token of the ServiceAccount `fluxgate-platform-sync`, so every
//! write is authorized by the API server with that ClusterRole. The
//! admission webhook runs in-process too (as in `tests/webhook.rs`), behind a
//! `ValidatingWebhookConfiguration` with `failurePolicy: Fail`, so the team
//! FluxConfigs the instance applies pass it like any other write.
//!
//! The repository is `examples/platform-repo` with every name made unique
//! per test (namespaces `<ns>-team-a`, ..., PlatformDefaults `<ns>-global`,
//! tenant labels `<ns>`), since tests share the control plane; each test's
//! instance is configured by the FluxConfig `fluxgate-system/<ns>`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fluxgate_admission_webhook::{Config, Webhook};
use fluxgate_crds::{FluxConfig, PlatformDefaults, conditions};
use fluxgate_e2e::gitserver::{GitServer, Repo};
use fluxgate_e2e::testenv::{self, ControlPlane};
use fluxgate_e2e::{helm, stack};
use fluxgate_reconciler::apply::{ANNOTATION_ADOPTED, LABEL_FLUX_CONFIG};
use fluxgate_reconciler::{Cli, Mode};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const PLATFORM_NS: &str = "fluxgate-system";
const SA: &str = "fluxgate-platform-sync";
const INTERVAL: &str = "2s";
const WAIT: Duration = Duration::from_secs(90);
const FC_WEBHOOK: &str = "fluxconfigs.fluxgate.dev";

fn control_plane() -> &'static ControlPlane {
    testenv::shared().unwrap()
}

fn workspace_file(path: &str) -> String {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

// ---------------------------------------------------------------------------
// Platform setup: CRDs, the platform namespace, the chart's platform-sync RBAC,
// and the admission webhook.

async fn apply_as_admin(admin: &Client, doc: &Value) {
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    let gvk = kube::core::GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
    let (ar, caps) = kube::discovery::pinned_kind(admin, &gvk).await.unwrap();
    let api: Api<DynamicObject> = match caps.scope {
        kube::discovery::Scope::Namespaced => Api::namespaced_with(
            admin.clone(),
            obj.metadata.namespace.as_deref().unwrap(),
            &ar,
        ),
        kube::discovery::Scope::Cluster => Api::all_with(admin.clone(), &ar),
    };
    api.patch(
        &obj.name_any(),
        &PatchParams::apply("platform-team").force(),
        &Patch::Apply(doc),
    )
    .await
    .unwrap();
}

/// What the platform team installs once: CRDs, `fluxgate-system` and the
/// platform sync's RBAC, exactly as in the chart's platform-sync RBAC (`deploy/charts/fluxgate/templates/rbac-platform-sync.yaml`).
async fn install_platform(admin: &Client) {
    testenv::install_crds(admin, fluxgate_crds::all_crds())
        .await
        .unwrap();
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(PLATFORM_NS.into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match namespaces.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("cannot create {PLATFORM_NS}: {e}"),
    }
    // The chart's RBAC for the platform sync, as installed.
    for doc in stack::installed("platform-sync", stack::RBAC_KINDS).unwrap() {
        apply_as_admin(admin, &doc).await;
    }
}

/// A webhook running on its own thread and runtime, shared by every test.
struct RunningWebhook {
    addr: SocketAddr,
    // Holds the certificate files for as long as the webhook runs.
    _dir: tempfile::TempDir,
}

fn start_webhook(cp: &'static ControlPlane) -> RunningWebhook {
    let dir = tempfile::tempdir().unwrap();
    let cert = cp
        .ca()
        .issue_serving_cert(&["127.0.0.1", "localhost"])
        .unwrap();
    std::fs::write(dir.path().join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), &cert.key_pem).unwrap();
    let config = Config {
        tls_cert_file: dir.path().join("tls.crt"),
        tls_key_file: dir.path().join("tls.key"),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        platform_namespace: PLATFORM_NS.into(),
        default_reconciler_image: None,
        default_cluster_role: None,
        max_body_bytes: 1024 * 1024,
        protected_namespaces: Vec::new(),
    };
    let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
    // Runs for the rest of the test binary.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let client = cp.client().unwrap();
            let webhook = Webhook::bind(&config).await.unwrap();
            addrs_tx
                .send((webhook.local_addr().unwrap(), webhook.admin_addr().unwrap()))
                .unwrap();
            webhook
                .serve(client, std::future::pending::<()>())
                .await
                .unwrap();
        });
    });
    let (addr, admin) = addrs_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("webhook bound its ports");
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(admin) != 200 {
        assert!(Instant::now() < deadline, "webhook never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    RunningWebhook { addr, _dir: dir }
}

/// `GET /readyz` on the admin port; 0 when nothing answers. Blocking.
fn readyz(admin: SocketAddr) -> u16 {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1))
    else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// The shared webhook, registered for FluxConfigs outside the system and
/// platform namespaces and for PlatformDefaults, and in force.
fn shared_webhook() -> &'static RunningWebhook {
    static SHARED: OnceLock<RunningWebhook> = OnceLock::new();
    SHARED.get_or_init(|| {
        let cp = control_plane();
        block_on_own_thread(async {
            let client = cp.client().unwrap();
            testenv::install_crds(&client, fluxgate_crds::all_crds())
                .await
                .unwrap();
        });
        let running = start_webhook(cp);
        let url = format!("https://{}/validate", running.addr);
        // The chart's configuration, pointed at this webhook.
        let config =
            stack::webhook_configuration("fluxgate-platform-sync-e2e", &url, cp.ca_cert_pem())
                .unwrap();
        block_on_own_thread(async {
            let client = cp.client().unwrap();
            Api::<ValidatingWebhookConfiguration>::all(client.clone())
                .patch(
                    &config.name_any(),
                    &PatchParams::apply(testenv::FIELD_MANAGER).force(),
                    &Patch::Apply(&config),
                )
                .await
                .unwrap();
            // The apiserver picks configurations up asynchronously: wait
            // until a FluxConfig no PlatformDefaults allows is denied.
            let fcs = Api::<FluxConfig>::namespaced(client, "default");
            let probe: FluxConfig = serde_json::from_value(json!({
                "apiVersion": "fluxgate.dev/v1alpha1", "kind": "FluxConfig",
                "metadata": {"name": "webhook-probe"},
                "spec": {"repo": "https://probe.invalid/x.git"},
            }))
            .unwrap();
            let dry_run = PostParams {
                dry_run: true,
                ..PostParams::default()
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match fcs.create(&dry_run, &probe).await {
                    Err(kube::Error::Api(s))
                        if s.message.contains(&format!(
                            "admission webhook \"{FC_WEBHOOK}\" denied the request"
                        )) =>
                    {
                        break;
                    }
                    other => {
                        assert!(Instant::now() < deadline, "webhook not in force: {other:?}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        running
    })
}

/// Runs `future` on a new thread with its own runtime: the shared setup is
/// called from inside a test's runtime, where blocking on another is not
/// allowed.
fn block_on_own_thread(future: impl Future<Output = ()> + Send) {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(future);
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
    });
}

// ---------------------------------------------------------------------------
// The platform repository and the platform instance.

/// Replaces `team-` with `<prefix>-team-` where it starts a name (not in
/// `fluxgate-team-reconciler`).
fn prefix_teams(text: &str, prefix: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("team-") {
        let before = rest[..at].chars().next_back();
        out.push_str(&rest[..at]);
        if before.is_none_or(|c| !(c.is_alphanumeric() || c == '-')) {
            out.push_str(prefix);
            out.push('-');
        }
        out.push_str("team-");
        rest = &rest[at + "team-".len()..];
    }
    out.push_str(rest);
    out
}

/// An `examples/platform-repo` file with this test's names.
fn example(path: &str, prefix: &str) -> String {
    let text = workspace_file(&format!("examples/platform-repo/{path}"));
    prefix_teams(&text, prefix)
        .replace("name: global", &format!("name: {prefix}-global"))
        .replace("name: regulated", &format!("name: {prefix}-regulated"))
        .replace(
            "fluxgate.dev/tenant: \"true\"",
            &format!("fluxgate.dev/tenant: \"{prefix}\""),
        )
        .replace(
            "tenant-class: standard",
            &format!("tenant-class: {prefix}-standard"),
        )
        .replace(
            "tenant-class: regulated",
            &format!("tenant-class: {prefix}-regulated"),
        )
}

const EXAMPLE_FILES: [&str; 6] = [
    "platform/namespaces.yaml",
    "platform/platformdefaults-global.yaml",
    "platform/platformdefaults-regulated.yaml",
    "teams/team-a/fluxconfig.yaml",
    "teams/team-b/fluxconfig.yaml",
    "teams/team-c/fluxconfig.yaml",
];

/// Commits the example platform repository (plus `extra` files); returns the
/// commit.
fn seed(repo: &Repo, prefix: &str, extra: &[(&str, &str)]) -> String {
    let files: Vec<(String, String)> = EXAMPLE_FILES
        .iter()
        .map(|f| ((*f).to_owned(), example(f, prefix)))
        .collect();
    let mut refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    refs.extend_from_slice(extra);
    repo.commit_files(&refs, "platform repo").unwrap()
}

fn namespace_doc(name: &str, prefix: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    fluxgate.dev/tenant: \"{prefix}\"\n    fluxgate.dev/tenant-class: {prefix}-standard\n"
    )
}

fn flux_config_doc(namespace: &str, name: &str, repo: &str) -> String {
    format!(
        "apiVersion: fluxgate.dev/v1alpha1\nkind: FluxConfig\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  repo: {repo}\n"
    )
}

/// The platform instance's FluxConfig, as the platform team writes it.
async fn create_platform_flux_config(admin: &Client, name: &str, repo: &str) {
    let fc: FluxConfig = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {"name": name, "namespace": PLATFORM_NS},
        "spec": {"repo": repo, "interval": INTERVAL},
    }))
    .unwrap();
    Api::<FluxConfig>::namespaced(admin.clone(), PLATFORM_NS)
        .create(&PostParams::default(), &fc)
        .await
        .unwrap();
}

/// A platform instance running in-process as `fluxgate-platform-sync`.
struct PlatformSync {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl PlatformSync {
    async fn start(admin: &Client, name: &str, extra_args: &[&str]) -> Self {
        let token = testenv::service_account_token(admin, PLATFORM_NS, SA)
            .await
            .unwrap();
        let client = control_plane().client_for_token(&token).unwrap();
        let work = tempfile::tempdir().unwrap();
        let credentials = tempfile::tempdir().unwrap();
        let mut argv: Vec<String> = [
            "fluxgate-reconciler",
            "platform",
            "--namespace",
            PLATFORM_NS,
            "--name",
            name,
            "--git-timeout-seconds=10",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        argv.push(format!("--work-dir={}", work.path().display()));
        argv.push(format!(
            "--credentials-dir={}",
            credentials.path().display()
        ));
        argv.extend(extra_args.iter().map(|s| (*s).to_owned()));
        let cli = <Cli<Mode> as clap::Parser>::parse_from(argv);
        let Mode::Platform(args) = cli.command else {
            panic!("platform mode expected");
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(fluxgate_reconciler::run_platform_with_client(
            client,
            args,
            fluxgate_reconciler::Handle::default(),
            async move {
                let _ = rx.await;
            },
        ));
        let task = tokio::spawn(async move {
            run.await.unwrap().unwrap();
        });
        Self {
            stop: Some(tx),
            task,
            _dirs: (work, credentials),
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

impl Drop for PlatformSync {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Waits until the platform FluxConfig `name` satisfies `pred`.
async fn wait_platform(
    admin: &Client,
    name: &str,
    what: &str,
    pred: impl Fn(&FluxConfig) -> bool,
) -> FluxConfig {
    let api: Api<FluxConfig> = Api::namespaced(admin.clone(), PLATFORM_NS);
    let deadline = Instant::now() + WAIT;
    loop {
        let fc = api.get(name).await.unwrap();
        if pred(&fc) {
            return fc;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status: {}",
            serde_json::to_string_pretty(&fc.status).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn revision(sha: &str) -> String {
    format!("main@sha1:{sha}")
}

fn current(fc: &FluxConfig, type_: &str, status: &str) -> bool {
    fc.condition(type_)
        .is_some_and(|c| c.status == status && c.observed_generation == fc.metadata.generation)
}

async fn wait_ready(admin: &Client, name: &str, sha: &str) -> FluxConfig {
    let rev = revision(sha);
    wait_platform(admin, name, &format!("Ready at {rev}"), |fc| {
        current(fc, conditions::READY, "True")
            && fc
                .status
                .as_ref()
                .and_then(|s| s.last_applied_revision.as_deref())
                == Some(rev.as_str())
    })
    .await
}

async fn wait_stalled(admin: &Client, name: &str, sha: &str) -> FluxConfig {
    let rev = revision(sha);
    wait_platform(admin, name, &format!("Stalled at {rev}"), |fc| {
        current(fc, conditions::STALLED, "True")
            && fc
                .status
                .as_ref()
                .and_then(|s| s.last_attempted_revision.as_deref())
                == Some(rev.as_str())
    })
    .await
}

fn stalled_message(fc: &FluxConfig) -> String {
    fc.condition(conditions::STALLED).unwrap().message.clone()
}

async fn namespace(admin: &Client, name: &str) -> Option<Namespace> {
    Api::<Namespace>::all(admin.clone())
        .get_opt(name)
        .await
        .unwrap()
}

async fn flux_config(admin: &Client, ns: &str, name: &str) -> Option<FluxConfig> {
    Api::<FluxConfig>::namespaced(admin.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

/// `(reason, note)` of the events about the platform FluxConfig `name`.
async fn events_of(admin: &Client, name: &str) -> Vec<(String, String)> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), PLATFORM_NS)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}

/// Waits for an event about the platform FluxConfig `name` with `reason`
/// and a note containing `note` (events follow the status writes).
async fn wait_event(admin: &Client, name: &str, reason: &str, note: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let events = events_of(admin, name).await;
        if events.iter().any(|(r, n)| r == reason && n.contains(note)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {reason} event with {note:?}: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Gone, or on its way out.
fn gone<K: ResourceExt>(object: Option<&K>) -> bool {
    object.is_none_or(|o| o.meta().deletion_timestamp.is_some())
}

/// Everything of one test outside its temporary namespace. Call after the
/// instance stopped, or drift correction would put things back.
async fn clean_up(admin: &Client, prefix: &str) {
    let _ = Api::<FluxConfig>::namespaced(admin.clone(), PLATFORM_NS)
        .delete(prefix, &DeleteParams::default())
        .await;
    let _ = Api::<ConfigMap>::namespaced(admin.clone(), PLATFORM_NS)
        .delete(
            &format!("fluxgate-inventory-{prefix}"),
            &DeleteParams::default(),
        )
        .await;
    let pds: Api<PlatformDefaults> = Api::all(admin.clone());
    for pd in pds.list(&ListParams::default()).await.unwrap() {
        if pd.name_any().starts_with(&format!("{prefix}-")) {
            let _ = pds.delete(&pd.name_any(), &DeleteParams::default()).await;
        }
    }
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    for ns in namespaces.list(&ListParams::default()).await.unwrap() {
        if ns.name_any().starts_with(&format!("{prefix}-")) {
            let _ = namespaces
                .delete(&ns.name_any(), &DeleteParams::default())
                .await;
        }
    }
}

/// The usual start: platform installed, webhook in force, the example
/// repository committed, the instance's FluxConfig created and the instance
/// running; returns once the first commit is applied.
async fn start(
    admin: &Client,
    prefix: &str,
    server: &GitServer,
    extra_args: &[&str],
) -> (Repo, String, PlatformSync) {
    shared_webhook();
    install_platform(admin).await;
    let repo = server.create_repo("platform").unwrap();
    let first = seed(&repo, prefix, &[]);
    create_platform_flux_config(admin, prefix, &server.url("platform")).await;
    let sync = PlatformSync::start(admin, prefix, extra_args).await;
    wait_ready(admin, prefix, &first).await;
    (repo, first, sync)
}

// ---------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syncs_the_platform_repo_and_prunes_a_removed_team() {
    testenv::with_temp_ns(
        "ps-sync",
        syncs_the_platform_repo_and_prunes_a_removed_team_in,
    )
    .await;
}

async fn syncs_the_platform_repo_and_prunes_a_removed_team_in(admin: Client, p: String) {
    shared_webhook();
    install_platform(&admin).await;
    let server = GitServer::start().await.unwrap();
    let repo = server.create_repo("platform").unwrap();
    // A namespace that exists before the platform repository names it.
    let adopted = format!("{p}-team-z");
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(adopted.clone()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .unwrap();
    let adopted_doc = namespace_doc(&adopted, &p);
    let first = seed(&repo, &p, &[("platform/adopted.yaml", &adopted_doc)]);
    create_platform_flux_config(&admin, &p, &server.url("platform")).await;
    let started = Instant::now();
    let sync = PlatformSync::start(&admin, &p, &[]).await;

    // Everything at once, in one commit: namespaces, rules, team configs
    // (each admitted by the webhook after its namespace and rules exist).
    let fc = wait_ready(&admin, &p, &first).await;
    eprintln!("platform repo applied {:?} after start", started.elapsed());
    let status = fc.status.clone().unwrap();
    assert!(status.last_error.is_none());
    assert_eq!(status.last_attempted_revision, Some(revision(&first)));
    assert_eq!(
        status.inventory.as_ref().unwrap().total,
        5 + 2 + 4,
        "{status:?}"
    );
    for c in [conditions::RECONCILING, conditions::STALLED] {
        assert!(current(&fc, c, "False"), "{c}: {:?}", fc.condition(c));
    }
    for team in ["team-a", "team-b", "team-c", "team-c-staging"] {
        let ns = namespace(&admin, &format!("{p}-{team}")).await.unwrap();
        assert_eq!(ns.labels().get(LABEL_FLUX_CONFIG), Some(&p));
        assert!(ns.annotations().get(ANNOTATION_ADOPTED).is_none(), "{team}");
    }
    assert_eq!(
        namespace(&admin, &format!("{p}-team-c"))
            .await
            .unwrap()
            .labels()
            .get("fluxgate.dev/tenant-class"),
        Some(&format!("{p}-regulated"))
    );
    let pds: Api<PlatformDefaults> = Api::all(admin.clone());
    for pd in ["global", "regulated"] {
        let pd = pds.get(&format!("{p}-{pd}")).await.unwrap();
        assert_eq!(pd.labels().get(LABEL_FLUX_CONFIG), Some(&p));
    }
    for (team, name) in [
        ("team-a", "web"),
        ("team-b", "payments"),
        ("team-c", "ledger"),
        ("team-c", "ledger-pinned"),
    ] {
        let fc = flux_config(&admin, &format!("{p}-{team}"), name)
            .await
            .unwrap_or_else(|| panic!("FluxConfig {team}/{name} missing"));
        assert_eq!(fc.labels().get(LABEL_FLUX_CONFIG), Some(&p));
    }
    assert_eq!(
        flux_config(&admin, &format!("{p}-team-a"), "web")
            .await
            .unwrap()
            .spec
            .repo,
        format!("https://git.corp.example/{p}-team-a/web.git")
    );
    let z = namespace(&admin, &adopted).await.unwrap();
    assert_eq!(
        z.annotations().get(ANNOTATION_ADOPTED).map(String::as_str),
        Some("true")
    );
    assert!(
        Api::<ConfigMap>::namespaced(admin.clone(), PLATFORM_NS)
            .get_opt(&format!("fluxgate-inventory-{p}"))
            .await
            .unwrap()
            .is_some(),
        "full inventory in the platform namespace"
    );

    // Drift of cluster-scoped objects is corrected too: a deleted
    // PlatformDefaults comes back.
    pds.delete(&format!("{p}-regulated"), &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while pds
        .get_opt(&format!("{p}-regulated"))
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "deleted PlatformDefaults never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Team B leaves: its directory and namespace are removed in one commit,
    // and so is the adopted namespace.
    let namespaces = example("platform/namespaces.yaml", &p);
    let without_b: Vec<&str> = namespaces
        .split("\n---\n")
        .filter(|doc| !doc.contains(&format!("name: {p}-team-b\n")))
        .collect();
    repo.write(&[("platform/namespaces.yaml", &without_b.join("\n---\n"))])
        .unwrap();
    let second = repo
        .delete_files(&["teams/team-b", "platform/adopted.yaml"], "team b leaves")
        .unwrap();
    let fc = wait_ready(&admin, &p, &second).await;
    assert_eq!(fc.status.unwrap().inventory.unwrap().total, 3 + 2 + 3);
    assert!(
        gone(
            flux_config(&admin, &format!("{p}-team-b"), "payments")
                .await
                .as_ref()
        ),
        "team B's FluxConfig pruned"
    );
    assert!(
        gone(namespace(&admin, &format!("{p}-team-b")).await.as_ref()),
        "team B's namespace pruned"
    );
    // The namespace that existed before is released, not deleted.
    let z = namespace(&admin, &adopted).await.unwrap();
    assert!(
        z.metadata.deletion_timestamp.is_none(),
        "adopted namespace kept"
    );
    assert!(
        z.labels().get(LABEL_FLUX_CONFIG).is_none(),
        "{:?}",
        z.labels()
    );
    assert!(z.annotations().get(ANNOTATION_ADOPTED).is_none());
    // The others stay.
    assert!(
        flux_config(&admin, &format!("{p}-team-a"), "web")
            .await
            .is_some()
    );

    // Events on the platform FluxConfig tell the story.
    for reason in ["RevisionApplied", "Pruned", "Released", "DriftCorrected"] {
        wait_event(&admin, &p, reason, "").await;
    }

    sync.stop().await;
    clean_up(&admin, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_kinds_outside_the_allow_list_and_applies_nothing() {
    testenv::with_temp_ns("ps-kind", |admin, p| async move {
        let server = GitServer::start().await.unwrap();
        let (repo, first, sync) = start(&admin, &p, &server, &[]).await;

        let deployment = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {p}-team-a\nspec:\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      containers: [{{name: web, image: nginx}}]\n"
        );
        let new_ns = format!("{p}-team-d");
        let second = repo
            .commit_files(
                &[
                    ("platform/team-d.yaml", &namespace_doc(&new_ns, &p)),
                    ("teams/team-a/deployment.yaml", &deployment),
                ],
                "a deployment in the platform repo",
            )
            .unwrap();
        let fc = wait_stalled(&admin, &p, &second).await;
        let message = stalled_message(&fc);
        assert!(
            message.contains(&format!(
                "teams/team-a/deployment.yaml:1: Deployment/{p}-team-a/web is a apps/Deployment, which the platform repository may not hold; allowed kinds: core/Namespace, fluxgate.dev/PlatformDefaults, fluxgate.dev/FluxConfig"
            )),
            "{message}"
        );
        assert_eq!(
            fc.condition(conditions::STALLED).unwrap().reason,
            "ValidationFailed"
        );
        let status = fc.status.clone().unwrap();
        let last_error = status.last_error.unwrap();
        assert_eq!(last_error.file.as_deref(), Some("teams/team-a/deployment.yaml"));
        assert_eq!(last_error.object, Some(format!("Deployment/{p}-team-a/web")));
        assert_eq!(status.last_applied_revision, Some(revision(&first)));
        assert!(current(&fc, conditions::READY, "False"));
        // Nothing of that commit: not even the valid namespace.
        assert!(namespace(&admin, &new_ns).await.is_none());

        sync.stop().await;
        clean_up(&admin, &p).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_role_is_the_real_limit_even_for_allowed_kinds() {
    testenv::with_temp_ns("ps-rbac", |admin, p| async move {
        let server = GitServer::start().await.unwrap();
        let (repo, first, sync) = start(
            &admin,
            &p,
            &server,
            &["--allow-kind=rbac.authorization.k8s.io/ClusterRoleBinding"],
        )
        .await;

        let name = format!("{p}-escalate");
        let binding = format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: {name}\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\nsubjects:\n  - kind: ServiceAccount\n    name: default\n    namespace: {p}-team-a\n"
        );
        let second = repo
            .commit_files(&[("platform/escalate.yaml", &binding)], "cluster-admin for team a")
            .unwrap();
        let fc = wait_stalled(&admin, &p, &second).await;
        let message = stalled_message(&fc);
        assert!(message.contains("forbidden"), "{message}");
        assert!(
            message.contains(&format!("system:serviceaccount:{PLATFORM_NS}:{SA}")),
            "{message}"
        );
        assert!(message.contains("so nothing was applied"), "{message}");
        let status = fc.status.unwrap();
        assert_eq!(
            status.last_error.unwrap().object,
            Some(format!("ClusterRoleBinding/{name}"))
        );
        assert_eq!(status.last_applied_revision, Some(revision(&first)));
        assert!(
            Api::<ClusterRoleBinding>::all(admin.clone())
                .get_opt(&name)
                .await
                .unwrap()
                .is_none()
        );

        sync.stop().await;
        clean_up(&admin, &p).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flux_config_the_webhook_denies_stalls_the_platform_sync() {
    testenv::with_temp_ns("ps-deny", |admin, p| async move {
        let server = GitServer::start().await.unwrap();
        let (repo, first, sync) = start(&admin, &p, &server, &[]).await;
        let team_a = format!("{p}-team-a");

        // One commit: a FluxConfig outside the allow-list, a valid new one
        // and a change to an existing one. The webhook denies the first in
        // the dry run, so none of it is applied.
        let web_changed = format!(
            "{}  interval: 10m\n",
            flux_config_doc(
                &team_a,
                "web",
                &format!("https://git.corp.example/{team_a}/web.git")
            )
        );
        let second = repo
            .commit_files(
                &[
                    (
                        "teams/team-a/evil.yaml",
                        &flux_config_doc(&team_a, "evil", "https://evil.example/x.git"),
                    ),
                    (
                        "teams/team-a/api.yaml",
                        &flux_config_doc(
                            &team_a,
                            "api",
                            &format!("https://git.corp.example/{team_a}/api.git"),
                        ),
                    ),
                    ("teams/team-a/fluxconfig.yaml", &web_changed),
                ],
                "an evil repo",
            )
            .unwrap();
        let fc = wait_stalled(&admin, &p, &second).await;
        let message = stalled_message(&fc);
        assert!(
            message.contains(&format!(
                "admission webhook \"{FC_WEBHOOK}\" denied the request"
            )),
            "{message}"
        );
        assert!(
            message.contains(&format!("is not allowed for namespace {team_a}")),
            "{message}"
        );
        assert!(
            message.contains("in the dry run, so nothing was applied"),
            "{message}"
        );
        assert_eq!(
            fc.condition(conditions::STALLED).unwrap().reason,
            "ApplyFailed"
        );
        let status = fc.status.clone().unwrap();
        let last_error = status.last_error.unwrap();
        assert_eq!(last_error.file.as_deref(), Some("teams/team-a/evil.yaml"));
        assert_eq!(last_error.object, Some(format!("FluxConfig/{team_a}/evil")));
        assert_eq!(status.last_applied_revision, Some(revision(&first)));
        assert!(flux_config(&admin, &team_a, "evil").await.is_none());
        assert!(flux_config(&admin, &team_a, "api").await.is_none());
        assert_eq!(
            flux_config(&admin, &team_a, "web")
                .await
                .unwrap()
                .spec
                .interval,
            None,
            "the change to an existing FluxConfig was not applied either"
        );

        // Onboarding team E with a repository its rules do not allow: its
        // namespace is applied first (the webhook needs it to judge the
        // FluxConfig), then the FluxConfigs are dry-run and none is applied.
        let team_e = format!("{p}-team-e");
        std::fs::remove_file(repo.work_dir().join("teams/team-a/evil.yaml")).unwrap();
        let third = repo
            .commit_files(
                &[
                    ("platform/team-e.yaml", &namespace_doc(&team_e, &p)),
                    (
                        "teams/team-e/fluxconfig.yaml",
                        &flux_config_doc(&team_e, "bad", "https://evil.example/y.git"),
                    ),
                ],
                "team e, wrongly",
            )
            .unwrap();
        // First refused right after the namespace was applied (and retried
        // at the next interval, since the rules had just changed)...
        let staged = "after this revision's Namespaces and other cluster-scoped objects were applied, so none of its namespaced objects (FluxConfigs) was applied";
        let denied = format!("is not allowed for namespace {team_e}");
        let third_rev = revision(&third);
        let stalled_with = |needle: &'static str| {
            let (denied, third_rev) = (denied.clone(), third_rev.clone());
            move |fc: &FluxConfig| {
                current(fc, conditions::STALLED, "True")
                    && fc.status.as_ref().and_then(|s| s.last_attempted_revision.as_deref())
                        == Some(third_rev.as_str())
                    && stalled_message(fc).contains(&denied)
                    && stalled_message(fc).contains(needle)
            }
        };
        wait_platform(&admin, &p, "Stalled after the namespace", stalled_with(staged)).await;
        // ... then refused for good, the rules being the same.
        wait_platform(
            &admin,
            &p,
            "Stalled in the dry run",
            stalled_with("in the dry run, so nothing was applied"),
        )
        .await;
        assert!(namespace(&admin, &team_e).await.is_some());
        assert!(flux_config(&admin, &team_e, "bad").await.is_none());
        assert!(flux_config(&admin, &team_a, "api").await.is_none());

        // Fixed in a new commit: everything lands.
        let fourth = repo
            .commit_files(
                &[(
                    "teams/team-e/fluxconfig.yaml",
                    &flux_config_doc(
                        &team_e,
                        "app",
                        &format!("https://git.corp.example/{team_e}/app.git"),
                    ),
                )],
                "team e, rightly",
            )
            .unwrap();
        let fc = wait_ready(&admin, &p, &fourth).await;
        assert!(fc.status.unwrap().last_error.is_none());
        assert!(flux_config(&admin, &team_e, "app").await.is_some());
        assert!(flux_config(&admin, &team_a, "api").await.is_some());
        assert_eq!(
            flux_config(&admin, &team_a, "web")
                .await
                .unwrap()
                .spec
                .interval
                .as_deref(),
            Some("10m")
        );

        sync.stop().await;
        clean_up(&admin, &p).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_the_core_rules_reject_is_stalled_until_fixed() {
    testenv::with_temp_ns("ps-spec", |admin, p| async move {
        shared_webhook();
        install_platform(&admin).await;
        let server = GitServer::start().await.unwrap();
        let repo = server.create_repo("platform").unwrap();
        let first = seed(&repo, &p, &[]);
        // A password in the URL passes the CRD's pattern, not the core's rules.
        let url = server.url("platform");
        let with_password = url.replace("http://", "http://user:s3cret@");
        create_platform_flux_config(&admin, &p, &with_password).await;
        let sync = PlatformSync::start(&admin, &p, &[]).await;
        let fc = wait_platform(&admin, &p, "Stalled on the spec", |fc| {
            current(fc, conditions::STALLED, "True")
        })
        .await;
        let stalled = fc.condition(conditions::STALLED).unwrap();
        assert_eq!(stalled.reason, "ConfigError");
        assert!(
            stalled
                .message
                .contains("spec.repo: repository url contains a password"),
            "{}",
            stalled.message
        );
        assert!(!stalled.message.contains("s3cret"), "{}", stalled.message);
        assert_eq!(
            server
                .counters()
                .ref_advertisements
                .load(std::sync::atomic::Ordering::Relaxed),
            0,
            "nothing fetched"
        );

        Api::<FluxConfig>::namespaced(admin.clone(), PLATFORM_NS)
            .patch(
                &p,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"repo": url}})),
            )
            .await
            .unwrap();
        wait_ready(&admin, &p, &first).await;

        sync.stop().await;
        clean_up(&admin, &p).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_platform_sync_is_valid_and_runs_platform_mode() {
    testenv::with_temp_ns("ps-deploy", |admin, _ns| async move {
        install_platform(&admin).await;
        let dry_run = PatchParams::apply("platform-team").force().dry_run();
        let mut deployment = None;
        // The chart's platform sync, with a private platform repository.
        let yaml = helm::template(
            "fluxgate",
            &[
                "--namespace",
                PLATFORM_NS,
                "--set",
                "platformSync.credentialsSecret=git-platform-readonly",
            ],
        )
        .unwrap();
        let docs: Vec<Value> = helm::documents(&yaml)
            .unwrap()
            .into_iter()
            .filter(|d| d["metadata"]["labels"]["app.kubernetes.io/component"] == "platform-sync")
            .filter(|d| d["kind"] == "Deployment" || d["kind"] == "FluxConfig")
            .collect();
        assert_eq!(docs.len(), 2);
        let file = "the chart's platform sync";
        {
            for doc in docs {
                // The API server validates each against its schema.
                let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
                let gvk =
                    kube::core::GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
                let (ar, _) = kube::discovery::pinned_kind(&admin, &gvk).await.unwrap();
                Api::<DynamicObject>::namespaced_with(admin.clone(), PLATFORM_NS, &ar)
                    .patch(&obj.name_any(), &dry_run, &Patch::Apply(&doc))
                    .await
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
                if gvk.kind == "Deployment" {
                    deployment = Some(doc);
                } else {
                    // The example configuration passes the core's rules.
                    let fc: FluxConfig = serde_json::from_value(doc).unwrap();
                    let settings = fluxgate_reconciler::cluster::Settings {
                        extra_kinds: Vec::new(),
                        credentials_secret: None,
                    };
                    assert!(
                        fluxgate_reconciler::cluster::read_spec(&fc.spec, &settings)
                            .unwrap()
                            .is_some()
                    );
                }
            }
        }
        let deployment = deployment.unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], SA);
        let args: Vec<String> =
            serde_json::from_value(pod["containers"][0]["args"].clone()).unwrap();
        let mut argv = vec!["fluxgate-reconciler".to_owned()];
        argv.extend(args);
        let cli = <Cli<Mode> as clap::Parser>::try_parse_from(argv).unwrap();
        let Mode::Platform(args) = cli.command else {
            panic!("the Deployment must run platform mode");
        };
        assert_eq!(args.namespace, PLATFORM_NS);
        assert_eq!(args.name, "platform");
        // The Secret it names is mounted where --credentials-dir looks.
        let secret = args.credentials_secret.unwrap();
        let mounted = args.common.credentials_dir.join(&secret);
        let mounts = pod["containers"][0]["volumeMounts"].as_array().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m["mountPath"] == mounted.display().to_string()),
            "{mounts:?}"
        );
    })
    .await;
}
