//! Errors of the operator, classified by what fixes them.
//!
//! - **terminal**: the user must change something (a FluxConfig violating
//!   the rules, a template the platform team broke). The object is marked
//!   `Stalled` and is not retried until it or its inputs change.
//! - **waiting**: a dependency is not there yet (the credentials Secret in
//!   the platform namespace), or a FluxConfig of the namespace cannot be
//!   read. Retried after a fixed, calm interval.
//! - **transient**: the API server or network failed. Retried with
//!   exponential backoff and jitter. This includes the refusals of an API
//!   server that has just (re)started: until its informers have synced it
//!   answers 403 (its RBAC authorizer sees no bindings yet; seen in
//!   `tests/tests/reliability_control_plane.rs`), and 401 or 404 can come the
//!   same way (token lookups, custom resources not served yet). Nothing the
//!   operator watches changes when that passes, or when an administrator
//!   repairs the operator's RBAC, so waiting for a change would leave the
//!   FluxConfig stuck; the backoff (capped at 5 min) retries both cases.
//! - **stale**: adding or removing the finalizer was refused because the
//!   stored object no longer matches the cached one (the JSON patch's `test`
//!   failed, or a conflict): the watch event that brings the newer version
//!   triggers the next reconcile, so this is neither logged as a failure nor
//!   backed off. Under load (a burst of new FluxConfigs) a second trigger
//!   often arrives before the cache has seen the finalizer the first
//!   reconcile added; backing off a second there was most of the
//!   onboarding latency.

use std::time::Duration;

/// How an error is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// A human must change something; do not retry on a timer.
    Terminal,
    /// A dependency is missing; retry after a fixed interval.
    Waiting,
    /// Retry with backoff.
    Transient,
    /// The cache is behind: wait for the watch event (with a late safety
    /// net).
    Stale,
}

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("{action} failed")]
    Kube {
        /// What was being done, e.g. `apply Deployment team-a/fluxgate-reconciler`.
        action: String,
        /// The client error.
        #[source]
        source: kube::Error,
    },
    /// Rendering the namespace's objects failed (a broken template).
    #[error("rendering the reconciler objects for namespace {namespace} failed")]
    Render {
        /// The team namespace.
        namespace: String,
        /// The renderer's error.
        #[source]
        source: fluxgate_platform_defaults::render::RenderError,
    },
    /// A credentials Secret named by the platform's defaults does not exist.
    #[error("credentials Secret {namespace}/{name} does not exist")]
    MissingCredentials {
        /// The platform namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
    },
    /// The object has no namespace or name (cannot happen for a FluxConfig
    /// read from the API server; reported rather than unwrapped).
    #[error("FluxConfig without {0}")]
    MissingMetadata(&'static str),
    /// Serialising an object failed.
    #[error("cannot serialise {what}")]
    Serialize {
        /// What was being serialised.
        what: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// A FluxConfig of the namespace cannot be read, so nothing there may
    /// change (see the `guard` module); retried until it reads again.
    #[error(
        "FluxConfig {names} in namespace {namespace} cannot be read; nothing in the namespace changes until it is fixed"
    )]
    Held {
        /// The team namespace.
        namespace: String,
        /// The unreadable FluxConfigs, comma-separated.
        names: String,
    },
    /// The finalizer helper failed.
    #[error("finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The class of this error.
    pub fn class(&self) -> Class {
        match self {
            Error::Render { .. } | Error::MissingMetadata(_) | Error::Serialize { .. } => {
                Class::Terminal
            }
            Error::MissingCredentials { .. } | Error::Held { .. } => Class::Waiting,
            Error::Kube { source, .. } => match source {
                // A request the API server rejects as such (an invalid
                // object, 400/422) will not pass by retrying. Refusals that
                // pass without any change the operator could watch (401,
                // 403, 404: see the module docs), timeouts, conflicts and
                // throttling are retried.
                kube::Error::Api(status)
                    if (400..500).contains(&status.code)
                        && ![401, 403, 404, 408, 409, 429].contains(&status.code) =>
                {
                    Class::Terminal
                }
                _ => Class::Transient,
            },
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.class(),
                kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(s))
                | kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s))
                    if [409, 422].contains(&s.code) =>
                {
                    Class::Stale
                }
                _ => Class::Transient,
            },
        }
    }

    /// Short label for metrics, e.g. `transient`.
    pub fn class_label(&self) -> &'static str {
        match self.class() {
            Class::Terminal => "terminal",
            Class::Waiting => "waiting",
            Class::Transient => "transient",
            Class::Stale => "stale",
        }
    }

    /// Every value [`Error::reason`] returns.
    pub const REASONS: &[&str] = &[
        "ApiRequestFailed",
        "RenderFailed",
        "MissingCredentials",
        "MissingMetadata",
        "SerializeFailed",
        "UnreadableFluxConfig",
        "FinalizerFailed",
    ];

    /// A short CamelCase reason for metrics, e.g. `MissingCredentials`; a
    /// fixed set ([`Error::REASONS`]), so it can be a label.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "ApiRequestFailed",
            Error::Render { .. } => "RenderFailed",
            Error::MissingCredentials { .. } => "MissingCredentials",
            Error::MissingMetadata(_) => "MissingMetadata",
            Error::Serialize { .. } => "SerializeFailed",
            Error::Held { .. } => "UnreadableFluxConfig",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.reason(),
                _ => "FinalizerFailed",
            },
        }
    }

    /// Wraps a client error with what was being done.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Kube {
            action: action.into(),
            source,
        }
    }
}

/// The message of an error with its causes, `a: b: c`, for conditions and
/// events (which have no place for a source chain); the core's one
/// implementation.
pub use fluxgate_platform_defaults::violation::error_chain as chain;

/// Retry delay for the n-th consecutive transient failure: exponential
/// from 1 s, capped at 5 min, with ±20% jitter so many objects failing
/// together do not retry in lockstep.
pub fn backoff(attempt: u32, jitter_seed: u64) -> Duration {
    let base = 1u64 << attempt.min(9);
    let capped = base.min(300);
    // Jitter in [-20%, +20%] from a cheap hash of the seed; no RNG needed.
    let spread = (jitter_seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 33) % 41;
    let millis = capped * 1000 * (80 + spread) / 100;
    Duration::from_millis(millis)
}

/// Retry interval for waiting errors.
pub const WAITING_RETRY: Duration = Duration::from_secs(30);

/// Safety net for stale-cache errors, should the watch event not come.
pub const STALE_RETRY: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        assert!(backoff(0, 1) <= Duration::from_millis(1200));
        assert!(backoff(0, 1) >= Duration::from_millis(800));
        assert!(backoff(4, 7) >= Duration::from_millis(12_800));
        for seed in 0..50 {
            let d = backoff(30, seed);
            assert!(
                d >= Duration::from_secs(240) && d <= Duration::from_secs(360),
                "{d:?}"
            );
        }
        let distinct: std::collections::BTreeSet<_> = (0..20).map(|s| backoff(3, s)).collect();
        assert!(distinct.len() > 5);
    }

    #[test]
    fn client_errors_are_classified() {
        let api = |code| {
            Error::kube(
                "apply",
                kube::Error::Api(Box::new(kube::core::Status {
                    code,
                    ..Default::default()
                })),
            )
        };
        assert_eq!(api(422).class(), Class::Terminal);
        assert_eq!(api(400).class(), Class::Terminal);
        assert_eq!(api(409).class(), Class::Transient);
        assert_eq!(api(500).class(), Class::Transient);
        // An API server that has just started refuses until its informers
        // sync; a repaired RBAC comes without any event: retried, never
        // left waiting for a change.
        for code in [401, 403, 404] {
            assert_eq!(api(code).class(), Class::Transient, "{code}");
        }
        let finalizer = |code| {
            Error::Finalizer(Box::new(kube::runtime::finalizer::Error::AddFinalizer(
                kube::Error::Api(Box::new(kube::core::Status {
                    code,
                    ..Default::default()
                })),
            )))
        };
        assert_eq!(finalizer(422).class(), Class::Stale);
        assert_eq!(finalizer(409).class(), Class::Stale);
        assert_eq!(finalizer(500).class(), Class::Transient);
        assert_eq!(
            Error::MissingCredentials {
                namespace: "p".into(),
                name: "s".into()
            }
            .class(),
            Class::Waiting
        );
    }

    #[test]
    fn reasons_name_the_cause_and_see_through_the_finalizer() {
        let held = || Error::Held {
            namespace: "team-a".into(),
            names: "web".into(),
        };
        let errors = [
            Error::kube("apply", kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::MissingCredentials {
                namespace: "p".into(),
                name: "s".into(),
            },
            Error::MissingMetadata("namespace"),
            held(),
            Error::Finalizer(Box::new(kube::runtime::finalizer::Error::ApplyFailed(
                held(),
            ))),
            Error::Finalizer(Box::new(kube::runtime::finalizer::Error::UnnamedObject)),
        ];
        let reasons: Vec<&str> = errors.iter().map(Error::reason).collect();
        assert_eq!(
            reasons,
            [
                "ApiRequestFailed",
                "MissingCredentials",
                "MissingMetadata",
                "UnreadableFluxConfig",
                "UnreadableFluxConfig",
                "FinalizerFailed"
            ]
        );
        assert!(reasons.iter().all(|r| Error::REASONS.contains(r)));
    }
}
