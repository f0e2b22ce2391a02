//! The serving certificate, reloaded without a restart.
//!
//! [`CertReloader`] is a rustls [`ResolvesServerCert`] backed by an
//! [`ArcSwap`]: every handshake takes the current certificate, and
//! [`CertReloader::reload_if_changed`], polled every few seconds, swaps in a
//! new one when the files' contents change. A pair that fails to load (a
//! half-written file, a key that does not match the certificate while a
//! rotation is in progress) is logged and the old certificate stays in
//! service; the same pair is not retried until the files change again.
//! Comparing contents rather than modification times also catches the
//! symlink swap with which Kubernetes updates mounted Secrets.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
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
    /// A file holds no usable PEM data.
    #[error("cannot parse {what} in {}", path.display())]
    Pem {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate in {}", path.display())]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key is unusable or does not match the certificate.
    #[error("the key in {} cannot serve the certificate in {}", key.display(), cert.display())]
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
    /// rustls refused the server configuration.
    #[error("cannot build the TLS server configuration")]
    Config(#[source] rustls::Error),
}

/// The file contents last loaded or tried.
type Contents = (Vec<u8>, Vec<u8>);

/// Serves the current certificate and reloads it from its files.
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<CertifiedKey>,
    /// Contents of the last attempt, successful or not.
    last_seen: Mutex<Contents>,
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
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let contents = read_pair(cert_path, key_path)?;
        let key = certified_key(cert_path, key_path, &contents, &provider)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            provider,
            current: ArcSwap::from_pointee(key),
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
        let key = certified_key(&self.cert_path, &self.key_path, &contents, &self.provider)?;
        self.current.store(Arc::new(key));
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

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current.load_full()
    }

    /// A rustls server configuration (ring, TLS 1.2 and 1.3, ALPN `h2` and
    /// `http/1.1`) that serves this reloader's certificate.
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

impl ResolvesServerCert for CertReloader {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<Contents, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok((read(cert)?, read(key)?))
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    (cert_pem, key_pem): &Contents,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: "certificate",
            path: cert_path.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Pem {
        what: "private key",
        path: key_path.to_owned(),
        source,
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Key {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(name: &str) -> (String, String) {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (cert.cert.pem(), cert.signing_key.serialize_pem())
    }

    #[test]
    fn reloads_changed_files_and_keeps_the_old_pair_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let (cert, key) = self_signed("one.example");
        std::fs::write(&cert_path, &cert).unwrap();
        std::fs::write(&key_path, &key).unwrap();
        let reloader = CertReloader::load(&cert_path, &key_path).unwrap();
        let first = reloader.current();
        assert!(!reloader.reload_if_changed().unwrap(), "nothing changed");

        // Rotation half done: new certificate, old key. Refused, old kept.
        let (cert2, key2) = self_signed("two.example");
        std::fs::write(&cert_path, &cert2).unwrap();
        let err = reloader.reload_if_changed().unwrap_err();
        assert!(matches!(err, TlsError::Key { .. }), "{err:?}");
        assert_eq!(reloader.current().cert, first.cert);
        // The same broken pair is not retried (and not logged again).
        assert!(!reloader.reload_if_changed().unwrap());

        std::fs::write(&key_path, &key2).unwrap();
        assert!(reloader.reload_if_changed().unwrap());
        assert_ne!(reloader.current().cert, first.cert);

        std::fs::write(&cert_path, "garbage").unwrap();
        assert!(reloader.reload_if_changed().is_err());
        assert_ne!(reloader.current().cert, first.cert, "still the second pair");
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
}
