//! The cloud providers compiled into this build (cargo features `aws`, `gcp`,
//! `azure`), their command-line flags, and their registration.

use std::sync::Arc;

use crate::metrics::Metrics;
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
