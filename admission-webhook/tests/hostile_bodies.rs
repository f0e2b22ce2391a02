//! Property tests of `POST /validate` against mangled AdmissionReviews: the
//! fixtures of `tests/data/` truncated, with bytes replaced or inserted, or
//! with one JSON value anywhere in them swapped for a hostile one (deep
//! nesting, huge or escaped strings, wrong types, null).
//!
//! Whatever arrives, the router answers: an `AdmissionReview` with a
//! response, HTTP 200 (a decision, the request's `uid` echoed) or a 4xx
//! naming what was wrong; never a panic, never an empty denial.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::LazyLock;

use axum::body::Body;
use fluxgate_admission_webhook::{AppState, Labels, Snapshot, router};
use fluxgate_crds::{FluxConfig, PlatformDefaults};
use fluxgate_platform_defaults::PlatformSettings;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt as _;
use kube::core::DynamicObject;
use kube::core::admission::AdmissionReview;
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt as _;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotFixture {
    platform_defaults: Vec<PlatformDefaults>,
    namespaces: BTreeMap<String, Labels>,
    flux_configs: Vec<FluxConfig>,
}

static STATE: LazyLock<AppState> = LazyLock::new(|| {
    let text = std::fs::read_to_string(data_dir().join("snapshot.json")).unwrap();
    let f: SnapshotFixture = serde_json::from_str(&text).unwrap();
    AppState::from_snapshot(Snapshot::new(
        PlatformSettings::default(),
        f.platform_defaults,
        f.namespaces,
        f.flux_configs,
    ))
});

/// Every AdmissionReview fixture, as bytes.
static FIXTURES: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let mut names: Vec<PathBuf> = std::fs::read_dir(data_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().is_some_and(|n| n != "snapshot.json"))
        .collect();
    names.sort();
    assert!(names.len() >= 10, "{names:?}");
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
});

/// One of the fixtures.
fn fixture(which: &prop::sample::Index) -> &'static [u8] {
    &FIXTURES[which.index(FIXTURES.len())]
}

/// Posts `body` and checks the answer's shape; returns it for more checks.
fn answer(body: Vec<u8>) -> (StatusCode, AdmissionReview<DynamicObject>) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let request = Request::post("/validate")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = router(STATE.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let review: AdmissionReview<DynamicObject> =
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: not an AdmissionReview ({e}): {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
        (status, review)
    })
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
        let body = fixture(&which);
        let cut = at.index(body.len());
        check(&body[..cut])?;
    }

    #[test]
    fn a_review_with_changed_bytes_is_answered(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..8),
    ) {
        let mut body = fixture(&which).to_vec();
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
        let mut tree: Value = serde_json::from_slice(fixture(&which)).unwrap();
        let mut index = at;
        replace_nth(&mut tree, &mut index, &with);
        check(&serde_json::to_vec(&tree).unwrap())?;
    }
}
