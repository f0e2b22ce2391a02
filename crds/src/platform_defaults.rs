//! `PlatformDefaults`: what the platform team writes. Allow-lists say what
//! teams may use; defaults fill in what teams leave out; limits bound them.
//! Several objects may apply to one namespace; they are layered by priority
//! (see the `platform-defaults` crate).

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::common::{
    DURATION_RE, GitReference, MAX_PATH_LEN, MAX_PATTERN_LEN, REPO_PATH_RE, SecretReference,
    conditions_schema, string_set_schema,
};

/// Lowest accepted `priority`.
pub const MIN_PRIORITY: i32 = -10_000;
/// Highest accepted `priority`.
pub const MAX_PRIORITY: i32 = 10_000;

/// The platform's rules and defaults for the team namespaces its
/// `namespaceSelector` matches.
// Several `printcolumn(type_ = ...)` entries are separate columns, not
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema, Validate,
)]
#[kube(
    group = "fluxgate.dev",
    version = "v1alpha1",
    kind = "PlatformDefaults",
    plural = "platformdefaults",
    singular = "platformdefaults",
    category = "fluxgate",
    status = "PlatformDefaultsStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "PlatformDefaults holds the platform team's rules for the team namespaces it selects: which repositories, target namespaces, images and clusters teams may use (allow-lists), the values filled in when a FluxConfig leaves them out (defaults), and limits. Every PlatformDefaults whose namespaceSelector matches a namespace applies to it: scalar defaults come from the highest priority, allow-lists are the union.",
    printcolumn(name = "Priority", type_ = "integer", json_path = ".spec.priority"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PlatformDefaultsSpec {
    /// Team namespaces this object applies to, by label. An empty or absent
    /// selector selects every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Order among the PlatformDefaults that select the same namespace: the
    /// highest priority supplies each scalar default; ties are broken by
    /// name. Allow-lists are merged regardless of priority. Defaults to 0.
    #[serde(default)]
    #[validate(range(min = MIN_PRIORITY, max = MAX_PRIORITY))]
    pub priority: i32,

    /// Repository URL patterns teams may sync from, e.g.
    /// `https://git.corp.example/{namespace}/*`. `{namespace}` stands for the
    /// FluxConfig's namespace; `*` matches within one path segment and a
    /// trailing `/**` matches any depth. URLs are normalised before matching.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "string_set_schema")]
    #[validate(length(max = 256))]
    pub allowed_repos: Vec<String>,

    /// Namespace patterns a team's manifests may be applied to, e.g.
    /// `{namespace}` and `{namespace}-*`. Namespaces listed in
    /// `protectedNamespaces` are never allowed, whatever the pattern.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "string_set_schema")]
    #[validate(length(max = 256))]
    pub allowed_target_namespaces: Vec<String>,

    /// Image patterns the reconciler image may match, e.g.
    /// `registry.corp.example/fluxgate/*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "string_set_schema")]
    #[validate(length(max = 256))]
    pub allowed_images: Vec<String>,

    /// Logical cluster ids a FluxConfig may name in `spec.cluster`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "string_set_schema")]
    #[validate(length(max = 256))]
    pub clusters: Vec<String>,

    /// Namespace patterns no team may target, whatever the allow-lists say,
    /// in addition to the built-in `kube-*` and the platform's own namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "string_set_schema")]
    #[validate(length(max = 256))]
    pub protected_namespaces: Vec<String>,

    /// Values filled in when a FluxConfig leaves them out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub defaults: Option<Defaults>,

    /// Bounds on what teams may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub limits: Option<Limits>,
}

/// Values filled in for the FluxConfigs of selected namespaces.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct Defaults {
    /// Git reference used when a FluxConfig names none.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub git_ref: Option<GitReference>,

    /// Directory in the repository used when a FluxConfig names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = MAX_PATH_LEN), regex(path = *REPO_PATH_RE))]
    #[x_kube(validation = Rule::new("!self.startsWith('/')").message("path must be relative to the repository root"))]
    #[x_kube(validation = Rule::new("!self.matches('(^|/)[.][.](/|$)')").message("path must not contain '..' segments"))]
    pub path: Option<String>,

    /// Sync interval used when a FluxConfig names none, as a Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 2, max = 32), regex(path = *DURATION_RE))]
    pub interval: Option<String>,

    /// Git credentials assigned by repository pattern: the first entry whose
    /// pattern matches a FluxConfig's repository supplies its credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[validate(length(max = 64), nested)]
    #[schemars(length(max = 64))]
    pub credentials: Vec<CredentialRule>,

    /// Settings of the per-namespace reconciler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub reconciler: Option<ReconcilerDefaults>,
}

/// Assigns the Git credentials in a Secret to the repositories matching a
/// pattern.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct CredentialRule {
    /// Repository URL pattern, with the same syntax as `allowedRepos`.
    #[validate(length(min = 1, max = MAX_PATTERN_LEN))]
    pub repo_pattern: String,

    /// Secret in the platform's namespace holding `username` and `password`
    /// (HTTPS basic auth or token) or `identity` and `known_hosts` (SSH). It
    /// is copied into a team's namespace only while the team's repository
    /// matches `repoPattern`.
    #[validate(nested)]
    pub secret_ref: SecretReference,
}

/// Settings of the per-namespace reconciler.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct ReconcilerDefaults {
    /// Container image of the reconciler; must match `allowedImages`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Compute resources of the reconciler container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// ClusterRole bound, by a RoleBinding in each allowed target namespace,
    /// to the reconciler's ServiceAccount. It defines what a team may
    /// create; RoleBindings make it namespaced, so cluster-scoped rules in
    /// it have no effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 253))]
    pub cluster_role: Option<String>,
}

/// Bounds on what teams may ask for.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Shortest sync interval a FluxConfig may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 2, max = 32), regex(path = *DURATION_RE))]
    pub min_interval: Option<String>,

    /// Longest sync interval a FluxConfig may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 2, max = 32), regex(path = *DURATION_RE))]
    pub max_interval: Option<String>,

    /// Most FluxConfigs one namespace may hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 1000))]
    pub max_flux_configs_per_namespace: Option<i32>,

    /// Largest repository transfer and checkout, in bytes, the team's
    /// reconciler accepts (its `--max-repo-bytes`; 100 MiB when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1))]
    pub max_repo_bytes: Option<i64>,

    /// Most manifest files the team's reconciler reads from the configured
    /// path (its `--max-files`; 2000 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(range(min = 1, max = 100_000))]
    pub max_files: Option<i32>,
}

/// Observed state of a `PlatformDefaults`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlatformDefaultsStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Ready` is `True` when the object is valid and applied to the
    /// namespaces it selects; `Stalled` explains what is wrong otherwise.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Number of namespaces the selector currently matches that hold
    /// FluxConfigs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_namespaces: Option<i32>,
}

impl PlatformDefaults {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        crate::conditions::find(&self.status.as_ref()?.conditions, type_)
    }

    /// Whether the condition of the given type is `True`.
    pub fn condition_is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}
