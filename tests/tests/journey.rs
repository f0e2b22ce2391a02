//! The journey, end to end, on a real control plane: a platform repo with
//! PlatformDefaults and three teams → `fluxgate validate` accepts it (and
//! rejects a forbidden variant with the webhook's words) → the platform sync
//! applies it through the admission webhook → the operator provisions each
//! team → the local runner starts the reconcilers → each team's repository
//! appears in its namespace; then the team and platform changes of daily
//! life, and the failures that must not hurt what runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fluxgate_crds::{FluxConfig, conditions};
use fluxgate_e2e::journey::Journey;
use fluxgate_e2e::testenv;
use fluxgate_e2e::wait::eventually;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

async fn config_map(client: &Client, ns: &str, name: &str) -> Option<ConfigMap> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

async fn flux_config(client: &Client, ns: &str, name: &str) -> Option<FluxConfig> {
    Api::<FluxConfig>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

fn validate(dir: &std::path::Path) -> fluxgate_cli::validate::Report {
    let (docs, errors) = fluxgate_cli::load::load(&[dir.to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    fluxgate_cli::validate::validate(
        &docs,
        fluxgate_platform_defaults::PlatformSettings::default(),
    )
}

/// Everything the in-process components (operator, webhook, harness) log,
/// at debug level for fluxgate's crates, for the credential scan at the end.
static LOGS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

struct LogBuffer;

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every `*.log` file under `dir` (component logs of the control plane and
/// of each reconciler process), with its path.
fn log_files(dir: &std::path::Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
                out.push((path, text));
            }
        }
    }
    out
}

/// No credential in any log of the run: not the Git password (plain or
/// base64, as in a Secret or an Authorization header), and no bearer token
/// (every ServiceAccount token is a JWT, `eyJ…`).
fn assert_no_credentials_logged(work: &std::path::Path, cp: &testenv::ControlPlane) {
    use base64::Engine as _;
    let password = fluxgate_e2e::journey::GIT_PASSWORD;
    let b64 = base64::engine::general_purpose::STANDARD;
    let forbidden = [
        password.to_owned(),
        b64.encode(password),
        b64.encode(format!("fluxgate:{password}")),
    ];
    let mut logs = log_files(work);
    logs.extend(log_files(cp.dir()));
    logs.push((
        PathBuf::from("<in-process components>"),
        String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned(),
    ));
    let reconciler_logs = logs.iter().filter(|(p, _)| p.starts_with(work)).count();
    assert!(
        reconciler_logs >= 3,
        "the reconcilers' logs were not found under {}",
        work.display()
    );
    for (path, text) in &logs {
        for secret in &forbidden {
            assert!(
                !text.contains(secret.as_str()),
                "{} logs a credential",
                path.display()
            );
        }
        if let Some(i) = text.find("eyJhbGci") {
            panic!(
                "{} logs what looks like a bearer token: {}",
                path.display(),
                text.get(i.saturating_sub(80)..(i + 20).min(text.len()))
                    .unwrap_or("")
            );
        }
    }
    eprintln!(
        "journey: {} logs ({} bytes) scanned, no credential in them",
        logs.len(),
        logs.iter().map(|(_, t)| t.len()).sum::<usize>()
    );
}

#[tokio::test]
async fn from_merge_request_to_running_objects() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| {
            "info,fluxgate_operator=debug,fluxgate_admission_webhook=debug,fluxgate_e2e=debug"
                .into()
        }))
        .with_ansi(false)
        .with_writer(|| LogBuffer)
        .try_init();
    let cp = testenv::shared().unwrap();
    let work = tempfile::tempdir().unwrap();
    let journey = Journey::start(cp, PathBuf::from(work.path()), |step| {
        eprintln!("journey: {step}")
    })
    .await
    .unwrap();
    let admin = journey.admin.clone();

    // The merge-request check on the platform repo as served.
    let report = validate(journey.platform.work_dir());
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    assert_eq!(report.accepted.len(), 4);

    // Everything arrives: platform sync, operator, reconcilers.
    if let Err(e) = journey
        .wait_condition(
            "fluxgate-system",
            "platform",
            conditions::READY,
            "True",
            Duration::from_secs(120),
        )
        .await
    {
        let fc = flux_config(&admin, "fluxgate-system", "platform").await;
        panic!(
            "platform sync not Ready: {e}\nstatus: {:?}\nrunning: {:?}\nlog:\n{}",
            fc.and_then(|f| f.status),
            journey.runner.running(),
            journey
                .runner
                .logs("fluxgate-system/fluxgate-platform-sync", 40)
        );
    }
    for (ns, name) in [
        ("team-a", "web"),
        ("team-b", "payments"),
        ("team-c", "ledger"),
    ] {
        if let Err(e) = journey
            .wait_condition(
                ns,
                name,
                conditions::READY,
                "True",
                Duration::from_secs(180),
            )
            .await
        {
            let fc = flux_config(&admin, ns, name).await;
            let deployments: Vec<String> = Api::<Deployment>::namespaced(admin.clone(), ns)
                .list(&Default::default())
                .await
                .map(|l| {
                    l.items
                        .iter()
                        .map(|d| d.metadata.name.clone().unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default();
            panic!(
                "{ns}/{name}: {e}\nstatus: {:?}\ndeployments: {deployments:?}\nrunning: {:?}\noperator writes: {}\nreconciler log:\n{}\ncontrol plane:\n{}",
                fc.and_then(|f| f.status),
                journey.runner.running(),
                journey.operator.metrics.total_writes(),
                journey
                    .runner
                    .logs(&format!("{ns}/fluxgate-reconciler"), 30),
                cp.logs_tail(10),
            );
        }
    }
    assert_eq!(
        config_map(&admin, "team-a", "web-config")
            .await
            .unwrap()
            .data
            .unwrap()["GREETING"],
        "hello from team-a"
    );
    assert!(
        Api::<Service>::namespaced(admin.clone(), "team-a")
            .get_opt("web")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<Deployment>::namespaced(admin.clone(), "team-b")
            .get_opt("payments")
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        Api::<StatefulSet>::namespaced(admin.clone(), "team-c-staging")
            .get_opt("ledger")
            .await
            .unwrap()
            .is_some()
    );

    let team_a = &journey.teams["team-a"].repo;
    let revision = |fc: &FluxConfig| {
        fc.status
            .as_ref()
            .and_then(|s| s.last_applied_revision.clone())
            .unwrap_or_default()
    };

    // A new commit is applied.
    let sha = team_a
        .commit_files(&[("deploy/extra.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  added: \"yes\"\n")], "add extra")
        .unwrap();
    let started = Instant::now();
    eventually("extra ConfigMap applied", Duration::from_secs(60), || {
        let admin = admin.clone();
        async move { config_map(&admin, "team-a", "extra").await.map(|_| ()) }
    })
    .await;
    eprintln!("journey: commit to applied in {:?}", started.elapsed());
    let fc = eventually("revision reported", Duration::from_secs(30), || {
        let admin = admin.clone();
        let sha = sha.clone();
        async move {
            flux_config(&admin, "team-a", "web")
                .await
                .filter(|fc| revision(fc).ends_with(&sha))
        }
    })
    .await;
    assert!(fc.condition_is_true(conditions::READY));

    // A deleted file is pruned.
    team_a
        .delete_files(&["deploy/service.yaml"], "drop the service")
        .unwrap();
    eventually("service pruned", Duration::from_secs(60), || {
        let admin = admin.clone();
        async move {
            Api::<Service>::namespaced(admin, "team-a")
                .get_opt("web")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;

    // A `kubectl edit` of an applied object is reverted.
    Api::<ConfigMap>::namespaced(admin.clone(), "team-a")
        .patch(
            "web-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"GREETING": "hacked"}})),
        )
        .await
        .unwrap();
    eventually("edit reverted", Duration::from_secs(30), || {
        let admin = admin.clone();
        async move {
            let cm = config_map(&admin, "team-a", "web-config").await?;
            (cm.data?["GREETING"] == "hello from team-a").then_some(())
        }
    })
    .await;

    // A commit reaching into another team's namespace, and one with a
    // cluster-scoped object: Stalled, nothing created there.
    let before = revision(&flux_config(&admin, "team-a", "web").await.unwrap());
    team_a
        .commit_files(
            &[("deploy/steal.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stolen\n  namespace: team-b\ndata: {}\n")],
            "reach into team-b",
        )
        .unwrap();
    let fc = journey
        .wait_condition(
            "team-a",
            "web",
            conditions::STALLED,
            "True",
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let message = fc.condition(conditions::STALLED).unwrap().message.clone();
    assert!(message.contains("team-b"), "{message}");
    assert!(config_map(&admin, "team-b", "stolen").await.is_none());
    assert_eq!(
        revision(&fc),
        before,
        "the last good revision stays applied"
    );
    team_a.delete_files(&["deploy/steal.yaml"], "undo").unwrap();
    team_a
        .commit_files(
            &[("deploy/cluster.yaml", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: team-a-admin\nrules: []\n")],
            "try a cluster-scoped object",
        )
        .unwrap();
    let fc = eventually(
        "cluster-scoped object refused",
        Duration::from_secs(60),
        || {
            let admin = admin.clone();
            async move {
                flux_config(&admin, "team-a", "web").await.filter(|fc| {
                    fc.condition(conditions::STALLED)
                        .is_some_and(|c| c.status == "True" && c.message.contains("ClusterRole"))
                })
            }
        },
    )
    .await;
    assert!(
        fc.condition(conditions::STALLED)
            .unwrap()
            .message
            .contains("cluster-scoped"),
        "{:?}",
        fc.status
    );
    team_a
        .delete_files(&["deploy/cluster.yaml"], "undo")
        .unwrap();
    journey
        .wait_condition(
            "team-a",
            "web",
            conditions::READY,
            "True",
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    // A broken YAML commit keeps what runs and says where it broke.
    team_a
        .commit_files(
            &[(
                "deploy/broken.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\ndata: [unclosed\n",
            )],
            "oops",
        )
        .unwrap();
    let fc = eventually(
        "broken commit reported with file and line",
        Duration::from_secs(60),
        || {
            let admin = admin.clone();
            async move {
                flux_config(&admin, "team-a", "web").await.filter(|fc| {
                    fc.status
                        .as_ref()
                        .and_then(|s| s.last_error.as_ref())
                        .is_some_and(|e| e.file.is_some())
                })
            }
        },
    )
    .await;
    let error = fc.status.unwrap().last_error.unwrap();
    assert_eq!(
        error.file.as_deref(),
        Some("deploy/broken.yaml"),
        "{error:?}"
    );
    assert!(error.line.is_some(), "{error:?}");
    assert!(config_map(&admin, "team-a", "web-config").await.is_some());
    team_a.delete_files(&["deploy/broken.yaml"], "fix").unwrap();
    journey
        .wait_condition(
            "team-a",
            "web",
            conditions::READY,
            "True",
            Duration::from_secs(60),
        )
        .await
        .unwrap();

    // The Git server going away keeps the last state and says so.
    journey.git.stop().await;
    let fc = eventually("outage reported", Duration::from_secs(90), || {
        let admin = admin.clone();
        async move {
            flux_config(&admin, "team-a", "web").await.filter(|fc| {
                fc.condition(conditions::READY)
                    .is_some_and(|c| c.status == "False")
            })
        }
    })
    .await;
    eprintln!(
        "journey: outage reported as {:?}",
        fc.condition(conditions::READY)
    );
    assert!(config_map(&admin, "team-a", "web-config").await.is_some());
    journey.git.start_again().await.unwrap();
    journey
        .wait_condition(
            "team-a",
            "web",
            conditions::READY,
            "True",
            Duration::from_secs(90),
        )
        .await
        .unwrap();

    // The platform repo: a FluxConfig the rules forbid fails validation with
    // the webhook's words, and the platform sync reports the same denial.
    let platform = &journey.platform;
    platform
        .write(&[(
            "teams/team-a/evil.yaml",
            "apiVersion: fluxgate.dev/v1alpha1\nkind: FluxConfig\nmetadata:\n  name: evil\n  namespace: team-a\nspec:\n  repo: https://github.com/evil/x.git\n",
        )])
        .unwrap();
    let report = validate(platform.work_dir());
    assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
    let expected = r#"FluxConfig team-a/evil: spec.repo "https://github.com/evil/x.git" is not allowed for namespace team-a (PlatformDefaults "global")"#;
    assert!(
        report.findings[0].message.starts_with(expected),
        "{}",
        report.findings[0].message
    );
    platform.commit("let team-a sync from github").unwrap();
    let fc = eventually(
        "platform sync reports the denial",
        Duration::from_secs(90),
        || {
            let admin = admin.clone();
            async move {
                flux_config(&admin, "fluxgate-system", "platform")
                    .await
                    .filter(|fc| {
                        fc.condition(conditions::STALLED)
                            .is_some_and(|c| c.status == "True")
                    })
            }
        },
    )
    .await;
    let message = fc.condition(conditions::STALLED).unwrap().message.clone();
    assert!(message.contains(expected), "{message}");
    assert!(flux_config(&admin, "team-a", "evil").await.is_none());
    platform
        .delete_files(&["teams/team-a/evil.yaml"], "revert")
        .unwrap();
    journey
        .wait_condition(
            "fluxgate-system",
            "platform",
            conditions::READY,
            "True",
            Duration::from_secs(90),
        )
        .await
        .unwrap();

    // Removing a team from the platform repo removes its reconciler and
    // everything made for it.
    platform
        .delete_files(&["teams/team-b"], "offboard team-b")
        .unwrap();
    eventually(
        "team-b's FluxConfig pruned",
        Duration::from_secs(90),
        || {
            let admin = admin.clone();
            async move {
                flux_config(&admin, "team-b", "payments")
                    .await
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;
    eventually(
        "team-b's reconciler removed",
        Duration::from_secs(60),
        || {
            let admin = admin.clone();
            async move {
                Api::<Deployment>::namespaced(admin, "team-b")
                    .get_opt("fluxgate-reconciler")
                    .await
                    .unwrap()
                    .is_none()
                    .then_some(())
            }
        },
    )
    .await;
    eventually("team-b's process stopped", Duration::from_secs(30), || {
        let running = journey.runner.running();
        async move { (!running.iter().any(|k| k.starts_with("team-b/"))).then_some(()) }
    })
    .await;
    for row in journey.table().await {
        eprintln!("journey: {row:?}");
    }
    drop(journey);
    assert_no_credentials_logged(work.path(), cp);
}
