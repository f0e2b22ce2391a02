//! Label selectors: `PlatformDefaults.spec.namespaceSelector` compiled once
//! and matched against namespace labels, with Kubernetes' semantics (an empty
//! selector selects everything; `matchLabels` and `matchExpressions` are
//! ANDed).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::names::is_dns_subdomain;

/// Why a selector is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// An operator other than In, NotIn, Exists, DoesNotExist.
    #[error(
        "operator {operator:?} for key {key:?} is not supported; allowed: In, NotIn, Exists, DoesNotExist"
    )]
    UnknownOperator {
        /// The key of the expression.
        key: String,
        /// The operator given.
        operator: String,
    },
    /// In/NotIn without values, or Exists/DoesNotExist with values.
    #[error("operator {operator} for key {key:?} {requirement}")]
    Values {
        /// The key of the expression.
        key: String,
        /// The operator given.
        operator: &'static str,
        /// What the operator requires.
        requirement: &'static str,
    },
    /// A key or value that is not a valid label key/value.
    #[error("{what} {value:?} is not a valid label {what}: {why}")]
    Label {
        /// `key` or `value`.
        what: &'static str,
        /// The offending text.
        value: String,
        /// What is allowed.
        why: &'static str,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A validated label selector.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

const KEY_RULE: &str = "an optional DNS subdomain prefix and '/', then up to 63 characters of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric";
const VALUE_RULE: &str = "up to 63 characters of alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric (or empty)";

fn is_label_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            s.len() <= 63
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

fn check_key(key: &str) -> Result<(), SelectorError> {
    let ok = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    };
    if ok {
        Ok(())
    } else {
        Err(SelectorError::Label {
            what: "key",
            value: key.to_owned(),
            why: KEY_RULE,
        })
    }
}

fn check_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(SelectorError::Label {
            what: "value",
            value: value.to_owned(),
            why: VALUE_RULE,
        })
    }
}

impl Selector {
    /// Compiles a selector; `None` (absent) selects everything, like `{}`.
    pub fn compile(selector: Option<&LabelSelector>) -> Result<Self, SelectorError> {
        let Some(selector) = selector else {
            return Ok(Self::default());
        };
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            check_key(key)?;
            check_value(value)?;
            requirements.push(Requirement::In(key.clone(), vec![value.clone()]));
        }
        for expr in selector.match_expressions.iter().flatten() {
            check_key(&expr.key)?;
            let values = expr.values.clone().unwrap_or_default();
            for v in &values {
                check_value(v)?;
            }
            let key = expr.key.clone();
            let requirement = match expr.operator.as_str() {
                "In" | "NotIn" if values.is_empty() => {
                    return Err(SelectorError::Values {
                        key,
                        operator: if expr.operator == "In" { "In" } else { "NotIn" },
                        requirement: "needs at least one value",
                    });
                }
                "Exists" | "DoesNotExist" if !values.is_empty() => {
                    return Err(SelectorError::Values {
                        key,
                        operator: if expr.operator == "Exists" {
                            "Exists"
                        } else {
                            "DoesNotExist"
                        },
                        requirement: "takes no values",
                    });
                }
                "In" => Requirement::In(key, values),
                "NotIn" => Requirement::NotIn(key, values),
                "Exists" => Requirement::Exists(key),
                "DoesNotExist" => Requirement::DoesNotExist(key),
                other => {
                    return Err(SelectorError::UnknownOperator {
                        key,
                        operator: other.to_owned(),
                    });
                }
            };
            requirements.push(requirement);
        }
        Ok(Self { requirements })
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether the selector selects every namespace.
    pub fn selects_everything(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn expr(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).to_owned()).collect()),
        }
    }

    #[test]
    fn absent_and_empty_selectors_select_everything() {
        assert!(Selector::compile(None).unwrap().matches(&labels(&[])));
        let empty = LabelSelector::default();
        assert!(
            Selector::compile(Some(&empty))
                .unwrap()
                .selects_everything()
        );
    }

    #[test]
    fn match_labels_and_expressions_are_anded() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("fluxgate.dev/tenant", "true")])),
            match_expressions: Some(vec![
                expr("tier", "In", &["gold", "silver"]),
                expr("frozen", "DoesNotExist", &[]),
                expr("env", "NotIn", &["sandbox"]),
            ]),
        };
        let sel = Selector::compile(Some(&sel)).unwrap();
        let table = [
            (
                vec![("fluxgate.dev/tenant", "true"), ("tier", "gold")],
                true,
            ),
            (
                vec![
                    ("fluxgate.dev/tenant", "true"),
                    ("tier", "gold"),
                    ("env", "prod"),
                ],
                true,
            ),
            (
                vec![("fluxgate.dev/tenant", "true"), ("tier", "bronze")],
                false,
            ),
            (vec![("tier", "gold")], false),
            (
                vec![
                    ("fluxgate.dev/tenant", "true"),
                    ("tier", "gold"),
                    ("frozen", ""),
                ],
                false,
            ),
            (
                vec![
                    ("fluxgate.dev/tenant", "true"),
                    ("tier", "gold"),
                    ("env", "sandbox"),
                ],
                false,
            ),
        ];
        for (pairs, expected) in table {
            assert_eq!(sel.matches(&labels(&pairs)), expected, "{pairs:?}");
        }
    }

    #[test]
    fn invalid_selectors_say_what_is_allowed() {
        let cases = [
            (
                expr("tier", "Equals", &["x"]),
                "allowed: In, NotIn, Exists, DoesNotExist",
            ),
            (expr("tier", "In", &[]), "needs at least one value"),
            (expr("tier", "Exists", &["x"]), "takes no values"),
            (expr("-tier", "Exists", &[]), "not a valid label key"),
            (
                expr("tier", "In", &["white space"]),
                "not a valid label value",
            ),
        ];
        for (e, msg) in cases {
            let sel = LabelSelector {
                match_expressions: Some(vec![e]),
                ..LabelSelector::default()
            };
            let err = Selector::compile(Some(&sel)).unwrap_err().to_string();
            assert!(err.contains(msg), "{err}");
        }
    }
}
