//! Resolution: a team's `FluxConfig` plus the layers that apply to its
//! namespace → the effective configuration, or every rule it breaks.
//!
//! This is the one implementation of the FluxConfig rules. The admission
//! webhook, the operator (defence in depth) and `fluxgate validate` call
//! [`resolve`] and print its [`Violations`] as they are.

use fluxgate_crds::{EffectiveConfig, FluxConfig, GitReference, Sourced};
use kube::ResourceExt;

use crate::layering::{Layers, PlatformSettings, Provenanced, Source};
use crate::names::is_dns_label;
use crate::rules::duration::parse_go_duration;
use crate::rules::path::normalize_repo_path;
use crate::rules::pattern::NamePattern;
use crate::rules::url::RepoUrl;
use crate::violation::{Rule, Violation, Violations};

/// Facts about the namespace that no single object holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NamespaceFacts {
    /// FluxConfigs already in the namespace, not counting the one resolved.
    pub other_flux_configs: usize,
}

/// A FluxConfig that passed every platform rule, with its effective
/// configuration. Only [`resolve`] makes one.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    namespace: String,
    name: String,
    effective: EffectiveConfig,
}

impl Resolved {
    /// The FluxConfig's namespace (the team namespace).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The FluxConfig's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The effective configuration, as written to `status.effective`.
    pub fn effective(&self) -> &EffectiveConfig {
        &self.effective
    }
}

fn sourced<T>(p: Provenanced<T>) -> Sourced<T> {
    Sourced {
        value: p.value,
        source: p.source.to_string(),
    }
}

fn from_spec<T>(value: T) -> Provenanced<T> {
    Provenanced {
        value,
        source: Source::Spec,
    }
}

fn builtin<T>(value: T) -> Provenanced<T> {
    Provenanced {
        value,
        source: Source::Builtin,
    }
}

/// Lists patterns for a message, with `{namespace}` filled in so a team
/// reads its own allow-list.
fn list_allowed<'p>(texts: impl Iterator<Item = &'p str>, namespace: &str) -> String {
    let mut seen: Vec<String> = Vec::new();
    for text in texts {
        let filled = text.replace("{namespace}", namespace);
        if !seen.contains(&filled) {
            seen.push(filled);
        }
    }
    if seen.is_empty() {
        "none".to_owned()
    } else {
        seen.join(", ")
    }
}

fn unique_sources<'s>(sources: impl Iterator<Item = &'s str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in sources {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    out
}

/// Resolves a FluxConfig against the layers of its namespace.
///
/// Every rule is checked and every violation reported (not only the first),
/// so a merge request shows all its problems at once.
pub fn resolve(
    fc: &FluxConfig,
    layers: &Layers<'_>,
    facts: NamespaceFacts,
) -> Result<Resolved, Violations> {
    let namespace = layers.namespace().to_owned();
    let name = fc.name_any();
    let spec = &fc.spec;
    let settings: &PlatformSettings = layers.settings();
    let mut violations = Vec::new();
    let pds = layers.names();
    let no_defaults_hint = || {
        if pds.is_empty() {
            format!("none: no PlatformDefaults selects namespace {namespace}")
        } else {
            "none".to_owned()
        }
    };

    // Repository: syntax first, then internal hosts, then the allow-list.
    // Messages quote the URL with any password masked: denials end up in
    // logs, events and CI output.
    let repo_text = || redact_password(&spec.repo);
    let allowed_repos = layers.allowed_repos();
    let repo = match RepoUrl::parse(&spec.repo) {
        Err(err) => {
            violations.push(Violation::from_error(
                Rule::RepoUrl,
                "spec.repo",
                repo_text(),
                &err,
            ));
            None
        }
        Ok(url) => {
            // Only a violation needs these.
            let allowed_text = || {
                if allowed_repos.is_empty() {
                    no_defaults_hint()
                } else {
                    list_allowed(allowed_repos.iter().map(|l| l.text), &namespace)
                }
            };
            let sources = || unique_sources(allowed_repos.iter().map(|l| l.source));
            if let Some(reason) = url.internal_reason()
                && !allowed_repos
                    .iter()
                    .any(|l| l.pattern.allows_internal_host(&url))
            {
                violations.push(
                    Violation::new(
                        Rule::RepoUrl,
                        "spec.repo",
                        repo_text(),
                        format!(
                            "points to a {reason} address, which only a pattern naming that exact host can allow"
                        ),
                    )
                    .sources(sources())
                    .allowed(allowed_text()),
                );
                None
            } else if !allowed_repos
                .iter()
                .any(|l| l.pattern.matches(&url, &namespace))
            {
                violations.push(
                    Violation::new(
                        Rule::RepoNotAllowed,
                        "spec.repo",
                        repo_text(),
                        format!("is not allowed for namespace {namespace}"),
                    )
                    .sources(sources())
                    .allowed(allowed_text()),
                );
                None
            } else {
                Some(url)
            }
        }
    };

    // Git reference.
    let git_ref = match &spec.git_ref {
        Some(r) => {
            violations.extend(crate::layering::check_git_ref("spec.ref", r));
            from_spec(r.clone())
        }
        None => layers
            .scalar(|s| s.defaults.as_ref()?.git_ref.clone())
            .unwrap_or_else(|| builtin(GitReference::branch(PlatformSettings::DEFAULT_BRANCH))),
    };

    // Path in the repository.
    let path = match &spec.path {
        Some(p) => match normalize_repo_path(p) {
            Ok(normalised) => from_spec(normalised),
            Err(err) => {
                violations.push(Violation::from_error(Rule::Path, "spec.path", p, &err));
                from_spec(p.clone())
            }
        },
        None => layers
            .scalar(|s| {
                let p = s.defaults.as_ref()?.path.as_deref()?;
                normalize_repo_path(p).ok()
            })
            .unwrap_or_else(|| builtin(PlatformSettings::DEFAULT_PATH.to_owned())),
    };

    // Target namespace: syntax, protection, allow-list.
    let target_namespace = match &spec.target_namespace {
        Some(t) => from_spec(t.clone()),
        None => builtin(namespace.clone()),
    };
    let mut allowed_ns = layers.allowed_target_namespaces();
    let own_namespace_pattern = NamePattern::namespace(PlatformSettings::OWN_NAMESPACE);
    let builtin_own: Vec<NamePattern> = if allowed_ns.is_empty() {
        own_namespace_pattern.into_iter().collect()
    } else {
        Vec::new()
    };
    let allowed_ns_texts: Vec<&str> = if allowed_ns.is_empty() {
        vec![PlatformSettings::OWN_NAMESPACE]
    } else {
        allowed_ns.iter().map(|l| l.text).collect()
    };
    let target = target_namespace.value.as_str();
    if !is_dns_label(target) {
        violations.push(
            Violation::new(
                Rule::TargetNamespace,
                "spec.targetNamespace",
                target,
                "is not a valid namespace name",
            )
            .allowed("lowercase letters, digits and '-', at most 63 characters"),
        );
    } else if let Some(by) = protected_by(target, layers) {
        violations.push(
            Violation::new(
                Rule::TargetNamespace,
                "spec.targetNamespace",
                target,
                format!("is a protected namespace ({by})"),
            )
            .allowed(list_allowed(allowed_ns_texts.iter().copied(), &namespace)),
        );
    } else if !allowed_ns
        .iter()
        .any(|l| l.pattern.matches(target, &namespace))
        && !builtin_own.iter().any(|p| p.matches(target, &namespace))
    {
        violations.push(
            Violation::new(
                Rule::TargetNamespace,
                "spec.targetNamespace",
                target,
                format!("is not allowed for namespace {namespace}"),
            )
            .sources(unique_sources(allowed_ns.iter().map(|l| l.source)))
            .allowed(list_allowed(allowed_ns_texts.iter().copied(), &namespace)),
        );
    }
    let allowed_namespaces = if allowed_ns.is_empty() {
        builtin(vec![namespace.clone()])
    } else {
        let sources = unique_sources(allowed_ns.iter().map(|l| l.source));
        let mut filled: Vec<String> = allowed_ns
            .drain(..)
            .map(|l| l.text.replace("{namespace}", &namespace))
            .collect();
        filled.dedup();
        Provenanced {
            value: filled,
            source: match sources.as_slice() {
                [one] => Source::PlatformDefaults(one.clone()),
                _ => Source::PlatformDefaults(sources.join(",")),
            },
        }
    };

    // Interval, within the limits of the highest-priority object setting them.
    let interval = match &spec.interval {
        Some(i) => from_spec(i.clone()),
        None => layers
            .scalar(|s| s.defaults.as_ref()?.interval.clone())
            .unwrap_or_else(|| builtin(PlatformSettings::DEFAULT_INTERVAL.to_owned())),
    };
    check_interval(&interval, layers, &mut violations);

    // Suspend.
    let suspend = match spec.suspend {
        Some(s) => from_spec(s),
        None => builtin(false),
    };

    // Cluster id.
    let cluster = spec.cluster.as_ref().map(|c| from_spec(c.clone()));
    if let Some(c) = &spec.cluster {
        let clusters = layers.clusters();
        if !clusters.iter().any(|l| l.pattern == c) {
            violations.push(
                Violation::new(
                    Rule::Cluster,
                    "spec.cluster",
                    c,
                    "is not one of the platform's clusters",
                )
                .sources(unique_sources(clusters.iter().map(|l| l.source)))
                .allowed(if clusters.is_empty() {
                    no_defaults_hint()
                } else {
                    list_allowed(clusters.iter().map(|l| l.text), &namespace)
                }),
            );
        }
    }

    // Number of FluxConfigs in the namespace.
    if let Some(max) = layers.scalar(|s| s.limits.as_ref()?.max_flux_configs_per_namespace) {
        let total = facts.other_flux_configs.saturating_add(1);
        if i64::try_from(total).unwrap_or(i64::MAX) > i64::from(max.value) {
            violations.push(
                Violation::new(
                    Rule::TooManyFluxConfigs,
                    "metadata.name",
                    &name,
                    format!(
                        "would be FluxConfig number {total} in namespace {namespace}, over the platform's limit"
                    ),
                )
                .sources([source_name(&max.source)])
                .allowed(format!("at most {} per namespace", max.value)),
            );
        }
    }

    // Reconciler settings: platform values only, checked against the
    // union of allowed images.
    let image = layers
        .scalar(|s| s.defaults.as_ref()?.reconciler.as_ref()?.image.clone())
        .unwrap_or_else(|| builtin(settings.default_reconciler_image.clone()));
    let images = layers.allowed_images();
    if !images.is_empty()
        && !images
            .iter()
            .any(|l| l.pattern.matches(&image.value, &namespace))
    {
        violations.push(
            Violation::new(
                Rule::Image,
                "reconciler image",
                &image.value,
                format!(
                    "(from {}) is not allowed for namespace {namespace}; the platform team must fix its defaults",
                    image.source
                ),
            )
            .sources(unique_sources(images.iter().map(|l| l.source)))
            .allowed(list_allowed(images.iter().map(|l| l.text), &namespace)),
        );
    }
    let resources = layers.scalar(|s| s.defaults.as_ref()?.reconciler.as_ref()?.resources.clone());
    let cluster_role = layers
        .scalar(|s| {
            s.defaults
                .as_ref()?
                .reconciler
                .as_ref()?
                .cluster_role
                .clone()
        })
        .unwrap_or_else(|| builtin(settings.default_cluster_role.clone()));

    // Credentials: the first assignment whose pattern matches the repository.
    let credentials = repo.as_ref().and_then(|url| {
        layers
            .credentials()
            .into_iter()
            .find(|l| l.pattern.pattern.matches(url, &namespace))
            .map(|l| Provenanced {
                value: l.pattern.secret.clone(),
                source: Source::PlatformDefaults(l.source.to_owned()),
            })
    });

    if !violations.is_empty() {
        return Err(Violations {
            object: Violations::object_name("FluxConfig", Some(&namespace), &name),
            violations,
        });
    }
    let repo_value = repo.map(|u| u.to_string()).unwrap_or_default();
    Ok(Resolved {
        namespace,
        name,
        effective: EffectiveConfig {
            repo: Sourced {
                value: repo_value,
                source: Source::Spec.to_string(),
            },
            git_ref: sourced(git_ref),
            path: sourced(path),
            target_namespace: sourced(target_namespace),
            allowed_namespaces: sourced(allowed_namespaces),
            interval: sourced(interval),
            suspend: sourced(suspend),
            cluster: cluster.map(sourced),
            credentials_secret: credentials.map(sourced),
            reconciler_image: sourced(image),
            reconciler_resources: resources.map(sourced),
            reconciler_cluster_role: sourced(cluster_role),
            reconciler_max_files: layers.scalar(|s| s.limits.as_ref()?.max_files).map(sourced),
            reconciler_max_repo_bytes: layers
                .scalar(|s| s.limits.as_ref()?.max_repo_bytes)
                .map(sourced),
        },
    })
}

/// Masks the password in `scheme://user:password@host/...`, and a user
/// name that is a token (`https://ghp_…@github.com/…`, the way Git hosts
/// hand out HTTPS access).
fn redact_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None if looks_like_token(userinfo) => format!("{scheme}://***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// Whether a URL's user name is a credential rather than a login: a known
/// token prefix (GitHub, GitLab), or a long run of token characters with
/// no dot (a host name mistaken for a user, as in
/// `https://git.corp.example@evil.example/`, stays visible).
fn looks_like_token(user: &str) -> bool {
    const PREFIXES: &[&str] = &[
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "glpat-",
        "gldt-",
        "glptt-",
    ];
    PREFIXES.iter().any(|p| user.starts_with(p))
        || (user.len() >= 20
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
}

fn source_name(source: &Source) -> String {
    match source {
        Source::PlatformDefaults(name) => name.clone(),
        other => other.to_string(),
    }
}

/// Why a namespace is protected, if it is: fluxgate's own namespace, a
/// built-in pattern, or a PlatformDefaults' `protectedNamespaces`.
pub fn protected_by(target: &str, layers: &Layers<'_>) -> Option<String> {
    let settings = layers.settings();
    if target == settings.platform_namespace {
        return Some("the platform's own namespace".to_owned());
    }
    if let Some((_, by)) = layers
        .installation_protected()
        .iter()
        .find(|(pattern, _)| pattern.matches(target, layers.namespace()))
    {
        return Some(by.clone());
    }
    layers
        .protected_namespaces()
        .into_iter()
        .find(|l| l.pattern.matches(target, layers.namespace()))
        .map(|l| format!("pattern {} in PlatformDefaults {:?}", l.text, l.source))
}

fn check_interval(
    interval: &Provenanced<String>,
    layers: &Layers<'_>,
    violations: &mut Vec<Violation>,
) {
    let field = match interval.source {
        Source::Spec => "spec.interval".to_owned(),
        ref other => format!("interval (from {other})"),
    };
    let value = match parse_go_duration(&interval.value) {
        Ok(v) => v,
        Err(err) => {
            violations.push(Violation::from_error(
                Rule::Interval,
                field,
                &interval.value,
                &err,
            ));
            return;
        }
    };
    let min = layers.scalar(|s| s.limits.as_ref()?.min_interval.clone());
    let max = layers.scalar(|s| s.limits.as_ref()?.max_interval.clone());
    fn parsed(
        b: &Option<Provenanced<String>>,
    ) -> Option<(std::time::Duration, &Provenanced<String>)> {
        b.as_ref()
            .and_then(|p| parse_go_duration(&p.value).ok().map(|d| (d, p)))
    }
    let bounds = match (&min, &max) {
        (Some(min), Some(max)) => format!("between {} and {}", min.value, max.value),
        (Some(min), None) => format!("at least {}", min.value),
        (None, Some(max)) => format!("at most {}", max.value),
        (None, None) => String::new(),
    };
    if let Some((min_d, min_p)) = parsed(&min)
        && value < min_d
    {
        violations.push(
            Violation::new(
                Rule::Interval,
                field.clone(),
                &interval.value,
                "is shorter than the platform's minimum",
            )
            .sources([source_name(&min_p.source)])
            .allowed(bounds.clone()),
        );
    }
    if let Some((max_d, max_p)) = parsed(&max)
        && value > max_d
    {
        violations.push(
            Violation::new(
                Rule::Interval,
                field,
                &interval.value,
                "is longer than the platform's maximum",
            )
            .sources([source_name(&max_p.source)])
            .allowed(bounds),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::redact_password;

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(
            redact_password("https://deploy:hunter2@git.corp.example/a/b.git"),
            "https://deploy:***@git.corp.example/a/b.git"
        );
        assert_eq!(redact_password("ssh://git@host/x"), "ssh://git@host/x");
        assert_eq!(
            redact_password("https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/o/r.git"),
            "https://***@github.com/o/r.git"
        );
        assert_eq!(
            redact_password("https://glpat-abc@gitlab.com/o/r.git"),
            "https://***@gitlab.com/o/r.git"
        );
        assert_eq!(
            redact_password("https://a1B2c3D4e5F6g7H8i9J0k1L2@git.corp.example/x"),
            "https://***@git.corp.example/x"
        );
        assert_eq!(
            redact_password("https://git.corp.example@evil.example/x"),
            "https://git.corp.example@evil.example/x"
        );
        assert_eq!(
            redact_password("https://deploy@host/x"),
            "https://deploy@host/x"
        );
        assert_eq!(redact_password("https://host/a@b:c"), "https://host/a@b:c");
        assert_eq!(redact_password("no scheme"), "no scheme");
    }
}
