//! `fluxgate-dev-cluster`: the end-to-end tests' control plane, for a human.
//!
//! Starts etcd, kube-apiserver and kube-controller-manager with their files
//! in `<repo>/.dev-cluster/` (wiped on every start, kept after stop for the
//! logs), installs the CRDs from `deploy/crds/`, prints how to point kubectl
//! at it, and runs until Ctrl-C. Run it through `hack/dev-cluster.sh`.

use std::error::Error;
use std::path::Path;
use std::process::ExitCode;

use fluxgate_e2e::{ControlPlane, deploy_crds_dir, install_crds, load_crds};
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut message = format!("error: {err}");
            let mut source = err.source();
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = repo.canonicalize().unwrap_or(repo);
    let dir = repo.join(".dev-cluster");
    // Subscribe before starting: a Ctrl-C during startup then stops the
    // components cleanly instead of killing this process outright.
    let mut terminate = signal(SignalKind::terminate())?;

    eprintln!("starting the control plane in {} ...", dir.display());
    let control_plane = tokio::task::spawn_blocking(move || ControlPlane::start_in(dir)).await??;

    let crds = load_crds(&deploy_crds_dir())?;
    install_crds(&control_plane.client()?, &crds).await?;

    let kubeconfig = control_plane.kubeconfig_path().display();
    let bin_dir = control_plane.bin_dir().display();
    println!(
        "\
fluxgate dev cluster is up at {server} (started in {startup:.1?}; {count} CRDs installed).

  kubeconfig:  {kubeconfig}
  logs:        {dir}/{{etcd,kube-apiserver,kube-controller-manager}}.log
  audit log:   {audit}

In another shell:

  export KUBECONFIG={kubeconfig}
  export PATH={bin_dir}:$PATH
  kubectl get crds
  kubectl explain fluxconfig.spec
  kubectl apply -R -f examples/platform-repo/

There is no scheduler and no kubelet: objects are stored, validated and
garbage collected, but pods never run.

Press Ctrl-C to stop.",
        server = control_plane.server_url(),
        startup = control_plane.startup_time(),
        count = crds.len(),
        dir = control_plane.dir().display(),
        audit = control_plane.audit_log_path().display(),
    );

    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    eprintln!("stopping ...");
    tokio::task::spawn_blocking(move || drop(control_plane)).await?;
    eprintln!("stopped; logs remain in .dev-cluster/");
    Ok(())
}
