//! `operator-bench`: onboarding N teams through the operator, against a real
//! control plane, compared with a plain client applying the same objects.
//!
//! ```text
//! cargo run --release -p fluxgate-bench --bin operator-bench -- --teams 100
//! ```
//!
//! 1. Starts etcd + kube-apiserver + kube-controller-manager with the test
//!    harness, installs the CRDs and the operator's RBAC, and runs the
//!    operator in this process with its ServiceAccount's token.
//! 2. Onboards `--teams` teams from cold (a namespace and a FluxConfig
//!    each, created by the admin client, `--concurrency` at a time) and
//!    measures, per FluxConfig, the time from its creation (the create
//!    call's answer) to a watch seeing `Provisioned=True`.
//! 3. Counts the operator's API writes (its own counter, and the audit log),
//!    then the writes of `--steady-seconds` with nothing changing.
//! 4. Baseline: stops the operator and server-side-applies, with a plain
//!    client and the same concurrency, the objects the core's renderer makes
//!    for the same number of fresh team namespaces (namespace included).
//!
//! It prints figures and ratios and asserts nothing: a benchmark, not a
//! test. Memory is this process's (the operator runs in it, next to the
//! harness's clients and the onboarding client).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use clap::Parser;
use fluxgate_bench::{BoxError, machine, memory, ms, percentile, rustc_version};
use fluxgate_crds::{FluxConfig, PlatformDefaults, conditions};
use fluxgate_e2e::stack;
use fluxgate_e2e::testenv::{self, ControlPlane};
use fluxgate_platform_defaults::render::{
    FluxConfigRef, NamespaceBundleInput, Renderer, expand_target_namespaces,
};
use fluxgate_platform_defaults::{NamespaceFacts, Platform, PlatformSettings, resolve};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

const PLATFORM_NS: &str = "fluxgate-system";
const CREDENTIALS: &str = "git-corp-readonly";
const OPERATOR_USER: &str = "system:serviceaccount:fluxgate-system:fluxgate-operator";
const TENANT_LABEL: &str = "fluxgate.dev/bench";

/// Flags.
#[derive(Debug, Parser)]
#[command(
    name = "operator-bench",
    about = "Onboarding N teams through the fluxgate operator"
)]
struct Args {
    /// Teams to onboard (a namespace and a FluxConfig each).
    #[arg(long, default_value_t = 100)]
    teams: usize,
    /// Requests in flight at once, for the onboarding client and the
    /// baseline alike.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Length of the steady-state window, in seconds.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// Give up waiting for provisioning after this many seconds.
    #[arg(long, default_value_t = 1800)]
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

fn defaults_object() -> serde_json::Value {
    json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "PlatformDefaults",
        "metadata": {"name": "bench-defaults"},
        "spec": {
            "namespaceSelector": {"matchExpressions": [{"key": TENANT_LABEL, "operator": "Exists"}]},
            "allowedRepos": ["https://git.corp.example/{namespace}/*"],
            "allowedTargetNamespaces": ["{namespace}"],
            "defaults": {
                "interval": "5m",
                "credentials": [{"repoPattern": "https://git.corp.example/**", "secretRef": {"name": CREDENTIALS}}],
                "reconciler": {
                    "image": "registry.corp.example/fluxgate/reconciler:v1",
                    "clusterRole": "fluxgate-team-reconciler",
                    "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "128Mi"}},
                },
            },
        },
    })
}

fn namespace(name: &str, tenant: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                TENANT_LABEL.to_owned(),
                tenant.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    }
}

fn flux_config(ns: &str) -> Result<FluxConfig, BoxError> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {"name": "app", "namespace": ns},
        "spec": {"repo": format!("https://git.corp.example/{ns}/app.git")},
    }))?)
}

/// Successful writes by the operator's ServiceAccount in the audit log
/// from line `since`, split into Lease writes and all others; and the
/// number of lines.
fn audited_writes(cp: &ControlPlane, since: usize) -> (usize, u64, u64) {
    let text = std::fs::read_to_string(cp.audit_log_path()).unwrap_or_default();
    let (mut leases, mut others, mut lines) = (0, 0, 0);
    for (i, line) in text.lines().enumerate() {
        lines = i + 1;
        if i < since {
            continue;
        }
        let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let verb = e["verb"].as_str().unwrap_or_default();
        let ok = e["responseStatus"]["code"]
            .as_u64()
            .is_some_and(|c| (200..300).contains(&c));
        if e["user"]["username"] == OPERATOR_USER
            && ok
            && ["create", "update", "patch", "delete", "deletecollection"].contains(&verb)
        {
            if e["objectRef"]["resource"] == "leases" {
                leases += 1;
            } else {
                others += 1;
            }
        }
    }
    (lines, leases, others)
}

fn writes_by_verb(metrics: &fluxgate_operator::metrics::Metrics) -> String {
    metrics
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("fluxgate_operator_api_writes_total{verb=\""))
        .filter_map(|l| {
            let (verb, n) = l.split_once("\"} ")?;
            Some(format!("{verb} {n}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn run(args: Args) -> Result<(), BoxError> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let command: Vec<String> = std::env::args().collect();
    println!("# fluxgate operator onboarding benchmark");
    println!("date:       {}", k8s_openapi::jiff::Timestamp::now());
    println!(
        "command:    cargo run --release -p fluxgate-bench --bin operator-bench -- {}",
        command[1..].join(" ")
    );
    println!("machine:    {}", machine());
    println!("toolchain:  {}", rustc_version());
    println!(
        "settings:   teams {}, concurrency {}, steady window {} s",
        args.teams, args.concurrency, args.steady_seconds
    );

    let cp = Arc::new(tokio::task::spawn_blocking(ControlPlane::start).await??);
    let admin = cp.client()?;
    let version = admin.apiserver_version().await?;
    println!(
        "cluster:    kube-apiserver {} + etcd + kube-controller-manager (no scheduler, no kubelet), started in {:.1?}",
        version.git_version,
        cp.startup_time()
    );

    // The platform, as the e2e tests install it.
    testenv::install_crds(&admin, fluxgate_crds::all_crds()).await?;
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &namespace(PLATFORM_NS, "platform"))
        .await?;
    // The chart's RBAC (deploy/manifests/fluxgate.yaml, the chart rendered).
    stack::apply_all(&admin, &stack::installed("operator", stack::RBAC_KINDS)?).await?;
    stack::apply_all(&admin, &stack::installed("reconciler", &["ClusterRole"])?).await?;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": CREDENTIALS},
        "stringData": {"username": "fluxgate", "password": "s3cret"},
    }))?;
    let secret = Api::<Secret>::namespaced(admin.clone(), PLATFORM_NS)
        .create(&PostParams::default(), &secret)
        .await?;
    let pd_json = defaults_object();
    Api::<PlatformDefaults>::all(admin.clone())
        .patch(
            "bench-defaults",
            &PatchParams::apply("platform-team").force(),
            &Patch::Apply(&pd_json),
        )
        .await?;

    // The operator, in this process, with its ServiceAccount's rights.
    let (rss_before, _) = memory("self");
    let token = testenv::service_account_token(&admin, PLATFORM_NS, "fluxgate-operator").await?;
    let operator_client = cp.client_for_token(&token)?;
    let config = fluxgate_operator::Config::parse_from([
        "fluxgate-operator",
        "--platform-namespace",
        PLATFORM_NS,
        "--identity",
        "bench",
        "--log-format",
        "text",
    ]);
    let handle = fluxgate_operator::Handle::new();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(fluxgate_operator::run_with_client(
        operator_client,
        config,
        handle.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let started = Instant::now();
    while !handle.ready.load(std::sync::atomic::Ordering::Relaxed) {
        if started.elapsed() > Duration::from_secs(60) {
            return Err("the operator did not become ready within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "operator:   ready {:.1?} after start (leader election on)",
        started.elapsed()
    );

    // Watch for Provisioned=True.
    let provisioned: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let watch = {
        let provisioned = provisioned.clone();
        let api = Api::<FluxConfig>::all(admin.clone());
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            futures::pin_mut!(stream);
            while let Ok(Some(fc)) = stream.try_next().await {
                if fc.condition_is_true(conditions::PROVISIONED) {
                    let key = fc.namespace().unwrap_or_default();
                    if let Ok(mut seen) = provisioned.lock() {
                        seen.entry(key).or_insert_with(Instant::now);
                    }
                }
            }
        })
    };

    // Onboarding.
    let (audit_mark, _, _) = audited_writes(&cp, 0);
    let teams: Vec<String> = (0..args.teams).map(|i| format!("team-{i:04}")).collect();
    let onboard_start = Instant::now();
    let created: Vec<(String, Instant)> = futures::stream::iter(teams.clone())
        .map(|ns| {
            let admin = admin.clone();
            async move {
                Api::<Namespace>::all(admin.clone())
                    .create(&PostParams::default(), &namespace(&ns, "operator"))
                    .await?;
                Api::<FluxConfig>::namespaced(admin, &ns)
                    .create(&PostParams::default(), &flux_config(&ns)?)
                    .await?;
                Ok::<_, BoxError>((ns, Instant::now()))
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect()
        .await?;
    let created_all = onboard_start.elapsed();
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    loop {
        let done = provisioned.lock().map(|m| m.len()).unwrap_or(0);
        if done >= args.teams {
            break;
        }
        if Instant::now() > deadline {
            println!("TIMED OUT: {done} of {} teams provisioned", args.teams);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = provisioned.lock().map(|m| m.clone()).unwrap_or_default();
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(ns, at)| Some(seen.get(ns)?.saturating_duration_since(*at)))
        .collect();
    latencies.sort();
    let last = seen.values().max().copied().unwrap_or(onboard_start);
    let wall = last.saturating_duration_since(onboard_start);
    let onboard_writes = handle.metrics.total_writes();
    let (audit_after, onboard_lease_writes, onboard_audit_writes) = audited_writes(&cp, audit_mark);
    let (rss_after, hwm_after) = memory("self");
    let reconciles = handle.metrics.total_reconciles();

    // Steady state: nothing changes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let steady_writes_before = handle.metrics.total_writes();
    let (steady_mark, _, _) = audited_writes(&cp, audit_after);
    let steady_reconciles_before = handle.metrics.total_reconciles();
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let steady_writes = handle.metrics.total_writes() - steady_writes_before;
    let (_, steady_leases, steady_audit) = audited_writes(&cp, steady_mark);
    let steady_reconciles = handle.metrics.total_reconciles() - steady_reconciles_before;
    let (rss_steady, hwm_steady) = memory("self");

    let _ = stop_tx.send(());
    let _ = operator.await;
    watch.abort();

    // Baseline: the same objects, applied by a plain client.
    let layers_labels = BTreeMap::from([(TENANT_LABEL.to_owned(), "operator".to_owned())]);
    let pd: PlatformDefaults = serde_json::from_value(pd_json)?;
    let settings = PlatformSettings {
        platform_namespace: PLATFORM_NS.into(),
        default_reconciler_image: "ghcr.io/fluxgate-dev/reconciler:v0.1.0".into(),
        default_cluster_role: "fluxgate-team-reconciler".into(),
        ..PlatformSettings::default()
    };
    let platform = Arc::new(Platform::new(settings, [&pd]));
    let renderer = Arc::new(Renderer::new()?);
    let credentials: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::from([(
        CREDENTIALS.to_owned(),
        secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    base64::engine::general_purpose::STANDARD.encode(&v.0),
                )
            })
            .collect(),
    )]);
    let credentials = Arc::new(credentials);
    let base_teams: Vec<String> = (0..args.teams).map(|i| format!("base-{i:04}")).collect();
    let base_start = Instant::now();
    let base_writes: Vec<usize> = futures::stream::iter(base_teams)
        .map(|ns| {
            let admin = admin.clone();
            let platform = platform.clone();
            let renderer = renderer.clone();
            let credentials = credentials.clone();
            let labels = layers_labels.clone();
            async move {
                Api::<Namespace>::all(admin.clone())
                    .create(&PostParams::default(), &namespace(&ns, "baseline"))
                    .await?;
                let mut fc = flux_config(&ns)?;
                fc.metadata.uid = Some(format!("00000000-0000-0000-0000-{:012}", ns.len()));
                let objects = {
                    let layers = platform.layers_for(&ns, &labels);
                    let resolved = resolve(&fc, &layers, NamespaceFacts::default())
                        .map_err(|v| v.to_string())?;
                    let uid = fc.metadata.uid.clone().unwrap_or_default();
                    let allowed = resolved.effective().allowed_namespaces.value.clone();
                    let input = NamespaceBundleInput {
                        namespace: &ns,
                        platform_namespace: PLATFORM_NS,
                        flux_configs: vec![FluxConfigRef::new(&uid, &resolved)],
                        target_namespaces: expand_target_namespaces(
                            &layers,
                            &allowed,
                            std::slice::from_ref(&ns),
                        ),
                        credentials: (*credentials).clone(),
                        network_policy: None,
                    };
                    renderer.render(&input)?.objects
                };
                let params = PatchParams::apply("bench-baseline").force();
                for object in &objects {
                    let obj: DynamicObject = serde_json::from_value(object.clone())?;
                    let types = obj.types.as_ref().ok_or("rendered object without a kind")?;
                    let gvk = kube::core::GroupVersionKind::try_from(types)?;
                    let ar = ApiResource::from_gvk(&gvk);
                    let ar = ApiResource {
                        plural: match gvk.kind.as_str() {
                            "ServiceAccount" => "serviceaccounts",
                            "Secret" => "secrets",
                            "Role" => "roles",
                            "RoleBinding" => "rolebindings",
                            "Deployment" => "deployments",
                            other => return Err(format!("unexpected kind {other}").into()),
                        }
                        .into(),
                        ..ar
                    };
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        admin.clone(),
                        obj.metadata.namespace.as_deref().unwrap_or(&ns),
                        &ar,
                    );
                    api.patch(&obj.name_any(), &params, &Patch::Apply(object))
                        .await?;
                }
                Ok::<_, BoxError>(objects.len() + 1)
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect()
        .await?;
    let base_wall = base_start.elapsed();
    let base_total_writes: usize = base_writes.iter().sum();

    println!();
    println!("## operator (from cold, {} teams)", args.teams);
    println!(
        "provisioned:           {} of {} (onboarding client done creating after {:.2} s)",
        latencies.len(),
        args.teams,
        created_all.as_secs_f64()
    );
    println!(
        "creation -> Provisioned: median {:.0} ms, p99 {:.0} ms, worst {:.0} ms",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    println!(
        "wall time:             {:.2} s (first create to last Provisioned)",
        wall.as_secs_f64()
    );
    println!(
        "API writes:            {} by the operator's counter ({}), {:.1} per team; audit log: {} (+{} Lease)",
        onboard_writes,
        writes_by_verb(&handle.metrics),
        onboard_writes as f64 / args.teams.max(1) as f64,
        onboard_audit_writes,
        onboard_lease_writes
    );
    println!("reconciles:            {reconciles}");
    println!(
        "memory (this process): VmRSS {rss_before:.0} MiB before the operator, {rss_after:.0} MiB after onboarding, {rss_steady:.0} MiB after the steady window; VmHWM {hwm_after:.0} / {hwm_steady:.0} MiB (includes the harness's and the onboarding client)"
    );
    println!(
        "steady state ({} s, nothing changing): {} writes by the counter, {} in the audit log (+{} Lease renewals), {} reconciles",
        args.steady_seconds, steady_writes, steady_audit, steady_leases, steady_reconciles
    );
    println!();
    println!("## baseline (plain client, server-side apply of the rendered objects)");
    println!(
        "wall time:             {:.2} s for {} teams, {} writes ({:.1} per team, namespace included)",
        base_wall.as_secs_f64(),
        args.teams,
        base_total_writes,
        base_total_writes as f64 / args.teams.max(1) as f64
    );
    println!();
    println!("## ratios (operator / baseline)");
    println!(
        "wall time:             {:.2}x",
        wall.as_secs_f64() / base_wall.as_secs_f64().max(f64::EPSILON)
    );
    println!(
        "writes (operator writes + 2 creates per team by the onboarding client, vs baseline): {:.2}x",
        (onboard_writes as f64 + 2.0 * args.teams as f64) / (base_total_writes.max(1) as f64)
    );
    drop(admin);
    tokio::task::spawn_blocking(move || drop(cp)).await?;
    Ok(())
}
