//! Does a live object already say what we would apply?
//!
//! A server-side apply that changes nothing still costs a request (and shows
//! as a write in the audit log), so the operator compares first: an object
//! needs applying when a field we set is missing or different in the live
//! object. Fields the API server or others add (defaults, status, other
//! managers' fields) do not count.

use serde_json::Value;

/// Whether every field of `desired` is present with the same value in
/// `live`. Lists must match element by element (same length: a list we own
/// is the whole list). Metadata fields that the server rewrites
/// (`managedFields`, `resourceVersion`, ...) are never in a desired object.
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, dv)| {
            l.get(k).is_some_and(|lv| is_subset(dv, lv)) || is_empty(dv) && l.get(k).is_none()
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(dv, lv)| is_subset(dv, lv))
        }
        (Value::Number(d), Value::Number(l)) => d.as_f64() == l.as_f64(),
        _ => desired == live,
    }
}

/// Empty maps and lists in a desired object are omitted by the API server.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::is_subset;

    #[test]
    fn server_added_fields_do_not_count() {
        let desired =
            json!({"metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"replicas": 1}});
        let live = json!({
            "metadata": {"name": "a", "labels": {"x": "1", "other": "2"}, "resourceVersion": "7"},
            "spec": {"replicas": 1, "revisionHistoryLimit": 10},
            "status": {"ready": 1},
        });
        assert!(is_subset(&desired, &live));
    }

    #[test]
    fn changed_missing_or_extra_list_items_count() {
        let desired = json!({"spec": {"replicas": 1, "args": ["a", "b"]}});
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 2, "args": ["a", "b"]}})
        ));
        assert!(!is_subset(&desired, &json!({"spec": {"args": ["a", "b"]}})));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 1, "args": ["a", "b", "c"]}})
        ));
        assert!(!is_subset(
            &desired,
            &json!({"spec": {"replicas": 1, "args": ["a"]}})
        ));
    }

    #[test]
    fn list_items_compare_as_subsets_and_empty_values_may_be_absent() {
        let desired = json!({"containers": [{"name": "r", "env": []}], "volumes": {}});
        let live = json!({"containers": [{"name": "r", "imagePullPolicy": "IfNotPresent"}]});
        assert!(is_subset(&desired, &live));
        assert!(is_subset(&json!({"n": 1}), &json!({"n": 1.0})));
    }
}
