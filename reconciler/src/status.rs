//! The reconciler's part of `FluxConfig.status`, computed purely from the
//! outcome of the last sync.
//!
//! The reconciler owns, under the field manager
//! [`FIELD_MANAGER`](crate::apply::FIELD_MANAGER) on the status subresource:
//! the conditions `Ready`, `Reconciling` and `Stalled` (each with
//! `observedGeneration`), `lastAppliedRevision`, `lastAttemptedRevision`,
//! `inventory` and `lastError`. It never writes `observedGeneration`,
//! `effective`, `reconciler`, `Accepted` or `Provisioned`, which are the
//! operator's. Every write is a server-side apply of all its fields (a
//! field left out would be dropped), sent only when the live status differs:
//! a steady state writes nothing.

use fluxgate_crds::conditions::{self, reasons as shared};
use fluxgate_crds::{FluxConfig, FluxConfigStatus, InventorySummary, LastError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Resource;
use serde_json::{Value, json};

use crate::error::{Class, Failure, reasons};

/// Longest condition message written (the API allows 32 KiB).
const MAX_MESSAGE: usize = 4096;

/// One condition's desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cond {
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl Cond {
    fn new(status: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.to_owned(),
            message: cap(message.into()),
        }
    }

    fn from_live(c: &Condition) -> Self {
        let status = match c.status.as_str() {
            "True" => "True",
            "False" => "False",
            _ => "Unknown",
        };
        Self {
            status,
            reason: c.reason.clone(),
            message: c.message.clone(),
        }
    }
}

fn cap(message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut cut = MAX_MESSAGE;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} more bytes)", &message[..cut], message.len() - cut)
}

/// Everything the reconciler reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `Ready`.
    pub ready: Cond,
    /// `Reconciling`.
    pub reconciling: Cond,
    /// `Stalled`.
    pub stalled: Cond,
    /// `lastAppliedRevision`.
    pub last_applied_revision: Option<String>,
    /// `lastAttemptedRevision`.
    pub last_attempted_revision: Option<String>,
    /// `inventory`.
    pub inventory: Option<InventorySummary>,
    /// `lastError`.
    pub last_error: Option<LastError>,
}

impl Report {
    /// What the live status says, when the reconciler wrote it before (a
    /// restarted reconciler carries on from there); `None` otherwise.
    pub fn from_status(status: Option<&FluxConfigStatus>) -> Option<Self> {
        let status = status?;
        let find = |t: &str| status.conditions.iter().find(|c| c.type_ == t);
        let (ready, reconciling, stalled) = (
            find(conditions::READY)?,
            find(conditions::RECONCILING)?,
            find(conditions::STALLED)?,
        );
        Some(Self {
            ready: Cond::from_live(ready),
            reconciling: Cond::from_live(reconciling),
            stalled: Cond::from_live(stalled),
            last_applied_revision: status.last_applied_revision.clone(),
            last_attempted_revision: status.last_attempted_revision.clone(),
            inventory: status.inventory.clone(),
            last_error: status.last_error.clone(),
        })
    }

    /// A revision was applied: Ready.
    pub fn applied(revision: &str, inventory: InventorySummary) -> Self {
        Self {
            ready: Cond::new(
                "True",
                shared::SUCCEEDED,
                format!("Applied revision: {revision}"),
            ),
            reconciling: Cond::new("False", shared::SUCCEEDED, "Reconciliation finished"),
            stalled: Cond::new("False", shared::SUCCEEDED, "Reconciliation succeeded"),
            last_applied_revision: Some(revision.to_owned()),
            last_attempted_revision: Some(revision.to_owned()),
            inventory: Some(inventory),
            last_error: None,
        }
    }

    /// A new revision is being applied.
    pub fn progressing(previous: Option<&Self>, revision: &str) -> Self {
        let mut next = previous.cloned().unwrap_or_else(Self::empty);
        next.ready = Cond::new(
            "Unknown",
            shared::PROGRESSING,
            format!("Applying revision: {revision}"),
        );
        next.reconciling = Cond::new(
            "True",
            shared::PROGRESSING,
            format!("Applying revision: {revision}"),
        );
        next.stalled = Cond::new("False", shared::PROGRESSING, "Reconciliation in progress");
        next.last_attempted_revision = Some(revision.to_owned());
        next
    }

    /// A sync failed; what ran before keeps running.
    pub fn failed(previous: Option<&Self>, failure: &Failure) -> Self {
        let mut next = previous.cloned().unwrap_or_else(Self::empty);
        let keeps = match &next.last_applied_revision {
            Some(revision) => format!("; revision {revision} keeps running"),
            None => String::new(),
        };
        let message = &failure.error.message;
        next.ready = Cond::new("False", failure.reason, format!("{message}{keeps}"));
        match failure.class {
            Class::Transient => {
                next.reconciling = Cond::new(
                    "True",
                    reasons::PROGRESSING_WITH_RETRY,
                    format!("Retrying after a transient error: {message}"),
                );
                next.stalled = Cond::new(
                    "False",
                    reasons::PROGRESSING_WITH_RETRY,
                    "The error is expected to clear; retrying with backoff",
                );
            }
            Class::Terminal => {
                next.reconciling = Cond::new("False", failure.reason, "Waiting for a new commit");
                next.stalled = Cond::new(
                    "True",
                    failure.reason,
                    format!("{message}; fix it in a new commit"),
                );
            }
            Class::Stalled => {
                next.reconciling =
                    Cond::new("False", failure.reason, "Retrying at the next interval");
                next.stalled = Cond::new("True", failure.reason, message.clone());
            }
        }
        if let Some(revision) = &failure.error.revision {
            next.last_attempted_revision = Some(revision.clone());
        }
        next.last_error = Some(failure.error.clone());
        next
    }

    /// Syncing is suspended: `Ready` keeps its status, with reason
    /// `Suspended`.
    pub fn suspended(previous: Option<&Self>) -> Self {
        let mut next = previous.cloned().unwrap_or_else(Self::empty);
        let running = match &next.last_applied_revision {
            Some(revision) => format!("; revision {revision} keeps running"),
            None => String::new(),
        };
        let message = format!("Syncing is suspended by spec.suspend{running}");
        next.ready = Cond::new(next.ready.status, shared::SUSPENDED, message.clone());
        next.reconciling = Cond::new("False", shared::SUSPENDED, message.clone());
        next.stalled = Cond::new("False", shared::SUSPENDED, message);
        next
    }

    fn empty() -> Self {
        let unknown = || Cond::new("Unknown", shared::PROGRESSING, "Reconciliation in progress");
        Self {
            ready: unknown(),
            reconciling: unknown(),
            stalled: Cond::new("False", shared::PROGRESSING, "Reconciliation in progress"),
            last_applied_revision: None,
            last_attempted_revision: None,
            inventory: None,
            last_error: None,
        }
    }

    fn conditions(&self) -> [(&'static str, &Cond); 3] {
        [
            (conditions::READY, &self.ready),
            (conditions::RECONCILING, &self.reconciling),
            (conditions::STALLED, &self.stalled),
        ]
    }
}

/// The status patch (server-side apply body) to send, or `None` when the
/// live status already says all of it. Transition times are kept from live
/// conditions whose status did not change.
pub fn patch(fc: &FluxConfig, report: &Report, now: &Time) -> Option<Value> {
    let generation = fc.meta().generation;
    let live = fc.status.clone().unwrap_or_default();
    let find = |t: &str| live.conditions.iter().find(|c| c.type_ == t);
    let same = |t: &str, c: &Cond| {
        find(t).is_some_and(|l| {
            l.status == c.status
                && l.reason == c.reason
                && l.message == c.message
                && l.observed_generation == generation
        })
    };
    let unchanged = report.conditions().iter().all(|(t, c)| same(t, c))
        && live.last_applied_revision == report.last_applied_revision
        && live.last_attempted_revision == report.last_attempted_revision
        && live.inventory == report.inventory
        && live.last_error == report.last_error;
    if unchanged {
        return None;
    }
    let conditions: Vec<Condition> = report
        .conditions()
        .iter()
        .map(|(t, c)| Condition {
            type_: (*t).to_owned(),
            status: c.status.to_owned(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            observed_generation: generation,
            last_transition_time: find(t)
                .filter(|l| l.status == c.status)
                .map_or_else(|| now.clone(), |l| l.last_transition_time.clone()),
        })
        .collect();
    let mut status = json!({ "conditions": conditions });
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            status[key] = v;
        }
    };
    set(
        "lastAppliedRevision",
        report.last_applied_revision.clone().map(Value::String),
    );
    set(
        "lastAttemptedRevision",
        report.last_attempted_revision.clone().map(Value::String),
    );
    set(
        "inventory",
        report
            .inventory
            .as_ref()
            .and_then(|i| serde_json::to_value(i).ok()),
    );
    set(
        "lastError",
        report
            .last_error
            .as_ref()
            .and_then(|e| serde_json::to_value(e).ok()),
    );
    Some(json!({
        "apiVersion": FluxConfig::api_version(&()),
        "kind": FluxConfig::kind(&()),
        "status": status,
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use fluxgate_crds::FluxConfigSpec;

    use super::*;

    fn now(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn fc() -> FluxConfig {
        let mut fc = FluxConfig::new(
            "web",
            FluxConfigSpec {
                repo: "https://git.example/x".into(),
                ..FluxConfigSpec::default()
            },
        );
        fc.metadata.generation = Some(4);
        fc
    }

    /// What the API server would hold after applying `patch` (enough for
    /// these tests: the reconciler's fields replace the old ones).
    fn applied(mut fc: FluxConfig, patch: &Value) -> FluxConfig {
        let ours: FluxConfigStatus = serde_json::from_value(patch["status"].clone()).unwrap();
        let mut status = fc.status.take().unwrap_or_default();
        status
            .conditions
            .retain(|c| !ours.conditions.iter().any(|o| o.type_ == c.type_));
        status.conditions.extend(ours.conditions);
        status.last_applied_revision = ours.last_applied_revision;
        status.last_attempted_revision = ours.last_attempted_revision;
        status.inventory = ours.inventory;
        status.last_error = ours.last_error;
        fc.status = Some(status);
        fc
    }

    fn failure(class: Class) -> Failure {
        Failure {
            class,
            reason: reasons::VALIDATION_FAILED,
            error: LastError {
                message: "a.yaml:3: invalid YAML: oops".into(),
                revision: Some("main@sha1:bbb".into()),
                file: Some("a.yaml".into()),
                line: Some(3),
                object: None,
            },
        }
    }

    #[test]
    fn steady_state_writes_nothing_and_keeps_transition_times() {
        let report = Report::applied("main@sha1:aaa", InventorySummary::default());
        let first = patch(&fc(), &report, &now(10)).unwrap();
        assert!(first["status"].get("observedGeneration").is_none());
        assert_eq!(first["status"]["conditions"][0]["observedGeneration"], 4);
        assert_eq!(first["status"]["lastAppliedRevision"], "main@sha1:aaa");
        let live = applied(fc(), &first);
        assert!(patch(&live, &report, &now(20)).is_none());

        // A failure flips Ready; Reconciling stays False and keeps its time.
        let failed = Report::failed(Some(&report), &failure(Class::Terminal));
        let p = patch(&live, &failed, &now(30)).unwrap();
        let conds = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds[0]["status"], "False");
        assert_eq!(
            conds[0]["lastTransitionTime"],
            serde_json::to_value(now(30)).unwrap()
        );
        assert_eq!(
            conds[1]["lastTransitionTime"],
            serde_json::to_value(now(10)).unwrap()
        );
        assert_eq!(conds[2]["status"], "True", "Stalled");
        assert_eq!(p["status"]["lastAppliedRevision"], "main@sha1:aaa", "kept");
        assert_eq!(p["status"]["lastAttemptedRevision"], "main@sha1:bbb");
        assert_eq!(p["status"]["lastError"]["line"], 3);
        assert!(
            conds[0]["message"]
                .as_str()
                .unwrap()
                .ends_with("revision main@sha1:aaa keeps running")
        );
    }

    #[test]
    fn transient_failures_keep_reconciling() {
        let report = Report::applied("main@sha1:aaa", InventorySummary::default());
        let failed = Report::failed(Some(&report), &failure(Class::Transient));
        assert_eq!(failed.reconciling.status, "True");
        assert_eq!(failed.stalled.status, "False");
        let ok = Report::applied("main@sha1:aaa", InventorySummary::default());
        assert!(ok.last_error.is_none(), "cleared by the next success");
    }

    #[test]
    fn suspension_keeps_ready_status() {
        let report = Report::applied("main@sha1:aaa", InventorySummary::default());
        let s = Report::suspended(Some(&report));
        assert_eq!(s.ready.status, "True");
        assert_eq!(s.ready.reason, shared::SUSPENDED);
        assert_eq!(s.last_applied_revision.as_deref(), Some("main@sha1:aaa"));
    }

    #[test]
    fn a_restarted_reconciler_reads_its_report_back() {
        let report = Report::applied("main@sha1:aaa", InventorySummary::default());
        let live = applied(fc(), &patch(&fc(), &report, &now(1)).unwrap());
        assert_eq!(Report::from_status(live.status.as_ref()), Some(report));
        assert_eq!(Report::from_status(fc().status.as_ref()), None);
    }

    #[test]
    fn long_messages_are_capped() {
        let c = Cond::new("False", "X", "x".repeat(10_000));
        assert!(c.message.len() < 4200);
    }
}
