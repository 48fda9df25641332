//! The aws provider's flags and registration.

use std::sync::Arc;

use meshmirror_aws::{AwsConfig, AwsProvider};
use meshmirror_provider::RetryPolicy;

use super::MetricsObserver;
use crate::metrics::Metrics;
use crate::providers::Providers;

/// Flags of the aws provider. Credentials come from the SDK's default chain
/// (environment, web identity for IRSA, Pod Identity and ECS container
/// credentials, instance metadata).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AwsArgs {
    /// One endpoint URL for Auto Scaling, EC2 and SQS (moto, LocalStack).
    #[arg(long, env = "MESHMIRROR_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Region of the event queue and of events that name none (default:
    /// from the queue URL, else the SDK's default chain).
    #[arg(long, env = "MESHMIRROR_AWS_REGION")]
    pub aws_region: Option<String>,
    /// SQS queue fed by EventBridge rules and lifecycle-hook notifications.
    #[arg(long, env = "MESHMIRROR_AWS_EVENT_QUEUE_URL")]
    pub aws_event_queue_url: Option<String>,
    /// AWS accounts whose events are accepted from the queue (default: the
    /// account in the queue URL); messages from any other are deleted.
    #[arg(long, env = "MESHMIRROR_AWS_ACCOUNTS", value_delimiter = ',')]
    pub aws_accounts: Vec<String>,
    /// Static keys instead of the default chain (tests and tools only).
    #[arg(skip)]
    pub static_credentials: Option<(String, secrecy::SecretString)>,
}

impl AwsArgs {
    pub fn config(&self) -> AwsConfig {
        AwsConfig {
            endpoint_url: self.aws_endpoint_url.clone(),
            region: self.aws_region.clone(),
            event_queue_url: self.aws_event_queue_url.clone(),
            static_credentials: self.static_credentials.clone(),
            accounts: self.aws_accounts.clone(),
            ..AwsConfig::default()
        }
    }
}

/// Registers the aws provider. Clients are created per region when a mirror
/// first names it, so a cluster without AWS mirrors never calls AWS.
pub async fn register(
    providers: &mut Providers,
    args: &AwsArgs,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    let provider =
        AwsProvider::new(args.config()).with_observer(MetricsObserver::shared("aws", metrics));
    providers.add(provider, metrics.clone(), RetryPolicy::default());
    Ok(())
}
