use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;

use crate::{
    BoxEventStream, GroupRef, HookDef, Instance, LifecycleAction, Outcome, Provider, ProviderError,
};

/// How often and how long to retry a retryable provider error within one pass.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(200),
            max: Duration::from_secs(5),
        }
    }
}

/// `base` doubled `attempt` times, at most `max`.
fn exponential(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1 << attempt.min(16)).min(max)
}

/// Full jitter: uniform in `0..=ceiling`, so clients that failed together do
/// not retry together.
fn full_jitter(ceiling: Duration) -> Duration {
    ceiling.mul_f64(rand::rng().random_range(0.0..=1.0))
}

impl RetryPolicy {
    /// Full-jitter exponential backoff; a cloud's `retry_after` wins when longer.
    fn delay(&self, attempt: u32, err: &ProviderError) -> Duration {
        let jittered = full_jitter(exponential(self.base, self.max, attempt));
        match err {
            ProviderError::Throttled {
                retry_after: Some(after),
            } => (*after).max(jittered).min(self.max),
            _ => jittered,
        }
    }
}

/// The wait between reconnects of a long-lived event feed: full-jitter
/// exponential backoff from `base` up to `max`, for as long as the feed keeps
/// failing (a feed never gives up); one success starts it over from `base`.
#[derive(Clone, Debug)]
pub struct Reconnect {
    base: Duration,
    max: Duration,
    failures: u32,
}

impl Reconnect {
    /// The first wait is at most `base`; no wait is longer than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Reconnect {
            base,
            max: max.max(base),
            failures: 0,
        }
    }

    /// Counts a failure and returns how long to wait before trying again.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = exponential(self.base, self.max, self.failures);
        self.failures = self.failures.saturating_add(1);
        full_jitter(ceiling)
    }

    /// Counts a failure and sleeps [`next_delay`](Self::next_delay).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// The feed works again: the next failure waits at most `base`.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Wraps any provider with retry, jitter and backoff, once for all backends.
pub struct Retrying<P> {
    inner: P,
    policy: RetryPolicy,
}

impl<P: Provider> Retrying<P> {
    pub fn new(inner: P, policy: RetryPolicy) -> Self {
        Retrying { inner, policy }
    }

    /// Calls `call` until it succeeds, fails for good, or the attempts run out.
    async fn retry<T, F, Fut>(&self, operation: &str, mut call: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(err) if err.is_retryable() && attempt + 1 < self.policy.attempts => {
                    let delay = self.policy.delay(attempt, &err);
                    tracing::debug!(provider = self.inner.name(), operation, %err, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl<P: Provider> Provider for Retrying<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn members(&self, group: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
        self.retry("members", || self.inner.members(group)).await
    }

    async fn instances(
        &self,
        group: &GroupRef,
        ids: &[String],
    ) -> Result<Option<Vec<Instance>>, ProviderError> {
        self.retry("instances", || self.inner.instances(group, ids))
            .await
    }

    fn events(&self) -> Option<BoxEventStream> {
        self.inner.events()
    }

    fn answers_hooks(&self, group: &GroupRef, hooks: &[&str]) {
        self.inner.answers_hooks(group, hooks);
    }

    async fn lifecycle_hooks(
        &self,
        group: &GroupRef,
    ) -> Result<Option<Vec<HookDef>>, ProviderError> {
        self.retry("lifecycle_hooks", || self.inner.lifecycle_hooks(group))
            .await
    }

    fn stand_down(&self) {
        self.inner.stand_down();
    }

    async fn complete_lifecycle(
        &self,
        action: &LifecycleAction,
        outcome: Outcome,
    ) -> Result<(), ProviderError> {
        self.retry("complete_lifecycle", || {
            self.inner.complete_lifecycle(action, outcome)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    struct Flaky {
        errors: Mutex<Vec<ProviderError>>,
        calls: Mutex<u32>,
    }

    #[async_trait]
    impl Provider for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn members(&self, _: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
            *self.calls.lock().unwrap() += 1;
            match self.errors.lock().unwrap().pop() {
                Some(err) => Err(err),
                None => Ok(vec![]),
            }
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        }
    }

    fn group() -> GroupRef {
        GroupRef::Sim { group: "g".into() }
    }

    /// Enough draws that a jitter stuck at one end would show.
    const DRAWS: usize = 200;

    #[test]
    fn reconnect_delays_stay_under_the_doubling_ceiling_and_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1_000);
        for _ in 0..DRAWS {
            let mut backoff = Reconnect::new(base, max);
            // Ceilings 100, 200, 400, 800, then the cap for good.
            let ceilings = [100, 200, 400, 800, 1_000, 1_000, 1_000, 1_000];
            for (failure, ceiling) in ceilings.into_iter().enumerate() {
                let delay = backoff.next_delay();
                assert!(
                    delay <= Duration::from_millis(ceiling),
                    "failure {failure}: {delay:?} > {ceiling}ms"
                );
            }
            assert_eq!(backoff.failures(), 8);
        }
        // Far past the doubling's overflow, still capped.
        let mut backoff = Reconnect::new(base, max);
        for _ in 0..100 {
            assert!(backoff.next_delay() <= max);
        }
    }

    #[test]
    fn reconnect_delays_are_jittered() {
        let mut backoff = Reconnect::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: Vec<Duration> = (0..DRAWS).map(|_| backoff.next_delay()).collect();
        assert!(
            delays.iter().any(|d| *d != delays[0]),
            "{DRAWS} equal delays: no jitter"
        );
        assert!(
            delays.iter().any(|d| *d < Duration::from_millis(900)),
            "never well below the ceiling: not full jitter"
        );
    }

    #[test]
    fn reconnect_starts_over_after_a_success() {
        let base = Duration::from_millis(10);
        let mut backoff = Reconnect::new(base, Duration::from_secs(60));
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.succeeded();
        assert_eq!(backoff.failures(), 0);
        for _ in 0..DRAWS {
            let mut again = backoff.clone();
            assert!(again.next_delay() <= base, "the first wait after a success");
        }
    }

    #[test]
    fn a_cap_below_the_base_is_the_base() {
        let mut backoff = Reconnect::new(Duration::from_millis(50), Duration::from_millis(1));
        for _ in 0..DRAWS {
            assert!(backoff.next_delay() <= Duration::from_millis(50));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reconnect_wait_sleeps_at_most_the_ceiling() {
        let mut backoff = Reconnect::new(Duration::from_secs(4), Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        backoff.wait().await;
        assert!(started.elapsed() <= Duration::from_secs(4));
        assert_eq!(backoff.failures(), 1);
    }

    #[tokio::test]
    async fn retries_transient_errors_then_succeeds() {
        let p = Retrying::new(
            Flaky {
                errors: Mutex::new(vec![
                    ProviderError::Transient("a".into()),
                    ProviderError::Throttled { retry_after: None },
                ]),
                calls: Mutex::new(0),
            },
            fast(),
        );
        assert_eq!(p.members(&group()).await, Ok(vec![]));
        assert_eq!(*p.inner.calls.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_attempts_and_never_retries_permanent_errors() {
        let p = Retrying::new(
            Flaky {
                errors: Mutex::new(vec![ProviderError::Transient("x".into()); 5]),
                calls: Mutex::new(0),
            },
            fast(),
        );
        assert!(p.members(&group()).await.is_err());
        assert_eq!(*p.inner.calls.lock().unwrap(), 3);

        let p = Retrying::new(
            Flaky {
                errors: Mutex::new(vec![ProviderError::GroupNotFound("g".into())]),
                calls: Mutex::new(0),
            },
            fast(),
        );
        assert_eq!(
            p.members(&group()).await,
            Err(ProviderError::GroupNotFound("g".into()))
        );
        assert_eq!(*p.inner.calls.lock().unwrap(), 1);
    }
}
