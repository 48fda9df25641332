//! Parsing of the messages on the event queue: EventBridge envelopes of Auto
//! Scaling and EC2 events, lifecycle-hook notifications sent straight to SQS
//! (JSON), and either of those wrapped in an SNS notification. Pure: no I/O.

use serde::Deserialize;
use serde_json::Value;

/// What a queue message says, before it is tied to a mirrored group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// An Auto Scaling event: it names its group.
    Group {
        region: String,
        group: String,
        instance_id: Option<String>,
        what: GroupNotice,
    },
    /// An EC2 event: it names only the instance; its group is looked up.
    Instance {
        region: String,
        instance_id: String,
        what: InstanceNotice,
    },
    /// `autoscaling:TEST_NOTIFICATION`, sent when a hook's target is set up.
    Test { group: String },
    /// Well-formed but of a kind meshmirror does not act on.
    Ignored { detail_type: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GroupNotice {
    LaunchSucceeded,
    LaunchFailed,
    TerminateSucceeded,
    TerminateFailed,
    /// A lifecycle hook holds the instance (launch or terminate).
    Hook(HookNotice),
}

/// A lifecycle action, as announced by its hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookNotice {
    pub hook: String,
    pub token: Option<String>,
    pub launching: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InstanceNotice {
    /// `EC2 Instance State-change Notification` with its new state.
    State(String),
    /// `EC2 Spot Instance Interruption Warning` with its `instance-action`.
    SpotInterruption(String),
    Rebalance,
}

/// Why a message could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("{what}: missing field {field}")]
    Missing { what: String, field: &'static str },
    #[error("unrecognised message shape")]
    Unrecognised,
    /// A detail-type from a source that does not emit it: anyone who may
    /// put events on the bus (or send to the queue) could forge it.
    #[error("{what} must come from {expected}, not {from:?}")]
    Source {
        what: String,
        expected: &'static str,
        from: Option<String>,
    },
}

const LAUNCHING: &str = "autoscaling:EC2_INSTANCE_LAUNCHING";
const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";
const TEST: &str = "autoscaling:TEST_NOTIFICATION";

/// A message and the account it says it comes from (`account` of an
/// EventBridge envelope, `AccountId` of a hook notification).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub message: Message,
    pub account: Option<String>,
}

/// Parses one message body. `default_region` stands in where the message
/// carries none (hook notifications straight to SQS name no region).
pub fn parse(body: &str, default_region: &str) -> Result<Message, ParseError> {
    parse_envelope(body, default_region).map(|p| p.message)
}

/// [`parse`], with the account the message names.
pub fn parse_envelope(body: &str, default_region: &str) -> Result<Parsed, ParseError> {
    let value: Value =
        serde_json::from_str(body.trim()).map_err(|e| ParseError::NotJson(e.to_string()))?;
    parse_value(&value, default_region, 0)
}

fn parse_value(value: &Value, default_region: &str, depth: u8) -> Result<Parsed, ParseError> {
    let Some(object) = value.as_object() else {
        return Err(ParseError::Unrecognised);
    };
    if object.contains_key("detail-type") {
        return Ok(Parsed {
            message: eventbridge(value, default_region)?,
            account: string(value, "account"),
        });
    }
    // SQS subscribed to an SNS topic: the notification wraps the real message.
    if depth == 0
        && object.get("Type").and_then(Value::as_str) == Some("Notification")
        && let Some(inner) = object.get("Message").and_then(Value::as_str)
    {
        let inner: Value =
            serde_json::from_str(inner).map_err(|e| ParseError::NotJson(e.to_string()))?;
        return parse_value(&inner, default_region, depth + 1);
    }
    if object.contains_key("AutoScalingGroupName") {
        return Ok(Parsed {
            message: hook_notification(value, default_region)?,
            account: string(value, "AccountId"),
        });
    }
    Err(ParseError::Unrecognised)
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type")]
    detail_type: String,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    detail: Value,
}

fn eventbridge(value: &Value, default_region: &str) -> Result<Message, ParseError> {
    let envelope: Envelope =
        serde_json::from_value(value.clone()).map_err(|e| ParseError::NotJson(e.to_string()))?;
    let region = envelope
        .region
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| default_region.to_string());
    let what = envelope.detail_type.as_str();
    if let Some(expected) = source_of(what)
        && envelope.source.as_deref() != Some(expected)
    {
        return Err(ParseError::Source {
            what: what.to_string(),
            expected,
            from: envelope.source,
        });
    }
    let detail = &envelope.detail;
    let field = |name: &'static str| -> Result<String, ParseError> {
        string(detail, name).ok_or_else(|| ParseError::Missing {
            what: what.to_string(),
            field: name,
        })
    };
    let group_event = |notice: GroupNotice| -> Result<Message, ParseError> {
        Ok(Message::Group {
            region: region.clone(),
            group: field("AutoScalingGroupName")?,
            instance_id: string(detail, "EC2InstanceId"),
            what: notice,
        })
    };
    match what {
        "EC2 Instance Launch Successful" => group_event(GroupNotice::LaunchSucceeded),
        "EC2 Instance Launch Unsuccessful" => group_event(GroupNotice::LaunchFailed),
        "EC2 Instance Terminate Successful" => group_event(GroupNotice::TerminateSucceeded),
        "EC2 Instance Terminate Unsuccessful" => group_event(GroupNotice::TerminateFailed),
        "EC2 Instance-launch Lifecycle Action" | "EC2 Instance-terminate Lifecycle Action" => {
            let launching = what.contains("launch");
            let transition = string(detail, "LifecycleTransition");
            // The transition, when present, must agree with the detail-type.
            let expected = if launching { LAUNCHING } else { TERMINATING };
            if transition.as_deref().is_some_and(|t| t != expected) {
                return Err(ParseError::Missing {
                    what: what.to_string(),
                    field: "LifecycleTransition",
                });
            }
            field("EC2InstanceId")?;
            group_event(GroupNotice::Hook(HookNotice {
                hook: field("LifecycleHookName")?,
                token: string(detail, "LifecycleActionToken"),
                launching,
            }))
        }
        "EC2 Instance State-change Notification" => Ok(Message::Instance {
            region,
            instance_id: field("instance-id")?,
            what: InstanceNotice::State(field("state")?),
        }),
        "EC2 Spot Instance Interruption Warning" => Ok(Message::Instance {
            region,
            instance_id: field("instance-id")?,
            what: InstanceNotice::SpotInterruption(
                string(detail, "instance-action").unwrap_or_default(),
            ),
        }),
        "EC2 Instance Rebalance Recommendation" => Ok(Message::Instance {
            region,
            instance_id: field("instance-id")?,
            what: InstanceNotice::Rebalance,
        }),
        other => Ok(Message::Ignored {
            detail_type: other.to_string(),
        }),
    }
}

/// The one EventBridge source that emits a detail-type meshmirror acts on.
fn source_of(detail_type: &str) -> Option<&'static str> {
    match detail_type {
        "EC2 Instance Launch Successful"
        | "EC2 Instance Launch Unsuccessful"
        | "EC2 Instance Terminate Successful"
        | "EC2 Instance Terminate Unsuccessful"
        | "EC2 Instance-launch Lifecycle Action"
        | "EC2 Instance-terminate Lifecycle Action" => Some("aws.autoscaling"),
        "EC2 Instance State-change Notification"
        | "EC2 Spot Instance Interruption Warning"
        | "EC2 Instance Rebalance Recommendation" => Some("aws.ec2"),
        _ => None,
    }
}

/// A lifecycle hook's own notification (hook target = the queue).
fn hook_notification(value: &Value, default_region: &str) -> Result<Message, ParseError> {
    let what = "lifecycle hook notification";
    let field = |name: &'static str| -> Result<String, ParseError> {
        string(value, name).ok_or_else(|| ParseError::Missing {
            what: what.to_string(),
            field: name,
        })
    };
    let group = field("AutoScalingGroupName")?;
    let event = string(value, "Event");
    let transition = string(value, "LifecycleTransition");
    if event.as_deref() == Some(TEST) || transition.as_deref() == Some(TEST) {
        return Ok(Message::Test { group });
    }
    let launching = match transition.as_deref() {
        Some(LAUNCHING) => true,
        Some(TERMINATING) => false,
        _ => {
            return Err(ParseError::Missing {
                what: what.to_string(),
                field: "LifecycleTransition",
            });
        }
    };
    // The group's ARN names the region when present; otherwise the queue's.
    let region = string(value, "AutoScalingGroupARN")
        .and_then(|arn| arn.split(':').nth(3).map(str::to_string))
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| default_region.to_string());
    Ok(Message::Group {
        region,
        group,
        instance_id: Some(field("EC2InstanceId")?),
        what: GroupNotice::Hook(HookNotice {
            hook: field("LifecycleHookName")?,
            token: string(value, "LifecycleActionToken"),
            launching,
        }),
    })
}

fn string(value: &Value, name: &str) -> Option<String> {
    value
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn fixture(name: &str) -> String {
        let path = PathBuf::from(
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR"),
        )
        .join("fixtures")
        .join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// The docs print the direct-to-SQS notification as `Key: value` lines;
    /// SQS receives the same keys as a JSON object.
    fn key_values_to_json(text: &str) -> String {
        let mut object = serde_json::Map::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (key, value) = line.split_once(": ").expect("Key: value line");
            object.insert(key.to_string(), Value::String(value.to_string()));
        }
        Value::Object(object).to_string()
    }

    fn group(region: &str, name: &str, instance: Option<&str>, what: GroupNotice) -> Message {
        Message::Group {
            region: region.into(),
            group: name.into(),
            instance_id: instance.map(str::to_string),
            what,
        }
    }

    #[test]
    fn autoscaling_eventbridge_fixtures() {
        let cases = [
            (
                "eventbridge-asg-launch-successful.json",
                group(
                    "us-west-2",
                    "my-auto-scaling-group",
                    Some("i-1234567890abcdef0"),
                    GroupNotice::LaunchSucceeded,
                ),
            ),
            (
                "awsdocs-eventbridge-asg-launch-successful.json",
                group(
                    "us-west-2",
                    "my-auto-scaling-group",
                    Some("i-1234567890abcdef0"),
                    GroupNotice::LaunchSucceeded,
                ),
            ),
            (
                "eventbridge-asg-launch-unsuccessful.json",
                group(
                    "us-west-2",
                    "my-auto-scaling-group",
                    Some("i-1234567890abcdef0"),
                    GroupNotice::LaunchFailed,
                ),
            ),
            (
                "eventbridge-asg-terminate-successful.json",
                group(
                    "us-west-2",
                    "my-auto-scaling-group",
                    Some("i-1234567890abcdef0"),
                    GroupNotice::TerminateSucceeded,
                ),
            ),
            (
                "awsdocs-eventbridge-asg-terminate-successful.json",
                group(
                    "us-west-2",
                    "my-auto-scaling-group",
                    Some("i-1234567890abcdef0"),
                    GroupNotice::TerminateSucceeded,
                ),
            ),
            (
                "eventbridge-asg-terminate-unsuccessful.json",
                group(
                    "us-west-2",
                    "my-auto-scaling-group",
                    Some("i-1234567890abcdef0"),
                    GroupNotice::TerminateFailed,
                ),
            ),
        ];
        for (file, want) in cases {
            assert_eq!(parse(&fixture(file), "eu-west-1"), Ok(want), "{file}");
        }
    }

    #[test]
    fn lifecycle_action_fixtures_carry_hook_and_token() {
        let hook = |launching, token: &str, name: &str| {
            GroupNotice::Hook(HookNotice {
                hook: name.into(),
                token: Some(token.into()),
                launching,
            })
        };
        let cases = [
            (
                "eventbridge-asg-launch-lifecycle-action.json",
                group(
                    "us-west-2",
                    "my-asg",
                    Some("i-1234567890abcdef0"),
                    hook(
                        true,
                        "87654321-4321-4321-4321-210987654321",
                        "my-lifecycle-hook",
                    ),
                ),
            ),
            (
                "awsdocs-eventbridge-asg-launch-lifecycle-action.json",
                group(
                    "us-west-2",
                    "my-asg",
                    Some("i-1234567890abcdef0"),
                    hook(
                        true,
                        "87654321-4321-4321-4321-210987654321",
                        "my-lifecycle-hook",
                    ),
                ),
            ),
            (
                "eventbridge-asg-terminate-lifecycle-action.json",
                group(
                    "us-west-2",
                    "my-asg",
                    Some("i-1234567890abcdef0"),
                    hook(
                        false,
                        "87654321-4321-4321-4321-210987654321",
                        "my-lifecycle-hook",
                    ),
                ),
            ),
            (
                "awsdocs-eventbridge-asg-terminate-lifecycle-action.json",
                group(
                    "us-west-2",
                    "my-asg",
                    Some("i-1234567890abcdef0"),
                    hook(
                        false,
                        "87654321-4321-4321-4321-210987654321",
                        "my-lifecycle-hook",
                    ),
                ),
            ),
            (
                "nth-eventbridge-asg-terminate-lifecycle-action.json",
                group(
                    "us-east-1",
                    "testt1.demo-0a20f32c.kops.sh",
                    Some("i-0633ac2b0d9769723"),
                    hook(
                        false,
                        "0befcbdb-6ecd-498a-9ff7-ae9b54447cd6",
                        "cluster-termination-handler",
                    ),
                ),
            ),
        ];
        for (file, want) in cases {
            assert_eq!(parse(&fixture(file), "eu-west-1"), Ok(want), "{file}");
        }
    }

    #[test]
    fn ec2_eventbridge_fixtures() {
        let instance = |region: &str, id: &str, what| Message::Instance {
            region: region.into(),
            instance_id: id.into(),
            what,
        };
        let cases = [
            (
                "awsdocs-eventbridge-ec2-instance-state-change.json",
                instance(
                    "us-east-1",
                    "i-abcd1111",
                    InstanceNotice::State("pending".into()),
                ),
            ),
            (
                "nth-eventbridge-ec2-instance-state-change.json",
                instance(
                    "us-east-1",
                    "i-abcd1111",
                    InstanceNotice::State("pending".into()),
                ),
            ),
            (
                "awsdocs-eventbridge-ec2-spot-interruption-warning.json",
                instance(
                    "us-east-2",
                    "i-1234567890abcdef0",
                    InstanceNotice::SpotInterruption("action".into()),
                ),
            ),
            (
                "nth-eventbridge-ec2-spot-interruption-warning.json",
                instance(
                    "us-east-1",
                    "i-0b662ef9931388ba0",
                    InstanceNotice::SpotInterruption("terminate".into()),
                ),
            ),
            (
                "awsdocs-eventbridge-ec2-rebalance-recommendation.json",
                instance(
                    "us-east-2",
                    "i-1234567890abcdef0",
                    InstanceNotice::Rebalance,
                ),
            ),
            (
                "nth-eventbridge-ec2-rebalance-recommendation.json",
                instance(
                    "us-east-1",
                    "i-0b662ef9931388ba0",
                    InstanceNotice::Rebalance,
                ),
            ),
        ];
        for (file, want) in cases {
            assert_eq!(parse(&fixture(file), "eu-west-1"), Ok(want), "{file}");
        }
    }

    #[test]
    fn direct_hook_notifications_from_the_docs() {
        let body = key_values_to_json(&fixture("awsdocs-asg-lifecycle-hook-notification.yaml"));
        assert_eq!(
            parse(&body, "eu-west-1"),
            Ok(group(
                "eu-west-1",
                "my-asg",
                Some("i-0598c7d356eba48d7"),
                GroupNotice::Hook(HookNotice {
                    hook: "my-hook".into(),
                    token: Some("71514b9d-6a40-4b26-8523-05e7ee35fa40".into()),
                    launching: true,
                })
            ))
        );
        let body = key_values_to_json(&fixture(
            "awsdocs-asg-lifecycle-hook-test-notification.yaml",
        ));
        assert_eq!(
            parse(&body, "eu-west-1"),
            Ok(Message::Test {
                group: "my-asg".into()
            })
        );
    }

    #[test]
    fn sns_wrapped_messages_are_unwrapped() {
        let inner = fixture("eventbridge-asg-terminate-lifecycle-action.json");
        let wrapped =
            serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": inner})
                .to_string();
        assert_eq!(parse(&wrapped, "x"), parse(&inner, "x"));
        assert!(matches!(
            parse(&wrapped, "x"),
            Ok(Message::Group {
                what: GroupNotice::Hook(_),
                ..
            })
        ));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        let cases = [
            "",
            "not json",
            "[1,2]",
            "{}",
            r#"{"Type":"Notification","Message":"{{"}"#,
            r#"{"detail-type":"EC2 Instance-terminate Lifecycle Action","detail":{"AutoScalingGroupName":"g"}}"#,
            r#"{"detail-type":"EC2 Spot Instance Interruption Warning","detail":{}}"#,
            r#"{"detail-type":"EC2 Instance-launch Lifecycle Action","detail":{"AutoScalingGroupName":"g","EC2InstanceId":"i-1","LifecycleHookName":"h","LifecycleTransition":"autoscaling:EC2_INSTANCE_TERMINATING"}}"#,
            r#"{"AutoScalingGroupName":"g","EC2InstanceId":"i-1","LifecycleHookName":"h"}"#,
            r#"{"detail-type": 5}"#,
        ];
        for body in cases {
            assert!(parse(body, "r").is_err(), "{body:?} must be malformed");
        }
    }

    #[test]
    fn an_event_from_the_wrong_source_is_refused() {
        let body = |source: &str| {
            format!(
                r#"{{"source":{source},"detail-type":"EC2 Instance-terminate Lifecycle Action","region":"us-east-1","detail":{{"AutoScalingGroupName":"g","EC2InstanceId":"i-1","LifecycleHookName":"h"}}}}"#
            )
        };
        assert!(parse(&body(r#""aws.autoscaling""#), "r").is_ok());
        for forged in [r#""custom.app""#, r#""aws.ec2""#, "null"] {
            let err = parse(&body(forged), "r").unwrap_err();
            assert!(
                matches!(
                    err,
                    ParseError::Source {
                        expected: "aws.autoscaling",
                        ..
                    }
                ),
                "{forged}: {err:?}"
            );
        }
        let spot = r#"{"source":"aws.autoscaling","detail-type":"EC2 Spot Instance Interruption Warning","detail":{"instance-id":"i-1"}}"#;
        assert!(matches!(
            parse(spot, "r"),
            Err(ParseError::Source {
                expected: "aws.ec2",
                ..
            })
        ));
    }

    #[test]
    fn the_account_comes_with_the_message() {
        let account = |body: &str| parse_envelope(body, "r").map(|p| p.account);
        let eventbridge = fixture("eventbridge-asg-launch-successful.json");
        assert_eq!(account(&eventbridge), Ok(Some("123456789012".into())));
        let hook = key_values_to_json(&fixture("awsdocs-asg-lifecycle-hook-notification.yaml"));
        assert_eq!(account(&hook), Ok(Some("123456789012".into())));
        // Through SNS: the inner message's account, not the topic's.
        let inner = r#"{"source":"aws.ec2","detail-type":"EC2 Instance Rebalance Recommendation","account":"210987654321","detail":{"instance-id":"i-1"}}"#;
        let wrapped = serde_json::json!({"Type": "Notification", "TopicArn": "arn:aws:sns:r:123456789012:t", "Message": inner}).to_string();
        assert_eq!(account(&wrapped), Ok(Some("210987654321".into())));
        let bare = r#"{"AutoScalingGroupName":"g","Event":"autoscaling:TEST_NOTIFICATION"}"#;
        assert_eq!(account(bare), Ok(None));
    }

    #[test]
    fn unknown_detail_types_are_ignored() {
        let body =
            r#"{"detail-type":"AWS API Call via CloudTrail","region":"us-east-1","detail":{}}"#;
        assert_eq!(
            parse(body, "r"),
            Ok(Message::Ignored {
                detail_type: "AWS API Call via CloudTrail".into()
            })
        );
    }
}
