//! The operator's life cycle against a real control plane: leader election
//! between two replicas, a leader that dies without releasing its Lease, a
//! restart that must write nothing, and the admin endpoints of a running
//! replica.
//!
//! This binary has its own control plane, and every operator in it is
//! started and stopped by the tests (unlike `operator.rs`, which shares one
//! long-lived operator). Each replica runs on its own thread and runtime,
//! with its own token of the `fluxgate-operator` ServiceAccount bound by
//! the chart's operator RBAC (`deploy/charts/fluxgate/templates/rbac-operator.yaml`); the audit log tells the replicas apart by
//! the token's id (`authentication.kubernetes.io/credential-id`). Operators
//! watch the whole cluster, so the tests run one at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fluxgate_crds::conditions;
use fluxgate_crds::{FluxConfig, PlatformDefaults};
use fluxgate_e2e::stack;
use fluxgate_e2e::testenv::{self, ControlPlane};
use fluxgate_e2e::wait::eventually;
use fluxgate_operator::Handle;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

const PLATFORM_NS: &str = "fluxgate-system";
const CREDENTIALS: &str = "git-corp-readonly";
const OPERATOR_USER: &str = "system:serviceaccount:fluxgate-system:fluxgate-operator";
const CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";
/// Short, so a takeover is quick; the retry period is a fifth of it.
const LEASE_SECONDS: u64 = 4;

/// Operators watch the whole cluster: two tests' operators at once would
/// reconcile each other's objects. A tokio mutex works across the tests'
/// runtimes.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn control_plane() -> &'static ControlPlane {
    testenv::shared().unwrap()
}

/// Installs CRDs, the platform namespace, RBAC and the credentials Secret,
/// once per binary (on a throwaway runtime: clients are bound to theirs).
fn platform() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // The operators' logs, shown with a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info,kube=warn".into()),
            )
            .with_test_writer()
            .try_init();
        std::thread::spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let admin = control_plane().client().unwrap();
                testenv::install_crds(&admin, fluxgate_crds::all_crds())
                    .await
                    .unwrap();
                let ns = Namespace {
                    metadata: ObjectMeta {
                        name: Some(PLATFORM_NS.into()),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                };
                Api::<Namespace>::all(admin.clone())
                    .create(&PostParams::default(), &ns)
                    .await
                    .unwrap();
                stack::apply_all(
                    &admin,
                    &stack::installed("operator", stack::RBAC_KINDS).unwrap(),
                )
                .await
                .unwrap();
                stack::apply_all(
                    &admin,
                    &stack::installed("reconciler", &["ClusterRole"]).unwrap(),
                )
                .await
                .unwrap();
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": CREDENTIALS},
                    "stringData": {"username": "fluxgate", "password": "s3cret"},
                }))
                .unwrap();
                Api::<Secret>::namespaced(admin, PLATFORM_NS)
                    .create(&PostParams::default(), &secret)
                    .await
                    .unwrap();
            });
        })
        .join()
        .unwrap();
    });
}

/// The `jti` claim of a ServiceAccount token: the audit log records it as
/// the request's credential id.
fn token_id(token: &str) -> String {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .unwrap();
    let claims: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    claims["jti"].as_str().unwrap().to_owned()
}

/// One operator replica on its own thread and runtime.
struct Replica {
    identity: String,
    handle: Handle,
    token_id: String,
    stop: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<String>>>,
}

impl Replica {
    async fn start(identity: &str, lease: &str) -> Self {
        Self::start_with(identity, lease, Handle::new()).await
    }

    async fn start_with(identity: &str, lease: &str, handle: Handle) -> Self {
        let admin = control_plane().client().unwrap();
        let token = testenv::service_account_token(&admin, PLATFORM_NS, "fluxgate-operator")
            .await
            .unwrap();
        let token_id = token_id(&token);
        let config = <fluxgate_operator::Config as clap::Parser>::parse_from([
            "fluxgate-operator",
            "--platform-namespace",
            PLATFORM_NS,
            "--identity",
            identity,
            "--leader-lease",
            lease,
            "--lease-seconds",
            &LEASE_SECONDS.to_string(),
            "--log-format",
            "text",
        ]);
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (kill, kill_rx) = oneshot::channel::<()>();
        let run_handle = handle.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let outcome = runtime.block_on(async move {
                let client = control_plane().client_for_token(&token).unwrap();
                let shutdown = async move {
                    let _ = stop_rx.await;
                };
                let run = fluxgate_operator::run_with_client(client, config, run_handle, shutdown);
                tokio::select! {
                    result = run => Some(format!("{result:?}")),
                    // Killed: the run future is dropped mid-flight, nothing
                    // of it runs again (no Lease release), as in a crash.
                    _ = kill_rx => None,
                }
            });
            runtime.shutdown_background();
            outcome
        });
        Self {
            identity: identity.to_owned(),
            handle,
            token_id,
            stop: Some(stop),
            kill: Some(kill),
            thread: Some(thread),
        }
    }

    fn is_leader(&self) -> bool {
        self.handle.metrics.leader.get() == 1
    }

    fn writes(&self) -> u64 {
        self.handle.metrics.total_writes()
    }

    /// Stops gracefully (the shutdown future resolves); returns how
    /// `run_with_client` ended.
    async fn stop(mut self) -> String {
        let _ = self.stop.take().unwrap().send(());
        let thread = self.thread.take().unwrap();
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap()
            .unwrap_or_default()
    }

    /// Kills abruptly: drops the operator's future and its runtime.
    async fn kill(mut self) {
        let _ = self.kill.take().unwrap().send(());
        let thread = self.thread.take().unwrap();
        let ended = tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
        assert!(ended.is_none(), "it had stopped by itself: {ended:?}");
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        // A failing test must not leave an operator running into the next.
        if let Some(kill) = self.kill.take() {
            let _ = kill.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{:05x}", nanos % 0xfffff)
}

async fn team_namespace(client: &Client, name: &str, tenant: &str) {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                ("fluxgate.dev/test-tenant".to_owned(), tenant.to_owned()),
                (testenv::TEST_LABEL.to_owned(), "true".to_owned()),
            ])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

async fn apply_defaults(client: &Client, tenant: &str) {
    let pd = json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "PlatformDefaults",
        "metadata": {"name": format!("{tenant}-defaults")},
        "spec": {
            "namespaceSelector": {"matchLabels": {"fluxgate.dev/test-tenant": tenant}},
            "allowedRepos": ["https://git.corp.example/{namespace}/*"],
            "allowedTargetNamespaces": ["{namespace}", "{namespace}-*"],
            "defaults": {
                "interval": "5m",
                "credentials": [{"repoPattern": "https://git.corp.example/**", "secretRef": {"name": CREDENTIALS}}],
                "reconciler": {
                    "image": "registry.corp.example/fluxgate/reconciler:v1",
                    "clusterRole": "fluxgate-team-reconciler",
                },
            },
        },
    });
    Api::<PlatformDefaults>::all(client.clone())
        .patch(
            &format!("{tenant}-defaults"),
            &PatchParams::apply("platform-team").force(),
            &Patch::Apply(&pd),
        )
        .await
        .unwrap();
}

async fn create_flux_config(client: &Client, ns: &str, name: &str) {
    let fc: FluxConfig = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"repo": format!("https://git.corp.example/{ns}/{name}.git")},
    }))
    .unwrap();
    Api::<FluxConfig>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &fc)
        .await
        .unwrap();
}

async fn wait_provisioned(client: &Client, ns: &str, name: &str, timeout: Duration) {
    let api: Api<FluxConfig> = Api::namespaced(client.clone(), ns);
    eventually(&format!("{ns}/{name} Provisioned"), timeout, || {
        let api = api.clone();
        async move {
            let fc = api.get(name).await.ok()?;
            let c = fc.condition(conditions::PROVISIONED)?;
            (c.status == "True" && c.observed_generation == fc.metadata.generation).then_some(())
        }
    })
    .await;
}

/// The chart's Lease (its RBAC lets the operator touch no other), deleted
/// so each test starts an election from scratch; the tests run one at a
/// time.
const LEASE: &str = "fluxgate-operator";

async fn fresh_lease(admin: &Client) -> &'static str {
    let leases = Api::<Lease>::namespaced(admin.clone(), PLATFORM_NS);
    match leases.delete(LEASE, &Default::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => panic!("cannot delete the Lease: {e}"),
    }
    LEASE
}

async fn lease(client: &Client, name: &str) -> Option<Lease> {
    Api::<Lease>::namespaced(client.clone(), PLATFORM_NS)
        .get_opt(name)
        .await
        .unwrap()
}

async fn lease_holder(client: &Client, name: &str) -> Option<String> {
    lease(client, name)
        .await
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

/// One write by the operator's ServiceAccount, from the audit log.
#[derive(Debug, Clone)]
// `verb` and `uri` are only read through Debug, in failure messages.
#[allow(dead_code)]
struct Write {
    /// Line in the audit log.
    line: usize,
    verb: String,
    resource: String,
    namespace: String,
    uri: String,
    credential: String,
}

/// Writes (create/update/patch/delete) by the operator's ServiceAccount,
/// from line `since` on; and the number of lines read.
fn operator_writes(since: usize) -> (usize, Vec<Write>) {
    let text = std::fs::read_to_string(control_plane().audit_log_path()).unwrap();
    let mut writes = Vec::new();
    let mut lines = 0;
    for (i, line) in text.lines().enumerate() {
        lines = i + 1;
        if i < since {
            continue;
        }
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let verb = event["verb"].as_str().unwrap_or_default();
        // A refused attempt (a 409 from racing for the Lease) changed nothing.
        let succeeded = event["responseStatus"]["code"]
            .as_u64()
            .is_some_and(|c| (200..300).contains(&c));
        if event["user"]["username"] != OPERATOR_USER
            || !["create", "update", "patch", "delete", "deletecollection"].contains(&verb)
            || !succeeded
        {
            continue;
        }
        writes.push(Write {
            line: i,
            verb: verb.to_owned(),
            resource: event["objectRef"]["resource"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            namespace: event["objectRef"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            uri: event["requestURI"].as_str().unwrap_or_default().to_owned(),
            credential: event["user"]["extra"][CREDENTIAL_ID][0]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        });
    }
    (lines, writes)
}

fn by(writes: &[Write], replica: &Replica) -> Vec<Write> {
    let id = format!("JTI={}", replica.token_id);
    writes
        .iter()
        .filter(|w| w.credential == id)
        .cloned()
        .collect()
}

/// Every object the operator provisioned in `namespaces`, with its
/// resourceVersion: a restart or takeover that rewrites anything shows.
async fn provisioned_objects(client: &Client, namespaces: &[String]) -> BTreeMap<String, String> {
    let lp = ListParams::default().labels("app.kubernetes.io/managed-by=fluxgate");
    let mut out = BTreeMap::new();
    for ns in namespaces {
        macro_rules! collect {
            ($ty:ty, $kind:literal) => {
                for o in Api::<$ty>::namespaced(client.clone(), ns)
                    .list(&lp)
                    .await
                    .unwrap()
                    .items
                {
                    out.insert(
                        format!("{} {ns}/{}", $kind, o.name_any()),
                        o.resource_version().unwrap_or_default(),
                    );
                }
            };
        }
        collect!(ServiceAccount, "ServiceAccount");
        collect!(Secret, "Secret");
        collect!(Role, "Role");
        collect!(RoleBinding, "RoleBinding");
        collect!(Deployment, "Deployment");
        for fc in Api::<FluxConfig>::namespaced(client.clone(), ns)
            .list(&Default::default())
            .await
            .unwrap()
            .items
        {
            out.insert(
                format!("FluxConfig {ns}/{}", fc.name_any()),
                fc.resource_version().unwrap_or_default(),
            );
        }
    }
    out
}

#[tokio::test]
async fn only_the_leader_writes_and_a_follower_takes_over_when_it_dies() {
    let _serial = SERIAL.lock().await;
    platform();
    let admin = control_plane().client().unwrap();
    let lease_name = fresh_lease(&admin).await;
    let tenant = unique("ha");
    let (before, after) = (format!("{tenant}-before"), format!("{tenant}-after"));
    team_namespace(&admin, &before, &tenant).await;
    team_namespace(&admin, &after, &tenant).await;
    apply_defaults(&admin, &tenant).await;

    // Two replicas race for the Lease.
    let (one, two) = tokio::join!(
        Replica::start("replica-one", lease_name),
        Replica::start("replica-two", lease_name)
    );
    let holder = eventually("a leader", Duration::from_secs(20), || {
        let admin = admin.clone();
        async move { lease_holder(&admin, lease_name).await }
    })
    .await;
    let (leader, follower) = if holder == one.identity {
        (one, two)
    } else {
        (two, one)
    };
    eventually("leader gauge", Duration::from_secs(10), || async {
        leader.is_leader().then_some(())
    })
    .await;
    eventually("follower standing by", Duration::from_secs(10), || async {
        follower
            .handle
            .standby
            .load(Ordering::Relaxed)
            .then_some(())
    })
    .await;

    // The leader provisions; the follower does nothing.
    create_flux_config(&admin, &before, "web").await;
    wait_provisioned(&admin, &before, "web", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(leader.writes() > 0);
    assert_eq!(follower.writes(), 0, "the follower wrote");
    assert_eq!(follower.handle.metrics.total_reconciles(), 0);
    assert!(!follower.is_leader());
    assert!(!follower.handle.ready.load(Ordering::Relaxed));
    assert_eq!(
        lease_holder(&admin, lease_name).await,
        Some(leader.identity.clone())
    );
    let (mark, writes) = operator_writes(0);
    assert!(
        !by(&writes, &leader).is_empty(),
        "the audit log does not tell the replicas apart: {:#?}",
        writes.first()
    );
    assert!(
        by(&writes, &follower).is_empty(),
        "the follower wrote: {:#?}",
        by(&writes, &follower)
    );
    let transitions_before = lease(&admin, lease_name)
        .await
        .and_then(|l| l.spec?.lease_transitions)
        .unwrap_or(0);
    let provisioned_before = provisioned_objects(&admin, std::slice::from_ref(&before)).await;
    // The dying leader's last renewal, as the Lease records it.
    let last_renewal = lease(&admin, lease_name)
        .await
        .and_then(|l| l.spec?.renew_time)
        .expect("the leader renews its Lease");

    // The leader dies without releasing the Lease; a team onboards meanwhile.
    let killed = Instant::now();
    let follower_identity = follower.identity.clone();
    leader.kill().await;
    create_flux_config(&admin, &after, "api").await;
    eventually(
        "takeover",
        Duration::from_secs(4 * LEASE_SECONDS),
        || async { follower.is_leader().then_some(()) },
    )
    .await;
    let takeover = killed.elapsed();
    wait_provisioned(&admin, &after, "api", Duration::from_secs(30)).await;
    let provisioned = killed.elapsed();
    eprintln!(
        "lease {LEASE_SECONDS}s: takeover {takeover:?} after the kill, \
         FluxConfig created after the kill provisioned at {provisioned:?}"
    );
    // Never a live lease: the follower acquired it only after the dead
    // leader's last renewal had expired (the Lease's own timestamps; the
    // takeover time above is a figure, not an assertion).
    let spec = lease(&admin, lease_name).await.unwrap().spec.unwrap();
    let acquired = spec.acquire_time.clone().expect("acquireTime on takeover");
    let expiry = last_renewal.0 + std::time::Duration::from_secs(LEASE_SECONDS);
    assert!(
        acquired.0 >= expiry,
        "acquired at {:?}, before the last renewal {:?} expired",
        acquired.0,
        last_renewal.0
    );
    assert_eq!(spec.holder_identity, Some(follower_identity));
    assert_eq!(spec.lease_transitions, Some(transitions_before + 1));

    // No double writes: until it acquired the Lease, the follower wrote
    // nothing; then it wrote for the new team only, and nothing for the
    // team the old leader had already provisioned.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, writes) = operator_writes(mark);
    let mine = by(&writes, &follower);
    let acquired = mine
        .iter()
        .find(|w| w.resource == "leases")
        .map(|w| w.line)
        .expect("the follower never wrote the Lease");
    let early: Vec<_> = mine
        .iter()
        .filter(|w| w.line < acquired && w.resource != "leases")
        .collect();
    assert!(early.is_empty(), "wrote before leading: {early:#?}");
    let rewritten: Vec<_> = mine.iter().filter(|w| w.namespace == before).collect();
    assert!(
        rewritten.is_empty(),
        "rewrote the old leader's work: {rewritten:#?}"
    );
    assert!(mine.iter().any(|w| w.namespace == after));
    assert_eq!(
        provisioned_objects(&admin, std::slice::from_ref(&before)).await,
        provisioned_before,
        "objects changed by the takeover"
    );

    // A graceful stop hands the Lease back.
    let ended = follower.stop().await;
    assert_eq!(ended, "Ok(())");
    assert_eq!(lease_holder(&admin, lease_name).await, None);
}

#[tokio::test]
async fn a_restarted_operator_writes_nothing() {
    let _serial = SERIAL.lock().await;
    platform();
    let admin = control_plane().client().unwrap();
    let lease_name = fresh_lease(&admin).await;
    let tenant = unique("restart");
    let namespaces: Vec<String> = (0..4).map(|i| format!("{tenant}-{i}")).collect();
    for ns in &namespaces {
        team_namespace(&admin, ns, &tenant).await;
    }
    // And a cross-namespace target, so RoleBindings outside the team
    // namespace are part of what must not churn.
    let target = format!("{}-staging", namespaces[0]);
    team_namespace(&admin, &target, &tenant).await;
    apply_defaults(&admin, &tenant).await;

    let first = Replica::start("restart-one", lease_name).await;
    let mut configs = Vec::new();
    for ns in &namespaces {
        create_flux_config(&admin, ns, "web").await;
        configs.push((ns.clone(), "web"));
    }
    create_flux_config(&admin, &namespaces[1], "api").await;
    configs.push((namespaces[1].clone(), "api"));
    for (ns, name) in &configs {
        wait_provisioned(&admin, ns, name, Duration::from_secs(30)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(first.writes() > 0);
    assert_eq!(first.stop().await, "Ok(())");
    assert_eq!(
        lease_holder(&admin, lease_name).await,
        None,
        "a graceful stop releases the Lease"
    );

    let mut all_namespaces = namespaces.clone();
    all_namespaces.push(target.clone());
    let before = provisioned_objects(&admin, &all_namespaces).await;
    let (mark, _) = operator_writes(0);

    let started = Instant::now();
    let second = Replica::start("restart-two", lease_name).await;
    eventually("second replica ready", Duration::from_secs(20), || async {
        second.handle.ready.load(Ordering::Relaxed).then_some(())
    })
    .await;
    eprintln!("restarted replica ready after {:?}", started.elapsed());
    eventually(
        "second replica reconciled every FluxConfig",
        Duration::from_secs(20),
        || async {
            (second.handle.metrics.total_reconciles() >= configs.len() as u64).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let (_, writes) = operator_writes(mark);
    let ours: Vec<_> = writes
        .iter()
        .filter(|w| all_namespaces.contains(&w.namespace))
        .collect();
    assert!(ours.is_empty(), "the restarted operator wrote: {ours:#?}");
    let non_lease: Vec<_> = by(&writes, &second)
        .into_iter()
        .filter(|w| w.resource != "leases")
        .collect();
    assert!(
        non_lease.is_empty(),
        "the restarted operator wrote: {non_lease:#?}"
    );
    assert_eq!(second.writes(), 0, "{}", second.handle.metrics.encode());
    let after = provisioned_objects(&admin, &all_namespaces).await;
    assert_eq!(after, before, "objects changed by the restart");
    // One reconciler per team namespace, nothing doubled.
    for ns in &namespaces {
        let deployments = after
            .keys()
            .filter(|k| k.starts_with(&format!("Deployment {ns}/")))
            .count();
        assert_eq!(deployments, 1, "{after:#?}");
    }
    assert_eq!(
        after
            .keys()
            .filter(|k| k.starts_with(&format!("RoleBinding {target}/")))
            .count(),
        1,
        "{after:#?}"
    );
    assert_eq!(second.stop().await, "Ok(())");
}

/// GET `path` on the admin router; status and body.
async fn admin_get(router: &axum::Router, path: &str) -> (u16, String) {
    use tower::ServiceExt as _;
    let request = http::Request::get(path)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn admin_endpoints_follow_the_running_operator() {
    let _serial = SERIAL.lock().await;
    platform();
    let admin = control_plane().client().unwrap();
    let tenant = unique("admin");
    let ns = format!("{tenant}-a");
    team_namespace(&admin, &ns, &tenant).await;
    apply_defaults(&admin, &tenant).await;

    let handle = Handle::new();
    let router = fluxgate_operator::metrics::admin_router(handle.health());
    assert_eq!(admin_get(&router, "/livez").await, (200, "ok".into()));
    assert_eq!(
        admin_get(&router, "/readyz").await,
        (503, "caches not synced".into())
    );

    let replica = Replica::start_with("admin-one", fresh_lease(&admin).await, handle).await;
    eventually("ready", Duration::from_secs(20), || async {
        (admin_get(&router, "/readyz").await == (200, "ok".to_owned())).then_some(())
    })
    .await;
    create_flux_config(&admin, &ns, "web").await;
    wait_provisioned(&admin, &ns, "web", Duration::from_secs(30)).await;
    let (status, metrics) = admin_get(&router, "/metrics").await;
    assert_eq!(status, 200);
    for needle in [
        "fluxgate_operator_leader 1",
        "fluxgate_operator_reconciles_in_flight ",
        "fluxgate_operator_api_writes_total{verb=\"apply\"}",
        "fluxgate_operator_api_writes_total{verb=\"status\"}",
        "fluxgate_operator_reconciles_total{result=\"ok\"}",
        "fluxgate_operator_reconcile_duration_seconds_count",
        "fluxgate_operator_unreadable_objects{kind=\"FluxConfig\"} 0",
        "# EOF",
    ] {
        assert!(metrics.contains(needle), "{needle} missing in\n{metrics}");
    }
    let teams: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fluxgate_operator_teams "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(teams >= 1, "{metrics}");
    // Idle: nothing in flight.
    eventually("nothing in flight", Duration::from_secs(10), || async {
        admin_get(&router, "/metrics")
            .await
            .1
            .contains("fluxgate_operator_reconciles_in_flight 0")
            .then_some(())
    })
    .await;

    assert_eq!(replica.stop().await, "Ok(())");
    assert_eq!(
        admin_get(&router, "/readyz").await.0,
        503,
        "a stopped operator is not ready"
    );
    assert!(
        admin_get(&router, "/metrics")
            .await
            .1
            .contains("fluxgate_operator_leader 0")
    );
}
