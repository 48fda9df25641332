//! The optional event feed: Compute Engine audit-log entries, routed by a
//! Cloud Logging sink into a Pub/Sub topic, pulled from its subscription.
//!
//! A message becomes a [`GroupEvent`] for each group it concerns; its Pub/Sub
//! ack is sent only after every one of those events was acknowledged by the
//! core. Malformed messages and messages that concern no group meshmirror
//! reads are acknowledged and dropped at once. Only allow-listed Compute
//! Engine methods, from `compute.googleapis.com`, in the audit log of the
//! entry's own project, and of a project a read group belongs to, are acted
//! on: whoever may publish to the topic cannot make meshmirror act on
//! another project. Events are hints: the core re-reads the group, and
//! polling stays the safety net.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use futures::stream;
use google_cloud_pubsub::client::Subscriber;
use google_cloud_pubsub::subscriber::MessageStream;
use google_cloud_pubsub::subscriber::handler::Handler;
use meshmirror_provider::{
    Ack, BoxEventStream, FeedOutcome, GcpLocation, GroupEvent, GroupEventKind, GroupRef, Instance,
    Observer, Reconnect,
};
use serde_json::Value;

use crate::convert::{region_of, segment_after};
use crate::provider::Auth;

/// Where the feed pulls from.
#[derive(Clone, Debug)]
pub struct PubSubConfig {
    /// `projects/P/subscriptions/S`.
    pub subscription: String,
    /// The Pub/Sub endpoint; `None` is `https://pubsub.googleapis.com`.
    pub endpoint: Option<String>,
    pub auth: Auth,
}

/// Waits between failed connects or pulls: full jitter under 1s, 2s, 4s
/// ... 32s.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(32);

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

    /// Some of `group`'s members, read by id: they are known as its members,
    /// and no other member is forgotten (the next whole read settles who
    /// left).
    pub fn record_some(&self, group: &GroupRef, members: &[Instance]) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let known = inner.members.entry(group.clone()).or_default();
        for m in members {
            if !known.contains(&m.id) {
                known.push(m.id.clone());
            }
        }
        for m in members {
            inner.group_of.insert(m.id.clone(), group.clone());
        }
    }

    fn group_of(&self, instance_id: &str) -> Option<GroupRef> {
        self.inner.lock().ok()?.group_of.get(instance_id).cloned()
    }

    /// Whether a group of `project` has been read: entries of other projects
    /// concern no mirror, whatever they say.
    fn has_project(&self, project: &str) -> bool {
        self.inner.lock().is_ok_and(|inner| {
            inner
                .members
                .keys()
                .any(|g| matches!(g, GroupRef::Gcp { project: p, .. } if p == project))
        })
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
    /// A method meshmirror does not act on: acknowledged, nothing to do.
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Insert,
    Delete,
    /// Stopped, suspended, preempted or crashed: it stops serving.
    Stop,
    /// Started or resumed: it may serve again.
    Start,
}

/// Why a message is not an audit-log entry meshmirror can act on. Each one is
/// acknowledged and counted as malformed: redelivery would not change it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditEntryError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("no protoPayload: not an audit-log entry")]
    NotAuditLog,
    #[error("no {0}")]
    Missing(&'static str),
    /// A Compute Engine method from another service: anyone who may publish
    /// to the topic could forge it.
    #[error("{method} must come from compute.googleapis.com, not {service:?}")]
    Service {
        method: String,
        service: Option<String>,
    },
    /// Not the audit log this method is written to, or another project's.
    #[error("{method} belongs in {expected}, not {log_name}")]
    LogName {
        method: String,
        expected: String,
        log_name: String,
    },
    #[error("{0}")]
    Shape(&'static str),
}

const COMPUTE: &str = "compute.googleapis.com";

/// Group methods that change, or may change, which instances a group has.
/// (`setInstanceTemplate`, `setTargetPools`, per-instance configs and reads
/// change no member by themselves.)
const GROUP_METHODS: &[&str] = &[
    "insert",
    "delete",
    "patch",
    "update",
    "resize",
    "resizeAdvanced",
    "createInstances",
    "deleteInstances",
    "abandonInstances",
    "recreateInstances",
    "applyUpdatesToInstances",
    "startInstances",
    "stopInstances",
    "suspendInstances",
    "resumeInstances",
];

/// What a Compute Engine method is, for the methods meshmirror acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// A call on a group; `regional` for `regionInstanceGroupManagers`.
    Group { regional: bool },
    /// An API call on an instance, logged in the Admin Activity log.
    Call(Verb),
    /// A system event on an instance, logged in the System Event log.
    System(Verb),
}

/// The allow-list. API calls are named with the API version they came
/// through (`v1.`, `beta.`, or none); system events never carry one.
fn method(name: &str) -> Option<Method> {
    match name {
        "compute.instances.preempted"
        | "compute.instances.guestTerminate"
        | "compute.instances.terminateOnHostMaintenance"
        | "compute.instances.hostError" => return Some(Method::System(Verb::Stop)),
        "compute.instances.automaticRestart" => return Some(Method::System(Verb::Start)),
        _ => {}
    }
    let call = name
        .strip_prefix("v1.")
        .or_else(|| name.strip_prefix("beta."))
        .unwrap_or(name);
    for (prefix, regional) in [
        ("compute.instanceGroupManagers.", false),
        ("compute.regionInstanceGroupManagers.", true),
    ] {
        if let Some(m) = call.strip_prefix(prefix) {
            return GROUP_METHODS
                .contains(&m)
                .then_some(Method::Group { regional });
        }
    }
    let verb = match call.strip_prefix("compute.instances.")? {
        "insert" => Verb::Insert,
        "delete" => Verb::Delete,
        "stop" | "suspend" => Verb::Stop,
        "start" | "startWithEncryptionKey" | "resume" => Verb::Start,
        _ => return None,
    };
    Some(Method::Call(verb))
}

/// Reads a Cloud Audit Logs `LogEntry` as JSON. An allow-listed method must
/// come from Compute Engine and sit in its project's audit log; any other
/// method is [`Entry::Other`].
pub fn parse(data: &[u8]) -> Result<Entry, AuditEntryError> {
    use AuditEntryError::{Missing, Shape};
    let v: Value =
        serde_json::from_slice(data).map_err(|e| AuditEntryError::NotJson(e.to_string()))?;
    let payload = v
        .get("protoPayload")
        .filter(|p| p.is_object())
        .ok_or(AuditEntryError::NotAuditLog)?;
    let method_name = str_at(payload, &["methodName"]).ok_or(Missing("protoPayload.methodName"))?;
    let Some(method) = method(method_name) else {
        return Ok(Entry::Other);
    };
    let service = str_at(payload, &["serviceName"]);
    if service != Some(COMPUTE) {
        return Err(AuditEntryError::Service {
            method: method_name.into(),
            service: service.map(str::to_string),
        });
    }
    let resource =
        str_at(payload, &["resourceName"]).ok_or(Missing("protoPayload.resourceName"))?;
    let label = |key: &str| str_at(&v, &["resource", "labels", key]).map(str::to_string);
    let project = label("project_id")
        .or_else(|| segment_after(resource, "projects").map(str::to_string))
        .ok_or(Missing("project"))?;
    if let Some(log_name) = str_at(&v, &["logName"]) {
        let log = if matches!(method, Method::System(_)) {
            "system_event"
        } else {
            "activity"
        };
        let expected = format!("projects/{project}/logs/cloudaudit.googleapis.com%2F{log}");
        if log_name != expected {
            return Err(AuditEntryError::LogName {
                method: method_name.into(),
                expected,
                log_name: log_name.into(),
            });
        }
    }

    let verb = match method {
        Method::Group { regional } => {
            let manager = segment_after(resource, "instanceGroupManagers")
                .ok_or(Shape("a group method without a group in resourceName"))?
                .to_string();
            let location = match (
                regional,
                segment_after(resource, "zones"),
                segment_after(resource, "regions"),
            ) {
                (false, Some(zone), None) => GcpLocation::Zone(zone.into()),
                (true, None, Some(region)) => GcpLocation::Region(region.into()),
                _ => {
                    return Err(Shape(
                        "a zonal group method needs zones/ in resourceName, a regional one regions/",
                    ));
                }
            };
            return Ok(Entry::Group(GroupRef::Gcp {
                project,
                location,
                manager,
            }));
        }
        Method::Call(verb) | Method::System(verb) => verb,
    };
    if segment_after(resource, "instances").is_none() {
        return Err(Shape(
            "an instance method without an instance in resourceName",
        ));
    }
    let zone = label("zone")
        .or_else(|| segment_after(resource, "zones").map(str::to_string))
        .ok_or(Shape("an instance entry without a zone"))?;
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

/// The groups an entry concerns, with what happened to each. Only entries of
/// a project some group read here belongs to concern any.
pub fn resolve(entry: &Entry, known: &Known) -> Vec<(GroupRef, GroupEventKind)> {
    match entry {
        Entry::Other => Vec::new(),
        Entry::Group(group @ GroupRef::Gcp { project, .. }) if known.has_project(project) => {
            vec![(group.clone(), GroupEventKind::Changed)]
        }
        Entry::Group(_) => Vec::new(),
        Entry::Instance { project, .. } if !known.has_project(project) => Vec::new(),
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
                Verb::Stop => GroupEventKind::Interrupted {
                    instance_id: id.into(),
                },
                Verb::Start => GroupEventKind::Changed,
            };
            let id = instance_id.as_deref();
            // The member's group, if it is of the entry's own project.
            let holder = id
                .and_then(|id| known.group_of(id))
                .filter(|g| matches!(g, GroupRef::Gcp { project: p, .. } if p == project));
            if let Some(group) = holder {
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
    observer: Arc<dyn Observer>,
    client: Option<Subscriber>,
    stream: Option<MessageStream>,
    backoff: Reconnect,
}

impl Feed {
    async fn backoff(&mut self) {
        let wait = self.backoff.next_delay();
        tracing::debug!(?wait, failures = self.backoff.failures(),
            subscription = %self.config.subscription, "gcp pubsub feed waits before reconnecting");
        tokio::time::sleep(wait).await;
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
                    self.backoff.succeeded();
                    match parse(&message.data) {
                        Err(error) => {
                            tracing::warn!(message = %message.message_id, %error,
                                "malformed audit-log message; acknowledged and dropped");
                            self.observer.feed_message(FeedOutcome::Malformed);
                            handler.ack();
                        }
                        Ok(entry) => {
                            let targets = resolve(&entry, &self.known);
                            if targets.is_empty() {
                                tracing::debug!(message = %message.message_id,
                                    "audit-log message names no group read here; acknowledged");
                                self.observer.feed_message(FeedOutcome::Unmatched);
                                handler.ack();
                            } else {
                                self.observer.feed_message(FeedOutcome::Event);
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
    observer: Arc<dyn Observer>,
) -> BoxEventStream {
    let feed = Feed {
        config,
        known,
        observer,
        client: None,
        stream: None,
        backoff: Reconnect::new(BACKOFF_BASE, BACKOFF_MAX),
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

    /// The groups a message concerns, with what happened to each.
    type Targets = Vec<(GroupRef, GroupEventKind)>;

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/{name}",
            std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR")
        );
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
        // No group of project-1 read yet: the entry concerns no mirror.
        let known = Known::default();
        assert_eq!(resolve(&entry, &known), vec![]);
        known.record(&zonal("project-1", "europe-west1-b", "other"), &[]);
        assert_eq!(
            resolve(&entry, &known),
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
            br#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                 "methodName": "v1.compute.regionInstanceGroupManagers.resize",
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
    fn members_read_by_id_join_the_known_ones() {
        let known = Known::default();
        let web = zonal("project-1", "us-central1-a", "web");
        let vm = |id: &str| Instance::running(id, Ipv4Addr::LOCALHOST);
        known.record(&web, &[vm("1"), vm("2")]);
        known.record_some(&web, &[vm("3"), vm("2")]);
        for id in ["1", "2", "3"] {
            assert_eq!(known.group_of(id), Some(web.clone()), "{id}");
        }
        // Read by id before any whole read: the project becomes known too.
        let other = zonal("project-2", "us-central1-a", "api");
        known.record_some(&other, &[vm("9")]);
        assert!(known.has_project("project-2"));
        // The next whole read settles who left.
        known.record(&web, &[vm("3")]);
        assert_eq!(known.group_of("1"), None);
        assert_eq!(known.group_of("2"), None);
        assert_eq!(known.group_of("3"), Some(web));
    }

    /// A project with a zonal group (member 42) and a regional one read.
    fn known() -> Known {
        let known = Known::default();
        known.record(
            &zonal("project-1", "us-central1-a", "web"),
            &[Instance::running("42", Ipv4Addr::LOCALHOST)],
        );
        known.record(
            &GroupRef::Gcp {
                project: "project-1".into(),
                location: GcpLocation::Region("europe-west1".into()),
                manager: "api".into(),
            },
            &[],
        );
        known
    }

    #[test]
    fn which_entries_are_acted_on() {
        let web = || zonal("project-1", "us-central1-a", "web");
        let api = || GroupRef::Gcp {
            project: "project-1".into(),
            location: GcpLocation::Region("europe-west1".into()),
            manager: "api".into(),
        };
        let id = || "42".to_string();
        let cases: &[(&str, &str, Targets)] = &[
            (
                "a zonal group call in its project's activity log",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instanceGroupManagers.resize",
                    "resourceName": "projects/project-1/zones/us-central1-a/instanceGroupManagers/web"},
                    "resource": {"labels": {"project_id": "project-1"}},
                    "logName": "projects/project-1/logs/cloudaudit.googleapis.com%2Factivity"}"#,
                vec![(web(), GroupEventKind::Changed)],
            ),
            (
                "a beta regional group call (no logName: Pub/Sub copies may lack it)",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "beta.compute.regionInstanceGroupManagers.resizeAdvanced",
                    "resourceName": "projects/project-1/regions/europe-west1/instanceGroupManagers/api"}}"#,
                vec![(api(), GroupEventKind::Changed)],
            ),
            (
                "a member stopped",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instances.stop",
                    "resourceName": "projects/project-1/zones/us-central1-a/instances/web-x1"},
                    "resource": {"labels": {"project_id": "project-1", "zone": "us-central1-a", "instance_id": "42"}},
                    "logName": "projects/project-1/logs/cloudaudit.googleapis.com%2Factivity"}"#,
                vec![(web(), GroupEventKind::Interrupted { instance_id: id() })],
            ),
            (
                "a member preempted: a system event in the system-event log",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "compute.instances.preempted",
                    "resourceName": "projects/project-1/zones/us-central1-a/instances/web-x1"},
                    "resource": {"labels": {"project_id": "project-1", "zone": "us-central1-a", "instance_id": "42"}},
                    "logName": "projects/project-1/logs/cloudaudit.googleapis.com%2Fsystem_event"}"#,
                vec![(web(), GroupEventKind::Interrupted { instance_id: id() })],
            ),
            (
                "a member's delete begins (beta API)",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "beta.compute.instances.delete",
                    "resourceName": "projects/project-1/zones/us-central1-a/instances/web-x1"},
                    "resource": {"labels": {"project_id": "project-1", "zone": "us-central1-a", "instance_id": "42"}},
                    "operation": {"first": true}}"#,
                vec![(web(), GroupEventKind::Terminating { instance_id: id() })],
            ),
            (
                "a member started again",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instances.start",
                    "resourceName": "projects/project-1/zones/us-central1-a/instances/web-x1"},
                    "resource": {"labels": {"project_id": "project-1", "zone": "us-central1-a", "instance_id": "42"}}}"#,
                vec![(web(), GroupEventKind::Changed)],
            ),
            // Ignored: acknowledged, counted, no event.
            (
                "a read of a group is not on the allow-list",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instanceGroupManagers.get",
                    "resourceName": "projects/project-1/zones/us-central1-a/instanceGroupManagers/web"}}"#,
                vec![],
            ),
            (
                "a new template changes no member by itself",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instanceGroupManagers.setInstanceTemplate",
                    "resourceName": "projects/project-1/zones/us-central1-a/instanceGroupManagers/web"}}"#,
                vec![],
            ),
            (
                "another resource",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.disks.insert",
                    "resourceName": "projects/project-1/zones/us-central1-a/disks/d"}}"#,
                vec![],
            ),
            (
                "another service's own method",
                r#"{"protoPayload": {"serviceName": "storage.googleapis.com",
                    "methodName": "storage.objects.create",
                    "resourceName": "projects/_/buckets/b/objects/o"}}"#,
                vec![],
            ),
            (
                "a system event spelled as an API call does not exist",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instances.preempted",
                    "resourceName": "projects/project-1/zones/us-central1-a/instances/web-x1"},
                    "resource": {"labels": {"project_id": "project-1", "zone": "us-central1-a", "instance_id": "42"}}}"#,
                vec![],
            ),
            (
                "a group call in a project no group read here belongs to",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instanceGroupManagers.resize",
                    "resourceName": "projects/project-2/zones/us-central1-a/instanceGroupManagers/web"},
                    "logName": "projects/project-2/logs/cloudaudit.googleapis.com%2Factivity"}"#,
                vec![],
            ),
            (
                "member 42's id in another project's entry",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instances.delete",
                    "resourceName": "projects/project-2/zones/us-central1-a/instances/x"},
                    "resource": {"labels": {"project_id": "project-2", "zone": "us-central1-a", "instance_id": "42"}}}"#,
                vec![],
            ),
            (
                "a delete of an instance no group read here holds",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instances.delete",
                    "resourceName": "projects/project-1/zones/us-central1-a/instances/pet"},
                    "resource": {"labels": {"project_id": "project-1", "zone": "us-central1-a", "instance_id": "7"}}}"#,
                vec![],
            ),
        ];
        let known = known();
        for (what, json, want) in cases {
            let entry = parse(json.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(resolve(&entry, &known), *want, "{what}");
        }
    }

    #[test]
    fn malformed_and_forged_entries_are_refused() {
        use AuditEntryError::*;
        let cases: &[(&str, &str, AuditEntryError)] = &[
            (
                "not JSON",
                "not json",
                NotJson("expected ident at line 1 column 2".into()),
            ),
            ("no protoPayload", "{}", NotAuditLog),
            (
                "no method",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com"}}"#,
                Missing("protoPayload.methodName"),
            ),
            (
                "a Compute method without its service",
                r#"{"protoPayload": {"methodName": "v1.compute.instances.insert",
                    "resourceName": "projects/project-1/zones/us-central1-a/instances/i"}}"#,
                Service {
                    method: "v1.compute.instances.insert".into(),
                    service: None,
                },
            ),
            (
                "a Compute method from another service",
                r#"{"protoPayload": {"serviceName": "pubsub.googleapis.com",
                    "methodName": "v1.compute.instanceGroupManagers.resize",
                    "resourceName": "projects/project-1/zones/us-central1-a/instanceGroupManagers/web"}}"#,
                Service {
                    method: "v1.compute.instanceGroupManagers.resize".into(),
                    service: Some("pubsub.googleapis.com".into()),
                },
            ),
            (
                "no resourceName",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instanceGroupManagers.resize"}}"#,
                Missing("protoPayload.resourceName"),
            ),
            (
                "another project's audit log",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instanceGroupManagers.resize",
                    "resourceName": "projects/project-1/zones/us-central1-a/instanceGroupManagers/web"},
                    "logName": "projects/attacker/logs/cloudaudit.googleapis.com%2Factivity"}"#,
                LogName {
                    method: "v1.compute.instanceGroupManagers.resize".into(),
                    expected: "projects/project-1/logs/cloudaudit.googleapis.com%2Factivity".into(),
                    log_name: "projects/attacker/logs/cloudaudit.googleapis.com%2Factivity".into(),
                },
            ),
            (
                "not an audit log",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instances.delete",
                    "resourceName": "projects/project-1/zones/us-central1-a/instances/i"},
                    "resource": {"labels": {"project_id": "project-1", "zone": "us-central1-a"}},
                    "logName": "projects/project-1/logs/my-app"}"#,
                LogName {
                    method: "v1.compute.instances.delete".into(),
                    expected: "projects/project-1/logs/cloudaudit.googleapis.com%2Factivity".into(),
                    log_name: "projects/project-1/logs/my-app".into(),
                },
            ),
            (
                "a system event in the activity log",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "compute.instances.preempted",
                    "resourceName": "projects/project-1/zones/us-central1-a/instances/i"},
                    "resource": {"labels": {"project_id": "project-1", "zone": "us-central1-a"}},
                    "logName": "projects/project-1/logs/cloudaudit.googleapis.com%2Factivity"}"#,
                LogName {
                    method: "compute.instances.preempted".into(),
                    expected: "projects/project-1/logs/cloudaudit.googleapis.com%2Fsystem_event"
                        .into(),
                    log_name: "projects/project-1/logs/cloudaudit.googleapis.com%2Factivity".into(),
                },
            ),
            (
                "an API call in the data-access log",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instances.insert",
                    "resourceName": "projects/project-1/zones/us-central1-a/instances/i"},
                    "resource": {"labels": {"project_id": "project-1", "zone": "us-central1-a"}},
                    "logName": "projects/project-1/logs/cloudaudit.googleapis.com%2Fdata_access"}"#,
                LogName {
                    method: "v1.compute.instances.insert".into(),
                    expected: "projects/project-1/logs/cloudaudit.googleapis.com%2Factivity".into(),
                    log_name: "projects/project-1/logs/cloudaudit.googleapis.com%2Fdata_access"
                        .into(),
                },
            ),
            (
                "a regional method on a zonal path",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.regionInstanceGroupManagers.resize",
                    "resourceName": "projects/project-1/zones/us-central1-a/instanceGroupManagers/web"}}"#,
                Shape("a zonal group method needs zones/ in resourceName, a regional one regions/"),
            ),
            (
                "an instance method on a disk",
                r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
                    "methodName": "v1.compute.instances.delete",
                    "resourceName": "projects/project-1/zones/us-central1-a/disks/d"}}"#,
                Shape("an instance method without an instance in resourceName"),
            ),
        ];
        for (what, json, want) in cases {
            assert_eq!(parse(json.as_bytes()).as_ref(), Err(want), "{what}");
        }
    }

    #[test]
    fn the_reference_entries_pass_the_source_checks() {
        for name in [
            "audit-log-instances-insert-by-mig.json",
            "audit-log-instances-insert-mig-useragent.json",
            "audit-log-instances-delete.json",
        ] {
            assert!(
                matches!(parse(fixture(name).as_bytes()), Ok(Entry::Instance { .. })),
                "{name}"
            );
        }
        let preempted = parse(fixture("audit-log-instances-preempted.json").as_bytes()).unwrap();
        assert_eq!(
            preempted,
            Entry::Instance {
                project: "project-1".into(),
                zone: "us-central1-a".into(),
                instance_id: Some("2162224123123123213".into()),
                verb: Verb::Stop,
                linked: None,
                by_group: false,
                first_only: false,
            }
        );
        let known = Known::default();
        let group = zonal("project-1", "us-central1-a", "spot");
        known.record(
            &group,
            &[Instance::running(
                "2162224123123123213",
                Ipv4Addr::LOCALHOST,
            )],
        );
        assert_eq!(
            resolve(&preempted, &known),
            vec![(
                group,
                GroupEventKind::Interrupted {
                    instance_id: "2162224123123123213".into()
                }
            )]
        );
    }
}
