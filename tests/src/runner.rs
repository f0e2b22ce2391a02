//! The **local runner**: a stand-in for the kubelet, for tests and the demo.
//!
//! This machine has no container runtime, so the reconciler Deployments the
//! operator creates would never run. The local runner watches those
//! Deployments and the chart's platform sync ([`RUN_SELECTOR`]) and, for each,
//! starts the `fluxgate-reconciler` binary as a local process the way a
//! kubelet would start its pod: with the Deployment's args and literal env,
//! a token requested for the Deployment's ServiceAccount (TokenRequest API)
//! in a kubeconfig, and the Secrets the pod mounts written to files under a
//! private root. It restarts the process when the pod template changes or
//! the process exits, and stops it when the Deployment is deleted.
//!
//! Everything else goes through the real objects: the process can do only
//! what the ServiceAccount's RBAC allows.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::testenv::process::Component;
use crate::testenv::{ControlPlane, Error, service_account_token};

/// One reconciler process.
#[derive(Debug)]
struct Running {
    template: String,
    component: Component,
}

/// Deployments running as local processes, by `namespace/name`.
type Table = Arc<Mutex<BTreeMap<String, Running>>>;

/// A running local runner; stops every process on drop.
#[derive(Debug)]
pub struct LocalRunner {
    table: Table,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Builds the `fluxgate-reconciler` binary of this workspace (a no-op when
/// it is up to date) and returns its path: debug, or `release`.
///
/// `cargo test`/`cargo run` give this process its package's `CARGO_*`
/// variables; build scripts (ring's) rerun when `CARGO_MANIFEST_DIR`
/// changes, so passing them on to the nested cargo would rebuild half the
/// dependency graph, here and in the next outer build. They are removed.
pub fn build_reconciler(release: bool) -> Result<PathBuf, Error> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    command.args([
        "build",
        "--quiet",
        "-p",
        "fluxgate-reconciler",
        "--bin",
        "fluxgate-reconciler",
    ]);
    if release {
        command.arg("--release");
    }
    let status = command
        .current_dir(&workspace)
        .status()
        .map_err(|source| Error::Spawn {
            component: "cargo build".to_owned(),
            source,
        })?;
    if !status.success() {
        return Err(Error::Spawn {
            component: "cargo build -p fluxgate-reconciler".to_owned(),
            source: std::io::Error::other(format!("exited with {status}")),
        });
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Ok(target
        .join(if release { "release" } else { "debug" })
        .join("fluxgate-reconciler"))
}

/// The debug `fluxgate-reconciler` binary ([`build_reconciler`]).
pub fn reconciler_binary() -> Result<PathBuf, Error> {
    build_reconciler(false)
}

impl LocalRunner {
    /// Starts watching reconciler Deployments on `control_plane`, running
    /// each with `binary`, keeping files and logs under `dir`.
    pub fn start(
        control_plane: &'static ControlPlane,
        binary: PathBuf,
        dir: PathBuf,
    ) -> Result<Self, Error> {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let table: Table = Arc::default();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread_table = table.clone();
        let thread = std::thread::Builder::new()
            .name("local-runner".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(run(control_plane, binary, dir, thread_table, stop_rx));
            })
            .map_err(|source| Error::Spawn {
                component: "local runner thread".to_owned(),
                source,
            })?;
        Ok(Self {
            table,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `namespace/name` of every Deployment with a live process.
    pub fn running(&self) -> Vec<String> {
        self.table
            .lock()
            .map(|mut t| {
                t.iter_mut()
                    .filter_map(|(k, r)| r.component.exited().is_none().then(|| k.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The last lines of the log of the reconciler for `namespace/name`.
    pub fn logs(&self, key: &str, lines: usize) -> String {
        self.table
            .lock()
            .ok()
            .and_then(|t| t.get(key).map(|r| r.component.log_tail(lines)))
            .unwrap_or_default()
    }
}

impl Drop for LocalRunner {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Ok(mut table) = self.table.lock() {
            // Dropping a component stops its process (see `process`).
            table.clear();
        }
    }
}

/// The Deployments the runner runs: every team's reconciler (the operator's
/// templates) and the chart's platform sync; both run `fluxgate-reconciler`.
pub const RUN_SELECTOR: &str =
    "app.kubernetes.io/name in (fluxgate-reconciler,fluxgate-platform-sync)";

async fn run(
    control_plane: &'static ControlPlane,
    binary: PathBuf,
    dir: PathBuf,
    table: Table,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(client) = control_plane.client() else {
        return;
    };
    let api: Api<Deployment> = Api::all(client.clone());
    let config = watcher::Config::default().labels(RUN_SELECTOR);
    let mut events = watcher(api.clone(), config).boxed();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {
                // Restart processes that exited, like a kubelet would.
                let Ok(list) = api.list(&kube::api::ListParams::default().labels(RUN_SELECTOR)).await else { continue };
                for dep in list.items {
                    ensure(control_plane, &client, &binary, &dir, &table, &dep, false).await;
                }
            }
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(dep) | watcher::Event::InitApply(dep))) => {
                    ensure(control_plane, &client, &binary, &dir, &table, &dep, true).await;
                }
                Some(Ok(watcher::Event::Delete(dep))) => {
                    let key = format!("{}/{}", dep.namespace().unwrap_or_default(), dep.name_any());
                    let removed = table.lock().ok().and_then(|mut t| t.remove(&key));
                    drop(removed);
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => tracing::warn!(error = %err, "local runner: watch error"),
                None => return,
            },
        }
    }
}

/// Starts the Deployment's process unless one runs with the same template.
async fn ensure(
    control_plane: &'static ControlPlane,
    client: &Client,
    binary: &Path,
    dir: &Path,
    table: &Table,
    dep: &Deployment,
    from_event: bool,
) {
    if dep.metadata.deletion_timestamp.is_some() {
        return;
    }
    let namespace = dep.namespace().unwrap_or_default();
    let key = format!("{namespace}/{}", dep.name_any());
    let template = serde_json::to_string(&dep.spec.template).unwrap_or_default();
    {
        let Ok(mut t) = table.lock() else {
            return;
        };
        if let Some(running) = t.get_mut(&key) {
            let alive = running.component.exited().is_none();
            if running.template == template && (alive || from_event) {
                return;
            }
        }
        // Stop the old process before starting the new one (Recreate).
        let old = t.remove(&key);
        drop(old);
    }
    match start(control_plane, client, binary, dir, dep, &namespace).await {
        Ok(component) => {
            if let Ok(mut t) = table.lock() {
                t.insert(
                    key,
                    Running {
                        template,
                        component,
                    },
                );
            }
        }
        Err(err) => {
            tracing::warn!(deployment = %key, error = %err, "local runner: cannot start reconciler")
        }
    }
}

async fn start(
    control_plane: &'static ControlPlane,
    client: &Client,
    binary: &Path,
    dir: &Path,
    dep: &Deployment,
    namespace: &str,
) -> Result<Component, Error> {
    let pod = dep.spec.template.spec.clone().unwrap_or_default();
    let container = pod.containers.first().cloned().unwrap_or_default();
    let service_account = pod
        .service_account_name
        .clone()
        .unwrap_or_else(|| "default".to_owned());
    let token = service_account_token(client, namespace, &service_account).await?;
    let root = dir.join(format!("{namespace}-{}", dep.name_any()));
    let _ = std::fs::remove_dir_all(&root);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io {
            action: "write",
            path,
            source,
        }
    };
    std::fs::create_dir_all(root.join("tmp")).map_err(io(&root))?;

    // The kubeconfig a pod would get from its projected token.
    let kubeconfig = root.join("kubeconfig");
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "pod",
        "clusters": [{"name": "local", "cluster": {
            "server": control_plane.server_url(),
            "certificate-authority-data": base64_std(control_plane.ca_cert_pem().as_bytes()),
        }}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "pod", "context": {"cluster": "local", "user": service_account, "namespace": namespace}}],
    });
    std::fs::write(&kubeconfig, config.to_string()).map_err(io(&kubeconfig))?;

    // Secret volumes, written under the private root at their mount paths.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut credentials_dir = None;
    for volume in pod.volumes.iter().flatten() {
        let Some(secret_name) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) else {
            continue;
        };
        let Some(mount) = container
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume.name)
        else {
            continue;
        };
        let target = root.join(mount.mount_path.trim_start_matches('/'));
        std::fs::create_dir_all(&target).map_err(io(&target))?;
        if let Some(parent) = target.parent() {
            credentials_dir = Some(parent.to_owned());
        }
        let Ok(secret) = secrets.get(&secret_name).await else {
            continue;
        };
        for (key, value) in secret.data.unwrap_or_default() {
            let file = target.join(key);
            std::fs::write(&file, &value.0).map_err(io(&file))?;
        }
    }

    let mut args: Vec<OsString> = container
        .args
        .unwrap_or_default()
        .into_iter()
        .map(OsString::from)
        .collect();
    let credentials_dir = credentials_dir.unwrap_or_else(|| root.join("var/run/fluxgate/git"));
    args.push(format!("--credentials-dir={}", credentials_dir.display()).into());
    args.push(format!("--work-dir={}", root.join("tmp/fluxgate").display()).into());
    args.push("--admin-listen=127.0.0.1:0".into());
    let mut envs: Vec<(String, String)> = container
        .env
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.value.map(|v| (e.name, v)))
        .collect();
    envs.retain(|(k, _)| k != "HOME");
    envs.push(("HOME".into(), root.join("tmp").display().to_string()));
    envs.push(("KUBECONFIG".into(), kubeconfig.display().to_string()));
    envs.push(("RUST_LOG".into(), "info".into()));
    let name = format!("reconciler-{namespace}-{}", dep.name_any());
    let component = Component::spawn_with_env(&name, binary, &args, &envs, dir, &[])?;
    tracing::info!(deployment = %format!("{namespace}/{}", dep.name_any()), "local runner: started reconciler");
    Ok(component)
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
