//! `POST /validate` driven through `router()` with AdmissionReview fixtures
//! from `tests/data/`, against the fixed snapshot in
//! `tests/data/snapshot.json`: PlatformDefaults `global` selects the tenant
//! namespaces `team-a`, `team-b` and `team-full`, allows repositories
//! `https://git.corp.example/{namespace}/*`, target namespaces `{namespace}`
//! and `{namespace}-*`, clusters `prod-eu` and `prod-us`, intervals from 1m
//! to 1h and two FluxConfigs per namespace. `team-a/api` is valid,
//! `team-b/legacy` already breaks the repository rule, `team-full` is full.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use axum::body::Body;
use fluxgate_admission_webhook::{
    AppState, DEFAULT_MAX_BODY_BYTES, Labels, MAX_NAMED_IN_WARNINGS, Outcome, Snapshot,
    admin_router, router,
};
use fluxgate_crds::{FluxConfig, FluxConfigSpec, PlatformDefaults};
use fluxgate_platform_defaults::{Platform, PlatformSettings, compile};
use http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionResponse, AdmissionReview};
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt as _;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotFixture {
    platform_defaults: Vec<PlatformDefaults>,
    namespaces: BTreeMap<String, Labels>,
    flux_configs: Vec<FluxConfig>,
}

fn snapshot_fixture() -> SnapshotFixture {
    serde_json::from_str(&fixture("snapshot.json")).unwrap()
}

fn snapshot() -> Snapshot {
    let f = snapshot_fixture();
    Snapshot::new(
        PlatformSettings::default(),
        f.platform_defaults,
        f.namespaces,
        f.flux_configs,
    )
}

fn state() -> AppState {
    AppState::from_snapshot(snapshot())
}

async fn post_to(
    state: AppState,
    request: Request<Body>,
) -> (StatusCode, AdmissionReview<DynamicObject>) {
    let response = router(state).oneshot(request).await.unwrap();
    let status = response.status();
    assert_eq!(
        response.headers().get(header::CONTENT_TYPE).unwrap(),
        "application/json"
    );
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let review = serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "not an AdmissionReview ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    });
    (status, review)
}

fn validate_request(body: impl Into<Body>) -> Request<Body> {
    Request::post("/validate")
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

async fn post(state: AppState, body: impl Into<Body>) -> (StatusCode, AdmissionResponse) {
    let (status, review) = post_to(state, validate_request(body)).await;
    (status, review.response.expect("a response"))
}

/// Posts a fixture, checks the uid is echoed and the HTTP status is 200.
async fn review_fixture_with(state: AppState, name: &str) -> AdmissionResponse {
    let body = fixture(name);
    let uid = serde_json::from_str::<serde_json::Value>(&body).unwrap()["request"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, response) = post(state, body).await;
    assert_eq!(status, StatusCode::OK, "{name}: {response:?}");
    assert_eq!(response.uid, uid, "{name}: uid not echoed");
    response
}

async fn review_fixture(name: &str) -> AdmissionResponse {
    review_fixture_with(state(), name).await
}

fn assert_denied(response: &AdmissionResponse) -> &str {
    assert!(!response.allowed, "expected a denial: {response:?}");
    assert_eq!(response.result.code, 403, "{response:?}");
    &response.result.message
}

#[tokio::test]
async fn allows_flux_config_within_the_allow_lists() {
    let response = review_fixture("fluxconfig-create-allowed.json").await;
    assert!(response.allowed, "{response:?}");
    assert_eq!(response.warnings, None);
}

#[tokio::test]
async fn denies_repo_outside_allow_list_with_the_core_message() {
    let response = review_fixture("fluxconfig-create-denied-repo.json").await;
    assert_eq!(
        assert_denied(&response),
        r#"FluxConfig team-a/web: spec.repo "https://github.com/evil/x.git" is not allowed for namespace team-a (PlatformDefaults "global"); allowed: https://git.corp.example/team-a/*"#
    );
}

#[tokio::test]
async fn denies_protected_target_namespace() {
    let response = review_fixture("fluxconfig-create-denied-kube-system.json").await;
    let message = assert_denied(&response);
    assert!(
        message.starts_with(r#"FluxConfig team-a/web: spec.targetNamespace "kube-system" is a protected namespace (built-in pattern kube-*)"#),
        "{message}"
    );
    assert!(message.ends_with("allowed: team-a, team-a-*"), "{message}");
}

#[tokio::test]
async fn denies_another_teams_target_namespace() {
    let response = review_fixture("fluxconfig-create-denied-other-team.json").await;
    assert_eq!(
        assert_denied(&response),
        r#"FluxConfig team-a/web: spec.targetNamespace "team-b" is not allowed for namespace team-a (PlatformDefaults "global"); allowed: team-a, team-a-*"#
    );
}

#[tokio::test]
async fn denies_interval_below_the_minimum() {
    let response = review_fixture("fluxconfig-create-interval-too-short.json").await;
    assert_eq!(
        assert_denied(&response),
        r#"FluxConfig team-a/web: spec.interval "10s" is shorter than the platform's minimum (PlatformDefaults "global"); allowed: between 1m and 1h"#
    );
}

#[tokio::test]
async fn denies_unknown_cluster() {
    let response = review_fixture("fluxconfig-create-denied-cluster.json").await;
    assert_eq!(
        assert_denied(&response),
        r#"FluxConfig team-a/web: spec.cluster "staging" is not one of the platform's clusters (PlatformDefaults "global"); allowed: prod-eu, prod-us"#
    );
}

#[tokio::test]
async fn denies_flux_config_over_the_namespace_limit() {
    let response = review_fixture("fluxconfig-create-too-many.json").await;
    assert_eq!(
        assert_denied(&response),
        r#"FluxConfig team-full/three: metadata.name "three" would be FluxConfig number 3 in namespace team-full, over the platform's limit (PlatformDefaults "global"); allowed: at most 2 per namespace"#
    );
}

#[tokio::test]
async fn the_object_itself_does_not_count_towards_the_limit() {
    // team-full holds `one` and `two` (the limit): re-creating or updating
    // `two` is not a third.
    let mut body: serde_json::Value =
        serde_json::from_str(&fixture("fluxconfig-create-too-many.json")).unwrap();
    body["request"]["name"] = "two".into();
    body["request"]["object"]["metadata"]["name"] = "two".into();
    let (_, response) = post(state(), body.to_string()).await;
    assert!(response.allowed, "{response:?}");
}

#[tokio::test]
async fn allows_label_only_update_of_an_already_invalid_flux_config() {
    let response = review_fixture("fluxconfig-update-labels-of-invalid.json").await;
    assert!(response.allowed, "{response:?}");
}

/// The old spec differs from the new one only in form (a field the type
/// does not know, as the API server would prune): still a metadata-only
/// change, allowed without warnings although the object is invalid.
#[tokio::test]
async fn a_spec_equal_in_all_but_form_is_a_metadata_only_change() {
    let mut body: serde_json::Value =
        serde_json::from_str(&fixture("fluxconfig-update-labels-of-invalid.json")).unwrap();
    body["request"]["oldObject"]["spec"]["unknownField"] = serde_json::json!(1);
    let (status, response) = post(state(), body.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(response.allowed, "{response:?}");
    assert_eq!(response.warnings, None);
}

#[tokio::test]
async fn allows_update_that_keeps_a_pre_existing_violation_with_a_warning() {
    let response = review_fixture("fluxconfig-update-keeps-existing-violation.json").await;
    assert!(response.allowed, "{response:?}");
    let warnings = response.warnings.unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].starts_with(r#"FluxConfig team-b/legacy: spec.repo "https://github.com/evil/x.git" is not allowed for namespace team-b"#),
        "{warnings:?}"
    );
    assert!(warnings[0].ends_with("(present before this update; fix it when you can)"));
}

#[tokio::test]
async fn denies_update_that_introduces_a_violation() {
    let response = review_fixture("fluxconfig-update-introduces-violation.json").await;
    assert_eq!(
        assert_denied(&response),
        r#"FluxConfig team-a/api: spec.interval "10s" is shorter than the platform's minimum (PlatformDefaults "global"); allowed: between 1m and 1h"#
    );
}

#[tokio::test]
async fn update_adding_a_violation_to_an_invalid_object_names_only_the_new_one() {
    let mut body: serde_json::Value =
        serde_json::from_str(&fixture("fluxconfig-update-keeps-existing-violation.json")).unwrap();
    body["request"]["object"]["spec"]["cluster"] = "staging".into();
    let (_, response) = post(state(), body.to_string()).await;
    let message = assert_denied(&response);
    assert!(
        message.starts_with(r#"FluxConfig team-b/legacy: spec.cluster "staging" is not one of the platform's clusters"#),
        "{message}"
    );
    assert!(!message.contains("spec.repo"), "{message}");
    assert!(response.warnings.unwrap()[0].contains("spec.repo"));
}

#[tokio::test]
async fn allows_status_subresource_updates() {
    let response = review_fixture("fluxconfig-update-status-subresource.json").await;
    assert!(response.allowed, "{response:?}");
}

#[tokio::test]
async fn denies_platform_defaults_with_an_invalid_pattern() {
    let response = review_fixture("platformdefaults-create-bad-pattern.json").await;
    let message = assert_denied(&response);
    assert!(
        message.starts_with(r#"PlatformDefaults team-patterns: spec.allowedRepos[0] "https://git.corp.example/{team}/*" is not a valid pattern: "#),
        "{message}"
    );
    // The core's text, verbatim.
    let body: serde_json::Value =
        serde_json::from_str(&fixture("platformdefaults-create-bad-pattern.json")).unwrap();
    let pd: PlatformDefaults = serde_json::from_value(body["request"]["object"].clone()).unwrap();
    assert_eq!(message, compile(&pd).unwrap_err().to_string());
}

#[tokio::test]
async fn allows_platform_defaults_that_invalidates_flux_configs_with_warnings() {
    let response = review_fixture("platformdefaults-update-invalidates.json").await;
    assert!(response.allowed, "{response:?}");
    let warnings = response.warnings.unwrap();
    assert_eq!(
        warnings,
        vec![
            "PlatformDefaults global: this change makes 3 existing FluxConfigs invalid:".to_owned(),
            r#"FluxConfig team-a/api: spec.repo "https://git.corp.example/team-a/api.git" is not allowed for namespace team-a (PlatformDefaults "global"); allowed: https://git.corp.example/team-a/apps-*"#.to_owned(),
            r#"FluxConfig team-full/one: spec.repo "https://git.corp.example/team-full/one.git" is not allowed for namespace team-full (PlatformDefaults "global"); allowed: https://git.corp.example/team-full/apps-*"#.to_owned(),
            r#"FluxConfig team-full/two: spec.repo "https://git.corp.example/team-full/two.git" is not allowed for namespace team-full (PlatformDefaults "global"); allowed: https://git.corp.example/team-full/apps-*"#.to_owned(),
        ],
        "team-b/legacy was invalid before and is not listed"
    );
}

#[tokio::test]
async fn platform_defaults_change_without_impact_has_no_warnings() {
    let response = review_fixture("platformdefaults-update-harmless.json").await;
    assert!(response.allowed, "{response:?}");
    assert_eq!(response.warnings, None);
}

#[tokio::test]
async fn warnings_name_at_most_ten_flux_configs_then_count_the_rest() {
    let f = snapshot_fixture();
    let namespaces: Vec<(String, Labels)> = (0..13)
        .map(|i| {
            (
                format!("team-{i:02}"),
                [("fluxgate.dev/tenant".to_owned(), "true".to_owned())].into(),
            )
        })
        .collect();
    let fcs: Vec<FluxConfig> = namespaces
        .iter()
        .map(|(ns, _)| {
            let mut fc = FluxConfig::new(
                "app",
                FluxConfigSpec {
                    repo: format!("https://git.corp.example/{ns}/app.git"),
                    ..FluxConfigSpec::default()
                },
            );
            fc.metadata.namespace = Some(ns.clone());
            fc
        })
        .collect();
    let snapshot = Snapshot::new(
        PlatformSettings::default(),
        f.platform_defaults,
        namespaces,
        fcs,
    );
    let response = review_fixture_with(
        AppState::from_snapshot(snapshot),
        "platformdefaults-update-invalidates.json",
    )
    .await;
    assert!(response.allowed);
    let warnings = response.warnings.unwrap();
    assert_eq!(
        warnings.len(),
        1 + MAX_NAMED_IN_WARNINGS + 1,
        "{warnings:#?}"
    );
    assert!(warnings[0].contains("makes 13 existing FluxConfigs invalid"));
    assert!(warnings[1].starts_with("FluxConfig team-00/app: "));
    assert_eq!(warnings.last().unwrap(), "and 3 more FluxConfigs");
}

#[tokio::test]
async fn allows_delete_and_other_kinds() {
    for name in ["fluxconfig-delete.json", "configmap-create.json"] {
        let response = review_fixture(name).await;
        assert!(response.allowed, "{name}: {response:?}");
    }
}

#[tokio::test]
async fn wrong_type_in_spec_is_denied_naming_the_object_and_field() {
    let response = review_fixture("fluxconfig-create-repo-not-a-string.json").await;
    assert!(!response.allowed);
    assert_eq!(response.result.code, 400);
    assert_eq!(
        response.result.message,
        "FluxConfig team-a/web: cannot be read: spec.repo: invalid type: integer `42`, expected a string"
    );
}

#[tokio::test]
async fn wrong_type_in_metadata_is_denied_not_a_panic() {
    let mut body: serde_json::Value =
        serde_json::from_str(&fixture("fluxconfig-create-allowed.json")).unwrap();
    body["request"]["object"]["metadata"]["name"] = serde_json::json!(["not", "a", "name"]);
    let (status, response) = post(state(), body.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!response.allowed);
    assert_eq!(response.uid, body["request"]["uid"].as_str().unwrap());
    assert!(
        response.result.message.starts_with(
            "FluxConfig team-a/web: cannot be read: invalid type: sequence, expected a string"
        ),
        "{}",
        response.result.message
    );
}

/// Fields no rule reads are not read at all: a malformed one changes
/// nothing (the API server refuses it on its own).
#[tokio::test]
async fn metadata_no_rule_reads_is_not_read() {
    let mut body: serde_json::Value =
        serde_json::from_str(&fixture("fluxconfig-create-allowed.json")).unwrap();
    body["request"]["object"]["metadata"]["labels"] = serde_json::json!(["not", "a", "map"]);
    body["request"]["userInfo"] = serde_json::json!(7);
    let (status, response) = post(state(), body.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(response.allowed, "{response:?}");
}

#[tokio::test]
async fn malformed_json_is_400_in_the_admission_review_shape() {
    let (status, response) = post(state(), r#"{"kind":"AdmissionReview","request":{"uid":"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(!response.allowed);
    assert_eq!(response.result.code, 400);
    assert!(
        response
            .result
            .message
            .starts_with("the request body is not JSON: EOF while parsing"),
        "{}",
        response.result.message
    );
}

#[tokio::test]
async fn json_that_is_not_an_admission_review_is_400() {
    for (body, expected) in [
        (
            r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#,
            "the AdmissionReview has no request",
        ),
        (
            r#"{"hello":"world"}"#,
            "the request body is not an AdmissionReview",
        ),
        (r#"[1,2,3]"#, "the request body is not an AdmissionReview"),
        (
            r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"kind":7}}"#,
            "the request body is not an AdmissionReview",
        ),
    ] {
        let (status, response) = post(state(), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            response.result.message.starts_with(expected),
            "{body}: {}",
            response.result.message
        );
    }
}

#[tokio::test]
async fn oversized_body_is_413() {
    let state = state().with_max_body_bytes(64 * 1024);
    let big = format!(
        r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","padding":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    // Declared up front...
    let request = Request::post("/validate")
        .header(header::CONTENT_LENGTH, big.len())
        .body(Body::from(big.clone()))
        .unwrap();
    let (status, review) = post_to(state.clone(), request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let response = review.response.unwrap();
    assert_eq!(response.result.code, 413);
    assert_eq!(
        response.result.message,
        "the request body is larger than 65536 bytes"
    );
    // ...or found while streaming a body without a length.
    let (status, _) = post(state, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn default_body_limit_admits_what_the_api_server_stores_and_no_more() {
    // An UPDATE of a 1.5 MiB object (etcd's limit) with its old object is
    // read; a body past 8 MiB is not.
    let fits = fixture("fluxconfig-create-allowed.json").replacen(
        r#""request": {"#,
        &format!(
            r#""request": {{"padding": "{}", "#,
            "x".repeat(3 * 1024 * 1024)
        ),
        1,
    );
    assert!(fits.len() > 3 * 1024 * 1024);
    let response = review_fixture_with(state(), "fluxconfig-create-allowed.json").await;
    assert!(response.allowed);
    let (status, _) = post(state(), fits).await;
    assert_eq!(status, StatusCode::OK);
    let big = format!(r#"{{"padding":"{}"}}"#, "x".repeat(DEFAULT_MAX_BODY_BYTES));
    let (status, _) = post(state(), big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn not_ready_until_a_snapshot_is_published() {
    let state = AppState::new(1024 * 1024);
    let readyz = || async {
        admin_router(state.clone())
            .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
            .await
            .unwrap()
            .status()
    };
    assert_eq!(readyz().await, StatusCode::SERVICE_UNAVAILABLE);
    let (status, response) = post(state.clone(), fixture("fluxconfig-create-allowed.json")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!response.allowed);

    state.publish(std::sync::Arc::new(snapshot()));
    assert_eq!(readyz().await, StatusCode::OK);
    let response = review_fixture_with(state.clone(), "fluxconfig-create-allowed.json").await;
    assert!(response.allowed);
}

#[tokio::test]
async fn metrics_count_requests_by_kind_operation_and_result() {
    let state = state();
    review_fixture_with(state.clone(), "fluxconfig-create-allowed.json").await;
    review_fixture_with(state.clone(), "fluxconfig-create-denied-repo.json").await;
    review_fixture_with(state.clone(), "fluxconfig-create-denied-cluster.json").await;
    review_fixture_with(state.clone(), "platformdefaults-create-bad-pattern.json").await;
    post(state.clone(), "not json").await;
    let metrics = state.metrics();
    assert_eq!(
        metrics.requests_total("FluxConfig", "CREATE", Outcome::Allowed),
        1
    );
    assert_eq!(
        metrics.requests_total("FluxConfig", "CREATE", Outcome::Denied),
        2
    );
    assert_eq!(
        metrics.requests_total("PlatformDefaults", "CREATE", Outcome::Denied),
        1
    );
    assert_eq!(
        metrics.denials_total("FluxConfig", "CREATE", "Forbidden"),
        2
    );

    let response = admin_router(state)
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    for line in [
        r#"fluxgate_webhook_requests_total{kind="FluxConfig",operation="CREATE",result="denied"} 2"#,
        r#"fluxgate_webhook_requests_total{kind="unknown",operation="unknown",result="error"} 1"#,
        r#"fluxgate_webhook_request_duration_seconds_count{kind="FluxConfig"} 3"#,
        r#"fluxgate_webhook_denials_total{kind="FluxConfig",operation="CREATE",reason="Forbidden"} 2"#,
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}

#[tokio::test]
async fn livez_always_passes() {
    let response = admin_router(AppState::new(1))
        .oneshot(Request::get("/livez").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn the_snapshot_fixture_is_valid() {
    let f = snapshot_fixture();
    let platform = Platform::new(PlatformSettings::default(), &f.platform_defaults);
    assert!(platform.rejected().is_empty(), "{:?}", platform.rejected());
    assert_eq!(snapshot().flux_config_count(), 4);
}

/// The fixture snapshot without namespace `team-a`: what the webhook sees
/// when a FluxConfig arrives an instant after its namespace was created.
fn snapshot_without_team_a() -> Snapshot {
    let mut f = snapshot_fixture();
    f.namespaces.remove("team-a");
    Snapshot::new(
        PlatformSettings::default(),
        f.platform_defaults,
        f.namespaces,
        f.flux_configs,
    )
}

#[tokio::test]
async fn a_flux_config_in_a_namespace_the_watch_has_not_delivered_waits_for_it() {
    let state = AppState::from_snapshot(snapshot_without_team_a());
    let publisher = state.clone();
    let started = std::time::Instant::now();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        publisher.publish(std::sync::Arc::new(snapshot()));
    });
    let response = review_fixture_with(state, "fluxconfig-create-allowed.json").await;
    assert!(response.allowed, "{response:?}");
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}

#[tokio::test]
async fn a_namespace_that_never_arrives_is_a_retryable_denial_naming_it() {
    let state = AppState::from_snapshot(snapshot_without_team_a());
    let response = review_fixture_with(state, "fluxconfig-create-allowed.json").await;
    assert!(!response.allowed);
    assert_eq!(response.result.code, 503, "{response:?}");
    assert!(
        response
            .result
            .message
            .contains("namespace team-a is not in the fluxgate webhook's cache yet"),
        "{}",
        response.result.message
    );
}

#[tokio::test]
async fn a_review_nested_too_deep_to_read_is_denied_naming_the_object() {
    let mut nested = String::from("{}");
    for _ in 0..200 {
        nested = format!(r#"{{"f:a":{nested}}}"#);
    }
    // Deep where a string belongs: the field is named.
    let body = format!(
        r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"0c6f8a52-deep","kind":{{"group":"fluxgate.dev","version":"v1alpha1","kind":"FluxConfig"}},"resource":{{"group":"fluxgate.dev","version":"v1alpha1","resource":"fluxconfigs"}},"name":"web","namespace":"team-a","operation":"CREATE","object":{{"metadata":{{"name":"web"}},"spec":{{"repo":"https://git.corp.example/team-a/web.git","path":{nested}}}}}}}}}"#
    );
    let (status, response) = post(state(), body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response.uid, "0c6f8a52-deep");
    assert!(!response.allowed);
    assert_eq!(response.result.code, 400);
    assert_eq!(
        response.result.message,
        "FluxConfig team-a/web: cannot be read: spec.path: invalid type: map, expected a string"
    );

    // Deep in the request itself, past what any JSON reader here takes
    // whole: the object is still named, from a scan of the body.
    let nested = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let body = format!(
        r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"0c6f8a52-deep","name":"web","namespace":"team-a","kind":{nested}}}}}"#
    );
    let (status, response) = post(state(), body).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response.uid, "0c6f8a52-deep");
    assert!(!response.allowed);
    assert_eq!(response.result.code, 400);
    let message = &response.result.message;
    assert!(
        message.starts_with("object team-a/web: cannot be read:"),
        "{message}"
    );
    assert!(
        message.contains("nested deeper than 128 levels"),
        "{message}"
    );
}

/// managedFields are never read, however deep: the object is judged on its
/// `spec` (here: another team's repository).
#[tokio::test]
async fn deep_managed_fields_are_skipped_and_the_spec_judged() {
    let mut nested = String::from("{}");
    for _ in 0..5_000 {
        nested = format!(r#"{{"f:a":{nested}}}"#);
    }
    let body = format!(
        r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":"0c6f8a52-deep","kind":{{"group":"fluxgate.dev","version":"v1alpha1","kind":"FluxConfig"}},"resource":{{"group":"fluxgate.dev","version":"v1alpha1","resource":"fluxconfigs"}},"name":"web","namespace":"team-a","operation":"CREATE","object":{{"metadata":{{"name":"web","managedFields":[{{"fieldsV1":{nested}}}]}},"spec":{{"repo":"https://git.corp.example/team-b/web.git"}}}}}}}}"#
    );
    let (status, response) = post(state(), body).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!response.allowed);
    assert_eq!(response.result.code, 403);
    assert!(
        response
            .result
            .message
            .starts_with(r#"FluxConfig team-a/web: spec.repo "https://git.corp.example/team-b/web.git" is not allowed"#),
        "{}",
        response.result.message
    );
}

// ---------------------------------------------------------------------------
// Property tests against mangled AdmissionReviews: the fixtures above
// truncated, with bytes replaced or inserted, or with one JSON value anywhere
// in them swapped for a hostile one (deep nesting, huge or escaped strings,
// wrong types, null). Whatever arrives, the router answers: an
// `AdmissionReview` with a response, HTTP 200 (a decision, the request's
// `uid` echoed) or a 400 naming what was wrong; never a panic, never an
// empty denial.

static HOSTILE_STATE: LazyLock<AppState> = LazyLock::new(state);

/// Every AdmissionReview fixture, as bytes.
static FIXTURES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let mut names: Vec<PathBuf> = std::fs::read_dir(data(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "snapshot.json"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
});

/// One of the fixtures.
fn any_fixture(which: &prop::sample::Index) -> &'static [u8] {
    &FIXTURES[which.index(FIXTURES.len())]
}

/// Posts `body` from a synchronous proptest body.
fn answer(body: Vec<u8>) -> (StatusCode, AdmissionReview<DynamicObject>) {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(post_to(HOSTILE_STATE.clone(), validate_request(body)))
}

/// The checks every answer must pass, given the body that was sent.
fn check(body: &[u8]) -> Result<(), TestCaseError> {
    let (status, review) = answer(body.to_vec());
    let response = review.response.expect("an answer has a response");
    prop_assert!(
        [StatusCode::OK, StatusCode::BAD_REQUEST].contains(&status),
        "status {status}: {response:?}"
    );
    if !response.allowed {
        prop_assert!(!response.result.message.is_empty(), "{response:?}");
        prop_assert!(response.result.code >= 400, "{response:?}");
    }
    // A body whose request.uid can be read gets a decision for that uid.
    let uid = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["request"]["uid"].as_str().map(str::to_owned));
    if let Some(uid) = uid {
        prop_assert_eq!(status, StatusCode::OK, "{:?}", response);
        prop_assert_eq!(response.uid, uid);
    }
    Ok(())
}

/// A hostile JSON value.
fn hostile_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        (1usize..300).prop_map(|n| Value::from("\\\"\u{0}\u{202e}é".repeat(n))),
        (100usize..400).prop_map(|depth| {
            let mut v = json!(1);
            for _ in 0..depth {
                v = json!({ "a": v });
            }
            v
        }),
        (1usize..50).prop_map(|n| Value::Array(vec![json!({"x": [1, "y"]}); n])),
    ]
}

/// Replaces the `index`-th value of a pre-order walk of `root` with
/// `with`.
fn replace_nth(root: &mut Value, index: &mut usize, with: &Value) -> bool {
    if *index == 0 {
        *root = with.clone();
        return true;
    }
    *index -= 1;
    match root {
        Value::Object(map) => map.values_mut().any(|v| replace_nth(v, index, with)),
        Value::Array(items) => items.iter_mut().any(|v| replace_nth(v, index, with)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_truncated_review_is_answered(which in any::<prop::sample::Index>(), at in any::<prop::sample::Index>()) {
        let body = any_fixture(&which);
        let cut = at.index(body.len());
        check(&body[..cut])?;
    }

    #[test]
    fn a_review_with_changed_bytes_is_answered(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..8),
    ) {
        let mut body = any_fixture(&which).to_vec();
        for (at, byte, insert) in edits {
            let i = at.index(body.len());
            if insert {
                body.insert(i, byte);
            } else {
                body[i] = byte;
            }
        }
        check(&body)?;
    }

    #[test]
    fn a_review_with_a_hostile_value_anywhere_is_answered(
        which in any::<prop::sample::Index>(),
        at in 0usize..200,
        with in hostile_value(),
    ) {
        let mut tree: Value = serde_json::from_slice(any_fixture(&which)).unwrap();
        let mut index = at;
        replace_nth(&mut tree, &mut index, &with);
        check(&serde_json::to_vec(&tree).unwrap())?;
    }
}
