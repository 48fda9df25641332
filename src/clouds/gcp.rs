//! The gcp provider's flags and registration.

use std::sync::Arc;

use meshmirror_gcp::{Auth, GcpConfig, GcpProvider, PubSubConfig};
use meshmirror_provider::RetryPolicy;

use super::MetricsObserver;
use crate::metrics::Metrics;
use crate::providers::Providers;

/// Flags of the gcp provider. Credentials are Application Default
/// Credentials (GKE Workload Identity, `GOOGLE_APPLICATION_CREDENTIALS`,
/// `gcloud auth application-default login`); a plain-http endpoint (a local
/// mock or emulator) gets none.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct GcpArgs {
    /// Compute Engine API endpoint (default https://compute.googleapis.com).
    #[arg(long, env = "MESHMIRROR_GCP_ENDPOINT")]
    pub gcp_endpoint: Option<String>,
    /// Pub/Sub subscription of Compute Engine audit logs,
    /// `projects/P/subscriptions/S`: passes start when a group changes.
    #[arg(long, env = "MESHMIRROR_GCP_PUBSUB_SUBSCRIPTION")]
    pub gcp_pubsub_subscription: Option<String>,
    /// Pub/Sub endpoint (default https://pubsub.googleapis.com; the
    /// emulator: http://HOST:PORT).
    #[arg(long, env = "MESHMIRROR_GCP_PUBSUB_ENDPOINT")]
    pub gcp_pubsub_endpoint: Option<String>,
}

impl GcpArgs {
    pub fn config(&self) -> GcpConfig {
        GcpConfig {
            endpoint: self.gcp_endpoint.clone(),
            auth: Auth::for_endpoint(self.gcp_endpoint.as_deref()),
            events: self
                .gcp_pubsub_subscription
                .clone()
                .map(|subscription| PubSubConfig {
                    subscription,
                    endpoint: self.gcp_pubsub_endpoint.clone(),
                    auth: Auth::for_endpoint(self.gcp_pubsub_endpoint.as_deref()),
                }),
            ..GcpConfig::default()
        }
    }
}

/// Registers the gcp provider. Its clients are made at first use, so this
/// never fails for want of credentials: GCP mirrors report that instead.
pub async fn register(
    providers: &mut Providers,
    args: &GcpArgs,
    metrics: &Arc<Metrics>,
) -> Result<(), String> {
    let provider =
        GcpProvider::new(args.config()).with_observer(MetricsObserver::shared("gcp", metrics));
    providers.add(provider, metrics.clone(), RetryPolicy::default());
    Ok(())
}
