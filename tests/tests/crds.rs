//! The fluxgate API against a real kube-apiserver: the CRDs install and
//! become Established, the examples are accepted or rejected exactly as they
//! say, `kubectl explain` and `kubectl get` show what the types document, and
//! status is shared between field managers under server-side apply.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use fluxgate_crds::conditions::{self, reasons};
use fluxgate_crds::{FluxConfig, FluxConfigSpec, FluxConfigStatus, PlatformDefaults};
use fluxgate_e2e::testenv::{self, with_temp_ns};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

const MANAGER: &str = "fluxgate.dev/e2e";

async fn client_with_crds() -> Client {
    let cp = testenv::shared().unwrap();
    let client = cp.client().unwrap();
    testenv::install_crds(&client, fluxgate_crds::all_crds())
        .await
        .unwrap();
    client
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "FluxConfig" => ApiResource::erase::<FluxConfig>(&()),
        "PlatformDefaults" => ApiResource::erase::<PlatformDefaults>(&()),
        "Namespace" => ApiResource::erase::<Namespace>(&()),
        other => panic!("no API resource for kind {other} in examples"),
    }
}

/// Moves an example into the test's own namespace (and gives cluster-scoped
/// objects a unique name), so tests sharing a control plane do not collide.
fn isolate(mut doc: serde_json::Value, ns: &str) -> serde_json::Value {
    let kind = doc["kind"].as_str().unwrap().to_owned();
    let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
    match kind.as_str() {
        "FluxConfig" => doc["metadata"]["namespace"] = json!(ns),
        _ => doc["metadata"]["name"] = json!(format!("{ns}-{name}")),
    }
    doc
}

/// Server-side apply with strict field validation, so a misspelt field in an
/// example is an error instead of being silently dropped.
async fn apply(client: &Client, doc: &serde_json::Value) -> Result<DynamicObject, kube::Error> {
    let ar = api_resource(doc["kind"].as_str().unwrap());
    let name = doc["metadata"]["name"].as_str().unwrap();
    let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        name,
        &PatchParams::apply(MANAGER).validation_strict(),
        &Patch::Apply(doc),
    )
    .await
}

/// A plain create, as `kubectl create` or a first `kubectl apply` sends it:
/// the API server's validation messages read best on this path.
async fn create(client: &Client, doc: &serde_json::Value) -> Result<DynamicObject, kube::Error> {
    let ar = api_resource(doc["kind"].as_str().unwrap());
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    let api: Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.create(&PostParams::default(), &obj).await
}

#[tokio::test]
async fn crds_install_and_become_established() {
    let client = client_with_crds().await;
    // Installing again is a no-op, not an error (the operator and the demo
    // both install on start).
    testenv::install_crds(&client, fluxgate_crds::all_crds())
        .await
        .unwrap();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client);
    for name in ["fluxconfigs.fluxgate.dev", "platformdefaults.fluxgate.dev"] {
        let crd = crds.get(name).await.unwrap();
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not Established");
    }
}

#[tokio::test]
async fn valid_examples_are_accepted() {
    let client = client_with_crds().await;
    with_temp_ns("examples", |client2, ns| async move {
        drop(client2);
        let mut applied = 0;
        for file in yaml_files(&examples_dir().join("platform-repo")) {
            for doc in documents(&file) {
                let doc = isolate(doc, &ns);
                if let Err(err) = apply(&client, &doc).await {
                    panic!("{}: {} rejected: {err}", file.display(), doc["kind"]);
                }
                applied += 1;
            }
        }
        assert!(
            applied >= 9,
            "only {applied} objects in the platform repo example"
        );

        // What the API server stored is what the types read back.
        let fcs: Api<FluxConfig> = Api::namespaced(client.clone(), &ns);
        let ledger = fcs.get("ledger").await.unwrap();
        assert_eq!(
            ledger.spec.target_namespace.as_deref(),
            Some("team-c-staging")
        );
        assert_eq!(
            ledger.spec.git_ref.and_then(|r| r.tag).as_deref(),
            Some("v3.4.1")
        );
        let pds: Api<PlatformDefaults> = Api::all(client.clone());
        let global = pds.get(&format!("{ns}-global")).await.unwrap();
        assert_eq!(
            global.spec.allowed_target_namespaces,
            ["{namespace}", "{namespace}-*"]
        );
        for pd in ["global", "regulated"] {
            pds.delete(&format!("{ns}-{pd}"), &Default::default())
                .await
                .unwrap();
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        for team in ["team-a", "team-b", "team-c", "team-c-staging"] {
            namespaces
                .delete(&format!("{ns}-{team}"), &Default::default())
                .await
                .unwrap();
        }
    })
    .await;
}

#[tokio::test]
async fn invalid_examples_are_rejected_with_the_expected_message() {
    let client = client_with_crds().await;
    with_temp_ns("invalid", |_, ns| async move {
        let mut failures = Vec::new();
        let files = yaml_files(&examples_dir().join("invalid/schema"));
        assert!(files.len() >= 10);
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let expected = text
                .lines()
                .find_map(|l| l.strip_prefix("# expect: "))
                .unwrap()
                .to_owned();
            let doc = isolate(documents(file).remove(0), &ns);
            match create(&client, &doc).await {
                Ok(_) => failures.push(format!("{}: accepted", file.display())),
                Err(kube::Error::Api(status))
                    if status.code == 422 && status.message.contains(&expected) => {}
                Err(err) => failures.push(format!(
                    "{}:\n  expected: {expected}\n  got:      {err}",
                    file.display()
                )),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    })
    .await;
}

#[tokio::test]
async fn oversized_repo_and_path_are_rejected_not_stored() {
    let client = client_with_crds().await;
    with_temp_ns("oversized", |_, ns| async move {
        let huge = "a".repeat(100 * 1024);
        let cases = [
            (
                "huge-repo",
                json!({"repo": format!("https://git.corp.example/{huge}")}),
                "spec.repo: Too long: may not be more than 2048 bytes",
            ),
            (
                "huge-path",
                json!({"repo": "https://git.corp.example/team-a/web.git", "path": huge}),
                "spec.path: Too long: may not be more than 1024 bytes",
            ),
        ];
        for (name, spec, expected) in cases {
            let doc = json!({
                "apiVersion": "fluxgate.dev/v1alpha1",
                "kind": "FluxConfig",
                "metadata": {"name": name, "namespace": ns},
                "spec": spec,
            });
            match create(&client, &doc).await {
                Err(kube::Error::Api(status)) => {
                    assert_eq!(status.code, 422, "{name}: {status:?}");
                    assert!(
                        status.message.contains(expected),
                        "{name}: {}",
                        status.message
                    );
                }
                other => panic!("{name}: expected a 422, got {other:?}"),
            }
        }
    })
    .await;
}

/// The CRD's OpenAPI schema reaches the aggregated OpenAPI endpoint a moment
/// after the CRD is Established; `kubectl explain` reads it from there.
fn kubectl_explain(field: &str) -> String {
    let cp = testenv::shared().unwrap();
    let mut last = String::new();
    for _ in 0..60 {
        let out = cp.kubectl(["explain", field]).output().unwrap();
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("kubectl explain {field} kept failing: {last}");
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    client_with_crds().await;
    let cases = [
        (
            "fluxconfig",
            "FluxConfig asks the platform to sync a team's Git repository",
        ),
        ("fluxconfig.spec.repo", "URL of the team's Git repository"),
        ("fc.spec.ref", "exactly one of `branch`, `tag` or `commit`"),
        (
            "fluxconfig.status.effective",
            "with the source of each value",
        ),
        (
            "platformdefaults.spec.allowedRepos",
            "Repository URL patterns teams may sync from",
        ),
        (
            "platformdefaults.spec.limits.maxFluxConfigsPerNamespace",
            "Most FluxConfigs one namespace may hold",
        ),
    ];
    for (field, doc) in cases {
        let out = tokio::task::spawn_blocking(move || kubectl_explain(field))
            .await
            .unwrap();
        assert!(out.contains(doc), "kubectl explain {field}:\n{out}");
    }
}

fn condition(type_: &str, status: &str, reason: &str, message: &str, generation: i64) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: Some(generation),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
    }
}

#[tokio::test]
async fn status_is_shared_between_field_managers() {
    let client = client_with_crds().await;
    with_temp_ns("status", |_, ns| async move {
        let fcs: Api<FluxConfig> = Api::namespaced(client.clone(), &ns);
        let fc = FluxConfig::new(
            "web",
            FluxConfigSpec {
                repo: "https://git.corp.example/team-a/web.git".into(),
                ..FluxConfigSpec::default()
            },
        );
        let created = fcs.create(&PostParams::default(), &fc).await.unwrap();
        let generation = created.metadata.generation.unwrap();

        // The operator owns Accepted and Provisioned ...
        let operator_status = json!({
            "apiVersion": FluxConfig::api_version(&()),
            "kind": FluxConfig::kind(&()),
            "status": FluxConfigStatus {
                observed_generation: Some(generation),
                conditions: vec![
                    condition(conditions::ACCEPTED, "True", reasons::ACCEPTED, "all platform rules pass", generation),
                    condition(conditions::PROVISIONED, "True", reasons::PROVISIONED, "reconciler ready", generation),
                ],
                ..FluxConfigStatus::default()
            },
        });
        fcs.patch_status(
            "web",
            &PatchParams::apply("fluxgate.dev/operator").force(),
            &Patch::Apply(&operator_status),
        )
        .await
        .unwrap();

        // ... the reconciler owns Ready and the revision, without taking
        // the operator's conditions away.
        let reconciler_status = json!({
            "apiVersion": FluxConfig::api_version(&()),
            "kind": FluxConfig::kind(&()),
            "status": {
                "conditions": [condition(conditions::READY, "True", reasons::SUCCEEDED, "applied main@sha1:3f786850", generation)],
                "lastAppliedRevision": "main@sha1:3f786850e387550fdab836ed7e6dc881de23001b",
            },
        });
        fcs.patch_status(
            "web",
            &PatchParams::apply("fluxgate.dev/reconciler").force(),
            &Patch::Apply(&reconciler_status),
        )
        .await
        .unwrap();

        let fc = fcs.get("web").await.unwrap();
        for type_ in [conditions::ACCEPTED, conditions::PROVISIONED, conditions::READY] {
            assert!(fc.condition_is_true(type_), "{type_} missing: {:?}", fc.status);
        }
        let status = fc.status.as_ref().unwrap();
        assert_eq!(status.observed_generation, Some(generation));
        assert_eq!(
            status.last_applied_revision.as_deref(),
            Some("main@sha1:3f786850e387550fdab836ed7e6dc881de23001b")
        );
        let managers: Vec<_> = fc
            .managed_fields()
            .iter()
            .filter(|m| m.subresource.as_deref() == Some("status"))
            .filter_map(|m| m.manager.clone())
            .collect();
        assert!(managers.contains(&"fluxgate.dev/operator".to_owned()), "{managers:?}");
        assert!(managers.contains(&"fluxgate.dev/reconciler".to_owned()), "{managers:?}");

        // The operator re-applying its own conditions keeps the reconciler's.
        fcs.patch_status(
            "web",
            &PatchParams::apply("fluxgate.dev/operator").force(),
            &Patch::Apply(&operator_status),
        )
        .await
        .unwrap();
        assert!(fcs.get("web").await.unwrap().condition_is_true(conditions::READY));

        // The status subresource is separate: a status in a spec write is ignored.
        let mut spec_write = serde_json::to_value(&fc).unwrap();
        spec_write["status"] = json!({"lastAppliedRevision": "forged"});
        spec_write["metadata"] = json!({"name": "web"});
        fcs.patch("web", &PatchParams::apply("team").force(), &Patch::Apply(&spec_write))
            .await
            .unwrap();
        let fc = fcs.get("web").await.unwrap();
        assert_eq!(
            fc.status.unwrap().last_applied_revision.as_deref(),
            Some("main@sha1:3f786850e387550fdab836ed7e6dc881de23001b")
        );

        // kubectl shows the printer columns and waits on conditions.
        let cp = testenv::shared().unwrap();
        let ns2 = ns.clone();
        let out = tokio::task::spawn_blocking(move || {
            cp.kubectl(["get", "fc", "-n", &ns2]).output().unwrap()
        })
        .await
        .unwrap();
        let table = String::from_utf8_lossy(&out.stdout);
        let header: Vec<_> = table.lines().next().unwrap_or_default().split_whitespace().collect();
        assert_eq!(header, ["NAME", "READY", "REVISION", "AGE"], "{table}");
        assert!(table.contains("web") && table.contains("True") && table.contains("main@sha1:3f78685"), "{table}");

        let ns2 = ns.clone();
        let out = tokio::task::spawn_blocking(move || {
            cp.kubectl(["wait", "-n", &ns2, "--for=condition=Provisioned", "fc/web", "--timeout=10s"])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    })
    .await;
}

#[tokio::test]
async fn kubectl_get_platformdefaults_shows_priority() {
    let client = client_with_crds().await;
    with_temp_ns("pdcols", |_, ns| async move {
        let name = format!("{ns}-pd");
        let doc = json!({
            "apiVersion": "fluxgate.dev/v1alpha1",
            "kind": "PlatformDefaults",
            "metadata": {"name": name},
            "spec": {"priority": 42, "allowedRepos": ["https://git.corp.example/{namespace}/*"]},
        });
        apply(&client, &doc).await.unwrap();
        let cp = testenv::shared().unwrap();
        let name2 = name.clone();
        let out = tokio::task::spawn_blocking(move || {
            cp.kubectl(["get", "platformdefaults", &name2])
                .output()
                .unwrap()
        })
        .await
        .unwrap();
        let table = String::from_utf8_lossy(&out.stdout);
        let header: Vec<_> = table
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(header, ["NAME", "PRIORITY", "READY", "AGE"], "{table}");
        assert!(table.contains("42"), "{table}");
        let pds: Api<PlatformDefaults> = Api::all(client.clone());
        let pd = pds.get(&name).await.unwrap();
        assert_eq!(pd.name_any(), name);
        pds.delete(&name, &Default::default()).await.unwrap();
    })
    .await;
}
