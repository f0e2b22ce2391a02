//! Applying manifests to the cluster: discovery of kinds, ordering, a
//! server-side-apply dry run of the whole set, the real apply, and pruning.
//!
//! Everything is written with server-side apply under [`FIELD_MANAGER`]
//! with `force`, as the team's ServiceAccount, so the API server enforces
//! the team's rights. Every object carries [`LABEL_FLUX_CONFIG`] and
//! [`LABEL_FLUX_CONFIG_NAMESPACE`]; pruning deletes only objects that still
//! carry both with this FluxConfig's values.
//!
//! Order (see [`stage`] and [`kind_rank`]): in cluster mode Namespaces, then
//! other cluster-scoped objects (PlatformDefaults), then namespaced ones
//! (FluxConfigs); within namespaced objects, identities and policy first,
//! then config and secrets, storage, services, workloads, and what refers to
//! workloads; unknown kinds (custom resources) last. Pruning goes in
//! reverse.
//!
//! An object carrying [`ANNOTATION_ADOPTED`] existed before the reconciler
//! applied it (cluster mode marks pre-existing Namespaces so): pruning
//! releases it (drops the reconciler's labels and fields) instead of
//! deleting it.

use std::collections::{BTreeMap, HashMap};

use fluxgate_crds::ObjectRef;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Scope as KubeScope};
use serde_json::Value;

use crate::manifests::{Manifest, Scope, display_object};

/// Field manager of everything the reconciler writes.
pub const FIELD_MANAGER: &str = "fluxgate.dev/reconciler";
/// Label naming the FluxConfig an object was applied for.
pub const LABEL_FLUX_CONFIG: &str = "fluxgate.dev/fluxconfig";
/// Label naming the namespace of that FluxConfig.
pub const LABEL_FLUX_CONFIG_NAMESPACE: &str = "fluxgate.dev/fluxconfig-namespace";
/// Annotation (`"true"`) on an object that existed before the reconciler
/// took it over: pruning releases it rather than deleting it.
pub const ANNOTATION_ADOPTED: &str = "fluxgate.dev/adopted";

/// Identifies an object independently of the API version it is written in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// API group (`""` for core).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of an inventory entry.
    pub fn of_ref(r: &ObjectRef) -> Self {
        Self {
            group: group_of(&r.api_version).to_owned(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone().unwrap_or_default(),
            name: r.name.clone(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&display_object(&self.kind, &self.namespace, &self.name))
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    match api_version.rsplit_once('/') {
        Some((group, version)) => GroupVersionKind::gvk(group, version, kind),
        None => GroupVersionKind::gvk("", api_version, kind),
    }
}

/// The FluxConfig objects are applied for; gives their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The FluxConfig's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
}

impl Owner {
    /// Whether `labels` mark an object as applied for this FluxConfig.
    pub fn owns(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        labels.is_some_and(|l| {
            l.get(LABEL_FLUX_CONFIG) == Some(&self.name)
                && l.get(LABEL_FLUX_CONFIG_NAMESPACE) == Some(&self.namespace)
        })
    }

    fn label(&self, object: &mut Value) {
        if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            let labels = metadata
                .entry("labels")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if !labels.is_object() {
                *labels = Value::Object(serde_json::Map::new());
            }
            if let Some(labels) = labels.as_object_mut() {
                labels.insert(LABEL_FLUX_CONFIG.into(), Value::String(self.name.clone()));
                labels.insert(
                    LABEL_FLUX_CONFIG_NAMESPACE.into(),
                    Value::String(self.namespace.clone()),
                );
            }
        }
    }
}

/// Why applying or pruning failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Discovery could not be asked (the API server is unreachable).
    #[error("cannot discover {api_version} {kind}")]
    Discovery {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// The API server refused an object: the commit must change.
    #[error("{file}:{line}: {object} was rejected by the API server{}: {message}", phase.explain())]
    Rejected {
        /// `Kind/namespace/name`.
        object: String,
        /// Where it is defined.
        file: String,
        /// Line of its document.
        line: usize,
        /// When it happened.
        phase: Phase,
        /// The API server's message.
        message: String,
    },
    /// The API server could not be reached or failed.
    #[error("{file}:{line}: cannot apply {object}")]
    Api {
        /// `Kind/namespace/name`.
        object: String,
        /// Where it is defined.
        file: String,
        /// Line of its document.
        line: usize,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// An object gone from Git could not be deleted.
    #[error("cannot prune {object}")]
    Prune {
        /// `Kind/namespace/name`.
        object: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
}

impl ApplyError {
    /// Whether retrying later may succeed without a new commit.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Rejected { .. })
    }

    /// The file concerned, when there is one.
    pub fn file(&self) -> Option<&str> {
        match self {
            Self::Rejected { file, .. } | Self::Api { file, .. } => Some(file),
            _ => None,
        }
    }

    /// The line concerned, when there is one.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Rejected { line, .. } | Self::Api { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The object concerned, when there is one.
    pub fn object(&self) -> Option<&str> {
        match self {
            Self::Rejected { object, .. }
            | Self::Api { object, .. }
            | Self::Prune { object, .. } => Some(object),
            Self::Discovery { .. } => None,
        }
    }
}

/// When an object was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The dry run before anything of the revision was applied.
    DryRun,
    /// The dry run of the namespaced objects, after the revision's
    /// cluster-scoped objects were applied (cluster mode, when they changed
    /// the rules the namespaced ones are admitted by).
    DryRunAfterClusterScoped,
    /// The real apply.
    Apply,
}

impl Phase {
    fn explain(self) -> &'static str {
        match self {
            Self::DryRun => " in the dry run, so nothing was applied",
            Self::DryRunAfterClusterScoped => {
                " in the dry run after this revision's Namespaces and other cluster-scoped objects were applied, so none of its namespaced objects (FluxConfigs) was applied"
            }
            Self::Apply => "",
        }
    }

    fn is_dry_run(self) -> bool {
        !matches!(self, Self::Apply)
    }
}

/// Whether a client error is about the request (the object must change)
/// rather than about the server or the network.
fn is_rejection(err: &kube::Error) -> Option<String> {
    match err {
        kube::Error::Api(status)
            if (400..500).contains(&status.code) && ![408, 429].contains(&status.code) =>
        {
            Some(status.message.clone())
        }
        _ => None,
    }
}

/// What discovery said about the kinds of a commit.
#[derive(Debug, Default, Clone)]
pub struct Kinds {
    known: HashMap<(String, String), Result<(ApiResource, Scope), String>>,
}

impl Kinds {
    /// Asks discovery about each `(apiVersion, kind)` once.
    pub async fn discover<'a>(
        client: &kube::Client,
        types: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ApplyError> {
        let mut kinds = Self::default();
        for (api_version, kind) in types {
            kinds.learn(client, api_version, kind).await?;
        }
        Ok(kinds)
    }

    /// Asks discovery about one kind, unless already known.
    pub async fn learn(
        &mut self,
        client: &kube::Client,
        api_version: &str,
        kind: &str,
    ) -> Result<(), ApplyError> {
        let key = (api_version.to_owned(), kind.to_owned());
        if self.known.contains_key(&key) {
            return Ok(());
        }
        let answer = match kube::discovery::pinned_kind(client, &gvk_of(api_version, kind)).await {
            Ok((resource, caps)) => Ok((
                resource,
                match caps.scope {
                    KubeScope::Cluster => Scope::Cluster,
                    KubeScope::Namespaced => Scope::Namespaced,
                },
            )),
            Err(kube::Error::Discovery(e)) => Err(e.to_string()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(format!("the API server does not serve {api_version}"))
            }
            Err(source) => {
                return Err(ApplyError::Discovery {
                    api_version: api_version.to_owned(),
                    kind: kind.to_owned(),
                    source,
                });
            }
        };
        self.known.insert(key, answer);
        Ok(())
    }

    /// The scope of a kind, or why it is unknown.
    pub fn scope(&self, api_version: &str, kind: &str) -> Result<Scope, String> {
        match self.known.get(&(api_version.to_owned(), kind.to_owned())) {
            Some(Ok((_, scope))) => Ok(*scope),
            Some(Err(message)) => Err(message.clone()),
            None => Err("not discovered".to_owned()),
        }
    }

    /// The API resource of a kind, when it is served.
    pub fn resource(&self, api_version: &str, kind: &str) -> Option<&ApiResource> {
        match self.known.get(&(api_version.to_owned(), kind.to_owned())) {
            Some(Ok((resource, _))) => Some(resource),
            _ => None,
        }
    }
}

/// A validated manifest with its API resource and labels: ready to apply.
#[derive(Debug, Clone)]
pub struct Planned {
    /// The manifest (its object carries the labels).
    pub manifest: Manifest,
    /// Where it is served.
    pub resource: ApiResource,
}

impl Planned {
    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            group: self.resource.group.clone(),
            kind: self.resource.kind.clone(),
            namespace: self.manifest.namespace.clone(),
            name: self.manifest.name.clone(),
        }
    }

    /// The object's [`stage`].
    pub fn stage(&self) -> u8 {
        stage(
            &self.resource.group,
            &self.resource.kind,
            self.manifest.scope,
        )
    }

    fn api(&self, client: &kube::Client) -> Api<DynamicObject> {
        match self.manifest.scope {
            Scope::Namespaced => {
                Api::namespaced_with(client.clone(), &self.manifest.namespace, &self.resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &self.resource),
        }
    }

    /// Marks the object as adopted (see [`ANNOTATION_ADOPTED`]).
    pub fn mark_adopted(&mut self) {
        if let Some(metadata) = self
            .manifest
            .object
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
        {
            let annotations = metadata
                .entry("annotations")
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if !annotations.is_object() {
                *annotations = Value::Object(serde_json::Map::new());
            }
            if let Some(annotations) = annotations.as_object_mut() {
                annotations.insert(ANNOTATION_ADOPTED.into(), Value::String("true".into()));
            }
        }
    }
}

/// Whether a live object counts as adopted by `owner` when applied again:
/// it exists and either was never labelled for `owner` (someone else made
/// it) or was adopted before.
pub fn is_adopted(live: &DynamicObject, owner: &Owner) -> bool {
    let marked = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ADOPTED))
        .is_some_and(|v| v == "true");
    marked || !owner.owns(live.metadata.labels.as_ref())
}

/// Whether a dry run's answer differs from the live object, ignoring what
/// every write changes (resource version, managed fields' timestamps).
pub fn differs(live: Option<&DynamicObject>, dry_run: &DynamicObject) -> bool {
    let Some(live) = live else {
        return true;
    };
    let comparable = |o: &DynamicObject| {
        let mut value = serde_json::to_value(o).unwrap_or(Value::Null);
        if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("resourceVersion");
            metadata.remove("managedFields");
        }
        value
    };
    comparable(live) != comparable(dry_run)
}

/// Reads the live object a planned one would write, if it exists. An object
/// the reconciler may not read counts as absent: the dry run that follows
/// says what is forbidden.
pub async fn get_live(
    client: &kube::Client,
    planned: &Planned,
) -> Result<Option<DynamicObject>, ApplyError> {
    let m = &planned.manifest;
    match planned.api(client).get_opt(&m.name).await {
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(None),
        other => other.map_err(|source| match is_rejection(&source) {
            Some(message) => ApplyError::Rejected {
                object: m.display(),
                file: m.file.clone(),
                line: m.line,
                phase: Phase::DryRun,
                message,
            },
            None => ApplyError::Api {
                object: m.display(),
                file: m.file.clone(),
                line: m.line,
                source,
            },
        }),
    }
}

/// Apply stage of an object: Namespaces (0), then other cluster-scoped
/// objects such as PlatformDefaults (1), then namespaced objects (2), so
/// that a FluxConfig's namespace and the rules the admission webhook checks
/// it against exist before it is applied. Only cluster mode has stages 0
/// and 1.
pub fn stage(group: &str, kind: &str, scope: Scope) -> u8 {
    match (group, kind, scope) {
        ("", "Namespace", _) => 0,
        (_, _, Scope::Cluster) => 1,
        (_, _, Scope::Namespaced) => 2,
    }
}

/// Apply order of a kind within its stage: lower first.
pub fn kind_rank(group: &str, kind: &str) -> u8 {
    match (group, kind) {
        ("", "ServiceAccount") => 0,
        ("rbac.authorization.k8s.io", "Role" | "RoleBinding") => 1,
        ("networking.k8s.io", "NetworkPolicy") | ("", "ResourceQuota" | "LimitRange") => 2,
        ("", "ConfigMap" | "Secret") => 3,
        ("", "PersistentVolumeClaim") => 4,
        ("", "Service") => 5,
        ("apps", _) | ("batch", _) | ("", "Pod" | "ReplicationController") => 6,
        ("autoscaling", _) | ("policy", _) | ("networking.k8s.io", _) => 7,
        _ => 8,
    }
}

/// Attaches API resources and labels to validated manifests and sorts them
/// in apply order (then by namespace, name and file position, so the order
/// is deterministic). Every manifest's kind must be in `kinds` (validation
/// checked it).
pub fn plan(manifests: Vec<Manifest>, kinds: &Kinds, owner: &Owner) -> Vec<Planned> {
    let mut planned: Vec<Planned> = manifests
        .into_iter()
        .filter_map(|mut manifest| {
            let resource = kinds
                .resource(&manifest.api_version, &manifest.kind)?
                .clone();
            owner.label(&mut manifest.object);
            Some(Planned { manifest, resource })
        })
        .collect();
    planned.sort_by(|a, b| {
        let rank = |p: &Planned| (p.stage(), kind_rank(&p.resource.group, &p.resource.kind));
        (
            rank(a),
            &a.manifest.kind,
            &a.manifest.namespace,
            &a.manifest.name,
        )
            .cmp(&(
                rank(b),
                &b.manifest.kind,
                &b.manifest.namespace,
                &b.manifest.name,
            ))
    });
    planned
}

/// This manager's `Apply` field set of a live object: changes when anybody
/// else takes a field the reconciler set, which is how drift is told from
/// the status updates and defaulting of other controllers.
pub fn applied_fields(object: &DynamicObject) -> Option<Value> {
    object
        .metadata
        .managed_fields
        .as_ref()?
        .iter()
        .find(|m| {
            m.manager.as_deref() == Some(FIELD_MANAGER)
                && m.operation.as_deref() == Some("Apply")
                && m.subresource.as_deref().unwrap_or_default().is_empty()
        })
        .and_then(|m| m.fields_v1.as_ref())
        .map(|f| f.0.clone())
}

async fn apply_one(
    client: &kube::Client,
    planned: &Planned,
    phase: Phase,
) -> Result<DynamicObject, ApplyError> {
    let mut params = PatchParams::apply(FIELD_MANAGER).force();
    if phase.is_dry_run() {
        params = params.dry_run();
    }
    let m = &planned.manifest;
    planned
        .api(client)
        .patch(&m.name, &params, &Patch::Apply(&m.object))
        .await
        .map_err(|source| match is_rejection(&source) {
            Some(message) => ApplyError::Rejected {
                object: m.display(),
                file: m.file.clone(),
                line: m.line,
                phase,
                message,
            },
            None => ApplyError::Api {
                object: m.display(),
                file: m.file.clone(),
                line: m.line,
                source,
            },
        })
}

/// Server-side applies every object with `dryRun=All`: the API server
/// runs admission and validation (and RBAC) without persisting anything.
pub async fn dry_run(client: &kube::Client, planned: &[Planned]) -> Result<(), ApplyError> {
    for p in planned {
        apply_one(client, p, Phase::DryRun).await?;
    }
    Ok(())
}

/// Server-side applies one object with `dryRun=All` in `phase`; returns the
/// object as it would be.
pub async fn dry_run_one(
    client: &kube::Client,
    planned: &Planned,
    phase: Phase,
) -> Result<DynamicObject, ApplyError> {
    apply_one(client, planned, phase).await
}

/// Server-side applies one object for real; returns the manager's field set
/// after the apply.
pub async fn apply(client: &kube::Client, planned: &Planned) -> Result<Option<Value>, ApplyError> {
    let live = apply_one(client, planned, Phase::Apply).await?;
    Ok(applied_fields(&live))
}

/// What pruning one object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pruned {
    /// It was deleted.
    Deleted,
    /// It was already gone, or its kind is no longer served.
    Gone,
    /// It no longer carries this FluxConfig's labels, so it was left alone.
    NotOwned,
    /// The reconciler may not read or delete it (its namespace is no longer
    /// allowed): left alone and dropped from the inventory.
    Forbidden,
    /// It existed before the reconciler adopted it ([`ANNOTATION_ADOPTED`]):
    /// the reconciler's labels and fields were removed, the object kept.
    Released,
}

/// Deletes one object gone from Git, if it still carries `owner`'s labels.
pub async fn prune(
    client: &kube::Client,
    kinds: &mut Kinds,
    entry: &ObjectRef,
    owner: &Owner,
) -> Result<Pruned, ApplyError> {
    let object = display_object(
        &entry.kind,
        entry.namespace.as_deref().unwrap_or_default(),
        &entry.name,
    );
    let prune_err = |source| ApplyError::Prune {
        object: object.clone(),
        source,
    };
    kinds.learn(client, &entry.api_version, &entry.kind).await?;
    let Some(resource) = kinds.resource(&entry.api_version, &entry.kind) else {
        return Ok(Pruned::Gone);
    };
    let api: Api<DynamicObject> = match (
        kinds.scope(&entry.api_version, &entry.kind),
        &entry.namespace,
    ) {
        (Ok(Scope::Namespaced), Some(namespace)) => {
            Api::namespaced_with(client.clone(), namespace, resource)
        }
        (Ok(Scope::Cluster), None) => Api::all_with(client.clone(), resource),
        // The kind changed scope since it was applied: not the same object.
        _ => return Ok(Pruned::Gone),
    };
    let live = match api.get_opt(&entry.name).await {
        Ok(Some(live)) => live,
        Ok(None) => return Ok(Pruned::Gone),
        Err(kube::Error::Api(s)) if s.code == 403 => return Ok(Pruned::Forbidden),
        Err(e) => return Err(prune_err(e)),
    };
    if !owner.owns(live.metadata.labels.as_ref()) {
        return Ok(Pruned::NotOwned);
    }
    let adopted = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_ADOPTED))
        .is_some_and(|v| v == "true");
    if adopted {
        // Applying nothing but the identity drops every field only this
        // manager held: the labels, the annotation, whatever it set.
        let bare = serde_json::json!({
            "apiVersion": entry.api_version,
            "kind": entry.kind,
            "metadata": {"name": entry.name},
        });
        return match api
            .patch(
                &entry.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&bare),
            )
            .await
        {
            Ok(_) => Ok(Pruned::Released),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(Pruned::Gone),
            Err(kube::Error::Api(s)) if s.code == 403 => Ok(Pruned::Forbidden),
            Err(e) => Err(prune_err(e)),
        };
    }
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        // Deletes exactly the object that was checked.
        preconditions: live
            .metadata
            .uid
            .clone()
            .map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            }),
        ..DeleteParams::default()
    };
    match api.delete(&entry.name, &params).await {
        Ok(_) => Ok(Pruned::Deleted),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(Pruned::Gone),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(Pruned::Forbidden),
        Err(e) => Err(prune_err(e)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn manifest(api_version: &str, kind: &str, name: &str) -> Manifest {
        Manifest {
            file: "a.yaml".into(),
            line: 1,
            api_version: api_version.into(),
            kind: kind.into(),
            scope: Scope::Namespaced,
            namespace: "team-a".into(),
            name: name.into(),
            object: serde_json::json!({
                "apiVersion": api_version, "kind": kind,
                "metadata": {"name": name, "namespace": "team-a", "labels": {"app": "web"}},
            }),
        }
    }

    fn kinds(list: &[(&str, &str)]) -> Kinds {
        let mut k = Kinds::default();
        for (av, kind) in list {
            let gvk = gvk_of(av, kind);
            let resource = ApiResource::from_gvk(&gvk);
            k.known.insert(
                ((*av).into(), (*kind).into()),
                Ok((resource, Scope::Namespaced)),
            );
        }
        k
    }

    #[test]
    fn plans_in_dependency_order_with_labels() {
        let list = [
            ("apps/v1", "Deployment"),
            ("v1", "Service"),
            ("v1", "ConfigMap"),
            ("v1", "ServiceAccount"),
            ("example.com/v1", "Widget"),
            ("policy/v1", "PodDisruptionBudget"),
        ];
        let manifests = list.iter().map(|(av, k)| manifest(av, k, "x")).collect();
        let owner = Owner {
            name: "web".into(),
            namespace: "team-a".into(),
        };
        let planned = plan(manifests, &kinds(&list), &owner);
        let order: Vec<&str> = planned.iter().map(|p| p.manifest.kind.as_str()).collect();
        assert_eq!(
            order,
            [
                "ServiceAccount",
                "ConfigMap",
                "Service",
                "Deployment",
                "PodDisruptionBudget",
                "Widget"
            ]
        );
        let labels = &planned[0].manifest.object["metadata"]["labels"];
        assert_eq!(labels["app"], "web");
        assert_eq!(labels[LABEL_FLUX_CONFIG], "web");
        assert_eq!(labels[LABEL_FLUX_CONFIG_NAMESPACE], "team-a");
        let live: BTreeMap<String, String> = serde_json::from_value(labels.clone()).unwrap();
        assert!(owner.owns(Some(&live)));
        let other = Owner {
            name: "api".into(),
            namespace: "team-a".into(),
        };
        assert!(!other.owns(Some(&live)));
    }

    #[test]
    fn keys_ignore_the_api_version() {
        let a = ObjectKey::of_ref(&ObjectRef {
            api_version: "autoscaling/v1".into(),
            kind: "HorizontalPodAutoscaler".into(),
            namespace: Some("a".into()),
            name: "x".into(),
        });
        let b = ObjectKey::of_ref(&ObjectRef {
            api_version: "autoscaling/v2".into(),
            kind: "HorizontalPodAutoscaler".into(),
            namespace: Some("a".into()),
            name: "x".into(),
        });
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "HorizontalPodAutoscaler/a/x");
    }

    #[test]
    fn cluster_scoped_objects_come_first_namespaces_before_all() {
        let mut k = kinds(&[("fluxgate.dev/v1alpha1", "FluxConfig"), ("v1", "ConfigMap")]);
        for (av, kind) in [
            ("v1", "Namespace"),
            ("fluxgate.dev/v1alpha1", "PlatformDefaults"),
        ] {
            k.known.insert(
                (av.into(), kind.into()),
                Ok((ApiResource::from_gvk(&gvk_of(av, kind)), Scope::Cluster)),
            );
        }
        let cluster = |av: &str, kind: &str| Manifest {
            scope: Scope::Cluster,
            namespace: String::new(),
            ..manifest(av, kind, "x")
        };
        let manifests = vec![
            manifest("fluxgate.dev/v1alpha1", "FluxConfig", "x"),
            manifest("v1", "ConfigMap", "x"),
            cluster("fluxgate.dev/v1alpha1", "PlatformDefaults"),
            cluster("v1", "Namespace"),
        ];
        let owner = Owner {
            name: "platform".into(),
            namespace: "fluxgate-system".into(),
        };
        let planned = plan(manifests, &k, &owner);
        let order: Vec<String> = planned.iter().map(|p| p.key().to_string()).collect();
        assert_eq!(
            order,
            [
                "Namespace/x",
                "PlatformDefaults/x",
                "ConfigMap/team-a/x",
                "FluxConfig/team-a/x"
            ]
        );
    }

    #[test]
    fn adoption_is_marked_and_recognised() {
        let owner = Owner {
            name: "platform".into(),
            namespace: "fluxgate-system".into(),
        };
        let ns = |labels: serde_json::Value, annotations: serde_json::Value| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "team-a", "labels": labels, "annotations": annotations},
            }))
            .unwrap()
        };
        let ours = serde_json::json!({
            LABEL_FLUX_CONFIG: "platform",
            LABEL_FLUX_CONFIG_NAMESPACE: "fluxgate-system",
        });
        // Made by someone else: adopted. Made by us: not. Adopted before: still.
        assert!(is_adopted(
            &ns(serde_json::json!({}), serde_json::json!({})),
            &owner
        ));
        assert!(!is_adopted(
            &ns(ours.clone(), serde_json::json!({})),
            &owner
        ));
        assert!(is_adopted(
            &ns(ours, serde_json::json!({ANNOTATION_ADOPTED: "true"})),
            &owner
        ));

        let mut p = Planned {
            manifest: manifest("v1", "Namespace", "team-a"),
            resource: ApiResource::from_gvk(&gvk_of("v1", "Namespace")),
        };
        p.mark_adopted();
        assert_eq!(
            p.manifest.object["metadata"]["annotations"][ANNOTATION_ADOPTED],
            "true"
        );
    }

    #[test]
    fn differences_ignore_what_every_write_changes() {
        let obj = |rv: &str, label: &str| -> DynamicObject {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "a", "resourceVersion": rv, "labels": {"x": label},
                             "managedFields": [{"manager": "m", "operation": "Apply", "time": format!("2024-01-01T00:00:0{rv}Z")}]},
            }))
            .unwrap()
        };
        assert!(!differs(Some(&obj("1", "a")), &obj("2", "a")));
        assert!(differs(Some(&obj("1", "a")), &obj("1", "b")));
        assert!(differs(None, &obj("1", "a")));
    }
}
