//! Rendering of the per-namespace reconciler objects: golden files under
//! `testdata/render/<case>/`, built by running the real policy core, plus
//! the hermeticity, injection and escalation guarantees.
//!
//! `FLUXGATE_UPDATE_GOLDEN=1 cargo test -p fluxgate-platform-defaults --test render`
//! rewrites the expected files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use fluxgate_crds::{FluxConfig, ObjectRef, PlatformDefaults};
use fluxgate_platform_defaults::render::{
    self, CONFIG_HASH_ANNOTATION, FluxConfigRef, NamespaceBundleInput, RenderError, Rendered,
    Renderer, TEMPLATES,
};
use fluxgate_platform_defaults::{NamespaceFacts, Platform, PlatformSettings, Resolved, resolve};
use kube::ResourceExt;
use serde::Deserialize;
use serde_json::Value;

/// One `testdata/render/<case>/input.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Case {
    namespace: String,
    #[serde(default)]
    namespace_labels: BTreeMap<String, String>,
    existing_namespaces: Vec<String>,
    #[serde(default)]
    credentials: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    network_policy: Option<NetworkPolicyCase>,
    platform_defaults: Vec<PlatformDefaults>,
    flux_configs: Vec<FluxConfig>,
}

/// `networkPolicy` of a case: the operator's `--network-policy-*` flags.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct NetworkPolicyCase {
    api_server_cidrs: Vec<String>,
    api_server_ports: Vec<u16>,
    git_cidrs: Vec<String>,
    git_ports: Vec<u16>,
}

fn case_dir(case: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/render")
        .join(case)
}

fn load(case: &str) -> Case {
    let text = std::fs::read_to_string(case_dir(case).join("input.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{case}/input.yaml: {e}"))
}

/// A case run through the real core: the FluxConfigs resolved against the
/// layers of the namespace, with their uids; targets expanded from the
/// first (by name) FluxConfig's allowed namespaces, as the operator does.
struct Prepared {
    case: Case,
    platform: Platform,
    resolved: Vec<(String, Resolved)>,
    network_policy: Option<render::ReconcilerNetworkPolicy>,
}

impl Prepared {
    fn new(case: Case) -> Self {
        let platform = Platform::new(PlatformSettings::default(), &case.platform_defaults);
        assert!(platform.rejected().is_empty(), "{:?}", platform.rejected());
        let layers = platform.layers_for(&case.namespace, &case.namespace_labels);
        let others = case.flux_configs.len().saturating_sub(1);
        let mut resolved: Vec<(String, Resolved)> = case
            .flux_configs
            .iter()
            .map(|fc| {
                let facts = NamespaceFacts {
                    other_flux_configs: others,
                };
                let r = resolve(fc, &layers, facts).unwrap_or_else(|v| panic!("{v:?}"));
                (fc.uid().unwrap_or_default(), r)
            })
            .collect();
        resolved.sort_by(|a, b| a.1.name().cmp(b.1.name()));
        let network_policy = case
            .network_policy
            .clone()
            .map(|n| render::ReconcilerNetworkPolicy {
                api_server_cidrs: n.api_server_cidrs,
                api_server_ports: n.api_server_ports,
                git_cidrs: n.git_cidrs,
                git_ports: n.git_ports,
            });
        Self {
            case,
            platform,
            resolved,
            network_policy,
        }
    }

    fn targets(&self) -> Vec<String> {
        let layers = self
            .platform
            .layers_for(&self.case.namespace, &self.case.namespace_labels);
        let allowed = &self.resolved[0].1.effective().allowed_namespaces.value;
        render::expand_target_namespaces(&layers, allowed, &self.case.existing_namespaces)
    }

    fn input(&self) -> NamespaceBundleInput<'_> {
        NamespaceBundleInput {
            namespace: &self.case.namespace,
            platform_namespace: PLATFORM_NAMESPACE,
            flux_configs: self
                .resolved
                .iter()
                .map(|(uid, r)| FluxConfigRef::new(uid, r))
                .collect(),
            target_namespaces: self.targets(),
            credentials: self.case.credentials.clone(),
            network_policy: self.network_policy.as_ref(),
        }
    }
}

/// `PlatformSettings::default().platform_namespace`.
const PLATFORM_NAMESPACE: &str = "fluxgate-system";

fn prepared(case: &str) -> Prepared {
    Prepared::new(load(case))
}

fn rendered(case: &str) -> Rendered {
    let prepared = prepared(case);
    render::render(&prepared.input()).unwrap_or_else(|e| panic!("{case}: {}", chain(&e)))
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

const GOLDEN_HEADER: &str = "# Generated by `FLUXGATE_UPDATE_GOLDEN=1 cargo test -p fluxgate-platform-defaults --test render`; do not edit.\n";

fn golden(case: &str) {
    let actual = format!("{GOLDEN_HEADER}{}", rendered(case).to_yaml().unwrap());
    let path = case_dir(case).join("expected.yaml");
    if std::env::var("FLUXGATE_UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with FLUXGATE_UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    similar_asserts::assert_eq!(
        expected,
        actual,
        "{case}: rendered output differs from expected.yaml; if intended, run with FLUXGATE_UPDATE_GOLDEN=1"
    );
}

const CASES: &[&str] = &["minimal", "full", "multi-target", "hostile"];

#[test]
fn golden_minimal() {
    golden("minimal");
}

#[test]
fn golden_full() {
    golden("full");
}

#[test]
fn golden_multi_target() {
    golden("multi-target");
}

#[test]
fn golden_hostile() {
    golden("hostile");
}

// --- what every rendering guarantees ------------------------------------

fn kinds(r: &Rendered) -> Vec<String> {
    r.objects
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_owned())
        .collect()
}

fn find<'r>(r: &'r Rendered, kind: &str, namespace: &str, name: &str) -> &'r Value {
    r.objects
        .iter()
        .find(|o| {
            o["kind"] == kind
                && o["metadata"]["namespace"] == namespace
                && o["metadata"]["name"] == name
        })
        .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} in {:?}", r.object_refs()))
}

fn deployment(r: &Rendered) -> &Value {
    find(r, "Deployment", "team-a", "fluxgate-reconciler")
}

#[test]
fn objects_come_in_apply_order() {
    assert_eq!(
        kinds(&rendered("full")),
        [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "Secret",
            "Secret",
            "NetworkPolicy",
            "Deployment"
        ]
    );
}

#[test]
fn the_network_policy_admits_only_dns_the_api_server_and_git() {
    let full = rendered("full");
    let policy = find(&full, "NetworkPolicy", "team-a", "fluxgate-reconciler");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment(&full)["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let egress = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 3, "DNS, API server, Git: {egress:?}");
    assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], "10.0.0.1/32");
    assert_eq!(egress[2]["to"][1]["ipBlock"]["cidr"], "2001:db8::/32");
    assert_eq!(egress[2]["ports"][1]["port"], 22);
    // Off unless the installation asks for it.
    assert!(!kinds(&rendered("minimal")).contains(&"NetworkPolicy".to_owned()));
    // A typo is an error naming the value, not an open policy.
    let mut p = prepared("full");
    p.network_policy.as_mut().unwrap().git_cidrs = vec!["github.com".into()];
    let err = render::render(&p.input()).unwrap_err().to_string();
    assert!(
        err.contains(r#"Git CIDR "github.com" is not a CIDR"#),
        "{err}"
    );
    p.network_policy.as_mut().unwrap().git_cidrs = vec!["10.0.0.0/33".into()];
    assert!(render::render(&p.input()).is_err());
}

#[test]
fn every_object_carries_the_fluxgate_labels() {
    for case in CASES {
        for object in &rendered(case).objects {
            let labels = &object["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/name"], "fluxgate-reconciler");
            assert_eq!(labels["app.kubernetes.io/managed-by"], "fluxgate");
            assert_eq!(labels["fluxgate.dev/team-namespace"], "team-a");
        }
    }
}

#[test]
fn team_namespace_objects_are_owned_by_every_flux_config() {
    let r = rendered("full");
    let prepared = prepared("full");
    let expected: Vec<Value> = prepared
        .resolved
        .iter()
        .map(|(uid, res)| {
            serde_json::json!({
                "apiVersion": "fluxgate.dev/v1alpha1",
                "kind": "FluxConfig",
                "name": res.name(),
                "uid": uid,
                "controller": false,
                "blockOwnerDeletion": true,
            })
        })
        .collect();
    assert_eq!(expected.len(), 4);
    for object in r
        .objects
        .iter()
        .filter(|o| o["metadata"]["namespace"] == "team-a")
    {
        assert_eq!(
            object["metadata"]["ownerReferences"],
            Value::Array(expected.clone()),
            "{}",
            object["metadata"]["name"]
        );
    }
}

#[test]
fn objects_in_other_namespaces_have_no_owners_and_form_the_inventory() {
    let r = rendered("multi-target");
    let outside = r.outside_namespace("team-a");
    assert_eq!(
        outside,
        ["team-a-dev", "team-a-prod"]
            .iter()
            .map(|ns| ObjectRef {
                api_version: "rbac.authorization.k8s.io/v1".into(),
                kind: "RoleBinding".into(),
                namespace: Some((*ns).into()),
                name: "fluxgate-reconciler-team-a".into(),
            })
            .collect::<Vec<_>>()
    );
    for reference in &outside {
        let object = find(
            &r,
            "RoleBinding",
            reference.namespace.as_deref().unwrap(),
            &reference.name,
        );
        assert!(object["metadata"].get("ownerReferences").is_none());
        assert_eq!(object["roleRef"]["kind"], "ClusterRole");
        assert_eq!(object["roleRef"]["name"], "fluxgate-team-edit");
        assert_eq!(
            object["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": "fluxgate-reconciler", "namespace": "team-a"}])
        );
    }
    let own = find(&r, "RoleBinding", "team-a", "fluxgate-reconciler-team-a");
    assert!(own["metadata"]["ownerReferences"].is_array());
}

#[test]
fn target_namespaces_expand_without_protected_or_foreign_ones() {
    assert_eq!(
        prepared("multi-target").targets(),
        ["team-a", "team-a-dev", "team-a-prod"]
    );
    assert_eq!(prepared("minimal").targets(), ["team-a"]);
}

#[test]
fn expansion_never_returns_a_protected_namespace_even_if_allowed() {
    let p = prepared("multi-target");
    let layers = p.platform.layers_for("team-a", &p.case.namespace_labels);
    let allowed = ["*".to_owned()];
    let existing: Vec<String> = [
        "team-a",
        "kube-system",
        "kube-public",
        "fluxgate-system",
        "team-a-secrets",
        "Not_A_Namespace",
        "other",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    assert_eq!(
        render::expand_target_namespaces(&layers, &allowed, &existing),
        ["other", "team-a"]
    );
    assert!(render::is_protected_namespace(&layers, "team-a-secrets"));
    assert!(render::is_protected_namespace(&layers, "kube-system"));
    assert!(!render::is_protected_namespace(&layers, "team-a-dev"));
}

#[test]
fn deployment_meets_the_restricted_pod_security_standard() {
    let r = rendered("full");
    let d = deployment(&r);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "Recreate");
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "fluxgate-reconciler");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let container = &pod["containers"][0];
    let sc = &container["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    // The platform's limits, each from the highest-priority PlatformDefaults
    // setting it ("standard" sets maxFiles, "global" maxRepoBytes too).
    assert_eq!(
        container["args"],
        serde_json::json!([
            "reconcile",
            "--namespace=team-a",
            "--max-files=300",
            "--max-repo-bytes=52428800"
        ])
    );
    // Without limits, the reconciler's own defaults apply.
    assert_eq!(
        deployment(&rendered("minimal"))["spec"]["template"]["spec"]["containers"][0]["args"],
        serde_json::json!(["reconcile", "--namespace=team-a"])
    );
    assert_eq!(container["env"][0]["name"], "FLUXGATE_FLUXCONFIGS");
    assert_eq!(container["env"][0]["value"], "api,docs,infra,web");
    assert_eq!(
        container["image"],
        "registry.corp.example/fluxgate/reconciler:v0.4.0"
    );
    assert_eq!(container["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount_paths: Vec<&str> = mounts
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(
        mount_paths,
        [
            "/tmp",
            "/var/run/fluxgate/git/git-corp-readonly",
            "/var/run/fluxgate/git/git-corp-ssh"
        ]
    );
    assert!(mounts[1..].iter().all(|m| m["readOnly"] == true));
    let hash = &d["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION];
    assert_eq!(hash, &Value::String(r.config_hash.clone()));
    assert_eq!(r.config_hash.len(), 16);
}

#[test]
fn credentials_are_copied_once_per_secret_and_unused_ones_are_not() {
    let r = rendered("full");
    let secrets: Vec<&Value> = r.objects.iter().filter(|o| o["kind"] == "Secret").collect();
    let names: Vec<&str> = secrets
        .iter()
        .map(|s| s["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "fluxgate-git-git-corp-readonly",
            "fluxgate-git-git-corp-ssh"
        ]
    );
    assert_eq!(secrets[0]["type"], "Opaque");
    assert_eq!(secrets[0]["data"]["password"], "cmVhZC1vbmx5LXRva2Vu");
    assert_eq!(
        secrets[0]["metadata"]["annotations"]["fluxgate.dev/source-secret"],
        "fluxgate-system/git-corp-readonly"
    );
    let p = prepared("full");
    assert_eq!(
        render::required_credentials(p.resolved.iter().map(|(_, r)| r))
            .into_iter()
            .collect::<Vec<_>>(),
        ["git-corp-readonly", "git-corp-ssh"]
    );
}

// --- determinism and the config hash -----------------------------------------

#[test]
fn output_does_not_depend_on_input_order() {
    let p = prepared("full");
    let input = p.input();
    let mut shuffled = input.clone();
    shuffled.flux_configs.reverse();
    shuffled.target_namespaces.reverse();
    shuffled
        .target_namespaces
        .push(shuffled.target_namespaces[0].clone());
    let a = render::render(&input).unwrap();
    let b = render::render(&shuffled).unwrap();
    assert_eq!(a.to_yaml().unwrap(), b.to_yaml().unwrap());
    assert_eq!(a, render::render(&input).unwrap());
}

#[test]
fn config_hash_follows_settings_but_not_secret_values() {
    let p = prepared("full");
    let base = render::render(&p.input()).unwrap().config_hash;

    let mut rotated = p.input();
    rotated
        .credentials
        .get_mut("git-corp-readonly")
        .unwrap()
        .insert("password".into(), "bmV3LXRva2Vu".into());
    assert_eq!(render::render(&rotated).unwrap().config_hash, base);

    let mut new_key = p.input();
    new_key
        .credentials
        .get_mut("git-corp-readonly")
        .unwrap()
        .insert("ca.crt".into(), "Y2E=".into());
    assert_ne!(render::render(&new_key).unwrap().config_hash, base);

    let mut fewer_targets = p.input();
    fewer_targets.target_namespaces.retain(|t| t == "team-a");
    assert_ne!(render::render(&fewer_targets).unwrap().config_hash, base);

    let mut fewer_configs = p.input();
    fewer_configs.flux_configs.pop();
    assert_ne!(render::render(&fewer_configs).unwrap().config_hash, base);
}

// --- injection -----------------------------------------------------------------

fn keys_named(value: &Value, name: &str) -> usize {
    match value {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| usize::from(k == name) + keys_named(v, name))
            .sum(),
        Value::Array(items) => items.iter().map(|v| keys_named(v, name)).sum(),
        _ => 0,
    }
}

#[test]
fn hostile_values_cannot_inject_yaml_keys() {
    let r = rendered("hostile");
    for object in &r.objects {
        assert_eq!(keys_named(object, "evil"), 0, "{object}");
    }
    let evil_name = "web\"\n  evil: true";
    let d = deployment(&r);
    let container = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "registry.corp.example/reconciler\"\n  evil: true"
    );
    assert_eq!(container["env"][0]["value"], evil_name);
    assert_eq!(d["metadata"]["ownerReferences"][0]["name"], evil_name);
    assert_eq!(
        d["metadata"]["ownerReferences"][0]["uid"],
        "uid\"\n  evil: true"
    );
    let binding = find(&r, "RoleBinding", "team-a", "fluxgate-reconciler-team-a");
    assert_eq!(binding["roleRef"]["name"], "edit\"\n  evil: true");
    // And the YAML we hand on parses back to the same objects.
    let reparsed: Vec<Value> = serde_saphyr::from_multiple(&r.to_yaml().unwrap()).unwrap();
    assert_eq!(reparsed, r.objects);
}

#[test]
fn hostile_team_namespace_is_refused_before_any_template_runs() {
    let p = prepared("minimal");
    let mut input = p.input();
    input.namespace = "team-a\"\n  evil: true";
    let err = render::render(&input).unwrap_err();
    assert!(matches!(err, RenderError::InvalidInput { .. }), "{err}");
}

// --- hermetic templates ----------------------------------------------------------

fn render_with(name: &str, text: &str) -> Result<Rendered, RenderError> {
    let renderer = Renderer::with_overrides([(name, text)])?;
    renderer.render(&prepared("minimal").input())
}

#[test]
fn undefined_variables_fail_rendering() {
    let err = render_with(
        "service-account.yaml.tera",
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {{ no_such_variable | json_encode() }}\n",
    )
    .unwrap_err();
    assert!(
        matches!(&err, RenderError::Render { template, .. } if template == "service-account.yaml.tera"),
        "{err:?}"
    );
    assert!(chain(&err).contains("no_such_variable"), "{}", chain(&err));
}

#[test]
fn environment_time_and_randomness_are_unavailable_to_templates() {
    for call in [
        r#"get_env(name="HOME")"#,
        r#"get_env(name="HOME", default="x")"#,
        "now()",
        "get_random(start=0, end=10)",
    ] {
        let text = format!("# {{{{ {call} }}}}\n");
        let err = render_with("service-account.yaml.tera", &text).unwrap_err();
        let message = chain(&err);
        assert!(
            matches!(err, RenderError::Render { .. }) && message.contains("is disabled"),
            "{call}: {message}"
        );
    }
}

#[test]
fn unknown_template_names_are_refused() {
    let err = Renderer::with_overrides([("deploymnet.yaml.tera", "")]).unwrap_err();
    assert!(matches!(err, RenderError::UnknownTemplate { .. }), "{err}");
    assert!(err.to_string().contains("deployment.yaml.tera"), "{err}");
}

#[test]
fn broken_template_syntax_is_a_load_error() {
    let err = Renderer::with_overrides([("deployment.yaml.tera", "{% if %}")]).unwrap_err();
    assert!(matches!(err, RenderError::Templates(_)), "{err}");
}

#[test]
fn the_templates_directory_renders_like_the_builtin_templates() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates");
    let from_dir = Renderer::from_dir(&dir).unwrap();
    let p = prepared("full");
    assert_eq!(
        from_dir.render(&p.input()).unwrap(),
        render::render(&p.input()).unwrap()
    );
    assert_eq!(TEMPLATES.len(), 6);
}

#[test]
fn a_template_directory_overrides_single_templates_and_may_use_helpers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("README.md"), "ignored").unwrap();
    std::fs::write(
        dir.path().join("_macros.tera"),
        "{% macro sa_name() %}\"fluxgate-reconciler\"{% endmacro %}",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("service-account.yaml.tera"),
        "{% import \"_macros.tera\" as m %}apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {{ m::sa_name() }}\n  namespace: {{ namespace | json_encode() }}\n  labels: {{ labels | json_encode() }}\n  annotations:\n    platform.corp.example/owner: {{ namespace | json_encode() }}\n",
    )
    .unwrap();
    let r = Renderer::from_dir(dir.path())
        .unwrap()
        .render(&prepared("minimal").input())
        .unwrap();
    let sa = find(&r, "ServiceAccount", "team-a", "fluxgate-reconciler");
    assert_eq!(
        sa["metadata"]["annotations"]["platform.corp.example/owner"],
        "team-a"
    );
    // The other templates are the built-in ones.
    assert!(kinds(&r).contains(&"Deployment".to_owned()));

    std::fs::write(dir.path().join("extra.yaml.tera"), "").unwrap();
    assert!(matches!(
        Renderer::from_dir(dir.path()),
        Err(RenderError::UnknownTemplate { .. })
    ));
}

// --- overridden templates cannot escalate -------------------------------------

const META: &str = "metadata:\n  name: x\n  namespace: {{ namespace | json_encode() }}\n  labels: {{ labels | json_encode() }}\n";
const SUBJECT: &str = "subjects:\n  - kind: ServiceAccount\n    name: fluxgate-reconciler\n    namespace: {{ namespace | json_encode() }}\n";

#[test]
fn overridden_templates_cannot_escalate() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a ClusterRole",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: x\nrules: []\n".into(),
            "kind ClusterRole is not allowed",
        ),
        (
            "a ClusterRoleBinding",
            format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: x\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n{SUBJECT}"),
            "kind ClusterRoleBinding is not allowed",
        ),
        (
            "a binding to cluster-admin",
            format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n{META}roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: cluster-admin\n{SUBJECT}"),
            "roleRef ClusterRole \"cluster-admin\" is not allowed",
        ),
        (
            "a binding in a namespace that is not a target",
            format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: x\n  namespace: kube-system\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {{{{ cluster_role | json_encode() }}}}\n{SUBJECT}"),
            "namespace kube-system is neither the team namespace",
        ),
        (
            "a binding for another subject",
            format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\n{META}roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {{{{ cluster_role | json_encode() }}}}\nsubjects:\n  - kind: Group\n    apiGroup: rbac.authorization.k8s.io\n    name: system:authenticated\n"),
            "is not allowed; only ServiceAccount team-a/fluxgate-reconciler",
        ),
        (
            "a Role granting Secrets",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata:\n  name: fluxgate-reconciler-status\n  namespace: {{ namespace | json_encode() }}\nrules:\n  - apiGroups: [\"\"]\n    resources: [\"secrets\"]\n    verbs: [\"get\"]\n".into(),
            "may not grant \"secrets\"",
        ),
        (
            "another Role",
            format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n{META}rules: []\n"),
            "the only Role allowed",
        ),
        (
            "a service-account token Secret",
            format!("apiVersion: v1\nkind: Secret\ntype: kubernetes.io/service-account-token\n{META}"),
            "Secret type \"kubernetes.io/service-account-token\" is not allowed",
        ),
        (
            "a ServiceAccount in another namespace",
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n  namespace: team-b\n".into(),
            "only RoleBindings may be created outside the team namespace",
        ),
        (
            "a cluster-scoped object",
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: x\n".into(),
            "metadata.namespace is missing",
        ),
        (
            "a pod running as another ServiceAccount",
            format!("apiVersion: apps/v1\nkind: Deployment\n{META}spec:\n  template:\n    spec:\n      serviceAccountName: default\n"),
            "the pod must run as ServiceAccount fluxgate-reconciler",
        ),
        (
            "a wrong apiVersion",
            format!("apiVersion: v2\nkind: ServiceAccount\n{META}"),
            "apiVersion v2 is not allowed",
        ),
        (
            "the same object twice",
            format!("apiVersion: v1\nkind: ConfigMap\n{META}---\napiVersion: v1\nkind: ConfigMap\n{META}"),
            "rendered twice",
        ),
    ];
    for (what, text, expected) in cases {
        let err = render_with("credentials-secrets.yaml.tera", &text).unwrap_err();
        match &err {
            RenderError::Disallowed {
                template, reason, ..
            } => {
                assert_eq!(template, "credentials-secrets.yaml.tera", "{what}");
                assert!(
                    err.to_string().contains(expected),
                    "{what}: {err}; reason {reason}"
                );
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn an_extra_config_map_in_the_team_namespace_is_allowed() {
    let r = render_with(
        "credentials-secrets.yaml.tera",
        &format!("apiVersion: v1\nkind: ConfigMap\n{META}data:\n  a: b\n"),
    )
    .unwrap();
    // Placed by apply order, before the Deployment.
    assert_eq!(kinds(&r)[kinds(&r).len() - 2], "ConfigMap");
}

#[test]
fn objects_without_the_fluxgate_labels_are_refused() {
    let err = render_with(
        "credentials-secrets.yaml.tera",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: team-a\n  labels:\n    app.kubernetes.io/name: fluxgate-reconciler\n    app.kubernetes.io/managed-by: fluxgate\n    fluxgate.dev/team-namespace: team-b\n",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("label fluxgate.dev/team-namespace=team-a is missing"),
        "{err}"
    );
}

// --- input errors -----------------------------------------------------------------

#[test]
fn missing_credentials_name_the_secret_and_the_flux_config() {
    let p = prepared("full");
    let mut input = p.input();
    input.credentials.remove("git-corp-ssh");
    let err = render::render(&input).unwrap_err();
    assert!(
        matches!(&err, RenderError::MissingCredentials { secret, flux_config, .. } if secret == "git-corp-ssh" && flux_config == "api"),
        "{err}"
    );
}

#[test]
fn protected_or_invalid_target_namespaces_are_refused() {
    for target in ["kube-system", "fluxgate-system", "Team_A"] {
        let p = prepared("minimal");
        let mut input = p.input();
        input.target_namespaces.push(target.to_owned());
        let err = render::render(&input).unwrap_err();
        assert!(
            matches!(err, RenderError::InvalidInput { .. }),
            "{target}: {err}"
        );
    }
}

#[test]
fn flux_configs_must_belong_to_the_namespace_and_be_unique() {
    let p = prepared("minimal");
    let mut foreign = p.input();
    foreign.namespace = "team-b";
    let err = render::render(&foreign).unwrap_err();
    assert!(
        err.to_string().contains("belongs to namespace team-a"),
        "{err}"
    );

    let mut twice = p.input();
    twice.flux_configs.push(twice.flux_configs[0]);
    let err = render::render(&twice).unwrap_err();
    assert!(err.to_string().contains("listed twice"), "{err}");

    let mut none = p.input();
    none.flux_configs.clear();
    let err = render::render(&none).unwrap_err();
    assert!(err.to_string().contains("no FluxConfig"), "{err}");
}
