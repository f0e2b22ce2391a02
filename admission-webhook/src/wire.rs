//! Reading an `AdmissionReview` body: only the parts [`review`](crate::review())
//! reads, into the same [`AdmissionRequest<DynamicObject>`] kube's own types
//! would give.
//!
//! kube's `AdmissionReview<DynamicObject>` reads everything, and reads it
//! twice: its `#[serde(flatten)]` type fields make serde buffer the whole
//! body into an intermediate tree first, and a `DynamicObject` then keeps
//! every field of the object (`managedFields`, the last-applied annotation,
//! `status`) as a JSON tree. For a typical 3 KiB review that was most of a
//! request's CPU. The types here name the few fields a review needs; serde
//! skips the rest without building them (`serde_json` skips iteratively, so
//! an object nested deeper than its reader's limit in a field nobody reads,
//! such as `managedFields`, costs nothing and is judged on its `spec`).
//!
//! What is kept: the review's `apiVersion` and `kind` (echoed in the
//! answer), and of the request `uid`, `kind`, `resource`, `subResource`,
//! `name`, `namespace`, `operation`, `dryRun`, and of `object` and
//! `oldObject` `metadata.name`, `metadata.generateName`,
//! `metadata.namespace` and `spec`. A field that is present must still have
//! its type: a malformed kept field fails the read as it did before.

use kube::api::ObjectMeta;
use kube::core::admission::{AdmissionRequest, Operation};
use kube::core::{DynamicObject, GroupVersionKind, GroupVersionResource, TypeMeta};
use serde::Deserialize;

/// The body as the API server sends it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review {
    api_version: String,
    kind: String,
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    kind: GroupVersionKind,
    resource: GroupVersionResource,
    #[serde(default)]
    sub_resource: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    operation: Operation,
    #[serde(default)]
    object: Option<Object>,
    #[serde(default)]
    old_object: Option<Object>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Deserialize)]
struct Object {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Option<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Metadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    generate_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

/// Why a body is not a review this webhook can answer.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The body is not JSON of an `AdmissionReview`'s shape.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// The `AdmissionReview` has no `request`.
    #[error("the AdmissionReview has no request")]
    NoRequest,
}

/// Reads an `AdmissionReview` body into the request [`review`](crate::review())
/// decides, keeping only what it reads (see the module documentation).
pub fn read_request(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, ReadError> {
    let review: Review = serde_json::from_slice(body)?;
    let request = review.request.ok_or(ReadError::NoRequest)?;
    Ok(AdmissionRequest {
        types: TypeMeta {
            api_version: review.api_version,
            kind: review.kind,
        },
        uid: request.uid,
        kind: request.kind,
        resource: request.resource,
        sub_resource: request.sub_resource,
        request_kind: None,
        request_resource: None,
        request_sub_resource: None,
        name: request.name,
        namespace: request.namespace,
        operation: request.operation,
        user_info: Default::default(),
        object: request.object.map(Object::into_dynamic),
        old_object: request.old_object.map(Object::into_dynamic),
        dry_run: request.dry_run,
        options: None,
    })
}

impl Object {
    fn into_dynamic(self) -> DynamicObject {
        let mut data = serde_json::Map::new();
        if let Some(spec) = self.spec {
            data.insert("spec".to_owned(), spec);
        }
        DynamicObject {
            types: None,
            metadata: ObjectMeta {
                name: self.metadata.name,
                generate_name: self.metadata.generate_name,
                namespace: self.metadata.namespace,
                ..ObjectMeta::default()
            },
            data: serde_json::Value::Object(data),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;
    use serde_json::json;

    fn body(object: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "0d1c",
                "kind": {"group": "fluxgate.dev", "version": "v1alpha1", "kind": "FluxConfig"},
                "resource": {"group": "fluxgate.dev", "version": "v1alpha1", "resource": "fluxconfigs"},
                "name": "web",
                "namespace": "team-a",
                "operation": "UPDATE",
                "userInfo": {"username": "alice", "groups": ["dev"]},
                "object": object,
                "oldObject": object,
                "dryRun": true,
                "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"},
            },
        }))
        .unwrap()
    }

    #[test]
    fn keeps_what_the_review_reads_as_kube_would() {
        let object = json!({
            "apiVersion": "fluxgate.dev/v1alpha1",
            "kind": "FluxConfig",
            "metadata": {
                "name": "web", "namespace": "team-a", "uid": "9f",
                "labels": {"a": "b"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            },
            "spec": {"repo": "https://git.corp.example/team-a/web.git", "ref": {"tag": "v1"}},
            "status": {"conditions": []},
        });
        let raw = body(object);
        let lean = read_request(&raw).unwrap();
        let full: AdmissionRequest<DynamicObject> =
            serde_json::from_slice::<AdmissionReview<DynamicObject>>(&raw)
                .unwrap()
                .try_into()
                .unwrap();
        assert_eq!(lean.types, full.types);
        assert_eq!(lean.uid, full.uid);
        assert_eq!(lean.kind, full.kind);
        assert_eq!(lean.name, full.name);
        assert_eq!(lean.namespace, full.namespace);
        assert_eq!(lean.operation, full.operation);
        assert!(lean.dry_run);
        for (lean, full) in [
            (lean.object.as_ref(), full.object.as_ref()),
            (lean.old_object.as_ref(), full.old_object.as_ref()),
        ] {
            let (lean, full) = (lean.unwrap(), full.unwrap());
            assert_eq!(lean.metadata.name, full.metadata.name);
            assert_eq!(lean.metadata.namespace, full.metadata.namespace);
            assert_eq!(lean.data.get("spec"), full.data.get("spec"));
            assert!(lean.metadata.managed_fields.is_none());
        }
    }

    #[test]
    fn skips_unread_fields_nested_past_the_json_depth_limit() {
        let mut deep = String::from("1");
        for _ in 0..10_000 {
            deep = format!("{{\"f:a\":{deep}}}");
        }
        let raw = String::from_utf8(body(json!({"metadata": {"name": "web", "managedFields": "DEEP"}, "spec": {"repo": "https://x/y"}}))).unwrap();
        let raw = raw.replace("\"DEEP\"", &format!("[{{\"fieldsV1\":{deep}}}]"));
        let request = read_request(raw.as_bytes()).unwrap();
        assert_eq!(request.object.unwrap().data["spec"]["repo"], "https://x/y");
    }

    #[test]
    fn malformed_kept_fields_and_missing_requests_are_errors() {
        let no_request = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#;
        assert!(matches!(
            read_request(no_request),
            Err(ReadError::NoRequest)
        ));
        let bad_kind = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":7}}"#;
        assert!(matches!(read_request(bad_kind), Err(ReadError::Json(_))));
        let bad_meta = String::from_utf8(body(json!({"metadata": 5}))).unwrap();
        assert!(matches!(
            read_request(bad_meta.as_bytes()),
            Err(ReadError::Json(_))
        ));
        assert!(read_request(b"[1,2,3]").is_err());
    }
}
