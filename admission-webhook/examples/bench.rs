//! Admission latency benchmark (not a test: it prints figures and asserts
//! nothing).
//!
//! Drives the real HTTPS webhook (`Webhook::serve_state` with a snapshot of
//! 40 PlatformDefaults, 500 namespaces and 2,000 FluxConfigs) with realistic
//! FluxConfig AdmissionReviews (CREATE and UPDATE, allowed and denied, with
//! managedFields and a last-applied annotation, ~3 KiB each) at fixed rates
//! over keep-alive HTTP/1.1, from an in-process hyper-util + rustls client.
//! The same load then goes to a baseline: a minimal axum + rustls server on
//! the same accept loop shape that reads the body and returns a fixed allow
//! response. The load is open loop: requests start on a fixed schedule
//! whatever the responses do (each on its own task, the pool opens more
//! connections when all are busy), so a slow server cannot slow the load
//! down; latency counts from the moment a request starts, which keeps the
//! 1 ms granularity of tokio's timer out of the figures.
//!
//! ```sh
//! cargo run --release -p fluxgate-admission-webhook --example bench
//! cargo run --release -p fluxgate-admission-webhook --example bench -- --rates 500,1000,2000 --seconds 5
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
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

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut rates = vec![500u32, 1000];
    let mut seconds = 5u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rates" => {
                rates = args
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|r| r.parse().unwrap())
                    .collect();
            }
            "--seconds" => seconds = args.next().unwrap().parse().unwrap(),
            other => panic!("unknown argument {other}; use --rates 500,1000 --seconds 5"),
        }
    }
    let duration = Duration::from_secs(seconds);

    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = cert.cert.pem();
    std::fs::write(dir.path().join("tls.crt"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("tls.key"), cert.signing_key.serialize_pem()).unwrap();

    // Servers on their own runtime (two workers, like a small pod); the
    // client on another, so its cost is the same for both servers.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let snapshot = snapshot();
    let reviews = Arc::new(reviews());
    let in_process = in_process_costs(&snapshot, &reviews);
    let (webhook_addr, baseline_addr) = server_rt.block_on(async {
        let config = Config {
            tls_cert_file: dir.path().join("tls.crt"),
            tls_key_file: dir.path().join("tls.key"),
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            platform_namespace: "fluxgate-system".into(),
            default_reconciler_image: None,
            default_cluster_role: None,
            max_body_bytes: 1024 * 1024,
            protected_namespaces: Vec::new(),
        };
        let webhook = Webhook::bind(&config).await.unwrap();
        let webhook_addr = webhook.local_addr().unwrap();
        tokio::spawn(webhook.serve_state(
            AppState::from_snapshot(snapshot),
            std::future::pending::<()>(),
        ));
        let baseline_addr = start_baseline(&config).await;
        (webhook_addr, baseline_addr)
    });

    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    client_rt.block_on(async {
        let sizes: Vec<usize> = reviews.iter().map(|r| r.len()).collect();
        println!(
            "fluxgate admission webhook benchmark: {} request bodies ({}..{} bytes), {} s per rate, keep-alive HTTP/1.1 over TLS",
            reviews.len(),
            sizes.iter().min().unwrap(),
            sizes.iter().max().unwrap(),
            seconds
        );
        println!(
            "snapshot: {} PlatformDefaults, {NAMESPACES} namespaces, {} FluxConfigs\n",
            TENANT_CLASSES + 1,
            NAMESPACES * FLUX_CONFIGS_PER_NAMESPACE
        );
        println!(
            "in-process cost per request (no network): review() {:.1} µs, router() with JSON in and out {:.1} µs\n",
            in_process.0, in_process.1
        );
        let client = client(&cert_pem);
        println!(
            "{:>6}  {:<9} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "rate/s", "server", "done/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "errors"
        );
        for rate in rates {
            let mut results = Vec::new();
            for (name, addr) in [("baseline", baseline_addr), ("webhook", webhook_addr)] {
                // Warm-up: connections, allocator, caches.
                run(&client, addr, &reviews, rate, WARM_UP).await;
                let result = run(&client, addr, &reviews, rate, duration).await;
                println!(
                    "{rate:>6}  {name:<9} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>7}",
                    result.throughput,
                    result.percentile(50.0),
                    result.percentile(99.0),
                    result.percentile(99.9),
                    result.percentile(100.0),
                    result.errors
                );
                results.push(result);
            }
            let (base, hook) = (&results[0], &results[1]);
            let ratio = |p: f64| hook.percentile(p) as f64 / base.percentile(p).max(1) as f64;
            println!(
                "{rate:>6}  {:<9} {:>10.2} {:>9.2} {:>9.2} {:>9.2}\n",
                "ratio",
                hook.throughput / base.throughput,
                ratio(50.0),
                ratio(99.0),
                ratio(99.9)
            );
        }
    });
    drop(server_rt);
}

/// Mean µs per request of the decision alone and of the whole router
/// (parse, decide, serialise), single-threaded, over every review body.
fn in_process_costs(snapshot: &Snapshot, reviews: &[Bytes]) -> (f64, f64) {
    use tower::ServiceExt as _;
    const ROUNDS: usize = 25;
    let requests: Vec<kube::core::admission::AdmissionRequest<kube::core::DynamicObject>> = reviews
        .iter()
        .map(|body| {
            serde_json::from_slice::<
                kube::core::admission::AdmissionReview<kube::core::DynamicObject>,
            >(body)
            .unwrap()
            .try_into()
            .unwrap()
        })
        .collect();
    let started = Instant::now();
    for _ in 0..ROUNDS {
        for request in &requests {
            std::hint::black_box(fluxgate_admission_webhook::review(request, snapshot));
        }
    }
    let review_us = started.elapsed().as_secs_f64() * 1e6 / (ROUNDS * requests.len()) as f64;

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
        started.elapsed().as_secs_f64() * 1e6 / (ROUNDS * reviews.len()) as f64
    });
    (review_us, router_us)
}

/// A minimal axum + rustls server: same TLS library, provider and
/// connection builder as the webhook, no decision, a fixed allow.
async fn start_baseline(config: &Config) -> SocketAddr {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.tls_cert_file)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(&config.tls_key_file).unwrap();
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

struct RunResult {
    /// Sorted latencies in µs.
    latencies: Vec<u64>,
    errors: usize,
    throughput: f64,
}

impl RunResult {
    fn percentile(&self, p: f64) -> u64 {
        if self.latencies.is_empty() {
            return 0;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }
}

/// Sends `rate` requests per second for `duration`, open loop: each request
/// has a scheduled start and its latency counts from then.
async fn run(
    client: &HttpsClient,
    addr: SocketAddr,
    reviews: &Arc<Vec<Bytes>>,
    rate: u32,
    duration: Duration,
) -> RunResult {
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate));
    let uri: http::Uri = format!("https://localhost:{}/validate", addr.port())
        .parse()
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = started + interval * i as u32;
        tokio::time::sleep_until(scheduled).await;
        let client = client.clone();
        let body = reviews[i % reviews.len()].clone();
        let uri = uri.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let request = http::Request::post(uri)
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(Full::new(body))
                .unwrap();
            let ok = match client.request(request).await {
                Ok(response) => {
                    let ok = response.status() == 200;
                    ok && response.into_body().collect().await.is_ok()
                }
                Err(_) => false,
            };
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
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    RunResult {
        throughput: latencies.len() as f64 / elapsed.as_secs_f64(),
        latencies,
        errors,
    }
}

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
