//! Hostile team repositories, read and validated the way a sync does
//! ([`manifests::read`] over a checkout, then [`manifests::validate`]):
//! every case ends in a clear refusal naming the file (and line, object or
//! limit), never a crash, a hang or an unbounded allocation. The Git side
//! of the same cases (a million files, huge blobs, counted before checkout)
//! is tested in `src/git.rs`; what needs a cluster in
//! `tests/tests/reliability_git.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use fluxgate_reconciler::manifests::{self, Limits, ManifestError, Policy, Scope, SourceDoc};

fn write(root: &Path, rel: &str, text: impl AsRef<[u8]>) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn cm(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: b\n")
}

fn read(root: &Path) -> Result<Vec<SourceDoc>, ManifestError> {
    manifests::read(root, ".", Limits::default())
}

/// "Billion laughs": nine levels of nine aliases would be 9^9 strings.
fn billion_laughs() -> String {
    let mut text = cm("bomb");
    text.push_str(
        "  lol0: &l0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    for level in 1..9 {
        let aliases = vec![format!("*l{}", level - 1); 9].join(",");
        text.push_str(&format!("  lol{level}: &l{level} [{aliases}]\n"));
    }
    text
}

#[test]
fn a_yaml_bomb_is_refused_quickly_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "deploy/ok.yaml", cm("ok"));
    write(dir.path(), "deploy/z-bomb.yaml", billion_laughs());
    let started = Instant::now();
    let err = read(dir.path()).unwrap_err();
    let took = started.elapsed();
    eprintln!("billion laughs refused in {took:?}: {err}");
    let ManifestError::Yaml {
        file,
        line,
        message,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(file, "deploy/z-bomb.yaml");
    assert!((7..=15).contains(line), "{err}");
    assert!(message.contains("budget breached"), "{err}");
    assert!(message.contains("aliases are expanded"), "{err}");
    // Generous for a debug build on a loaded machine; a real expansion
    // would take minutes and gigabytes.
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn aliases_may_not_expand_past_the_byte_limit() {
    // Within the parser's budgets per document (60 x 100 KiB = 6 MiB of
    // scalars, too few aliases for its alias/anchor ratio check), but far
    // past a 1 MiB repository limit once expanded.
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(100 * 1024);
    let aliases = vec!["*big"; 60].join(", ");
    write(
        dir.path(),
        "deploy/amplified.yaml",
        format!(
            "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: amp\ndata:\n  big: &big \"{big}\"\nlist: [{aliases}]\n",
            cm("first")
        ),
    );
    let limits = Limits {
        max_bytes: 1024 * 1024,
        ..Limits::default()
    };
    let err = manifests::read(dir.path(), ".", limits).unwrap_err();
    assert!(
        matches!(&err, ManifestError::Expanded { file, line: 8, max, .. }
            if file == "deploy/amplified.yaml" && *max == 1024 * 1024),
        "{err}"
    );
    assert!(
        err.to_string().contains("once YAML aliases are expanded"),
        "{err}"
    );
    // The same document is fine under the default limit.
    assert!(read(dir.path()).is_ok());
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "flow.yaml", "[".repeat(100_000));
    write(
        dir.path(),
        "sub/mapping.yaml",
        format!("a: {}", "{a: ".repeat(100_000)),
    );
    let mut block = String::new();
    for depth in 0..5_000 {
        block.push_str(&" ".repeat(depth));
        block.push_str("a:\n");
    }
    write(dir.path(), "z/block.yaml", block);
    // What a sync runs; a recursive descent 100,000 levels deep would
    // overflow any stack.
    let errors = ["flow.yaml", "sub/mapping.yaml", "z/block.yaml"].map(|only| {
        let single = tempfile::tempdir().unwrap();
        write(
            single.path(),
            only,
            std::fs::read(dir.path().join(only)).unwrap(),
        );
        manifests::read_on_own_stack(single.path(), ".", Limits::default()).unwrap_err()
    });
    for (err, file) in errors
        .iter()
        .zip(["flow.yaml", "sub/mapping.yaml", "z/block.yaml"])
    {
        eprintln!("{err}");
        assert!(matches!(err, ManifestError::Yaml { .. }), "{err}");
        assert_eq!(err.file(), Some(file));
        assert!(err.line().is_some_and(|l| l <= 100), "{err}");
    }
}

/// Nesting up to the parser's depth budget is valid YAML and must parse on
/// the reader's own stack, whatever the caller's stack (here 256 KiB, far
/// less than the parser needs in a debug build).
#[test]
fn nesting_up_to_the_limit_parses_on_the_readers_own_stack() {
    let dir = tempfile::tempdir().unwrap();
    let nested = format!("{}1{}", "{a: ".repeat(62), "}".repeat(62));
    write(
        dir.path(),
        "deep.yaml",
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata: {nested}\n"),
    );
    let root = dir.path().to_owned();
    let docs = std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || manifests::read_on_own_stack(&root, ".", Limits::default()))
        .unwrap()
        .join()
        .expect("no stack overflow")
        .unwrap();
    assert_eq!(docs.len(), 1);
    let mut at = &docs[0].value["data"];
    let mut depth = 0;
    while let Some(inner) = at.get("a") {
        at = inner;
        depth += 1;
    }
    assert_eq!(depth, 62);
}

#[test]
fn too_many_documents_are_refused_before_validation() {
    let dir = tempfile::tempdir().unwrap();
    let mut many = String::new();
    for i in 0..30 {
        many.push_str(&format!("---\n{}", cm(&format!("c{i}"))));
    }
    write(dir.path(), "many.yaml", many);
    let limits = Limits {
        max_objects: 25,
        ..Limits::default()
    };
    let err = manifests::read(dir.path(), ".", limits).unwrap_err();
    assert!(
        matches!(&err, ManifestError::TooManyObjects { file, max: 25, line, .. }
            if file == "many.yaml" && *line == 25 * 7 + 2),
        "{err}"
    );
    assert_eq!(read(dir.path()).unwrap().len(), 30);
}

#[test]
fn a_file_over_the_parser_limit_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", cm("a"));
    // Sparse: 80 MiB that take no disk space and would take long to read.
    let huge = std::fs::File::create(dir.path().join("huge.yaml")).unwrap();
    huge.set_len(80 * 1024 * 1024).unwrap();
    let started = Instant::now();
    let err = read(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ManifestError::FileTooLarge { file, bytes, max }
            if file == "huge.yaml" && *bytes == 80 * 1024 * 1024 && *max == 64 * 1024 * 1024),
        "{err}"
    );
    assert!(err.to_string().contains("at most 67108864 bytes"), "{err}");
    eprintln!("80 MiB file refused in {:?}", started.elapsed());

    // A file over a smaller platform limit: the same, at that limit.
    let small = Limits {
        max_bytes: 100,
        ..Limits::default()
    };
    std::fs::remove_file(dir.path().join("huge.yaml")).unwrap();
    write(dir.path(), "b.yaml", "x".repeat(200));
    let err = manifests::read(dir.path(), ".", small).unwrap_err();
    assert!(
        matches!(&err, ManifestError::FileTooLarge { file, max: 100, .. } if file == "b.yaml"),
        "{err}"
    );
}

#[test]
fn a_checkout_over_the_byte_limit_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a.yaml", "b.yaml"] {
        let f = std::fs::File::create(dir.path().join(name)).unwrap();
        f.set_len(60 * 1024 * 1024).unwrap();
    }
    let started = Instant::now();
    let err = read(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ManifestError::TooManyBytes { file, max, .. }
            if file == "b.yaml" && *max == 100 * 1024 * 1024),
        "{err}"
    );
    // Reading 120 MiB of zeros and parsing them would take far longer.
    eprintln!("120 MiB checkout refused in {:?}", started.elapsed());
}

#[test]
fn binary_files_named_yaml_are_refused_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "image.yaml",
        b"apiVersion: v1\nkind: x\n\xff\xd8\xff\xe0 JFIF\n",
    );
    let err = read(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ManifestError::NotText { file, line: 3, .. } if file == "image.yaml"),
        "{err}"
    );
    assert!(
        err.to_string().contains("byte 0xff is not valid UTF-8"),
        "{err}"
    );

    std::fs::remove_file(dir.path().join("image.yaml")).unwrap();
    write(
        dir.path(),
        "nul.yml",
        b"apiVersion: v1\n\nkind: Config\0Map\n",
    );
    let err = read(dir.path()).unwrap_err();
    assert!(
        matches!(&err, ManifestError::NotText { file, line: 3, .. } if file == "nul.yml"),
        "{err}"
    );
    assert!(err.to_string().contains("NUL byte"), "{err}");
    assert!(err.to_string().contains("must be UTF-8 YAML text"), "{err}");
}

#[test]
fn symlink_loops_and_escapes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    write(&root, "deploy/ok.yaml", cm("ok"));
    let link = |target: &str, at: &str| std::os::unix::fs::symlink(target, root.join(at)).unwrap();
    let unlink = |at: &str| std::fs::remove_file(root.join(at)).unwrap();
    let read = |root: &Path| manifests::read(root, "deploy", Limits::default());

    // A loop between two links.
    link("b.yaml", "deploy/a.yaml");
    link("a.yaml", "deploy/b.yaml");
    let err = read(&root).unwrap_err();
    assert!(matches!(err, ManifestError::SymlinkBroken { .. }), "{err}");
    assert_eq!(err.file(), Some("deploy/a.yaml"));
    unlink("deploy/a.yaml");
    unlink("deploy/b.yaml");

    // A link to itself.
    link("self.yaml", "deploy/self.yaml");
    let err = read(&root).unwrap_err();
    assert!(matches!(err, ManifestError::SymlinkBroken { .. }), "{err}");
    unlink("deploy/self.yaml");

    // Directory links back up the tree are not walked again (no endless
    // recursion); `..` leaves the path.
    link(".", "deploy/again");
    std::fs::create_dir_all(root.join("deploy/sub")).unwrap();
    link("..", "deploy/sub/parent");
    assert_eq!(read(&root).unwrap().len(), 1);
    link("../..", "deploy/sub/grandparent");
    let err = read(&root).unwrap_err();
    assert!(
        matches!(&err, ManifestError::SymlinkEscapes { file, target, .. }
            if file == "deploy/sub/grandparent" && target == "../.."),
        "{err}"
    );
    unlink("deploy/sub/grandparent");

    // Out of the path to a file that is not there (the Git step checks
    // nothing out outside the path): an escape, not a broken link.
    link("../../../etc/shadow", "deploy/z.yaml");
    let err = read(&root).unwrap_err();
    assert!(
        matches!(&err, ManifestError::SymlinkEscapes { target, .. } if target == "../../../etc/shadow"),
        "{err}"
    );
    unlink("deploy/z.yaml");
    // Through a link inside the path that itself leads out.
    link("/", "deploy/sub/root");
    let err = read(&root).unwrap_err();
    assert!(matches!(err, ManifestError::SymlinkEscapes { .. }), "{err}");
    unlink("deploy/sub/root");
    link("sub/../../secret.yaml", "deploy/sneaky.yaml");
    let err = read(&root).unwrap_err();
    assert!(matches!(err, ManifestError::SymlinkEscapes { .. }), "{err}");
}

fn scope(_: &str, kind: &str) -> Result<Scope, String> {
    match kind {
        "Namespace"
        | "ClusterRole"
        | "ClusterRoleBinding"
        | "CustomResourceDefinition"
        | "ValidatingWebhookConfiguration"
        | "PriorityClass" => Ok(Scope::Cluster),
        _ => Ok(Scope::Namespaced),
    }
}

fn docs(text: &str) -> Vec<SourceDoc> {
    fluxgate_platform_defaults::documents::parse_documents(text)
        .into_iter()
        .map(|d| {
            let d = d.unwrap();
            SourceDoc {
                file: "deploy/x.yaml".into(),
                line: d.line,
                value: d.value,
            }
        })
        .collect()
}

#[test]
fn objects_naming_other_namespaces_or_cluster_scoped_kinds_are_refused() {
    let policy = Policy::new(
        "team-a",
        "team-a",
        &["team-a".into(), "team-a-*".into()],
        "fluxgate-inventory-",
    );
    // Names that look like the team's but are not (a Cyrillic "а", a
    // prefix without the dash, a suffix), and other teams' and system ones.
    for namespace in [
        "team-b",
        "kube-system",
        "default",
        "team-\u{430}",
        "team-ab",
        "xteam-a",
        "team-a.evil",
    ] {
        let text = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: s\n  namespace: \"{namespace}\"\n"
        );
        let err = manifests::validate(docs(&text), scope, &policy).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "deploy/x.yaml:1: Secret/{namespace}/s is in namespace {namespace}, which is not allowed; allowed: team-a, team-a-*"
            )
        );
        assert_eq!(err.object(), Some(format!("Secret/{namespace}/s").as_str()));
    }
    for (kind, api_version) in [
        ("ClusterRoleBinding", "rbac.authorization.k8s.io/v1"),
        ("CustomResourceDefinition", "apiextensions.k8s.io/v1"),
        (
            "ValidatingWebhookConfiguration",
            "admissionregistration.k8s.io/v1",
        ),
        ("PriorityClass", "scheduling.k8s.io/v1"),
    ] {
        // A namespace on a cluster-scoped object changes nothing.
        let text = format!(
            "apiVersion: {api_version}\nkind: {kind}\nmetadata:\n  name: x\n  namespace: team-a\n"
        );
        let err = manifests::validate(docs(&text), scope, &policy).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "deploy/x.yaml:1: {kind}/x is cluster-scoped; a team's manifests may only hold namespaced objects"
            )
        );
    }
    // The second document of a file is the one named.
    let text = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  namespace: team-b\n",
        cm("a")
    );
    let err = manifests::validate(docs(&text), scope, &policy).unwrap_err();
    assert_eq!(err.line(), Some(8));
}
