//! The Grafana dashboard shipped with the chart
//! (`deploy/charts/fluxgate/dashboards/fluxgate.json`) queries only metrics
//! that the operator, the reconciler and the admission webhook export, and
//! reads its data source from the `${datasource}` variable.
//!
//! No control plane: each component's `Metrics` is constructed and encoded
//! in-process. Every family is listed with `# HELP`/`# TYPE` before its first
//! sample, so a fresh registry names them all.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

fn dashboard_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/charts/fluxgate/dashboards/fluxgate.json")
}

fn dashboard() -> Value {
    let path = dashboard_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// The three components' expositions, concatenated.
fn exposition() -> String {
    [
        fluxgate_operator::metrics::Metrics::new().encode(),
        fluxgate_reconciler::metrics::Metrics::new().encode(),
        fluxgate_admission_webhook::Metrics::new().encode().unwrap(),
    ]
    .join("\n")
}

/// Metric families by name, with their type, from the `# TYPE` lines; each
/// must have a `# HELP` line too.
fn families(exposition: &str) -> BTreeMap<String, String> {
    let helped: BTreeSet<&str> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, type_)| {
            assert!(helped.contains(name), "{name} has no # HELP line");
            (name.to_owned(), type_.to_owned())
        })
        .collect()
}

/// Whether a series name in PromQL belongs to an exported family: counters
/// are queried as `<family>_total`, histograms as `_bucket`, `_sum` and
/// `_count`, info metrics as `_info` (the OpenMetrics sample names).
fn is_exported(series: &str, families: &BTreeMap<String, String>) -> bool {
    let suffixes: &[&str] = &[
        "", "_total", "_bucket", "_sum", "_count", "_created", "_info",
    ];
    suffixes.iter().any(|suffix| {
        let Some(family) = series.strip_suffix(suffix) else {
            return false;
        };
        let allowed: &[&str] = match families.get(family).map(String::as_str) {
            None => return false,
            Some("counter") => &["_total", "_created"],
            Some("histogram") => &["_bucket", "_sum", "_count", "_created"],
            Some("summary") => &["", "_sum", "_count", "_created"],
            Some("info") => &["_info"],
            Some(_) => &[""],
        };
        allowed.contains(suffix)
    })
}

/// Every `fluxgate_*` metric name in a PromQL expression, outside string
/// literals (label values).
fn metric_names_in(expr: &str, names: &mut BTreeSet<String>) {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut previous: Option<char> = None;
    let mut chars = expr.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
        } else if matches!(c, '"' | '\'' | '`') {
            quote = Some(c);
        } else if expr[i..].starts_with("fluxgate_") && !previous.is_some_and(is_name_char) {
            let end = expr[i..]
                .find(|c: char| !is_name_char(c))
                .map_or(expr.len(), |n| i + n);
            names.insert(expr[i..end].to_owned());
            while chars.peek().is_some_and(|(j, _)| *j < end) {
                chars.next();
            }
            previous = Some('_');
            continue;
        }
        previous = Some(c);
    }
}

/// The metric names of every PromQL string in a dashboard: panel targets'
/// `expr`, variables' `query` and `definition`, at any depth.
fn metric_names(dashboard: &Value) -> BTreeSet<String> {
    fn walk(value: &Value, names: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "query" | "definition", Value::String(expr)) => {
                            metric_names_in(expr, names);
                        }
                        _ => walk(value, names),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, names)),
            _ => {}
        }
    }
    let mut names = BTreeSet::new();
    walk(dashboard, &mut names);
    names
}

/// The names a dashboard queries that no component exports.
fn unexported(dashboard: &Value, families: &BTreeMap<String, String>) -> Vec<String> {
    metric_names(dashboard)
        .into_iter()
        .filter(|name| !is_exported(name, families))
        .collect()
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let dashboard = dashboard();
    let families = families(&exposition());
    let missing = unexported(&dashboard, &families);
    assert!(
        missing.is_empty(),
        "{} queries metrics no component exports: {missing:?}\nexported: {:?}",
        dashboard_path().display(),
        families.keys().collect::<Vec<_>>()
    );

    // What a platform team watches must stay on the dashboard.
    let used = metric_names(&dashboard);
    for name in [
        "fluxgate_reconciler_fluxconfig_condition",
        "fluxgate_operator_fluxconfig_condition",
        "fluxgate_reconciler_applied_revision_info",
        "fluxgate_reconciler_last_applied_timestamp_seconds",
        "fluxgate_reconciler_reconcile_errors_total",
        "fluxgate_operator_reconcile_errors_total",
        "fluxgate_operator_reconcile_duration_seconds_bucket",
        "fluxgate_webhook_requests_total",
        "fluxgate_webhook_denials_total",
        "fluxgate_webhook_request_duration_seconds_bucket",
        "fluxgate_webhook_certificate_expiry_timestamp_seconds",
        "fluxgate_operator_leader",
        "fluxgate_operator_teams",
    ] {
        assert!(used.contains(name), "no panel queries {name}");
    }
}

#[test]
fn a_metric_nobody_exports_is_reported() {
    let families = families(&exposition());
    let dashboard = serde_json::json!({
        "panels": [{
            "targets": [
                {"expr": "sum(rate(fluxgate_operator_reconciles_total[5m]))"},
                {"expr": "histogram_quantile(0.99, sum by (le) (rate(fluxgate_webhook_request_duration_seconds_bucket[5m])))"},
                // A typo, a renamed metric, a counter without `_total`, a
                // gauge with a histogram's suffix.
                {"expr": "fluxgate_reconciler_syncs_total + fluxgate_operator_reconciles"},
                {"expr": "max(fluxgate_operator_teams_count) or fluxgate_nobody_exports_this"},
                // Label values are not metric names.
                {"expr": "up{job=\"fluxgate_not_a_metric\"}"},
            ],
        }],
        "templating": {"list": [{"query": {"query": "label_values(fluxgate_reconciler_no_such_metric, namespace)"}}]},
    });
    assert_eq!(
        unexported(&dashboard, &families),
        [
            "fluxgate_nobody_exports_this",
            "fluxgate_operator_reconciles",
            "fluxgate_operator_teams_count",
            "fluxgate_reconciler_no_such_metric",
            "fluxgate_reconciler_syncs_total",
        ]
    );
}

#[test]
fn every_panel_reads_the_datasource_variable() {
    let dashboard = dashboard();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| {
        variables
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    assert_eq!(variable("namespace")["type"], "query");
    assert_eq!(variable("namespace")["datasource"]["uid"], "${datasource}");

    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for panel in panels {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "duplicate id");
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            panel["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{title} says nothing about what it shows"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
}
