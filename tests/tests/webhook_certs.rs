//! Self-managed webhook certificates end to end: two webhook replicas run
//! in-process with `--cert-mode self-managed`, each with the token of a
//! ServiceAccount bound to exactly the RBAC the README lists, behind a
//! Service (selector-less, with an EndpointSlice per replica on this
//! machine's routable address) that a ValidatingWebhookConfiguration without
//! a `caBundle` names. The real kube-apiserver resolves the Service to a
//! replica and verifies the certificate against `<svc>.<ns>.svc` and the
//! bundle the webhook published itself.
//!
//! While certificates are rotated (forced serving rotation, forced CA
//! rotation, a garbage Secret, a deleted Secret), a load loop sends a valid
//! and an invalid FluxConfig (dry run) every 20 ms through the API server,
//! and a probe makes a fresh TLS handshake to each replica every 50 ms,
//! verifying it against the bundle published at that moment, as a new API
//! server connection would. Not one may fail. Since a failure window can be
//! shorter than the probes' period, a timeline of the Secret and the
//! webhook configuration (both watched) is checked as well: a serving
//! certificate appears only from a CA published for a while, and a CA
//! leaves the published bundle only a while after the serving certificate
//! moved off it.
//!
//! Each test has its own platform namespace (the Secret, the Service),
//! team namespace, PlatformDefaults, webhook configuration and RBAC; the
//! webhook rules only match that test's objects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluxgate_admission_webhook::certs::x509::{Cert, certs_from_pem};
use fluxgate_admission_webhook::certs::{CA_CRT, ROTATE, ROTATE_CA, ROTATED, ROTATED_CA, TLS_CRT};
use fluxgate_admission_webhook::{Flags, Webhook};
use fluxgate_crds::{FluxConfig, FluxConfigSpec, PlatformDefaults};
use fluxgate_e2e::stack::Background;
use fluxgate_e2e::testenv::{self, ControlPlane, TEST_LABEL, with_temp_ns};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    RuleWithOperations, ServiceReference, ValidatingWebhook, ValidatingWebhookConfiguration,
    WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt as _};
use serde_json::json;

const SECRET: &str = "fluxgate-webhook-tls";
const SERVICE: &str = "fluxgate-webhook";
const SERVICE_ACCOUNT: &str = "fluxgate-webhook";
const FC_WEBHOOK: &str = "fluxconfigs.fluxgate.dev";
const PD_WEBHOOK: &str = "platformdefaults.fluxgate.dev";
/// Label of this test's team namespace and PlatformDefaults.
const TEST_OWNER: &str = "fluxgate.dev/certs-e2e";
const GRACE: &str = "2s";
/// What the timeline requires between the steps of a rotation: well under
/// the grace period, well over watch latency.
const MARGIN: Duration = Duration::from_secs(1);
const WAIT: Duration = Duration::from_secs(60);

/// One test's world: its names and an admin client.
struct Env {
    admin: Client,
    ns: String,
    team: String,
    configuration: String,
}

impl Env {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.admin.clone(), &self.ns)
    }

    fn flux_configs(&self) -> Api<FluxConfig> {
        Api::namespaced(self.admin.clone(), &self.team)
    }

    fn configurations(&self) -> Api<ValidatingWebhookConfiguration> {
        Api::all(self.admin.clone())
    }

    fn server_name(&self) -> String {
        format!("{SERVICE}.{}.svc", self.ns)
    }
}

async fn apply<K>(api: &Api<K>, object: &K)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    api.patch(
        &object.name_any(),
        &PatchParams::apply(testenv::FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap();
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(Into::into),
        ..ObjectMeta::default()
    }
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str], names: &[&str]) -> PolicyRule {
    let strings = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        resource_names: (!names.is_empty()).then(|| strings(names)),
        ..PolicyRule::default()
    }
}

/// The RBAC of self-managed mode, exactly as the README lists it: the
/// Secret by name (`create` cannot be restricted by name), the webhook
/// configuration by name, and the webhook's usual read-only watches.
async fn grant_rbac(env: &Env) {
    let admin = &env.admin;
    let sa = ServiceAccount {
        metadata: meta(SERVICE_ACCOUNT, Some(&env.ns)),
        ..ServiceAccount::default()
    };
    apply(&Api::namespaced(admin.clone(), &env.ns), &sa).await;
    let role = Role {
        metadata: meta("fluxgate-webhook-certs", Some(&env.ns)),
        rules: Some(vec![
            rule(
                &[""],
                &["secrets"],
                &["get", "list", "watch", "update"],
                &[SECRET],
            ),
            rule(&[""], &["secrets"], &["create"], &[]),
        ]),
    };
    apply(&Api::namespaced(admin.clone(), &env.ns), &role).await;
    let cluster_role_name = format!("fluxgate-webhook-{}", env.ns);
    let cluster_role = ClusterRole {
        metadata: meta(&cluster_role_name, None),
        rules: Some(vec![
            rule(
                &["admissionregistration.k8s.io"],
                &["validatingwebhookconfigurations"],
                &["get", "list", "watch", "patch"],
                &[&env.configuration],
            ),
            rule(&[""], &["namespaces"], &["get", "list", "watch"], &[]),
            rule(
                &["fluxgate.dev"],
                &["fluxconfigs", "platformdefaults"],
                &["get", "list", "watch"],
                &[],
            ),
        ]),
        ..ClusterRole::default()
    };
    apply(&Api::all(admin.clone()), &cluster_role).await;
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: SERVICE_ACCOUNT.into(),
        namespace: Some(env.ns.clone()),
        ..Subject::default()
    };
    let role_binding = RoleBinding {
        metadata: meta("fluxgate-webhook-certs", Some(&env.ns)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "fluxgate-webhook-certs".into(),
        },
        subjects: Some(vec![subject.clone()]),
    };
    apply(&Api::namespaced(admin.clone(), &env.ns), &role_binding).await;
    let cluster_role_binding = ClusterRoleBinding {
        metadata: meta(&cluster_role_name, None),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: cluster_role_name.clone(),
        },
        subjects: Some(vec![subject]),
    };
    apply(&Api::all(admin.clone()), &cluster_role_binding).await;
}

/// The team namespace, its PlatformDefaults and the webhook configuration
/// (by Service, no `caBundle`).
async fn set_up(admin: Client, ns: String) -> Env {
    testenv::install_crds(&admin, fluxgate_crds::all_crds())
        .await
        .unwrap();
    let env = Env {
        admin: admin.clone(),
        team: format!("{ns}-team"),
        configuration: format!("fluxgate-certs-{ns}"),
        ns,
    };
    let owner = || Some([(TEST_OWNER.to_owned(), env.ns.clone())].into());
    let team = Namespace {
        metadata: ObjectMeta {
            labels: Some(
                [
                    (TEST_OWNER.to_owned(), env.ns.clone()),
                    (TEST_LABEL.to_owned(), "true".to_owned()),
                ]
                .into(),
            ),
            ..meta(&env.team, None)
        },
        ..Namespace::default()
    };
    apply(&Api::all(admin.clone()), &team).await;
    let mut pd: PlatformDefaults = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "PlatformDefaults",
        "metadata": {"name": format!("certs-{}", env.ns)},
        "spec": {
            "namespaceSelector": {"matchLabels": {TEST_OWNER: env.ns}},
            "allowedRepos": ["https://git.corp.example/{namespace}/*"],
            "allowedTargetNamespaces": ["{namespace}"],
            "defaults": {"interval": "5m"},
        },
    }))
    .unwrap();
    pd.metadata.labels = owner();
    apply(&Api::all(admin.clone()), &pd).await;

    grant_rbac(&env).await;
    register(&env).await;
    env
}

async fn register(env: &Env) {
    let client_config = WebhookClientConfig {
        service: Some(ServiceReference {
            namespace: env.ns.clone(),
            name: SERVICE.into(),
            path: Some("/validate".into()),
            port: Some(443),
        }),
        ca_bundle: None,
        url: None,
    };
    let rules = |resource: &str, scope: &str| {
        Some(vec![RuleWithOperations {
            api_groups: Some(vec![fluxgate_crds::GROUP.into()]),
            api_versions: Some(vec![fluxgate_crds::VERSION.into()]),
            operations: Some(vec!["CREATE".into(), "UPDATE".into()]),
            resources: Some(vec![resource.into()]),
            scope: Some(scope.into()),
        }])
    };
    let webhook = |name: &str| ValidatingWebhook {
        name: name.into(),
        admission_review_versions: vec!["v1".into()],
        client_config: client_config.clone(),
        failure_policy: Some("Fail".into()),
        side_effects: "None".into(),
        timeout_seconds: Some(5),
        ..ValidatingWebhook::default()
    };
    let configuration = ValidatingWebhookConfiguration {
        metadata: meta(&env.configuration, None),
        webhooks: Some(vec![
            ValidatingWebhook {
                rules: rules("fluxconfigs", "Namespaced"),
                // Only this test's team namespace.
                namespace_selector: Some(LabelSelector {
                    match_expressions: Some(vec![LabelSelectorRequirement {
                        key: "kubernetes.io/metadata.name".into(),
                        operator: "In".into(),
                        values: Some(vec![env.team.clone()]),
                    }]),
                    ..LabelSelector::default()
                }),
                ..webhook(FC_WEBHOOK)
            },
            ValidatingWebhook {
                rules: rules("platformdefaults", "Cluster"),
                // Only this test's PlatformDefaults.
                object_selector: Some(LabelSelector {
                    match_labels: Some([(TEST_OWNER.to_owned(), env.ns.clone())].into()),
                    ..LabelSelector::default()
                }),
                ..webhook(PD_WEBHOOK)
            },
        ]),
    };
    apply(&env.configurations(), &configuration).await;
}

async fn tear_down(env: &Env) {
    let _ = env
        .configurations()
        .delete(&env.configuration, &DeleteParams::default())
        .await;
    let _ = Api::<PlatformDefaults>::all(env.admin.clone())
        .delete(&format!("certs-{}", env.ns), &DeleteParams::default())
        .await;
    let _ = Api::<Namespace>::all(env.admin.clone())
        .delete(&env.team, &DeleteParams::default())
        .await;
    let name = format!("fluxgate-webhook-{}", env.ns);
    let _ = Api::<ClusterRoleBinding>::all(env.admin.clone())
        .delete(&name, &DeleteParams::default())
        .await;
    let _ = Api::<ClusterRole>::all(env.admin.clone())
        .delete(&name, &DeleteParams::default())
        .await;
}

/// A webhook replica running in-process on its own thread and runtime, as
/// the ServiceAccount.
struct Replica {
    addr: SocketAddr,
    admin: SocketAddr,
    _task: Background,
}

async fn start_replica(cp: &'static ControlPlane, env: &Env, ip: IpAddr, name: &str) -> Replica {
    let token = testenv::service_account_token(&env.admin, &env.ns, SERVICE_ACCOUNT)
        .await
        .unwrap();
    let args = [
        "fluxgate-admission-webhook".to_owned(),
        "--cert-mode=self-managed".to_owned(),
        format!("--platform-namespace={}", env.ns),
        format!("--listen={}", SocketAddr::new(ip, 0)),
        "--admin-listen=127.0.0.1:0".to_owned(),
        format!("--tls-secret={SECRET}"),
        format!("--webhook-configuration={}", env.configuration),
        format!("--service-name={SERVICE}"),
        // Long enough never to expire during a test; rotations are forced.
        "--ca-validity=10h".to_owned(),
        "--ca-renew-before=2h".to_owned(),
        "--cert-validity=1h".to_owned(),
        "--cert-renew-before=30m".to_owned(),
        format!("--rotation-grace={GRACE}"),
    ];
    let flags = <Flags as clap::Parser>::try_parse_from(args).unwrap();
    let (addrs_tx, addrs_rx) = tokio::sync::oneshot::channel();
    let task = Background::spawn(name, move |stop| async move {
        let client = cp.client_for_token(&token).unwrap();
        let webhook = Webhook::bind_with(&flags.webhook, &flags.certificates)
            .await
            .unwrap();
        let _ = addrs_tx.send((webhook.local_addr().unwrap(), webhook.admin_addr().unwrap()));
        let result = webhook
            .serve(client, async {
                let _ = stop.await;
            })
            .await;
        if let Err(err) = result {
            eprintln!(
                "replica stopped: {}",
                fluxgate_admission_webhook::error_chain(&err)
            );
        }
    })
    .unwrap();
    let (addr, admin) = tokio::time::timeout(WAIT, addrs_rx).await.unwrap().unwrap();
    Replica {
        addr,
        admin,
        _task: task,
    }
}

/// The Service with an EndpointSlice per replica (the harness writes the
/// first; the others are added here, the way a second pod adds one).
async fn route(env: &Env, replicas: &[Replica]) {
    testenv::route_service(&env.admin, &env.ns, SERVICE, "https", 443, replicas[0].addr)
        .await
        .unwrap();
    for (i, replica) in replicas.iter().enumerate().skip(1) {
        add_endpoint(env, &format!("{SERVICE}-replica-{i}"), replica).await;
    }
}

/// Starts two replicas behind the Service once the ServiceAccount can read
/// its Secret (RBAC is in force).
async fn start_replicas(env: &Env) -> Vec<Replica> {
    let cp = testenv::shared().unwrap();
    let token = testenv::service_account_token(&env.admin, &env.ns, SERVICE_ACCOUNT)
        .await
        .unwrap();
    let as_webhook: Api<Secret> = Api::namespaced(cp.client_for_token(&token).unwrap(), &env.ns);
    eventually("RBAC in force", || async {
        as_webhook.get_opt(SECRET).await.is_ok().then_some(())
    })
    .await;
    let ip = testenv::routable_ip().unwrap();
    let mut replicas = Vec::new();
    for i in 0..2 {
        replicas.push(start_replica(cp, env, ip, &format!("webhook-{i}")).await);
    }
    route(env, &replicas).await;
    replicas
}

async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    fluxgate_e2e::wait::eventually(what, WAIT, check).await
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

fn valid(env: &Env) -> FluxConfig {
    flux_config(
        "web",
        &format!("https://git.corp.example/{}/web.git", env.team),
    )
}

fn invalid() -> FluxConfig {
    flux_config("evil", "https://github.com/evil/x.git")
}

/// What the API server made of a request: `Ok` when the webhook decided as
/// expected, the error otherwise.
async fn admit(env: &Env, allowed: bool) -> Result<(), String> {
    let fcs = env.flux_configs();
    if allowed {
        fcs.create(&dry_run(), &valid(env))
            .await
            .map(drop)
            .map_err(|e| format!("valid FluxConfig: {e}"))
    } else {
        match fcs.create(&dry_run(), &invalid()).await {
            Err(kube::Error::Api(status))
                if status.code == 403
                    && status.message.contains(&format!(
                        "admission webhook \"{FC_WEBHOOK}\" denied the request"
                    ))
                    && status.message.contains("is not allowed") =>
            {
                Ok(())
            }
            other => Err(format!("invalid FluxConfig: {other:?}")),
        }
    }
}

fn secret_field(secret: &Secret, key: &str) -> Vec<u8> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.clone())
        .unwrap_or_default()
}

/// Each webhook's `caBundle`.
async fn published(env: &Env) -> Vec<Vec<u8>> {
    env.configurations()
        .get(&env.configuration)
        .await
        .unwrap()
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default())
        .collect()
}

/// The leaf certificate (DER) a fresh TLS handshake gets from `addr`,
/// verified against `bundle` for `server_name`, as the API server does.
async fn handshake(
    addr: SocketAddr,
    bundle: Vec<u8>,
    server_name: String,
) -> Result<Vec<u8>, String> {
    tokio::task::spawn_blocking(move || {
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        for der in CertificateDer::pem_slice_iter(&bundle) {
            roots
                .add(der.map_err(|e| format!("bundle: {e}"))?)
                .map_err(|e| format!("bundle: {e}"))?;
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = ServerName::try_from(server_name).map_err(|e| e.to_string())?;
        let mut connection =
            rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
        let mut tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        while connection.is_handshaking() {
            connection
                .complete_io(&mut tcp)
                .map_err(|e| format!("handshake with {addr}: {e}"))?;
        }
        connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| leaf.to_vec())
            .ok_or_else(|| "no certificate".to_owned())
    })
    .await
    .unwrap()
}

/// The Secret's serving certificate, its bundle and the webhook's
/// published bundle, once they agree and every replica serves that
/// certificate (through a verified handshake).
struct Settled {
    serving: Cert,
    bundle: Vec<Cert>,
    secret: Secret,
}

async fn settled(env: &Env, replicas: &[Replica]) -> Settled {
    eventually(
        "the Secret published and served by every replica",
        || async {
            let secret = env.secrets().get_opt(SECRET).await.unwrap()?;
            let ca_crt = secret_field(&secret, CA_CRT);
            let (bundle, clean) = certs_from_pem(&ca_crt);
            let serving = certs_from_pem(&secret_field(&secret, TLS_CRT))
                .0
                .into_iter()
                .next()?;
            if !clean || bundle.is_empty() || !bundle.iter().any(|ca| serving.signed_by(ca)) {
                return None;
            }
            if published(env).await.iter().any(|b| *b != ca_crt) {
                return None;
            }
            for replica in replicas {
                let served = handshake(replica.addr, ca_crt.clone(), env.server_name())
                    .await
                    .ok()?;
                if served != serving.der {
                    return None;
                }
            }
            Some(Settled {
                serving,
                bundle,
                secret,
            })
        },
    )
    .await
}

async fn wait_until_enforced(env: &Env) {
    eventually("the API server calling the webhook by Service", || async {
        (admit(env, false).await.is_ok() && admit(env, true).await.is_ok()).then_some(())
    })
    .await;
}

/// Admission requests through the API server every 20 ms and fresh,
/// verified handshakes to every replica every 50 ms, until stopped;
/// failures are collected.
struct Load {
    /// Whether handshakes are probed (replicas were given).
    probing: bool,
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    admissions: Arc<Mutex<(usize, usize)>>,
    handshakes: Arc<Mutex<usize>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(env: &Arc<Env>, replicas: &[Replica]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let admissions = Arc::new(Mutex::new((0, 0)));
        let handshakes = Arc::new(Mutex::new(0));
        let mut tasks = Vec::new();
        {
            let (env, stop, failures, admissions) = (
                env.clone(),
                stop.clone(),
                failures.clone(),
                admissions.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut allowed = false;
                while !stop.load(Ordering::Relaxed) {
                    allowed = !allowed;
                    let started = Instant::now();
                    match admit(&env, allowed).await {
                        Ok(()) => {
                            let mut counts = admissions.lock().unwrap();
                            if allowed {
                                counts.0 += 1;
                            } else {
                                counts.1 += 1;
                            }
                        }
                        Err(err) => failures.lock().unwrap().push(err),
                    }
                    let pause = Duration::from_millis(20).saturating_sub(started.elapsed());
                    tokio::time::sleep(pause).await;
                }
            }));
        }
        let addrs: Vec<SocketAddr> = replicas.iter().map(|r| r.addr).collect();
        {
            let (env, stop, failures, handshakes) = (
                env.clone(),
                stop.clone(),
                failures.clone(),
                handshakes.clone(),
            );
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // What a new API server connection would trust now.
                    let bundles = published(&env).await;
                    for addr in &addrs {
                        for bundle in &bundles {
                            match handshake(*addr, bundle.clone(), env.server_name()).await {
                                Ok(_) => *handshakes.lock().unwrap() += 1,
                                Err(err) => failures.lock().unwrap().push(err),
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        Self {
            probing: !replicas.is_empty(),
            stop,
            failures,
            admissions,
            handshakes,
            tasks,
        }
    }

    /// Stops and asserts that nothing failed and the load was real.
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.unwrap();
        }
        let failures = self.failures.lock().unwrap();
        let (allowed, denied) = *self.admissions.lock().unwrap();
        let handshakes = *self.handshakes.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{} failed of {} admissions and {handshakes} handshakes: {:#?}",
            failures.len(),
            allowed + denied + failures.len(),
            &failures[..failures.len().min(10)]
        );
        assert!(
            allowed >= 20 && denied >= 20,
            "too little load: {allowed} allowed, {denied} denied"
        );
        assert!(
            !self.probing || handshakes >= 20,
            "too few handshakes: {handshakes}"
        );
        eprintln!(
            "load: {allowed} allowed, {denied} denied, {handshakes} verified handshakes, 0 failures"
        );
    }
}

/// What the Secret and the webhook configuration looked like, when (as
/// watched by the test).
enum Seen {
    /// The Secret's serving certificate (when readable) and its bundle.
    Secret {
        serving: Option<Cert>,
        bundle: Vec<Cert>,
    },
    /// The CAs in every webhook's `caBundle`.
    Published(Vec<Vec<u8>>),
}

/// Watches the Secret and the webhook configuration for the whole test.
struct Timeline {
    seen: Arc<Mutex<Vec<(Instant, Seen)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Timeline {
    async fn start(env: &Env) -> Self {
        use futures::StreamExt as _;
        use kube::runtime::watcher;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let by_name =
            |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
        let secrets = watcher(env.secrets(), by_name(SECRET)).map(|event| match event {
            Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                let serving = certs_from_pem(&secret_field(&secret, TLS_CRT))
                    .0
                    .into_iter()
                    .next();
                let bundle = certs_from_pem(&secret_field(&secret, CA_CRT)).0;
                Some(Seen::Secret { serving, bundle })
            }
            _ => None,
        });
        let configurations =
            watcher(env.configurations(), by_name(&env.configuration)).map(|event| match event {
                Ok(
                    watcher::Event::Apply(configuration) | watcher::Event::InitApply(configuration),
                ) => {
                    let bundles: Vec<Vec<Vec<u8>>> = configuration
                        .webhooks
                        .unwrap_or_default()
                        .into_iter()
                        .map(|w| {
                            let pem = w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default();
                            certs_from_pem(&pem).0.into_iter().map(|c| c.der).collect()
                        })
                        .collect();
                    let everywhere = bundles
                        .first()
                        .map(|first| {
                            first
                                .iter()
                                .filter(|der| bundles.iter().all(|b| b.contains(der)))
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    Some(Seen::Published(everywhere))
                }
                _ => None,
            });
        let mut events = futures::stream::select(secrets.boxed(), configurations.boxed());
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let Some(event) = event {
                    sink.lock().unwrap().push((Instant::now(), event));
                }
            }
        });
        // Both initial lists in, before anything is changed.
        eventually("the timeline's watches", || async {
            let seen = seen.lock().unwrap();
            let secret = seen.iter().any(|(_, s)| matches!(s, Seen::Secret { .. }));
            let published = seen.iter().any(|(_, s)| matches!(s, Seen::Published(_)));
            (secret && published).then_some(())
        })
        .await;
        Self { seen, task }
    }

    /// Checks the order of events with `margin` (less than the grace
    /// period) to spare for watch latency.
    fn check(self, margin: Duration) {
        self.task.abort();
        let seen = self.seen.lock().unwrap();
        // CA (DER) -> since when it has been in every webhook's bundle.
        let mut published_since: Vec<(Vec<u8>, Instant)> = Vec::new();
        // The serving certificate, its issuer, and since when it is in the
        // Secret.
        let mut serving: Option<(Cert, Option<Cert>, Instant)> = None;
        let mut checked = (0, 0);
        for (at, event) in seen.iter() {
            match event {
                Seen::Secret {
                    serving: Some(cert),
                    bundle,
                } => {
                    if serving.as_ref().is_some_and(|(s, _, _)| s.der == cert.der) {
                        continue;
                    }
                    let issuer = bundle.iter().find(|ca| cert.signed_by(ca)).cloned();
                    if serving.is_some() {
                        checked.0 += 1;
                        let issuer = issuer
                            .as_ref()
                            .expect("a serving certificate without its CA");
                        let since = published_since
                            .iter()
                            .find(|(der, _)| *der == issuer.der)
                            .map(|(_, since)| *since);
                        assert!(
                            since.is_some_and(|since| since + margin <= *at),
                            "serving certificate {} from CA {} in the Secret at {at:?}, \
                             but that CA was published since {since:?}",
                            cert.serial,
                            issuer.subject
                        );
                    }
                    serving = Some((cert.clone(), issuer, *at));
                }
                Seen::Secret { serving: None, .. } => {}
                Seen::Published(cas) => {
                    for (der, _) in &published_since {
                        if cas.contains(der) {
                            continue;
                        }
                        checked.1 += 1;
                        if let Some((cert, Some(issuer), since)) = &serving {
                            assert!(
                                issuer.der != *der,
                                "CA {} unpublished while serving certificate {} from it",
                                issuer.subject,
                                cert.serial
                            );
                            assert!(
                                *since + margin <= *at,
                                "a CA unpublished at {at:?}, only {:?} after the serving certificate moved off it",
                                at.duration_since(*since)
                            );
                        }
                    }
                    published_since.retain(|(der, _)| cas.contains(der));
                    for der in cas {
                        if !published_since.iter().any(|(d, _)| d == der) {
                            published_since.push((der.clone(), *at));
                        }
                    }
                }
            }
        }
        eprintln!(
            "timeline: {} new serving certificates and {} retired CAs checked",
            checked.0, checked.1
        );
    }
}

async fn annotate(env: &Env, key: &str, value: &str) {
    env.secrets()
        .patch(
            SECRET,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: value}}})),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_its_certificates_publishes_the_ca_and_is_enforced_by_service() {
    with_temp_ns("certs-new", |admin, ns| async move {
        let env = set_up(admin, ns).await;
        // No Secret and no caBundle before the webhook runs.
        assert!(env.secrets().get_opt(SECRET).await.unwrap().is_none());
        assert!(published(&env).await.iter().all(Vec::is_empty));
        let started = Instant::now();
        let replicas = start_replicas(&env).await;
        let state = settled(&env, &replicas).await;
        wait_until_enforced(&env).await;
        eprintln!("enforced {:?} after the replicas started", started.elapsed());

        // One CA, one serving certificate for the Service's names.
        assert_eq!(state.bundle.len(), 1);
        assert!(state.bundle[0].subject.contains("fluxgate-webhook-ca@"));
        for name in [
            SERVICE.to_owned(),
            format!("{SERVICE}.{}", env.ns),
            format!("{SERVICE}.{}.svc", env.ns),
            format!("{SERVICE}.{}.svc.cluster.local", env.ns),
        ] {
            assert!(state.serving.dns_names.contains(&name), "{name}");
        }
        assert_eq!(state.secret.type_.as_deref(), Some("kubernetes.io/tls"));
        // Written under the webhook's field manager.
        let configuration = env.configurations().get(&env.configuration).await.unwrap();
        let managers: Vec<String> = configuration
            .managed_fields()
            .iter()
            .filter_map(|m| m.manager.clone())
            .collect();
        assert!(managers.iter().any(|m| m == "fluxgate.dev/webhook"), "{managers:?}");
        // The publication's precondition holds: an apply carrying an old
        // resourceVersion is refused, so a replica with a stale view cannot
        // overwrite a newer bundle.
        let stale = configuration.resource_version().unwrap();
        env.configurations()
            .patch(
                &env.configuration,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
            )
            .await
            .unwrap();
        let apply = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": env.configuration, "resourceVersion": stale},
            "webhooks": [{"name": FC_WEBHOOK, "clientConfig": {"caBundle": ByteString(b"stale".to_vec())}}],
        });
        match env
            .configurations()
            .patch(
                &env.configuration,
                &PatchParams::apply("fluxgate.dev/webhook").force(),
                &Patch::Apply(&apply),
            )
            .await
        {
            Err(kube::Error::Api(status)) => assert_eq!(status.code, 409, "{status:?}"),
            other => panic!("a stale apply went through: {other:?}"),
        }

        // The denial is the webhook's, through the Service.
        let message = match env.flux_configs().create(&dry_run(), &invalid()).await {
            Err(kube::Error::Api(status)) => status.message,
            other => panic!("expected a denial, got {other:?}"),
        };
        assert!(
            message.starts_with(&format!(
                "admission webhook \"{FC_WEBHOOK}\" denied the request: FluxConfig {}/evil: spec.repo",
                env.team
            )),
            "{message}"
        );
        for replica in &replicas {
            assert_eq!(readyz(replica.admin).await, 200);
        }
        tear_down(&env).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_serving_and_ca_rotations_under_load_fail_no_admission() {
    with_temp_ns("certs-rotate", |admin, ns| async move {
        let env = Arc::new(set_up(admin, ns).await);
        let replicas = start_replicas(&env).await;
        let before = settled(&env, &replicas).await;
        wait_until_enforced(&env).await;
        let timeline = Timeline::start(&env).await;
        let load = Load::start(&env, &replicas);
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Serving certificate only: re-issued from the same CA.
        let started = Instant::now();
        annotate(&env, ROTATE, "first").await;
        let after_serving = eventually("a new serving certificate", || async {
            let state = settled(&env, &replicas).await;
            (state.serving.der != before.serving.der).then_some(state)
        })
        .await;
        eprintln!("serving rotation took {:?}", started.elapsed());
        assert_eq!(after_serving.bundle, before.bundle, "same CA");
        assert!(after_serving.serving.signed_by(&before.bundle[0]));
        assert_eq!(
            after_serving
                .secret
                .annotations()
                .get(ROTATED)
                .map(String::as_str),
            Some("first")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;

        // CA: added, published, then the serving certificate moves to it,
        // then the old CA is retired.
        let started = Instant::now();
        annotate(&env, ROTATE_CA, "second").await;
        let after_ca = eventually(
            "a new CA, alone in the bundle, signing what is served",
            || async {
                let state = settled(&env, &replicas).await;
                (state.bundle.len() == 1 && state.bundle != before.bundle).then_some(state)
            },
        )
        .await;
        eprintln!("CA rotation took {:?}", started.elapsed());
        assert!(after_ca.serving.signed_by(&after_ca.bundle[0]));
        assert!(!after_ca.serving.signed_by(&before.bundle[0]));
        assert_ne!(after_ca.bundle[0].subject, before.bundle[0].subject);
        assert_eq!(
            after_ca
                .secret
                .annotations()
                .get(ROTATED_CA)
                .map(String::as_str),
            Some("second")
        );
        // Requests after the old CA is gone reach the new certificate.
        tokio::time::sleep(Duration::from_secs(1)).await;
        load.finish().await;
        timeline.check(MARGIN);
        tear_down(&env).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_or_deleted_secret_is_repaired_without_failing_admission() {
    with_temp_ns("certs-repair", |admin, ns| async move {
        let env = Arc::new(set_up(admin, ns).await);
        let replicas = start_replicas(&env).await;
        let before = settled(&env, &replicas).await;
        wait_until_enforced(&env).await;
        let timeline = Timeline::start(&env).await;
        let load = Load::start(&env, &replicas);
        tokio::time::sleep(Duration::from_millis(500)).await;

        // Garbage in every key: the replicas keep serving, a new CA is
        // introduced around the served certificate, then the usual steps.
        let garbage = ByteString(b"garbage".to_vec());
        env.secrets()
            .patch(
                SECRET,
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {
                    "ca.crt": garbage, "ca.key": garbage, "tls.crt": garbage, "tls.key": garbage,
                }})),
            )
            .await
            .unwrap();
        let repaired = eventually("the Secret repaired with a new CA", || async {
            let state = settled(&env, &replicas).await;
            (state.bundle.len() == 1 && state.bundle != before.bundle).then_some(state)
        })
        .await;
        assert!(repaired.serving.signed_by(&repaired.bundle[0]));

        // Deleted: recreated the same way.
        env.secrets()
            .delete(SECRET, &DeleteParams::default())
            .await
            .unwrap();
        let recreated = eventually("the Secret recreated with a new CA", || async {
            let state = settled(&env, &replicas).await;
            (state.bundle.len() == 1 && state.bundle != repaired.bundle).then_some(state)
        })
        .await;
        assert!(recreated.serving.signed_by(&recreated.bundle[0]));
        tokio::time::sleep(Duration::from_secs(1)).await;
        load.finish().await;
        timeline.check(MARGIN);
        tear_down(&env).await;
    })
    .await;
}

/// `GET /readyz` on an admin port.
async fn readyz(admin: SocketAddr) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut stream) = tokio::net::TcpStream::connect(admin).await else {
        return 0;
    };
    let request = "GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

/// An EndpointSlice of the webhook's Service holding one replica, as the
/// endpointslice controller writes one for a ready pod.
async fn add_endpoint(env: &Env, name: &str, replica: &Replica) {
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            labels: Some(
                [
                    ("kubernetes.io/service-name".to_owned(), SERVICE.to_owned()),
                    (
                        "endpointslice.kubernetes.io/managed-by".to_owned(),
                        testenv::SLICE_MANAGER.to_owned(),
                    ),
                ]
                .into(),
            ),
            ..meta(name, Some(&env.ns))
        },
        address_type: "IPv4".into(),
        endpoints: Some(vec![Endpoint {
            addresses: vec![replica.addr.ip().to_string()],
            conditions: Some(EndpointConditions {
                ready: Some(true),
                serving: Some(true),
                terminating: Some(false),
            }),
            ..Endpoint::default()
        }]),
        ports: Some(vec![EndpointPort {
            name: Some("https".into()),
            port: Some(i32::from(replica.addr.port())),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    };
    apply(&Api::namespaced(env.admin.clone(), &env.ns), &slice).await;
}

/// The webhook restarted under load (issue 7, "webhook faults"): a rolling
/// restart of both replicas as a Deployment rollout with `maxUnavailable:
/// 0` does it. A new replica starts and becomes ready (it loads the shared
/// certificate), joins the Service; the old one leaves the Service's
/// endpoints (what the endpointslice controller does when a pod starts
/// terminating), then gets SIGTERM: it stops accepting, drains in-flight
/// reviews and closes idle keep-alive connections. Not one admission may
/// fail while this happens twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_admission() {
    with_temp_ns("certs-restart", |admin, ns| async move {
        let env = Arc::new(set_up(admin, ns).await);
        let cp = testenv::shared().unwrap();
        let ip = testenv::routable_ip().unwrap();
        let old = start_replicas(&env).await;
        settled(&env, &old).await;
        wait_until_enforced(&env).await;
        let load = Load::start(&env, &[]);
        tokio::time::sleep(Duration::from_millis(500)).await;

        // The slices `route` wrote: the harness's for the first replica,
        // one of its own for the second.
        let slices = [format!("{SERVICE}-testenv"), format!("{SERVICE}-replica-1")];
        let mut new = Vec::new();
        for (i, (replica, slice)) in old.into_iter().zip(slices).enumerate() {
            let started = Instant::now();
            let fresh = start_replica(cp, &env, ip, &format!("webhook-new-{i}")).await;
            eventually("the new replica ready", || async {
                (readyz(fresh.admin).await == 200).then_some(())
            })
            .await;
            add_endpoint(&env, &format!("{SERVICE}-new-{i}"), &fresh).await;
            // Terminating: out of the endpoints first, then stopped. The
            // API server's endpoint cache follows a watch; the pause stands
            // in for the kubelet's preStop/termination delay.
            Api::<EndpointSlice>::namespaced(env.admin.clone(), &env.ns)
                .delete(&slice, &DeleteParams::default())
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(1)).await;
            tokio::task::spawn_blocking(move || drop(replica))
                .await
                .unwrap();
            eprintln!("replica {i} replaced in {:?}", started.elapsed());
            new.push(fresh);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        load.finish().await;
        // The new replicas serve the same certificate the old ones did.
        settled(&env, &new).await;
        tear_down(&env).await;
    })
    .await;
}
