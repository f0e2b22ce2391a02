//! `fluxgate validate` over `examples/`: the valid platform repo is clean,
//! and every invalid example yields exactly the messages in its
//! `# expect-validate:` lines, no more and no fewer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fluxgate_cli::load::load;
use fluxgate_cli::validate::validate;
use fluxgate_platform_defaults::PlatformSettings;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fluxgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fluxgate"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn expected_messages(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<String>>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            expected_messages(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let lines: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix("# expect-validate: "))
                .map(str::to_owned)
                .collect();
            out.insert(path, lines);
        }
    }
}

#[test]
fn the_example_platform_repo_is_clean() {
    let (code, stdout, stderr) = fluxgate(&["validate", "examples/platform-repo"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_eq!(stdout, "");
    assert_eq!(
        stderr, "",
        "no warnings: every namespace is defined in the repo"
    );
}

#[test]
fn each_invalid_example_reports_exactly_its_expected_violations() {
    let root = repo_root();
    let (docs, errors) = load(&[root.join("examples")]);
    assert!(errors.is_empty(), "{errors:?}");
    let report = validate(&docs, PlatformSettings::default());

    let mut actual: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for f in &report.findings {
        actual
            .entry(f.file.clone())
            .or_default()
            .push(f.message.clone());
    }
    let mut expected = BTreeMap::new();
    expected_messages(&root.join("examples/invalid"), &mut expected);
    assert!(expected.len() >= 25, "{} invalid examples", expected.len());
    for (file, messages) in &expected {
        assert!(
            !messages.is_empty(),
            "{} declares no expectation",
            file.display()
        );
        let got = actual.remove(file).unwrap_or_default();
        similar_asserts::assert_eq!(got, *messages, "{}", file.display());
    }
    // Nothing outside invalid/ reports anything.
    assert!(actual.is_empty(), "unexpected findings: {actual:#?}");
    // The four team configs of the platform repo pass.
    assert_eq!(report.accepted.len(), 4);
}

#[test]
fn exit_codes_and_formats() {
    let (code, stdout, _) = fluxgate(&[
        "validate",
        "examples/invalid/policy/repo-other-team.yaml",
        "examples/platform-repo/platform",
    ]);
    assert_eq!(code, 1);
    assert_eq!(
        stdout.trim(),
        r#"examples/invalid/policy/repo-other-team.yaml:9: FluxConfig team-a/steal-b: spec.repo "https://git.corp.example/team-b/payments.git" is not allowed for namespace team-a (PlatformDefaults "global"); allowed: https://git.corp.example/team-a/*"#
    );

    let (code, stdout, _) = fluxgate(&[
        "validate",
        "--format",
        "json",
        "examples/invalid/policy/target-kube-system.yaml",
        "examples/platform-repo/platform",
    ]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json[0]["rule"], "target-namespace");
    assert_eq!(json[0]["field"], "spec.targetNamespace");
    assert_eq!(json[0]["line"], 10);

    let (_, stdout, _) = fluxgate(&[
        "validate",
        "--format",
        "github",
        "examples/invalid/policy/target-kube-system.yaml",
        "examples/platform-repo/platform",
    ]);
    assert!(stdout.starts_with("::error file=examples/invalid/policy/target-kube-system.yaml,line=10,title=fluxgate target-namespace::FluxConfig team-a/into-kube-system: "), "{stdout}");

    let (_, stdout, _) = fluxgate(&[
        "validate",
        "--format",
        "gitlab",
        "examples/invalid/policy/target-kube-system.yaml",
        "examples/platform-repo/platform",
    ]);
    let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json[0]["location"]["lines"]["begin"], 10);
    assert_eq!(json[0]["check_name"], "fluxgate-target-namespace");

    // Unparsable YAML and usage errors exit 2.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, "kind: FluxConfig\nspec: [unclosed\n").unwrap();
    let (code, _, stderr) = fluxgate(&["validate", broken.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("broken.yaml:"), "{stderr}");
    let (code, _, _) = fluxgate(&["validate", "--format", "xml"]);
    assert_eq!(code, 2);
    let (code, _, stderr) = fluxgate(&["validate", "/nonexistent/platform-repo"]);
    assert_eq!(code, 2, "{stderr}");
}

#[test]
fn namespaces_follow_the_teams_directory_convention() {
    let dir = tempfile::tempdir().unwrap();
    let team = dir.path().join("teams/team-a");
    std::fs::create_dir_all(&team).unwrap();
    std::fs::write(
        team.join("fluxconfig.yaml"),
        "apiVersion: fluxgate.dev/v1alpha1\nkind: FluxConfig\nmetadata:\n  name: web\nspec:\n  repo: https://git.corp.example/team-b/web.git\n",
    )
    .unwrap();
    let platform = repo_root().join("examples/platform-repo/platform");
    let (code, stdout, _) = fluxgate(&[
        "validate",
        dir.path().to_str().unwrap(),
        platform.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        stdout.contains("FluxConfig team-a/web: spec.repo"),
        "{stdout}"
    );
}

#[test]
fn render_shows_where_each_value_comes_from() {
    let (code, stdout, stderr) = fluxgate(&["render", "examples/platform-repo"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("fluxConfig: team-a/web"), "{stdout}");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&stdout).unwrap();
    let team_a = docs
        .iter()
        .find(|d| d["fluxConfig"] == "team-a/web")
        .unwrap();
    assert_eq!(team_a["effective"]["interval"]["value"], "5m");
    assert_eq!(
        team_a["effective"]["interval"]["source"],
        "PlatformDefaults/global"
    );
    assert_eq!(team_a["effective"]["repo"]["source"], "spec");
    let team_c = docs
        .iter()
        .find(|d| d["fluxConfig"] == "team-c/ledger")
        .unwrap();
    assert_eq!(
        team_c["effective"]["reconcilerImage"]["source"],
        "PlatformDefaults/regulated"
    );
}

#[test]
fn crds_prints_the_committed_crds() {
    let (code, stdout, _) = fluxgate(&["crds"]);
    assert_eq!(code, 0);
    let mut committed = String::new();
    for name in [
        "platformdefaults.fluxgate.dev.yaml",
        "fluxconfigs.fluxgate.dev.yaml",
    ] {
        committed.push_str(
            &std::fs::read_to_string(repo_root().join("deploy/crds").join(name)).unwrap(),
        );
    }
    assert_eq!(stdout, committed);
}

#[test]
fn installation_protected_namespaces_apply_and_typos_stop_the_check() {
    let (code, stdout, stderr) = fluxgate(&[
        "validate",
        "examples/platform-repo",
        "--protected-namespace",
        "team-c-staging",
    ]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "is a protected namespace (protected namespace pattern team-c-staging of the installation)"
        ),
        "{stdout}"
    );
    let (code, _, stderr) = fluxgate(&[
        "validate",
        "examples/platform-repo",
        "--protected-namespace",
        "Team_C",
    ]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(r#"error: protected namespace pattern "Team_C" is invalid"#),
        "{stderr}"
    );
}
