//! A real Kubernetes control plane on loopback for end-to-end tests.
//!
//! [`ControlPlane::start`] runs etcd, kube-apiserver and
//! kube-controller-manager (built once by `tests/envtest/build.sh`) with a
//! throwaway CA, RBAC authorization and a metadata-level audit log. There is
//! no scheduler and no kubelet: objects are stored, admitted, authorized and
//! garbage collected like in a real cluster, but pods never run.
//!
//! Tests share one control plane per test binary through [`shared`] and
//! isolate themselves with [`with_temp_ns`]. Starting takes seconds, so a test
//! binary should hold many tests rather than one.
//!
//! Fault tests stop one component and start it again on the same ports,
//! certificates and data with [`ControlPlane::stop_component`] and
//! [`ControlPlane::start_component`] (or [`ControlPlane::restart_with_outage`]).

mod crds;
mod namespace;
mod pki;
pub(crate) mod process;
mod service;

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::config::{
    AuthInfo, Cluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext,
};

pub use crds::{FIELD_MANAGER, deploy_crds_dir, install_crds, load_crds};
pub use namespace::{TEST_LABEL, with_temp_ns};
pub use pki::{CertificateAuthority, IssuedCert};
pub use process::StopMode;
pub use service::{SLICE_MANAGER, routable_ip, route_service};

use pki::ServiceAccountKey;
use process::{Component, Janitor};

/// Environment variable naming a directory that already holds the binaries;
/// skips `tests/envtest/build.sh`.
pub const BIN_DIR_ENV: &str = "FLUXGATE_ENVTEST_BIN";
/// Environment variable that, when `1`, keeps the working directory (logs,
/// etcd data, kubeconfig) after the control plane stops.
pub const KEEP_ENV: &str = "FLUXGATE_KEEP_TESTENV";

const BINARIES: [&str; 4] = [
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kubectl",
];
/// Marks a directory as ours, so [`ControlPlane::start_in`] never wipes a
/// directory it did not create.
const MARKER: &str = ".fluxgate-testenv";
const CLUSTER_NAME: &str = "fluxgate-testenv";
const ADMIN_USER: &str = "fluxgate-admin";
/// The controller manager's own user, distinct from the admin so the audit
/// log tells its writes apart from the test's.
const KCM_USER: &str = "system:kube-controller-manager";
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One metadata-level event per request, written when the response is
/// complete: counting writes means counting `ResponseComplete` lines, with no
/// duplicate `RequestReceived` stage.
const AUDIT_POLICY: &str = "\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
";

/// Why the control plane or one of its helpers failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to run {}", script.display())]
    BuildScript {
        script: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} failed ({status}); its output is above", script.display())]
    BuildFailed { script: PathBuf, status: ExitStatus },
    #[error(
        "{} is missing: set {BIN_DIR_ENV} to a directory holding etcd, kube-apiserver, \
         kube-controller-manager and kubectl, or unset it to build them",
        path.display()
    )]
    MissingBinary { path: PathBuf },
    #[error("{} already exists and was not created by the test environment; refusing to wipe it", path.display())]
    ForeignDirectory { path: PathBuf },
    #[error("failed to {action} {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to find free loopback ports")]
    Ports(#[source] std::io::Error),
    #[error("failed to generate {what}")]
    Certificate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("failed to serialize a kubeconfig")]
    Kubeconfig(#[source] serde_saphyr::ser::Error),
    #[error("failed to start {component}")]
    Spawn {
        component: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{component} exited during startup ({status}); component logs:\n{logs}")]
    Exited {
        component: String,
        status: ExitStatus,
        logs: String,
    },
    #[error("{what} did not happen within {timeout:?}; component logs:\n{logs}")]
    Timeout {
        what: &'static str,
        timeout: Duration,
        logs: String,
    },
    #[error("failed to start a tokio runtime to wait for the control plane")]
    Runtime(#[source] std::io::Error),
    #[error("invalid apiserver URL {url}")]
    ServerUrl {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("failed to build a kube client")]
    Client(#[source] kube::Error),
    #[error("failed to request a token for ServiceAccount {namespace}/{name}")]
    TokenRequest {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the TokenRequest for ServiceAccount {namespace}/{name} returned no token")]
    NoToken { namespace: String, name: String },
    #[error("failed to read CRDs from {}", path.display())]
    ParseCrds {
        path: PathBuf,
        // Boxed: the parser's error is large and would bloat every Result.
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("a CRD has no metadata.name")]
    UnnamedCrd,
    #[error("failed to apply CRD {name}")]
    ApplyCrd {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to watch CRD {name}")]
    WatchCrd {
        name: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
    #[error("CRD {name} was not Established within {timeout:?}")]
    CrdNotEstablished { name: String, timeout: Duration },
    #[error(
        "this machine has no non-loopback IPv4 address for an EndpointSlice \
         (`ip -4 addr show scope global` lists none); add one, e.g. \
         `ip addr add 192.0.2.2/32 dev lo`"
    )]
    NoRoutableAddress,
    #[error("failed to {what}")]
    Route {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the shared control plane failed to start")]
    Shared(#[source] Arc<Error>),
    #[error(
        "the control plane has no component {name}; it has etcd, kube-apiserver and kube-controller-manager"
    )]
    UnknownComponent { name: String },
    #[error("{component} is still running; stop it before starting it again")]
    StillRunning { component: String },
}

/// A running etcd + kube-apiserver + kube-controller-manager.
///
/// Dropping it stops the components (SIGTERM, then SIGKILL after a grace
/// period) and removes its directory unless `FLUXGATE_KEEP_TESTENV=1` or it
/// was started with [`ControlPlane::start_in`]. The components die with the
/// process even when no destructor runs (see the `process` module).
#[derive(Debug)]
pub struct ControlPlane {
    dir: PathBuf,
    bin_dir: PathBuf,
    server_url: String,
    ca: CertificateAuthority,
    admin: IssuedCert,
    kubeconfig_path: PathBuf,
    audit_log_path: PathBuf,
    /// In start order: etcd first.
    components: Vec<Component>,
    janitor: Option<Janitor>,
    startup_time: Duration,
}

impl ControlPlane {
    /// Starts a control plane in a fresh temporary directory and waits until
    /// it serves requests and the controller manager works.
    ///
    /// Blocking; fine to call from inside an async test (it does not nest
    /// runtimes). The first call on a machine may build the binaries (~15
    /// minutes), printing progress to stderr.
    pub fn start() -> Result<Self, Error> {
        let bin_dir = locate_binaries()?;
        let keep = std::env::var_os(KEEP_ENV).is_some_and(|v| v == "1");
        let dir = tempfile::Builder::new()
            .prefix("fluxgate-testenv-")
            .tempdir()
            .map_err(|source| Error::Io {
                action: "create a temporary directory in",
                path: std::env::temp_dir(),
                source,
            })?
            // The janitor owns removal from here on: it also runs when the
            // process dies without destructors.
            .keep();
        if keep {
            eprintln!(
                "{KEEP_ENV}=1: the control plane's files stay in {}",
                dir.display()
            );
        }
        Self::start_at(bin_dir, dir, keep)
    }

    /// Starts a control plane whose files live in `dir`, for a human to use.
    ///
    /// `dir` is wiped first (only if a previous run created it) and kept
    /// after the control plane stops, so its logs can be read.
    pub fn start_in(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        let dir = dir.into();
        let bin_dir = locate_binaries()?;
        if dir.exists() {
            let ours = dir.join(MARKER).exists() || is_empty_dir(&dir);
            if !ours {
                return Err(Error::ForeignDirectory { path: dir });
            }
            std::fs::remove_dir_all(&dir).map_err(|source| Error::Io {
                action: "remove",
                path: dir.clone(),
                source,
            })?;
        }
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        Self::start_at(bin_dir, dir, true)
    }

    fn start_at(bin_dir: PathBuf, dir: PathBuf, keep: bool) -> Result<Self, Error> {
        let started = Instant::now();
        let janitor = Janitor::spawn(&dir, keep)?;
        // The directory holds the CA key and admin credentials.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(
            |source| Error::Io {
                action: "restrict permissions of",
                path: dir.clone(),
                source,
            },
        )?;
        write(&dir.join(MARKER), "")?;

        let ca = CertificateAuthority::generate()?;
        let serving = ca.issue_serving_cert(&[
            "127.0.0.1",
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
        ])?;
        let admin = ca.issue_client_cert(ADMIN_USER, &["system:masters"])?;
        // Bound to system:masters too: with --use-service-account-credentials=false
        // every controller acts as this user, and the namespace controller
        // alone needs to delete every kind of object.
        let kcm = ca.issue_client_cert(KCM_USER, &["system:masters"])?;
        let sa_key = ServiceAccountKey::generate()?;

        let [etcd_port, etcd_peer_port, apiserver_port, kcm_port] = free_ports()?;
        let server_url = format!("https://127.0.0.1:{apiserver_port}");
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_peer_url = format!("http://127.0.0.1:{etcd_peer_port}");

        let path = |name: &str| dir.join(name);
        write(&path("ca.crt"), ca.cert_pem())?;
        write(&path("ca.key"), ca.key_pem())?;
        write(&path("apiserver.crt"), &serving.cert_pem)?;
        write(&path("apiserver.key"), &serving.key_pem)?;
        write(&path("service-account.key"), &sa_key.private_pem)?;
        write(&path("service-account.pub"), &sa_key.public_pem)?;
        write(&path("audit-policy.yaml"), AUDIT_POLICY)?;
        let kubeconfig_path = path("kubeconfig");
        write_kubeconfig(&kubeconfig_path, &server_url, &ca, ADMIN_USER, &admin)?;
        write_kubeconfig(
            &path("controller-manager.kubeconfig"),
            &server_url,
            &ca,
            KCM_USER,
            &kcm,
        )?;
        let audit_log_path = path("audit.log");

        let mut control_plane = Self {
            dir: dir.clone(),
            bin_dir,
            server_url,
            ca,
            admin,
            kubeconfig_path,
            audit_log_path,
            components: Vec::new(),
            janitor: Some(janitor),
            startup_time: Duration::ZERO,
        };
        // From here on, an early return drops `control_plane`, which stops
        // whatever has started.
        let flag = |name: &str, value: &dyn AsRef<OsStr>| {
            let mut arg = OsString::from(format!("--{name}="));
            arg.push(value.as_ref());
            arg
        };
        let file = |name: &str| path(name).into_os_string();

        control_plane.spawn(
            "etcd",
            vec![
                flag("name", &"fluxgate-testenv"),
                flag("data-dir", &file("etcd-data")),
                flag("listen-client-urls", &etcd_url),
                flag("advertise-client-urls", &etcd_url),
                flag("listen-peer-urls", &etcd_peer_url),
                flag("initial-advertise-peer-urls", &etcd_peer_url),
                flag(
                    "initial-cluster",
                    &format!("fluxgate-testenv={etcd_peer_url}"),
                ),
                // Test data is disposable; fsync dominates etcd latency.
                flag("unsafe-no-fsync", &"true"),
                flag("log-level", &"warn"),
            ],
            &["kube-apiserver"],
        )?;

        control_plane.spawn(
            "kube-apiserver",
            vec![
                flag("bind-address", &"127.0.0.1"),
                flag("advertise-address", &"127.0.0.1"),
                // The lease and master-count endpoint reconcilers refuse a
                // loopback advertise address at startup ("may not be in the
                // loopback range") and the apiserver exits;
                // `none` skips publishing the `kubernetes` Service endpoints,
                // which nothing here uses (kube-apiserver's own test server
                // does the same).
                flag("endpoint-reconciler-type", &"none"),
                flag("secure-port", &apiserver_port.to_string()),
                flag("etcd-servers", &etcd_url),
                flag("tls-cert-file", &file("apiserver.crt")),
                flag("tls-private-key-file", &file("apiserver.key")),
                flag("client-ca-file", &file("ca.crt")),
                flag("authorization-mode", &"RBAC"),
                flag("service-account-issuer", &"https://kubernetes.default.svc"),
                flag("service-account-key-file", &file("service-account.pub")),
                flag(
                    "service-account-signing-key-file",
                    &file("service-account.key"),
                ),
                flag("service-cluster-ip-range", &"10.96.0.0/16"),
                flag("allow-privileged", &"true"),
                // Skips creating the APF configuration objects at startup;
                // one test client cannot overload the server anyway.
                flag("enable-priority-and-fairness", &"false"),
                flag("audit-policy-file", &file("audit-policy.yaml")),
                flag("audit-log-path", &file("audit.log")),
                flag("audit-log-format", &"json"),
                // Events are on disk before the response is sent, so a test
                // can count them right after its request returns.
                flag("audit-log-mode", &"blocking"),
                flag("profiling", &"false"),
                // Webhooks registered by Service are reached at one of the
                // Service's EndpointSlice addresses (no kube-proxy here);
                // see service.rs.
                flag("enable-aggregator-routing", &"true"),
            ],
            &[],
        )?;
        control_plane.wait_for(Probe::Readyz)?;

        control_plane.spawn(
            "kube-controller-manager",
            vec![
                flag("kubeconfig", &file("controller-manager.kubeconfig")),
                flag(
                    "service-account-private-key-file",
                    &file("service-account.key"),
                ),
                flag("root-ca-file", &file("ca.crt")),
                flag("leader-elect", &"false"),
                flag("bind-address", &"127.0.0.1"),
                flag("secure-port", &kcm_port.to_string()),
                flag("use-service-account-credentials", &"false"),
                // The node and cloud controllers are off by default or idle
                // without nodes; everything else (namespace deletion, garbage
                // collection, ServiceAccounts) is what tests rely on.
                flag("controllers", &"*"),
                flag("profiling", &"false"),
            ],
            &[],
        )?;
        control_plane.wait_for(Probe::DefaultServiceAccount)?;

        control_plane.startup_time = started.elapsed();
        tracing::info!(
            dir = %control_plane.dir.display(),
            server = %control_plane.server_url,
            startup = ?control_plane.startup_time,
            "control plane ready"
        );
        Ok(control_plane)
    }

    fn spawn(
        &mut self,
        name: &'static str,
        args: Vec<OsString>,
        stop_after: &[&str],
    ) -> Result<(), Error> {
        let program = self.bin_dir.join(name);
        let component = Component::spawn(name, &program, &args, &self.dir, stop_after)?;
        self.components.push(component);
        Ok(())
    }

    /// Polls `probe` until it passes, failing early when a component exits.
    fn wait_for(&self, probe: Probe) -> Result<(), Error> {
        enum Outcome {
            Ready,
            Exited(String, ExitStatus),
            TimedOut,
        }
        let config = self.config(self.admin_auth_info())?;
        let components = &self.components;
        // The caller may be inside a runtime (an async test calling
        // `shared()`), where `block_on` would panic: poll from a thread
        // with its own runtime instead.
        let outcome = std::thread::scope(|scope| {
            let poller = scope.spawn(move || -> Result<Outcome, Error> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(Error::Runtime)?;
                runtime.block_on(async move {
                    let client = kube::Client::try_from(config).map_err(Error::Client)?;
                    let deadline = Instant::now() + READY_TIMEOUT;
                    loop {
                        for component in components {
                            if let Some(status) = component.exited() {
                                return Ok(Outcome::Exited(component.name.clone(), status));
                            }
                        }
                        let attempt = tokio::time::timeout(
                            Duration::from_secs(5),
                            probe.passes(client.clone()),
                        );
                        if attempt.await == Ok(true) {
                            return Ok(Outcome::Ready);
                        }
                        if Instant::now() >= deadline {
                            return Ok(Outcome::TimedOut);
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                })
            });
            poller
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })?;
        match outcome {
            Outcome::Ready => Ok(()),
            Outcome::Exited(component, status) => Err(Error::Exited {
                component,
                status,
                logs: self.logs_tail(40),
            }),
            Outcome::TimedOut => Err(Error::Timeout {
                what: probe.describe(),
                timeout: READY_TIMEOUT,
                logs: self.logs_tail(40),
            }),
        }
    }

    /// A new admin client (user `fluxgate-admin`, group `system:masters`).
    ///
    /// Each call builds a new client: a client is bound to the runtime it was
    /// created on, and every `#[tokio::test]` has its own. Must be called from
    /// within a tokio runtime.
    pub fn client(&self) -> Result<kube::Client, Error> {
        kube::Client::try_from(self.config(self.admin_auth_info())?).map_err(Error::Client)
    }

    /// A new client that authenticates with a bearer `token`, such as one from
    /// [`service_account_token`], so RBAC applies to it.
    pub fn client_for_token(&self, token: &str) -> Result<kube::Client, Error> {
        let auth_info = AuthInfo {
            token: Some(token.to_owned().into()),
            ..AuthInfo::default()
        };
        kube::Client::try_from(self.config(auth_info)?).map_err(Error::Client)
    }

    fn config(&self, auth_info: AuthInfo) -> Result<kube::Config, Error> {
        install_crypto_provider();
        let url = self.server_url.parse().map_err(|source| Error::ServerUrl {
            url: self.server_url.clone(),
            source,
        })?;
        let mut config = kube::Config::new(url);
        config.root_cert = Some(vec![self.ca.cert_der().to_vec()]);
        config.auth_info = auth_info;
        Ok(config)
    }

    fn admin_auth_info(&self) -> AuthInfo {
        auth_info(&self.admin)
    }

    /// `kubectl --kubeconfig <admin kubeconfig> <args>`, not yet run.
    pub fn kubectl<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(self.bin_dir.join("kubectl"));
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig_path)
            // Keeps discovery caches for throwaway ports out of ~/.kube.
            .arg("--cache-dir")
            .arg(self.dir.join("kubectl-cache"))
            .args(args)
            .stdin(Stdio::null());
        command
    }

    /// The admin kubeconfig (certificates embedded).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The directory holding etcd, kube-apiserver, kube-controller-manager
    /// and kubectl.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The working directory: certificates, kubeconfigs, logs, etcd data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The apiserver's JSON-lines audit log: one `ResponseComplete` event
    /// per request at `Metadata` level.
    pub fn audit_log_path(&self) -> &Path {
        &self.audit_log_path
    }

    /// The apiserver URL, `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The CA that signed the apiserver's certificate and trusts client
    /// certificates it issues; it also mints webhook serving certificates.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The CA certificate, PEM encoded.
    pub fn ca_cert_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// How long [`ControlPlane::start`] took, from generating certificates
    /// to the `default` ServiceAccount existing.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// The component named `name` (`etcd`, `kube-apiserver`,
    /// `kube-controller-manager`).
    fn component(&self, name: &str) -> Result<&Component, Error> {
        self.components
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| Error::UnknownComponent {
                name: name.to_owned(),
            })
    }

    /// Stops one component now (`etcd`, `kube-apiserver` or
    /// `kube-controller-manager`), leaving the others running, and waits
    /// until it has exited: with [`StopMode::Graceful`] SIGTERM (SIGKILL
    /// after a grace period), with [`StopMode::Kill`] SIGKILL at once.
    ///
    /// For fault tests; [`ControlPlane::start_component`] starts it again
    /// with the same ports, certificates and data. Blocking (up to the grace
    /// period): call it from `spawn_blocking` in an async test. Stopping a
    /// component that has exited already does nothing.
    pub fn stop_component(&self, name: &str, mode: StopMode) -> Result<(), Error> {
        let component = self.component(name)?;
        let status = component.stop_now(mode);
        tracing::info!(component = name, ?mode, ?status, "stopped a component");
        Ok(())
    }

    /// Starts a component stopped by [`ControlPlane::stop_component`] again,
    /// with its original command line (same ports, certificates, etcd data
    /// directory; its log is appended to), and waits until kube-apiserver's
    /// `/readyz` passes again (which covers etcd). Returns how long that
    /// took from the start of the component.
    ///
    /// Blocking; it does not nest runtimes, so it may be called from inside
    /// an async test, but it blocks that thread: prefer `spawn_blocking`.
    pub fn start_component(&self, name: &str) -> Result<Duration, Error> {
        let component = self.component(name)?;
        let started = Instant::now();
        component.restart()?;
        self.wait_for(Probe::Readyz)?;
        let ready = started.elapsed();
        tracing::info!(component = name, ready = ?ready, "started a component again");
        Ok(ready)
    }

    /// Stops `name` ([`StopMode::Graceful`]), keeps it down for `outage`,
    /// then starts it again and waits for `/readyz`
    /// (see [`ControlPlane::stop_component`] and
    /// [`ControlPlane::start_component`]). Returns how long the control
    /// plane took to be ready once the component was started again.
    pub fn restart_with_outage(&self, name: &str, outage: Duration) -> Result<Duration, Error> {
        self.stop_component(name, StopMode::Graceful)?;
        std::thread::sleep(outage);
        self.start_component(name)
    }

    /// Whether component `name` is running (it has not exited).
    pub fn is_running(&self, name: &str) -> Result<bool, Error> {
        Ok(self.component(name)?.exited().is_none())
    }

    /// The last `lines` lines of each component's log, with headers.
    pub fn logs_tail(&self, lines: usize) -> String {
        let mut out = String::new();
        for component in &self.components {
            out.push_str(&format!(
                "==> {} ({}) <==\n{}\n",
                component.name,
                component.log_path.display(),
                component.log_tail(lines)
            ));
        }
        out
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The controller manager and the apiserver stop together; etcd
        // last, so the apiserver can finish in-flight writes.
        if let Some((etcd, rest)) = self.components.split_first_mut() {
            rest.iter_mut().for_each(Component::request_stop);
            rest.iter_mut().for_each(Component::wait_stopped);
            etcd.wait_stopped();
        }
        self.components.clear();
        if let Some(mut janitor) = self.janitor.take() {
            janitor.finish();
        }
    }
}

/// What [`ControlPlane::wait_for`] waits for.
#[derive(Clone, Copy)]
enum Probe {
    Readyz,
    DefaultServiceAccount,
}

impl Probe {
    async fn passes(self, client: kube::Client) -> bool {
        match self {
            Probe::Readyz => {
                let Ok(request) = http::Request::get("/readyz").body(Vec::new()) else {
                    return false;
                };
                client
                    .request_text(request)
                    .await
                    .is_ok_and(|body| body.trim() == "ok")
            }
            // The ServiceAccount controller creates it, so it proves the
            // controller manager is up and talking to the apiserver.
            Probe::DefaultServiceAccount => Api::<ServiceAccount>::namespaced(client, "default")
                .get_opt("default")
                .await
                .is_ok_and(|sa| sa.is_some()),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Probe::Readyz => "kube-apiserver /readyz returning ok",
            Probe::DefaultServiceAccount => {
                "kube-controller-manager creating ServiceAccount default/default"
            }
        }
    }
}

/// The control plane shared by every test in this test binary, started on
/// first use. Another test binary gets its own.
///
/// It is never dropped (statics are not); its components stop and its
/// directory is removed when the test process exits.
pub fn shared() -> Result<&'static ControlPlane, Error> {
    match SHARED.get_or_init(|| ControlPlane::start().map_err(Arc::new)) {
        Ok(control_plane) => Ok(control_plane),
        Err(err) => Err(Error::Shared(Arc::clone(err))),
    }
}

/// The shared control plane if this test binary has started it (for
/// diagnostics: never starts one).
pub fn shared_if_started() -> Option<&'static ControlPlane> {
    SHARED.get()?.as_ref().ok()
}

static SHARED: OnceLock<Result<ControlPlane, Arc<Error>>> = OnceLock::new();

/// A token for ServiceAccount `namespace/name` from the TokenRequest API
/// (valid for an hour, audience: the apiserver).
pub async fn service_account_token(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<String, Error> {
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let response: TokenRequest = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_subresource("token", name, &PostParams::default(), &request)
        .await
        .map_err(|source| Error::TokenRequest {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })?;
    response
        .status
        .and_then(|status| status.token)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| Error::NoToken {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
}

/// Finds the binaries: `$FLUXGATE_ENVTEST_BIN`, or the last line that
/// `tests/envtest/build.sh` prints (it builds them on first use).
fn locate_binaries() -> Result<PathBuf, Error> {
    let dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) => PathBuf::from(dir),
        None => {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("envtest/build.sh");
            // stderr is inherited: a cold build takes minutes and its
            // progress should be visible, even under `cargo test`.
            let output = Command::new(&script)
                .stdin(Stdio::null())
                .stderr(Stdio::inherit())
                .output()
                .map_err(|source| Error::BuildScript {
                    script: script.clone(),
                    source,
                })?;
            if !output.status.success() {
                return Err(Error::BuildFailed {
                    script,
                    status: output.status,
                });
            }
            let stdout = String::from_utf8_lossy(&output.stdout);
            let last = stdout.lines().map(str::trim).rfind(|l| !l.is_empty());
            PathBuf::from(last.unwrap_or_default())
        }
    };
    for binary in BINARIES {
        let path = dir.join(binary);
        if !path.is_file() {
            return Err(Error::MissingBinary { path });
        }
    }
    Ok(dir)
}

/// Picks free loopback ports. All listeners are held until every port is
/// chosen, so the ports differ from each other; another process can still
/// take one before a component binds it, which is rare enough for tests.
fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let mut listeners = Vec::with_capacity(N);
    let mut ports = [0; N];
    for port in &mut ports {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(Error::Ports)?;
        *port = listener.local_addr().map_err(Error::Ports)?.port();
        listeners.push(listener);
    }
    Ok(ports)
}

fn write(path: &Path, contents: &str) -> Result<(), Error> {
    std::fs::write(path, contents).map_err(|source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    })
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn auth_info(cert: &IssuedCert) -> AuthInfo {
    AuthInfo {
        client_certificate_data: Some(base64(&cert.cert_pem)),
        client_key_data: Some(base64(&cert.key_pem).into()),
        ..AuthInfo::default()
    }
}

fn write_kubeconfig(
    path: &Path,
    server_url: &str,
    ca: &CertificateAuthority,
    user: &str,
    cert: &IssuedCert,
) -> Result<(), Error> {
    let kubeconfig = Kubeconfig {
        api_version: Some("v1".into()),
        kind: Some("Config".into()),
        clusters: vec![NamedCluster {
            name: CLUSTER_NAME.into(),
            cluster: Some(Cluster {
                server: Some(server_url.into()),
                certificate_authority_data: Some(base64(ca.cert_pem())),
                ..Cluster::default()
            }),
            ..NamedCluster::default()
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user.into(),
            auth_info: Some(auth_info(cert)),
            ..NamedAuthInfo::default()
        }],
        contexts: vec![NamedContext {
            name: CLUSTER_NAME.into(),
            context: Some(Context {
                cluster: CLUSTER_NAME.into(),
                user: Some(user.into()),
                ..Context::default()
            }),
            ..NamedContext::default()
        }],
        current_context: Some(CLUSTER_NAME.into()),
        ..Kubeconfig::default()
    };
    let yaml = serde_saphyr::to_string(&kubeconfig).map_err(Error::Kubeconfig)?;
    write(path, &yaml)
}

/// kube's rustls needs a process-wide crypto provider; with more than one
/// compiled in (another crate may enable aws-lc-rs), rustls cannot pick one.
fn install_crypto_provider() {
    // Err only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
