//! A real Git server on loopback for end-to-end tests.
//!
//! Repositories are made with the `git` CLI in a temporary directory: a
//! bare repository that is served, and a working clone the test edits and
//! pushes from (over the filesystem). The bare repositories are served over
//! Git's smart HTTP protocol by `git http-backend`, run as a CGI program
//! for each request behind a small hyper server, optionally behind HTTP
//! basic auth. The server can be stopped and started again on the same
//! port, to test what a client does while Git is down, and it can be made
//! to misbehave at runtime ([`Fault`]: stall, answer with garbage, cut a
//! pack short, pretend the repository is gone).
//!
//! Blocking: the repository helpers run `git` synchronously (milliseconds);
//! the server runs on the caller's tokio runtime.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;

/// Why the Git server or a repository helper failed.
#[derive(Debug, thiserror::Error)]
pub enum GitServerError {
    #[error("failed to {action}")]
    Io {
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`git {args}` failed ({status}): {stderr}")]
    Git {
        args: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

fn io(action: impl Into<String>) -> impl FnOnce(std::io::Error) -> GitServerError {
    let action = action.into();
    move |source| GitServerError::Io { action, source }
}

/// A way for the server to misbehave, switched at runtime with
/// [`GitServer::set_fault`]; it applies to every repository and request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Serve normally.
    #[default]
    None,
    /// Accept the connection and read the request, then send nothing until
    /// the fault is changed (then answer as the new fault says).
    Stall,
    /// Answer `200 OK` with an HTML page (a login portal, a proxy's error
    /// page): the wrong content type.
    Html,
    /// Answer with the content type Git expects but bytes that are not the
    /// Git protocol.
    Garbage,
    /// Serve the ref advertisement, but cut every pack in half.
    Truncate,
    /// Answer `404 Not Found` to everything.
    NotFound,
}

/// Requests served, by kind, so tests can tell a cheap poll (ref
/// advertisement only) from a fetch.
#[derive(Debug, Default)]
pub struct Counters {
    /// `GET .../info/refs?service=git-upload-pack` (ls-remote, or the
    /// first step of a fetch).
    pub ref_advertisements: AtomicU64,
    /// `POST .../git-upload-pack` (a fetch that transfers objects).
    pub upload_packs: AtomicU64,
    /// Requests refused with 401.
    pub unauthorized: AtomicU64,
    /// Requests answered (or held) according to a [`Fault`].
    pub faulted: AtomicU64,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    auth: Option<(String, String)>,
    counters: Counters,
    fault: tokio::sync::watch::Sender<Fault>,
}

/// A smart-HTTP Git server on `127.0.0.1`.
///
/// Dropping it stops the server; the repositories are removed with its
/// temporary directory.
#[derive(Debug)]
pub struct GitServer {
    dir: tempfile::TempDir,
    addr: SocketAddr,
    inner: Arc<Inner>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl GitServer {
    /// Starts a server without authentication.
    pub async fn start() -> Result<Self, GitServerError> {
        Self::start_with(None).await
    }

    /// Starts a server that requires HTTP basic auth with these credentials.
    pub async fn start_with_auth(username: &str, password: &str) -> Result<Self, GitServerError> {
        Self::start_with(Some((username.to_owned(), password.to_owned()))).await
    }

    async fn start_with(auth: Option<(String, String)>) -> Result<Self, GitServerError> {
        let dir = tempfile::Builder::new()
            .prefix("fluxgate-gitserver-")
            .tempdir()
            .map_err(io("create the git server directory"))?;
        for sub in ["repos", "work", "home"] {
            std::fs::create_dir_all(dir.path().join(sub)).map_err(io(format!("create {sub}")))?;
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(io("bind the git server"))?;
        let addr = listener
            .local_addr()
            .map_err(io("read the git server address"))?;
        let server = Self {
            inner: Arc::new(Inner {
                root: dir.path().to_owned(),
                auth,
                counters: Counters::default(),
                fault: tokio::sync::watch::Sender::new(Fault::None),
            }),
            dir,
            addr,
            task: Mutex::new(None),
        };
        server.serve(listener);
        Ok(server)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set: aborting the accept task drops
            // it, which aborts them too, so `stop` cuts everything off.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                let inner = inner.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(handle(&inner, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        *self.lock_task() = Some(task);
    }

    fn lock_task(&self) -> std::sync::MutexGuard<'_, Option<tokio::task::JoinHandle<()>>> {
        self.task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops serving: the port refuses connections until [`GitServer::start_again`].
    pub async fn stop(&self) {
        let task = self.lock_task().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Serves again on the same port after [`GitServer::stop`].
    pub async fn start_again(&self) -> Result<(), GitServerError> {
        if self.lock_task().is_some() {
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .map_err(io(format!("bind {} again", self.addr)))?;
        self.serve(listener);
        Ok(())
    }

    /// The URL of repository `name`: `http://127.0.0.1:<port>/<name>.git`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.addr)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Request counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Makes the server misbehave (or behave again, with [`Fault::None`])
    /// from the next request on; requests held by [`Fault::Stall`] go on
    /// as the new fault says.
    pub fn set_fault(&self, fault: Fault) {
        self.inner.fault.send_replace(fault);
    }

    /// The current fault.
    pub fn fault(&self) -> Fault {
        *self.inner.fault.borrow()
    }

    /// Creates an empty repository `name` with branch `main` and returns
    /// its working clone.
    pub fn create_repo(&self, name: &str) -> Result<Repo, GitServerError> {
        let bare = self.dir.path().join("repos").join(format!("{name}.git"));
        let work = self.dir.path().join("work").join(name);
        let home = self.dir.path().join("home");
        let repo = Repo {
            bare: bare.clone(),
            work: work.clone(),
            home,
        };
        std::fs::create_dir_all(&bare).map_err(io("create a bare repository"))?;
        repo.git_in(&bare, &["init", "-q", "--bare", "-b", "main"])?;
        // Lets clients fetch a pinned commit by id, as hosted Git servers do.
        repo.git_in(
            &bare,
            &["config", "uploadpack.allowReachableSHA1InWant", "true"],
        )?;
        std::fs::create_dir_all(&work).map_err(io("create a working clone"))?;
        repo.git_in(&work, &["init", "-q", "-b", "main"])?;
        let bare_text = bare.display().to_string();
        repo.git_in(&work, &["remote", "add", "origin", &bare_text])?;
        Ok(repo)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(task) = self.lock_task().take() {
            task.abort();
        }
    }
}

fn text_response(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_owned())));
    *response.status_mut() = status;
    response
}

fn authorized(inner: &Inner, req: &Request<Incoming>) -> bool {
    let Some((user, password)) = &inner.auth else {
        return true;
    };
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    req.headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .is_some_and(|given| given.trim() == expected)
}

async fn handle(inner: &Inner, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let mut fault = inner.fault.subscribe();
    if *fault.borrow_and_update() == Fault::Stall {
        inner.counters.faulted.fetch_add(1, Ordering::Relaxed);
        // Held until the fault changes (or the client gives up and the
        // connection is dropped with this future).
        let _ = fault.wait_for(|f| *f != Fault::Stall).await;
    }
    let current = *fault.borrow();
    match current {
        Fault::Html => {
            inner.counters.faulted.fetch_add(1, Ordering::Relaxed);
            let mut response = text_response(
                StatusCode::OK,
                "<!doctype html><html><body>Please sign in</body></html>\n",
            );
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/html"),
            );
            return response;
        }
        Fault::Garbage => {
            inner.counters.faulted.fetch_add(1, Ordering::Relaxed);
            let path = req.uri().path();
            let content_type = if path.ends_with("/git-upload-pack") {
                "application/x-git-upload-pack-result"
            } else {
                "application/x-git-upload-pack-advertisement"
            };
            let mut response = text_response(StatusCode::OK, "zzzz\u{1}\u{2}not git at all\n");
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(content_type),
            );
            return response;
        }
        Fault::NotFound => {
            inner.counters.faulted.fetch_add(1, Ordering::Relaxed);
            return text_response(StatusCode::NOT_FOUND, "Repository not found\n");
        }
        Fault::None | Fault::Stall | Fault::Truncate => {}
    }
    if !authorized(inner, &req) {
        inner.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        let mut response = text_response(StatusCode::UNAUTHORIZED, "authentication required\n");
        response.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Basic realm=\"git\""),
        );
        return response;
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    if path.ends_with("/info/refs") && query.contains("git-upload-pack") {
        inner
            .counters
            .ref_advertisements
            .fetch_add(1, Ordering::Relaxed);
    } else if path.ends_with("/git-upload-pack") {
        inner.counters.upload_packs.fetch_add(1, Ordering::Relaxed);
    }
    match cgi(inner, req, &path, &query).await {
        Ok(response) if current == Fault::Truncate && path.ends_with("/git-upload-pack") => {
            inner.counters.faulted.fetch_add(1, Ordering::Relaxed);
            truncate(response).await
        }
        Ok(response) => response,
        Err(message) => text_response(StatusCode::INTERNAL_SERVER_ERROR, &message),
    }
}

/// The same response with the first half of its body only.
async fn truncate(response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let (parts, body) = response.into_parts();
    let bytes = body
        .collect()
        .await
        .map(http_body_util::Collected::to_bytes)
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    let mut response = Response::from_parts(parts, Full::new(half));
    response.headers_mut().remove(hyper::header::CONTENT_LENGTH);
    response
}

/// Runs `git http-backend` for one request (RFC 3875 CGI).
async fn cgi(
    inner: &Inner,
    req: Request<Incoming>,
    path: &str,
    query: &str,
) -> Result<Response<Full<Bytes>>, String> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let method = req.method().as_str().to_owned();
    let content_type = header("content-type");
    let content_encoding = header("content-encoding");
    let git_protocol = header("git-protocol");
    let body = req
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("cannot read the request body: {e}"))?
        .to_bytes();

    let mut command = tokio::process::Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", inner.root.join("home"))
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", inner.root.join("repos"))
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some((user, _)) = &inner.auth {
        command.env("REMOTE_USER", user);
    }
    if let Some(v) = content_type {
        command.env("CONTENT_TYPE", v);
    }
    if let Some(v) = content_encoding {
        command.env("HTTP_CONTENT_ENCODING", v);
    }
    if let Some(v) = git_protocol {
        command.env("GIT_PROTOCOL", v);
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run git http-backend: {e}"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| "git http-backend has no stdin".to_owned())?;
    // Written concurrently with reading stdout, so a large request and a
    // large response cannot deadlock on full pipes.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    });
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("git http-backend failed: {e}"))?;
    let _ = writer.await;
    parse_cgi_output(&output.stdout).ok_or_else(|| {
        format!(
            "git http-backend gave no valid response: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn parse_cgi_output(out: &[u8]) -> Option<Response<Full<Bytes>>> {
    let (head_len, sep_len) = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)))?;
    let head = std::str::from_utf8(&out[..head_len]).ok()?;
    let body = Bytes::copy_from_slice(&out[head_len + sep_len..]);
    let mut response = Response::new(Full::new(body));
    for line in head.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse::<u16>().ok()?;
            *response.status_mut() = StatusCode::from_u16(code).ok()?;
        } else {
            response.headers_mut().append(
                hyper::header::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                hyper::header::HeaderValue::from_str(value).ok()?,
            );
        }
    }
    Some(response)
}

/// A served repository's working clone: write files, commit, push.
#[derive(Debug, Clone)]
pub struct Repo {
    bare: PathBuf,
    work: PathBuf,
    home: PathBuf,
}

impl Repo {
    fn git_in(&self, dir: &Path, args: &[&str]) -> Result<String, GitServerError> {
        let output = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "fluxgate test")
            .env("GIT_AUTHOR_EMAIL", "test@fluxgate.dev")
            .env("GIT_COMMITTER_NAME", "fluxgate test")
            .env("GIT_COMMITTER_EMAIL", "test@fluxgate.dev")
            .stdin(Stdio::null())
            .output()
            .map_err(io(format!("run git {}", args.join(" "))))?;
        if !output.status.success() {
            return Err(GitServerError::Git {
                args: args.join(" "),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Runs `git <args>` in the working clone; returns its stdout.
    pub fn git(&self, args: &[&str]) -> Result<String, GitServerError> {
        self.git_in(&self.work, args)
    }

    /// Runs `git <args>` in the working clone with `input` on its stdin
    /// (`git mktree`, `git hash-object --stdin`); returns its stdout.
    pub fn git_with_input(&self, args: &[&str], input: &[u8]) -> Result<String, GitServerError> {
        use std::io::Write as _;
        let mut child = Command::new("git")
            .args(args)
            .current_dir(&self.work)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "fluxgate test")
            .env("GIT_AUTHOR_EMAIL", "test@fluxgate.dev")
            .env("GIT_COMMITTER_NAME", "fluxgate test")
            .env("GIT_COMMITTER_EMAIL", "test@fluxgate.dev")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io(format!("run git {}", args.join(" "))))?;
        let mut stdin = child.stdin.take().ok_or_else(|| GitServerError::Io {
            action: "open git's stdin".into(),
            source: std::io::ErrorKind::BrokenPipe.into(),
        })?;
        // Written from a thread, so a large input and a large output cannot
        // deadlock on full pipes.
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child
            .wait_with_output()
            .map_err(io(format!("run git {}", args.join(" "))))?;
        let _ = writer.join();
        if !output.status.success() {
            return Err(GitServerError::Git {
                args: args.join(" "),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Makes `main` point at a new commit (child of the current head) whose
    /// tree is `tree` (a tree id, e.g. from `git mktree`), and pushes it;
    /// returns the commit's SHA. The working clone's files are left alone.
    pub fn commit_tree(&self, tree: &str, message: &str) -> Result<String, GitServerError> {
        let parent = self.head().ok();
        let mut args = vec!["commit-tree", tree, "-m", message];
        if let Some(parent) = parent.as_deref() {
            args.extend(["-p", parent]);
        }
        let sha = self.git(&args)?;
        self.git(&["update-ref", "refs/heads/main", &sha])?;
        self.git(&["push", "-q", "origin", "main"])?;
        Ok(sha)
    }

    /// Deletes the served repository (the server then answers 404, as for
    /// any unknown repository); [`Repo::restore`] brings it back.
    pub fn delete_from_server(&self) -> Result<(), GitServerError> {
        std::fs::rename(&self.bare, self.deleted_path()).map_err(io("delete the repository"))
    }

    /// Serves the repository deleted by [`Repo::delete_from_server`] again.
    pub fn restore(&self) -> Result<(), GitServerError> {
        std::fs::rename(self.deleted_path(), &self.bare).map_err(io("restore the repository"))
    }

    fn deleted_path(&self) -> PathBuf {
        self.bare.with_extension("deleted")
    }

    /// The working clone.
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// Writes files (creating directories), without committing.
    pub fn write(&self, files: &[(&str, &str)]) -> Result<(), GitServerError> {
        for (path, text) in files {
            let full = self.work.join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(io(format!("create {path}'s directory")))?;
            }
            std::fs::write(&full, text).map_err(io(format!("write {path}")))?;
        }
        Ok(())
    }

    /// Creates a symlink `path` pointing to `target`, without committing.
    pub fn symlink(&self, target: &str, path: &str) -> Result<(), GitServerError> {
        let full = self.work.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("create {path}'s directory")))?;
        }
        std::os::unix::fs::symlink(target, &full).map_err(io(format!("symlink {path}")))
    }

    /// Commits everything in the working clone and pushes `main`; returns
    /// the new commit's SHA.
    pub fn commit(&self, message: &str) -> Result<String, GitServerError> {
        self.git(&["add", "-A"])?;
        self.git(&["commit", "-q", "--allow-empty", "-m", message])?;
        self.git(&["push", "-q", "origin", "main"])?;
        self.head()
    }

    /// Writes files, commits and pushes; returns the commit's SHA.
    pub fn commit_files(
        &self,
        files: &[(&str, &str)],
        message: &str,
    ) -> Result<String, GitServerError> {
        self.write(files)?;
        self.commit(message)
    }

    /// Deletes files, commits and pushes; returns the commit's SHA.
    pub fn delete_files(&self, paths: &[&str], message: &str) -> Result<String, GitServerError> {
        for path in paths {
            self.git(&["rm", "-q", "-r", path])?;
        }
        self.commit(message)
    }

    /// Rewrites history: amends the last commit with these files and
    /// force-pushes, so the old head is no longer on the branch.
    pub fn amend_and_force_push(
        &self,
        files: &[(&str, &str)],
        message: &str,
    ) -> Result<String, GitServerError> {
        self.write(files)?;
        self.git(&["add", "-A"])?;
        self.git(&["commit", "-q", "--amend", "-m", message])?;
        self.git(&["push", "-q", "--force", "origin", "main"])?;
        self.head()
    }

    /// Resets `main` to `commit` and force-pushes.
    pub fn force_push_to(&self, commit: &str) -> Result<(), GitServerError> {
        self.git(&["reset", "-q", "--hard", commit])?;
        self.git(&["push", "-q", "--force", "origin", "main"])?;
        Ok(())
    }

    /// Creates an annotated tag on the head and pushes it.
    pub fn tag(&self, name: &str) -> Result<(), GitServerError> {
        self.git(&["tag", "-a", name, "-m", name])?;
        self.git(&["push", "-q", "origin", name])?;
        Ok(())
    }

    /// The SHA of the working clone's head.
    pub fn head(&self) -> Result<String, GitServerError> {
        self.git(&["rev-parse", "HEAD"])
    }

    /// The bare repository served.
    pub fn bare_dir(&self) -> &Path {
        &self.bare
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn parses_cgi_headers_and_body() {
        let out = b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nnope";
        let r = parse_cgi_output(out).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()["content-type"], "text/plain");
        let ok = parse_cgi_output(b"Content-Type: x\n\nbody").unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
    }

    /// The `git` CLI clones through the server, with and without auth, and
    /// the port serves again after a stop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn git_clones_over_smart_http() {
        let server = GitServer::start_with_auth("team", "s3cret").await.unwrap();
        let repo = server.create_repo("app").unwrap();
        let sha = repo.commit_files(&[("a.yaml", "a: 1\n")], "one").unwrap();
        let dest = tempfile::tempdir().unwrap();
        let url = server.url("app");
        let authed = url.replace("http://", "http://team:s3cret@");
        let clone = |url: String, into: PathBuf| async move {
            tokio::task::spawn_blocking(move || {
                Command::new("git")
                    .args(["clone", "-q", &url])
                    .arg(&into)
                    .env("GIT_TERMINAL_PROMPT", "0")
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        };
        let out = clone(authed.clone(), dest.path().join("ok")).await;
        assert!(out.status.success(), "{out:?}");
        let head = std::fs::read_to_string(dest.path().join("ok/a.yaml")).unwrap();
        assert_eq!(head, "a: 1\n");
        let _ = sha;
        let denied = clone(url, dest.path().join("denied")).await;
        assert!(!denied.status.success());
        assert!(server.counters().unauthorized.load(Ordering::Relaxed) > 0);

        server.stop().await;
        let down = clone(authed.clone(), dest.path().join("down")).await;
        assert!(!down.status.success());
        server.start_again().await.unwrap();
        let again = clone(authed, dest.path().join("again")).await;
        assert!(again.status.success(), "{again:?}");
    }
}
