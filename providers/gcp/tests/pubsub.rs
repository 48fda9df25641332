//! The event feed against the Pub/Sub emulator of the Cloud CLI, through the
//! official `google-cloud-pubsub` client over plain http.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use google_cloud_auth::credentials::anonymous;
use google_cloud_pubsub::client::{Publisher, SubscriptionAdmin, TopicAdmin};
use google_cloud_pubsub::model::Message;
use meshmirror_gcp::{Auth, GcpConfig, GcpProvider, PubSubConfig};
use meshmirror_provider::{
    FeedOutcome, GcpLocation, GroupEvent, GroupEventKind, GroupRef, Observer, Provider,
};
use meshmirror_testkit::gce::{GceMock, PubSubEmulator, Template};

const TOPIC: &str = "projects/project-1/topics/compute-audit";
const SUBSCRIPTION: &str = "projects/project-1/subscriptions/meshmirror";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/{name}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(path).unwrap();
    text.split_once('\n').unwrap().1.to_string()
}

/// Counts the messages the feed handled without passing them on.
#[derive(Default)]
struct Counts {
    dropped: AtomicUsize,
    malformed: AtomicUsize,
}

impl Observer for Counts {
    fn feed_message(&self, outcome: FeedOutcome) {
        let counter = match outcome {
            FeedOutcome::Malformed => &self.malformed,
            FeedOutcome::Ignored | FeedOutcome::Unmatched => &self.dropped,
            FeedOutcome::Event => return,
        };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

async fn next(events: &mut meshmirror_provider::BoxEventStream) -> GroupEvent {
    tokio::time::timeout(Duration::from_secs(30), events.next())
        .await
        .expect("an event within 30 s")
        .expect("the feed never ends")
}

async fn nothing_within(events: &mut meshmirror_provider::BoxEventStream, wait: Duration) {
    if let Ok(Some(event)) = tokio::time::timeout(wait, events.next()).await {
        panic!("unexpected event {event:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_messages_become_group_events_acked_only_when_handled() {
    let emulator = PubSubEmulator::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let endpoint = emulator.endpoint();
    let topics = TopicAdmin::builder()
        .with_endpoint(&endpoint)
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .unwrap();
    topics.create_topic().set_name(TOPIC).send().await.unwrap();
    let subs = SubscriptionAdmin::builder()
        .with_endpoint(&endpoint)
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .unwrap();
    subs.create_subscription()
        .set_name(SUBSCRIPTION)
        .set_topic(TOPIC)
        .set_ack_deadline_seconds(10)
        .send()
        .await
        .unwrap();
    let publisher = Publisher::builder(TOPIC)
        .with_endpoint(&endpoint)
        .with_credentials(anonymous::Builder::new().build())
        .build()
        .await
        .unwrap();
    let publish = |data: String| {
        let publisher = publisher.clone();
        async move {
            tokio::time::timeout(
                Duration::from_secs(20),
                publisher.publish(Message::new().set_data(data)),
            )
            .await
            .expect("published within 20 s")
            .expect("published");
        }
    };

    // The group the reference insert entry names, in the GCE mock.
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group(
        "project-1",
        "us-central1-a",
        "instance-group-1",
        Template::default(),
    );
    let names = mock.resize(&key, 2);
    let group = GroupRef::Gcp {
        project: "project-1".into(),
        location: GcpLocation::Zone("us-central1-a".into()),
        manager: "instance-group-1".into(),
    };
    let counts = Arc::new(Counts::default());
    let provider = GcpProvider::new(GcpConfig {
        endpoint: Some(mock.endpoint()),
        auth: Auth::Anonymous,
        events: Some(PubSubConfig {
            subscription: SUBSCRIPTION.into(),
            endpoint: Some(endpoint.clone()),
            auth: Auth::Anonymous,
        }),
        ..GcpConfig::default()
    })
    .with_observer(counts.clone());
    let mut events = provider
        .events()
        .expect("a feed when a subscription is set");
    // A pass teaches the provider the group's members (for deletes).
    let members = provider.members(&group).await.unwrap();

    // 1. A MIG-made insert names its group; unacknowledged, it comes back.
    publish(fixture("audit-log-instances-insert-by-mig.json")).await;
    let first = next(&mut events).await;
    assert_eq!(first.group, group);
    assert_eq!(
        first.kind,
        GroupEventKind::Launched {
            instance_id: "11111111631960822".into()
        }
    );
    drop(first);
    let again = next(&mut events).await;
    assert_eq!(again.group, group, "dropped unacknowledged: redelivered");
    again.ack.ack();
    nothing_within(&mut events, Duration::from_secs(12)).await;

    // 2. Malformed messages are counted and acknowledged (never redelivered):
    // not JSON, a Compute method without its service, and a group call forged
    // into another project's audit log.
    publish("this is not an audit log".into()).await;
    publish(r#"{"protoPayload": {"methodName": "v1.compute.instances.insert"}}"#.into()).await;
    publish(
        r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
            "methodName": "v1.compute.instanceGroupManagers.resize",
            "resourceName": "projects/project-1/zones/us-central1-a/instanceGroupManagers/instance-group-1"},
            "logName": "projects/elsewhere/logs/cloudaudit.googleapis.com%2Factivity"}"#
            .into(),
    )
    .await;
    // 3. A delete of a member, which names no group, finds it by the member's id.
    let member_id = members[0].id.clone();
    publish(fixture("audit-log-instances-delete.json").replace("3771111960822", &member_id)).await;
    let delete = next(&mut events).await;
    assert_eq!(delete.group, group);
    assert_eq!(
        delete.kind,
        GroupEventKind::Terminating {
            instance_id: member_id
        }
    );
    delete.ack.ack();
    assert_eq!(counts.malformed.load(Ordering::SeqCst), 3);

    // 4. A delete of an instance no mirrored group holds is acknowledged and dropped.
    publish(fixture("audit-log-instances-delete.json")).await;
    // 5. A group call names its group directly.
    publish(
        r#"{"protoPayload": {"serviceName": "compute.googleapis.com",
            "methodName": "v1.compute.instanceGroupManagers.resize",
            "resourceName": "projects/project-1/zones/us-central1-a/instanceGroupManagers/instance-group-1"},
            "resource": {"labels": {"project_id": "project-1"}}}"#
            .into(),
    )
    .await;
    let resize = next(&mut events).await;
    assert_eq!(resize.group, group);
    assert_eq!(resize.kind, GroupEventKind::Changed);
    resize.ack.ack();
    nothing_within(&mut events, Duration::from_secs(12)).await;
    assert_eq!(counts.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(
        counts.malformed.load(Ordering::SeqCst),
        3,
        "malformed ones were not redelivered"
    );
    assert_eq!(names.len(), 2);
}
