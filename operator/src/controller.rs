//! The controller: watches, what each watch event re-reconciles, and the
//! error policy.
//!
//! - FluxConfig changes reconcile that FluxConfig (and so its namespace).
//! - Provisioned objects in the team namespace carry owner references to
//!   every FluxConfig there; a change or deletion re-reconciles them, so
//!   drift is corrected on the event, not on a timer. RoleBindings in other
//!   namespaces carry the team-namespace label instead, mapped the same way.
//! - A PlatformDefaults change reconciles the FluxConfigs of the namespaces
//!   it selects, and those whose effective config came from it (a selector
//!   that stopped matching must be noticed too) — not every namespace.
//! - A namespace change (labels, or a new namespace matching a team's
//!   target patterns) reconciles the FluxConfigs it concerns.
//! - A change of a credentials Secret in the platform namespace reconciles
//!   the FluxConfigs using it.
//!
//! FluxConfigs and PlatformDefaults are watched through
//! [`crate::guard::Guarded`]: an object that cannot be deserialised is
//! reported on its own and never stops the watch.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fluxgate_crds::{FluxConfig, PlatformDefaults};
use fluxgate_platform_defaults::rules::NamePattern;
use fluxgate_platform_defaults::selector::Selector;
use futures::{StreamExt, future};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::core::PartialObjectMeta;
use kube::core::PartialObjectMetaExt as _;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::context::{Context, ManagedStores};
use crate::error::{Class, Error, STALE_RETRY, WAITING_RETRY, backoff, chain};
use crate::guard::{Guarded, Policy, UnreadableObjects, report_unreadable};
use crate::reconcile::{self, MANAGED_BY, MANAGED_BY_LABEL, TEAM_NAMESPACE_LABEL};

/// Finalizer on FluxConfigs: removes what garbage collection cannot, the
/// RoleBindings in namespaces other than the FluxConfig's own.
pub const FINALIZER: &str = "fluxgate.dev/cleanup";

/// FluxConfigs in `namespace`.
fn configs_in(store: &Store<FluxConfig>, namespace: &str) -> Vec<ObjectRef<FluxConfig>> {
    store
        .state()
        .iter()
        .filter(|fc| fc.namespace().as_deref() == Some(namespace))
        .map(|fc| ObjectRef::from_obj(fc.as_ref()))
        .collect()
}

/// Whether a FluxConfig's last effective config came from `defaults`.
fn sourced_from(fc: &FluxConfig, defaults: &str) -> bool {
    let needle = format!("PlatformDefaults/{defaults}");
    fc.status
        .as_ref()
        .and_then(|s| s.effective.as_ref())
        .and_then(|e| serde_json::to_string(e).ok())
        .is_some_and(|text| text.contains(&needle))
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    ctx_parts: ContextParts,
    resync: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let selector = format!("{MANAGED_BY_LABEL}={MANAGED_BY}");
    let managed_cfg = watcher::Config::default().labels(&selector);

    // Root objects: read per object, so one that does not deserialise is
    // reported instead of failing the whole list (see `guard`).
    let unreadable = UnreadableObjects::default();
    let (reports_tx, reports_rx) = tokio::sync::mpsc::unbounded_channel();
    let (fc_store, fc_writer) = reflector::store::<FluxConfig>();
    // The FluxConfig store's readiness is awaited by the Controller itself.
    // kube-runtime's `Store::wait_until_ready` wakes only the last of
    // several concurrent waiters (its oneshot receiver keeps one waker), so
    // a second waiter here could leave the Controller, or this task, waiting
    // forever. The first completed list is observed on the stream instead,
    // after the reflector applied it.
    let (fc_listed_tx, mut fc_listed_rx) = tokio::sync::watch::channel(false);
    let fc_stream = reflector(
        fc_writer,
        Guarded::new(
            fc_store.clone(),
            unreadable.clone(),
            reports_tx.clone(),
            ctx_parts.metrics.clone(),
            Policy::HoldNamespace,
        )
        .stream(watcher(
            Api::<DeserializeGuard<FluxConfig>>::all(client.clone()),
            watcher::Config::default(),
        )),
    )
    .inspect(move |event| {
        if let Ok(watcher::Event::InitDone) = event {
            fc_listed_tx.send_replace(true);
        }
    })
    .default_backoff()
    .touched_objects();

    let (pd_store, pd_writer) = reflector::store::<PlatformDefaults>();
    let pd_stream = reflector(
        pd_writer,
        Guarded::new(
            pd_store.clone(),
            unreadable.clone(),
            reports_tx,
            ctx_parts.metrics.clone(),
            Policy::KeepLastReadable,
        )
        .stream(watcher(
            Api::<DeserializeGuard<PlatformDefaults>>::all(client.clone()),
            watcher::Config::default(),
        )),
    )
    .default_backoff()
    .touched_objects();
    let reporter = report_unreadable(
        ctx_parts.recorder.clone(),
        ctx_parts.metrics.clone(),
        reports_rx,
    );

    let (ns_store, ns_writer) = reflector::store();
    let ns_stream = reflector(
        ns_writer,
        watcher(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();

    let platform_ns = ctx_parts.settings.platform_namespace.clone();
    let (secret_store, secret_writer) = reflector::store::<Secret>();
    let secret_stream = reflector(
        secret_writer,
        watcher(
            Api::<Secret>::namespaced(client.clone(), &platform_ns),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects();

    macro_rules! managed {
        ($ty:ty) => {{
            let (store, writer) = reflector::store::<$ty>();
            let stream = reflector(
                writer,
                watcher(Api::<$ty>::all(client.clone()), managed_cfg.clone()),
            )
            .default_backoff()
            .touched_objects();
            (store, stream)
        }};
    }
    let (sa_store, sa_stream) = managed!(ServiceAccount);
    let (msecret_store, msecret_stream) = managed!(Secret);
    let (role_store, role_stream) = managed!(Role);
    let (rb_store, rb_stream) = managed!(RoleBinding);
    let (deploy_store, deploy_stream) = managed!(Deployment);
    let (np_store, np_stream) = managed!(NetworkPolicy);

    let ctx = Arc::new(Context {
        client: client.clone(),
        settings: ctx_parts.settings,
        network_policy: ctx_parts.network_policy,
        renderer: ctx_parts.renderer,
        metrics: ctx_parts.metrics,
        recorder: ctx_parts.recorder,
        flux_configs: fc_store.clone(),
        defaults: pd_store.clone(),
        namespaces: ns_store.clone(),
        platform_secrets: secret_store.clone(),
        managed: ManagedStores {
            service_accounts: sa_store.clone(),
            secrets: msecret_store.clone(),
            roles: role_store.clone(),
            role_bindings: rb_store.clone(),
            deployments: deploy_store.clone(),
            network_policies: np_store.clone(),
        },
        synced: ctx_parts.synced,
        unreadable,
        recent_status: crate::status::RecentWrites::default(),
    });

    let defaults_status_parts = (ctx.settings.platform_namespace.clone(), ctx.synced.clone());

    // Readiness: every cache has listed once. Each store but the
    // FluxConfigs' has exactly one waiter: this task (see above).
    {
        let synced = ctx.synced.clone();
        let stores = (
            pd_store.clone(),
            ns_store.clone(),
            secret_store.clone(),
            sa_store.clone(),
            msecret_store.clone(),
            role_store.clone(),
            rb_store.clone(),
            deploy_store.clone(),
            np_store.clone(),
        );
        tokio::spawn(async move {
            let (b, c, d, e, f, g, h, i, j) = stores;
            let fc_listed = async move {
                let _ = fc_listed_rx.wait_for(|listed| *listed).await;
            };
            let all = future::join5(
                fc_listed,
                b.wait_until_ready(),
                c.wait_until_ready(),
                d.wait_until_ready(),
                future::join(
                    future::join5(
                        e.wait_until_ready(),
                        f.wait_until_ready(),
                        g.wait_until_ready(),
                        h.wait_until_ready(),
                        i.wait_until_ready(),
                    ),
                    j.wait_until_ready(),
                ),
            );
            let _ = all.await;
            synced.store(true, Ordering::Relaxed);
            info!("watch caches synced");
        });
    }

    // Mappers from secondary objects to the FluxConfigs to reconcile.
    let by_team_label = {
        let fcs = fc_store.clone();
        move |labels: &BTreeMap<String, String>| -> Vec<ObjectRef<FluxConfig>> {
            labels
                .get(TEAM_NAMESPACE_LABEL)
                .map(|ns| configs_in(&fcs, ns))
                .unwrap_or_default()
        }
    };
    let rb_mapper = {
        let by_team_label = by_team_label.clone();
        move |rb: RoleBinding| by_team_label(rb.labels())
    };
    let pd_mapper = {
        let fcs = fc_store.clone();
        let namespaces = ns_store.clone();
        move |pd: PlatformDefaults| {
            let selector = Selector::compile(pd.spec.namespace_selector.as_ref()).ok();
            let name = pd.name_any();
            fcs.state()
                .iter()
                .filter(|fc| {
                    let ns = fc.namespace().unwrap_or_default();
                    let labels = namespaces
                        .get(&ObjectRef::new(&ns))
                        .and_then(|n| n.metadata.labels.clone())
                        .unwrap_or_default();
                    selector.as_ref().is_some_and(|s| s.matches(&labels)) || sourced_from(fc, &name)
                })
                .map(|fc| ObjectRef::from_obj(fc.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let ns_mapper = {
        let fcs = fc_store.clone();
        move |ns: kube::core::PartialObjectMeta<Namespace>| {
            let name = ns.name_any();
            fcs.state()
                .iter()
                .filter(|fc| {
                    fc.namespace().as_deref() == Some(name.as_str())
                        || fc
                            .status
                            .as_ref()
                            .and_then(|s| s.effective.as_ref())
                            .is_some_and(|e| {
                                e.allowed_namespaces.value.iter().any(|p| {
                                    NamePattern::namespace(p).is_ok_and(|p| p.matches(&name, ""))
                                })
                            })
                })
                .map(|fc| ObjectRef::from_obj(fc.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let secret_mapper = {
        let fcs = fc_store.clone();
        move |secret: Secret| {
            let name = secret.name_any();
            fcs.state()
                .iter()
                .filter(|fc| {
                    fc.status
                        .as_ref()
                        .and_then(|s| s.effective.as_ref())
                        .and_then(|e| e.credentials_secret.as_ref())
                        .is_some_and(|c| c.value == name)
                })
                .map(|fc| ObjectRef::from_obj(fc.as_ref()))
                .collect::<Vec<_>>()
        }
    };

    let api = Api::<FluxConfig>::all(client.clone());
    let failures: Arc<std::sync::Mutex<BTreeMap<String, u32>>> = Arc::default();
    let failures_policy = failures.clone();
    let controller = Controller::for_stream(fc_stream, fc_store.clone())
        .owns_stream(sa_stream)
        .owns_stream(msecret_stream)
        .owns_stream(role_stream)
        .owns_stream(deploy_stream)
        .owns_stream(np_stream)
        .watches_stream(rb_stream, rb_mapper)
        .watches_stream(pd_stream, pd_mapper)
        .watches_stream(ns_stream, ns_mapper)
        .watches_stream(secret_stream, secret_mapper)
        // Each watch above backs off on its own; see `NoSharedBackoff`.
        .trigger_backoff(NoSharedBackoff)
        .graceful_shutdown_on(shutdown)
        .run(
            move |fc, ctx| {
                let api = api.clone();
                let failures = failures.clone();
                // Every log line of the reconcile carries the team and the
                // FluxConfig (JSON: `span.namespace`, `span.fluxconfig`).
                let span = tracing::info_span!(
                    "reconcile",
                    namespace = %fc.namespace().unwrap_or_default(),
                    fluxconfig = %fc.name_any(),
                );
                tracing::Instrument::instrument(
                    async move { reconcile(fc, ctx, api, resync, failures).await },
                    span,
                )
            },
            move |fc, err, _ctx| error_policy(&fc, err, &failures_policy),
            ctx,
        )
        .for_each(|result| {
            // Reconcile errors are logged by the error policy; what arrives
            // here otherwise is a watch that fails (RBAC, a vanished CRD),
            // which would be silent without this.
            if let Err(err) = result {
                match err {
                    kube::runtime::controller::Error::ReconcilerFailed(..)
                    | kube::runtime::controller::Error::ObjectNotFound(_) => {}
                    other => warn!(error = %chain(&other), "controller error"),
                }
            }
            future::ready(())
        });
    // PlatformDefaults status (READY column), from the same caches, once
    // they synced; a dependent task, so it ends with the controller.
    let defaults_status = {
        let (client, pds, nss, fcs) = (
            client.clone(),
            pd_store.clone(),
            ns_store.clone(),
            fc_store.clone(),
        );
        let (platform_namespace, synced) = defaults_status_parts;
        async move {
            while !synced.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            crate::defaults_status::run(
                client,
                pds,
                nss,
                fcs,
                platform_namespace,
                Duration::from_secs(2),
            )
            .await;
        }
    };
    // The reporter ends when the watches are dropped, so the controller
    // decides when both are done.
    tokio::select! {
        () = controller => {}
        () = defaults_status => {}
        () = reporter => {
            // Only reached if every watch stream ended first; keep serving.
            std::future::pending::<()>().await;
        }
    }
}

/// The backoff of the controller's merged trigger stream: none.
///
/// kube's `Controller` puts one backoff around all its watches together, so
/// an error from any of them pauses every watch, for longer after each error
/// (0.8 s doubling to 30 s) until one of them delivers an event. After an API
/// server outage each of the ten watches fails in turn (connection refused,
/// then `410 Expired` on resuming), and the FluxConfig watch sat behind those
/// pauses: new FluxConfigs went unseen for minutes. Every watch here already
/// has its own backoff (`default_backoff`), so errors are delayed once, for
/// the watch that failed, and pass through the merged stream undelayed.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSharedBackoff;

impl Iterator for NoSharedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(Duration::ZERO)
    }
}

impl kube::runtime::utils::Backoff for NoSharedBackoff {
    fn reset(&mut self) {}
}

/// What `run` needs besides the client.
pub struct ContextParts {
    /// Platform settings.
    pub settings: fluxgate_platform_defaults::PlatformSettings,
    /// The reconcilers' NetworkPolicy, when the flags ask for one.
    pub network_policy: Option<fluxgate_platform_defaults::render::ReconcilerNetworkPolicy>,
    /// Template renderer.
    pub renderer: fluxgate_platform_defaults::render::Renderer,
    /// Metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Event recorder.
    pub recorder: kube::runtime::events::Recorder,
    /// Set once the caches synced.
    pub synced: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for ContextParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextParts").finish_non_exhaustive()
    }
}

async fn reconcile(
    fc: Arc<FluxConfig>,
    ctx: Arc<Context>,
    api: Api<FluxConfig>,
    resync: Duration,
    failures: Arc<std::sync::Mutex<BTreeMap<String, u32>>>,
) -> Result<Action, Error> {
    if !ctx.is_synced() {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let namespace = fc.namespace().unwrap_or_default();
    // The platform's own FluxConfigs (the platform sync's configuration and
    // status, in the platform namespace) are not team configs: no defaults,
    // no provisioning, no status from the operator.
    if namespace == ctx.settings.platform_namespace {
        return Ok(Action::await_change());
    }
    let _in_flight = ctx.metrics.reconcile_started();
    let started = Instant::now();
    // The finalizer is added and removed through the metadata only: the
    // answer to those patches then reads even when the stored object does
    // not deserialise as a FluxConfig (see `guard`).
    let api = Api::<PartialObjectMeta<FluxConfig>>::namespaced(api.into_client(), &namespace);
    let meta = Arc::new(fc.metadata.clone().into_response_partial::<FluxConfig>());
    let had_finalizer = fc.finalizers().iter().any(|f| f == FINALIZER);
    let rejected = std::sync::atomic::AtomicBool::new(false);
    let (fc_ref, ctx_ref, rejected_ref) = (fc.as_ref(), ctx.as_ref(), &rejected);
    let result = finalizer(&api, FINALIZER, meta, |event| async move {
        match event {
            FinalizerEvent::Apply(_) => {
                let label = reconcile::reconcile_one(fc_ref, ctx_ref).await?;
                rejected_ref.store(label == "rejected", Ordering::Relaxed);
                Ok(Action::requeue(resync))
            }
            FinalizerEvent::Cleanup(_) => {
                reconcile::cleanup(fc_ref, ctx_ref).await?;
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    // The finalizer was added (a refused add is an error, not a write).
    if !had_finalizer && fc.metadata.deletion_timestamp.is_none() && result.is_ok() {
        ctx.metrics.wrote("finalizer");
    }
    let teams: std::collections::BTreeSet<String> = ctx
        .flux_configs
        .state()
        .iter()
        .filter_map(|f| f.namespace())
        .collect();
    ctx.metrics
        .teams
        .set(i64::try_from(teams.len()).unwrap_or(i64::MAX));
    match &result {
        Ok(_) => {
            let label = if rejected.load(Ordering::Relaxed) {
                "rejected"
            } else {
                "ok"
            };
            ctx.metrics.reconciled(label, started.elapsed());
            if let Ok(mut f) = failures.lock() {
                f.remove(&key(&fc));
            }
        }
        Err(e) => {
            ctx.metrics.reconciled(e.class_label(), started.elapsed());
            ctx.metrics.reconcile_failed(&namespace, e);
        }
    }
    result
}

fn key(fc: &FluxConfig) -> String {
    format!("{}/{}", fc.namespace().unwrap_or_default(), fc.name_any())
}

fn error_policy(
    fc: &FluxConfig,
    err: &Error,
    failures: &std::sync::Mutex<BTreeMap<String, u32>>,
) -> Action {
    let message = chain(err);
    match err.class() {
        Class::Terminal => {
            warn!(fluxconfig = %key(fc), error = %message, "reconcile failed; waiting for a change");
            Action::await_change()
        }
        Class::Waiting => {
            warn!(fluxconfig = %key(fc), error = %message, "waiting for a dependency");
            Action::requeue(WAITING_RETRY)
        }
        Class::Stale => {
            tracing::debug!(fluxconfig = %key(fc), error = %message, "cache behind the API server; waiting for the watch");
            Action::requeue(STALE_RETRY)
        }
        Class::Transient => {
            let attempt = failures
                .lock()
                .map(|mut f| {
                    let n = f.entry(key(fc)).or_default();
                    *n = n.saturating_add(1);
                    *n
                })
                .unwrap_or(1);
            let seed = fc
                .uid()
                .map(|u| u.bytes().map(u64::from).sum())
                .unwrap_or(0)
                + u64::from(attempt);
            let delay = backoff(attempt.saturating_sub(1), seed);
            warn!(fluxconfig = %key(fc), error = %message, retry_in = ?delay, "reconcile failed; retrying");
            Action::requeue(delay)
        }
    }
}

/// The object reference of a FluxConfig, for events.
pub fn object_ref(fc: &FluxConfig) -> k8s_openapi::api::core::v1::ObjectReference {
    fc.object_ref(&())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use kube::runtime::utils::StreamBackoff;
    use kube::runtime::watcher::DefaultBackoff;

    /// Two watches merged like the controller's triggers: one failing three
    /// times, one with an event; how long until the merged stream ended.
    async fn merged_takes(backoff: impl kube::runtime::utils::Backoff + 'static) -> Duration {
        let failing = stream::iter(["refused", "refused", "410 Expired"].map(Err::<u32, _>));
        let healthy = stream::iter([Ok::<u32, &str>(1)]);
        let merged = stream::select_all([failing.boxed(), healthy.boxed()]);
        let started = tokio::time::Instant::now();
        let items: Vec<_> = StreamBackoff::new(merged, backoff).collect().await;
        assert_eq!(items.len(), 4);
        started.elapsed()
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_in_one_watch_does_not_pause_the_others() {
        assert_eq!(merged_takes(NoSharedBackoff).await, Duration::ZERO);
        // What kube's Controller does by default: each error pauses all.
        assert!(merged_takes(DefaultBackoff::default()).await >= Duration::from_millis(800));
    }
}
