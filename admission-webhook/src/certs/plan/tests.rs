//! The planner with a fake clock: every state of the Secret, every edge of
//! the renewal windows, garbage, lost Secrets, forced rotations, and a long
//! simulation checking that at no moment (with the API server and a replica
//! each lagging behind by less than the grace period) a served certificate
//! is one the published bundle does not trust. No sleeping: time is a
//! variable.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::certs::issue::{Contents, issue_serving, materialize, new_ca};
use crate::certs::{BACKDATE, Lifetimes};

const H: Duration = Duration::from_secs(3600);
const S: Duration = Duration::from_secs(1);
const GRACE: Duration = Duration::from_secs(30);

fn lifetimes() -> Lifetimes {
    Lifetimes {
        ca_validity: 1000 * H,
        ca_renew_before: 200 * H,
        cert_validity: 100 * H,
        cert_renew_before: 20 * H,
        grace: GRACE,
    }
}

fn settings() -> Settings {
    Settings::new(
        "fluxgate-system",
        "fluxgate-webhook-tls",
        "fluxgate",
        "fluxgate-webhook",
        lifetimes(),
    )
    .unwrap()
}

fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

type Webhooks = Vec<(String, Option<Vec<u8>>)>;

/// A cluster in miniature: the Secret, the webhook configuration, what this
/// replica serves, and the clock. Every write is loaded by the replicas at
/// once (the Secret watch); lag is modelled by the logs.
struct World {
    settings: Settings,
    now: SystemTime,
    secret: Option<Stored>,
    webhooks: Option<Webhooks>,
    sightings: Sightings,
    served: Option<PemPair>,
    /// Each webhook's bundle after every change, with the time.
    published_log: Vec<(SystemTime, Webhooks)>,
    /// The pair the replicas load after every change, with the time.
    serving_log: Vec<(SystemTime, PemPair)>,
    writes: Vec<(SystemTime, Vec<Reason>)>,
}

impl World {
    /// With a configuration of `webhooks` webhooks without a `caBundle`, or
    /// none at all for 0.
    fn new(webhooks: usize) -> Self {
        let webhooks = (webhooks > 0).then(|| {
            (0..webhooks)
                .map(|i| (format!("hook-{i}.fluxgate.dev"), None))
                .collect()
        });
        Self {
            settings: settings(),
            now: t0(),
            secret: None,
            webhooks,
            sightings: Sightings::default(),
            served: None,
            published_log: Vec::new(),
            serving_log: Vec::new(),
            writes: Vec::new(),
        }
    }

    fn plan(&mut self) -> Plan {
        let publication = self.sightings.observe(self.webhooks.as_deref(), self.now);
        plan(
            &Observation {
                secret: self.secret.as_ref(),
                published: &publication,
                served: self.served.as_ref(),
                now: self.now,
            },
            &self.settings,
        )
    }

    /// One pass of the controller: plan, then write or publish.
    fn step(&mut self) -> Plan {
        let plan = self.plan();
        match &plan.action {
            Action::Write(change) => {
                let contents = materialize(change, &self.settings, self.now).unwrap();
                self.writes.push((self.now, change.reasons.clone()));
                self.store(contents);
            }
            Action::Keep { bundle } => {
                let pem = bundle_pem(bundle.iter().map(Vec::as_slice));
                if let Some(webhooks) = &mut self.webhooks
                    && !webhooks_to_update(webhooks, bundle).is_empty()
                {
                    for (_, ca_bundle) in webhooks.iter_mut() {
                        *ca_bundle = Some(pem.clone());
                    }
                    self.published_log.push((self.now, webhooks.clone()));
                }
            }
        }
        plan
    }

    fn store(&mut self, contents: Contents) {
        let mut stored = self.secret.take().unwrap_or_default();
        stored.data.extend(contents.data);
        for (key, value) in contents.annotations {
            match value {
                Some(value) => stored.annotations.insert(key, value),
                None => stored.annotations.remove(&key),
            };
        }
        let pair = PemPair {
            cert: stored.data[TLS_CRT].clone(),
            key: stored.data[TLS_KEY].clone(),
        };
        if check_serving(&pair, &self.settings.sans, self.now).is_ok()
            && self.served.as_ref() != Some(&pair)
        {
            self.served = Some(pair.clone());
            self.serving_log.push((self.now, pair));
        }
        self.secret = Some(stored);
    }

    /// Passes until the plan is to keep and nothing is left to publish;
    /// returns the reasons of the writes on the way.
    fn settle(&mut self) -> Vec<Reason> {
        let mut reasons = Vec::new();
        for _ in 0..10 {
            let published = self.webhooks.clone();
            match self.step().action {
                Action::Write(change) => reasons.extend(change.reasons),
                Action::Keep { .. } if self.webhooks == published => return reasons,
                Action::Keep { .. } => {}
            }
        }
        panic!("no stable state after 10 passes: {reasons:?}");
    }

    /// Settles, then lets time run to the plan's next check `n` times.
    fn run_checks(&mut self, n: usize) -> Vec<Reason> {
        let mut reasons = self.settle();
        for _ in 0..n {
            let next = self.plan().next_check;
            self.now = next;
            reasons.extend(self.settle());
        }
        reasons
    }

    fn data(&self, key: &str) -> &[u8] {
        &self.secret.as_ref().unwrap().data[key]
    }

    fn set_data(&mut self, key: &str, value: &[u8]) {
        self.secret
            .get_or_insert_with(Stored::default)
            .data
            .insert(key.to_owned(), value.to_vec());
    }

    fn annotate(&mut self, key: &str, value: &str) {
        self.secret
            .as_mut()
            .unwrap()
            .annotations
            .insert(key.to_owned(), value.to_owned());
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        self.secret
            .as_ref()?
            .annotations
            .get(key)
            .map(String::as_str)
    }

    fn bundle(&self) -> Vec<Cert> {
        certs_from_pem(self.data(CA_CRT)).0
    }

    fn serving(&self) -> Cert {
        certs_from_pem(self.data(TLS_CRT)).0.remove(0)
    }

    fn signer(&self) -> Cert {
        let public = key_public_bytes(self.data(CA_KEY)).unwrap();
        self.bundle()
            .into_iter()
            .find(|c| c.public_key == public)
            .unwrap()
    }

    fn published(&self) -> Vec<Cert> {
        let webhooks = self.webhooks.as_ref().unwrap();
        certs_from_pem(webhooks[0].1.as_deref().unwrap_or_default()).0
    }
}

fn write_of(plan: &Plan) -> &Change {
    match &plan.action {
        Action::Write(change) => change,
        Action::Keep { .. } => panic!("expected a write, got {plan:?}"),
    }
}

fn is_keep(plan: &Plan) -> bool {
    matches!(plan.action, Action::Keep { .. })
}

/// A world settled with a fresh Secret and a published bundle.
fn healthy() -> World {
    let mut world = World::new(2);
    let reasons = world.settle();
    assert_eq!(reasons, [Reason::SecretMissing]);
    world
}

#[test]
fn creates_the_ca_and_the_serving_certificate_when_there_is_no_secret() {
    let mut world = World::new(0);
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(change.reasons, [Reason::SecretMissing]);
    assert_eq!(change.signer, Signer::New);
    assert_eq!(change.serving, Serving::Issue);
    assert!(change.others.is_empty());
    assert_eq!(plan.next_check, world.now);
    world.step();

    let ca = world.signer();
    assert!(ca.is_ca);
    assert!(
        ca.subject.contains("fluxgate-webhook-ca@1800000000"),
        "{}",
        ca.subject
    );
    assert_eq!(ca.not_before, t0() - BACKDATE);
    assert_eq!(ca.not_after, t0() + 1000 * H);
    assert_eq!(world.bundle(), std::slice::from_ref(&ca));
    let serving = world.serving();
    assert!(!serving.is_ca);
    assert_eq!(
        serving.dns_names,
        [
            "fluxgate-webhook",
            "fluxgate-webhook.fluxgate-system",
            "fluxgate-webhook.fluxgate-system.svc",
            "fluxgate-webhook.fluxgate-system.svc.cluster.local",
        ]
    );
    assert!(
        serving
            .subject
            .contains("fluxgate-webhook.fluxgate-system.svc")
    );
    assert_eq!(serving.not_before, t0() - BACKDATE);
    assert_eq!(serving.not_after, t0() + 100 * H);
    assert!(serving.signed_by(&ca));
    assert_eq!(world.served.as_ref().unwrap().cert, world.data(TLS_CRT));

    // What was written is kept, and looked at again when renewal is due.
    let plan = world.plan();
    assert_eq!(
        plan.action,
        Action::Keep {
            bundle: vec![ca.der.clone()]
        }
    );
    assert_eq!(plan.next_check, t0() + 80 * H);
}

#[test]
fn publishes_the_bundle_into_every_webhook_and_then_keeps_still() {
    let mut world = healthy();
    let ca = world.signer();
    for (_, ca_bundle) in world.webhooks.as_ref().unwrap() {
        assert_eq!(ca_bundle.as_deref(), Some(world.data(CA_CRT)));
    }
    assert_eq!(world.published(), [ca]);
    assert_eq!(world.writes.len(), 1);
    let secret = world.secret.clone();
    let plan = world.step();
    assert!(is_keep(&plan));
    assert_eq!(world.secret, secret);
    assert_eq!(plan.next_check, t0() + 80 * H);
}

#[test]
fn renews_the_serving_certificate_exactly_at_its_window_from_the_same_ca() {
    let mut world = healthy();
    let ca = world.signer();
    let first = world.serving();

    world.now = t0() + 80 * H - S;
    assert!(is_keep(&world.plan()), "one second before the window");
    world.now = t0() + 80 * H;
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(change.reasons, [Reason::ServingExpiring]);
    assert!(matches!(change.signer, Signer::Keep { .. }));
    assert_eq!(change.serving, Serving::Issue);
    assert!(change.annotations.is_empty(), "{:?}", change.annotations);
    assert_eq!(world.settle(), [Reason::ServingExpiring]);

    let second = world.serving();
    assert_ne!(second.der, first.der);
    assert!(second.signed_by(&ca));
    assert_eq!(second.not_after, t0() + 180 * H);
    assert_eq!(world.signer(), ca);
    assert_eq!(world.bundle(), [ca]);
}

#[test]
fn a_serving_certificate_never_outlives_its_ca() {
    let mut world = healthy();
    let ca = world.signer();
    // Renewals every 80 h until the CA's own window (800 h) starts.
    let reasons = world.run_checks(9);
    assert!(
        reasons.iter().all(|r| *r == Reason::ServingExpiring),
        "{reasons:?}"
    );
    assert_eq!(world.signer(), ca);
    assert!(world.serving().not_after <= ca.not_after);
}

#[test]
fn rotates_the_ca_in_three_published_steps() {
    let mut world = healthy();
    let old = world.signer();
    let reasons = world.run_checks(9);
    assert_eq!(
        reasons,
        [Reason::ServingExpiring; 9],
        "renewals up to 720 h"
    );
    assert_eq!(world.signer(), old);
    let next = world.plan().next_check;
    assert_eq!(
        next,
        t0() + 800 * H,
        "the CA's window (and the serving certificate's)"
    );
    world.now = next;

    // 1. A new CA joins the bundle; the serving certificate (valid for 20 h
    //    more) stays the old CA's.
    let serving_before = world.serving();
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(change.reasons, [Reason::CaExpiring]);
    assert_eq!(change.signer, Signer::New);
    assert!(matches!(change.serving, Serving::Keep(_)));
    assert_eq!(change.others, std::slice::from_ref(&old));
    world.settle();
    let new = world.signer();
    assert_ne!(new, old);
    assert_eq!(world.bundle(), [old.clone(), new.clone()]);
    assert_eq!(world.serving(), serving_before);
    assert_eq!(
        world.published(),
        [old.clone(), new.clone()],
        "published next"
    );

    // 2. The serving certificate moves to the new CA only once it has been
    //    published for the grace period.
    let published_at = world.now;
    world.now = published_at + GRACE - S;
    let plan = world.plan();
    assert!(is_keep(&plan));
    assert_eq!(plan.next_check, published_at + GRACE);
    world.now = published_at + GRACE;
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(
        change.reasons,
        [Reason::ServingFromOldCa, Reason::RetireScheduled]
    );
    assert_eq!(
        change.annotations[RETIRE_CAS_AFTER].as_deref(),
        Some(format_time(world.now + GRACE).as_str())
    );
    world.settle();
    assert!(world.serving().signed_by(&new));
    assert_eq!(world.serving().not_after, world.now + 100 * H);
    assert_eq!(
        world.bundle(),
        [old.clone(), new.clone()],
        "old CA still trusted"
    );

    // 3. A grace period later the old CA goes, and the smaller bundle is
    //    published.
    let switched_at = world.now;
    world.now = switched_at + GRACE - S;
    let plan = world.plan();
    assert!(is_keep(&plan));
    assert_eq!(plan.next_check, switched_at + GRACE);
    world.now = switched_at + GRACE;
    assert_eq!(world.settle(), [Reason::CasRetired]);
    assert_eq!(world.bundle(), std::slice::from_ref(&new));
    assert_eq!(world.published(), [new]);
    assert_eq!(world.annotation(RETIRE_CAS_AFTER), None);
}

#[test]
fn waits_for_every_webhook_to_publish_the_new_ca() {
    let mut world = healthy();
    let old_bundle = world.data(CA_CRT).to_vec();
    world.annotate(ROTATE_CA, "1");
    let plan = world.step();
    assert_eq!(write_of(&plan).reasons, [Reason::CaForced]);
    assert_eq!(world.annotation(ROTATED_CA), Some("1"));
    // Only one of the two webhooks carries the new bundle (someone reverted
    // the other): the new CA is not published, however long it waits.
    let new_bundle = world.data(CA_CRT).to_vec();
    let webhooks = world.webhooks.as_mut().unwrap();
    webhooks[0].1 = Some(new_bundle);
    webhooks[1].1 = Some(old_bundle);
    for _ in 0..3 {
        world.now += GRACE * 10;
        let plan = world.plan();
        assert!(is_keep(&plan), "publish again, never issue: {plan:?}");
    }
}

#[test]
fn forced_serving_rotation_happens_once_per_value() {
    let mut world = healthy();
    let ca = world.signer();
    let first = world.serving();
    // This replica saw the bundle published only now (a restart): it waits
    // a grace period first.
    world.sightings = Sightings::default();
    world.annotate(ROTATE, "2024-01-01");
    let plan = world.plan();
    assert!(is_keep(&plan));
    assert_eq!(plan.next_check, world.now + GRACE);
    world.now += GRACE;
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(change.reasons, [Reason::ServingForced]);
    assert_eq!(
        change.annotations,
        BTreeMap::from([(ROTATED.to_owned(), Some("2024-01-01".to_owned()))])
    );
    world.settle();
    assert_ne!(world.serving().der, first.der);
    assert!(world.serving().signed_by(&ca));
    assert_eq!(world.signer(), ca, "the CA stays");
    assert!(
        is_keep(&world.plan()),
        "the same value is not acted on twice"
    );
    world.annotate(ROTATE, "2024-01-02");
    assert_eq!(world.settle(), [Reason::ServingForced]);
}

#[test]
fn forced_ca_rotation_replaces_the_ca_then_the_serving_certificate() {
    let mut world = healthy();
    let old = world.signer();
    world.annotate(ROTATE_CA, "x");
    let reasons = world.run_checks(2);
    assert_eq!(
        reasons,
        [
            Reason::CaForced,
            Reason::ServingFromOldCa,
            Reason::RetireScheduled,
            Reason::CasRetired
        ]
    );
    let new = world.signer();
    assert_ne!(new, old);
    assert_eq!(world.bundle(), std::slice::from_ref(&new));
    assert!(world.serving().signed_by(&new));
    assert_eq!(world.annotation(ROTATED_CA), Some("x"));
    assert!(is_keep(&world.plan()));
}

#[test]
fn without_a_webhook_configuration_a_ca_rotation_is_one_step() {
    let mut world = World::new(0);
    world.settle();
    let old = world.signer();
    world.annotate(ROTATE_CA, "x");
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(
        change.reasons,
        [
            Reason::CaForced,
            Reason::ServingFromOldCa,
            Reason::RetireScheduled
        ]
    );
    assert_eq!(change.serving, Serving::Issue);
    world.step();
    assert!(world.serving().signed_by(&world.signer()));
    assert_ne!(world.signer(), old);
}

#[test]
fn an_expired_ca_is_replaced_with_a_serving_certificate_at_once() {
    let mut world = healthy();
    world.now = t0() + 1000 * H;
    let plan = world.plan();
    let change = write_of(&plan);
    // Nothing left to protect: the old CA and its certificate are dead.
    assert_eq!(
        change.reasons,
        [
            Reason::CaExpired,
            Reason::CasExpired,
            Reason::ServingUnusable(Problem::NotValidNow)
        ]
    );
    assert_eq!(change.signer, Signer::New);
    assert_eq!(change.serving, Serving::Issue);
    assert!(change.others.is_empty());
    world.settle();
    assert_eq!(world.bundle().len(), 1);
    assert!(world.serving().signed_by(&world.signer()));
}

#[test]
fn drops_expired_cas_from_the_bundle() {
    let mut world = healthy();
    let current = world.signer();
    // An old CA that expires in an hour, left in the bundle.
    let (old, _) = new_ca(
        &Settings {
            ca_validity: H,
            ..settings()
        },
        world.now,
    )
    .unwrap();
    let bundle = bundle_pem([old.der.as_slice(), current.der.as_slice()]);
    world.set_data(CA_CRT, &bundle);
    // Unneeded, so first scheduled for retirement ...
    assert_eq!(world.settle(), [Reason::RetireScheduled]);
    let plan = world.plan();
    assert!(is_keep(&plan));
    assert_eq!(plan.next_check, world.now + GRACE);
    // ... but it expires first (an hour later than the retirement here, so
    // move the retirement out of the way).
    world.annotate(RETIRE_CAS_AFTER, &format_time(world.now + 2 * H));
    assert_eq!(world.plan().next_check, world.now + H, "its expiry");
    world.now += H;
    let plan = world.plan();
    assert_eq!(
        write_of(&plan).reasons,
        [Reason::CasExpired, Reason::AnnotationsTidied]
    );
    world.settle();
    assert_eq!(world.bundle(), [current]);
}

#[test]
fn reissues_at_once_when_the_service_names_change() {
    let mut world = healthy();
    let ca = world.signer();
    world.settings = Settings::new(
        "fluxgate-system",
        "fluxgate-webhook-tls",
        "fluxgate",
        "renamed",
        lifetimes(),
    )
    .unwrap();
    // No grace period: the API server rejects the old names anyway.
    world.sightings = Sightings::default();
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(
        change.reasons,
        [Reason::ServingUnusable(Problem::MissingNames)]
    );
    assert!(matches!(change.signer, Signer::Keep { .. }));
    world.settle();
    assert!(
        world
            .serving()
            .dns_names
            .contains(&"renamed.fluxgate-system.svc".to_owned())
    );
    assert_eq!(world.signer(), ca);
}

#[test]
fn repairs_each_kind_of_garbage_without_a_served_certificate() {
    let garbage: &[(&str, &[u8])] = &[
        (CA_CRT, b"garbage"),
        (CA_KEY, b"garbage"),
        (TLS_CRT, b"garbage"),
        (TLS_KEY, b"garbage"),
        (CA_CRT, b""),
        (
            TLS_CRT,
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ),
        (
            CA_KEY,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ),
    ];
    for (key, value) in garbage {
        let mut world = World::new(0);
        world.settle();
        world.set_data(key, value);
        let reasons = world.settle();
        assert!(!reasons.is_empty(), "{key}={value:?}");
        let ca = world.signer();
        assert!(world.serving().signed_by(&ca), "{key}: {reasons:?}");
        assert!(world.bundle().iter().all(|c| c.is_ca));
        assert!(is_keep(&world.plan()), "{key}: repaired for good");
    }

    // A Secret of nothing but garbage, and one with no data at all.
    for data in [
        BTreeMap::from([
            ("tls.crt".to_owned(), b"x".to_vec()),
            ("junk".to_owned(), b"y".to_vec()),
        ]),
        BTreeMap::new(),
    ] {
        let mut world = World::new(0);
        world.secret = Some(Stored {
            data,
            annotations: BTreeMap::new(),
        });
        let plan = world.plan();
        let change = write_of(&plan);
        assert!(change.reasons.contains(&Reason::CaUnusable), "{change:?}");
        assert_eq!(change.signer, Signer::New);
        assert_eq!(change.serving, Serving::Issue);
        world.settle();
        assert!(world.serving().signed_by(&world.signer()));
    }
}

#[test]
fn a_mismatched_serving_key_is_replaced() {
    let mut world = healthy();
    let other = issue_serving(
        &world.signer(),
        world.data(CA_KEY),
        &world.settings,
        world.now,
    )
    .unwrap();
    world.set_data(TLS_KEY, &other.key);
    world.served = None;
    let plan = world.plan();
    assert_eq!(
        write_of(&plan).reasons,
        [Reason::ServingUnusable(Problem::KeyMismatch)]
    );
}

#[test]
fn garbage_while_serving_keeps_the_served_certificate_and_rotates_around_it() {
    let mut world = healthy();
    let old_ca = world.signer();
    let served = world.served.clone().unwrap();
    // Everything overwritten with garbage; the replicas keep serving.
    world.secret = Some(Stored {
        data: BTreeMap::from([
            (CA_CRT.to_owned(), b"garbage".to_vec()),
            (CA_KEY.to_owned(), b"garbage".to_vec()),
            (TLS_CRT.to_owned(), b"garbage".to_vec()),
            (TLS_KEY.to_owned(), b"garbage".to_vec()),
        ]),
        annotations: BTreeMap::new(),
    });
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(
        change.reasons,
        [
            Reason::CaUnusable,
            Reason::ServingUnusable(Problem::Unreadable),
            Reason::ServingAdopted
        ]
    );
    assert_eq!(change.signer, Signer::New);
    assert_eq!(change.serving, Serving::Keep(served.clone()));
    assert_eq!(
        change.others,
        std::slice::from_ref(&old_ca),
        "its CA, from the published bundle"
    );
    world.step();
    assert_eq!(world.served, Some(served), "nothing new served yet");
    let new_ca = world.signer();
    assert_eq!(world.bundle(), [old_ca.clone(), new_ca.clone()]);
    // Then the usual protocol: publish, wait, switch, retire.
    let reasons = world.run_checks(2);
    assert_eq!(
        reasons,
        [
            Reason::ServingFromOldCa,
            Reason::RetireScheduled,
            Reason::CasRetired
        ]
    );
    assert!(world.serving().signed_by(&new_ca));
    assert_eq!(world.bundle(), [new_ca]);
}

#[test]
fn a_deleted_secret_is_recreated_around_the_served_certificate() {
    let mut world = healthy();
    let old_ca = world.signer();
    let served = world.served.clone().unwrap();
    world.secret = None;
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(
        change.reasons,
        [Reason::SecretMissing, Reason::ServingAdopted]
    );
    assert_eq!(change.serving, Serving::Keep(served));
    assert_eq!(change.others, [old_ca]);
    assert_eq!(change.signer, Signer::New);
}

#[test]
fn a_damaged_bundle_is_recovered_from_the_published_one() {
    let mut world = healthy();
    let ca = world.signer();
    // Only ca.crt lost the CA: ca.key no longer matches anything, so a new
    // CA comes; the serving certificate stays, its CA taken back from what
    // is published.
    world.set_data(CA_CRT, b"");
    world.served = None;
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(change.reasons, [Reason::CaUnusable, Reason::CaRecovered]);
    assert!(matches!(change.serving, Serving::Keep(_)));
    assert_eq!(change.others, [ca]);
}

#[test]
fn rewrites_a_bundle_that_is_not_canonical() {
    let mut world = healthy();
    let ca = world.signer();
    let mut doubled = world.data(CA_CRT).to_vec();
    doubled.extend_from_slice(world.data(CA_CRT));
    world.set_data(CA_CRT, &doubled);
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(change.reasons, [Reason::BundleRewritten]);
    assert!(matches!(change.serving, Serving::Keep(_)));
    world.settle();
    assert_eq!(world.bundle(), [ca]);
}

#[test]
fn an_expired_serving_certificate_is_replaced_even_while_a_new_ca_waits() {
    let mut world = healthy();
    world.annotate(ROTATE_CA, "x");
    world.step();
    // The new CA is never published (say the patch is forbidden) and the
    // serving certificate runs out: nothing is protected by waiting then.
    world.now = t0() + 100 * H;
    let plan = world.plan();
    let change = write_of(&plan);
    assert_eq!(
        change.reasons,
        [
            Reason::ServingUnusable(Problem::NotValidNow),
            Reason::RetireScheduled
        ]
    );
    assert_eq!(change.serving, Serving::Issue);
}

#[test]
fn waiting_for_publication_looks_again_soon_and_at_the_old_certificates_end() {
    let mut world = healthy();
    world.annotate(ROTATE_CA, "x");
    world.step();
    // Nothing published yet in this replica's eyes (the webhook
    // configuration is still the old one).
    let plan = world.plan();
    assert!(is_keep(&plan));
    // Keep means: publish. Before publishing, the next check is soon.
    let publication = Publication::Cas(Vec::new());
    let stored = world.secret.clone();
    let plan = plan_at(&world, stored.as_ref(), &publication);
    assert_eq!(plan.next_check, world.now + UNPUBLISHED_RECHECK);
}

fn plan_at(world: &World, secret: Option<&Stored>, published: &Publication) -> Plan {
    plan(
        &Observation {
            secret,
            published,
            served: None,
            now: world.now,
        },
        &world.settings,
    )
}

#[test]
fn stale_bookkeeping_is_tidied_and_garbage_times_rescheduled() {
    let mut world = healthy();
    world.annotate(RETIRE_CAS_AFTER, "yesterday");
    let plan = world.plan();
    assert_eq!(write_of(&plan).reasons, [Reason::AnnotationsTidied]);
    world.settle();
    assert_eq!(world.annotation(RETIRE_CAS_AFTER), None);
}

#[test]
fn sightings_track_cas_published_by_every_webhook() {
    let (a, _) = new_ca(&settings(), t0()).unwrap();
    let (b, _) = new_ca(&settings(), t0()).unwrap();
    let pem = |cas: &[&Cert]| Some(bundle_pem(cas.iter().map(|c| c.der.as_slice())));
    let mut sightings = Sightings::default();
    assert_eq!(sightings.observe(None, t0()), Publication::Nobody);
    assert_eq!(sightings.observe(Some(&[]), t0()), Publication::Nobody);
    let hooks = vec![
        ("x".to_owned(), pem(&[&a])),
        ("y".to_owned(), pem(&[&a, &b])),
    ];
    assert_eq!(
        sightings.observe(Some(&hooks), t0()),
        Publication::Cas(vec![PublishedCa {
            der: a.der.clone(),
            since: t0()
        }])
    );
    let hooks = vec![
        ("x".to_owned(), pem(&[&a, &b])),
        ("y".to_owned(), pem(&[&b, &a])),
    ];
    assert_eq!(
        sightings.observe(Some(&hooks), t0() + H),
        Publication::Cas(vec![
            PublishedCa {
                der: a.der.clone(),
                since: t0()
            },
            PublishedCa {
                der: b.der.clone(),
                since: t0() + H
            },
        ])
    );
    // Gone and back: seen anew.
    let hooks = vec![("x".to_owned(), pem(&[&b])), ("y".to_owned(), None)];
    assert_eq!(
        sightings.observe(Some(&hooks), t0() + 2 * H),
        Publication::Cas(vec![])
    );
    let hooks = vec![("x".to_owned(), pem(&[&b]))];
    assert_eq!(
        sightings.observe(Some(&hooks), t0() + 3 * H),
        Publication::Cas(vec![PublishedCa {
            der: b.der.clone(),
            since: t0() + 3 * H
        }])
    );

    assert_eq!(
        webhooks_to_update(
            &[
                ("x".to_owned(), pem(&[&a])),
                ("y".to_owned(), pem(&[&a, &b])),
                ("z".to_owned(), None)
            ],
            std::slice::from_ref(&a.der)
        ),
        ["y", "z"]
    );
}

#[test]
fn times_round_trip_through_annotations() {
    let t = t0() + Duration::from_millis(1500);
    assert_eq!(format_time(t0()), "2027-01-15T08:00:00Z");
    assert_eq!(
        parse_time(&format_time(t)),
        Some(t0() + 2 * S),
        "rounded up"
    );
    assert_eq!(parse_time("garbage"), None);
}

/// Whether the certificate a replica serves at `at` (having loaded the
/// Secret `replica_lag` late) is trusted by what the API server uses at
/// `at` (having loaded the configuration `api_lag` late).
fn trusted(
    world: &World,
    at: SystemTime,
    api_lag: Duration,
    replica_lag: Duration,
) -> Result<(), String> {
    let api_time = at - api_lag;
    let replica_time = at - replica_lag;
    let Some((_, webhooks)) = world
        .published_log
        .iter()
        .rev()
        .find(|(t, _)| *t <= api_time)
    else {
        return Ok(()); // installing: nothing published yet
    };
    let Some((_, pair)) = world
        .serving_log
        .iter()
        .rev()
        .find(|(t, _)| *t <= replica_time)
    else {
        return Err("nothing served".into());
    };
    let leaf =
        check_serving(pair, &world.settings.sans, at).map_err(|p| format!("{p:?} at {at:?}"))?;
    for (name, ca_bundle) in webhooks {
        let cas = certs_from_pem(ca_bundle.as_deref().unwrap_or_default()).0;
        if !cas.iter().any(|ca| ca.valid_at(at) && leaf.signed_by(ca)) {
            return Err(format!(
                "{name}: serving certificate {} (issuer of it not among {:?}) at {at:?}",
                leaf.serial, cas
            ));
        }
    }
    Ok(())
}

#[test]
fn no_moment_without_a_trusted_certificate_over_three_years_of_rotations() {
    // Short-lived for many rotations: CA 1000 h (renewed at 800 h), serving
    // 100 h (renewed at 80 h). Forced rotations and a lost Secret on the
    // way.
    let mut world = World::new(2);
    world.settle();
    let end = t0() + 3000 * H;
    let mut forced = vec![
        (t0() + 300 * H, ROTATE, "a"),
        (t0() + 310 * H, ROTATE_CA, "b"),
        (t0() + 310 * H + 10 * S, ROTATE, "c"), // during the CA rotation
        (t0() + 1300 * H, ROTATE_CA, "d"),
    ];
    let mut lose_secret_at = Some(t0() + 2000 * H);
    let mut passes = 0;
    while world.now < end {
        passes += 1;
        assert!(passes < 10_000, "no progress");
        let published = world.webhooks.clone();
        let plan = world.step();
        if matches!(plan.action, Action::Write(_)) || world.webhooks != published {
            continue;
        }
        let mut next = plan.next_check;
        if let Some((at, _, _)) = forced.first()
            && *at <= next
        {
            let (at, key, value) = forced.remove(0);
            world.now = at.max(world.now);
            world.annotate(key, value);
            continue;
        }
        if let Some(at) = lose_secret_at
            && at <= next
        {
            world.now = at;
            world.secret = None;
            lose_secret_at = None;
            continue;
        }
        next = next.max(world.now + S);
        world.now = next;
    }

    let rotations = world
        .writes
        .iter()
        .filter(|(_, r)| {
            r.iter().any(|r| {
                matches!(
                    r,
                    Reason::CaExpiring | Reason::CaForced | Reason::SecretMissing
                )
            })
        })
        .count();
    assert!(rotations >= 5, "{rotations}: {:?}", world.writes);
    let renewals = world
        .writes
        .iter()
        .filter(|(_, r)| r.contains(&Reason::ServingExpiring))
        .count();
    assert!(renewals >= 25, "{renewals}");
    assert!(world.writes.len() < 120, "no churn: {}", world.writes.len());

    // Every moment at which a view changes: each event, and each event
    // seen late.
    let lag = GRACE / 2;
    let first_published = world.published_log[0].0;
    let mut moments: Vec<SystemTime> = world
        .published_log
        .iter()
        .map(|(t, _)| *t)
        .chain(world.serving_log.iter().map(|(t, _)| *t))
        .flat_map(|t| [t, t + lag, t + lag - S])
        .filter(|t| *t >= first_published + lag)
        .collect();
    moments.sort();
    for at in moments {
        for api_lag in [Duration::ZERO, lag] {
            for replica_lag in [Duration::ZERO, lag] {
                if let Err(err) = trusted(&world, at, api_lag, replica_lag) {
                    panic!(
                        "api lag {api_lag:?}, replica lag {replica_lag:?}: {err}\nwrites: {:?}",
                        world.writes
                    );
                }
            }
        }
    }
}
