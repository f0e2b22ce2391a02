//! Every file under `examples/` is parsed and checked offline, so the
//! samples cannot rot. (`tests/tests/crds.rs` applies the same files to a
//! real API server.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use fluxgate_crds::{FluxConfig, PlatformDefaults};
use validator::Validate;

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        } else if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// What fluxgate can check without an API server: the typed shape and the
/// `#[validate]` constraints (the same ones the CRD schema carries).
fn offline_check(doc: &serde_json::Value) -> Result<(), String> {
    match doc["kind"].as_str() {
        Some("FluxConfig") => {
            let fc: FluxConfig = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
            fc.spec.validate().map_err(|e| e.to_string())?;
            if let Some(r) = &fc.spec.git_ref
                && !r.is_exactly_one()
            {
                return Err("exactly one of branch, tag or commit must be set".into());
            }
            Ok(())
        }
        Some("PlatformDefaults") => {
            let pd: PlatformDefaults =
                serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
            pd.spec.validate().map_err(|e| e.to_string())?;
            let refs = pd.spec.defaults.iter().filter_map(|d| d.git_ref.as_ref());
            for r in refs {
                if !r.is_exactly_one() {
                    return Err("exactly one of branch, tag or commit must be set".into());
                }
            }
            Ok(())
        }
        Some("Namespace") => {
            serde_json::from_value::<k8s_openapi::api::core::v1::Namespace>(doc.clone())
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        other => Err(format!("unexpected kind {other:?} in examples")),
    }
}

#[test]
fn valid_examples_parse_and_validate() {
    let mut files = Vec::new();
    yaml_files(&examples_dir().join("platform-repo"), &mut files);
    assert!(files.len() >= 5, "expected the platform repo examples");
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for file in files {
        for doc in documents(&file) {
            offline_check(&doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            *kinds
                .entry(doc["kind"].as_str().unwrap().to_owned())
                .or_default() += 1;
        }
    }
    assert!(kinds["FluxConfig"] >= 3, "{kinds:?}");
    assert!(kinds["PlatformDefaults"] >= 2, "{kinds:?}");
}

#[test]
fn invalid_examples_declare_their_expected_rejection() {
    let mut files = Vec::new();
    yaml_files(&examples_dir().join("invalid"), &mut files);
    assert!(files.len() >= 10, "expected the invalid examples");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let schema = file.parent().is_some_and(|d| d.ends_with("schema"));
        assert!(
            !schema || text.lines().any(|l| l.starts_with("# expect: ")),
            "{} has no `# expect:` line (the API server's message)",
            file.display()
        );
        assert!(
            text.lines().any(|l| l.starts_with("# expect-validate: ")),
            "{} has no `# expect-validate:` line (fluxgate validate's message)",
            file.display()
        );
        let docs = documents(&file);
        assert_eq!(
            docs.len(),
            1,
            "{}: one object per invalid example",
            file.display()
        );
        assert!(docs[0]["apiVersion"].is_string() && docs[0]["kind"].is_string());
    }
}

/// The offline checks catch every schema violation that is not a CEL rule
/// or a list-set rule; those few are enforced by the API server (and, in
/// the merge-request pipeline, by the policy core).
#[test]
fn offline_validation_rejects_schema_invalid_examples() {
    const ONLY_IN_API_SERVER: &[&str] = &[
        "path-parent.yaml",
        "path-absolute.yaml",
        "platformdefaults-duplicate-repo.yaml",
    ];
    let mut files = Vec::new();
    yaml_files(&examples_dir().join("invalid/schema"), &mut files);
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let result = offline_check(&documents(&file)[0]);
        if ONLY_IN_API_SERVER.contains(&name.as_str()) {
            assert!(
                result.is_ok(),
                "{name}: now rejected offline ({result:?}); update the list"
            );
        } else {
            assert!(result.is_err(), "{name}: accepted offline");
        }
    }
}

/// The team repositories hold plain Kubernetes objects: each must read as
/// its typed k8s-openapi object (so a typo in a field name fails here, not
/// in the demo).
#[test]
fn team_repo_manifests_are_valid_kubernetes_objects() {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{ConfigMap, Service};

    fn strict<T: serde::de::DeserializeOwned + serde::Serialize>(
        doc: &serde_json::Value,
    ) -> Result<(), String> {
        let typed: T = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
        // Unknown fields would be dropped by the typed read: compare back.
        let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
        fn subset(a: &serde_json::Value, b: &serde_json::Value) -> bool {
            match (a, b) {
                (serde_json::Value::Object(a), serde_json::Value::Object(b)) => a
                    .iter()
                    .all(|(k, v)| b.get(k).is_some_and(|w| subset(v, w))),
                (serde_json::Value::Array(a), serde_json::Value::Array(b)) => {
                    a.len() == b.len() && a.iter().zip(b).all(|(v, w)| subset(v, w))
                }
                _ => a == b,
            }
        }
        if subset(doc, &back) {
            Ok(())
        } else {
            Err(format!("unknown or misspelt fields in {doc}"))
        }
    }

    let mut files = Vec::new();
    yaml_files(&examples_dir().join("team-repos"), &mut files);
    assert!(files.len() >= 4);
    let mut count = 0;
    for file in files {
        for doc in documents(&file) {
            let result = match doc["kind"].as_str() {
                Some("ConfigMap") => strict::<ConfigMap>(&doc),
                Some("Service") => strict::<Service>(&doc),
                Some("Deployment") => strict::<Deployment>(&doc),
                Some("StatefulSet") => strict::<StatefulSet>(&doc),
                other => Err(format!("unexpected kind {other:?}")),
            };
            result.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            count += 1;
        }
    }
    assert!(count >= 8, "{count}");
}
