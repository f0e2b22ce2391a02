//! The serving certificate, swapped without a restart.
//!
//! [`ServingCert`] is a rustls [`ResolvesServerCert`] backed by an
//! [`ArcSwapOption`]: every handshake takes the certificate current at that
//! moment, and [`ServingCert::install`] swaps in a new one, from whatever
//! source. It may start empty (self-managed mode, before the Secret has a
//! certificate): handshakes fail then, and `/readyz` says so.
//!
//! Two sources feed it:
//!
//! - [`CertReloader`] (`--cert-mode files`) polls a certificate and key file
//!   every few seconds and installs them when their contents change. A pair
//!   that fails to load (a half-written file, a key that does not match the
//!   certificate while a rotation is in progress) is logged and the old
//!   certificate stays in service; the same pair is not retried until the
//!   files change again. Comparing contents rather than modification times
//!   also catches the symlink swap with which Kubernetes updates mounted
//!   Secrets.
//! - the certificate controller (`--cert-mode self-managed`, see `certs`)
//!   installs the pair from the Secret it watches, from memory.
//!
//! Connections that are already open keep the certificate they were
//! established with; only new handshakes see a swap.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why a certificate or key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The data holds no usable PEM.
    #[error("cannot parse the {what} in {origin}")]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// Where it came from: a file, or a Secret.
        origin: String,
        /// The parse error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate data holds no certificate.
    #[error("no certificate in {origin}")]
    NoCertificate {
        /// Where it came from: a file, or a Secret.
        origin: String,
    },
    /// The key is unusable or does not match the certificate.
    #[error("the private key cannot serve the certificate in {origin}")]
    Key {
        /// Where they came from: the two files, or a Secret.
        origin: String,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// The certificate's validity period cannot be read.
    #[error("cannot read the validity of the certificate in {origin}")]
    Validity {
        /// Where it came from.
        origin: String,
    },
    /// rustls refused the server configuration.
    #[error("cannot build the TLS server configuration")]
    Config(#[source] rustls::Error),
}

/// A certificate chain and its private key, PEM encoded, as they are stored
/// in files and Secrets. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct PemPair {
    /// The certificate chain, leaf first.
    pub cert: Vec<u8>,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Vec<u8>,
}

impl fmt::Debug for PemPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemPair")
            .field("cert", &String::from_utf8_lossy(&self.cert))
            .finish_non_exhaustive()
    }
}

/// What is served now.
struct Loaded {
    key: Arc<CertifiedKey>,
    pem: PemPair,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// The certificate served to every new TLS handshake; empty until a first
/// one is installed.
pub struct ServingCert {
    provider: Arc<CryptoProvider>,
    current: ArcSwapOption<Loaded>,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("ServingCert")
            .field("serving", &current.is_some())
            .field("not_after", &current.as_ref().map(|l| l.not_after))
            .finish_non_exhaustive()
    }
}

impl Default for ServingCert {
    fn default() -> Self {
        Self::new()
    }
}

impl ServingCert {
    /// Nothing served yet (ring provider).
    pub fn new() -> Self {
        Self {
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            current: ArcSwapOption::empty(),
        }
    }

    /// Serves `pair` from the next handshake on, unless it does not load
    /// (then the current one stays). `origin` names where the pair came
    /// from, for errors. `Ok(false)` when `pair` is the one served already.
    pub fn install(&self, pair: &PemPair, origin: &str) -> Result<bool, TlsError> {
        if self
            .current
            .load()
            .as_ref()
            .is_some_and(|loaded| loaded.pem == *pair)
        {
            return Ok(false);
        }
        let loaded = load(pair, origin, origin, &self.provider)?;
        self.current.store(Some(Arc::new(loaded)));
        Ok(true)
    }

    /// The certificate served now, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|l| Arc::clone(&l.key))
    }

    /// The PEM of the pair served now, if any (the certificate controller
    /// keeps serving it when the Secret is lost).
    pub fn current_pem(&self) -> Option<PemPair> {
        self.current.load().as_ref().map(|l| l.pem.clone())
    }

    /// When the certificate served now expires, if one is served.
    pub fn not_after(&self) -> Option<SystemTime> {
        self.current.load().as_ref().map(|l| l.not_after)
    }

    /// Whether a certificate is served that is valid at `now`.
    pub fn is_valid_at(&self, now: SystemTime) -> bool {
        self.current
            .load()
            .as_ref()
            .is_some_and(|l| l.not_before <= now && now < l.not_after)
    }

    /// A rustls server configuration (ring, TLS 1.2 and 1.3, ALPN `h2` and
    /// `http/1.1`) that serves the current certificate at each handshake.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        let mut config = ServerConfig::builder_with_provider(Arc::clone(&self.provider))
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(self) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

/// Serves a certificate and key from files and reloads them when they
/// change (`--cert-mode files`).
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    serving: Arc<ServingCert>,
    /// Contents of the last attempt, successful or not.
    last_seen: Mutex<PemPair>,
}

impl fmt::Debug for CertReloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertReloader")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl CertReloader {
    /// Loads the certificate chain and key (PEM) from their files; fails
    /// when they cannot be used, since there is nothing to serve then.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let serving = Arc::new(ServingCert::new());
        let contents = read_pair(cert_path, key_path)?;
        let loaded = load(
            &contents,
            &cert_path.display().to_string(),
            &format!("{} and {}", cert_path.display(), key_path.display()),
            &serving.provider,
        )?;
        serving.current.store(Some(Arc::new(loaded)));
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            serving,
            last_seen: Mutex::new(contents),
        })
    }

    /// Reloads the pair when the files' contents differ from the last
    /// attempt. `Ok(true)` when a new certificate is now served; on an
    /// error the previous one stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let contents = read_pair(&self.cert_path, &self.key_path)?;
        {
            // A poisoned lock only means a previous reload panicked halfway;
            // the contents are still a valid value to compare with.
            let mut last = self
                .last_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if *last == contents {
                return Ok(false);
            }
            *last = contents.clone();
        }
        let loaded = load(
            &contents,
            &self.cert_path.display().to_string(),
            &format!(
                "{} and {}",
                self.cert_path.display(),
                self.key_path.display()
            ),
            &self.serving.provider,
        )?;
        self.serving.current.store(Some(Arc::new(loaded)));
        Ok(true)
    }

    /// Polls the files every `interval` until the task is dropped, logging
    /// each reload and each failure.
    pub async fn poll(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let reloader = Arc::clone(&self);
            match tokio::task::spawn_blocking(move || reloader.reload_if_changed()).await {
                Ok(Ok(true)) => tracing::info!(
                    cert = %self.cert_path.display(),
                    "serving certificate reloaded"
                ),
                Ok(Ok(false)) => {}
                Ok(Err(err)) => tracing::error!(
                    error = %crate::error_chain(&err),
                    "cannot reload the serving certificate; keeping the previous one"
                ),
                Err(err) => tracing::error!(error = %err, "certificate reload task failed"),
            }
        }
    }

    /// The certificate served now (always one once loaded).
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.serving.current()
    }

    /// What the TLS server resolves certificates from.
    pub fn serving(&self) -> &Arc<ServingCert> {
        &self.serving
    }

    /// A rustls server configuration (ring, TLS 1.2 and 1.3, ALPN `h2` and
    /// `http/1.1`) that serves this reloader's certificate.
    pub fn server_config(self: &Arc<Self>) -> Result<ServerConfig, TlsError> {
        self.serving.server_config()
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<PemPair, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok(PemPair {
        cert: read(cert)?,
        key: read(key)?,
    })
}

/// Loads `pair`; `cert_origin` names the certificate's origin and
/// `pair_origin` both, for errors.
fn load(
    pair: &PemPair,
    cert_origin: &str,
    pair_origin: &str,
    provider: &CryptoProvider,
) -> Result<Loaded, TlsError> {
    let chain = CertificateDer::pem_slice_iter(&pair.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: "certificate",
            origin: cert_origin.to_owned(),
            source,
        })?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate {
            origin: cert_origin.to_owned(),
        });
    };
    let (not_before, not_after) =
        crate::certs::validity_of(leaf).ok_or_else(|| TlsError::Validity {
            origin: cert_origin.to_owned(),
        })?;
    let key = PrivateKeyDer::from_pem_slice(&pair.key).map_err(|source| TlsError::Pem {
        what: "private key",
        origin: pair_origin.to_owned(),
        source,
    })?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Key {
        origin: pair_origin.to_owned(),
        source,
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        pem: pair.clone(),
        not_before,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    fn pair((cert, key): &(String, String)) -> PemPair {
        PemPair {
            cert: cert.clone().into_bytes(),
            key: key.clone().into_bytes(),
        }
    }

    #[test]
    fn reloads_changed_files_and_keeps_the_old_pair_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (cert, key) = self_signed("one.example");
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let reloader = CertReloader::load(&cert_path, &key_path).unwrap();
        let first = reloader.current().unwrap();
        assert!(!reloader.reload_if_changed().unwrap(), "nothing changed");

        // Rotation half done: new certificate, old key. Refused, old kept.
        let (cert2, key2) = self_signed("two.example");
        std::fs::write(&cert_path, &cert2).unwrap();
        let err = reloader.reload_if_changed().unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err:?}");
        assert_eq!(reloader.current().unwrap().cert, first.cert);
        // The same broken pair is not retried (and not logged again).
        assert!(!reloader.reload_if_changed().unwrap());

        std::fs::write(&key_path, &key2).unwrap();
        assert!(reloader.reload_if_changed().unwrap());
        assert_ne!(reloader.current().unwrap().cert, first.cert);

        std::fs::write(&cert_path, "garbage").unwrap();
        assert!(reloader.reload_if_changed().is_err());
        assert_ne!(
            reloader.current().unwrap().cert,
            first.cert,
            "still the second pair"
        );
    }

    #[test]
    fn refuses_to_start_without_a_usable_pair() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert!(matches!(
            CertReloader::load(&missing, &missing),
            Err(TlsError::Read { .. })
        ));
    }

    #[test]
    fn serves_nothing_until_a_pair_is_installed_from_memory_and_keeps_it_on_failure() {
        let serving = ServingCert::new();
        assert!(serving.current().is_none());
        assert!(!serving.is_valid_at(SystemTime::now()));

        let one = pair(&self_signed("one.example"));
        assert!(serving.install(&one, "Secret ns/tls").unwrap());
        assert!(
            !serving.install(&one, "Secret ns/tls").unwrap(),
            "same pair"
        );
        assert!(serving.is_valid_at(SystemTime::now()));
        assert_eq!(serving.current_pem().unwrap(), one);

        // A mismatched or garbage pair is refused; the first stays.
        let two = pair(&self_signed("two.example"));
        let mismatched = PemPair {
            cert: two.cert.clone(),
            key: one.key.clone(),
        };
        let err = serving.install(&mismatched, "Secret ns/tls").unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err:?}");
        assert!(err.to_string().contains("Secret ns/tls"), "{err}");
        let garbage = PemPair {
            cert: b"garbage".to_vec(),
            key: b"garbage".to_vec(),
        };
        assert!(serving.install(&garbage, "Secret ns/tls").is_err());
        assert_eq!(serving.current_pem().unwrap(), one);

        assert!(serving.install(&two, "Secret ns/tls").unwrap());
        assert_eq!(serving.current_pem().unwrap(), two);
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let one = pair(&self_signed("one.example"));
        let shown = format!("{one:?}");
        assert!(shown.contains("BEGIN CERTIFICATE"));
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }
}
