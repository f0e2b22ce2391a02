//! Onboarding many teams at once, and checking what the operator made of
//! them: the shape `bench/src/bin/operator-bench.rs` and
//! `tests/tests/operator.rs` use (a PlatformDefaults selecting labelled
//! namespaces, the Git credentials Secret in the platform namespace, a
//! namespace and a FluxConfig per team), as helpers for fault tests.
//!
//! - [`install_platform`] applies the PlatformDefaults and the credentials
//!   Secret; [`onboard`] creates the teams with some concurrency, retrying
//!   through API outages (an answer lost in an outage may hide a create that
//!   happened: `AlreadyExists` then counts as done).
//! - [`expected_objects`] is what the operator must have provisioned for a
//!   set of teams, one object per purpose; [`managed_objects`] lists every
//!   object labelled `app.kubernetes.io/managed-by=fluxgate` of any kind
//!   the API server serves, so a duplicate or an orphan of any kind shows.
//! - [`operator_writes`] reads the operator's writes from the audit log.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use fluxgate_crds::{FluxConfig, PlatformDefaults};
use fluxgate_platform_defaults::render::{
    LABEL_MANAGED_BY, LABEL_TEAM_NAMESPACE, MANAGED_BY, RECONCILER_NAME, STATUS_ROLE_BINDING_NAME,
    STATUS_ROLE_NAME, credentials_secret_name, target_role_binding_name,
};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope, verbs};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::stack::{PLATFORM_NAMESPACE, StackError};

/// The credentials Secret in the platform namespace every team's repository
/// uses (through the PlatformDefaults' credentials rule).
pub const CREDENTIALS: &str = "git-corp-readonly";
/// The namespace label the PlatformDefaults selects, with the tenant as value.
pub const TENANT_LABEL: &str = "fluxgate.dev/tenant";
/// The operator's user in the audit log (its ServiceAccount).
pub const OPERATOR_USER: &str = "system:serviceaccount:fluxgate-system:fluxgate-operator";
/// The name of every team's FluxConfig.
pub const FLUX_CONFIG_NAME: &str = "app";

/// One team to onboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    /// The team namespace (holds the FluxConfig).
    pub namespace: String,
    /// Other namespaces the team deploys to (`<namespace>-<suffix>`, allowed
    /// by the PlatformDefaults), created before the FluxConfig.
    pub targets: Vec<String>,
}

/// `count` teams named `<prefix>-000`, `<prefix>-001`, …; every
/// `staging_every`-th team (0: none) also gets a `<namespace>-staging`
/// target namespace, so cross-namespace RoleBindings are part of the set.
pub fn teams(prefix: &str, count: usize, staging_every: usize) -> Vec<Team> {
    (0..count)
        .map(|i| {
            let namespace = format!("{prefix}-{i:03}");
            let targets = if staging_every > 0 && i % staging_every == 0 {
                vec![format!("{namespace}-staging")]
            } else {
                Vec::new()
            };
            Team { namespace, targets }
        })
        .collect()
}

/// The PlatformDefaults for `tenant`: selects namespaces labelled
/// [`TENANT_LABEL`]`=<tenant>`, allows `{namespace}` and `{namespace}-*` as
/// targets, and gives every repository on `git.corp.example` the
/// [`CREDENTIALS`] Secret.
pub fn platform_defaults(tenant: &str) -> serde_json::Value {
    json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "PlatformDefaults",
        "metadata": {"name": format!("{tenant}-defaults")},
        "spec": {
            "namespaceSelector": {"matchLabels": {TENANT_LABEL: tenant}},
            "allowedRepos": ["https://git.corp.example/{namespace}/*"],
            "allowedTargetNamespaces": ["{namespace}", "{namespace}-*"],
            "defaults": {
                "interval": "5m",
                "credentials": [{"repoPattern": "https://git.corp.example/**", "secretRef": {"name": CREDENTIALS}}],
                "reconciler": {
                    "image": "registry.corp.example/fluxgate/reconciler:v1",
                    "clusterRole": "fluxgate-team-reconciler",
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                },
            },
        },
    })
}

/// Applies [`platform_defaults`] for `tenant` and creates the
/// [`CREDENTIALS`] Secret in the platform namespace (if missing), as the
/// platform team (`client` is an admin).
pub async fn install_platform(client: &Client, tenant: &str) -> Result<(), StackError> {
    let pd = platform_defaults(tenant);
    let name = format!("{tenant}-defaults");
    Api::<PlatformDefaults>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("platform-team").force(),
            &Patch::Apply(&pd),
        )
        .await
        .map_err(|e| StackError::Kube(format!("apply PlatformDefaults {name}"), e))?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": CREDENTIALS},
        "stringData": {"username": "fluxgate", "password": "s3cret"},
    }))
    .map_err(|e| StackError::Start(format!("the credentials Secret: {e}")))?;
    match Api::<Secret>::namespaced(client.clone(), PLATFORM_NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(StackError::Kube(
            format!("create Secret {PLATFORM_NAMESPACE}/{CREDENTIALS}"),
            e,
        )),
    }
}

/// A namespace labelled for `tenant`'s PlatformDefaults.
pub fn namespace(name: &str, tenant: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                TENANT_LABEL.to_owned(),
                tenant.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// The team's FluxConfig, [`FLUX_CONFIG_NAME`], for a repository the
/// PlatformDefaults allow.
pub fn flux_config(namespace: &str) -> Result<FluxConfig, StackError> {
    serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {"name": FLUX_CONFIG_NAME, "namespace": namespace},
        "spec": {"repo": format!("https://git.corp.example/{namespace}/app.git")},
    }))
    .map_err(|e| StackError::Start(format!("the FluxConfig of {namespace}: {e}")))
}

/// What [`onboard`] did.
#[derive(Debug, Clone, Default)]
pub struct OnboardingReport {
    /// Teams fully created (namespaces and FluxConfig).
    pub teams: usize,
    /// Create calls that failed and were retried (API outages).
    pub retries: usize,
    /// Creates answered `AlreadyExists`: the create went through before,
    /// but its answer was lost.
    pub already_existed: usize,
    /// The last error a retried call saw, if any.
    pub last_error: Option<String>,
}

/// Shared counters of an onboarding in progress.
#[derive(Debug, Default)]
struct Counters {
    retries: AtomicUsize,
    already_existed: AtomicUsize,
    last_error: std::sync::Mutex<Option<String>>,
}

/// Creates `object` through `api`, retrying every 200 ms on any error but
/// `AlreadyExists` (which counts as done) until `deadline`.
async fn create_retrying<K>(
    api: &Api<K>,
    object: &K,
    counters: &Counters,
    deadline: Instant,
) -> Result<(), StackError>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    loop {
        let error = match api.create(&PostParams::default(), object).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                counters.already_existed.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Err(e) => e,
        };
        counters.retries.fetch_add(1, Ordering::Relaxed);
        let message = crate::stack::chain(&error);
        if let Ok(mut last) = counters.last_error.lock() {
            *last = Some(message);
        }
        if Instant::now() >= deadline {
            return Err(StackError::Kube(
                format!("create {} (retried until the deadline)", object.name_any()),
                error,
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Onboards `teams` for `tenant`: per team, its namespaces, then its
/// FluxConfig; `concurrency` teams at a time; every create retried through
/// API outages until `timeout` has passed. `done` counts the teams whose
/// FluxConfig exists, as they finish.
pub async fn onboard(
    client: &Client,
    tenant: &str,
    teams: &[Team],
    concurrency: usize,
    timeout: Duration,
    done: Arc<AtomicUsize>,
) -> Result<OnboardingReport, StackError> {
    let deadline = Instant::now() + timeout;
    let counters = Counters::default();
    let namespaces = Api::<Namespace>::all(client.clone());
    let counters_ref = &counters;
    // Owned teams: a closure over `&Team` would make the future's type
    // depend on that lifetime, which `tokio::spawn` cannot prove `Send` for.
    futures::stream::iter(teams.iter().cloned())
        .map(|team: Team| {
            let namespaces = namespaces.clone();
            let done = done.clone();
            async move {
                for name in std::iter::once(&team.namespace).chain(&team.targets) {
                    create_retrying(
                        &namespaces,
                        &namespace(name, tenant),
                        counters_ref,
                        deadline,
                    )
                    .await?;
                }
                let fcs = Api::<FluxConfig>::namespaced(client.clone(), &team.namespace);
                create_retrying(&fcs, &flux_config(&team.namespace)?, counters_ref, deadline)
                    .await?;
                done.fetch_add(1, Ordering::Relaxed);
                Ok::<(), StackError>(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let last_error = counters.last_error.lock().ok().and_then(|l| l.clone());
    Ok(OnboardingReport {
        teams: teams.len(),
        retries: counters.retries.load(Ordering::Relaxed),
        already_existed: counters.already_existed.load(Ordering::Relaxed),
        last_error,
    })
}

/// One object: API group (empty for the core group), kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    /// API group, empty for the core group.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace, empty when cluster-scoped.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    fn new(group: &str, kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            group: group.to_owned(),
            kind: kind.to_owned(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        write!(f, "{}{group} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// What the operator provisions for `team` with the built-in templates and
/// [`platform_defaults`]: in the team namespace the ServiceAccount, the
/// status Role and its RoleBinding, the target RoleBinding, the copy of the
/// [`CREDENTIALS`] Secret, the NetworkPolicy (when `network_policy`, as the
/// chart runs the operator) and the Deployment; in each other target
/// namespace one RoleBinding. One object per purpose, named as
/// `fluxgate_platform_defaults::render` names them.
pub fn expected_objects(team: &Team, network_policy: bool) -> BTreeSet<ObjectKey> {
    let ns = team.namespace.as_str();
    let rbac = "rbac.authorization.k8s.io";
    let mut set = BTreeSet::from([
        ObjectKey::new("", "ServiceAccount", ns, RECONCILER_NAME),
        ObjectKey::new(rbac, "Role", ns, STATUS_ROLE_NAME),
        ObjectKey::new(rbac, "RoleBinding", ns, STATUS_ROLE_BINDING_NAME),
        ObjectKey::new("", "Secret", ns, &credentials_secret_name(CREDENTIALS)),
        ObjectKey::new("apps", "Deployment", ns, RECONCILER_NAME),
    ]);
    if network_policy {
        set.insert(ObjectKey::new(
            "networking.k8s.io",
            "NetworkPolicy",
            ns,
            RECONCILER_NAME,
        ));
    }
    for target in std::iter::once(ns).chain(team.targets.iter().map(String::as_str)) {
        set.insert(ObjectKey::new(
            rbac,
            "RoleBinding",
            target,
            &target_role_binding_name(ns),
        ));
    }
    set
}

/// An object labelled `app.kubernetes.io/managed-by=fluxgate`, as listed.
#[derive(Debug, Clone)]
pub struct ManagedObject {
    /// Which object.
    pub key: ObjectKey,
    /// Its `fluxgate.dev/team-namespace` label, if any.
    pub team_namespace: Option<String>,
    /// Kinds of its owners (ownerReferences), e.g. `Deployment` for the
    /// ReplicaSet the controller manager made.
    pub owner_kinds: Vec<String>,
}

/// Every object labelled `app.kubernetes.io/managed-by=fluxgate`, of every
/// listable resource the API server serves (through discovery), in every
/// namespace. Besides what the operator applies, this finds what others
/// derived from it (the ReplicaSets and Pods of the reconciler Deployments
/// copy the pod template's labels).
pub async fn managed_objects(client: &Client) -> Result<Vec<ManagedObject>, StackError> {
    let discovery = Discovery::new(client.clone())
        .run()
        .await
        .map_err(|e| StackError::Kube("discovery".into(), e))?;
    let selector = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    let params = ListParams::default().labels(&selector);
    let mut out = Vec::new();
    let mut seen_kinds = BTreeSet::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            // Aliases of one resource in two groups (events) are listed once.
            if !caps.supports_operation(verbs::LIST)
                || !seen_kinds.insert((resource.group.clone(), resource.kind.clone()))
            {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let list = api.list_metadata(&params).await.map_err(|e| {
                StackError::Kube(format!("list {} by {selector}", resource.plural), e)
            })?;
            for item in list.items {
                let namespace = match caps.scope {
                    Scope::Namespaced => item.namespace().unwrap_or_default(),
                    Scope::Cluster => String::new(),
                };
                out.push(ManagedObject {
                    key: ObjectKey::new(
                        &resource.group,
                        &resource.kind,
                        &namespace,
                        &item.name_any(),
                    ),
                    team_namespace: item.labels().get(LABEL_TEAM_NAMESPACE).cloned(),
                    owner_kinds: item
                        .owner_references()
                        .iter()
                        .map(|o| o.kind.clone())
                        .collect(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// One successful write by the operator, from the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditedWrite {
    /// `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// The resource, e.g. `deployments`, `leases`, `fluxconfigs`.
    pub resource: String,
    /// The subresource, e.g. `status`, if any.
    pub subresource: Option<String>,
    /// The namespace written to (empty for cluster-scoped).
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// When the API server received the request (`requestReceivedTimestamp`);
    /// a request held during an etcd outage completes, and is logged, long
    /// after.
    pub received: Option<Timestamp>,
}

/// The successful (2xx) writes by [`OPERATOR_USER`] in the audit log at
/// `path` from line `since` on (the first line is 0), and the number of
/// lines read, to pass as `since` next time.
pub fn operator_writes(
    path: &Path,
    since: usize,
) -> Result<(Vec<AuditedWrite>, usize), StackError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| StackError::Manifest(path.to_owned(), e))?;
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
        let ok = event["responseStatus"]["code"]
            .as_u64()
            .is_some_and(|c| (200..300).contains(&c));
        if event["user"]["username"] == OPERATOR_USER
            && ok
            && ["create", "update", "patch", "delete", "deletecollection"].contains(&verb)
        {
            let field = |f: &str| {
                event["objectRef"][f]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            writes.push(AuditedWrite {
                verb: verb.to_owned(),
                resource: field("resource"),
                subresource: event["objectRef"]["subresource"]
                    .as_str()
                    .map(str::to_owned),
                namespace: field("namespace"),
                name: field("name"),
                received: event["requestReceivedTimestamp"]
                    .as_str()
                    .and_then(|t| t.parse().ok()),
            });
        }
    }
    Ok((writes, lines))
}

/// How many FluxConfigs of the namespaces in `namespaces` have
/// `Provisioned=True` for their current generation, and which namespaces
/// those are.
pub async fn provisioned(
    client: &Client,
    namespaces: &BTreeSet<String>,
) -> Result<BTreeSet<String>, kube::Error> {
    let list = Api::<FluxConfig>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|fc| {
            fc.namespace()
                .is_some_and(|ns| namespaces.contains(ns.as_str()))
        })
        .filter(|fc| {
            fc.condition(fluxgate_crds::conditions::PROVISIONED)
                .is_some_and(|c| {
                    c.status == "True" && c.observed_generation == fc.metadata.generation
                })
        })
        .filter_map(|fc| fc.namespace())
        .collect())
}
