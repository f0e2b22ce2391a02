//! HTTP adapters: [`router`] turns `POST /validate` AdmissionReviews into
//! calls of [`review`](crate::review()) and back; [`admin_router`] serves
//! `/livez`, `/readyz` and `/metrics`. Neither knows about TLS or sockets
//! (see `server`), so tests drive them with `tower::ServiceExt::oneshot`.
//!
//! Every error on `/validate` has one shape: an `AdmissionReview` whose
//! `response` is `allowed: false` with a `metav1.Status` naming what was
//! wrong, sent with the matching HTTP status (400 unreadable, 413 too large,
//! 503 not ready). When the body is JSON with a `request.uid` but the object
//! in it cannot be read, the answer is a denial with status 200 instead, so
//! the API server shows the message to the user rather than a webhook
//! failure.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview};

use crate::metrics::{Metrics, Outcome, kind_label, operation_label};
use crate::review::review;
use crate::snapshot::Snapshot;
use crate::wire::{ReadError, read_request};

/// Default limit on an AdmissionReview body. The API server accepts
/// request bodies up to 3 MiB and etcd stores objects up to 1.5 MiB; an
/// UPDATE review carries the object and the old object, plus JSON escaping.
/// So anything the API server would store can be reviewed (and denied with
/// a message naming it) rather than fail with a bare 413.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// What the HTTP handlers share: the current snapshot (absent until the
/// watches have synced), the metrics, and the body limit.
#[derive(Debug, Clone)]
pub struct AppState {
    snapshot: Arc<ArcSwapOption<Snapshot>>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
    shutting_down: Arc<AtomicBool>,
}

impl AppState {
    /// A state without a snapshot: `/validate` answers 503 and `/readyz`
    /// fails until [`AppState::publish`] is called.
    pub fn new(max_body_bytes: usize) -> Self {
        Self {
            snapshot: Arc::new(ArcSwapOption::empty()),
            metrics: Arc::new(Metrics::new()),
            max_body_bytes,
            shutting_down: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A ready state serving a fixed snapshot (tests, benchmarks; no
    /// cluster), with the default body limit.
    pub fn from_snapshot(snapshot: Snapshot) -> Self {
        let state = Self::new(DEFAULT_MAX_BODY_BYTES);
        state.publish(Arc::new(snapshot));
        state
    }

    /// Changes the body limit.
    #[must_use]
    pub fn with_max_body_bytes(mut self, max_body_bytes: usize) -> Self {
        self.max_body_bytes = max_body_bytes;
        self
    }

    /// Makes `snapshot` the one every following request reads.
    pub fn publish(&self, snapshot: Arc<Snapshot>) {
        self.snapshot.store(Some(snapshot));
    }

    /// The current snapshot, if the watches have synced.
    pub fn snapshot(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.load_full()
    }

    /// Whether `/readyz` passes: a snapshot is published and the server is
    /// not shutting down.
    pub fn is_ready(&self) -> bool {
        self.snapshot.load().is_some() && !self.shutting_down.load(Ordering::Relaxed)
    }

    /// Marks the server as draining, which fails `/readyz`.
    pub(crate) fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }

    /// The webhook's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// How long a review of a FluxConfig waits for its namespace to reach the
/// snapshot (see [`Snapshot::knows_namespace`]); the API server's timeout
/// is at most 5 s in the chart.
pub const NAMESPACE_WAIT: Duration = Duration::from_secs(2);

/// The admission routes: `POST /validate`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/validate", post(validate))
        .with_state(state)
}

/// The admin routes, served over plain HTTP on their own port: `/livez`,
/// `/readyz` and `/metrics`.
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ok\n").into_response()
    } else if state.snapshot().is_none() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: PlatformDefaults, Namespaces and FluxConfigs are not synced yet\n",
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            )],
            text,
        )
            .into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {err}\n"),
        )
            .into_response(),
    }
}

/// Labels of a finished request, for the metrics.
struct Observed {
    kind: &'static str,
    operation: &'static str,
    outcome: Outcome,
}

impl Observed {
    fn error() -> Self {
        Self {
            kind: kind_label(None),
            operation: operation_label(None),
            outcome: Outcome::Error,
        }
    }
}

async fn validate(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let (response, observed) = handle(&state, request).await;
    state.metrics.observe(
        observed.kind,
        observed.operation,
        observed.outcome,
        started.elapsed(),
    );
    response
}

async fn handle(state: &AppState, request: Request) -> (Response, Observed) {
    let limit = state.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return (too_large(limit), Observed::error());
    }
    let body = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            return (too_large(limit), Observed::error());
        }
        Err(err) => {
            return (
                error_review(
                    StatusCode::BAD_REQUEST,
                    format!("cannot read the request body: {err}"),
                ),
                Observed::error(),
            );
        }
    };

    let request = match read_request(&body) {
        Ok(request) => request,
        Err(ReadError::Json(err)) => return (unreadable_review(&body, &err), Observed::error()),
        Err(err @ ReadError::NoRequest) => {
            return (
                error_review(StatusCode::BAD_REQUEST, err.to_string()),
                Observed::error(),
            );
        }
    };
    let kind = kind_label(Some(&request.kind.kind));
    let operation = operation_label(Some(&request.operation));
    let Some(snapshot) = state.snapshot() else {
        return (
            error_review(
                StatusCode::SERVICE_UNAVAILABLE,
                "the fluxgate webhook has not synced PlatformDefaults, Namespaces and FluxConfigs yet".to_owned(),
            ),
            Observed {
                kind,
                operation,
                outcome: Outcome::Error,
            },
        );
    };

    // A FluxConfig in a namespace the watch has not delivered yet (created
    // together with it, as a platform repository onboarding a team does):
    // wait a moment for the snapshot to catch up rather than judge it
    // without its labels. Bounded well inside the API server's timeout.
    let snapshot = if kind == "FluxConfig"
        && let Some(namespace) = request.namespace.clone().filter(|ns| !ns.is_empty())
        && !snapshot.knows_namespace(&namespace)
    {
        let deadline = tokio::time::Instant::now() + NAMESPACE_WAIT;
        let mut latest = snapshot;
        while !latest.knows_namespace(&namespace) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if let Some(newer) = state.snapshot() {
                latest = newer;
            }
        }
        latest
    } else {
        snapshot
    };

    let response = if kind == "PlatformDefaults" {
        // Re-resolves every affected FluxConfig: keep it off the async
        // workers. The request borrows from the body, so the blocking task
        // reads it again (the same bytes, so the same result; PlatformDefaults
        // change rarely).
        let body = body.clone();
        let decided = tokio::task::spawn_blocking(move || {
            read_request(&body)
                .map(|request| review(&request, &snapshot))
                .map_err(|err| err.to_string())
        })
        .await
        .map_err(|err| err.to_string())
        .and_then(|read| read);
        match decided {
            Ok(response) => response,
            Err(err) => {
                return (
                    error_review(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("the review failed: {err}"),
                    ),
                    Observed {
                        kind,
                        operation,
                        outcome: Outcome::Error,
                    },
                );
            }
        }
    } else {
        review(&request, &snapshot)
    };
    let outcome = if response.allowed {
        Outcome::Allowed
    } else {
        state
            .metrics
            .denied(kind, operation, &response.result.reason);
        Outcome::Denied
    };
    (
        json_response(StatusCode::OK, &response.into_review()),
        Observed {
            kind,
            operation,
            outcome,
        },
    )
}

fn too_large(limit: usize) -> Response {
    error_review(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {limit} bytes"),
    )
}

/// The answer to a body that is not an `AdmissionReview`: a denial of the
/// request when its uid can be found (the object inside is malformed), an
/// HTTP 400 otherwise.
fn unreadable_review(body: &[u8], err: &serde_json::Error) -> Response {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) => return shallow_denial(body, err),
    };
    let request = &value["request"];
    let Some(uid) = request["uid"].as_str() else {
        return error_review(
            StatusCode::BAD_REQUEST,
            format!("the request body is not an AdmissionReview: {err}"),
        );
    };
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let kind = text(&request["kind"]["kind"]);
    let name = text(&request["name"]);
    let object = match request["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    };
    let mut response =
        AdmissionResponse::invalid(format!("{}: cannot be read: {err}", object.trim()));
    response.result.code = StatusCode::BAD_REQUEST.as_u16();
    response.uid = uid.to_owned();
    json_response(StatusCode::OK, &response.into_review())
}

/// The answer to a body that no JSON reader here will take whole (nested
/// deeper than serde_json's limit of 128 in a field the review reads; deep
/// fields it does not read, such as `managedFields`, are skipped): the API
/// server writes the
/// request's `uid`, `name` and `namespace` before the object, so a scan of
/// the first occurrences finds them and the request is denied naming the
/// object, instead of failing with a bare 400 the API server reports as
/// "an unknown reason".
fn shallow_denial(body: &[u8], err: &serde_json::Error) -> Response {
    let head = &body[..body.len().min(64 * 1024)];
    let Some(uid) = first_string_field(head, "uid") else {
        return error_review(
            StatusCode::BAD_REQUEST,
            format!("the request body is not JSON: {err}"),
        );
    };
    let name = first_string_field(head, "name").unwrap_or_default();
    let object = match first_string_field(head, "namespace") {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name,
    };
    let mut response = AdmissionResponse::invalid(format!(
        "object {object}: cannot be read: {err} (objects nested deeper than 128 levels \
         are not accepted)"
    ));
    response.result.code = StatusCode::BAD_REQUEST.as_u16();
    response.uid = uid;
    json_response(StatusCode::OK, &response.into_review())
}

/// The first `"key": "value"` in `json` whose value is a plain string (no
/// escapes); only for the few fields [`shallow_denial`] needs.
fn first_string_field(json: &[u8], key: &str) -> Option<String> {
    let text = String::from_utf8_lossy(json);
    let needle = format!("\"{key}\"");
    let mut rest: &str = &text;
    while let Some(at) = rest.find(&needle) {
        rest = &rest[at + needle.len()..];
        let after = rest.trim_start();
        let Some(after) = after.strip_prefix(':') else {
            continue;
        };
        let after = after.trim_start();
        let Some(value) = after.strip_prefix('"') else {
            continue;
        };
        let end = value.find('"')?;
        let value = &value[..end];
        if value.contains('\\') {
            return None;
        }
        return Some(value.to_owned());
    }
    None
}

/// An error in the one shape `/validate` uses: an AdmissionReview denying
/// with a `metav1.Status` that carries the HTTP code and the message.
fn error_review(status: StatusCode, message: String) -> Response {
    let mut response = AdmissionResponse::invalid(message);
    response.result.code = status.as_u16();
    json_response(status, &response.into_review())
}

fn json_response(status: StatusCode, review: &AdmissionReview<DynamicObject>) -> Response {
    match serde_json::to_vec(review) {
        Ok(body) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        // Unreachable in practice (every field serialises); answer rather
        // than panic.
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot serialise the AdmissionReview: {err}"),
        )
            .into_response(),
    }
}
