//! Keeps the [`Snapshot`] current: reflectors on PlatformDefaults,
//! Namespaces (metadata-only watch) and FluxConfigs, and one task that, after each
//! batch of watch events, rebuilds the parts that changed and publishes a new
//! snapshot. Nothing is published until every reflector has finished its
//! initial list, which is what `/readyz` waits for.
//!
//! Watch events arrive within milliseconds of a write, and a rebuild takes
//! milliseconds, so a change is visible to admission well within a second.
//! Bursts coalesce: all events already waiting are applied before one
//! rebuild.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate_crds::{FluxConfig, PlatformDefaults};
use fluxgate_platform_defaults::PlatformSettings;
use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Namespace;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Api, Client, ResourceExt};

use crate::Error;
use crate::http::AppState;
use crate::snapshot::{FluxConfigIndex, Labels, Snapshot, compile_platform};

/// How long FluxConfig-only changes are gathered before the snapshot is
/// rebuilt (the per-namespace FluxConfig counts may lag this much).
const FLUX_CONFIG_BATCH: Duration = Duration::from_millis(50);

/// The three watched kinds, also indexes into per-part flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    PlatformDefaults = 0,
    Namespaces = 1,
    FluxConfigs = 2,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::PlatformDefaults => "PlatformDefaults",
            Part::Namespaces => "Namespaces",
            Part::FluxConfigs => "FluxConfigs",
        }
    }
}

struct Stores {
    platform_defaults: Store<DeserializeGuard<PlatformDefaults>>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    flux_configs: Store<DeserializeGuard<FluxConfig>>,
}

/// Watches the cluster and publishes a new snapshot into `state` after every
/// change, until a watch stream ends (it does not under normal operation:
/// errors are retried with backoff).
pub(crate) async fn maintain_snapshot(
    client: Client,
    settings: PlatformSettings,
    state: AppState,
) -> Result<(), Error> {
    let (pd_store, pd_writer) = reflector::store();
    let (ns_store, ns_writer) = reflector::store();
    let (fc_store, fc_writer) = reflector::store();
    let config = watcher::Config::default();

    let pds = reflector::reflector(
        pd_writer,
        watcher(
            Api::<DeserializeGuard<PlatformDefaults>>::all(client.clone()),
            config.clone(),
        )
        .default_backoff(),
    )
    .map(|event| (Part::PlatformDefaults, event.map(|e| Change::of(&e))));
    let namespaces = reflector::reflector(
        ns_writer,
        // Metadata only: labels are all the webhook reads.
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            config.clone(),
        )
        .default_backoff(),
    )
    .map(|event| (Part::Namespaces, event.map(|e| Change::of(&e))));
    let fcs = reflector::reflector(
        fc_writer,
        watcher(Api::<DeserializeGuard<FluxConfig>>::all(client), config).default_backoff(),
    )
    .map(|event| (Part::FluxConfigs, event.map(|e| Change::of(&e))));
    let mut events = futures::stream::select_all([pds.boxed(), namespaces.boxed(), fcs.boxed()]);

    let stores = Stores {
        platform_defaults: pd_store,
        namespaces: ns_store,
        flux_configs: fc_store,
    };
    let mut synced = [false; 3];
    let mut dirty = [false; 3];
    let mut current: Option<Snapshot> = None;

    while let Some((part, event)) = events.next().await {
        note(part, event, &mut synced, &mut dirty);
        // Apply every event already waiting before rebuilding once.
        while let Some(Some((part, event))) = events.next().now_or_never() {
            note(part, event, &mut synced, &mut dirty);
        }
        if !synced.iter().all(|s| *s) || !dirty.iter().any(|d| *d) {
            continue;
        }
        // Only FluxConfigs changed (they only feed the per-namespace
        // counts): gather a burst before re-reading the whole store, so a
        // platform sync writing hundreds of FluxConfigs costs a few
        // rebuilds, not one per event. PlatformDefaults and namespace
        // changes are published at once.
        if current.is_some() && dirty == [false, false, true] {
            tokio::time::sleep(FLUX_CONFIG_BATCH).await;
            while let Some(Some((part, event))) = events.next().now_or_never() {
                note(part, event, &mut synced, &mut dirty);
            }
        }
        let started = Instant::now();
        let snapshot = rebuild(current.take(), &stores, &settings, dirty);
        dirty = [false; 3];
        if state.snapshot().is_none() {
            tracing::info!(
                platform_defaults = snapshot.platform_defaults.len(),
                namespaces = snapshot.namespaces.len(),
                flux_configs = snapshot.flux_config_count(),
                "initial lists done; admission snapshot ready"
            );
        }
        state.publish(Arc::new(snapshot.clone()));
        tracing::debug!(elapsed = ?started.elapsed(), "admission snapshot rebuilt");
        current = Some(snapshot);
    }
    Err(Error::WatchEnded)
}

/// What a watch event means for the snapshot; the object itself is read
/// from the store.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// A relist started; the store keeps its state until it is done.
    Relisting,
    /// An initial list or relist is done and the store swapped it in.
    Listed,
    /// An object was added, changed or deleted.
    Object,
}

impl Change {
    fn of<K>(event: &watcher::Event<K>) -> Self {
        match event {
            watcher::Event::Init | watcher::Event::InitApply(_) => Change::Relisting,
            watcher::Event::InitDone => Change::Listed,
            watcher::Event::Apply(_) | watcher::Event::Delete(_) => Change::Object,
        }
    }
}

fn note(
    part: Part,
    event: Result<Change, watcher::Error>,
    synced: &mut [bool; 3],
    dirty: &mut [bool; 3],
) {
    let i = part as usize;
    match event {
        Ok(Change::Listed) => {
            if !synced[i] {
                tracing::info!(kind = part.name(), "initial list done");
            }
            synced[i] = true;
            dirty[i] = true;
        }
        Ok(Change::Object) => dirty[i] = true,
        Ok(Change::Relisting) => {}
        Err(err) => {
            tracing::warn!(kind = part.name(), error = %err, "watch failed; retrying with backoff");
        }
    }
}

/// A snapshot with the `dirty` parts read anew from the stores and the
/// others taken from `previous`.
fn rebuild(
    previous: Option<Snapshot>,
    stores: &Stores,
    settings: &PlatformSettings,
    dirty: [bool; 3],
) -> Snapshot {
    let needs = |part: Part| previous.is_none() || dirty[part as usize];
    let (platform, platform_defaults) = match &previous {
        Some(p) if !needs(Part::PlatformDefaults) => {
            (Arc::clone(&p.platform), Arc::clone(&p.platform_defaults))
        }
        _ => {
            let objects = read_platform_defaults(&stores.platform_defaults);
            let platform = compile_platform(settings.clone(), &objects);
            for rejected in platform.rejected() {
                tracing::warn!("{rejected}; this PlatformDefaults is ignored until it is fixed");
            }
            (Arc::new(platform), Arc::new(objects))
        }
    };
    let namespaces = match &previous {
        Some(p) if !needs(Part::Namespaces) => Arc::clone(&p.namespaces),
        _ => Arc::new(read_namespaces(&stores.namespaces)),
    };
    let flux_configs = match &previous {
        Some(p) if !needs(Part::FluxConfigs) => Arc::clone(&p.flux_configs),
        _ => Arc::new(read_flux_configs(&stores.flux_configs)),
    };
    Snapshot {
        platform,
        platform_defaults,
        namespaces,
        flux_configs,
    }
}

fn read_platform_defaults(
    store: &Store<DeserializeGuard<PlatformDefaults>>,
) -> Vec<Arc<PlatformDefaults>> {
    let mut objects: Vec<Arc<PlatformDefaults>> = store
        .state()
        .iter()
        .filter_map(|guard| match &guard.0 {
            Ok(pd) => Some(Arc::new(pd.clone())),
            Err(invalid) => {
                tracing::warn!(
                    name = invalid.metadata.name.as_deref().unwrap_or_default(),
                    error = %invalid.error,
                    "cannot read PlatformDefaults; it is ignored"
                );
                None
            }
        })
        .collect();
    // Store order is arbitrary; the platform sorts for layering, this keeps
    // logs and warnings stable too.
    objects.sort_by_key(|pd| pd.name_any());
    objects
}

fn read_namespaces(store: &Store<PartialObjectMeta<Namespace>>) -> BTreeMap<String, Labels> {
    store
        .state()
        .iter()
        .map(|ns| (ns.name_any(), ns.labels().clone()))
        .collect()
}

fn read_flux_configs(store: &Store<DeserializeGuard<FluxConfig>>) -> FluxConfigIndex {
    let mut index = FluxConfigIndex::new();
    for guard in store.state() {
        let meta = match &guard.0 {
            Ok(fc) => &fc.metadata,
            Err(invalid) => &invalid.metadata,
        };
        let (Some(namespace), Some(name)) = (meta.namespace.clone(), meta.name.clone()) else {
            continue;
        };
        index.entry(namespace).or_default().insert(name, guard);
    }
    index
}
