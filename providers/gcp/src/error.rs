//! Compute Engine errors as the core's [`ProviderError`]s.

use std::time::Duration;

use google_cloud_gax::error::Error;
use google_cloud_gax::error::rpc::{Code, StatusDetails};
use meshmirror_provider::ProviderError;

/// What an error says, reduced to what the mapping needs.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Facts {
    pub http: Option<u16>,
    pub code: Option<Code>,
    /// `ErrorInfo.reason` of the status details, e.g. `RATE_LIMIT_EXCEEDED`.
    pub reasons: Vec<String>,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// No answer arrived: connect, timeout, I/O.
    pub no_answer: bool,
    pub auth: bool,
}

impl Facts {
    pub fn of(err: &Error) -> Facts {
        let status = err.status();
        Facts {
            http: err.http_status_code(),
            code: status.map(|s| s.code),
            reasons: status
                .map(|s| {
                    s.details
                        .iter()
                        .filter_map(|d| match d {
                            StatusDetails::ErrorInfo(info) => Some(info.reason.clone()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            message: status.map_or_else(|| err.to_string(), |s| s.message.clone()),
            retry_after: err
                .http_headers()
                .and_then(|h| h.get("retry-after"))
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
            no_answer: err.is_timeout() || err.is_io() || err.is_connect(),
            auth: err.is_authentication(),
        }
    }
}

/// Which call failed: a 404 of the group's own listing means the group is
/// gone; elsewhere it is a plain error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    GroupListing,
    InstanceListing,
}

/// 404 of the group → GroupNotFound; 429, `RESOURCE_EXHAUSTED` and
/// `rateLimitExceeded` (a 403 in older answers) → Throttled; 5xx and no
/// answer → Transient; the rest is Permanent.
pub(crate) fn classify(facts: &Facts, call: Call, group: &str) -> ProviderError {
    let rate_limited = facts.reasons.iter().any(|r| {
        let r = r.to_ascii_lowercase().replace('_', "");
        r.contains("ratelimitexceeded")
    }) || facts.message.contains("rateLimitExceeded")
        || facts.message.contains("Rate Limit Exceeded");
    match (facts.http, facts.code) {
        (Some(429), _) | (_, Some(Code::ResourceExhausted)) => ProviderError::Throttled {
            retry_after: facts.retry_after,
        },
        (Some(403), _) if rate_limited => ProviderError::Throttled {
            retry_after: facts.retry_after,
        },
        (Some(404), _) if call == Call::GroupListing => ProviderError::GroupNotFound(group.into()),
        (Some(500..=599), _) => ProviderError::Transient(format!(
            "compute API answered {}: {}",
            facts.http.unwrap_or_default(),
            facts.message
        )),
        (None, Some(Code::Unavailable | Code::DeadlineExceeded | Code::Internal)) => {
            ProviderError::Transient(facts.message.clone())
        }
        _ if facts.no_answer => ProviderError::Transient(facts.message.clone()),
        _ if facts.auth => ProviderError::Permanent(format!("gcp credentials: {}", facts.message)),
        (Some(code), _) => {
            ProviderError::Permanent(format!("compute API answered {code}: {}", facts.message))
        }
        (None, _) => ProviderError::Permanent(facts.message.clone()),
    }
}

pub(crate) fn map(err: &Error, call: Call, group: &str) -> ProviderError {
    let mapped = classify(&Facts::of(err), call, group);
    tracing::debug!(%group, ?call, error = %err, mapped = %mapped, "compute call failed");
    mapped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(http: u16, code: Code) -> Facts {
        Facts {
            http: Some(http),
            code: Some(code),
            message: "m".into(),
            ..Facts::default()
        }
    }

    #[test]
    fn not_found_is_the_group_only_for_the_group_listing() {
        let f = facts(404, Code::NotFound);
        assert_eq!(
            classify(&f, Call::GroupListing, "g"),
            ProviderError::GroupNotFound("g".into())
        );
        assert!(matches!(
            classify(&f, Call::InstanceListing, "g"),
            ProviderError::Permanent(_)
        ));
    }

    #[test]
    fn throttling_in_its_three_spellings() {
        let mut f = facts(429, Code::ResourceExhausted);
        f.retry_after = Some(Duration::from_secs(7));
        assert_eq!(
            classify(&f, Call::GroupListing, "g"),
            ProviderError::Throttled {
                retry_after: Some(Duration::from_secs(7))
            }
        );
        let mut f = facts(403, Code::PermissionDenied);
        f.reasons = vec!["RATE_LIMIT_EXCEEDED".into()];
        assert!(matches!(
            classify(&f, Call::InstanceListing, "g"),
            ProviderError::Throttled { .. }
        ));
        let mut f = facts(403, Code::PermissionDenied);
        f.reasons = vec!["rateLimitExceeded".into()];
        assert!(matches!(
            classify(&f, Call::InstanceListing, "g"),
            ProviderError::Throttled { .. }
        ));
        // A plain 403 is a permission problem, not throttling.
        let f = facts(403, Code::PermissionDenied);
        assert!(matches!(
            classify(&f, Call::GroupListing, "g"),
            ProviderError::Permanent(_)
        ));
    }

    #[test]
    fn server_errors_and_silence_are_transient() {
        for http in [500, 502, 503, 504] {
            assert!(matches!(
                classify(&facts(http, Code::Unavailable), Call::GroupListing, "g"),
                ProviderError::Transient(_)
            ));
        }
        let f = Facts {
            no_answer: true,
            message: "connection refused".into(),
            ..Facts::default()
        };
        assert!(matches!(
            classify(&f, Call::GroupListing, "g"),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            classify(&facts(400, Code::InvalidArgument), Call::GroupListing, "g"),
            ProviderError::Permanent(_)
        ));
    }
}
