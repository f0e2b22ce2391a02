//! The control plane's certificates: one throwaway CA signs the apiserver's
//! serving certificate and every client certificate, so a single
//! `--client-ca-file` and a single kubeconfig CA cover everything. Tests reuse
//! the CA to mint webhook serving certificates the apiserver will trust.

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::Error;

/// The control plane's certificate authority.
///
/// Certificates it issues are trusted by the apiserver as client certificates
/// (`--client-ca-file`) and by every client the harness builds as serving
/// certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its private key, both PEM encoded (the key as PKCS#8).
#[derive(Clone)]
pub struct IssuedCert {
    /// The certificate, PEM encoded.
    pub cert_pem: String,
    /// The private key, PEM encoded (PKCS#8, ECDSA P-256).
    pub key_pem: String,
}

// Keys stay out of test output: a failing assertion that prints a
// `ControlPlane` should not dump private keys into CI logs.
impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    pub(crate) fn generate() -> Result<Self, Error> {
        let cert_err = |source| Error::Certificate {
            what: "the CA",
            source,
        };
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "fluxgate-testenv-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(cert_err)?;
        let cert = params.self_signed(&key).map_err(cert_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM encoded: what a webhook configuration's
    /// `caBundle` needs (base64 of these bytes).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM encoded, for tests that sign with other tools.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    pub(crate) fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Issues a TLS serving certificate for `sans` (DNS names or IP addresses),
    /// for example a webhook at `127.0.0.1` that the apiserver must trust.
    pub fn issue_serving_cert(&self, sans: &[&str]) -> Result<IssuedCert, Error> {
        let cert_err = |source| Error::Certificate {
            what: "a serving certificate",
            source,
        };
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).map_err(cert_err)?;
        if let Some(first) = params.subject_alt_names.first() {
            let cn = match first {
                rcgen::SanType::DnsName(name) => name.to_string(),
                rcgen::SanType::IpAddress(ip) => ip.to_string(),
                _ => "fluxgate-testenv".to_string(),
            };
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params).map_err(cert_err)
    }

    /// Issues a client certificate that the apiserver authenticates as user
    /// `common_name` in `groups` (the certificate's O fields).
    pub fn issue_client_cert(
        &self,
        common_name: &str,
        groups: &[&str],
    ) -> Result<IssuedCert, Error> {
        let cert_err = |source| Error::Certificate {
            what: "a client certificate",
            source,
        };
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        for group in groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, *group);
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params).map_err(cert_err)
    }

    fn sign(&self, params: CertificateParams) -> Result<IssuedCert, rcgen::Error> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// The key pair that signs and verifies ServiceAccount tokens.
///
/// ECDSA P-256 works for both `--service-account-signing-key-file` (the
/// apiserver signs ES256 tokens) and `--service-account-key-file`; RSA is not
/// required.
pub(crate) struct ServiceAccountKey {
    pub(crate) private_pem: String,
    pub(crate) public_pem: String,
}

impl ServiceAccountKey {
    pub(crate) fn generate() -> Result<Self, Error> {
        let key = KeyPair::generate().map_err(|source| Error::Certificate {
            what: "the ServiceAccount signing key",
            source,
        })?;
        Ok(Self {
            private_pem: key.serialize_pem(),
            public_pem: key.public_key_pem(),
        })
    }
}
