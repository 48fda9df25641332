//! Prometheus metrics, prefix `meshmirror_`. Label values are bounded: mirror
//! namespace and name, provider, operation, outcome; never instance ids.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    pub namespace: String,
    pub mirror: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassLabels {
    pub namespace: String,
    pub mirror: String,
    /// `success` | `failure`
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryOpLabels {
    pub namespace: String,
    pub mirror: String,
    /// `create` | `update` | `delete` | `health`
    pub op: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderOpLabels {
    pub provider: String,
    pub operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderErrorLabels {
    pub provider: String,
    pub operation: String,
    /// The error's reason, e.g. `Throttled`, `ProviderError`.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiCallLabels {
    pub provider: String,
    pub operation: String,
    /// The HTTP status of the answer.
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RateLimitLabels {
    pub provider: String,
    /// The header that reported it, e.g. `x-ms-ratelimit-remaining-subscription-reads`.
    pub header: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub provider: String,
    /// `received` | `handled` | `ignored` | `malformed` | `dropped`
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LifecycleLabels {
    /// `launch` | `terminate`
    pub kind: String,
    /// `continue` | `abandon` | `error`
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

/// Every metric meshmirror exports.
pub struct Metrics {
    pub registry: Registry,
    pub passes: Family<PassLabels, Counter>,
    pub pass_duration: Family<MirrorLabels, Histogram>,
    pub entry_writes: Family<EntryOpLabels, Counter>,
    pub members: Family<MirrorLabels, Gauge>,
    pub entries: Family<MirrorLabels, Gauge>,
    pub skipped: Family<MirrorLabels, Gauge>,
    pub deferred_deletes: Family<MirrorLabels, Gauge>,
    pub last_success: Family<MirrorLabels, Gauge<f64, AtomicU64>>,
    pub degraded: Family<MirrorLabels, Gauge>,
    pub sync_interval: Family<MirrorLabels, Gauge<f64, AtomicU64>>,
    pub provider_requests: Family<ProviderOpLabels, Counter>,
    pub provider_errors: Family<ProviderErrorLabels, Counter>,
    pub provider_throttles: Family<ProviderOpLabels, Counter>,
    pub provider_latency: Family<ProviderOpLabels, Histogram>,
    pub cloud_api_calls: Family<ApiCallLabels, Counter>,
    pub cloud_ratelimit_remaining: Family<RateLimitLabels, Gauge>,
    pub events: Family<EventLabels, Counter>,
    pub event_age: Family<ProviderLabels, Histogram>,
    pub lifecycle_actions: Family<LifecycleLabels, Counter>,
    pub leader: Gauge,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("meshmirror");
        let passes = Family::<PassLabels, Counter>::default();
        registry.register("passes", "Reconcile passes by result", passes.clone());
        let pass_duration = Family::<MirrorLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register(
            "pass_duration_seconds",
            "Duration of one reconcile pass",
            pass_duration.clone(),
        );
        let entry_writes = Family::<EntryOpLabels, Counter>::default();
        registry.register(
            "entry_writes",
            "WorkloadEntry writes by operation",
            entry_writes.clone(),
        );
        let members = Family::<MirrorLabels, Gauge>::default();
        registry.register(
            "members",
            "Group members in the last successful pass",
            members.clone(),
        );
        let entries = Family::<MirrorLabels, Gauge>::default();
        registry.register("entries", "WorkloadEntries a mirror owns", entries.clone());
        let skipped = Family::<MirrorLabels, Gauge>::default();
        registry.register(
            "skipped_instances",
            "Members that got no entry (no address of the chosen family, duplicate address)",
            skipped.clone(),
        );
        let deferred_deletes = Family::<MirrorLabels, Gauge>::default();
        registry.register(
            "deferred_deletes",
            "Deletes held back by maxDeletesPerPass or UpsertOnly",
            deferred_deletes.clone(),
        );
        let last_success = Family::<MirrorLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the mirror's last successful pass",
            last_success.clone(),
        );
        let degraded = Family::<MirrorLabels, Gauge>::default();
        registry.register(
            "degraded",
            "1 while the mirror's Degraded condition is True",
            degraded.clone(),
        );
        let sync_interval = Family::<MirrorLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "sync_interval_seconds",
            "The mirror's polling interval (spec.sync.interval)",
            sync_interval.clone(),
        );
        let provider_requests = Family::<ProviderOpLabels, Counter>::default();
        registry.register(
            "provider_requests",
            "Calls to a cloud provider by operation",
            provider_requests.clone(),
        );
        let provider_errors = Family::<ProviderErrorLabels, Counter>::default();
        registry.register(
            "provider_errors",
            "Failed cloud provider calls by reason",
            provider_errors.clone(),
        );
        let provider_throttles = Family::<ProviderOpLabels, Counter>::default();
        registry.register(
            "provider_throttles",
            "Cloud provider calls answered with throttling",
            provider_throttles.clone(),
        );
        let provider_latency = Family::<ProviderOpLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register(
            "provider_request_duration_seconds",
            "Latency of cloud provider calls",
            provider_latency.clone(),
        );
        let cloud_api_calls = Family::<ApiCallLabels, Counter>::default();
        registry.register(
            "cloud_api_calls",
            "HTTP requests to a cloud API, by operation and status",
            cloud_api_calls.clone(),
        );
        let cloud_ratelimit_remaining = Family::<RateLimitLabels, Gauge>::default();
        registry.register(
            "cloud_ratelimit_remaining",
            "Requests left in the cloud's rate-limit window, as its last answer reported",
            cloud_ratelimit_remaining.clone(),
        );
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "event_messages",
            "Cloud event messages by outcome",
            events.clone(),
        );
        let event_age = Family::<ProviderLabels, Histogram>::new_with_constructor(
            seconds_histogram as fn() -> Histogram,
        );
        registry.register(
            "event_age_seconds",
            "Age of cloud event messages when handled",
            event_age.clone(),
        );
        let lifecycle_actions = Family::<LifecycleLabels, Counter>::default();
        registry.register(
            "lifecycle_actions",
            "Lifecycle hooks answered, by kind and result",
            lifecycle_actions.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            passes,
            pass_duration,
            entry_writes,
            members,
            entries,
            skipped,
            deferred_deletes,
            last_success,
            degraded,
            sync_interval,
            provider_requests,
            provider_errors,
            provider_throttles,
            provider_latency,
            cloud_api_calls,
            cloud_ratelimit_remaining,
            events,
            event_age,
            lifecycle_actions,
            leader,
        }
    }

    /// The text exposition format served on `/metrics`.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(%err, "could not encode metrics");
        }
        out
    }
}

pub fn mirror_labels(namespace: &str, mirror: &str) -> MirrorLabels {
    MirrorLabels {
        namespace: namespace.into(),
        mirror: mirror.into(),
    }
}
