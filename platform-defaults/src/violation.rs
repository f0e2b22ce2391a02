//! Violations: what the policy core reports when an object breaks a platform
//! rule. One type, one rendering, so the webhook's denial, the operator's
//! `Stalled` message and `fluxgate validate`'s output are the same text.

use std::fmt;

/// Longest value quoted in a message; longer values are cut (a 100 KiB URL
/// must not become a 100 KiB denial).
const MAX_QUOTED: usize = 200;

/// Which rule a violation broke; stable identifiers for metrics, tests and
/// machine-readable output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// The object's shape or a field's syntax (schema-level checks).
    Schema,
    /// The repository URL cannot be used (syntax, scheme, credentials,
    /// internal host).
    RepoUrl,
    /// The repository URL matches no allowed pattern.
    RepoNotAllowed,
    /// The path in the repository is not a safe relative path.
    Path,
    /// The Git reference is not a valid branch, tag or commit.
    GitRef,
    /// The target namespace matches no allowed pattern, or is protected.
    TargetNamespace,
    /// The interval is unparsable or outside the platform's limits.
    Interval,
    /// The namespace holds more FluxConfigs than the platform allows.
    TooManyFluxConfigs,
    /// The cluster id is not among the platform's clusters.
    Cluster,
    /// The reconciler image matches no allowed image pattern.
    Image,
    /// A pattern in a PlatformDefaults does not compile.
    Pattern,
    /// A PlatformDefaults namespace selector is invalid.
    Selector,
    /// The platform's defaults leave a required value unset.
    MissingDefault,
}

impl Rule {
    /// A kebab-case identifier, e.g. `repo-not-allowed`.
    pub fn id(self) -> &'static str {
        match self {
            Rule::Schema => "schema",
            Rule::RepoUrl => "repo-url",
            Rule::RepoNotAllowed => "repo-not-allowed",
            Rule::Path => "path",
            Rule::GitRef => "git-ref",
            Rule::TargetNamespace => "target-namespace",
            Rule::Interval => "interval",
            Rule::TooManyFluxConfigs => "too-many-fluxconfigs",
            Rule::Cluster => "cluster",
            Rule::Image => "image",
            Rule::Pattern => "pattern",
            Rule::Selector => "selector",
            Rule::MissingDefault => "missing-default",
        }
    }
}

/// One broken rule: the field, the value, what is wrong, and what would be
/// allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The rule broken.
    pub rule: Rule,
    /// JSON path of the field, e.g. `spec.repo`.
    pub field: String,
    /// The offending value as written (quoted, and cut when long, in
    /// messages).
    pub value: String,
    /// What is wrong, e.g. `is not allowed for namespace team-a`.
    pub problem: String,
    /// What would be allowed, when that can be said.
    pub allowed: Option<String>,
    /// The PlatformDefaults objects that define the rule.
    pub sources: Vec<String>,
    /// `problem` is a whole sentence from a rule's error (`path "/x" is
    /// absolute; ...`) rather than a predicate (`is not allowed ...`).
    pub sentence: bool,
}

impl Violation {
    /// A violation without `allowed` or sources.
    pub fn new(
        rule: Rule,
        field: impl Into<String>,
        value: impl Into<String>,
        problem: impl Into<String>,
    ) -> Self {
        Self {
            rule,
            field: field.into(),
            value: value.into(),
            problem: problem.into(),
            allowed: None,
            sources: Vec::new(),
            sentence: false,
        }
    }

    /// A violation whose problem is a rule's own error message, which
    /// already says what is allowed.
    pub fn from_error(
        rule: Rule,
        field: impl Into<String>,
        value: impl Into<String>,
        error: &dyn std::error::Error,
    ) -> Self {
        Self {
            sentence: true,
            ..Self::new(rule, field, value, error_chain(error))
        }
    }

    /// Says what would be allowed.
    pub fn allowed(mut self, allowed: impl Into<String>) -> Self {
        self.allowed = Some(allowed.into());
        self
    }

    /// Names the PlatformDefaults objects behind the rule.
    pub fn sources<I, S>(mut self, sources: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.sources = sources.into_iter().map(Into::into).collect();
        self
    }
}

/// An error with its causes, `a: b: c`: rule errors keep their reason in
/// `#[source]`, and a violation message must carry all of it.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Quotes a value for a message, cutting it when long and escaping control
/// characters, so no input can forge lines or flood a message.
pub fn quote(value: &str) -> String {
    let mut cut: String = value.chars().take(MAX_QUOTED).collect();
    if cut.len() < value.len() {
        cut.push_str(&format!("… ({} bytes)", value.len()));
    }
    format!("{cut:?}")
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quoted = quote(&self.value);
        if self.value.is_empty() {
            write!(f, "{} {}", self.field, self.problem)?;
        } else if self.sentence && self.problem.contains(&quoted) {
            write!(f, "{}: {}", self.field, self.problem)?;
        } else if self.sentence {
            write!(f, "{} {quoted}: {}", self.field, self.problem)?;
        } else {
            write!(f, "{} {quoted} {}", self.field, self.problem)?;
        }
        if !self.sources.is_empty() {
            let names: Vec<String> = self.sources.iter().map(|s| format!("{s:?}")).collect();
            write!(f, " (PlatformDefaults {})", names.join(", "))?;
        }
        if let Some(allowed) = &self.allowed {
            write!(f, "; allowed: {allowed}")?;
        }
        Ok(())
    }
}

/// All violations of one object, rendered as
/// `FluxConfig team-a/web: <violation>; <violation>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violations {
    /// `Kind namespace/name` or `Kind name`.
    pub object: String,
    /// The violations, in field order.
    pub violations: Vec<Violation>,
}

impl Violations {
    /// Names an object: `FluxConfig team-a/web` or `PlatformDefaults global`.
    pub fn object_name(kind: &str, namespace: Option<&str>, name: &str) -> String {
        match namespace {
            Some(ns) => format!("{kind} {ns}/{name}"),
            None => format!("{kind} {name}"),
        }
    }

    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for Violations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.object)?;
        for (i, v) in self.violations.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{v}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Violations {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_field_value_sources_and_what_is_allowed() {
        let v = Violation::new(
            Rule::RepoNotAllowed,
            "spec.repo",
            "https://github.com/evil/x.git",
            "is not allowed for namespace team-a",
        )
        .sources(["global", "team-a"])
        .allowed("https://git.corp.example/team-a/*");
        let all = Violations {
            object: Violations::object_name("FluxConfig", Some("team-a"), "web"),
            violations: vec![v],
        };
        assert_eq!(
            all.to_string(),
            r#"FluxConfig team-a/web: spec.repo "https://github.com/evil/x.git" is not allowed for namespace team-a (PlatformDefaults "global", "team-a"); allowed: https://git.corp.example/team-a/*"#
        );
    }

    #[test]
    fn long_and_hostile_values_are_cut_and_escaped() {
        let long = "a".repeat(100 * 1024);
        let q = quote(&long);
        assert!(q.len() < 300, "{}", q.len());
        assert!(q.contains("(102400 bytes)"));
        assert_eq!(quote("a\nb\"c"), r#""a\nb\"c""#);
    }
}
