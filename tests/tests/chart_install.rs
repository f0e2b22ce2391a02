//! The README's one Helm command against a real kube-apiserver: `helm
//! install` into a namespace that enforces the restricted Pod Security
//! Standard succeeds (the CRDs from the chart's crds/ directory first, then
//! the platform sync's FluxConfig, with `failurePolicy: Fail` and no webhook
//! running yet, because the webhook never covers fluxgate's own namespace),
//! the documented CRD upgrade (`kubectl apply --server-side
//! --force-conflicts -f deploy/crds/`, since Helm never upgrades crds/)
//! and `helm upgrade` work, and `helm uninstall` removes fluxgate but keeps
//! the CRDs and every FluxConfig.
//!
//! Its own control plane: the release owns cluster-scoped objects (CRDs,
//! ClusterRoles) that other test binaries create without Helm.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fluxgate_crds::{FluxConfig, FluxConfigSpec};
use fluxgate_e2e::helm;
use fluxgate_e2e::testenv;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, PostParams};

const NS: &str = "fluxgate-system";

fn helm_on(cp: &testenv::ControlPlane, args: &[&str]) -> String {
    let kubeconfig = cp.kubeconfig_path().to_string_lossy().into_owned();
    let chart = helm::chart_dir().to_string_lossy().into_owned();
    let mut all: Vec<&str> = args
        .iter()
        .map(|a| if *a == "CHART" { chart.as_str() } else { a })
        .collect();
    all.extend(["--kubeconfig", &kubeconfig, "--namespace", NS]);
    helm::helm(&all).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_install_upgrade_and_uninstall_keep_the_crds_and_the_teams_configs() {
    let cp = testenv::shared().unwrap();
    let admin = cp.client().unwrap();
    // The README's prerequisite: the namespace, enforcing `restricted`.
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(NS.into()),
            labels: Some(
                [(
                    "pod-security.kubernetes.io/enforce".to_owned(),
                    "restricted".to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    // The one command.
    let out = helm_on(
        cp,
        &[
            "install",
            "fluxgate",
            "CHART",
            "--set",
            "platformSync.repo=https://git.corp.example/platform/config.git",
        ],
    );
    assert!(out.contains("STATUS: deployed"), "{out}");
    assert!(
        out.contains("kubectl get fluxconfigs -A -o wide"),
        "NOTES: {out}"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(admin.clone());
    assert!(
        crds.get_opt("fluxconfigs.fluxgate.dev")
            .await
            .unwrap()
            .is_some()
    );
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), NS);
    let operator = deployments.get("fluxgate-operator").await.unwrap();
    assert_eq!(operator.spec.replicas, Some(2));
    assert!(
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get("fluxgate")
            .await
            .is_ok()
    );
    // The platform sync's FluxConfig was created although no webhook runs:
    // fluxgate's namespace is outside the webhook's namespaceSelector.
    let platform = Api::<FluxConfig>::namespaced(admin.clone(), NS)
        .get("platform")
        .await
        .unwrap();
    assert_eq!(
        platform.spec.repo,
        "https://git.corp.example/platform/config.git"
    );

    // With no webhook running, a team's FluxConfig fails closed...
    let team = Namespace {
        metadata: ObjectMeta {
            name: Some("team-x".into()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &team)
        .await
        .unwrap();
    let fc = FluxConfig::new(
        "web",
        FluxConfigSpec {
            repo: "https://git.corp.example/team-x/web.git".into(),
            ..FluxConfigSpec::default()
        },
    );
    let err = Api::<FluxConfig>::namespaced(admin.clone(), "team-x")
        .create(&PostParams::default(), &fc)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("failed calling webhook \"fluxconfigs.fluxgate.dev\""),
        "{err}"
    );
    // ... while one outside the release in fluxgate's namespace (not
    // covered by the webhook) is written, and must survive the uninstall.
    Api::<FluxConfig>::namespaced(admin.clone(), NS)
        .create(
            &PostParams::default(),
            &FluxConfig::new("outside-the-release", fc.spec.clone()),
        )
        .await
        .unwrap();

    // The CRD upgrade step of a version upgrade, exactly as documented,
    // over what `helm install` created.
    let crd_dir = fluxgate_e2e::stack::repo_root()
        .join("deploy/crds")
        .to_string_lossy()
        .into_owned();
    let status = cp
        .kubectl([
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            crd_dir.as_str(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let crd = crds.get("fluxconfigs.fluxgate.dev").await.unwrap();
    assert!(
        crd.metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|f| f.manager.as_deref() == Some("kubectl")
                && f.operation.as_deref() == Some("Apply")),
        "the CRD was not applied"
    );

    // helm upgrade, reusing the values.
    let out = helm_on(
        cp,
        &[
            "upgrade",
            "fluxgate",
            "CHART",
            "--reuse-values",
            "--set",
            "operator.replicas=3",
        ],
    );
    assert!(out.contains("STATUS: deployed"), "{out}");
    let operator = deployments.get("fluxgate-operator").await.unwrap();
    assert_eq!(operator.spec.replicas, Some(3));

    // Uninstall: fluxgate goes, the CRDs and the configurations stay.
    helm_on(cp, &["uninstall", "fluxgate", "--wait=false"]);
    assert!(
        deployments
            .get_opt("fluxgate-operator")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<ValidatingWebhookConfiguration>::all(admin.clone())
            .get_opt("fluxgate")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        crds.get_opt("fluxconfigs.fluxgate.dev")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        crds.get_opt("platformdefaults.fluxgate.dev")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<FluxConfig>::namespaced(admin.clone(), NS)
            .get_opt("outside-the-release")
            .await
            .unwrap()
            .is_some(),
        "uninstalling fluxgate deleted a FluxConfig it did not create"
    );
}
