//! Errors of one sync, and how each is classified.
//!
//! - **terminal**: the commit is bad (invalid manifests, an object the API
//!   server rejects in the dry run). `Stalled=True`; the same commit is not
//!   tried again, the reconciler waits for a new one (or a new effective
//!   config).
//! - **stalled**: the platform's configuration is wrong (credentials
//!   missing or refused, the branch does not exist), or (cluster mode) a
//!   namespaced object was refused right after the commit's cluster-scoped
//!   objects changed the rules. `Stalled=True`; retried at the interval,
//!   since a fix needs no new commit.
//!   A repository the server no longer has (HTTP 404) is stalled too, with
//!   reason `RepositoryNotFound`: it may come back.
//! - **transient**: Git or the API server is unreachable, stalls, times
//!   out or answers with something that is not Git. What runs is kept,
//!   `Reconciling=True`, retried with backoff.

use fluxgate_crds::LastError;

use crate::apply::{ApplyError, Phase};
use crate::git::GitError;
use crate::manifests::ManifestError;

/// Condition reasons the reconciler writes, besides the shared ones in
/// [`fluxgate_crds::conditions::reasons`].
pub mod reasons {
    /// A transient error; the sync is retried with backoff.
    pub const PROGRESSING_WITH_RETRY: &str = "ProgressingWithRetry";
    /// The Git server could not be reached.
    pub const FETCH_FAILED: &str = "FetchFailed";
    /// The Git server wants credentials that are missing or wrong.
    pub const AUTHENTICATION_FAILED: &str = "AuthenticationFailed";
    /// The reference does not exist, or the effective config cannot be
    /// used as it is.
    pub const CONFIG_ERROR: &str = "ConfigError";
    /// The repository is gone from the server (HTTP 404 or 410).
    pub const REPOSITORY_NOT_FOUND: &str = "RepositoryNotFound";
    /// The commit's manifests are invalid or not allowed.
    pub const VALIDATION_FAILED: &str = "ValidationFailed";
    /// The API server rejected an object (in the dry run or for real).
    pub const APPLY_FAILED: &str = "ApplyFailed";
    /// Objects gone from Git could not be deleted.
    pub const PRUNE_FAILED: &str = "PruneFailed";
}

/// How a failure is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The commit is bad: wait for a new one.
    Terminal,
    /// The configuration is wrong: report, retry at the interval.
    Stalled,
    /// Retry with backoff.
    Transient,
}

impl Class {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Terminal => "terminal",
            Self::Stalled => "stalled",
            Self::Transient => "transient",
        }
    }
}

/// Why one sync of a FluxConfig failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The effective config cannot be used (an invalid reference, interval
    /// or credentials Secret name).
    #[error("the effective config cannot be used: {0}")]
    Config(String),
    /// Git failed.
    #[error(transparent)]
    Git(#[from] GitError),
    /// The manifests of the revision are invalid.
    #[error(transparent)]
    Manifests(#[from] ManifestError),
    /// Applying or pruning failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Reading the checkout failed locally.
    #[error("cannot read the checkout")]
    Local(#[source] std::io::Error),
}

/// A failure as the status reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// How it is handled.
    pub class: Class,
    /// The condition reason.
    pub reason: &'static str,
    /// What `lastError` says.
    pub error: LastError,
}

impl SyncError {
    /// Classifies the error and says where it happened, for `revision`.
    pub fn failure(&self, revision: Option<&str>) -> Failure {
        let (class, reason) = match self {
            Self::Config(_) => (Class::Stalled, reasons::CONFIG_ERROR),
            Self::Git(e) => match e {
                GitError::AuthenticationRequired { .. }
                | GitError::AuthenticationFailed { .. }
                | GitError::Credentials { .. } => (Class::Stalled, reasons::AUTHENTICATION_FAILED),
                GitError::RefNotFound { .. } | GitError::UnsupportedScheme { .. } => {
                    (Class::Stalled, reasons::CONFIG_ERROR)
                }
                // Retried at the interval: restoring the repository (or
                // the credentials' access to it) needs no change here.
                GitError::RepositoryNotFound { .. } => {
                    (Class::Stalled, reasons::REPOSITORY_NOT_FOUND)
                }
                GitError::TooLarge { .. } | GitError::TooManyFiles { .. } => {
                    (Class::Terminal, reasons::VALIDATION_FAILED)
                }
                GitError::Unreachable { .. }
                | GitError::Protocol { .. }
                | GitError::Stalled { .. }
                | GitError::TimedOut { .. }
                | GitError::Local { .. } => (Class::Transient, reasons::FETCH_FAILED),
            },
            Self::Manifests(_) => (Class::Terminal, reasons::VALIDATION_FAILED),
            Self::Apply(e) => (
                if e.is_transient() {
                    Class::Transient
                } else if matches!(
                    e,
                    ApplyError::Rejected {
                        phase: Phase::DryRunAfterClusterScoped,
                        ..
                    }
                ) {
                    // Judged right after the rules changed: the next
                    // interval judges the same commit again, against rules
                    // the webhook has surely seen by then.
                    Class::Stalled
                } else {
                    Class::Terminal
                },
                if matches!(e, ApplyError::Prune { .. }) {
                    reasons::PRUNE_FAILED
                } else {
                    reasons::APPLY_FAILED
                },
            ),
            Self::Local(_) => (Class::Transient, reasons::FETCH_FAILED),
        };
        let (file, line, object) = match self {
            Self::Manifests(e) => (
                e.file().map(str::to_owned),
                e.line().and_then(|l| i64::try_from(l).ok()),
                e.object().map(str::to_owned),
            ),
            Self::Apply(e) => (
                e.file().map(str::to_owned),
                e.line().and_then(|l| i64::try_from(l).ok()),
                e.object().map(str::to_owned),
            ),
            _ => (None, None, None),
        };
        Failure {
            class,
            reason,
            error: LastError {
                message: chain(self),
                revision: revision.map(str::to_owned),
                file,
                line,
                object,
            },
        }
    }
}

/// An error and its causes on one line.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_commits_are_terminal_and_outages_transient() {
        let bad = SyncError::Manifests(ManifestError::Yaml {
            file: "a.yaml".into(),
            line: 3,
            message: "oops".into(),
        });
        let f = bad.failure(Some("main@sha1:abc"));
        assert_eq!(f.class, Class::Terminal);
        assert_eq!(f.error.file.as_deref(), Some("a.yaml"));
        assert_eq!(f.error.line, Some(3));
        assert_eq!(f.error.revision.as_deref(), Some("main@sha1:abc"));

        let down = SyncError::Git(GitError::Unreachable {
            url: "https://git.example/x".into(),
            message: "connection refused".into(),
        });
        assert_eq!(down.failure(None).class, Class::Transient);

        let denied = SyncError::Git(GitError::AuthenticationRequired {
            url: "https://git.example/x".into(),
        });
        let f = denied.failure(None);
        assert_eq!(
            (f.class, f.reason),
            (Class::Stalled, reasons::AUTHENTICATION_FAILED)
        );
    }

    #[test]
    fn a_refusal_right_after_the_rules_changed_is_retried() {
        let rejected = |phase| {
            SyncError::Apply(ApplyError::Rejected {
                object: "FluxConfig/team-a/web".into(),
                file: "teams/team-a/fluxconfig.yaml".into(),
                line: 1,
                phase,
                message: "denied".into(),
            })
        };
        let f = rejected(Phase::DryRunAfterClusterScoped).failure(None);
        assert_eq!((f.class, f.reason), (Class::Stalled, reasons::APPLY_FAILED));
        assert_eq!(f.error.object.as_deref(), Some("FluxConfig/team-a/web"));
        assert_eq!(rejected(Phase::DryRun).failure(None).class, Class::Terminal);
    }
}
