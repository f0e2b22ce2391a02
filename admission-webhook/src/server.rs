//! Sockets: the HTTPS admission port (a hand-written accept loop with
//! tokio-rustls and hyper-util's `auto` connection builder, so HTTP/1.1 and
//! HTTP/2 both work and shutdown is graceful) and the plain-HTTP admin port.
//!
//! Shutdown: stop accepting, fail `/readyz`, ask every open connection to
//! finish (idle keep-alive connections close at once, HTTP/2 ones get a
//! GOAWAY, in-flight requests complete), wait up to [`DRAIN_TIMEOUT`], then
//! stop the admin port.
//!
//! Certificates come from files (polled every [`CERT_POLL_INTERVAL`]) or,
//! in self-managed mode, from the certificate controller, which [`serve`]
//! runs next to the snapshot watches; `/readyz` then also waits until a
//! valid certificate is served.
//!
//! [`serve`]: Webhook::serve

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use fluxgate_platform_defaults::PlatformSettings;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::http::{AppState, admin_router, router};
use crate::tls::{CertReloader, ServingCert};
use crate::{CertConfig, CertSource, Config, Error};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long in-flight requests get to finish after shutdown starts.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the certificate files are checked for changes.
pub const CERT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// The webhook with its ports bound and its certificate loaded, ready to
/// serve. Binding first lets a caller learn the ports (`--listen
/// 127.0.0.1:0` in tests) before anything is served.
#[derive(Debug)]
pub struct Webhook {
    listener: TcpListener,
    admin_listener: TcpListener,
    certs: Certs,
    settings: PlatformSettings,
    max_body_bytes: usize,
}

/// Where the served certificate comes from.
#[derive(Debug)]
enum Certs {
    Files(Arc<CertReloader>),
    SelfManaged {
        serving: Arc<ServingCert>,
        settings: Arc<crate::certs::Settings>,
    },
}

impl Certs {
    fn serving(&self) -> &Arc<ServingCert> {
        match self {
            Certs::Files(reloader) => reloader.serving(),
            Certs::SelfManaged { serving, .. } => serving,
        }
    }
}

impl Webhook {
    /// Loads the certificate files and binds both ports (`--cert-mode
    /// files`).
    pub async fn bind(config: &Config) -> Result<Self, Error> {
        Self::bind_with(config, &CertConfig::default()).await
    }

    /// Checks the certificate flags, loads the certificate files (files
    /// mode; self-managed mode starts with none and gets one from the
    /// certificate controller once [`Webhook::serve`] runs) and binds both
    /// ports.
    pub async fn bind_with(config: &Config, certificates: &CertConfig) -> Result<Self, Error> {
        config
            .platform_settings()
            .check()
            .map_err(|e| Error::Config(crate::ConfigError::Platform(e)))?;
        let certs = match certificates.source(config).map_err(Error::Config)? {
            CertSource::Files { cert, key } => Certs::Files(Arc::new(
                CertReloader::load(&cert, &key).map_err(Error::Tls)?,
            )),
            CertSource::SelfManaged(settings) => Certs::SelfManaged {
                serving: Arc::new(ServingCert::new()),
                settings: Arc::new(settings),
            },
        };
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| Error::Bind { addr, source })
        };
        Ok(Self {
            listener: bind(config.listen).await?,
            admin_listener: bind(config.admin_listen).await?,
            certs,
            settings: config.platform_settings(),
            max_body_bytes: config.max_body_bytes,
        })
    }

    /// The address of the HTTPS admission port.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener.local_addr().map_err(Error::LocalAddr)
    }

    /// The address of the plain-HTTP admin port.
    pub fn admin_addr(&self) -> Result<SocketAddr, Error> {
        self.admin_listener.local_addr().map_err(Error::LocalAddr)
    }

    /// The certificate served now, if any.
    pub fn serving_cert(&self) -> Arc<ServingCert> {
        Arc::clone(self.certs.serving())
    }

    /// Serves admission with a snapshot kept current by watching the cluster
    /// through `client`, until `shutdown` completes; then drains. In
    /// self-managed mode the certificate controller runs too.
    pub async fn serve(
        self,
        client: kube::Client,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let state = AppState::new(self.max_body_bytes);
        let certificates = match &self.certs {
            Certs::SelfManaged { serving, settings } => {
                Some(tokio::spawn(crate::certs::controller::run(
                    client.clone(),
                    Arc::clone(settings),
                    Arc::clone(serving),
                )))
            }
            Certs::Files(_) => None,
        };
        let abort_certificates = certificates.as_ref().map(|task| task.abort_handle());
        let watch = tokio::spawn(crate::watch::maintain_snapshot(
            client,
            self.settings.clone(),
            state.clone(),
        ));
        let watch_ended = async {
            let snapshot = async {
                match watch.await {
                    Ok(result) => result,
                    Err(join) => Err(Error::WatchTask(join)),
                }
            };
            let certificates = async {
                match certificates {
                    Some(task) => match task.await {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(err)) => Err(Error::Certificates(err)),
                        Err(join) => Err(Error::WatchTask(join)),
                    },
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                result = snapshot => result,
                result = certificates => result,
            }
        };
        // A watch task that ends is fatal (it retries errors on its own):
        // stop serving rather than answer from a stale snapshot forever.
        let mut failure = None;
        let stop = async {
            tokio::select! {
                () = shutdown => {}
                result = watch_ended => {
                    if let Err(err) = result {
                        failure = Some(err);
                    }
                }
            }
        };
        let served = self.serve_state(state, stop).await;
        if let Some(abort) = abort_certificates {
            abort.abort();
        }
        served?;
        failure.map_or(Ok(()), Err)
    }

    /// Serves admission from `state` as it is (a fixed snapshot, or one kept
    /// current by the caller) until `shutdown` completes; then drains.
    pub async fn serve_state(
        self,
        state: AppState,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), Error> {
        let Self {
            listener,
            admin_listener,
            certs,
            settings: _,
            max_body_bytes,
        } = self;
        let state = state.with_max_body_bytes(max_body_bytes);
        let tls_config = certs.serving().server_config().map_err(Error::Tls)?;
        let acceptor = TlsAcceptor::from(Arc::new(tls_config));
        let (poll, admin_router) = match &certs {
            Certs::Files(reloader) => (
                Some(tokio::spawn(Arc::clone(reloader).poll(CERT_POLL_INTERVAL))),
                admin_router(state.clone()),
            ),
            Certs::SelfManaged { serving, .. } => (
                None,
                admin_router(state.clone()).layer(axum::middleware::from_fn_with_state(
                    Arc::clone(serving),
                    ready_only_with_a_certificate,
                )),
            ),
        };

        let expiry = tokio::spawn(export_expiry(Arc::clone(certs.serving()), state.clone()));

        let (admin_stop, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin = tokio::spawn(
            axum::serve(admin_listener, admin_router)
                .with_graceful_shutdown(async {
                    // Either a send or the sender dropping means stop.
                    let _ = admin_stopped.await;
                })
                .into_future(),
        );

        let graceful = GracefulShutdown::new();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // Bounds slow clients that open a connection and never finish the
        // request head.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        let service = TowerToHyperService::new(router(state.clone()));

        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // Typically EMFILE: back off instead of spinning.
                            tracing::warn!(error = %err, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let acceptor = acceptor.clone();
                    let builder = builder.clone();
                    let service = service.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(err)) => {
                                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!(%peer, "TLS handshake timed out");
                                return;
                            }
                        };
                        let connection = builder
                            .serve_connection(TokioIo::new(tls), service)
                            .into_owned();
                        if let Err(err) = watcher.watch(connection).await {
                            tracing::debug!(%peer, error = %err, "connection ended with an error");
                        }
                    });
                }
            }
        }

        tracing::info!(
            connections = graceful.count(),
            "shutting down: draining admission connections"
        );
        state.set_shutting_down();
        drop(listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "connections still open after the drain timeout; closing them");
        }
        if let Some(poll) = poll {
            poll.abort();
        }
        expiry.abort();
        let _ = admin_stop.send(());
        match admin.await {
            Ok(Ok(())) => {}
            Ok(Err(source)) => return Err(Error::Admin(source)),
            Err(join) => tracing::warn!(error = %join, "admin server task failed"),
        }
        tracing::info!("shut down");
        Ok(())
    }
}

/// Keeps `fluxgate_webhook_certificate_expiry_timestamp_seconds` at the end
/// of the certificate served now (checked every second: swaps are rare and
/// the gauge is for alerts days ahead).
async fn export_expiry(serving: Arc<ServingCert>, state: AppState) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut exported = None;
    loop {
        ticker.tick().await;
        let not_after = serving.not_after();
        if not_after == exported {
            continue;
        }
        if let Some(t) = not_after {
            let seconds = match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(_) => 0,
            };
            state.metrics().set_certificate_expiry(seconds);
        }
        exported = not_after;
    }
}

/// Fails `/readyz` while no valid certificate is served (self-managed mode,
/// before the first certificate arrives or after the served one expired);
/// otherwise the usual readiness (snapshot synced, not shutting down).
async fn ready_only_with_a_certificate(
    State(serving): State<Arc<ServingCert>>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() == "/readyz" && !serving.is_valid_at(SystemTime::now()) {
        return (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no valid serving certificate yet (self-managed certificates)\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// Completes on SIGTERM or Ctrl-C. Registering the handlers happens before
/// the future is returned, so a signal that arrives while starting up is
/// not lost.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send, Error> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signal)?;
    Ok(async move {
        let ctrl_c = async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => tracing::info!("interrupt received"),
                Err(err) => {
                    // Without a Ctrl-C handler, SIGTERM still works.
                    tracing::warn!(error = %err, "cannot listen for Ctrl-C");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            () = ctrl_c => {}
        }
    })
}
