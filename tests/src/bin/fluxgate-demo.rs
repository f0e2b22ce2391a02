//! `fluxgate-demo`: the whole journey on a local control plane, for a person.
//!
//! Builds what it needs (the Kubernetes binaries on the first run), starts
//! etcd + kube-apiserver + kube-controller-manager in `.dev-cluster/`,
//! installs fluxgate, serves the `examples/` platform and team repositories
//! over Git on loopback, and lets the platform sync, the admission webhook,
//! the operator and the teams' reconcilers do their work. Ends with a table
//! per team and keeps everything running for `kubectl` until Ctrl-C.
//! Run it through `hack/demo.sh`.

use std::error::Error;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use fluxgate_crds::conditions;
use fluxgate_e2e::ControlPlane;
use fluxgate_e2e::journey::Journey;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let mut message = format!("demo failed: {err}");
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

fn step(n: usize, text: &str) {
    println!("[{n:>2}] {text}");
}

/// Runs the envtest build with a heartbeat, so the long first build shows
/// progress.
async fn build_control_plane(repo: &Path) -> Result<String, Box<dyn Error>> {
    let started = Instant::now();
    let mut child = tokio::process::Command::new(repo.join("tests/envtest/build.sh"))
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut ticker = tokio::time::interval(Duration::from_secs(15));
    ticker.tick().await;
    let wait = child.wait();
    tokio::pin!(wait);
    let status = loop {
        tokio::select! {
            status = &mut wait => break status?,
            _ = ticker.tick() => println!("     ... still building Kubernetes from its Go modules ({}s; the first run takes ~15 min, later runs none)", started.elapsed().as_secs()),
        }
    };
    if !status.success() {
        return Err(format!("tests/envtest/build.sh failed: {status}").into());
    }
    let mut out = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stdout, &mut out).await?;
    Ok(out.lines().last().unwrap_or_default().to_owned())
}

async fn run() -> Result<(), Box<dyn Error>> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let repo = repo.canonicalize().unwrap_or(repo);
    let dir = repo.join(".dev-cluster");
    let mut terminate = signal(SignalKind::terminate())?;

    println!(
        "fluxgate demo: a platform repo with three teams, synced into a local control plane\n"
    );
    step(
        1,
        "Kubernetes control-plane binaries (kube-apiserver, kube-controller-manager, etcd, kubectl)",
    );
    let bin_dir = build_control_plane(&repo).await?;
    step(
        2,
        &format!(
            "starting etcd + kube-apiserver + kube-controller-manager in {}",
            dir.display()
        ),
    );
    // The binaries are built now, so this finds them in the cache at once.
    // Leaked: the journey's threads borrow it until the process exits.
    let control_plane: &'static ControlPlane = {
        let dir = dir.clone();
        Box::leak(Box::new(
            tokio::task::spawn_blocking(move || ControlPlane::start_in(dir)).await??,
        ))
    };
    println!(
        "     up at {} in {:.1?}",
        control_plane.server_url(),
        control_plane.startup_time()
    );

    let mut n = 2;
    let journey = Journey::start(control_plane, dir.join("demo"), |text| {
        n += 1;
        step(n, text);
    })
    .await?;

    n += 1;
    step(
        n,
        "waiting for the platform sync to apply the platform repo (Namespaces, PlatformDefaults, FluxConfigs)",
    );
    journey
        .wait_condition(
            "fluxgate-system",
            "platform",
            conditions::READY,
            "True",
            Duration::from_secs(120),
        )
        .await?;
    n += 1;
    step(
        n,
        "waiting for each team's FluxConfig: admitted, provisioned by the operator, synced by its reconciler",
    );
    for (ns, name) in [
        ("team-a", "web"),
        ("team-b", "payments"),
        ("team-c", "ledger"),
    ] {
        let started = Instant::now();
        let fc = journey
            .wait_condition(
                ns,
                name,
                conditions::READY,
                "True",
                Duration::from_secs(180),
            )
            .await?;
        let revision = fc
            .status
            .and_then(|s| s.last_applied_revision)
            .unwrap_or_default();
        println!(
            "     {ns}/{name}: Ready at {revision} ({:.1?})",
            started.elapsed()
        );
    }

    let header = [
        "NAMESPACE".to_owned(),
        "FLUXCONFIG".into(),
        "READY".into(),
        "REVISION".into(),
        "OBJECTS".into(),
    ];
    println!();
    for [ns, name, ready, revision, objects] in std::iter::once(header).chain(journey.table().await)
    {
        println!("{ns:<14} {name:<15} {ready:<6} {revision:<58} {objects}");
    }

    let kubeconfig = control_plane.kubeconfig_path().display().to_string();
    println!(
        "\nEverything keeps running. In another shell:\n\n  export KUBECONFIG={kubeconfig}\n  export PATH={bin_dir}:$PATH\n  kubectl get fluxconfigs -A\n  kubectl get deploy,svc,configmap -n team-a\n  kubectl describe fc -n team-b payments\n  kubectl get fc -n team-a web -o jsonpath='{{.status.effective}}'\n\nThe platform repo is {} — clone it, commit, and watch the cluster follow.\nPress Ctrl-C to stop everything.",
        journey.git.url("platform/config")
    );
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    println!("stopping ...");
    drop(journey);
    Ok(())
}
