//! A loopback HTTP proxy that bounds how long libgit2 may wait on a server.
//!
//! libgit2 reads from its sockets without a timeout unless a process-wide
//! option is set, and the `git2` setters for it are `unsafe` (which this
//! workspace forbids). A server that accepts a connection and then sends
//! nothing would block the fetching thread forever, and abandoning that
//! thread leaks it and leaves the cache directory in use. So every network
//! operation goes through a [`Relay`] of its own, which copies bytes between
//! libgit2 and the server while watching the clock. For https, libgit2 is
//! pointed at it as a proxy and opens a `CONNECT` tunnel (TLS stays end to
//! end). For plain http, libgit2 (1.9) would connect to the server directly
//! even with a proxy set, so it is given the relay's address as the
//! repository URL instead, and the relay forwards each connection to the
//! server with the real `Host` and `Connection: close` (one request per
//! connection, so only the first request head needs rewriting):
//!
//! - no byte in either direction for the stall timeout: the connection is
//!   closed ([`Outcome::Stalled`]);
//! - the operation's deadline passed: every connection is closed
//!   ([`Outcome::DeadlinePassed`]).
//!
//! A closed connection makes libgit2's blocked read return at once, so the
//! blocking thread always finishes. The relay also remembers why it could
//! not reach the server (DNS, refused connection), which libgit2 would only
//! see as a proxy error.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Longest request head (request line and headers) accepted from libgit2.
const MAX_HEAD: usize = 64 * 1024;
/// Size of each copy buffer.
const BUFFER: usize = 16 * 1024;

/// What went wrong on the way to the server, if anything did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Outcome {
    /// Nothing the relay noticed.
    #[default]
    Clean,
    /// The server could not be connected to (the message says why).
    Unreachable(String),
    /// A connection carried no byte for the stall timeout and was closed.
    Stalled(Duration),
    /// The operation's deadline passed and the connections were closed.
    DeadlinePassed,
}

#[derive(Debug, Default)]
struct State {
    outcome: Mutex<Outcome>,
}

impl State {
    /// Keeps the first problem seen: it is the cause, the rest follow.
    fn record(&self, outcome: Outcome) {
        let mut current = self.outcome.lock().unwrap_or_else(PoisonError::into_inner);
        if *current == Outcome::Clean {
            *current = outcome;
        }
    }
}

/// A running relay; dropping it closes every connection it carries.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Starts a relay on `127.0.0.1` that closes a connection after `stall`
    /// without traffic, and all of them at `deadline`. With `forward_to`
    /// (`host:port`) it forwards every connection there (plain http);
    /// without, it is a proxy that serves `CONNECT`.
    pub async fn start(
        stall: Duration,
        deadline: Instant,
        forward_to: Option<String>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let task = tokio::spawn(serve(listener, state.clone(), stall, deadline, forward_to));
        Ok(Self { addr, state, task })
    }

    /// `http://127.0.0.1:<port>`: the proxy URL, or the base of the
    /// rewritten repository URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the relay noticed so far.
    pub fn outcome(&self) -> Outcome {
        self.state
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The connections live in the task's JoinSet: aborting the task
        // drops them, which closes both ends.
        self.task.abort();
    }
}

async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    stall: Duration,
    deadline: Instant,
    forward_to: Option<String>,
) {
    let mut connections = JoinSet::new();
    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    connections.spawn(carry(stream, state.clone(), stall, forward_to.clone()));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
            while connections.try_join_next().is_some() {}
        }
    };
    if tokio::time::timeout_at(deadline, accept).await.is_err() {
        state.record(Outcome::DeadlinePassed);
    }
    // Returning drops `connections`, aborting (closing) every one of them.
}

/// One client connection: read the request head, connect, copy.
async fn carry(
    mut client: TcpStream,
    state: Arc<State>,
    stall: Duration,
    forward_to: Option<String>,
) {
    let Ok(Ok(head)) = tokio::time::timeout(stall, read_head(&mut client)).await else {
        return;
    };
    let (request, head) = match forward_to {
        Some(authority) => (
            Some(ProxyRequest {
                authority: authority.clone(),
                tunnel: false,
            }),
            rewrite_head(&head, &authority),
        ),
        None => (ProxyRequest::parse(&head), head),
    };
    let Some(request) = request else {
        let _ = client
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
        return;
    };
    let upstream = match tokio::time::timeout(stall, TcpStream::connect(&request.authority)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            state.record(Outcome::Unreachable(format!(
                "cannot connect to {}: {err}",
                request.authority
            )));
            let _ = client
                .write_all(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            return;
        }
        Err(_) => {
            state.record(Outcome::Unreachable(format!(
                "connecting to {} took longer than {stall:?}",
                request.authority
            )));
            return;
        }
    };
    let mut upstream = upstream;
    let _ = upstream.set_nodelay(true);
    let _ = client.set_nodelay(true);
    let forwarded = if request.tunnel {
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await
    } else {
        upstream.write_all(&head).await
    };
    if forwarded.is_err() {
        return;
    }
    copy_both(client, upstream, stall, &state).await;
}

/// Reads up to the end of the request head; returns everything read (the
/// head and whatever followed it in the same reads).
async fn read_head(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// The request head with `Host` set to `authority` and `Connection:
/// close` (so libgit2 opens a new connection, and a new head, for the next
/// request); bytes after the head are kept as they are.
fn rewrite_head(received: &[u8], authority: &str) -> Vec<u8> {
    let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
        return received.to_vec();
    };
    let head = String::from_utf8_lossy(&received[..end]);
    let mut lines = head.split("\r\n");
    let mut out = String::new();
    out.push_str(lines.next().unwrap_or_default());
    out.push_str("\r\n");
    for line in lines {
        let name = line.split(':').next().unwrap_or_default().trim();
        if ["host", "connection", "keep-alive", "proxy-connection"]
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h))
        {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str(&format!("Host: {authority}\r\nConnection: close\r\n\r\n"));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&received[end + 4..]);
    bytes
}

/// Where a proxy request goes.
#[derive(Debug, PartialEq, Eq)]
struct ProxyRequest {
    /// `host:port`.
    authority: String,
    /// `CONNECT` (a TLS tunnel) rather than a plain HTTP request.
    tunnel: bool,
}

impl ProxyRequest {
    fn parse(head: &[u8]) -> Option<Self> {
        let end = head.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&head[..end]).ok()?;
        let mut parts = line.split(' ');
        let (method, target) = (parts.next()?, parts.next()?);
        if method == "CONNECT" {
            return Some(Self {
                authority: target.to_owned(),
                tunnel: true,
            });
        }
        let rest = target.strip_prefix("http://")?;
        let authority = rest.split(['/', '?']).next().filter(|a| !a.is_empty())?;
        // `host` alone means port 80; an IPv6 literal keeps its brackets.
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
            && !authority.ends_with(']');
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Some(Self {
            authority,
            tunnel: false,
        })
    }
}

/// Copies both ways until either side closes, or nothing moved for `stall`
/// (recorded before the sockets are closed, so libgit2's error is never seen
/// without its cause).
async fn copy_both(client: TcpStream, upstream: TcpStream, stall: Duration, state: &State) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    let mut from_client = vec![0u8; BUFFER];
    let mut from_upstream = vec![0u8; BUFFER];
    loop {
        let step = tokio::time::timeout(stall, async {
            tokio::select! {
                n = client_read.read(&mut from_client) => (true, n),
                n = upstream_read.read(&mut from_upstream) => (false, n),
            }
        })
        .await;
        let Ok((up, read)) = step else {
            state.record(Outcome::Stalled(stall));
            return;
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let written = if up {
            forward(&mut upstream_write, &from_client[..n]).await
        } else {
            forward(&mut client_write, &from_upstream[..n]).await
        };
        if written.is_err() {
            return;
        }
    }
}

async fn forward(to: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    to.write_all(bytes).await?;
    to.flush().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn rewrites_the_head_of_a_forwarded_request() {
        let head = b"POST /a.git/git-upload-pack HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\nbody";
        let out = rewrite_head(head, "git.example:8080");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a.git/git-upload-pack HTTP/1.1\r\nContent-Length: 4\r\nHost: git.example:8080\r\nConnection: close\r\n\r\nbody"
        );
    }

    #[test]
    fn parses_proxy_requests() {
        let connect = ProxyRequest::parse(b"CONNECT git.example:443 HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(
            connect,
            ProxyRequest {
                authority: "git.example:443".into(),
                tunnel: true
            }
        );
        let plain =
            ProxyRequest::parse(b"GET http://127.0.0.1:8080/a.git/info/refs?x HTTP/1.1\r\n\r\n")
                .unwrap();
        assert_eq!(plain.authority, "127.0.0.1:8080");
        assert!(!plain.tunnel);
        let default_port = ProxyRequest::parse(b"GET http://git.example/a.git HTTP/1.1\r\n\r\n");
        assert_eq!(default_port.unwrap().authority, "git.example:80");
        let v6 = ProxyRequest::parse(b"GET http://[::1]/a HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(v6.authority, "[::1]:80");
        let v6_port = ProxyRequest::parse(b"GET http://[::1]:81/a HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(v6_port.authority, "[::1]:81");
        assert!(ProxyRequest::parse(b"GET /relative HTTP/1.1\r\n\r\n").is_none());
        assert!(ProxyRequest::parse(b"\xff\xfe\r\n\r\n").is_none());
    }

    /// A server that accepts and then says nothing: the relay closes the
    /// connection after the stall timeout and says so.
    #[tokio::test]
    async fn closes_a_stalled_connection_and_reports_it() {
        let silent = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (s, _) = silent.accept().await.unwrap();
                held.push(s);
            }
        });
        let stall = Duration::from_millis(300);
        let relay = Relay::start(
            stall,
            Instant::now() + Duration::from_secs(30),
            Some(silent_addr.to_string()),
        )
        .await
        .unwrap();
        let mut client = TcpStream::connect(relay.addr).await.unwrap();
        client
            .write_all(b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .expect("the relay must close the connection")
            .unwrap_or(0);
        assert_eq!(n, 0, "closed without an answer");
        assert!(started.elapsed() >= stall);
        assert_eq!(relay.outcome(), Outcome::Stalled(stall));
    }

    #[tokio::test]
    async fn reports_an_unreachable_server() {
        // A port nothing listens on: bind, note it, close.
        let port = {
            let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
            l.local_addr().unwrap().port()
        };
        let relay = Relay::start(
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(5),
            None,
        )
        .await
        .unwrap();
        let mut client = TcpStream::connect(relay.addr).await.unwrap();
        client
            .write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 502"), "{answer:?}");
        assert!(
            matches!(relay.outcome(), Outcome::Unreachable(m) if m.contains("refused")),
            "{:?}",
            relay.outcome()
        );
    }

    #[tokio::test]
    async fn closes_everything_at_the_deadline() {
        let slow = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let slow_addr = slow.local_addr().unwrap();
        // Drips a byte every 100 ms: never stalled, never done.
        let _drip = tokio::spawn(async move {
            let (mut s, _) = slow.accept().await.unwrap();
            loop {
                if s.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        let relay = Relay::start(
            Duration::from_secs(5),
            Instant::now() + Duration::from_millis(600),
            None,
        )
        .await
        .unwrap();
        let mut client = TcpStream::connect(relay.addr).await.unwrap();
        client
            .write_all(format!("CONNECT {slow_addr} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut sink = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut sink))
            .await
            .expect("the deadline closes the connection")
            .ok();
        assert_eq!(relay.outcome(), Outcome::DeadlinePassed);
    }
}
