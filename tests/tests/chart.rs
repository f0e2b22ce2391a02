//! The Helm chart (deploy/charts/fluxgate): `helm lint`, the plain manifests
//! rendered from it are current, bad values fail at install time with the
//! value named, and what it renders with default and non-default values is
//! accepted by a real kube-apiserver (server-side dry run) in a namespace
//! that enforces the restricted Pod Security Standard. The security posture
//! the chart promises (webhook configuration, RBAC) is checked on every
//! rendering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use fluxgate_e2e::helm::{self, PLAIN_MANIFESTS};
use fluxgate_e2e::stack::{self, INSTALLER};
use fluxgate_e2e::testenv;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The values the tests render with: (release namespace, helm arguments).
fn renderings() -> Vec<(&'static str, Vec<String>)> {
    let chart = helm::chart_dir();
    let ci = |f: &str| chart.join("ci").join(f).to_string_lossy().into_owned();
    vec![
        (
            "fluxgate-system",
            vec!["--set".into(), "namespace.create=true".into()],
        ),
        (
            "fluxgate-alt",
            vec!["-f".into(), ci("cert-manager-values.yaml")],
        ),
        (
            "fluxgate-small",
            vec!["-f".into(), ci("secret-values.yaml")],
        ),
    ]
}

fn render(namespace: &str, args: &[String]) -> Vec<Value> {
    let mut all: Vec<&str> = vec!["--include-crds", "--namespace", namespace];
    all.extend(args.iter().map(String::as_str));
    let yaml = helm::template("fluxgate", &all).unwrap();
    helm::documents(&yaml).unwrap()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

#[test]
fn lint_passes_with_default_and_ci_values() {
    let chart = helm::chart_dir();
    let chart_arg = chart.to_string_lossy().into_owned();
    helm::helm(&["lint", "--strict", &chart_arg]).unwrap();
    for values in ["cert-manager-values.yaml", "secret-values.yaml"] {
        let file = chart.join("ci").join(values).to_string_lossy().into_owned();
        helm::helm(&["lint", "--strict", &chart_arg, "-f", &file]).unwrap();
    }
}

#[test]
fn plain_manifests_are_current() {
    let expected = helm::render_plain().unwrap();
    let path = stack::repo_root().join(PLAIN_MANIFESTS);
    if std::env::var_os("FLUXGATE_UPDATE_MANIFESTS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &expected).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "{PLAIN_MANIFESTS} is stale: the chart renders differently. Regenerate it with\n  \
         FLUXGATE_UPDATE_MANIFESTS=1 cargo test -p fluxgate-e2e --test chart plain_manifests"
    );
}

#[test]
fn bad_values_fail_at_install_time_naming_the_value() {
    for (set, expected) in [
        ("webhook.timeoutSeconds=10", "/webhook/timeoutSeconds"),
        ("webhook.failurePolicy=Sometimes", "/webhook/failurePolicy"),
        (
            "webhook.certificate.mode=vault",
            "/webhook/certificate/mode",
        ),
        ("operator.replicas=0", "/operator/replicas"),
        ("logging.format=xml", "/logging/format"),
        (
            "protectedNamespaces[0]=Kube_System",
            "/protectedNamespaces/0",
        ),
        ("platformSync.repo=file:///etc", "/platformSync/repo"),
        ("platformSync.interval=soon", "/platformSync/interval"),
        (
            "networkPolicy.gitCIDRs[0]=github.com",
            "/networkPolicy/gitCIDRs/0",
        ),
        (
            "webhok.replicas=3",
            "additional properties 'webhok' not allowed",
        ),
    ] {
        let err = helm::template(
            "fluxgate",
            &["--namespace", "fluxgate-system", "--set", set],
        )
        .expect_err(set)
        .to_string();
        assert!(err.contains(expected), "--set {set}: {err}");
    }
    // Two refs at once are refused too (the schema allows exactly one).
    let err = helm::template(
        "fluxgate",
        &[
            "--set",
            "platformSync.ref.branch=main",
            "--set",
            "platformSync.ref.tag=v1",
        ],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/platformSync/ref"), "{err}");
}

/// What the chart promises about its webhook configuration, on every
/// rendering.
#[test]
fn webhook_configuration_cannot_lock_out_the_platform() {
    for (namespace, args) in renderings() {
        let docs = render(namespace, &args);
        let configs = of_kind(&docs, "ValidatingWebhookConfiguration");
        assert_eq!(configs.len(), 1, "{namespace}");
        let webhooks = configs[0]["webhooks"].as_array().unwrap();
        assert_eq!(webhooks.len(), 2);
        for webhook in webhooks {
            let name = webhook["name"].as_str().unwrap();
            assert_eq!(webhook["sideEffects"], "None", "{name}");
            assert!(webhook["timeoutSeconds"].as_i64().unwrap() <= 5, "{name}");
            assert!(
                ["Fail", "Ignore"].contains(&webhook["failurePolicy"].as_str().unwrap()),
                "{name}"
            );
            // Only fluxgate's kinds, only create and update.
            for rule in webhook["rules"].as_array().unwrap() {
                assert_eq!(rule["apiGroups"], json!(["fluxgate.dev"]), "{name}");
                assert_eq!(rule["operations"], json!(["CREATE", "UPDATE"]), "{name}");
                for resource in rule["resources"].as_array().unwrap() {
                    let resource = resource.as_str().unwrap();
                    assert!(
                        ["fluxconfigs", "platformdefaults"].contains(&resource),
                        "{name}: {resource}"
                    );
                }
            }
            assert!(
                webhook["matchConditions"]
                    .to_string()
                    .contains("request.subResource"),
                "{name}: status updates must be skipped"
            );
            assert_eq!(
                webhook["clientConfig"]["service"]["namespace"], namespace,
                "{name}"
            );
        }
        let fluxconfigs = &webhooks[0];
        let excluded = &fluxconfigs["namespaceSelector"]["matchExpressions"][0];
        assert_eq!(excluded["key"], "kubernetes.io/metadata.name");
        assert_eq!(excluded["operator"], "NotIn");
        let values = excluded["values"].to_string();
        assert!(values.contains("\"kube-system\""), "{values}");
        assert!(values.contains(&format!("\"{namespace}\"")), "{values}");
        if namespace == "fluxgate-alt" {
            assert!(values.contains("\"sandbox\""), "{values}");
            assert_eq!(
                configs[0]["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                "fluxgate-alt/fluxgate-webhook"
            );
        }
    }
}

/// Least privilege, checked on every rendering: no wildcards, no
/// `escalate`, `bind` only on the platform's reconciler roles, the webhook
/// read-only on what it watches.
#[test]
fn rbac_is_least_privilege() {
    for (namespace, args) in renderings() {
        let docs = render(namespace, &args);
        let mut roles = of_kind(&docs, "ClusterRole");
        roles.extend(of_kind(&docs, "Role"));
        assert!(!roles.is_empty());
        for role in &roles {
            let name = role["metadata"]["name"].as_str().unwrap();
            for rule in role["rules"].as_array().unwrap() {
                let text = rule.to_string();
                assert!(!text.contains("\"*\""), "{name}: wildcard in {text}");
                assert!(!text.contains("escalate"), "{name}: escalate in {text}");
                if text.contains("\"bind\"") {
                    assert_eq!(name, "fluxgate-operator", "{text}");
                    let names: BTreeSet<&str> = rule["resourceNames"]
                        .as_array()
                        .expect("bind is limited by resourceNames")
                        .iter()
                        .map(|v| v.as_str().unwrap())
                        .collect();
                    let mut expected = BTreeSet::from(["fluxgate-team-reconciler"]);
                    if namespace == "fluxgate-alt" {
                        expected.insert("fluxgate-team-reconciler-restricted");
                    }
                    assert_eq!(names, expected);
                }
            }
        }
        let webhook = roles
            .iter()
            .find(|r| r["kind"] == "ClusterRole" && r["metadata"]["name"] == "fluxgate-webhook")
            .unwrap();
        for rule in webhook["rules"].as_array().unwrap() {
            let verbs: BTreeSet<&str> = rule["verbs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            if rule["apiGroups"] == json!(["admissionregistration.k8s.io"]) {
                // Self-managed certificates: its own configuration only.
                assert_eq!(rule["resourceNames"], json!(["fluxgate"]));
            } else {
                assert!(
                    verbs.is_subset(&BTreeSet::from(["get", "list", "watch"])),
                    "webhook writes {rule}"
                );
            }
        }
        // Every Secret rule of fluxgate's own components but the operator's
        // (which copies credentials) is limited to one name (create cannot
        // be, and reads nothing). The teams' role is bound per namespace.
        for role in &roles {
            let name = role["metadata"]["name"].as_str().unwrap();
            if name == "fluxgate-operator" || name == "fluxgate-team-reconciler" {
                continue;
            }
            for rule in role["rules"].as_array().unwrap() {
                let secrets = rule["resources"]
                    .as_array()
                    .is_some_and(|r| r.iter().any(|x| x == "secrets"));
                if secrets && rule["verbs"] != json!(["create"]) {
                    assert!(rule["resourceNames"].is_array(), "{name}: {rule}");
                }
            }
        }
    }
}

/// Stand-ins for the cert-manager and prometheus-operator CRDs (their
/// schemas are not available offline), so the non-default renderings'
/// Certificates, Issuers, ServiceMonitors and PodMonitors can be dry-run;
/// every other object is checked against its real schema.
fn stand_in_crds() -> Vec<CustomResourceDefinition> {
    [
        ("cert-manager.io", "Certificate", "certificates"),
        ("cert-manager.io", "Issuer", "issuers"),
        ("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
        ("monitoring.coreos.com", "PodMonitor", "podmonitors"),
    ]
    .into_iter()
    .map(|(group, kind, plural)| {
        serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {
                "group": group,
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase()},
                "scope": "Namespaced",
                "versions": [{
                    "name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": true,
                    }},
                }],
            },
        }))
        .unwrap()
    })
    .collect()
}

async fn create_restricted_namespace(client: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": name, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }},
    }))
    .unwrap();
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(INSTALLER).force(),
            &Patch::Apply(&ns),
        )
        .await
        .unwrap();
}

/// Every rendering is accepted by the API server (server-side dry run, with
/// the real schemas of every built-in kind and of fluxgate's CRDs), and
/// every pod it would run is admitted by Pod Security admission enforcing
/// `restricted` in the release namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renderings_dry_run_against_the_api_server_under_restricted_pod_security() {
    let cp = testenv::shared().unwrap();
    let client = cp.client().unwrap();
    testenv::install_crds(&client, stand_in_crds())
        .await
        .unwrap();
    let dry_run = PatchParams {
        dry_run: true,
        ..PatchParams::apply(INSTALLER).force()
    };
    for (namespace, args) in renderings() {
        let docs = render(namespace, &args);
        // The default rendering creates its namespace; the others expect
        // it to exist (as with `helm install -n`), labelled like the README
        // says.
        let (namespaces, rest): (Vec<Value>, Vec<Value>) =
            docs.into_iter().partition(|d| d["kind"] == "Namespace");
        if namespaces.is_empty() {
            create_restricted_namespace(&client, namespace).await;
        } else {
            assert_eq!(
                namespaces[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
                "restricted"
            );
            stack::apply_all(&client, &namespaces).await.unwrap();
        }
        // CRDs for real (the FluxConfig below needs them served), the rest
        // as a dry run.
        let (crds, rest): (Vec<Value>, Vec<Value>) = rest
            .into_iter()
            .partition(|d| d["kind"] == "CustomResourceDefinition");
        if !crds.is_empty() {
            let crds: Vec<CustomResourceDefinition> = crds
                .into_iter()
                .map(|c| serde_json::from_value(c).unwrap())
                .collect();
            testenv::install_crds(&client, crds).await.unwrap();
        }
        // ServiceAccounts for real too: a pod is only admitted when its
        // ServiceAccount exists.
        let (accounts, rest): (Vec<Value>, Vec<Value>) = rest
            .into_iter()
            .partition(|d| d["kind"] == "ServiceAccount");
        stack::apply_all(&client, &accounts).await.unwrap();
        stack::apply_docs(&client, &rest, &dry_run)
            .await
            .unwrap_or_else(|e| panic!("{namespace}: {}", stack::chain(&e)));

        // Each Deployment's pod, as the ReplicaSet would create it.
        let pods = Api::<Pod>::namespaced(client.clone(), namespace);
        let create = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let deployments = of_kind(&rest, "Deployment");
        assert!(deployments.len() >= 2, "{namespace}");
        for deployment in deployments {
            let name = deployment["metadata"]["name"].as_str().unwrap();
            let mut pod = deployment["spec"]["template"].clone();
            pod["apiVersion"] = json!("v1");
            pod["kind"] = json!("Pod");
            pod["metadata"]["name"] = json!(format!("{name}-dry-run"));
            let pod: Pod = serde_json::from_value(pod).unwrap();
            pods.create(&create, &pod)
                .await
                .unwrap_or_else(|e| panic!("{namespace}/{name}: {e}"));
        }
        // The namespace does enforce: a pod without the restricted settings
        // is refused.
        let loose: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "loose"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .unwrap();
        let err = pods.create(&create, &loose).await.unwrap_err().to_string();
        assert!(
            err.contains("violates PodSecurity \"restricted:latest\""),
            "{err}"
        );
    }
}
