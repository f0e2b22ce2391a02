//! Waiting in end-to-end tests: polling until something holds, and the
//! usual waits on a FluxConfig's status (Ready at a revision, Stalled at an
//! attempted revision, any predicate). Each panics with what it waited for
//! (and the FluxConfig's last status) when the time is up, so a failing
//! test says where it stopped.

use std::future::Future;
use std::time::Duration;

use fluxgate_crds::{FluxConfig, conditions};
use kube::Client;
use kube::api::Api;
use tokio::time::Instant;

/// How long the waits of the reconciler tests give a step.
pub const WAIT: Duration = Duration::from_secs(60);
/// Pause between two polls.
const POLL: Duration = Duration::from_millis(100);

/// Polls `check` until it gives `Some`; panics with `what` after `timeout`,
/// and the tail of the control plane's logs when this binary runs one.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            let logs = crate::testenv::shared_if_started()
                .map(|cp| cp.logs_tail(20))
                .unwrap_or_default();
            panic!("timed out after {timeout:?} waiting for: {what}\n{logs}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls FluxConfig `ns/name` until `pred` holds; returns it. Panics after
/// `timeout` with `what` and the last status seen.
pub async fn flux_config(
    admin: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&FluxConfig) -> bool,
) -> FluxConfig {
    let api: Api<FluxConfig> = Api::namespaced(admin.clone(), ns);
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        if let Ok(fc) = api.get(name).await {
            if pred(&fc) {
                return fc;
            }
            last = fc.status;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out waiting for {what}; last status: {}",
                serde_json::to_string_pretty(&last).unwrap_or_default()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `Ready=True` for the current generation with `revision` applied.
pub async fn ready_at(
    admin: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    revision: &str,
) -> FluxConfig {
    flux_config(
        admin,
        ns,
        name,
        timeout,
        &format!("Ready at {revision}"),
        |fc| {
            fc.condition(conditions::READY).is_some_and(|c| {
                c.status == "True" && c.observed_generation == fc.metadata.generation
            }) && fc
                .status
                .as_ref()
                .and_then(|s| s.last_applied_revision.as_deref())
                == Some(revision)
        },
    )
    .await
}

/// `Stalled=True` with `attempted` as the last attempted revision.
pub async fn stalled_at(
    admin: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    attempted: &str,
) -> FluxConfig {
    flux_config(
        admin,
        ns,
        name,
        timeout,
        &format!("Stalled at {attempted}"),
        |fc| {
            fc.condition(conditions::STALLED)
                .is_some_and(|c| c.status == "True")
                && fc
                    .status
                    .as_ref()
                    .and_then(|s| s.last_attempted_revision.as_deref())
                    == Some(attempted)
        },
    )
    .await
}

/// `Ready` with `reason` and a message containing `needle`.
pub async fn ready_reason(
    admin: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    reason: &str,
    needle: &str,
) -> FluxConfig {
    flux_config(
        admin,
        ns,
        name,
        timeout,
        &format!("Ready with reason {reason} saying {needle:?}"),
        |fc| {
            fc.condition(conditions::READY)
                .is_some_and(|c| c.reason == reason && c.message.contains(needle))
        },
    )
    .await
}
