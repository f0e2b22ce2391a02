//! The CRDs under `deploy/crds/` are generated from the Rust types. This test
//! fails when they drift; `FLUXGATE_UPDATE_CRDS=1 cargo test -p fluxgate-crds`
//! rewrites them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds")
}

#[test]
fn committed_crds_match_the_types() {
    let files = fluxgate_crds::crd_files().unwrap();
    let dir = crd_dir();
    if std::env::var_os("FLUXGATE_UPDATE_CRDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                std::fs::remove_file(path).unwrap();
            }
        }
        for (name, yaml) in &files {
            std::fs::write(dir.join(name), yaml).unwrap();
        }
    }
    let mut committed: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    committed.sort();
    let mut expected: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    expected.sort();
    assert_eq!(
        committed, expected,
        "deploy/crds/ holds other files than the types generate; run FLUXGATE_UPDATE_CRDS=1 cargo test -p fluxgate-crds"
    );
    for (name, yaml) in files {
        let on_disk = std::fs::read_to_string(dir.join(&name)).unwrap();
        similar_asserts::assert_eq!(
            on_disk,
            yaml,
            "deploy/crds/{name} is stale; run FLUXGATE_UPDATE_CRDS=1 cargo test -p fluxgate-crds"
        );
    }
}

#[test]
fn committed_crds_parse_back_into_crds() {
    for (name, yaml) in fluxgate_crds::crd_files().unwrap() {
        let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_saphyr::from_str(&yaml).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(crd.spec.group, "fluxgate.dev");
    }
}
