//! The provider's settings (from the service's `--aws-*` flags).

use std::time::Duration;

use secrecy::SecretString;

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
    pub static_credentials: Option<(String, SecretString)>,
    /// The AWS accounts whose events are accepted; empty: the queue's own
    /// account (from its URL).
    pub accounts: Vec<String>,
    /// How long one `DescribeAutoScalingGroups` round serves the other
    /// mirrors of the same region.
    pub share_window: Duration,
    /// SQS long-poll wait (at most 20 s).
    pub receive_wait: Duration,
    /// How long after a spot interruption warning each pass asks EC2 for
    /// the instance's spot request status (the warning itself removes
    /// nothing).
    pub interruption_memory: Duration,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            endpoint_url: None,
            region: None,
            event_queue_url: None,
            static_credentials: None,
            accounts: Vec::new(),
            share_window: Duration::from_secs(1),
            receive_wait: Duration::from_secs(20),
            interruption_memory: Duration::from_secs(600),
        }
    }
}

impl AwsConfig {
    /// The accounts whose events are accepted: the configured ones, else
    /// the queue's own; empty when neither is known (no check).
    pub fn event_accounts(&self) -> Vec<String> {
        if !self.accounts.is_empty() {
            return self.accounts.clone();
        }
        self.event_queue_url
            .as_deref()
            .and_then(queue_account)
            .into_iter()
            .collect()
    }
}

/// The account in an SQS queue URL (`https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE`;
/// moto and LocalStack put it in the same place).
pub fn queue_account(url: &str) -> Option<String> {
    let path = url.split("://").nth(1)?.split_once('/')?.1;
    let account = path.split('/').next()?;
    (account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()))
        .then(|| account.to_string())
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

    #[test]
    fn account_from_queue_urls() {
        let cases = [
            (
                "https://sqs.eu-west-1.amazonaws.com/123456789012/q",
                Some("123456789012"),
            ),
            (
                "https://us-east-2.queue.amazonaws.com/210987654321/q",
                Some("210987654321"),
            ),
            (
                "http://127.0.0.1:5000/123456789012/meshmirror-events",
                Some("123456789012"),
            ),
            ("http://127.0.0.1:5000/queue/q", None),
            ("https://sqs.eu-west-1.amazonaws.com/12345/q", None),
            ("https://sqs.eu-west-1.amazonaws.com", None),
            ("nonsense", None),
        ];
        for (url, want) in cases {
            assert_eq!(queue_account(url).as_deref(), want, "{url}");
        }
    }

    #[test]
    fn configured_accounts_win_over_the_queues() {
        let mut config = AwsConfig {
            event_queue_url: Some("https://sqs.eu-west-1.amazonaws.com/123456789012/q".into()),
            ..AwsConfig::default()
        };
        assert_eq!(config.event_accounts(), vec!["123456789012".to_string()]);
        config.accounts = vec!["111111111111".into(), "222222222222".into()];
        assert_eq!(
            config.event_accounts(),
            vec!["111111111111".to_string(), "222222222222".to_string()]
        );
        assert!(AwsConfig::default().event_accounts().is_empty());
    }
}
