//! The gcp provider's flags and registration.

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::providers::Providers;

/// Flags of the gcp provider.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct GcpArgs {}

/// Registers the gcp provider.
pub async fn register(
    _providers: &mut Providers,
    _args: &GcpArgs,
    _metrics: &Arc<Metrics>,
) -> Result<(), String> {
    Ok(())
}
