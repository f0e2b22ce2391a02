//! The IO of self-managed certificates: every replica runs this loop.
//!
//! - It watches its Secret and its ValidatingWebhookConfiguration, each
//!   with a `metadata.name` field selector (so RBAC can name them), and
//!   installs the Secret's serving pair into the TLS server the moment a
//!   usable one arrives.
//! - On every event, and when the last plan said to look again, it runs a
//!   pass: read the configuration, then the Secret (both quorum reads),
//!   [`plan`], and either write the Secret or publish its bundle.
//!
//! Replicas race safely. The Secret is created with `create` (409: another
//! replica was first, read theirs) and replaced with its `resourceVersion`
//! (409: it changed, read and plan again); a replica only ever serves what
//! is in the Secret, so whichever write wins is what every replica serves.
//! The bundle is published by server-side apply (field manager
//! [`FIELD_MANAGER`]) carrying the configuration's `resourceVersion` as a
//! precondition, and the Secret is read *after* the configuration: a
//! replica holding an old Secret can therefore never publish over a bundle
//! that another replica already relies on (that bundle was in the Secret
//! before it was published, so a read of the Secret made after reading the
//! published configuration sees it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{FutureExt as _, StreamExt as _};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, ResourceExt as _};

use super::issue::{Contents, IssueError, materialize};
use super::plan::{
    Action, Observation, Sightings, Stored, WebhookBundle, check_serving, plan, webhooks_to_update,
};
use super::x509::bundle_pem;
use super::{FIELD_MANAGER, Settings, TLS_CRT, TLS_KEY};
use crate::tls::{PemPair, ServingCert};

/// How often a pass is retried at once when a write loses a race before it
/// gives up until the next event or backoff.
const MAX_ATTEMPTS: usize = 8;
/// The longest the controller waits without an event or a plan asking for
/// it: a safety net against a missed watch event.
const RESYNC: Duration = Duration::from_secs(600);
/// Backoff after a failed pass: doubled from the first up to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// Why a pass failed. Every failure is retried with backoff; the class
/// says what it takes to get out of it.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// An object could not be read.
    #[error("cannot read {what}")]
    Read {
        /// The object.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// An object could not be written.
    #[error("cannot write {what}")]
    Write {
        /// The object.
        what: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Certificates could not be made.
    #[error("cannot make certificates")]
    Issue(#[source] IssueError),
    /// Other replicas kept winning the races.
    #[error("the Secret or the webhook configuration changed during each of {0} attempts")]
    Contention(usize),
    /// A watch stream ended, which it does not under normal operation.
    #[error("the watch of the Secret or the webhook configuration ended")]
    WatchEnded,
}

/// What it takes to get out of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Someone must change something (RBAC, a bug): retried slowly.
    Terminal,
    /// Probably passes by itself (API server unavailable, races).
    Transient,
}

impl ControllerError {
    /// The class of the failure.
    pub fn class(&self) -> ErrorClass {
        match self {
            ControllerError::Read { source, .. } | ControllerError::Write { source, .. } => {
                match source {
                    kube::Error::Api(status) if matches!(status.code, 401 | 403 | 404 | 422) => {
                        ErrorClass::Terminal
                    }
                    _ => ErrorClass::Transient,
                }
            }
            ControllerError::Issue(_) => ErrorClass::Terminal,
            ControllerError::Contention(_) | ControllerError::WatchEnded => ErrorClass::Transient,
        }
    }
}

enum Event {
    Secret(Result<watcher::Event<Secret>, watcher::Error>),
    Configuration(Result<watcher::Event<ValidatingWebhookConfiguration>, watcher::Error>),
}

/// Keeps the Secret, the published bundle and the served certificate right
/// until the watches end (they do not under normal operation).
pub async fn run(
    client: Client,
    settings: Arc<Settings>,
    serving: Arc<ServingCert>,
) -> Result<(), ControllerError> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &settings.namespace);
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(client);
    let by_name = |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
    let secret_events = watcher(secrets.clone(), by_name(&settings.secret))
        .default_backoff()
        .map(Event::Secret);
    let configuration_events = watcher(
        configurations.clone(),
        by_name(&settings.webhook_configuration),
    )
    .default_backoff()
    .map(Event::Configuration);
    let mut events = futures::stream::select(secret_events.boxed(), configuration_events.boxed());

    let mut controller = Controller {
        secrets,
        configurations,
        settings,
        serving,
        sightings: Sightings::default(),
    };
    tracing::info!(
        secret = %controller.settings.secret_ref(),
        webhook_configuration = %controller.settings.webhook_configuration,
        names = ?controller.settings.sans,
        "self-managed certificates starting"
    );
    let mut wake = tokio::time::Instant::now();
    let mut failures: u32 = 0;
    loop {
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else {
                    return Err(ControllerError::WatchEnded);
                };
                controller.note(event);
                // Everything already waiting, before one pass.
                while let Some(Some(event)) = events.next().now_or_never() {
                    controller.note(event);
                }
            }
            () = tokio::time::sleep_until(wake) => {}
        }
        match controller.pass().await {
            Ok(next_check) => {
                failures = 0;
                let wait = next_check
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    .min(RESYNC);
                wake = tokio::time::Instant::now() + wait;
            }
            Err(err) => {
                failures = failures.saturating_add(1);
                let class = err.class();
                let wait = match class {
                    ErrorClass::Terminal => BACKOFF.1,
                    ErrorClass::Transient => BACKOFF
                        .0
                        .saturating_mul(2u32.saturating_pow(failures.min(16) - 1))
                        .min(BACKOFF.1),
                };
                tracing::error!(
                    error = %crate::error_chain(&err),
                    ?class,
                    retry_in = ?wait,
                    "self-managed certificates: pass failed"
                );
                wake = tokio::time::Instant::now() + wait;
            }
        }
    }
}

struct Controller {
    secrets: Api<Secret>,
    configurations: Api<ValidatingWebhookConfiguration>,
    settings: Arc<Settings>,
    serving: Arc<ServingCert>,
    sightings: Sightings,
}

impl Controller {
    /// Handles a watch event: a Secret with a usable pair is served at once.
    fn note(&self, event: Event) {
        match event {
            Event::Secret(Ok(
                watcher::Event::Apply(secret) | watcher::Event::InitApply(secret),
            )) => {
                self.install(&secret);
            }
            Event::Secret(Ok(watcher::Event::Delete(_))) => tracing::warn!(
                secret = %self.settings.secret_ref(),
                "the Secret was deleted; the current certificate stays in service and a new Secret is written"
            ),
            Event::Secret(Err(err)) | Event::Configuration(Err(err)) => {
                tracing::warn!(error = %err, "watch failed; retrying with backoff");
            }
            Event::Secret(Ok(_)) | Event::Configuration(Ok(_)) => {}
        }
    }

    fn install(&self, secret: &Secret) {
        let data = secret.data.as_ref();
        let field = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.clone());
        let (Some(cert), Some(key)) = (field(TLS_CRT), field(TLS_KEY)) else {
            return;
        };
        let pair = PemPair { cert, key };
        if self.serving.current_pem().as_ref() == Some(&pair) {
            return;
        }
        match check_serving(&pair, &self.settings.sans, SystemTime::now()) {
            Ok(leaf) => match self.serving.install(&pair, &self.settings.secret_ref()) {
                Ok(true) => tracing::info!(
                    serial = %leaf.serial,
                    subject = %leaf.subject,
                    not_after = %super::plan::format_time(leaf.not_after),
                    "serving certificate loaded from the Secret"
                ),
                Ok(false) => {}
                Err(err) => tracing::warn!(
                    error = %crate::error_chain(&err),
                    "the Secret's serving certificate does not load; keeping the current one"
                ),
            },
            Err(problem) => tracing::warn!(
                ?problem,
                secret = %self.settings.secret_ref(),
                "the Secret's serving certificate cannot be served; keeping the current one until it is repaired"
            ),
        }
    }

    /// Plans and acts until the plan is to keep what is there (then returns
    /// when to look again), re-reading after each write and each lost race.
    async fn pass(&mut self) -> Result<SystemTime, ControllerError> {
        let settings = Arc::clone(&self.settings);
        let configuration_ref = format!(
            "ValidatingWebhookConfiguration {}",
            settings.webhook_configuration
        );
        for _ in 0..MAX_ATTEMPTS {
            let now = SystemTime::now();
            // The configuration first, then the Secret (see the module
            // documentation).
            let configuration = self
                .configurations
                .get_opt(&settings.webhook_configuration)
                .await
                .map_err(|source| ControllerError::Read {
                    what: configuration_ref.clone(),
                    source,
                })?;
            let webhooks = configuration.as_ref().map(webhook_bundles);
            let publication = self.sightings.observe(webhooks.as_deref(), now);
            let secret = self
                .secrets
                .get_opt(&settings.secret)
                .await
                .map_err(|source| ControllerError::Read {
                    what: settings.secret_ref(),
                    source,
                })?;
            let stored = secret.as_ref().map(stored_of);
            let served = self.serving.current_pem();
            let plan = plan(
                &Observation {
                    secret: stored.as_ref(),
                    published: &publication,
                    served: served.as_ref(),
                    now,
                },
                &settings,
            );
            match plan.action {
                Action::Keep { bundle } => {
                    let (Some(configuration), Some(webhooks)) = (configuration, webhooks) else {
                        return Ok(plan.next_check);
                    };
                    let outdated = webhooks_to_update(&webhooks, &bundle);
                    if outdated.is_empty() {
                        return Ok(plan.next_check);
                    }
                    match self.publish(&configuration, &webhooks, &bundle).await {
                        Ok(()) => tracing::info!(
                            webhook_configuration = %settings.webhook_configuration,
                            webhooks = ?outdated,
                            cas = bundle.len(),
                            "CA bundle published"
                        ),
                        // Changed or deleted since it was read: read again.
                        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
                        Err(source) => {
                            return Err(ControllerError::Write {
                                what: configuration_ref,
                                source,
                            });
                        }
                    }
                }
                Action::Write(change) => {
                    let contents =
                        materialize(&change, &settings, now).map_err(ControllerError::Issue)?;
                    let reasons: Vec<String> =
                        change.reasons.iter().map(ToString::to_string).collect();
                    match self.write(secret, &contents).await {
                        Ok(()) => tracing::info!(
                            secret = %settings.secret_ref(),
                            reasons = %reasons.join("; "),
                            signing_ca = %contents.signer.subject,
                            cas = contents.data.get(super::CA_CRT).map_or(0, |pem| super::x509::certs_from_pem(pem).0.len()),
                            serving_serial = %contents.serving.serial,
                            serving_not_after = %super::plan::format_time(contents.serving.not_after),
                            "certificates written"
                        ),
                        // Another replica was first, or the Secret was
                        // deleted since it was read: read again.
                        Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {
                            tracing::debug!("the Secret changed since it was read; planning again");
                        }
                        Err(source) => {
                            return Err(ControllerError::Write {
                                what: settings.secret_ref(),
                                source,
                            });
                        }
                    }
                }
            }
        }
        Err(ControllerError::Contention(MAX_ATTEMPTS))
    }

    /// Creates the Secret, or replaces it conditionally on the
    /// `resourceVersion` it was read with.
    async fn write(
        &self,
        existing: Option<Secret>,
        contents: &Contents,
    ) -> Result<(), kube::Error> {
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PostParams::default()
        };
        let data: BTreeMap<String, ByteString> = contents
            .data
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.clone())))
            .collect();
        let set_annotations = |meta: &mut ObjectMeta| {
            let annotations = meta.annotations.get_or_insert_with(BTreeMap::new);
            for (key, value) in &contents.annotations {
                match value {
                    Some(value) => annotations.insert(key.clone(), value.clone()),
                    None => annotations.remove(key),
                };
            }
        };
        match existing {
            Some(mut secret) => {
                // Other keys are left alone; ours are replaced.
                let mut merged = secret.data.take().unwrap_or_default();
                merged.extend(data);
                secret.data = Some(merged);
                secret.string_data = None;
                set_annotations(&mut secret.metadata);
                self.secrets
                    .replace(&self.settings.secret, &params, &secret)
                    .await
                    .map(drop)
            }
            None => {
                let mut metadata = ObjectMeta {
                    name: Some(self.settings.secret.clone()),
                    namespace: Some(self.settings.namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        "app.kubernetes.io/managed-by".to_owned(),
                        "fluxgate-admission-webhook".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                };
                set_annotations(&mut metadata);
                let secret = Secret {
                    metadata,
                    type_: Some("kubernetes.io/tls".to_owned()),
                    data: Some(data),
                    ..Secret::default()
                };
                self.secrets.create(&params, &secret).await.map(drop)
            }
        }
    }

    /// Sets every webhook's `caBundle` to `bundle` by server-side apply,
    /// conditional on the configuration's `resourceVersion`.
    async fn publish(
        &self,
        configuration: &ValidatingWebhookConfiguration,
        webhooks: &[WebhookBundle],
        bundle: &[Vec<u8>],
    ) -> Result<(), kube::Error> {
        let pem = ByteString(bundle_pem(bundle.iter().map(Vec::as_slice)));
        let patch = serde_json::json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {
                "name": configuration.name_any(),
                "resourceVersion": configuration.resource_version(),
            },
            "webhooks": webhooks
                .iter()
                .map(|(name, _)| serde_json::json!({"name": name, "clientConfig": {"caBundle": pem}}))
                .collect::<Vec<_>>(),
        });
        self.configurations
            .patch(
                &configuration.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(drop)
    }
}

/// Each webhook's name and `caBundle`.
fn webhook_bundles(configuration: &ValidatingWebhookConfiguration) -> Vec<WebhookBundle> {
    configuration
        .webhooks
        .iter()
        .flatten()
        .map(|w| {
            (
                w.name.clone(),
                w.client_config.ca_bundle.as_ref().map(|b| b.0.clone()),
            )
        })
        .collect()
}

fn stored_of(secret: &Secret) -> Stored {
    Stored {
        data: secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect(),
        annotations: secret.annotations().clone(),
    }
}
