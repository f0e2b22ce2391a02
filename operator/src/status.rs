//! The operator's part of `FluxConfig.status`, computed purely from what was
//! resolved and applied.
//!
//! The operator owns `observedGeneration`, `effective`, `reconciler` and the
//! conditions `Accepted` and `Provisioned`; while a config is rejected it also
//! sets `Stalled=True` and `Ready=False` (no reconciler serves it then, so
//! nobody else would say so). Once accepted it stops applying those two, and
//! server-side apply drops them unless the reconciler owns them too. The
//! status is written only when it differs from what is there: a steady state
//! writes nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fluxgate_crds::conditions::{self, reasons};
use fluxgate_crds::{EffectiveConfig, FluxConfig, ReconcilerStatus};
use fluxgate_platform_defaults::Violations;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use serde_json::{Value, json};

/// What happened to one FluxConfig in this reconcile.
#[derive(Debug, Clone)]
pub enum Outcome<'a> {
    /// It violates the platform's rules; nothing was provisioned for it.
    Rejected(&'a Violations),
    /// It is accepted and its namespace's reconciler is in place.
    Provisioned {
        /// The effective configuration.
        effective: &'a EffectiveConfig,
        /// What was provisioned.
        reconciler: ReconcilerStatus,
    },
    /// It is accepted but provisioning failed.
    ProvisioningFailed {
        /// The effective configuration.
        effective: &'a EffectiveConfig,
        /// Why provisioning failed.
        message: String,
    },
}

/// The operator's desired status fields.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorStatus {
    /// `status.observedGeneration`.
    pub observed_generation: i64,
    /// The operator-owned conditions.
    pub conditions: Vec<Condition>,
    /// `status.effective`.
    pub effective: Option<EffectiveConfig>,
    /// `status.reconciler`.
    pub reconciler: Option<ReconcilerStatus>,
}

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: i64,
    now: &Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: now.clone(),
    }
}

/// Condition messages are capped by the API (32 KiB); keep them readable.
fn cap(message: String) -> String {
    const MAX: usize = 4096;
    if message.len() <= MAX {
        return message;
    }
    let mut cut = MAX;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} more bytes)", &message[..cut], message.len() - cut)
}

/// Computes the operator's status for `fc`.
pub fn desired(fc: &FluxConfig, outcome: &Outcome<'_>, now: &Time) -> OperatorStatus {
    let generation = fc.meta().generation.unwrap_or_default();
    let mut conds = Vec::new();
    let (effective, reconciler) = match outcome {
        Outcome::Rejected(violations) => {
            let message = cap(violations.to_string());
            conds.push(condition(
                conditions::ACCEPTED,
                false,
                reasons::POLICY_VIOLATION,
                message.clone(),
                generation,
                now,
            ));
            conds.push(condition(
                conditions::PROVISIONED,
                false,
                reasons::POLICY_VIOLATION,
                "no reconciler rights are granted while the config violates the platform's rules",
                generation,
                now,
            ));
            conds.push(condition(
                conditions::STALLED,
                true,
                reasons::POLICY_VIOLATION,
                message.clone(),
                generation,
                now,
            ));
            conds.push(condition(
                conditions::READY,
                false,
                reasons::POLICY_VIOLATION,
                message,
                generation,
                now,
            ));
            (None, None)
        }
        Outcome::Provisioned {
            effective,
            reconciler,
        } => {
            conds.push(condition(
                conditions::ACCEPTED,
                true,
                reasons::ACCEPTED,
                "the config satisfies the platform's rules",
                generation,
                now,
            ));
            let deployment = reconciler.deployment.as_deref().unwrap_or("the reconciler");
            conds.push(condition(
                conditions::PROVISIONED,
                true,
                reasons::PROVISIONED,
                format!("Deployment {deployment} and its rights are in place"),
                generation,
                now,
            ));
            (Some((*effective).clone()), Some(reconciler.clone()))
        }
        Outcome::ProvisioningFailed { effective, message } => {
            conds.push(condition(
                conditions::ACCEPTED,
                true,
                reasons::ACCEPTED,
                "the config satisfies the platform's rules",
                generation,
                now,
            ));
            conds.push(condition(
                conditions::PROVISIONED,
                false,
                reasons::PROVISIONING_FAILED,
                cap(message.clone()),
                generation,
                now,
            ));
            (Some((*effective).clone()), None)
        }
    };
    OperatorStatus {
        observed_generation: generation,
        conditions: conds,
        effective,
        reconciler,
    }
}

fn same_condition(a: &Condition, b: &Condition) -> bool {
    a.type_ == b.type_
        && a.status == b.status
        && a.reason == b.reason
        && a.message == b.message
        && a.observed_generation == b.observed_generation
}

/// The status patch to apply, or `None` when the live status already says
/// all of it. Transition times are kept from the live conditions whose
/// status did not change.
pub fn patch(fc: &FluxConfig, mut desired: OperatorStatus) -> Option<Value> {
    let live = fc.status.clone().unwrap_or_default();
    let live_condition = |t: &str| live.conditions.iter().find(|c| c.type_ == t);
    for c in &mut desired.conditions {
        if let Some(old) = live_condition(&c.type_)
            && old.status == c.status
        {
            c.last_transition_time = old.last_transition_time.clone();
        }
    }
    let rejected = desired
        .conditions
        .iter()
        .any(|c| c.type_ == conditions::STALLED);
    // A Stalled/Ready the operator set for a violation must go once the
    // config is accepted.
    let stale_rejection = !rejected
        && [conditions::STALLED, conditions::READY]
            .iter()
            .any(|t| live_condition(t).is_some_and(|c| c.reason == reasons::POLICY_VIOLATION));
    let unchanged = !stale_rejection
        && live.observed_generation == Some(desired.observed_generation)
        && live.effective == desired.effective
        && live.reconciler == desired.reconciler
        && desired
            .conditions
            .iter()
            .all(|c| live_condition(&c.type_).is_some_and(|old| same_condition(old, c)));
    if unchanged {
        return None;
    }
    let mut status = json!({
        "observedGeneration": desired.observed_generation,
        "conditions": desired.conditions,
    });
    if let Some(effective) = &desired.effective {
        status["effective"] = serde_json::to_value(effective).unwrap_or(Value::Null);
    }
    if let Some(reconciler) = &desired.reconciler {
        status["reconciler"] = serde_json::to_value(reconciler).unwrap_or(Value::Null);
    }
    Some(json!({
        "apiVersion": FluxConfig::api_version(&()),
        "kind": FluxConfig::kind(&()),
        "status": status,
    }))
}

/// What a status says, without transition times: two statuses with the same
/// fingerprint differ at most in when their conditions flipped.
pub fn fingerprint(status: &OperatorStatus) -> String {
    let conditions: Vec<_> = status
        .conditions
        .iter()
        .map(|c| {
            (
                &c.type_,
                &c.status,
                &c.reason,
                &c.message,
                c.observed_generation,
            )
        })
        .collect();
    serde_json::to_string(&(
        status.observed_generation,
        conditions,
        &status.effective,
        &status.reconciler,
    ))
    .unwrap_or_default()
}

/// Status writes the watch cache may not have seen yet.
///
/// A reconcile compares with the cached object; when a second trigger (an
/// event on a child object it just applied) arrives before the watch has
/// delivered the status it just wrote, the cache still shows the old status
/// and the same status would be written again, with a new transition time
/// and a duplicate Event. So a write is remembered, by object uid, until
/// the cache shows the object version it produced, or for a short while
/// (the cache may also skip to a later version written by someone else).
#[derive(Debug, Default)]
pub struct RecentWrites(Mutex<HashMap<String, (String, String, Instant)>>);

impl RecentWrites {
    /// How long a write is remembered at most.
    pub const TTL: Duration = Duration::from_secs(10);

    /// Whether writing `fingerprint` for `uid` would repeat a write the
    /// cache (showing `cached_version`) has not caught up with.
    pub fn is_pending(&self, uid: &str, fingerprint: &str, cached_version: Option<&str>) -> bool {
        let Ok(mut map) = self.0.lock() else {
            return false;
        };
        map.retain(|_, (_, _, at)| at.elapsed() < Self::TTL);
        match map.get(uid) {
            Some((_, written_version, _)) if Some(written_version.as_str()) == cached_version => {
                map.remove(uid);
                false
            }
            Some((written, _, _)) => written == fingerprint,
            None => false,
        }
    }

    /// Records a write of `fingerprint` for `uid` that produced `version`.
    pub fn record(&self, uid: &str, fingerprint: String, version: Option<String>) {
        if let (Ok(mut map), Some(version)) = (self.0.lock(), version) {
            map.insert(uid.to_owned(), (fingerprint, version, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use fluxgate_crds::{FluxConfigSpec, FluxConfigStatus};
    use fluxgate_platform_defaults::{Rule, Violation};

    use super::*;

    fn now(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn fc(generation: i64, status: Option<FluxConfigStatus>) -> FluxConfig {
        let mut fc = FluxConfig::new(
            "web",
            FluxConfigSpec {
                repo: "https://git.corp.example/team-a/web.git".into(),
                ..FluxConfigSpec::default()
            },
        );
        fc.metadata.namespace = Some("team-a".into());
        fc.metadata.generation = Some(generation);
        fc.status = status;
        fc
    }

    fn violations() -> Violations {
        Violations {
            object: "FluxConfig team-a/web".into(),
            violations: vec![Violation::new(
                Rule::RepoNotAllowed,
                "spec.repo",
                "x",
                "is not allowed",
            )],
        }
    }

    /// Applies a patch to a FluxConfig the way the API server would for the
    /// operator's own fields (enough for these tests).
    fn applied(mut fc: FluxConfig, patch: &Value) -> FluxConfig {
        let status: FluxConfigStatus = serde_json::from_value(patch["status"].clone()).unwrap();
        fc.status = Some(status);
        fc
    }

    #[test]
    fn rejected_config_is_stalled_with_the_violation() {
        let v = violations();
        let f = fc(3, None);
        let p = patch(&f, desired(&f, &Outcome::Rejected(&v), &now(10))).unwrap();
        let conds = p["status"]["conditions"].as_array().unwrap();
        let by_type = |t: &str| conds.iter().find(|c| c["type"] == t).unwrap();
        assert_eq!(by_type("Stalled")["status"], "True");
        assert_eq!(by_type("Ready")["status"], "False");
        assert_eq!(by_type("Accepted")["message"], v.to_string());
        assert_eq!(p["status"]["observedGeneration"], 3);
    }

    #[test]
    fn steady_state_writes_nothing_and_keeps_transition_times() {
        let v = violations();
        let f = fc(1, None);
        let first = patch(&f, desired(&f, &Outcome::Rejected(&v), &now(10))).unwrap();
        let f = applied(f, &first);
        assert!(patch(&f, desired(&f, &Outcome::Rejected(&v), &now(99))).is_none());

        // A new generation is a change, but unchanged conditions keep their time.
        let mut f2 = f.clone();
        f2.metadata.generation = Some(2);
        let p = patch(&f2, desired(&f2, &Outcome::Rejected(&v), &now(99))).unwrap();
        let t = p["status"]["conditions"][0]["lastTransitionTime"].clone();
        assert_eq!(t, serde_json::to_value(now(10)).unwrap());
    }

    #[test]
    fn acceptance_drops_the_operators_stalled_condition() {
        let v = violations();
        let f = fc(1, None);
        let f = applied(
            f.clone(),
            &patch(&f, desired(&f, &Outcome::Rejected(&v), &now(10))).unwrap(),
        );
        let resolved_effective: EffectiveConfig = serde_json::from_value(json!({
            "repo": {"value": "https://git.corp.example/team-a/web", "source": "spec"},
            "ref": {"value": {"branch": "main"}, "source": "builtin"},
            "path": {"value": ".", "source": "builtin"},
            "targetNamespace": {"value": "team-a", "source": "builtin"},
            "allowedNamespaces": {"value": ["team-a"], "source": "builtin"},
            "interval": {"value": "5m", "source": "builtin"},
            "suspend": {"value": false, "source": "builtin"},
            "reconcilerImage": {"value": "img", "source": "builtin"},
            "reconcilerClusterRole": {"value": "role", "source": "builtin"},
        }))
        .unwrap();
        let outcome = Outcome::Provisioned {
            effective: &resolved_effective,
            reconciler: ReconcilerStatus::default(),
        };
        let p = patch(&f, desired(&f, &outcome, &now(20))).unwrap();
        let types: Vec<&str> = p["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Accepted", "Provisioned"]);
        // Accepted flipped, so its time moves.
        assert_eq!(
            p["status"]["conditions"][0]["lastTransitionTime"],
            serde_json::to_value(now(20)).unwrap()
        );
    }

    #[test]
    fn a_status_write_is_not_repeated_until_the_cache_shows_it() {
        let v = violations();
        let f = fc(1, None);
        let at = |t| fingerprint(&desired(&f, &Outcome::Rejected(&v), &now(t)));
        assert_eq!(at(10), at(99), "transition times are not part of it");
        let recent = RecentWrites::default();
        assert!(!recent.is_pending("u", &at(10), Some("5")));
        recent.record("u", at(10), Some("6".into()));
        // The cache still shows version 5: the same write is pending.
        assert!(recent.is_pending("u", &at(11), Some("5")));
        // Another status is not.
        let other = fingerprint(&desired(&fc(2, None), &Outcome::Rejected(&v), &now(11)));
        assert!(!recent.is_pending("u", &other, Some("5")));
        // Caught up: forgotten.
        assert!(!recent.is_pending("u", &at(12), Some("6")));
        assert!(!recent.is_pending("u", &at(12), Some("5")));
    }

    #[test]
    fn long_messages_are_capped() {
        let long = "x".repeat(10_000);
        let capped = cap(long);
        assert!(capped.len() < 4200);
        assert!(capped.ends_with("more bytes)"));
    }
}
