//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go does
//! it: the holder renews `renewTime` every retry period; a candidate takes the
//! lease over when its record has not changed for `leaseDurationSeconds` as
//! measured on the candidate's own clock (so clock skew between replicas does
//! not matter); every write carries the `resourceVersion` it read, so two
//! candidates can never both win. The holder stops its work once it has failed
//! to renew for the renew deadline, which is shorter than the lease duration:
//! its work has ended before anybody else may take over.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::fence::Fence;

/// Where the lease lives, who we are, and the timings (client-go's defaults:
/// 15 s, 10 s, 2 s).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity, unique among the candidates (the pod name).
    pub identity: String,
    /// How long a candidate waits for a silent holder before it takes over.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it gives up leading.
    pub renew_deadline: Duration,
    /// How often candidates try to acquire and the holder renews.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
    pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
    pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);

    /// The timings must leave the holder time to stop before a takeover.
    pub fn validate(&self) -> Result<(), LeaderError> {
        let bad = |why: &str| Err(LeaderError::Config(why.to_string()));
        if self.name.is_empty() || self.namespace.is_empty() || self.identity.is_empty() {
            return bad("lease name, namespace and identity must not be empty");
        }
        if self.lease_duration < Duration::from_secs(1) {
            return bad("the lease duration must be at least 1s (the Lease counts whole seconds)");
        }
        if self.renew_deadline >= self.lease_duration {
            return bad("the renew deadline must be shorter than the lease duration");
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return bad("the retry period must be positive and shorter than the renew deadline");
        }
        Ok(())
    }

    /// Whole seconds, rounded up: the holder never promises less than asked.
    fn duration_seconds(&self) -> i32 {
        let d = self.lease_duration;
        let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        i32::try_from(secs).unwrap_or(i32::MAX)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("leader election: {0}")]
    Config(String),
}

/// Told to the work when it must stop (leadership lost, or shutdown).
#[derive(Clone, Debug)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    /// Resolves once the work must stop.
    pub async fn stopped(mut self) {
        // An Err means the elector is gone: stop too.
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// Why [`Leadership::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// `shutdown` resolved.
    Shutdown,
    /// The work returned without being asked to.
    WorkEnded,
}

/// What the lease says after our attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Attempt {
    /// We hold it (just acquired or renewed).
    Held,
    /// Somebody else holds it and has not gone silent.
    HeldBy(String),
}

/// What a candidate should write, given the lease it read.
#[derive(Clone, Debug, PartialEq)]
enum Decision {
    /// Write this spec (acquire, take over, or renew).
    Write(LeaseSpec),
    /// Leave it: held by this other identity.
    Wait(String),
}

/// The pure part of one attempt. `expired`: the current record has not
/// changed for its `leaseDurationSeconds`, as measured by us.
fn decide(
    current: &LeaseSpec,
    expired: bool,
    identity: &str,
    duration_seconds: i32,
    now: Timestamp,
) -> Decision {
    let holder = current.holder_identity.as_deref().unwrap_or_default();
    if !holder.is_empty() && holder != identity && !expired {
        return Decision::Wait(holder.to_string());
    }
    let ours = holder == identity;
    let transitions = current.lease_transitions.unwrap_or(0);
    Decision::Write(LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(duration_seconds),
        acquire_time: if ours {
            current.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours {
            transitions
        } else {
            transitions.saturating_add(1)
        }),
        ..current.clone()
    })
}

/// The spec that gives the lease up: no holder, and a one-second duration so
/// a candidate that missed the release does not wait long either (as client-go).
fn released(current: &LeaseSpec, now: Timestamp) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(String::new()),
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        ..current.clone()
    }
}

/// The last record seen and when it was first seen, by our clock.
#[derive(Debug, Default)]
struct Observed {
    record: Option<(LeaseSpec, Instant)>,
}

impl Observed {
    fn see(&mut self, spec: &LeaseSpec) {
        if self.record.as_ref().is_none_or(|(seen, _)| seen != spec) {
            self.record = Some((spec.clone(), Instant::now()));
        }
    }

    fn expired(&self) -> bool {
        self.record.as_ref().is_some_and(|(spec, since)| {
            let secs = spec.lease_duration_seconds.unwrap_or(0).max(0);
            since.elapsed() >= Duration::from_secs(secs.unsigned_abs().into())
        })
    }
}

/// One replica's candidacy for the lease.
pub struct Leadership {
    api: Api<Lease>,
    config: LeaseConfig,
    state: watch::Sender<bool>,
    gauge: Option<Gauge>,
    observed: Observed,
    fence: Fence,
    terms: u64,
}

impl Leadership {
    pub fn new(client: Client, config: LeaseConfig) -> Result<Self, LeaderError> {
        config.validate()?;
        Ok(Leadership {
            api: Api::namespaced(client, &config.namespace),
            config,
            state: watch::channel(false).0,
            gauge: None,
            observed: Observed::default(),
            fence: Fence::standby(),
            terms: 0,
        })
    }

    /// Kept at 1 while leading, 0 otherwise (`meshmirror_leader`).
    pub fn with_gauge(mut self, gauge: Gauge) -> Self {
        gauge.set(0);
        self.gauge = Some(gauge);
        self
    }

    /// The fencing token writes check: a term begins when the lease is won
    /// and ends the moment it is lost, before the work is stopped.
    pub fn with_fence(mut self, fence: Fence) -> Self {
        fence.end();
        self.fence = fence;
        self
    }

    /// True while this replica leads (its work runs).
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.state.subscribe()
    }

    /// Waits for the lease, runs `work` while holding it, and starts over when
    /// the lease is lost; `work` is told to stop through its [`StopSignal`] and
    /// awaited before anything else happens, so it never runs on two replicas
    /// at once. On `shutdown` (or when `work` returns by itself) the work is
    /// stopped and awaited, the lease released, and this returns.
    pub async fn run<S, F, Fut>(mut self, shutdown: S, mut work: F) -> Ended
    where
        S: Future<Output = ()>,
        F: FnMut(StopSignal) -> Fut,
        Fut: Future<Output = ()>,
    {
        let mut shutdown = pin!(shutdown);
        loop {
            let since = tokio::select! {
                () = &mut shutdown => return Ended::Shutdown,
                since = self.acquire() => since,
            };
            self.terms += 1;
            self.fence.begin(self.terms);
            tracing::info!(identity = %self.config.identity, lease = %self.config.name,
                term = self.terms, "leading");
            self.set_leading(true);
            let (stop, stop_rx) = watch::channel(false);
            let mut running = pin!(work(StopSignal(stop_rx)));
            let ended = tokio::select! {
                () = &mut running => Some(Ended::WorkEnded),
                () = self.keep_renewing(since) => None,
                () = &mut shutdown => Some(Ended::Shutdown),
            };
            match ended {
                None => {
                    // Fenced first: a write still in flight after this point
                    // is refused, whatever the work is doing.
                    self.fence.end();
                    tracing::warn!(identity = %self.config.identity, "lost the lease; stopping work");
                    let _ = stop.send(true);
                    running.await;
                    self.set_leading(false);
                }
                Some(ended) => {
                    let _ = stop.send(true);
                    // Still the holder while the work winds down: keep renewing
                    // so nobody takes over before it has ended.
                    let renewed = ended == Ended::WorkEnded
                        || tokio::select! {
                            () = &mut running => true,
                            () = self.keep_renewing(Instant::now()) => false,
                        };
                    if !renewed {
                        self.fence.end();
                        running.await;
                    }
                    self.fence.end();
                    self.set_leading(false);
                    if renewed {
                        self.release().await;
                    }
                    return ended;
                }
            }
        }
    }

    fn set_leading(&self, leading: bool) {
        self.state.send_replace(leading);
        if let Some(gauge) = &self.gauge {
            gauge.set(i64::from(leading));
        }
    }

    /// Tries every retry period (with jitter) until we hold the lease; returns
    /// when the successful attempt started.
    async fn acquire(&mut self) -> Instant {
        loop {
            let started = Instant::now();
            match self.attempt().await {
                Ok(Attempt::Held) => return started,
                Ok(Attempt::HeldBy(holder)) => {
                    tracing::debug!(%holder, "lease held by another replica");
                }
                Err(err) => tracing::debug!(%err, "could not acquire the lease"),
            }
            tokio::time::sleep(jittered(self.config.retry_period)).await;
        }
    }

    /// Renews every retry period; returns when the lease is lost: another
    /// holder, or no successful renewal for the renew deadline. `since`: when
    /// the last successful write was sent.
    async fn keep_renewing(&mut self, mut since: Instant) {
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            let left = self.config.renew_deadline.saturating_sub(since.elapsed());
            if left.is_zero() {
                return;
            }
            let started = Instant::now();
            match tokio::time::timeout(left, self.attempt()).await {
                Ok(Ok(Attempt::Held)) => since = started,
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    tracing::warn!(%holder, "the lease was taken over");
                    return;
                }
                Ok(Err(err)) => tracing::warn!(%err, "could not renew the lease"),
                Err(_) => tracing::warn!("renewing the lease timed out"),
            }
            if since.elapsed() >= self.config.renew_deadline {
                return;
            }
        }
    }

    /// One read and, if we may hold the lease, one write.
    async fn attempt(&mut self) -> Result<Attempt, kube::Error> {
        let duration = self.config.duration_seconds();
        let now = Timestamp::now();
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observed.see(&created.spec.unwrap_or_default());
                    Ok(Attempt::Held)
                }
                // Another candidate created it first.
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    Ok(Attempt::HeldBy(String::new()))
                }
                Err(err) => Err(err),
            };
        };
        let current = lease.spec.clone().unwrap_or_default();
        self.observed.see(&current);
        match decide(
            &current,
            self.observed.expired(),
            &self.config.identity,
            duration,
            now,
        ) {
            Decision::Wait(holder) => Ok(Attempt::HeldBy(holder)),
            Decision::Write(spec) => {
                let name = lease.name_any();
                // The read's resourceVersion stays in the metadata: a write
                // by anybody else in between makes this a 409.
                let next = Lease {
                    metadata: lease.metadata,
                    spec: Some(spec),
                };
                let written = self
                    .api
                    .replace(&name, &PostParams::default(), &next)
                    .await?;
                self.observed.see(&written.spec.unwrap_or_default());
                Ok(Attempt::Held)
            }
        }
    }

    /// Gives the lease up so a standby takes over at its next try.
    async fn release(&mut self) {
        let release = async {
            let Some(lease) = self.api.get_opt(&self.config.name).await? else {
                return Ok(());
            };
            let current = lease.spec.clone().unwrap_or_default();
            if current.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(());
            }
            let name = lease.name_any();
            let next = Lease {
                metadata: lease.metadata,
                spec: Some(released(&current, Timestamp::now())),
            };
            self.api
                .replace(&name, &PostParams::default(), &next)
                .await
                .map(|_| ())
        };
        match tokio::time::timeout(self.config.renew_deadline, release).await {
            Ok(Ok(())) => tracing::info!(lease = %self.config.name, "released the lease"),
            Ok(Err(err)) => {
                tracing::warn!(%err, "could not release the lease; a standby takes over when it expires")
            }
            Err(_) => tracing::warn!(
                "releasing the lease timed out; a standby takes over when it expires"
            ),
        }
    }
}

/// `period` stretched by up to 20%, so candidates do not retry in lockstep.
fn jittered(period: Duration) -> Duration {
    period.mul_f64(1.0 + 0.2 * rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "pod-a";

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn held_by(holder: &str, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            acquire_time: Some(MicroTime(t(0))),
            renew_time: Some(MicroTime(t(5))),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    fn written(d: Decision) -> LeaseSpec {
        match d {
            Decision::Write(spec) => spec,
            Decision::Wait(h) => panic!("expected a write, got a wait for {h}"),
        }
    }

    #[test]
    fn a_live_holder_is_left_alone() {
        assert_eq!(
            decide(&held_by("pod-b", 3), false, ME, 15, t(10)),
            Decision::Wait("pod-b".into())
        );
    }

    #[test]
    fn a_silent_holder_is_taken_over_and_counted() {
        let spec = written(decide(&held_by("pod-b", 3), true, ME, 15, t(30)));
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(t(30))));
        assert_eq!(spec.renew_time, Some(MicroTime(t(30))));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let free = released(&held_by("pod-b", 3), t(8));
        assert_eq!(free.holder_identity.as_deref(), Some(""));
        assert_eq!(free.lease_duration_seconds, Some(1));
        assert_eq!(free.lease_transitions, Some(3));
        let spec = written(decide(&free, false, ME, 15, t(9)));
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(4));
    }

    #[test]
    fn renewing_keeps_acquire_time_and_transitions() {
        let spec = written(decide(&held_by(ME, 2), false, ME, 15, t(12)));
        assert_eq!(spec.acquire_time, Some(MicroTime(t(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(t(12))));
        assert_eq!(spec.lease_transitions, Some(2));
    }

    #[test]
    fn timings_must_leave_room_to_stop() {
        let ok = LeaseConfig {
            namespace: "ns".into(),
            name: "meshmirror".into(),
            identity: ME.into(),
            lease_duration: LeaseConfig::DEFAULT_LEASE_DURATION,
            renew_deadline: LeaseConfig::DEFAULT_RENEW_DEADLINE,
            retry_period: LeaseConfig::DEFAULT_RETRY_PERIOD,
        };
        assert!(ok.validate().is_ok());
        for bad in [
            LeaseConfig {
                renew_deadline: Duration::from_secs(15),
                ..ok.clone()
            },
            LeaseConfig {
                retry_period: Duration::from_secs(10),
                ..ok.clone()
            },
            LeaseConfig {
                lease_duration: Duration::from_millis(900),
                renew_deadline: Duration::from_millis(500),
                retry_period: Duration::from_millis(100),
                ..ok.clone()
            },
            LeaseConfig {
                identity: String::new(),
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lease_seconds_round_up() {
        let c = LeaseConfig {
            namespace: "ns".into(),
            name: "l".into(),
            identity: ME.into(),
            lease_duration: Duration::from_millis(2500),
            renew_deadline: Duration::from_secs(2),
            retry_period: Duration::from_millis(100),
        };
        assert_eq!(c.duration_seconds(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_expires_after_its_own_duration_unchanged() {
        let mut seen = Observed::default();
        assert!(!seen.expired(), "nothing seen is not expired");
        let spec = held_by("pod-b", 0);
        seen.see(&spec);
        tokio::time::advance(Duration::from_secs(14)).await;
        seen.see(&spec);
        assert!(!seen.expired());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(seen.expired());
        // A renewal starts the clock again.
        seen.see(&LeaseSpec {
            renew_time: Some(MicroTime(t(20))),
            ..spec
        });
        assert!(!seen.expired());
    }
}
