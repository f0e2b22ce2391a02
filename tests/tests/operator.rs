//! The operator against a real control plane (etcd, kube-apiserver,
//! kube-controller-manager), running with a token of the ServiceAccount that
//! the chart's operator RBAC (`deploy/charts/fluxgate/templates/rbac-operator.yaml`) binds: if that RBAC lacks a right, these
//! tests fail, so least privilege is proven rather than assumed.
//!
//! One operator serves the whole test binary (it watches the cluster, as in
//! production); each test works in its own team namespaces with its own
//! PlatformDefaults, selected by a label unique to the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fluxgate_crds::conditions;
use fluxgate_crds::{FluxConfig, PlatformDefaults};
use fluxgate_e2e::stack;
use fluxgate_e2e::testenv::{self, ControlPlane};
use fluxgate_e2e::wait::eventually;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const PLATFORM_NS: &str = "fluxgate-system";
const CREDENTIALS: &str = "git-corp-readonly";

struct Operator {
    metrics: Arc<fluxgate_operator::metrics::Metrics>,
}

fn control_plane() -> &'static ControlPlane {
    testenv::shared().unwrap()
}

/// Installs fluxgate's CRDs and RBAC, then starts the operator on its own
/// runtime (tests each have theirs) with the operator ServiceAccount's token.
fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let cp = control_plane();
                let admin = cp.client().unwrap();
                testenv::install_crds(&admin, fluxgate_crds::all_crds())
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
                namespaces
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
                let secrets: Api<Secret> = Api::namespaced(admin.clone(), PLATFORM_NS);
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": CREDENTIALS},
                    "stringData": {"username": "fluxgate", "password": "s3cret"},
                }))
                .unwrap();
                secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .unwrap();

                let token =
                    testenv::service_account_token(&admin, PLATFORM_NS, "fluxgate-operator")
                        .await
                        .unwrap();
                let client = cp.client_for_token(&token).unwrap();
                let config = <fluxgate_operator::Config as clap::Parser>::parse_from([
                    "fluxgate-operator",
                    "--platform-namespace",
                    PLATFORM_NS,
                    "--identity",
                    "operator-under-test",
                    "--lease-seconds",
                    "6",
                    "--log-format",
                    "text",
                    // As the chart runs it: each reconciler fenced in by a
                    // NetworkPolicy.
                    "--network-policy",
                    "true",
                    "--network-policy-api-server-cidr",
                    "10.96.0.1/32",
                    "--network-policy-git-cidr",
                    "192.0.2.0/24",
                ]);
                let handle = fluxgate_operator::Handle::new();
                tx.send(handle.metrics.clone()).unwrap();
                let result = fluxgate_operator::run_with_client(
                    client,
                    config,
                    handle,
                    futures::future::pending(),
                )
                .await;
                panic!("operator stopped: {result:?}");
            });
        });
        Operator {
            metrics: rx.recv_timeout(Duration::from_secs(120)).unwrap(),
        }
    })
}

/// A team namespace labelled for this test's PlatformDefaults.
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

fn defaults(tenant: &str, image: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "namespaceSelector": {"matchLabels": {"fluxgate.dev/test-tenant": tenant}},
        "allowedRepos": ["https://git.corp.example/{namespace}/*"],
        "allowedTargetNamespaces": ["{namespace}", "{namespace}-*"],
        "defaults": {
            "interval": "5m",
            "credentials": [{"repoPattern": "https://git.corp.example/**", "secretRef": {"name": CREDENTIALS}}],
            "reconciler": {
                "image": image,
                "clusterRole": "fluxgate-team-reconciler",
                "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
            },
        },
        "limits": {"minInterval": "1m"},
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "PlatformDefaults",
        "metadata": {"name": format!("{tenant}-defaults")},
        "spec": spec,
    })
}

async fn apply_defaults(client: &Client, pd: &serde_json::Value) {
    let api: Api<PlatformDefaults> = Api::all(client.clone());
    api.patch(
        pd["metadata"]["name"].as_str().unwrap(),
        &PatchParams::apply("platform-team").force(),
        &Patch::Apply(pd),
    )
    .await
    .unwrap();
}

async fn create_flux_config(client: &Client, ns: &str, name: &str, spec: serde_json::Value) {
    let fc: FluxConfig = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .unwrap();
    Api::<FluxConfig>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &fc)
        .await
        .unwrap();
}

async fn wait_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
    status: &str,
) -> FluxConfig {
    let api: Api<FluxConfig> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("{ns}/{name} {type_}={status}"),
        Duration::from_secs(30),
        || {
            let api = api.clone();
            async move {
                let fc = api.get(name).await.ok()?;
                let c = fc.condition(type_)?;
                (c.status == status && c.observed_generation == fc.metadata.generation)
                    .then_some(fc)
            }
        },
    )
    .await
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{:05x}", nanos % 0xfffff)
}

async fn exists<K>(client: &Client, ns: &str, name: &str) -> bool
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
        .is_some()
}

/// Can a client create a ConfigMap in `ns`?
async fn can_create_configmap(client: &Client, ns: &str) -> Result<(), u16> {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(unique("probe")),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    };
    match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s.code),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn provisions_a_scoped_reconciler_per_team_namespace() {
    operator();
    let admin = control_plane().client().unwrap();
    let tenant = unique("prov");
    let (a, b) = (format!("{tenant}-a"), format!("{tenant}-b"));
    let a_staging = format!("{a}-staging");
    for ns in [&a, &b, &a_staging] {
        team_namespace(&admin, ns, &tenant).await;
    }
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({}),
        ),
    )
    .await;
    create_flux_config(
        &admin,
        &a,
        "web",
        json!({"repo": format!("https://git.corp.example/{a}/web.git")}),
    )
    .await;
    create_flux_config(
        &admin,
        &b,
        "api",
        json!({"repo": format!("https://git.corp.example/{b}/api.git"), "interval": "2m"}),
    )
    .await;

    let fc = wait_condition(&admin, &a, "web", conditions::PROVISIONED, "True").await;
    wait_condition(&admin, &b, "api", conditions::PROVISIONED, "True").await;
    assert!(fc.condition_is_true(conditions::ACCEPTED));

    // The effective config says where each value came from.
    let status = fc.status.unwrap();
    let effective = status.effective.unwrap();
    assert_eq!(effective.interval.value, "5m");
    assert_eq!(
        effective.interval.source,
        format!("PlatformDefaults/{tenant}-defaults")
    );
    assert_eq!(effective.repo.source, "spec");
    assert_eq!(effective.credentials_secret.unwrap().value, CREDENTIALS);
    let reconciler = status.reconciler.unwrap();
    assert_eq!(
        reconciler.deployment.as_deref(),
        Some("fluxgate-reconciler")
    );
    // The RoleBinding in the other allowed namespace is in the inventory.
    assert!(
        reconciler
            .objects
            .iter()
            .any(|o| o.kind == "RoleBinding" && o.namespace.as_deref() == Some(a_staging.as_str())),
        "{:?}",
        reconciler.objects
    );

    // Exactly the expected objects.
    for ns in [&a, &b] {
        assert!(exists::<ServiceAccount>(&admin, ns, "fluxgate-reconciler").await);
        assert!(exists::<Role>(&admin, ns, "fluxgate-reconciler-status").await);
        assert!(exists::<Secret>(&admin, ns, &format!("fluxgate-git-{CREDENTIALS}")).await);
    }
    let deployment = Api::<Deployment>::namespaced(admin.clone(), &a)
        .get("fluxgate-reconciler")
        .await
        .unwrap();
    let pod = deployment.spec.template.spec.unwrap();
    let container = &pod.containers[0];
    assert_eq!(
        container.image.as_deref(),
        Some("registry.corp.example/fluxgate/reconciler:v1")
    );
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some("fluxgate-reconciler")
    );
    let sc = container.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    // Fenced in: only DNS, the API server and the Git hosts.
    let policy = Api::<NetworkPolicy>::namespaced(admin.clone(), &a)
        .get("fluxgate-reconciler")
        .await
        .unwrap();
    let spec = policy.spec.unwrap();
    assert_eq!(
        spec.pod_selector.and_then(|s| s.match_labels),
        deployment.spec.selector.match_labels.clone()
    );
    let egress = serde_json::to_value(spec.egress.unwrap()).unwrap();
    assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], "10.96.0.1/32");
    assert_eq!(egress[2]["to"][0]["ipBlock"]["cidr"], "192.0.2.0/24");
    let rbs: Vec<String> = Api::<RoleBinding>::namespaced(admin.clone(), &a_staging)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|rb| rb.name_any())
        .collect();
    assert_eq!(rbs.len(), 1, "{rbs:?}");
    let copied = Api::<Secret>::namespaced(admin.clone(), &a)
        .get(&format!("fluxgate-git-{CREDENTIALS}"))
        .await
        .unwrap();
    assert_eq!(copied.data.unwrap()["password"].0, b"s3cret");

    // RBAC, as the API server enforces it for the reconciler's token.
    let token = testenv::service_account_token(&admin, &a, "fluxgate-reconciler")
        .await
        .unwrap();
    let team_a = control_plane().client_for_token(&token).unwrap();
    assert_eq!(can_create_configmap(&team_a, &a).await, Ok(()));
    assert_eq!(can_create_configmap(&team_a, &a_staging).await, Ok(()));
    assert_eq!(can_create_configmap(&team_a, &b).await, Err(403));
    assert_eq!(can_create_configmap(&team_a, "kube-system").await, Err(403));
    assert_eq!(can_create_configmap(&team_a, PLATFORM_NS).await, Err(403));
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(unique("escalate")),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match Api::<Namespace>::all(team_a.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403),
        other => panic!("a team reconciler created a namespace: {other:?}"),
    }
    // It may write its own FluxConfig's status, not another team's.
    let own: Api<FluxConfig> = Api::namespaced(team_a.clone(), &a);
    assert!(own.get_status("web").await.is_ok());
    let other: Api<FluxConfig> = Api::namespaced(team_a.clone(), &b);
    assert!(matches!(other.get("api").await, Err(kube::Error::Api(s)) if s.code == 403));
}

#[tokio::test]
async fn drift_in_provisioned_objects_is_reverted_on_the_event() {
    operator();
    let admin = control_plane().client().unwrap();
    let tenant = unique("drift");
    let a = format!("{tenant}-a");
    let a_extra = format!("{a}-extra");
    team_namespace(&admin, &a, &tenant).await;
    team_namespace(&admin, &a_extra, &tenant).await;
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({}),
        ),
    )
    .await;
    create_flux_config(
        &admin,
        &a,
        "web",
        json!({"repo": format!("https://git.corp.example/{a}/web.git")}),
    )
    .await;
    wait_condition(&admin, &a, "web", conditions::PROVISIONED, "True").await;

    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &a);
    // Deleted: recreated.
    deployments
        .delete("fluxgate-reconciler", &DeleteParams::default())
        .await
        .unwrap();
    let started = Instant::now();
    eventually("deployment recreated", Duration::from_secs(15), || {
        let d = deployments.clone();
        async move {
            let dep = d.get_opt("fluxgate-reconciler").await.ok()??;
            dep.metadata.deletion_timestamp.is_none().then_some(())
        }
    })
    .await;
    eprintln!(
        "deployment recreated {:?} after deletion",
        started.elapsed()
    );

    // Edited: reverted.
    let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "reconciler", "image": "docker.io/evil/miner:latest"}]}}}});
    deployments
        .patch(
            "fluxgate-reconciler",
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
        .unwrap();
    eventually("image reverted", Duration::from_secs(15), || {
        let d = deployments.clone();
        async move {
            let dep = d.get("fluxgate-reconciler").await.ok()?;
            let image = dep.spec.template.spec?.containers.first()?.image.clone()?;
            (image == "registry.corp.example/fluxgate/reconciler:v1").then_some(())
        }
    })
    .await;

    // The NetworkPolicy, deleted: restored.
    let policies: Api<NetworkPolicy> = Api::namespaced(admin.clone(), &a);
    policies
        .delete("fluxgate-reconciler", &DeleteParams::default())
        .await
        .unwrap();
    eventually("NetworkPolicy restored", Duration::from_secs(15), || {
        let policies = policies.clone();
        async move {
            policies
                .get_opt("fluxgate-reconciler")
                .await
                .ok()?
                .map(|_| ())
        }
    })
    .await;

    // A RoleBinding in another namespace (no owner reference there): restored.
    let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), &a_extra);
    let name = rbs.list(&Default::default()).await.unwrap().items[0].name_any();
    rbs.delete(&name, &DeleteParams::default()).await.unwrap();
    eventually(
        "cross-namespace RoleBinding restored",
        Duration::from_secs(15),
        || {
            let rbs = rbs.clone();
            let name = name.clone();
            async move { rbs.get_opt(&name).await.ok()?.map(|_| ()) }
        },
    )
    .await;
}

/// Counts writes (create/update/patch/delete) by the operator's identity
/// in the audit log that concern `namespaces`.
fn operator_writes_in_audit_log(namespaces: &[&str], since_line: usize) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(control_plane().audit_log_path()).unwrap();
    let mut writes = Vec::new();
    for line in text.lines().skip(since_line) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let user = event["user"]["username"].as_str().unwrap_or_default();
        let verb = event["verb"].as_str().unwrap_or_default();
        let ns = event["objectRef"]["namespace"].as_str().unwrap_or_default();
        if user == "system:serviceaccount:fluxgate-system:fluxgate-operator"
            && ["create", "update", "patch", "delete", "deletecollection"].contains(&verb)
            && namespaces.contains(&ns)
        {
            writes.push(format!(
                "{verb} {}",
                event["requestURI"].as_str().unwrap_or_default()
            ));
        }
    }
    (text.lines().count(), writes)
}

#[tokio::test]
async fn steady_state_writes_nothing() {
    operator();
    let admin = control_plane().client().unwrap();
    let tenant = unique("steady");
    let a = format!("{tenant}-a");
    team_namespace(&admin, &a, &tenant).await;
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({}),
        ),
    )
    .await;
    create_flux_config(
        &admin,
        &a,
        "web",
        json!({"repo": format!("https://git.corp.example/{a}/web.git")}),
    )
    .await;
    wait_condition(&admin, &a, "web", conditions::PROVISIONED, "True").await;
    // Let the last events settle, then force reconciles without any change:
    // touching the namespace and the FluxConfig's labels re-triggers them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (mark, _) = operator_writes_in_audit_log(&[], 0);
    let before = operator().metrics.total_writes();
    let reconciles_before = operator().metrics.total_reconciles();
    for i in 0..3 {
        let touch =
            json!({"metadata": {"annotations": {"test.fluxgate.dev/touch": i.to_string()}}});
        Api::<Namespace>::all(admin.clone())
            .patch(&a, &PatchParams::default(), &Patch::Merge(&touch))
            .await
            .unwrap();
        Api::<FluxConfig>::namespaced(admin.clone(), &a)
            .patch("web", &PatchParams::default(), &Patch::Merge(&touch))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, writes) = operator_writes_in_audit_log(&[a.as_str()], mark);
    assert!(
        writes.is_empty(),
        "the operator wrote in a steady state: {writes:#?}"
    );
    // Not vacuous: the touches did make it reconcile.
    let reconciles = operator().metrics.total_reconciles() - reconciles_before;
    assert!(
        reconciles >= 3,
        "only {reconciles} reconciles during the window"
    );
    eprintln!(
        "operator writes (all tests) during the steady-state window: {}",
        operator().metrics.total_writes() - before
    );
}

#[tokio::test]
async fn lifecycle_follows_flux_configs_and_cleans_up_everywhere() {
    operator();
    let admin = control_plane().client().unwrap();
    let tenant = unique("life");
    let a = format!("{tenant}-a");
    let a_other = format!("{a}-other");
    team_namespace(&admin, &a, &tenant).await;
    team_namespace(&admin, &a_other, &tenant).await;
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({}),
        ),
    )
    .await;
    create_flux_config(
        &admin,
        &a,
        "one",
        json!({"repo": format!("https://git.corp.example/{a}/one.git")}),
    )
    .await;
    create_flux_config(
        &admin,
        &a,
        "two",
        json!({"repo": format!("https://git.corp.example/{a}/two.git")}),
    )
    .await;
    wait_condition(&admin, &a, "one", conditions::PROVISIONED, "True").await;
    wait_condition(&admin, &a, "two", conditions::PROVISIONED, "True").await;

    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), &a);
    let env_list = |d: Deployment| -> Option<String> {
        d.spec
            .template
            .spec?
            .containers
            .first()?
            .env
            .clone()?
            .into_iter()
            .find(|e| e.name == "FLUXGATE_FLUXCONFIGS")?
            .value
    };
    // One reconciler serves both.
    let list =
        eventually(
            "deployment lists both configs",
            Duration::from_secs(15),
            || {
                let d = deployments.clone();
                async move {
                    env_list(d.get("fluxgate-reconciler").await.ok()?).filter(|l| l == "one,two")
                }
            },
        )
        .await;
    assert_eq!(list, "one,two");

    // Deleting one: the reconciler follows.
    let fcs: Api<FluxConfig> = Api::namespaced(admin.clone(), &a);
    fcs.delete("one", &DeleteParams::default()).await.unwrap();
    eventually("deployment lists only two", Duration::from_secs(15), || {
        let d = deployments.clone();
        async move { env_list(d.get("fluxgate-reconciler").await.ok()?).filter(|l| l == "two") }
    })
    .await;
    eventually(
        "FluxConfig one gone (finalizer removed)",
        Duration::from_secs(15),
        || {
            let fcs = fcs.clone();
            async move { fcs.get_opt("one").await.ok()?.is_none().then_some(()) }
        },
    )
    .await;

    // Deleting the last: everything made for the namespace goes, also in
    // the other namespace (where garbage collection cannot reach).
    fcs.delete("two", &DeleteParams::default()).await.unwrap();
    let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), &a_other);
    eventually(
        "cross-namespace RoleBinding removed",
        Duration::from_secs(20),
        || {
            let rbs = rbs.clone();
            async move {
                rbs.list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                    .then_some(())
            }
        },
    )
    .await;
    eventually("deployment removed", Duration::from_secs(30), || {
        let d = deployments.clone();
        async move {
            d.get_opt("fluxgate-reconciler")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    eventually("service account removed", Duration::from_secs(30), || {
        let admin = admin.clone();
        let a = a.clone();
        async move { (!exists::<ServiceAccount>(&admin, &a, "fluxgate-reconciler").await).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn platform_defaults_changes_roll_out_and_revoke() {
    operator();
    let admin = control_plane().client().unwrap();
    let tenant = unique("pdchg");
    let a = format!("{tenant}-a");
    let b = format!("{tenant}-b");
    team_namespace(&admin, &a, &tenant).await;
    team_namespace(&admin, &b, &tenant).await;
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({}),
        ),
    )
    .await;
    create_flux_config(
        &admin,
        &a,
        "web",
        json!({"repo": format!("https://git.corp.example/{a}/web.git")}),
    )
    .await;
    create_flux_config(
        &admin,
        &b,
        "web",
        json!({"repo": format!("https://git.corp.example/{b}/web.git")}),
    )
    .await;
    wait_condition(&admin, &a, "web", conditions::PROVISIONED, "True").await;
    wait_condition(&admin, &b, "web", conditions::PROVISIONED, "True").await;

    // A new reconciler image and the platform's file and size limits roll
    // out to every team: the limits become the reconciler's flags and show
    // in the effective configuration.
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v2",
            json!({"limits": {"minInterval": "1m", "maxFiles": 300, "maxRepoBytes": 1_048_576}}),
        ),
    )
    .await;
    for ns in [&a, &b] {
        let deployments: Api<Deployment> = Api::namespaced(admin.clone(), ns);
        eventually(&format!("{ns} runs v2"), Duration::from_secs(20), || {
            let d = deployments.clone();
            async move {
                let dep = d.get("fluxgate-reconciler").await.ok()?;
                let container = dep.spec.template.spec?.containers.into_iter().next()?;
                let args = container.args.unwrap_or_default();
                (container.image?.ends_with(":v2")
                    && args.contains(&"--max-files=300".to_owned())
                    && args.contains(&"--max-repo-bytes=1048576".to_owned()))
                .then_some(())
            }
        })
        .await;
        let fcs: Api<FluxConfig> = Api::namespaced(admin.clone(), ns);
        eventually(
            &format!("{ns} shows the limits"),
            Duration::from_secs(20),
            || {
                let fcs = fcs.clone();
                async move {
                    let effective = fcs.get("web").await.ok()?.status?.effective?;
                    (effective.reconciler_max_files.map(|l| l.value) == Some(300)
                        && effective.reconciler_max_repo_bytes.map(|l| l.value) == Some(1_048_576))
                    .then_some(())
                }
            },
        )
        .await;
    }

    // Narrowing the repo allow-list to team b revokes team a: Stalled with
    // the reason, and its reconciler rights are gone.
    let narrowed = defaults(
        &tenant,
        "registry.corp.example/fluxgate/reconciler:v2",
        json!({"allowedRepos": [format!("https://git.corp.example/{b}/*")]}),
    );
    apply_defaults(&admin, &narrowed).await;
    let fc = wait_condition(&admin, &a, "web", conditions::STALLED, "True").await;
    let message = &fc.condition(conditions::STALLED).unwrap().message;
    assert!(
        message.contains(&format!(
            "spec.repo \"https://git.corp.example/{a}/web.git\" is not allowed for namespace {a}"
        )),
        "{message}"
    );
    assert!(
        fc.condition(conditions::ACCEPTED)
            .is_some_and(|c| c.status == "False")
    );
    let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), &a);
    eventually(
        "team a's RoleBindings revoked",
        Duration::from_secs(20),
        || {
            let rbs = rbs.clone();
            async move {
                rbs.list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                    .then_some(())
            }
        },
    )
    .await;
    // Team b is untouched.
    let b_fc = Api::<FluxConfig>::namespaced(admin.clone(), &b)
        .get("web")
        .await
        .unwrap();
    assert!(b_fc.condition_is_true(conditions::PROVISIONED));

    // Restoring the pattern clears Stalled.
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v2",
            json!({}),
        ),
    )
    .await;
    let fc = wait_condition(&admin, &a, "web", conditions::PROVISIONED, "True").await;
    assert!(
        fc.condition(conditions::STALLED).is_none(),
        "{:?}",
        fc.status
    );
}

#[tokio::test]
async fn a_violating_config_admitted_without_the_webhook_is_stalled_with_the_webhooks_message() {
    operator();
    let admin = control_plane().client().unwrap();
    let tenant = unique("defence");
    let a = format!("{tenant}-a");
    team_namespace(&admin, &a, &tenant).await;
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({}),
        ),
    )
    .await;
    // No webhook runs in this test binary: the API server admits it.
    create_flux_config(
        &admin,
        &a,
        "evil",
        json!({"repo": "https://github.com/evil/x.git", "targetNamespace": "kube-system"}),
    )
    .await;
    let fc = wait_condition(&admin, &a, "evil", conditions::STALLED, "True").await;
    let message = fc.condition(conditions::STALLED).unwrap().message.clone();
    assert_eq!(
        message,
        format!(
            "FluxConfig {a}/evil: spec.repo \"https://github.com/evil/x.git\" is not allowed for namespace {a} (PlatformDefaults \"{tenant}-defaults\"); allowed: https://git.corp.example/{a}/*; spec.targetNamespace \"kube-system\" is a protected namespace (built-in pattern kube-*); allowed: {a}, {a}-*"
        )
    );
    assert!(
        fc.condition(conditions::READY)
            .is_some_and(|c| c.status == "False")
    );
    // No rights were granted for it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!exists::<Deployment>(&admin, &a, "fluxgate-reconciler").await);
    let rbs = Api::<RoleBinding>::namespaced(admin.clone(), "kube-system")
        .list(&Default::default())
        .await
        .unwrap();
    assert!(rbs.items.iter().all(|rb| !rb.name_any().contains(&a)));
}

#[tokio::test]
async fn deleting_a_team_namespace_leaves_nothing_behind() {
    operator();
    let admin = control_plane().client().unwrap();
    let tenant = unique("nsdel");
    let a = format!("{tenant}-a");
    let a_other = format!("{a}-other");
    team_namespace(&admin, &a, &tenant).await;
    team_namespace(&admin, &a_other, &tenant).await;
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({}),
        ),
    )
    .await;
    create_flux_config(
        &admin,
        &a,
        "web",
        json!({"repo": format!("https://git.corp.example/{a}/web.git")}),
    )
    .await;
    wait_condition(&admin, &a, "web", conditions::PROVISIONED, "True").await;
    let rbs: Api<RoleBinding> = Api::namespaced(admin.clone(), &a_other);
    assert_eq!(rbs.list(&Default::default()).await.unwrap().items.len(), 1);

    Api::<Namespace>::all(admin.clone())
        .delete(&a, &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "RoleBinding in the other namespace removed",
        Duration::from_secs(30),
        || {
            let rbs = rbs.clone();
            async move {
                rbs.list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                    .then_some(())
            }
        },
    )
    .await;
    let namespaces: Api<Namespace> = Api::all(admin.clone());
    eventually(
        "team namespace fully deleted",
        Duration::from_secs(60),
        || {
            let namespaces = namespaces.clone();
            let a = a.clone();
            async move { namespaces.get_opt(&a).await.ok()?.is_none().then_some(()) }
        },
    )
    .await;
}

/// Events about `name` in `ns` from the events.k8s.io/v1 API.
async fn events_about(
    client: &Client,
    ns: &str,
    name: &str,
) -> Vec<k8s_openapi::api::events::v1::Event> {
    Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}

/// Waits for an event about `name` with `reason`, and returns it.
async fn wait_event(
    client: &Client,
    ns: &str,
    name: &str,
    reason: &str,
) -> k8s_openapi::api::events::v1::Event {
    eventually(
        &format!("event {reason} about {ns}/{name}"),
        Duration::from_secs(20),
        || async {
            events_about(client, ns, name)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(reason))
        },
    )
    .await
}

#[tokio::test]
async fn events_show_provisioning_and_policy_violations() {
    operator();
    let admin = control_plane().client().unwrap();
    let tenant = unique("events");
    let a = format!("{tenant}-a");
    team_namespace(&admin, &a, &tenant).await;
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({}),
        ),
    )
    .await;
    create_flux_config(
        &admin,
        &a,
        "web",
        json!({"repo": format!("https://git.corp.example/{a}/web.git")}),
    )
    .await;
    create_flux_config(
        &admin,
        &a,
        "evil",
        json!({"repo": "https://github.com/evil/x.git"}),
    )
    .await;
    wait_condition(&admin, &a, "web", conditions::PROVISIONED, "True").await;
    wait_condition(&admin, &a, "evil", conditions::STALLED, "True").await;

    let provisioned = wait_event(&admin, &a, "web", "Provisioned").await;
    assert_eq!(provisioned.type_.as_deref(), Some("Normal"));
    assert_eq!(
        provisioned.reporting_controller.as_deref(),
        Some("fluxgate-operator")
    );
    assert_eq!(provisioned.action.as_deref(), Some("Provision"));
    assert_eq!(
        provisioned.note.as_deref(),
        Some("reconciler fluxgate-reconciler provisioned")
    );
    let violation = wait_event(&admin, &a, "evil", "PolicyViolation").await;
    assert_eq!(violation.type_.as_deref(), Some("Warning"));
    assert_eq!(
        violation.reporting_controller.as_deref(),
        Some("fluxgate-operator")
    );
    let note = violation.note.unwrap_or_default();
    assert!(
        note.contains("spec.repo \"https://github.com/evil/x.git\" is not allowed"),
        "{note}"
    );
    // One event per transition, not one per reconcile.
    assert_eq!(events_about(&admin, &a, "web").await.len(), 1);

    // What a team member sees.
    let describe = |name: &str| {
        let output = control_plane()
            .kubectl(["describe", "fluxconfig", name, "-n", a.as_str()])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let web = describe("web");
    let events = &web[web.find("Events:").expect("no events section")..];
    assert!(
        events.contains("Normal")
            && events.contains("Provisioned")
            && events.contains("fluxgate-operator")
            && events.contains("reconciler fluxgate-reconciler provisioned"),
        "{web}"
    );
    let evil = describe("evil");
    let events = &evil[evil.find("Events:").expect("no events section")..];
    assert!(
        events.contains("Warning")
            && events.contains("PolicyViolation")
            && events.contains("fluxgate-operator"),
        "{evil}"
    );
}

/// A `date-time` the CRD schema admits (Kubernetes accepts any number of
/// fractional digits) but the Rust `Time` type rejects (nine at most).
const UNREADABLE_TIME: &str = "2024-01-01T00:00:00.1234567891234Z";

/// Writes a `Ready` condition into a FluxConfig's status as the team's own
/// reconciler (whose Role allows exactly that), with `time` as its
/// `lastTransitionTime`. Untyped: the answer may not read as a FluxConfig.
async fn reconciler_writes_status(team: &Client, ns: &str, name: &str, time: &str) {
    let ar = kube::api::ApiResource::erase::<FluxConfig>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(team.clone(), ns, &ar);
    let patch = json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "status": {"conditions": [{
            "type": "Ready", "status": "True", "reason": "Synced",
            "message": "applied", "lastTransitionTime": time,
        }]},
    });
    api.patch_status(
        name,
        &PatchParams::apply("fluxgate.dev/reconciler").force(),
        &Patch::Apply(&patch),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unreadable_flux_config_holds_its_namespace_and_never_stops_the_watch() {
    operator();
    let admin = control_plane().client().unwrap();
    let tenant = unique("unread");
    let (a, b) = (format!("{tenant}-a"), format!("{tenant}-b"));
    team_namespace(&admin, &a, &tenant).await;
    team_namespace(&admin, &b, &tenant).await;
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({}),
        ),
    )
    .await;
    create_flux_config(
        &admin,
        &a,
        "web",
        json!({"repo": format!("https://git.corp.example/{a}/web.git")}),
    )
    .await;
    wait_condition(&admin, &a, "web", conditions::PROVISIONED, "True").await;

    // Team a's reconciler writes a status the API server admits and the
    // operator's types cannot read.
    let token = testenv::service_account_token(&admin, &a, "fluxgate-reconciler")
        .await
        .unwrap();
    let team_a = control_plane().client_for_token(&token).unwrap();
    reconciler_writes_status(&team_a, &a, "web", UNREADABLE_TIME).await;
    let typed: Api<FluxConfig> = Api::namespaced(admin.clone(), &a);
    assert!(
        matches!(typed.get("web").await, Err(kube::Error::SerdeError(_))),
        "the premise: a typed read of the stored object fails"
    );

    // It is reported on the object, once.
    let event = wait_event(&admin, &a, "web", "InvalidObject").await;
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.reporting_controller.as_deref(),
        Some("fluxgate-operator")
    );
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("cannot read this FluxConfig") && note.contains("nothing in its namespace"),
        "{note}"
    );
    assert!(operator().metrics.unreadable("FluxConfig") >= 1);

    // The watch goes on: a team onboarding afterwards is provisioned.
    create_flux_config(
        &admin,
        &b,
        "api",
        json!({"repo": format!("https://git.corp.example/{b}/api.git")}),
    )
    .await;
    wait_condition(&admin, &b, "api", conditions::PROVISIONED, "True").await;

    // Team a's namespace is held, not torn down: its reconciler keeps
    // running with its rights, so it can repair its own status.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(exists::<Deployment>(&admin, &a, "fluxgate-reconciler").await);
    assert!(exists::<ServiceAccount>(&admin, &a, "fluxgate-reconciler").await);
    reconciler_writes_status(&team_a, &a, "web", "2024-01-01T00:00:00.123456789Z").await;
    eventually(
        "web readable and still provisioned",
        Duration::from_secs(20),
        || {
            let typed = typed.clone();
            async move {
                let fc = typed.get("web").await.ok()?;
                fc.condition_is_true(conditions::PROVISIONED).then_some(())
            }
        },
    )
    .await;
    let reports: Vec<_> = events_about(&admin, &a, "web")
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("InvalidObject"))
        .collect();
    assert!(
        reports.len() == 1 && reports[0].series.is_none(),
        "reported more than once: {reports:#?}"
    );

    // Deleting an unreadable FluxConfig still cleans up (the finalizer goes).
    reconciler_writes_status(&team_a, &a, "web", UNREADABLE_TIME).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Untyped: the answer holds the object, which does not read.
    Api::<DynamicObject>::namespaced_with(
        admin.clone(),
        &a,
        &kube::api::ApiResource::erase::<FluxConfig>(&()),
    )
    .delete("web", &DeleteParams::default())
    .await
    .unwrap();
    eventually("web gone", Duration::from_secs(30), || {
        let typed = typed.clone();
        async move {
            match typed.get_opt("web").await {
                Ok(None) => Some(()),
                _ => None,
            }
        }
    })
    .await;
    eventually("team a's reconciler removed", Duration::from_secs(30), || {
        let admin = admin.clone();
        let a = a.clone();
        async move { (!exists::<Deployment>(&admin, &a, "fluxgate-reconciler").await).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn the_platform_namespaces_own_flux_configs_are_left_to_the_platform_sync() {
    operator();
    let admin = control_plane().client().unwrap();
    // The platform sync's own FluxConfig: configuration and status of the
    // reconciler in cluster mode, never a team config.
    let name = unique("platform");
    create_flux_config(
        &admin,
        PLATFORM_NS,
        &name,
        json!({"repo": "https://git.corp.example/platform/config.git"}),
    )
    .await;
    // Proof the operator is busy meanwhile: a team created after it is provisioned.
    let tenant = unique("skip");
    let a = format!("{tenant}-a");
    team_namespace(&admin, &a, &tenant).await;
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({}),
        ),
    )
    .await;
    create_flux_config(
        &admin,
        &a,
        "web",
        json!({"repo": format!("https://git.corp.example/{a}/web.git")}),
    )
    .await;
    wait_condition(&admin, &a, "web", conditions::PROVISIONED, "True").await;
    let fc = Api::<FluxConfig>::namespaced(admin.clone(), PLATFORM_NS)
        .get(&name)
        .await
        .unwrap();
    assert!(fc.finalizers().is_empty(), "{:?}", fc.metadata.finalizers);
    assert!(fc.status.is_none(), "{:?}", fc.status);
    assert!(!exists::<Deployment>(&admin, PLATFORM_NS, "fluxgate-reconciler").await);
}

#[tokio::test]
async fn platform_defaults_report_whether_they_are_valid_and_what_they_select() {
    operator();
    let admin = control_plane().client().unwrap();
    let tenant = unique("pdstatus");
    let (a, b) = (format!("{tenant}-a"), format!("{tenant}-b"));
    for ns in [&a, &b] {
        team_namespace(&admin, ns, &tenant).await;
    }
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({}),
        ),
    )
    .await;
    for ns in [&a, &b] {
        create_flux_config(
            &admin,
            ns,
            "web",
            json!({"repo": format!("https://git.corp.example/{ns}/web.git")}),
        )
        .await;
    }
    let pds: Api<PlatformDefaults> = Api::all(admin.clone());
    let name = format!("{tenant}-defaults");
    let status = eventually("Ready with two namespaces", Duration::from_secs(30), || {
        let (pds, name) = (pds.clone(), name.clone());
        async move {
            let pd = pds.get(&name).await.ok()?;
            let status = pd.status.clone()?;
            (pd.condition_is_true(conditions::READY)
                && status.matched_namespaces == Some(2)
                && status.observed_generation == pd.metadata.generation)
                .then_some(status)
        }
    })
    .await;
    assert_eq!(
        status.conditions[0].message,
        "applies to 2 namespace(s) with FluxConfigs"
    );

    // Written while no webhook checks it: the operator says what is wrong.
    apply_defaults(
        &admin,
        &defaults(
            &tenant,
            "registry.corp.example/fluxgate/reconciler:v1",
            json!({"limits": {"minInterval": "10m"}, "defaults": {"interval": "1m"}}),
        ),
    )
    .await;
    let pd = eventually("Stalled", Duration::from_secs(30), || {
        let (pds, name) = (pds.clone(), name.clone());
        async move {
            let pd = pds.get(&name).await.ok()?;
            pd.condition_is_true(conditions::STALLED).then_some(pd)
        }
    })
    .await;
    let ready = pd.condition(conditions::READY).unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .contains("is shorter than this object's spec.limits.minInterval"),
        "{}",
        ready.message
    );
    // kubectl shows it.
    let out = control_plane()
        .kubectl(["get", "platformdefaults", &name])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.lines().nth(1).is_some_and(|l| l.contains("False")),
        "{table}"
    );
}
