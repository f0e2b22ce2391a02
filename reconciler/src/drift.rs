//! Drift detection: watches of what the reconciler applied, so that an
//! object edited or deleted by someone else is re-applied within seconds
//! rather than at the next interval.
//!
//! One `kube-runtime` watcher runs per (kind, namespace) applied, selecting
//! objects by [`LABEL_FLUX_CONFIG_NAMESPACE`]; all FluxConfigs of the
//! namespace share it. After each apply the [`Tracker`] records the
//! reconciler's own server-side-apply field set of the object (its
//! `managedFields` entry). An event means drift when the object was deleted,
//! or when that field set changed: another manager changing a field the
//! reconciler set takes ownership of it. Status updates and defaulting by
//! other controllers leave the set alone, so they cause no work (and no
//! writes). A watch that restarts compares its fresh list with what is
//! tracked, so deletions during the gap are seen too.
//!
//! The tracker only signals: the FluxConfig's worker takes the drifted keys
//! and re-applies them from the revision it holds.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use futures::StreamExt as _;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::watcher::{self, Event};
use serde_json::Value;
use tokio::sync::Notify;

use crate::apply::{LABEL_FLUX_CONFIG, LABEL_FLUX_CONFIG_NAMESPACE, ObjectKey, applied_fields};

/// One watch: a resource in a namespace (empty: a cluster-scoped
/// resource, watched cluster-wide).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WatchKey {
    /// API group.
    pub group: String,
    /// API version (without group).
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural resource name.
    pub plural: String,
    /// Namespace watched.
    pub namespace: String,
}

impl WatchKey {
    /// The watch for objects of `resource` in `namespace`.
    pub fn new(resource: &ApiResource, namespace: &str) -> Self {
        Self {
            group: resource.group.clone(),
            version: resource.version.clone(),
            kind: resource.kind.clone(),
            plural: resource.plural.clone(),
            namespace: namespace.to_owned(),
        }
    }

    fn resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.clone(),
            version: self.version.clone(),
            api_version: if self.group.is_empty() {
                self.version.clone()
            } else {
                format!("{}/{}", self.group, self.version)
            },
            kind: self.kind.clone(),
            plural: self.plural.clone(),
        }
    }

    fn covers(&self, key: &ObjectKey) -> bool {
        key.group == self.group && key.kind == self.kind && key.namespace == self.namespace
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Sig {
    /// An apply is under way: its own events are not drift.
    InFlight,
    /// The field set after the last apply.
    Fields(Value),
    /// No field set was returned; only deletion is detected.
    DeletionOnly,
}

#[derive(Debug)]
struct Tracked {
    flux_config: String,
    sig: Sig,
}

#[derive(Debug, Default)]
struct Slot {
    notify: Arc<Notify>,
    drifted: BTreeSet<ObjectKey>,
}

#[derive(Debug, Default)]
struct State {
    objects: HashMap<ObjectKey, Tracked>,
    watches: HashMap<WatchKey, tokio::task::AbortHandle>,
    wanted: HashMap<String, BTreeSet<WatchKey>>,
    slots: HashMap<String, Slot>,
}

impl State {
    fn mark(&mut self, key: &ObjectKey) {
        let Some(tracked) = self.objects.get(key) else {
            return;
        };
        if tracked.sig == Sig::InFlight {
            return;
        }
        let slot = self.slots.entry(tracked.flux_config.clone()).or_default();
        slot.drifted.insert(key.clone());
        slot.notify.notify_one();
    }
}

/// Tracks applied objects and runs the watches; shared by the workers of
/// one reconciler.
pub struct Tracker {
    client: kube::Client,
    team_namespace: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker")
            .field("team_namespace", &self.team_namespace)
            .finish_non_exhaustive()
    }
}

impl Tracker {
    /// A tracker for the reconciler of `team_namespace`.
    pub fn new(client: kube::Client, team_namespace: &str) -> Arc<Self> {
        Arc::new(Self {
            client,
            team_namespace: team_namespace.to_owned(),
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, still
        // usable: recover it rather than propagate the poison.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The notifier a FluxConfig's worker waits on.
    pub fn register(&self, flux_config: &str) -> Arc<Notify> {
        self.state()
            .slots
            .entry(flux_config.to_owned())
            .or_default()
            .notify
            .clone()
    }

    /// Marks an object as being applied: its events are ignored until
    /// [`Tracker::applied`].
    pub fn applying(&self, flux_config: &str, key: &ObjectKey) {
        self.state().objects.insert(
            key.clone(),
            Tracked {
                flux_config: flux_config.to_owned(),
                sig: Sig::InFlight,
            },
        );
    }

    /// Records the field set the apply of an object returned.
    pub fn applied(&self, flux_config: &str, key: &ObjectKey, fields: Option<Value>) {
        let mut state = self.state();
        state.objects.insert(
            key.clone(),
            Tracked {
                flux_config: flux_config.to_owned(),
                sig: fields.map_or(Sig::DeletionOnly, Sig::Fields),
            },
        );
        if let Some(slot) = state.slots.get_mut(flux_config) {
            slot.drifted.remove(key);
        }
    }

    /// Stops tracking an object (before it is pruned).
    pub fn forget(&self, key: &ObjectKey) {
        self.state().objects.remove(key);
    }

    /// Stops tracking everything of a FluxConfig and its watches.
    pub fn forget_all(self: &Arc<Self>, flux_config: &str) {
        self.state()
            .objects
            .retain(|_, t| t.flux_config != flux_config);
        self.watch(flux_config, BTreeSet::new());
    }

    /// Takes the keys of the FluxConfig's objects that drifted.
    pub fn take_drifted(&self, flux_config: &str) -> BTreeSet<ObjectKey> {
        self.state()
            .slots
            .get_mut(flux_config)
            .map(|s| std::mem::take(&mut s.drifted))
            .unwrap_or_default()
    }

    /// Number of running watches.
    pub fn watch_count(&self) -> usize {
        self.state().watches.len()
    }

    /// Sets the watches a FluxConfig needs; starts missing ones and stops
    /// those no FluxConfig needs any more.
    pub fn watch(self: &Arc<Self>, flux_config: &str, wanted: BTreeSet<WatchKey>) {
        let mut state = self.state();
        state.wanted.insert(flux_config.to_owned(), wanted);
        let all: HashSet<WatchKey> = state.wanted.values().flatten().cloned().collect();
        state.watches.retain(|key, handle| {
            let keep = all.contains(key);
            if !keep {
                handle.abort();
            }
            keep
        });
        for key in all {
            if state.watches.contains_key(&key) {
                continue;
            }
            let task = tokio::spawn(run_watch(
                Arc::downgrade(self),
                self.client.clone(),
                self.team_namespace.clone(),
                key.clone(),
            ));
            state.watches.insert(key, task.abort_handle());
        }
    }

    /// Stops every watch.
    pub fn shutdown(&self) {
        for (_, handle) in self.state().watches.drain() {
            handle.abort();
        }
    }

    fn key_of(watch: &WatchKey, object: &DynamicObject) -> Option<ObjectKey> {
        Some(ObjectKey {
            group: watch.group.clone(),
            kind: watch.kind.clone(),
            // Cluster-scoped objects have none, like their keys.
            namespace: object.metadata.namespace.clone().unwrap_or_default(),
            name: object.metadata.name.clone()?,
        })
    }

    fn observed(&self, watch: &WatchKey, object: &DynamicObject) {
        let Some(key) = Self::key_of(watch, object) else {
            return;
        };
        // Deletion in progress: the Delete event follows.
        if object.metadata.deletion_timestamp.is_some() {
            return;
        }
        let mut state = self.state();
        let drifted = match state.objects.get(&key) {
            Some(Tracked {
                sig: Sig::Fields(fields),
                ..
            }) => applied_fields(object).as_ref() != Some(fields),
            _ => false,
        };
        if drifted {
            tracing::info!(object = %key, "drift: fields the reconciler applied were changed");
            state.mark(&key);
        }
    }

    fn deleted(&self, watch: &WatchKey, object: &DynamicObject) {
        if let Some(key) = Self::key_of(watch, object) {
            let mut state = self.state();
            if state.objects.contains_key(&key) {
                tracing::info!(object = %key, "drift: an applied object was deleted");
                state.mark(&key);
            }
        }
    }

    fn relisted(&self, watch: &WatchKey, seen: &HashSet<String>) {
        let mut state = self.state();
        let missing: Vec<ObjectKey> = state
            .objects
            .keys()
            .filter(|k| watch.covers(k) && !seen.contains(&k.name))
            .cloned()
            .collect();
        for key in missing {
            state.mark(&key);
        }
    }
}

async fn run_watch(tracker: Weak<Tracker>, client: kube::Client, team: String, key: WatchKey) {
    // An empty namespace is a cluster-scoped kind (cluster mode).
    let api: Api<DynamicObject> = if key.namespace.is_empty() {
        Api::all_with(client, &key.resource())
    } else {
        Api::namespaced_with(client, &key.namespace, &key.resource())
    };
    let config = watcher::Config::default().labels(&format!(
        "{LABEL_FLUX_CONFIG_NAMESPACE}={team},{LABEL_FLUX_CONFIG}"
    ));
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut seen: HashSet<String> = HashSet::new();
    let mut listing = false;
    while let Some(event) = stream.next().await {
        let Some(tracker) = tracker.upgrade() else {
            return;
        };
        match event {
            Ok(Event::Apply(object)) => tracker.observed(&key, &object),
            Ok(Event::Delete(object)) => tracker.deleted(&key, &object),
            Ok(Event::Init) => {
                seen.clear();
                listing = true;
            }
            Ok(Event::InitApply(object)) => {
                if let Some(name) = object.metadata.name.clone() {
                    seen.insert(name);
                }
                tracker.observed(&key, &object);
            }
            Ok(Event::InitDone) => {
                if listing {
                    tracker.relisted(&key, &seen);
                }
                listing = false;
            }
            Err(error) => {
                tracing::warn!(
                    kind = %key.kind,
                    namespace = %key.namespace,
                    error = %crate::error::chain(&error),
                    "drift watch failed; retrying"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

    fn tracker() -> Arc<Tracker> {
        // The client is only used by watches, which these tests do not start.
        let config = kube::Config::new("https://127.0.0.1:1".parse().unwrap());
        let client = kube::Client::try_from(config).unwrap();
        Tracker::new(client, "team-a")
    }

    fn watch() -> WatchKey {
        WatchKey::new(
            &ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk("", "v1", "ConfigMap")),
            "team-a",
        )
    }

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            group: String::new(),
            kind: "ConfigMap".into(),
            namespace: "team-a".into(),
            name: name.into(),
        }
    }

    fn object(name: &str, fields: Value, manager: &str) -> DynamicObject {
        let mut o = DynamicObject::new(name, &watch().resource()).within("team-a");
        o.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }]);
        o
    }

    #[tokio::test]
    async fn only_changes_to_the_applied_field_set_are_drift() {
        let t = tracker();
        let notify = t.register("web");
        let fields = serde_json::json!({"f:data": {"f:a": {}}});
        t.applying("web", &key("a"));
        // Events while applying are the apply's own.
        t.observed(
            &watch(),
            &object("a", serde_json::json!({}), crate::apply::FIELD_MANAGER),
        );
        assert!(t.take_drifted("web").is_empty());
        t.applied("web", &key("a"), Some(fields.clone()));

        // Another controller's update leaves the set alone.
        t.observed(
            &watch(),
            &object("a", fields.clone(), crate::apply::FIELD_MANAGER),
        );
        assert!(t.take_drifted("web").is_empty());

        // Someone took a field: drift, and the worker is woken.
        t.observed(
            &watch(),
            &object(
                "a",
                serde_json::json!({"f:data": {}}),
                crate::apply::FIELD_MANAGER,
            ),
        );
        tokio::time::timeout(std::time::Duration::from_secs(1), notify.notified())
            .await
            .unwrap();
        assert_eq!(t.take_drifted("web"), BTreeSet::from([key("a")]));

        // Deleted, or missing from a relist: drift.
        t.deleted(&watch(), &object("a", fields.clone(), "x"));
        assert_eq!(t.take_drifted("web").len(), 1);
        t.relisted(&watch(), &HashSet::new());
        assert_eq!(t.take_drifted("web").len(), 1);

        // Untracked objects are not ours.
        t.deleted(&watch(), &object("other", fields, "x"));
        t.forget(&key("a"));
        t.relisted(&watch(), &HashSet::new());
        assert!(t.take_drifted("web").is_empty());
    }
}
