//! The fluxgate validating admission webhook for `FluxConfig` and
//! `PlatformDefaults`.
//!
//! - [`review`] is the decision, a pure function of an admission request and
//!   a [`Snapshot`]; every rule it applies lives in
//!   `fluxgate_platform_defaults`, and its denials are that crate's
//!   `Violations` text verbatim.
//! - [`router`] adapts `POST /validate` AdmissionReviews to [`review`],
//!   reading only what the review needs ([`read_request`]); tests drive it
//!   with [`AppState::from_snapshot`] and JSON fixtures.
//! - [`run`] starts everything from the [`Flags`]: reflectors keep the
//!   snapshot current (no API call on the request path), HTTPS with a
//!   certificate reloaded from disk (`--cert-mode files`) or kept by the
//!   webhook itself in a Secret ([`certs`], `--cert-mode self-managed`), a
//!   plain-HTTP admin port with `/livez`, `/readyz` and `/metrics`, and a
//!   graceful shutdown on SIGTERM.

pub mod certs;
mod http;
mod metrics;
mod review;
mod server;
mod snapshot;
mod tls;
mod watch;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fluxgate_platform_defaults::PlatformSettings;

pub use http::{AppState, DEFAULT_MAX_BODY_BYTES, NAMESPACE_WAIT, admin_router, router};
pub use metrics::{Metrics, Outcome};
pub use review::{MAX_NAMED_IN_WARNINGS, review};
pub use server::{CERT_POLL_INTERVAL, DRAIN_TIMEOUT, Webhook, shutdown_signal};
pub use snapshot::{Labels, Snapshot};
pub use tls::{CertReloader, PemPair, ServingCert, TlsError};
pub use wire::{ReadError, read_request};

/// Every flag of the binary: the webhook's ([`Config`]) and how it gets its
/// serving certificate ([`CertConfig`]). Each can also be set through its
/// environment variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fluxgate-admission-webhook", version, about)]
pub struct Flags {
    /// The webhook's flags.
    #[command(flatten)]
    pub webhook: Config,
    /// The certificate flags.
    #[command(flatten)]
    pub certificates: CertConfig,
    /// Log format: `json` (one JSON object per line) or `text`.
    #[arg(long, env = "FLUXGATE_LOG_FORMAT", default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
}

/// The webhook's flags; each can also be set through its environment
/// variable.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "fluxgate-admission-webhook", version, about)]
pub struct Config {
    /// PEM file with the serving certificate chain; reloaded when it
    /// changes. Required with `--cert-mode files` (empty means not given).
    #[arg(long, env = "FLUXGATE_TLS_CERT_FILE", default_value = "", hide_default_value = true, value_parser = any_path)]
    pub tls_cert_file: PathBuf,

    /// PEM file with the serving certificate's private key; reloaded when it
    /// changes. Required with `--cert-mode files` (empty means not given).
    #[arg(long, env = "FLUXGATE_TLS_KEY_FILE", default_value = "", hide_default_value = true, value_parser = any_path)]
    pub tls_key_file: PathBuf,

    /// Address of the HTTPS admission port (`POST /validate`).
    #[arg(long, env = "FLUXGATE_LISTEN", default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,

    /// Address of the plain-HTTP admin port (`/livez`, `/readyz`,
    /// `/metrics`).
    #[arg(long, env = "FLUXGATE_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,

    /// Namespace fluxgate runs in; never an allowed target namespace.
    #[arg(
        long,
        env = "FLUXGATE_PLATFORM_NAMESPACE",
        default_value = "fluxgate-system"
    )]
    pub platform_namespace: String,

    /// Reconciler image when no PlatformDefaults sets one (default: the
    /// policy core's built-in image).
    #[arg(long, env = "FLUXGATE_DEFAULT_RECONCILER_IMAGE")]
    pub default_reconciler_image: Option<String>,

    /// ClusterRole bound for the reconciler when no PlatformDefaults sets
    /// one (default: the policy core's built-in role).
    #[arg(long, env = "FLUXGATE_DEFAULT_CLUSTER_ROLE")]
    pub default_cluster_role: Option<String>,

    /// Namespace pattern no team may target, besides `kube-*`, the platform
    /// namespace and PlatformDefaults' protectedNamespaces (repeat the flag,
    /// or comma-separate in the environment variable).
    #[arg(
        long = "protected-namespace",
        env = "FLUXGATE_PROTECTED_NAMESPACES",
        value_delimiter = ','
    )]
    pub protected_namespaces: Vec<String>,

    /// Largest AdmissionReview body accepted; larger ones get HTTP 413.
    #[arg(long, env = "FLUXGATE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
}

impl Config {
    /// The platform settings these flags describe.
    pub fn platform_settings(&self) -> PlatformSettings {
        let builtin = PlatformSettings::default();
        PlatformSettings {
            platform_namespace: self.platform_namespace.clone(),
            default_reconciler_image: self
                .default_reconciler_image
                .clone()
                .unwrap_or(builtin.default_reconciler_image),
            default_cluster_role: self
                .default_cluster_role
                .clone()
                .unwrap_or(builtin.default_cluster_role),
            protected_namespaces: self.protected_namespaces.clone(),
        }
    }
}

/// Accepts any path, the empty one included (clap's own `PathBuf` parser
/// refuses it, and the empty default means "not given").
fn any_path(value: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(value))
}

/// Where the serving certificate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CertMode {
    /// From `--tls-cert-file` and `--tls-key-file` (for example a mounted
    /// cert-manager Secret), reloaded when they change.
    #[default]
    Files,
    /// The webhook keeps its own CA and serving certificate in
    /// `--tls-secret`, publishes the CA into `--webhook-configuration` and
    /// rotates both before they expire.
    SelfManaged,
}

/// How the webhook gets its serving certificate. The durations are Go
/// durations (`90s`, `720h`; there is no unit for days).
///
/// The defaults follow cert-manager and the public web: a serving
/// certificate lives 90 days and is renewed with 30 days left, so a
/// renewal that keeps failing gives a month of warnings before anything
/// breaks, and a leaked key is useless within a quarter. The CA lives 5
/// years and is replaced with a year left: CA rotations are the delicate
/// kind (they wait for the new CA to be published), so they should be rare,
/// yet a webhook that was scaled to zero for months still rotates long
/// before the end, and a serving certificate (at most 90 days) always fits
/// in what is left of its CA.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct CertConfig {
    /// Where the serving certificate comes from.
    #[arg(long, env = "FLUXGATE_CERT_MODE", value_enum, default_value_t = CertMode::Files)]
    pub cert_mode: CertMode,

    /// Self-managed: the Secret (in `--platform-namespace`) holding the CA
    /// and the serving certificate.
    #[arg(long, env = "FLUXGATE_TLS_SECRET", default_value = DEFAULT_TLS_SECRET)]
    pub tls_secret: String,

    /// Self-managed: the ValidatingWebhookConfiguration whose every
    /// webhook's `clientConfig.caBundle` is set to the CA bundle.
    #[arg(long, env = "FLUXGATE_WEBHOOK_CONFIGURATION", default_value = DEFAULT_WEBHOOK_CONFIGURATION)]
    pub webhook_configuration: String,

    /// Self-managed: the Service in front of the webhook; the certificate
    /// names `<svc>`, `<svc>.<ns>`, `<svc>.<ns>.svc` and
    /// `<svc>.<ns>.svc.cluster.local`.
    #[arg(long, env = "FLUXGATE_SERVICE_NAME", default_value = DEFAULT_SERVICE_NAME)]
    pub service_name: String,

    /// Self-managed: lifetime of a new CA (5 years).
    #[arg(long, env = "FLUXGATE_CA_VALIDITY", default_value = "43800h", value_parser = go_duration)]
    pub ca_validity: Duration,

    /// Self-managed: the CA is replaced when less than this is left (1
    /// year).
    #[arg(long, env = "FLUXGATE_CA_RENEW_BEFORE", default_value = "8760h", value_parser = go_duration)]
    pub ca_renew_before: Duration,

    /// Self-managed: lifetime of a new serving certificate (90 days).
    #[arg(long, env = "FLUXGATE_CERT_VALIDITY", default_value = "2160h", value_parser = go_duration)]
    pub cert_validity: Duration,

    /// Self-managed: the serving certificate is replaced when less than this
    /// is left (30 days).
    #[arg(long, env = "FLUXGATE_CERT_RENEW_BEFORE", default_value = "720h", value_parser = go_duration)]
    pub cert_renew_before: Duration,

    /// Self-managed: how long a new CA must have been published before
    /// certificates from it are served, and how long a replaced CA stays
    /// trusted after the serving certificate moved off it: enough for every
    /// API server to load the changed webhook configuration and every
    /// replica to load the changed Secret (both take well under a second
    /// normally; 30 seconds covers a loaded control plane).
    #[arg(long, env = "FLUXGATE_ROTATION_GRACE", default_value = "30s", value_parser = go_duration)]
    pub rotation_grace: Duration,
}

/// Default of `--tls-secret`.
pub const DEFAULT_TLS_SECRET: &str = "fluxgate-webhook-tls";
/// Default of `--webhook-configuration`.
pub const DEFAULT_WEBHOOK_CONFIGURATION: &str = "fluxgate";
/// Default of `--service-name`.
pub const DEFAULT_SERVICE_NAME: &str = "fluxgate-webhook";

fn go_duration(value: &str) -> Result<Duration, fluxgate_platform_defaults::rules::DurationError> {
    fluxgate_platform_defaults::rules::parse_go_duration(value)
}

impl Default for CertConfig {
    /// `--cert-mode files` with every other flag at its default.
    fn default() -> Self {
        const HOUR: Duration = Duration::from_secs(3600);
        Self {
            cert_mode: CertMode::Files,
            tls_secret: DEFAULT_TLS_SECRET.to_owned(),
            webhook_configuration: DEFAULT_WEBHOOK_CONFIGURATION.to_owned(),
            service_name: DEFAULT_SERVICE_NAME.to_owned(),
            ca_validity: HOUR * 43800,
            ca_renew_before: HOUR * 8760,
            cert_validity: HOUR * 2160,
            cert_renew_before: HOUR * 720,
            rotation_grace: Duration::from_secs(30),
        }
    }
}

impl CertConfig {
    /// The self-managed settings these flags describe, for a webhook in
    /// `namespace`.
    pub fn settings(&self, namespace: &str) -> Result<certs::Settings, ConfigError> {
        certs::Settings::new(
            namespace,
            &self.tls_secret,
            &self.webhook_configuration,
            &self.service_name,
            certs::Lifetimes {
                ca_validity: self.ca_validity,
                ca_renew_before: self.ca_renew_before,
                cert_validity: self.cert_validity,
                cert_renew_before: self.cert_renew_before,
                grace: self.rotation_grace,
            },
        )
        .map_err(ConfigError::Certificates)
    }
}

/// Where the serving certificate comes from, once the flags are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertSource {
    /// Certificate and key files.
    Files {
        /// `--tls-cert-file`.
        cert: PathBuf,
        /// `--tls-key-file`.
        key: PathBuf,
    },
    /// Self-managed in a Secret.
    SelfManaged(certs::Settings),
}

impl CertConfig {
    /// Checks the flags of the chosen mode: files mode needs both files,
    /// self-managed mode consistent settings.
    pub fn source(&self, config: &Config) -> Result<CertSource, ConfigError> {
        match self.cert_mode {
            CertMode::Files => {
                for (path, flag, env) in [
                    (
                        &config.tls_cert_file,
                        "tls-cert-file",
                        "FLUXGATE_TLS_CERT_FILE",
                    ),
                    (
                        &config.tls_key_file,
                        "tls-key-file",
                        "FLUXGATE_TLS_KEY_FILE",
                    ),
                ] {
                    if path.as_os_str().is_empty() {
                        return Err(ConfigError::Missing {
                            flag,
                            env,
                            mode: "files",
                        });
                    }
                }
                Ok(CertSource::Files {
                    cert: config.tls_cert_file.clone(),
                    key: config.tls_key_file.clone(),
                })
            }
            CertMode::SelfManaged => self
                .settings(&config.platform_namespace)
                .map(CertSource::SelfManaged),
        }
    }
}

/// Flags that do not work together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A flag the mode needs is missing.
    #[error("--{flag} (or {env}) is required with --cert-mode {mode}")]
    Missing {
        /// The flag.
        flag: &'static str,
        /// Its environment variable.
        env: &'static str,
        /// The mode that needs it.
        mode: &'static str,
    },
    /// The self-managed certificate settings do not work.
    #[error("invalid self-managed certificate settings")]
    Certificates(#[source] certs::SettingsError),
    /// A platform setting is invalid (e.g. a protected-namespace pattern).
    #[error("{0}")]
    Platform(String),
}

/// Why the webhook could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Flags that do not work together.
    #[error("invalid flags")]
    Config(#[source] ConfigError),
    /// No Kubernetes client configuration (kubeconfig or in-cluster).
    #[error("cannot configure a Kubernetes client")]
    Client(#[source] kube::Error),
    /// The serving certificate could not be loaded.
    #[error("cannot set up TLS")]
    Tls(#[source] TlsError),
    /// A port could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// A bound socket has no local address.
    #[error("cannot read the local address of a listener")]
    LocalAddr(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("cannot listen for SIGTERM")]
    Signal(#[source] std::io::Error),
    /// The admin server failed.
    #[error("the admin server failed")]
    Admin(#[source] std::io::Error),
    /// The watch streams ended, which they do not under normal operation.
    #[error("the watch streams ended")]
    WatchEnded,
    /// The watch task panicked or was cancelled.
    #[error("the watch task failed")]
    WatchTask(#[source] tokio::task::JoinError),
    /// The self-managed certificate controller stopped.
    #[error("the certificate controller stopped")]
    Certificates(#[source] certs::controller::ControllerError),
}

/// Starts the webhook with a client from the environment (kubeconfig or
/// in-cluster) and serves until SIGTERM or Ctrl-C, then drains and returns.
pub async fn run(flags: Flags) -> Result<(), Error> {
    let Flags {
        webhook: config,
        certificates,
        log_format: _,
    } = flags;
    let shutdown = shutdown_signal()?;
    let webhook = Webhook::bind_with(&config, &certificates).await?;
    let client = kube::Client::try_default().await.map_err(Error::Client)?;
    tracing::info!(
        listen = %webhook.local_addr()?,
        admin = %webhook.admin_addr()?,
        platform_namespace = %config.platform_namespace,
        cert_mode = ?certificates.cert_mode,
        "fluxgate admission webhook starting"
    );
    webhook.serve(client, shutdown).await
}

/// The message of an error with its causes, `a: b: c` (the core's one
/// implementation, shared with the operator and the CLI).
pub use fluxgate_platform_defaults::violation::error_chain;

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn flags_have_defaults_and_map_to_platform_settings() {
        let config = Config::try_parse_from([
            "fluxgate-admission-webhook",
            "--tls-cert-file=/tls/tls.crt",
            "--tls-key-file=/tls/tls.key",
            "--default-cluster-role=team-role",
        ])
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:8443");
        assert_eq!(config.admin_listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
        let settings = config.platform_settings();
        assert_eq!(settings.platform_namespace, "fluxgate-system");
        assert_eq!(settings.default_cluster_role, "team-role");
        assert_eq!(
            settings.default_reconciler_image,
            PlatformSettings::default().default_reconciler_image
        );
    }

    #[tokio::test]
    async fn an_invalid_protected_namespace_pattern_stops_the_start() {
        let flags = Flags::try_parse_from([
            "fluxgate-admission-webhook",
            "--cert-mode=self-managed",
            "--listen=127.0.0.1:0",
            "--admin-listen=127.0.0.1:0",
            "--protected-namespace=monitoring,Bad_NS",
            "--log-format=text",
        ])
        .unwrap();
        assert_eq!(flags.webhook.protected_namespaces, ["monitoring", "Bad_NS"]);
        assert_eq!(flags.log_format, "text");
        let Err(err) = Webhook::bind_with(&flags.webhook, &flags.certificates).await else {
            panic!("started with an invalid pattern");
        };
        let text = error_chain(&err);
        assert!(
            text.contains(r#"protected namespace pattern "Bad_NS" is invalid"#),
            "{text}"
        );
        assert!(Flags::try_parse_from(["fluxgate-admission-webhook", "--log-format=xml"]).is_err());
    }

    #[test]
    fn files_mode_is_the_default_and_names_a_missing_file_flag() {
        let flags = Flags::try_parse_from(["fluxgate-admission-webhook"]).unwrap();
        assert_eq!(flags.certificates, CertConfig::default());
        let err = flags.certificates.source(&flags.webhook).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--tls-cert-file (or FLUXGATE_TLS_CERT_FILE) is required with --cert-mode files"
        );
        let flags =
            Flags::try_parse_from(["fluxgate-admission-webhook", "--tls-cert-file=/tls/tls.crt"])
                .unwrap();
        let err = flags.certificates.source(&flags.webhook).unwrap_err();
        assert!(err.to_string().starts_with("--tls-key-file"), "{err}");
        let flags = Flags::try_parse_from([
            "fluxgate-admission-webhook",
            "--tls-cert-file=/tls/tls.crt",
            "--tls-key-file=/tls/tls.key",
        ])
        .unwrap();
        assert_eq!(
            flags.certificates.source(&flags.webhook).unwrap(),
            CertSource::Files {
                cert: "/tls/tls.crt".into(),
                key: "/tls/tls.key".into()
            }
        );
    }

    #[test]
    fn self_managed_mode_needs_no_files_and_reads_go_durations() {
        let flags = Flags::try_parse_from([
            "fluxgate-admission-webhook",
            "--cert-mode=self-managed",
            "--platform-namespace=platform",
            "--service-name=hook",
            "--cert-validity=1h30m",
            "--cert-renew-before=20m",
            "--rotation-grace=2s",
        ])
        .unwrap();
        let CertSource::SelfManaged(settings) = flags.certificates.source(&flags.webhook).unwrap()
        else {
            panic!("not self-managed");
        };
        assert_eq!(settings.secret, "fluxgate-webhook-tls");
        assert_eq!(settings.webhook_configuration, "fluxgate");
        assert_eq!(settings.sans[2], "hook.platform.svc");
        assert_eq!(settings.cert_validity, Duration::from_secs(5400));
        assert_eq!(settings.grace, Duration::from_secs(2));
        assert_eq!(settings.ca_validity, Duration::from_secs(43800 * 3600));

        let err = Flags::try_parse_from([
            "fluxgate-admission-webhook",
            "--cert-mode=self-managed",
            "--cert-validity=90d",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("no unit for days"), "{err}");
        let flags = Flags::try_parse_from([
            "fluxgate-admission-webhook",
            "--cert-mode=self-managed",
            "--cert-renew-before=3000h",
        ])
        .unwrap();
        let err = flags.certificates.source(&flags.webhook).unwrap_err();
        assert!(matches!(err, ConfigError::Certificates(_)), "{err}");
    }
}
