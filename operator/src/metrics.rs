//! Prometheus metrics and the plain-HTTP admin endpoints (`/livez`,
//! `/readyz`, `/metrics`) of the operator.
//!
//! - `fluxgate_operator_fluxconfig_condition{namespace,name,type,status}`:
//!   the conditions the operator writes on each team FluxConfig (`Accepted`,
//!   `Provisioned`; while a config is rejected also `Ready` and `Stalled`),
//!   Flux's `gotk_reconcile_condition` shape: 1 on the series of the current
//!   `status` (`True`, `False`, `Unknown`), 0 on the other two. Only the
//!   leader has them.
//! - `fluxgate_operator_reconciles_total{result}`: `ok`, `rejected` (a
//!   config that violates the rules), or the error class (`terminal`,
//!   `waiting`, `transient`, `stale`).
//! - `fluxgate_operator_reconcile_errors_total{namespace,class,reason}`:
//!   failed reconciles by team namespace, class (`terminal`, `waiting`,
//!   `transient`; `stale` is not a failure) and reason ([`Error::reason`]).
//! - `fluxgate_operator_reconcile_duration_seconds`: time per reconcile.
//! - `fluxgate_operator_api_writes_total{verb}`: writes sent to the API
//!   server (`apply`, `delete`, `status`, `event`, `finalizer`); flat in a
//!   steady state.
//! - `fluxgate_operator_teams`: namespaces with at least one FluxConfig.
//! - `fluxgate_operator_managed_objects`: objects provisioned, all team
//!   namespaces together.
//! - `fluxgate_operator_leader`: 1 while this replica leads.
//! - `fluxgate_operator_reconciles_in_flight`: reconciles running now. The
//!   work queue of kube-runtime's `Controller` (its scheduler) is private
//!   and exposes no length, so a true queue depth cannot be read; reconciles
//!   in flight is the closest honest signal (it stays high when the API
//!   server is slow or a burst of changes arrives, and is 0 when idle).
//! - `fluxgate_operator_unreadable_objects{kind}`: FluxConfigs and
//!   PlatformDefaults that exist but cannot be read (see the `guard`
//!   module); each is reported once by a Warning Event.
//!
//! The `namespace` label names the FluxConfig's namespace, not the
//! operator's: scrape with `honorLabels: true`, or Prometheus renames it
//! `exported_namespace`.
//!
//! `/readyz` answers 200 once this replica is useful: as the leader once
//! its caches have synced, or as a standby that reads the leader Lease
//! (a follower that never reported ready would stall a rolling update).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use fluxgate_crds::conditions;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::error::{Class, Error};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabel {
    verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    namespace: String,
    class: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    namespace: String,
    name: String,
    r#type: &'static str,
    status: &'static str,
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

/// Condition types the operator writes.
const CONDITION_TYPES: [&str; 4] = [
    conditions::ACCEPTED,
    conditions::PROVISIONED,
    conditions::READY,
    conditions::STALLED,
];

/// Values of a condition's `status`.
const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    conditions: Family<ConditionLabels, Gauge>,
    reconciles: Family<ResultLabel, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    writes: Family<VerbLabel, Counter>,
    /// Namespaces with FluxConfigs.
    pub teams: Gauge,
    managed_objects: Gauge,
    /// Objects provisioned per team namespace; `managed_objects` is the sum.
    managed_by_namespace: Mutex<BTreeMap<String, usize>>,
    /// 1 while leading.
    pub leader: Gauge,
    /// Reconciles running now.
    pub in_flight: Gauge,
    unreadable: Family<KindLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fluxgate_operator");
        let conditions = Family::<ConditionLabels, Gauge>::default();
        registry.register(
            "fluxconfig_condition",
            "Conditions the operator writes on each team FluxConfig (Accepted, Provisioned; \
             Ready and Stalled while it is rejected): 1 on the current status, 0 on the others",
            Described(conditions.clone()),
        );
        let reconciles = Family::<ResultLabel, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "reconciles",
            "Reconciles by result: ok, rejected (violates the platform rules), or the error class",
            Described(reconciles.clone()),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by team namespace, class (terminal, waiting, transient) and reason",
            Described(errors.clone()),
        );
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time per reconcile of a FluxConfig, API writes included",
            duration.clone(),
        );
        let writes = Family::<VerbLabel, Counter>::default();
        registry.register(
            "api_writes",
            "Writes sent to the API server, by verb; flat in a steady state",
            Described(writes.clone()),
        );
        let teams = Gauge::default();
        registry.register(
            "teams",
            "Namespaces with at least one FluxConfig (teams the platform serves)",
            teams.clone(),
        );
        let managed_objects = Gauge::default();
        registry.register(
            "managed_objects",
            "Objects provisioned for all team namespaces (reconciler Deployments, RBAC, Secrets)",
            managed_objects.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and reconciles, 0 on a standby",
            leader.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now; stays high when the API server is slow \
             (kube-runtime exposes no queue length)",
            in_flight.clone(),
        );
        let unreadable = Family::<KindLabel, Gauge>::default();
        registry.register(
            "unreadable_objects",
            "Objects that exist but cannot be deserialised, by kind; their namespace is held \
             until they are fixed",
            Described(unreadable.clone()),
        );
        Self {
            registry,
            conditions,
            reconciles,
            errors,
            duration,
            writes,
            teams,
            managed_objects,
            managed_by_namespace: Mutex::new(BTreeMap::new()),
            leader,
            in_flight,
            unreadable,
        }
    }

    /// Counts a finished reconcile.
    pub fn reconciled(&self, result: &str, took: Duration) {
        self.reconciles
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts a failed reconcile of a FluxConfig in `namespace`; a stale
    /// cache is not a failure and is not counted.
    pub fn reconcile_failed(&self, namespace: &str, error: &Error) {
        if error.class() == Class::Stale {
            return;
        }
        self.errors
            .get_or_create(&ErrorLabels {
                namespace: namespace.to_owned(),
                class: error.class_label().to_owned(),
                reason: error.reason().to_owned(),
            })
            .inc();
    }

    /// Failed reconciles in `namespace` with this class and reason.
    pub fn reconcile_errors(&self, namespace: &str, class: &str, reason: &str) -> u64 {
        self.errors
            .get(&ErrorLabels {
                namespace: namespace.to_owned(),
                class: class.to_owned(),
                reason: reason.to_owned(),
            })
            .map_or(0, |c| c.get())
    }

    /// Mirrors the operator's conditions on FluxConfig `namespace/name`;
    /// condition types it no longer writes lose their series.
    pub fn set_conditions(&self, namespace: &str, name: &str, written: &[Condition]) {
        for type_ in CONDITION_TYPES {
            let current = written
                .iter()
                .find(|c| c.type_ == type_)
                .map(|c| c.status.as_str());
            for status in CONDITION_STATUSES {
                let labels = ConditionLabels {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                    r#type: type_,
                    status,
                };
                match current {
                    Some(current) => {
                        self.conditions
                            .get_or_create(&labels)
                            .set(i64::from(current == status));
                    }
                    None => {
                        self.conditions.remove(&labels);
                    }
                }
            }
        }
    }

    /// The status the condition series of FluxConfig `namespace/name` give
    /// `type_`, if any.
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

    /// Drops the condition series of FluxConfig `namespace/name` (it is
    /// being deleted).
    pub fn forget_fluxconfig(&self, namespace: &str, name: &str) {
        self.set_conditions(namespace, name, &[]);
    }

    /// Records how many objects are provisioned for `namespace`.
    pub fn set_managed_objects(&self, namespace: &str, count: usize) {
        // A panic elsewhere while holding the lock leaves a consistent map.
        let mut by_namespace = self
            .managed_by_namespace
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if count == 0 {
            by_namespace.remove(namespace);
        } else {
            by_namespace.insert(namespace.to_owned(), count);
        }
        let total: usize = by_namespace.values().sum();
        self.managed_objects
            .set(i64::try_from(total).unwrap_or(i64::MAX));
    }

    /// Objects provisioned, all namespaces together.
    pub fn managed_objects(&self) -> i64 {
        self.managed_objects.get()
    }

    /// Marks a reconcile as running until the guard is dropped.
    pub fn reconcile_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.inc();
        InFlight(self.clone())
    }

    /// Sets how many objects of `kind` cannot be read.
    pub fn set_unreadable(&self, kind: &str, count: usize) {
        self.unreadable
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// How many objects of `kind` cannot be read.
    pub fn unreadable(&self, kind: &str) -> i64 {
        self.unreadable
            .get_or_create(&KindLabel {
                kind: kind.to_owned(),
            })
            .get()
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
        ["apply", "delete", "status", "event", "finalizer"]
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

    /// Total reconciles so far (all results), for tests.
    pub fn total_reconciles(&self) -> u64 {
        [
            "ok",
            "rejected",
            "terminal",
            "waiting",
            "transient",
            "stale",
        ]
        .iter()
        .map(|r| {
            self.reconciles
                .get_or_create(&ResultLabel {
                    result: (*r).to_owned(),
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

/// A reconcile in flight; dropping it (also on cancellation) counts it
/// finished.
#[derive(Debug)]
pub struct InFlight(Arc<Metrics>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

/// What the admin endpoints report.
#[derive(Debug, Clone)]
pub struct Health {
    /// Metrics to serve.
    pub metrics: Arc<Metrics>,
    /// True once the watches have synced (leader).
    pub ready: Arc<AtomicBool>,
    /// True while this replica is a healthy standby (follower).
    pub standby: Arc<AtomicBool>,
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
    } else if health.standby.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok (standby)")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
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
    use super::*;

    #[test]
    fn metrics_are_exposed_with_their_names() {
        let m = Metrics::new();
        m.reconciled("ok", Duration::from_millis(5));
        m.wrote("apply");
        m.wrote("apply");
        m.teams.set(3);
        let text = m.encode();
        for needle in [
            "fluxgate_operator_reconciles_total{result=\"ok\"} 1",
            "fluxgate_operator_api_writes_total{verb=\"apply\"} 2",
            "fluxgate_operator_teams 3",
            "fluxgate_operator_reconcile_duration_seconds_count 1",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        assert_eq!(m.total_writes(), 2);
    }

    fn condition(type_: &str, status: &str) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: "Test".to_owned(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        }
    }

    #[test]
    fn conditions_follow_what_the_operator_writes() {
        let m = Metrics::new();
        // Rejected: the operator speaks for Ready and Stalled too.
        m.set_conditions(
            "team-a",
            "web",
            &[
                condition("Accepted", "False"),
                condition("Provisioned", "False"),
                condition("Stalled", "True"),
                condition("Ready", "False"),
            ],
        );
        assert_eq!(m.condition("team-a", "web", "Ready"), Some("False"));
        let text = m.encode();
        for needle in [
            r#"fluxgate_operator_fluxconfig_condition{namespace="team-a",name="web",type="Accepted",status="False"} 1"#,
            r#"fluxgate_operator_fluxconfig_condition{namespace="team-a",name="web",type="Accepted",status="True"} 0"#,
            r#"fluxgate_operator_fluxconfig_condition{namespace="team-a",name="web",type="Stalled",status="True"} 1"#,
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        // Accepted: Ready and Stalled are the reconciler's again.
        m.set_conditions(
            "team-a",
            "web",
            &[
                condition("Accepted", "True"),
                condition("Provisioned", "True"),
            ],
        );
        assert_eq!(m.condition("team-a", "web", "Provisioned"), Some("True"));
        assert_eq!(m.condition("team-a", "web", "Ready"), None);
        assert!(!m.encode().contains(r#"type="Ready""#));
        m.forget_fluxconfig("team-a", "web");
        assert!(!m.encode().contains(r#"name="web""#));
    }

    #[test]
    fn errors_are_counted_by_namespace_class_and_reason_but_stale_is_not_an_error() {
        let m = Metrics::new();
        let missing = Error::MissingCredentials {
            namespace: "fluxgate-system".into(),
            name: "git".into(),
        };
        m.reconcile_failed("team-a", &missing);
        m.reconcile_failed("team-a", &missing);
        let stale = Error::Finalizer(Box::new(kube::runtime::finalizer::Error::AddFinalizer(
            kube::Error::Api(Box::new(kube::core::Status {
                code: 409,
                ..Default::default()
            })),
        )));
        m.reconcile_failed("team-a", &stale);
        assert_eq!(
            m.reconcile_errors("team-a", "waiting", "MissingCredentials"),
            2
        );
        let text = m.encode();
        assert!(
            text.contains(
                r#"fluxgate_operator_reconcile_errors_total{namespace="team-a",class="waiting",reason="MissingCredentials"} 2"#
            ),
            "{text}"
        );
        assert!(!text.contains(r#"class="stale""#), "{text}");
    }

    #[test]
    fn managed_objects_add_up_over_namespaces() {
        let m = Metrics::new();
        m.set_managed_objects("team-a", 6);
        m.set_managed_objects("team-b", 6);
        m.set_managed_objects("team-a", 7);
        assert_eq!(m.managed_objects(), 13);
        m.set_managed_objects("team-b", 0);
        assert_eq!(m.managed_objects(), 7);
    }

    #[test]
    fn every_metric_has_help_text_and_a_conventional_name() {
        let text = Metrics::new().encode();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .collect();
        assert_eq!(families.len(), 10, "{text}");
        for family in families {
            let (name, help) = family.split_once(' ').unwrap();
            assert!(name.starts_with("fluxgate_operator_"), "{name}");
            assert!(help.len() > 20, "{name}: {help:?}");
        }
    }

    #[test]
    fn in_flight_reconciles_are_counted_until_dropped() {
        let m = Arc::new(Metrics::new());
        let a = m.reconcile_started();
        let b = m.reconcile_started();
        assert_eq!(m.in_flight.get(), 2);
        drop(a);
        assert_eq!(m.in_flight.get(), 1);
        drop(b);
        assert!(
            m.encode()
                .contains("fluxgate_operator_reconciles_in_flight 0")
        );
    }

    async fn get(router: Router, path: &str) -> (StatusCode, String, String) {
        use tower::ServiceExt as _;
        let request = axum::http::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap();
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn readyz_follows_sync_and_standby_and_metrics_are_served() {
        let health = Health {
            metrics: Arc::new(Metrics::new()),
            ready: Arc::new(AtomicBool::new(false)),
            standby: Arc::new(AtomicBool::new(false)),
        };
        let router = admin_router(health.clone());
        assert_eq!(get(router.clone(), "/livez").await.0, StatusCode::OK);
        let (status, _, body) = get(router.clone(), "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "caches not synced");
        health.standby.store(true, Ordering::Relaxed);
        assert_eq!(
            get(router.clone(), "/readyz").await,
            (
                StatusCode::OK,
                "text/plain; charset=utf-8".into(),
                "ok (standby)".into()
            )
        );
        health.standby.store(false, Ordering::Relaxed);
        health.ready.store(true, Ordering::Relaxed);
        assert_eq!(get(router.clone(), "/readyz").await.2, "ok");

        health.metrics.leader.set(1);
        health.metrics.set_unreadable("FluxConfig", 2);
        let (status, content_type, body) = get(router.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("application/openmetrics-text"));
        for needle in [
            "fluxgate_operator_leader 1",
            "fluxgate_operator_reconciles_in_flight 0",
            "fluxgate_operator_unreadable_objects{kind=\"FluxConfig\"} 2",
            "# EOF",
        ] {
            assert!(body.contains(needle), "{needle} missing in\n{body}");
        }
        assert_eq!(get(router, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
