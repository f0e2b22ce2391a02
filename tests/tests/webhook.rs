//! The admission webhook end to end: a real kube-apiserver calls the webhook,
//! running in-process on 127.0.0.1 with a certificate from the test CA,
//! through a `ValidatingWebhookConfiguration` with `failurePolicy: Fail`.
//!
//! All tests share one control plane and one webhook (started on first use,
//! on its own thread and runtime, so it outlives each test's runtime). Each
//! test labels its temporary namespace `fluxgate.dev/webhook-e2e=<ns>` and
//! creates a PlatformDefaults `e2e-<ns>` that selects only that label, so the
//! tests cannot see each other's rules.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fluxgate_admission_webhook::{Config, Webhook};
use fluxgate_crds::{FluxConfig, FluxConfigSpec, PlatformDefaults};
use fluxgate_e2e::stack;
use fluxgate_e2e::testenv::{self, ControlPlane, with_temp_ns};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// The label each test puts on its namespace; its PlatformDefaults selects
/// on it.
const NS_LABEL: &str = "fluxgate.dev/webhook-e2e";
/// The shared webhook's configuration (cluster-scoped, one per control
/// plane).
const SHARED_CONFIG: &str = "fluxgate-e2e";
const FC_WEBHOOK: &str = "fluxconfigs.fluxgate.dev";
const PD_WEBHOOK: &str = "platformdefaults.fluxgate.dev";

/// How long the webhook may take to see a change, as promised in its docs.
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);

/// A webhook running on its own thread and runtime.
struct RunningWebhook {
    addr: SocketAddr,
    admin: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    // Holds the certificate files for as long as the webhook runs.
    _dir: tempfile::TempDir,
}

impl RunningWebhook {
    /// Stops the webhook gracefully and waits until it has shut down.
    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

/// Starts a webhook against `cp` and waits until its `/readyz` passes (its
/// reflectors have synced).
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
        platform_namespace: "fluxgate-system".into(),
        default_reconciler_image: None,
        default_cluster_role: None,
        max_body_bytes: 1024 * 1024,
        protected_namespaces: Vec::new(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (addrs_tx, addrs_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
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
                .serve(client, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
    });
    let (addr, admin) = addrs_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("webhook bound its ports");
    let running = RunningWebhook {
        addr,
        admin,
        stop: Some(stop),
        thread: Some(thread),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while readyz(running.admin) != 200 {
        assert!(Instant::now() < deadline, "webhook never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

/// `GET /readyz` on the admin port; 0 when nothing answers. Blocking (plain
/// std IO): it runs where no runtime may be started.
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

async fn register(client: &Client, config: &ValidatingWebhookConfiguration) {
    Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .patch(
            &config.name_any(),
            &PatchParams::apply(testenv::FIELD_MANAGER).force(),
            &Patch::Apply(config),
        )
        .await
        .unwrap();
}

/// The shared webhook, registered for FluxConfigs (outside the system
/// namespaces) and PlatformDefaults, and in force.
fn shared_webhook() -> &'static RunningWebhook {
    static SHARED: OnceLock<RunningWebhook> = OnceLock::new();
    SHARED.get_or_init(|| {
        let cp = testenv::shared().unwrap();
        // The webhook's FluxConfig and PlatformDefaults watches need the
        // CRDs; it is not ready before they exist.
        block_on_own_thread(async {
            let client = cp.client().unwrap();
            testenv::install_crds(&client, fluxgate_crds::all_crds())
                .await
                .unwrap();
        });
        let running = start_webhook(cp);
        let url = format!("https://{}/validate", running.addr);
        // The chart's configuration (rules, selectors, matchConditions),
        // pointed at this webhook.
        let config = stack::webhook_configuration(SHARED_CONFIG, &url, cp.ca_cert_pem()).unwrap();
        block_on_own_thread(async {
            let client = cp.client().unwrap();
            register(&client, &config).await;
            // The apiserver picks configurations up asynchronously: wait
            // until an invalid FluxConfig is denied by our webhook.
            let fcs = Api::<FluxConfig>::namespaced(client, "default");
            let probe = flux_config("webhook-probe", "https://probe.invalid/x.git");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                match fcs.create(&dry_run(), &probe).await {
                    Err(kube::Error::Api(status))
                        if status.message.contains(&format!(
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

/// Runs `future` to completion on a new thread with its own runtime: the
/// shared setup may be called from inside a test's runtime, where blocking
/// on another is not allowed.
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

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

fn flux_config(name: &str, repo: &str) -> FluxConfig {
    FluxConfig::new(
        name,
        FluxConfigSpec {
            repo: repo.into(),
            ..FluxConfigSpec::default()
        },
    )
}

fn pd_name(ns: &str) -> String {
    format!("e2e-{ns}")
}

fn platform_defaults(name: &str, ns: &str, allowed_repos: &[&str]) -> PlatformDefaults {
    serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "PlatformDefaults",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {NS_LABEL: ns}},
            "allowedRepos": allowed_repos,
            "allowedTargetNamespaces": ["{namespace}", "{namespace}-*"],
            "clusters": ["prod-eu"],
            "defaults": {"interval": "5m"},
            "limits": {"minInterval": "1m", "maxFluxConfigsPerNamespace": 2},
        },
    }))
    .unwrap()
}

/// Labels the namespace, creates its PlatformDefaults and waits until the
/// webhook admits a valid FluxConfig there (its snapshot has both).
async fn set_up(client: &Client, ns: &str) -> Api<FluxConfig> {
    shared_webhook();
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {NS_LABEL: ns}}})),
        )
        .await
        .unwrap();
    Api::<PlatformDefaults>::all(client.clone())
        .create(
            &PostParams::default(),
            &platform_defaults(
                &pd_name(ns),
                ns,
                &["https://git.corp.example/{namespace}/*"],
            ),
        )
        .await
        .unwrap();
    let fcs = Api::<FluxConfig>::namespaced(client.clone(), ns);
    let probe = flux_config("probe", &format!("https://git.corp.example/{ns}/probe.git"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(err) = fcs.create(&dry_run(), &probe).await {
        assert!(Instant::now() < deadline, "setup never admitted: {err}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fcs
}

async fn tear_down(client: &Client, ns: &str) {
    let _ = Api::<PlatformDefaults>::all(client.clone())
        .delete(&pd_name(ns), &DeleteParams::default())
        .await;
}

/// Polls a dry-run create of `fc` until the webhook denies it.
async fn wait_until_denied(api: &Api<FluxConfig>, fc: &FluxConfig) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while api.create(&dry_run(), fc).await.is_ok() {
        assert!(Instant::now() < deadline, "{} never denied", fc.name_any());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The apiserver's message for a denied create.
async fn denial(api: &Api<FluxConfig>, fc: &FluxConfig) -> String {
    match api.create(&PostParams::default(), fc).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            status.message
        }
        other => panic!("expected a denial of {}, got {other:?}", fc.name_any()),
    }
}

#[tokio::test]
async fn admits_a_flux_config_within_the_allow_lists() {
    with_temp_ns("wh-allow", |client, ns| async move {
        let fcs = set_up(&client, &ns).await;
        let mut fc = flux_config("web", &format!("https://git.corp.example/{ns}/web.git"));
        fc.spec.target_namespace = Some(format!("{ns}-prod"));
        fc.spec.interval = Some("10m".into());
        fc.spec.cluster = Some("prod-eu".into());
        fcs.create(&PostParams::default(), &fc).await.unwrap();
        assert_eq!(fcs.get("web").await.unwrap().spec, fc.spec);
        tear_down(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn denies_each_kind_of_violation_at_create_with_the_webhooks_message() {
    with_temp_ns("wh-deny", |client, ns| async move {
        let fcs = set_up(&client, &ns).await;
        let pd = pd_name(&ns);
        let prefix = format!("admission webhook \"{FC_WEBHOOK}\" denied the request: ");
        let repo = |name: &str| format!("https://git.corp.example/{ns}/{name}.git");

        let message = denial(&fcs, &flux_config("evil", "https://github.com/evil/x.git")).await;
        assert_eq!(
            message,
            format!(
                "{prefix}FluxConfig {ns}/evil: spec.repo \"https://github.com/evil/x.git\" is not allowed for namespace {ns} (PlatformDefaults \"{pd}\"); allowed: https://git.corp.example/{ns}/*"
            )
        );

        let mut fc = flux_config("system", &repo("system"));
        fc.spec.target_namespace = Some("kube-system".into());
        let message = denial(&fcs, &fc).await;
        assert!(
            message.starts_with(&format!("{prefix}FluxConfig {ns}/system: spec.targetNamespace \"kube-system\" is a protected namespace")),
            "{message}"
        );

        let mut fc = flux_config("neighbour", &repo("neighbour"));
        fc.spec.target_namespace = Some("team-other".into());
        let message = denial(&fcs, &fc).await;
        assert_eq!(
            message,
            format!(
                "{prefix}FluxConfig {ns}/neighbour: spec.targetNamespace \"team-other\" is not allowed for namespace {ns} (PlatformDefaults \"{pd}\"); allowed: {ns}, {ns}-*"
            )
        );

        let mut fc = flux_config("hasty", &repo("hasty"));
        fc.spec.interval = Some("10s".into());
        let message = denial(&fcs, &fc).await;
        assert!(
            message.contains(&format!("FluxConfig {ns}/hasty: spec.interval \"10s\" is shorter than the platform's minimum (PlatformDefaults \"{pd}\")")),
            "{message}"
        );

        let mut fc = flux_config("elsewhere", &repo("elsewhere"));
        fc.spec.cluster = Some("staging".into());
        let message = denial(&fcs, &fc).await;
        assert!(
            message.ends_with(&format!("FluxConfig {ns}/elsewhere: spec.cluster \"staging\" is not one of the platform's clusters (PlatformDefaults \"{pd}\"); allowed: prod-eu")),
            "{message}"
        );

        // The limit is two per namespace. Creates reach the webhook's
        // snapshot through its watch: poll a dry run until the third is
        // denied, then create it for real.
        for name in ["one", "two"] {
            fcs.create(&PostParams::default(), &flux_config(name, &repo(name)))
                .await
                .unwrap();
        }
        let third = flux_config("three", &repo("three"));
        wait_until_denied(&fcs, &third).await;
        let message = denial(&fcs, &third).await;
        assert!(
            message.ends_with(&format!("FluxConfig {ns}/three: metadata.name \"three\" would be FluxConfig number 3 in namespace {ns}, over the platform's limit (PlatformDefaults \"{pd}\"); allowed: at most 2 per namespace")),
            "{message}"
        );
        tear_down(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn a_new_repo_pattern_is_admitted_within_one_second_without_restart() {
    with_temp_ns("wh-live", |client, ns| async move {
        let fcs = set_up(&client, &ns).await;
        let fc = flux_config("oss", "https://github.com/corp-oss/tool.git");
        let message = denial(&fcs, &fc).await;
        assert!(
            message.contains("is not allowed for namespace"),
            "{message}"
        );

        let pds = Api::<PlatformDefaults>::all(client.clone());
        let pd = platform_defaults(
            &pd_name(&ns),
            &ns,
            &[
                "https://git.corp.example/{namespace}/*",
                "https://github.com/corp-oss/*",
            ],
        );
        pds.patch(
            &pd_name(&ns),
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"allowedRepos": pd.spec.allowed_repos}})),
        )
        .await
        .unwrap();
        let changed = Instant::now();
        loop {
            match fcs.create(&PostParams::default(), &fc).await {
                Ok(_) => break,
                Err(err) => {
                    assert!(
                        changed.elapsed() < VISIBLE_WITHIN,
                        "still denied {:?} after the PlatformDefaults change: {err}",
                        changed.elapsed()
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        eprintln!(
            "admitted {:?} after the PlatformDefaults change",
            changed.elapsed()
        );
        tear_down(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn denies_a_malformed_platform_defaults() {
    with_temp_ns("wh-badpd", |client, ns| async move {
        shared_webhook();
        let name = format!("e2e-bad-{ns}");
        let pd = platform_defaults(&name, &ns, &["https://git.corp.example/{team}/*"]);
        let err = Api::<PlatformDefaults>::all(client.clone())
            .create(&PostParams::default(), &pd)
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err}")
        };
        let expected = fluxgate_platform_defaults::compile(&pd).unwrap_err().to_string();
        assert_eq!(
            status.message,
            format!("admission webhook \"{PD_WEBHOOK}\" denied the request: {expected}")
        );
        assert!(
            expected.starts_with(&format!("PlatformDefaults {name}: spec.allowedRepos[0] \"https://git.corp.example/{{team}}/*\" is not a valid pattern")),
            "{expected}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_platform_change_that_invalidates_flux_configs_warns_and_locks_no_team_out() {
    with_temp_ns("wh-warn", |client, ns| async move {
        let fcs = set_up(&client, &ns).await;
        let cp = testenv::shared().unwrap();
        for name in ["web", "api"] {
            let repo = format!("https://git.corp.example/{ns}/{name}.git");
            fcs.create(&PostParams::default(), &flux_config(name, &repo))
                .await
                .unwrap();
        }
        // Once a third is denied (the limit is two), the webhook's snapshot
        // holds both, and the change below is checked against them.
        wait_until_denied(
            &fcs,
            &flux_config("third", &format!("https://git.corp.example/{ns}/third.git")),
        )
        .await;

        // kubectl prints the webhook's admission warnings on stderr.
        let patch = json!({"spec": {"allowedRepos": ["https://git.corp.example/{namespace}/apps-*"]}});
        let output = cp
            .kubectl(["patch", "platformdefaults", &pd_name(&ns), "--type=merge", "-p", &patch.to_string()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(
            stderr.contains("this change makes 2 existing FluxConfigs invalid"),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("Warning: FluxConfig {ns}/web: spec.repo \"https://git.corp.example/{ns}/web.git\" is not allowed for namespace {ns}")),
            "{stderr}"
        );

        // The team can still relabel its now-invalid FluxConfig, and edit
        // its spec as long as the edit adds no violation...
        // Wait until the webhook enforces the narrowed pattern: moving `web`
        // to another repository outside it is then denied.
        let move_repo = json!({"spec": {"repo": format!("https://git.corp.example/{ns}/moved.git")}});
        let deadline = Instant::now() + VISIBLE_WITHIN;
        let dry_patch = PatchParams {
            dry_run: true,
            ..PatchParams::default()
        };
        while fcs.patch("web", &dry_patch, &Patch::Merge(&move_repo)).await.is_ok() {
            assert!(Instant::now() < deadline, "narrowed pattern not in force");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fcs.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"owner": "team"}}})),
        )
        .await
        .unwrap();
        fcs.patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"path": "deploy"}})),
        )
        .await
        .unwrap();
        // ...but not introduce one.
        let err = fcs
            .patch(
                "web",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"interval": "10s"}})),
            )
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err}")
        };
        assert!(
            status.message.ends_with(&format!(
                "FluxConfig {ns}/web: spec.interval \"10s\" is shorter than the platform's minimum (PlatformDefaults \"{}\"); allowed: at least 1m",
                pd_name(&ns)
            )),
            "{}",
            status.message
        );
        tear_down(&client, &ns).await;
    })
    .await;
}

#[tokio::test]
async fn with_the_webhook_down_flux_configs_fail_closed_and_other_kinds_pass() {
    with_temp_ns("wh-down", |client, ns| async move {
        let fcs = set_up(&client, &ns).await;
        let cp = testenv::shared().unwrap();
        // A second webhook, registered for this namespace only, then stopped.
        let running = tokio::task::spawn_blocking(move || start_webhook(cp))
            .await
            .unwrap();
        let name = format!("fluxconfigs.{ns}.e2e.fluxgate.dev");
        let mut config = stack::webhook_configuration(
            &format!("fluxgate-e2e-{ns}"),
            &format!("https://{}/validate", running.addr),
            cp.ca_cert_pem(),
        )
        .unwrap();
        let webhooks = config.webhooks.get_or_insert_default();
        webhooks.retain(|w| w.name == FC_WEBHOOK);
        webhooks[0].name = name.clone();
        webhooks[0].namespace_selector = Some(LabelSelector {
            match_labels: Some([(NS_LABEL.to_owned(), ns.clone())].into()),
            ..LabelSelector::default()
        });
        register(&client, &config).await;
        tokio::task::spawn_blocking(move || running.stop())
            .await
            .unwrap();

        let fc = flux_config("web", &format!("https://git.corp.example/{ns}/web.git"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while fcs.create(&dry_run(), &fc).await.is_ok() {
            assert!(
                Instant::now() < deadline,
                "the configuration never took effect"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let err = fcs.create(&PostParams::default(), &fc).await.unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err}")
        };
        assert!(
            status
                .message
                .contains(&format!("failed calling webhook \"{name}\"")),
            "{}",
            status.message
        );
        eprintln!(
            "FluxConfig create with the webhook down: {}",
            status.message
        );
        assert!(fcs.get_opt("web").await.unwrap().is_none());

        // Kinds the webhook does not cover are not affected.
        let config_maps = Api::<ConfigMap>::namespaced(client.clone(), &ns);
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some("settings".into()),
                ..ObjectMeta::default()
            },
            data: Some([("key".to_owned(), "value".to_owned())].into()),
            ..ConfigMap::default()
        };
        config_maps
            .create(&PostParams::default(), &cm)
            .await
            .unwrap();

        Api::<ValidatingWebhookConfiguration>::all(client.clone())
            .delete(&config.name_any(), &DeleteParams::default())
            .await
            .unwrap();
        tear_down(&client, &ns).await;
    })
    .await;
}
