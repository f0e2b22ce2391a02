//! `PlatformDefaults.status`: whether each PlatformDefaults passes the
//! core's own checks (the ones the webhook applies at admission; an object
//! written while the webhook was down, or before a rule tightened, can still
//! fail them) and how many namespaces with FluxConfigs it selects. This is
//! what `kubectl get platformdefaults` shows in its READY column.
//!
//! [`desired`] is pure; [`run`] recomputes every PlatformDefaults from the
//! watch caches on a short period and writes a status only when it differs
//! from the live one, so a steady state writes nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use fluxgate_crds::conditions;
use fluxgate_crds::{FluxConfig, PlatformDefaults, PlatformDefaultsStatus};
use fluxgate_platform_defaults::compile;
use fluxgate_platform_defaults::selector::Selector;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::reconcile::FIELD_MANAGER;

/// Reason of `Ready=True`.
pub const VALID: &str = "Valid";
/// Reason of `Ready=False` / `Stalled=True`.
pub const INVALID: &str = "Invalid";

/// The status `pd` should have: `Ready` (and `Stalled` while invalid) with
/// the core's message, `observedGeneration`, and `matched` namespaces.
/// Transition times are `now` for conditions whose status changed and kept
/// otherwise.
pub fn desired(pd: &PlatformDefaults, matched: i32, now: &Time) -> PlatformDefaultsStatus {
    let generation = pd.meta().generation.unwrap_or_default();
    let condition = |type_: &str, status: bool, reason: &str, message: String| Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: Some(generation),
        last_transition_time: now.clone(),
    };
    let mut conditions = match compile(pd) {
        Ok(_) => vec![condition(
            conditions::READY,
            true,
            VALID,
            format!("applies to {matched} namespace(s) with FluxConfigs"),
        )],
        Err(violations) => {
            let message = violations.to_string();
            vec![
                condition(conditions::READY, false, INVALID, message.clone()),
                condition(conditions::STALLED, true, INVALID, message),
            ]
        }
    };
    let live = pd.status.clone().unwrap_or_default();
    for c in &mut conditions {
        if let Some(old) = live.conditions.iter().find(|o| o.type_ == c.type_)
            && old.status == c.status
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    PlatformDefaultsStatus {
        observed_generation: Some(generation),
        conditions,
        matched_namespaces: Some(matched),
    }
}

/// Whether the live status already says what `desired` says (transition
/// times aside).
pub fn unchanged(pd: &PlatformDefaults, desired: &PlatformDefaultsStatus) -> bool {
    let live = pd.status.clone().unwrap_or_default();
    let same = |a: &Condition, b: &Condition| {
        a.type_ == b.type_
            && a.status == b.status
            && a.reason == b.reason
            && a.message == b.message
            && a.observed_generation == b.observed_generation
    };
    live.observed_generation == desired.observed_generation
        && live.matched_namespaces == desired.matched_namespaces
        && live.conditions.len() == desired.conditions.len()
        && desired
            .conditions
            .iter()
            .all(|c| live.conditions.iter().any(|o| same(o, c)))
}

/// Namespaces holding FluxConfigs whose labels `pd`'s selector matches (0
/// when the selector is invalid).
fn matched(
    pd: &PlatformDefaults,
    team_namespaces: &BTreeSet<String>,
    namespaces: &Store<PartialObjectMeta<Namespace>>,
) -> i32 {
    let Ok(selector) = Selector::compile(pd.spec.namespace_selector.as_ref()) else {
        return 0;
    };
    let count = namespaces
        .state()
        .iter()
        .filter(|ns| team_namespaces.contains(&ns.name_any()))
        .filter(|ns| selector.matches(ns.labels()))
        .count();
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// Keeps every PlatformDefaults' status current until the future is
/// dropped. `platform_namespace`'s FluxConfigs (the platform sync's own)
/// are not teams.
pub async fn run(
    client: kube::Client,
    defaults: Store<PlatformDefaults>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    flux_configs: Store<FluxConfig>,
    platform_namespace: String,
    period: Duration,
) {
    let api: Api<PlatformDefaults> = Api::all(client);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let team_namespaces: BTreeSet<String> = flux_configs
            .state()
            .iter()
            .filter_map(|fc| fc.namespace())
            .filter(|ns| *ns != platform_namespace)
            .collect();
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        for pd in defaults.state() {
            let status = desired(&pd, matched(&pd, &team_namespaces, &namespaces), &now);
            if unchanged(&pd, &status) {
                continue;
            }
            let patch = json!({
                "apiVersion": PlatformDefaults::api_version(&()),
                "kind": PlatformDefaults::kind(&()),
                "status": status,
            });
            if let Err(e) = api
                .patch_status(&pd.name_any(), &params, &Patch::Apply(&patch))
                .await
            {
                tracing::warn!(
                    platformdefaults = %pd.name_any(),
                    error = %crate::error::chain(&e),
                    "cannot write PlatformDefaults status; retrying"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pd(spec: serde_json::Value) -> PlatformDefaults {
        let mut pd: PlatformDefaults = serde_json::from_value(json!({
            "apiVersion": "fluxgate.dev/v1alpha1",
            "kind": "PlatformDefaults",
            "metadata": {"name": "global", "generation": 3},
            "spec": spec,
        }))
        .unwrap();
        pd.metadata.generation = Some(3);
        pd
    }

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn a_valid_object_is_ready_and_a_steady_one_needs_no_write() {
        let mut object = pd(json!({"allowedRepos": ["https://git.corp.example/{namespace}/*"]}));
        let status = desired(&object, 4, &at(100));
        assert_eq!(status.observed_generation, Some(3));
        assert_eq!(status.matched_namespaces, Some(4));
        assert_eq!(status.conditions.len(), 1);
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        assert_eq!(ready.message, "applies to 4 namespace(s) with FluxConfigs");
        object.status = Some(status);
        let again = desired(&object, 4, &at(200));
        assert!(unchanged(&object, &again));
        assert_eq!(again.conditions[0].last_transition_time, at(100));
        // More teams: a write, same transition time.
        let more = desired(&object, 5, &at(300));
        assert!(!unchanged(&object, &more));
        assert_eq!(more.conditions[0].last_transition_time, at(100));
    }

    #[test]
    fn an_invalid_object_is_stalled_with_the_cores_message() {
        let object = pd(json!({
            "allowedRepos": ["https://git.corp.example/{namespace}/*"],
            "limits": {"minInterval": "10m"},
            "defaults": {"interval": "1m"},
        }));
        let status = desired(&object, 0, &at(100));
        let kinds: Vec<(&str, &str)> = status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(kinds, [("Ready", "False"), ("Stalled", "True")]);
        let message = &status.conditions[0].message;
        assert!(message.contains("PlatformDefaults global"), "{message}");
        assert!(message.contains("1m"), "{message}");
        assert_eq!(status.conditions[0].reason, INVALID);
    }
}
