//! The optional event feed: Compute Engine audit-log entries, routed by a
//! Cloud Logging sink into a Pub/Sub topic, pulled from its subscription.
//!
//! A message becomes a [`GroupEvent`] for each group it concerns; its Pub/Sub
//! ack is sent only after every one of those events was acknowledged by the
//! core. Malformed messages and messages that concern no group meshmirror
//! reads are acknowledged and dropped at once. Events are hints: the core
//! re-reads the group, and polling stays the safety net.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream;
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::subscriber::MessageStream;
use google_cloud_pubsub::subscriber::handler::Handler;
use meshmirror_provider::{
    Ack, BoxEventStream, GcpLocation, GroupEvent, GroupEventKind, GroupRef, Instance,
};
use serde_json::Value;

use crate::convert::{region_of, segment_after};
use crate::provider::{Auth, OutcomeSink};

/// Where the feed pulls from.
#[derive(Clone, Debug)]
pub struct PubSubConfig {
    /// `projects/P/subscriptions/S`.
    pub subscription: String,
    /// The Pub/Sub endpoint; `None` is `https://pubsub.googleapis.com`.
    pub endpoint: Option<String>,
    pub auth: Auth,
}

/// What became of a message the feed did not pass on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// Not an audit-log entry of an instance or group: acknowledged, dropped.
    Malformed,
    /// Well formed, but about no group meshmirror reads: acknowledged.
    Unmatched,
}

/// The groups the provider has read, and their members' ids: how a delete
/// entry, which does not name its group, finds it.
#[derive(Debug, Default)]
pub struct Known {
    inner: Mutex<KnownInner>,
}

#[derive(Debug, Default)]
struct KnownInner {
    group_of: HashMap<String, GroupRef>,
    members: HashMap<GroupRef, Vec<String>>,
}

impl Known {
    /// Replaces what is known of `group` with its current members.
    pub fn record(&self, group: &GroupRef, members: &[Instance]) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let ids: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        if let Some(old) = inner.members.insert(group.clone(), ids.clone()) {
            for id in old {
                if inner.group_of.get(&id) == Some(group) {
                    inner.group_of.remove(&id);
                }
            }
        }
        for id in ids {
            inner.group_of.insert(id, group.clone());
        }
    }

    fn group_of(&self, instance_id: &str) -> Option<GroupRef> {
        self.inner.lock().ok()?.group_of.get(instance_id).cloned()
    }

    /// Known groups of `project` whose zone or region holds `zone`.
    fn covering(&self, project: &str, zone: &str) -> Vec<GroupRef> {
        let Ok(inner) = self.inner.lock() else {
            return Vec::new();
        };
        let mut groups: Vec<GroupRef> = inner
            .members
            .keys()
            .filter(|g| match g {
                GroupRef::Gcp {
                    project: p,
                    location,
                    ..
                } => {
                    p == project
                        && match location {
                            GcpLocation::Zone(z) => z == zone,
                            GcpLocation::Region(r) => r == region_of(zone),
                        }
                }
                _ => false,
            })
            .cloned()
            .collect();
        groups.sort();
        groups
    }
}

/// What an audit-log entry says, as far as meshmirror cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Instance {
        project: String,
        zone: String,
        instance_id: Option<String>,
        verb: Verb,
        /// The group named by a `MEMBER_OF` link (MIG-made inserts carry one).
        linked: Option<GroupRef>,
        /// Made by a managed instance group (its service agent or user agent).
        by_group: bool,
        /// The operation's first entry (the change begins) and not its last.
        first_only: bool,
    },
    /// A call on the group itself (resize, deleteInstances, ...).
    Group(GroupRef),
    /// Another method: nothing to do.
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Insert,
    Delete,
}

/// Reads a Cloud Audit Logs `LogEntry` as JSON.
pub fn parse(data: &[u8]) -> Result<Entry, String> {
    let v: Value = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    let payload = v
        .get("protoPayload")
        .filter(|p| p.is_object())
        .ok_or("no protoPayload: not an audit-log entry")?;
    let method = str_at(payload, &["methodName"]).ok_or("no protoPayload.methodName")?;
    let resource = str_at(payload, &["resourceName"]).ok_or("no protoPayload.resourceName")?;
    let label = |key: &str| str_at(&v, &["resource", "labels", key]).map(str::to_string);
    let project = label("project_id")
        .or_else(|| segment_after(resource, "projects").map(str::to_string))
        .ok_or("no project")?;

    if method.contains("nstanceGroupManagers.") {
        let manager = segment_after(resource, "instanceGroupManagers")
            .ok_or("a group method without a group in resourceName")?
            .to_string();
        let location = match (
            segment_after(resource, "zones"),
            segment_after(resource, "regions"),
        ) {
            (Some(zone), _) => GcpLocation::Zone(zone.into()),
            (None, Some(region)) => GcpLocation::Region(region.into()),
            (None, None) => return Err("a group without zone or region".into()),
        };
        return Ok(Entry::Group(GroupRef::Gcp {
            project,
            location,
            manager,
        }));
    }
    let verb = if method.ends_with("compute.instances.insert") {
        Verb::Insert
    } else if method.ends_with("compute.instances.delete") {
        Verb::Delete
    } else {
        return Ok(Entry::Other);
    };
    let zone = label("zone")
        .or_else(|| segment_after(resource, "zones").map(str::to_string))
        .ok_or("an instance entry without a zone")?;
    let linked = payload
        .pointer("/request/links")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|l| str_at(l, &["type"]) == Some("MEMBER_OF"))
        .find_map(|l| member_of(str_at(l, &["source"])?, &project));
    let principal = str_at(payload, &["authenticationInfo", "principalEmail"]).unwrap_or("");
    let agent = str_at(payload, &["requestMetadata", "callerSuppliedUserAgent"]).unwrap_or("");
    let user = str_at(payload, &["response", "user"]).unwrap_or("");
    let by_group = linked.is_some()
        || agent.contains("Managed Instance Group")
        || principal.ends_with("@cloudservices.gserviceaccount.com")
        || user.ends_with("@cloudservices.gserviceaccount.com");
    let first = v.pointer("/operation/first").and_then(Value::as_bool) == Some(true);
    let last = v.pointer("/operation/last").and_then(Value::as_bool) == Some(true);
    Ok(Entry::Instance {
        project,
        zone,
        instance_id: label("instance_id"),
        verb,
        linked,
        by_group,
        first_only: first && !last,
    })
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(v, |v, key| v.get(key))
        .and_then(Value::as_str)
}

/// `projects/111/locations/us-central1-a/instanceGroupManagers/web@3579…`:
/// the link names the project by number, so the entry's project id is used.
fn member_of(source: &str, project: &str) -> Option<GroupRef> {
    let location = segment_after(source, "locations")?;
    let manager = segment_after(source, "instanceGroupManagers")?;
    let manager = manager.split_once('@').map_or(manager, |(name, _)| name);
    // Zones end in a letter suffix (`-a`); regions in a number (`central1`).
    let is_zone = location
        .rsplit_once('-')
        .is_some_and(|(_, s)| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase()));
    Some(GroupRef::Gcp {
        project: project.into(),
        location: if is_zone {
            GcpLocation::Zone(location.into())
        } else {
            GcpLocation::Region(location.into())
        },
        manager: manager.into(),
    })
}

/// The groups an entry concerns, with what happened to each.
pub fn resolve(entry: &Entry, known: &Known) -> Vec<(GroupRef, GroupEventKind)> {
    match entry {
        Entry::Other => Vec::new(),
        Entry::Group(group) => vec![(group.clone(), GroupEventKind::Changed)],
        Entry::Instance {
            project,
            zone,
            instance_id,
            verb,
            linked,
            by_group,
            first_only,
        } => {
            let kind = |id: &str| match verb {
                Verb::Insert => GroupEventKind::Launched {
                    instance_id: id.into(),
                },
                Verb::Delete if *first_only => GroupEventKind::Terminating {
                    instance_id: id.into(),
                },
                Verb::Delete => GroupEventKind::Terminated {
                    instance_id: id.into(),
                },
            };
            let id = instance_id.as_deref();
            if let Some(group) = id.and_then(|id| known.group_of(id)) {
                return vec![(group, kind(id.unwrap_or_default()))];
            }
            if let Some(group) = linked {
                return vec![(group.clone(), id.map_or(GroupEventKind::Changed, kind))];
            }
            if *by_group {
                // A group's own change that names no group: each group read
                // here that could hold the instance takes a look.
                return known
                    .covering(project, zone)
                    .into_iter()
                    .map(|g| (g, GroupEventKind::Changed))
                    .collect();
            }
            Vec::new()
        }
    }
}

/// The events of one message, sharing its Pub/Sub ack: it is sent when every
/// event was acknowledged; if any is dropped unacknowledged the message is
/// left to be redelivered.
fn events_of(targets: Vec<(GroupRef, GroupEventKind)>, handler: Handler) -> Vec<GroupEvent> {
    let mut receivers = Vec::with_capacity(targets.len());
    let events = targets
        .into_iter()
        .map(|(group, kind)| {
            let (ack, rx) = Ack::new();
            receivers.push(rx);
            GroupEvent { group, kind, ack }
        })
        .collect();
    tokio::spawn(async move {
        let acked = futures::future::join_all(receivers).await;
        if acked.iter().all(Result::is_ok) {
            handler.ack();
        } else {
            handler.nack();
        }
    });
    events
}

struct Feed {
    config: PubSubConfig,
    known: Arc<Known>,
    sink: Option<OutcomeSink>,
    client: Option<Subscriber>,
    stream: Option<MessageStream>,
    failures: u32,
}

impl Feed {
    async fn backoff(&mut self) {
        self.failures = (self.failures + 1).min(6);
        tokio::time::sleep(Duration::from_millis(500) * (1 << self.failures)).await;
    }

    fn report(&self, outcome: EventOutcome) {
        if let Some(sink) = &self.sink {
            sink(outcome);
        }
    }

    /// The next message's events; reconnects after errors, forever.
    async fn next_events(&mut self) -> Vec<GroupEvent> {
        loop {
            if self.client.is_none() {
                let mut builder = Subscriber::builder();
                if let Some(endpoint) = &self.config.endpoint {
                    builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
                }
                if self.config.auth == Auth::Anonymous {
                    builder = builder.with_credentials(
                        google_cloud_auth::credentials::anonymous::Builder::new().build(),
                    );
                }
                match builder.build().await {
                    Ok(client) => self.client = Some(client),
                    Err(error) => {
                        tracing::warn!(%error, "gcp pubsub client; retrying");
                        self.backoff().await;
                        continue;
                    }
                }
            }
            if self.stream.is_none()
                && let Some(client) = &self.client
            {
                self.stream = Some(client.subscribe(&self.config.subscription).build());
            }
            let Some(stream) = self.stream.as_mut() else {
                continue;
            };
            match stream.next().await {
                Some(Ok((message, handler))) => {
                    self.failures = 0;
                    match parse(&message.data) {
                        Err(why) => {
                            tracing::warn!(message = %message.message_id, %why,
                                "malformed audit-log message; acknowledged and dropped");
                            self.report(EventOutcome::Malformed);
                            handler.ack();
                        }
                        Ok(entry) => {
                            let targets = resolve(&entry, &self.known);
                            if targets.is_empty() {
                                tracing::debug!(message = %message.message_id,
                                    "audit-log message names no group read here; acknowledged");
                                self.report(EventOutcome::Unmatched);
                                handler.ack();
                            } else {
                                return events_of(targets, handler);
                            }
                        }
                    }
                }
                Some(Err(error)) => {
                    tracing::warn!(%error, subscription = %self.config.subscription,
                        "gcp pubsub pull failed; reconnecting");
                    self.stream = None;
                    self.backoff().await;
                }
                None => {
                    self.stream = None;
                    self.backoff().await;
                }
            }
        }
    }
}

/// The feed as the core consumes it.
pub(crate) fn feed(
    config: PubSubConfig,
    known: Arc<Known>,
    sink: Option<OutcomeSink>,
) -> BoxEventStream {
    let feed = Feed {
        config,
        known,
        sink,
        client: None,
        stream: None,
        failures: 0,
    };
    stream::unfold(feed, |mut feed| async move {
        let events = feed.next_events().await;
        Some((stream::iter(events), feed))
    })
    .flatten()
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn fixture(name: &str) -> String {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap();
        text.split_once('\n').unwrap().1.to_string()
    }

    fn zonal(project: &str, zone: &str, manager: &str) -> GroupRef {
        GroupRef::Gcp {
            project: project.into(),
            location: GcpLocation::Zone(zone.into()),
            manager: manager.into(),
        }
    }

    #[test]
    fn a_mig_insert_names_its_group_by_its_member_of_link() {
        let entry = parse(fixture("audit-log-instances-insert-by-mig.json").as_bytes()).unwrap();
        let group = zonal("project-1", "us-central1-a", "instance-group-1");
        assert_eq!(
            entry,
            Entry::Instance {
                project: "project-1".into(),
                zone: "us-central1-a".into(),
                instance_id: Some("11111111631960822".into()),
                verb: Verb::Insert,
                linked: Some(group.clone()),
                by_group: true,
                first_only: true,
            }
        );
        assert_eq!(
            resolve(&entry, &Known::default()),
            vec![(
                group,
                GroupEventKind::Launched {
                    instance_id: "11111111631960822".into()
                }
            )]
        );
    }

    #[test]
    fn a_delete_finds_its_group_by_the_members_read_before() {
        let entry = parse(fixture("audit-log-instances-delete.json").as_bytes()).unwrap();
        let known = Known::default();
        assert_eq!(resolve(&entry, &known), vec![]);
        let group = zonal("project-1", "us-central1-a", "web");
        known.record(
            &group,
            &[Instance::running("3771111960822", Ipv4Addr::LOCALHOST)],
        );
        assert_eq!(
            resolve(&entry, &known),
            vec![(
                group.clone(),
                GroupEventKind::Terminating {
                    instance_id: "3771111960822".into()
                }
            )]
        );
        // Once the group is read without it, the instance is forgotten.
        known.record(&group, &[]);
        assert_eq!(resolve(&entry, &known), vec![]);
    }

    #[test]
    fn an_unlinked_mig_insert_wakes_the_groups_that_could_hold_it() {
        let entry =
            parse(fixture("audit-log-instances-insert-mig-useragent.json").as_bytes()).unwrap();
        let known = Known::default();
        let regional = GroupRef::Gcp {
            project: "project-1".into(),
            location: GcpLocation::Region("us-central1".into()),
            manager: "api".into(),
        };
        let zonal_b = zonal("project-1", "us-central1-b", "web");
        known.record(&regional, &[]);
        known.record(&zonal_b, &[]);
        known.record(&zonal("project-1", "us-central1-a", "other"), &[]);
        known.record(&zonal("project-2", "us-central1-b", "web"), &[]);
        let got: Vec<GroupRef> = resolve(&entry, &known)
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        assert_eq!(got, vec![zonal_b, regional]);
    }

    #[test]
    fn group_calls_and_regional_links() {
        let entry = parse(
            br#"{"protoPayload": {"methodName": "v1.compute.regionInstanceGroupManagers.resize",
                 "resourceName": "projects/p/regions/europe-west1/instanceGroupManagers/api"}}"#,
        )
        .unwrap();
        assert_eq!(
            entry,
            Entry::Group(GroupRef::Gcp {
                project: "p".into(),
                location: GcpLocation::Region("europe-west1".into()),
                manager: "api".into(),
            })
        );
        assert_eq!(
            member_of(
                "projects/1/locations/europe-west1/instanceGroupManagers/api@42",
                "p"
            ),
            Some(GroupRef::Gcp {
                project: "p".into(),
                location: GcpLocation::Region("europe-west1".into()),
                manager: "api".into(),
            })
        );
    }

    #[test]
    fn malformed_and_unrelated_messages() {
        assert!(parse(b"not json").is_err());
        assert!(parse(b"{}").is_err());
        assert!(parse(br#"{"protoPayload": {"methodName": "x"}}"#).is_err());
        let other = parse(
            br#"{"protoPayload": {"methodName": "v1.compute.disks.insert",
                 "resourceName": "projects/p/zones/z-a/disks/d"}}"#,
        )
        .unwrap();
        assert_eq!(other, Entry::Other);
        assert_eq!(resolve(&other, &Known::default()), vec![]);
    }
}
