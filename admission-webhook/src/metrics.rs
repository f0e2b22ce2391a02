//! Prometheus metrics of the webhook, served in the text format on the
//! admin port's `/metrics`:
//!
//! - `fluxgate_webhook_requests_total{kind,operation,result}`: admission
//!   requests by kind (`FluxConfig`, `PlatformDefaults`, `other`, or
//!   `unknown` when the request could not be read), operation (`CREATE`,
//!   `UPDATE`, `DELETE`, `CONNECT`, `unknown`) and result (`allowed`,
//!   `denied`, `error` for requests answered with an HTTP error).
//! - `fluxgate_webhook_denials_total{kind,operation,reason}`: denials by
//!   their `metav1.Status` reason: `Forbidden` (a platform rule) or
//!   `BadRequest` (an object that cannot be read).
//! - `fluxgate_webhook_request_duration_seconds{kind}`: time from receiving
//!   the request to the response, body read included.
//! - `fluxgate_webhook_certificate_expiry_timestamp_seconds`: when the
//!   serving certificate expires (`notAfter`, Unix seconds); absent until a
//!   certificate is loaded ([`Metrics::set_certificate_expiry`]).
//!
//! Label values are drawn from fixed sets, so a client cannot grow the
//! series without bound.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::core::admission::Operation;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
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

/// The `reason` label of a denial: the reasons the review gives, anything
/// else `other`.
fn reason_label(reason: &str) -> &'static str {
    match reason {
        "Forbidden" => "Forbidden",
        "BadRequest" => "BadRequest",
        _ => "other",
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: &'static str,
    operation: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    kind: &'static str,
    operation: &'static str,
    reason: &'static str,
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

/// A family registered so that its HELP and TYPE are exposed before its
/// first series: prometheus-client skips empty families, but `/metrics`
/// should list every metric (OpenMetrics allows a family without samples),
/// so users, and the dashboard's test, can see what exists.
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }
}

/// A gauge with no sample until it is first set: an absent series says "no
/// certificate loaded" where a 0 would read as "expired in 1970".
#[derive(Debug, Clone, Default)]
struct LateGauge {
    value: Gauge,
    set: Arc<AtomicBool>,
}

impl LateGauge {
    fn set(&self, value: i64) {
        self.value.set(value);
        self.set.store(true, Ordering::Release);
    }

    fn get(&self) -> Option<i64> {
        self.set.load(Ordering::Acquire).then(|| self.value.get())
    }
}

impl EncodeMetric for LateGauge {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), fmt::Error> {
        if self.set.load(Ordering::Acquire) {
            self.value.encode(encoder)
        } else {
            Ok(())
        }
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }
}

/// The webhook's metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    duration: HistogramFamily,
    certificate_expiry: LateGauge,
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
        let denials = Family::<DenialLabels, Counter>::default();
        let duration: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let certificate_expiry = LateGauge::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "fluxgate_webhook_requests",
            "Admission requests by kind, operation and result (allowed, denied, error); \
             errors mean the API server applied the failurePolicy",
            Described(requests.clone()),
        );
        registry.register(
            "fluxgate_webhook_denials",
            "Denied admission requests by kind, operation and reason (Forbidden: a platform \
             rule; BadRequest: an object that cannot be read)",
            Described(denials.clone()),
        );
        registry.register(
            "fluxgate_webhook_request_duration_seconds",
            "Time to answer an admission request, body read included; \
             the API server gives up after the webhook's timeoutSeconds",
            Described(duration.clone()),
        );
        registry.register(
            "fluxgate_webhook_certificate_expiry_timestamp_seconds",
            "Unix time the serving certificate expires (notAfter); absent until one is loaded",
            certificate_expiry.clone(),
        );
        Self {
            registry,
            requests,
            denials,
            duration,
            certificate_expiry,
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

    /// Records a denial with its `metav1.Status` reason.
    pub(crate) fn denied(&self, kind: &'static str, operation: &'static str, reason: &str) {
        self.denials
            .get_or_create(&DenialLabels {
                kind,
                operation,
                reason: reason_label(reason),
            })
            .inc();
    }

    /// Records when the serving certificate now in use expires, as Unix
    /// seconds (its `notAfter`); call it on every (re)load.
    pub fn set_certificate_expiry(&self, unix_seconds: i64) {
        self.certificate_expiry.set(unix_seconds);
    }

    /// The expiry last recorded by [`Metrics::set_certificate_expiry`].
    pub fn certificate_expiry(&self) -> Option<i64> {
        self.certificate_expiry.get()
    }

    /// The count of requests with these labels so far.
    pub fn requests_total(&self, kind: &str, operation: &str, outcome: Outcome) -> u64 {
        let labels = RequestLabels {
            kind: kind_label(Some(kind)),
            operation: static_operation(operation),
            result: outcome.as_str(),
        };
        self.requests.get_or_create(&labels).get()
    }

    /// The count of denials with these labels so far.
    pub fn denials_total(&self, kind: &str, operation: &str, reason: &str) -> u64 {
        let labels = DenialLabels {
            kind: kind_label(Some(kind)),
            operation: static_operation(operation),
            reason: reason_label(reason),
        };
        self.denials.get(&labels).map_or(0, |c| c.get())
    }

    /// Renders every metric in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// `operation` as one of the label values.
fn static_operation(operation: &str) -> &'static str {
    match operation {
        "CREATE" => "CREATE",
        "UPDATE" => "UPDATE",
        "DELETE" => "DELETE",
        "CONNECT" => "CONNECT",
        _ => "unknown",
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
        metrics.denied("FluxConfig", "CREATE", "Forbidden");
        let text = metrics.encode().unwrap();
        for needle in [
            r#"fluxgate_webhook_requests_total{kind="FluxConfig",operation="CREATE",result="denied"} 1"#,
            r#"fluxgate_webhook_denials_total{kind="FluxConfig",operation="CREATE",reason="Forbidden"} 1"#,
            "fluxgate_webhook_request_duration_seconds_bucket",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
        assert_eq!(
            metrics.requests_total("FluxConfig", "CREATE", Outcome::Denied),
            1
        );
        assert_eq!(
            metrics.denials_total("FluxConfig", "CREATE", "Forbidden"),
            1
        );
    }

    #[test]
    fn denial_reasons_are_a_fixed_set() {
        let metrics = Metrics::new();
        metrics.denied("PlatformDefaults", "UPDATE", "BadRequest");
        metrics.denied("PlatformDefaults", "UPDATE", "SomethingNew");
        assert_eq!(
            metrics.denials_total("PlatformDefaults", "UPDATE", "BadRequest"),
            1
        );
        assert!(metrics.encode().unwrap().contains(r#"reason="other"} 1"#));
    }

    #[test]
    fn certificate_expiry_is_absent_until_set() {
        let metrics = Metrics::new();
        let name = "fluxgate_webhook_certificate_expiry_timestamp_seconds";
        let text = metrics.encode().unwrap();
        assert!(text.contains(&format!("# TYPE {name} gauge")), "{text}");
        assert!(!text.contains(&format!("\n{name} ")), "{text}");
        assert_eq!(metrics.certificate_expiry(), None);

        metrics.set_certificate_expiry(1_900_000_000);
        assert_eq!(metrics.certificate_expiry(), Some(1_900_000_000));
        let text = metrics.encode().unwrap();
        assert!(text.contains(&format!("\n{name} 1900000000\n")), "{text}");
    }

    #[test]
    fn every_metric_is_listed_with_help_before_its_first_sample() {
        let text = Metrics::new().encode().unwrap();
        let families: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .collect();
        assert_eq!(families.len(), 4, "{text}");
        for family in families {
            let (name, help) = family.split_once(' ').unwrap();
            assert!(name.starts_with("fluxgate_webhook_"), "{name}");
            assert!(help.len() > 20, "{name}: {help:?}");
        }
    }
}
