//! The real server on loopback, no cluster: HTTPS `/validate` over
//! keep-alive with a fixed snapshot, the admin port, a certificate rotated
//! on disk being picked up without a restart, a graceful shutdown that
//! does not wait for idle keep-alive connections, and self-managed mode
//! staying unready until a certificate is served from memory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fluxgate_admission_webhook::{
    AppState, CertConfig, CertMode, Config, Error, PemPair, Snapshot, Webhook,
};
use fluxgate_platform_defaults::PlatformSettings;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for `localhost` and `127.0.0.1`.
fn self_signed() -> (String, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    (cert.cert.pem(), cert.signing_key.serialize_pem())
}

fn client_config(trusted: &[&str]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for pem in trusted {
        roots
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
    }
    rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn config(dir: &Path) -> Config {
    Config {
        tls_cert_file: dir.join("tls.crt"),
        tls_key_file: dir.join("tls.key"),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        platform_namespace: "fluxgate-system".into(),
        default_reconciler_image: None,
        default_cluster_role: None,
        max_body_bytes: 1024 * 1024,
        protected_namespaces: Vec::new(),
    }
}

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    std::fs::read_to_string(path).unwrap()
}

fn snapshot() -> Snapshot {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Fixture {
        platform_defaults: Vec<fluxgate_crds::PlatformDefaults>,
        namespaces: std::collections::BTreeMap<String, fluxgate_admission_webhook::Labels>,
        flux_configs: Vec<fluxgate_crds::FluxConfig>,
    }
    let f: Fixture = serde_json::from_str(&fixture("snapshot.json")).unwrap();
    Snapshot::new(
        PlatformSettings::default(),
        f.platform_defaults,
        f.namespaces,
        f.flux_configs,
    )
}

struct Running {
    addr: SocketAddr,
    admin: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), fluxgate_admission_webhook::Error>>,
}

async fn start(dir: &Path) -> Running {
    let webhook = Webhook::bind(&config(dir)).await.unwrap();
    let addr = webhook.local_addr().unwrap();
    let admin = webhook.admin_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(
        webhook.serve_state(AppState::from_snapshot(snapshot()), async {
            let _ = stopped.await;
        }),
    );
    Running {
        addr,
        admin,
        stop,
        task,
    }
}

/// The certificate the server presents in a fresh handshake.
async fn presented_cert(addr: SocketAddr, trusted: &[&str]) -> Vec<u8> {
    let connector = TlsConnector::from(Arc::new(client_config(trusted)));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_admission_over_https_with_keep_alive_and_drains_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed();
    std::fs::write(dir.path().join("tls.crt"), &cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), &key).unwrap();
    let running = start(dir.path()).await;

    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(&[&cert]))
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(https);
    for name in [
        "fluxconfig-create-allowed.json",
        "fluxconfig-create-denied-repo.json",
    ] {
        let request = http::Request::post(format!(
            "https://localhost:{}/validate",
            running.addr.port()
        ))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(fixture(name))))
        .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let review: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let allowed = review["response"]["allowed"].as_bool().unwrap();
        assert_eq!(allowed, name.contains("allowed"), "{name}: {review}");
    }

    assert_eq!(admin_get(running.admin, "/livez").await.0, 200);
    assert_eq!(admin_get(running.admin, "/readyz").await.0, 200);
    let (status, metrics) = admin_get(running.admin, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"fluxgate_webhook_requests_total{kind="FluxConfig",operation="CREATE",result="denied"} 1"#),
        "{metrics}"
    );

    // The client's pool holds an idle keep-alive connection; shutdown must
    // close it rather than wait for the drain timeout.
    let started = Instant::now();
    running.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running.task)
        .await
        .expect("shutdown finishes without waiting for idle connections")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        TcpStream::connect(running.addr).await.is_err(),
        "still accepting"
    );
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_a_rotated_certificate_and_keeps_the_old_one_when_the_new_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let (cert1, key1) = self_signed();
    let (cert2, key2) = self_signed();
    std::fs::write(dir.path().join("tls.crt"), &cert1).unwrap();
    std::fs::write(dir.path().join("tls.key"), &key1).unwrap();
    let running = start(dir.path()).await;
    let trusted = [cert1.as_str(), cert2.as_str()];
    let der = |pem: &str| {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    };
    assert_eq!(presented_cert(running.addr, &trusted).await, der(&cert1));

    // A broken pair (new certificate, old key) is refused; the old
    // certificate stays in service.
    std::fs::write(dir.path().join("tls.crt"), &cert2).unwrap();
    tokio::time::sleep(fluxgate_admission_webhook::CERT_POLL_INTERVAL + Duration::from_secs(1))
        .await;
    assert_eq!(presented_cert(running.addr, &trusted).await, der(&cert1));

    // The matching key arrives: the new certificate is served, no restart.
    std::fs::write(dir.path().join("tls.key"), &key2).unwrap();
    let deadline = Instant::now() + fluxgate_admission_webhook::CERT_POLL_INTERVAL * 3;
    loop {
        if presented_cert(running.addr, &trusted).await == der(&cert2) {
            break;
        }
        assert!(Instant::now() < deadline, "rotated certificate not served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop.send(()).unwrap();
    running.task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_mode_names_the_missing_flag() {
    let mut config = config(Path::new("/nonexistent"));
    config.tls_key_file = PathBuf::new();
    let err = Webhook::bind(&config).await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(
        fluxgate_admission_webhook::error_chain(&err).contains("--tls-key-file"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_managed_mode_is_not_ready_until_a_certificate_is_served() {
    let mut config = config(Path::new(""));
    config.tls_cert_file = PathBuf::new();
    config.tls_key_file = PathBuf::new();
    let certificates = CertConfig {
        cert_mode: CertMode::SelfManaged,
        ..CertConfig::default()
    };
    let webhook = Webhook::bind_with(&config, &certificates).await.unwrap();
    let (addr, admin) = (webhook.local_addr().unwrap(), webhook.admin_addr().unwrap());
    let serving = webhook.serving_cert();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // No controller (no cluster): the certificate is fed from memory here.
    let task = tokio::spawn(
        webhook.serve_state(AppState::from_snapshot(snapshot()), async {
            let _ = stopped.await;
        }),
    );

    let (status, body) = admin_get(admin, "/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("no valid serving certificate"), "{body}");
    assert_eq!(admin_get(admin, "/livez").await.0, 200);
    let (cert, key) = self_signed();
    let connector = TlsConnector::from(Arc::new(client_config(&[&cert])));
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .is_err(),
        "a handshake without a certificate fails"
    );

    let pair = PemPair {
        cert: cert.clone().into_bytes(),
        key: key.into_bytes(),
    };
    assert!(serving.install(&pair, "memory").unwrap());
    assert_eq!(admin_get(admin, "/readyz").await.0, 200);
    // rcgen's default end of validity, 4096-01-01, in the expiry gauge.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, metrics) = admin_get(admin, "/metrics").await;
        if metrics.contains("fluxgate_webhook_certificate_expiry_timestamp_seconds 67090118400") {
            break;
        }
        assert!(Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let served = presented_cert(addr, &[&cert]).await;
    assert_eq!(
        served,
        CertificateDer::from_pem_slice(cert.as_bytes())
            .unwrap()
            .to_vec()
    );
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}
