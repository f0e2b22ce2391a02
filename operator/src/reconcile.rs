//! One reconcile, as a pipeline:
//!
//! 1. **observe** (reads the watch caches, no API call): the namespace's
//!    labels, every PlatformDefaults, every FluxConfig of the namespace, the
//!    existing namespaces, the platform's credential Secrets;
//! 2. **resolve** (pure, the webhook's code): each FluxConfig of the
//!    namespace, oldest first, to its effective config or its violations;
//! 3. **render** (pure, tera templates): the namespace's objects from the
//!    accepted configs;
//! 4. **apply** (IO): server-side apply of each object that differs from the
//!    cache, in render order, then deletion of managed objects no longer
//!    rendered;
//! 5. **status** (pure compute, one IO write when it changed).
//!
//! The whole namespace is reconciled for any of its FluxConfigs: they share
//! one reconciler, so its objects depend on all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use fluxgate_crds::{FluxConfig, ObjectRef as InventoryRef, ReconcilerStatus};
use fluxgate_platform_defaults::render::{
    FluxConfigRef, NamespaceBundleInput, expand_target_namespaces,
};
use fluxgate_platform_defaults::{NamespaceFacts, Platform, Resolved, Violations, resolve};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::Value;
use tracing::{debug, info};

use crate::context::Context;
use crate::diff::is_subset;
use crate::error::{Error, chain};
use crate::status::{self, Outcome};

/// Field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "fluxgate.dev/operator";
/// Label naming the team namespace an object was provisioned for.
pub const TEAM_NAMESPACE_LABEL: &str = "fluxgate.dev/team-namespace";
/// Label selecting every object the operator manages.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "fluxgate";

/// The FluxConfigs of a namespace, observed: each with its resolution.
pub(crate) struct NamespaceView {
    /// Every valid PlatformDefaults.
    pub platform: Platform,
    /// The namespace's labels.
    pub labels: BTreeMap<String, String>,
    /// Accepted configs, oldest first.
    pub accepted: Vec<(Arc<FluxConfig>, Resolved)>,
    /// Rejected configs with their violations.
    pub rejected: Vec<(Arc<FluxConfig>, Violations)>,
}

fn is_deleting(fc: &FluxConfig) -> bool {
    fc.metadata.deletion_timestamp.is_some()
}

/// Resolves every live FluxConfig of `namespace` (except `leaving`, the one
/// being deleted), counting them against the per-namespace limit oldest
/// first, as admission would have.
pub(crate) fn view(ctx: &Context, namespace: &str, leaving: Option<&str>) -> NamespaceView {
    let labels = ctx
        .namespaces
        .get(&ObjectRef::<PartialObjectMeta<Namespace>>::new(namespace))
        .and_then(|ns| ns.metadata.labels.clone())
        .unwrap_or_default();
    let defaults: Vec<_> = ctx.defaults.state();
    let platform = Platform::new(ctx.settings.clone(), defaults.iter().map(|d| d.as_ref()));
    let layers = platform.layers_for(namespace, &labels);
    let mut configs: Vec<Arc<FluxConfig>> = ctx
        .flux_configs
        .state()
        .into_iter()
        .filter(|fc| fc.namespace().as_deref() == Some(namespace))
        .filter(|fc| !is_deleting(fc) && Some(fc.name_any().as_str()) != leaving)
        .filter(|fc| {
            !ctx.unreadable
                .contains(&FluxConfig::kind(&()), Some(namespace), &fc.name_any())
        })
        .collect();
    configs.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .then_with(|| a.name_any().cmp(&b.name_any()))
    });
    let mut accepted = Vec::new();
    let mut rejected = Vec::new();
    for fc in configs {
        let facts = NamespaceFacts {
            other_flux_configs: accepted.len(),
        };
        match resolve(&fc, &layers, facts) {
            Ok(resolved) => accepted.push((fc, resolved)),
            Err(violations) => rejected.push((fc, violations)),
        }
    }
    NamespaceView {
        platform,
        labels,
        accepted,
        rejected,
    }
}

/// The objects the namespace needs, rendered from its accepted configs.
pub(crate) fn desired_objects(
    ctx: &Context,
    namespace: &str,
    view: &NamespaceView,
) -> Result<Vec<Value>, Error> {
    if view.accepted.is_empty() {
        return Ok(Vec::new());
    }
    let existing: Vec<String> = ctx
        .namespaces
        .state()
        .iter()
        .map(|n| n.name_any())
        .collect();
    // Namespace-wide values come from the first config by name, as in the
    // renderer (all configs of a namespace share its layers anyway).
    let allowed = view
        .accepted
        .iter()
        .min_by_key(|(fc, _)| fc.name_any())
        .map(|(_, r)| r.effective().allowed_namespaces.value.clone())
        .unwrap_or_default();
    let layers = view.platform.layers_for(namespace, &view.labels);
    let target_namespaces = expand_target_namespaces(&layers, &allowed, &existing);
    let mut credentials = BTreeMap::new();
    for (_, resolved) in &view.accepted {
        if let Some(secret) = &resolved.effective().credentials_secret {
            let key =
                ObjectRef::<Secret>::new(&secret.value).within(&ctx.settings.platform_namespace);
            let Some(source) = ctx.platform_secrets.get(&key) else {
                return Err(Error::MissingCredentials {
                    namespace: ctx.settings.platform_namespace.clone(),
                    name: secret.value.clone(),
                });
            };
            let data: BTreeMap<String, String> = source
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), BASE64.encode(&v.0)))
                .collect();
            credentials.insert(secret.value.clone(), data);
        }
    }
    let uids: Vec<String> = view
        .accepted
        .iter()
        .map(|(fc, _)| fc.uid().unwrap_or_default())
        .collect();
    let flux_configs: Vec<FluxConfigRef<'_>> = view
        .accepted
        .iter()
        .zip(&uids)
        .map(|((_, resolved), uid)| FluxConfigRef::new(uid, resolved))
        .collect();
    let input = NamespaceBundleInput {
        namespace,
        platform_namespace: &ctx.settings.platform_namespace,
        flux_configs,
        target_namespaces,
        credentials,
        network_policy: ctx.network_policy.as_ref(),
    };
    ctx.renderer
        .render(&input)
        .map(|rendered| rendered.objects)
        .map_err(|source| Error::Render {
            namespace: namespace.to_owned(),
            source,
        })
}

/// Identifies a managed object: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Key {
    fn of(v: &Value) -> Option<Self> {
        Some(Self {
            kind: v["kind"].as_str()?.to_owned(),
            namespace: v["metadata"]["namespace"].as_str()?.to_owned(),
            name: v["metadata"]["name"].as_str()?.to_owned(),
        })
    }
}

fn api_resource(kind: &str) -> Option<ApiResource> {
    Some(match kind {
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        "Secret" => ApiResource::erase::<Secret>(&()),
        "Role" => ApiResource::erase::<Role>(&()),
        "RoleBinding" => ApiResource::erase::<RoleBinding>(&()),
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "NetworkPolicy" => ApiResource::erase::<NetworkPolicy>(&()),
        _ => return None,
    })
}

fn live_value<K: Resource<DynamicType = ()> + Clone + serde::Serialize>(
    store: &Store<K>,
    key: &Key,
) -> Option<Value> {
    let r = ObjectRef::<K>::new(&key.name).within(&key.namespace);
    store
        .get(&r)
        .and_then(|o| serde_json::to_value(o.as_ref()).ok())
}

/// The live object behind a key, from the watch caches.
fn live(ctx: &Context, key: &Key) -> Option<Value> {
    match key.kind.as_str() {
        "ServiceAccount" => live_value(&ctx.managed.service_accounts, key),
        "Secret" => live_value(&ctx.managed.secrets, key),
        "Role" => live_value(&ctx.managed.roles, key),
        "RoleBinding" => live_value(&ctx.managed.role_bindings, key),
        "Deployment" => live_value(&ctx.managed.deployments, key),
        "NetworkPolicy" => live_value(&ctx.managed.network_policies, key),
        _ => None,
    }
}

/// Every managed object provisioned for `namespace`, from the caches.
fn managed_for(ctx: &Context, namespace: &str) -> Vec<Key> {
    fn keys<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, namespace: &str) -> Vec<Key> {
        store
            .state()
            .iter()
            .filter(|o| o.labels().get(TEAM_NAMESPACE_LABEL).map(String::as_str) == Some(namespace))
            .filter(|o| o.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY))
            .map(|o| Key {
                kind: K::kind(&()).into_owned(),
                namespace: o.namespace().unwrap_or_default(),
                name: o.name_any(),
            })
            .collect()
    }
    let m = &ctx.managed;
    let mut all = keys(&m.service_accounts, namespace);
    all.extend(keys(&m.secrets, namespace));
    all.extend(keys(&m.roles, namespace));
    all.extend(keys(&m.role_bindings, namespace));
    all.extend(keys(&m.deployments, namespace));
    all.extend(keys(&m.network_policies, namespace));
    all.sort();
    all
}

/// Applies what differs, deletes what is no longer desired. Returns the
/// desired keys.
pub(crate) async fn apply(
    ctx: &Context,
    namespace: &str,
    desired: &[Value],
) -> Result<Vec<Key>, Error> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut keys = Vec::with_capacity(desired.len());
    for object in desired {
        let Some(key) = Key::of(object) else {
            continue;
        };
        let Some(ar) = api_resource(&key.kind) else {
            continue;
        };
        keys.push(key.clone());
        if live(ctx, &key).is_some_and(|l| is_subset(object, &l)) {
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &key.namespace, &ar);
        api.patch(&key.name, &params, &Patch::Apply(object))
            .await
            .map_err(|e| {
                Error::kube(
                    format!("apply {} {}/{}", key.kind, key.namespace, key.name),
                    e,
                )
            })?;
        ctx.metrics.wrote("apply");
        debug!(kind = %key.kind, namespace = %key.namespace, name = %key.name, "applied");
    }
    let wanted: BTreeSet<&Key> = keys.iter().collect();
    // Prune in reverse apply order: workloads first, RBAC last.
    let mut stale: Vec<Key> = managed_for(ctx, namespace)
        .into_iter()
        .filter(|k| !wanted.contains(k))
        .collect();
    stale.sort_by_key(|k| prune_rank(&k.kind));
    for key in stale {
        let Some(ar) = api_resource(&key.kind) else {
            continue;
        };
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &key.namespace, &ar);
        match api.delete(&key.name, &DeleteParams::background()).await {
            Ok(_) => {
                ctx.metrics.wrote("delete");
                info!(kind = %key.kind, namespace = %key.namespace, name = %key.name, "pruned");
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => {
                return Err(Error::kube(
                    format!("delete {} {}/{}", key.kind, key.namespace, key.name),
                    e,
                ));
            }
        }
    }
    Ok(keys)
}

fn prune_rank(kind: &str) -> u8 {
    match kind {
        "Deployment" => 0,
        "Secret" => 1,
        "RoleBinding" => 2,
        "Role" => 3,
        _ => 4,
    }
}

/// What was provisioned, for `status.reconciler`.
fn reconciler_status(namespace: &str, keys: &[Key], view: &NamespaceView) -> ReconcilerStatus {
    let deployment = keys
        .iter()
        .find(|k| k.kind == "Deployment")
        .map(|k| k.name.clone());
    let service_account = keys
        .iter()
        .find(|k| k.kind == "ServiceAccount")
        .map(|k| k.name.clone());
    let image = view
        .accepted
        .iter()
        .min_by_key(|(fc, _)| fc.name_any())
        .map(|(_, r)| r.effective().reconciler_image.value.clone());
    let objects = keys
        .iter()
        .filter(|k| k.namespace != namespace)
        .map(|k| InventoryRef {
            api_version: api_resource(&k.kind)
                .map(|ar| ar.api_version)
                .unwrap_or_default(),
            kind: k.kind.clone(),
            namespace: Some(k.namespace.clone()),
            name: k.name.clone(),
        })
        .collect();
    ReconcilerStatus {
        deployment,
        service_account,
        image,
        objects,
    }
}

/// Reconciles the namespace of `fc` and writes `fc`'s status.
pub(crate) async fn reconcile_one(fc: &FluxConfig, ctx: &Context) -> Result<&'static str, Error> {
    let namespace = fc.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = fc.name_any();
    hold_if_unreadable(ctx, &namespace, None)?;
    let view = view(ctx, &namespace, None);
    let applied = match desired_objects(ctx, &namespace, &view) {
        Ok(desired) => apply(ctx, &namespace, &desired)
            .await
            .inspect(|keys| ctx.metrics.set_managed_objects(&namespace, keys.len())),
        Err(e) => Err(e),
    };

    let rejected = view.rejected.iter().find(|(f, _)| f.name_any() == name);
    let accepted = view.accepted.iter().find(|(f, _)| f.name_any() == name);
    let failure = applied.as_ref().err().map(|e| chain(e));
    let outcome = match (rejected, accepted, &applied) {
        (Some((_, v)), _, _) => Outcome::Rejected(v),
        (None, Some((_, r)), Ok(keys)) => Outcome::Provisioned {
            effective: r.effective(),
            reconciler: reconciler_status(&namespace, keys, &view),
        },
        (None, Some((_, r)), Err(_)) => Outcome::ProvisioningFailed {
            effective: r.effective(),
            message: failure.clone().unwrap_or_default(),
        },
        // Not in the view: being deleted meanwhile; nothing to report.
        (None, None, _) => return applied.map(|_| "ok"),
    };
    let result = match &outcome {
        Outcome::Rejected(_) => "rejected",
        _ => "ok",
    };
    write_status(ctx, fc, &outcome).await?;
    applied.map(|_| result)
}

async fn write_status(ctx: &Context, fc: &FluxConfig, outcome: &Outcome<'_>) -> Result<(), Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let desired = status::desired(fc, outcome, &now);
    // Also in a steady state, so a new leader reports every FluxConfig.
    ctx.metrics.set_conditions(
        &fc.namespace().unwrap_or_default(),
        &fc.name_any(),
        &desired.conditions,
    );
    let fingerprint = status::fingerprint(&desired);
    let Some(patch) = status::patch(fc, desired) else {
        return Ok(());
    };
    let uid = fc.uid().unwrap_or_default();
    if ctx
        .recent_status
        .is_pending(&uid, &fingerprint, fc.resource_version().as_deref())
    {
        debug!(fluxconfig = %fc.name_any(), "status written already; the cache has not caught up");
        return Ok(());
    }
    let namespace = fc.namespace().unwrap_or_default();
    let api: Api<FluxConfig> = Api::namespaced(ctx.client.clone(), &namespace);
    let written = api
        .patch_status(
            &fc.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| {
            Error::kube(
                format!("write status of FluxConfig {namespace}/{}", fc.name_any()),
                e,
            )
        })?;
    ctx.metrics.wrote("status");
    ctx.recent_status
        .record(&uid, fingerprint, written.resource_version());
    publish_transition(ctx, fc, outcome).await;
    Ok(())
}

/// Publishes an Event when the outcome differs from what the status said
/// before (events are writes too: none in a steady state).
async fn publish_transition(ctx: &Context, fc: &FluxConfig, outcome: &Outcome<'_>) {
    use fluxgate_crds::conditions::{ACCEPTED, PROVISIONED};
    let (type_, reason, note, was_true, condition) = match outcome {
        Outcome::Rejected(v) => (
            EventType::Warning,
            "PolicyViolation",
            v.to_string(),
            false,
            ACCEPTED,
        ),
        Outcome::Provisioned { reconciler, .. } => (
            EventType::Normal,
            "Provisioned",
            format!(
                "reconciler {} provisioned",
                reconciler
                    .deployment
                    .as_deref()
                    .unwrap_or("fluxgate-reconciler")
            ),
            true,
            PROVISIONED,
        ),
        Outcome::ProvisioningFailed { message, .. } => (
            EventType::Warning,
            "ProvisioningFailed",
            message.clone(),
            false,
            PROVISIONED,
        ),
    };
    let before = fc.condition(condition).map(|c| c.status == "True");
    if before == Some(was_true)
        && matches!(outcome, Outcome::Provisioned { .. } | Outcome::Rejected(_))
    {
        return;
    }
    let mut note = note;
    note.truncate(1000);
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Provision".to_owned(),
        secondary: None,
    };
    if ctx
        .recorder
        .publish(&event, &fc.object_ref(&()))
        .await
        .is_ok()
    {
        ctx.metrics.wrote("event");
    }
}

/// Refuses to change a namespace while one of its FluxConfigs (other than
/// `leaving`) cannot be read: its stand-in says nothing about what it wants.
fn hold_if_unreadable(ctx: &Context, namespace: &str, leaving: Option<&str>) -> Result<(), Error> {
    let names = ctx
        .unreadable
        .in_namespace(&FluxConfig::kind(&()), namespace, leaving);
    if names.is_empty() {
        Ok(())
    } else {
        Err(Error::Held {
            namespace: namespace.to_owned(),
            names: names.join(", "),
        })
    }
}

/// Cleans up when `fc` is deleted: re-provisions the namespace for the
/// remaining configs, or removes everything when it was the last one.
pub(crate) async fn cleanup(fc: &FluxConfig, ctx: &Context) -> Result<(), Error> {
    let namespace = fc.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    hold_if_unreadable(ctx, &namespace, Some(&fc.name_any()))?;
    let view = view(ctx, &namespace, Some(&fc.name_any()));
    let desired = desired_objects(ctx, &namespace, &view)?;
    let keys = apply(ctx, &namespace, &desired).await?;
    ctx.metrics.set_managed_objects(&namespace, keys.len());
    ctx.metrics.forget_fluxconfig(&namespace, &fc.name_any());
    Ok(())
}
