//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does
//! it: the holder renews the Lease every few seconds; another replica takes
//! it over once it has not seen the Lease change for the lease duration.
//! Writes are optimistic (`resourceVersion`), so two replicas can never both
//! win.
//!
//! - Expiry is judged by the observer's own monotonic clock (when it last saw
//!   the Lease change), never by comparing the holder's `renewTime` with the
//!   local wall clock: a replica whose clock runs ahead must not take over a
//!   Lease that is being renewed.
//! - Every API call of the election is bounded by the retry period, and the
//!   holder gives up once it could not renew for most of the lease duration,
//!   so a partitioned leader stops working before anyone else may start.
//! - On a graceful stop the holder releases the Lease (empty holder), so a
//!   rolling update hands over at once instead of after a lease duration; a
//!   replica that dies abruptly releases nothing and is replaced once its
//!   Lease expires.
//!
//! A replica that loses the Lease stops its work and returns an error; the
//! process then exits and is restarted, which is the simplest way to be sure
//! nothing of the old term keeps writing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
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
    /// How often the holder renews, and others retry; also the time limit of
    /// each API call of the election.
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
///
/// `unchanged_for` is how long this replica has seen the Lease record
/// unchanged (by its own monotonic clock); `now` only stamps what is
/// written.
pub fn decide(
    current: Option<&LeaseSpec>,
    identity: &str,
    lease_duration: Duration,
    unchanged_for: Duration,
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
    // The holder's own duration counts when it is longer than ours (a
    // replica of another version may use another setting).
    let valid_for = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(lease_duration, |s| {
            Duration::from_secs(s).max(lease_duration)
        });
    let released = spec.holder_identity.as_deref().is_none_or(str::is_empty);
    if released || unchanged_for >= valid_for {
        Decision::Acquire(fresh(transitions.saturating_add(1), None))
    } else {
        Decision::Wait
    }
}

/// The part of a Lease that changes on every renewal: seeing it change
/// means its holder is alive.
fn record_of(spec: Option<&LeaseSpec>) -> Option<(Option<String>, Option<MicroTime>)> {
    spec.map(|s| (s.holder_identity.clone(), s.renew_time.clone()))
}

/// One replica's view of the Lease between attempts.
#[derive(Debug, Default)]
struct Observer {
    last: Option<(Option<String>, Option<MicroTime>)>,
    since: Option<Instant>,
}

impl Observer {
    /// Records what was read; returns for how long it has been unchanged.
    fn observe(&mut self, spec: Option<&LeaseSpec>) -> Duration {
        let record = record_of(spec);
        let now = Instant::now();
        if self.since.is_none() || self.last != record {
            self.last = record;
            self.since = Some(now);
        }
        self.since.map_or(Duration::ZERO, |t| now.duration_since(t))
    }
}

/// Outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// We hold the Lease.
    Held,
    /// Someone else does.
    NotHeld,
}

/// One attempt to acquire or renew.
async fn try_once(
    api: &Api<Lease>,
    election: &Election,
    observer: &mut Observer,
) -> Result<Attempt, kube::Error> {
    let existing = api.get_opt(&election.name).await?;
    let spec = existing.as_ref().and_then(|l| l.spec.as_ref());
    let unchanged_for = observer.observe(spec);
    let decision = decide(
        spec,
        &election.identity,
        election.lease_duration,
        unchanged_for,
        Timestamp::now(),
    );
    let spec = match decision {
        Decision::Wait => return Ok(Attempt::NotHeld),
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
        Ok(_) => Ok(Attempt::Held),
        // Someone else wrote first: not ours this round.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(Attempt::NotHeld),
        Err(err) => Err(err),
    }
}

/// [`try_once`] bounded by the retry period: a call that hangs must not
/// keep a leader believing it still leads.
async fn try_bounded(
    api: &Api<Lease>,
    election: &Election,
    observer: &mut Observer,
) -> Result<Attempt, String> {
    match tokio::time::timeout(election.retry_period, try_once(api, election, observer)).await {
        Ok(Ok(attempt)) => Ok(attempt),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {:?}", election.retry_period)),
    }
}

/// Gives the Lease up (empty holder) if we still hold it, so the next
/// replica need not wait for it to expire. Best effort.
async fn release(api: &Api<Lease>, election: &Election) {
    let attempt = async {
        let Some(mut lease) = api.get_opt(&election.name).await? else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(election.identity.as_str()) {
            return Ok(false);
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(micro(Timestamp::now()));
        api.replace(&election.name, &PostParams::default(), &lease)
            .await
            .map(|_| true)
    };
    match tokio::time::timeout(election.retry_period, attempt).await {
        Ok(Ok(true)) => {
            info!(identity = %election.identity, lease = %election.name, "released the leader lease")
        }
        Ok(Ok(false)) => {}
        Ok(Err(err)) => warn!(error = %err, "leader election: releasing the lease failed"),
        Err(_) => warn!("leader election: releasing the lease timed out"),
    }
}

/// Waits until this replica holds the Lease, then runs `work` while renewing
/// it. Returns the work's result (after releasing the Lease), or
/// [`LeaderError::Lost`] when the Lease is lost first (the work future is
/// dropped then).
///
/// `standby` is set while this replica takes part in the election without
/// leading and its last read of the Lease succeeded: it is healthy and
/// ready to take over.
pub async fn run_as_leader<F, T>(
    client: kube::Client,
    election: Election,
    standby: Arc<AtomicBool>,
    work: F,
) -> Result<T, LeaderError>
where
    F: Future<Output = T>,
{
    let api: Api<Lease> = Api::namespaced(client, &election.namespace);
    let mut observer = Observer::default();
    loop {
        match try_bounded(&api, &election, &mut observer).await {
            Ok(Attempt::Held) => break,
            Ok(Attempt::NotHeld) => standby.store(true, Ordering::Relaxed),
            Err(err) => {
                standby.store(false, Ordering::Relaxed);
                warn!(error = %err, "leader election: acquiring the lease failed");
            }
        }
        tokio::time::sleep(election.retry_period).await;
    }
    standby.store(false, Ordering::Relaxed);
    info!(identity = %election.identity, lease = %election.name, "became leader");

    let renew = async {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(election.retry_period).await;
            match try_bounded(&api, &election, &mut observer).await {
                Ok(Attempt::Held) => last_renewed = Instant::now(),
                Ok(Attempt::NotHeld) => return,
                Err(err) => {
                    warn!(error = %err, "leader election: renewing the lease failed");
                    // Give up before another replica may take over: the
                    // next attempt could end after the lease expired.
                    if last_renewed.elapsed() + 2 * election.retry_period >= election.lease_duration
                    {
                        return;
                    }
                }
            }
        }
    };
    let out = tokio::select! {
        out = work => out,
        () = renew => {
            warn!(identity = %election.identity, lease = %election.name, "lost leadership");
            return Err(LeaderError::Lost {
                namespace: election.namespace.clone(),
                name: election.name.clone(),
            });
        }
    };
    release(&api, &election).await;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(secs).unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn a_missing_lease_is_acquired() {
        let Decision::Acquire(spec) = decide(None, "a", D, secs(0), at(100)) else {
            panic!("not acquired")
        };
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn the_holder_renews_and_keeps_its_acquire_time() {
        let Decision::Acquire(spec) = decide(None, "a", D, secs(0), at(100)) else {
            panic!()
        };
        let Decision::Renew(renewed) = decide(Some(&spec), "a", D, secs(5), at(105)) else {
            panic!("not renewed")
        };
        assert_eq!(renewed.acquire_time, spec.acquire_time);
        assert_eq!(renewed.renew_time, Some(micro(at(105))));
    }

    #[test]
    fn others_wait_until_they_have_seen_the_lease_unchanged_for_its_duration() {
        let Decision::Acquire(spec) = decide(None, "a", D, secs(0), at(100)) else {
            panic!()
        };
        assert_eq!(
            decide(Some(&spec), "b", D, secs(10), at(110)),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&spec), "b", D, secs(14), at(115)),
            Decision::Wait
        );
        let Decision::Acquire(taken) = decide(Some(&spec), "b", D, secs(15), at(116)) else {
            panic!("not taken over")
        };
        assert_eq!(taken.holder_identity.as_deref(), Some("b"));
        assert_eq!(taken.lease_transitions, Some(1));
    }

    #[test]
    fn the_wall_clock_never_expires_a_lease_that_is_being_renewed() {
        // The holder's renewTime is an hour behind this replica's clock (a
        // skewed node), but the record changed moments ago: it is alive.
        let Decision::Acquire(spec) = decide(None, "a", D, secs(0), at(100)) else {
            panic!()
        };
        assert_eq!(
            decide(Some(&spec), "b", D, secs(1), at(100 + 3600)),
            Decision::Wait
        );
    }

    #[test]
    fn a_released_lease_is_taken_at_once_and_a_longer_holder_duration_is_respected() {
        let released = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        };
        let Decision::Acquire(taken) = decide(Some(&released), "b", D, secs(0), at(100)) else {
            panic!("a released lease was not taken")
        };
        assert_eq!(taken.lease_transitions, Some(4));
        let long = LeaseSpec {
            holder_identity: Some("a".into()),
            lease_duration_seconds: Some(60),
            ..LeaseSpec::default()
        };
        assert_eq!(
            decide(Some(&long), "b", D, secs(30), at(100)),
            Decision::Wait
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_observer_measures_time_since_the_last_change() {
        let mut observer = Observer::default();
        let a = LeaseSpec {
            holder_identity: Some("a".into()),
            renew_time: Some(micro(at(1))),
            ..LeaseSpec::default()
        };
        assert_eq!(observer.observe(Some(&a)), Duration::ZERO);
        tokio::time::advance(secs(4)).await;
        assert_eq!(observer.observe(Some(&a)), secs(4));
        let renewed = LeaseSpec {
            renew_time: Some(micro(at(5))),
            ..a.clone()
        };
        assert_eq!(observer.observe(Some(&renewed)), Duration::ZERO);
        tokio::time::advance(secs(2)).await;
        assert_eq!(observer.observe(Some(&renewed)), secs(2));
    }
}
