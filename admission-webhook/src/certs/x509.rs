//! Reading certificates and keys back: the few facts of an X.509
//! certificate the planner needs (validity, CA flag, DNS names, public key,
//! issuer signature), PEM in and out. Nothing here fails on bad input: a
//! certificate that cannot be read is simply not there, which is what the
//! planner needs to repair it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer as _, X509Certificate};

/// The facts of one certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct Cert {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// Whether basic constraints say it is a CA.
    pub is_ca: bool,
    /// DNS names among its subject alternative names.
    pub dns_names: Vec<String>,
    /// The subject public key (the bit string's bytes).
    pub public_key: Vec<u8>,
    /// The subject, for logs.
    pub subject: String,
    /// The serial number, hex with colons, for logs.
    pub serial: String,
}

impl std::fmt::Debug for Cert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cert")
            .field("subject", &self.subject)
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Cert {
    /// Reads a DER certificate; `None` when it is not one.
    pub fn parse(der: &[u8]) -> Option<Self> {
        let (rest, cert) = X509Certificate::from_der(der).ok()?;
        if !rest.is_empty() {
            return None;
        }
        let validity = cert.validity();
        let dns_names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(_) => return None,
        };
        Some(Self {
            der: der.to_vec(),
            not_before: system_time(validity.not_before.timestamp()),
            not_after: system_time(validity.not_after.timestamp()),
            is_ca: cert.is_ca(),
            dns_names,
            public_key: cert.public_key().subject_public_key.data.to_vec(),
            subject: cert.subject().to_string(),
            serial: cert.raw_serial_as_string(),
        })
    }

    /// Whether `now` is inside the validity period.
    pub fn valid_at(&self, now: SystemTime) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// Whether `issuer`'s key signed this certificate.
    pub fn signed_by(&self, issuer: &Cert) -> bool {
        let (Ok((_, child)), Ok((_, parent))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&issuer.der),
        ) else {
            return false;
        };
        child.issuer() == parent.subject()
            && child.verify_signature(Some(parent.public_key())).is_ok()
    }

    /// Whether its DNS names include every one of `names`.
    pub fn covers(&self, names: &[String]) -> bool {
        names.iter().all(|n| self.dns_names.iter().any(|d| d == n))
    }
}

/// Reads every certificate of a PEM bundle. The flag is false when some
/// part of it could not be read (garbage, a broken block, a certificate
/// that does not parse); what could be read is returned all the same.
pub fn certs_from_pem(pem: &[u8]) -> (Vec<Cert>, bool) {
    let mut clean = true;
    let mut certs = Vec::new();
    for der in CertificateDer::pem_slice_iter(pem) {
        match der.ok().and_then(|der| Cert::parse(&der)) {
            Some(cert) => certs.push(cert),
            None => clean = false,
        }
    }
    (certs, clean)
}

/// PEM of one DER object with the label (`CERTIFICATE`), 64 columns.
pub fn pem_encode(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 is ASCII, so every 64-byte chunk is valid UTF-8.
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// PEM of a bundle: each certificate in order.
pub fn bundle_pem<'a>(certs: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    certs
        .into_iter()
        .map(|der| pem_encode("CERTIFICATE", der))
        .collect::<String>()
        .into_bytes()
}

/// The validity period of a DER certificate; `None` when it cannot be read.
pub fn validity_of(der: &CertificateDer<'_>) -> Option<(SystemTime, SystemTime)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let validity = cert.validity();
    Some((
        system_time(validity.not_before.timestamp()),
        system_time(validity.not_after.timestamp()),
    ))
}

/// The public key bytes of a PEM private key (rcgen reads PKCS#8 ECDSA,
/// Ed25519 and RSA keys); `None` when it is not one.
pub fn key_public_bytes(key_pem: &[u8]) -> Option<Vec<u8>> {
    use rcgen::PublicKeyData as _;
    let text = std::str::from_utf8(key_pem).ok()?;
    let key = rcgen::KeyPair::from_pem(text).ok()?;
    Some(key.der_bytes().to_vec())
}

/// Seconds since the epoch (negative before it) as a `SystemTime`.
pub fn system_time(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_rcgen_wrote_and_tolerates_garbage_in_bundles() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.example".to_owned()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let parsed = Cert::parse(cert.der()).unwrap();
        assert_eq!(parsed.dns_names, ["a.example"]);
        assert!(!parsed.is_ca);
        assert!(parsed.covers(&["a.example".to_owned()]));
        assert!(!parsed.covers(&["b.example".to_owned()]));
        assert!(parsed.signed_by(&parsed), "self-signed");
        assert_eq!(
            key_public_bytes(key.serialize_pem().as_bytes()).unwrap(),
            parsed.public_key
        );

        let pem = pem_encode("CERTIFICATE", cert.der());
        assert_eq!(pem, cert.pem().replace("\r\n", "\n"));
        let (certs, clean) = certs_from_pem(pem.as_bytes());
        assert!(clean);
        assert_eq!(certs, std::slice::from_ref(&parsed));

        let mut dirty = pem.clone();
        dirty
            .push_str("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n");
        let (certs, clean) = certs_from_pem(dirty.as_bytes());
        assert!(!clean);
        assert_eq!(certs, [parsed]);
        assert_eq!(certs_from_pem(b"garbage").0, []);
        assert!(key_public_bytes(b"garbage").is_none());
        assert!(Cert::parse(b"garbage").is_none());
    }
}
