//! The SQS event feed: long-polls the queue, turns each message into a
//! [`GroupEvent`] whose ack deletes the message, and deletes at once what it
//! cannot use (malformed, from another account or an unmirrored region,
//! test notifications, instances in no group). A message whose ack is
//! dropped is not deleted: SQS delivers it again. Each `events()` call
//! starts its own poller, which stops when its stream is dropped (the
//! controller takes one per leadership term).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use futures::StreamExt;
use meshmirror_provider::{
    Ack, BoxEventStream, FeedOutcome, GroupEvent, GroupEventKind, GroupRef, LifecycleKind,
    Reconnect,
};
use tokio::sync::mpsc;

use crate::describe;
use crate::error;
use crate::message::{self, GroupNotice, InstanceNotice, Message, Parsed};
use crate::provider::Inner;

/// At most this many events wait for the controller before polling pauses.
const BUFFER: usize = 100;
/// Waits between failed receives: full jitter under 1s, 2s, 4s ... 30s.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub(crate) fn start(inner: Arc<Inner>) -> Option<BoxEventStream> {
    let url = inner.config.event_queue_url.clone()?;
    let (tx, rx) = mpsc::channel(BUFFER);
    tokio::spawn(poll(inner, url, tx));
    Some(tokio_stream_from(rx))
}

fn tokio_stream_from(mut rx: mpsc::Receiver<GroupEvent>) -> BoxEventStream {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

async fn poll(inner: Arc<Inner>, url: String, tx: mpsc::Sender<GroupEvent>) {
    let region = inner.clients.default_region().await;
    let sqs = inner.clients.sqs(&region).await;
    let (delete_tx, delete_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(deleter(inner.clone(), sqs.clone(), url.clone(), delete_rx));
    let accounts = inner.config.event_accounts();
    if accounts.is_empty() {
        tracing::warn!(queue = %url,
            "no account in the queue URL and none configured: events from any account are accepted");
    }
    tracing::info!(queue = %url, %region, ?accounts, "polling the AWS event queue");
    let wait = inner.config.receive_wait.min(Duration::from_secs(20));
    let mut backoff = Reconnect::new(BACKOFF_BASE, BACKOFF_MAX);
    loop {
        if tx.is_closed() {
            return;
        }
        let receive = sqs
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(10)
            .wait_time_seconds(wait.as_secs() as i32)
            .send();
        // The controller drops the stream when its leadership term ends:
        // stop polling then, not after the long poll.
        let received = tokio::select! {
            _ = tx.closed() => return,
            received = receive => received,
        };
        let out = match received {
            Ok(out) => {
                backoff.succeeded();
                out
            }
            Err(e) => {
                let err = error::map("ReceiveMessage", e);
                inner.throttled("ReceiveMessage", &err);
                let retry_in = backoff.next_delay();
                tracing::warn!(%err, ?retry_in, failures = backoff.failures(),
                    "cannot receive from the event queue");
                tokio::time::sleep(retry_in).await;
                continue;
            }
        };
        for msg in out.messages() {
            let (Some(body), Some(receipt)) = (msg.body(), msg.receipt_handle()) else {
                continue;
            };
            let id = msg.message_id().unwrap_or("?");
            match to_event(&inner, body, &region, &accounts).await {
                Handled::Event(group, kind) => {
                    inner.message(FeedOutcome::Event);
                    let (ack, acked) = Ack::new();
                    let event = GroupEvent { group, kind, ack };
                    if tx.send(event).await.is_err() {
                        return;
                    }
                    let receipt = receipt.to_string();
                    let delete_tx = delete_tx.clone();
                    tokio::spawn(async move {
                        // Dropped unacked: leave the message for redelivery.
                        if acked.await.is_ok() {
                            let _ = delete_tx.send(receipt);
                        }
                    });
                }
                Handled::Drop(outcome, why) => {
                    match outcome {
                        FeedOutcome::Malformed => {
                            tracing::warn!(message = id, %why, "malformed event message deleted")
                        }
                        _ => tracing::debug!(message = id, %why, "event message deleted unused"),
                    }
                    inner.message(outcome);
                    let _ = delete_tx.send(receipt.to_string());
                }
                Handled::Retry(why) => {
                    // The group lookup failed (throttled, network): leave the
                    // message; SQS delivers it again after its visibility timeout.
                    tracing::warn!(message = id, %why, "event message left for redelivery");
                }
            }
        }
    }
}

enum Handled {
    Event(GroupRef, GroupEventKind),
    Drop(FeedOutcome, String),
    Retry(String),
}

/// Why a well-formed message is not acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Refusal {
    /// From an account meshmirror does not run in (or naming none).
    Account(Option<String>),
    /// About a region no mirror names.
    Region(String),
}

impl Refusal {
    /// Another account's message on our queue is misrouted or forged, as a
    /// wrong source is; another region's is merely not ours.
    fn outcome(&self) -> FeedOutcome {
        match self {
            Refusal::Account(_) => FeedOutcome::Malformed,
            Refusal::Region(_) => FeedOutcome::Ignored,
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Account(Some(a)) => write!(f, "from account {a}, not one meshmirror runs in"),
            Refusal::Account(None) => f.write_str("names no account"),
            Refusal::Region(r) => write!(f, "about region {r}, where no mirror names a group"),
        }
    }
}

/// Accepts a message from one of `accounts` (none: no check) about the
/// queue's region or one where a mirror names a group. The queue's region
/// is always accepted: an EventBridge rule delivers only to a queue in its
/// own region, so that is where events come from before the first pass;
/// other regions' events arrive only through forwarding between buses.
fn check_origin(
    parsed: &Parsed,
    accounts: &[String],
    queue_region: &str,
    mirrored: &BTreeSet<String>,
) -> Result<(), Refusal> {
    if !accounts.is_empty()
        && !parsed
            .account
            .as_ref()
            .is_some_and(|a| accounts.contains(a))
    {
        return Err(Refusal::Account(parsed.account.clone()));
    }
    let region = match &parsed.message {
        Message::Group { region, .. } | Message::Instance { region, .. } => region,
        Message::Test { .. } | Message::Ignored { .. } => return Ok(()),
    };
    if region != queue_region && !mirrored.contains(region) {
        return Err(Refusal::Region(region.clone()));
    }
    Ok(())
}

async fn to_event(
    inner: &Arc<Inner>,
    body: &str,
    default_region: &str,
    accounts: &[String],
) -> Handled {
    let parsed = match message::parse_envelope(body, default_region) {
        Ok(m) => m,
        Err(e) => return Handled::Drop(FeedOutcome::Malformed, e.to_string()),
    };
    let checked = {
        let memory = inner.memory.lock().expect("memory lock");
        check_origin(&parsed, accounts, default_region, memory.mirrored_regions())
    };
    if let Err(refusal) = checked {
        return Handled::Drop(refusal.outcome(), refusal.to_string());
    }
    let parsed = parsed.message;
    let now = Instant::now();
    match parsed {
        Message::Test { group } => Handled::Drop(
            FeedOutcome::Ignored,
            format!("test notification of group {group}"),
        ),
        Message::Ignored { detail_type } => {
            Handled::Drop(FeedOutcome::Ignored, format!("detail-type {detail_type}"))
        }
        Message::Group {
            region,
            group,
            instance_id,
            what,
        } => {
            inner.rounds.invalidate(&region, &group);
            let group_ref = GroupRef::Aws {
                region,
                name: group,
            };
            let kind = match (what, instance_id) {
                (GroupNotice::Hook(hook), Some(instance_id)) => {
                    let kind = if hook.launching {
                        LifecycleKind::Launch
                    } else {
                        LifecycleKind::Terminate
                    };
                    inner.memory.lock().expect("memory lock").hook_announced(
                        group_ref.clone(),
                        &instance_id,
                        kind,
                        hook.hook,
                        hook.token,
                        now,
                    );
                    if hook.launching {
                        GroupEventKind::Launched { instance_id }
                    } else {
                        GroupEventKind::Terminating { instance_id }
                    }
                }
                (GroupNotice::LaunchSucceeded, Some(instance_id)) => {
                    GroupEventKind::Launched { instance_id }
                }
                (GroupNotice::TerminateSucceeded, Some(instance_id)) => {
                    GroupEventKind::Terminated { instance_id }
                }
                _ => GroupEventKind::Changed,
            };
            Handled::Event(group_ref, kind)
        }
        Message::Instance {
            region,
            instance_id,
            what,
        } => {
            let known = inner
                .memory
                .lock()
                .expect("memory lock")
                .group_of(&instance_id)
                .cloned();
            let group = match known {
                Some(g) => g,
                None => {
                    let clients = inner.clients.region(&region).await;
                    match describe::groups_of(&clients.autoscaling, vec![instance_id.clone()]).await
                    {
                        Ok(found) => match found.get(&instance_id) {
                            Some(name) => GroupRef::Aws {
                                region: region.clone(),
                                name: name.clone(),
                            },
                            None => {
                                return Handled::Drop(
                                    FeedOutcome::Unmatched,
                                    format!("instance {instance_id} is in no Auto Scaling group"),
                                );
                            }
                        },
                        Err(err) => {
                            inner.throttled("DescribeAutoScalingInstances", &err);
                            return Handled::Retry(err.to_string());
                        }
                    }
                }
            };
            let kind = match what {
                InstanceNotice::State(state) => match state.as_str() {
                    "stopping" | "shutting-down" => GroupEventKind::Interrupted { instance_id },
                    "stopped" | "terminated" => GroupEventKind::Terminated { instance_id },
                    _ => GroupEventKind::Changed,
                },
                InstanceNotice::SpotInterruption(_) => {
                    // A hint: passes ask EC2 for the spot request's status
                    // for a while; only EC2 takes the VM out.
                    inner
                        .memory
                        .lock()
                        .expect("memory lock")
                        .spot_warned(&instance_id, now);
                    GroupEventKind::Interrupted { instance_id }
                }
                InstanceNotice::Rebalance => {
                    inner.rebalance();
                    // Advisory: no reason to make the next pass fetch afresh.
                    return Handled::Event(
                        group,
                        GroupEventKind::Advisory {
                            instance_id,
                            what: "EC2 Instance Rebalance Recommendation".into(),
                        },
                    );
                }
            };
            if let GroupRef::Aws { region, name } = &group {
                inner.rounds.invalidate(region, name);
            }
            Handled::Event(group, kind)
        }
    }
}

/// Deletes acked messages in batches of up to ten.
async fn deleter(
    inner: Arc<Inner>,
    sqs: aws_sdk_sqs::Client,
    url: String,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 10 {
            match rx.try_recv() {
                Ok(receipt) => batch.push(receipt),
                Err(_) => break,
            }
        }
        let entries: Vec<_> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, receipt)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .ok()
            })
            .collect();
        match sqs
            .delete_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                inner.deleted(out.successful().len() as u64);
                for failed in out.failed() {
                    tracing::debug!(
                        code = failed.code(),
                        "queue message not deleted (redelivered later)"
                    );
                }
            }
            Err(e) => {
                let err = error::map("DeleteMessageBatch", e);
                tracing::warn!(%err, "cannot delete handled messages; they will be redelivered");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::GroupNotice;

    fn group_message(region: &str, account: Option<&str>) -> Parsed {
        Parsed {
            message: Message::Group {
                region: region.into(),
                group: "g".into(),
                instance_id: None,
                what: GroupNotice::LaunchSucceeded,
            },
            account: account.map(str::to_string),
        }
    }

    #[test]
    fn only_our_accounts_and_regions_are_accepted() {
        let ours = vec!["123456789012".to_string()];
        let mirrored: BTreeSet<String> = ["eu-west-1".to_string()].into();
        let instance = |region: &str| Parsed {
            message: Message::Instance {
                region: region.into(),
                instance_id: "i-1".into(),
                what: InstanceNotice::Rebalance,
            },
            account: Some("123456789012".into()),
        };
        let test = Parsed {
            message: Message::Test { group: "g".into() },
            account: Some("123456789012".into()),
        };
        let foreign_test = Parsed {
            account: Some("999999999999".into()),
            ..test.clone()
        };
        let account = |a: Option<&str>| Err(Refusal::Account(a.map(str::to_string)));
        let region = |r: &str| Err(Refusal::Region(r.into()));
        // (message, accounts, want)
        let cases = [
            (
                group_message("us-east-1", Some("123456789012")),
                &ours,
                Ok(()),
            ),
            (
                group_message("eu-west-1", Some("123456789012")),
                &ours,
                Ok(()),
            ),
            (
                group_message("ap-south-1", Some("123456789012")),
                &ours,
                region("ap-south-1"),
            ),
            (instance("ap-south-1"), &ours, region("ap-south-1")),
            (instance("eu-west-1"), &ours, Ok(())),
            (
                group_message("us-east-1", Some("999999999999")),
                &ours,
                account(Some("999999999999")),
            ),
            (group_message("us-east-1", None), &ours, account(None)),
            (test.clone(), &ours, Ok(())),
            (foreign_test, &ours, account(Some("999999999999"))),
            // No account known: no account check; regions still checked.
            (group_message("us-east-1", None), &vec![], Ok(())),
            (
                group_message("ap-south-1", Some("999999999999")),
                &vec![],
                region("ap-south-1"),
            ),
        ];
        for (i, (parsed, accounts, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                check_origin(&parsed, accounts, "us-east-1", &mirrored),
                want,
                "case {i}: {parsed:?}"
            );
        }
        assert_eq!(Refusal::Account(None).outcome(), FeedOutcome::Malformed);
        assert_eq!(Refusal::Region("x".into()).outcome(), FeedOutcome::Ignored);
    }
}
