//! Layering and resolution, table-driven, with the example platform repo's
//! PlatformDefaults as the main fixture.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use fluxgate_crds::{FluxConfig, FluxConfigSpec, GitReference, PlatformDefaults};
use fluxgate_platform_defaults::{
    NamespaceFacts, Platform, PlatformSettings, Rule, Violations, compile, resolve,
};

fn example(path: &str) -> Vec<serde_json::Value> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/platform-repo")
        .join(path);
    let text = std::fs::read_to_string(file).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn example_defaults() -> Vec<PlatformDefaults> {
    [
        "platform/platformdefaults-global.yaml",
        "platform/platformdefaults-regulated.yaml",
    ]
    .iter()
    .flat_map(|f| example(f))
    .map(|d| serde_json::from_value(d).unwrap())
    .collect()
}

fn labels(class: &str) -> BTreeMap<String, String> {
    [
        ("fluxgate.dev/tenant".to_owned(), "true".to_owned()),
        ("fluxgate.dev/tenant-class".to_owned(), class.to_owned()),
    ]
    .into_iter()
    .collect()
}

fn platform() -> Platform {
    Platform::new(PlatformSettings::default(), &example_defaults())
}

fn fc(ns: &str, name: &str, spec: serde_json::Value) -> FluxConfig {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .unwrap()
}

fn check(
    ns: &str,
    class: &str,
    spec: serde_json::Value,
) -> Result<fluxgate_platform_defaults::Resolved, Violations> {
    let platform = platform();
    let labels = labels(class);
    let layers = platform.layers_for(ns, &labels);
    resolve(&fc(ns, "web", spec), &layers, NamespaceFacts::default())
}

fn denial(ns: &str, class: &str, spec: serde_json::Value) -> Violations {
    match check(ns, class, spec) {
        Ok(r) => panic!("accepted: {:?}", r.effective()),
        Err(v) => v,
    }
}

#[test]
fn layers_are_ordered_by_priority_then_name() {
    let platform = platform();
    assert!(platform.rejected().is_empty(), "{:?}", platform.rejected());
    assert_eq!(
        platform.layers_for("team-c", &labels("regulated")).names(),
        ["regulated", "global"]
    );
    assert_eq!(
        platform.layers_for("team-a", &labels("standard")).names(),
        ["global"]
    );
    assert!(
        platform
            .layers_for("other", &BTreeMap::new())
            .names()
            .is_empty()
    );

    // Equal priorities: name order, whatever the input order.
    let mut a: PlatformDefaults = serde_json::from_value(serde_json::json!({
        "apiVersion": "fluxgate.dev/v1alpha1", "kind": "PlatformDefaults",
        "metadata": {"name": "b-second"}, "spec": {"defaults": {"interval": "7m"}}
    }))
    .unwrap();
    let mut b = a.clone();
    b.metadata.name = Some("a-first".into());
    b.spec.defaults.as_mut().unwrap().interval = Some("3m".into());
    for order in [vec![a.clone(), b.clone()], vec![b.clone(), a.clone()]] {
        let platform = Platform::new(PlatformSettings::default(), &order);
        let layers = platform.layers_for("x", &BTreeMap::new());
        assert_eq!(layers.names(), ["a-first", "b-second"]);
        let interval = layers
            .scalar(|s| s.defaults.as_ref()?.interval.clone())
            .unwrap();
        assert_eq!(interval.value, "3m");
        assert_eq!(interval.source.to_string(), "PlatformDefaults/a-first");
    }
    a.spec.priority = 1;
    let platform = Platform::new(PlatformSettings::default(), &[a, b]);
    assert_eq!(
        platform.layers_for("x", &BTreeMap::new()).names(),
        ["b-second", "a-first"]
    );
}

#[test]
fn minimal_config_is_completed_from_defaults_with_provenance() {
    let resolved = check(
        "team-a",
        "standard",
        serde_json::json!({"repo": "https://git.corp.example/team-a/web.git"}),
    )
    .unwrap();
    let e = resolved.effective();
    assert_eq!(e.repo.value, "https://git.corp.example/team-a/web");
    assert_eq!(e.repo.source, "spec");
    assert_eq!(e.git_ref.value, GitReference::branch("main"));
    assert_eq!(e.git_ref.source, "PlatformDefaults/global");
    assert_eq!(
        (e.path.value.as_str(), e.path.source.as_str()),
        ("deploy", "PlatformDefaults/global")
    );
    assert_eq!(
        (e.interval.value.as_str(), e.interval.source.as_str()),
        ("5m", "PlatformDefaults/global")
    );
    assert_eq!(
        (
            e.target_namespace.value.as_str(),
            e.target_namespace.source.as_str()
        ),
        ("team-a", "builtin")
    );
    assert_eq!(e.allowed_namespaces.value, ["team-a", "team-a-*"]);
    assert!(!e.suspend.value);
    let creds = e.credentials_secret.as_ref().unwrap();
    assert_eq!(
        (creds.value.as_str(), creds.source.as_str()),
        ("git-corp-readonly", "PlatformDefaults/global")
    );
    assert_eq!(
        e.reconciler_image.value,
        "registry.corp.example/fluxgate/reconciler:v0.1.0"
    );
    assert_eq!(e.reconciler_cluster_role.value, "fluxgate-team-reconciler");
    assert!(e.reconciler_resources.is_some());
}

#[test]
fn higher_priority_scalars_win_and_allow_lists_are_merged() {
    let resolved = check(
        "team-c",
        "regulated",
        serde_json::json!({"repo": "https://git.corp.example/regulated/team-c/ledger.git"}),
    )
    .unwrap();
    let e = resolved.effective();
    assert_eq!(
        (e.interval.value.as_str(), e.interval.source.as_str()),
        ("15m", "PlatformDefaults/regulated")
    );
    assert_eq!(e.reconciler_image.source, "PlatformDefaults/regulated");
    assert_eq!(e.git_ref.source, "PlatformDefaults/global");
    // The team's own group, from the global allow-list, stays allowed too.
    assert!(
        check(
            "team-c",
            "regulated",
            serde_json::json!({"repo": "https://git.corp.example/team-c/x.git", "interval": "20m"})
        )
        .is_ok()
    );
}

#[test]
fn spec_values_win_over_defaults() {
    let resolved = check(
        "team-b",
        "standard",
        serde_json::json!({
            "repo": "https://git.corp.example/team-b/payments.git",
            "ref": {"tag": "v1.2.0"}, "path": "./clusters/prod/", "interval": "2m",
            "targetNamespace": "team-b-canary", "suspend": true, "cluster": "prod-eu-1",
        }),
    )
    .unwrap();
    let e = resolved.effective();
    assert_eq!(e.git_ref.value.tag.as_deref(), Some("v1.2.0"));
    assert_eq!(e.path.value, "clusters/prod");
    assert_eq!(e.target_namespace.value, "team-b-canary");
    assert!(e.suspend.value);
    for source in [
        &e.git_ref.source,
        &e.path.source,
        &e.interval.source,
        &e.target_namespace.source,
    ] {
        assert_eq!(source, "spec");
    }
}

#[test]
fn denied_repo_names_field_value_sources_and_allowed_patterns() {
    let v = denial(
        "team-a",
        "standard",
        serde_json::json!({"repo": "https://github.com/evil/x.git"}),
    );
    assert_eq!(
        v.to_string(),
        r#"FluxConfig team-a/web: spec.repo "https://github.com/evil/x.git" is not allowed for namespace team-a (PlatformDefaults "global"); allowed: https://git.corp.example/team-a/*"#
    );
}

#[test]
fn each_rule_is_enforced() {
    let repo = "https://git.corp.example/team-a/web.git";
    let table: Vec<(serde_json::Value, Rule, &str)> = vec![
        (
            serde_json::json!({"repo": "https://git.corp.example/team-b/web.git"}),
            Rule::RepoNotAllowed,
            "allowed: https://git.corp.example/team-a/*",
        ),
        (
            serde_json::json!({"repo": "https://git.corp.example.evil.example/team-a/web.git"}),
            Rule::RepoNotAllowed,
            "is not allowed for namespace team-a",
        ),
        (
            serde_json::json!({"repo": "https://git.corp.example/team-a/../team-b/x"}),
            Rule::RepoUrl,
            "spec.repo",
        ),
        (
            serde_json::json!({"repo": "https://user:secret@git.corp.example/team-a/web.git"}),
            Rule::RepoUrl,
            "spec.repo",
        ),
        (
            serde_json::json!({"repo": "https://10.0.0.5/team-a/web.git"}),
            Rule::RepoUrl,
            "private",
        ),
        (
            serde_json::json!({"repo": repo, "targetNamespace": "kube-system"}),
            Rule::TargetNamespace,
            "is a protected namespace (built-in pattern kube-*)",
        ),
        (
            serde_json::json!({"repo": repo, "targetNamespace": "fluxgate-system"}),
            Rule::TargetNamespace,
            "the platform's own namespace",
        ),
        (
            serde_json::json!({"repo": repo, "targetNamespace": "monitoring"}),
            Rule::TargetNamespace,
            r#"pattern monitoring in PlatformDefaults "global""#,
        ),
        (
            serde_json::json!({"repo": repo, "targetNamespace": "team-b"}),
            Rule::TargetNamespace,
            "allowed: team-a, team-a-*",
        ),
        (
            serde_json::json!({"repo": repo, "interval": "30s"}),
            Rule::Interval,
            "is shorter than the platform's minimum",
        ),
        (
            serde_json::json!({"repo": repo, "interval": "48h"}),
            Rule::Interval,
            "allowed: between 1m and 24h",
        ),
        (
            serde_json::json!({"repo": repo, "cluster": "staging-1"}),
            Rule::Cluster,
            "allowed: prod-eu-1, prod-us-1",
        ),
        (
            serde_json::json!({"repo": repo, "ref": {"branch": "feature..x"}}),
            Rule::GitRef,
            "spec.ref.branch",
        ),
        (
            serde_json::json!({"repo": repo, "ref": {"branch": "main", "tag": "v1"}}),
            Rule::GitRef,
            "exactly one of branch, tag or commit",
        ),
        (
            serde_json::json!({"repo": repo, "ref": {"commit": "abc"}}),
            Rule::GitRef,
            "spec.ref.commit",
        ),
        (
            serde_json::json!({"repo": repo, "path": "deploy/../../etc"}),
            Rule::Path,
            "spec.path",
        ),
        (
            serde_json::json!({"repo": repo, "path": "/etc"}),
            Rule::Path,
            "spec.path",
        ),
    ];
    for (spec, rule, needle) in table {
        let v = denial("team-a", "standard", spec.clone());
        assert!(v.violations.iter().any(|x| x.rule == rule), "{spec}: {v}");
        assert!(
            v.to_string().contains(needle),
            "{spec}:\n  {v}\n  missing {needle:?}"
        );
        assert!(v.to_string().starts_with("FluxConfig team-a/web: "), "{v}");
    }
}

#[test]
fn every_violation_is_reported_not_only_the_first() {
    let v = denial(
        "team-a",
        "standard",
        serde_json::json!({"repo": "https://github.com/x/y", "interval": "1s", "targetNamespace": "kube-public"}),
    );
    let rules: Vec<Rule> = v.violations.iter().map(|x| x.rule).collect();
    assert_eq!(
        rules,
        [Rule::RepoNotAllowed, Rule::TargetNamespace, Rule::Interval],
        "{v}"
    );
}

#[test]
fn flux_configs_per_namespace_are_limited() {
    let platform = platform();
    let labels = labels("standard");
    let layers = platform.layers_for("team-a", &labels);
    let config = fc(
        "team-a",
        "web",
        serde_json::json!({"repo": "https://git.corp.example/team-a/web.git"}),
    );
    assert!(
        resolve(
            &config,
            &layers,
            NamespaceFacts {
                other_flux_configs: 4
            }
        )
        .is_ok()
    );
    let v = resolve(
        &config,
        &layers,
        NamespaceFacts {
            other_flux_configs: 5,
        },
    )
    .unwrap_err();
    assert_eq!(v.violations[0].rule, Rule::TooManyFluxConfigs);
    assert!(
        v.to_string().contains("allowed: at most 5 per namespace"),
        "{v}"
    );
}

#[test]
fn a_namespace_no_defaults_select_allows_nothing_and_says_why() {
    let platform = platform();
    let layers = platform.layers_for("stray", &BTreeMap::new());
    let v = resolve(
        &fc(
            "stray",
            "web",
            serde_json::json!({"repo": "https://git.corp.example/stray/web.git"}),
        ),
        &layers,
        NamespaceFacts::default(),
    )
    .unwrap_err();
    assert!(
        v.to_string()
            .contains("allowed: none: no PlatformDefaults selects namespace stray"),
        "{v}"
    );
}

#[test]
fn internal_hosts_need_a_pattern_naming_that_exact_host() {
    let pd: PlatformDefaults = serde_json::from_value(serde_json::json!({
        "apiVersion": "fluxgate.dev/v1alpha1", "kind": "PlatformDefaults",
        "metadata": {"name": "lab"},
        "spec": {"allowedRepos": ["https://10.0.0.5/{namespace}/*", "https://*.corp.example/**"]}
    }))
    .unwrap();
    let platform = Platform::new(PlatformSettings::default(), &[pd]);
    let layers = platform.layers_for("team-a", &BTreeMap::new());
    let ok = fc(
        "team-a",
        "web",
        serde_json::json!({"repo": "https://10.0.0.5/team-a/web.git"}),
    );
    assert!(resolve(&ok, &layers, NamespaceFacts::default()).is_ok());
    for repo in [
        "https://10.0.0.6/team-a/web.git",
        "https://127.0.0.1/team-a/web.git",
        "http://169.254.169.254/latest",
    ] {
        let denied = fc("team-a", "web", serde_json::json!({"repo": repo}));
        let v = resolve(&denied, &layers, NamespaceFacts::default()).unwrap_err();
        assert_eq!(v.violations[0].rule, Rule::RepoUrl, "{v}");
    }
}

fn pd(spec: serde_json::Value) -> PlatformDefaults {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "fluxgate.dev/v1alpha1", "kind": "PlatformDefaults",
        "metadata": {"name": "broken"}, "spec": spec,
    }))
    .unwrap()
}

#[test]
fn platform_defaults_are_checked_against_their_own_rules() {
    let table = [
        (
            serde_json::json!({"allowedRepos": ["https://git.corp.example/{team}/*"]}),
            "spec.allowedRepos[0]",
        ),
        (
            serde_json::json!({"allowedTargetNamespaces": ["Team_*"]}),
            "spec.allowedTargetNamespaces[0]",
        ),
        (
            serde_json::json!({"namespaceSelector": {"matchExpressions": [{"key": "tier", "operator": "Equals", "values": ["x"]}]}}),
            "allowed: In, NotIn, Exists, DoesNotExist",
        ),
        (
            serde_json::json!({"allowedImages": ["registry.corp.example/*"], "defaults": {"reconciler": {"image": "docker.io/evil/reconciler:latest"}}}),
            "spec.defaults.reconciler.image",
        ),
        (
            serde_json::json!({"limits": {"minInterval": "10m"}, "defaults": {"interval": "1m"}}),
            "is shorter than this object's spec.limits.minInterval",
        ),
        (
            serde_json::json!({"limits": {"minInterval": "2h", "maxInterval": "1h"}}),
            "is longer than spec.limits.maxInterval",
        ),
        (
            serde_json::json!({"defaults": {"ref": {"branch": "bad..branch"}}}),
            "spec.defaults.ref.branch",
        ),
        (
            serde_json::json!({"defaults": {"path": "../x"}}),
            "spec.defaults.path",
        ),
        (
            serde_json::json!({"defaults": {"credentials": [{"repoPattern": "ftp://x/*", "secretRef": {"name": "creds"}}]}}),
            "spec.defaults.credentials[0].repoPattern",
        ),
        (
            serde_json::json!({"clusters": ["Prod EU"]}),
            "spec.clusters[0]",
        ),
    ];
    for (spec, needle) in table {
        let v = compile(&pd(spec.clone())).unwrap_err();
        let text = v.to_string();
        assert!(text.starts_with("PlatformDefaults broken: "), "{text}");
        assert!(
            text.contains(needle),
            "{spec}:\n  {text}\n  missing {needle:?}"
        );
    }
    // A rejected object is left out of layering and reported.
    let platform = Platform::new(
        PlatformSettings::default(),
        &[pd(
            serde_json::json!({"allowedRepos": ["https://x/{team}"]}),
        )],
    );
    assert_eq!(platform.rejected().len(), 1);
    assert!(platform.defaults().is_empty());
}

#[test]
fn every_example_team_config_resolves() {
    let platform = platform();
    let namespaces: BTreeMap<String, BTreeMap<String, String>> =
        example("platform/namespaces.yaml")
            .into_iter()
            .map(|ns| {
                let name = ns["metadata"]["name"].as_str().unwrap().to_owned();
                let labels = serde_json::from_value(ns["metadata"]["labels"].clone()).unwrap();
                (name, labels)
            })
            .collect();
    let mut count = 0;
    for team in ["team-a", "team-b", "team-c"] {
        for doc in example(&format!("teams/{team}/fluxconfig.yaml")) {
            let config: FluxConfig = serde_json::from_value(doc).unwrap();
            let ns = config.metadata.namespace.clone().unwrap();
            let layers = platform.layers_for(&ns, &namespaces[&ns]);
            if let Err(v) = resolve(&config, &layers, NamespaceFacts::default()) {
                panic!("{v}");
            }
            count += 1;
        }
    }
    assert_eq!(count, 4);
    let _ = FluxConfigSpec::default();
}

#[test]
fn installation_protected_namespaces_are_enforced_and_checked() {
    let settings = PlatformSettings {
        protected_namespaces: vec!["team-a-prod".into(), "shared-*".into()],
        ..PlatformSettings::default()
    };
    assert_eq!(settings.check(), Ok(()));
    let platform = Platform::new(settings, &example_defaults());
    let labels = labels("standard");
    let layers = platform.layers_for("team-a", &labels);
    let spec = serde_json::json!({
        "repo": "https://git.corp.example/team-a/web.git",
        "targetNamespace": "team-a-prod",
    });
    let denied = resolve(
        &fc("team-a", "web", spec),
        &layers,
        NamespaceFacts::default(),
    )
    .expect_err("team-a-prod is protected by the installation");
    assert!(
        denied
            .to_string()
            .contains("protected namespace pattern team-a-prod of the installation"),
        "{denied}"
    );
    // Without the setting the same target is allowed (team-a-* is allowed).
    let open = Platform::new(PlatformSettings::default(), &example_defaults());
    let layers = open.layers_for("team-a", &labels);
    let spec = serde_json::json!({
        "repo": "https://git.corp.example/team-a/web.git",
        "targetNamespace": "team-a-prod",
    });
    assert!(
        resolve(
            &fc("team-a", "web", spec),
            &layers,
            NamespaceFacts::default()
        )
        .is_ok()
    );

    let typo = PlatformSettings {
        protected_namespaces: vec!["Shared_*".into()],
        ..PlatformSettings::default()
    };
    let err = typo.check().unwrap_err();
    assert!(
        err.contains(r#"protected namespace pattern "Shared_*" is invalid"#),
        "{err}"
    );
    let bad_ns = PlatformSettings {
        platform_namespace: "Fluxgate".into(),
        ..PlatformSettings::default()
    };
    assert!(bad_ns.check().unwrap_err().contains("not a DNS-1123 label"));
}

/// The values of `tests/tests/hostile_input.rs` (end to end through the API
/// server) whose rules live here, with the whole message: the object, the
/// field, the value (password masked), what is wrong and what is allowed.
#[test]
fn hostile_values_are_denied_with_field_value_and_what_is_allowed() {
    let repo = "https://git.corp.example/team-a/web.git";
    let table: Vec<(serde_json::Value, &str)> = vec![
        (
            serde_json::json!({"repo": "https://git.corp.ex\u{430}mple/team-a/web.git"}),
            "spec.repo \"https://git.corp.exаmple/team-a/web.git\": host \"git.corp.ex\\u{430}mple\" is not ASCII: U+0430 'а' at byte 11, which looks like an ASCII character; internationalised host names are not supported, write the name in its punycode (xn--) form",
        ),
        (
            serde_json::json!({"repo": "http://[fd00:ec2::254]/latest/meta-data"}),
            "spec.repo \"http://[fd00:ec2::254]/latest/meta-data\" points to a cloud metadata endpoint address, which only a pattern naming that exact host can allow (PlatformDefaults \"global\"); allowed: https://git.corp.example/team-a/*",
        ),
        (
            serde_json::json!({"repo": "https://deploy:hunter2@git.corp.example/team-a/web.git"}),
            "spec.repo \"https://deploy:***@git.corp.example/team-a/web.git\": repository url contains a password; credentials belong in a Secret assigned by the platform, so write the url without them",
        ),
        (
            serde_json::json!({"repo": repo, "path": "%2e%2e/%2e%2e/etc"}),
            "spec.path: path \"%2e%2e/%2e%2e/etc\" contains the percent-escape \"%2e\"; paths are taken literally, not URL-decoded, so write the characters themselves (and never '..')",
        ),
    ];
    for (spec, message) in table {
        let v = denial("team-a", "standard", spec.clone());
        assert_eq!(
            v.to_string(),
            format!("FluxConfig team-a/web: {message}"),
            "{spec}"
        );
        assert!(!v.to_string().contains("hunter2"), "{v}");
    }
}
