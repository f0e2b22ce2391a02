//! Admission webhook benchmark, direct (not a test: it prints figures and
//! asserts nothing).
//!
//! ```sh
//! cargo run --release -p fluxgate-admission-webhook --example bench
//! cargo run --release -p fluxgate-admission-webhook --example bench -- --rates 500,1000,2000,5000 --seconds 5 --max-in-flight 64 --connections 1,2,4,8,16,32,64 --saturation-seconds 3
//! ```
//!
//! **Servers.** The real HTTPS webhook (`Webhook::serve_state` with a
//! snapshot of 40 PlatformDefaults, 500 namespaces and 2,000 FluxConfigs)
//! and a baseline: a minimal axum + rustls server with the same TLS
//! library, provider and connection builder that reads the body and
//! returns a fixed allow response. Each runs in its **own child process**
//! (this example started again with a hidden `--serve` flag), with a
//! runtime of `--server-threads` workers (2, like a small pod). The
//! machine has two cores shared by client and server, so the server's CPU
//! time and memory are read from `/proc/<child>/stat` and `status`: they
//! cannot mix with the client's, and the RSS is the server's alone (the
//! webhook's includes its snapshot). The client is one tokio worker thread
//! in this process (hyper-util + rustls, keep-alive HTTP/1.1).
//!
//! **Requests.** 200 distinct realistic FluxConfig AdmissionReviews (CREATE
//! and UPDATE, allowed and denied, with managedFields and a last-applied
//! annotation, 2.2–3.3 KiB each), in turn.
//!
//! **Fixed rates** (open loop): requests start on a fixed schedule whatever
//! the responses do (each on its own task; the pool opens more connections
//! when all are busy, up to `--max-in-flight`, 64, requests at once), so a
//! slow server cannot slow the load down; latency counts from the moment a
//! request starts (waiting for a free slot included), which keeps the 1 ms
//! granularity of tokio's timer out of the figures. Without the cap, a
//! stall of the shared machine made the client open one connection per
//! waiting request, thousands, and the TLS handshakes then kept the server
//! behind: a collapse of the harness, not of the server, and an API server
//! would multiplex its calls over HTTP/2 anyway. One second of warm-up at
//! the same rate precedes each measurement.
//!
//! **Saturation** (closed loop): C tasks each send the next request as soon
//! as the previous answer has arrived, over C keep-alive connections, for
//! C = 1, 2, 4, … 64 (`--connections`), both servers at each step before
//! the next. The step with the highest throughput is a server's saturation
//! point. A sweep rather than one fixed high concurrency because the knee
//! differs between the two servers and with the machine's load (past it,
//! more connections only add queueing: p99 grows, throughput does not); a
//! fixed list rather than "until it stops growing" because on a shared
//! machine one slow step would end the sweep early. Each step has half a
//! second of warm-up on fresh connections.
//!
//! Every line reports the server's CPU (cores busy and CPU µs per request),
//! the sockets it holds and its VmRSS at the end of the measurement (a
//! stall makes the open-loop client open more connections, and each costs
//! the server TLS buffers); the ratio fluxgate / baseline comes from the
//! same run. Requests per server CPU-second (over the whole sweep) is the
//! figure least sensitive to the client and to other load on the machine.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use clap::Parser as _;
use fluxgate_admission_webhook::{AppState, Config, Labels, Snapshot, Webhook};
use fluxgate_crds::{FluxConfig, FluxConfigSpec, GitReference, PlatformDefaults};
use fluxgate_platform_defaults::PlatformSettings;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};

const NAMESPACES: usize = 500;
const FLUX_CONFIGS_PER_NAMESPACE: usize = 4;
const TENANT_CLASSES: usize = 39;
const WARM_UP: Duration = Duration::from_secs(1);
const SATURATION_WARM_UP: Duration = Duration::from_millis(500);

/// Flags.
#[derive(Debug, clap::Parser)]
#[command(name = "bench", about = "fluxgate admission webhook, direct")]
struct Args {
    /// Fixed request rates (open loop), per second.
    #[arg(long, value_delimiter = ',', default_value = "500,1000,2000,5000")]
    rates: Vec<u32>,
    /// Seconds measured per rate.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Most requests in flight at a fixed rate (hence connections); the
    /// rest wait in the client, and the wait counts in their latency.
    #[arg(long, default_value_t = 64)]
    max_in_flight: usize,
    /// Concurrent connections of the saturation sweep (empty: no sweep).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    connections: Vec<usize>,
    /// Seconds measured per saturation step.
    #[arg(long, default_value_t = 3)]
    saturation_seconds: u64,
    /// Worker threads of each server's runtime.
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Internal: serve `webhook` or `baseline` in this process (the
    /// benchmark starts itself this way).
    #[arg(long, hide = true)]
    serve: Option<String>,
    /// Internal: the serving certificate of `--serve`.
    #[arg(long, hide = true)]
    cert: Option<PathBuf>,
    /// Internal: the serving key of `--serve`.
    #[arg(long, hide = true)]
    key: Option<PathBuf>,
}

/// The webhook binary's allocator (see its `main.rs`); the baseline server
/// runs in this same binary, so both use it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if let Some(kind) = &args.serve {
        serve(kind, &args);
        return;
    }
    let command: Vec<String> = std::env::args().skip(1).collect();

    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = cert.cert.pem();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();

    let snapshot = snapshot();
    let reviews = Arc::new(reviews());
    let in_process = in_process_costs(&snapshot, &reviews);
    drop(snapshot);
    let ticks = clock_ticks();
    let servers = [
        Server::start("baseline", &args, &cert_file, &key_file, ticks),
        Server::start("webhook", &args, &cert_file, &key_file, ticks),
    ];

    // The client: one worker thread, the same for both servers.
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async {
        let sizes: Vec<usize> = reviews.iter().map(|r| r.len()).collect();
        println!("# fluxgate admission webhook benchmark, direct");
        println!(
            "command:   cargo run --release -p fluxgate-admission-webhook --example bench{}",
            if command.is_empty() {
                String::new()
            } else {
                format!(" -- {}", command.join(" "))
            }
        );
        println!("machine:   {}", machine());
        println!("load:      {} (1/5/15 min, at start)", load_average());
        println!("toolchain: {}", rustc_version());
        println!(
            "requests:  {} bodies ({}..{} bytes), keep-alive HTTP/1.1 over TLS (rustls, ring); client: 1 tokio worker in this process",
            reviews.len(),
            sizes.iter().min().unwrap(),
            sizes.iter().max().unwrap(),
        );
        println!(
            "servers:   each a child process with {} runtime worker(s); webhook snapshot: {} PlatformDefaults, {NAMESPACES} namespaces, {} FluxConfigs",
            args.server_threads,
            TENANT_CLASSES + 1,
            NAMESPACES * FLUX_CONFIGS_PER_NAMESPACE
        );
        for server in &servers {
            println!(
                "           {:<8} pid {}, VmRSS {:.1} MiB after start",
                server.name, server.pid, server.idle_rss
            );
        }
        println!(
            "in-process cost per request (no network, one thread): reading the AdmissionReview {:.1} µs \
             (kube's AdmissionReview<DynamicObject> {:.1} µs), review() {:.1} µs, \
             router() with JSON in and out {:.1} µs",
            in_process.read_us, in_process.kube_read_us, in_process.review_us, in_process.router_us
        );

        println!("\n## fixed rates (open loop), {} s each", args.seconds);
        println!("{}", RunResult::header("rate/s"));
        let duration = Duration::from_secs(args.seconds);
        for &rate in &args.rates {
            let mut results = Vec::new();
            for server in &servers {
                let client = client(&cert_pem);
                // Warm-up: connections, allocator, caches.
                open_loop(&client, server.addr, &reviews, rate, WARM_UP, args.max_in_flight).await;
                let result = server
                    .measure(open_loop(
                        &client,
                        server.addr,
                        &reviews,
                        rate,
                        duration,
                        args.max_in_flight,
                    ))
                    .await;
                println!("{}", result.line(&rate.to_string(), server.name));
                results.push(result);
            }
            println!("{}", RunResult::ratio_line(&rate.to_string(), &results[1], &results[0]));
        }

        if args.connections.is_empty() {
            return;
        }
        println!(
            "\n## saturation (closed loop, C connections each with one request in flight), {} s per step",
            args.saturation_seconds
        );
        println!("{}", RunResult::header("conns"));
        let duration = Duration::from_secs(args.saturation_seconds);
        // Step by step, both servers at each step, so a change in the
        // machine's load falls on both.
        let mut steps: [Vec<(usize, RunResult)>; 2] = [Vec::new(), Vec::new()];
        for &connections in &args.connections {
            for (server, steps) in servers.iter().zip(steps.iter_mut()) {
                let client = client(&cert_pem);
                closed_loop(&client, server.addr, &reviews, connections, SATURATION_WARM_UP).await;
                let result = server
                    .measure(closed_loop(&client, server.addr, &reviews, connections, duration))
                    .await;
                println!("{}", result.line(&connections.to_string(), server.name));
                steps.push((connections, result));
            }
        }
        // Answered requests per server CPU-second over the whole sweep.
        let per_cpu: Vec<f64> = steps
            .iter()
            .map(|s| {
                let done: usize = s.iter().map(|(_, r)| r.latencies.len()).sum();
                let cpu: f64 = s.iter().map(|(_, r)| r.server_cpu).sum();
                done as f64 / cpu.max(f64::EPSILON)
            })
            .collect();
        let peaks: Vec<(usize, RunResult)> = steps
            .into_iter()
            .map(|s| {
                s.into_iter()
                    .max_by(|a, b| a.1.throughput.total_cmp(&b.1.throughput))
                    .unwrap()
            })
            .collect();
        let (base, hook) = (&peaks[0], &peaks[1]);
        println!("\n## saturation point (the step with the highest throughput)");
        println!("{}", RunResult::header("conns"));
        println!("{}", base.1.line(&base.0.to_string(), "baseline"));
        println!("{}", hook.1.line(&hook.0.to_string(), "webhook"));
        println!("{}", RunResult::ratio_line("peak", &hook.1, &base.1));
        println!(
            "requests per server CPU-second at the peak: webhook {:.0}, baseline {:.0}, ratio {:.2}",
            hook.1.per_cpu_second(),
            base.1.per_cpu_second(),
            hook.1.per_cpu_second() / base.1.per_cpu_second()
        );
        println!(
            "requests per server CPU-second over the sweep: webhook {:.0}, baseline {:.0}, ratio {:.2}",
            per_cpu[1],
            per_cpu[0],
            per_cpu[1] / per_cpu[0]
        );
    });
    drop(client_rt);
    println!("\nload:      {} (1/5/15 min, at the end)", load_average());
    println!("\n## server memory");
    for server in &servers {
        let (rss, hwm) = server.memory();
        println!(
            "{:<8} VmRSS {:.1} MiB after start, {rss:.1} MiB at the end, peak (VmHWM) {hwm:.1} MiB",
            server.name, server.idle_rss
        );
    }
}

// ---------------------------------------------------------------------------
// The servers, each in a child process.

/// A server child process; dropping it closes its stdin, which ends it.
struct Server {
    name: &'static str,
    addr: SocketAddr,
    pid: String,
    idle_rss: f64,
    ticks: f64,
    child: Child,
}

impl Server {
    fn start(
        name: &'static str,
        args: &Args,
        cert: &std::path::Path,
        key: &std::path::Path,
        ticks: f64,
    ) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("--serve")
            .arg(name)
            .arg("--cert")
            .arg(cert)
            .arg("--key")
            .arg(key)
            .arg("--server-threads")
            .arg(args.server_threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("{name} server said {line:?}"))
            .parse()
            .unwrap();
        let pid = child.id().to_string();
        let (idle_rss, _) = memory(&pid);
        Self {
            name,
            addr,
            pid,
            idle_rss,
            ticks,
            child,
        }
    }

    fn cpu(&self) -> f64 {
        cpu_seconds(&self.pid, self.ticks)
    }

    fn memory(&self) -> (f64, f64) {
        memory(&self.pid)
    }

    /// Sockets the server holds open (its listeners included): how many
    /// connections the client's pool has opened to it.
    fn sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .map(|fds| {
                fds.flatten()
                    .filter(|fd| {
                        std::fs::read_link(fd.path())
                            .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Runs `load`, adding the server's and this process's CPU time over it.
    async fn measure(&self, load: impl Future<Output = RunResult>) -> RunResult {
        let (server, client) = (self.cpu(), cpu_seconds("self", self.ticks));
        let mut result = load.await;
        result.server_cpu = self.cpu() - server;
        result.client_cpu = cpu_seconds("self", self.ticks) - client;
        result.sockets = self.sockets();
        result.rss = self.memory().0;
        result
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The child side: serves until stdin closes.
fn serve(kind: &str, args: &Args) {
    let (cert, key) = (args.cert.clone().unwrap(), args.key.clone().unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .enable_all()
        .build()
        .unwrap();
    let addr = runtime.block_on(async {
        match kind {
            "webhook" => {
                // Through the flags, so a new flag with a default needs no
                // change here.
                let argv: Vec<std::ffi::OsString> = vec![
                    "fluxgate-admission-webhook".into(),
                    "--tls-cert-file".into(),
                    cert.clone().into_os_string(),
                    "--tls-key-file".into(),
                    key.clone().into_os_string(),
                    "--listen=127.0.0.1:0".into(),
                    "--admin-listen=127.0.0.1:0".into(),
                ];
                let config = Config::try_parse_from(argv).unwrap();
                let webhook = Webhook::bind(&config).await.unwrap();
                let addr = webhook.local_addr().unwrap();
                tokio::spawn(webhook.serve_state(
                    AppState::from_snapshot(snapshot()),
                    std::future::pending::<()>(),
                ));
                addr
            }
            "baseline" => start_baseline(&cert, &key).await,
            other => panic!("unknown server {other}"),
        }
    });
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening {addr}").unwrap();
    stdout.flush().unwrap();
    // Until the parent closes our stdin (or dies).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(runtime);
}

/// A minimal axum + rustls server: same TLS library, provider and
/// connection builder as the webhook, no decision, a fixed allow.
async fn start_baseline(cert: &std::path::Path, key: &std::path::Path) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(key).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let fixed = Bytes::from_static(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true,"status":{}}}"#,
    );
    let router = Router::new().route(
        "/validate",
        post(move |_body: Bytes| {
            let fixed = fixed.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], fixed) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        let service = TowerToHyperService::new(router);
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, builder, service) = (acceptor.clone(), builder.clone(), service.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = builder
                        .serve_connection(TokioIo::new(tls), service)
                        .into_owned()
                        .await;
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------
// Machine and /proc. (The same readings as `bench/src/lib.rs`; an example of
// this crate cannot depend on the benchmark crate, which depends on it.)

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0 / 1024.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} CPUs ({model}), {mem_gib:.1} GiB memory, Linux {}",
        kernel.trim()
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn rustc_version() -> String {
    Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map_or_else(|| "unknown".into(), |s| s.trim().to_owned())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0)
}

/// User + system CPU seconds of `/proc/<pid>` (all its threads, live or
/// gone).
fn cpu_seconds(pid: &str, ticks: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses: utime is field 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<f64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(f64::NAN))
        .collect();
    (fields[11] + fields[12]) / ticks
}

/// `VmRSS` and `VmHWM` of `/proc/<pid>`, in MiB.
fn memory(pid: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

// ---------------------------------------------------------------------------
// The client and the load.

/// Mean µs per request, single-threaded, over every review body.
struct InProcess {
    /// [`fluxgate_admission_webhook::read_request`], what the router reads.
    read_us: f64,
    /// kube's `AdmissionReview<DynamicObject>`, for comparison.
    kube_read_us: f64,
    /// The decision alone.
    review_us: f64,
    /// The whole router: read, decide, write the answer.
    router_us: f64,
}

fn in_process_costs(snapshot: &Snapshot, reviews: &[Bytes]) -> InProcess {
    use tower::ServiceExt as _;
    const ROUNDS: usize = 25;
    let per_request =
        |started: Instant| started.elapsed().as_secs_f64() * 1e6 / (ROUNDS * reviews.len()) as f64;
    let started = Instant::now();
    for _ in 0..ROUNDS {
        for body in reviews {
            std::hint::black_box(
                serde_json::from_slice::<
                    kube::core::admission::AdmissionReview<kube::core::DynamicObject>,
                >(body)
                .unwrap(),
            );
        }
    }
    let kube_read_us = per_request(started);
    let started = Instant::now();
    for _ in 0..ROUNDS {
        for body in reviews {
            std::hint::black_box(fluxgate_admission_webhook::read_request(body).unwrap());
        }
    }
    let read_us = per_request(started);
    let requests: Vec<_> = reviews
        .iter()
        .map(|body| fluxgate_admission_webhook::read_request(body).unwrap())
        .collect();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        for request in &requests {
            std::hint::black_box(fluxgate_admission_webhook::review(request, snapshot));
        }
    }
    let review_us = per_request(started);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let router = fluxgate_admission_webhook::router(AppState::from_snapshot(snapshot.clone()));
    let router_us = runtime.block_on(async {
        let started = Instant::now();
        for _ in 0..ROUNDS {
            for body in reviews {
                let request = http::Request::post("/validate")
                    .body(axum::body::Body::from(body.clone()))
                    .unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                std::hint::black_box(response.into_body().collect().await.unwrap());
            }
        }
        per_request(started)
    });
    InProcess {
        read_us,
        kube_read_us,
        review_us,
        router_us,
    }
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

fn client(cert_pem: &str) -> HttpsClient {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

/// One measurement: latencies, throughput, and the CPU time the server and
/// this process (the client) spent meanwhile.
struct RunResult {
    /// Sorted latencies in µs.
    latencies: Vec<u64>,
    errors: usize,
    elapsed: Duration,
    throughput: f64,
    /// Server CPU seconds over the measurement.
    server_cpu: f64,
    /// This process's CPU seconds over the measurement (the client).
    client_cpu: f64,
    /// Sockets the server held at the end.
    sockets: usize,
    /// The server's VmRSS at the end, MiB.
    rss: f64,
}

impl RunResult {
    fn percentile(&self, p: f64) -> u64 {
        if self.latencies.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    /// Server CPU µs per answered request.
    fn server_cpu_per_request(&self) -> f64 {
        self.server_cpu * 1e6 / self.latencies.len().max(1) as f64
    }

    /// Answered requests per second of server CPU.
    fn per_cpu_second(&self) -> f64 {
        self.latencies.len() as f64 / self.server_cpu.max(f64::EPSILON)
    }

    fn header(first: &str) -> String {
        format!(
            "{first:>6}  {:<9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}  {:>11} {:>10} {:>11} {:>7} {:>7}",
            "server",
            "done/s",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs",
            "errors",
            "server cores",
            "CPU µs/req",
            "client cores",
            "sockets",
            "RSS MiB"
        )
    }

    fn line(&self, first: &str, server: &str) -> String {
        let secs = self.elapsed.as_secs_f64().max(f64::EPSILON);
        format!(
            "{first:>6}  {server:<9} {:>8.0} {:>8} {:>8} {:>8} {:>8} {:>6}  {:>12.2} {:>10.0} {:>12.2} {:>7} {:>7.1}",
            self.throughput,
            self.percentile(50.0),
            self.percentile(99.0),
            self.percentile(99.9),
            self.percentile(100.0),
            self.errors,
            self.server_cpu / secs,
            self.server_cpu_per_request(),
            self.client_cpu / secs,
            self.sockets,
            self.rss,
        )
    }

    /// `hook / base` for throughput, latencies and server CPU per request.
    fn ratio_line(first: &str, hook: &RunResult, base: &RunResult) -> String {
        let ratio = |p: f64| hook.percentile(p) as f64 / base.percentile(p).max(1) as f64;
        format!(
            "{first:>6}  {:<9} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>6}  {:>12} {:>10.2}\n",
            "ratio",
            hook.throughput / base.throughput,
            ratio(50.0),
            ratio(99.0),
            ratio(99.9),
            "",
            "",
            "",
            hook.server_cpu_per_request() / base.server_cpu_per_request().max(f64::EPSILON),
        )
    }
}

/// Sends one review; true when it was answered 200 with a whole body.
async fn send(client: &HttpsClient, uri: &http::Uri, body: Bytes) -> bool {
    let request = http::Request::post(uri.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .unwrap();
    match client.request(request).await {
        Ok(response) => response.status() == 200 && response.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

fn uri(addr: SocketAddr) -> http::Uri {
    format!("https://localhost:{}/validate", addr.port())
        .parse()
        .unwrap()
}

fn result(mut latencies: Vec<u64>, errors: usize, elapsed: Duration) -> RunResult {
    latencies.sort_unstable();
    RunResult {
        throughput: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
        errors,
        elapsed,
        server_cpu: 0.0,
        client_cpu: 0.0,
        sockets: 0,
        rss: 0.0,
    }
}

/// Sends `rate` requests per second for `duration`, open loop: each request
/// has a scheduled start and its latency counts from then. At most
/// `max_in_flight` are sent at once; the others wait in the client, their
/// wait counted in their latency.
async fn open_loop(
    client: &HttpsClient,
    addr: SocketAddr,
    reviews: &Arc<Vec<Bytes>>,
    rate: u32,
    duration: Duration,
    max_in_flight: usize,
) -> RunResult {
    let in_flight = Arc::new(tokio::sync::Semaphore::new(max_in_flight.max(1)));
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let uri = uri(addr);
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = started + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let client = client.clone();
        let body = reviews[i % reviews.len()].clone();
        let uri = uri.clone();
        let in_flight = in_flight.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let _permit = in_flight.acquire_owned().await;
            let ok = send(&client, &uri, body).await;
            (ok, sent.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    let mut errors = 0;
    for task in tasks {
        let (ok, latency) = task.await.unwrap();
        if ok {
            latencies.push(latency.as_micros() as u64);
        } else {
            errors += 1;
        }
    }
    result(latencies, errors, started.elapsed())
}

/// `connections` tasks, each sending the next review as soon as its last
/// one is answered, for `duration`.
async fn closed_loop(
    client: &HttpsClient,
    addr: SocketAddr,
    reviews: &Arc<Vec<Bytes>>,
    connections: usize,
    duration: Duration,
) -> RunResult {
    let uri = uri(addr);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, uri, reviews, next) =
                (client.clone(), uri.clone(), reviews.clone(), next.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0);
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    if send(&client, &uri, reviews[i % reviews.len()].clone()).await {
                        latencies.push(sent.elapsed().as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut latencies, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (l, e) = task.await.unwrap();
        latencies.extend(l);
        errors += e;
    }
    result(latencies, errors, started.elapsed())
}

// ---------------------------------------------------------------------------
// The snapshot and the requests.

fn tenant_labels(i: usize) -> Labels {
    BTreeMap::from([
        ("fluxgate.dev/tenant".to_owned(), "true".to_owned()),
        (
            "fluxgate.dev/class".to_owned(),
            format!("class-{}", i % TENANT_CLASSES),
        ),
        (
            "kubernetes.io/metadata.name".to_owned(),
            format!("team-{i:03}"),
        ),
    ])
}

fn snapshot() -> Snapshot {
    let mut pds: Vec<PlatformDefaults> = vec![
        serde_json::from_value(json!({
            "apiVersion": "fluxgate.dev/v1alpha1", "kind": "PlatformDefaults",
            "metadata": {"name": "global"},
            "spec": {
                "namespaceSelector": {"matchLabels": {"fluxgate.dev/tenant": "true"}},
                "allowedRepos": ["https://git.corp.example/{namespace}/*", "ssh://git@git.corp.example/{namespace}/**"],
                "allowedTargetNamespaces": ["{namespace}", "{namespace}-*"],
                "allowedImages": ["registry.corp.example/fluxgate/*"],
                "clusters": ["prod-eu", "prod-us", "staging"],
                "protectedNamespaces": ["istio-system", "cert-manager"],
                "defaults": {
                    "ref": {"branch": "main"}, "interval": "5m",
                    "credentials": [{"repoPattern": "https://git.corp.example/**", "secretRef": {"name": "git-corp-readonly"}}],
                    "reconciler": {"image": "registry.corp.example/fluxgate/reconciler:v0.1.0", "clusterRole": "fluxgate-team-reconciler"}
                },
                "limits": {"minInterval": "1m", "maxInterval": "24h", "maxFluxConfigsPerNamespace": 10}
            }
        }))
        .unwrap(),
    ];
    for class in 0..TENANT_CLASSES {
        pds.push(
            serde_json::from_value(json!({
                "apiVersion": "fluxgate.dev/v1alpha1", "kind": "PlatformDefaults",
                "metadata": {"name": format!("class-{class}")},
                "spec": {
                    "namespaceSelector": {"matchLabels": {"fluxgate.dev/class": format!("class-{class}")}},
                    "priority": 10,
                    "allowedRepos": [format!("https://git.corp.example/shared-{class}/*")],
                    "defaults": {"interval": "10m"}
                }
            }))
            .unwrap(),
        );
    }
    let namespaces: Vec<(String, Labels)> = (0..NAMESPACES)
        .map(|i| (format!("team-{i:03}"), tenant_labels(i)))
        .collect();
    let fcs = (0..NAMESPACES).flat_map(|i| {
        (0..FLUX_CONFIGS_PER_NAMESPACE).map(move |j| {
            let ns = format!("team-{i:03}");
            let mut fc = FluxConfig::new(
                &format!("app-{j}"),
                FluxConfigSpec {
                    repo: format!("https://git.corp.example/{ns}/app-{j}.git"),
                    git_ref: Some(GitReference::branch("main")),
                    ..FluxConfigSpec::default()
                },
            );
            fc.metadata.namespace = Some(ns);
            fc
        })
    });
    Snapshot::new(PlatformSettings::default(), pds, namespaces, fcs)
}

fn flux_config_object(ns: &str, name: &str, spec: Value, generation: i64) -> Value {
    let last_applied = json!({
        "apiVersion": "fluxgate.dev/v1alpha1", "kind": "FluxConfig",
        "metadata": {"name": name, "namespace": ns, "labels": {"app.kubernetes.io/part-of": name}},
        "spec": spec,
    });
    json!({
        "apiVersion": "fluxgate.dev/v1alpha1",
        "kind": "FluxConfig",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": "2f1f6a8e-7c1b-4a7e-9d0b-5b3c1e2d4f60",
            "resourceVersion": "184467",
            "generation": generation,
            "creationTimestamp": "2025-05-01T09:00:00Z",
            "labels": {"app.kubernetes.io/part-of": name, "team": ns},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied.to_string()},
            "managedFields": [{
                "manager": "kubectl-client-side-apply",
                "operation": "Update",
                "apiVersion": "fluxgate.dev/v1alpha1",
                "time": "2025-05-01T09:00:00Z",
                "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}, "f:labels": {".": {}, "f:app.kubernetes.io/part-of": {}, "f:team": {}}},
                    "f:spec": {".": {}, "f:interval": {}, "f:path": {}, "f:ref": {".": {}, "f:branch": {}}, "f:repo": {}, "f:targetNamespace": {}}
                }
            }]
        },
        "spec": spec,
    })
}

fn review(i: usize, operation: &str, object: Value, old: Option<Value>) -> Bytes {
    let ns = object["metadata"]["namespace"].clone();
    let name = object["metadata"]["name"].clone();
    let gvk = json!({"group": "fluxgate.dev", "version": "v1alpha1", "kind": "FluxConfig"});
    let gvr = json!({"group": "fluxgate.dev", "version": "v1alpha1", "resource": "fluxconfigs"});
    let body = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("9a0c6e52-0000-4000-8000-{i:012}"),
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": name, "namespace": ns, "operation": operation,
            "userInfo": {"username": "system:serviceaccount:platform:platform-sync", "uid": "77b0c4d2-2a3e-4e0f-8f9e-6d1b7f1c2a44",
                         "groups": ["system:serviceaccounts", "system:serviceaccounts:platform", "system:authenticated"]},
            "object": object, "oldObject": old, "dryRun": false,
            "options": {"kind": if operation == "CREATE" { "CreateOptions" } else { "UpdateOptions" }, "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl-client-side-apply"}
        }
    });
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

/// 200 distinct reviews: 60% allowed creates, 20% denied creates (repo,
/// target namespace, interval, cluster), 20% spec updates.
fn reviews() -> Vec<Bytes> {
    (0..200)
        .map(|i| {
            let ns = format!("team-{:03}", (i * 7) % NAMESPACES);
            let good = json!({
                "repo": format!("https://git.corp.example/{ns}/svc-{i}.git"),
                "ref": {"branch": "main"}, "path": "deploy/prod",
                "targetNamespace": format!("{ns}-prod"), "interval": "10m",
            });
            match i % 10 {
                0..=5 => review(i, "CREATE", flux_config_object(&ns, &format!("svc-{i}"), good, 1), None),
                6 | 7 => {
                    let mut bad = good.clone();
                    match i % 4 {
                        0 => bad["repo"] = json!("https://github.com/evil/x.git"),
                        1 => bad["targetNamespace"] = json!("kube-system"),
                        2 => bad["interval"] = json!("10s"),
                        _ => bad["cluster"] = json!("mars"),
                    }
                    review(i, "CREATE", flux_config_object(&ns, &format!("svc-{i}"), bad, 1), None)
                }
                _ => {
                    let name = "app-1";
                    let old_spec = json!({"repo": format!("https://git.corp.example/{ns}/app-1.git"), "ref": {"branch": "main"}});
                    let mut new_spec = old_spec.clone();
                    new_spec["path"] = json!("deploy/staging");
                    review(
                        i,
                        "UPDATE",
                        flux_config_object(&ns, name, new_spec, 2),
                        Some(flux_config_object(&ns, name, old_spec, 1)),
                    )
                }
            }
        })
        .collect()
}
