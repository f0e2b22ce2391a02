//! Prometheus metrics and the plain-HTTP admin endpoints (`/livez`,
//! `/readyz`, `/metrics`) of the reconciler.
//!
//! Per FluxConfig (labels `namespace`, `name`; one reconciler serves one
//! team namespace, so these stay few):
//!
//! - `fluxgate_reconciler_fluxconfig_condition{namespace,name,type,status}`:
//!   the conditions the reconciler owns (`Ready`, `Reconciling`, `Stalled`),
//!   Flux's `gotk_reconcile_condition` shape: 1 on the series of the current
//!   `status` (`True`, `False`, `Unknown`), 0 on the other two.
//! - `fluxgate_reconciler_applied_revision_info{namespace,name,revision}`:
//!   1, on the revision `status.lastAppliedRevision` names.
//! - `fluxgate_reconciler_last_applied_timestamp_seconds{namespace,name}`:
//!   when this reconciler last applied a revision (a new commit, a changed
//!   effective config, or the first sync after it started).
//! - `fluxgate_reconciler_last_success_timestamp_seconds{namespace,name}`:
//!   when a reconcile last ended well (applied, or found the applied
//!   revision current).
//! - `fluxgate_reconciler_reconcile_errors_total{namespace,name,class,reason}`:
//!   failures reported on the status (failed drift corrections included),
//!   by class (`terminal`, `stalled`, `transient`) and condition reason
//!   (`FetchFailed`, `AuthenticationFailed`, `ConfigError`,
//!   `ValidationFailed`, `ApplyFailed`, `PruneFailed`).
//! - `fluxgate_reconciler_reconcile_duration_seconds{namespace,name}`: time
//!   per reconcile that applied or failed (polls that find nothing new take
//!   one `ls-remote` and would hide them).
//!
//! Per process:
//!
//! - `fluxgate_reconciler_reconciles_total{result}`: `applied`,
//!   `unchanged` (a poll found the applied revision current), `refused` (a
//!   poll found the commit refused before), or the error class.
//! - `fluxgate_reconciler_api_writes_total{verb}`: requests that write
//!   (`apply`, `dry_run`, `delete`, `status`, `event`, `inventory`); flat in
//!   a steady state.
//! - `fluxgate_reconciler_drift_corrections_total`: objects re-applied
//!   after someone changed or deleted them.
//! - `fluxgate_reconciler_pruned_objects_total`: objects deleted because
//!   they left Git.
//! - `fluxgate_reconciler_managed_objects`: objects in the inventories.
//!
//! A deleted FluxConfig's series are removed; a FluxConfig the operator no
//! longer accepts loses its condition series (the operator's
//! `fluxgate_operator_fluxconfig_condition` speaks for it then).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use fluxgate_crds::conditions;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::Class;
use crate::status::Report;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabel {
    verb: String,
}

/// Which FluxConfig a series is about.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ObjectLabels {
    namespace: String,
    name: String,
}

impl ObjectLabels {
    fn new(namespace: &str, name: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    namespace: String,
    name: String,
    r#type: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    namespace: String,
    name: String,
    class: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabels {
    namespace: String,
    name: String,
    revision: String,
}

type HistogramFamily = Family<ObjectLabels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    // 5 ms to ~41 s: a small repository applies in well under a second, a
    // thousand manifests with their dry run take seconds.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// A family registered so that its HELP and TYPE are exposed before its
/// first series: prometheus-client skips empty families, but `/metrics`
/// should list every metric (OpenMetrics allows a family without samples),
/// so users, and the dashboard's test, can see what exists.
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// Verbs counted by [`Metrics::wrote`].
const VERBS: &[&str] = &["apply", "dry_run", "delete", "status", "event", "inventory"];

/// Condition types the reconciler owns.
const CONDITION_TYPES: [&str; 3] = [
    conditions::READY,
    conditions::RECONCILING,
    conditions::STALLED,
];

/// Values of a condition's `status`.
const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

/// How a reconcile of one FluxConfig ended: the `result` label of
/// `fluxgate_reconciler_reconciles_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// A revision was applied.
    Applied,
    /// The applied revision is current: nothing to do.
    Unchanged,
    /// The commit was refused before; waiting for a new one.
    Refused,
    /// It failed, with this class.
    Failed(Class),
}

impl Reconciled {
    /// The `result` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Refused => "refused",
            Self::Failed(class) => class.as_str(),
        }
    }
}

/// Label sets of one FluxConfig that are not fixed by its name: removed
/// with it.
#[derive(Debug, Default)]
struct Seen {
    revision: Option<String>,
    errors: BTreeSet<(&'static str, &'static str)>,
}

/// The reconciler's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    duration: HistogramFamily,
    errors: Family<ErrorLabels, Counter>,
    conditions: Family<ConditionLabels, Gauge>,
    revision: Family<RevisionLabels, Gauge>,
    last_applied: Family<ObjectLabels, Gauge>,
    last_success: Family<ObjectLabels, Gauge>,
    writes: Family<VerbLabel, Counter>,
    seen: Mutex<HashMap<ObjectLabels, Seen>>,
    /// Objects re-applied after drift.
    pub drift_corrections: Counter,
    /// Objects pruned.
    pub pruned: Counter,
    /// Objects in the inventories.
    pub managed_objects: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Now as Unix seconds (0 for a clock before 1970).
fn now_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fluxgate_reconciler");
        let conditions = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "fluxconfig_condition",
            "Conditions the reconciler owns on each FluxConfig it serves (Ready, Reconciling, \
             Stalled): 1 on the current status, 0 on the others; alert on \
             type=\"Ready\",status=\"False\"",
            Described(conditions.clone()),
        );
        let revision = Family::<RevisionLabels, Gauge>::default();
        registry.register(
            "applied_revision_info",
            "The revision last applied for each FluxConfig (status.lastAppliedRevision); always 1",
            Described(revision.clone()),
        );
        let last_applied = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "last_applied_timestamp_seconds",
            "Unix time this reconciler last applied a revision of each FluxConfig; \
             time() minus it is the age of what runs",
            Described(last_applied.clone()),
        );
        let last_success = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time a reconcile of each FluxConfig last ended well (applied, or the applied \
             revision is current); stale when syncing has stopped working",
            Described(last_success.clone()),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "reconcile_errors",
            "Failures reported on each FluxConfig's status, by class (terminal, stalled, \
             transient) and condition reason",
            Described(errors.clone()),
        );
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register(
            "reconcile_duration_seconds",
            "Time per reconcile of each FluxConfig that applied a revision or failed",
            Described(duration.clone()),
        );
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by result: applied, unchanged, refused, or the error class",
            Described(reconciles.clone()),
        );
        let writes = Family::<VerbLabel, Counter>::default();
        registry.register(
            "api_writes",
            "Writes sent to the API server, by verb; flat in a steady state",
            Described(writes.clone()),
        );
        let drift_corrections = Counter::default();
        registry.register(
            "drift_corrections",
            "Objects re-applied after they were changed or deleted outside Git",
            drift_corrections.clone(),
        );
        let pruned = Counter::default();
        registry.register(
            "pruned_objects",
            "Objects deleted because they left Git",
            pruned.clone(),
        );
        let managed_objects = Gauge::default();
        registry.register(
            "managed_objects",
            "Objects in the inventories of the FluxConfigs this reconciler serves",
            managed_objects.clone(),
        );
        Self {
            registry,
            reconciles,
            duration,
            errors,
            conditions,
            revision,
            last_applied,
            last_success,
            writes,
            seen: Mutex::new(HashMap::new()),
            drift_corrections,
            pruned,
            managed_objects,
        }
    }

    /// The per-FluxConfig label sets; a panic elsewhere while holding the
    /// lock leaves a map that is still consistent, so poisoning is ignored.
    fn seen(&self) -> MutexGuard<'_, HashMap<ObjectLabels, Seen>> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a finished reconcile of FluxConfig `namespace/name`.
    pub fn reconciled(&self, namespace: &str, name: &str, result: Reconciled, took: Duration) {
        self.reconciles
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
        let object = ObjectLabels::new(namespace, name);
        let now = now_seconds();
        match result {
            Reconciled::Applied => {
                self.last_applied.get_or_create(&object).set(now);
                self.last_success.get_or_create(&object).set(now);
            }
            Reconciled::Unchanged => {
                self.last_success.get_or_create(&object).set(now);
            }
            Reconciled::Refused | Reconciled::Failed(_) => {}
        }
        if !matches!(result, Reconciled::Unchanged | Reconciled::Refused) {
            self.duration
                .get_or_create(&object)
                .observe(took.as_secs_f64());
        }
    }

    /// Reconciles with `result` (a [`Reconciled::as_str`] value) so far.
    pub fn reconciles(&self, result: &str) -> u64 {
        let result = [
            Reconciled::Applied,
            Reconciled::Unchanged,
            Reconciled::Refused,
            Reconciled::Failed(Class::Terminal),
            Reconciled::Failed(Class::Stalled),
            Reconciled::Failed(Class::Transient),
        ]
        .into_iter()
        .map(Reconciled::as_str)
        .find(|r| *r == result);
        result.map_or(0, |result| {
            self.reconciles.get_or_create(&ResultLabel { result }).get()
        })
    }

    /// Counts a failure reported on FluxConfig `namespace/name`, with its
    /// class and condition reason.
    pub fn failed(&self, namespace: &str, name: &str, class: Class, reason: &'static str) {
        let class = class.as_str();
        self.errors
            .get_or_create(&ErrorLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                class,
                reason,
            })
            .inc();
        self.seen()
            .entry(ObjectLabels::new(namespace, name))
            .or_default()
            .errors
            .insert((class, reason));
    }

    /// Failures of FluxConfig `namespace/name` with this class and reason.
    pub fn errors(&self, namespace: &str, name: &str, class: Class, reason: &'static str) -> u64 {
        self.errors
            .get(&ErrorLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                class: class.as_str(),
                reason,
            })
            .map_or(0, |c| c.get())
    }

    /// Mirrors what the reconciler reports on FluxConfig `namespace/name`:
    /// its conditions and the applied revision.
    pub fn report(&self, namespace: &str, name: &str, report: &Report) {
        let Report {
            ready,
            reconciling,
            stalled,
            last_applied_revision,
            ..
        } = report;
        for (type_, cond) in
            CONDITION_TYPES
                .into_iter()
                .zip([ready.status, reconciling.status, stalled.status])
        {
            for status in CONDITION_STATUSES {
                self.conditions
                    .get_or_create(&ConditionLabels {
                        namespace: namespace.to_owned(),
                        name: name.to_owned(),
                        r#type: type_,
                        status,
                    })
                    .set(i64::from(status == cond));
            }
        }
        let mut seen = self.seen();
        let entry = seen.entry(ObjectLabels::new(namespace, name)).or_default();
        if entry.revision == *last_applied_revision {
            return;
        }
        if let Some(old) = entry.revision.take() {
            self.revision.remove(&RevisionLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                revision: old,
            });
        }
        if let Some(revision) = last_applied_revision {
            self.revision
                .get_or_create(&RevisionLabels {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    revision: revision.clone(),
                })
                .set(1);
        }
        entry.revision.clone_from(last_applied_revision);
    }

    /// The status the condition series of FluxConfig `namespace/name` give
    /// `type_` (`Ready`, `Reconciling`, `Stalled`), if any.
    pub fn condition(&self, namespace: &str, name: &str, type_: &str) -> Option<&'static str> {
        let type_ = CONDITION_TYPES.into_iter().find(|t| *t == type_)?;
        CONDITION_STATUSES.into_iter().find(|status| {
            self.conditions
                .get(&ConditionLabels {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    r#type: type_,
                    status,
                })
                .is_some_and(|g| g.get() == 1)
        })
    }

    /// Drops the condition series of FluxConfig `namespace/name`: the
    /// reconciler no longer speaks for it (the operator stopped accepting
    /// it); what was applied, and when, stays true.
    pub fn clear_conditions(&self, namespace: &str, name: &str) {
        for type_ in CONDITION_TYPES {
            for status in CONDITION_STATUSES {
                self.conditions.remove(&ConditionLabels {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    r#type: type_,
                    status,
                });
            }
        }
    }

    /// Drops every series of FluxConfig `namespace/name` (it was deleted).
    pub fn forget(&self, namespace: &str, name: &str) {
        self.clear_conditions(namespace, name);
        let object = ObjectLabels::new(namespace, name);
        self.last_applied.remove(&object);
        self.last_success.remove(&object);
        self.duration.remove(&object);
        let Some(seen) = self.seen().remove(&object) else {
            return;
        };
        if let Some(revision) = seen.revision {
            self.revision.remove(&RevisionLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                revision,
            });
        }
        for (class, reason) in seen.errors {
            self.errors.remove(&ErrorLabels {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                class,
                reason,
            });
        }
    }

    /// Counts a write to the API server.
    pub fn wrote(&self, verb: &str) {
        self.writes
            .get_or_create(&VerbLabel {
                verb: verb.to_owned(),
            })
            .inc();
    }

    /// Total writes so far (all verbs), for tests and logs.
    pub fn total_writes(&self) -> u64 {
        VERBS
            .iter()
            .map(|v| {
                self.writes
                    .get_or_create(&VerbLabel {
                        verb: (*v).to_owned(),
                    })
                    .get()
            })
            .sum()
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// What the admin endpoints report.
#[derive(Debug, Clone)]
pub struct Health {
    /// Metrics to serve.
    pub metrics: Arc<Metrics>,
    /// True once the FluxConfig watch has synced.
    pub ready: Arc<AtomicBool>,
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "FluxConfig watch not synced",
        )
    }
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.encode(),
    )
}

/// The admin router: `/livez`, `/readyz`, `/metrics`.
pub fn admin_router(health: Health) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn admin_endpoints_report_liveness_readiness_and_metrics() {
        let health = Health {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let get = |path: &str| {
            let router = admin_router(health.clone());
            let request = Request::get(path).body(Body::empty()).unwrap();
            async move { router.oneshot(request).await.unwrap() }
        };
        assert_eq!(get("/livez").await.status(), StatusCode::OK);
        assert_eq!(
            get("/readyz").await.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        health.ready.store(true, Ordering::Relaxed);
        assert_eq!(get("/readyz").await.status(), StatusCode::OK);
        let metrics = get("/metrics").await;
        assert_eq!(metrics.status(), StatusCode::OK);
        let body = axum::body::to_bytes(metrics.into_body(), 1 << 20)
            .await
            .unwrap();
        assert!(
            String::from_utf8_lossy(&body)
                .contains("fluxgate_reconciler_drift_corrections_total 0")
        );
    }

    #[test]
    fn metrics_are_exposed_with_their_names() {
        let m = Metrics::new();
        m.reconciled(
            "team-a",
            "web",
            Reconciled::Applied,
            Duration::from_millis(5),
        );
        m.reconciled(
            "team-a",
            "web",
            Reconciled::Unchanged,
            Duration::from_millis(1),
        );
        m.wrote("apply");
        m.wrote("status");
        m.drift_corrections.inc();
        let text = m.encode();
        for needle in [
            "fluxgate_reconciler_reconciles_total{result=\"applied\"} 1",
            "fluxgate_reconciler_reconciles_total{result=\"unchanged\"} 1",
            "fluxgate_reconciler_api_writes_total{verb=\"apply\"} 1",
            "fluxgate_reconciler_drift_corrections_total 1",
            // Polls that find nothing new stay out of the histogram.
            "fluxgate_reconciler_reconcile_duration_seconds_count{namespace=\"team-a\",name=\"web\"} 1",
            "fluxgate_reconciler_last_applied_timestamp_seconds{namespace=\"team-a\",name=\"web\"} ",
            "fluxgate_reconciler_last_success_timestamp_seconds{namespace=\"team-a\",name=\"web\"} ",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        assert_eq!(m.total_writes(), 2);
        assert_eq!(m.reconciles("applied"), 1);
        assert_eq!(m.reconciles("no-such-result"), 0);
    }

    #[test]
    fn every_metric_has_help_text_and_a_conventional_name() {
        let text = Metrics::new().encode();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .collect();
        assert_eq!(families.len(), 11, "{text}");
        for family in families {
            let (name, help) = family.split_once(' ').unwrap();
            assert!(name.starts_with("fluxgate_reconciler_"), "{name}");
            assert!(help.len() > 20, "{name}: {help:?}");
        }
    }

    fn report_of(ready: &'static str, revision: Option<&str>) -> Report {
        let mut report =
            Report::applied("main@sha1:aaa", fluxgate_crds::InventorySummary::default());
        report.ready.status = ready;
        report.last_applied_revision = revision.map(str::to_owned);
        report
    }

    #[test]
    fn conditions_and_revision_follow_the_report() {
        let m = Metrics::new();
        m.report("team-a", "web", &report_of("True", Some("main@sha1:aaa")));
        assert_eq!(m.condition("team-a", "web", "Ready"), Some("True"));
        assert_eq!(m.condition("team-a", "web", "Stalled"), Some("False"));
        let text = m.encode();
        for needle in [
            r#"fluxgate_reconciler_fluxconfig_condition{namespace="team-a",name="web",type="Ready",status="True"} 1"#,
            r#"fluxgate_reconciler_fluxconfig_condition{namespace="team-a",name="web",type="Ready",status="False"} 0"#,
            r#"fluxgate_reconciler_applied_revision_info{namespace="team-a",name="web",revision="main@sha1:aaa"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }

        // A new revision replaces the old series instead of adding one.
        m.report("team-a", "web", &report_of("False", Some("main@sha1:bbb")));
        assert_eq!(m.condition("team-a", "web", "Ready"), Some("False"));
        let text = m.encode();
        assert!(!text.contains("main@sha1:aaa"), "{text}");
        assert!(text.contains(r#"revision="main@sha1:bbb"} 1"#), "{text}");

        // No longer accepted: the conditions go, the revision stays.
        m.clear_conditions("team-a", "web");
        assert_eq!(m.condition("team-a", "web", "Ready"), None);
        assert!(m.encode().contains("main@sha1:bbb"));
    }

    #[test]
    fn errors_are_counted_by_class_and_reason_and_a_deleted_config_leaves_no_series() {
        let m = Metrics::new();
        m.failed("team-a", "web", Class::Transient, "FetchFailed");
        m.failed("team-a", "web", Class::Transient, "FetchFailed");
        m.reconciled(
            "team-a",
            "web",
            Reconciled::Failed(Class::Transient),
            Duration::from_millis(3),
        );
        assert_eq!(
            m.errors("team-a", "web", Class::Transient, "FetchFailed"),
            2
        );
        assert_eq!(m.reconciles("transient"), 1);
        let text = m.encode();
        assert!(
            text.contains(
                r#"fluxgate_reconciler_reconcile_errors_total{namespace="team-a",name="web",class="transient",reason="FetchFailed"} 2"#
            ),
            "{text}"
        );
        // A failure is no success: no timestamps.
        assert!(
            !text.contains("fluxgate_reconciler_last_success_timestamp_seconds{"),
            "{text}"
        );

        m.report("team-a", "web", &report_of("False", Some("main@sha1:aaa")));
        m.reconciled(
            "team-a",
            "web",
            Reconciled::Applied,
            Duration::from_millis(3),
        );
        m.forget("team-a", "web");
        let text = m.encode();
        assert!(!text.contains(r#"name="web""#), "{text}");
        // The process-wide counters stay.
        assert_eq!(m.reconciles("applied"), 1);
    }
}
