//! Reading the root objects (FluxConfigs, PlatformDefaults) so that one
//! object the Rust types cannot deserialise never stops a watch.
//!
//! A typed watcher fails its whole list, and every relist after it, when a
//! single object does not deserialise; the operator would then stop seeing
//! every team's changes. The CRD schema does not rule this out: it admits,
//! for instance, a status condition whose `lastTransitionTime` carries more
//! than nine fractional digits, which Kubernetes accepts as a `date-time` and
//! the Rust `Time` type rejects; and a team's reconciler may write its own
//! FluxConfig's status. Version skew between a newer CRD and an older
//! operator is the other classic source.
//!
//! So the watches read [`DeserializeGuard`]s and [`Guarded`] turns them back
//! into typed events, one object at a time. An object that reads is passed
//! on as it is. One that does not is logged, reported once per version by a
//! Warning Event (`InvalidObject`) on the object, counted in a gauge, and
//! stands in the store according to a [`Policy`]:
//!
//! - **FluxConfig** ([`Policy::HoldNamespace`]): a stand-in with the
//!   object's metadata and an empty spec. The reconcile sees that it is
//!   unreadable and changes nothing in its namespace (no apply, no prune, no
//!   status) until it reads again: what runs keeps running, with its rights,
//!   so a reconciler that wrote the bad status can still repair it, and no
//!   other namespace is affected. Deletion still works: the stand-in carries
//!   the deletion timestamp and finalizers, so the cleanup runs. This does
//!   not depend on what the process saw before, so a restart behaves alike.
//! - **PlatformDefaults** ([`Policy::KeepLastReadable`]): the last readable
//!   version stays in force (an unreadable object may loosen or tighten the
//!   rules; guessing either way would change what teams may do). One this
//!   process never read is left out until it reads.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt, future};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::DeserializeGuard;
use kube::core::error_boundary::InvalidObject;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tracing::warn;

use crate::metrics::Metrics;

/// Reason of the Warning Event on an object that cannot be read.
pub const INVALID_OBJECT_REASON: &str = "InvalidObject";

/// Identifies an object: kind, namespace (empty when cluster-scoped), name.
type Key = (String, String, String);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    uid: Option<String>,
    resource_version: Option<String>,
}

/// The objects that exist but cannot be read right now, shared by the
/// watches (which fill it) and the reconciles (which consult it).
#[derive(Debug, Clone, Default)]
pub struct UnreadableObjects(Arc<Mutex<BTreeMap<Key, Entry>>>);

impl UnreadableObjects {
    /// Whether `kind` `namespace/name` currently cannot be read.
    pub fn contains(&self, kind: &str, namespace: Option<&str>, name: &str) -> bool {
        let key = (
            kind.to_owned(),
            namespace.unwrap_or_default().to_owned(),
            name.to_owned(),
        );
        self.0.lock().is_ok_and(|m| m.contains_key(&key))
    }

    /// Names of the objects of `kind` in `namespace` that cannot be read,
    /// except `except`.
    pub fn in_namespace(&self, kind: &str, namespace: &str, except: Option<&str>) -> Vec<String> {
        self.0
            .lock()
            .map(|m| {
                m.keys()
                    .filter(|(k, ns, name)| {
                        k == kind && ns == namespace && Some(name.as_str()) != except
                    })
                    .map(|(_, _, name)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many objects of `kind` cannot be read.
    pub fn count(&self, kind: &str) -> usize {
        self.0
            .lock()
            .map(|m| m.keys().filter(|(k, _, _)| k == kind).count())
            .unwrap_or(0)
    }

    /// Records an unreadable version; true when this version is new (so it
    /// is reported once).
    fn mark(&self, key: Key, entry: Entry) -> bool {
        let Ok(mut map) = self.0.lock() else {
            return true;
        };
        map.insert(key, entry.clone()) != Some(entry)
    }

    fn unmark(&self, key: &Key) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(key);
        }
    }

    /// Keeps, of `kind`, only the keys in `seen` (after a relist).
    fn retain(&self, kind: &str, seen: &BTreeSet<Key>) {
        if let Ok(mut map) = self.0.lock() {
            map.retain(|key, _| key.0 != kind || seen.contains(key));
        }
    }
}

/// One unreadable object to report.
#[derive(Debug)]
pub struct Report {
    reference: ObjectReference,
    error: String,
    consequence: &'static str,
}

/// What stands in the store for an object that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Its metadata with an empty spec; the reconcile holds its namespace.
    HoldNamespace,
    /// Its last readable version (with the current deletion state), if any.
    KeepLastReadable,
}

/// Publishes a Warning Event and a log line for each report, until every
/// sender is gone (the watches stopped).
pub async fn report_unreadable(
    recorder: Recorder,
    metrics: Arc<Metrics>,
    mut reports: mpsc::UnboundedReceiver<Report>,
) {
    while let Some(report) = reports.recv().await {
        let Report {
            reference,
            error,
            consequence,
        } = report;
        let kind = reference.kind.clone().unwrap_or_default();
        let object = match &reference.namespace {
            Some(ns) => format!("{ns}/{}", reference.name.as_deref().unwrap_or_default()),
            None => reference.name.clone().unwrap_or_default(),
        };
        warn!(kind = %kind, object = %object, error = %error, "cannot read object; {consequence}");
        let mut note = format!("cannot read this {kind}: {error}; {consequence}");
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_: EventType::Warning,
            reason: INVALID_OBJECT_REASON.to_owned(),
            note: Some(note),
            action: "Read".to_owned(),
            secondary: None,
        };
        match recorder.publish(&event, &reference).await {
            Ok(()) => metrics.wrote("event"),
            Err(e) => warn!(error = %e, object = %object, "cannot publish the InvalidObject event"),
        }
    }
}

/// Turns a watch of [`DeserializeGuard`]s back into typed events (see the
/// module docs). `reader` is the store the typed events feed: it holds the
/// last readable version of each object.
pub struct Guarded<K: Resource<DynamicType = ()> + 'static> {
    reader: Store<K>,
    unreadable: UnreadableObjects,
    reports: mpsc::UnboundedSender<Report>,
    metrics: Arc<Metrics>,
    policy: Policy,
    /// Unreadable objects seen since the current relist began.
    relisting: Option<BTreeSet<Key>>,
}

impl<K: Resource<DynamicType = ()> + 'static> Debug for Guarded<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("kind", &K::kind(&()))
            .finish_non_exhaustive()
    }
}

impl<K> Guarded<K>
where
    K: Resource<DynamicType = ()> + Clone + Default + Debug + Send + Sync + 'static,
{
    /// A new adapter.
    pub fn new(
        reader: Store<K>,
        unreadable: UnreadableObjects,
        reports: mpsc::UnboundedSender<Report>,
        metrics: Arc<Metrics>,
        policy: Policy,
    ) -> Self {
        Self {
            reader,
            unreadable,
            reports,
            metrics,
            policy,
            relisting: None,
        }
    }

    /// Adapts a watch stream.
    pub fn stream<S>(
        mut self,
        events: S,
    ) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
    where
        S: Stream<Item = Result<watcher::Event<DeserializeGuard<K>>, watcher::Error>> + Send,
    {
        events
            .map(move |item| item.map(|event| self.adapt(event)))
            .filter_map(|item| future::ready(item.transpose()))
    }

    fn key(meta: &ObjectMeta) -> Key {
        (
            K::kind(&()).into_owned(),
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    /// The last readable version of the object `meta` describes.
    fn last_readable(&self, meta: &ObjectMeta) -> Option<K> {
        let mut r = ObjectRef::<K>::new(meta.name.as_deref().unwrap_or_default());
        if let Some(ns) = &meta.namespace {
            r = r.within(ns);
        }
        self.reader.get(&r).map(|k| (*k).clone())
    }

    /// Adapts one event; `None` drops it.
    pub fn adapt(
        &mut self,
        event: watcher::Event<DeserializeGuard<K>>,
    ) -> Option<watcher::Event<K>> {
        use watcher::Event as E;
        let out = match event {
            E::Init => {
                self.relisting = Some(BTreeSet::new());
                Some(E::Init)
            }
            E::InitDone => {
                if let Some(seen) = self.relisting.take() {
                    self.unreadable.retain(&K::kind(&()), &seen);
                }
                Some(E::InitDone)
            }
            E::Apply(DeserializeGuard(Ok(k))) => {
                self.unreadable.unmark(&Self::key(k.meta()));
                Some(E::Apply(k))
            }
            E::InitApply(DeserializeGuard(Ok(k))) => {
                self.unreadable.unmark(&Self::key(k.meta()));
                Some(E::InitApply(k))
            }
            E::Delete(DeserializeGuard(Ok(k))) => {
                self.unreadable.unmark(&Self::key(k.meta()));
                Some(E::Delete(k))
            }
            E::Delete(DeserializeGuard(Err(invalid))) => {
                self.unreadable.unmark(&Self::key(&invalid.metadata));
                self.last_readable(&invalid.metadata).map(E::Delete)
            }
            E::Apply(DeserializeGuard(Err(invalid))) => {
                match self.unreadable_version(invalid) {
                    Substitute::Kept(k) => Some(E::Apply(k)),
                    // The name now belongs to a new object that never read:
                    // the old one is gone.
                    Substitute::Replaced(old) => Some(E::Delete(old)),
                    Substitute::None => None,
                }
            }
            E::InitApply(DeserializeGuard(Err(invalid))) => {
                if let Some(seen) = &mut self.relisting {
                    seen.insert(Self::key(&invalid.metadata));
                }
                match self.unreadable_version(invalid) {
                    Substitute::Kept(k) => Some(E::InitApply(k)),
                    Substitute::Replaced(_) | Substitute::None => None,
                }
            }
        };
        let kind = K::kind(&());
        self.metrics
            .set_unreadable(&kind, self.unreadable.count(&kind));
        out
    }

    /// Records and reports an unreadable version; returns what stands in
    /// for it.
    fn unreadable_version(&mut self, invalid: InvalidObject) -> Substitute<K> {
        let InvalidObject { error, metadata } = invalid;
        let last = self
            .last_readable(&metadata)
            .filter(|k| k.meta().uid.is_some());
        let (substitute, consequence) = match (self.policy, last) {
            (Policy::HoldNamespace, _) => {
                let mut k = K::default();
                *k.meta_mut() = metadata.clone();
                (
                    Substitute::Kept(k),
                    "nothing in its namespace is changed until it is fixed",
                )
            }
            (Policy::KeepLastReadable, Some(mut k)) if k.meta().uid == metadata.uid => {
                // Deletion must still be seen.
                k.meta_mut().deletion_timestamp = metadata.deletion_timestamp.clone();
                k.meta_mut().finalizers = metadata.finalizers.clone();
                (
                    Substitute::Kept(k),
                    "its last readable version stays in effect until it is fixed",
                )
            }
            (Policy::KeepLastReadable, Some(old)) => {
                (Substitute::Replaced(old), "it is ignored until it is fixed")
            }
            (Policy::KeepLastReadable, None) => {
                (Substitute::None, "it is ignored until it is fixed")
            }
        };
        let entry = Entry {
            uid: metadata.uid.clone(),
            resource_version: metadata.resource_version.clone(),
        };
        if self.unreadable.mark(Self::key(&metadata), entry) {
            let reference = ObjectReference {
                api_version: Some(K::api_version(&()).into_owned()),
                kind: Some(K::kind(&()).into_owned()),
                name: metadata.name.clone(),
                namespace: metadata.namespace.clone(),
                uid: metadata.uid.clone(),
                resource_version: metadata.resource_version.clone(),
                ..ObjectReference::default()
            };
            // The receiver lives as long as the watches; a send can only
            // fail during shutdown, when nothing needs reporting.
            let _ = self.reports.send(Report {
                reference,
                error,
                consequence,
            });
        }
        substitute
    }
}

enum Substitute<K> {
    /// What stands in for it.
    Kept(K),
    /// An older object of the same name that is gone now.
    Replaced(K),
    /// Nothing readable was ever seen.
    None,
}

#[cfg(test)]
mod tests {
    use fluxgate_crds::FluxConfig;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event as E;
    use serde_json::json;

    use super::*;

    /// A FluxConfig as the API server may store it: its schema admits a
    /// `date-time` with more fractional digits than the Rust `Time` reads.
    fn raw(name: &str, uid: &str, rv: &str, time: &str) -> serde_json::Value {
        json!({
            "apiVersion": "fluxgate.dev/v1alpha1",
            "kind": "FluxConfig",
            "metadata": {"name": name, "namespace": "team-a", "uid": uid, "resourceVersion": rv,
                         "finalizers": ["fluxgate.dev/cleanup"]},
            "spec": {"repo": format!("https://git.corp.example/team-a/{name}.git")},
            "status": {"conditions": [{
                "type": "Ready", "status": "True", "reason": "Synced", "message": "",
                "lastTransitionTime": time,
            }]},
        })
    }

    const GOOD: &str = "2024-01-01T00:00:00Z";
    const BAD: &str = "2024-01-01T00:00:00.1234567891234Z";

    fn guard(v: serde_json::Value) -> DeserializeGuard<FluxConfig> {
        serde_json::from_value(v).unwrap()
    }

    struct Fixture {
        adapter: Guarded<FluxConfig>,
        writer: reflector::store::Writer<FluxConfig>,
        reader: Store<FluxConfig>,
        reports: mpsc::UnboundedReceiver<Report>,
        unreadable: UnreadableObjects,
        metrics: Arc<Metrics>,
    }

    impl Fixture {
        fn new() -> Self {
            Self::with(Policy::KeepLastReadable)
        }

        fn with(policy: Policy) -> Self {
            let (reader, writer) = reflector::store::<FluxConfig>();
            let (tx, reports) = mpsc::unbounded_channel();
            let unreadable = UnreadableObjects::default();
            let metrics = Arc::new(Metrics::new());
            Self {
                adapter: Guarded::new(
                    reader.clone(),
                    unreadable.clone(),
                    tx,
                    metrics.clone(),
                    policy,
                ),
                writer,
                reader,
                reports,
                unreadable,
                metrics,
            }
        }

        /// Feeds one event through the adapter into the store, as the
        /// reflector does.
        fn feed(&mut self, event: E<DeserializeGuard<FluxConfig>>) -> Option<E<FluxConfig>> {
            let out = self.adapter.adapt(event);
            if let Some(e) = &out {
                self.writer.apply_watcher_event(e);
            }
            out
        }

        fn stored(&self, name: &str) -> Option<Arc<FluxConfig>> {
            self.reader.get(&ObjectRef::new(name).within("team-a"))
        }
    }

    #[test]
    fn the_schema_admits_what_the_rust_type_cannot_read() {
        // The premise: the typed read fails, so a typed list would fail whole.
        assert!(serde_json::from_value::<FluxConfig>(raw("a", "u1", "1", BAD)).is_err());
        assert!(serde_json::from_value::<FluxConfig>(raw("a", "u1", "1", GOOD)).is_ok());
        let DeserializeGuard(Err(invalid)) = guard(raw("a", "u1", "1", BAD)) else {
            panic!("the guard read it")
        };
        assert_eq!(invalid.metadata.name.as_deref(), Some("a"));
        assert!(
            invalid.error.contains("unparsed input"),
            "{}",
            invalid.error
        );
    }

    #[test]
    fn one_unreadable_object_does_not_stop_a_relist_of_the_others() {
        let mut f = Fixture::new();
        f.feed(E::Init);
        assert!(
            f.feed(E::InitApply(guard(raw("bad", "u1", "1", BAD))))
                .is_none()
        );
        assert!(
            f.feed(E::InitApply(guard(raw("good", "u2", "2", GOOD))))
                .is_some()
        );
        f.feed(E::InitDone);
        assert!(f.stored("good").is_some());
        assert!(f.stored("bad").is_none());
        assert!(f.unreadable.contains("FluxConfig", Some("team-a"), "bad"));
        assert_eq!(f.metrics.unreadable("FluxConfig"), 1);
        let report = f.reports.try_recv().unwrap();
        assert_eq!(report.reference.name.as_deref(), Some("bad"));
        assert_eq!(report.consequence, "it is ignored until it is fixed");
        // A later good object still arrives.
        assert!(
            f.feed(E::Apply(guard(raw("new", "u3", "3", GOOD))))
                .is_some()
        );
        assert!(f.stored("new").is_some());
    }

    #[test]
    fn an_object_that_stops_reading_keeps_its_last_readable_version_and_can_be_deleted() {
        let mut f = Fixture::new();
        f.feed(E::Init);
        f.feed(E::InitApply(guard(raw("a", "u1", "1", GOOD))));
        f.feed(E::InitDone);

        // Broken: the last readable version stays, reported once per version.
        let Some(E::Apply(kept)) = f.feed(E::Apply(guard(raw("a", "u1", "2", BAD)))) else {
            panic!("not kept")
        };
        assert_eq!(kept.metadata.resource_version.as_deref(), Some("1"));
        assert!(
            f.reports
                .try_recv()
                .unwrap()
                .consequence
                .contains("last readable")
        );
        f.feed(E::Apply(guard(raw("a", "u1", "2", BAD))));
        assert!(f.reports.try_recv().is_err(), "reported twice");

        // Deleting it: the deletion shows, on the last readable version.
        let mut deleting = raw("a", "u1", "3", BAD);
        deleting["metadata"]["deletionTimestamp"] = json!("2024-02-01T00:00:00Z");
        let Some(E::Apply(kept)) = f.feed(E::Apply(guard(deleting))) else {
            panic!("not kept")
        };
        assert!(kept.metadata.deletion_timestamp.is_some());
        assert_eq!(
            kept.metadata.finalizers,
            Some(vec!["fluxgate.dev/cleanup".into()])
        );
        assert!(f.stored("a").unwrap().metadata.deletion_timestamp.is_some());

        // Gone: out of the store and of the unreadable set.
        assert!(matches!(
            f.feed(E::Delete(guard(raw("a", "u1", "4", BAD)))),
            Some(E::Delete(_))
        ));
        assert!(f.stored("a").is_none());
        assert_eq!(f.unreadable.count("FluxConfig"), 0);
        assert_eq!(f.metrics.unreadable("FluxConfig"), 0);
    }

    #[test]
    fn a_fixed_object_reads_again_and_a_recreated_unreadable_one_replaces_nothing() {
        let mut f = Fixture::new();
        f.feed(E::Apply(guard(raw("a", "u1", "1", GOOD))));
        f.feed(E::Apply(guard(raw("a", "u1", "2", BAD))));
        assert!(f.unreadable.contains("FluxConfig", Some("team-a"), "a"));
        f.feed(E::Apply(guard(raw("a", "u1", "3", GOOD))));
        assert!(!f.unreadable.contains("FluxConfig", Some("team-a"), "a"));
        assert_eq!(
            f.stored("a").unwrap().metadata.resource_version.as_deref(),
            Some("3")
        );
        // Same name, new object (another uid) that does not read: the old
        // one is gone, nothing stands in for the new one.
        assert!(matches!(
            f.feed(E::Apply(guard(raw("a", "u9", "9", BAD)))),
            Some(E::Delete(_))
        ));
        assert!(f.stored("a").is_none());
    }

    #[test]
    fn a_held_namespace_has_a_stand_in_that_can_still_be_deleted() {
        let mut f = Fixture::with(Policy::HoldNamespace);
        f.feed(E::Init);
        f.feed(E::InitApply(guard(raw("bad", "u1", "1", BAD))));
        f.feed(E::InitApply(guard(raw("good", "u2", "2", GOOD))));
        f.feed(E::InitDone);
        let stand_in = f.stored("bad").unwrap();
        assert_eq!(stand_in.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(
            stand_in.spec.repo, "",
            "a stand-in must not carry a guessed spec"
        );
        assert!(f.unreadable.contains("FluxConfig", Some("team-a"), "bad"));
        assert!(
            f.reports
                .try_recv()
                .unwrap()
                .consequence
                .contains("namespace")
        );

        let mut deleting = raw("bad", "u1", "3", BAD);
        deleting["metadata"]["deletionTimestamp"] = json!("2024-02-01T00:00:00Z");
        f.feed(E::Apply(guard(deleting)));
        let stand_in = f.stored("bad").unwrap();
        assert!(stand_in.metadata.deletion_timestamp.is_some());
        assert_eq!(
            stand_in.metadata.finalizers,
            Some(vec!["fluxgate.dev/cleanup".into()])
        );
        f.feed(E::Delete(guard(raw("bad", "u1", "4", BAD))));
        assert!(f.stored("bad").is_none());
        assert!(f.stored("good").is_some());
    }

    #[test]
    fn a_relist_forgets_unreadable_objects_that_are_gone() {
        let mut f = Fixture::new();
        f.feed(E::Apply(guard(raw("a", "u1", "1", BAD))));
        assert_eq!(f.unreadable.count("FluxConfig"), 1);
        f.feed(E::Init);
        f.feed(E::InitDone);
        assert_eq!(f.unreadable.count("FluxConfig"), 0);
    }
}
