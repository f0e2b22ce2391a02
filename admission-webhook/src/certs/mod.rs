//! Self-managed serving certificates (`--cert-mode self-managed`): the
//! webhook keeps its own CA and serving certificate in a Secret, publishes
//! the CA bundle into its ValidatingWebhookConfiguration and rotates both
//! before they expire, without a request failing on the way.
//!
//! - [`plan`] is the decision, a pure function of what the Secret holds,
//!   what the webhook configuration publishes, what this replica serves and
//!   the time: keep, write a repaired/rotated Secret, or wait.
//! - [`issue`] turns a decision into Secret data (rcgen, ECDSA P-256).
//! - [`x509`] reads certificates and keys back.
//! - [`controller`] is the IO: it watches the Secret and the webhook
//!   configuration, runs the planner, writes with optimistic concurrency and
//!   feeds the TLS server from memory.
//!
//! # The rotation protocol
//!
//! The Secret holds `ca.crt` (the trust bundle: every CA the API server must
//! trust right now), `ca.key` (the key of the newest CA, the *signer*) and
//! `tls.crt`/`tls.key` (the serving pair). The API server must trust every
//! certificate any replica may serve at any moment, so:
//!
//! 1. A new CA is first only *added* to the bundle; the serving certificate
//!    stays the one signed by the old CA.
//! 2. The bundle is published (`caBundle` of every webhook). Only once the
//!    new CA has been seen published for [`Settings::grace`] (long enough
//!    for every API server to load the configuration) is a serving
//!    certificate issued from it.
//! 3. The old CA stays in the bundle for another grace period (every
//!    replica loads the new serving certificate from its Secret watch), then
//!    it is dropped and the smaller bundle published.
//!
//! A serving certificate from an already published CA is replaced in one
//! step. Expired CAs are dropped whenever they are seen. When the Secret is
//! lost or unreadable while a replica serves a valid certificate that the
//! published bundle trusts, the repaired Secret keeps that certificate (and
//! the CA from the published bundle that signed it) and introduces a new CA
//! through the same three steps, so even deleting the Secret fails no
//! request.

pub mod controller;
pub mod issue;
pub mod plan;
pub mod x509;

use std::time::Duration;

use fluxgate_platform_defaults::rules::format_go_duration;

pub use x509::validity_of;

/// Secret key of the trust bundle (PEM, every CA the API server trusts).
pub const CA_CRT: &str = "ca.crt";
/// Secret key of the signing CA's private key (PEM, PKCS#8).
pub const CA_KEY: &str = "ca.key";
/// Secret key of the serving certificate (PEM).
pub const TLS_CRT: &str = "tls.crt";
/// Secret key of the serving certificate's private key (PEM, PKCS#8).
pub const TLS_KEY: &str = "tls.key";

/// Annotation an operator sets to a new value to have the serving
/// certificate re-issued (from the current CA).
pub const ROTATE: &str = "fluxgate.dev/rotate";
/// Annotation an operator sets to a new value to have the CA replaced (and
/// then the serving certificate, following the rotation protocol).
pub const ROTATE_CA: &str = "fluxgate.dev/rotate-ca";
/// The last value of [`ROTATE`] that was acted on.
pub const ROTATED: &str = "fluxgate.dev/rotated";
/// The last value of [`ROTATE_CA`] that was acted on.
pub const ROTATED_CA: &str = "fluxgate.dev/rotated-ca";
/// When CAs that no certificate needs any more are dropped from the bundle
/// (RFC 3339); set when the serving certificate moves to a new CA.
pub const RETIRE_CAS_AFTER: &str = "fluxgate.dev/retire-cas-after";

/// The field manager of every write the certificate controller makes.
pub const FIELD_MANAGER: &str = "fluxgate.dev/webhook";

/// How far back `notBefore` is set on every certificate issued, so that a
/// clock a little behind (another node, the API server) still accepts a
/// certificate that was just issued. An hour, like client-go's self-signed
/// certificates.
pub const BACKDATE: Duration = Duration::from_secs(3600);

/// Where the certificates live and how long they last; checked by
/// [`Settings::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Namespace of the Secret and the Service (`--platform-namespace`).
    pub namespace: String,
    /// The Secret (`--tls-secret`).
    pub secret: String,
    /// The ValidatingWebhookConfiguration (`--webhook-configuration`).
    pub webhook_configuration: String,
    /// DNS names of the serving certificate, the Service's names.
    pub sans: Vec<String>,
    /// Lifetime of a new CA.
    pub ca_validity: Duration,
    /// A CA closer than this to its end is replaced.
    pub ca_renew_before: Duration,
    /// Lifetime of a new serving certificate.
    pub cert_validity: Duration,
    /// A serving certificate closer than this to its end is replaced.
    pub cert_renew_before: Duration,
    /// How long a change must have been visible before the next step of a
    /// rotation relies on it.
    pub grace: Duration,
}

/// The durations of a certificate setting, as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// `--ca-validity`.
    pub ca_validity: Duration,
    /// `--ca-renew-before`.
    pub ca_renew_before: Duration,
    /// `--cert-validity`.
    pub cert_validity: Duration,
    /// `--cert-renew-before`.
    pub cert_renew_before: Duration,
    /// `--rotation-grace`.
    pub grace: Duration,
}

/// Why the certificate settings cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// Two durations in the wrong order.
    #[error(
        "--{shorter} ({shorter_value}) must be shorter than --{longer} ({longer_value}): {why}"
    )]
    Order {
        /// The flag that must be shorter.
        shorter: &'static str,
        /// Its value.
        shorter_value: String,
        /// The flag that must be longer.
        longer: &'static str,
        /// Its value.
        longer_value: String,
        /// What would go wrong otherwise.
        why: &'static str,
    },
    /// A name that cannot be part of a DNS name.
    #[error(
        "--{flag} {value:?} is not a DNS label (lowercase letters, digits and '-', at most 63)"
    )]
    NotALabel {
        /// The flag.
        flag: &'static str,
        /// Its value.
        value: String,
    },
    /// An empty name.
    #[error("--{flag} is empty")]
    Empty {
        /// The flag.
        flag: &'static str,
    },
}

impl Settings {
    /// Checks the flags: names usable in DNS, each renewal before its
    /// expiry, the CA renewed before a serving certificate needs renewing
    /// (a serving certificate never outlives its CA), and the grace period
    /// shorter than the serving certificate's renewal window (a rotation
    /// waiting for it still ends before the old certificate does).
    pub fn new(
        namespace: &str,
        secret: &str,
        webhook_configuration: &str,
        service: &str,
        lifetimes: Lifetimes,
    ) -> Result<Self, SettingsError> {
        for (flag, value) in [
            ("tls-secret", secret),
            ("webhook-configuration", webhook_configuration),
        ] {
            if value.is_empty() {
                return Err(SettingsError::Empty { flag });
            }
        }
        for (flag, value) in [("platform-namespace", namespace), ("service-name", service)] {
            if !is_dns_label(value) {
                return Err(SettingsError::NotALabel {
                    flag,
                    value: value.to_owned(),
                });
            }
        }
        let Lifetimes {
            ca_validity,
            ca_renew_before,
            cert_validity,
            cert_renew_before,
            grace,
        } = lifetimes;
        let order = |shorter: (&'static str, Duration),
                     longer: (&'static str, Duration),
                     why: &'static str| {
            if shorter.1 < longer.1 {
                Ok(())
            } else {
                Err(SettingsError::Order {
                    shorter: shorter.0,
                    shorter_value: format_go_duration(shorter.1),
                    longer: longer.0,
                    longer_value: format_go_duration(longer.1),
                    why,
                })
            }
        };
        order(
            ("ca-renew-before", ca_renew_before),
            ("ca-validity", ca_validity),
            "a new CA would be due for renewal at once",
        )?;
        order(
            ("cert-renew-before", cert_renew_before),
            ("cert-validity", cert_validity),
            "a new serving certificate would be due for renewal at once",
        )?;
        order(
            ("cert-renew-before", cert_renew_before),
            ("ca-renew-before", ca_renew_before),
            "the CA must be replaced before a serving certificate that ends with it needs renewing",
        )?;
        order(
            ("rotation-grace", grace),
            ("cert-renew-before", cert_renew_before),
            "a rotation waiting for the grace period must end before the old certificate does",
        )?;
        Ok(Self {
            namespace: namespace.to_owned(),
            secret: secret.to_owned(),
            webhook_configuration: webhook_configuration.to_owned(),
            sans: vec![
                service.to_owned(),
                format!("{service}.{namespace}"),
                format!("{service}.{namespace}.svc"),
                format!("{service}.{namespace}.svc.cluster.local"),
            ],
            ca_validity,
            ca_renew_before,
            cert_validity,
            cert_renew_before,
            grace,
        })
    }

    /// `Secret <namespace>/<name>`, for messages.
    pub fn secret_ref(&self) -> String {
        format!("Secret {}/{}", self.namespace, self.secret)
    }
}

fn is_dns_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !value.starts_with('-')
        && !value.ends_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3600);

    fn lifetimes() -> Lifetimes {
        Lifetimes {
            ca_validity: 43800 * H,
            ca_renew_before: 8760 * H,
            cert_validity: 2160 * H,
            cert_renew_before: 720 * H,
            grace: Duration::from_secs(30),
        }
    }

    #[test]
    fn derives_the_service_names_and_checks_the_durations() {
        let s = Settings::new(
            "fluxgate-system",
            "tls",
            "fluxgate",
            "fluxgate-webhook",
            lifetimes(),
        )
        .unwrap();
        assert_eq!(
            s.sans,
            [
                "fluxgate-webhook",
                "fluxgate-webhook.fluxgate-system",
                "fluxgate-webhook.fluxgate-system.svc",
                "fluxgate-webhook.fluxgate-system.svc.cluster.local",
            ]
        );

        let bad = |l: Lifetimes| Settings::new("ns", "tls", "vwc", "svc", l).unwrap_err();
        let err = bad(Lifetimes {
            cert_renew_before: 2160 * H,
            ..lifetimes()
        });
        assert_eq!(
            err.to_string(),
            "--cert-renew-before (2160h0m0s) must be shorter than --cert-validity (2160h0m0s): \
             a new serving certificate would be due for renewal at once"
        );
        assert!(matches!(
            bad(Lifetimes {
                ca_renew_before: 43800 * H,
                ..lifetimes()
            }),
            SettingsError::Order {
                shorter: "ca-renew-before",
                longer: "ca-validity",
                ..
            }
        ));
        assert!(matches!(
            bad(Lifetimes {
                ca_renew_before: 700 * H,
                ..lifetimes()
            }),
            SettingsError::Order {
                shorter: "cert-renew-before",
                longer: "ca-renew-before",
                ..
            }
        ));
        assert!(matches!(
            bad(Lifetimes {
                grace: 720 * H,
                ..lifetimes()
            }),
            SettingsError::Order {
                shorter: "rotation-grace",
                ..
            }
        ));
        assert!(matches!(
            Settings::new("ns", "tls", "vwc", "Bad_Name", lifetimes()),
            Err(SettingsError::NotALabel {
                flag: "service-name",
                ..
            })
        ));
        assert!(matches!(
            Settings::new("ns", "", "vwc", "svc", lifetimes()),
            Err(SettingsError::Empty { flag: "tls-secret" })
        ));
    }
}
