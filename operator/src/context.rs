//! What every reconcile shares: the client, the watch caches, the renderer,
//! metrics and the event recorder.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use fluxgate_crds::{FluxConfig, PlatformDefaults};
use fluxgate_platform_defaults::PlatformSettings;
use fluxgate_platform_defaults::render::Renderer;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::core::PartialObjectMeta;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;

use crate::metrics::Metrics;

/// Caches of the objects the operator provisions (label-selected).
#[derive(Clone)]
pub struct ManagedStores {
    /// ServiceAccounts.
    pub service_accounts: Store<ServiceAccount>,
    /// Secret copies.
    pub secrets: Store<Secret>,
    /// Roles.
    pub roles: Store<Role>,
    /// RoleBindings, in team and target namespaces.
    pub role_bindings: Store<RoleBinding>,
    /// Reconciler Deployments.
    pub deployments: Store<Deployment>,
    /// Reconciler NetworkPolicies (with `--network-policy`).
    pub network_policies: Store<NetworkPolicy>,
}

impl std::fmt::Debug for ManagedStores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagedStores").finish_non_exhaustive()
    }
}

/// Shared state of the controller.
pub struct Context {
    /// The API client.
    pub client: kube::Client,
    /// Platform settings from the flags.
    pub settings: PlatformSettings,
    /// The reconcilers' NetworkPolicy, when the flags ask for one.
    pub network_policy: Option<fluxgate_platform_defaults::render::ReconcilerNetworkPolicy>,
    /// The template renderer.
    pub renderer: Renderer,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Event recorder.
    pub recorder: Recorder,
    /// All FluxConfigs.
    pub flux_configs: Store<FluxConfig>,
    /// All PlatformDefaults.
    pub defaults: Store<PlatformDefaults>,
    /// All namespaces (metadata only).
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
    /// Secrets in the platform namespace (credential sources).
    pub platform_secrets: Store<Secret>,
    /// What the operator provisioned.
    pub managed: ManagedStores,
    /// True once every cache above has synced: until then a reconcile would
    /// see a partial world (no PlatformDefaults yet, say) and could prune
    /// what is running, so it waits instead.
    pub synced: Arc<AtomicBool>,
    /// Root objects that exist but cannot be read (see `guard`).
    pub unreadable: crate::guard::UnreadableObjects,
    /// Status writes the cache may not show yet.
    pub recent_status: crate::status::RecentWrites,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("synced", &self.synced.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Whether every cache has synced.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }
}
