//! `fluxgate validate`: every PlatformDefaults and FluxConfig in a platform
//! config repository, checked by the same policy core the admission webhook
//! uses, so a merge request fails with the message the cluster would give.
//!
//! Namespaces come from `metadata.namespace`; a FluxConfig without one takes
//! its namespace from the directory convention `teams/<namespace>/...`.
//! Namespace labels come from the `Namespace` objects in the repository.
//! FluxConfigs are counted per namespace in file order, as admission would
//! see them arrive, and only those that pass every other rule count.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use fluxgate_crds::{FluxConfig, PlatformDefaults};
use fluxgate_platform_defaults::documents::field_line;
use fluxgate_platform_defaults::{
    NamespaceFacts, Platform, PlatformSettings, Resolved, Rule, Violation, Violations, resolve,
};
use k8s_openapi::api::core::v1::Namespace;

use crate::load::Loaded;

/// One problem, located.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// `FluxConfig team-a/web` or `PlatformDefaults global`.
    pub object: String,
    /// Rule id, e.g. `repo-not-allowed`.
    pub rule: String,
    /// Field path, e.g. `spec.repo`.
    pub field: String,
    /// The message, as the webhook words it (object prefix included).
    pub message: String,
}

/// A FluxConfig that passed, with its effective configuration.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The file it came from.
    pub file: PathBuf,
    /// The resolved config.
    pub resolved: Resolved,
}

/// The result of checking a repository.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Every violation, in file order.
    pub findings: Vec<Finding>,
    /// Notes that are not violations (e.g. a namespace defined elsewhere).
    pub warnings: Vec<String>,
    /// The FluxConfigs that passed.
    pub accepted: Vec<Accepted>,
}

fn finding(loaded: &Loaded, object: &str, v: &Violation) -> Finding {
    Finding {
        file: loaded.file.clone(),
        line: field_line(&loaded.doc, &v.field),
        object: object.to_owned(),
        rule: v.rule.id().to_owned(),
        field: v.field.clone(),
        message: format!("{object}: {v}"),
    }
}

fn object_of(loaded: &Loaded) -> (String, Option<String>, String) {
    let v = &loaded.doc.value;
    let kind = v["kind"].as_str().unwrap_or("object").to_owned();
    let ns = v["metadata"]["namespace"].as_str().map(str::to_owned);
    let name = v["metadata"]["name"]
        .as_str()
        .unwrap_or("<unnamed>")
        .to_owned();
    (kind, ns, name)
}

fn schema_finding(loaded: &Loaded, object: &str, err: &serde_json::Error) -> Finding {
    let v = Violation::new(
        Rule::Schema,
        "object",
        "",
        format!(
            "does not match the {} schema: {err}",
            loaded.doc.value["kind"].as_str().unwrap_or("object")
        ),
    );
    finding(loaded, object, &v)
}

/// The namespace named by `teams/<namespace>/...` in a path.
fn namespace_from_path(file: &Path) -> Option<String> {
    let parts: Vec<String> = file
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect();
    let at = parts.iter().rposition(|p| p == "teams")?;
    let ns = parts.get(at + 1)?;
    // The directory must be followed by a file, not be the file itself.
    (at + 2 < parts.len()).then(|| ns.clone())
}

/// Checks every document. Documents of other kinds are ignored: a platform
/// repository may hold anything else it syncs.
pub fn validate(docs: &[Loaded], settings: PlatformSettings) -> Report {
    let mut report = Report::default();
    let is = |l: &Loaded, kind: &str| {
        l.doc.value["kind"].as_str() == Some(kind)
            && l.doc.value["apiVersion"]
                .as_str()
                .is_some_and(|a| kind == "Namespace" || a == "fluxgate.dev/v1alpha1")
    };

    // Namespaces and their labels.
    let mut labels: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for l in docs.iter().filter(|l| is(l, "Namespace")) {
        if let Ok(ns) = serde_json::from_value::<Namespace>(l.doc.value.clone())
            && let Some(name) = ns.metadata.name
        {
            labels.insert(name, ns.metadata.labels.unwrap_or_default());
        }
    }

    // PlatformDefaults: typed, then compiled by the core.
    let mut defaults = Vec::new();
    let mut pd_files: BTreeMap<String, &Loaded> = BTreeMap::new();
    for l in docs.iter().filter(|l| is(l, "PlatformDefaults")) {
        let (kind, _, name) = object_of(l);
        let object = Violations::object_name(&kind, None, &name);
        match serde_json::from_value::<PlatformDefaults>(l.doc.value.clone()) {
            Ok(pd) => {
                if pd_files.insert(name.clone(), l).is_some() {
                    let v = Violation::new(
                        Rule::Schema,
                        "metadata.name",
                        &name,
                        "is defined twice in the repository",
                    );
                    report.findings.push(finding(l, &object, &v));
                }
                defaults.push(pd);
            }
            Err(err) => report.findings.push(schema_finding(l, &object, &err)),
        }
    }
    let platform = Platform::new(settings, &defaults);
    for rejected in platform.rejected() {
        let name = rejected.object.trim_start_matches("PlatformDefaults ");
        if let Some(l) = pd_files.get(name) {
            for v in &rejected.violations {
                report.findings.push(finding(l, &rejected.object, v));
            }
        }
    }

    // FluxConfigs: typed, namespaced, resolved in file order.
    let mut admitted: BTreeMap<String, usize> = BTreeMap::new();
    let mut seen: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
    for l in docs.iter().filter(|l| is(l, "FluxConfig")) {
        let (kind, ns, name) = object_of(l);
        let ns = ns.or_else(|| namespace_from_path(&l.file));
        let object = Violations::object_name(&kind, ns.as_deref(), &name);
        let mut fc = match serde_json::from_value::<FluxConfig>(l.doc.value.clone()) {
            Ok(fc) => fc,
            Err(err) => {
                report.findings.push(schema_finding(l, &object, &err));
                continue;
            }
        };
        let Some(ns) = ns else {
            let v = Violation::new(Rule::Schema, "metadata.namespace", "", "is missing")
                .allowed("set metadata.namespace, or place the file under teams/<namespace>/");
            report.findings.push(finding(l, &object, &v));
            continue;
        };
        fc.metadata.namespace = Some(ns.clone());
        if let Some(first) = seen.insert((ns.clone(), name.clone()), l.file.clone()) {
            let v = Violation::new(
                Rule::Schema,
                "metadata.name",
                &name,
                format!("is also defined in {}", first.display()),
            );
            report.findings.push(finding(l, &object, &v));
            continue;
        }
        let ns_labels = match labels.get(&ns) {
            Some(labels) => labels.clone(),
            None => {
                let warning = format!(
                    "namespace {ns} is not defined in the repository; {object} is checked as if it had no labels"
                );
                if !report.warnings.contains(&warning) {
                    report.warnings.push(warning);
                }
                BTreeMap::new()
            }
        };
        let layers = platform.layers_for(&ns, &ns_labels);
        let count = admitted.entry(ns.clone()).or_default();
        match resolve(
            &fc,
            &layers,
            NamespaceFacts {
                other_flux_configs: *count,
            },
        ) {
            Ok(resolved) => {
                *count += 1;
                report.accepted.push(Accepted {
                    file: l.file.clone(),
                    resolved,
                });
            }
            Err(violations) => {
                for v in &violations.violations {
                    report.findings.push(finding(l, &violations.object, v));
                }
            }
        }
    }
    report
}
