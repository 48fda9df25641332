//! The cloud providers compiled into this build (cargo features `aws`, `gcp`,
//! `azure`), their command-line flags, and their registration.

use std::sync::Arc;

#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
use meshmirror_provider::{Advisory, ApiStatus, FeedOutcome, Observer};

use crate::metrics::Metrics;
#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
use crate::metrics::{ApiCallLabels, EventLabels, ProviderOpLabels, RateLimitLabels};
use crate::providers::Providers;

#[cfg(feature = "aws")]
pub mod aws;
#[cfg(feature = "azure")]
pub mod azure;
#[cfg(feature = "gcp")]
pub mod gcp;

/// Every compiled-in cloud's flags.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CloudArgs {
    #[cfg(feature = "aws")]
    #[command(flatten)]
    pub aws: aws::AwsArgs,
    #[cfg(feature = "gcp")]
    #[command(flatten)]
    pub gcp: gcp::GcpArgs,
    #[cfg(feature = "azure")]
    #[command(flatten)]
    pub azure: azure::AzureArgs,
}

/// Turns what a cloud provider reports into meshmirror's metrics, the same
/// for every cloud.
#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
pub(crate) struct MetricsObserver {
    /// The provider's name, the `provider` label.
    pub provider: &'static str,
    pub metrics: Arc<Metrics>,
}

#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
impl MetricsObserver {
    /// The observer to hand to `provider`'s `with_observer`.
    pub fn shared(provider: &'static str, metrics: &Arc<Metrics>) -> Arc<dyn Observer> {
        Arc::new(MetricsObserver {
            provider,
            metrics: metrics.clone(),
        })
    }

    fn event(&self, outcome: &str) {
        self.metrics
            .events
            .get_or_create(&EventLabels {
                provider: self.provider.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
}

#[cfg(any(feature = "aws", feature = "gcp", feature = "azure"))]
impl Observer for MetricsObserver {
    fn feed_message(&self, outcome: FeedOutcome) {
        let outcome = match outcome {
            // Messages that become events are counted by the controller.
            FeedOutcome::Event => return,
            FeedOutcome::Malformed => "malformed",
            // One label for both: dashboards and alerts know `ignored` only.
            FeedOutcome::Ignored | FeedOutcome::Unmatched => "ignored",
        };
        self.event(outcome);
    }

    fn advisory(&self, advisory: Advisory) {
        let outcome = match advisory {
            Advisory::RebalanceRecommendation => "rebalance_recommendation",
        };
        self.event(outcome);
    }

    fn throttled(&self, operation: &str) {
        // Providers report only the throttles of calls they make on their
        // own; a throttled provider operation (`members`,
        // `complete_lifecycle`) is counted by the provider wrapper.
        self.metrics
            .provider_throttles
            .get_or_create(&ProviderOpLabels {
                provider: self.provider.into(),
                operation: operation.into(),
            })
            .inc();
    }

    fn api_call(&self, operation: &str, status: ApiStatus) {
        let status = match status {
            ApiStatus::Http(status) => status.to_string(),
            // `0` has always meant "no response" on this series.
            ApiStatus::NoResponse => "0".to_string(),
        };
        self.metrics
            .cloud_api_calls
            .get_or_create(&ApiCallLabels {
                provider: self.provider.into(),
                operation: operation.into(),
                status,
            })
            .inc();
    }

    fn ratelimit_remaining(&self, header: &str, remaining: u64) {
        self.metrics
            .cloud_ratelimit_remaining
            .get_or_create(&RateLimitLabels {
                provider: self.provider.into(),
                header: header.into(),
            })
            .set(i64::try_from(remaining).unwrap_or(i64::MAX));
    }
}

/// Registers every compiled-in cloud. A cloud without credentials still
/// registers: its mirrors report the credential error in their status.
pub async fn register(
    providers: &mut Providers,
    args: &CloudArgs,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    let _ = (&providers, args, metrics);
    #[cfg(feature = "aws")]
    aws::register(providers, &args.aws, metrics).await?;
    #[cfg(feature = "gcp")]
    gcp::register(providers, &args.gcp, metrics).await?;
    #[cfg(feature = "azure")]
    azure::register(providers, &args.azure, metrics).await?;
    Ok(())
}
