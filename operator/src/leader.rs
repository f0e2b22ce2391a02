//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does
//! it: the holder renews the Lease every few seconds; another replica takes
//! it over once it has not been renewed for the lease duration. Writes are
//! optimistic (`resourceVersion`), so two replicas can never both win.
//!
//! A replica that loses the Lease stops its work and returns an error; the
//! process then exits and is restarted, which is the simplest way to be sure
//! nothing of the old term keeps writing.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{info, warn};

/// Settings of the election.
#[derive(Debug, Clone)]
pub struct Election {
    /// Namespace of the Lease (the operator's own).
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews, and others retry.
    pub retry_period: Duration,
}

/// Why leadership ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Another replica holds the Lease now, or renewing failed for longer
    /// than the lease duration.
    #[error("lost the leader lease {namespace}/{name}")]
    Lost {
        /// Lease namespace.
        namespace: String,
        /// Lease name.
        name: String,
    },
}

/// What to do with the Lease as observed.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Take it (it is free or expired): write this spec.
    Acquire(LeaseSpec),
    /// We hold it: write this renewed spec.
    Renew(LeaseSpec),
    /// Someone else holds a valid Lease.
    Wait,
}

fn micro(ts: Timestamp) -> MicroTime {
    MicroTime(ts)
}

/// Decides, from the Lease as read, what this replica does. Pure.
pub fn decide(
    current: Option<&LeaseSpec>,
    identity: &str,
    lease_duration: Duration,
    now: Timestamp,
) -> Decision {
    let duration_secs = i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX);
    let fresh = |transitions: i32, acquire: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(duration_secs),
        acquire_time: acquire.or(Some(micro(now))),
        renew_time: Some(micro(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let Some(spec) = current else {
        return Decision::Acquire(fresh(0, None));
    };
    let transitions = spec.lease_transitions.unwrap_or(0);
    if spec.holder_identity.as_deref() == Some(identity) {
        return Decision::Renew(fresh(transitions, spec.acquire_time.clone()));
    }
    let valid_for = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let expired = match (&spec.holder_identity, &spec.renew_time) {
        (None, _) | (Some(_), None) => true,
        (Some(h), Some(_)) if h.is_empty() => true,
        (Some(_), Some(renewed)) => renewed
            .0
            .saturating_add(valid_for)
            .is_ok_and(|until| until < now),
    };
    if expired {
        Decision::Acquire(fresh(transitions.saturating_add(1), None))
    } else {
        Decision::Wait
    }
}

/// One attempt to acquire or renew. `Ok(true)` when we hold the Lease after it.
async fn try_once(api: &Api<Lease>, election: &Election) -> Result<bool, kube::Error> {
    let existing = api.get_opt(&election.name).await?;
    let decision = decide(
        existing.as_ref().and_then(|l| l.spec.as_ref()),
        &election.identity,
        election.lease_duration,
        Timestamp::now(),
    );
    let spec = match decision {
        Decision::Wait => return Ok(false),
        Decision::Acquire(spec) | Decision::Renew(spec) => spec,
    };
    let result = match existing {
        Some(mut lease) => {
            lease.spec = Some(spec);
            api.replace(&election.name, &PostParams::default(), &lease)
                .await
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(election.name.clone()),
                    namespace: Some(election.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await
        }
    };
    match result {
        Ok(_) => Ok(true),
        // Someone else wrote first: not ours this round.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Waits until this replica holds the Lease, then runs `work` while renewing
/// it. Returns the work's result, or [`LeaderError::Lost`] when the Lease is
/// lost first (the work future is dropped then).
pub async fn run_as_leader<F, T>(
    client: kube::Client,
    election: Election,
    work: F,
) -> Result<T, LeaderError>
where
    F: Future<Output = T>,
{
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    loop {
        match try_once(&api, &election).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) => warn!(error = %err, "leader election: acquiring the lease failed"),
        }
        tokio::time::sleep(election.retry_period).await;
    }
    info!(identity = %election.identity, lease = %election.name, "became leader");

    let renew = async {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(election.retry_period).await;
            match try_once(&api, &election).await {
                Ok(true) => last_renewed = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(err) => {
                    warn!(error = %err, "leader election: renewing the lease failed");
                    // Give up before another replica may take over.
                    if last_renewed.elapsed() + election.retry_period >= election.lease_duration {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        out = work => Ok(out),
        () = renew => Err(LeaderError::Lost {
            namespace: election.namespace.clone(),
            name: election.name.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    #[test]
    fn a_missing_lease_is_acquired() {
        let Decision::Acquire(spec) = decide(None, "a", D, at(100)) else {
            panic!("not acquired")
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn the_holder_renews_and_keeps_its_acquire_time() {
        let Decision::Acquire(spec) = decide(None, "a", D, at(100)) else {
            panic!()
        };
        let Decision::Renew(renewed) = decide(Some(&spec), "a", D, at(105)) else {
            panic!("not renewed")
        };
        assert_eq!(renewed.acquire_time, spec.acquire_time);
        assert_eq!(renewed.renew_time, Some(micro(at(105))));
    }

    #[test]
    fn others_wait_until_the_lease_expires() {
        let Decision::Acquire(spec) = decide(None, "a", D, at(100)) else {
            panic!()
        };
        assert_eq!(decide(Some(&spec), "b", D, at(110)), Decision::Wait);
        assert_eq!(decide(Some(&spec), "b", D, at(115)), Decision::Wait);
        let Decision::Acquire(taken) = decide(Some(&spec), "b", D, at(116)) else {
            panic!("not taken over")
        };
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
    }
}
