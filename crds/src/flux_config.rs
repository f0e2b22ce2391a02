//! `FluxConfig`: what a team writes to get its Git repository synced into its
//! namespace, and the status the operator and the team's reconciler report.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use validator::Validate;

use crate::common::{
    DNS_LABEL_RE, DURATION_RE, GitReference, MAX_PATH_LEN, MAX_REPO_URL_LEN, ObjectRef,
    REPO_PATH_RE, conditions_schema,
};

/// The desired state of a `FluxConfig`. Only `repo` is required; every other
/// value is filled in from the platform's `PlatformDefaults` and the result is
/// shown in `status.effective`.
// Several `printcolumn(type_ = ...)` entries are separate columns, not
// duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema, Validate,
)]
#[kube(
    group = "fluxgate.dev",
    version = "v1alpha1",
    kind = "FluxConfig",
    plural = "fluxconfigs",
    singular = "fluxconfig",
    shortname = "fc",
    category = "fluxgate",
    namespaced,
    status = "FluxConfigStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "FluxConfig asks the platform to sync a team's Git repository into the team's namespace. The team writes the repository and, optionally, the ref, path, target namespace and interval; the platform's PlatformDefaults fill in everything else and decide what is allowed. The platform runs one scoped reconciler per team namespace to apply it.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Status",
        type_ = "string",
        json_path = r#".status.conditions[?(@.type=="Ready")].message"#,
        priority = 1
    ),
    printcolumn(
        name = "Revision",
        type_ = "string",
        json_path = ".status.lastAppliedRevision"
    ),
    printcolumn(
        name = "Repo",
        type_ = "string",
        json_path = ".spec.repo",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    selectable = ".spec.repo"
)]
#[serde(rename_all = "camelCase")]
pub struct FluxConfigSpec {
    /// URL of the team's Git repository, `https://` or `ssh://` (for example
    /// `https://git.corp.example/team-a/app.git`). It must match one of the
    /// platform's allowed repository patterns. Do not put credentials in the
    /// URL: the platform assigns credentials by repository pattern.
    #[validate(
        length(min = 1, max = MAX_REPO_URL_LEN),
        custom(function = "crate::common::repo_url_shape")
    )]
    pub repo: String,

    /// Git reference to sync: exactly one of `branch`, `tag` or `commit`.
    /// Defaults to the platform's default (usually branch `main`).
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    #[validate(nested)]
    pub git_ref: Option<GitReference>,

    /// Directory inside the repository that holds the manifests, relative to
    /// the repository root (for example `deploy/prod`). Must not be absolute
    /// or contain `..`. Defaults to the platform's default (usually the
    /// repository root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = MAX_PATH_LEN), regex(path = *REPO_PATH_RE))]
    #[x_kube(validation = Rule::new("!self.startsWith('/')").message("path must be relative to the repository root"))]
    #[x_kube(validation = Rule::new("!self.matches('(^|/)[.][.](/|$)')").message("path must not contain '..' segments"))]
    pub path: Option<String>,

    /// Namespace the manifests are applied to when they do not name one.
    /// Must be allowed by the platform's target-namespace patterns (usually
    /// the FluxConfig's own namespace or `<namespace>-*`). Defaults to the
    /// FluxConfig's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 63), regex(path = *DNS_LABEL_RE))]
    pub target_namespace: Option<String>,

    /// How often the repository is checked for new commits and the namespace
    /// for drift, as a Go duration (`30s`, `5m`, `1h`). Must lie within the
    /// platform's limits. Defaults to the platform's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 2, max = 32), regex(path = *DURATION_RE))]
    pub interval: Option<String>,

    /// Stop syncing while true: nothing is applied or pruned, objects already
    /// applied keep running. Defaults to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspend: Option<bool>,

    /// Logical id of the cluster this config is meant for, when the platform
    /// repository serves several clusters. Must be one of the platform's
    /// known clusters; a FluxConfig for another cluster is accepted but not
    /// synced here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = 63), regex(path = *DNS_LABEL_RE))]
    pub cluster: Option<String>,
}

/// A resolved value and the place it came from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sourced<T> {
    /// The effective value.
    pub value: T,
    /// Where the value came from: `spec` (the FluxConfig itself),
    /// `PlatformDefaults/<name>` (a platform default), or `builtin`
    /// (fluxgate's own default).
    pub source: String,
}

/// The configuration the platform resolved for this FluxConfig: the team's
/// values, completed from PlatformDefaults, with the source of each value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveConfig {
    /// The repository URL, normalised.
    pub repo: Sourced<String>,
    /// The Git reference synced.
    #[serde(rename = "ref")]
    pub git_ref: Sourced<GitReference>,
    /// The directory in the repository.
    pub path: Sourced<String>,
    /// The default namespace for manifests without one.
    pub target_namespace: Sourced<String>,
    /// Namespaces the reconciler may write to.
    pub allowed_namespaces: Sourced<Vec<String>>,
    /// The sync interval.
    pub interval: Sourced<String>,
    /// Whether syncing is suspended.
    pub suspend: Sourced<bool>,
    /// The logical cluster id, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Sourced<String>>,
    /// Name of the Secret, in the platform namespace, whose Git credentials
    /// are copied for this repository; absent for public repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<Sourced<String>>,
    /// Image of the reconciler.
    pub reconciler_image: Sourced<String>,
    /// Compute resources of the reconciler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler_resources: Option<Sourced<ResourceRequirements>>,
    /// ClusterRole bound (by namespaced RoleBindings) in each allowed
    /// namespace to give the reconciler its rights.
    pub reconciler_cluster_role: Sourced<String>,
    /// Most manifest files the reconciler reads from the path
    /// (`limits.maxFiles`); absent when no PlatformDefaults sets it, and the
    /// reconciler's own limit (2000) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler_max_files: Option<Sourced<i32>>,
    /// Largest repository transfer and checkout, in bytes, the reconciler
    /// accepts (`limits.maxRepoBytes`); absent when no PlatformDefaults sets
    /// it, and the reconciler's own limit (100 MiB) applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler_max_repo_bytes: Option<Sourced<i64>>,
}

/// What the operator provisioned for this FluxConfig's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconcilerStatus {
    /// Name of the reconciler Deployment in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// ServiceAccount the reconciler runs as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
    /// Image the reconciler runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Objects created for this FluxConfig outside its own namespace (for
    /// example RoleBindings in other allowed namespaces). The operator
    /// prunes entries that are no longer desired.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub objects: Vec<ObjectRef>,
}

/// Summary of the objects the reconciler applied from the repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventorySummary {
    /// Number of objects applied from the last applied revision.
    pub total: i64,
    /// The applied objects, listed when there are at most 100 of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub entries: Vec<ObjectRef>,
}

/// The last error the reconciler met, with where it met it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// What went wrong, and what to change.
    pub message: String,
    /// Git revision being applied when the error occurred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// File in the repository, relative to the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Line in the file, starting at 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<i64>,
    /// The object concerned, as `Kind/namespace/name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<String>,
}

/// The observed state of a `FluxConfig`, written by the operator (`Accepted`,
/// `Provisioned`, `effective`, `reconciler`) and by the team's reconciler
/// (`Ready`, `Reconciling`, `Stalled`, revisions, inventory, last error),
/// each under its own server-side-apply field manager.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct FluxConfigStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Current state, in the kstatus style: `Ready`, `Reconciling`,
    /// `Stalled`, plus `Accepted` (the config passed the platform's rules)
    /// and `Provisioned` (the namespace's reconciler is in place).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The resolved configuration, with the source of each value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective: Option<EffectiveConfig>,

    /// What the operator provisioned for this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciler: Option<ReconcilerStatus>,

    /// Commit SHA (with its ref, `main@sha1:...`) last applied successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,

    /// Commit SHA last attempted, successfully or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_revision: Option<String>,

    /// The objects applied from the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventorySummary>,

    /// The last error, cleared by the next successful sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
}

impl FluxConfig {
    /// The condition of the given type, if present.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        crate::conditions::find(&self.status.as_ref()?.conditions, type_)
    }

    /// Whether the condition of the given type is `True`.
    pub fn condition_is_true(&self, type_: &str) -> bool {
        self.condition(type_).is_some_and(|c| c.status == "True")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(repo: &str) -> FluxConfigSpec {
        FluxConfigSpec {
            repo: repo.into(),
            ..FluxConfigSpec::default()
        }
    }

    #[test]
    fn minimal_spec_is_valid() {
        assert!(
            spec("https://git.corp.example/team-a/web.git")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn oversized_values_are_errors_not_stored_values() {
        let huge = format!("https://git.corp.example/{}", "a".repeat(100 * 1024));
        let err = spec(&huge).validate().unwrap_err();
        assert!(err.field_errors().contains_key("repo"), "{err}");

        let mut with_path = spec("https://git.corp.example/team-a/web.git");
        with_path.path = Some("a/".repeat(50 * 1024));
        let err = with_path.validate().unwrap_err();
        assert!(err.field_errors().contains_key("path"), "{err}");
    }

    #[test]
    fn optional_fields_are_checked_when_present() {
        let mut s = spec("https://git.corp.example/team-a/web.git");
        s.interval = Some("1d".into());
        s.target_namespace = Some("Team_A".into());
        s.cluster = Some("prod eu".into());
        let err = s.validate().unwrap_err();
        let fields = err.field_errors();
        for field in ["interval", "target_namespace", "cluster"] {
            assert!(fields.contains_key(field), "{field} not reported: {err}");
        }
    }

    #[test]
    fn spec_round_trips_with_ref_renamed() {
        let json = serde_json::json!({
            "repo": "https://git.corp.example/team-a/web.git",
            "ref": {"tag": "v1.0.0"},
        });
        let s: FluxConfigSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(
            s.git_ref.as_ref().and_then(|r| r.tag.as_deref()),
            Some("v1.0.0")
        );
        assert_eq!(serde_json::to_value(&s).unwrap(), json);
    }

    #[test]
    fn condition_lookup() {
        let mut fc = FluxConfig::new("web", spec("https://git.corp.example/team-a/web.git"));
        assert!(!fc.condition_is_true(crate::conditions::READY));
        fc.status = Some(FluxConfigStatus {
            conditions: vec![Condition {
                type_: crate::conditions::READY.into(),
                status: "True".into(),
                reason: crate::conditions::reasons::SUCCEEDED.into(),
                message: String::new(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    Default::default(),
                ),
                observed_generation: Some(1),
            }],
            ..FluxConfigStatus::default()
        });
        assert!(fc.condition_is_true(crate::conditions::READY));
    }
}
