//! The admission decision, a pure function of the request and a
//! [`Snapshot`]: [`review`]. Every rule lives in the policy core
//! (`fluxgate_platform_defaults`); this module only decides which checks a
//! request needs and turns their [`Violations`] into an admission response,
//! using the core's rendering verbatim.
//!
//! - `FluxConfig` CREATE: [`resolve`] against the layers of the namespace;
//!   any violation denies.
//! - `FluxConfig` UPDATE: only violations the update introduces deny. One
//!   the old object had too (same rule, field and value) is reported as a
//!   warning, so a team whose object became invalid through a platform
//!   change can still edit it. A change that leaves `spec` alone (metadata,
//!   status) is always allowed.
//! - `PlatformDefaults` CREATE/UPDATE: [`compile`]; its own violations deny.
//!   A valid object that would make existing FluxConfigs invalid is allowed
//!   with warnings naming them.
//! - Everything else is allowed.

use std::collections::HashSet;

use fluxgate_crds::{
    FluxConfig, FluxConfigSpec, GROUP, PlatformDefaults, PlatformDefaultsSpec, VERSION,
};
use fluxgate_platform_defaults::{
    CompiledDefaults, NamespaceFacts, Platform, Rule, Violation, Violations, compile, resolve,
};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::core::admission::{AdmissionResponse, Operation};
use kube::core::response::StatusSummary;
use serde::de::DeserializeOwned;

use crate::snapshot::Snapshot;
use crate::wire::{Object, Request};

/// Most FluxConfigs a `PlatformDefaults` warning names one by one; the rest
/// are counted ("and N more").
pub const MAX_NAMED_IN_WARNINGS: usize = 10;

/// What the webhook decided, before it becomes an [`AdmissionResponse`].
#[derive(Debug)]
enum Decision {
    Allow {
        warnings: Vec<String>,
    },
    Deny {
        /// HTTP code the API server reports to the client.
        code: u16,
        /// Machine-readable reason, as in `metav1.Status`.
        reason: &'static str,
        message: String,
        warnings: Vec<String>,
    },
}

impl Decision {
    fn allow() -> Self {
        Decision::Allow {
            warnings: Vec::new(),
        }
    }

    /// A platform rule forbids the object.
    fn forbidden(message: impl Into<String>) -> Self {
        Decision::Deny {
            code: 403,
            reason: "Forbidden",
            message: message.into(),
            warnings: Vec::new(),
        }
    }

    /// The object or request cannot be read.
    fn bad_request(message: impl Into<String>) -> Self {
        Decision::Deny {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
            warnings: Vec::new(),
        }
    }
}

/// Decides an admission request against a snapshot of the platform.
///
/// Pure: no IO, no clock, no randomness; the same request and snapshot give
/// the same response. Never panics on any object, however malformed.
pub fn review(request: &Request<'_>, snapshot: &Snapshot) -> AdmissionResponse {
    let mut response = request.allow();
    let warnings = match decide(request, snapshot) {
        Decision::Allow { warnings } => warnings,
        Decision::Deny {
            code,
            reason,
            message,
            warnings,
        } => {
            response = response.deny(message);
            response.result.status = Some(StatusSummary::Failure);
            response.result.code = code;
            response.result.reason = reason.to_owned();
            warnings
        }
    };
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

fn decide(request: &Request<'_>, snapshot: &Snapshot) -> Decision {
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return Decision::allow();
    }
    // Subresources (status, scale) carry nothing a platform rule reads; the
    // webhook configuration does not send them, this is defence in depth.
    if request
        .sub_resource
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return Decision::allow();
    }
    let kind = &request.kind;
    if kind.group != GROUP || !matches!(&*kind.kind, "FluxConfig" | "PlatformDefaults") {
        return Decision::allow();
    }
    if kind.version != VERSION {
        return Decision::bad_request(format!(
            "{} {}/{} is not a version this webhook knows; it validates {GROUP}/{VERSION}",
            kind.kind, kind.group, kind.version
        ));
    }
    let Some(object) = request.object.as_ref() else {
        return Decision::bad_request(format!(
            "{} {}: the admission request carries no object",
            kind.kind, request.name
        ));
    };
    let old = match request.operation {
        Operation::Update => request.old_object.as_ref(),
        _ => None,
    };
    // Metadata- and status-only changes are never a reason to deny: the
    // rules read `spec` alone, and the old spec was admitted (or predates
    // the current rules). The API server writes both objects with the same
    // encoder, so an unchanged spec is the same text; one that differs only
    // in form is caught after reading, by comparing the typed specs.
    if let Some(old) = old
        && old.spec.map(|s| s.get()) == object.spec.map(|s| s.get())
    {
        return Decision::allow();
    }
    if kind.kind == "FluxConfig" {
        review_flux_config(request, object, old, snapshot)
    } else {
        review_platform_defaults(request, object, old, snapshot)
    }
}

/// The object's name: `metadata.name`, else the request's name, else
/// `metadata.generateName` (a create that lets the server pick the name).
fn object_name(request: &Request<'_>, object: &Object<'_>) -> String {
    let metadata = &object.metadata;
    metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or_else(|| Some(&*request.name).filter(|n| !n.is_empty()))
        .or(metadata.generate_name.as_deref())
        .unwrap_or_default()
        .to_owned()
}

/// Reads `spec` as `S`, naming the field when it has the wrong shape.
fn read_spec<S: DeserializeOwned>(object: &Object<'_>) -> Result<S, String> {
    let Some(spec) = object.spec else {
        return Err("spec is missing".to_owned());
    };
    let mut reader = serde_json::Deserializer::from_str(spec.get());
    serde_path_to_error::deserialize(&mut reader).map_err(|err| {
        let path = err.path().to_string();
        let inner = without_position(err.inner());
        if path == "." {
            format!("spec: {inner}")
        } else {
            format!("spec.{path}: {inner}")
        }
    })
}

/// A JSON error's message without serde_json's " at line L column C": the
/// position is inside `spec`'s text, which the user never sees.
fn without_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    let position = format!(" at line {} column {}", err.line(), err.column());
    match text.strip_suffix(&position) {
        Some(message) => message.to_owned(),
        None => text,
    }
}

/// The object as a typed `FluxConfig` named `name` (the name the review
/// settled on, see [`object_name`]).
fn read_flux_config(object: &Object<'_>, name: &str) -> Result<FluxConfig, String> {
    let spec: FluxConfigSpec = read_spec(object)?;
    Ok(FluxConfig {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: object.metadata.namespace.as_deref().map(str::to_owned),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    })
}

fn review_flux_config(
    request: &Request<'_>,
    object: &Object<'_>,
    old: Option<&Object<'_>>,
    snapshot: &Snapshot,
) -> Decision {
    let name = object_name(request, object);
    let Some(namespace) = request
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .or(object.metadata.namespace.as_deref())
        .map(str::to_owned)
    else {
        return Decision::bad_request(format!(
            "FluxConfig {name}: the admission request names no namespace"
        ));
    };
    let label = Violations::object_name("FluxConfig", Some(&namespace), &name);
    let fc = match read_flux_config(object, &name) {
        Ok(fc) => fc,
        Err(err) => return Decision::bad_request(format!("{label}: cannot be read: {err}")),
    };
    // The API server admits objects only into existing namespaces, so an
    // unknown one is a namespace created an instant ago that the watch has
    // not delivered yet (the HTTP layer waits a moment for it first). Its
    // labels are unknown: judging it as unlabelled would deny with a
    // misleading "no PlatformDefaults selects" message, so say what it is.
    if !snapshot.knows_namespace(&namespace) {
        return Decision::Deny {
            code: 503,
            reason: "ServiceUnavailable",
            message: format!(
                "{label}: namespace {namespace} is not in the fluxgate webhook's cache yet \
                 (created a moment ago?); retry the request"
            ),
            warnings: Vec::new(),
        };
    }
    let labels = snapshot.namespace_labels(&namespace);
    let layers = snapshot.platform().layers_for(&namespace, labels);
    let facts = NamespaceFacts {
        other_flux_configs: snapshot.count_flux_configs_except(&namespace, &name),
    };
    let Err(violations) = resolve(&fc, &layers, facts) else {
        return Decision::allow();
    };
    // Only a violation makes the old object matter (read it no sooner: this
    // is the request path). One whose spec is the same in all but form is a
    // metadata-only change, never denied. An unreadable old object gives no
    // credit: every violation counts as introduced.
    let old_fc = old.and_then(|old| read_flux_config(old, &name).ok());
    if old_fc.as_ref().is_some_and(|old_fc| old_fc.spec == fc.spec) {
        return Decision::allow();
    }
    let before = old_fc.and_then(|old_fc| resolve(&old_fc, &layers, facts).err());
    let (introduced, existing) = split(violations, before.as_ref());
    let warnings: Vec<String> = existing
        .map(|v| format!("{v} (present before this update; fix it when you can)"))
        .into_iter()
        .collect();
    match introduced {
        None => Decision::Allow { warnings },
        Some(introduced) => Decision::Deny {
            code: 403,
            reason: "Forbidden",
            message: introduced.to_string(),
            warnings,
        },
    }
}

fn review_platform_defaults(
    request: &Request<'_>,
    object: &Object<'_>,
    old: Option<&Object<'_>>,
    snapshot: &Snapshot,
) -> Decision {
    let name = object_name(request, object);
    let label = Violations::object_name("PlatformDefaults", None, &name);
    let spec: PlatformDefaultsSpec = match read_spec(object) {
        Ok(spec) => spec,
        Err(err) => return Decision::bad_request(format!("{label}: cannot be read: {err}")),
    };
    if old.is_some_and(|old| read_spec::<PlatformDefaultsSpec>(old).is_ok_and(|o| o == spec)) {
        return Decision::allow();
    }
    let pd = PlatformDefaults {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        spec,
        status: None,
    };
    let compiled = match compile(&pd) {
        Ok(compiled) => compiled,
        Err(violations) => return Decision::forbidden(violations.to_string()),
    };
    let invalidated = invalidated_flux_configs(snapshot, &pd, &compiled);
    Decision::Allow {
        warnings: impact_warnings(&label, &invalidated),
    }
}

/// The FluxConfigs that the new or changed `pd` would make invalid: those
/// with a violation under the platform with `pd` applied that they did not
/// have before.
fn invalidated_flux_configs(
    snapshot: &Snapshot,
    pd: &PlatformDefaults,
    compiled: &CompiledDefaults,
) -> Vec<Violations> {
    let name = compiled.name();
    let current = snapshot.platform();
    let previous = current.defaults().iter().find(|d| d.name() == name);
    let next = Platform::new(
        current.settings().clone(),
        snapshot
            .platform_defaults
            .iter()
            .map(|p| &**p)
            .filter(|p| p.name_any() != name)
            .chain([pd]),
    );
    let mut invalidated = Vec::new();
    for (namespace, by_name) in snapshot.flux_configs.iter() {
        let labels = snapshot.namespace_labels(namespace);
        // Only namespaces the object selects, before or after the change,
        // see different layers.
        if !compiled.selects(labels) && !previous.is_some_and(|p| p.selects(labels)) {
            continue;
        }
        let before = current.layers_for(namespace, labels);
        let after = next.layers_for(namespace, labels);
        let facts = NamespaceFacts {
            other_flux_configs: by_name.len().saturating_sub(1),
        };
        for watched in by_name.values() {
            let Ok(fc) = &watched.0 else { continue };
            let Err(now) = resolve(fc, &after, facts) else {
                continue;
            };
            let was = resolve(fc, &before, facts).err();
            if let (Some(introduced), _) = split(now, was.as_ref()) {
                invalidated.push(introduced);
            }
        }
    }
    invalidated
}

fn impact_warnings(label: &str, invalidated: &[Violations]) -> Vec<String> {
    if invalidated.is_empty() {
        return Vec::new();
    }
    let total = invalidated.len();
    let plural = if total == 1 { "" } else { "s" };
    let mut warnings = vec![format!(
        "{label}: this change makes {total} existing FluxConfig{plural} invalid:"
    )];
    warnings.extend(
        invalidated
            .iter()
            .take(MAX_NAMED_IN_WARNINGS)
            .map(ToString::to_string),
    );
    if total > MAX_NAMED_IN_WARNINGS {
        warnings.push(format!(
            "and {} more FluxConfigs",
            total - MAX_NAMED_IN_WARNINGS
        ));
    }
    warnings
}

/// Identifies a violation across two versions of an object.
fn key(v: &Violation) -> (Rule, &str, &str) {
    (v.rule, v.field.as_str(), v.value.as_str())
}

/// Splits `now` into the violations not in `before` (introduced) and those
/// that were (existing); each side is `None` when empty.
fn split(now: Violations, before: Option<&Violations>) -> (Option<Violations>, Option<Violations>) {
    let old: HashSet<(Rule, &str, &str)> = before
        .map(|b| b.violations.iter().map(key).collect())
        .unwrap_or_default();
    let (existing, introduced): (Vec<Violation>, Vec<Violation>) = now
        .violations
        .into_iter()
        .partition(|v| old.contains(&key(v)));
    let wrap = |violations: Vec<Violation>| {
        (!violations.is_empty()).then(|| Violations {
            object: now.object.clone(),
            violations,
        })
    };
    (wrap(introduced), wrap(existing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(rule: Rule, field: &str, value: &str) -> Violation {
        Violation::new(rule, field, value, "is wrong")
    }

    #[test]
    fn split_keeps_only_new_rule_field_value_triples() {
        let now = Violations {
            object: "FluxConfig a/b".into(),
            violations: vec![
                violation(Rule::RepoNotAllowed, "spec.repo", "https://x/y"),
                violation(Rule::Interval, "spec.interval", "1s"),
            ],
        };
        let before = Violations {
            object: "FluxConfig a/b".into(),
            violations: vec![violation(Rule::RepoNotAllowed, "spec.repo", "https://x/y")],
        };
        let (introduced, existing) = split(now.clone(), Some(&before));
        assert_eq!(introduced.unwrap().violations[0].field, "spec.interval");
        assert_eq!(existing.unwrap().violations[0].field, "spec.repo");
        let (introduced, existing) = split(now, None);
        assert_eq!(introduced.unwrap().violations.len(), 2);
        assert!(existing.is_none());
    }

    #[test]
    fn impact_warnings_name_ten_then_count() {
        let many: Vec<Violations> = (0..13)
            .map(|i| Violations {
                object: format!("FluxConfig ns/fc-{i}"),
                violations: vec![violation(Rule::Cluster, "spec.cluster", "x")],
            })
            .collect();
        let warnings = impact_warnings("PlatformDefaults p", &many);
        assert_eq!(warnings.len(), 1 + MAX_NAMED_IN_WARNINGS + 1);
        assert!(warnings[0].contains("13 existing FluxConfigs"));
        assert!(warnings[1].starts_with("FluxConfig ns/fc-0: "));
        assert_eq!(warnings[11], "and 3 more FluxConfigs");
    }
}
