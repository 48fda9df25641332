//! What a provider reports as it works, for the service's metrics: one
//! [`Observer`] for every cloud, so a cloud adds no telemetry shape of its
//! own and the service wires all of them through one adapter.

/// What became of one message of a cloud's event feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeedOutcome {
    /// Became one or more [`GroupEvent`](crate::GroupEvent)s; the message is
    /// removed from the feed once every one of them is acked.
    Event,
    /// Not understood, or refused as not sent by the cloud (a forged or
    /// misrouted message: another account's, a subject outside its topic):
    /// logged and removed. Redelivering it would not change it.
    Malformed,
    /// Well formed, but of a kind meshmirror does not act on: a test
    /// notification, an event type it ignores, a region no mirror names.
    /// Removed.
    Ignored,
    /// Well formed and of a kind meshmirror acts on, but about an instance
    /// or resource in no group it reads (AWS: an instance in no Auto Scaling
    /// group; GCP, Azure: naming no group the provider was asked about).
    /// Removed.
    Unmatched,
}

/// How a cloud API call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiStatus {
    /// The cloud answered with this HTTP status.
    Http(u16),
    /// No answer: connection, TLS or credential failure, or a timeout.
    NoResponse,
}

/// Something a cloud told about an instance that changes nothing by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Advisory {
    /// EC2 advises moving work off a spot instance at elevated risk of
    /// interruption.
    RebalanceRecommendation,
}

/// Receives what a provider sees as it happens. Every method defaults to
/// doing nothing, so an observer implements only what it exports. Calls
/// come from the provider's request paths and background tasks: they must
/// be cheap and must not block.
pub trait Observer: Send + Sync + 'static {
    /// One event feed message was handled.
    fn feed_message(&self, outcome: FeedOutcome) {
        let _ = outcome;
    }

    /// One HTTP request to the cloud's API finished. `operation` names the
    /// API operation as the provider calls it.
    fn api_call(&self, operation: &str, status: ApiStatus) {
        let _ = (operation, status);
    }

    /// A cloud call the provider made on its own behalf was throttled: an
    /// event feed's receive, a heartbeat, a lookup whose failure it absorbs.
    /// Throttles that reach the caller as
    /// [`ProviderError::Throttled`](crate::ProviderError::Throttled) are not
    /// reported here: the caller sees those, by its own operation.
    fn throttled(&self, operation: &str) {
        let _ = operation;
    }

    /// The cloud said how many requests are left in a rate-limit window.
    /// `header` names the window (for Azure the
    /// `x-ms-ratelimit-remaining-*` header, with `:policy` appended for the
    /// per-resource form).
    fn ratelimit_remaining(&self, header: &str, remaining: u64) {
        let _ = (header, remaining);
    }

    /// A lifecycle-hook heartbeat was sent (`ok`) or failed.
    fn heartbeat(&self, ok: bool) {
        let _ = ok;
    }

    /// The cloud advised something about an instance (see [`Advisory`]).
    fn advisory(&self, advisory: Advisory) {
        let _ = advisory;
    }
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopObserver;

impl Observer for NoopObserver {}

/// Logs every report at debug level: the providers' default, so a provider
/// used without the service's metrics (tests, tools) still shows its calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingObserver;

impl Observer for TracingObserver {
    fn feed_message(&self, outcome: FeedOutcome) {
        tracing::debug!(?outcome, "event feed message");
    }

    fn api_call(&self, operation: &str, status: ApiStatus) {
        tracing::debug!(operation, ?status, "cloud API call");
    }

    fn throttled(&self, operation: &str) {
        tracing::debug!(operation, "cloud call throttled");
    }

    fn ratelimit_remaining(&self, header: &str, remaining: u64) {
        tracing::debug!(header, remaining, "cloud rate limit remaining");
    }

    fn heartbeat(&self, ok: bool) {
        tracing::debug!(ok, "lifecycle heartbeat");
    }

    fn advisory(&self, advisory: Advisory) {
        tracing::debug!(?advisory, "cloud advisory");
    }
}
