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
//! `spawn_blocking` under a timeout, with libgit2's connections going
//! through a loopback [`relay`] that closes a connection carrying nothing for
//! the stall timeout and every connection at the deadline: a server that
//! accepts and then stalls (or drips) cannot hold a thread. The transfer
//! also stops at the size limit.
//!
//! Only what the reconciler reads is checked out: the manifest files
//! (`*.yaml`, `*.yml`, kustomization files) and symlinks under the
//! configured path, and the files those links name. They are counted and
//! sized from the tree before anything is written, so a commit with a
//! million files, or one huge file, is refused without checking it out
//! ([`Selection`]). Swapping libgit2 for another client means rewriting
//! this module only.
//!
//! HTTPS and HTTP with basic auth are supported; SSH is not compiled in (a
//! `ssh://` URL fails with a clear error).

mod relay;

use std::cell::Cell;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use fluxgate_crds::GitReference;
use git2::{
    AutotagOption, CredentialType, Direction, FetchOptions, ProxyOptions, Remote, RemoteCallbacks,
    Repository,
};

use relay::{Outcome, Relay};

/// Name of the file holding the user name in a credentials directory.
pub const USERNAME_FILE: &str = "username";
/// Name of the file holding the password or token in a credentials directory.
pub const PASSWORD_FILE: &str = "password";

/// The local ref a fetched commit is stored under in the cache repository.
const FETCHED_REF: &str = "refs/fluxgate/fetched";
/// Longest a connection may carry nothing before it is closed (half the
/// operation's timeout when that is shorter).
pub const MAX_STALL: Duration = Duration::from_secs(30);
/// How long after the deadline the blocking work may take to notice its
/// connections were closed (and finish local steps) before it is abandoned.
const GRACE: Duration = Duration::from_secs(5);
/// File names that are read besides `*.yaml`/`*.yml` (to be refused by
/// name): kustomize's.
const KUSTOMIZATION_FILES: &[&str] = &["kustomization.yaml", "kustomization.yml", "Kustomization"];

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
    /// The repository does not exist on the server (HTTP 404 or 410).
    #[error(
        "repository {url} was not found (HTTP {status}): it was deleted or renamed, or the credentials cannot see it"
    )]
    RepositoryNotFound {
        /// The repository URL.
        url: String,
        /// The HTTP status.
        status: u16,
    },
    /// The server answered, but not like a Git server (an HTML page, bytes
    /// that are not the Git protocol, a truncated or corrupt pack).
    #[error("{url} did not answer like a Git server: {message}")]
    Protocol {
        /// The repository URL.
        url: String,
        /// libgit2's message.
        message: String,
    },
    /// The commit's transfer or the files to check out are larger than
    /// allowed.
    #[error(
        "revision {revision} is over the limit of {max} bytes ({detail}); make the repository smaller"
    )]
    TooLarge {
        /// The revision.
        revision: String,
        /// Its size (at least; the count stops at the limit).
        bytes: u64,
        /// The limit.
        max: u64,
        /// What went over: the transfer, or the file that did.
        detail: String,
    },
    /// More files under the path than allowed, counted in the commit's tree
    /// before anything is checked out.
    #[error(
        "revision {revision} holds more than {max} manifest files under path {path:?} (the platform's limit); split the repository or narrow the path"
    )]
    TooManyFiles {
        /// The revision.
        revision: String,
        /// The effective path.
        path: String,
        /// The limit.
        max: usize,
    },
    /// A connection carried nothing for the stall timeout.
    #[error(
        "git {operation} of {url}: the server sent nothing for {after:?}, so the connection was closed"
    )]
    Stalled {
        /// `ls-remote` or `fetch`.
        operation: &'static str,
        /// The repository URL.
        url: String,
        /// The stall timeout.
        after: Duration,
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
            Self::Unreachable { .. }
                | Self::Protocol { .. }
                | Self::Stalled { .. }
                | Self::TimedOut { .. }
                | Self::Local { .. }
        )
    }

    /// Whether the error is about the network or the server's answers, so
    /// that what the relay saw on the wire explains it better.
    fn is_on_the_wire(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Protocol { .. }
                | Self::RepositoryNotFound { .. }
                | Self::Local { .. }
                | Self::TimedOut { .. }
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

/// What of a commit to check out, and how many files that may be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The effective path (`.` or empty for the whole repository).
    pub path: String,
    /// Most files checked out: manifests, kustomization files, symlinks
    /// and the files they name (the platform's `maxFiles`).
    pub max_files: usize,
}

impl Selection {
    /// Everything the reconciler would read from the whole repository,
    /// without a file limit.
    pub fn everything() -> Self {
        Self {
            path: ".".to_owned(),
            max_files: usize::MAX,
        }
    }

    /// The path relative to the repository root, `/`-separated, without
    /// `.` components; empty for the root. `None` when it leaves the root.
    fn relative(&self) -> Option<String> {
        normalize(Path::new(self.path.trim_matches('/')))
    }
}

/// `path` without `.` and with `..` applied; `None` if it leaves the root.
fn normalize(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

fn is_read_by_name(name: &str) -> bool {
    name.ends_with(".yaml") || name.ends_with(".yml") || KUSTOMIZATION_FILES.contains(&name)
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
                detail: format!("the transfer passed {bytes} bytes"),
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
        classify_wire(&self.url, operation, err)
    }

    /// Resolves the reference to a commit by listing the server's refs. A
    /// pinned commit resolves to itself without contacting the server.
    /// Blocking and without the stall protection; the reconciler uses
    /// [`Source::resolve_async`].
    pub fn resolve(&self) -> Result<Commit, GitError> {
        self.resolve_via(&Route::Direct)
    }

    fn resolve_via(&self, route: &Route) -> Result<Commit, GitError> {
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
        let mut remote = Remote::create_detached(route.url(self)).map_err(classify)?;
        let connection = remote
            .connect_auth(
                Direction::Fetch,
                Some(self.callbacks(&auth, &transfer, deadline)),
                Some(route.proxy_options()),
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
    /// when missing or unusable) and checks what `selection` names out into
    /// `dest`, which is emptied first. Blocking and without the stall
    /// protection; the reconciler uses [`Source::fetch_selected_async`].
    pub fn fetch(
        &self,
        cache: &Path,
        dest: &Path,
        selection: &Selection,
    ) -> Result<Commit, GitError> {
        self.fetch_via(cache, dest, selection, &Route::Direct)
    }

    fn fetch_via(
        &self,
        cache: &Path,
        dest: &Path,
        selection: &Selection,
        route: &Route,
    ) -> Result<Commit, GitError> {
        self.check_scheme()?;
        match self.fetch_once(cache, dest, selection, route) {
            // A cache left inconsistent (an interrupted shallow fetch, a
            // rewritten history) is thrown away and the fetch retried once
            // from scratch; server-side problems are returned as they are.
            Err(GitError::Local { .. }) => {
                let _ = std::fs::remove_dir_all(cache);
                self.fetch_once(cache, dest, selection, route)
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

    fn fetch_once(
        &self,
        cache: &Path,
        dest: &Path,
        selection: &Selection,
        route: &Route,
    ) -> Result<Commit, GitError> {
        let deadline = Instant::now() + self.timeout;
        let repo = Self::open_cache(cache)?;
        let auth = AuthState::default();
        let transfer = TransferState::default();
        let revision = self.reference.to_string();
        let classify = |e: git2::Error| self.classify("fetch", &e, &auth, &transfer, &revision);
        let mut remote = repo.remote_anonymous(route.url(self)).map_err(classify)?;
        let options = |depth: i32| {
            let mut options = FetchOptions::new();
            options
                .remote_callbacks(self.callbacks(&auth, &transfer, deadline))
                .proxy_options(route.proxy_options())
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
        let chosen = select(&repo, &tree, selection, self.max_bytes)
            .map_err(|e| GitError::local("read tree", e))?;
        let chosen = match chosen {
            Chosen::Files(chosen) => chosen,
            Chosen::TooMany => {
                return Err(GitError::TooManyFiles {
                    revision: resolved.revision(),
                    path: selection.path.clone(),
                    max: selection.max_files,
                });
            }
            Chosen::TooLarge { bytes, file } => {
                return Err(GitError::TooLarge {
                    revision: resolved.revision(),
                    bytes,
                    max: self.max_bytes,
                    detail: format!("the files to read pass it at {file}"),
                });
            }
        };
        if dest.exists() {
            std::fs::remove_dir_all(dest).map_err(|e| GitError::local("checkout", e))?;
        }
        std::fs::create_dir_all(dest).map_err(|e| GitError::local("checkout", e))?;
        if let Some(dir) = &chosen.directory {
            // The path exists; without files to read it is still a directory.
            std::fs::create_dir_all(dest.join(dir)).map_err(|e| GitError::local("checkout", e))?;
        }
        // No path at all would check out everything.
        if !chosen.paths.is_empty() {
            let mut checkout = git2::build::CheckoutBuilder::new();
            checkout
                .target_dir(dest)
                .force()
                .update_index(false)
                .disable_pathspec_match(true);
            for path in &chosen.paths {
                checkout.path(path.as_str());
            }
            repo.checkout_tree(tree.as_object(), Some(&mut checkout))
                .map_err(|e| GitError::local("checkout", e))?;
        }
        Ok(resolved)
    }

    /// [`Source::resolve`] on the blocking pool, through a [`relay`] that
    /// enforces the stall timeout and the deadline.
    pub async fn resolve_async(&self) -> Result<Commit, GitError> {
        let source = self.clone();
        self.blocking("ls-remote", move |route| source.resolve_via(&route))
            .await
    }

    /// [`Source::fetch`] of [`Selection::everything`] on the blocking pool,
    /// through a [`relay`].
    pub async fn fetch_async(&self, cache: PathBuf, dest: PathBuf) -> Result<Commit, GitError> {
        self.fetch_selected_async(cache, dest, Selection::everything())
            .await
    }

    /// [`Source::fetch`] on the blocking pool, through a [`relay`] that
    /// enforces the stall timeout and the deadline.
    pub async fn fetch_selected_async(
        &self,
        cache: PathBuf,
        dest: PathBuf,
        selection: Selection,
    ) -> Result<Commit, GitError> {
        let source = self.clone();
        self.blocking("fetch", move |route| {
            source.fetch_via(&cache, &dest, &selection, &route)
        })
        .await
    }

    /// How long a connection may carry nothing: half the timeout, at most
    /// [`MAX_STALL`].
    pub fn stall_timeout(&self) -> Duration {
        (self.timeout / 2).min(MAX_STALL)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        operation: &'static str,
        work: impl FnOnce(Route) -> Result<T, GitError> + Send + 'static,
    ) -> Result<T, GitError> {
        self.check_scheme()?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let plain = split_http_url(&self.url);
        let forward_to = plain.as_ref().map(|(authority, _)| authority.clone());
        let relay = Relay::start(self.stall_timeout(), deadline, forward_to)
            .await
            .map_err(|e| GitError::local(operation, e))?;
        let route = match plain {
            Some((_, path)) => Route::Rewritten(format!("{}{path}", relay.url())),
            None => Route::Proxy(relay.url()),
        };
        let task = tokio::task::spawn_blocking(move || work(route));
        // At the deadline the relay closes every connection, so libgit2
        // returns soon after; the grace covers what it does locally.
        let result = match tokio::time::timeout_at(deadline + GRACE, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(GitError::local(operation, join)),
            Err(_) => Err(GitError::TimedOut {
                operation,
                url: self.url.clone(),
                after: self.timeout,
            }),
        };
        result.map_err(|err| {
            if !err.is_on_the_wire() {
                return err;
            }
            match relay.outcome() {
                Outcome::Clean => err,
                Outcome::Unreachable(message) => GitError::Unreachable {
                    url: self.url.clone(),
                    message,
                },
                Outcome::Stalled(after) => GitError::Stalled {
                    operation,
                    url: self.url.clone(),
                    after,
                },
                Outcome::DeadlinePassed => GitError::TimedOut {
                    operation,
                    url: self.url.clone(),
                    after: self.timeout,
                },
            }
        })
    }
}

/// How libgit2 reaches the server.
#[derive(Debug, Clone, Default)]
enum Route {
    /// Directly (`file://` in unit tests, and the blocking API).
    #[default]
    Direct,
    /// Through a relay as a `CONNECT` proxy (https).
    Proxy(String),
    /// At the relay's address, which forwards to the server (http).
    Rewritten(String),
}

impl Route {
    /// The URL libgit2 is given.
    fn url<'a>(&'a self, source: &'a Source) -> &'a str {
        match self {
            Self::Rewritten(url) => url,
            Self::Direct | Self::Proxy(_) => &source.url,
        }
    }

    fn proxy_options(&self) -> ProxyOptions<'static> {
        let mut options = ProxyOptions::new();
        if let Self::Proxy(url) = self {
            options.url(url);
        }
        options
    }
}

/// `host:port` of an `http://` URL (user info dropped, port 80 by default)
/// and the rest of the URL from its path on.
fn split_http_url(url: &str) -> Option<(String, &str)> {
    let rest = url.strip_prefix("http://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.is_empty() {
        return None;
    }
    let has_port = host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && !host_port.ends_with(']');
    let host_port = if has_port {
        host_port.to_owned()
    } else {
        format!("{host_port}:80")
    };
    Some((host_port, path))
}

/// Sorts a libgit2 error from talking to the server: a missing repository,
/// an answer that is not Git, or a network failure.
fn classify_wire(url: &str, operation: &'static str, err: &git2::Error) -> GitError {
    let message = err.message();
    let status = message
        .strip_prefix("unexpected http status code: ")
        .and_then(|code| code.trim().parse::<u16>().ok());
    match (err.class(), status) {
        (git2::ErrorClass::Http, Some(status @ (404 | 410))) => GitError::RepositoryNotFound {
            url: url.to_owned(),
            status,
        },
        (git2::ErrorClass::Http, None) if message.contains("content-type") => GitError::Protocol {
            url: url.to_owned(),
            message: message.to_owned(),
        },
        // Broken pkt-lines, packs that end early or do not inflate.
        (git2::ErrorClass::Net, None)
            if ["packet", "pkt", "early EOF", "unexpected EOF", "remote"]
                .iter()
                .any(|n| message.contains(n)) =>
        {
            GitError::Protocol {
                url: url.to_owned(),
                message: message.to_owned(),
            }
        }
        (git2::ErrorClass::Indexer | git2::ErrorClass::Zlib, _) => GitError::Protocol {
            url: url.to_owned(),
            message: message.to_owned(),
        },
        (
            git2::ErrorClass::Net
            | git2::ErrorClass::Http
            | git2::ErrorClass::Ssl
            | git2::ErrorClass::Os
            | git2::ErrorClass::Callback,
            _,
        ) => GitError::Unreachable {
            url: url.to_owned(),
            message: message.to_owned(),
        },
        _ => GitError::local(operation, message),
    }
}

/// What of a tree to check out.
#[derive(Debug, Default, PartialEq, Eq)]
struct Files {
    /// Paths from the repository root.
    paths: Vec<String>,
    /// The path's directory, when it is one (created even when empty).
    directory: Option<String>,
}

/// The outcome of [`select`].
#[derive(Debug, PartialEq, Eq)]
enum Chosen {
    /// Check these out.
    Files(Files),
    /// More than the selection's `max_files`; the walk stopped there.
    TooMany,
    /// More than `max_bytes`; the walk stopped at `file`.
    TooLarge { bytes: u64, file: String },
}

/// Picks what the manifest reader will look at under the selection's path:
/// manifest and kustomization files and symlinks, not under hidden
/// directories, plus the files those links name inside the path. Reads
/// tree objects and blob headers only, and stops at the file or byte limit.
fn select(
    repo: &Repository,
    root: &git2::Tree<'_>,
    selection: &Selection,
    max_bytes: u64,
) -> Result<Chosen, git2::Error> {
    let Some(base) = selection.relative() else {
        // Leaves the repository: the reader says so.
        return Ok(Chosen::Files(Files::default()));
    };
    let subtree = if base.is_empty() {
        root.clone()
    } else {
        match root.get_path(Path::new(&base)) {
            Ok(entry) if entry.kind() == Some(git2::ObjectType::Tree) => {
                entry.to_object(repo)?.peel_to_tree()?
            }
            // A file or a link: checked out alone, for the reader to judge.
            Ok(_) => {
                return Ok(Chosen::Files(Files {
                    paths: vec![base],
                    directory: None,
                }));
            }
            Err(e) if e.code() == git2::ErrorCode::NotFound => {
                return Ok(Chosen::Files(Files::default()));
            }
            Err(e) => return Err(e),
        }
    };
    let prefix = if base.is_empty() {
        String::new()
    } else {
        format!("{base}/")
    };
    let odb = repo.odb()?;
    let mut chosen = std::collections::BTreeSet::new();
    let mut links = Vec::new();
    let mut bytes = 0u64;
    let mut stop: Option<Chosen> = None;
    let mut failure = None;
    let mut add = |path: String,
                   id: git2::Oid,
                   chosen: &mut std::collections::BTreeSet<String>|
     -> Result<Option<Chosen>, git2::Error> {
        if !chosen.insert(path.clone()) {
            return Ok(None);
        }
        if chosen.len() > selection.max_files {
            return Ok(Some(Chosen::TooMany));
        }
        let (size, _) = odb.read_header(id)?;
        bytes = bytes.saturating_add(size as u64);
        if bytes > max_bytes {
            return Ok(Some(Chosen::TooLarge { bytes, file: path }));
        }
        Ok(None)
    };
    let walked = subtree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            return git2::TreeWalkResult::Skip;
        };
        if name.starts_with('.') {
            // The reader skips hidden entries; so does the checkout.
            return git2::TreeWalkResult::Skip;
        }
        if entry.kind() != Some(git2::ObjectType::Blob) {
            return git2::TreeWalkResult::Ok;
        }
        let is_link = entry.filemode() == 0o120_000;
        if !is_link && !is_read_by_name(name) {
            return git2::TreeWalkResult::Ok;
        }
        let path = format!("{prefix}{dir}{name}");
        if is_link {
            links.push((format!("{dir}{name}"), entry.id()));
        }
        match add(path, entry.id(), &mut chosen) {
            Ok(None) => git2::TreeWalkResult::Ok,
            Ok(Some(reason)) => {
                stop = Some(reason);
                git2::TreeWalkResult::Abort
            }
            Err(e) => {
                failure = Some(e);
                git2::TreeWalkResult::Abort
            }
        }
    });
    if let Some(reason) = stop {
        return Ok(reason);
    }
    if let Some(e) = failure {
        return Err(e);
    }
    walked?;
    // The files links name (a link may name a file that is not a manifest
    // by its name); links leaving the path are left to the reader to refuse.
    // Each link is queued once (when first chosen), so loops end.
    let mut queue = links;
    while let Some((link, id)) = queue.pop() {
        let blob = repo.find_blob(id)?;
        let Ok(target) = std::str::from_utf8(blob.content()) else {
            continue;
        };
        let parent = Path::new(&link).parent().unwrap_or(Path::new(""));
        let Some(target) = normalize(&parent.join(target)) else {
            continue;
        };
        let Ok(entry) = subtree.get_path(Path::new(&target)) else {
            continue;
        };
        if entry.kind() != Some(git2::ObjectType::Blob) {
            continue;
        }
        let full = format!("{prefix}{target}");
        let new = !chosen.contains(&full);
        if let Some(reason) = add(full, entry.id(), &mut chosen)? {
            return Ok(reason);
        }
        if new && entry.filemode() == 0o120_000 {
            queue.push((target, entry.id()));
        }
    }
    Ok(Chosen::Files(Files {
        paths: chosen.into_iter().collect(),
        directory: (!base.is_empty()).then_some(base),
    }))
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
        let c = branch
            .fetch_once(&cache, &dest, &Selection::everything(), &Route::Direct)
            .unwrap();
        assert_eq!(c.sha, second);
        assert!(dest.join("deploy/b.yaml").is_file());

        let tag = source(RefName::Tag("v1".into()));
        let c = tag
            .fetch_once(&cache, &dest, &Selection::everything(), &Route::Direct)
            .unwrap();
        assert_eq!(c.sha, first);
        assert!(
            !dest.join("deploy/b.yaml").exists(),
            "dest is emptied first"
        );

        let pinned = source(RefName::Commit(first.clone()));
        assert_eq!(
            pinned
                .fetch_once(&cache, &dest, &Selection::everything(), &Route::Direct)
                .unwrap()
                .sha,
            first
        );

        let tiny = Source {
            max_bytes: 3,
            ..source(RefName::Branch("main".into()))
        };
        let err = tiny
            .fetch_once(
                &dir.path().join("cache2"),
                &dest,
                &Selection::everything(),
                &Route::Direct,
            )
            .unwrap_err();
        assert!(matches!(err, GitError::TooLarge { .. }), "{err}");

        let missing = source(RefName::Branch("nope".into()));
        let err = missing
            .fetch_once(&cache, &dest, &Selection::everything(), &Route::Direct)
            .unwrap_err();
        assert!(matches!(err, GitError::RefNotFound { .. }), "{err}");
    }

    /// A `git` runner in `dir`, with an identity and stdin input.
    fn git_in(dir: &Path, args: &[&str], input: Option<&[u8]>) -> String {
        use std::io::Write as _;
        let mut child = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.unwrap_or_default().to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    fn local(url: &Path, max_bytes: u64) -> Source {
        Source {
            url: format!("file://{}", url.display()),
            reference: RefName::Branch("main".into()),
            credentials: None,
            credentials_secret: None,
            timeout: Duration::from_secs(120),
            max_bytes,
        }
    }

    fn checked_out(dest: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                let meta = std::fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    walk(root, &path, out);
                } else {
                    out.push(path.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
        let mut out = Vec::new();
        walk(dest, dest, &mut out);
        out.sort();
        out
    }

    #[test]
    fn checks_out_only_what_the_reader_reads_under_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin");
        std::fs::create_dir_all(&origin).unwrap();
        git_in(&origin, &["init", "-q", "-b", "main"], None);
        for (path, text) in [
            ("deploy/a.yaml", "a: 1\n"),
            ("deploy/sub/b.yml", "b: 1\n"),
            ("deploy/kustomization.yaml", "resources: []\n"),
            ("deploy/notes.md", "# notes\n"),
            ("deploy/data.txt", "c: 1\n"),
            ("deploy/.github/ci.yaml", "on: push\n"),
            ("src/main.rs", "fn main() {}\n"),
            ("top.yaml", "top: 1\n"),
        ] {
            let full = origin.join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        for (target, link) in [
            ("data.txt", "deploy/link.yaml"),
            ("../top.yaml", "deploy/out.yaml"),
            ("l2.yaml", "deploy/l1.yaml"),
            ("l1.yaml", "deploy/l2.yaml"),
            ("sub", "deploy/dir-link"),
        ] {
            std::os::unix::fs::symlink(target, origin.join(link)).unwrap();
        }
        git_in(&origin, &["add", "-A"], None);
        git_in(&origin, &["commit", "-q", "-m", "one"], None);
        let source = local(&origin, 1 << 20);
        let cache = dir.path().join("cache");
        let dest = dir.path().join("checkout");
        let selection = |path: &str| Selection {
            path: path.into(),
            max_files: 100,
        };

        source
            .fetch_once(&cache, &dest, &selection("deploy/"), &Route::Direct)
            .unwrap();
        assert_eq!(
            checked_out(&dest),
            [
                "deploy/a.yaml",
                "deploy/data.txt",
                "deploy/dir-link",
                "deploy/kustomization.yaml",
                "deploy/l1.yaml",
                "deploy/l2.yaml",
                "deploy/link.yaml",
                "deploy/out.yaml",
                "deploy/sub/b.yml",
            ]
        );
        assert!(
            std::fs::symlink_metadata(dest.join("deploy/out.yaml"))
                .unwrap()
                .file_type()
                .is_symlink()
        );

        // The whole repository, minus what is never read.
        source
            .fetch_once(&cache, &dest, &Selection::everything(), &Route::Direct)
            .unwrap();
        let all = checked_out(&dest);
        assert!(all.contains(&"top.yaml".to_owned()), "{all:?}");
        assert!(
            !all.iter()
                .any(|f| f.ends_with(".md") || f.ends_with(".rs") || f.contains(".github")),
            "{all:?}"
        );

        // A path with nothing to read is an empty directory; a missing one
        // is missing (the reader says so).
        source
            .fetch_once(&cache, &dest, &selection("src"), &Route::Direct)
            .unwrap();
        assert!(dest.join("src").is_dir());
        assert!(checked_out(&dest).is_empty());
        source
            .fetch_once(&cache, &dest, &selection("nope"), &Route::Direct)
            .unwrap();
        assert!(!dest.join("nope").exists());
        source
            .fetch_once(&cache, &dest, &selection("../.."), &Route::Direct)
            .unwrap();
        assert!(checked_out(&dest).is_empty());

        // The file limit counts what would be checked out.
        let err = source
            .fetch_once(
                &cache,
                &dest,
                &Selection {
                    path: "deploy".into(),
                    max_files: 8,
                },
                &Route::Direct,
            )
            .unwrap_err();
        assert!(
            matches!(err, GitError::TooManyFiles { max: 8, .. }),
            "{err}"
        );
    }

    /// A tree of `count` entries `f<i>.yaml`, all the same blob (or tree),
    /// made with `git mktree`: cheap to build and to transfer, however many
    /// files it stands for.
    fn mktree(origin: &Path, mode_kind_id: (&str, &str, &str), count: usize) -> String {
        let (mode, kind, id) = mode_kind_id;
        let suffix = if kind == "blob" { ".yaml" } else { "" };
        let mut input = String::with_capacity(count * 70);
        for i in 0..count {
            input.push_str(&format!("{mode} {kind} {id}\tf{i}{suffix}\n"));
        }
        git_in(origin, &["mktree"], Some(input.as_bytes()))
    }

    /// A million files (the default `maxFiles` is 2,000) are refused from
    /// the tree, before anything is checked out; the walk stops at the
    /// limit. Nested (1,000 directories of 1,000 files: the same two tree
    /// objects) always; flat (one tree object of a million entries, which
    /// libgit2 must parse whole) with `FLUXGATE_LONG_TESTS=1`, 100,000
    /// entries otherwise.
    #[test]
    fn refuses_a_million_files_before_checking_them_out() {
        let long = std::env::var("FLUXGATE_LONG_TESTS").is_ok_and(|v| v == "1");
        let flat_count = if long { 1_000_000 } else { 100_000 };
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin");
        std::fs::create_dir_all(&origin).unwrap();
        git_in(&origin, &["init", "-q", "-b", "main"], None);
        let started = Instant::now();
        let blob = git_in(
            &origin,
            &["hash-object", "-w", "--stdin"],
            Some(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"),
        );
        let leaf = mktree(&origin, ("100644", "blob", &blob), 1000);
        let nested = mktree(&origin, ("040000", "tree", &leaf), 1000);
        let flat = mktree(&origin, ("100644", "blob", &blob), flat_count);
        let root = git_in(
            &origin,
            &["mktree"],
            Some(format!("040000 tree {nested}\tnested\n040000 tree {flat}\tflat\n").as_bytes()),
        );
        let commit = git_in(&origin, &["commit-tree", &root, "-m", "many"], None);
        git_in(&origin, &["update-ref", "refs/heads/main", &commit], None);
        eprintln!("built the repository in {:?}", started.elapsed());

        let source = local(&origin, DEFAULT_BYTES_FOR_TESTS);
        for (path, files) in [("nested", 1_000_000), ("flat", flat_count)] {
            let dest = dir.path().join(format!("checkout-{path}"));
            let started = Instant::now();
            let err = source
                .fetch_once(
                    &dir.path().join(format!("cache-{path}")),
                    &dest,
                    &Selection {
                        path: path.into(),
                        max_files: 2000,
                    },
                    &Route::Direct,
                )
                .unwrap_err();
            eprintln!(
                "{files} files under {path}/ refused in {:?}: {err}",
                started.elapsed()
            );
            assert!(
                matches!(&err, GitError::TooManyFiles { max: 2000, path: p, .. } if p == path),
                "{err}"
            );
            assert!(
                err.to_string().contains("more than 2000 manifest files"),
                "{err}"
            );
            assert!(!dest.exists(), "nothing was checked out");
        }
    }

    const DEFAULT_BYTES_FOR_TESTS: u64 = 100 * 1024 * 1024;

    #[test]
    fn refuses_a_huge_file_before_checking_it_out() {
        let dir = tempfile::tempdir().unwrap();
        let origin = dir.path().join("origin");
        std::fs::create_dir_all(origin.join("deploy")).unwrap();
        git_in(&origin, &["init", "-q", "-b", "main"], None);
        std::fs::write(origin.join("deploy/a.yaml"), "a: 1\n").unwrap();
        // 8 MiB of zeros: a tiny transfer, a large file.
        std::fs::write(origin.join("deploy/big.yaml"), vec![0u8; 8 << 20]).unwrap();
        std::fs::write(origin.join("other.bin"), vec![1u8; 8 << 20]).unwrap();
        git_in(&origin, &["add", "-A"], None);
        git_in(&origin, &["commit", "-q", "-m", "big"], None);
        let source = local(&origin, 4 << 20);
        let dest = dir.path().join("checkout");
        let err = source
            .fetch_once(
                &dir.path().join("cache"),
                &dest,
                &Selection {
                    path: "deploy".into(),
                    max_files: 2000,
                },
                &Route::Direct,
            )
            .unwrap_err();
        assert!(
            matches!(&err, GitError::TooLarge { max, detail, .. }
                if *max == 4 << 20 && detail.contains("deploy/big.yaml")),
            "{err}"
        );
        assert!(!dest.exists(), "nothing was checked out");
        // Files outside the path are not checked out, so they do not count.
        std::fs::remove_file(origin.join("deploy/big.yaml")).unwrap();
        git_in(&origin, &["add", "-A"], None);
        git_in(&origin, &["commit", "-q", "-m", "small"], None);
        source
            .fetch_once(
                &dir.path().join("cache"),
                &dest,
                &Selection {
                    path: "deploy".into(),
                    max_files: 2000,
                },
                &Route::Direct,
            )
            .unwrap();
        assert_eq!(checked_out(&dest), ["deploy/a.yaml"]);
    }

    #[test]
    fn sorts_server_errors() {
        let err = |class, message: &str| {
            classify_wire(
                "https://git.example/x.git",
                "fetch",
                &git2::Error::new(git2::ErrorCode::GenericError, class, message),
            )
        };
        let gone = err(git2::ErrorClass::Http, "unexpected http status code: 404");
        assert!(
            matches!(gone, GitError::RepositoryNotFound { status: 404, .. }),
            "{gone}"
        );
        assert!(!gone.is_transient());
        let html = err(git2::ErrorClass::Http, "invalid content-type: 'text/html'");
        assert!(matches!(html, GitError::Protocol { .. }), "{html}");
        assert!(html.is_transient());
        let down = err(git2::ErrorClass::Http, "unexpected http status code: 503");
        assert!(matches!(down, GitError::Unreachable { .. }), "{down}");
        let refused = err(
            git2::ErrorClass::Net,
            "failed to connect to x: Connection refused",
        );
        assert!(matches!(refused, GitError::Unreachable { .. }), "{refused}");
    }

    /// https goes through the relay as a `CONNECT` proxy: a server that
    /// accepts the TCP connection and never answers the TLS handshake is
    /// given up on at the stall timeout, not waited on forever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_silent_https_server_is_given_up_on() {
        let silent = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .unwrap();
        let addr = silent.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let source = Source {
            url: format!("https://{addr}/team/app.git"),
            reference: RefName::Branch("main".into()),
            credentials: None,
            credentials_secret: None,
            timeout: Duration::from_secs(2),
            max_bytes: 1 << 20,
        };
        let started = Instant::now();
        let err = source.resolve_async().await.unwrap_err();
        let took = started.elapsed();
        assert!(
            matches!(err, GitError::Stalled { after, .. } if after == Duration::from_secs(1)),
            "{err}"
        );
        assert!(took < Duration::from_secs(4), "{took:?}");
        let dir = tempfile::tempdir().unwrap();
        let err = source
            .fetch_async(dir.path().join("cache"), dir.path().join("checkout"))
            .await
            .unwrap_err();
        assert!(matches!(err, GitError::Stalled { .. }), "{err}");
    }
}
