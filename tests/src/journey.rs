//! The whole journey, from a platform config repository to each team's
//! objects in its namespace, on a local control plane. Shared by the
//! journey test (`tests/tests/journey.rs`) and the demo (`fluxgate-demo`).
//!
//! The examples are served for real: `examples/platform-repo` and each
//! `examples/team-repos/<team>` become Git repositories on a loopback Git
//! server (smart HTTP), with `https://git.corp.example/` rewritten to that
//! server. The platform instance of the reconciler syncs the platform repo
//! (Namespaces, PlatformDefaults, FluxConfigs, through the admission
//! webhook), the operator provisions each team's reconciler, and the local
//! runner starts those reconcilers as processes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fluxgate_crds::FluxConfig;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};

use crate::gitserver::{GitServer, Repo};
use crate::runner::{LocalRunner, reconciler_binary};
use crate::stack::{
    self, INSTALLER, PLATFORM_NAMESPACE, RunningOperator, RunningWebhook, StackError,
};
use crate::testenv::ControlPlane;

/// The host the examples name, replaced by the loopback Git server.
pub const EXAMPLE_GIT_BASE: &str = "https://git.corp.example/";

/// A team repository served for the journey.
#[derive(Debug)]
pub struct TeamRepo {
    /// The repository.
    pub repo: Repo,
    /// The branch its FluxConfig follows (commits are pushed there).
    pub branch: String,
}

/// Everything running for the journey.
pub struct Journey {
    /// The control plane.
    pub control_plane: &'static ControlPlane,
    /// An admin client.
    pub admin: Client,
    /// The loopback Git server.
    pub git: GitServer,
    /// The platform config repository.
    pub platform: Repo,
    /// Team repositories by team namespace.
    pub teams: BTreeMap<String, TeamRepo>,
    /// The local runner (drop order: first, so reconcilers stop before the
    /// operator and webhook).
    pub runner: LocalRunner,
    /// The operator.
    pub operator: RunningOperator,
    /// The webhook.
    pub webhook: RunningWebhook,
}

fn git_err(e: crate::gitserver::GitServerError) -> StackError {
    StackError::Start(crate::stack::chain(&e))
}

/// Every file under `dir` (relative path, text), skipping hidden entries.
fn files_under(dir: &Path) -> Result<Vec<(String, String)>, StackError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| StackError::Manifest(d.clone(), e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| StackError::Manifest(path.clone(), e))?;
                let relative = path
                    .strip_prefix(dir)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned();
                out.push((relative, text));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Adapts a platform-repo file to the local run: the Git host becomes the
/// loopback server, and intervals shrink from minutes to seconds (the
/// reconcilers poll; there is no push receiver) together with the
/// platform's minimum interval.
pub fn for_local_run(text: &str, git_base: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.replace(EXAMPLE_GIT_BASE, git_base).lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let trimmed = line.trim_start();
        if trimmed.starts_with("interval:") {
            out.push_str(&format!("{indent}interval: {LOCAL_INTERVAL}"));
        } else if trimmed.starts_with("minInterval:") {
            out.push_str(&format!("{indent}minInterval: 1s"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// The password of the journey's Git credential Secrets: a value that must
/// never appear in any log (the journey test scans them all).
pub const GIT_PASSWORD: &str = "journey-secret-7d41c9e2b8";

/// The sync interval of every FluxConfig in the local run.
pub const LOCAL_INTERVAL: &str = "3s";

impl std::fmt::Debug for Journey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journey")
            .field("git", &self.git)
            .finish_non_exhaustive()
    }
}

impl Journey {
    /// Brings everything up, reporting each step to `progress`.
    pub async fn start(
        control_plane: &'static ControlPlane,
        work_dir: PathBuf,
        mut progress: impl FnMut(&str),
    ) -> Result<Self, StackError> {
        let admin = control_plane.client()?;
        progress("serving the example repositories over Git smart HTTP on loopback");
        let git = GitServer::start().await.map_err(git_err)?;
        let base = format!("http://{}/", git.addr());
        progress("installing fluxgate from its Helm chart (deploy/charts/fluxgate)");
        stack::install_with(
            &admin,
            &[
                format!("platformSync.repo={}", git.url("platform/config")),
                "platformSync.interval=5s".to_owned(),
                "platformSync.credentialsSecret=git-platform-readonly".to_owned(),
            ],
        )
        .await?;
        progress(
            "starting the admission webhook as the chart's ServiceAccount, behind the chart's \
             Service, with self-managed certificates",
        );
        let webhook = stack::start_chart_webhook(control_plane).await?;
        progress("starting the operator (as its ServiceAccount)");
        let operator = stack::start_operator(control_plane).await?;
        let root = stack::repo_root().join("examples");
        let mut teams = BTreeMap::new();
        for (namespace, repo_name, dir, branch, tag) in [
            ("team-a", "team-a/web", "team-a", "main", None),
            (
                "team-b",
                "team-b/payments",
                "team-b",
                "release/2026-11",
                None,
            ),
            (
                "team-c",
                "regulated/team-c/ledger",
                "team-c",
                "main",
                Some("v3.4.1"),
            ),
        ] {
            let repo = git.create_repo(repo_name).map_err(git_err)?;
            let files = files_under(&root.join("team-repos").join(dir))?;
            let files: Vec<(&str, &str)> = files
                .iter()
                .map(|(p, t)| (p.as_str(), t.as_str()))
                .collect();
            repo.commit_files(&files, "initial manifests")
                .map_err(git_err)?;
            if branch != "main" {
                repo.git(&["push", "-q", "origin", &format!("main:{branch}")])
                    .map_err(git_err)?;
            }
            if let Some(tag) = tag {
                repo.tag(tag).map_err(git_err)?;
            }
            teams.insert(
                namespace.to_owned(),
                TeamRepo {
                    repo,
                    branch: branch.to_owned(),
                },
            );
        }
        let platform = git.create_repo("platform/config").map_err(git_err)?;
        let files: Vec<(String, String)> = files_under(&root.join("platform-repo"))?
            .into_iter()
            .map(|(p, t)| (p, for_local_run(&t, &base)))
            .collect();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        platform
            .commit_files(&files, "platform config: three teams")
            .map_err(git_err)?;

        // The credentials the platform defaults assign to its Git host (the
        // loopback server does not check them; the copy into team
        // namespaces is what matters here).
        for name in ["git-corp-readonly", "git-platform-readonly"] {
            let secret: Secret = serde_json::from_value(serde_json::json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": PLATFORM_NAMESPACE},
                "stringData": {"username": "fluxgate", "password": GIT_PASSWORD},
            }))
            .map_err(|e| StackError::Start(e.to_string()))?;
            Api::<Secret>::namespaced(admin.clone(), PLATFORM_NAMESPACE)
                .patch(
                    name,
                    &PatchParams::apply(INSTALLER).force(),
                    &Patch::Apply(&secret),
                )
                .await
                .map_err(|e| StackError::Kube(format!("create the Secret {name}"), e))?;
        }

        progress(
            "building the reconciler and starting the local runner (stands in for the kubelet; \
             it runs the chart's platform sync and every team's reconciler)",
        );
        let binary = reconciler_binary()?;
        let runner = LocalRunner::start(control_plane, binary, work_dir.join("runner"))?;

        Ok(Self {
            control_plane,
            admin,
            git,
            platform,
            teams,
            runner,
            operator,
            webhook,
        })
    }

    /// Waits until `namespace/name` has `type_=status` for its current
    /// generation.
    pub async fn wait_condition(
        &self,
        namespace: &str,
        name: &str,
        type_: &str,
        status: &str,
        timeout: Duration,
    ) -> Result<FluxConfig, StackError> {
        let api: Api<FluxConfig> = Api::namespaced(self.admin.clone(), namespace);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(fc)) = api.get_opt(name).await
                && fc.condition(type_).is_some_and(|c| c.status == status)
            {
                return Ok(fc);
            }
            if Instant::now() > deadline {
                return Err(StackError::Timeout("FluxConfig condition", timeout));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// One row per FluxConfig in the team namespaces: namespace, name,
    /// Ready, revision, objects applied.
    pub async fn table(&self) -> Vec<[String; 5]> {
        let api: Api<FluxConfig> = Api::all(self.admin.clone());
        let mut rows: Vec<[String; 5]> = api
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|fc| fc.namespace().as_deref() != Some(PLATFORM_NAMESPACE))
            .map(|fc| {
                let status = fc.status.clone().unwrap_or_default();
                let ready = fc
                    .condition(fluxgate_crds::conditions::READY)
                    .map(|c| c.status.clone())
                    .unwrap_or_else(|| "-".into());
                let revision = status.last_applied_revision.unwrap_or_else(|| "-".into());
                let objects = status
                    .inventory
                    .map(|i| i.total.to_string())
                    .unwrap_or_else(|| "0".into());
                [
                    fc.namespace().unwrap_or_default(),
                    fc.name_any(),
                    ready,
                    revision,
                    objects,
                ]
            })
            .collect();
        rows.sort();
        rows
    }
}
