//! Optional push feed: Event Grid resource events delivered to an Azure
//! Storage queue. A message naming a mirrored scale set (or, for Flexible
//! sets, a VM in a resource group holding one) becomes a [`GroupEvent`] whose
//! ack deletes the message; other messages are deleted at once; malformed ones
//! are counted and deleted. Polling stays the safety net.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Transport, Url};
use azure_storage_queue::models::QueueClientReceiveMessagesOptions;
use azure_storage_queue::{QueueClient, QueueClientOptions};
use base64::Engine;
use futures::StreamExt;
use meshmirror_provider::{Ack, BoxEventStream, GroupEvent, GroupEventKind, GroupRef};
use serde::Deserialize;

use crate::arm::AzureObserver;
use crate::models::OrchestrationMode;
use crate::provider::{AzureError, KnownGroups};

/// How long a received message stays invisible while its pass runs.
const VISIBILITY: Duration = Duration::from_secs(300);
const BATCH: i32 = 32;

pub struct QueueConfig {
    pub url: Url,
    pub credential: Arc<dyn TokenCredential>,
    pub transport: Option<Transport>,
    pub poll_interval: Duration,
    pub known: Arc<KnownGroups>,
    pub observer: Arc<dyn AzureObserver>,
}

/// An Event Grid event (Event Grid schema), the fields read here.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventGridEvent {
    #[serde(default)]
    pub id: Option<String>,
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
    /// A scale set, or one of its (Uniform) VMs.
    ScaleSet {
        subscription: &'a str,
        resource_group: &'a str,
        scale_set: &'a str,
        vm: bool,
    },
    /// A plain VM (maybe a Flexible member).
    Vm {
        subscription: &'a str,
        resource_group: &'a str,
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
            vm: is(8, "virtualMachines") && parts.len() > 9,
        });
    }
    if is(6, "virtualMachines") && parts.len() > 7 {
        return Some(Target::Vm {
            subscription,
            resource_group,
        });
    }
    None
}

/// The groups an event is about, with what happened. Empty: not ours.
pub fn resolve(
    event: &EventGridEvent,
    known: &[(GroupRef, OrchestrationMode)],
) -> Vec<(GroupRef, GroupEventKind)> {
    let Some(uri) = event
        .data
        .as_ref()
        .and_then(|d| d.resource_uri.as_deref())
        .or(event.subject.as_deref())
    else {
        return Vec::new();
    };
    let deleted = event.event_type.ends_with("ResourceDeleteSuccess")
        || event
            .data
            .as_ref()
            .and_then(|d| d.operation_name.as_deref())
            .is_some_and(|op| op.ends_with("/delete"));
    let vm_kind = || {
        if deleted {
            GroupEventKind::Terminated {
                instance_id: uri.to_string(),
            }
        } else {
            GroupEventKind::Changed
        }
    };
    let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match target(uri) {
        Some(Target::ScaleSet {
            subscription,
            resource_group,
            scale_set,
            vm,
        }) => {
            // The mirror's own spelling, so the controller's lookup matches.
            let group = known
                .iter()
                .map(|(g, _)| g)
                .find(|g| matches!(g, GroupRef::Azure { subscription_id, resource_group: rg, scale_set: s }
                    if same(subscription_id, subscription) && same(rg, resource_group) && same(s, scale_set)))
                .cloned()
                .unwrap_or_else(|| GroupRef::Azure {
                    subscription_id: subscription.into(),
                    resource_group: resource_group.into(),
                    scale_set: scale_set.into(),
                });
            let kind = if vm {
                vm_kind()
            } else {
                GroupEventKind::Changed
            };
            vec![(group, kind)]
        }
        Some(Target::Vm {
            subscription,
            resource_group,
        }) => known
            .iter()
            .filter(|(g, mode)| {
                *mode == OrchestrationMode::Flexible
                    && matches!(g, GroupRef::Azure { subscription_id, resource_group: rg, .. }
                        if same(subscription_id, subscription) && same(rg, resource_group))
            })
            .map(|(g, _)| (g.clone(), vm_kind()))
            .collect(),
        None => Vec::new(),
    }
}

struct Poller {
    client: Arc<QueueClient>,
    config: QueueConfig,
    ready: VecDeque<GroupEvent>,
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
                Err(err) => {
                    tracing::warn!(message = %id, %err, "malformed event message; deleted");
                    self.config.observer.queue_message("malformed");
                    Self::delete(&self.client, &id, &receipt).await;
                    continue;
                }
            };
            let known = self.config.known.snapshot();
            let targets: Vec<(GroupRef, GroupEventKind)> =
                events.iter().flat_map(|e| resolve(e, &known)).collect();
            if targets.is_empty() {
                tracing::debug!(message = %id, "event names no scale set; deleted");
                self.config.observer.queue_message("ignored");
                Self::delete(&self.client, &id, &receipt).await;
                continue;
            }
            self.config.observer.queue_message("event");
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

/// The event feed of the queue at `config.url`.
pub fn stream(config: QueueConfig) -> Result<BoxEventStream, AzureError> {
    let client = QueueClient::new(
        config.url.clone(),
        Some(config.credential.clone()),
        Some(QueueClientOptions {
            client_options: ClientOptions {
                transport: config.transport.clone(),
                ..ClientOptions::default()
            },
            ..QueueClientOptions::default()
        }),
    )
    .map_err(|e| AzureError::Config(format!("event queue {}: {e}", config.url)))?;
    let poller = Poller {
        client: Arc::new(client),
        config,
        ready: VecDeque::new(),
    };
    Ok(futures::stream::unfold(poller, |mut p| async move {
        let mut failures = 0u32;
        loop {
            if let Some(event) = p.ready.pop_front() {
                return Some((event, p));
            }
            match p.receive().await {
                Ok(true) => failures = 0,
                Ok(false) => tokio::time::sleep(p.config.poll_interval).await,
                Err(err) => {
                    failures = failures.saturating_add(1);
                    let wait = p.config.poll_interval * failures.min(12);
                    tracing::warn!(%err, ?wait, "event queue receive failed");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    })
    .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(rg: &str, set: &str) -> GroupRef {
        GroupRef::Azure {
            subscription_id: "sub".into(),
            resource_group: rg.into(),
            scale_set: set.into(),
        }
    }

    fn event(kind: &str, uri: &str, op: &str) -> EventGridEvent {
        serde_json::from_value(serde_json::json!({
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
        let known = vec![(group("RG", "Web"), OrchestrationMode::Uniform)];
        let e = event(
            "Microsoft.Resources.ResourceDeleteSuccess",
            "/subscriptions/sub/resourcegroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/3",
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/delete",
        );
        let got = resolve(&e, &known);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, group("RG", "Web"));
        assert!(matches!(got[0].1, GroupEventKind::Terminated { .. }));
        // An unknown scale set is still named; the controller drops it.
        let got = resolve(&e, &[]);
        assert_eq!(got[0].0, group("rg", "web"));
    }

    #[test]
    fn flexible_vm_events_go_to_the_flexible_sets_of_its_resource_group() {
        let known = vec![
            (group("rg", "flex"), OrchestrationMode::Flexible),
            (group("rg", "uni"), OrchestrationMode::Uniform),
            (group("other", "flex2"), OrchestrationMode::Flexible),
        ];
        let e = event(
            "Microsoft.Resources.ResourceWriteSuccess",
            "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/flex_a1b2",
            "Microsoft.Compute/virtualMachines/write",
        );
        let got = resolve(&e, &known);
        assert_eq!(got, vec![(group("rg", "flex"), GroupEventKind::Changed)]);
    }

    #[test]
    fn other_resources_are_not_ours() {
        // source: /work/shared/reference/azure/eventgrid-resource-write-success.json (a storage account)
        let sample = include_str!("../tests/fixtures/eventgrid-resource-write-success.json");
        let events = decode_message(sample).unwrap();
        assert!(
            resolve(
                &events[0],
                &[(group("rg", "web"), OrchestrationMode::Flexible)]
            )
            .is_empty()
        );
    }
}
