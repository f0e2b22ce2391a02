//! `reconciler-bench`: a team reconciler syncing a repository of N
//! manifests, against a real control plane and a real Git server, compared
//! with `git clone --depth 1` + `kubectl apply --server-side` of the same
//! manifests.
//!
//! ```text
//! cargo run --release -p fluxgate-bench --bin reconciler-bench -- --manifests 1000
//! ```
//!
//! 1. Serves a repository of `--manifests` ConfigMaps (nested directories
//!    under `deploy/`, deterministic) from the loopback Git server of the
//!    test harness, and a second one with the same manifests plus
//!    `--history-mib` MiB of history (commits rewriting incompressible
//!    files outside `deploy/`).
//! 2. Starts etcd + kube-apiserver + kube-controller-manager with the test
//!    harness and installs the CRDs and the platform's ClusterRole.
//! 3. Baselines: `git clone --depth 1` of the repository, then `kubectl
//!    apply --server-side -f deploy -R` into a fresh namespace (again with
//!    nothing changed, and once more with `--dry-run=server` first, which is
//!    the same requests the reconciler sends).
//! 4. In-process reconciler (`fluxgate_reconciler::run_with_client`, with
//!    the team ServiceAccount's token and the RBAC the operator grants; the
//!    FluxConfig's `status.effective` is written by the benchmark as the
//!    operator would): first sync, a window with nothing changing (writes
//!    in the audit log, polls, the time of the `ls-remote` a poll does),
//!    commit-to-applied for one-file changes, drift reverts.
//! 5. The reconciler binary as a separate process (a kubeconfig holding the
//!    token, like `fluxgate_e2e::runner`): the same for memory and CPU, read
//!    from `/proc/<pid>`; then the history repository.
//!
//! It prints figures and ratios and asserts nothing: a benchmark, not a
//! test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;
use fluxgate_bench::{
    BoxError, clock_ticks, cpu_seconds, load_average, machine, median, memory, ms, ratio,
    rustc_version, secs, version_of,
};
use fluxgate_crds::{FluxConfig, conditions};
use fluxgate_e2e::gitserver::{GitServer, Repo};
use fluxgate_e2e::testenv::{self, ControlPlane};
use fluxgate_reconciler::git::{RefName, Source};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const FC: &str = "app";
const SA: &str = "fluxgate-reconciler";
const CLUSTER_ROLE: &str = "fluxgate-team-reconciler";
/// The harness's admin user (kubectl runs as it).
const ADMIN_USER: &str = "fluxgate-admin";

/// Flags.
#[derive(Debug, Parser)]
#[command(
    name = "reconciler-bench",
    about = "A fluxgate team reconciler syncing a repository of N manifests"
)]
struct Args {
    /// ConfigMaps in the repository.
    #[arg(long, default_value_t = 1000)]
    manifests: usize,
    /// History of the second repository, in MiB (0: no second repository).
    #[arg(long, default_value_t = 20)]
    history_mib: usize,
    /// The FluxConfig's poll interval, in seconds.
    #[arg(long, default_value_t = 1)]
    interval_seconds: u64,
    /// One-file commits measured (commit to applied).
    #[arg(long, default_value_t = 3)]
    commits: usize,
    /// ConfigMaps edited by hand and timed until reverted.
    #[arg(long, default_value_t = 3)]
    drift_edits: usize,
    /// Length of the window with nothing changing, in seconds.
    #[arg(long, default_value_t = 10)]
    steady_seconds: u64,
    /// `ls-remote` calls timed (what a poll that finds the same commit does).
    #[arg(long, default_value_t = 20)]
    polls: usize,
    /// The reconciler binary for the separate-process runs; default: build
    /// `target/release/fluxgate-reconciler` with cargo.
    #[arg(long)]
    reconciler_bin: Option<PathBuf>,
    /// Skip the separate-process runs.
    #[arg(long)]
    no_process: bool,
    /// Give up waiting for any one step after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
}

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------
// Machine, processes, small helpers.

/// Time to create 1,000 files of 400 bytes in 100 directories under the
/// temporary directory, as a checkout of the repository does: on this
/// machine's disk it varies several-fold from run to run, and both the
/// baseline's clone and the reconciler's checkout pay it.
fn file_creation_probe() -> String {
    let probe = || -> Result<Duration, BoxError> {
        let dir = tempfile::tempdir()?;
        let started = Instant::now();
        for i in 0..1000 {
            let sub = dir.path().join(format!("d{}", i % 100));
            std::fs::create_dir_all(&sub)?;
            std::fs::write(sub.join(format!("f{i}.yaml")), [b'x'; 400])?;
        }
        Ok(started.elapsed())
    };
    match probe() {
        Ok(took) => format!(
            "{:.0} ms to create 1,000 small files in {}",
            ms(took),
            std::env::temp_dir().display()
        ),
        Err(e) => format!("failed: {e}"),
    }
}

fn list_ms(values: &[Duration]) -> String {
    values
        .iter()
        .map(|d| format!("{:.0}", ms(*d)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Total size of the files under `dir`, in bytes.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BoxError> + Send + 'static,
) -> Result<T, BoxError> {
    tokio::task::spawn_blocking(f).await?
}

/// Polls `check` every `step` until it gives `Some`; errors after `timeout`.
async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    step: Duration,
    mut check: F,
) -> Result<T, BoxError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {timeout:?} waiting for {what}").into());
        }
        tokio::time::sleep(step).await;
    }
}

// ---------------------------------------------------------------------------
// The repositories.

/// Where manifest `i` lives: 10 areas × 10 groups of nested directories.
fn manifest_path(i: usize) -> String {
    format!(
        "deploy/area-{}/group-{}/cm-{i:05}.yaml",
        i % 10,
        (i / 10) % 10
    )
}

fn manifest_name(i: usize) -> String {
    format!("cm-{i:05}")
}

/// ConfigMap `i` at `revision`: a few keys, about 400 bytes.
fn manifest(i: usize, revision: usize) -> String {
    format!(
        "# Generated by reconciler-bench.\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  \
           name: {name}\n  \
           labels:\n    \
             app.kubernetes.io/part-of: bench\n    \
             bench.fluxgate.dev/area: area-{area}\n\
         data:\n  \
           index: \"{i}\"\n  \
           revision: \"{revision}\"\n  \
           settings.properties: |\n    \
             feature.alpha=true\n    \
             max.connections={conn}\n    \
             endpoint=https://svc-{i}.team.example.internal:8443\n    \
             timeout.seconds={timeout}\n",
        name = manifest_name(i),
        area = i % 10,
        conn = 16 + i % 240,
        timeout = 5 + i % 55,
    )
}

/// Writes the N manifests and a README into the working clone.
fn write_manifests(repo: &Repo, n: usize) -> Result<u64, BoxError> {
    let mut bytes = 0;
    let root = repo.work_dir();
    std::fs::write(
        root.join("README.md"),
        "# bench\n\nManifests under deploy/.\n",
    )?;
    for i in 0..n {
        let path = root.join(manifest_path(i));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = manifest(i, 1);
        bytes += text.len() as u64;
        std::fs::write(path, text)?;
    }
    Ok(bytes)
}

/// Deterministic incompressible bytes (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Size of the history commits' files.
const HISTORY_FILE_BYTES: usize = 512 * 1024;
/// How many distinct files the history commits rewrite.
const HISTORY_FILES: usize = 4;

/// The manifests, then `mib` MiB of history: commits each rewriting one of
/// four 512 KiB incompressible files under `assets/`. Pushed once.
fn write_history_repo(repo: &Repo, n: usize, mib: usize) -> Result<(String, usize), BoxError> {
    write_manifests(repo, n)?;
    repo.git(&["add", "-A"])?;
    repo.git(&["commit", "-q", "-m", "manifests"])?;
    let commits = mib * 1024 * 1024 / HISTORY_FILE_BYTES;
    let assets = repo.work_dir().join("assets");
    std::fs::create_dir_all(&assets)?;
    for k in 0..commits {
        std::fs::write(
            assets.join(format!("blob-{}.bin", k % HISTORY_FILES)),
            noise(k as u64 + 1, HISTORY_FILE_BYTES),
        )?;
        repo.git(&["add", "-A"])?;
        repo.git(&["commit", "-q", "-m", &format!("assets {k}")])?;
    }
    repo.git(&["push", "-q", "origin", "main"])?;
    Ok((repo.head()?, commits + 1))
}

fn revision(sha: &str) -> String {
    format!("main@sha1:{sha}")
}

// ---------------------------------------------------------------------------
// The cluster side: what the platform and the operator would set up.

async fn apply_as(admin: &Client, doc: &Value, manager: &str) -> Result<(), BoxError> {
    let obj: DynamicObject = serde_json::from_value(doc.clone())?;
    let types = obj.types.as_ref().ok_or("a document without a kind")?;
    let gvk = kube::core::GroupVersionKind::try_from(types)?;
    let (ar, _) = kube::discovery::pinned_kind(admin, &gvk).await?;
    let api: Api<DynamicObject> = match obj.metadata.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(admin.clone(), ns, &ar),
        None => Api::all_with(admin.clone(), &ar),
    };
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(manager).force(),
        &Patch::Apply(doc),
    )
    .await?;
    Ok(())
}

/// The CRDs and the platform's ClusterRole for team reconcilers.
async fn install_platform(admin: &Client) -> Result<(), BoxError> {
    testenv::install_crds(admin, fluxgate_crds::all_crds()).await?;
    // The chart's team ClusterRole (deploy/manifests/fluxgate.yaml).
    for doc in fluxgate_e2e::stack::installed("reconciler", &["ClusterRole"])? {
        apply_as(admin, &doc, "platform-team").await?;
    }
    Ok(())
}

async fn create_namespace(admin: &Client, name: &str) -> Result<(), BoxError> {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "fluxgate.dev/bench".to_owned(),
                "reconciler".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

/// What the operator provisions in a team namespace (see
/// `platform-defaults/templates/*.yaml.tera`), as in `tests/tests/reconciler.rs`.
async fn provision(admin: &Client, ns: &str) -> Result<(), BoxError> {
    let manager = "fluxgate.dev/operator";
    apply_as(
        admin,
        &json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": SA, "namespace": ns}}),
        manager,
    )
    .await?;
    apply_as(
        admin,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "fluxgate-reconciler-status", "namespace": ns},
               "rules": [
                   {"apiGroups": ["fluxgate.dev"], "resources": ["fluxconfigs"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": ["fluxgate.dev"], "resources": ["fluxconfigs/status"], "verbs": ["get", "patch", "update"]},
                   {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
               ]}),
        manager,
    )
    .await?;
    apply_as(
        admin,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": SA, "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fluxgate-reconciler-status"},
               "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}]}),
        manager,
    )
    .await?;
    apply_as(
        admin,
        &json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": format!("fluxgate-reconciler-{ns}"), "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CLUSTER_ROLE},
               "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}]}),
        manager,
    )
    .await?;
    Ok(())
}

/// A team namespace, its RBAC, and a FluxConfig whose `status.effective`
/// (and `Accepted`) is written as the operator would.
async fn team(admin: &Client, ns: &str, repo_url: &str, interval: &str) -> Result<(), BoxError> {
    create_namespace(admin, ns).await?;
    provision(admin, ns).await?;
    let fc: FluxConfig = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {"name": FC, "namespace": ns},
        "spec": {"repo": repo_url, "interval": interval},
    }))?;
    let api: Api<FluxConfig> = Api::namespaced(admin.clone(), ns);
    let created = api.create(&PostParams::default(), &fc).await?;
    let generation = created.metadata.generation.unwrap_or(1);
    let now = "2026-01-01T00:00:00Z";
    let status = json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "status": {
            "observedGeneration": generation,
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "the config satisfies the platform's rules", "observedGeneration": generation, "lastTransitionTime": now},
                {"type": "Provisioned", "status": "True", "reason": "Provisioned", "message": "Deployment fluxgate-reconciler and its rights are in place", "observedGeneration": generation, "lastTransitionTime": now},
            ],
            "effective": {
                "repo": {"value": repo_url, "source": "spec"},
                "ref": {"value": {"branch": "main"}, "source": "builtin"},
                "path": {"value": "deploy", "source": "PlatformDefaults/bench"},
                "targetNamespace": {"value": ns, "source": "builtin"},
                "allowedNamespaces": {"value": [ns], "source": "PlatformDefaults/bench"},
                "interval": {"value": interval, "source": "spec"},
                "suspend": {"value": false, "source": "builtin"},
                "reconcilerImage": {"value": "registry.corp.example/fluxgate/reconciler:v1", "source": "builtin"},
                "reconcilerClusterRole": {"value": CLUSTER_ROLE, "source": "builtin"},
            },
        },
    });
    api.patch_status(
        FC,
        &PatchParams::apply("fluxgate.dev/operator").force(),
        &Patch::Apply(&status),
    )
    .await?;
    Ok(())
}

fn ready_at(fc: &FluxConfig, rev: &str, objects: usize) -> bool {
    let Some(status) = fc.status.as_ref() else {
        return false;
    };
    fc.condition(conditions::READY)
        .is_some_and(|c| c.status == "True" && c.observed_generation == fc.metadata.generation)
        && status.last_applied_revision.as_deref() == Some(rev)
        && status
            .inventory
            .as_ref()
            .is_some_and(|i| i.total == objects as i64)
}

/// Waits (polling every 50 ms) until the FluxConfig is Ready at `rev` with
/// `objects` in its inventory; returns when that was seen.
async fn wait_ready(
    admin: &Client,
    ns: &str,
    rev: &str,
    objects: usize,
    timeout: Duration,
) -> Result<Instant, BoxError> {
    let api: Api<FluxConfig> = Api::namespaced(admin.clone(), ns);
    let result = wait_for(
        &format!("{ns}/{FC} Ready at {rev}"),
        timeout,
        Duration::from_millis(50),
        || {
            let api = api.clone();
            async move {
                let fc = api.get(FC).await.ok()?;
                ready_at(&fc, rev, objects).then(Instant::now)
            }
        },
    )
    .await;
    if result.is_err()
        && let Ok(fc) = api.get(FC).await
    {
        eprintln!(
            "last status of {ns}/{FC}: {}",
            serde_json::to_string(&fc.status).unwrap_or_default()
        );
    }
    result
}

async fn cm_data(cms: &Api<ConfigMap>, name: &str, key: &str) -> Option<String> {
    cms.get_opt(name).await.ok()??.data?.get(key).cloned()
}

// ---------------------------------------------------------------------------
// The audit log.

/// Requests of one user between two marks, by kind.
#[derive(Debug, Default)]
struct Requests {
    dry_run: usize,
    apply: usize,
    status: usize,
    inventory: usize,
    events: usize,
    deletes: usize,
    other_writes: usize,
    reads: usize,
    /// Microseconds since the epoch: first dry run received, last dry run
    /// completed, first apply received, last apply completed.
    first_dry_run: Option<i64>,
    last_dry_run: Option<i64>,
    first_apply: Option<i64>,
    last_apply: Option<i64>,
}

impl Requests {
    fn writes(&self) -> usize {
        self.dry_run
            + self.apply
            + self.status
            + self.inventory
            + self.events
            + self.deletes
            + self.other_writes
    }

    fn describe(&self) -> String {
        format!(
            "{} writes (dry-run {}, apply {}, status {}, inventory {}, event {}, delete {}, other {}), {} reads",
            self.writes(),
            self.dry_run,
            self.apply,
            self.status,
            self.inventory,
            self.events,
            self.deletes,
            self.other_writes,
            self.reads
        )
    }
}

fn micros(v: &Value) -> Option<i64> {
    v.as_str()?
        .parse::<Timestamp>()
        .ok()
        .map(|t| t.as_microsecond())
}

/// The audit log's line count, and the requests of `user` (with a user
/// agent starting with `agent`, if given) after line `since`.
fn audit(cp: &ControlPlane, since: usize, user: &str, agent: Option<&str>) -> (usize, Requests) {
    let mut r = Requests::default();
    let mut lines = 0;
    for (i, line) in audit_log(cp).enumerate() {
        lines = i + 1;
        if i < since {
            continue;
        }
        let Ok(e) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if e["user"]["username"] != user {
            continue;
        }
        if let Some(agent) = agent
            && !e["userAgent"]
                .as_str()
                .unwrap_or_default()
                .starts_with(agent)
        {
            continue;
        }
        let ok = e["responseStatus"]["code"]
            .as_u64()
            .is_some_and(|c| (200..300).contains(&c));
        let verb = e["verb"].as_str().unwrap_or_default();
        if !["create", "update", "patch", "delete", "deletecollection"].contains(&verb) {
            r.reads += 1;
            continue;
        }
        if !ok {
            r.other_writes += 1;
            continue;
        }
        let uri = e["requestURI"].as_str().unwrap_or_default();
        let resource = e["objectRef"]["resource"].as_str().unwrap_or_default();
        let subresource = e["objectRef"]["subresource"].as_str().unwrap_or_default();
        let name = e["objectRef"]["name"].as_str().unwrap_or_default();
        let (received, done) = (
            micros(&e["requestReceivedTimestamp"]),
            micros(&e["stageTimestamp"]),
        );
        if resource == "fluxconfigs" && subresource == "status" {
            r.status += 1;
        } else if resource == "events" {
            r.events += 1;
        } else if resource == "configmaps" && name.starts_with("fluxgate-inventory-") {
            r.inventory += 1;
        } else if verb.starts_with("delete") {
            r.deletes += 1;
        } else if verb == "patch" && uri.contains("dryRun=All") {
            r.dry_run += 1;
            r.first_dry_run = r.first_dry_run.or(received);
            r.last_dry_run = done.or(r.last_dry_run);
        } else if verb == "patch" {
            r.apply += 1;
            r.first_apply = r.first_apply.or(received);
            r.last_apply = done.or(r.last_apply);
        } else {
            r.other_writes += 1;
        }
    }
    (lines, r)
}

fn audit_lines(cp: &ControlPlane) -> usize {
    audit_log(cp).count()
}

/// The audit log's lines, read as a stream: the log grows to tens of MiB,
/// which would otherwise show in this process's memory figures.
fn audit_log(cp: &ControlPlane) -> impl Iterator<Item = String> {
    use std::io::BufRead as _;
    std::fs::File::open(cp.audit_log_path())
        .ok()
        .map(std::io::BufReader::new)
        .into_iter()
        .flat_map(|r| r.lines().map_while(Result::ok))
}

/// Where the time of a sync went, from the audit log's timestamps; `start`
/// is the wall clock (µs) of the moment the sync was triggered, `seen` of
/// the moment the benchmark saw `Ready`.
fn phases(r: &Requests, start: i64, seen: i64) -> String {
    let s = |us: i64| us as f64 / 1e6;
    match (r.first_dry_run, r.last_dry_run, r.first_apply, r.last_apply) {
        (Some(fd), Some(ld), Some(fa), Some(la)) => format!(
            "to the first dry run {:.2} s (poll wait, ls-remote, fetch, checkout, read, validate, discovery, inventory); \
             dry runs {:.2} s ({:.0}/s); applies {:.2} s ({:.0}/s); last apply to Ready seen {:.2} s (inventory, status, event, 50 ms polling)",
            s(fd - start),
            s(ld - fd),
            r.dry_run as f64 / s(ld - fd).max(1e-6),
            s(la - fa),
            r.apply as f64 / s(la - fa).max(1e-6),
            s(seen - la),
        ),
        _ => "no dry run or apply in the audit log".into(),
    }
}

fn now_micros() -> i64 {
    Timestamp::now().as_microsecond()
}

// ---------------------------------------------------------------------------
// Reconcilers.

fn reconciler_user(ns: &str) -> String {
    format!("system:serviceaccount:{ns}:{SA}")
}

fn reconcile_argv(ns: &str, work: &Path, credentials: &Path, max_files: usize) -> Vec<String> {
    vec![
        "fluxgate-reconciler".to_owned(),
        "--log-format=text".to_owned(),
        "reconcile".to_owned(),
        format!("--namespace={ns}"),
        format!("--flux-configs={FC}"),
        format!("--credentials-dir={}", credentials.display()),
        format!("--work-dir={}", work.display()),
        format!("--max-files={max_files}"),
        "--git-timeout-seconds=60".to_owned(),
    ]
}

/// A reconciler running in this process as the team's ServiceAccount.
struct InProcess {
    handle: fluxgate_reconciler::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), fluxgate_reconciler::RunError>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    async fn start(
        cp: &ControlPlane,
        admin: &Client,
        ns: &str,
        max_files: usize,
    ) -> Result<Self, BoxError> {
        let token = testenv::service_account_token(admin, ns, SA).await?;
        let client = cp.client_for_token(&token)?;
        let dir = tempfile::tempdir()?;
        let creds = dir.path().join("credentials");
        std::fs::create_dir_all(&creds)?;
        let argv = reconcile_argv(ns, &dir.path().join("work"), &creds, max_files);
        let cli = fluxgate_reconciler::Cli::try_parse_from(argv)?;
        let fluxgate_reconciler::Command::Reconcile(args) = cli.command;
        let handle = fluxgate_reconciler::Handle::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(fluxgate_reconciler::run_with_client(
            client,
            args,
            handle.clone(),
            async move {
                let _ = rx.await;
            },
        ));
        Ok(Self {
            handle,
            stop: Some(tx),
            task,
            _dir: dir,
        })
    }

    async fn stop(mut self) -> Result<(), BoxError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task).await???;
        Ok(())
    }
}

/// The reconciler binary as a separate process, run the way the local
/// runner of the test harness runs it: a kubeconfig with the token.
struct Process {
    child: tokio::process::Child,
    pid: String,
    admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Process {
    async fn start(
        cp: &ControlPlane,
        admin: &Client,
        binary: &Path,
        ns: &str,
        max_files: usize,
    ) -> Result<Self, BoxError> {
        let token = testenv::service_account_token(admin, ns, SA).await?;
        let dir = tempfile::tempdir()?;
        let kubeconfig = dir.path().join("kubeconfig");
        let config = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "pod",
            "clusters": [{"name": "local", "cluster": {
                "server": cp.server_url(),
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(cp.ca_cert_pem()),
            }}],
            "users": [{"name": SA, "user": {"token": token}}],
            "contexts": [{"name": "pod", "context": {"cluster": "local", "user": SA, "namespace": ns}}],
        });
        std::fs::write(&kubeconfig, config.to_string())?;
        let creds = dir.path().join("credentials");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&creds)?;
        std::fs::create_dir_all(&home)?;
        let admin_addr = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?
        };
        let mut argv = reconcile_argv(ns, &dir.path().join("work"), &creds, max_files);
        argv.push(format!("--admin-listen={admin_addr}"));
        let log = std::fs::File::create(dir.path().join("reconciler.log"))?;
        let child = tokio::process::Command::new(binary)
            .args(&argv[1..])
            .env("HOME", &home)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let pid = child
            .id()
            .ok_or("the reconciler exited at once")?
            .to_string();
        Ok(Self {
            child,
            pid,
            admin: admin_addr,
            dir,
        })
    }

    fn memory(&self) -> (f64, f64) {
        memory(&self.pid)
    }

    fn cpu(&self, ticks: f64) -> f64 {
        cpu_seconds(&self.pid, ticks)
    }

    /// `fluxgate_reconciler_<name>` from the admin server's `/metrics`.
    async fn metric(&self, name: &str) -> Option<f64> {
        let mut stream = tokio::net::TcpStream::connect(self.admin).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        let wanted = format!("fluxgate_reconciler_{name} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&wanted))
            .and_then(|v| v.trim().parse().ok())
    }

    fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("reconciler.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    async fn stop(mut self) -> Result<(), BoxError> {
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!(
                "the reconciler process had exited ({status}):\n{}",
                self.log_tail()
            );
        }
        self.child.start_kill()?;
        let _ = self.child.wait().await?;
        Ok(())
    }
}

/// Builds the release reconciler binary (a no-op when it is up to date).
async fn reconciler_binary(args: &Args) -> Result<PathBuf, BoxError> {
    if let Some(bin) = &args.reconciler_bin {
        return Ok(bin.clone());
    }
    Ok(tokio::task::spawn_blocking(|| fluxgate_e2e::runner::build_reconciler(true)).await??)
}

// ---------------------------------------------------------------------------
// Git and kubectl baselines.

fn git_command(home: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new("git");
    command
        .env("HOME", home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null());
    command
}

/// `git clone -q [--depth 1] <url> <dest>`; returns its wall time.
async fn git_clone(
    url: &str,
    dest: &Path,
    shallow: bool,
    home: &Path,
) -> Result<Duration, BoxError> {
    let mut command = git_command(home);
    command.args(["clone", "-q"]);
    if shallow {
        command.args(["--depth", "1"]);
    }
    command.arg(url).arg(dest);
    let started = Instant::now();
    let out = command.output().await?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!("git clone failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(took)
}

/// `kubectl <args>` as the admin; returns its wall time.
async fn kubectl(cp: &ControlPlane, args: &[&str]) -> Result<Duration, BoxError> {
    let mut command = tokio::process::Command::from(cp.kubectl(args));
    command.stdout(std::process::Stdio::null());
    let started = Instant::now();
    let out = command.output().await?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(took)
}

/// The reconciler's fetch (depth 1 into a fresh bare cache, checkout), the
/// code a sync runs, timed directly.
async fn reconciler_fetch(url: &str, scratch: &Path, run: usize) -> Result<Duration, BoxError> {
    let source = git_source(url);
    let dir = scratch.join(format!("fetch-{run}"));
    let started = Instant::now();
    source
        .fetch_async(dir.join("cache.git"), dir.join("checkout"))
        .await?;
    Ok(started.elapsed())
}

fn git_source(url: &str) -> Source {
    Source {
        url: url.to_owned(),
        reference: RefName::Branch("main".into()),
        credentials: None,
        credentials_secret: None,
        timeout: Duration::from_secs(60),
        max_bytes: fluxgate_reconciler::manifests::DEFAULT_MAX_BYTES,
    }
}

// ---------------------------------------------------------------------------
// The measurements shared by both ways of running the reconciler.

/// The control plane, the admin client, and how long to wait for a step.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    cp: &'a ControlPlane,
    admin: &'a Client,
    timeout: Duration,
}

/// First sync: from the reconciler's start to `Ready` at `rev` with
/// `objects` inventoried. Returns the time and the requests.
async fn first_sync(
    ctx: Ctx<'_>,
    ns: &str,
    rev: &str,
    objects: usize,
    mark: usize,
    start: (Instant, i64),
) -> Result<(Duration, Requests, String), BoxError> {
    let Ctx { cp, admin, timeout } = ctx;
    let seen = wait_ready(admin, ns, rev, objects, timeout).await?;
    let seen_us = start.1 + i64::try_from(seen.duration_since(start.0).as_micros())?;
    let took = seen.duration_since(start.0);
    // Let the audit log catch up with the last requests.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, requests) = audit(cp, mark, &reconciler_user(ns), None);
    let breakdown = phases(&requests, start.1, seen_us);
    Ok((took, requests, breakdown))
}

/// One-file commits, each timed from its push to `Ready` at the new
/// revision. Returns the latencies and a line per commit.
async fn commits(
    ctx: Ctx<'_>,
    ns: &str,
    repo: &Repo,
    n: usize,
    count: usize,
    seed: usize,
) -> Result<(Vec<Duration>, Vec<String>), BoxError> {
    let Ctx { cp, admin, timeout } = ctx;
    let mut latencies = Vec::new();
    let mut lines = Vec::new();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    for c in 0..count {
        let i = (seed + c * 7919) % n;
        let generation = 100 + seed + c;
        let repo_c = repo.clone();
        let mark = audit_lines(cp);
        let sha = blocking(move || {
            Ok(repo_c.commit_files(
                &[(&manifest_path(i), &manifest(i, generation))],
                &format!("change {}", manifest_name(i)),
            )?)
        })
        .await?;
        let pushed = (Instant::now(), now_micros());
        let seen = wait_ready(admin, ns, &revision(&sha), n, timeout).await?;
        let took = seen.duration_since(pushed.0);
        let value = cm_data(&cms, &manifest_name(i), "revision").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, requests) = audit(cp, mark, &reconciler_user(ns), None);
        let seen_us = pushed.1 + i64::try_from(took.as_micros())?;
        lines.push(format!(
            "commit {} ({} -> revision {}): {:.2} s; ConfigMap now at revision {}; {}; {}",
            c + 1,
            manifest_name(i),
            generation,
            secs(took),
            value.unwrap_or_else(|| "?".into()),
            requests.describe(),
            phases(&requests, pushed.1, seen_us)
        ));
        latencies.push(took);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Ok((latencies, lines))
}

/// Edits `count` applied ConfigMaps by hand (a merge patch of one data key,
/// like `kubectl patch`), and deletes one; each timed until reverted
/// (polling every 20 ms).
async fn drift(
    ctx: Ctx<'_>,
    ns: &str,
    n: usize,
    count: usize,
    seed: usize,
) -> Result<(Vec<Duration>, Option<Duration>, Requests), BoxError> {
    let Ctx { cp, admin, timeout } = ctx;
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), ns);
    let mark = audit_lines(cp);
    let mut edits = Vec::new();
    for d in 0..count {
        let name = manifest_name((seed + d * 31 + 5) % n);
        let original = cm_data(&cms, &name, "index")
            .await
            .ok_or("no ConfigMap to edit")?;
        cms.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"index": "edited by hand"}})),
        )
        .await?;
        let edited = Instant::now();
        wait_for(
            &format!("{name} reverted"),
            timeout,
            Duration::from_millis(20),
            || {
                let cms = cms.clone();
                let (name, original) = (name.clone(), original.clone());
                async move {
                    (cm_data(&cms, &name, "index").await.as_deref() == Some(original.as_str()))
                        .then_some(())
                }
            },
        )
        .await?;
        edits.push(edited.elapsed());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let name = manifest_name((seed + 17) % n);
    cms.delete(&name, &DeleteParams::default()).await?;
    let deleted = Instant::now();
    let recreated = wait_for(
        &format!("{name} recreated"),
        timeout,
        Duration::from_millis(20),
        || {
            let cms = cms.clone();
            let name = name.clone();
            async move { cms.get_opt(&name).await.ok()?.map(|_| ()) }
        },
    )
    .await
    .ok()
    .map(|()| deleted.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, requests) = audit(cp, mark, &reconciler_user(ns), None);
    Ok((edits, recreated, requests))
}

/// The window with nothing changing: the audit-log requests of the
/// reconciler and the Git server's requests.
struct Steady {
    requests: Requests,
    ref_advertisements: u64,
    upload_packs: u64,
}

async fn steady(
    cp: &ControlPlane,
    server: &GitServer,
    ns: &str,
    seconds: u64,
) -> Result<Steady, BoxError> {
    let mark = audit_lines(cp);
    let refs = server.counters().ref_advertisements.load(Ordering::Relaxed);
    let packs = server.counters().upload_packs.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let ref_advertisements = server.counters().ref_advertisements.load(Ordering::Relaxed) - refs;
    let upload_packs = server.counters().upload_packs.load(Ordering::Relaxed) - packs;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, requests) = audit(cp, mark, &reconciler_user(ns), None);
    Ok(Steady {
        requests,
        ref_advertisements,
        upload_packs,
    })
}

// ---------------------------------------------------------------------------

async fn run(args: Args) -> Result<(), BoxError> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            // The harness's readiness probes fail while the control plane
            // starts; kube's client logs each failure.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client::client::builder=off".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let n = args.manifests.max(1);
    let timeout = Duration::from_secs(args.timeout_seconds);
    let interval = format!("{}s", args.interval_seconds.max(1));
    let max_files = (n + 10).max(fluxgate_reconciler::manifests::DEFAULT_MAX_FILES);
    let ticks = clock_ticks();
    let bench_started = Instant::now();
    let command: Vec<String> = std::env::args().collect();
    println!("# fluxgate reconciler benchmark");
    println!("date:       {}", Timestamp::now());
    println!(
        "command:    cargo run --release -p fluxgate-bench --bin reconciler-bench -- {}",
        command[1..].join(" ")
    );
    println!("machine:    {}", machine());
    println!("load:       {} (1/5/15 min, at start)", load_average());
    println!("disk:       {}", file_creation_probe());
    println!(
        "toolchain:  {}; {}",
        rustc_version(),
        version_of(Path::new("git"), &["--version"])
    );
    println!(
        "settings:   {n} manifests, history {} MiB, interval {interval}, {} commits, {} drift edits, steady window {} s",
        args.history_mib, args.commits, args.drift_edits, args.steady_seconds
    );

    // The reconciler binary first: building it competes for the CPUs.
    let binary = if args.no_process {
        None
    } else {
        Some(reconciler_binary(&args).await?)
    };
    let (rss_start, _) = memory("self");

    // Repositories.
    let server = GitServer::start().await?;
    let repo = server.create_repo("app")?;
    let made = Instant::now();
    let repo_c = repo.clone();
    let (manifest_bytes, head) = blocking(move || {
        let bytes = write_manifests(&repo_c, n)?;
        let sha = repo_c.commit(&format!("{n} manifests"))?;
        Ok((bytes, sha))
    })
    .await?;
    println!(
        "repository: {} ({n} ConfigMaps in 100 directories deploy/area-*/group-*/, {:.0} KiB of YAML, 1 commit, bare repository {:.1} MiB), made in {:.1} s",
        server.url("app"),
        manifest_bytes as f64 / 1024.0,
        dir_size(repo.bare_dir()) as f64 / 1048576.0,
        secs(made.elapsed())
    );
    let history = if args.history_mib > 0 {
        let hrepo = server.create_repo("app-history")?;
        let made = Instant::now();
        let hrepo_c = hrepo.clone();
        let mib = args.history_mib;
        let (hhead, hcommits) = blocking(move || write_history_repo(&hrepo_c, n, mib)).await?;
        println!(
            "history:    {} (the same manifests, then {} commits each rewriting one of {HISTORY_FILES} incompressible 512 KiB files under assets/; {hcommits} commits, bare repository {:.1} MiB, head tree {:.1} MiB), made in {:.1} s",
            server.url("app-history"),
            hcommits - 1,
            dir_size(hrepo.bare_dir()) as f64 / 1048576.0,
            (manifest_bytes as f64 + (HISTORY_FILES * HISTORY_FILE_BYTES) as f64) / 1048576.0,
            secs(made.elapsed())
        );
        Some((hrepo, hhead))
    } else {
        None
    };

    // The control plane.
    let cp = Arc::new(tokio::task::spawn_blocking(ControlPlane::start).await??);
    let admin = cp.client()?;
    let version = admin.apiserver_version().await?;
    println!(
        "cluster:    kube-apiserver {} + etcd + kube-controller-manager on loopback (no scheduler, no kubelet), started in {:.1?}; {}",
        version.git_version,
        cp.startup_time(),
        version_of(&cp.bin_dir().join("kubectl"), &["version", "--client"])
    );
    install_platform(&admin).await?;
    let ctx = Ctx {
        cp: &cp,
        admin: &admin,
        timeout,
    };

    // Let the controller manager finish its start-up work first.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let scratch = tempfile::tempdir()?;
    let home = scratch.path().join("home");
    std::fs::create_dir_all(&home)?;

    // ---- Baselines: git clone --depth 1, kubectl apply --server-side.
    let url = server.url("app");
    let mut clones = Vec::new();
    for k in 0..3 {
        clones.push(
            git_clone(
                &url,
                &scratch.path().join(format!("clone-{k}")),
                true,
                &home,
            )
            .await?,
        );
    }
    let clone = median(&clones);
    let deploy = scratch.path().join("clone-0").join("deploy");
    let deploy_s = deploy.display().to_string();
    create_namespace(&admin, "kubectl-a").await?;
    create_namespace(&admin, "kubectl-b").await?;
    let mark = audit_lines(&cp);
    let kubectl_apply = kubectl(
        &cp,
        &[
            "apply",
            "--server-side",
            "-R",
            "-f",
            &deploy_s,
            "-n",
            "kubectl-a",
        ],
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mark2, kubectl_requests) = audit(&cp, mark, ADMIN_USER, Some("kubectl"));
    let kubectl_again = kubectl(
        &cp,
        &[
            "apply",
            "--server-side",
            "-R",
            "-f",
            &deploy_s,
            "-n",
            "kubectl-a",
        ],
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, again_requests) = audit(&cp, mark2, ADMIN_USER, Some("kubectl"));
    let kubectl_dry = kubectl(
        &cp,
        &[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-R",
            "-f",
            &deploy_s,
            "-n",
            "kubectl-b",
        ],
    )
    .await?;
    let kubectl_after_dry = kubectl(
        &cp,
        &[
            "apply",
            "--server-side",
            "-R",
            "-f",
            &deploy_s,
            "-n",
            "kubectl-b",
        ],
    )
    .await?;
    let baseline = clone + kubectl_apply;
    let baseline_dry = clone + kubectl_dry + kubectl_after_dry;
    // The baseline's namespaces go before the reconciler runs: the
    // namespace controller deleting 2,000 ConfigMaps would compete with it.
    let namespaces = Api::<Namespace>::all(admin.clone());
    let cleanup = Instant::now();
    for name in ["kubectl-a", "kubectl-b"] {
        namespaces.delete(name, &DeleteParams::default()).await?;
    }
    for name in ["kubectl-a", "kubectl-b"] {
        wait_for(
            &format!("namespace {name} deleted"),
            timeout,
            Duration::from_millis(200),
            || {
                let namespaces = namespaces.clone();
                async move { namespaces.get_opt(name).await.ok()?.is_none().then_some(()) }
            },
        )
        .await?;
    }
    let cleanup = cleanup.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;

    println!();
    println!("## baseline: git clone --depth 1 + kubectl apply --server-side -R -f deploy/");
    println!(
        "git clone --depth 1:     {:.0} ms (median of 3: {} ms)",
        ms(clone),
        list_ms(&clones)
    );
    println!(
        "kubectl apply:           {:.2} s into a fresh namespace ({:.0} objects/s); {}",
        secs(kubectl_apply),
        n as f64 / secs(kubectl_apply),
        kubectl_requests.describe()
    );
    println!(
        "kubectl apply again:     {:.2} s, nothing changed; {}",
        secs(kubectl_again),
        again_requests.describe()
    );
    println!(
        "kubectl --dry-run=server, then apply: {:.2} s + {:.2} s (the requests the reconciler sends: a dry run of every object, then the applies)",
        secs(kubectl_dry),
        secs(kubectl_after_dry)
    );
    println!(
        "clone + apply:           {:.2} s; with the dry run first {:.2} s",
        secs(baseline),
        secs(baseline_dry)
    );
    println!(
        "(the two namespaces were then deleted, in {:.1} s, before the reconciler started)",
        secs(cleanup)
    );

    // ---- The reconciler in this process.
    let ns = "team-a";
    let (rss_before, hwm_before) = memory("self");
    let cpu_before = cpu_seconds("self", ticks);
    team(&admin, ns, &url, &interval).await?;
    let mark = audit_lines(&cp);
    let start = (Instant::now(), now_micros());
    let reconciler = InProcess::start(&cp, &admin, ns, max_files).await?;
    let (first, first_requests, first_phases) =
        first_sync(ctx, ns, &revision(&head), n, mark, start).await?;
    let (rss_first, hwm_first) = memory("self");
    let cpu_first = cpu_seconds("self", ticks) - cpu_before;
    println!();
    println!("## reconciler in this process (run_with_client, team ServiceAccount token)");
    println!(
        "first sync:              {:.2} s from the reconciler's start to Ready at the commit with {n} objects inventoried",
        secs(first)
    );
    println!("  where the time went:   {first_phases}");
    println!("  requests (audit log):  {}", first_requests.describe());
    println!(
        "  this process's CPU:    {:.2} s (reconciler, benchmark client, Git server; git http-backend and the control plane are other processes)",
        cpu_first
    );

    // Steady: nothing changes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let unchanged_before = reconciler.handle.metrics.reconciles("unchanged");
    let writes_before = reconciler.handle.metrics.total_writes();
    let cpu_steady_before = cpu_seconds("self", ticks);
    let quiet = steady(&cp, &server, ns, args.steady_seconds).await?;
    let cpu_steady = cpu_seconds("self", ticks) - cpu_steady_before;
    let unchanged = reconciler.handle.metrics.reconciles("unchanged") - unchanged_before;
    let counter_writes = reconciler.handle.metrics.total_writes() - writes_before;
    let mut polls = Vec::new();
    let source = git_source(&url);
    for _ in 0..args.polls {
        let started = Instant::now();
        source.resolve_async().await?;
        polls.push(started.elapsed());
    }
    polls.sort();
    let poll = median(&polls);
    println!(
        "no-change window ({} s, interval {interval}): {unchanged} polls finding the same commit; writes: {} in the audit log, {counter_writes} by the reconciler's counter; {} reads; Git server: {} ref advertisements, {} fetches",
        args.steady_seconds,
        quiet.requests.writes(),
        quiet.requests.reads,
        quiet.ref_advertisements,
        quiet.upload_packs
    );
    println!(
        "  one such poll (the ls-remote it runs, git::Source::resolve_async timed {} times): median {:.1} ms, min {:.1}, max {:.1}; this process's CPU in the window {:.2} s",
        polls.len(),
        ms(poll),
        polls.first().map_or(0.0, |d| ms(*d)),
        polls.last().map_or(0.0, |d| ms(*d)),
        cpu_steady
    );

    // Commits.
    let (latencies, commit_lines) = commits(ctx, ns, &repo, n, args.commits, 0).await?;
    println!(
        "commit to applied:       median {:.2} s ({} s) for one-file commits, interval {interval}",
        secs(median(&latencies)),
        latencies
            .iter()
            .map(|d| format!("{:.2}", secs(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for line in &commit_lines {
        println!("  {line}");
    }

    // Drift.
    let (edits, recreated, drift_requests) = drift(ctx, ns, n, args.drift_edits, 0).await?;
    println!(
        "drift revert:            edit (merge patch of one key) median {:.0} ms ({} ms); delete {}; {} (includes the 250 ms debounce and 20 ms polling)",
        ms(median(&edits)),
        list_ms(&edits),
        recreated.map_or_else(|| "not recreated".into(), |d| format!("{:.0} ms", ms(d))),
        drift_requests.describe()
    );
    let (rss_after, hwm_after) = memory("self");
    println!(
        "memory (this process):   VmRSS {rss_start:.0} MiB at start, {rss_before:.0} MiB before the reconciler, {rss_first:.0} MiB after the first sync, {rss_after:.0} MiB at the end; VmHWM {hwm_before:.0} -> {hwm_first:.0} -> {hwm_after:.0} MiB (includes the harness's clients, the Git server, the repositories' generation)"
    );
    reconciler.stop().await?;

    // ---- The reconciler as a separate process.
    let mut process_first = None;
    let mut history_first = None;
    if let Some(binary) = &binary {
        let ns = "team-b";
        let head = repo.head()?;
        team(&admin, ns, &url, &interval).await?;
        let mark = audit_lines(&cp);
        let start = (Instant::now(), now_micros());
        let process = Process::start(&cp, &admin, binary, ns, max_files).await?;
        let result = async {
            let (took, requests, breakdown) =
                first_sync(ctx, ns, &revision(&head), n, mark, start).await?;
            let (rss_first, hwm_first) = process.memory();
            let cpu_first = process.cpu(ticks);
            println!();
            println!(
                "## reconciler as a separate process ({}, kubeconfig with the token)",
                binary.display()
            );
            println!(
                "first sync:              {:.2} s from spawning the process to Ready with {n} objects",
                secs(took)
            );
            println!("  where the time went:   {breakdown}");
            println!("  requests (audit log):  {}", requests.describe());
            println!(
                "  reconciler CPU:        {cpu_first:.2} s; VmRSS {rss_first:.1} MiB, VmHWM {hwm_first:.1} MiB"
            );
            tokio::time::sleep(Duration::from_secs(2)).await;
            let unchanged_before = process.metric("reconciles_total{result=\"unchanged\"}").await;
            let cpu_before = process.cpu(ticks);
            let quiet = steady(&cp, &server, ns, args.steady_seconds).await?;
            let cpu_quiet = process.cpu(ticks) - cpu_before;
            let unchanged = process
                .metric("reconciles_total{result=\"unchanged\"}")
                .await
                .zip(unchanged_before)
                .map_or(f64::NAN, |(a, b)| a - b);
            println!(
                "no-change window ({} s): {unchanged} polls; writes {} in the audit log, {} reads; Git: {} ref advertisements, {} fetches; reconciler CPU {:.3} s ({:.1} ms per poll)",
                args.steady_seconds,
                quiet.requests.writes(),
                quiet.requests.reads,
                quiet.ref_advertisements,
                quiet.upload_packs,
                cpu_quiet,
                cpu_quiet * 1000.0 / unchanged.max(1.0)
            );
            let cpu_before = process.cpu(ticks);
            let (latencies, lines) =
                commits(ctx, ns, &repo, n, 1, 5000).await?;
            let cpu_commit = process.cpu(ticks) - cpu_before;
            println!(
                "commit to applied:       {:.2} s; reconciler CPU {cpu_commit:.2} s",
                secs(median(&latencies))
            );
            for line in &lines {
                println!("  {line}");
            }
            let (edits, recreated, _) = drift(ctx, ns, n, 1, 500).await?;
            println!(
                "drift revert:            edit {} ms, delete {}",
                list_ms(&edits),
                recreated.map_or_else(|| "not recreated".into(), |d| format!("{:.0} ms", ms(d)))
            );
            let (rss_end, hwm_end) = process.memory();
            println!(
                "memory (reconciler process): VmRSS {rss_first:.1} MiB after the first sync, {rss_end:.1} MiB at the end; peak (VmHWM) {hwm_end:.1} MiB; CPU in total {:.2} s",
                process.cpu(ticks)
            );
            Ok::<_, BoxError>(took)
        }
        .await;
        if result.is_err() {
            eprintln!("reconciler log:\n{}", process.log_tail());
        }
        process.stop().await?;
        process_first = Some(result?);
    }

    // ---- The history repository.
    if let Some((hrepo, hhead)) = &history {
        let hurl = server.url("app-history");
        let mut shallow = Vec::new();
        let mut full = Vec::new();
        let mut fetches = Vec::new();
        let mut plain_fetches = Vec::new();
        for k in 0..3 {
            shallow.push(
                git_clone(
                    &hurl,
                    &scratch.path().join(format!("hclone-{k}")),
                    true,
                    &home,
                )
                .await?,
            );
            full.push(
                git_clone(
                    &hurl,
                    &scratch.path().join(format!("hfull-{k}")),
                    false,
                    &home,
                )
                .await?,
            );
            fetches.push(reconciler_fetch(&hurl, scratch.path(), k).await?);
            plain_fetches.push(reconciler_fetch(&url, scratch.path(), 10 + k).await?);
        }
        println!();
        println!(
            "## repository with {} MiB of history ({})",
            args.history_mib,
            hrepo.bare_dir().display()
        );
        println!(
            "git clone --depth 1:     median {:.0} ms ({} ms); plain repository {:.0} ms",
            ms(median(&shallow)),
            list_ms(&shallow),
            ms(clone)
        );
        println!(
            "git clone (full):        median {:.0} ms ({} ms)",
            ms(median(&full)),
            list_ms(&full)
        );
        println!(
            "reconciler fetch (git::Source::fetch_async, depth 1, cold cache, checkout): median {:.0} ms ({} ms); plain repository {:.0} ms ({} ms)",
            ms(median(&fetches)),
            list_ms(&fetches),
            ms(median(&plain_fetches)),
            list_ms(&plain_fetches)
        );
        let ns = "team-c";
        team(&admin, ns, &hurl, &interval).await?;
        let mark = audit_lines(&cp);
        let start = (Instant::now(), now_micros());
        if let Some(binary) = &binary {
            let process = Process::start(&cp, &admin, binary, ns, max_files).await?;
            let result = first_sync(ctx, ns, &revision(hhead), n, mark, start).await;
            let (rss, hwm) = process.memory();
            let cpu = process.cpu(ticks);
            if result.is_err() {
                eprintln!("reconciler log:\n{}", process.log_tail());
            }
            process.stop().await?;
            let (took, requests, breakdown) = result?;
            println!(
                "first sync (separate process): {:.2} s; reconciler CPU {cpu:.2} s, VmRSS {rss:.1} MiB, VmHWM {hwm:.1} MiB",
                secs(took)
            );
            println!("  where the time went:   {breakdown}");
            println!("  requests (audit log):  {}", requests.describe());
            history_first = Some(took);
        } else {
            let reconciler = InProcess::start(&cp, &admin, ns, max_files).await?;
            let result = first_sync(ctx, ns, &revision(hhead), n, mark, start).await;
            reconciler.stop().await?;
            let (took, requests, breakdown) = result?;
            println!("first sync (in process): {:.2} s", secs(took));
            println!("  where the time went:   {breakdown}");
            println!("  requests (audit log):  {}", requests.describe());
            history_first = Some(took);
        }
    }

    println!();
    println!("## ratios");
    println!(
        "first sync / (clone + kubectl apply):            {:.2}x in process ({:.2} s / {:.2} s){}",
        ratio(first, baseline),
        secs(first),
        secs(baseline),
        process_first.map_or_else(String::new, |p| format!(
            "; {:.2}x as a separate process ({:.2} s)",
            ratio(p, baseline),
            secs(p)
        ))
    );
    println!(
        "first sync / (clone + kubectl dry run + apply):   {:.2}x in process{}",
        ratio(first, baseline_dry),
        process_first.map_or_else(String::new, |p| format!(
            "; {:.2}x as a separate process",
            ratio(p, baseline_dry)
        ))
    );
    println!(
        "no-change poll / kubectl apply with nothing changed: {:.4}x ({:.1} ms / {:.2} s), writes {} vs {}",
        ratio(poll, kubectl_again),
        ms(poll),
        secs(kubectl_again),
        quiet.requests.writes(),
        again_requests.writes()
    );
    if let Some(h) = history_first {
        println!(
            "first sync, {} MiB history / plain:             {:.2}x ({:.2} s / {:.2} s)",
            args.history_mib,
            ratio(h, process_first.unwrap_or(first)),
            secs(h),
            secs(process_first.unwrap_or(first))
        );
    }
    println!();
    println!(
        "total benchmark time: {:.0} s; load at the end: {}; disk: {}",
        secs(bench_started.elapsed()),
        load_average(),
        file_creation_probe()
    );
    drop(admin);
    tokio::task::spawn_blocking(move || drop(cp)).await?;
    drop(server);
    Ok(())
}
