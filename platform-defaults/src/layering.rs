//! Layering: which `PlatformDefaults` apply to a namespace, and what they say
//! together.
//!
//! Every object whose `namespaceSelector` matches applies. They are ordered
//! by `priority` (highest first, ties by name, so the order never depends on
//! list order); each scalar default comes from the first object that sets it;
//! allow-lists are the union. Every value keeps the name of the object that
//! supplied it, for `status.effective` and `fluxgate render`.

use std::collections::BTreeMap;

use fluxgate_crds::{GitReference, PlatformDefaults, PlatformDefaultsSpec};
use kube::ResourceExt;

use crate::rules::duration::parse_go_duration;
use crate::rules::gitref::{check_branch_or_tag, check_commit};
use crate::rules::path::normalize_repo_path;
use crate::rules::pattern::{NamePattern, RepoPattern};
use crate::selector::Selector;
use crate::violation::{Rule, Violation, Violations, error_chain};

/// Where a value came from, rendered as in `status.effective.*.source`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The FluxConfig's own spec.
    Spec,
    /// A PlatformDefaults object, by name.
    PlatformDefaults(String),
    /// fluxgate's built-in default.
    Builtin,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Spec => f.write_str("spec"),
            Source::PlatformDefaults(name) => write!(f, "PlatformDefaults/{name}"),
            Source::Builtin => f.write_str("builtin"),
        }
    }
}

/// Settings of the platform itself, from the operator's and webhook's flags
/// rather than from any object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSettings {
    /// Namespace fluxgate runs in; never a target, and where credential
    /// Secrets live.
    pub platform_namespace: String,
    /// Reconciler image when no PlatformDefaults sets one.
    pub default_reconciler_image: String,
    /// ClusterRole bound for the reconciler when no PlatformDefaults sets one.
    pub default_cluster_role: String,
    /// Namespace patterns no team may target, besides the built-in ones and
    /// those of PlatformDefaults (`--protected-namespace`, the chart's
    /// `protectedNamespaces`). Checked by [`PlatformSettings::check`].
    pub protected_namespaces: Vec<String>,
}

impl PlatformSettings {
    /// Built-in default for `ref`.
    pub const DEFAULT_BRANCH: &'static str = "main";
    /// Built-in default for `path`: the repository root.
    pub const DEFAULT_PATH: &'static str = ".";
    /// Built-in default for `interval`.
    pub const DEFAULT_INTERVAL: &'static str = "5m";
    /// Built-in protected namespace patterns, besides the platform namespace.
    pub const PROTECTED: &'static [&'static str] = &["kube-*"];
    /// Built-in target-namespace pattern when no PlatformDefaults allows any:
    /// a team may always target its own namespace.
    pub const OWN_NAMESPACE: &'static str = "{namespace}";
}

impl Default for PlatformSettings {
    fn default() -> Self {
        Self {
            platform_namespace: "fluxgate-system".into(),
            default_reconciler_image: "ghcr.io/fluxgate-dev/reconciler:v0.1.0".into(),
            default_cluster_role: "fluxgate-team-reconciler".into(),
            protected_namespaces: Vec::new(),
        }
    }
}

impl PlatformSettings {
    /// Checks what came from flags, so a typo stops a component at start
    /// instead of protecting nothing: the platform namespace is a DNS label
    /// and every protected-namespace pattern compiles.
    pub fn check(&self) -> Result<(), String> {
        if !crate::names::is_dns_label(&self.platform_namespace) {
            return Err(format!(
                "platform namespace {:?} is not a DNS-1123 label",
                self.platform_namespace
            ));
        }
        for pattern in &self.protected_namespaces {
            if let Err(e) = crate::rules::pattern::NamePattern::namespace(pattern) {
                return Err(format!(
                    "protected namespace pattern {pattern:?} is invalid: {e}; \
                     use a namespace name, `*` within it (team-*), or {{namespace}}"
                ));
            }
        }
        Ok(())
    }
}

/// A pattern with its text as written and the object that listed it,
/// borrowed from the compiled platform (the admission webhook lists them on
/// every request).
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a, P> {
    /// The compiled pattern.
    pub pattern: P,
    /// The pattern as written.
    pub text: &'a str,
    /// The PlatformDefaults that listed it.
    pub source: &'a str,
}

/// A credential assignment from `defaults.credentials`.
#[derive(Debug, Clone)]
pub struct CredentialAssignment {
    /// Repositories it applies to.
    pub pattern: RepoPattern,
    /// Secret in the platform namespace.
    pub secret: String,
}

/// A `PlatformDefaults` whose patterns and selector compiled and whose
/// defaults satisfy its own rules. Only [`compile`] makes one.
#[derive(Debug, Clone)]
pub struct CompiledDefaults {
    name: String,
    priority: i32,
    selector: Selector,
    repos: Vec<RepoPattern>,
    target_namespaces: Vec<NamePattern>,
    images: Vec<NamePattern>,
    protected: Vec<NamePattern>,
    credentials: Vec<CredentialAssignment>,
    spec: PlatformDefaultsSpec,
}

impl CompiledDefaults {
    /// The object's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The object's priority.
    pub fn priority(&self) -> i32 {
        self.priority
    }

    /// The spec as written.
    pub fn spec(&self) -> &PlatformDefaultsSpec {
        &self.spec
    }

    /// Whether the object applies to a namespace with these labels.
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
    }
}

fn compile_list<P, E: std::error::Error>(
    field: &str,
    texts: &[String],
    parse: impl Fn(&str) -> Result<P, E>,
    violations: &mut Vec<Violation>,
) -> Vec<P> {
    texts
        .iter()
        .enumerate()
        .filter_map(|(i, text)| match parse(text) {
            Ok(p) => Some(p),
            Err(err) => {
                violations.push(Violation::new(
                    Rule::Pattern,
                    format!("{field}[{i}]"),
                    text,
                    format!("is not a valid pattern: {}", error_chain(&err)),
                ));
                None
            }
        })
        .collect()
}

/// Checks a `PlatformDefaults` on its own: patterns compile, the selector is
/// valid, and its defaults satisfy its own allow-lists and limits (a default
/// its own rules forbid is an error on the PlatformDefaults, not on every
/// team that inherits it).
pub fn compile(pd: &PlatformDefaults) -> Result<CompiledDefaults, Violations> {
    let name = pd.name_any();
    let spec = &pd.spec;
    let mut violations = Vec::new();

    let selector = match Selector::compile(spec.namespace_selector.as_ref()) {
        Ok(s) => s,
        Err(err) => {
            violations.push(Violation::new(
                Rule::Selector,
                "spec.namespaceSelector",
                "",
                format!("is invalid: {err}"),
            ));
            Selector::default()
        }
    };
    if !(fluxgate_crds::MIN_PRIORITY..=fluxgate_crds::MAX_PRIORITY).contains(&spec.priority) {
        violations.push(
            Violation::new(
                Rule::Schema,
                "spec.priority",
                spec.priority.to_string(),
                "is out of range",
            )
            .allowed(format!(
                "{}..={}",
                fluxgate_crds::MIN_PRIORITY,
                fluxgate_crds::MAX_PRIORITY
            )),
        );
    }

    for (field, list) in [
        ("spec.allowedRepos", &spec.allowed_repos),
        (
            "spec.allowedTargetNamespaces",
            &spec.allowed_target_namespaces,
        ),
        ("spec.allowedImages", &spec.allowed_images),
        ("spec.clusters", &spec.clusters),
        ("spec.protectedNamespaces", &spec.protected_namespaces),
    ] {
        for (i, entry) in list.iter().enumerate() {
            if list[..i].contains(entry) {
                violations.push(
                    Violation::new(
                        Rule::Schema,
                        format!("{field}[{i}]"),
                        entry,
                        "appears twice",
                    )
                    .allowed("each entry once"),
                );
            }
        }
    }

    let repos = compile_list(
        "spec.allowedRepos",
        &spec.allowed_repos,
        RepoPattern::parse,
        &mut violations,
    );
    let target_namespaces = compile_list(
        "spec.allowedTargetNamespaces",
        &spec.allowed_target_namespaces,
        NamePattern::namespace,
        &mut violations,
    );
    let images = compile_list(
        "spec.allowedImages",
        &spec.allowed_images,
        NamePattern::image,
        &mut violations,
    );
    let protected = compile_list(
        "spec.protectedNamespaces",
        &spec.protected_namespaces,
        NamePattern::namespace,
        &mut violations,
    );
    for (i, cluster) in spec.clusters.iter().enumerate() {
        if !crate::names::is_dns_label(cluster) {
            violations.push(
                Violation::new(
                    Rule::Cluster,
                    format!("spec.clusters[{i}]"),
                    cluster,
                    "is not a valid cluster id",
                )
                .allowed("lowercase letters, digits and '-', at most 63 characters"),
            );
        }
    }

    let mut credentials = Vec::new();
    let defaults = spec.defaults.clone().unwrap_or_default();
    for (i, rule) in defaults.credentials.iter().enumerate() {
        match RepoPattern::parse(&rule.repo_pattern) {
            Ok(pattern) => credentials.push(CredentialAssignment {
                pattern,
                secret: rule.secret_ref.name.clone(),
            }),
            Err(err) => violations.push(Violation::new(
                Rule::Pattern,
                format!("spec.defaults.credentials[{i}].repoPattern"),
                &rule.repo_pattern,
                format!("is not a valid pattern: {}", error_chain(&err)),
            )),
        }
        if !crate::names::is_dns_subdomain(&rule.secret_ref.name) {
            violations.push(
                Violation::new(
                    Rule::Schema,
                    format!("spec.defaults.credentials[{i}].secretRef.name"),
                    &rule.secret_ref.name,
                    "is not a valid Secret name",
                )
                .allowed("a DNS subdomain: lowercase letters, digits, '-' and '.'"),
            );
        }
    }

    if let Some(r) = &defaults.git_ref {
        violations.extend(check_git_ref("spec.defaults.ref", r));
    }
    if let Some(path) = &defaults.path
        && let Err(err) = normalize_repo_path(path)
    {
        violations.push(Violation::from_error(
            Rule::Path,
            "spec.defaults.path",
            path,
            &err,
        ));
    }

    let limits = spec.limits.clone().unwrap_or_default();
    let min = parse_interval_field(
        "spec.limits.minInterval",
        limits.min_interval.as_deref(),
        &mut violations,
    );
    let max = parse_interval_field(
        "spec.limits.maxInterval",
        limits.max_interval.as_deref(),
        &mut violations,
    );
    if let (Some((min, min_text)), Some((max, max_text))) = (&min, &max)
        && min > max
    {
        violations.push(
            Violation::new(
                Rule::Interval,
                "spec.limits.minInterval",
                min_text.as_str(),
                format!("is longer than spec.limits.maxInterval {max_text:?}"),
            )
            .allowed(format!("at most {max_text}")),
        );
    }
    if let Some((interval, text)) = parse_interval_field(
        "spec.defaults.interval",
        defaults.interval.as_deref(),
        &mut violations,
    ) {
        if let Some((min, min_text)) = &min
            && interval < *min
        {
            violations.push(
                Violation::new(
                    Rule::Interval,
                    "spec.defaults.interval",
                    text.as_str(),
                    "is shorter than this object's spec.limits.minInterval",
                )
                .allowed(format!("at least {min_text}")),
            );
        }
        if let Some((max, max_text)) = &max
            && interval > *max
        {
            violations.push(
                Violation::new(
                    Rule::Interval,
                    "spec.defaults.interval",
                    text.as_str(),
                    "is longer than this object's spec.limits.maxInterval",
                )
                .allowed(format!("at most {max_text}")),
            );
        }
    }

    let reconciler = defaults.reconciler.clone().unwrap_or_default();
    if let Some(image) = &reconciler.image
        && !images.is_empty()
        && !images.iter().any(|p| p.matches(image, ""))
    {
        violations.push(
            Violation::new(
                Rule::Image,
                "spec.defaults.reconciler.image",
                image,
                "is not allowed by this object's own spec.allowedImages",
            )
            .allowed(spec.allowed_images.join(", ")),
        );
    }
    if let Some(role) = &reconciler.cluster_role
        && !crate::names::is_dns_subdomain(role)
        && !role.contains(':')
    {
        violations.push(Violation::new(
            Rule::Schema,
            "spec.defaults.reconciler.clusterRole",
            role,
            "is not a valid ClusterRole name",
        ));
    }

    if !violations.is_empty() {
        return Err(Violations {
            object: Violations::object_name("PlatformDefaults", None, &name),
            violations,
        });
    }
    Ok(CompiledDefaults {
        name,
        priority: spec.priority,
        selector,
        repos,
        target_namespaces,
        images,
        protected,
        credentials,
        spec: spec.clone(),
    })
}

fn parse_interval_field(
    field: &str,
    text: Option<&str>,
    violations: &mut Vec<Violation>,
) -> Option<(std::time::Duration, String)> {
    let text = text?;
    match parse_go_duration(text) {
        Ok(d) => Some((d, text.to_owned())),
        Err(err) => {
            violations.push(Violation::from_error(Rule::Interval, field, text, &err));
            None
        }
    }
}

/// `{branch: main, tag: v1}`: a reference as a reader would write it.
fn describe_ref(r: &GitReference) -> String {
    let parts: Vec<String> = [
        ("branch", &r.branch),
        ("tag", &r.tag),
        ("commit", &r.commit),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {v}")))
    .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Checks a Git reference: exactly one of branch, tag, commit, each valid.
pub(crate) fn check_git_ref(field: &str, r: &GitReference) -> Vec<Violation> {
    let mut violations = Vec::new();
    if !r.is_exactly_one() {
        violations.push(
            Violation::new(
                Rule::GitRef,
                field,
                describe_ref(r),
                "must set exactly one of branch, tag or commit",
            )
            .allowed("{branch: main}, {tag: v1.0.0} or {commit: <40 or 64 hex digits>}"),
        );
        return violations;
    }
    let (sub, value, result) = match (&r.branch, &r.tag, &r.commit) {
        (Some(b), _, _) => ("branch", b, check_branch_or_tag(b)),
        (_, Some(t), _) => ("tag", t, check_branch_or_tag(t)),
        (_, _, Some(c)) => ("commit", c, check_commit(c)),
        _ => return violations,
    };
    if let Err(err) = result {
        violations.push(Violation::from_error(
            Rule::GitRef,
            format!("{field}.{sub}"),
            value,
            &err,
        ));
    }
    violations
}

/// Every valid PlatformDefaults in the cluster (or in a platform repository
/// checkout), ordered for layering, plus the rejected ones with their
/// violations.
#[derive(Debug, Clone)]
pub struct Platform {
    settings: PlatformSettings,
    /// The built-in protected namespace patterns and the installation's,
    /// compiled once, each with how a message names it.
    protected: Vec<(NamePattern, String)>,
    defaults: Vec<CompiledDefaults>,
    rejected: Vec<Violations>,
}

impl Platform {
    /// Compiles every PlatformDefaults. Invalid ones are left out of
    /// layering (and listed by [`Platform::rejected`]) so that one bad object
    /// cannot change what the valid ones say.
    pub fn new<'a>(
        settings: PlatformSettings,
        objects: impl IntoIterator<Item = &'a PlatformDefaults>,
    ) -> Self {
        let mut defaults = Vec::new();
        let mut rejected = Vec::new();
        for pd in objects {
            match compile(pd) {
                Ok(c) => defaults.push(c),
                Err(v) => rejected.push(v),
            }
        }
        // Highest priority first; ties by name so the result never depends
        // on watch or file order.
        defaults.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        rejected.sort_by(|a, b| a.object.cmp(&b.object));
        // `PlatformSettings::check` refuses invalid patterns at start, so
        // leaving out one that does not compile cannot hide a protection.
        let builtin = PlatformSettings::PROTECTED
            .iter()
            .map(|text| (*text, format!("built-in pattern {text}")));
        let installation = settings.protected_namespaces.iter().map(|text| {
            (
                text.as_str(),
                format!("protected namespace pattern {text} of the installation"),
            )
        });
        let protected = builtin
            .chain(installation)
            .filter_map(|(text, by)| Some((NamePattern::namespace(text).ok()?, by)))
            .collect();
        Self {
            settings,
            protected,
            defaults,
            rejected,
        }
    }

    /// The platform's own settings.
    pub fn settings(&self) -> &PlatformSettings {
        &self.settings
    }

    /// The PlatformDefaults that failed their own checks.
    pub fn rejected(&self) -> &[Violations] {
        &self.rejected
    }

    /// Every valid PlatformDefaults, in layering order.
    pub fn defaults(&self) -> &[CompiledDefaults] {
        &self.defaults
    }

    /// What applies to the namespace `namespace` with the given labels.
    pub fn layers_for<'a>(
        &'a self,
        namespace: &'a str,
        labels: &BTreeMap<String, String>,
    ) -> Layers<'a> {
        Layers {
            settings: &self.settings,
            protected: &self.protected,
            namespace,
            matched: self.defaults.iter().filter(|d| d.selects(labels)).collect(),
        }
    }
}

/// The PlatformDefaults that apply to one namespace, highest priority first.
#[derive(Debug, Clone)]
pub struct Layers<'a> {
    settings: &'a PlatformSettings,
    protected: &'a [(NamePattern, String)],
    namespace: &'a str,
    matched: Vec<&'a CompiledDefaults>,
}

/// A value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenanced<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

impl<'a> Layers<'a> {
    /// The namespace the layers were computed for.
    pub fn namespace(&self) -> &str {
        self.namespace
    }

    /// The platform settings.
    pub fn settings(&self) -> &PlatformSettings {
        self.settings
    }

    /// The built-in and the installation's protected namespace patterns,
    /// compiled, each with how a message names it.
    pub fn installation_protected(&self) -> &'a [(NamePattern, String)] {
        self.protected
    }

    /// Names of the applicable PlatformDefaults, highest priority first.
    pub fn names(&self) -> Vec<&'a str> {
        self.matched.iter().map(|d| d.name.as_str()).collect()
    }

    /// The first (highest-priority) object that sets a scalar.
    pub fn scalar<T>(
        &self,
        get: impl Fn(&PlatformDefaultsSpec) -> Option<T>,
    ) -> Option<Provenanced<T>> {
        self.matched.iter().find_map(|d| {
            get(&d.spec).map(|value| Provenanced {
                value,
                source: Source::PlatformDefaults(d.name.clone()),
            })
        })
    }

    /// Allowed repository patterns, from every applicable object.
    pub fn allowed_repos(&self) -> Vec<Listed<'a, &'a RepoPattern>> {
        self.matched
            .iter()
            .flat_map(|d| {
                d.repos
                    .iter()
                    .zip(&d.spec.allowed_repos)
                    .map(|(pattern, text)| Listed {
                        pattern,
                        text: text.as_str(),
                        source: d.name.as_str(),
                    })
            })
            .collect()
    }

    /// Allowed target-namespace patterns, from every applicable object.
    pub fn allowed_target_namespaces(&self) -> Vec<Listed<'a, &'a NamePattern>> {
        self.matched
            .iter()
            .flat_map(|d| {
                d.target_namespaces
                    .iter()
                    .zip(&d.spec.allowed_target_namespaces)
                    .map(|(pattern, text)| Listed {
                        pattern,
                        text: text.as_str(),
                        source: d.name.as_str(),
                    })
            })
            .collect()
    }

    /// Allowed image patterns, from every applicable object.
    pub fn allowed_images(&self) -> Vec<Listed<'a, &'a NamePattern>> {
        self.matched
            .iter()
            .flat_map(|d| {
                d.images
                    .iter()
                    .zip(&d.spec.allowed_images)
                    .map(|(pattern, text)| Listed {
                        pattern,
                        text: text.as_str(),
                        source: d.name.as_str(),
                    })
            })
            .collect()
    }

    /// Protected namespace patterns from the applicable objects (the
    /// built-in ones are checked separately).
    pub fn protected_namespaces(&self) -> Vec<Listed<'a, &'a NamePattern>> {
        self.matched
            .iter()
            .flat_map(|d| {
                d.protected
                    .iter()
                    .zip(&d.spec.protected_namespaces)
                    .map(|(pattern, text)| Listed {
                        pattern,
                        text: text.as_str(),
                        source: d.name.as_str(),
                    })
            })
            .collect()
    }

    /// Known cluster ids, from every applicable object.
    pub fn clusters(&self) -> Vec<Listed<'a, &'a str>> {
        self.matched
            .iter()
            .flat_map(|d| {
                d.spec.clusters.iter().map(|c| Listed {
                    pattern: c.as_str(),
                    text: c.as_str(),
                    source: d.name.as_str(),
                })
            })
            .collect()
    }

    /// Credential assignments in priority order, then list order.
    pub fn credentials(&self) -> Vec<Listed<'a, &'a CredentialAssignment>> {
        self.matched
            .iter()
            .flat_map(|d| {
                d.credentials.iter().map(|c| Listed {
                    pattern: c,
                    text: c.secret.as_str(),
                    source: d.name.as_str(),
                })
            })
            .collect()
    }
}
