//! Prometheus metrics and the plain-HTTP admin endpoints (`/livez`,
//! `/readyz`, `/metrics`) of the operator.
//!
//! - `fluxgate_operator_reconciles_total{result}`: `ok`, `rejected` (a
//!   config that violates the rules), or the error class (`terminal`,
//!   `waiting`, `transient`).
//! - `fluxgate_operator_reconcile_duration_seconds`: time per reconcile.
//! - `fluxgate_operator_api_writes_total{verb}`: writes sent to the API
//!   server (`apply`, `delete`, `status`, `event`); flat in a steady state.
//! - `fluxgate_operator_teams`: namespaces with at least one FluxConfig.
//! - `fluxgate_operator_managed_objects`: objects provisioned, last count.
//! - `fluxgate_operator_leader`: 1 while this replica leads.

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
        Self {
            registry,
            reconciles,
            duration,
            writes,
            teams,
            managed_objects,
            leader,
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
        ["ok", "rejected", "terminal", "waiting", "transient"]
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

/// What the admin endpoints report.
#[derive(Debug, Clone)]
pub struct Health {
    /// Metrics to serve.
    pub metrics: Arc<Metrics>,
    /// True once the watches have synced.
    pub ready: Arc<AtomicBool>,
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ok")
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
}
