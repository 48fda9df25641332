//! SDK errors to [`ProviderError`]s.

use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use meshmirror_provider::ProviderError;

/// The error codes AWS uses for throttling (the SDK's own list, plus EC2's).
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "RequestThrottled",
    "SlowDown",
    "EC2ThrottledException",
];

pub fn is_throttling(code: Option<&str>) -> bool {
    code.is_some_and(|c| THROTTLING.contains(&c))
}

/// Maps an SDK error of `operation`; the SDK has already retried what it
/// retries (throttling and transient errors, with backoff and jitter).
pub fn map<E>(operation: &'static str, err: SdkError<E>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = err.code().map(str::to_string);
    let message = format!("{operation}: {}", DisplayErrorContext(&err));
    match &err {
        SdkError::ServiceError(ctx) => {
            if is_throttling(code.as_deref()) {
                ProviderError::Throttled { retry_after: None }
            } else if ctx.raw().status().is_server_error() {
                ProviderError::Transient(message)
            } else {
                ProviderError::Permanent(message)
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ProviderError::Transient(message)
        }
        _ => ProviderError::Permanent(message),
    }
}

/// The error's code, for callers that treat some codes specially.
pub fn code<E: ProvideErrorMetadata>(err: &SdkError<E>) -> Option<&str> {
    err.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes() {
        assert!(is_throttling(Some("Throttling")));
        assert!(is_throttling(Some("RequestLimitExceeded")));
        assert!(!is_throttling(Some("ValidationError")));
        assert!(!is_throttling(None));
    }
}
