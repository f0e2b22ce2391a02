//! The Helm chart under `deploy/charts/fluxgate`, rendered by a real `helm`
//! (built from Helm's Go module by `tests/helm/build.sh`, cached like the
//! control plane), and the plain manifests rendered from it
//! (`deploy/manifests/fluxgate.yaml`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The chart.
pub fn chart_dir() -> PathBuf {
    crate::stack::repo_root().join("deploy/charts/fluxgate")
}

/// The plain manifests: the chart rendered with [`PLAIN_ARGS`].
pub const PLAIN_MANIFESTS: &str = "deploy/manifests/fluxgate.yaml";

/// Release name, namespace and values of the plain manifests.
pub const PLAIN_ARGS: &[&str] = &[
    "fluxgate",
    "--include-crds",
    "--namespace",
    "fluxgate-system",
    "--set",
    "namespace.create=true",
];

/// The header of the plain manifests (the rest is `helm template` output).
pub const PLAIN_HEADER: &str = "\
# fluxgate, plain manifests for `kubectl apply --server-side -f`: the Helm
# chart deploy/charts/fluxgate rendered with its default values and its CRDs,
# release `fluxgate` in namespace fluxgate-system (created here with the
# restricted Pod Security Standard enforced). Generated; do not edit.
# Regenerate with
#   FLUXGATE_UPDATE_MANIFESTS=1 cargo test -p fluxgate-e2e --test chart
";

/// Why helm could not run.
#[derive(Debug, thiserror::Error)]
pub enum HelmError {
    /// The build script could not run or failed.
    #[error("{} failed: {message}", script.display())]
    Build {
        /// The script.
        script: PathBuf,
        /// What happened.
        message: String,
    },
    /// helm could not be started.
    #[error("cannot run {}", helm.display())]
    Spawn {
        /// The binary.
        helm: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// helm exited with an error.
    #[error("helm {args} failed: {stderr}")]
    Failed {
        /// Its arguments.
        args: String,
        /// Its standard error.
        stderr: String,
    },
}

/// The helm binary: `$FLUXGATE_HELM`, or what `tests/helm/build.sh` prints
/// (it builds helm on first use).
pub fn helm_binary() -> Result<&'static Path, HelmError> {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = HELM.get_or_init(|| {
        if let Some(path) = std::env::var_os("FLUXGATE_HELM") {
            return Ok(PathBuf::from(path));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/build.sh");
        let output = Command::new(&script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("cannot run it: {e}"))?;
        if !output.status.success() {
            return Err(format!("{}; its output is above", output.status));
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().map(str::trim).rfind(|l| !l.is_empty());
        Ok(PathBuf::from(last.unwrap_or_default()))
    });
    match found {
        Ok(path) => Ok(path.as_path()),
        Err(message) => Err(HelmError::Build {
            script: Path::new(env!("CARGO_MANIFEST_DIR")).join("helm/build.sh"),
            message: message.clone(),
        }),
    }
}

/// Runs `helm args…`; its standard output on success.
pub fn helm(args: &[&str]) -> Result<String, HelmError> {
    let helm = helm_binary()?;
    let output = Command::new(helm)
        .args(args)
        .stdin(Stdio::null())
        // Hermetic: no user configuration, repositories or plugins.
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("fluxgate-helm/config"),
        )
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("fluxgate-helm/cache"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("fluxgate-helm/data"),
        )
        .output()
        .map_err(|source| HelmError::Spawn {
            helm: helm.to_owned(),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(HelmError::Failed {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// `helm template <release> deploy/charts/fluxgate <args…>`.
pub fn template(release: &str, args: &[&str]) -> Result<String, HelmError> {
    let chart = chart_dir();
    let chart = chart.to_string_lossy();
    let mut all = vec!["template", release, chart.as_ref()];
    all.extend_from_slice(args);
    helm(&all)
}

/// The plain manifests as they should be: [`PLAIN_HEADER`] and the chart
/// rendered with [`PLAIN_ARGS`].
pub fn render_plain() -> Result<String, HelmError> {
    let (release, args) = PLAIN_ARGS.split_first().unwrap_or((&"fluxgate", &[]));
    Ok(format!("{PLAIN_HEADER}{}", template(release, args)?))
}

/// Parses multi-document YAML into its non-empty documents.
pub fn documents(yaml: &str) -> Result<Vec<serde_json::Value>, String> {
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(yaml).map_err(|e| e.to_string())?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}
