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

impl RetryPolicy {
    /// Full-jitter exponential backoff; a cloud's `retry_after` wins when longer.
    fn delay(&self, attempt: u32, err: &ProviderError) -> Duration {
        let exp = self.base.saturating_mul(1 << attempt.min(16)).min(self.max);
        let jittered = exp.mul_f64(rand::rng().random_range(0.0..=1.0));
        match err {
            ProviderError::Throttled {
                retry_after: Some(after),
            } => (*after).max(jittered).min(self.max),
            _ => jittered,
        }
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
