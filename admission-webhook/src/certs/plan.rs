//! The certificate planner: a pure function from what is observed (the
//! Secret's data and annotations, the CAs the webhook configuration
//! publishes and since when, the pair this replica serves, the time) to what
//! to do. No IO, no clock, no randomness: [`plan`] only decides;
//! [`issue::materialize`](super::issue::materialize) makes the keys.
//!
//! The rules, in order (see the module `certs` for the protocol):
//!
//! 1. **Signer.** The signing CA is the CA in `ca.crt` whose public key is
//!    the one of `ca.key`. A new CA is planned when there is none, when it
//!    is not valid now, when it is within `ca_renew_before` of its end, or
//!    when `fluxgate.dev/rotate-ca` holds a value not acted on yet.
//! 2. **Bundle.** The other CAs of `ca.crt` stay unless expired.
//! 3. **Serving pair.** The Secret's pair counts if its key matches, it is
//!    valid now, names every SAN, and a CA of the bundle (or, to recover a
//!    damaged bundle, of the published one) signed it. Otherwise this
//!    replica's served pair is adopted on the same terms, its CA taken from
//!    the published bundle. Without either, a certificate is issued at once:
//!    no request can be verified anyway. With one, it is re-issued when it
//!    is within `cert_renew_before` of its end, was forced
//!    (`fluxgate.dev/rotate`) or comes from a CA that is no longer the
//!    signer, but only once the signer has been published for the grace
//!    period (or nobody calls the webhook); until then it stays.
//! 4. **Retirement.** CAs that neither sign nor issued the serving
//!    certificate are dropped a grace period after the serving certificate
//!    moved off them (`fluxgate.dev/retire-cas-after`).
//! 5. Anything that differs from the Secret (including a `ca.crt` that is not
//!    exactly the canonical PEM of the bundle) means a write; otherwise the
//!    plan is to keep the Secret and publish its bundle, and to look again at
//!    the next point in time when a rule would fire.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::jiff::Timestamp;

use super::x509::{Cert, bundle_pem, certs_from_pem, key_public_bytes};
use super::{
    CA_CRT, CA_KEY, RETIRE_CAS_AFTER, ROTATE, ROTATE_CA, ROTATED, ROTATED_CA, Settings, TLS_CRT,
    TLS_KEY,
};
use crate::tls::PemPair;

/// How soon to look again while a new CA waits to be published (the
/// configuration's watch normally wakes the controller first).
pub const UNPUBLISHED_RECHECK: Duration = Duration::from_secs(30);
/// The shortest wait, so a plan never spins.
pub const MIN_WAIT: Duration = Duration::from_secs(1);

/// What the Secret holds, as read.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Stored {
    /// The Secret's data.
    pub data: BTreeMap<String, Vec<u8>>,
    /// The Secret's annotations.
    pub annotations: BTreeMap<String, String>,
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the values: two of them are private keys.
        f.debug_struct("Stored")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("annotations", &self.annotations)
            .finish()
    }
}

/// What the webhook configuration publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Publication {
    /// No configuration, or one without webhooks: nothing calls the
    /// webhook, so no certificate change can fail a request.
    Nobody,
    /// The CAs in every webhook's `caBundle`.
    Cas(Vec<PublishedCa>),
}

/// A CA in every webhook's `caBundle`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedCa {
    /// The certificate, DER.
    pub der: Vec<u8>,
    /// Since when this replica has seen it there without interruption.
    pub since: SystemTime,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// The Secret, `None` when it does not exist.
    pub secret: Option<&'a Stored>,
    /// What the webhook configuration publishes.
    pub published: &'a Publication,
    /// The pair this replica serves now.
    pub served: Option<&'a PemPair>,
    /// The time.
    pub now: SystemTime,
}

/// What to do, and when to look again at the latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to do.
    pub action: Action,
    /// When a rule fires next, if nothing happens before (after a write:
    /// now). The controller looks again sooner as a safety net.
    pub next_check: SystemTime,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The Secret is right: keep it, and publish `bundle` (DER, in order)
    /// where the webhook configuration has something else.
    Keep {
        /// The CAs to publish.
        bundle: Vec<Vec<u8>>,
    },
    /// Write the Secret (create it when it does not exist).
    Write(Box<Change>),
}

/// New Secret contents, before keys are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Why, for the logs.
    pub reasons: Vec<Reason>,
    /// The signing CA.
    pub signer: Signer,
    /// The other CAs of the bundle, in order (the signer comes last).
    pub others: Vec<Cert>,
    /// The serving pair.
    pub serving: Serving,
    /// Annotations to set (`Some`) or remove (`None`).
    pub annotations: BTreeMap<String, Option<String>>,
}

/// The signing CA of a [`Change`].
#[derive(Clone, PartialEq, Eq)]
pub enum Signer {
    /// The Secret's signer stays.
    Keep {
        /// Its certificate.
        cert: Cert,
        /// Its key, PEM, as stored.
        key_pem: Vec<u8>,
    },
    /// A new CA replaces it.
    New,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Keep { cert, .. } => f.debug_tuple("Keep").field(cert).finish(),
            Signer::New => f.write_str("New"),
        }
    }
}

/// The serving pair of a [`Change`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serving {
    /// This pair stays (the Secret's, or the one this replica serves).
    Keep(PemPair),
    /// A new certificate from the signer.
    Issue,
}

/// Why the Secret is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// There is no Secret.
    SecretMissing,
    /// No CA in `ca.crt` matches `ca.key` (absent, unreadable, mismatched).
    CaUnusable,
    /// The signing CA is not valid now.
    CaExpired,
    /// The signing CA is within its renewal window.
    CaExpiring,
    /// `fluxgate.dev/rotate-ca` asked for a new CA.
    CaForced,
    /// Expired CAs were dropped from the bundle.
    CasExpired,
    /// The CA of the kept serving certificate was missing from the bundle
    /// and is taken back from the published one.
    CaRecovered,
    /// The Secret has no serving pair.
    ServingMissing,
    /// The Secret's serving pair cannot be used.
    ServingUnusable(Problem),
    /// The serving certificate comes from a CA that no longer signs.
    ServingFromOldCa,
    /// The serving certificate is within its renewal window.
    ServingExpiring,
    /// `fluxgate.dev/rotate` asked for a new serving certificate.
    ServingForced,
    /// The Secret lost its serving pair; the one this replica serves (which
    /// the API server trusts) is kept.
    ServingAdopted,
    /// CAs no certificate needs are to be dropped after a grace period.
    RetireScheduled,
    /// CAs no certificate needs were dropped.
    CasRetired,
    /// `ca.crt` was not the canonical PEM of the bundle (garbage,
    /// duplicates, order).
    BundleRewritten,
    /// Stale bookkeeping annotations were removed.
    AnnotationsTidied,
}

/// Why a serving pair cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// The certificate or the key cannot be read.
    Unreadable,
    /// The key is not the certificate's.
    KeyMismatch,
    /// Expired or not valid yet.
    NotValidNow,
    /// It lacks some of the Service's names.
    MissingNames,
    /// No CA the API server would trust signed it.
    Untrusted,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Reason::SecretMissing => "the Secret does not exist",
            Reason::CaUnusable => "no CA in ca.crt matches ca.key",
            Reason::CaExpired => "the CA is not valid now",
            Reason::CaExpiring => "the CA is due for renewal",
            Reason::CaForced => "a CA rotation was requested",
            Reason::CasExpired => "expired CAs are dropped",
            Reason::CaRecovered => {
                "the serving certificate's CA is restored from the published bundle"
            }
            Reason::ServingMissing => "there is no serving certificate",
            Reason::ServingUnusable(Problem::Unreadable) => {
                "the serving certificate or key is unreadable"
            }
            Reason::ServingUnusable(Problem::KeyMismatch) => {
                "the serving key does not match the certificate"
            }
            Reason::ServingUnusable(Problem::NotValidNow) => {
                "the serving certificate is not valid now"
            }
            Reason::ServingUnusable(Problem::MissingNames) => {
                "the serving certificate lacks some of the Service's names"
            }
            Reason::ServingUnusable(Problem::Untrusted) => {
                "no CA of the bundle signed the serving certificate"
            }
            Reason::ServingFromOldCa => "the serving certificate moves to the new CA",
            Reason::ServingExpiring => "the serving certificate is due for renewal",
            Reason::ServingForced => "a serving certificate rotation was requested",
            Reason::ServingAdopted => {
                "the Secret lost its serving certificate; the one served is kept"
            }
            Reason::RetireScheduled => "superseded CAs are dropped after the grace period",
            Reason::CasRetired => "superseded CAs are dropped",
            Reason::BundleRewritten => "ca.crt is rewritten in canonical form",
            Reason::AnnotationsTidied => "stale annotations are removed",
        };
        f.write_str(text)
    }
}

/// Checks a serving pair on its own: readable, key matching, valid at
/// `now`, naming every one of `sans`. Returns its leaf certificate.
pub fn check_serving(pair: &PemPair, sans: &[String], now: SystemTime) -> Result<Cert, Problem> {
    let (certs, clean) = certs_from_pem(&pair.cert);
    let leaf = match certs.into_iter().next() {
        Some(leaf) if clean => leaf,
        _ => return Err(Problem::Unreadable),
    };
    let key = key_public_bytes(&pair.key).ok_or(Problem::Unreadable)?;
    if key != leaf.public_key {
        return Err(Problem::KeyMismatch);
    }
    if !leaf.valid_at(now) {
        return Err(Problem::NotValidNow);
    }
    if !leaf.covers(sans) {
        return Err(Problem::MissingNames);
    }
    Ok(leaf)
}

/// The serving pair the plan builds on.
struct Current {
    pair: PemPair,
    leaf: Cert,
    issuer: Cert,
    /// Taken from this replica's memory, not from the Secret.
    adopted: bool,
}

/// Decides what to do; see the module documentation for the rules.
pub fn plan(obs: &Observation<'_>, settings: &Settings) -> Plan {
    let now = obs.now;
    let data = |key: &str| obs.secret.and_then(|s| s.data.get(key)).map(Vec::as_slice);
    let annotation = |key: &str| {
        obs.secret
            .and_then(|s| s.annotations.get(key))
            .map(String::as_str)
    };
    let mut reasons = Vec::new();
    // Points in time at which a rule fires next.
    let mut next = Vec::new();
    if obs.secret.is_none() {
        reasons.push(Reason::SecretMissing);
    }

    // 1. The signer.
    let mut bundle: Vec<Cert> = Vec::new();
    for cert in data(CA_CRT).map(certs_from_pem).unwrap_or_default().0 {
        if cert.is_ca && !bundle.iter().any(|b| b.der == cert.der) {
            bundle.push(cert);
        }
    }
    let stored_signer = data(CA_KEY).and_then(|pem| {
        let public = key_public_bytes(pem)?;
        let cert = bundle.iter().find(|c| c.public_key == public)?;
        Some((cert.clone(), pem.to_vec()))
    });
    let forced_ca = pending(annotation(ROTATE_CA), annotation(ROTATED_CA));
    let forced_serving = pending(annotation(ROTATE), annotation(ROTATED));
    let signer = match stored_signer {
        None => {
            if obs.secret.is_some() {
                reasons.push(Reason::CaUnusable);
            }
            None
        }
        Some((cert, _)) if !cert.valid_at(now) => {
            reasons.push(Reason::CaExpired);
            None
        }
        Some((cert, _)) if after(now, settings.ca_renew_before) >= cert.not_after => {
            reasons.push(Reason::CaExpiring);
            None
        }
        Some(_) if forced_ca.is_some() => {
            reasons.push(Reason::CaForced);
            None
        }
        Some(kept) => {
            next.push(before(kept.0.not_after, settings.ca_renew_before));
            Some(kept)
        }
    };
    let is_signer = |c: &Cert| signer.as_ref().is_some_and(|(s, _)| s.der == c.der);

    // 2. The other CAs stay unless expired.
    let mut others: Vec<Cert> = Vec::new();
    for cert in &bundle {
        if is_signer(cert) {
            continue;
        }
        if now >= cert.not_after {
            if !reasons.contains(&Reason::CasExpired) {
                reasons.push(Reason::CasExpired);
            }
            continue;
        }
        next.push(cert.not_after);
        others.push(cert.clone());
    }

    // 3. The serving pair.
    let published: Vec<Cert> = match obs.published {
        Publication::Nobody => Vec::new(),
        Publication::Cas(cas) => cas
            .iter()
            .filter_map(|ca| Cert::parse(&ca.der))
            .filter(|c| c.is_ca && now < c.not_after)
            .collect(),
    };
    let trusted: Vec<&Cert> = signer.iter().map(|(c, _)| c).chain(&others).collect();
    let find_issuer = |leaf: &Cert| {
        trusted
            .iter()
            .copied()
            .chain(&published)
            .find(|ca| leaf.signed_by(ca))
            .cloned()
    };
    let stored_pair = match (data(TLS_CRT), data(TLS_KEY)) {
        (Some(cert), Some(key)) => Some(PemPair {
            cert: cert.to_vec(),
            key: key.to_vec(),
        }),
        _ => None,
    };
    let mut current = None;
    match &stored_pair {
        None => {
            if obs.secret.is_some() {
                reasons.push(Reason::ServingMissing);
            }
        }
        Some(pair) => match check_serving(pair, &settings.sans, now) {
            Ok(leaf) => match find_issuer(&leaf) {
                Some(issuer) => {
                    current = Some(Current {
                        pair: pair.clone(),
                        leaf,
                        issuer,
                        adopted: false,
                    });
                }
                None => reasons.push(Reason::ServingUnusable(Problem::Untrusted)),
            },
            Err(problem) => reasons.push(Reason::ServingUnusable(problem)),
        },
    }
    if current.is_none()
        && let Some(served) = obs.served
        && let Ok(leaf) = check_serving(served, &settings.sans, now)
        && let Some(issuer) = published.iter().find(|ca| leaf.signed_by(ca))
    {
        reasons.push(Reason::ServingAdopted);
        current = Some(Current {
            pair: served.clone(),
            leaf,
            issuer: issuer.clone(),
            adopted: true,
        });
    }
    if let Some(cur) = &current
        && !is_signer(&cur.issuer)
        && !others.iter().any(|o| o.der == cur.issuer.der)
    {
        if !cur.adopted {
            reasons.push(Reason::CaRecovered);
        }
        next.push(cur.issuer.not_after);
        others.push(cur.issuer.clone());
    }

    let signer_published_since = match (&signer, obs.published) {
        (Some((s, _)), Publication::Cas(cas)) => {
            cas.iter().find(|ca| ca.der == s.der).map(|ca| ca.since)
        }
        _ => None,
    };
    let signer_ready = match obs.published {
        Publication::Nobody => true,
        Publication::Cas(_) => {
            signer_published_since.is_some_and(|since| after(since, settings.grace) <= now)
        }
    };
    let issue = match &current {
        None => true,
        Some(cur) => {
            let due = if !is_signer(&cur.issuer) {
                Some(Reason::ServingFromOldCa)
            } else if after(now, settings.cert_renew_before) >= cur.leaf.not_after {
                Some(Reason::ServingExpiring)
            } else if forced_serving.is_some() {
                Some(Reason::ServingForced)
            } else {
                None
            };
            match due {
                None => {
                    next.push(before(cur.leaf.not_after, settings.cert_renew_before));
                    false
                }
                Some(reason) if signer_ready => {
                    reasons.push(reason);
                    true
                }
                Some(_) => {
                    // Wait until the signer has been published long enough.
                    next.push(match signer_published_since {
                        Some(since) => after(since, settings.grace),
                        None => after(now, UNPUBLISHED_RECHECK),
                    });
                    next.push(cur.leaf.not_after);
                    false
                }
            }
        }
    };

    // Annotations: requests acted on.
    let mut annotations = BTreeMap::new();
    if signer.is_none()
        && let Some(value) = forced_ca
    {
        annotations.insert(ROTATED_CA.to_owned(), Some(value.to_owned()));
    }
    if issue && let Some(value) = forced_serving {
        annotations.insert(ROTATED.to_owned(), Some(value.to_owned()));
    }

    // 4. Retirement of CAs no certificate needs.
    let serving_issuer = match (&current, issue) {
        (Some(cur), false) => Some(cur.issuer.der.clone()),
        _ => None,
    };
    let unneeded = others
        .iter()
        .any(|c| Some(&c.der) != serving_issuer.as_ref());
    let retire_after = annotation(RETIRE_CAS_AFTER);
    let retire_at = retire_after.and_then(parse_time);
    let set_retire = |annotations: &mut BTreeMap<String, Option<String>>| {
        annotations.insert(
            RETIRE_CAS_AFTER.to_owned(),
            Some(format_time(after(now, settings.grace))),
        );
    };
    if issue && !others.is_empty() {
        set_retire(&mut annotations);
        reasons.push(Reason::RetireScheduled);
    } else if unneeded {
        match retire_at {
            Some(at) if at <= now => {
                others.retain(|c| Some(&c.der) == serving_issuer.as_ref());
                annotations.insert(RETIRE_CAS_AFTER.to_owned(), None);
                reasons.push(Reason::CasRetired);
            }
            Some(at) => next.push(at),
            None => {
                set_retire(&mut annotations);
                reasons.push(Reason::RetireScheduled);
            }
        }
    } else if retire_after.is_some() {
        annotations.insert(RETIRE_CAS_AFTER.to_owned(), None);
        reasons.push(Reason::AnnotationsTidied);
    }
    // Only what differs from the Secret.
    annotations.retain(|key, value| annotation(key) != value.as_deref());

    // 5. Write or keep.
    let Some((signer_cert, signer_key)) = signer else {
        return write(
            reasons,
            Signer::New,
            others,
            current,
            issue,
            annotations,
            now,
        );
    };
    let bundle_out: Vec<Vec<u8>> = others
        .iter()
        .chain(std::iter::once(&signer_cert))
        .map(|c| c.der.clone())
        .collect();
    let canonical = bundle_pem(bundle_out.iter().map(Vec::as_slice));
    if data(CA_CRT) != Some(canonical.as_slice()) && !reasons.iter().any(changes_bundle) {
        reasons.push(Reason::BundleRewritten);
    }
    let adopted = current.as_ref().is_some_and(|c| c.adopted);
    if issue || adopted || data(CA_CRT) != Some(canonical.as_slice()) || !annotations.is_empty() {
        let signer = Signer::Keep {
            cert: signer_cert,
            key_pem: signer_key,
        };
        return write(reasons, signer, others, current, issue, annotations, now);
    }
    // A kept Secret always has a serving certificate that ends.
    let earliest = next.into_iter().min().unwrap_or(UNIX_EPOCH);
    Plan {
        action: Action::Keep { bundle: bundle_out },
        next_check: earliest.max(after(now, MIN_WAIT)),
    }
}

fn write(
    reasons: Vec<Reason>,
    signer: Signer,
    others: Vec<Cert>,
    current: Option<Current>,
    issue: bool,
    annotations: BTreeMap<String, Option<String>>,
    now: SystemTime,
) -> Plan {
    let serving = match current {
        Some(cur) if !issue => Serving::Keep(cur.pair),
        _ => Serving::Issue,
    };
    Plan {
        action: Action::Write(Box::new(Change {
            reasons,
            signer,
            others,
            serving,
            annotations,
        })),
        next_check: now,
    }
}

/// Reasons that already explain a different bundle.
fn changes_bundle(reason: &Reason) -> bool {
    matches!(
        reason,
        Reason::CasExpired | Reason::CaRecovered | Reason::ServingAdopted | Reason::CasRetired
    )
}

/// The requested value when it has not been acted on.
fn pending<'a>(requested: Option<&'a str>, done: Option<&str>) -> Option<&'a str> {
    requested.filter(|value| Some(*value) != done)
}

fn after(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d).unwrap_or(t)
}

fn before(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_sub(d).unwrap_or(UNIX_EPOCH)
}

/// RFC 3339, whole seconds (rounded up, so "after" is never early).
pub fn format_time(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() + u64::from(d.subsec_nanos() > 0),
        Err(_) => 0,
    };
    i64::try_from(secs)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .map_or_else(|| "1970-01-01T00:00:00Z".to_owned(), |ts| ts.to_string())
}

/// Reads an RFC 3339 time; `None` when it is not one.
pub fn parse_time(text: &str) -> Option<SystemTime> {
    let ts: Timestamp = text.parse().ok()?;
    Some(super::x509::system_time(ts.as_second()))
}

/// A webhook's name and `caBundle` (PEM), as the configuration has them.
pub type WebhookBundle = (String, Option<Vec<u8>>);

/// Which webhooks' `caBundle` differs from `bundle` (compared with the
/// canonical PEM, byte for byte), by name.
pub fn webhooks_to_update(webhooks: &[WebhookBundle], bundle: &[Vec<u8>]) -> Vec<String> {
    let canonical = bundle_pem(bundle.iter().map(Vec::as_slice));
    webhooks
        .iter()
        .filter(|(_, ca_bundle)| ca_bundle.as_deref() != Some(canonical.as_slice()))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Remembers since when each CA has been published, so the planner can
/// wait a grace period after a CA first appears. Each replica keeps its
/// own, measured on its own clock from its own observation: a restart
/// only makes it wait longer.
#[derive(Debug, Default, Clone)]
pub struct Sightings {
    since: BTreeMap<Vec<u8>, SystemTime>,
}

impl Sightings {
    /// Records what the webhook configuration shows at `now`: `None` when
    /// it does not exist, else the `caBundle` of each webhook. Returns the
    /// publication for the planner; CAs no longer published are forgotten.
    pub fn observe(&mut self, webhooks: Option<&[WebhookBundle]>, now: SystemTime) -> Publication {
        let Some(webhooks) = webhooks.filter(|w| !w.is_empty()) else {
            self.since.clear();
            return Publication::Nobody;
        };
        let per_webhook: Vec<Vec<Vec<u8>>> = webhooks
            .iter()
            .map(|(_, ca_bundle)| {
                ca_bundle
                    .as_deref()
                    .map(|pem| certs_from_pem(pem).0.into_iter().map(|c| c.der).collect())
                    .unwrap_or_default()
            })
            .collect();
        let mut everywhere: Vec<Vec<u8>> = Vec::new();
        if let Some((first, rest)) = per_webhook.split_first() {
            for der in first {
                if rest.iter().all(|b| b.contains(der)) && !everywhere.contains(der) {
                    everywhere.push(der.clone());
                }
            }
        }
        self.since.retain(|der, _| everywhere.contains(der));
        Publication::Cas(
            everywhere
                .into_iter()
                .map(|der| {
                    let since = *self.since.entry(der.clone()).or_insert(now);
                    PublishedCa { der, since }
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests;
