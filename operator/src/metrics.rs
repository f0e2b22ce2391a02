//! Prometheus metrics and the plain-HTTP admin endpoints (`/livez`,
//! `/readyz`, `/metrics`) of the operator.
//!
//! - `fluxgate_operator_reconciles_total{result}`: `ok`, `rejected` (a
//!   config that violates the rules), or the error class (`terminal`,
//!   `waiting`, `transient`, `stale`).
//! - `fluxgate_operator_reconcile_duration_seconds`: time per reconcile.
//! - `fluxgate_operator_api_writes_total{verb}`: writes sent to the API
//!   server (`apply`, `delete`, `status`, `event`); flat in a steady state.
//! - `fluxgate_operator_teams`: namespaces with at least one FluxConfig.
//! - `fluxgate_operator_managed_objects`: objects provisioned, last count.
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
//! `/readyz` answers 200 once this replica is useful: as the leader once
//! its caches have synced, or as a standby that reads the leader Lease
//! (a follower that never reported ready would stall a rolling update).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

/// The operator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    duration: Histogram,
    writes: Family<VerbLabel, Counter>,
    /// Namespaces with FluxConfigs.
    pub teams: Gauge,
    /// Objects provisioned.
    pub managed_objects: Gauge,
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
        let reconciles = Family::<ResultLabel, Counter>::default();
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time per reconcile",
            duration.clone(),
        );
        let writes = Family::<VerbLabel, Counter>::default();
        registry.register(
            "api_writes",
            "Writes sent to the API server",
            writes.clone(),
        );
        let teams = Gauge::default();
        registry.register(
            "teams",
            "Namespaces with at least one FluxConfig",
            teams.clone(),
        );
        let managed_objects = Gauge::default();
        registry.register(
            "managed_objects",
            "Objects provisioned for team namespaces",
            managed_objects.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica is the leader",
            leader.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now (kube-runtime exposes no queue length)",
            in_flight.clone(),
        );
        let unreadable = Family::<KindLabel, Gauge>::default();
        registry.register(
            "unreadable_objects",
            "Objects that exist but cannot be deserialised, by kind",
            unreadable.clone(),
        );
        Self {
            registry,
            reconciles,
            duration,
            writes,
            teams,
            managed_objects,
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
