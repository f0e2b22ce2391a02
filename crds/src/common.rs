//! Types and schema helpers shared by `FluxConfig` and `PlatformDefaults`.
//!
//! The regular expressions here serve twice: `validator` checks them in Rust
//! (the CLI and the webhook validate offline), and `schemars` copies the same
//! pattern into the CRD schema so the API server checks it too. They must
//! therefore stay within the syntax both Rust's `regex` and Go's `regexp`
//! accept (no look-around, no back-references).
//!
//! The one exception is [`REPO_URL_RE`]: it is checked in Rust only (see
//! [`repo_url_shape`]), because the API server quotes a value that fails a
//! schema pattern in its error, and a repository URL may carry a password.

use std::sync::LazyLock;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use validator::Validate;

/// Longest repository URL accepted anywhere in the API.
pub const MAX_REPO_URL_LEN: u64 = 2048;
/// Longest path inside a repository.
pub const MAX_PATH_LEN: u64 = 1024;
/// Longest Git branch or tag name.
pub const MAX_REF_NAME_LEN: u64 = 255;
/// Longest pattern in an allow-list.
pub const MAX_PATTERN_LEN: u64 = 512;
/// Most entries in one allow-list.
pub const MAX_LIST_ITEMS: u64 = 256;

/// Builds a regex from a literal pattern.
///
/// Only called with the constant patterns below, all of which are covered by
/// `every_pattern_compiles` in this module's tests, so the panic is
/// unreachable in a built binary.
#[allow(clippy::expect_used)]
fn literal_regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("constant pattern compiles (tested)")
}

/// `http(s)://` or `ssh://` URL without whitespace. Deliberately not a schema
/// pattern; see [`repo_url_shape`].
pub static REPO_URL_RE: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"^(https|http|ssh)://[^\s/?#]+[^\s]*$"));
/// A Go duration as Flux and Kubernetes accept it: `90s`, `5m`, `1h30m`.
pub static DURATION_RE: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"));
/// A DNS-1123 label, as used for namespace names.
pub static DNS_LABEL_RE: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"));
/// A full SHA-1 or SHA-256 commit id, lowercase hex.
pub static COMMIT_RE: LazyLock<Regex> =
    LazyLock::new(|| literal_regex(r"^([0-9a-f]{40}|[0-9a-f]{64})$"));
/// A relative path without control characters; `..` segments and absolute
/// paths are refused by a CEL rule (RE2 cannot express them compactly).
pub static REPO_PATH_RE: LazyLock<Regex> = LazyLock::new(|| literal_regex(r"^[^\x00-\x1f\x7f]*$"));

/// Checks a repository URL against [`REPO_URL_RE`] for `validator`.
///
/// This is a custom check rather than `regex(...)` so that `schemars` puts no
/// `pattern` into the CRD: the API server answers a failed pattern with
/// `Invalid value: "<the whole value>"`, which would echo a password written
/// into the URL back to the client and into audit logs. Scheme, host and
/// whitespace are checked instead by the admission webhook with the core's URL
/// rule, whose messages mask credentials. The error here carries no value.
pub fn repo_url_shape(url: &str) -> Result<(), validator::ValidationError> {
    if REPO_URL_RE.is_match(url) {
        Ok(())
    } else {
        Err(validator::ValidationError::new("repo_url").with_message(
            "must be an https://, http:// or ssh:// URL with a host and no whitespace".into(),
        ))
    }
}

/// A Git reference: exactly one of `branch`, `tag` or `commit`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema, Validate)]
#[x_kube(validation = Rule::new("[has(self.branch), has(self.tag), has(self.commit)].filter(x, x).size() == 1").message("exactly one of branch, tag or commit must be set"))]
#[serde(rename_all = "camelCase")]
pub struct GitReference {
    /// Branch to follow, e.g. `main`. The reconciler applies the branch's
    /// newest commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = MAX_REF_NAME_LEN))]
    pub branch: Option<String>,

    /// Tag to apply, e.g. `v1.2.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(min = 1, max = MAX_REF_NAME_LEN))]
    pub tag: Option<String>,

    /// Full commit SHA to pin to (40 hex digits, or 64 for SHA-256
    /// repositories).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[validate(length(max = 64), regex(path = *COMMIT_RE))]
    pub commit: Option<String>,
}

impl GitReference {
    /// A reference to a branch.
    pub fn branch(name: impl Into<String>) -> Self {
        Self {
            branch: Some(name.into()),
            ..Self::default()
        }
    }

    /// Whether exactly one of branch, tag and commit is set, which the CRD
    /// enforces with a CEL rule; offline callers check it with this.
    pub fn is_exactly_one(&self) -> bool {
        [
            self.branch.is_some(),
            self.tag.is_some(),
            self.commit.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count()
            == 1
    }
}

impl std::fmt::Display for GitReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.branch, &self.tag, &self.commit) {
            (Some(b), None, None) => write!(f, "branch {b}"),
            (None, Some(t), None) => write!(f, "tag {t}"),
            (None, None, Some(c)) => write!(f, "commit {c}"),
            _ => f.write_str("invalid reference (exactly one of branch, tag, commit)"),
        }
    }
}

/// A reference to a Secret by name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Validate)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[validate(length(min = 1, max = 253))]
    pub name: String,
}

/// A reference to an object, as recorded in status inventories.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// API version of the object, e.g. `rbac.authorization.k8s.io/v1`.
    pub api_version: String,
    /// Kind of the object, e.g. `RoleBinding`.
    pub kind: String,
    /// Namespace of the object; empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the object.
    pub name: String,
}

/// Schema for a `conditions` list: a list-map keyed by `type`, so that several
/// field managers (operator and reconciler) can each own their own
/// conditions under server-side apply, and `kubectl wait --for=condition=X`
/// works.
pub(crate) fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema.insert("maxItems".into(), 16.into());
    schema
}

/// Schema for a list of unique strings (a set under server-side apply).
pub(crate) fn string_set_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = generator.subschema_for::<Vec<String>>();
    schema.insert("x-kubernetes-list-type".into(), "set".into());
    schema.insert("maxItems".into(), MAX_LIST_ITEMS.into());
    if let Some(items) = schema.get_mut("items").and_then(|i| i.as_object_mut()) {
        items.insert("maxLength".into(), MAX_PATTERN_LEN.into());
        items.insert("minLength".into(), 1.into());
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        for re in [
            &REPO_URL_RE,
            &DURATION_RE,
            &DNS_LABEL_RE,
            &COMMIT_RE,
            &REPO_PATH_RE,
        ] {
            assert!(!re.as_str().is_empty());
        }
    }

    #[test]
    fn duration_pattern_accepts_go_durations() {
        for ok in ["1s", "90s", "5m", "1h30m", "1.5h", "500ms"] {
            assert!(DURATION_RE.is_match(ok), "{ok}");
        }
        for bad in ["", "5", "5 m", "-5m", "5d", "m5", "1h 30m"] {
            assert!(!DURATION_RE.is_match(bad), "{bad}");
        }
    }

    #[test]
    fn repo_url_pattern_wants_a_network_scheme_and_host() {
        for ok in [
            "https://git.corp.example/team-a/app.git",
            "ssh://git@git.corp.example/team-a/app.git",
            "http://git.local:8080/x",
        ] {
            assert!(REPO_URL_RE.is_match(ok), "{ok}");
        }
        for bad in [
            "file:///etc",
            "git.corp.example/x",
            "https://",
            "https:///path",
            "https://host/with space",
            "git@git.corp.example:team-a/app.git",
        ] {
            assert!(!REPO_URL_RE.is_match(bad), "{bad}");
            let err = repo_url_shape(bad).unwrap_err();
            assert!(
                err.params.is_empty(),
                "the error must not carry the value: {err:?}"
            );
        }
        assert!(repo_url_shape("https://git.corp.example/x").is_ok());
    }

    #[test]
    fn git_reference_requires_exactly_one() {
        assert!(GitReference::branch("main").is_exactly_one());
        assert!(!GitReference::default().is_exactly_one());
        let both = GitReference {
            branch: Some("main".into()),
            tag: Some("v1".into()),
            commit: None,
        };
        assert!(!both.is_exactly_one());
        assert_eq!(GitReference::branch("main").to_string(), "branch main");
    }

    #[test]
    fn commit_must_be_a_full_sha() {
        let short = GitReference {
            commit: Some("abc123".into()),
            ..GitReference::default()
        };
        assert!(short.validate().is_err());
        let full = GitReference {
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            ..GitReference::default()
        };
        assert!(full.validate().is_ok());
    }
}
