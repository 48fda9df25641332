//! A small ARM REST client on the `azure_core` pipeline: bearer token,
//! GET with api-version, `nextLink` paging, ARM error bodies, throttling, and
//! the `x-ms-ratelimit-remaining-*` headers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::policies::Policy;
use azure_core::http::policies::auth::BearerTokenAuthorizationPolicy;
use azure_core::http::{
    ClientOptions, Context, Method, Pipeline, PipelineSendOptions, RawResponse, Request,
    RetryOptions, Transport, Url,
};
use meshmirror_provider::{ApiStatus, Observer, ProviderError};
use serde::de::DeserializeOwned;

use crate::budget::ReadBudget;
use crate::models::{ErrorResponse, Page};

/// Why an ARM call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ArmError {
    #[error("ARM answered {status} {code}: {message}")]
    Status {
        status: u16,
        code: String,
        message: String,
        retry_after: Option<Duration>,
    },
    #[error("ARM request failed: {0}")]
    Transport(String),
    #[error("could not get an Azure token: {0}")]
    Credential(String),
    #[error("unexpected ARM response: {0}")]
    Decode(String),
    #[error("nextLink {0} leaves the ARM endpoint; not followed")]
    ForeignNextLink(String),
}

impl ArmError {
    /// Maps to the provider contract; a 404 means the scale set (or its
    /// resource group) is gone.
    pub fn into_provider(self, group: &str) -> ProviderError {
        match self {
            ArmError::Status {
                status: 429,
                retry_after,
                ..
            } => ProviderError::Throttled { retry_after },
            ArmError::Status { status: 404, .. } => ProviderError::GroupNotFound(group.into()),
            e @ ArmError::Status {
                status: 408 | 500..=599,
                ..
            } => ProviderError::Transient(e.to_string()),
            e @ ArmError::Transport(_) => ProviderError::Transient(e.to_string()),
            e => ProviderError::Permanent(e.to_string()),
        }
    }
}

/// ARM's `Retry-After`: seconds (ARM never sends the HTTP-date form).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// `12000` → one value; `Microsoft.Compute/HighCostGet3Min;107,...` → one per policy.
pub fn parse_ratelimit(header: &str, value: &str) -> Vec<(String, u64)> {
    let value = value.trim();
    if let Ok(n) = value.parse::<u64>() {
        return vec![(header.to_string(), n)];
    }
    value
        .split(',')
        .filter_map(|part| {
            let (policy, n) = part.trim().rsplit_once(';')?;
            Some((
                format!("{header}:{}", policy.trim()),
                n.trim().parse().ok()?,
            ))
        })
        .collect()
}

pub struct ArmClient {
    pipeline: Pipeline,
    endpoint: Url,
    observer: Arc<dyn Observer>,
    calls: AtomicU64,
    budget: ReadBudget,
}

impl ArmClient {
    /// `endpoint`: `https://management.azure.com` or an override. The token
    /// scope is the endpoint's origin, as for every Azure cloud.
    pub fn new(
        endpoint: Url,
        credential: Arc<dyn TokenCredential>,
        transport: Option<Transport>,
        observer: Arc<dyn Observer>,
    ) -> Self {
        let scope = format!("{}/.default", endpoint.origin().ascii_serialization());
        let options = ClientOptions {
            // Throttling goes back to the caller as `Throttled`: meshmirror's
            // own retry (with the cloud's Retry-After) wraps every provider.
            retry: RetryOptions::none(),
            transport,
            ..ClientOptions::default()
        };
        let auth: Arc<dyn Policy> =
            Arc::new(BearerTokenAuthorizationPolicy::new(credential, [scope]));
        let pipeline = Pipeline::new(
            Some(env!("CARGO_PKG_NAME")),
            Some(env!("CARGO_PKG_VERSION")),
            options,
            Vec::new(),
            vec![auth],
            None,
        );
        ArmClient {
            pipeline,
            endpoint,
            observer,
            calls: AtomicU64::new(0),
            budget: ReadBudget::new(ReadBudget::DEFAULT_PER_SECOND),
        }
    }

    /// Spends at most `per_second` ARM reads a second (see [`ReadBudget`]).
    pub fn with_read_budget(mut self, per_second: f64) -> Self {
        self.budget = ReadBudget::new(per_second);
        self
    }

    /// Reports calls and rate limits to `observer` from now on.
    pub fn set_observer(&mut self, observer: Arc<dyn Observer>) {
        self.observer = observer;
    }

    pub fn endpoint(&self) -> &Url {
        &self.endpoint
    }

    /// HTTP requests sent so far (every page counts).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> Result<Url, ArmError> {
        let mut url = self
            .endpoint
            .join(path)
            .map_err(|e| ArmError::Decode(format!("bad path {path}: {e}")))?;
        {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    async fn send(&self, operation: &str, url: Url) -> Result<RawResponse, ArmError> {
        let waited = self.budget.take().await;
        if !waited.is_zero() {
            tracing::debug!(
                operation,
                waited_ms = waited.as_millis() as u64,
                "ARM read budget: waited"
            );
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut request = Request::new(url, Method::Get);
        let sent = self
            .pipeline
            .send(
                &Context::new(),
                &mut request,
                Some(PipelineSendOptions {
                    skip_checks: true,
                    ..Default::default()
                }),
            )
            .await;
        let response = match sent {
            Ok(r) => r,
            Err(err) => {
                self.observer.api_call(operation, ApiStatus::NoResponse);
                return Err(match err.kind() {
                    azure_core::error::ErrorKind::Credential => {
                        ArmError::Credential(err.to_string())
                    }
                    _ => ArmError::Transport(err.to_string()),
                });
            }
        };
        let status = u16::from(response.status());
        self.observer.api_call(operation, ApiStatus::Http(status));
        for (name, value) in response.headers().iter() {
            if name.as_str().starts_with("x-ms-ratelimit-remaining-") {
                for (key, n) in parse_ratelimit(name.as_str(), value.as_str()) {
                    self.observer.ratelimit_remaining(&key, n);
                }
            }
        }
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let body: ErrorResponse =
            serde_json::from_slice(response.body().as_ref()).unwrap_or_default();
        let detail = body.error.unwrap_or_default();
        let retry_after = response
            .headers()
            .iter()
            .find(|(n, _)| n.as_str() == "retry-after")
            .and_then(|(_, v)| parse_retry_after(v.as_str()));
        Err(ArmError::Status {
            status,
            code: detail.code.unwrap_or_else(|| format!("HTTP{status}")),
            message: detail.message.unwrap_or_default(),
            retry_after,
        })
    }

    fn decode<T: DeserializeOwned>(response: &RawResponse) -> Result<T, ArmError> {
        serde_json::from_slice(response.body().as_ref())
            .map_err(|e| ArmError::Decode(e.to_string()))
    }

    /// GET one resource.
    pub async fn get<T: DeserializeOwned>(
        &self,
        operation: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ArmError> {
        let response = self.send(operation, self.url(path, query)?).await?;
        Self::decode(&response)
    }

    /// GET one resource; `None` when ARM answers 404 (no such resource).
    pub async fn get_opt<T: DeserializeOwned>(
        &self,
        operation: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Option<T>, ArmError> {
        match self.get(operation, path, query).await {
            Ok(found) => Ok(Some(found)),
            Err(ArmError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// GET a list, following `nextLink` verbatim until it is absent. A
    /// nextLink to another origin is refused: it would carry the token there.
    pub async fn list<T: DeserializeOwned>(
        &self,
        operation: &str,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<T>, ArmError> {
        let mut items = Vec::new();
        let mut url = self.url(path, query)?;
        loop {
            let response = self.send(operation, url).await?;
            let page: Page<T> = Self::decode(&response)?;
            items.extend(page.value);
            match page.next_link.filter(|l| !l.is_empty()) {
                None => return Ok(items),
                Some(link) => {
                    let next =
                        Url::parse(&link).map_err(|_| ArmError::ForeignNextLink(link.clone()))?;
                    if next.origin() != self.endpoint.origin() {
                        return Err(ArmError::ForeignNextLink(link));
                    }
                    url = next;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(parse_retry_after(" 17 "), Some(Duration::from_secs(17)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn ratelimit_headers_of_both_forms() {
        assert_eq!(
            parse_ratelimit("x-ms-ratelimit-remaining-subscription-reads", "11999"),
            vec![(
                "x-ms-ratelimit-remaining-subscription-reads".to_string(),
                11999
            )]
        );
        assert_eq!(
            parse_ratelimit(
                "x-ms-ratelimit-remaining-resource",
                "Microsoft.Compute/HighCostGet3Min;107,Microsoft.Compute/HighCostGet30Min;527"
            ),
            vec![
                (
                    "x-ms-ratelimit-remaining-resource:Microsoft.Compute/HighCostGet3Min"
                        .to_string(),
                    107
                ),
                (
                    "x-ms-ratelimit-remaining-resource:Microsoft.Compute/HighCostGet30Min"
                        .to_string(),
                    527
                ),
            ]
        );
    }

    #[test]
    fn errors_map_to_the_provider_contract() {
        let status = |s: u16| ArmError::Status {
            status: s,
            code: "C".into(),
            message: "m".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            status(429).into_provider("g"),
            ProviderError::Throttled {
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            status(404).into_provider("g"),
            ProviderError::GroupNotFound("g".into())
        );
        assert!(matches!(
            status(503).into_provider("g"),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            status(403).into_provider("g"),
            ProviderError::Permanent(_)
        ));
        assert!(matches!(
            ArmError::Transport("x".into()).into_provider("g"),
            ProviderError::Transient(_)
        ));
    }
}
