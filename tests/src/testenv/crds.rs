//! Installing CustomResourceDefinitions into a test control plane.
//!
//! The harness reads the YAML under `deploy/crds/`, the files a human
//! installs, rather than calling into the `crds` crate: the end-to-end tests
//! then also prove that what ships in `deploy/` works.

use std::borrow::Borrow;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::{await_condition, conditions};

use super::Error;

/// The field manager for everything the harness applies.
pub const FIELD_MANAGER: &str = "fluxgate.dev/testenv";

const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// `<repo>/deploy/crds`.
pub fn deploy_crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
}

/// Every CRD in the `*.yaml` files of `dir` (a file may hold several
/// documents), in file-name order.
pub fn load_crds(dir: &Path) -> Result<Vec<CustomResourceDefinition>, Error> {
    let io_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Io {
            action: "read",
            path,
            source,
        }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let path = entry.map_err(io_err(dir))?.path();
        if path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml")
        {
            files.push(path);
        }
    }
    files.sort();
    let mut crds = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        let documents: Vec<CustomResourceDefinition> =
            serde_saphyr::from_multiple(&text).map_err(|source| Error::ParseCrds {
                path: path.clone(),
                source: Box::new(source),
            })?;
        crds.extend(documents);
    }
    Ok(crds)
}

/// Server-side applies `crds` (forcing ownership, as [`FIELD_MANAGER`]) and
/// waits until each is `Established`, so its resources can be used at once.
///
/// Takes anything that yields CRDs or references to them: a `Vec` from
/// [`load_crds`], a slice, `[crd]`.
pub async fn install_crds<I>(client: &kube::Client, crds: I) -> Result<(), Error>
where
    I: IntoIterator,
    I::Item: Borrow<CustomResourceDefinition>,
{
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut names = Vec::new();
    // Apply all first, then wait: the apiserver establishes them in parallel.
    for crd in crds {
        let crd = crd.borrow();
        let name = crd.metadata.name.clone().ok_or(Error::UnnamedCrd)?;
        api.patch(&name, &params, &Patch::Apply(crd))
            .await
            .map_err(|source| Error::ApplyCrd {
                name: name.clone(),
                source,
            })?;
        names.push(name);
    }
    for name in names {
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(ESTABLISH_TIMEOUT, established).await {
            Ok(Ok(_)) => {}
            Ok(Err(source)) => return Err(Error::WatchCrd { name, source }),
            Err(_) => {
                return Err(Error::CrdNotEstablished {
                    name,
                    timeout: ESTABLISH_TIMEOUT,
                });
            }
        }
    }
    Ok(())
}
