//! The providers compiled into this build, each wrapped once with retry and
//! metrics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use meshmirror_provider::{
    BoxEventStream, GroupRef, HookDef, Instance, LifecycleAction, Outcome, Provider, ProviderError,
    RetryPolicy, Retrying,
};

use crate::metrics::{Metrics, ProviderErrorLabels, ProviderOpLabels};

/// The longest one cloud call may take before it counts as a transient
/// failure, so a hung call cannot stall its mirror (or its events) forever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Providers by name ("aws", "azure", "gcp", "sim").
#[derive(Clone, Default)]
pub struct Providers(BTreeMap<&'static str, Arc<dyn Provider>>);

impl Providers {
    /// Adds a provider wrapped with retry (jitter, backoff) and metrics.
    pub fn add<P: Provider>(&mut self, provider: P, metrics: Arc<Metrics>, retry: RetryPolicy) {
        self.add_with_deadline(provider, metrics, retry, CALL_TIMEOUT);
    }

    /// [`Providers::add`] with another deadline per call than [`CALL_TIMEOUT`].
    pub fn add_with_deadline<P: Provider>(
        &mut self,
        provider: P,
        metrics: Arc<Metrics>,
        retry: RetryPolicy,
        deadline: Duration,
    ) {
        let name = provider.name();
        let wrapped = Retrying::new(
            Instrumented {
                inner: provider,
                metrics,
                deadline,
            },
            retry,
        );
        self.0.insert(name, Arc::new(wrapped));
    }

    pub fn get(&self, group: &GroupRef) -> Result<&Arc<dyn Provider>, ProviderError> {
        self.0
            .get(group.provider())
            .ok_or_else(|| ProviderError::NotConfigured(group.provider().into()))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Provider>> {
        self.0.values()
    }
}

async fn deadline<T>(
    limit: Duration,
    operation: &str,
    call: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(ProviderError::Transient(format!(
            "{operation} took longer than {}s",
            limit.as_secs_f64()
        )))
    })
}

/// Counts and times every provider call.
struct Instrumented<P> {
    inner: P,
    metrics: Arc<Metrics>,
    deadline: Duration,
}

impl<P: Provider> Instrumented<P> {
    fn record<T>(&self, operation: &str, started: Instant, result: &Result<T, ProviderError>) {
        let labels = ProviderOpLabels {
            provider: self.inner.name().into(),
            operation: operation.into(),
        };
        self.metrics.provider_requests.get_or_create(&labels).inc();
        self.metrics
            .provider_latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if let Err(err) = result {
            if matches!(err, ProviderError::Throttled { .. }) {
                self.metrics.provider_throttles.get_or_create(&labels).inc();
            }
            self.metrics
                .provider_errors
                .get_or_create(&ProviderErrorLabels {
                    provider: labels.provider,
                    operation: labels.operation,
                    reason: err.reason().into(),
                })
                .inc();
        }
    }
}

#[async_trait]
impl<P: Provider> Provider for Instrumented<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn members(&self, group: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
        let started = Instant::now();
        let result = deadline(self.deadline, "members", self.inner.members(group)).await;
        self.record("members", started, &result);
        result
    }

    async fn instances(
        &self,
        group: &GroupRef,
        ids: &[String],
    ) -> Result<Option<Vec<Instance>>, ProviderError> {
        let started = Instant::now();
        let result = deadline(self.deadline, "instances", self.inner.instances(group, ids)).await;
        self.record("instances", started, &result);
        result
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
        let started = Instant::now();
        let result = deadline(
            self.deadline,
            "lifecycle_hooks",
            self.inner.lifecycle_hooks(group),
        )
        .await;
        self.record("lifecycle_hooks", started, &result);
        result
    }

    fn stand_down(&self) {
        self.inner.stand_down();
    }

    async fn complete_lifecycle(
        &self,
        action: &LifecycleAction,
        outcome: Outcome,
    ) -> Result<(), ProviderError> {
        let started = Instant::now();
        let result = deadline(
            self.deadline,
            "complete_lifecycle",
            self.inner.complete_lifecycle(action, outcome),
        )
        .await;
        self.record("complete_lifecycle", started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cloud that never answers.
    struct Hangs;

    #[async_trait]
    impl Provider for Hangs {
        fn name(&self) -> &'static str {
            "sim"
        }
        async fn members(&self, _: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_past_its_deadline_is_transient() {
        let metrics = Arc::new(Metrics::new());
        let mut providers = Providers::default();
        let once = RetryPolicy {
            attempts: 1,
            base: Duration::from_millis(10),
            max: Duration::from_millis(10),
        };
        providers.add(Hangs, metrics, once);
        let group = GroupRef::Sim {
            group: "web".into(),
        };
        let started = tokio::time::Instant::now();
        let err = providers
            .get(&group)
            .unwrap()
            .members(&group)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ProviderError::Transient(m) if m.contains("60s")),
            "{err}"
        );
        assert!(started.elapsed() >= CALL_TIMEOUT);
    }
}
