//! Prometheus metrics of the webhook, served in the text format on the
//! admin port's `/metrics`:
//!
//! - `fluxgate_webhook_requests_total{kind,operation,result}`: admission
//!   requests by kind (`FluxConfig`, `PlatformDefaults`, `other`, or
//!   `unknown` when the request could not be read), operation (`CREATE`,
//!   `UPDATE`, `DELETE`, `CONNECT`, `unknown`) and result (`allowed`,
//!   `denied`, `error` for requests answered with an HTTP error).
//! - `fluxgate_webhook_request_duration_seconds{kind}`: time from receiving
//!   the request to the response, body read included.
//!
//! Label values are drawn from fixed sets, so a client cannot grow the
//! series without bound.

use std::fmt;
use std::time::Duration;

use kube::core::admission::Operation;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// How a request ended, the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An AdmissionReview response with `allowed: true`.
    Allowed,
    /// An AdmissionReview response with `allowed: false`.
    Denied,
    /// An HTTP error: unreadable body, too large, not yet ready.
    Error,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Error => "error",
        }
    }
}

/// The `kind` label value: our two kinds by name, anything else `other`.
pub(crate) fn kind_label(kind: Option<&str>) -> &'static str {
    match kind {
        Some("FluxConfig") => "FluxConfig",
        Some("PlatformDefaults") => "PlatformDefaults",
        Some(_) => "other",
        None => "unknown",
    }
}

/// The `operation` label value.
pub(crate) fn operation_label(operation: Option<&Operation>) -> &'static str {
    match operation {
        Some(Operation::Create) => "CREATE",
        Some(Operation::Update) => "UPDATE",
        Some(Operation::Delete) => "DELETE",
        Some(Operation::Connect) => "CONNECT",
        None => "unknown",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    operation: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

type HistogramFamily = Family<KindLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs to ~3.3 s: an in-memory decision takes microseconds, a
    // PlatformDefaults review over many FluxConfigs can take much longer.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The webhook's metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: HistogramFamily,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a new registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        // prometheus-client appends `_total` to counters.
        registry.register(
            "fluxgate_webhook_requests",
            "Admission requests by kind, operation and result",
            requests.clone(),
        );
        registry.register(
            "fluxgate_webhook_request_duration_seconds",
            "Time to answer an admission request, body read included",
            duration.clone(),
        );
        Self {
            registry,
            requests,
            duration,
        }
    }

    /// Records one request.
    pub(crate) fn observe(
        &self,
        kind: &'static str,
        operation: &'static str,
        outcome: Outcome,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                kind,
                operation,
                result: outcome.as_str(),
            })
            .inc();
        self.duration
            .get_or_create(&KindLabels { kind })
            .observe(elapsed.as_secs_f64());
    }

    /// The count of requests with these labels so far.
    pub fn requests_total(&self, kind: &str, operation: &str, outcome: Outcome) -> u64 {
        let labels = RequestLabels {
            kind: kind_label(Some(kind)),
            operation: match operation {
                "CREATE" => "CREATE",
                "UPDATE" => "UPDATE",
                "DELETE" => "DELETE",
                "CONNECT" => "CONNECT",
                _ => "unknown",
            },
            result: outcome.as_str(),
        };
        self.requests.get_or_create(&labels).get()
    }

    /// Renders every metric in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counter_and_histogram_names() {
        let metrics = Metrics::new();
        metrics.observe(
            "FluxConfig",
            "CREATE",
            Outcome::Denied,
            Duration::from_millis(1),
        );
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"fluxgate_webhook_requests_total{kind="FluxConfig",operation="CREATE",result="denied"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("fluxgate_webhook_request_duration_seconds_bucket"),
            "{text}"
        );
        assert_eq!(
            metrics.requests_total("FluxConfig", "CREATE", Outcome::Denied),
            1
        );
    }
}
