//! Reliability of the team reconciler against Git faults and hostile team
//! repositories, end to end: a real kube-apiserver (one per test binary),
//! Git over smart HTTP on loopback (`fluxgate_e2e::gitserver`, with its
//! [`Fault`]s), the reconciler in-process as the team's ServiceAccount.
//!
//! Every case ends in a clear condition (what went wrong, about which
//! file, object or server), keeps what is already applied, and recovers by
//! itself when the fault clears. The pure cases (YAML bombs, nesting,
//! binary files, symlinks, limits) are tested without a cluster in
//! `reconciler/tests/hostile_repos.rs` and `reconciler/src/git.rs`; here
//! only what needs Git over the wire or the API server.
//!
//! The Git timeout is 3 s here (`--git-timeout-seconds=3`), so a stalled
//! server is given up on within 3 s.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fluxgate_crds::{FluxConfig, conditions};
use fluxgate_e2e::gitserver::{Fault, GitServer};
use fluxgate_e2e::testenv::{self, ControlPlane};
use fluxgate_e2e::wait::{self, WAIT};
use fluxgate_reconciler::git::{GitError, RefName, Selection, Source};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

const GIT_TIMEOUT: Duration = Duration::from_secs(3);
const FC: &str = "app";
const SA: &str = "fluxgate-reconciler";
const INTERVAL: &str = "1s";

fn config_map(name: &str, data: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  value: {data:?}\n"
    )
}

/// The Git seam alone (no cluster): every fault the server can show is
/// sorted into a clear error within the timeout, and the next attempt
/// after the fault clears succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_faults_are_reported_clearly_and_never_hang() {
    let server = GitServer::start().await.unwrap();
    let repo = server.create_repo("app").unwrap();
    let first = repo
        .commit_files(&[("deploy/a.yaml", &config_map("a", "1"))], "one")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let source = Source {
        url: server.url("app"),
        reference: RefName::Branch("main".into()),
        credentials: None,
        credentials_secret: None,
        timeout: GIT_TIMEOUT,
        max_bytes: 1 << 20,
    };
    let fetch = |n: usize| {
        let source = source.clone();
        let dir = dir.path().to_owned();
        async move {
            let started = Instant::now();
            let result = source
                .fetch_selected_async(
                    dir.join("cache.git"),
                    dir.join(format!("checkout-{n}")),
                    Selection {
                        path: "deploy".into(),
                        max_files: 100,
                    },
                )
                .await;
            (result, started.elapsed())
        }
    };
    let resolve = || async {
        let started = Instant::now();
        (source.resolve_async().await, started.elapsed())
    };

    let expectations: [(Fault, &str); 4] = [
        (Fault::Stall, "the server sent nothing for 1.5s"),
        (
            Fault::Html,
            "did not answer like a Git server: invalid content-type: 'text/html'",
        ),
        (
            Fault::Garbage,
            "did not answer like a Git server: bad packet length",
        ),
        (Fault::NotFound, "was not found (HTTP 404)"),
    ];
    for (n, (fault, needle)) in expectations.into_iter().enumerate() {
        server.set_fault(fault);
        let (resolved, took) = resolve().await;
        let err = resolved.unwrap_err();
        eprintln!("{fault:?}: ls-remote failed in {took:?}: {err}");
        let (fetched, took_fetch) = fetch(n).await;
        let fetch_err = fetched.unwrap_err();
        eprintln!("{fault:?}: fetch failed in {took_fetch:?}: {fetch_err}");
        for (err, took) in [(&err, took), (&fetch_err, took_fetch)] {
            assert!(err.to_string().contains(needle), "{fault:?}: {err}");
            assert!(
                err.to_string().contains(&server.url("app")),
                "{fault:?}: names the repository: {err}"
            );
            // Never longer than the timeout, plus scheduling slack.
            assert!(
                took < GIT_TIMEOUT + Duration::from_secs(1),
                "{fault:?}: {took:?}"
            );
            let gone = matches!(err, GitError::RepositoryNotFound { .. });
            assert_eq!(err.is_transient(), !gone, "{fault:?}: {err}");
        }
    }

    // A pack cut short: the refs are listed, the fetch fails.
    server.set_fault(Fault::None);
    let second = repo
        .commit_files(&[("deploy/b.yaml", &config_map("b", "2"))], "two")
        .unwrap();
    server.set_fault(Fault::Truncate);
    assert_eq!(resolve().await.0.unwrap().sha, second);
    let (fetched, took) = fetch(10).await;
    let err = fetched.unwrap_err();
    eprintln!("Truncate: fetch failed in {took:?}: {err}");
    assert!(matches!(err, GitError::Protocol { .. }), "{err}");
    assert!(err.is_transient());

    // An unknown host.
    let nowhere = Source {
        url: "http://fluxgate-no-such-host.invalid/x.git".into(),
        ..source.clone()
    };
    let err = nowhere.resolve_async().await.unwrap_err();
    eprintln!("unknown host: {err}");
    assert!(matches!(err, GitError::Unreachable { .. }), "{err}");
    assert!(
        err.to_string().contains("fluxgate-no-such-host.invalid:80"),
        "{err}"
    );

    // Every fault cleared: the same cache fetches the newest commit.
    server.set_fault(Fault::None);
    let (fetched, _) = fetch(11).await;
    assert_eq!(fetched.unwrap().sha, second);
    assert_ne!(first, second);
}

// ---------------------------------------------------------------------------
// A team namespace, set up as the operator would, and the reconciler
// in-process as its ServiceAccount (the same fixture as
// `tests/reconciler.rs`, which the library cannot hold: it needs the
// reconciler crate, a dev-dependency of the tests only).

fn control_plane() -> &'static ControlPlane {
    testenv::shared().unwrap()
}

async fn apply_as(admin: &Client, doc: Value, manager: &str) {
    let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
    let gvk = kube::core::GroupVersionKind::try_from(obj.types.as_ref().unwrap()).unwrap();
    let (ar, _) = kube::discovery::pinned_kind(admin, &gvk).await.unwrap();
    let api: Api<DynamicObject> = match obj.metadata.namespace.as_deref() {
        Some(ns) => Api::namespaced_with(admin.clone(), ns, &ar),
        None => Api::all_with(admin.clone(), &ar),
    };
    api.patch(
        &obj.name_any(),
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&doc),
    )
    .await
    .unwrap();
}

/// The CRDs, the platform's ClusterRole, and in `ns` what the operator
/// provisions: the ServiceAccount, its status Role, and the ClusterRole
/// bound in `ns`; then FluxConfig `app` for `repo` with the operator's
/// `status.effective` (path `deploy`, interval 1s).
async fn team(admin: &Client, ns: &str, repo: &str) {
    testenv::install_crds(admin, fluxgate_crds::all_crds())
        .await
        .unwrap();
    for doc in fluxgate_e2e::stack::installed("reconciler", &["ClusterRole"]).unwrap() {
        apply_as(admin, doc, "platform-team").await;
    }
    let operator = "fluxgate.dev/operator";
    for doc in [
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
               "metadata": {"name": SA, "namespace": ns}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "fluxgate-reconciler-status", "namespace": ns},
        "rules": [
            {"apiGroups": ["fluxgate.dev"], "resources": ["fluxconfigs"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["fluxgate.dev"], "resources": ["fluxconfigs/status"], "verbs": ["get", "patch", "update"]},
            {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
        ]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": SA, "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fluxgate-reconciler-status"},
               "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": format!("fluxgate-reconciler-{ns}"), "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "fluxgate-team-reconciler"},
               "subjects": [{"kind": "ServiceAccount", "name": SA, "namespace": ns}]}),
    ] {
        apply_as(admin, doc, operator).await;
    }
    let fc: FluxConfig = serde_json::from_value(json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {"name": FC, "namespace": ns},
        "spec": {"repo": repo, "interval": INTERVAL},
    }))
    .unwrap();
    let api = Api::<FluxConfig>::namespaced(admin.clone(), ns);
    let created = api.create(&PostParams::default(), &fc).await.unwrap();
    let generation = created.metadata.generation.unwrap();
    let now = "2024-01-01T00:00:00Z";
    let status = json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "status": {
            "observedGeneration": generation,
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok", "observedGeneration": generation, "lastTransitionTime": now},
            ],
            "effective": {
                "repo": {"value": repo, "source": "spec"},
                "ref": {"value": {"branch": "main"}, "source": "builtin"},
                "path": {"value": "deploy", "source": "PlatformDefaults/test"},
                "targetNamespace": {"value": ns, "source": "builtin"},
                "allowedNamespaces": {"value": [ns], "source": "PlatformDefaults/test"},
                "interval": {"value": INTERVAL, "source": "spec"},
                "suspend": {"value": false, "source": "builtin"},
                "reconcilerImage": {"value": "registry.corp.example/fluxgate/reconciler:v1", "source": "builtin"},
                "reconcilerClusterRole": {"value": "fluxgate-team-reconciler", "source": "builtin"},
            },
        },
    });
    api.patch_status(
        FC,
        &PatchParams::apply(operator).force(),
        &Patch::Apply(&status),
    )
    .await
    .unwrap();
}

/// The reconciler, in-process, as the team's ServiceAccount, with a 3 s
/// Git timeout; stopped when dropped.
struct Reconciler {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _work: tempfile::TempDir,
}

impl Reconciler {
    async fn start(admin: &Client, ns: &str) -> Self {
        let token = testenv::service_account_token(admin, ns, SA).await.unwrap();
        let client = control_plane().client_for_token(&token).unwrap();
        let work = tempfile::tempdir().unwrap();
        let cli = <fluxgate_reconciler::Cli as clap::Parser>::parse_from([
            "fluxgate-reconciler".to_owned(),
            "reconcile".to_owned(),
            format!("--namespace={ns}"),
            format!("--flux-configs={FC}"),
            format!("--credentials-dir={}", work.path().display()),
            format!("--work-dir={}", work.path().display()),
            format!("--git-timeout-seconds={}", GIT_TIMEOUT.as_secs()),
        ]);
        let fluxgate_reconciler::Command::Reconcile(args) = cli.command;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            fluxgate_reconciler::run_with_client(
                client,
                args,
                fluxgate_reconciler::Handle::default(),
                async move {
                    let _ = rx.await;
                },
            )
            .await
            .unwrap();
        });
        Self {
            stop: Some(tx),
            _work: work,
        }
    }
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn revision(sha: &str) -> String {
    format!("main@sha1:{sha}")
}

async fn ready(admin: &Client, ns: &str, sha: &str) -> FluxConfig {
    wait::ready_at(admin, ns, FC, WAIT, &revision(sha)).await
}

async fn cm_value(admin: &Client, ns: &str, name: &str) -> Option<String> {
    let cm = Api::<ConfigMap>::namespaced(admin.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()?;
    cm.data?.get("value").cloned()
}

/// A fault's condition: `Ready=False` with `reason` and `needle`, the
/// applied revision still reported as running, and its ConfigMap intact.
async fn keeps_running(
    admin: &Client,
    ns: &str,
    reason: &str,
    needle: &str,
    applied: &str,
) -> FluxConfig {
    let fc = wait::ready_reason(admin, ns, FC, WAIT, reason, needle).await;
    let ready = fc.condition(conditions::READY).unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready
            .message
            .contains(&format!("revision {} keeps running", revision(applied))),
        "{}",
        ready.message
    );
    let status = fc.status.as_ref().unwrap();
    assert_eq!(status.last_applied_revision, Some(revision(applied)));
    assert!(
        status
            .last_error
            .as_ref()
            .is_some_and(|e| e.message.contains(needle))
    );
    assert_eq!(
        cm_value(admin, ns, "web").await.as_deref(),
        Some("v1"),
        "what runs is kept"
    );
    fc
}

/// A refused commit: `Stalled` at `sha`, `ValidationFailed`, `lastError`
/// naming `file` and saying `needle`; `applied` and its ConfigMap kept.
async fn refused(
    admin: &Client,
    ns: &str,
    applied: &str,
    sha: &str,
    file: Option<&str>,
    needle: &str,
) -> FluxConfig {
    let started = Instant::now();
    let fc = wait::stalled_at(admin, ns, FC, WAIT, &revision(sha)).await;
    let error = fc.status.as_ref().unwrap().last_error.clone().unwrap();
    eprintln!("refused after {:?}: {}", started.elapsed(), error.message);
    assert_eq!(error.file.as_deref(), file, "{}", error.message);
    assert!(error.message.contains(needle), "{}", error.message);
    assert_eq!(
        fc.condition(conditions::READY).unwrap().reason,
        "ValidationFailed"
    );
    assert_eq!(
        fc.status.as_ref().unwrap().last_applied_revision,
        Some(revision(applied))
    );
    assert_eq!(cm_value(admin, ns, "web").await.as_deref(), Some("v1"));
    fc
}

// ---------------------------------------------------------------------------

/// A server that accepts and then stalls: each attempt is given up on within
/// the 3 s timeout with a condition saying so, attempts go on (nothing hangs),
/// and the commit pushed meanwhile is applied once the server is fast again.
/// Then the same for answers that are not Git (an HTML page, bytes that are
/// not the protocol, a pack cut short).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_or_garbled_server_is_reported_and_survived() {
    testenv::with_temp_ns("rel-stall", |admin, ns| async move {
        let server = GitServer::start().await.unwrap();
        let repo = server.create_repo("app").unwrap();
        team(&admin, &ns, &server.url("app")).await;
        let first = repo
            .commit_files(&[("deploy/web.yaml", &config_map("web", "v1"))], "one")
            .unwrap();
        let _reconciler = Reconciler::start(&admin, &ns).await;
        ready(&admin, &ns, &first).await;

        server.set_fault(Fault::Stall);
        let stalled = Instant::now();
        let fc = keeps_running(
            &admin,
            &ns,
            "FetchFailed",
            "the server sent nothing for 1.5s",
            &first,
        )
        .await;
        let took = stalled.elapsed();
        eprintln!("stalled server reported after {took:?}");
        assert!(took < GIT_TIMEOUT * 3, "{took:?}");
        let reconciling = fc.condition(conditions::RECONCILING).unwrap();
        assert_eq!(
            (reconciling.status.as_str(), reconciling.reason.as_str()),
            ("True", "ProgressingWithRetry")
        );
        assert_eq!(fc.condition(conditions::STALLED).unwrap().status, "False");
        // Still trying: new requests reach the server (a hung reconciler
        // would send none).
        let held = server.counters().faulted.load(Ordering::Relaxed);
        wait::eventually("more attempts", WAIT, || async {
            (server.counters().faulted.load(Ordering::Relaxed) >= held + 2).then_some(())
        })
        .await;

        // A commit lands while the server stalls; it is fast again.
        let second = repo
            .commit_files(&[("deploy/web.yaml", &config_map("web", "v2"))], "two")
            .unwrap();
        server.set_fault(Fault::None);
        let back = Instant::now();
        let fc = ready(&admin, &ns, &second).await;
        eprintln!(
            "recovered {:?} after the server was fast again",
            back.elapsed()
        );
        assert!(fc.status.unwrap().last_error.is_none());
        assert_eq!(cm_value(&admin, &ns, "web").await.as_deref(), Some("v2"));

        // Not Git: a login page, then garbage with Git's content type.
        let restore = repo
            .commit_files(&[("deploy/web.yaml", &config_map("web", "v1"))], "three")
            .unwrap();
        ready(&admin, &ns, &restore).await;
        server.set_fault(Fault::Html);
        keeps_running(
            &admin,
            &ns,
            "FetchFailed",
            "did not answer like a Git server: invalid content-type: 'text/html'",
            &restore,
        )
        .await;
        server.set_fault(Fault::Garbage);
        keeps_running(
            &admin,
            &ns,
            "FetchFailed",
            "did not answer like a Git server: bad packet length",
            &restore,
        )
        .await;
        // A pack cut short: the new commit is listed but cannot be fetched.
        server.set_fault(Fault::Truncate);
        let fourth = repo
            .commit_files(&[("deploy/web.yaml", &config_map("web", "v4"))], "four")
            .unwrap();
        keeps_running(
            &admin,
            &ns,
            "FetchFailed",
            "did not answer like a Git server",
            &restore,
        )
        .await;
        server.set_fault(Fault::None);
        ready(&admin, &ns, &fourth).await;
        assert_eq!(cm_value(&admin, &ns, "web").await.as_deref(), Some("v4"));
    })
    .await;
}

/// History rewritten on the followed branch (a force push to a commit that
/// does not descend from the applied one): the new tip is applied, objects
/// it no longer has are pruned, and no error is reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_push_applies_the_new_tip_and_prunes() {
    testenv::with_temp_ns("rel-force", |admin, ns| async move {
        let server = GitServer::start().await.unwrap();
        let repo = server.create_repo("app").unwrap();
        team(&admin, &ns, &server.url("app")).await;
        let first = repo
            .commit_files(&[("deploy/web.yaml", &config_map("web", "v1"))], "one")
            .unwrap();
        let second = repo
            .commit_files(&[("deploy/extra.yaml", &config_map("extra", "x"))], "two")
            .unwrap();
        let _reconciler = Reconciler::start(&admin, &ns).await;
        ready(&admin, &ns, &second).await;
        assert!(cm_value(&admin, &ns, "extra").await.is_some());

        // Back to the first commit, then a different second one.
        repo.force_push_to(&first).unwrap();
        let rewritten = repo
            .amend_and_force_push(
                &[("deploy/other.yaml", &config_map("other", "o"))],
                "one, rewritten",
            )
            .unwrap();
        let fc = ready(&admin, &ns, &rewritten).await;
        let status = fc.status.clone().unwrap();
        assert!(status.last_error.is_none());
        assert_eq!(status.inventory.unwrap().total, 2);
        assert_eq!(cm_value(&admin, &ns, "other").await.as_deref(), Some("o"));
        assert_eq!(cm_value(&admin, &ns, "web").await.as_deref(), Some("v1"));
        assert!(
            cm_value(&admin, &ns, "extra").await.is_none(),
            "pruned: the rewritten history no longer has it"
        );
        assert_eq!(fc.condition(conditions::STALLED).unwrap().status, "False");
    })
    .await;
}

/// The repository is deleted from the server (404): the last good state is
/// kept, the condition says the repository is gone, and everything resumes
/// when it is back, with the commit pushed in between applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_repository_keeps_the_last_state_and_recovers() {
    testenv::with_temp_ns("rel-gone", |admin, ns| async move {
        let server = GitServer::start().await.unwrap();
        let repo = server.create_repo("app").unwrap();
        team(&admin, &ns, &server.url("app")).await;
        let first = repo
            .commit_files(&[("deploy/web.yaml", &config_map("web", "v1"))], "one")
            .unwrap();
        let _reconciler = Reconciler::start(&admin, &ns).await;
        ready(&admin, &ns, &first).await;

        repo.delete_from_server().unwrap();
        let fc = keeps_running(
            &admin,
            &ns,
            "RepositoryNotFound",
            &format!("repository {} was not found (HTTP 404)", server.url("app")),
            &first,
        )
        .await;
        let stalled = fc.condition(conditions::STALLED).unwrap();
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", "RepositoryNotFound")
        );
        // Looked for again at the interval.
        let polls = server.counters().ref_advertisements.load(Ordering::Relaxed);
        wait::eventually("another look at the repository", WAIT, || async {
            (server.counters().ref_advertisements.load(Ordering::Relaxed) > polls + 1).then_some(())
        })
        .await;

        // Restored (a commit was pushed meanwhile to the working clone's
        // remote, which is the deleted directory: push after restoring).
        repo.restore().unwrap();
        let second = repo
            .commit_files(&[("deploy/web.yaml", &config_map("web", "v2"))], "two")
            .unwrap();
        let fc = ready(&admin, &ns, &second).await;
        assert!(fc.status.unwrap().last_error.is_none());
        assert_eq!(cm_value(&admin, &ns, "web").await.as_deref(), Some("v2"));
    })
    .await;
}

/// Hostile commits over the wire: a YAML bomb, a million files, a huge
/// file, a binary file named `.yaml`, a symlink out of the path, an object
/// for another namespace. Each is refused (`Stalled`, `ValidationFailed`,
/// naming the file and what is allowed), nothing of it is applied, what ran
/// keeps running; a good commit afterwards is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_commits_are_refused_and_the_last_state_kept() {
    testenv::with_temp_ns("rel-hostile", |admin, ns| async move {
        let server = GitServer::start().await.unwrap();
        let repo = server.create_repo("app").unwrap();
        team(&admin, &ns, &server.url("app")).await;
        let first = repo
            .commit_files(&[("deploy/web.yaml", &config_map("web", "v1"))], "one")
            .unwrap();
        let _reconciler = Reconciler::start(&admin, &ns).await;
        ready(&admin, &ns, &first).await;

        // Each hostile commit also changes web's value, which must not be
        // applied; after each the branch is force-pushed back to `first`.
        let hostile = |files: &[(&str, &str)]| {
            let mut all = vec![("deploy/web.yaml", config_map("web", "v2"))];
            all.extend(files.iter().map(|(p, t)| (*p, (*t).to_owned())));
            let borrowed: Vec<(&str, &str)> = all.iter().map(|(p, t)| (*p, t.as_str())).collect();
            repo.commit_files(&borrowed, "hostile").unwrap()
        };
        let back = || async {
            repo.force_push_to(&first).unwrap();
            let fc = ready(&admin, &ns, &first).await;
            assert!(fc.status.unwrap().last_error.is_none());
        };

        // A billion laughs.
        let mut bomb = String::from(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bomb\ndata:\n  l0: &l0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for level in 1..9 {
            let aliases = vec![format!("*l{}", level - 1); 9].join(",");
            bomb.push_str(&format!("  l{level}: &l{level} [{aliases}]\n"));
        }
        let sha = hostile(&[("deploy/bomb.yaml", &bomb)]);
        let fc = refused(&admin, &ns, &first, &sha, Some("deploy/bomb.yaml"), "budget breached").await;
        assert!(fc.status.unwrap().last_error.unwrap().line.is_some());
        back().await;

        // A million files: one blob, 1,000 directories of 1,000 entries
        // (two tree objects), refused from the tree before any checkout.
        let blob = repo
            .git_with_input(
                &["hash-object", "-w", "--stdin"],
                config_map("many", "m").as_bytes(),
            )
            .unwrap();
        let leaf: String = (0..1000)
            .map(|i| format!("100644 blob {blob}\tf{i}.yaml\n"))
            .collect();
        let leaf = repo.git_with_input(&["mktree"], leaf.as_bytes()).unwrap();
        let dirs: String = (0..1000)
            .map(|i| format!("040000 tree {leaf}\td{i}\n"))
            .collect();
        let many = repo.git_with_input(&["mktree"], dirs.as_bytes()).unwrap();
        let web = repo
            .git_with_input(
                &["hash-object", "-w", "--stdin"],
                config_map("web", "v3").as_bytes(),
            )
            .unwrap();
        let deploy = repo
            .git_with_input(
                &["mktree"],
                format!("040000 tree {many}\tmany\n100644 blob {web}\tweb.yaml\n").as_bytes(),
            )
            .unwrap();
        let root = repo
            .git_with_input(&["mktree"], format!("040000 tree {deploy}\tdeploy\n").as_bytes())
            .unwrap();
        let sha = repo.commit_tree(&root, "a million files").unwrap();
        refused(
            &admin,
            &ns,
            &first,
            &sha,
            None,
            "holds more than 2000 manifest files under path \"deploy\"",
        )
        .await;
        back().await;

        // A huge file: over the 64 MiB a manifest file may hold (70 MiB of
        // zeros, which Git compresses to almost nothing), refused from its
        // size before it is read.
        let zeros = std::fs::File::create(repo.work_dir().join("deploy/huge.yaml")).unwrap();
        zeros.set_len(70 * 1024 * 1024).unwrap();
        drop(zeros);
        let sha = repo.commit("a huge file").unwrap();
        refused(
            &admin,
            &ns,
            &first,
            &sha,
            Some("deploy/huge.yaml"),
            "a manifest file may hold at most 67108864 bytes",
        )
        .await;
        back().await;

        // A binary file with a YAML name.
        let sha = hostile(&[("deploy/logo.yaml", "GIF89a\u{0}\u{1}binary")]);
        refused(&admin, &ns, &first, &sha, Some("deploy/logo.yaml"), "NUL byte").await;
        back().await;

        // An object for a namespace the team may not write to.
        let sneaky = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: sneaky\n  namespace: kube-system\n";
        let sha = hostile(&[("deploy/sneaky.yaml", sneaky)]);
        refused(
            &admin,
            &ns,
            &first,
            &sha,
            Some("deploy/sneaky.yaml"),
            &format!("is in namespace kube-system, which is not allowed; allowed: {ns}"),
        )
        .await;
        back().await;

        // A symlink out of the path.
        repo.symlink("../../../etc/passwd", "deploy/passwd.yaml").unwrap();
        let sha = hostile(&[]);
        refused(
            &admin,
            &ns,
            &first,
            &sha,
            Some("deploy/passwd.yaml"),
            "outside path \"deploy\"",
        )
        .await;
        back().await;

        // A good commit is applied.
        let good = repo
            .commit_files(&[("deploy/web.yaml", &config_map("web", "v5"))], "good")
            .unwrap();
        ready(&admin, &ns, &good).await;
        assert_eq!(cm_value(&admin, &ns, "web").await.as_deref(), Some("v5"));
    })
    .await;
}
