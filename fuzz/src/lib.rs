//! The bodies of the fuzz targets, one function per target, each taking the
//! raw input and panicking when a property fails.
//!
//! Two callers, one implementation: the libFuzzer binaries in
//! `fuzz_targets/` (nightly, `cargo fuzz`) are one line each, and the stable
//! replay test `reconciler/tests/fuzz_replay.rs` includes this file as a
//! module (`#[path]`) and feeds it every committed corpus and artifact file
//! under `cargo test`. So this file may only use crates that both have:
//! `fluxgate-platform-defaults`, `fluxgate-crds`, `fluxgate-reconciler`,
//! `serde_json` and `tempfile`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use fluxgate_crds::{FluxConfig, PlatformDefaults};
use fluxgate_platform_defaults::documents::{field_line, parse_documents};
use fluxgate_platform_defaults::rules::{
    MAX_GO_DURATION, MAX_PATTERN_LEN, MAX_REPO_URL_LEN, NameKind, NamePattern, RepoPattern,
    RepoUrl, check_branch_or_tag, check_commit, format_go_duration, normalize_repo_path,
    parse_go_duration,
};
use fluxgate_platform_defaults::{NamespaceFacts, Platform, PlatformSettings, resolve};
use fluxgate_reconciler::manifests::{
    self, KindRef, Limits, ManifestError, Policy, Scope, SourceDoc,
};

/// A target's body: panics when a property fails.
pub type Body = fn(&[u8]);

/// Every target: its name (as in `fuzz/Cargo.toml` and under
/// `fuzz/corpus/`) and its body.
pub const TARGETS: &[(&str, Body)] = &[
    ("repo_url", repo_url),
    ("repo_pattern", repo_pattern),
    ("repo_path", repo_path),
    ("git_ref", git_ref),
    ("duration", duration),
    ("objects", objects),
    ("manifests", manifests),
];

/// `RepoUrl::parse`: never panics, and whatever it accepts is a fixed point
/// of normalisation with the promised shape.
pub fn repo_url(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(url) = RepoUrl::parse(input) else {
        return;
    };
    let text = url.as_str();
    assert!(text.len() <= MAX_REPO_URL_LEN, "{text}");
    assert_eq!(url.to_string(), text);
    assert!(!text.contains(['?', '#', '\\', ' ']), "{text}");
    assert!(text.is_ascii(), "{text}");
    assert!(!url.segments().is_empty(), "{text}");
    for segment in url.segments() {
        assert!(
            !segment.is_empty() && segment != "." && segment != "..",
            "{text}"
        );
        assert!(!segment.contains('/'), "{text}");
    }
    assert_eq!(url.host(), url.host().to_ascii_lowercase(), "{text}");
    // Normalisation is idempotent.
    match RepoUrl::parse(text) {
        Ok(again) => assert_eq!(again, url, "{input:?} -> {text}"),
        Err(e) => panic!("{input:?} -> {text} does not parse again: {e}"),
    }
    let _ = url.internal_reason();
}

/// `RepoPattern` and `NamePattern`: parsing and matching never panic, the
/// namespace only matters to patterns that use `{namespace}`, and a URL
/// written as a literal pattern matches itself.
///
/// Input: `pattern \n url \n namespace` (missing parts are empty).
pub fn repo_pattern(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = input.splitn(3, '\n');
    let pattern_text = parts.next().unwrap_or_default();
    let url_text = parts.next().unwrap_or_default();
    let namespace = parts.next().unwrap_or_default();

    let pattern = RepoPattern::parse(pattern_text);
    let url = RepoUrl::parse(url_text);
    if let (Ok(pattern), Ok(url)) = (&pattern, &url) {
        let matched = pattern.matches(url, namespace);
        let _ = pattern.allows_internal_host(url);
        if !pattern.uses_namespace() {
            assert_eq!(
                matched,
                pattern.matches(url, "some-other-ns"),
                "{pattern} {url}"
            );
        }
        assert_eq!(pattern.to_string(), pattern_text);
    }
    if let Ok(url) = &url {
        // The normalised URL, read as a pattern, names exactly that URL
        // (unless it has characters that are special in patterns, or is
        // longer than a pattern may be: URLs may have 2048 bytes, patterns
        // 512).
        if !url.as_str().contains(['*', '{', '}']) && url.as_str().len() <= MAX_PATTERN_LEN {
            match RepoPattern::parse(url.as_str()) {
                Ok(own) => {
                    assert!(own.matches(url, "ns"), "{url} does not match itself");
                    assert!(own.allows_internal_host(url), "{url}");
                }
                Err(e) => panic!("{url} is not a valid pattern: {e}"),
            }
        }
    }
    for kind in [NameKind::Namespace, NameKind::Cluster, NameKind::Image] {
        if let Ok(p) = NamePattern::parse(pattern_text, kind) {
            let matched = p.matches(url_text, namespace);
            if !p.uses_namespace() {
                assert_eq!(matched, p.matches(url_text, "some-other-ns"));
            }
            if p.is_literal() {
                assert!(p.matches(pattern_text, namespace), "{pattern_text}");
            }
            if let Some(expanded) = p.expand("team-a") {
                assert!(
                    p.matches(&expanded, "team-a"),
                    "{pattern_text} -> {expanded}"
                );
            }
        }
    }
}

/// `normalize_repo_path`: never panics, never yields a path that leaves the
/// repository (not even once URL-decoded), and is idempotent.
pub fn repo_path(data: &[u8]) {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = normalize_repo_path(input) else {
        return;
    };
    assert!(!path.is_empty());
    assert!(!path.starts_with('/'), "{input:?} -> {path:?}");
    assert!(!path.contains('\\'), "{input:?} -> {path:?}");
    assert!(!path.chars().any(char::is_control), "{input:?} -> {path:?}");
    // Nothing that URL-decodes the path can turn it into `..`.
    assert!(
        !path
            .as_bytes()
            .windows(3)
            .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit()),
        "{input:?} -> {path:?}"
    );
    if path != "." {
        assert!(
            path.split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".."),
            "{input:?} -> {path:?}"
        );
    }
    assert_eq!(normalize_repo_path(&path).as_deref(), Ok(path.as_str()));
}

/// `check_branch_or_tag` and `check_commit`: never panic, and every
/// accepted name keeps git's rules.
pub fn git_ref(data: &[u8]) {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if check_branch_or_tag(name).is_ok() {
        assert!(!name.is_empty() && name.len() <= 255);
        assert!(!name.starts_with(['-', '/']), "{name:?}");
        assert!(!name.ends_with(['/', '.']), "{name:?}");
        assert!(
            !name.contains("..") && !name.contains("@{") && !name.contains("//"),
            "{name:?}"
        );
        assert!(
            !name
                .chars()
                .any(|c| c.is_ascii_control() || " ~^:?*[\\".contains(c)),
            "{name:?}"
        );
        assert!(
            name.split('/')
                .all(|c| !c.starts_with('.') && !c.ends_with(".lock")),
            "{name:?}"
        );
        assert!(name != "@" && name != "HEAD");
    }
    if check_commit(name).is_ok() {
        assert!(name.len() == 40 || name.len() == 64);
    }
}

/// `parse_go_duration`: never panics (overflow included), and what it
/// accepts survives a round trip through `format_go_duration`.
pub fn duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(duration) = parse_go_duration(text) else {
        return;
    };
    assert!(duration <= MAX_GO_DURATION, "{text:?}");
    let formatted = format_go_duration(duration);
    assert_eq!(
        parse_go_duration(&formatted),
        Ok(duration),
        "{text:?} -> {formatted}"
    );
}

/// Whole-object parsing and resolution: arbitrary text is split into YAML
/// documents (`documents::parse_documents`), each document is read as a
/// `PlatformDefaults` or `FluxConfig` where it can be, the PlatformDefaults
/// are compiled and every FluxConfig is resolved against them. Nothing may
/// panic, and every rejection must render as a message naming its object.
pub fn objects(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut defaults = Vec::new();
    let mut configs = Vec::new();
    for doc in parse_documents(text).into_iter().flatten() {
        let _ = field_line(&doc, "spec.repo");
        let _ = field_line(&doc, "spec.allowedRepos[1]");
        if let Ok(pd) = serde_json::from_value::<PlatformDefaults>(doc.value.clone()) {
            defaults.push(pd);
        }
        if let Ok(fc) = serde_json::from_value::<FluxConfig>(doc.value) {
            configs.push(fc);
        }
    }
    let platform = Platform::new(PlatformSettings::default(), &defaults);
    for rejected in platform.rejected() {
        assert!(rejected.to_string().starts_with("PlatformDefaults "));
    }
    let labels = BTreeMap::from([("fluxgate.dev/tenant".to_owned(), "true".to_owned())]);
    for fc in &configs {
        let ns = fc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "team-a".to_owned());
        let layers = platform.layers_for(&ns, &labels);
        match resolve(
            fc,
            &layers,
            NamespaceFacts {
                other_flux_configs: 1,
            },
        ) {
            Ok(resolved) => assert!(!resolved.effective().repo.value.is_empty()),
            Err(violations) => assert!(violations.to_string().starts_with("FluxConfig ")),
        }
    }
}

/// The directory `manifests` reads from, and the file it writes.
const MANIFEST_DIR: &str = "deploy";
const MANIFEST_FILE: &str = "deploy/app.yaml";

/// Limits small enough that the fuzzer reaches them: more documents than
/// `max_objects`, and aliases that expand past `max_bytes`.
const MANIFEST_LIMITS: Limits = Limits {
    max_files: 4,
    max_bytes: 256 * 1024,
    max_objects: 64,
};

/// What the reconciler does with a file of a team's repository: the input
/// is the file's content, read by `manifests::read` (what the worker runs:
/// text check, YAML documents, object and expansion limits) and then
/// checked by `manifests::validate` against a team policy and against the
/// platform repository's (cluster mode) policy.
///
/// Never panics; every refusal names the file (and the line where there is
/// one) on a single line; what passes is what the policy allows.
pub fn manifests(data: &[u8]) {
    thread_local! {
        // One checkout per thread, rewritten for each input.
        static CHECKOUT: (tempfile::TempDir, PathBuf) = {
            let dir = tempfile::Builder::new()
                .prefix("fluxgate-fuzz-manifests-")
                .tempdir()
                .expect("a temporary directory");
            std::fs::create_dir(dir.path().join(MANIFEST_DIR)).expect("the manifest directory");
            let file = dir.path().join(MANIFEST_FILE);
            (dir, file)
        };
    }
    CHECKOUT.with(|(dir, file)| {
        std::fs::write(file, data).expect("write the manifest file");
        check_manifests(dir.path(), data);
    });
}

fn check_manifests(root: &std::path::Path, data: &[u8]) {
    let lines = yaml_lines(data);
    // `read` itself rather than the worker's `read_on_own_stack`, which
    // only runs it on a thread with a larger stack: libFuzzer's main thread
    // and the replay test's thread have stacks large enough, and a thread
    // per input would slow fuzzing down tenfold.
    let read = manifests::read(root, MANIFEST_DIR, MANIFEST_LIMITS);
    let binary = data.contains(&0) || std::str::from_utf8(data).is_err();
    let docs = match read {
        Ok(docs) => {
            assert!(!binary, "binary data was read as YAML");
            docs
        }
        Err(err) => {
            let message = err.to_string();
            assert!(!message.contains('\n'), "{message:?}");
            assert_eq!(err.file(), Some(MANIFEST_FILE), "{message}");
            let line = err.line().expect("a line");
            assert!(
                (1..=lines).contains(&line),
                "line {line} of {lines}: {message}"
            );
            assert!(
                message.starts_with(&format!("{MANIFEST_FILE}:{line}: ")),
                "{message}"
            );
            let expected = if binary {
                matches!(err, ManifestError::NotText { .. })
            } else {
                matches!(
                    err,
                    ManifestError::Yaml { .. }
                        | ManifestError::TooManyObjects { .. }
                        | ManifestError::Expanded { .. }
                )
            };
            assert!(expected, "{err:?}");
            return;
        }
    };
    assert!(docs.len() <= MANIFEST_LIMITS.max_objects);
    for doc in &docs {
        assert_eq!(doc.file, MANIFEST_FILE);
        assert!((1..=lines).contains(&doc.line), "line {}", doc.line);
        assert!(!doc.value.is_null());
    }
    let team = Policy::new(
        "team-a",
        "team-a",
        &["team-a".to_owned(), "team-a-*".to_owned()],
        "fluxgate-inventory-",
    );
    let platform = Policy::cluster(
        "fluxgate-system",
        &[KindRef::new("rbac.authorization.k8s.io", "ClusterRole")],
        "fluxgate-inventory-",
    );
    for policy in [&team, &platform] {
        check_validated(docs.clone(), policy);
    }
}

/// Lines as YAML counts them: a line break is `\r\n`, `\n` or a lone `\r`
/// (YAML 1.2, `b-break`), so a file with old Mac line ends has more lines
/// than `\n`s (the first finding of this target was the harness counting
/// only `\n`).
fn yaml_lines(data: &[u8]) -> usize {
    let breaks = data
        .iter()
        .enumerate()
        .filter(|&(i, b)| *b == b'\n' || (*b == b'\r' && data.get(i + 1) != Some(&b'\n')))
        .count();
    breaks + 1
}

/// Kinds as a cluster's discovery would answer: a few cluster-scoped ones,
/// one the cluster does not serve, every other kind namespaced.
fn scope(_api_version: &str, kind: &str) -> Result<Scope, String> {
    match kind {
        "Namespace"
        | "ClusterRole"
        | "ClusterRoleBinding"
        | "PlatformDefaults"
        | "CustomResourceDefinition" => Ok(Scope::Cluster),
        "Widget" => Err("the server could not find the requested resource".to_owned()),
        _ => Ok(Scope::Namespaced),
    }
}

/// Server-owned metadata `validate` must strip.
const SERVER_FIELDS: &[&str] = &[
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

fn check_validated(docs: Vec<SourceDoc>, policy: &Policy) {
    let cluster_mode = policy.allowed_kinds.is_some();
    let manifests = match manifests::validate(docs, scope, policy) {
        Ok(manifests) => manifests,
        Err(err) => {
            let message = err.to_string();
            assert!(!message.contains('\n'), "{message:?}");
            let line = err.line().expect("a line");
            assert!(
                message.starts_with(&format!("{MANIFEST_FILE}:{line}: ")),
                "{message}"
            );
            return;
        }
    };
    let mut seen = BTreeSet::new();
    for m in &manifests {
        let shown = m.display();
        assert!(!m.api_version.is_empty() && !m.kind.is_empty() && !m.name.is_empty());
        assert_eq!(m.object["apiVersion"], m.api_version.as_str(), "{shown}");
        assert_eq!(m.object["kind"], m.kind.as_str(), "{shown}");
        assert_eq!(m.object["metadata"]["name"], m.name.as_str(), "{shown}");
        assert_eq!(Ok(m.scope), scope(&m.api_version, &m.kind), "{shown}");
        for field in SERVER_FIELDS {
            assert!(
                m.object["metadata"].get(field).is_none(),
                "{shown}: {field}"
            );
        }
        match m.scope {
            Scope::Namespaced => {
                assert!(!m.namespace.is_empty(), "{shown}");
                assert!(policy.allows(&m.namespace), "{shown}");
                assert_eq!(
                    m.object["metadata"]["namespace"],
                    m.namespace.as_str(),
                    "{shown}"
                );
            }
            Scope::Cluster => {
                assert!(cluster_mode, "{shown} is cluster-scoped in team mode");
                assert!(m.namespace.is_empty(), "{shown}");
                assert!(m.object["metadata"].get("namespace").is_none(), "{shown}");
            }
        }
        if let Some(kinds) = &policy.allowed_kinds {
            let group = m.api_version.rsplit_once('/').map_or("", |(g, _)| g);
            assert!(kinds.contains(&KindRef::new(group, &m.kind)), "{shown}");
        }
        let group = m.api_version.rsplit_once('/').map_or("", |(g, _)| g);
        assert!(
            seen.insert((
                group.to_owned(),
                m.kind.clone(),
                m.namespace.clone(),
                m.name.clone()
            )),
            "{shown} twice"
        );
    }
}
