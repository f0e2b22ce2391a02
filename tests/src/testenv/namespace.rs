//! A throwaway namespace per test, after linkerd's `with_temp_ns`: tests
//! sharing one control plane cannot see each other's objects, and a failing
//! test leaves its namespace's events and the component logs in its output.

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::FutureExt as _;
use k8s_openapi::api::core::v1::{Event, Namespace};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};

use super::{ControlPlane, shared};

/// Label on every namespace [`with_temp_ns`] creates, so leftovers are easy
/// to find (`kubectl get ns -l fluxgate.dev/test=true`).
pub const TEST_LABEL: &str = "fluxgate.dev/test";

/// Runs `test` with an admin client and a fresh namespace
/// `<prefix>-<random>` on the [`shared`] control plane, then deletes the
/// namespace (without waiting for it to go away).
///
/// When `test` panics, the namespace's events and the last lines of each
/// component log are printed before the panic resumes.
///
/// # Panics
///
/// When the shared control plane cannot start or the namespace cannot be
/// created: there is no test to run then.
pub async fn with_temp_ns<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(kube::Client, String) -> Fut,
    Fut: Future<Output = ()>,
{
    let control_plane = match shared() {
        Ok(control_plane) => control_plane,
        Err(err) => panic!("{}", report(&err)),
    };
    control_plane.with_temp_ns(prefix, test).await;
}

impl ControlPlane {
    /// [`with_temp_ns`] on this control plane instead of the shared one.
    pub async fn with_temp_ns<F, Fut>(&self, prefix: &str, test: F)
    where
        F: FnOnce(kube::Client, String) -> Fut,
        Fut: Future<Output = ()>,
    {
        let client = match self.client() {
            Ok(client) => client,
            Err(err) => panic!("{}", report(&err)),
        };
        let name = format!("{prefix}-{}", random_suffix());
        let namespaces = Api::<Namespace>::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_LABEL.to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        if let Err(err) = namespaces.create(&PostParams::default(), &namespace).await {
            panic!("failed to create namespace {name}: {}", report(&err));
        }

        // The closure call is inside the guarded future too, so a panic
        // while building the future is caught as well.
        let outcome = AssertUnwindSafe(async { test(client.clone(), name.clone()).await })
            .catch_unwind()
            .await;

        if outcome.is_err() {
            eprintln!(
                "---- test in namespace {name} failed; its events:\n{}\n---- component logs:\n{}",
                events(&client, &name).await,
                self.logs_tail(50)
            );
        }
        if let Err(err) = namespaces.delete(&name, &DeleteParams::default()).await {
            eprintln!("failed to delete namespace {name}: {}", report(&err));
        }
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    }
}

/// The namespace's events, oldest first, one per line.
async fn events(client: &kube::Client, namespace: &str) -> String {
    let list = match Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list,
        Err(err) => return format!("(cannot list events: {})", report(&err)),
    };
    let mut events = list.items;
    if events.is_empty() {
        return "(none)".to_owned();
    }
    // Events recorded through events.k8s.io/v1 carry `eventTime` and no
    // `lastTimestamp`.
    let time = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
    };
    events.sort_by_key(time);
    events
        .iter()
        .map(|e| {
            let object = &e.involved_object;
            format!(
                "{} {} {} {}/{}: {}",
                time(e).map(|t| t.to_string()).unwrap_or_default(),
                e.type_.as_deref().unwrap_or("-"),
                e.reason.as_deref().unwrap_or("-"),
                object.kind.as_deref().unwrap_or("-"),
                object.name.as_deref().unwrap_or("-"),
                e.message.as_deref().unwrap_or_default(),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Eight lowercase hex digits, different for every call. `RandomState` is
/// randomly keyed per process, which is all the randomness a namespace name
/// needs; the counter separates calls within the process.
fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    format!("{:08x}", hasher.finish() as u32)
}

/// An error and its causes on one line.
pub(crate) fn report(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
