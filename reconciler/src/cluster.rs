//! Cluster mode: the platform config repository, synced by a platform-level
//! instance of the reconciler (`fluxgate-reconciler platform`).
//!
//! The instance is configured by one FluxConfig in the platform namespace
//! (`fluxgate-system/platform` by default), written by the platform team.
//! No operator resolves it (the operator and the webhook skip the platform
//! namespace), so [`read_spec`] reads its `spec` directly, with the core's
//! syntax rules for the URL, the reference and the path, and the core's
//! built-in defaults for what is left out. There are no allow-lists to
//! check: the platform team wrote it, and the instance's ClusterRole is
//! what limits it. Pure: no IO.

use std::time::Duration;

use fluxgate_crds::{FluxConfigSpec, GitReference};
use fluxgate_platform_defaults::PlatformSettings;
use fluxgate_platform_defaults::rules::{
    RepoUrl, check_branch_or_tag, check_commit, normalize_repo_path, parse_go_duration,
};

use crate::config::is_plain_name;
use crate::error::SyncError;
use crate::git::RefName;
use crate::manifests::KindRef;

/// How a platform instance differs from a team reconciler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Kinds the repository may hold besides
    /// [`KindRef::platform_defaults`].
    pub extra_kinds: Vec<KindRef>,
    /// The credentials Secret (a directory under the credentials
    /// directory), if the repository needs one.
    pub credentials_secret: Option<String>,
}

/// What the platform FluxConfig's `spec` asks for, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecConfig {
    /// The normalised repository URL.
    pub repo: String,
    /// The reference.
    pub reference: RefName,
    /// The normalised path (`.` for the root).
    pub path: String,
    /// The interval.
    pub interval: Duration,
}

/// Reads the platform FluxConfig's spec; `Ok(None)` when it is suspended.
/// Every problem is reported at once, as one [`SyncError::Config`] (the
/// instance is `Stalled` until the spec changes).
pub fn read_spec(
    spec: &FluxConfigSpec,
    settings: &Settings,
) -> Result<Option<SpecConfig>, SyncError> {
    // Destructured so that a new field is a decision here, not a silent
    // omission.
    let FluxConfigSpec {
        repo,
        git_ref,
        path,
        target_namespace,
        interval,
        suspend,
        cluster: _,
    } = spec;
    if suspend.unwrap_or(false) {
        return Ok(None);
    }
    let mut problems: Vec<String> = Vec::new();
    // Messages never repeat the URL: it may hold a password.
    let repo = match RepoUrl::parse(repo) {
        Ok(url) => Some(url.as_str().to_owned()),
        Err(e) => {
            problems.push(format!("spec.repo: {e}"));
            None
        }
    };
    let default_ref = GitReference::branch(PlatformSettings::DEFAULT_BRANCH);
    let reference = match reference(git_ref.as_ref().unwrap_or(&default_ref)) {
        Ok(r) => Some(r),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let path = match normalize_repo_path(path.as_deref().unwrap_or(PlatformSettings::DEFAULT_PATH))
    {
        Ok(p) => Some(p),
        Err(e) => {
            problems.push(format!("spec.path: {e}"));
            None
        }
    };
    if target_namespace.is_some() {
        problems.push(
            "spec.targetNamespace is not used by the platform instance: every namespaced object in the platform repository names its namespace; remove it".to_owned(),
        );
    }
    let interval = match parse_go_duration(
        interval
            .as_deref()
            .unwrap_or(PlatformSettings::DEFAULT_INTERVAL),
    ) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(format!("spec.interval: {e}"));
            None
        }
    };
    if let Some(secret) = &settings.credentials_secret
        && !is_plain_name(secret)
    {
        problems.push(format!(
            "--credentials-secret {secret:?} is not a plain Secret name"
        ));
    }
    match (repo, reference, path, interval) {
        (Some(repo), Some(reference), Some(path), Some(interval)) if problems.is_empty() => {
            Ok(Some(SpecConfig {
                repo,
                reference,
                path,
                interval,
            }))
        }
        _ => Err(SyncError::Config(problems.join("; "))),
    }
}

fn reference(r: &GitReference) -> Result<RefName, String> {
    let checked = match (&r.branch, &r.tag, &r.commit) {
        (Some(b), None, None) => {
            check_branch_or_tag(b).map_err(|e| format!("spec.ref.branch: {e}"))
        }
        (None, Some(t), None) => check_branch_or_tag(t).map_err(|e| format!("spec.ref.tag: {e}")),
        (None, None, Some(c)) => check_commit(c).map_err(|e| format!("spec.ref.commit: {e}")),
        _ => Err("spec.ref must set exactly one of branch, tag or commit".to_owned()),
    };
    checked?;
    RefName::from_git_reference(r)
        .ok_or_else(|| "spec.ref must set exactly one of branch, tag or commit".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn settings() -> Settings {
        Settings {
            extra_kinds: Vec::new(),
            credentials_secret: None,
        }
    }

    fn spec(repo: &str) -> FluxConfigSpec {
        FluxConfigSpec {
            repo: repo.into(),
            ..FluxConfigSpec::default()
        }
    }

    fn message(spec: &FluxConfigSpec, settings: &Settings) -> String {
        match read_spec(spec, settings) {
            Err(SyncError::Config(m)) => m,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn normalises_the_spec_and_fills_builtin_defaults() {
        let got = read_spec(
            &spec("HTTPS://Git.Corp.Example:443/platform//config.git/"),
            &settings(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            got,
            SpecConfig {
                repo: "https://git.corp.example/platform/config".into(),
                reference: RefName::Branch("main".into()),
                path: ".".into(),
                interval: Duration::from_secs(300),
            }
        );
        let mut s = spec("https://git.corp.example/platform/config.git");
        s.path = Some("./clusters//prod/".into());
        s.git_ref = Some(GitReference {
            tag: Some("v1.2.0".into()),
            ..GitReference::default()
        });
        s.interval = Some("1m30s".into());
        let got = read_spec(&s, &settings()).unwrap().unwrap();
        assert_eq!(got.path, "clusters/prod");
        assert_eq!(got.reference, RefName::Tag("v1.2.0".into()));
        assert_eq!(got.interval, Duration::from_secs(90));
    }

    #[test]
    fn reports_every_syntax_violation_and_never_the_password() {
        let mut s = spec("https://user:s3cret@git.corp.example/platform/config.git");
        s.path = Some("../other".into());
        s.git_ref = Some(GitReference {
            branch: Some("bad..name".into()),
            ..GitReference::default()
        });
        s.target_namespace = Some("team-a".into());
        let m = message(&s, &settings());
        assert!(
            m.contains("spec.repo: repository url contains a password"),
            "{m}"
        );
        assert!(m.contains("spec.path:"), "{m}");
        assert!(m.contains("spec.ref.branch:"), "{m}");
        assert!(m.contains("spec.targetNamespace"), "{m}");
        assert!(!m.contains("s3cret"), "{m}");

        let mut short = spec("https://git.corp.example/p/c");
        short.git_ref = Some(GitReference {
            commit: Some("abc123".into()),
            ..GitReference::default()
        });
        assert!(message(&short, &settings()).contains("spec.ref.commit"));

        let path_secret = Settings {
            credentials_secret: Some("../../etc".into()),
            ..settings()
        };
        assert!(
            message(&spec("https://git.corp.example/p/c"), &path_secret)
                .contains("not a plain Secret name")
        );
    }

    #[test]
    fn suspend_wins_over_everything() {
        let mut s = spec("not a url");
        s.suspend = Some(true);
        assert_eq!(read_spec(&s, &settings()).unwrap(), None);
    }

    #[test]
    fn internal_hosts_are_not_refused() {
        // No allow-list applies to the platform's own repository; only
        // syntax is checked.
        let got = read_spec(&spec("http://127.0.0.1:8080/platform.git"), &settings())
            .unwrap()
            .unwrap();
        assert_eq!(got.repo, "http://127.0.0.1:8080/platform");
    }
}
