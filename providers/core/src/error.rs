use std::time::Duration;

/// Why a provider could not answer. The core never deletes entries on any of these.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("scaling group not found: {0}")]
    GroupNotFound(String),
    #[error("throttled by the cloud API{}", retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default())]
    Throttled { retry_after: Option<Duration> },
    #[error("transient cloud error: {0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
    #[error("provider {0} is not compiled into this build or not configured")]
    NotConfigured(String),
}

impl ProviderError {
    /// Whether the same call may succeed if tried again soon.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Throttled { .. } | ProviderError::Transient(_)
        )
    }

    /// The reason used on the mirror's `Degraded` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            ProviderError::GroupNotFound(_) => "GroupNotFound",
            ProviderError::Throttled { .. } => "Throttled",
            ProviderError::NotConfigured(_) => "ProviderNotConfigured",
            ProviderError::Transient(_) | ProviderError::Permanent(_) => "ProviderError",
        }
    }
}
