//! Checks on what the templates produced, so that a template the platform
//! team overrides (or breaks) cannot grant more than fluxgate means to:
//! only the expected kinds, only in the team's namespaces, RoleBindings only
//! to the effective ClusterRole or the status Role and only for the
//! reconciler's ServiceAccount, never anything cluster-scoped, and always
//! the labels the operator prunes by.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{
    LABEL_MANAGED_BY, LABEL_NAME, LABEL_TEAM_NAMESPACE, MANAGED_BY, RECONCILER_NAME, RenderError,
    STATUS_ROLE_NAME,
};

/// API group of Roles and RoleBindings.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// The kinds a template may produce, with their API version, in apply
/// order: RBAC first (the reconciler must have its rights before it
/// starts), then configuration and Secrets, then the workload that uses
/// them.
const ALLOWED_KINDS: &[(&str, &str)] = &[
    ("ServiceAccount", "v1"),
    ("Role", "rbac.authorization.k8s.io/v1"),
    ("RoleBinding", "rbac.authorization.k8s.io/v1"),
    ("ConfigMap", "v1"),
    ("Secret", "v1"),
    ("NetworkPolicy", "networking.k8s.io/v1"),
    ("Deployment", "apps/v1"),
];

/// The resources the status Role may name.
const STATUS_RESOURCES: &[(&str, &str)] = &[
    ("fluxgate.dev", "fluxconfigs"),
    ("fluxgate.dev", "fluxconfigs/status"),
    ("", "events"),
    ("events.k8s.io", "events"),
];

/// What a rendered object is checked against.
#[derive(Debug)]
pub(super) struct Policy<'a> {
    pub namespace: &'a str,
    pub targets: &'a BTreeSet<String>,
    pub cluster_role: &'a str,
}

/// Position of a kind in apply order.
pub(super) fn apply_rank(object: &Value) -> usize {
    let kind = str_at(object, &["kind"]).unwrap_or_default();
    ALLOWED_KINDS
        .iter()
        .position(|(k, _)| *k == kind)
        .unwrap_or(ALLOWED_KINDS.len())
}

/// `Kind namespace/name` of an object, as far as it has them, for messages.
pub(super) fn describe(object: &Value) -> String {
    let kind = str_at(object, &["kind"]).unwrap_or("<no kind>");
    let name = str_at(object, &["metadata", "name"]).unwrap_or("<no name>");
    match str_at(object, &["metadata", "namespace"]) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

fn at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

fn str_at<'v>(value: &'v Value, path: &[&str]) -> Option<&'v str> {
    at(value, path).and_then(Value::as_str)
}

/// Checks one object; the error names the template and the object.
pub(super) fn check_object(
    template: &str,
    object: &Value,
    policy: &Policy<'_>,
) -> Result<(), RenderError> {
    check(object, policy).map_err(|reason| RenderError::Disallowed {
        template: template.to_owned(),
        object: describe(object),
        reason,
    })
}

fn check(object: &Value, policy: &Policy<'_>) -> Result<(), String> {
    if !object.is_object() {
        return Err("a document is not a mapping".to_owned());
    }
    let kind = str_at(object, &["kind"]).ok_or("kind is missing")?;
    let api_version = str_at(object, &["apiVersion"]).ok_or("apiVersion is missing")?;
    match ALLOWED_KINDS.iter().find(|(k, _)| *k == kind) {
        None => {
            let allowed: Vec<&str> = ALLOWED_KINDS.iter().map(|(k, _)| *k).collect();
            return Err(format!(
                "kind {kind} is not allowed; allowed: {}",
                allowed.join(", ")
            ));
        }
        Some((_, expected)) if *expected != api_version => {
            return Err(format!(
                "apiVersion {api_version} is not allowed for {kind}; expected {expected}"
            ));
        }
        Some(_) => {}
    }
    let name = str_at(object, &["metadata", "name"]).unwrap_or_default();
    if name.is_empty() {
        return Err("metadata.name is missing".to_owned());
    }
    let namespace =
        str_at(object, &["metadata", "namespace"]).ok_or("metadata.namespace is missing")?;
    let in_team_namespace = namespace == policy.namespace;
    if !in_team_namespace {
        if kind != "RoleBinding" {
            return Err(format!(
                "only RoleBindings may be created outside the team namespace {}",
                policy.namespace
            ));
        }
        if !policy.targets.contains(namespace) {
            return Err(format!(
                "namespace {namespace} is neither the team namespace {} nor one of its target namespaces",
                policy.namespace
            ));
        }
        if at(object, &["metadata", "ownerReferences"])
            .and_then(Value::as_array)
            .is_some_and(|refs| !refs.is_empty())
        {
            return Err(
                "an object outside the team namespace cannot have ownerReferences".to_owned(),
            );
        }
    }
    match kind {
        "RoleBinding" => check_role_binding(object, namespace, policy)?,
        "Role" => check_role(object)?,
        "Secret" => check_secret(object)?,
        "Deployment" => check_deployment(object)?,
        _ => {}
    }
    check_labels(object, policy)
}

/// The operator finds what to prune by these labels; an object without
/// them would be left behind.
fn check_labels(object: &Value, policy: &Policy<'_>) -> Result<(), String> {
    let labels = at(object, &["metadata", "labels"]);
    for (key, value) in [
        (LABEL_NAME, RECONCILER_NAME),
        (LABEL_MANAGED_BY, MANAGED_BY),
        (LABEL_TEAM_NAMESPACE, policy.namespace),
    ] {
        if labels.and_then(|l| l.get(key)).and_then(Value::as_str) != Some(value) {
            return Err(format!("label {key}={value} is missing"));
        }
    }
    Ok(())
}

fn check_role_binding(object: &Value, namespace: &str, policy: &Policy<'_>) -> Result<(), String> {
    let role_kind = str_at(object, &["roleRef", "kind"]).unwrap_or_default();
    let role_name = str_at(object, &["roleRef", "name"]).unwrap_or_default();
    let role_group = str_at(object, &["roleRef", "apiGroup"]).unwrap_or_default();
    let allowed = role_group == RBAC_GROUP
        && match role_kind {
            "ClusterRole" => role_name == policy.cluster_role,
            "Role" => role_name == STATUS_ROLE_NAME && namespace == policy.namespace,
            _ => false,
        };
    if !allowed {
        return Err(format!(
            "roleRef {role_kind} {role_name:?} is not allowed; allowed: ClusterRole {:?} or, in the team namespace, Role {STATUS_ROLE_NAME:?}",
            policy.cluster_role
        ));
    }
    let subjects = object
        .get("subjects")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
        .ok_or("a RoleBinding needs subjects")?;
    for subject in subjects {
        let is_reconciler = str_at(subject, &["kind"]) == Some("ServiceAccount")
            && str_at(subject, &["name"]) == Some(RECONCILER_NAME)
            && str_at(subject, &["namespace"]) == Some(policy.namespace)
            && subject.get("apiGroup").is_none_or(|g| g == "");
        if !is_reconciler {
            return Err(format!(
                "subject {subject} is not allowed; only ServiceAccount {}/{RECONCILER_NAME}",
                policy.namespace
            ));
        }
    }
    Ok(())
}

fn check_role(object: &Value) -> Result<(), String> {
    let name = str_at(object, &["metadata", "name"]).unwrap_or_default();
    if name != STATUS_ROLE_NAME {
        return Err(format!(
            "the only Role allowed is {STATUS_ROLE_NAME:?}; rights in target namespaces come from the platform's ClusterRole"
        ));
    }
    let rules = object
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for rule in &rules {
        let strings = |key: &str| -> Result<Vec<String>, String> {
            rule.get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| format!("a rule of Role {STATUS_ROLE_NAME} lacks {key}"))?
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{key} holds a non-string"))
                })
                .collect()
        };
        if rule.get("nonResourceURLs").is_some() {
            return Err("a Role cannot grant nonResourceURLs".to_owned());
        }
        for group in strings("apiGroups")? {
            for resource in strings("resources")? {
                if !STATUS_RESOURCES
                    .iter()
                    .any(|(g, r)| *g == group && *r == resource)
                {
                    return Err(format!(
                        "Role {STATUS_ROLE_NAME} may not grant {resource:?} in API group {group:?}; allowed: fluxconfigs, fluxconfigs/status (fluxgate.dev), events"
                    ));
                }
            }
        }
    }
    Ok(())
}

fn check_secret(object: &Value) -> Result<(), String> {
    // Any other type could make the API server mint something, e.g. a
    // `kubernetes.io/service-account-token` Secret naming another
    // ServiceAccount would hand the team that account's token.
    match object.get("type") {
        None => Ok(()),
        Some(t) if t == "Opaque" => Ok(()),
        Some(t) => Err(format!("Secret type {t} is not allowed; only Opaque")),
    }
}

fn check_deployment(object: &Value) -> Result<(), String> {
    let account = str_at(object, &["spec", "template", "spec", "serviceAccountName"]);
    // `serviceAccount` is the deprecated alias the API server still reads.
    let alias = str_at(object, &["spec", "template", "spec", "serviceAccount"]);
    if account != Some(RECONCILER_NAME) || alias.is_some_and(|a| a != RECONCILER_NAME) {
        return Err(format!(
            "the pod must run as ServiceAccount {RECONCILER_NAME}, not {}",
            account.unwrap_or("the namespace's default")
        ));
    }
    Ok(())
}
