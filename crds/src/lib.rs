//! The fluxgate API, group `fluxgate.dev`, version `v1alpha1`.
//!
//! - [`FluxConfig`] (namespaced, short name `fc`): what a team writes.
//! - [`PlatformDefaults`] (cluster-scoped): what the platform team writes.
//!
//! The types carry their own validation twice over: `#[validate(...)]`
//! attributes give offline checks (`Validate::validate`) and, through
//! `schemars`, the same constraints in the CRD schema; CEL rules
//! (`x-kubernetes-validations`) cover what a schema cannot say. The generated
//! CRDs are committed under `deploy/crds/`; [`crd_files`] is the single
//! place that decides their file names and content.

pub mod common;
pub mod conditions;
mod flux_config;
mod platform_defaults;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use common::{GitReference, ObjectRef, SecretReference};
pub use flux_config::{
    EffectiveConfig, FluxConfig, FluxConfigSpec, FluxConfigStatus, InventorySummary, LastError,
    ReconcilerStatus, Sourced,
};
pub use platform_defaults::{
    CredentialRule, Defaults, Limits, MAX_PRIORITY, MIN_PRIORITY, PlatformDefaults,
    PlatformDefaultsSpec, PlatformDefaultsStatus, ReconcilerDefaults,
};

/// The API group of every fluxgate kind.
pub const GROUP: &str = "fluxgate.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";

/// Every fluxgate CRD, in installation order.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![PlatformDefaults::crd(), FluxConfig::crd()]
}

/// Errors while rendering CRDs to YAML.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// A CRD could not be serialised.
    #[error("cannot serialise CRD {name} to YAML")]
    Serialize {
        /// The CRD's name.
        name: String,
        /// The serializer's error.
        #[source]
        source: serde_saphyr::ser_error::Error,
    },
}

/// The CRD files as committed under `deploy/crds/`: `(file name, YAML)`.
pub fn crd_files() -> Result<Vec<(String, String)>, CrdError> {
    all_crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            let yaml = serde_saphyr::to_string(&crd).map_err(|source| CrdError::Serialize {
                name: name.clone(),
                source,
            })?;
            Ok((
                format!("{name}.yaml"),
                format!("# Generated from crds/src by `FLUXGATE_UPDATE_CRDS=1 cargo test -p fluxgate-crds`; do not edit.\n---\n{yaml}"),
            ))
        })
        .collect()
}

/// All CRDs as one multi-document YAML stream (for `kubectl apply -f -`).
pub fn crds_yaml() -> Result<String, CrdError> {
    Ok(crd_files()?
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect::<Vec<_>>()
        .join(""))
}
