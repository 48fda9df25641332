//! Optional push feed: Event Grid resource events delivered to an Azure
//! Storage queue. A message naming a mirrored scale set (or, for Flexible
//! sets, a VM in a resource group holding one) becomes a [`GroupEvent`] whose
//! ack deletes the message; other messages are deleted at once; malformed ones
//! are counted and deleted. An event is acted on only in the shape Event
//! Grid gives it ([`vet`]): a resource event type, a subject that is a plain
//! ARM id inside its topic's subscription or resource group. Anything else
//! was not sent by the subscription (a forged or stray message). Events are
//! hints: the group is re-read, and polling stays the safety net.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Transport, Url};
use azure_storage_queue::models::QueueClientReceiveMessagesOptions;
use azure_storage_queue::{QueueClient, QueueClientOptions};
use base64::Engine;
use futures::StreamExt;
use meshmirror_provider::{
    Ack, BoxEventStream, FeedOutcome, GroupEvent, GroupEventKind, GroupRef, Observer, Reconnect,
};
use serde::Deserialize;

use crate::models::OrchestrationMode;
use crate::provider::{AzureError, KnownGroup, KnownGroups};

/// How long a received message stays invisible while its pass runs.
const VISIBILITY: Duration = Duration::from_secs(300);
const BATCH: i32 = 32;

/// How the feed polls and whom it tells.
pub struct QueueConfig {
    /// The wait after an empty receive. Failed receives wait up to this,
    /// doubling per failure to at most [`MAX_BACKOFF_POLLS`] times it.
    pub poll_interval: Duration,
    pub known: Arc<KnownGroups>,
    pub observer: Arc<dyn Observer>,
}

/// The longest wait after failed receives, in poll intervals.
pub const MAX_BACKOFF_POLLS: u32 = 12;

/// An Event Grid event (Event Grid schema), the fields read here.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventGridEvent {
    #[serde(default)]
    pub id: Option<String>,
    /// The scope the subscription watches: `/subscriptions/S` or
    /// `/subscriptions/S/resourceGroups/RG`.
    #[serde(default)]
    pub topic: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    pub event_type: String,
    #[serde(default)]
    pub data: Option<EventData>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventData {
    #[serde(default)]
    pub resource_uri: Option<String>,
    #[serde(default)]
    pub operation_name: Option<String>,
}

/// Event Grid base64-encodes what it puts on a Storage queue; plain JSON
/// (one event or an array) is accepted too.
pub fn decode_message(text: &str) -> Result<Vec<EventGridEvent>, String> {
    let text = text.trim();
    let json: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("neither JSON nor base64: {e}"))?;
            serde_json::from_slice(&bytes).map_err(|e| format!("base64 but not JSON: {e}"))?
        }
    };
    let events = match json {
        serde_json::Value::Array(items) => items,
        one => vec![one],
    };
    events
        .into_iter()
        .map(|e| serde_json::from_value(e).map_err(|e| format!("not an Event Grid event: {e}")))
        .collect()
}

/// What a resource id names, as far as scale sets go.
#[derive(Debug, PartialEq, Eq)]
enum Target<'a> {
    /// A scale set, one of its (Uniform) VMs, or something under either.
    ScaleSet {
        subscription: &'a str,
        resource_group: &'a str,
        scale_set: &'a str,
        /// The VM's instance id when the id is exactly a Uniform VM.
        vm: Option<&'a str>,
    },
    /// A plain VM (maybe a Flexible member), or something under it.
    Vm {
        subscription: &'a str,
        resource_group: &'a str,
        /// The VM's name when the id is exactly the VM.
        name: Option<&'a str>,
    },
}

fn target(uri: &str) -> Option<Target<'_>> {
    let parts: Vec<&str> = uri.trim_matches('/').split('/').collect();
    let is = |i: usize, word: &str| parts.get(i).is_some_and(|p| p.eq_ignore_ascii_case(word));
    if !(is(0, "subscriptions")
        && is(2, "resourceGroups")
        && is(4, "providers")
        && is(5, "Microsoft.Compute"))
    {
        return None;
    }
    let (subscription, resource_group) = (parts[1], parts[3]);
    if is(6, "virtualMachineScaleSets") {
        return Some(Target::ScaleSet {
            subscription,
            resource_group,
            scale_set: parts.get(7)?,
            vm: (is(8, "virtualMachines") && parts.len() == 10).then(|| parts[9]),
        });
    }
    if is(6, "virtualMachines") && parts.len() > 7 {
        return Some(Target::Vm {
            subscription,
            resource_group,
            name: (parts.len() == 8).then(|| parts[7]),
        });
    }
    None
}

/// Why an event is not one meshmirror can act on: the message is counted as
/// malformed and deleted (delivering it again would not change it).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("topic {0:?} is not a subscription or resource group")]
    Topic(Option<String>),
    #[error("a resource event without a subject")]
    NoSubject,
    #[error("subject {subject:?} and resourceUri {resource_uri:?} differ")]
    Subject {
        subject: String,
        resource_uri: String,
    },
    /// Empty, `.`/`..`, or percent-encoded segments: a resource id that could
    /// read as another one.
    #[error("{0:?} is not a plain resource id")]
    Path(String),
    /// A subject outside the topic's scope: whoever can write to the queue
    /// could forge it; Event Grid never sends one.
    #[error("subject {subject:?} is outside topic {topic:?}")]
    Outside { topic: String, subject: String },
}

/// The resource events meshmirror acts on (the ones the Event Grid
/// subscription in docs/azure.md sends).
const EVENT_TYPES: &[&str] = &[
    "Microsoft.Resources.ResourceWriteSuccess",
    "Microsoft.Resources.ResourceDeleteSuccess",
    "Microsoft.Resources.ResourceActionSuccess",
];

/// The segments of an ARM id (`/subscriptions/...`), if every one is plain:
/// not empty, not dots only, no `%` (ARM names cannot hold one, so an encoded
/// `/` or `.` is forged) and no `\`, `?` or `#`.
fn segments(id: &str) -> Option<Vec<&str>> {
    let parts: Vec<&str> = id.strip_prefix('/')?.split('/').collect();
    let plain = |p: &&str| {
        !p.is_empty()
            && !p.chars().all(|c| c == '.')
            && !p.contains(['%', '\\', '?', '#'])
            && !p.chars().any(char::is_control)
    };
    (parts.iter().all(plain) && parts.first()?.eq_ignore_ascii_case("subscriptions"))
        .then_some(parts)
}

/// The resource id an event is about, once its topic vouches for it: the
/// subject (and `data.resourceUri`, the same id) must lie in the topic's
/// subscription, and resource group if the topic names one. `None`: an event
/// type meshmirror does not act on.
pub fn vet(event: &EventGridEvent) -> Result<Option<&str>, EventError> {
    if !EVENT_TYPES.contains(&event.event_type.as_str()) {
        return Ok(None);
    }
    let topic = event.topic.as_deref();
    let scope = topic
        .and_then(segments)
        .filter(|t| t.len() == 2 || (t.len() == 4 && t[2].eq_ignore_ascii_case("resourceGroups")))
        .ok_or_else(|| EventError::Topic(topic.map(str::to_string)))?;
    let uri = event.data.as_ref().and_then(|d| d.resource_uri.as_deref());
    let subject = match (event.subject.as_deref(), uri) {
        (Some(subject), Some(uri)) if !subject.eq_ignore_ascii_case(uri) => {
            return Err(EventError::Subject {
                subject: subject.into(),
                resource_uri: uri.into(),
            });
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => return Err(EventError::NoSubject),
    };
    let parts = segments(subject).ok_or_else(|| EventError::Path(subject.into()))?;
    // ARM ids are case-insensitive; `resourcegroups` is common in subjects.
    let inside = parts.len() >= scope.len()
        && scope
            .iter()
            .zip(&parts)
            .all(|(t, s)| t.eq_ignore_ascii_case(s));
    if !inside {
        return Err(EventError::Outside {
            topic: topic.unwrap_or_default().into(),
            subject: subject.into(),
        });
    }
    Ok(Some(subject))
}

/// The groups an event is about, with what happened. Empty: not ours (an
/// event type or resource meshmirror does not act on); an error: malformed.
///
/// A VM written or deleted is named (`Launched`, `Terminated`), so the pass
/// asks the cloud about it alone; its id is spelled as the set's members'
/// ids are (`known`), since Event Grid's subjects spell `resourcegroups` and
/// the core matches ids exactly. Anything else under a set (the set itself,
/// a VM's extension) is `Changed`: the pass reads every member.
pub fn resolve(
    event: &EventGridEvent,
    known: &[KnownGroup],
) -> Result<Vec<(GroupRef, GroupEventKind)>, EventError> {
    let Some(uri) = vet(event)? else {
        return Ok(Vec::new());
    };
    let deleted = event.event_type == "Microsoft.Resources.ResourceDeleteSuccess"
        || event
            .data
            .as_ref()
            .and_then(|d| d.operation_name.as_deref())
            .is_some_and(|op| op.ends_with("/delete"));
    let vm_kind = |instance_id: String| {
        if deleted {
            GroupEventKind::Terminated { instance_id }
        } else {
            GroupEventKind::Launched { instance_id }
        }
    };
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    Ok(match target(uri) {
        Some(Target::ScaleSet {
            subscription,
            resource_group,
            scale_set,
            vm,
        }) => {
            // The mirror's own spelling, so the controller's lookup matches.
            let found = known.iter().find(|k| matches!(&k.group, GroupRef::Azure { subscription_id, resource_group: rg, scale_set: s }
                    if same(subscription_id, subscription) && same(rg, resource_group) && same(s, scale_set)));
            let group = found.map(|k| k.group.clone()).unwrap_or_else(|| GroupRef::Azure {
                subscription_id: subscription.into(),
                resource_group: resource_group.into(),
                scale_set: scale_set.into(),
            });
            let kind = match (vm, found) {
                (Some(vm), Some(k)) => vm_kind(format!("{}{vm}", k.vm_prefix)),
                // A set not read yet: no member ids to match, no pass to name it to.
                (Some(_), None) => vm_kind(uri.to_string()),
                (None, _) => GroupEventKind::Changed,
            };
            vec![(group, kind)]
        }
        Some(Target::Vm {
            subscription,
            resource_group,
            name,
        }) => known
            .iter()
            .filter(|k| {
                k.mode == OrchestrationMode::Flexible
                    && matches!(&k.group, GroupRef::Azure { subscription_id, resource_group: rg, .. }
                        if same(subscription_id, subscription) && same(rg, resource_group))
            })
            .map(|k| {
                let kind = match name {
                    Some(name) => vm_kind(format!("{}{name}", k.vm_prefix)),
                    None => GroupEventKind::Changed,
                };
                (k.group.clone(), kind)
            })
            .collect(),
        None => Vec::new(),
    })
}

struct Poller {
    client: Arc<QueueClient>,
    config: QueueConfig,
    ready: VecDeque<GroupEvent>,
    backoff: Reconnect,
}

impl Poller {
    async fn delete(client: &QueueClient, id: &str, receipt: &str) {
        if let Err(err) = client.delete_message(id, receipt, None).await {
            // A receipt outlives the visibility timeout only so long; the
            // message comes back and is handled again.
            tracing::debug!(%err, message = id, "could not delete queue message");
        }
    }

    /// One receive; fills `ready`. Returns whether anything was received.
    async fn receive(&mut self) -> Result<bool, azure_core::Error> {
        let response = self
            .client
            .receive_messages(Some(QueueClientReceiveMessagesOptions {
                number_of_messages: Some(BATCH),
                visibility_timeout: Some(VISIBILITY.as_secs() as i32),
                ..Default::default()
            }))
            .await?;
        let messages = response.into_model()?.items.unwrap_or_default();
        let received = !messages.is_empty();
        for message in messages {
            let (Some(id), Some(receipt)) = (message.message_id, message.pop_receipt) else {
                continue;
            };
            let text = message.message_text.unwrap_or_default();
            let events = match decode_message(&text) {
                Ok(events) => events,
                Err(error) => {
                    tracing::warn!(message = %id, %error, "malformed event message; deleted");
                    self.config.observer.feed_message(FeedOutcome::Malformed);
                    Self::delete(&self.client, &id, &receipt).await;
                    continue;
                }
            };
            let known = self.config.known.snapshot();
            // One forged event spoils its message: none of it is acted on.
            let targets: Result<Vec<Vec<(GroupRef, GroupEventKind)>>, EventError> =
                events.iter().map(|e| resolve(e, &known)).collect();
            let targets: Vec<(GroupRef, GroupEventKind)> = match targets {
                Ok(targets) => targets.into_iter().flatten().collect(),
                Err(error) => {
                    tracing::warn!(message = %id, %error, "malformed event message; deleted");
                    self.config.observer.feed_message(FeedOutcome::Malformed);
                    Self::delete(&self.client, &id, &receipt).await;
                    continue;
                }
            };
            if targets.is_empty() {
                tracing::debug!(message = %id, "event names no scale set; deleted");
                self.config.observer.feed_message(FeedOutcome::Unmatched);
                Self::delete(&self.client, &id, &receipt).await;
                continue;
            }
            self.config.observer.feed_message(FeedOutcome::Event);
            let mut waits = Vec::with_capacity(targets.len());
            for (group, kind) in targets {
                let (ack, done) = Ack::new();
                waits.push(done);
                self.ready.push_back(GroupEvent { group, kind, ack });
            }
            let client = self.client.clone();
            // Deleted only when every event of the message was acked; a dropped
            // ack leaves the message to come back after the visibility timeout.
            tokio::spawn(async move {
                if futures::future::try_join_all(waits).await.is_ok() {
                    Self::delete(&client, &id, &receipt).await;
                }
            });
        }
        Ok(received)
    }
}

/// The client of the queue at `url`, made when the provider is built so a
/// bad queue URL fails the provider there.
pub fn client(
    url: &Url,
    credential: Arc<dyn TokenCredential>,
    transport: Option<Transport>,
) -> Result<QueueClient, AzureError> {
    QueueClient::new(
        url.clone(),
        Some(credential),
        Some(QueueClientOptions {
            client_options: ClientOptions {
                transport,
                ..ClientOptions::default()
            },
            ..QueueClientOptions::default()
        }),
    )
    .map_err(|e| AzureError::Config(format!("event queue {url}: {e}")))
}

/// The event feed of the queue `client` reads.
pub fn stream(client: Arc<QueueClient>, config: QueueConfig) -> BoxEventStream {
    let backoff = Reconnect::new(
        config.poll_interval,
        config.poll_interval.saturating_mul(MAX_BACKOFF_POLLS),
    );
    let poller = Poller {
        client,
        config,
        ready: VecDeque::new(),
        backoff,
    };
    futures::stream::unfold(poller, |mut p| async move {
        loop {
            if let Some(event) = p.ready.pop_front() {
                return Some((event, p));
            }
            match p.receive().await {
                Ok(received) => {
                    p.backoff.succeeded();
                    if !received {
                        tokio::time::sleep(p.config.poll_interval).await;
                    }
                }
                Err(err) => {
                    let wait = p.backoff.next_delay();
                    tracing::warn!(%err, ?wait, failures = p.backoff.failures(),
                        "event queue receive failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The groups a message concerns, with what happened to each.
    type Targets = Vec<(GroupRef, GroupEventKind)>;

    fn group(rg: &str, set: &str) -> GroupRef {
        GroupRef::Azure {
            subscription_id: "sub".into(),
            resource_group: rg.into(),
            scale_set: set.into(),
        }
    }

    /// A set read before, its member ids spelled as ARM spells them.
    fn known(rg: &str, set: &str, mode: OrchestrationMode) -> KnownGroup {
        let vm_prefix = match mode {
            OrchestrationMode::Uniform => format!(
                "/subscriptions/sub/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachineScaleSets/{set}/virtualMachines/"
            ),
            OrchestrationMode::Flexible => format!(
                "/subscriptions/sub/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/"
            ),
        };
        KnownGroup {
            group: group(rg, set),
            mode,
            vm_prefix,
        }
    }

    fn event(kind: &str, uri: &str, op: &str) -> EventGridEvent {
        serde_json::from_value(serde_json::json!({
            "topic": "/subscriptions/sub",
            "eventType": kind,
            "subject": uri,
            "data": {"resourceUri": uri, "operationName": op}
        }))
        .unwrap()
    }

    #[test]
    fn base64_and_plain_json_messages_decode() {
        let json = r#"{"eventType":"Microsoft.Resources.ResourceWriteSuccess","subject":"/x"}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(json);
        assert_eq!(decode_message(json).unwrap().len(), 1);
        assert_eq!(
            decode_message(&b64).unwrap()[0].subject.as_deref(),
            Some("/x")
        );
        assert_eq!(
            decode_message(&format!("[{json},{json}]")).unwrap().len(),
            2
        );
        assert!(decode_message("not an event").is_err());
        assert!(
            decode_message(r#"{"subject": "/x"}"#).is_err(),
            "eventType is required"
        );
    }

    #[test]
    fn uniform_vm_delete_names_its_scale_set_in_the_mirrors_spelling() {
        let known = vec![known("RG", "Web", OrchestrationMode::Uniform)];
        let e = event(
            "Microsoft.Resources.ResourceDeleteSuccess",
            "/subscriptions/sub/resourcegroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/3",
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/delete",
        );
        let got = resolve(&e, &known).unwrap();
        assert_eq!(
            got,
            vec![(
                group("RG", "Web"),
                GroupEventKind::Terminated {
                    instance_id: "/subscriptions/sub/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/Web/virtualMachines/3".into()
                }
            )]
        );
        // An unknown scale set is still named; the controller drops it.
        let got = resolve(&e, &[]).unwrap();
        assert_eq!(got[0].0, group("rg", "web"));
    }

    #[test]
    fn flexible_vm_events_go_to_the_flexible_sets_of_its_resource_group() {
        let known = vec![
            known("rg", "flex", OrchestrationMode::Flexible),
            known("rg", "uni", OrchestrationMode::Uniform),
            known("other", "flex2", OrchestrationMode::Flexible),
        ];
        let e = event(
            "Microsoft.Resources.ResourceWriteSuccess",
            "/subscriptions/sub/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/flex_a1b2",
            "Microsoft.Compute/virtualMachines/write",
        );
        let got = resolve(&e, &known).unwrap();
        assert_eq!(
            got,
            vec![(
                group("rg", "flex"),
                GroupEventKind::Launched {
                    instance_id: "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/flex_a1b2".into()
                }
            )]
        );
    }

    #[test]
    fn other_resources_are_not_ours() {
        // source: /work/shared/reference/azure/eventgrid-resource-write-success.json (a storage account)
        let sample = include_str!("../tests/fixtures/eventgrid-resource-write-success.json");
        let events = decode_message(sample).unwrap();
        assert_eq!(
            resolve(
                &events[0],
                &[known("rg", "web", OrchestrationMode::Flexible)]
            ),
            Ok(vec![])
        );
    }

    /// Decodes one literal event and resolves it against `known`.
    fn outcome(
        json: &str,
        known: &[KnownGroup],
    ) -> Result<Vec<(GroupRef, GroupEventKind)>, EventError> {
        let events = decode_message(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert_eq!(events.len(), 1);
        resolve(&events[0], known)
    }

    #[test]
    fn which_events_are_acted_on() {
        let known = [
            known("rg", "web", OrchestrationMode::Uniform),
            known("rg", "flex", OrchestrationMode::Flexible),
        ];
        let cases: &[(&str, &str, Targets)] = &[
            (
                "a Uniform VM deleted, resource-group topic, subject in other case",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/SUB/resourcegroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/3",
                    "eventType": "Microsoft.Resources.ResourceDeleteSuccess",
                    "data": {"resourceUri": "/subscriptions/SUB/resourcegroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/3",
                             "operationName": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/delete"}}"#,
                // Named as the set's members are named (ARM's spelling).
                vec![(
                    group("rg", "web"),
                    GroupEventKind::Terminated {
                        instance_id: "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/3".into(),
                    },
                )],
            ),
            (
                "a Uniform VM written (a launch), subject as Event Grid spells it",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourcegroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/12",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess",
                    "data": {"resourceUri": "/subscriptions/sub/resourcegroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/12",
                             "operationName": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/write"}}"#,
                vec![(
                    group("rg", "web"),
                    GroupEventKind::Launched {
                        instance_id: "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/12".into(),
                    },
                )],
            ),
            (
                "a Uniform VM's extension written: not the VM, a full read",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/12/extensions/health",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                vec![(group("rg", "web"), GroupEventKind::Changed)],
            ),
            (
                "a Uniform VM's extension deleted: the VM is not named as gone",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/12/extensions/health",
                    "eventType": "Microsoft.Resources.ResourceDeleteSuccess"}"#,
                vec![(group("rg", "web"), GroupEventKind::Changed)],
            ),
            (
                "a scale set written, subscription topic, no resourceUri",
                r#"{"topic": "/subscriptions/sub",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                vec![(group("rg", "web"), GroupEventKind::Changed)],
            ),
            (
                "an action on a scale set (deleteInstances)",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceActionSuccess",
                    "data": {"operationName": "Microsoft.Compute/virtualMachineScaleSets/delete/action"}}"#,
                vec![(group("rg", "web"), GroupEventKind::Changed)],
            ),
            (
                "a plain VM written: named to the Flexible sets of its resource group",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourcegroups/rg/providers/Microsoft.Compute/virtualMachines/flex_a1",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                vec![(
                    group("rg", "flex"),
                    GroupEventKind::Launched {
                        instance_id: "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/flex_a1".into(),
                    },
                )],
            ),
            (
                "a plain VM deleted",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/flex_a1",
                    "eventType": "Microsoft.Resources.ResourceDeleteSuccess"}"#,
                vec![(
                    group("rg", "flex"),
                    GroupEventKind::Terminated {
                        instance_id: "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/flex_a1".into(),
                    },
                )],
            ),
            (
                "a plain VM's extension written",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/flex_a1/extensions/x",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                vec![(group("rg", "flex"), GroupEventKind::Changed)],
            ),
            // Ignored: deleted, counted, no event.
            (
                "a failed write is not acted on",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceWriteFailure"}"#,
                vec![],
            ),
            (
                "a custom event type, whatever its topic",
                r#"{"topic": "nonsense",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Contoso.Items.ItemReceived"}"#,
                vec![],
            ),
            (
                "a plain VM in a resource group with no Flexible set read",
                r#"{"topic": "/subscriptions/sub/resourceGroups/other",
                    "subject": "/subscriptions/sub/resourceGroups/other/providers/Microsoft.Compute/virtualMachines/vm1",
                    "eventType": "Microsoft.Resources.ResourceDeleteSuccess"}"#,
                vec![],
            ),
            (
                "the resource group itself",
                r#"{"topic": "/subscriptions/sub",
                    "subject": "/subscriptions/sub/resourceGroups/rg",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                vec![],
            ),
        ];
        for (what, json, want) in cases {
            assert_eq!(outcome(json, &known).as_ref(), Ok(want), "{what}");
        }
    }

    #[test]
    fn forged_and_malformed_events_are_refused() {
        let web = "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web";
        let cases: &[(&str, &str, EventError)] = &[
            (
                "no topic",
                r#"{"subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                EventError::Topic(None),
            ),
            (
                "a topic that is a resource, not a scope",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/s",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                EventError::Topic(Some(
                    "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/s".into(),
                )),
            ),
            (
                "a topic with a climbing segment",
                r#"{"topic": "/subscriptions/sub/..",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                EventError::Topic(Some("/subscriptions/sub/..".into())),
            ),
            (
                "a subject in another subscription",
                r#"{"topic": "/subscriptions/attacker",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                EventError::Outside {
                    topic: "/subscriptions/attacker".into(),
                    subject: web.into(),
                },
            ),
            (
                "a subject in another resource group of the subscription",
                r#"{"topic": "/subscriptions/sub/resourceGroups/sandbox",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceDeleteSuccess"}"#,
                EventError::Outside {
                    topic: "/subscriptions/sub/resourceGroups/sandbox".into(),
                    subject: web.into(),
                },
            ),
            (
                "a subject above the topic's resource group",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                EventError::Outside {
                    topic: "/subscriptions/sub/resourceGroups/rg".into(),
                    subject: "/subscriptions/sub".into(),
                },
            ),
            (
                "a subject and resourceUri that differ",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess",
                    "data": {"resourceUri": "/subscriptions/sub/resourceGroups/other/providers/Microsoft.Compute/virtualMachineScaleSets/web"}}"#,
                EventError::Subject {
                    subject: web.into(),
                    resource_uri: "/subscriptions/sub/resourceGroups/other/providers/Microsoft.Compute/virtualMachineScaleSets/web".into(),
                },
            ),
            (
                "no subject at all",
                r#"{"topic": "/subscriptions/sub", "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                EventError::NoSubject,
            ),
            (
                "a subject climbing out of the topic's resource group",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourceGroups/rg/../other/providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                EventError::Path(
                    "/subscriptions/sub/resourceGroups/rg/../other/providers/Microsoft.Compute/virtualMachineScaleSets/web".into(),
                ),
            ),
            (
                "a `.` segment",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/./virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                EventError::Path(
                    "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/./virtualMachineScaleSets/web".into(),
                ),
            ),
            (
                "an empty segment",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourceGroups/rg//providers/Microsoft.Compute/virtualMachineScaleSets/web",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                EventError::Path(
                    "/subscriptions/sub/resourceGroups/rg//providers/Microsoft.Compute/virtualMachineScaleSets/web".into(),
                ),
            ),
            (
                "a percent-encoded slash",
                r#"{"topic": "/subscriptions/sub/resourceGroups/rg",
                    "subject": "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web%2F..%2Fapi",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                EventError::Path(
                    "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web%2F..%2Fapi".into(),
                ),
            ),
            (
                "not an ARM id",
                r#"{"topic": "/subscriptions/sub",
                    "subject": "subscriptions/sub/resourceGroups/rg",
                    "eventType": "Microsoft.Resources.ResourceWriteSuccess"}"#,
                EventError::Path("subscriptions/sub/resourceGroups/rg".into()),
            ),
        ];
        let known = [known("rg", "web", OrchestrationMode::Uniform)];
        for (what, json, want) in cases {
            assert_eq!(outcome(json, &known).as_ref(), Err(want), "{what}");
        }
    }

    #[test]
    fn the_reference_events_pass_the_topic_check() {
        // source: /work/shared/reference/azure/eventgrid-resource-*.json: the
        // topic says `resourceGroups`, the write's subject `resourcegroups`.
        for sample in [
            include_str!("../tests/fixtures/eventgrid-resource-write-success.json"),
            include_str!("../tests/fixtures/eventgrid-resource-delete-success.json"),
        ] {
            let events = decode_message(sample).unwrap();
            assert_eq!(
                vet(&events[0]).map(|id| id.map(|id| id.split('/').nth(7))),
                Ok(Some(Some("storageAccounts")))
            );
        }
    }
}
