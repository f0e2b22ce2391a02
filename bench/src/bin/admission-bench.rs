//! `admission-bench`: creating N FluxConfigs through a real kube-apiserver
//! with no admission for them, with the fluxgate webhook, and with the same
//! core rule as a ValidatingAdmissionPolicy (in-tree CEL), in one run.
//!
//! ```text
//! cargo run --release -p fluxgate-bench --bin admission-bench
//! cargo run --release -p fluxgate-bench --bin admission-bench -- --count 1000 --concurrency 1,8 --rounds 3 --namespaces 10 --warmup 50
//! ```
//!
//! 1. Starts etcd + kube-apiserver + kube-controller-manager with the test
//!    harness, installs the CRDs and one PlatformDefaults selecting the
//!    benchmark's namespaces: repositories
//!    `https://git.corp.example/{namespace}/*`, target namespaces
//!    `{namespace}` and `{namespace}-*`, clusters `prod-eu` and `staging`,
//!    intervals from 1m to 24h.
//! 2. Three configurations: **none** (nothing admits FluxConfigs beyond the
//!    built-in plugins), **webhook** (the fluxgate webhook, in this process
//!    on its own runtime, registered with `failurePolicy: Fail` by
//!    `stack::start_webhook`, which waits until the API server enforces it;
//!    deregistered and stopped afterwards), **VAP** (a
//!    ValidatingAdmissionPolicy and its binding expressing the same checks
//!    for that PlatformDefaults in CEL; deleted afterwards). Each switch is
//!    confirmed with a dry-run create of a FluxConfig with a foreign
//!    repository: denied while admission is on, allowed once off. The run
//!    is `--rounds` rounds; each runs all three, round r starting with the
//!    r-th, so that a drift in the shared machine's load does not fall on
//!    one configuration. The figures add the rounds up.
//! 3. Per round, configuration and `--concurrency` value, one phase: fresh
//!    namespaces (`--namespaces`, labelled so the PlatformDefaults and the
//!    policy binding select them), a dry run per namespace until it is
//!    admitted (the webhook has seen the namespace), `--warmup` creates not
//!    counted, then `--count / --rounds` creates of valid FluxConfigs
//!    spread over the namespaces, the phase's concurrency in flight.
//!    Latency is the create call's round trip from this process; throughput
//!    is creates over the phases' wall time. The namespaces are deleted,
//!    and gone, before the next phase.
//! 4. Per phase, means from the API server's own metrics (its whole
//!    validating admission step for CREATE, and the
//!    ValidatingAdmissionWebhook or ValidatingAdmissionPolicy plugin within
//!    it) and from the webhook's own metrics
//!    (`fluxgate_webhook_request_duration_seconds`: body read to response);
//!    and CPU time per create of kube-apiserver and etcd
//!    (`/proc/<pid>/stat`), of the webhook's threads (the threads
//!    `start_webhook` started, `/proc/self/task/<tid>/stat`) and of the rest
//!    of this process (the client).
//!
//! `RUST_LOG=fluxgate_admission_webhook::watch=debug` logs the time of each
//! rebuild of the webhook's snapshot.
//!
//! No operator runs: the FluxConfigs are stored and nothing reconciles
//! them, so the phases differ only in admission. It prints figures and
//! ratios and asserts nothing: a benchmark, not a test.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use fluxgate_bench::{
    BoxError, clock_ticks, cpu_seconds, find_process, load_average, machine, ms, percentile, ratio,
    rustc_version, version_of,
};
use fluxgate_crds::FluxConfig;
use fluxgate_e2e::stack;
use fluxgate_e2e::testenv::{self, ControlPlane};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use kube::{Client, Resource as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Label selecting the benchmark's namespaces, for the PlatformDefaults
/// and the policy binding alike.
const LABEL: &str = "fluxgate.dev/bench-admission";
const DEFAULTS: &str = "bench-admission";
const POLICY: &str = "fluxgate-bench-flux-config";
/// The webhook configuration `stack::start_webhook` registers.
const WEBHOOK_CONFIGURATION: &str = "fluxgate";
/// A namespace kept through the run for the dry-run probes.
const PROBE_NS: &str = "adm-probe";
const MANAGER: &str = "fluxgate-bench";

/// Flags.
#[derive(Debug, Parser)]
#[command(
    name = "admission-bench",
    about = "FluxConfig creates through kube-apiserver: no admission, the fluxgate webhook, a ValidatingAdmissionPolicy"
)]
struct Args {
    /// FluxConfigs created (and timed) per configuration and concurrency,
    /// over all rounds.
    #[arg(long, default_value_t = 1000)]
    count: usize,
    /// Creates in flight at once; one phase per value and configuration.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    concurrency: Vec<usize>,
    /// Namespaces per phase; the FluxConfigs go to them in turn.
    #[arg(long, default_value_t = 10)]
    namespaces: usize,
    /// Creates before each phase's measurement, not counted.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Rounds: each runs every configuration (in a rotated order) with
    /// `count / rounds` creates, so a drift in the machine's load is
    /// shared between them; the figures add the rounds up.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
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

/// What admits FluxConfigs in a phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    None,
    Webhook,
    Policy,
}

impl Admission {
    fn name(self) -> &'static str {
        match self {
            Admission::None => "none",
            Admission::Webhook => "webhook",
            Admission::Policy => "VAP",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Admission::None => "none",
            Admission::Webhook => "hook",
            Admission::Policy => "vap",
        }
    }
}

// ---------------------------------------------------------------------------
// The objects.

fn defaults() -> Value {
    json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "PlatformDefaults",
        "metadata": {"name": DEFAULTS},
        "spec": {
            "namespaceSelector": {"matchExpressions": [{"key": LABEL, "operator": "Exists"}]},
            "allowedRepos": ["https://git.corp.example/{namespace}/*"],
            "allowedTargetNamespaces": ["{namespace}", "{namespace}-*"],
            "clusters": ["prod-eu", "staging"],
            "defaults": {"ref": {"branch": "main"}, "interval": "5m"},
            "limits": {"minInterval": "1m", "maxInterval": "24h"},
        },
    })
}

/// The PlatformDefaults above, as CEL. What the webhook checks beyond this
/// (URL parsing and normalisation, layering of several PlatformDefaults,
/// ...) is listed in BENCHMARKS.md.
fn policy() -> Value {
    let validation = |expression: &str, message: &str| json!({"expression": expression, "messageExpression": message, "reason": "Forbidden"});
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [fluxgate_crds::GROUP],
                "apiVersions": [fluxgate_crds::VERSION],
                "operations": ["CREATE", "UPDATE"],
                "resources": ["fluxconfigs"],
            }]},
            "variables": [
                {"name": "ns", "expression": "namespaceObject.metadata.name"},
                {"name": "target", "expression": "has(object.spec.targetNamespace) ? object.spec.targetNamespace : namespaceObject.metadata.name"},
            ],
            "validations": [
                validation(
                    "object.spec.repo.matches('^https://git[.]corp[.]example/' + variables.ns + '/[^/]+$')",
                    "'spec.repo ' + object.spec.repo + ' is not allowed for namespace ' + variables.ns + '; allowed: https://git.corp.example/' + variables.ns + '/*'",
                ),
                validation(
                    "variables.target != 'fluxgate-system' && (variables.target == variables.ns || variables.target.startsWith(variables.ns + '-'))",
                    "'spec.targetNamespace ' + variables.target + ' is not allowed for namespace ' + variables.ns + '; allowed: ' + variables.ns + ', ' + variables.ns + '-*'",
                ),
                validation(
                    "!has(object.spec.interval) || (duration(object.spec.interval) >= duration('1m') && duration(object.spec.interval) <= duration('24h'))",
                    "'spec.interval ' + object.spec.interval + ' is outside the platform limits; allowed: 1m to 24h'",
                ),
                validation(
                    "!has(object.spec.cluster) || object.spec.cluster in ['prod-eu', 'staging']",
                    "'spec.cluster ' + object.spec.cluster + ' is not one of the platform clusters; allowed: prod-eu, staging'",
                ),
            ],
        },
    })
}

fn binding() -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY},
        "spec": {
            "policyName": POLICY,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchExpressions": [{"key": LABEL, "operator": "Exists"}]}},
        },
    })
}

/// A valid FluxConfig: every field the rules read is set.
fn flux_config(ns: &str, name: &str) -> Result<FluxConfig, BoxError> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/part-of": name}},
        "spec": {
            "repo": format!("https://git.corp.example/{ns}/{name}.git"),
            "ref": {"branch": "main"},
            "path": "deploy/prod",
            "targetNamespace": ns,
            "interval": "10m",
            "cluster": "prod-eu",
        },
    }))?)
}

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(LABEL.to_owned(), "true".to_owned())])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

/// Server-side applies a cluster-scoped object of kind `K`.
async fn apply<K: kube::Resource<DynamicType = ()>>(
    client: &Client,
    doc: &Value,
) -> Result<(), BoxError> {
    let name = doc["metadata"]["name"].as_str().unwrap_or_default();
    Api::<DynamicObject>::all_with(client.clone(), &ApiResource::erase::<K>(&()))
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(doc),
        )
        .await?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Waiting for admission to change.

/// Whether a dry-run create in `ns` is admitted: `repo_ok` picks a valid
/// FluxConfig or one with a foreign repository.
async fn admitted(client: &Client, ns: &str, repo_ok: bool) -> Result<bool, BoxError> {
    let mut fc = flux_config(ns, "probe")?;
    if !repo_ok {
        fc.spec.repo = "https://evil.example/x.git".into();
    }
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match Api::<FluxConfig>::namespaced(client.clone(), ns)
        .create(&dry_run, &fc)
        .await
    {
        Ok(_) => Ok(true),
        // Denied by a webhook or a policy: 4xx with a message naming it.
        Err(kube::Error::Api(s)) if s.code == 400 || s.code == 403 || s.code == 422 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Polls until a FluxConfig with a foreign repository is denied in the
/// probe namespace (`enforced`) or admitted (`!enforced`).
async fn wait_enforced(client: &Client, enforced: bool, timeout: Duration) -> Result<(), BoxError> {
    let deadline = Instant::now() + timeout;
    loop {
        if admitted(client, PROBE_NS, false).await? != enforced {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "admission did not turn {} within {timeout:?}",
                if enforced { "on" } else { "off" }
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---------------------------------------------------------------------------
// Measuring.

/// The API server's metrics, through kubectl (`get --raw /metrics`).
async fn apiserver_metrics(cp: &'static ControlPlane) -> String {
    tokio::task::spawn_blocking(move || {
        cp.kubectl(["get", "--raw", "/metrics"])
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .unwrap_or_default()
    })
    .await
    .unwrap_or_default()
}

/// Sum of `<name>_sum` and of `<name>_count` over the series whose labels
/// contain every one of `filters` (e.g. `operation="CREATE"`).
fn histogram(metrics: &str, name: &str, filters: &[&str]) -> (f64, f64) {
    let (sum_prefix, count_prefix) = (format!("{name}_sum{{"), format!("{name}_count{{"));
    let (mut sum, mut count) = (0.0, 0.0);
    for line in metrics.lines() {
        let is_sum = line.starts_with(&sum_prefix);
        if !is_sum && !line.starts_with(&count_prefix) {
            continue;
        }
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        if !filters.iter().all(|f| labels.contains(f)) {
            continue;
        }
        let value: f64 = value.parse().unwrap_or(0.0);
        if is_sum {
            sum += value;
        } else {
            count += value;
        }
    }
    (sum, count)
}

/// A histogram's sum (seconds) and count over a phase: a mean once phases
/// are added up.
#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: f64,
    count: f64,
}

impl Mean {
    fn between(before: &str, after: &str, name: &str, filters: &[&str]) -> Self {
        let (s0, c0) = histogram(before, name, filters);
        let (s1, c1) = histogram(after, name, filters);
        Mean {
            sum: s1 - s0,
            count: c1 - c0,
        }
    }

    fn add(&mut self, other: Mean) {
        self.sum += other.sum;
        self.count += other.count;
    }

    /// The mean in µs; `-` without observations.
    fn micros(&self) -> String {
        if self.count > 0.0 {
            format!("{:.0}", self.sum * 1e6 / self.count)
        } else {
            "-".to_owned()
        }
    }
}

/// CPU seconds of the processes and threads a phase is charged to.
#[derive(Debug, Default, Clone, Copy)]
struct Cpu {
    apiserver: f64,
    etcd: f64,
    webhook: f64,
    /// This process without the webhook's threads: the client.
    client: f64,
}

impl Cpu {
    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            apiserver: self.apiserver - before.apiserver,
            etcd: self.etcd - before.etcd,
            webhook: self.webhook - before.webhook,
            client: (self.client - before.client) - (self.webhook - before.webhook),
        }
    }

    fn add(&mut self, other: Cpu) {
        self.apiserver += other.apiserver;
        self.etcd += other.etcd;
        self.webhook += other.webhook;
        self.client += other.client;
    }
}

#[derive(Debug)]
struct Pids {
    apiserver: Option<String>,
    etcd: Option<String>,
    ticks: f64,
}

impl Pids {
    /// CPU seconds so far; `client` is the whole of this process here.
    fn cpu(&self, webhook_threads: &BTreeSet<String>) -> Cpu {
        let of = |pid: &Option<String>| {
            pid.as_deref()
                .map_or(f64::NAN, |p| cpu_seconds(p, self.ticks))
        };
        Cpu {
            apiserver: of(&self.apiserver),
            etcd: of(&self.etcd),
            webhook: webhook_threads
                .iter()
                .map(|tid| cpu_seconds(&format!("self/task/{tid}"), self.ticks))
                .filter(|s| s.is_finite())
                .sum(),
            client: cpu_seconds("self", self.ticks),
        }
    }
}

/// The in-process webhook, when one runs: its threads (to charge their CPU
/// time to it) and its plain-HTTP admin address (for its own metrics).
#[derive(Debug, Default)]
struct WebhookSide {
    threads: BTreeSet<String>,
    admin: Option<SocketAddr>,
}

/// The webhook's `/metrics` (plain HTTP/1.0, so a socket is enough).
async fn webhook_metrics(admin: Option<SocketAddr>) -> String {
    let Some(addr) = admin else {
        return String::new();
    };
    let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await else {
        return String::new();
    };
    let request = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut body = Vec::new();
    let _ = stream.read_to_end(&mut body).await;
    String::from_utf8_lossy(&body).into_owned()
}

/// This process's thread ids.
fn threads() -> BTreeSet<String> {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// One configuration at one concurrency: one round's phase, or all rounds'
/// added up.
#[derive(Debug)]
struct Phase {
    admission: Admission,
    concurrency: usize,
    /// Sorted.
    latencies: Vec<Duration>,
    wall: Duration,
    /// The validating admission step for CREATE (all validating plugins).
    validate_step: Mean,
    /// The admission plugin of the configuration: ValidatingAdmissionWebhook
    /// or ValidatingAdmissionPolicy.
    plugin: Mean,
    /// The webhook's own request handling, body read to response
    /// (`fluxgate_webhook_request_duration_seconds`).
    in_webhook: Mean,
    cpu: Cpu,
}

impl Phase {
    fn empty(admission: Admission, concurrency: usize) -> Self {
        Phase {
            admission,
            concurrency,
            latencies: Vec::new(),
            wall: Duration::ZERO,
            validate_step: Mean::default(),
            plugin: Mean::default(),
            in_webhook: Mean::default(),
            cpu: Cpu::default(),
        }
    }

    fn add(&mut self, other: &Phase) {
        self.latencies.extend_from_slice(&other.latencies);
        self.latencies.sort();
        self.wall += other.wall;
        self.validate_step.add(other.validate_step);
        self.plugin.add(other.plugin);
        self.in_webhook.add(other.in_webhook);
        self.cpu.add(other.cpu);
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64().max(f64::EPSILON)
    }

    fn median(&self) -> Duration {
        percentile(&self.latencies, 50.0)
    }

    fn p99(&self) -> Duration {
        percentile(&self.latencies, 99.0)
    }

    /// CPU ms per create.
    fn per_create(&self, seconds: f64) -> f64 {
        seconds * 1000.0 / self.latencies.len().max(1) as f64
    }
}

struct Ctx<'a> {
    cp: &'static ControlPlane,
    admin: Client,
    args: &'a Args,
    pids: Pids,
    timeout: Duration,
    /// Creates timed per phase and round.
    per_round: usize,
}

/// Creates `fcs` (namespace, name) with `concurrency` in flight; the round
/// trip of each.
async fn create_all(
    admin: &Client,
    fcs: Vec<(String, String)>,
    concurrency: usize,
) -> Result<Vec<Duration>, BoxError> {
    futures::stream::iter(fcs)
        .map(|(ns, name)| {
            let admin = admin.clone();
            async move {
                let fc = flux_config(&ns, &name)?;
                let api = Api::<FluxConfig>::namespaced(admin, &ns);
                let started = Instant::now();
                api.create(&PostParams::default(), &fc).await?;
                Ok::<_, BoxError>(started.elapsed())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

async fn phase(
    ctx: &Ctx<'_>,
    admission: Admission,
    concurrency: usize,
    round: usize,
    webhook: &WebhookSide,
) -> Result<Phase, BoxError> {
    let Ctx {
        cp,
        admin,
        args,
        pids,
        timeout,
        per_round,
    } = ctx;
    let slug = format!("adm-r{round}-{}-c{concurrency}", admission.slug());
    let namespaces: Vec<String> = (0..args.namespaces.max(1))
        .map(|i| format!("{slug}-{i}"))
        .collect();
    let ns_api = Api::<Namespace>::all(admin.clone());
    for ns in &namespaces {
        ns_api
            .create(&PostParams::default(), &namespace(ns))
            .await?;
    }
    // Admitted once the webhook's snapshot holds the namespace's labels.
    let deadline = Instant::now() + *timeout;
    for ns in &namespaces {
        while !admitted(admin, ns, true).await? {
            if Instant::now() > deadline {
                return Err(format!("a valid FluxConfig in {ns} was never admitted").into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let spread = |prefix: &str, n: usize| -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                (
                    namespaces[i % namespaces.len()].clone(),
                    format!("{prefix}-{i}"),
                )
            })
            .collect()
    };
    create_all(admin, spread("warm", args.warmup), concurrency).await?;

    let metrics_before = apiserver_metrics(cp).await;
    let webhook_before = webhook_metrics(webhook.admin).await;
    let cpu_before = pids.cpu(&webhook.threads);
    let started = Instant::now();
    let mut latencies = create_all(admin, spread("app", *per_round), concurrency).await?;
    let wall = started.elapsed();
    let cpu = pids.cpu(&webhook.threads).since(&cpu_before);
    let metrics_after = apiserver_metrics(cp).await;
    let webhook_after = webhook_metrics(webhook.admin).await;
    latencies.sort();

    let plugin = |name: &str| {
        Mean::between(
            &metrics_before,
            &metrics_after,
            "apiserver_admission_controller_admission_duration_seconds",
            &[
                &format!(r#"name="{name}""#),
                r#"operation="CREATE""#,
                r#"type="validate""#,
            ],
        )
    };
    let result = Phase {
        admission,
        concurrency,
        latencies,
        wall,
        validate_step: Mean::between(
            &metrics_before,
            &metrics_after,
            "apiserver_admission_step_admission_duration_seconds",
            &[r#"operation="CREATE""#, r#"type="validate""#],
        ),
        plugin: match admission {
            Admission::None => Mean::default(),
            Admission::Webhook => plugin("ValidatingAdmissionWebhook"),
            Admission::Policy => plugin("ValidatingAdmissionPolicy"),
        },
        in_webhook: Mean::between(
            &webhook_before,
            &webhook_after,
            "fluxgate_webhook_request_duration_seconds",
            &[r#"kind="FluxConfig""#],
        ),
        cpu,
    };

    // Gone before the next phase, so its deletions do not overlap it.
    for ns in &namespaces {
        ns_api.delete(ns, &DeleteParams::background()).await?;
    }
    let deadline = Instant::now() + *timeout;
    loop {
        let left = ns_api
            .list(&ListParams::default().labels(LABEL))
            .await?
            .items
            .iter()
            .filter(|n| {
                n.meta()
                    .name
                    .as_deref()
                    .is_some_and(|n| n.starts_with(&slug))
            })
            .count();
        if left == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(
                format!("{left} namespaces of {slug} still there after {timeout:?}").into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(result)
}

// ---------------------------------------------------------------------------
// Report.

fn header(first: &str) -> String {
    format!(
        "{first:<5} {:<8} {:>6} {:>9} {:>9} {:>9} {:>9} {:>11} {:>9} {:>10}   {:>9} {:>6} {:>8} {:>7}",
        "admission",
        "flight",
        "median ms",
        "p99 ms",
        "worst ms",
        "creates/s",
        "validate µs",
        "plugin µs",
        "in hook µs",
        "apiserver",
        "etcd",
        "webhook",
        "client"
    )
}

fn row(first: &str, p: &Phase) -> String {
    format!(
        "{first:<5} {:<9} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.0} {:>11} {:>9} {:>10}   {:>9.2} {:>6.2} {:>8.2} {:>7.2}",
        p.admission.name(),
        p.concurrency,
        ms(p.median()),
        ms(p.p99()),
        ms(p.latencies.last().copied().unwrap_or_default()),
        p.throughput(),
        p.validate_step.micros(),
        p.plugin.micros(),
        p.in_webhook.micros(),
        p.per_create(p.cpu.apiserver),
        p.per_create(p.cpu.etcd),
        p.per_create(p.cpu.webhook),
        p.per_create(p.cpu.client),
    )
}

fn ratios(phases: &[Phase], concurrency: usize) {
    let find = |a: Admission| {
        phases
            .iter()
            .find(|p| p.admission == a && p.concurrency == concurrency)
    };
    let (Some(none), Some(hook), Some(vap)) = (
        find(Admission::None),
        find(Admission::Webhook),
        find(Admission::Policy),
    ) else {
        return;
    };
    for (label, a, b) in [
        ("webhook / none", hook, none),
        ("VAP / none", vap, none),
        ("webhook / VAP", hook, vap),
    ] {
        println!(
            "{concurrency:>6}  {label:<15} median {:>5.2}x   p99 {:>5.2}x   throughput {:>5.2}x   apiserver CPU/create {:>5.2}x",
            ratio(a.median(), b.median()),
            ratio(a.p99(), b.p99()),
            a.throughput() / b.throughput().max(f64::EPSILON),
            a.cpu.apiserver / b.cpu.apiserver.max(f64::EPSILON),
        );
    }
}

/// Turns `admission` on, runs its phases, turns it off again.
async fn configuration(
    ctx: &Ctx<'_>,
    admission: Admission,
    round: usize,
) -> Result<Vec<Phase>, BoxError> {
    let admin = &ctx.admin;
    let mut phases = Vec::new();
    match admission {
        Admission::None => {
            wait_enforced(admin, false, ctx.timeout).await?;
            for &c in &ctx.args.concurrency {
                phases.push(phase(ctx, admission, c, round, &WebhookSide::default()).await?);
            }
        }
        Admission::Webhook => {
            // A fresh webhook each round, stopped in between: a running one
            // keeps watching FluxConfigs, and its work would be charged to
            // the other configurations.
            let before = threads();
            let webhook = stack::start_webhook(ctx.cp).await?;
            let side = WebhookSide {
                threads: threads().difference(&before).cloned().collect(),
                admin: Some(webhook.admin),
            };
            for &c in &ctx.args.concurrency {
                phases.push(phase(ctx, admission, c, round, &side).await?);
            }
            Api::<ValidatingWebhookConfiguration>::all(admin.clone())
                .delete(WEBHOOK_CONFIGURATION, &DeleteParams::default())
                .await?;
            tokio::task::spawn_blocking(move || drop(webhook)).await?;
            wait_enforced(admin, false, ctx.timeout).await?;
        }
        Admission::Policy => {
            apply::<ValidatingAdmissionPolicy>(admin, &policy()).await?;
            apply::<ValidatingAdmissionPolicyBinding>(admin, &binding()).await?;
            wait_enforced(admin, true, ctx.timeout).await?;
            let warnings = Api::<ValidatingAdmissionPolicy>::all(admin.clone())
                .get(POLICY)
                .await?
                .status
                .and_then(|s| s.type_checking)
                .and_then(|t| t.expression_warnings)
                .unwrap_or_default();
            for warning in warnings {
                println!(
                    "policy type-check warning: {}: {}",
                    warning.field_ref, warning.warning
                );
            }
            for &c in &ctx.args.concurrency {
                phases.push(phase(ctx, admission, c, round, &WebhookSide::default()).await?);
            }
            Api::<ValidatingAdmissionPolicyBinding>::all(admin.clone())
                .delete(POLICY, &DeleteParams::default())
                .await?;
            Api::<ValidatingAdmissionPolicy>::all(admin.clone())
                .delete(POLICY, &DeleteParams::default())
                .await?;
            wait_enforced(admin, false, ctx.timeout).await?;
        }
    }
    Ok(phases)
}

async fn run(args: Args) -> Result<(), BoxError> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            // The harness polls /readyz while the API server starts; its
            // 500s are expected.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client::client::builder=off".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let command: Vec<String> = std::env::args().collect();
    let rounds = args.rounds.max(1);
    let per_round = args.count.div_ceil(rounds);
    println!(
        "# fluxgate admission through the API server: none, webhook, ValidatingAdmissionPolicy"
    );
    println!("date:       {}", k8s_openapi::jiff::Timestamp::now());
    println!(
        "command:    cargo run --release -p fluxgate-bench --bin admission-bench{}",
        if command.len() > 1 {
            format!(" -- {}", command[1..].join(" "))
        } else {
            String::new()
        }
    );
    println!("machine:    {}", machine());
    println!("load:       {} (1/5/15 min, at start)", load_average());
    println!("toolchain:  {}", rustc_version());
    println!(
        "settings:   {} creates per configuration and concurrency ({rounds} rounds of {per_round}, each after {} warm-up creates), in flight {:?}, {} namespaces per phase",
        per_round * rounds,
        args.warmup,
        args.concurrency,
        args.namespaces
    );

    let cp: &'static ControlPlane = tokio::task::spawn_blocking(testenv::shared).await??;
    let bin = cp.bin_dir();
    println!(
        "cluster:    kube-apiserver {}, {}, kube-controller-manager; no scheduler, no kubelet; started in {:.1?}",
        version_of(&bin.join("kube-apiserver"), &["--version"]),
        version_of(&bin.join("etcd"), &["--version"]),
        cp.startup_time()
    );
    let admin = cp.client()?;
    // The CRDs only: the full install would register the chart's webhook
    // configuration, which must stay off outside the webhook phases.
    testenv::install_crds(&admin, fluxgate_crds::all_crds()).await?;
    let pd: fluxgate_crds::PlatformDefaults = serde_json::from_value(defaults())?;
    Api::<fluxgate_crds::PlatformDefaults>::all(admin.clone())
        .patch(
            DEFAULTS,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&pd),
        )
        .await?;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace(PROBE_NS))
        .await?;
    let dir = cp.dir().display().to_string();
    let ctx = Ctx {
        cp,
        admin: admin.clone(),
        args: &args,
        pids: Pids {
            apiserver: find_process("kube-apiserver", &dir),
            etcd: find_process("etcd", &dir),
            ticks: clock_ticks(),
        },
        timeout: Duration::from_secs(args.timeout_seconds),
        per_round,
    };
    println!(
        "processes:  kube-apiserver pid {}, etcd pid {}",
        ctx.pids.apiserver.as_deref().unwrap_or("?"),
        ctx.pids.etcd.as_deref().unwrap_or("?")
    );
    println!();
    println!(
        "Means from the API server's metrics: validate = its whole validating admission step for CREATE, plugin = the ValidatingAdmissionWebhook or ValidatingAdmissionPolicy plugin; in hook = the webhook's own handling (its metrics). CPU columns: ms per create."
    );
    println!("{}", header("round"));

    // Round r starts with configuration r (mod 3), so none of them is
    // always first, or always right after another, on a machine whose load
    // drifts.
    let order = [Admission::None, Admission::Webhook, Admission::Policy];
    let mut totals: Vec<Phase> = order
        .iter()
        .flat_map(|&a| args.concurrency.iter().map(move |&c| Phase::empty(a, c)))
        .collect();
    for round in 0..rounds {
        for k in 0..order.len() {
            let admission = order[(round + k) % order.len()];
            for result in configuration(&ctx, admission, round).await? {
                println!("{}", row(&round.to_string(), &result));
                if let Some(total) = totals
                    .iter_mut()
                    .find(|t| t.admission == admission && t.concurrency == result.concurrency)
                {
                    total.add(&result);
                }
            }
        }
    }

    println!();
    println!("## all rounds");
    println!("{}", header(""));
    for total in &totals {
        println!("{}", row("", total));
    }
    println!();
    println!("## ratios (same run)");
    for &c in &args.concurrency {
        ratios(&totals, c);
    }
    println!();
    println!("load:       {} (1/5/15 min, at the end)", load_average());
    Ok(())
}
