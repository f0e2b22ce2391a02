//! Proves the test harness itself: the control plane is real (RBAC denies,
//! the controller manager reconciles, the audit log records writes) and
//! `with_temp_ns` cleans up after passing and failing tests alike.

// A failed unwrap is a failed test, with the error in its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fluxgate_e2e::{TEST_LABEL, install_crds, service_account_token, shared, with_temp_ns};
use futures::FutureExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..ObjectMeta::default()
    }
}

#[tokio::test]
async fn creates_labelled_namespace_visible_to_kubectl() {
    let control_plane = shared().unwrap();
    eprintln!(
        "control plane at {} started in {:?}",
        control_plane.server_url(),
        control_plane.startup_time()
    );
    with_temp_ns("testenv-ns", |client, ns| async move {
        let namespace = Api::<Namespace>::all(client).get(&ns).await.unwrap();
        let labels = namespace.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get(TEST_LABEL).map(String::as_str), Some("true"));

        let output = control_plane
            .kubectl(["get", "namespace", &ns, "-o", "name"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            format!("namespace/{ns}")
        );
    })
    .await;
}

#[tokio::test]
async fn controller_manager_creates_default_service_account() {
    with_temp_ns("testenv-sa", |client, ns| async move {
        let service_accounts = Api::<ServiceAccount>::namespaced(client, &ns);
        let created = eventually(Duration::from_secs(30), || async {
            matches!(service_accounts.get_opt("default").await, Ok(Some(_)))
        })
        .await;
        assert!(created, "ServiceAccount {ns}/default never appeared");
    })
    .await;
}

#[tokio::test]
async fn service_account_token_is_bound_by_rbac() {
    let control_plane = shared().unwrap();
    with_temp_ns("testenv-rbac", |client, ns| async move {
        let pp = PostParams::default();
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .create(
                &pp,
                &ServiceAccount {
                    metadata: meta("reader"),
                    ..ServiceAccount::default()
                },
            )
            .await
            .unwrap();
        Api::<Role>::namespaced(client.clone(), &ns)
            .create(
                &pp,
                &Role {
                    metadata: meta("secret-reader"),
                    rules: Some(vec![PolicyRule {
                        api_groups: Some(vec![String::new()]),
                        resources: Some(vec!["secrets".to_owned()]),
                        verbs: vec!["list".to_owned()],
                        ..PolicyRule::default()
                    }]),
                },
            )
            .await
            .unwrap();
        Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .create(
                &pp,
                &RoleBinding {
                    metadata: meta("secret-reader"),
                    role_ref: RoleRef {
                        api_group: Some("rbac.authorization.k8s.io".to_owned()),
                        kind: "Role".to_owned(),
                        name: "secret-reader".to_owned(),
                    },
                    subjects: Some(vec![Subject {
                        kind: "ServiceAccount".to_owned(),
                        name: "reader".to_owned(),
                        namespace: Some(ns.clone()),
                        ..Subject::default()
                    }]),
                },
            )
            .await
            .unwrap();

        let token = service_account_token(&client, &ns, "reader").await.unwrap();
        let reader = control_plane.client_for_token(&token).unwrap();

        // The RBAC authorizer watches Roles, so the grant may lag a moment.
        let own = Api::<Secret>::namespaced(reader.clone(), &ns);
        let allowed = eventually(Duration::from_secs(10), || async {
            own.list(&ListParams::default()).await.is_ok()
        })
        .await;
        assert!(allowed, "the token could not list secrets in {ns}");

        let denied = Api::<Secret>::namespaced(reader, "default")
            .list(&ListParams::default())
            .await
            .unwrap_err();
        match denied {
            kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
            other => panic!("expected 403 Forbidden, got {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
async fn audit_log_records_writes() {
    let control_plane = shared().unwrap();
    with_temp_ns("testenv-audit", |client, ns| async move {
        Api::<ConfigMap>::namespaced(client, &ns)
            .create(
                &PostParams::default(),
                &ConfigMap {
                    metadata: meta("audited"),
                    ..ConfigMap::default()
                },
            )
            .await
            .unwrap();
        // Blocking audit mode: the event is on disk before the response.
        let log = std::fs::read_to_string(control_plane.audit_log_path()).unwrap();
        let creates: Vec<serde_json::Value> = log
            .lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|event| {
                event["verb"] == "create"
                    && event["objectRef"]["namespace"] == ns.as_str()
                    && event["objectRef"]["name"] == "audited"
            })
            .collect();
        assert_eq!(creates.len(), 1, "{creates:#?}");
        assert_eq!(creates[0]["stage"], "ResponseComplete");
        assert_eq!(creates[0]["user"]["username"], "fluxgate-admin");
    })
    .await;
}

#[tokio::test]
async fn with_temp_ns_deletes_namespace_after_test_passes() {
    let seen = Arc::new(Mutex::new(String::new()));
    let captured = Arc::clone(&seen);
    with_temp_ns("testenv-pass", |_client, ns| async move {
        *captured.lock().unwrap() = ns;
    })
    .await;

    let ns = seen.lock().unwrap().clone();
    let namespaces = Api::<Namespace>::all(shared().unwrap().client().unwrap());
    // The namespace controller (kube-controller-manager) finishes the
    // deletion; the namespace must disappear entirely.
    let gone = eventually(Duration::from_secs(60), || async {
        matches!(namespaces.get_opt(&ns).await, Ok(None))
    })
    .await;
    assert!(gone, "namespace {ns} still exists");
}

#[tokio::test]
async fn with_temp_ns_deletes_namespace_and_resumes_panic() {
    let seen = Arc::new(Mutex::new(String::new()));
    let captured = Arc::clone(&seen);
    let outcome = AssertUnwindSafe(with_temp_ns("testenv-fail", |_client, ns| async move {
        *captured.lock().unwrap() = ns;
        panic!("deliberate failure");
    }))
    .catch_unwind()
    .await;

    let payload = outcome.unwrap_err();
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"deliberate failure"));
    let ns = seen.lock().unwrap().clone();
    let namespace = Api::<Namespace>::all(shared().unwrap().client().unwrap())
        .get_opt(&ns)
        .await
        .unwrap();
    assert!(
        namespace.is_none_or(|n| n.metadata.deletion_timestamp.is_some()),
        "namespace {ns} was not deleted"
    );
}

#[tokio::test]
async fn install_crds_waits_until_established() {
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.testenv.fluxgate.dev" },
        "spec": {
            "group": "testenv.fluxgate.dev",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "x-kubernetes-preserve-unknown-fields": true
                }}
            }]
        }
    }))
    .unwrap();
    let client = shared().unwrap().client().unwrap();
    // Twice: applying an unchanged CRD again must be a no-op, not an error.
    for _ in 0..2 {
        install_crds(&client, [&crd]).await.unwrap();
    }
    let stored = Api::<CustomResourceDefinition>::all(client)
        .get("widgets.testenv.fluxgate.dev")
        .await
        .unwrap();
    let established = stored
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Established" && c.status == "True");
    assert!(established);
}
