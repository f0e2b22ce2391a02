//! The webhook's view of the cluster: every `PlatformDefaults` compiled once
//! into a [`Platform`], the labels of every namespace, and every
//! `FluxConfig`. Admission decisions read one immutable [`Snapshot`]; the
//! watch task (see `watch`) builds a new one after each batch of watch events
//! and swaps it in, so no request ever calls the API server or compiles a
//! pattern.

use std::collections::BTreeMap;
use std::sync::Arc;

use fluxgate_crds::{FluxConfig, PlatformDefaults};
use fluxgate_platform_defaults::{Platform, PlatformSettings};
use kube::ResourceExt;
use kube::core::DeserializeGuard;

/// Labels of one namespace.
pub type Labels = BTreeMap<String, String>;

/// A FluxConfig as the watch delivered it: readable, or not (an object that
/// does not match the current types still counts towards the namespace's
/// limit).
pub(crate) type WatchedFluxConfig = Arc<DeserializeGuard<FluxConfig>>;

/// FluxConfigs by namespace, then by name.
pub(crate) type FluxConfigIndex = BTreeMap<String, BTreeMap<String, WatchedFluxConfig>>;

/// Everything an admission decision needs, immutable and cheap to share.
///
/// The parts are reference-counted separately so that a watch event on one
/// kind rebuilds only that part (a namespace label change does not recompile
/// the PlatformDefaults).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub(crate) platform: Arc<Platform>,
    /// The PlatformDefaults as written (the readable ones), to recompile the
    /// platform with one object replaced when a change is reviewed.
    pub(crate) platform_defaults: Arc<Vec<Arc<PlatformDefaults>>>,
    pub(crate) namespaces: Arc<BTreeMap<String, Labels>>,
    pub(crate) flux_configs: Arc<FluxConfigIndex>,
}

impl Snapshot {
    /// A snapshot of fixed content, for tests, benchmarks and offline use:
    /// the PlatformDefaults, the labels of each namespace by name, and the
    /// FluxConfigs that exist (each must have a namespace; one without is
    /// left out).
    pub fn new(
        settings: PlatformSettings,
        platform_defaults: impl IntoIterator<Item = PlatformDefaults>,
        namespaces: impl IntoIterator<Item = (String, Labels)>,
        flux_configs: impl IntoIterator<Item = FluxConfig>,
    ) -> Self {
        let platform_defaults: Vec<Arc<PlatformDefaults>> =
            platform_defaults.into_iter().map(Arc::new).collect();
        let mut index = FluxConfigIndex::new();
        for fc in flux_configs {
            if let Some(ns) = fc.namespace() {
                index
                    .entry(ns)
                    .or_default()
                    .insert(fc.name_any(), Arc::new(DeserializeGuard(Ok(fc))));
            }
        }
        Self {
            platform: Arc::new(compile_platform(settings, &platform_defaults)),
            platform_defaults: Arc::new(platform_defaults),
            namespaces: Arc::new(namespaces.into_iter().collect()),
            flux_configs: Arc::new(index),
        }
    }

    /// The compiled PlatformDefaults.
    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// The labels of a namespace; empty when the namespace is unknown (no
    /// selector with `matchLabels` matches it then, which fails closed).
    pub fn namespace_labels(&self, namespace: &str) -> &Labels {
        static EMPTY: Labels = BTreeMap::new();
        self.namespaces.get(namespace).unwrap_or(&EMPTY)
    }

    /// Whether the namespaces watch has seen `namespace` (every namespace
    /// has at least the `kubernetes.io/metadata.name` label, so a known one
    /// always has an entry).
    pub fn knows_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    /// How many FluxConfigs namespace `namespace` holds, not counting one
    /// named `except` (the object under review).
    pub fn count_flux_configs_except(&self, namespace: &str, except: &str) -> usize {
        self.flux_configs.get(namespace).map_or(0, |by_name| {
            by_name.len() - usize::from(by_name.contains_key(except))
        })
    }

    /// Number of FluxConfigs in the snapshot.
    pub fn flux_config_count(&self) -> usize {
        self.flux_configs.values().map(BTreeMap::len).sum()
    }
}

/// Compiles the platform; invalid objects end up in `rejected()`, which the
/// watch task logs.
pub(crate) fn compile_platform(
    settings: PlatformSettings,
    platform_defaults: &[Arc<PlatformDefaults>],
) -> Platform {
    Platform::new(settings, platform_defaults.iter().map(|pd| &**pd))
}

#[cfg(test)]
mod tests {
    use fluxgate_crds::FluxConfigSpec;

    use super::*;

    fn fc(ns: &str, name: &str) -> FluxConfig {
        let mut fc = FluxConfig::new(
            name,
            FluxConfigSpec {
                repo: "https://git.corp.example/x/y.git".into(),
                ..FluxConfigSpec::default()
            },
        );
        fc.metadata.namespace = Some(ns.into());
        fc
    }

    #[test]
    fn counts_other_flux_configs_in_the_namespace() {
        let snapshot = Snapshot::new(
            PlatformSettings::default(),
            [],
            [],
            [fc("a", "one"), fc("a", "two"), fc("b", "three")],
        );
        assert_eq!(snapshot.count_flux_configs_except("a", "one"), 1);
        assert_eq!(snapshot.count_flux_configs_except("a", "new"), 2);
        assert_eq!(snapshot.count_flux_configs_except("c", "x"), 0);
        assert_eq!(snapshot.flux_config_count(), 3);
        assert!(snapshot.namespace_labels("a").is_empty());
    }
}
