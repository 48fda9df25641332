//! The provider's settings (from the service's `--aws-*` flags).

use std::time::Duration;

/// How the AWS provider reaches AWS.
#[derive(Clone, Debug)]
pub struct AwsConfig {
    /// One endpoint for every service (tests, LocalStack); `None` = AWS.
    pub endpoint_url: Option<String>,
    /// The region of the event queue and of events that name none; `None`:
    /// from the queue URL, else the SDK's default chain.
    pub region: Option<String>,
    /// The SQS queue fed by EventBridge and lifecycle hooks.
    pub event_queue_url: Option<String>,
    /// Static keys instead of the SDK's default credential chain (tests).
    pub static_credentials: Option<(String, String)>,
    /// Hooks meshmirror may keep alive with heartbeats from start-up; hooks
    /// it has answered once are added as it learns them.
    pub heartbeat_hooks: Vec<String>,
    /// How long one `DescribeAutoScalingGroups` round serves the other
    /// mirrors of the same region.
    pub share_window: Duration,
    /// SQS long-poll wait (at most 20 s).
    pub receive_wait: Duration,
    /// How long a spot interruption warning is remembered.
    pub interruption_memory: Duration,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            endpoint_url: None,
            region: None,
            event_queue_url: None,
            static_credentials: None,
            heartbeat_hooks: Vec::new(),
            share_window: Duration::from_secs(1),
            receive_wait: Duration::from_secs(20),
            interruption_memory: Duration::from_secs(600),
        }
    }
}

/// The region in an SQS queue URL (`https://sqs.REGION.amazonaws.com/...`
/// or the legacy `https://REGION.queue.amazonaws.com/...`).
pub fn queue_region(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        ["sqs", region, ..] if region.contains('-') => Some(region.to_string()),
        [region, "queue", ..] if region.contains('-') => Some(region.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_from_queue_urls() {
        assert_eq!(
            queue_region("https://sqs.eu-west-1.amazonaws.com/123456789012/q").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(
            queue_region("https://us-east-2.queue.amazonaws.com/123456789012/q").as_deref(),
            Some("us-east-2")
        );
        assert_eq!(queue_region("http://127.0.0.1:5000/123456789012/q"), None);
        assert_eq!(queue_region("nonsense"), None);
    }
}
