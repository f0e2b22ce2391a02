//! Reading an `AdmissionReview` body: only the parts [`review`](crate::review())
//! reads, borrowed from the body where JSON allows.
//!
//! kube's `AdmissionReview<DynamicObject>` reads everything, and reads it
//! twice: its `#[serde(flatten)]` type fields make serde buffer the whole
//! body into an intermediate tree first, and a `DynamicObject` then keeps
//! every field of the object (`managedFields`, the last-applied annotation,
//! `status`) as a JSON tree. For a typical 3 KiB review that was most of a
//! request's CPU (BENCHMARKS.md). The types here name the few fields a
//! review needs; serde skips the rest without building them. `serde_json`
//! skips iteratively, so an object nested deeper than its reader's limit in
//! a field nobody reads, such as `managedFields`, costs nothing and is
//! judged on its `spec`. `spec` itself is kept as the raw JSON text and read
//! into its type once, by the review.
//!
//! What is kept: the review's `apiVersion` and `kind` (echoed in the
//! answer), and of the request `uid`, `kind`, `subResource`, `name`,
//! `namespace`, `operation`, and of `object` and `oldObject`
//! `metadata.name`, `metadata.generateName`, `metadata.namespace` and
//! `spec`. A kept field that is present must have its type: a malformed one
//! fails the read.

use std::borrow::Cow;

use kube::core::TypeMeta;
use kube::core::admission::{AdmissionResponse, Operation};
use serde::Deserialize;
use serde_json::value::RawValue;

/// The body as the API server sends it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Review<'a> {
    #[serde(borrow)]
    api_version: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    request: Option<Request<'a>>,
}

/// An admission request, as much of it as a review reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request<'a> {
    /// The review's own `apiVersion` and `kind`, for the answer (the API
    /// server wants the version it sent).
    #[serde(skip)]
    pub types: TypeMeta,
    /// Identifies the request; the answer must carry it back.
    #[serde(borrow)]
    pub uid: Cow<'a, str>,
    /// The kind of the object under review.
    #[serde(borrow)]
    pub kind: Kind<'a>,
    /// `status`, `scale`, …, when a subresource is written.
    #[serde(default, borrow)]
    pub sub_resource: Option<Cow<'a, str>>,
    /// The object's name (empty on a create with `generateName`).
    #[serde(default, borrow)]
    pub name: Cow<'a, str>,
    /// The object's namespace (absent for cluster-scoped kinds).
    #[serde(default, borrow)]
    pub namespace: Option<Cow<'a, str>>,
    /// CREATE, UPDATE, DELETE or CONNECT.
    pub operation: Operation,
    /// The object as it would be stored.
    #[serde(default, borrow)]
    pub object: Option<Object<'a>>,
    /// The stored object an UPDATE replaces.
    #[serde(default, borrow)]
    pub old_object: Option<Object<'a>>,
}

/// Group, version and kind of the object under review.
#[derive(Debug, Deserialize)]
pub struct Kind<'a> {
    /// The API group (empty for the core group).
    #[serde(default, borrow)]
    pub group: Cow<'a, str>,
    /// The API version.
    #[serde(borrow)]
    pub version: Cow<'a, str>,
    /// The kind.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
}

/// An object under review: its identity and its `spec` as JSON text.
#[derive(Debug, Deserialize)]
pub struct Object<'a> {
    /// Name and namespace.
    #[serde(default, borrow)]
    pub metadata: Metadata<'a>,
    /// `spec`, unparsed.
    #[serde(default, borrow)]
    pub spec: Option<&'a RawValue>,
}

/// The metadata a review reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata<'a> {
    /// `metadata.name`.
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
    /// `metadata.generateName`.
    #[serde(default, borrow)]
    pub generate_name: Option<Cow<'a, str>>,
    /// `metadata.namespace`.
    #[serde(default, borrow)]
    pub namespace: Option<Cow<'a, str>>,
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

/// Reads an `AdmissionReview` body into the request a review decides,
/// keeping only what it reads (see the module documentation).
pub fn read_request(body: &[u8]) -> Result<Request<'_>, ReadError> {
    let review: Review<'_> = serde_json::from_slice(body)?;
    let mut request = review.request.ok_or(ReadError::NoRequest)?;
    request.types = TypeMeta {
        api_version: review.api_version.into_owned(),
        kind: review.kind.into_owned(),
    };
    Ok(request)
}

impl Request<'_> {
    /// An answer to this request that allows it, to be refined.
    pub fn allow(&self) -> AdmissionResponse {
        // `AdmissionResponse` is non-exhaustive: start from its one public
        // constructor that needs no kube request, then make it an allow
        // for this request.
        let mut response = AdmissionResponse::invalid("");
        response.types = self.types.clone();
        response.uid = self.uid.clone().into_owned();
        response.allowed = true;
        response.result = Default::default();
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::DynamicObject;
    use kube::core::admission::{AdmissionRequest, AdmissionReview};
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
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"a\":1}"},
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
        assert_eq!(lean.kind.group, full.kind.group);
        assert_eq!(lean.kind.version, full.kind.version);
        assert_eq!(lean.kind.kind, full.kind.kind);
        assert_eq!(lean.name, full.name);
        assert_eq!(lean.namespace.as_deref(), full.namespace.as_deref());
        assert_eq!(lean.operation, full.operation);
        for (lean, full) in [
            (lean.object.as_ref(), full.object.as_ref()),
            (lean.old_object.as_ref(), full.old_object.as_ref()),
        ] {
            let (lean, full) = (lean.unwrap(), full.unwrap());
            assert_eq!(lean.metadata.name.as_deref(), full.metadata.name.as_deref());
            assert_eq!(
                lean.metadata.namespace.as_deref(),
                full.metadata.namespace.as_deref()
            );
            let spec: serde_json::Value = serde_json::from_str(lean.spec.unwrap().get()).unwrap();
            assert_eq!(Some(&spec), full.data.get("spec"));
        }
        let allow = lean.allow();
        assert_eq!(allow, AdmissionResponse::from(&full));
    }

    #[test]
    fn skips_unread_fields_nested_past_the_json_depth_limit() {
        let mut deep = String::from("1");
        for _ in 0..10_000 {
            deep = format!("{{\"f:a\":{deep}}}");
        }
        let raw = String::from_utf8(body(json!({
            "metadata": {"name": "web", "managedFields": "DEEP"},
            "spec": {"repo": "https://x/y"},
        })))
        .unwrap();
        let raw = raw.replace("\"DEEP\"", &format!("[{{\"fieldsV1\":{deep}}}]"));
        let request = read_request(raw.as_bytes()).unwrap();
        assert_eq!(
            request.object.unwrap().spec.unwrap().get(),
            r#"{"repo":"https://x/y"}"#
        );
    }

    #[test]
    fn escaped_strings_are_read_not_borrowed() {
        let raw = String::from_utf8(body(json!({"metadata": {"name": "w\u{e9}b\"x"}}))).unwrap();
        let raw = raw.replace("w\u{e9}b", "w\\u00e9b");
        let request = read_request(raw.as_bytes()).unwrap();
        assert_eq!(
            request.object.unwrap().metadata.name.as_deref(),
            Some("w\u{e9}b\"x")
        );
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
