//! The inventory: which objects a FluxConfig applied, so that objects gone
//! from Git can be pruned.
//!
//! `status.inventory` lists at most 100 entries (the API's limit), so the
//! full list is kept in a ConfigMap [`config_map_name`] in the team
//! namespace, data key [`DATA_KEY`] (a JSON array of object references,
//! sorted) and [`REVISION_KEY`]. The ConfigMap is written only when the list
//! changes. When it cannot be read (no rights to ConfigMaps in the team
//! namespace, which happens only if the platform does not allow the team to
//! write there), the entries of `status.inventory` are used instead, which
//! is complete up to 100 objects.

use std::collections::BTreeMap;

use fluxgate_crds::{InventorySummary, ObjectRef};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams};

use crate::apply::FIELD_MANAGER;

/// Prefix of the inventory ConfigMaps.
pub const CONFIG_MAP_PREFIX: &str = "fluxgate-inventory-";
/// Data key holding the entries.
pub const DATA_KEY: &str = "inventory.json";
/// Data key holding the revision the entries come from.
pub const REVISION_KEY: &str = "revision";
/// Label on inventory ConfigMaps naming their FluxConfig.
pub const LABEL_INVENTORY_OF: &str = "fluxgate.dev/inventory-of";
/// Most entries listed in `status.inventory`.
pub const MAX_STATUS_ENTRIES: usize = 100;

/// The objects applied from one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// The revision they come from.
    pub revision: Option<String>,
    /// The objects, sorted.
    pub entries: Vec<ObjectRef>,
}

impl Inventory {
    /// An inventory of `entries` (sorted here).
    pub fn new(revision: Option<String>, mut entries: Vec<ObjectRef>) -> Self {
        entries.sort();
        entries.dedup();
        Self { revision, entries }
    }

    /// The status summary: the total, and the entries when there are at
    /// most [`MAX_STATUS_ENTRIES`].
    pub fn summary(&self) -> InventorySummary {
        InventorySummary {
            total: i64::try_from(self.entries.len()).unwrap_or(i64::MAX),
            entries: if self.entries.len() <= MAX_STATUS_ENTRIES {
                self.entries.clone()
            } else {
                Vec::new()
            },
        }
    }
}

/// Name of the inventory ConfigMap of FluxConfig `flux_config`: the prefix
/// and the name, shortened with a hash suffix past 253 characters.
pub fn config_map_name(flux_config: &str) -> String {
    let full = format!("{CONFIG_MAP_PREFIX}{flux_config}");
    if full.len() <= 253 {
        return full;
    }
    // FNV-1a: stable across releases, unlike std's hasher.
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut cut = 236;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{hash:016x}", full[..cut].trim_end_matches(['-', '.']))
}

/// Reads the stored inventory. `Ok(None)` when there is none or it cannot
/// be read (see the module docs); errors are transport failures.
pub async fn load(
    client: &kube::Client,
    namespace: &str,
    flux_config: &str,
) -> Result<Option<Inventory>, kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = match api.get_opt(&config_map_name(flux_config)).await {
        Ok(cm) => cm,
        Err(kube::Error::Api(s)) if s.code == 403 => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(cm.and_then(|cm| {
        let data = cm.data?;
        let entries: Vec<ObjectRef> = serde_json::from_str(data.get(DATA_KEY)?).ok()?;
        Some(Inventory::new(data.get(REVISION_KEY).cloned(), entries))
    }))
}

/// Writes the inventory ConfigMap (server-side apply). A 403 is not an
/// error: the status inventory is the fallback.
pub async fn save(
    client: &kube::Client,
    namespace: &str,
    flux_config: &str,
    inventory: &Inventory,
) -> Result<bool, kube::Error> {
    let name = config_map_name(flux_config);
    let mut data = BTreeMap::new();
    data.insert(
        DATA_KEY.to_owned(),
        serde_json::to_string(&inventory.entries).unwrap_or_else(|_| "[]".to_owned()),
    );
    if let Some(revision) = &inventory.revision {
        data.insert(REVISION_KEY.to_owned(), revision.clone());
    }
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                LABEL_INVENTORY_OF.to_owned(),
                flux_config.chars().take(63).collect(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(data),
        ..ConfigMap::default()
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    match api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&cm),
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: usize) -> ObjectRef {
        ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some("a".into()),
            name: format!("c{i:03}"),
        }
    }

    #[test]
    fn summary_lists_entries_up_to_the_limit() {
        let small = Inventory::new(None, (0..3).rev().map(entry).collect());
        let s = small.summary();
        assert_eq!(s.total, 3);
        assert_eq!(s.entries[0].name, "c000", "sorted");
        let big = Inventory::new(None, (0..101).map(entry).collect());
        let s = big.summary();
        assert_eq!(s.total, 101);
        assert!(s.entries.is_empty());
    }

    #[test]
    fn names_are_bounded() {
        assert_eq!(config_map_name("web"), "fluxgate-inventory-web");
        let long = "a".repeat(253);
        let name = config_map_name(&long);
        assert!(name.len() <= 253, "{}", name.len());
        assert_ne!(name, config_map_name(&"a".repeat(252)));
    }
}
