//! Turning a planned [`Change`] into Secret data: a new CA when the plan
//! says so, a serving certificate signed by the signing CA, the bundle in
//! canonical PEM. ECDSA P-256 keys (ring), like the rest of the workspace;
//! every `notBefore` is [`BACKDATE`] in the past for clocks a little
//! behind.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::plan::{Change, Serving, Signer};
use super::x509::{Cert, bundle_pem};
use super::{BACKDATE, CA_CRT, CA_KEY, Settings, TLS_CRT, TLS_KEY};
use crate::tls::PemPair;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// A key could not be generated.
    #[error("cannot generate a key")]
    Key(#[source] rcgen::Error),
    /// A certificate could not be signed.
    #[error("cannot sign the {what}")]
    Sign {
        /// `CA certificate` or `serving certificate`.
        what: &'static str,
        /// What rcgen said.
        #[source]
        source: rcgen::Error,
    },
    /// The signing CA or its key could not be read back (the planner only
    /// keeps ones it could read, so this means they do not fit together).
    #[error("cannot use the signing CA")]
    Signer(#[source] rcgen::Error),
    /// A certificate just made cannot be read back.
    #[error("the {what} just made cannot be read back")]
    ReadBack {
        /// What was made.
        what: &'static str,
    },
    /// A time outside what a certificate can hold.
    #[error("the validity of the {what} is out of range")]
    Time {
        /// What was being made.
        what: &'static str,
    },
}

/// The data and annotations to write, with what changed for the logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Contents {
    /// The Secret's data.
    pub data: BTreeMap<String, Vec<u8>>,
    /// Annotations to set (`Some`) or remove (`None`).
    pub annotations: BTreeMap<String, Option<String>>,
    /// The signing CA.
    pub signer: Cert,
    /// The serving certificate.
    pub serving: Cert,
}

impl std::fmt::Debug for Contents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contents")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("annotations", &self.annotations)
            .field("signer", &self.signer)
            .field("serving", &self.serving)
            .finish_non_exhaustive()
    }
}

/// Makes what `change` describes at `now`.
pub fn materialize(
    change: &Change,
    settings: &Settings,
    now: SystemTime,
) -> Result<Contents, IssueError> {
    let (signer, signer_key) = match &change.signer {
        Signer::Keep { cert, key_pem } => (cert.clone(), key_pem.clone()),
        Signer::New => new_ca(settings, now)?,
    };
    let serving = match &change.serving {
        Serving::Keep(pair) => pair.clone(),
        Serving::Issue => issue_serving(&signer, &signer_key, settings, now)?,
    };
    let serving_cert = super::x509::certs_from_pem(&serving.cert)
        .0
        .into_iter()
        .next()
        // Either kept after the planner read it, or just made by rcgen.
        .ok_or(IssueError::ReadBack {
            what: "serving certificate",
        })?;
    let bundle = bundle_pem(
        change
            .others
            .iter()
            .chain(std::iter::once(&signer))
            .map(|c| c.der.as_slice()),
    );
    let data = BTreeMap::from([
        (CA_CRT.to_owned(), bundle),
        (CA_KEY.to_owned(), signer_key),
        (TLS_CRT.to_owned(), serving.cert),
        (TLS_KEY.to_owned(), serving.key),
    ]);
    Ok(Contents {
        data,
        annotations: change.annotations.clone(),
        signer,
        serving: serving_cert,
    })
}

/// A new self-signed CA valid for `settings.ca_validity` from `now`,
/// named `fluxgate-webhook-ca@<unix seconds>` (client-go's convention) so
/// that successive CAs are told apart; with its key (PEM).
pub fn new_ca(settings: &Settings, now: SystemTime) -> Result<(Cert, Vec<u8>), IssueError> {
    let what = "CA certificate";
    let key = KeyPair::generate().map_err(IssueError::Key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        DnType::CommonName,
        format!("fluxgate-webhook-ca@{}", unix_seconds(now)),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(UNIX_EPOCH), what)?;
    params.not_after = offset(
        now.checked_add(settings.ca_validity)
            .ok_or(IssueError::Time { what })?,
        what,
    )?;
    let cert = params
        .self_signed(&key)
        .map_err(|source| IssueError::Sign { what, source })?;
    let parsed = Cert::parse(cert.der()).ok_or(IssueError::ReadBack { what })?;
    Ok((parsed, key.serialize_pem().into_bytes()))
}

/// A serving certificate for `settings.sans`, signed by `ca`, valid for
/// `settings.cert_validity` from `now` but never beyond the CA.
pub fn issue_serving(
    ca: &Cert,
    ca_key_pem: &[u8],
    settings: &Settings,
    now: SystemTime,
) -> Result<PemPair, IssueError> {
    let what = "serving certificate";
    let ca_key = std::str::from_utf8(ca_key_pem)
        .map_err(|_| IssueError::Signer(rcgen::Error::CouldNotParseKeyPair))
        .and_then(|pem| KeyPair::from_pem(pem).map_err(IssueError::Signer))?;
    let issuer =
        Issuer::from_ca_cert_der(&ca.der.as_slice().into(), ca_key).map_err(IssueError::Signer)?;
    let key = KeyPair::generate().map_err(IssueError::Key)?;
    let mut params = CertificateParams::new(settings.sans.clone())
        .map_err(|source| IssueError::Sign { what, source })?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    // The Service's `<svc>.<ns>.svc`, the name the API server checks.
    let common_name = settings.sans.get(2).or(settings.sans.first());
    if let Some(name) = common_name {
        params
            .distinguished_name
            .push(DnType::CommonName, name.clone());
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = offset(now.checked_sub(BACKDATE).unwrap_or(UNIX_EPOCH), what)?;
    let end = now
        .checked_add(settings.cert_validity)
        .ok_or(IssueError::Time { what })?
        .min(ca.not_after);
    params.not_after = offset(end, what)?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|source| IssueError::Sign { what, source })?;
    Ok(PemPair {
        cert: cert.pem().into_bytes(),
        key: key.serialize_pem().into_bytes(),
    })
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn offset(t: SystemTime, what: &'static str) -> Result<time::OffsetDateTime, IssueError> {
    time::OffsetDateTime::from_unix_timestamp(unix_seconds(t))
        .map_err(|_| IssueError::Time { what })
}
