//! The per-FluxConfig driver: one task per FluxConfig served, woken by the
//! interval, by changes of the FluxConfig, and by drift.
//!
//! A sync is a pipeline, each step in its own module:
//!
//! 1. observe (no IO): the FluxConfig's `status.effective`, once the
//!    operator accepted it for the current generation ([`eligibility`]);
//!    in cluster mode its `spec` ([`crate::cluster::read_spec`]);
//! 2. resolve (Git): the commit the reference names; the commit already
//!    applied (with the same effective config) ends the sync here, and a
//!    commit already refused is not tried again;
//! 3. fetch (Git): checkout of that commit;
//! 4. read and validate (local, pure): [`crate::manifests`];
//! 5. discover kinds, dry-run every object, then apply (API):
//!    [`crate::apply`]; a refusal in the dry run leaves the cluster as it
//!    was. In cluster mode cluster-scoped objects (Namespaces,
//!    PlatformDefaults) are applied first; when they change anything, the
//!    namespaced objects (FluxConfigs) are dry-run only after them, since
//!    the admission webhook judges FluxConfigs by those namespaces' labels
//!    and those PlatformDefaults ([`Worker::apply_revision`]);
//! 6. prune what left Git, save the inventory, watch what was applied;
//! 7. status (one write, only when it changed) and events.
//!
//! `spec.suspend` (as `status.effective.suspend`; the spec itself in
//! cluster mode) stops all of it, drift correction included; `Ready` keeps
//! its status with reason `Suspended`.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fluxgate_crds::conditions;
use fluxgate_crds::{FluxConfig, ObjectRef};
use fluxgate_platform_defaults::rules::parse_go_duration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::apply::{
    self, ApplyError, FIELD_MANAGER, Kinds, ObjectKey, Owner, Phase, Planned, Pruned,
};
use crate::cluster;
use crate::config::{CommonArgs, is_plain_name};
use crate::drift::{Tracker, WatchKey};
use crate::error::{Class, SyncError, chain};
use crate::git::{Commit, Credentials, RefName, Selection, Source};
use crate::inventory::{self, Inventory};
use crate::manifests::{self, Policy, Scope, display_object};
use crate::metrics::{Metrics, Reconciled};
use crate::status::{self, Report};

/// How long drift events are collected before re-applying, so one edit
/// that produces several events causes one correction.
const DRIFT_DEBOUNCE: Duration = Duration::from_millis(250);
/// First retry delay after a transient error; doubled up to the interval.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Longest retry delay after a transient error.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long to sleep when only a change of the FluxConfig can help.
const IDLE: Duration = Duration::from_secs(3600);
/// Shortest interval honoured (the operator enforces the platform's
/// minimum; this only protects the Git server from a zero).
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How long, after applying cluster-scoped objects that changed, a refusal
/// of a namespaced object in the dry run is retried: the admission webhook
/// sees new PlatformDefaults and namespace labels through a watch, so it may
/// judge by the old ones for a moment.
const ADMISSION_SETTLE: Duration = Duration::from_secs(10);
/// Pause between those retries.
const SETTLE_STEP: Duration = Duration::from_millis(500);

/// Team or cluster mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncMode {
    /// A team reconciler: configured by `status.effective`, which the
    /// operator resolved; namespaced objects in the allowed namespaces.
    Team,
    /// The platform instance: configured by the FluxConfig's `spec`; the
    /// kinds of the platform repository, cluster-scoped ones included.
    Cluster(cluster::Settings),
}

/// What every worker of a reconciler shares.
pub struct Shared {
    /// The client, authenticated as the team's ServiceAccount.
    pub client: kube::Client,
    /// The team namespace (the platform namespace in cluster mode).
    pub namespace: String,
    /// The flags.
    pub args: CommonArgs,
    /// Team or cluster mode.
    pub mode: SyncMode,
    /// Publishes events on FluxConfigs.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Drift tracking.
    pub tracker: Arc<Tracker>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("namespace", &self.namespace)
            .field("args", &self.args)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The parts of the effective config a sync depends on.
#[derive(Debug, Clone, PartialEq)]
struct Inputs {
    repo: String,
    reference: RefName,
    path: String,
    target_namespace: String,
    allowed_namespaces: Vec<String>,
    credentials_secret: Option<String>,
}

/// Whether and how a FluxConfig should be synced now.
#[derive(Debug)]
enum Eligibility {
    /// The operator has not (yet) accepted it: do nothing, write nothing.
    Wait(String),
    /// `suspend` is set.
    Suspended,
    /// Sync with these inputs at this interval.
    Sync(Inputs, Duration),
}

/// Reads what to do: in team mode from the status (the reconciler never
/// resolves defaults itself), in cluster mode from the spec.
fn eligibility(fc: &FluxConfig, mode: &SyncMode) -> Result<Eligibility, SyncError> {
    match mode {
        SyncMode::Team => team_eligibility(fc),
        SyncMode::Cluster(settings) => {
            let Some(spec) = cluster::read_spec(&fc.spec, settings)? else {
                return Ok(Eligibility::Suspended);
            };
            Ok(Eligibility::Sync(
                Inputs {
                    repo: spec.repo,
                    reference: spec.reference,
                    path: spec.path,
                    target_namespace: String::new(),
                    allowed_namespaces: Vec::new(),
                    credentials_secret: settings.credentials_secret.clone(),
                },
                spec.interval.max(MIN_INTERVAL),
            ))
        }
    }
}

fn team_eligibility(fc: &FluxConfig) -> Result<Eligibility, SyncError> {
    let Some(effective) = fc.status.as_ref().and_then(|s| s.effective.as_ref()) else {
        return Ok(Eligibility::Wait("no effective config yet".into()));
    };
    let Some(accepted) = fc.condition(conditions::ACCEPTED) else {
        return Ok(Eligibility::Wait("not accepted yet".into()));
    };
    if accepted.status != "True" {
        return Ok(Eligibility::Wait(format!(
            "not accepted: {}",
            accepted.message
        )));
    }
    let generation = fc.meta().generation;
    if accepted.observed_generation.is_some() && accepted.observed_generation < generation {
        return Ok(Eligibility::Wait(
            "the operator has not resolved the current generation yet".into(),
        ));
    }
    if effective.suspend.value {
        return Ok(Eligibility::Suspended);
    }
    let reference = RefName::from_git_reference(&effective.git_ref.value).ok_or_else(|| {
        SyncError::Config("ref must set exactly one of branch, tag or commit".into())
    })?;
    let interval = parse_go_duration(&effective.interval.value)
        .map_err(|e| SyncError::Config(format!("interval: {e}")))?
        .max(MIN_INTERVAL);
    let credentials_secret = effective
        .credentials_secret
        .as_ref()
        .map(|s| s.value.clone());
    if let Some(secret) = &credentials_secret
        && !is_plain_name(secret)
    {
        return Err(SyncError::Config(format!(
            "credentials Secret name {secret:?} is not a plain name"
        )));
    }
    Ok(Eligibility::Sync(
        Inputs {
            repo: effective.repo.value.clone(),
            reference,
            path: effective.path.value.clone(),
            target_namespace: effective.target_namespace.value.clone(),
            allowed_namespaces: effective.allowed_namespaces.value.clone(),
            credentials_secret,
        },
        interval,
    ))
}

/// What a FluxConfig change means for the worker: these are compared, the
/// rest (status written by anyone, labels) only triggers a status check.
fn fingerprint(fc: &FluxConfig, mode: &SyncMode) -> String {
    if let SyncMode::Cluster(_) = mode {
        return serde_json::json!({
            "generation": fc.meta().generation,
            "spec": fc.spec,
        })
        .to_string();
    }
    let status = fc.status.as_ref();
    let accepted = fc
        .condition(conditions::ACCEPTED)
        .map(|c| (c.status.clone(), c.observed_generation));
    serde_json::json!({
        "generation": fc.meta().generation,
        "accepted": accepted,
        "effective": status.and_then(|s| s.effective.as_ref()),
    })
    .to_string()
}

/// The revision last applied, and what it was applied from.
#[derive(Debug)]
struct Applied {
    commit: Commit,
    inputs: Inputs,
    planned: Vec<Planned>,
}

/// What a sync did.
#[derive(Debug)]
enum Outcome {
    /// The applied commit is current.
    Unchanged,
    /// The commit was refused before; waiting for a new one.
    StillRefused,
    /// A revision was applied.
    Applied,
}

/// The worker of one FluxConfig.
#[derive(Debug)]
pub struct Worker {
    shared: Arc<Shared>,
    name: String,
    owner: Owner,
    live: Option<Arc<FluxConfig>>,
    fingerprint: Option<String>,
    report: Option<Report>,
    applied: Option<Applied>,
    refused: Option<(String, Inputs)>,
    inventory: Option<Inventory>,
    attempting: Option<String>,
    backoff: Duration,
}

impl Worker {
    /// A worker for FluxConfig `name`.
    pub fn new(shared: Arc<Shared>, name: &str) -> Self {
        let owner = Owner {
            name: name.to_owned(),
            namespace: shared.namespace.clone(),
        };
        Self {
            shared,
            name: name.to_owned(),
            owner,
            live: None,
            fingerprint: None,
            report: None,
            applied: None,
            refused: None,
            inventory: None,
            attempting: None,
            backoff: FIRST_BACKOFF,
        }
    }

    /// Runs until the sender of `fc` is dropped.
    pub async fn run(mut self, mut fc: watch::Receiver<Option<Arc<FluxConfig>>>) {
        let drift: Arc<Notify> = self.shared.tracker.register(&self.name);
        let initial = fc.borrow_and_update().clone();
        self.observe(initial);
        let mut next = Instant::now();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(next) => {
                    next = self.sync().await;
                }
                changed = fc.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let current = fc.borrow_and_update().clone();
                    if self.observe(current) {
                        next = Instant::now();
                    } else if self.serving() {
                        // Someone else rewrote the status (the operator
                        // dropping fields it shared with us): put ours back.
                        self.publish().await;
                    }
                }
                () = drift.notified() => {
                    tokio::time::sleep(DRIFT_DEBOUNCE).await;
                    if let Some(at) = self.correct_drift().await {
                        next = next.min(at);
                    }
                }
            }
        }
        self.shared.tracker.forget_all(&self.name);
    }

    /// Takes a newer FluxConfig; says whether what drives syncing changed.
    fn observe(&mut self, fc: Option<Arc<FluxConfig>>) -> bool {
        let Some(fc) = fc else {
            // Deleted: stop watching its objects (they stay, as applied).
            if self.live.take().is_some() {
                self.shared.tracker.forget_all(&self.name);
                self.shared
                    .metrics
                    .forget(&self.shared.namespace, &self.name);
                self.applied = None;
                self.inventory = None;
                self.report = None;
                self.fingerprint = None;
            }
            return false;
        };
        if let Some(current) = &self.live
            && resource_version(current) > resource_version(&fc)
        {
            return false;
        }
        if self.report.is_none() {
            self.report = Report::from_status(fc.status.as_ref());
        }
        let print = fingerprint(&fc, &self.shared.mode);
        self.live = Some(fc);
        let changed = self.fingerprint.as_ref() != Some(&print);
        self.fingerprint = Some(print);
        changed
    }

    /// Whether the reconciler currently speaks for this FluxConfig (the
    /// operator accepted it; always in cluster mode, where there is no
    /// operator); otherwise the operator's conditions stand.
    fn serving(&self) -> bool {
        self.live
            .as_deref()
            .is_some_and(|fc| match &self.shared.mode {
                SyncMode::Cluster(_) => true,
                SyncMode::Team => matches!(
                    eligibility(fc, &self.shared.mode),
                    Ok(Eligibility::Sync(..) | Eligibility::Suspended)
                ),
            })
    }

    async fn sync(&mut self) -> Instant {
        let Some(fc) = self.live.clone() else {
            return Instant::now() + IDLE;
        };
        let started = Instant::now();
        let (inputs, interval) = match eligibility(&fc, &self.shared.mode) {
            Ok(Eligibility::Wait(why)) => {
                tracing::debug!(flux_config = %self.name, %why, "waiting for the operator");
                // The operator's conditions stand meanwhile.
                self.shared
                    .metrics
                    .clear_conditions(&self.shared.namespace, &self.name);
                return Instant::now() + IDLE;
            }
            Ok(Eligibility::Suspended) => {
                // Resuming re-applies everything, reverting what drifted
                // while suspended.
                self.applied = None;
                self.report = Some(Report::suspended(self.report.as_ref()));
                self.publish().await;
                return Instant::now() + IDLE;
            }
            Ok(Eligibility::Sync(inputs, interval)) => (inputs, interval),
            Err(err) => {
                // A config the operator accepted but this reconciler cannot
                // use (a version skew): a config change wakes the worker,
                // and it looks again now and then.
                self.attempting = None;
                self.fail(&err).await;
                return Instant::now() + MAX_BACKOFF;
            }
        };
        self.attempting = None;
        let result = self.try_sync(&fc, &inputs).await;
        let metrics = self.shared.metrics.clone();
        match result {
            Ok(outcome) => {
                self.backoff = FIRST_BACKOFF;
                let result = match outcome {
                    Outcome::Unchanged => Reconciled::Unchanged,
                    Outcome::StillRefused => Reconciled::Refused,
                    Outcome::Applied => Reconciled::Applied,
                };
                metrics.reconciled(
                    &self.shared.namespace,
                    &self.name,
                    result,
                    started.elapsed(),
                );
                self.publish().await;
                Instant::now() + interval
            }
            Err(err) => {
                let class = self.fail(&err).await;
                metrics.reconciled(
                    &self.shared.namespace,
                    &self.name,
                    Reconciled::Failed(class),
                    started.elapsed(),
                );
                match class {
                    Class::Transient => {
                        let delay = self.backoff;
                        self.backoff = (self.backoff * 2)
                            .min(interval.min(MAX_BACKOFF))
                            .max(FIRST_BACKOFF);
                        Instant::now() + delay
                    }
                    Class::Terminal | Class::Stalled => {
                        self.backoff = FIRST_BACKOFF;
                        Instant::now() + interval
                    }
                }
            }
        }
    }

    /// Reports a failed sync; returns its class.
    async fn fail(&mut self, err: &SyncError) -> Class {
        let failure = err.failure(self.attempting.as_deref());
        self.shared.metrics.failed(
            &self.shared.namespace,
            &self.name,
            failure.class,
            failure.reason,
        );
        tracing::warn!(
            flux_config = %self.name,
            class = failure.class.as_str(),
            error = %failure.error.message,
            "sync failed"
        );
        let repeated = self
            .report
            .as_ref()
            .and_then(|r| r.last_error.as_ref())
            .is_some_and(|e| *e == failure.error);
        self.report = Some(Report::failed(self.report.as_ref(), &failure));
        self.publish().await;
        if !repeated {
            self.event(EventType::Warning, failure.reason, &failure.error.message)
                .await;
        }
        failure.class
    }

    fn source(&self, inputs: &Inputs) -> Result<Source, SyncError> {
        let args = &self.shared.args;
        let credentials = match &inputs.credentials_secret {
            Some(secret) => Some(Credentials::read_dir(&args.credentials_dir.join(secret))?),
            None => None,
        };
        Ok(Source {
            url: inputs.repo.clone(),
            reference: inputs.reference.clone(),
            credentials,
            credentials_secret: inputs.credentials_secret.clone(),
            timeout: args.git_timeout(),
            max_bytes: args.max_repo_bytes,
        })
    }

    async fn try_sync(&mut self, fc: &FluxConfig, inputs: &Inputs) -> Result<Outcome, SyncError> {
        let source = self.source(inputs)?;
        let resolved = source.resolve_async().await?;
        if self
            .applied
            .as_ref()
            .is_some_and(|a| a.commit.sha == resolved.sha && a.inputs == *inputs)
        {
            // A failure since (Git unreachable, say) left an error in the
            // report; the applied revision still runs and is reachable
            // again, so the report goes back to it.
            if self.report.as_ref().is_some_and(|r| r.last_error.is_some())
                && let Some(inventory) = &self.inventory
            {
                self.report = Some(Report::applied(&resolved.revision(), inventory.summary()));
            }
            return Ok(Outcome::Unchanged);
        }
        if self
            .refused
            .as_ref()
            .is_some_and(|(sha, i)| *sha == resolved.sha && i == inputs)
        {
            return Ok(Outcome::StillRefused);
        }
        self.attempting = Some(resolved.revision());
        self.refused = None;
        let known = self
            .report
            .as_ref()
            .and_then(|r| r.last_applied_revision.as_deref());
        // A restarted reconciler re-applies its last revision without
        // announcing it: nothing changes for the reader.
        if known != Some(resolved.revision().as_str()) {
            self.report = Some(Report::progressing(
                self.report.as_ref(),
                &resolved.revision(),
            ));
            self.publish().await;
        }

        let dir = self.shared.args.work_dir.join(&self.name);
        let checkout = dir.join("checkout");
        let selection = Selection {
            path: inputs.path.clone(),
            max_files: self.shared.args.max_files,
        };
        let fetched = source
            .fetch_selected_async(dir.join("cache.git"), checkout.clone(), selection)
            .await
            .map_err(SyncError::from);
        let commit = match fetched {
            Ok(commit) => commit,
            Err(err) => {
                // Too many files or bytes: the commit itself is refused.
                if err.failure(None).class == Class::Terminal {
                    self.refused = Some((resolved.sha.clone(), inputs.clone()));
                }
                return Err(err);
            }
        };
        let revision = commit.revision();
        self.attempting = Some(revision.clone());
        let result = self.apply_revision(fc, inputs, &commit, &checkout).await;
        // Only a terminal failure is about the commit; the others may clear
        // without a new one.
        if let Err(err) = &result
            && err.failure(None).class == Class::Terminal
        {
            self.refused = Some((commit.sha.clone(), inputs.clone()));
        }
        result
    }

    async fn apply_revision(
        &mut self,
        fc: &FluxConfig,
        inputs: &Inputs,
        commit: &Commit,
        checkout: &Path,
    ) -> Result<Outcome, SyncError> {
        let shared = self.shared.clone();
        let client = &shared.client;
        let revision = commit.revision();
        let limits = shared.args.limits();
        let (root, path) = (checkout.to_owned(), inputs.path.clone());
        let docs =
            tokio::task::spawn_blocking(move || manifests::read_on_own_stack(&root, &path, limits))
                .await
                .map_err(|e| SyncError::Local(std::io::Error::other(e)))??;

        let types: BTreeSet<(&str, &str)> = docs
            .iter()
            .filter_map(|d| manifests::type_of(&d.value))
            .collect();
        let kinds = Kinds::discover(client, types).await?;
        let policy = match &shared.mode {
            SyncMode::Team => Policy::new(
                &inputs.target_namespace,
                &shared.namespace,
                &inputs.allowed_namespaces,
                inventory::CONFIG_MAP_PREFIX,
            ),
            SyncMode::Cluster(settings) => Policy::cluster(
                &shared.namespace,
                &settings.extra_kinds,
                inventory::CONFIG_MAP_PREFIX,
            ),
        };
        let validated = manifests::validate(docs, |av, k| kinds.scope(av, k), &policy)?;
        let mut planned = apply::plan(validated, &kinds, &self.owner);
        let previous = self.load_inventory(fc).await?;

        // `plan` puts cluster-scoped objects (cluster mode only) first.
        let split = planned
            .iter()
            .position(|p| p.manifest.scope == Scope::Namespaced)
            .unwrap_or(planned.len());
        let (cluster_scoped, namespaced) = planned.split_at_mut(split);
        let rules_change = self.dry_run_cluster_scoped(cluster_scoped).await?;
        if !rules_change {
            // The whole set first: a bad object leaves the cluster untouched.
            for p in namespaced.iter() {
                apply::dry_run(client, std::slice::from_ref(p)).await?;
                shared.metrics.wrote("dry_run");
            }
        }
        let mut done: Vec<ObjectRef> = Vec::with_capacity(planned.len());
        let mut result = self.apply_each(&planned[..split], &mut done).await;
        if result.is_ok() && rules_change {
            result = self.dry_run_after_cluster_scoped(&planned[split..]).await;
        }
        if result.is_ok() {
            result = self.apply_each(&planned[split..], &mut done).await;
        }
        if let Err(err) = result {
            // Keep what was applied so far prunable.
            let mut merged = previous.entries.clone();
            merged.extend(done);
            self.save_inventory(Inventory::new(previous.revision.clone(), merged))
                .await;
            return Err(err.into());
        }

        let keep: HashSet<ObjectKey> = planned.iter().map(Planned::key).collect();
        let mut stale: Vec<&ObjectRef> = previous
            .entries
            .iter()
            .filter(|e| !keep.contains(&ObjectKey::of_ref(e)))
            .collect();
        // FluxConfigs before PlatformDefaults before Namespaces.
        stale.sort_by_key(|e| {
            let group = e.api_version.rsplit_once('/').map_or("", |(g, _)| g);
            let scope = if e.namespace.is_some() {
                Scope::Namespaced
            } else {
                Scope::Cluster
            };
            std::cmp::Reverse((
                apply::stage(group, &e.kind, scope),
                apply::kind_rank(group, &e.kind),
            ))
        });
        let mut kinds = kinds;
        let mut pruned = Vec::new();
        let mut released = Vec::new();
        let mut kept = Vec::new();
        for entry in stale {
            shared.tracker.forget(&ObjectKey::of_ref(entry));
            match apply::prune(client, &mut kinds, entry, &self.owner).await {
                Ok(Pruned::Deleted) => {
                    shared.metrics.wrote("delete");
                    shared.metrics.pruned.inc();
                    pruned.push(display_ref(entry));
                }
                Ok(Pruned::Released) => {
                    shared.metrics.wrote("apply");
                    released.push(display_ref(entry));
                }
                Ok(Pruned::Gone) => {}
                Ok(Pruned::NotOwned | Pruned::Forbidden) => kept.push(display_ref(entry)),
                Err(err) => {
                    let mut merged: Vec<ObjectRef> =
                        planned.iter().map(|p| p.manifest.object_ref()).collect();
                    merged.extend(previous.entries.iter().cloned());
                    self.save_inventory(Inventory::new(previous.revision.clone(), merged))
                        .await;
                    return Err(err.into());
                }
            }
        }
        if !kept.is_empty() {
            tracing::warn!(
                flux_config = %self.name,
                objects = ?kept,
                "objects gone from Git were left alone: they no longer carry this FluxConfig's labels, or the reconciler may not delete them"
            );
        }

        let current = Inventory::new(
            Some(revision.clone()),
            planned.iter().map(|p| p.manifest.object_ref()).collect(),
        );
        if current != previous {
            self.save_inventory(current.clone()).await;
        }
        self.inventory = Some(current.clone());
        let watches: BTreeSet<WatchKey> = planned
            .iter()
            .map(|p| WatchKey::new(&p.resource, &p.manifest.namespace))
            .collect();
        shared.tracker.watch(&self.name, watches);
        self.update_managed_gauge(previous.entries.len(), current.entries.len());

        let announced = self
            .report
            .as_ref()
            .and_then(|r| r.last_applied_revision.as_deref())
            == Some(revision.as_str());
        self.report = Some(Report::applied(&revision, current.summary()));
        self.applied = Some(Applied {
            commit: commit.clone(),
            inputs: inputs.clone(),
            planned,
        });
        tracing::info!(flux_config = %self.name, %revision, objects = current.entries.len(), pruned = pruned.len(), "revision applied");
        if !announced {
            self.event(
                EventType::Normal,
                "RevisionApplied",
                &format!(
                    "Applied revision {revision}: {} objects",
                    current.entries.len()
                ),
            )
            .await;
        }
        if !pruned.is_empty() {
            self.event(
                EventType::Normal,
                "Pruned",
                &format!("Deleted objects gone from Git: {}", pruned.join(", ")),
            )
            .await;
        }
        if !released.is_empty() {
            self.event(
                EventType::Normal,
                "Released",
                &format!(
                    "Objects gone from Git existed before they were applied, so they were kept without the reconciler's labels: {}",
                    released.join(", ")
                ),
            )
            .await;
        }
        Ok(Outcome::Applied)
    }

    /// Cluster mode: dry-runs the cluster-scoped objects (nothing to do in
    /// team mode, which has none), marking Namespaces that existed before
    /// as adopted (pruning them later releases rather than deletes them).
    /// Says whether applying them would change anything: then the rules the
    /// webhook admits FluxConfigs by may change, and the namespaced objects
    /// can only be judged after they are applied.
    async fn dry_run_cluster_scoped(&self, planned: &mut [Planned]) -> Result<bool, ApplyError> {
        let shared = &self.shared;
        let mut changes = false;
        for p in planned.iter_mut() {
            let live = apply::get_live(&shared.client, p).await?;
            if p.resource.group.is_empty()
                && p.resource.kind == "Namespace"
                && live
                    .as_ref()
                    .is_some_and(|l| apply::is_adopted(l, &self.owner))
            {
                p.mark_adopted();
            }
            let would_be = apply::dry_run_one(&shared.client, p, Phase::DryRun).await?;
            shared.metrics.wrote("dry_run");
            changes |= apply::differs(live.as_ref(), &would_be);
        }
        Ok(changes)
    }

    /// Dry-runs the namespaced objects once the cluster-scoped ones they
    /// depend on are applied; a refusal is retried for
    /// [`ADMISSION_SETTLE`], while the webhook catches up.
    async fn dry_run_after_cluster_scoped(&self, planned: &[Planned]) -> Result<(), ApplyError> {
        let shared = &self.shared;
        let deadline = Instant::now() + ADMISSION_SETTLE;
        for p in planned {
            loop {
                let result =
                    apply::dry_run_one(&shared.client, p, Phase::DryRunAfterClusterScoped).await;
                shared.metrics.wrote("dry_run");
                match result {
                    Ok(_) => break,
                    Err(ApplyError::Rejected { .. }) if Instant::now() < deadline => {
                        tokio::time::sleep(SETTLE_STEP).await;
                    }
                    Err(err) => return Err(err),
                }
            }
        }
        Ok(())
    }

    /// Applies `planned` in order, recording each applied object in `done`.
    async fn apply_each(
        &self,
        planned: &[Planned],
        done: &mut Vec<ObjectRef>,
    ) -> Result<(), ApplyError> {
        let shared = &self.shared;
        for p in planned {
            let key = p.key();
            shared.tracker.applying(&self.name, &key);
            match apply::apply(&shared.client, p).await {
                Ok(fields) => {
                    shared.metrics.wrote("apply");
                    shared.tracker.applied(&self.name, &key, fields);
                    done.push(p.manifest.object_ref());
                }
                Err(err) => {
                    shared.tracker.forget(&key);
                    return Err(err);
                }
            }
        }
        Ok(())
    }

    fn update_managed_gauge(&self, before: usize, after: usize) {
        let delta = i64::try_from(after).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(0);
        self.shared.metrics.managed_objects.inc_by(delta);
    }

    async fn load_inventory(&mut self, fc: &FluxConfig) -> Result<Inventory, SyncError> {
        if let Some(inventory) = &self.inventory {
            return Ok(inventory.clone());
        }
        let shared = &self.shared;
        let stored = inventory::load(&shared.client, &shared.namespace, &self.name)
            .await
            .map_err(|source| {
                SyncError::Apply(apply::ApplyError::Prune {
                    object: format!(
                        "ConfigMap/{}/{}",
                        shared.namespace,
                        inventory::config_map_name(&self.name)
                    ),
                    source,
                })
            })?;
        let inventory = stored.unwrap_or_else(|| {
            let status = fc.status.as_ref();
            Inventory::new(
                status.and_then(|s| s.last_applied_revision.clone()),
                status
                    .and_then(|s| s.inventory.as_ref())
                    .map(|i| i.entries.clone())
                    .unwrap_or_default(),
            )
        });
        self.shared
            .metrics
            .managed_objects
            .inc_by(i64::try_from(inventory.entries.len()).unwrap_or(0));
        self.inventory = Some(inventory.clone());
        Ok(inventory)
    }

    async fn save_inventory(&mut self, inventory: Inventory) {
        let shared = &self.shared;
        match inventory::save(&shared.client, &shared.namespace, &self.name, &inventory).await {
            Ok(true) => shared.metrics.wrote("inventory"),
            Ok(false) => tracing::warn!(
                flux_config = %self.name,
                "no rights to store the inventory ConfigMap in the team namespace; pruning relies on status.inventory (complete up to 100 objects)"
            ),
            Err(e) => {
                tracing::warn!(flux_config = %self.name, error = %chain(&e), "cannot store the inventory")
            }
        }
        self.inventory = Some(inventory);
    }

    /// Re-applies objects that drifted; returns when to sync next if a
    /// full sync is needed.
    async fn correct_drift(&mut self) -> Option<Instant> {
        let keys = self.shared.tracker.take_drifted(&self.name);
        if keys.is_empty() {
            return None;
        }
        let fc = self.live.clone()?;
        if !matches!(
            eligibility(&fc, &self.shared.mode),
            Ok(Eligibility::Sync(..))
        ) {
            return None;
        }
        let Some(applied) = &self.applied else {
            return Some(Instant::now());
        };
        let shared = self.shared.clone();
        let mut fixed = Vec::new();
        let mut failed = None;
        for key in keys {
            let Some(planned) = applied.planned.iter().find(|p| p.key() == key) else {
                continue;
            };
            shared.tracker.applying(&self.name, &key);
            match apply::apply(&shared.client, planned).await {
                Ok(fields) => {
                    shared.metrics.wrote("apply");
                    shared.metrics.drift_corrections.inc();
                    shared.tracker.applied(&self.name, &key, fields);
                    fixed.push(key.to_string());
                }
                Err(err) => {
                    shared.tracker.applied(&self.name, &key, None);
                    failed = Some(err);
                    break;
                }
            }
        }
        if !fixed.is_empty() {
            tracing::info!(flux_config = %self.name, objects = ?fixed, "drift corrected");
            self.event(
                EventType::Normal,
                "DriftCorrected",
                &format!(
                    "Re-applied objects changed outside Git: {}",
                    fixed.join(", ")
                ),
            )
            .await;
        }
        if let Some(err) = failed {
            self.attempting = self.applied.as_ref().map(|a| a.commit.revision());
            self.fail(&SyncError::Apply(err)).await;
            // A full sync re-applies everything.
            self.applied = None;
            return Some(Instant::now() + self.backoff);
        }
        None
    }

    /// Writes the status if it differs from the live one.
    async fn publish(&mut self) {
        let (Some(fc), Some(report)) = (&self.live, &self.report) else {
            return;
        };
        self.shared
            .metrics
            .report(&self.shared.namespace, &self.name, report);
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let Some(body) = status::patch(fc, report, &now) else {
            return;
        };
        let api: Api<FluxConfig> =
            Api::namespaced(self.shared.client.clone(), &self.shared.namespace);
        match api
            .patch_status(
                &self.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(updated) => {
                self.shared.metrics.wrote("status");
                self.observe(Some(Arc::new(updated)));
            }
            Err(e) => {
                tracing::warn!(flux_config = %self.name, error = %chain(&e), "cannot write status; retrying later");
            }
        }
    }

    async fn event(&self, type_: EventType, reason: &str, note: &str) {
        let Some(fc) = &self.live else {
            return;
        };
        let mut note = note.to_owned();
        if note.len() > 1000 {
            let mut cut = 990;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
            note.push('…');
        }
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        match self
            .shared
            .recorder
            .publish(&event, &fc.object_ref(&()))
            .await
        {
            Ok(()) => self.shared.metrics.wrote("event"),
            Err(e) => {
                tracing::warn!(flux_config = %self.name, error = %chain(&e), "cannot record event")
            }
        }
    }
}

fn display_ref(r: &ObjectRef) -> String {
    display_object(&r.kind, r.namespace.as_deref().unwrap_or_default(), &r.name)
}

/// Resource versions are opaque, but etcd's are increasing integers; an
/// unparsable one counts as newest.
fn resource_version(fc: &FluxConfig) -> u64 {
    fc.meta()
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use fluxgate_crds::FluxConfigSpec;
    use serde_json::json;

    use super::*;

    fn fc(accepted: &str, accepted_generation: i64, suspend: bool) -> FluxConfig {
        let mut fc = FluxConfig::new(
            "web",
            FluxConfigSpec {
                repo: "https://git.example/x".into(),
                ..FluxConfigSpec::default()
            },
        );
        fc.metadata.generation = Some(2);
        fc.status = Some(
            serde_json::from_value(json!({
                "conditions": [{
                    "type": "Accepted", "status": accepted, "reason": "Accepted", "message": "m",
                    "observedGeneration": accepted_generation,
                    "lastTransitionTime": "2024-01-01T00:00:00Z",
                }],
                "effective": {
                    "repo": {"value": "https://git.example/x", "source": "spec"},
                    "ref": {"value": {"branch": "main"}, "source": "builtin"},
                    "path": {"value": ".", "source": "builtin"},
                    "targetNamespace": {"value": "team-a", "source": "builtin"},
                    "allowedNamespaces": {"value": ["team-a"], "source": "builtin"},
                    "interval": {"value": "30s", "source": "builtin"},
                    "suspend": {"value": suspend, "source": "spec"},
                    "credentialsSecret": {"value": "git-corp", "source": "PlatformDefaults/x"},
                    "reconcilerImage": {"value": "img", "source": "builtin"},
                    "reconcilerClusterRole": {"value": "role", "source": "builtin"},
                },
            }))
            .unwrap(),
        );
        fc
    }

    #[test]
    fn syncs_only_what_the_operator_accepted_for_this_generation() {
        let Eligibility::Sync(inputs, interval) =
            eligibility(&fc("True", 2, false), &SyncMode::Team).unwrap()
        else {
            panic!("should sync");
        };
        assert_eq!(interval, Duration::from_secs(30));
        assert_eq!(inputs.reference, RefName::Branch("main".into()));
        assert_eq!(inputs.credentials_secret.as_deref(), Some("git-corp"));
        assert!(matches!(
            eligibility(&fc("False", 2, false), &SyncMode::Team).unwrap(),
            Eligibility::Wait(_)
        ));
        assert!(matches!(
            eligibility(&fc("True", 1, false), &SyncMode::Team).unwrap(),
            Eligibility::Wait(_)
        ));
        assert!(matches!(
            eligibility(&fc("True", 2, true), &SyncMode::Team).unwrap(),
            Eligibility::Suspended
        ));
        let mut no_status = fc("True", 2, false);
        no_status.status = None;
        assert!(matches!(
            eligibility(&no_status, &SyncMode::Team).unwrap(),
            Eligibility::Wait(_)
        ));
    }

    #[test]
    fn refuses_credentials_names_that_are_paths() {
        let mut f = fc("True", 2, false);
        let effective = f.status.as_mut().unwrap().effective.as_mut().unwrap();
        effective.credentials_secret.as_mut().unwrap().value = "../../etc".into();
        assert!(matches!(
            eligibility(&f, &SyncMode::Team),
            Err(SyncError::Config(_))
        ));
    }

    #[test]
    fn status_writes_by_others_do_not_change_the_fingerprint() {
        let a = fc("True", 2, false);
        let mut b = a.clone();
        b.status.as_mut().unwrap().last_applied_revision = Some("x".into());
        assert_eq!(
            fingerprint(&a, &SyncMode::Team),
            fingerprint(&b, &SyncMode::Team)
        );
        b.metadata.generation = Some(3);
        assert_ne!(
            fingerprint(&a, &SyncMode::Team),
            fingerprint(&b, &SyncMode::Team)
        );
    }

    fn cluster_mode() -> SyncMode {
        SyncMode::Cluster(cluster::Settings {
            extra_kinds: Vec::new(),
            credentials_secret: Some("git-platform".into()),
        })
    }

    #[test]
    fn cluster_mode_syncs_from_the_spec_without_the_operator() {
        // No status at all: the spec is the configuration.
        let mut f = fc("True", 2, false);
        f.status = None;
        f.spec.interval = Some("30s".into());
        let Eligibility::Sync(inputs, interval) = eligibility(&f, &cluster_mode()).unwrap() else {
            panic!("should sync");
        };
        assert_eq!(inputs.repo, "https://git.example/x");
        assert_eq!(inputs.reference, RefName::Branch("main".into()));
        assert_eq!(inputs.path, ".");
        assert_eq!(inputs.credentials_secret.as_deref(), Some("git-platform"));
        assert_eq!(interval, Duration::from_secs(30));

        f.spec.suspend = Some(true);
        assert!(matches!(
            eligibility(&f, &cluster_mode()).unwrap(),
            Eligibility::Suspended
        ));
        f.spec.suspend = None;
        f.spec.repo = "https://u:p@git.example/x".into();
        assert!(matches!(
            eligibility(&f, &cluster_mode()),
            Err(SyncError::Config(_))
        ));
    }

    #[test]
    fn cluster_mode_fingerprints_the_spec() {
        let a = fc("True", 2, false);
        let mut b = a.clone();
        // The operator's fields mean nothing to the platform instance.
        b.status.as_mut().unwrap().effective = None;
        assert_eq!(
            fingerprint(&a, &cluster_mode()),
            fingerprint(&b, &cluster_mode())
        );
        b.spec.interval = Some("1m".into());
        assert_ne!(
            fingerprint(&a, &cluster_mode()),
            fingerprint(&b, &cluster_mode())
        );
    }
}
