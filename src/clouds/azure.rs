//! The azure provider's flags and registration.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::providers::Providers;

/// Flags of the azure provider.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct AzureArgs {}

/// Registers the azure provider.
pub async fn register(
    _providers: &mut Providers,
    _args: &AzureArgs,
    _metrics: &Arc<Metrics>,
) -> Result<(), String> {
    Ok(())
}
