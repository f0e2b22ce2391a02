//! Git access: the only module that imports `git2`.
//!
//! The seam is two operations on a [`Source`] (a URL, a reference, optional
//! basic-auth credentials, a timeout and a size limit):
//!
//! - [`Source::resolve`] asks the server which commit the reference names
//!   (`git ls-remote`), so a poll that finds the commit already applied
//!   costs one round trip and nothing else;
//! - [`Source::fetch`] fetches that commit (depth 1 for branches and tags,
//!   and for commits when the server allows fetching an object by id; a full
//!   fetch otherwise) into a bare cache repository and checks its tree out
//!   into a fresh directory.
//!
//! Both are blocking (libgit2 is), so the async wrappers run them in
//! `spawn_blocking` under a timeout; the transfer itself also stops at the
//! deadline and at the size limit. Swapping libgit2 for another client means
//! rewriting this file only.
//!
//! HTTPS and HTTP with basic auth are supported; SSH is not compiled in (a
//! `ssh://` URL fails with a clear error).

use std::cell::Cell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fluxgate_crds::GitReference;
use git2::{
    AutotagOption, CredentialType, Direction, FetchOptions, Remote, RemoteCallbacks, Repository,
};

/// Name of the file holding the user name in a credentials directory.
pub const USERNAME_FILE: &str = "username";
/// Name of the file holding the password or token in a credentials directory.
pub const PASSWORD_FILE: &str = "password";

/// The local ref a fetched commit is stored under in the cache repository.
const FETCHED_REF: &str = "refs/fluxgate/fetched";

/// Basic-auth credentials for a Git server. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl Credentials {
    /// Credentials from a user name and a password (or token).
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            password: password.into(),
        }
    }

    /// Reads `username` and `password` from a mounted Secret directory.
    /// Trailing newlines are dropped (files written by hand usually end
    /// with one; Kubernetes does not add any).
    pub fn read_dir(dir: &Path) -> Result<Self, GitError> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path)
                .map(|text| text.trim_end_matches(['\n', '\r']).to_owned())
                .map_err(|source| GitError::Credentials { path, source })
        };
        Ok(Self::new(read(USERNAME_FILE)?, read(PASSWORD_FILE)?))
    }
}

/// What to sync: a branch, a tag or a full commit id.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RefName {
    /// Follow the newest commit of a branch.
    Branch(String),
    /// The commit a tag points to (annotated tags are peeled).
    Tag(String),
    /// A pinned commit (full SHA).
    Commit(String),
}

impl RefName {
    /// The reference of an effective config; `None` unless exactly one of
    /// branch, tag and commit is set.
    pub fn from_git_reference(reference: &GitReference) -> Option<Self> {
        match (&reference.branch, &reference.tag, &reference.commit) {
            (Some(b), None, None) => Some(Self::Branch(b.clone())),
            (None, Some(t), None) => Some(Self::Tag(t.clone())),
            (None, None, Some(c)) => Some(Self::Commit(c.to_ascii_lowercase())),
            _ => None,
        }
    }

    /// The name used in revisions: the branch or tag name, empty for a commit.
    fn short_name(&self) -> &str {
        match self {
            Self::Branch(name) | Self::Tag(name) => name,
            Self::Commit(_) => "",
        }
    }
}

impl fmt::Display for RefName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Branch(b) => write!(f, "branch {b}"),
            Self::Tag(t) => write!(f, "tag {t}"),
            Self::Commit(c) => write!(f, "commit {c}"),
        }
    }
}

/// A resolved commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Commit {
    /// Full hex commit id.
    pub sha: String,
    /// Branch or tag name it was resolved from; empty for a pinned commit.
    pub ref_name: String,
}

impl Commit {
    /// The revision as Flux writes it: `main@sha1:<sha>`, or `sha1:<sha>`
    /// for a pinned commit.
    pub fn revision(&self) -> String {
        let algo = if self.sha.len() == 64 {
            "sha256"
        } else {
            "sha1"
        };
        if self.ref_name.is_empty() {
            format!("{algo}:{}", self.sha)
        } else {
            format!("{}@{algo}:{}", self.ref_name, self.sha)
        }
    }
}

/// Why talking to Git failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The server could not be reached or broke off (network, TLS, HTTP 5xx).
    #[error("cannot reach {url}: {message}")]
    Unreachable {
        /// The repository URL.
        url: String,
        /// libgit2's message.
        message: String,
    },
    /// The server asked for credentials and none are configured.
    #[error(
        "{url} requires authentication and no credentials are configured for it; ask the platform team to add a credentials rule for this repository"
    )]
    AuthenticationRequired {
        /// The repository URL.
        url: String,
    },
    /// The server refused the configured credentials.
    #[error("{url} refused the credentials of Secret {secret:?}")]
    AuthenticationFailed {
        /// The repository URL.
        url: String,
        /// The Secret whose credentials were used.
        secret: String,
    },
    /// The credentials files could not be read.
    #[error("cannot read git credentials from {}", path.display())]
    Credentials {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The branch or tag does not exist on the server.
    #[error("{reference} does not exist in {url}")]
    RefNotFound {
        /// The repository URL.
        url: String,
        /// The reference.
        reference: String,
    },
    /// The commit's checkout is larger than allowed.
    #[error(
        "revision {revision} is {bytes} bytes, over the limit of {max} bytes; make the repository smaller"
    )]
    TooLarge {
        /// The revision.
        revision: String,
        /// Its size (at least; the count stops at the limit).
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The operation did not finish in time.
    #[error("git {operation} of {url} did not finish within {after:?}")]
    TimedOut {
        /// `ls-remote` or `fetch`.
        operation: &'static str,
        /// The repository URL.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// The URL uses a transport this build does not support.
    #[error("{url}: only https:// and http:// repositories are supported (no ssh)")]
    UnsupportedScheme {
        /// The repository URL.
        url: String,
    },
    /// A local libgit2 or filesystem failure.
    #[error("git {operation} failed: {message}")]
    Local {
        /// What was being done.
        operation: &'static str,
        /// The error message.
        message: String,
    },
}

impl GitError {
    /// Whether the error clears by itself (the server or network comes
    /// back), as opposed to needing someone to change the repository or the
    /// platform's configuration.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::TimedOut { .. } | Self::Local { .. }
        )
    }

    fn local(operation: &'static str, err: impl fmt::Display) -> Self {
        Self::Local {
            operation,
            message: err.to_string(),
        }
    }
}

/// A repository to read, with how to authenticate and how far to go.
#[derive(Clone, Debug)]
pub struct Source {
    /// The repository URL (`https://` or `http://`).
    pub url: String,
    /// What to sync.
    pub reference: RefName,
    /// Basic-auth credentials, when the platform assigned some.
    pub credentials: Option<Credentials>,
    /// Name of the Secret the credentials came from (for messages).
    pub credentials_secret: Option<String>,
    /// Upper bound for one operation.
    pub timeout: Duration,
    /// Largest transfer and checkout accepted, in bytes.
    pub max_bytes: u64,
}

/// Tracks what the credentials callback did, to tell "no credentials" from
/// "wrong credentials" and to stop libgit2 from asking forever.
#[derive(Default)]
struct AuthState {
    asked: Cell<u32>,
    missing: Cell<bool>,
}

/// Tracks why a transfer was cancelled from the progress callback.
#[derive(Default)]
struct TransferState {
    too_large: Cell<Option<u64>>,
    deadline_passed: Cell<bool>,
}

impl Source {
    fn check_scheme(&self) -> Result<(), GitError> {
        if self.url.starts_with("https://") || self.url.starts_with("http://") {
            Ok(())
        } else {
            Err(GitError::UnsupportedScheme {
                url: self.url.clone(),
            })
        }
    }

    fn callbacks<'a>(
        &'a self,
        auth: &'a AuthState,
        transfer: &'a TransferState,
        deadline: Instant,
    ) -> RemoteCallbacks<'a> {
        let mut callbacks = RemoteCallbacks::new();
        callbacks.credentials(move |_url, _user, allowed| {
            auth.asked.set(auth.asked.get() + 1);
            match &self.credentials {
                // libgit2 asks again after a 401; answering once is enough.
                Some(c)
                    if auth.asked.get() == 1
                        && allowed.contains(CredentialType::USER_PASS_PLAINTEXT) =>
                {
                    git2::Cred::userpass_plaintext(&c.username, &c.password)
                }
                Some(_) => Err(git2::Error::from_str("credentials rejected")),
                None => {
                    auth.missing.set(true);
                    Err(git2::Error::from_str("no credentials configured"))
                }
            }
        });
        let max = self.max_bytes;
        callbacks.transfer_progress(move |stats| {
            let received = stats.received_bytes() as u64;
            if received > max {
                transfer.too_large.set(Some(received));
                return false;
            }
            if Instant::now() > deadline {
                transfer.deadline_passed.set(true);
                return false;
            }
            true
        });
        callbacks
    }

    fn classify(
        &self,
        operation: &'static str,
        err: &git2::Error,
        auth: &AuthState,
        transfer: &TransferState,
        revision: &str,
    ) -> GitError {
        if let Some(bytes) = transfer.too_large.get() {
            return GitError::TooLarge {
                revision: revision.to_owned(),
                bytes,
                max: self.max_bytes,
            };
        }
        if transfer.deadline_passed.get() {
            return GitError::TimedOut {
                operation,
                url: self.url.clone(),
                after: self.timeout,
            };
        }
        if auth.missing.get() {
            return GitError::AuthenticationRequired {
                url: self.url.clone(),
            };
        }
        if auth.asked.get() > 1 || err.code() == git2::ErrorCode::Auth {
            return match &self.credentials {
                Some(_) => GitError::AuthenticationFailed {
                    url: self.url.clone(),
                    secret: self.credentials_secret.clone().unwrap_or_default(),
                },
                None => GitError::AuthenticationRequired {
                    url: self.url.clone(),
                },
            };
        }
        match err.class() {
            git2::ErrorClass::Net
            | git2::ErrorClass::Http
            | git2::ErrorClass::Ssl
            | git2::ErrorClass::Os
            | git2::ErrorClass::Callback => GitError::Unreachable {
                url: self.url.clone(),
                message: err.message().to_owned(),
            },
            _ => GitError::local(operation, err.message()),
        }
    }

    /// Resolves the reference to a commit by listing the server's refs. A
    /// pinned commit resolves to itself without contacting the server.
    /// Blocking; see [`Source::resolve_async`].
    pub fn resolve(&self) -> Result<Commit, GitError> {
        self.check_scheme()?;
        let tag_peeled;
        let wanted: (&str, Option<&str>) = match &self.reference {
            RefName::Commit(sha) => {
                return Ok(Commit {
                    sha: sha.clone(),
                    ref_name: String::new(),
                });
            }
            RefName::Branch(b) => {
                tag_peeled = format!("refs/heads/{b}");
                (tag_peeled.as_str(), None)
            }
            RefName::Tag(t) => {
                tag_peeled = format!("refs/tags/{t}");
                (tag_peeled.as_str(), Some("^{}"))
            }
        };
        let deadline = Instant::now() + self.timeout;
        let auth = AuthState::default();
        let transfer = TransferState::default();
        let classify = |e: git2::Error| self.classify("ls-remote", &e, &auth, &transfer, "");
        let mut remote = Remote::create_detached(self.url.as_str()).map_err(classify)?;
        let connection = remote
            .connect_auth(
                Direction::Fetch,
                Some(self.callbacks(&auth, &transfer, deadline)),
                None,
            )
            .map_err(classify)?;
        let heads = connection.list().map_err(classify)?;
        let find = |name: &str| {
            heads
                .iter()
                .find(|h| h.name() == name)
                .map(|h| h.oid().to_string())
        };
        let (name, peel_suffix) = wanted;
        // An annotated tag is listed twice: the tag object, and the commit
        // it points to with a `^{}` suffix.
        let sha = peel_suffix
            .and_then(|suffix| find(&format!("{name}{suffix}")))
            .or_else(|| find(name))
            .ok_or_else(|| GitError::RefNotFound {
                url: self.url.clone(),
                reference: self.reference.to_string(),
            })?;
        Ok(Commit {
            sha,
            ref_name: self.reference.short_name().to_owned(),
        })
    }

    /// Fetches the reference into the bare cache repository `cache` (created
    /// when missing or unusable) and checks the commit's tree out into
    /// `dest`, which is emptied first. Blocking; see
    /// [`Source::fetch_async`].
    pub fn fetch(&self, cache: &Path, dest: &Path) -> Result<Commit, GitError> {
        self.check_scheme()?;
        match self.fetch_once(cache, dest) {
            // A cache left inconsistent (an interrupted shallow fetch, a
            // rewritten history) is thrown away and the fetch retried once
            // from scratch; server-side problems are returned as they are.
            Err(GitError::Local { .. }) => {
                let _ = std::fs::remove_dir_all(cache);
                self.fetch_once(cache, dest)
            }
            other => other,
        }
    }

    fn open_cache(cache: &Path) -> Result<Repository, GitError> {
        if let Ok(repo) = Repository::open_bare(cache) {
            return Ok(repo);
        }
        let _ = std::fs::remove_dir_all(cache);
        std::fs::create_dir_all(cache).map_err(|e| GitError::local("init", e))?;
        let repo = Repository::init_bare(cache).map_err(|e| GitError::local("init", e))?;
        // Check symlinks out as symlinks, so the manifest reader can see
        // (and refuse) those that leave the configured path.
        repo.config()
            .and_then(|mut c| c.set_bool("core.symlinks", true))
            .map_err(|e| GitError::local("init", e))?;
        Ok(repo)
    }

    fn fetch_once(&self, cache: &Path, dest: &Path) -> Result<Commit, GitError> {
        let deadline = Instant::now() + self.timeout;
        let repo = Self::open_cache(cache)?;
        let auth = AuthState::default();
        let transfer = TransferState::default();
        let revision = self.reference.to_string();
        let classify = |e: git2::Error| self.classify("fetch", &e, &auth, &transfer, &revision);
        let mut remote = repo.remote_anonymous(&self.url).map_err(classify)?;
        let options = |depth: i32| {
            let mut options = FetchOptions::new();
            options
                .remote_callbacks(self.callbacks(&auth, &transfer, deadline))
                .download_tags(AutotagOption::None)
                .update_fetchhead(false)
                .depth(depth);
            options
        };
        let refspec = match &self.reference {
            RefName::Branch(b) => format!("+refs/heads/{b}:{FETCHED_REF}"),
            RefName::Tag(t) => format!("+refs/tags/{t}:{FETCHED_REF}"),
            RefName::Commit(sha) => format!("+{sha}:{FETCHED_REF}"),
        };
        // A ref that matches nothing fetches nothing: start without the
        // previous result, so "not found" is seen as such.
        if let Ok(mut previous) = repo.find_reference(FETCHED_REF) {
            previous.delete().map_err(|e| GitError::local("fetch", e))?;
        }
        // libgit2's local transport (used only by unit tests: `file://` is
        // refused for FluxConfigs) cannot fetch shallow.
        let depth = if self.url.starts_with("file://") {
            0
        } else {
            1
        };
        let fetched = remote.fetch(&[refspec.as_str()], Some(&mut options(depth)), None);
        let commit = match (&self.reference, fetched) {
            (_, Ok(())) => repo
                .revparse_single(FETCHED_REF)
                .and_then(|o| o.peel_to_commit()),
            // Servers that refuse wants by object id get a full fetch, in
            // which the commit is then looked up.
            (RefName::Commit(sha), Err(e)) if e.class() == git2::ErrorClass::Invalid => {
                let all = [
                    "+refs/heads/*:refs/fluxgate/heads/*",
                    "+refs/tags/*:refs/fluxgate/tags/*",
                ];
                remote
                    .fetch(&all, Some(&mut options(0)), None)
                    .map_err(classify)?;
                git2::Oid::from_str(sha).and_then(|oid| repo.find_commit(oid))
            }
            (_, Err(e)) if e.code() == git2::ErrorCode::NotFound => {
                return Err(GitError::RefNotFound {
                    url: self.url.clone(),
                    reference: self.reference.to_string(),
                });
            }
            (_, Err(e)) => return Err(classify(e)),
        }
        .map_err(|e| {
            if e.code() == git2::ErrorCode::NotFound {
                GitError::RefNotFound {
                    url: self.url.clone(),
                    reference: self.reference.to_string(),
                }
            } else {
                GitError::local("fetch", e)
            }
        })?;
        let resolved = Commit {
            sha: commit.id().to_string(),
            ref_name: self.reference.short_name().to_owned(),
        };
        let tree = commit.tree().map_err(|e| GitError::local("read tree", e))?;
        let size =
            tree_size(&repo, &tree, self.max_bytes).map_err(|e| GitError::local("read tree", e))?;
        if size > self.max_bytes {
            return Err(GitError::TooLarge {
                revision: resolved.revision(),
                bytes: size,
                max: self.max_bytes,
            });
        }
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(|e| GitError::local("checkout", e))?;
        }
        std::fs::create_dir_all(dest).map_err(|e| GitError::local("checkout", e))?;
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout.target_dir(dest).force().update_index(false);
        repo.checkout_tree(tree.as_object(), Some(&mut checkout))
            .map_err(|e| GitError::local("checkout", e))?;
        Ok(resolved)
    }

    /// [`Source::resolve`] on the blocking pool, under the timeout.
    pub async fn resolve_async(&self) -> Result<Commit, GitError> {
        let source = self.clone();
        self.blocking("ls-remote", move || source.resolve()).await
    }

    /// [`Source::fetch`] on the blocking pool, under the timeout.
    pub async fn fetch_async(&self, cache: PathBuf, dest: PathBuf) -> Result<Commit, GitError> {
        let source = self.clone();
        self.blocking("fetch", move || source.fetch(&cache, &dest))
            .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce() -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        // The transfer callbacks stop at the same deadline; the margin lets
        // them do so before the task is abandoned.
        let limit = self.timeout + Duration::from_secs(2);
        match tokio::time::timeout(limit, tokio::task::spawn_blocking(work)).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(GitError::local(operation, join)),
            Err(_) => Err(GitError::TimedOut {
                operation,
                url: self.url.clone(),
                after: self.timeout,
            }),
        }
    }
}

/// Sums the sizes of the blobs in `tree` (each object counted once), stopping
/// as soon as the sum passes `max`.
fn tree_size(repo: &Repository, tree: &git2::Tree<'_>, max: u64) -> Result<u64, git2::Error> {
    let odb = repo.odb()?;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    let mut failure = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
        if entry.kind() != Some(git2::ObjectType::Blob) || !seen.insert(entry.id()) {
            return git2::TreeWalkResult::Ok;
        }
        match odb.read_header(entry.id()) {
            Ok((size, _)) => {
                total = total.saturating_add(size as u64);
                if total > max {
                    git2::TreeWalkResult::Abort
                } else {
                    git2::TreeWalkResult::Ok
                }
            }
            Err(e) => {
                failure = Some(e);
                git2::TreeWalkResult::Abort
            }
        }
    })
    .or_else(|e| if total > max { Ok(()) } else { Err(e) })?;
    match failure {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn revisions_read_like_flux() {
        let c = Commit {
            sha: "a".repeat(40),
            ref_name: "main".into(),
        };
        assert_eq!(c.revision(), format!("main@sha1:{}", "a".repeat(40)));
        let pinned = Commit {
            sha: "b".repeat(40),
            ref_name: String::new(),
        };
        assert_eq!(pinned.revision(), format!("sha1:{}", "b".repeat(40)));
    }

    #[test]
    fn credentials_are_read_from_a_secret_directory_and_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("username"), "team\n").unwrap();
        std::fs::write(dir.path().join("password"), "hunter2").unwrap();
        let c = Credentials::read_dir(dir.path()).unwrap();
        assert_eq!(c, Credentials::new("team", "hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
        let missing = Credentials::read_dir(&dir.path().join("nope")).unwrap_err();
        assert!(!missing.is_transient(), "{missing}");
    }

    #[test]
    fn references_come_from_the_effective_config() {
        assert_eq!(
            RefName::from_git_reference(&GitReference::branch("main")),
            Some(RefName::Branch("main".into()))
        );
        assert_eq!(RefName::from_git_reference(&GitReference::default()), None);
    }

    #[test]
    fn ssh_is_refused_clearly() {
        let source = Source {
            url: "ssh://git@example.com/x.git".into(),
            reference: RefName::Branch("main".into()),
            credentials: None,
            credentials_secret: None,
            timeout: Duration::from_secs(1),
            max_bytes: 1,
        };
        let err = source.resolve().unwrap_err();
        assert!(matches!(err, GitError::UnsupportedScheme { .. }), "{err}");
    }

    /// A local repository made with the git CLI, fetched over `file://`
    /// (the network transports are covered by the end-to-end tests).
    #[test]
    fn fetches_and_checks_out_a_branch_tag_and_commit() {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin");
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(args)
                .current_dir(&origin)
                .env("GIT_AUTHOR_NAME", "t")
                .env("GIT_AUTHOR_EMAIL", "t@example.com")
                .env("GIT_COMMITTER_NAME", "t")
                .env("GIT_COMMITTER_EMAIL", "t@example.com")
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        std::fs::create_dir_all(origin.join("deploy")).unwrap();
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(origin.join("deploy/a.yaml"), "a: 1\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "one"]);
        let first = git(&["rev-parse", "HEAD"]);
        git(&["tag", "-a", "v1", "-m", "v1"]);
        std::fs::write(origin.join("deploy/b.yaml"), "b: 2\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "two"]);
        let second = git(&["rev-parse", "HEAD"]);

        // `file://` goes through libgit2's local transport; the URL check
        // is for network schemes, so call the inner steps directly.
        let url = format!("file://{}", origin.display());
        let source = |reference| Source {
            url: url.clone(),
            reference,
            credentials: None,
            credentials_secret: None,
            timeout: Duration::from_secs(30),
            max_bytes: 1 << 20,
        };
        let cache = dir.path().join("cache");
        let dest = dir.path().join("checkout");

        let branch = source(RefName::Branch("main".into()));
        let c = branch.fetch_once(&cache, &dest).unwrap();
        assert_eq!(c.sha, second);
        assert!(dest.join("deploy/b.yaml").is_file());

        let tag = source(RefName::Tag("v1".into()));
        let c = tag.fetch_once(&cache, &dest).unwrap();
        assert_eq!(c.sha, first);
        assert!(
            !dest.join("deploy/b.yaml").exists(),
            "dest is emptied first"
        );

        let pinned = source(RefName::Commit(first.clone()));
        assert_eq!(pinned.fetch_once(&cache, &dest).unwrap().sha, first);

        let tiny = Source {
            max_bytes: 3,
            ..source(RefName::Branch("main".into()))
        };
        let err = tiny
            .fetch_once(&dir.path().join("cache2"), &dest)
            .unwrap_err();
        assert!(matches!(err, GitError::TooLarge { .. }), "{err}");

        let missing = source(RefName::Branch("nope".into()));
        let err = missing.fetch_once(&cache, &dest).unwrap_err();
        assert!(matches!(err, GitError::RefNotFound { .. }), "{err}");
    }
}
