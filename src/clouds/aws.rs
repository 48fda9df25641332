//! The aws provider's flags and registration.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::providers::Providers;

/// Flags of the aws provider.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AwsArgs {}

/// Registers the aws provider.
pub async fn register(
    _providers: &mut Providers,
    _args: &AwsArgs,
    _metrics: &Arc<Metrics>,
) -> Result<(), String> {
    Ok(())
}
