//! Prometheus metrics and the plain-HTTP admin endpoints (`/livez`,
//! `/readyz`, `/metrics`) of the reconciler.
//!
//! - `fluxgate_reconciler_syncs_total{result}`: `applied` (a revision was
//!   applied), `unchanged` (a poll found the applied commit), or the error
//!   class (`terminal`, `stalled`, `transient`).
//! - `fluxgate_reconciler_sync_duration_seconds`: time per sync that
//!   applied or failed.
//! - `fluxgate_reconciler_api_writes_total{verb}`: requests that write
//!   (`apply`, `dry_run`, `delete`, `status`, `event`, `inventory`); flat in
//!   a steady state.
//! - `fluxgate_reconciler_drift_corrections_total`: objects re-applied
//!   after someone changed or deleted them.
//! - `fluxgate_reconciler_pruned_objects_total`: objects deleted because
//!   they left Git.
//! - `fluxgate_reconciler_managed_objects`: objects in the inventories.

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

/// Verbs counted by [`Metrics::wrote`].
const VERBS: &[&str] = &["apply", "dry_run", "delete", "status", "event", "inventory"];

/// The reconciler's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    syncs: Family<ResultLabel, Counter>,
    duration: Histogram,
    writes: Family<VerbLabel, Counter>,
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

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fluxgate_reconciler");
        let syncs = Family::<ResultLabel, Counter>::default();
        registry.register("syncs", "Syncs by result", syncs.clone());
        let duration = Histogram::new(exponential_buckets(0.005, 2.0, 14));
        registry.register(
            "sync_duration_seconds",
            "Time per sync that applied or failed",
            duration.clone(),
        );
        let writes = Family::<VerbLabel, Counter>::default();
        registry.register(
            "api_writes",
            "Writes sent to the API server",
            writes.clone(),
        );
        let drift_corrections = Counter::default();
        registry.register(
            "drift_corrections",
            "Objects re-applied after they were changed or deleted",
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
            "Objects in the inventories",
            managed_objects.clone(),
        );
        Self {
            registry,
            syncs,
            duration,
            writes,
            drift_corrections,
            pruned,
            managed_objects,
        }
    }

    /// Counts a finished sync.
    pub fn synced(&self, result: &str, took: Option<Duration>) {
        self.syncs
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
            })
            .inc();
        if let Some(took) = took {
            self.duration.observe(took.as_secs_f64());
        }
    }

    /// Syncs with `result` so far.
    pub fn syncs(&self, result: &str) -> u64 {
        self.syncs
            .get_or_create(&ResultLabel {
                result: result.to_owned(),
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
        m.synced("applied", Some(Duration::from_millis(5)));
        m.wrote("apply");
        m.wrote("status");
        m.drift_corrections.inc();
        let text = m.encode();
        for needle in [
            "fluxgate_reconciler_syncs_total{result=\"applied\"} 1",
            "fluxgate_reconciler_api_writes_total{verb=\"apply\"} 1",
            "fluxgate_reconciler_drift_corrections_total 1",
            "fluxgate_reconciler_sync_duration_seconds_count 1",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        assert_eq!(m.total_writes(), 2);
        assert_eq!(m.syncs("applied"), 1);
    }
}
