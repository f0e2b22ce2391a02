//! Stable replay of the fuzz corpus: every file committed under
//! `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` (regressions) goes
//! through the same body the libFuzzer target runs (`fuzz/src/lib.rs`,
//! included here as a module), so `cargo test` keeps every input the fuzzer
//! ever found interesting, and every crash it found, passing without a
//! nightly toolchain. The fuzzing itself is `hack/fuzz.sh`.
//!
//! It lives in the reconciler's tests because the `manifests` target needs
//! the reconciler, and every other target only needs crates the reconciler
//! depends on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../fuzz/src/lib.rs"]
mod bodies;

use std::path::{Path, PathBuf};

/// Largest committed corpus (all targets); `hack/fuzz.sh` minimises with
/// `cargo fuzz cmin` to stay under it.
const MAX_CORPUS_BYTES: u64 = 2 * 1024 * 1024;
/// Largest single input: the fuzzer runs with `-max_len=4096`.
const MAX_INPUT_BYTES: u64 = 4096;
/// Stack of the replay thread: the YAML parser recurses once per nesting
/// level, more deeply in a debug build than libFuzzer's optimised one.
const STACK_BYTES: usize = 64 * 1024 * 1024;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target`'s body on every corpus and artifact file and returns how
/// many it ran; panics naming every file that failed.
fn replay(target: &str) -> usize {
    let (_, body) = bodies::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .unwrap_or_else(|| panic!("no fuzz body named {target}"));
    let body = *body;
    let inputs: Vec<PathBuf> = ["corpus", "artifacts"]
        .iter()
        .flat_map(|kind| files(&fuzz_dir().join(kind).join(target)))
        .collect();
    let count = inputs.len();
    let failures = std::thread::Builder::new()
        .name(format!("replay-{target}"))
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let mut failures = Vec::new();
            for input in inputs {
                let data = std::fs::read(&input).unwrap();
                if std::panic::catch_unwind(|| body(&data)).is_err() {
                    failures.push(input.display().to_string());
                }
            }
            failures
        })
        .unwrap()
        .join()
        .unwrap();
    assert!(
        failures.is_empty(),
        "{target}: {} of {count} inputs fail (replay one with `cargo +nightly fuzz run -O {target} <file>`):\n{}",
        failures.len(),
        failures.join("\n")
    );
    count
}

macro_rules! replays {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let count = replay(stringify!($name));
                assert!(count > 0, "fuzz/corpus/{} is empty", stringify!($name));
            }
        )*

        /// The targets with a replay test, in the order above.
        const REPLAYED: &[&str] = &[$(stringify!($name)),*];
    };
}

replays!(
    repo_url,
    repo_pattern,
    repo_path,
    git_ref,
    duration,
    objects,
    manifests
);

#[test]
fn every_fuzz_target_has_a_body_and_a_replay() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    let mut declared: Vec<String> = manifest
        .split("[[bin]]")
        .skip(1)
        .map(|bin| {
            let line = bin
                .lines()
                .find(|l| l.trim_start().starts_with("name"))
                .expect("a [[bin]] without a name");
            line.split('"').nth(1).expect("a quoted name").to_owned()
        })
        .collect();
    declared.sort();
    let mut bodies: Vec<&str> = bodies::TARGETS.iter().map(|(name, _)| *name).collect();
    bodies.sort_unstable();
    let mut replayed = REPLAYED.to_vec();
    replayed.sort_unstable();
    assert_eq!(
        declared, bodies,
        "fuzz/Cargo.toml targets vs fuzz/src/lib.rs"
    );
    assert_eq!(replayed, bodies, "replay tests vs fuzz/src/lib.rs");
    for target in &declared {
        let file = fuzz_dir().join(format!("fuzz_targets/{target}.rs"));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.contains(&format!("fluxgate_fuzz::{target}(data)")),
            "{} does not call the shared body",
            file.display()
        );
    }
}

#[test]
fn the_committed_corpus_stays_small() {
    let mut total = 0;
    for (target, _) in bodies::TARGETS {
        for kind in ["corpus", "artifacts"] {
            for file in files(&fuzz_dir().join(kind).join(target)) {
                let len = file.metadata().unwrap().len();
                assert!(
                    len <= MAX_INPUT_BYTES,
                    "{} has {len} bytes; inputs are at most {MAX_INPUT_BYTES} (-max_len)",
                    file.display()
                );
                total += len;
            }
        }
    }
    assert!(
        total <= MAX_CORPUS_BYTES,
        "the fuzz corpus has {total} bytes, over {MAX_CORPUS_BYTES}: run `cargo +nightly fuzz cmin` (hack/fuzz.sh does)"
    );
}

/// The `manifests` target's finding, spelled out: a YAML block scalar put a
/// newline into `kind`, and every message that names the object (here
/// "<kind> has no metadata") spanned lines, which could forge lines in
/// `lastError` and logs. The same holds for every identity field.
#[test]
fn identity_fields_that_would_break_a_message_are_refused_on_one_line() {
    use fluxgate_reconciler::manifests::{Policy, Scope, SourceDoc, validate};
    let policy = Policy::new("team-a", "team-a", &["team-a".to_owned()], "inv-");
    let long = "a".repeat(300);
    let cases = [
        (
            serde_json::json!({"apiVersion": "v1", "kind": "---\nfake.yaml:1: ok\n"}),
            r#"x.yaml:3: kind "---\nfake.yaml:1: ok\n" contains a control character; "#,
        ),
        (
            serde_json::json!({"apiVersion": "v1\r", "kind": "ConfigMap"}),
            r#"x.yaml:3: apiVersion "v1\r" contains a control character; "#,
        ),
        (
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a\u{1b}[2Kb"}}),
            r#"x.yaml:3: metadata.name "a\u{1b}[2Kb" contains a control character; "#,
        ),
        (
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "team-a\nx"}}),
            r#"x.yaml:3: metadata.namespace "team-a\nx" contains a control character; "#,
        ),
        (
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": long}}),
            "x.yaml:3: metadata.name \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"… (300 bytes) is longer than 253 bytes, the most Kubernetes allows",
        ),
    ];
    for (value, start) in cases {
        let docs = vec![SourceDoc {
            file: "x.yaml".to_owned(),
            line: 3,
            value: value.clone(),
        }];
        let err = validate(docs, |_, _| Ok(Scope::Namespaced), &policy).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with(start), "{value}: {message}");
        assert!(!message.contains(['\n', '\r', '\u{1b}']), "{message:?}");
    }
}
