//! The service with the gcp provider against the test kit's GCE mock (and,
//! for events, the Pub/Sub emulator): passes driven by the test, so each
//! step is checked right after the cloud changed.

#![cfg(feature = "gcp")]
// The ignored benchmark prints its numbers.
#![allow(clippy::print_stdout)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{annotation, condition, label, server};
use kube::Client;
use kube::api::{DynamicObject, PostParams};
use meshmirror::clouds::gcp::{GcpArgs, register};
use meshmirror::cluster::Cluster;
use meshmirror::cluster::kube::KubeCluster;
use meshmirror::cluster::ratelimit::RateLimiter;
use meshmirror::controller::pass::{PassReport, Reconciler};
use meshmirror::core::policy::AllowedGroups;
use meshmirror::crd::ScalingGroupMirror;
use meshmirror::metrics::Metrics;
use meshmirror::providers::Providers;
use meshmirror::workloadentry::{EntryVersion, keys};
use meshmirror_testkit::TestKube;
use meshmirror_testkit::gce::{Fault, GceMock, MigKey, PubSubEmulator, Template, Vm};

/// The kit's API server, the GCE mock, and a reconciler with the gcp
/// provider registered as `meshmirror run` does it.
struct GcpHarness {
    _server: TestKube,
    client: Client,
    mock: GceMock,
    reconciler: Reconciler,
}

impl GcpHarness {
    async fn start() -> GcpHarness {
        let server = server().await;
        let client = server.client();
        let mock = GceMock::start().await.expect("GCE mock starts");
        let metrics = Arc::new(Metrics::new());
        let mut providers = Providers::default();
        let args = GcpArgs {
            gcp_endpoint: Some(mock.endpoint()),
            ..GcpArgs::default()
        };
        register(&mut providers, &args, &metrics).await.unwrap();
        let cluster: Arc<dyn Cluster> = Arc::new(KubeCluster::new(
            server.service_client(None).await,
            EntryVersion::V1,
            None,
            RateLimiter::unlimited(),
            None,
        ));
        let reconciler = Reconciler::new(providers, cluster, metrics, AllowedGroups::allow_all());
        GcpHarness {
            _server: server,
            client,
            mock,
            reconciler,
        }
    }

    async fn mirror(&self, name: &str, location: &str, manager: &str, extra: &str) {
        let yaml = format!(
            "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  provider:\n    gcp:\n      project: proj-1\n      {location}\n      instanceGroupManager: {manager}\n  workloads: [{{name: app, labels: {{app: {name}}}, ports: {{http: 8080}}}}]\n{extra}"
        );
        let mirror: ScalingGroupMirror = serde_yaml::from_str(&yaml).unwrap();
        kube::Api::<ScalingGroupMirror>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &mirror)
            .await
            .unwrap();
    }

    async fn pass(&self, name: &str) -> PassReport {
        let mirror = kube::Api::<ScalingGroupMirror>::namespaced(self.client.clone(), "default")
            .get(name)
            .await
            .unwrap();
        self.reconciler.pass(&mirror).await
    }

    async fn entries(&self, mirror: &str) -> Vec<DynamicObject> {
        let api = kube::Api::<DynamicObject>::namespaced_with(
            self.client.clone(),
            "default",
            &EntryVersion::V1.workload_entries(),
        );
        let mut items: Vec<DynamicObject> = api
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| label(e, keys::MIRROR) == mirror)
            .collect();
        items.sort_by_key(|e| e.metadata.name.clone());
        items
    }

    /// The instance ids the mirror's entries stand for.
    async fn ids(&self, mirror: &str) -> BTreeSet<String> {
        self.entries(mirror)
            .await
            .iter()
            .map(|e| annotation(e, keys::INSTANCE_ID))
            .collect()
    }

    fn ids_of(&self, names: &[String]) -> BTreeSet<String> {
        names
            .iter()
            .map(|n| self.mock.vm(n).unwrap().id.to_string())
            .collect()
    }

    fn live(&self, key: &MigKey) -> Vec<String> {
        self.mock
            .members(key)
            .into_iter()
            .filter(|v| v.action == "NONE" && v.status == "RUNNING")
            .map(|v| v.name)
            .collect()
    }
}

#[tokio::test]
async fn zonal_group_resize_out_and_in() {
    let h = GcpHarness::start().await;
    let key = h
        .mock
        .add_zonal_group("proj-1", "us-central1-a", "web", Template::default());
    h.mock.resize(&key, 2);
    h.mirror("web", "zone: us-central1-a", "web", "").await;
    let report = h.pass("web").await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(h.ids("web").await, h.ids_of(&h.live(&key)));
    let e = &h.entries("web").await[0];
    let vm = h.mock.vm(&h.live(&key)[0]).unwrap();
    assert_eq!(label(e, keys::PROVIDER), "gcp");
    assert_eq!(
        annotation(e, keys::GROUP),
        "projects/proj-1/zones/us-central1-a/instanceGroupManagers/web"
    );
    assert_eq!(e.data["spec"]["locality"], "us-central1/us-central1-a");
    let addresses: BTreeSet<String> = h
        .entries("web")
        .await
        .iter()
        .map(|e| e.data["spec"]["address"].as_str().unwrap().to_string())
        .collect();
    assert!(
        addresses.contains(&vm.network_ip.to_string()),
        "{addresses:?}"
    );

    h.mock.resize(&key, 5);
    assert!(h.pass("web").await.ok());
    assert_eq!(h.ids("web").await.len(), 5);
    assert_eq!(h.ids("web").await, h.ids_of(&h.live(&key)));

    // Scale-in: the surplus turns DELETING and leaves the mesh at once,
    // before the group has removed it.
    let leaving = h.mock.resize(&key, 3);
    assert_eq!(leaving.len(), 2);
    let report = h.pass("web").await;
    assert_eq!(report.deleted, 2, "{report:?}");
    assert_eq!(h.ids("web").await, h.ids_of(&h.live(&key)));
    h.mock.settle();
    let report = h.pass("web").await;
    assert!(
        report.ok() && report.deleted == 0 && report.created == 0,
        "{report:?}"
    );
    assert_eq!(h.ids("web").await.len(), 3);
}

#[tokio::test]
async fn regional_group_resize_out_and_in_across_zones() {
    let h = GcpHarness::start().await;
    let key = h.mock.add_regional_group(
        "proj-1",
        "europe-west1",
        &["europe-west1-b", "europe-west1-c", "europe-west1-d"],
        "api",
        Template::default(),
    );
    h.mock.add_zone("proj-1", "us-east1-b");
    h.mock.resize(&key, 6);
    h.mirror("api", "region: europe-west1", "api", "").await;
    assert!(h.pass("api").await.ok());
    let entries = h.entries("api").await;
    assert_eq!(entries.len(), 6);
    let localities: BTreeSet<String> = entries
        .iter()
        .map(|e| e.data["spec"]["locality"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        localities,
        BTreeSet::from([
            "europe-west1/europe-west1-b".to_string(),
            "europe-west1/europe-west1-c".to_string(),
            "europe-west1/europe-west1-d".to_string(),
        ])
    );
    h.mock.resize(&key, 2);
    assert!(h.pass("api").await.ok());
    assert_eq!(h.ids("api").await, h.ids_of(&h.live(&key)));
    assert_eq!(h.ids("api").await.len(), 2);
    h.mock.resize(&key, 4);
    h.mock.settle();
    assert!(h.pass("api").await.ok());
    assert_eq!(h.ids("api").await, h.ids_of(&h.live(&key)));
    assert_eq!(h.ids("api").await.len(), 4);
}

#[tokio::test]
async fn deleting_leaves_at_once_and_provisioning_waits() {
    let h = GcpHarness::start().await;
    let key = h
        .mock
        .add_zonal_group("proj-1", "us-central1-a", "web", Template::default());
    let names = h.mock.resize(&key, 3);
    h.mock.set_status(&names[2], "PROVISIONING");
    h.mirror("web", "zone: us-central1-a", "web", "").await;
    assert!(h.pass("web").await.ok());
    assert_eq!(
        h.ids("web").await,
        h.ids_of(&names[..2]),
        "PROVISIONING waits"
    );

    h.mock.delete_instances(&[&names[0]]);
    h.mock.set_status(&names[2], "RUNNING");
    let report = h.pass("web").await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(
        h.ids("web").await,
        h.ids_of(&names[1..]),
        "DELETING leaves at once"
    );
}

#[tokio::test]
async fn paging_across_many_pages() {
    let h = GcpHarness::start().await;
    let key = h
        .mock
        .add_zonal_group("proj-1", "us-central1-a", "web", Template::default());
    h.mock.resize(&key, 57);
    h.mock.set_max_page_size(10);
    h.mirror("web", "zone: us-central1-a", "web", "").await;
    assert!(h.pass("web").await.ok());
    assert_eq!(h.ids("web").await.len(), 57);
    assert_eq!(h.ids("web").await, h.ids_of(&h.live(&key)));
    let counts = h.mock.counts();
    assert_eq!(counts["instanceGroupManagers.listManagedInstances"], 6);
    assert_eq!(counts["instances.list"], 6);
}

#[tokio::test]
async fn throttling_deletes_nothing_degrades_and_recovers() {
    let h = GcpHarness::start().await;
    let key = h
        .mock
        .add_zonal_group("proj-1", "us-central1-a", "web", Template::default());
    h.mock.resize(&key, 3);
    h.mirror("web", "zone: us-central1-a", "web", "").await;
    assert!(h.pass("web").await.ok());
    let before = h.ids("web").await;

    // The group shrinks while the API throttles every call of the pass
    // (the retry wrapper tries three times).
    h.mock.resize(&key, 1);
    h.mock.settle();
    h.mock.fail_next(3, Fault::TooManyRequests);
    let report = h.pass("web").await;
    assert!(!report.ok(), "{report:?}");
    assert_eq!(report.deleted, 0);
    assert_eq!(
        h.ids("web").await,
        before,
        "nothing deleted while throttled"
    );
    let status = kube::Api::<ScalingGroupMirror>::namespaced(h.client.clone(), "default")
        .get("web")
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    let degraded = condition(&status, "Degraded").expect("a Degraded condition");
    assert_eq!(degraded.status, "True");
    assert_eq!(degraded.reason, "Throttled");

    // The next pass gets through.
    let report = h.pass("web").await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(h.ids("web").await, h.ids_of(&h.live(&key)));
    let status = kube::Api::<ScalingGroupMirror>::namespaced(h.client.clone(), "default")
        .get("web")
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    assert_eq!(condition(&status, "Degraded").unwrap().status, "False");
    assert_eq!(condition(&status, "Ready").unwrap().status, "True");
}

#[tokio::test]
async fn public_address_ipv6_choice_and_labels_copied() {
    let h = GcpHarness::start().await;
    let template = Template {
        labels: [
            ("team".to_string(), "payments".to_string()),
            ("cost-center".to_string(), "42".to_string()),
        ]
        .into(),
        public_ip: true,
        ipv6: true,
        ..Template::default()
    };
    let key = h
        .mock
        .add_zonal_group("proj-1", "us-central1-a", "web", template);
    let names = h.mock.resize(&key, 2);
    h.mirror(
        "public",
        "zone: us-central1-a",
        "web",
        "  address: PublicIPv4\n  copyTags: [team]\n",
    )
    .await;
    h.mirror("v6", "zone: us-central1-a", "web", "  address: IPv6\n")
        .await;
    assert!(h.pass("public").await.ok());
    assert!(h.pass("v6").await.ok());
    let public: BTreeSet<String> = h
        .entries("public")
        .await
        .iter()
        .map(|e| e.data["spec"]["address"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = names
        .iter()
        .map(|n| h.mock.vm(n).unwrap().nat_ip.unwrap().to_string())
        .collect();
    assert_eq!(public, want);
    for e in h.entries("public").await {
        assert_eq!(e.data["spec"]["labels"]["team"], "payments");
        assert!(e.data["spec"]["labels"].get("cost-center").is_none());
    }
    let v6: BTreeSet<String> = h
        .entries("v6")
        .await
        .iter()
        .map(|e| e.data["spec"]["address"].as_str().unwrap().to_string())
        .collect();
    let want: BTreeSet<String> = names
        .iter()
        .map(|n| h.mock.vm(n).unwrap().ipv6.unwrap().to_string())
        .collect();
    assert_eq!(v6, want);
}

#[tokio::test]
async fn a_missing_group_is_reported_and_nothing_is_written() {
    let h = GcpHarness::start().await;
    h.mirror("ghost", "zone: us-central1-a", "ghost", "").await;
    let report = h.pass("ghost").await;
    assert!(!report.ok());
    assert!(h.entries("ghost").await.is_empty());
    let status = kube::Api::<ScalingGroupMirror>::namespaced(h.client.clone(), "default")
        .get("ghost")
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    assert_eq!(
        condition(&status, "Degraded").unwrap().reason,
        "GroupNotFound"
    );
}

/// The whole controller (`app::run`, as `meshmirror run` wires it) with the
/// Pub/Sub feed: the mirror follows the MIG at once when an audit-log message
/// is published, and not without it (its interval is an hour); the message
/// is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audit_log_message_through_pub_sub_triggers_the_controller_at_once() {
    use std::time::{Duration, Instant};

    use common::{CONVERGE, ControllerTask, Failures};
    use meshmirror::app::RunOptions;
    use meshmirror::clouds::CloudArgs;

    const TOPIC: &str = "projects/project-1/topics/compute-audit";
    const SUBSCRIPTION: &str = "projects/project-1/subscriptions/meshmirror";
    let emulator = PubSubEmulator::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    emulator.create_topic(TOPIC).await.unwrap();
    emulator
        .create_subscription(SUBSCRIPTION, TOPIC, 10)
        .await
        .unwrap();

    let server = server().await;
    let client = server.client();
    let mock = GceMock::start().await.expect("GCE mock starts");
    // The group the reference audit-log entry names.
    let key = mock.add_zonal_group(
        "project-1",
        "us-central1-a",
        "instance-group-1",
        Template::default(),
    );
    mock.resize(&key, 2);
    let opts = RunOptions {
        kube_qps: 0.0,
        clouds: CloudArgs {
            gcp: GcpArgs {
                gcp_endpoint: Some(mock.endpoint()),
                gcp_pubsub_subscription: Some(SUBSCRIPTION.into()),
                gcp_pubsub_endpoint: Some(emulator.endpoint()),
            },
            ..CloudArgs::default()
        },
        allow_all_groups: true,
        ..RunOptions::default()
    };
    let failures = Failures::default();
    let running = ControllerTask::spawn("gcp", server.service_client(None).await, opts, &failures);
    let yaml = "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata:\n  name: web\n  namespace: default\nspec:\n  provider:\n    gcp:\n      project: project-1\n      zone: us-central1-a\n      instanceGroupManager: instance-group-1\n  workloads: [{name: app}]\n  sync: {interval: 1h}\n";
    let mirror: ScalingGroupMirror = serde_yaml::from_str(yaml).unwrap();
    kube::Api::<ScalingGroupMirror>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &mirror)
        .await
        .unwrap();
    let entries = kube::Api::<DynamicObject>::namespaced_with(
        client.clone(),
        "default",
        &EntryVersion::V1.workload_entries(),
    );
    let ids = async || -> BTreeSet<String> {
        entries
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|e| annotation(e, keys::INSTANCE_ID))
            .collect()
    };
    let live = || -> BTreeSet<String> {
        mock.members(&key)
            .into_iter()
            .filter(|v| v.action == "NONE" && v.status == "RUNNING")
            .map(|v| mock.vm(&v.name).unwrap().id.to_string())
            .collect()
    };
    let mirrors = kube::Api::<ScalingGroupMirror>::namespaced(client.clone(), "default");
    let status_entries = async || {
        mirrors
            .get("web")
            .await
            .unwrap()
            .status
            .map_or(0, |s| s.entries)
    };
    // Until `done`, failing at once if the controller ended.
    let wait_until = async |what: &str, done: &dyn Fn(u32, &BTreeSet<String>) -> bool| {
        let started = Instant::now();
        loop {
            running.check();
            if done(status_entries().await, &ids().await) {
                return;
            }
            assert!(started.elapsed() < CONVERGE, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let two = live();
    assert_eq!(two.len(), 2);
    wait_until("the first pass and its status", &|status, have| {
        status == 2 && *have == two
    })
    .await;
    // The passes the first pass's own writes trigger come and go: wait until
    // the group has not been read for a while.
    let started = Instant::now();
    let mut reads = mock.total_calls();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        running.check();
        let now = mock.total_calls();
        if now == reads {
            break;
        }
        reads = now;
        assert!(started.elapsed() < CONVERGE, "the controller never settled");
    }

    // The MIG grows. Without a message, nothing reads it: no pass runs and
    // no entry changes (the interval is an hour), over a wait longer than
    // the shortest interval a mirror may have, so polling would show.
    mock.resize(&key, 3);
    let three = live();
    assert_eq!(three.len(), 3);
    tokio::time::sleep(meshmirror::core::config::MIN_INTERVAL + Duration::from_secs(1)).await;
    running.check();
    assert_eq!(
        mock.total_calls(),
        reads,
        "the group was read without a message: {:?}",
        mock.counts()
    );
    assert_eq!(ids().await, two, "entries changed without a message");

    // Only the audit-log message can tell the controller. It names the new
    // VM (the pass asks the cloud about the instance the message names).
    let new = mock
        .members(&key)
        .into_iter()
        .find(|v| !two.contains(&v.id.to_string()))
        .unwrap();
    let message = launch_message("instance-group-1", &new);
    emulator.publish(TOPIC, &message).await.unwrap();
    wait_until("the message's pass and its status", &|status, have| {
        status == 3 && *have == three
    })
    .await;
    assert!(
        mock.total_calls() > reads,
        "the entries followed without a read"
    );
    // The message is acknowledged after that pass (right after its status
    // write); a moment for the ack to leave the subscriber, then stop it
    // (the run must end Ok).
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.stop().await;
    // Acknowledged: nothing comes back. A message the stopped subscriber had
    // not acknowledged is redelivered at once (its handler nacks when
    // dropped), or at the latest when its 10 s ack deadline runs out.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(12) {
        let back = emulator.pull(SUBSCRIPTION, 10).await.unwrap();
        assert!(
            back.is_empty(),
            "the message was not acknowledged: {} redelivered, the first begins {:?}",
            back.len(),
            back.first()
                .map(|m| m.chars().take(200).collect::<String>())
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    common::check_failures(&failures);
}

/// A reference audit-log entry from the provider's fixtures (their first
/// line names their source).
fn audit_entry(file: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(format!(
        "{}/providers/gcp/tests/fixtures/{file}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    serde_json::from_str(text.split_once('\n').unwrap().1).unwrap()
}

/// Makes an instance entry name `vm`: its project, zone, id and name.
fn name_vm(entry: &mut serde_json::Value, vm: &Vm) {
    use serde_json::json;
    let (project, zone) = (&vm.project, &vm.zone);
    entry["resource"]["labels"] =
        json!({"project_id": project, "zone": zone, "instance_id": vm.id.to_string()});
    entry["logName"] = json!(format!(
        "projects/{project}/logs/cloudaudit.googleapis.com%2Factivity"
    ));
    entry["protoPayload"]["resourceName"] = json!(format!(
        "projects/{project}/zones/{zone}/instances/{}",
        vm.name
    ));
}

/// The reference MIG-made insert, naming `vm` and linking it to `group`.
fn launch_message(group: &str, vm: &Vm) -> String {
    use serde_json::json;
    let mut entry = audit_entry("audit-log-instances-insert-by-mig.json");
    name_vm(&mut entry, vm);
    entry["protoPayload"]["request"]["name"] = json!(vm.name);
    entry["protoPayload"]["request"]["links"][0] = json!({
        "type": "MEMBER_OF",
        "source": format!("projects/111/locations/{}/instanceGroupManagers/{group}@3579973466633327805", vm.zone),
        "target": format!("projects/111/locations/{}/instances/{}", vm.zone, vm.name),
    });
    entry.to_string()
}

/// The reference delete (its operation's first entry), naming `vm`.
fn delete_message(vm: &Vm) -> String {
    let mut entry = audit_entry("audit-log-instances-delete.json");
    name_vm(&mut entry, vm);
    entry.to_string()
}

const EVENT_PROJECT: &str = "project-1";

/// The whole controller (`app::run`, as `meshmirror run` wires it) with the
/// Pub/Sub feed, and a mirror (interval 10m) of a zonal group of
/// `EVENT_PROJECT`, its entries written and its passes settled.
struct EventRig {
    server: TestKube,
    mock: GceMock,
    key: MigKey,
    topic: String,
    running: common::ControllerTask,
    failures: common::Failures,
}

impl EventRig {
    async fn start(emulator: &PubSubEmulator, tag: &str, size: usize) -> EventRig {
        use meshmirror::app::RunOptions;
        use meshmirror::clouds::CloudArgs;

        let topic = format!("projects/{EVENT_PROJECT}/topics/audit-{tag}");
        let subscription = format!("projects/{EVENT_PROJECT}/subscriptions/meshmirror-{tag}");
        emulator.create_topic(&topic).await.unwrap();
        emulator
            .create_subscription(&subscription, &topic, 10)
            .await
            .unwrap();
        let server = server().await;
        let mock = GceMock::start().await.expect("GCE mock starts");
        let key = mock.add_zonal_group(EVENT_PROJECT, "us-central1-a", "web", Template::default());
        mock.resize(&key, size);
        let opts = RunOptions {
            kube_qps: 0.0,
            clouds: CloudArgs {
                gcp: GcpArgs {
                    gcp_endpoint: Some(mock.endpoint()),
                    gcp_pubsub_subscription: Some(subscription),
                    gcp_pubsub_endpoint: Some(emulator.endpoint()),
                },
                ..CloudArgs::default()
            },
            allow_all_groups: true,
            ..RunOptions::default()
        };
        let failures = common::Failures::default();
        let client = server.service_client(None).await;
        let running = common::ControllerTask::spawn(&format!("gcp-{tag}"), client, opts, &failures);
        let yaml = format!(
            "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata:\n  name: web\n  namespace: default\nspec:\n  provider:\n    gcp:\n      project: {EVENT_PROJECT}\n      zone: us-central1-a\n      instanceGroupManager: web\n  workloads: [{{name: app}}]\n  sync: {{interval: 10m}}\n"
        );
        let mirror: ScalingGroupMirror = serde_yaml::from_str(&yaml).unwrap();
        kube::Api::<ScalingGroupMirror>::namespaced(server.client(), "default")
            .create(&PostParams::default(), &mirror)
            .await
            .unwrap();
        let rig = EventRig {
            server,
            mock,
            key,
            topic,
            running,
            failures,
        };
        // Writing thousands of entries takes longer than a test's usual wait.
        let limit = common::CONVERGE + std::time::Duration::from_millis(40 * size as u64);
        rig.wait_status_entries(size as u32, limit).await;
        rig.settle().await;
        rig
    }

    fn entries_api(&self) -> kube::Api<DynamicObject> {
        kube::Api::namespaced_with(
            self.server.client(),
            "default",
            &EntryVersion::V1.workload_entries(),
        )
    }

    /// The instance ids of the entries.
    async fn ids(&self) -> BTreeSet<String> {
        self.entries_api()
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|e| annotation(e, keys::INSTANCE_ID))
            .collect()
    }

    async fn wait_status_entries(&self, n: u32, limit: std::time::Duration) {
        let mirrors = kube::Api::<ScalingGroupMirror>::namespaced(self.server.client(), "default");
        let started = std::time::Instant::now();
        loop {
            self.running.check();
            let have = mirrors
                .get("web")
                .await
                .unwrap()
                .status
                .map_or(0, |s| s.entries);
            if have == n {
                return;
            }
            assert!(
                started.elapsed() < limit,
                "timed out: {have} of {n} entries"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Waits until `done` holds for the entries' instance ids.
    async fn wait_ids(&self, what: &str, done: impl Fn(&BTreeSet<String>) -> bool) {
        let started = std::time::Instant::now();
        loop {
            self.running.check();
            if done(&self.ids().await) {
                return;
            }
            assert!(started.elapsed() < common::CONVERGE, "timed out: {what}");
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
    }

    /// Waits until the group has not been read for half a second: the
    /// passes a pass's own writes bring have come and gone.
    async fn settle(&self) {
        let started = std::time::Instant::now();
        let mut reads = self.mock.total_calls();
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            self.running.check();
            let now = self.mock.total_calls();
            if now == reads {
                return;
            }
            reads = now;
            assert!(
                started.elapsed() < common::CONVERGE * 3,
                "the controller never settled"
            );
        }
    }

    /// Grows the group by one and returns the new VM.
    fn launch(&self) -> Vm {
        let before: BTreeSet<u64> = self.mock.members(&self.key).iter().map(|v| v.id).collect();
        let size = self
            .mock
            .members(&self.key)
            .iter()
            .filter(|v| v.action != "DELETING")
            .count();
        self.mock.resize(&self.key, size + 1);
        self.mock
            .members(&self.key)
            .into_iter()
            .find(|v| !before.contains(&v.id))
            .expect("resize made a VM")
    }

    async fn stop(self) {
        self.running.stop().await;
        common::check_failures(&self.failures);
    }
}

/// The first `n` recorded calls: method and filter.
fn first_calls(mock: &GceMock, n: usize) -> Vec<(String, Option<String>)> {
    mock.requests()
        .into_iter()
        .take(n)
        .map(|r| (r.operation, r.query.get("filter").cloned()))
        .collect()
}

/// `operation`'s recorded calls whose filter is exactly `filter`.
fn calls_with(mock: &GceMock, operation: &str, filter: &str) -> usize {
    mock.requests()
        .iter()
        .filter(|r| {
            r.operation == operation && r.query.get("filter").map(String::as_str) == Some(filter)
        })
        .count()
}

/// A cloud event makes the pass ask about the instance it names only: in a
/// group of 120, an audit-log launch's entry is written from one
/// `listManagedInstances` and one `instances.list`, each filtered on the
/// new VM's id. While it happens, a member is missing from the instance
/// listing, so any read of the whole group fails (fail static): the entry
/// can only come from the read by id. A delete the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_asks_the_cloud_about_its_instance_only() {
    let emulator = PubSubEmulator::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rig = EventRig::start(&emulator, "named", 120).await;
    let mut live: Vec<Vm> = rig.mock.members(&rig.key);
    live.sort_by(|a, b| a.name.cmp(&b.name));
    // The first by name: scale-in marks the last ones.
    let blocker = live[0].name.clone();
    rig.mock.set_listed(&blocker, false);

    let new = rig.launch();
    let id = new.id.to_string();
    rig.mock.reset_counts();
    emulator
        .publish(&rig.topic, &launch_message("web", &new))
        .await
        .unwrap();
    rig.wait_ids("the new entry", |ids| ids.len() == 121 && ids.contains(&id))
        .await;
    let by_id = format!("(id = {id})");
    assert_eq!(
        first_calls(&rig.mock, 2),
        vec![
            (
                "instanceGroupManagers.listManagedInstances".to_string(),
                Some(by_id.clone())
            ),
            ("instances.list".to_string(), Some(by_id)),
        ],
        "the event's pass asks about its instance first: {:?}",
        rig.mock.counts()
    );
    let entry = rig
        .entries_api()
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| annotation(e, keys::INSTANCE_ID) == id)
        .unwrap();
    assert_eq!(entry.data["spec"]["address"], new.network_ip.to_string());

    // Scale-in: the last member by name turns DELETING; the delete's first
    // entry takes its entry out. (Passes that read the whole group may run
    // meanwhile, and fail.)
    let gone = rig.mock.resize(&rig.key, 120);
    assert_eq!(gone.len(), 1);
    assert_ne!(gone[0], blocker);
    let gone = rig.mock.vm(&gone[0]).unwrap();
    let gone_id = gone.id.to_string();
    rig.mock.reset_counts();
    emulator
        .publish(&rig.topic, &delete_message(&gone))
        .await
        .unwrap();
    rig.wait_ids("the deleted instance's entry gone", |ids| {
        ids.len() == 120 && !ids.contains(&gone_id)
    })
    .await;
    let by_id = format!("(id = {gone_id})");
    assert!(
        calls_with(
            &rig.mock,
            "instanceGroupManagers.listManagedInstances",
            &by_id
        ) >= 1
            && calls_with(&rig.mock, "instances.list", &by_id) >= 1,
        "{:?}",
        rig.mock.requests()
    );
    rig.mock.set_listed(&blocker, true);
    rig.stop().await;
}

type EntriesSeen = Arc<std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>>;

/// When each instance's entry first reached the API server, as a watch of
/// the entries sees it.
fn watch_entries(api: kube::Api<DynamicObject>) -> (EntriesSeen, tokio::task::JoinHandle<()>) {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};

    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            let mut stream = std::pin::pin!(stream);
            while let Some(item) = stream.next().await {
                if let Ok(entry) = item {
                    let now = std::time::Instant::now();
                    let id = annotation(&entry, keys::INSTANCE_ID);
                    seen.lock().unwrap().entry(id).or_insert(now);
                }
            }
        })
    };
    (seen, task)
}

/// Publishes `events` launches one after the other, each once the last
/// one's entry is at the API server (`settled`: once the group has also not
/// been read for half a second), and prints the latencies from publish to
/// entry and the Compute calls per launch, by id or of the whole group.
async fn launches(
    rig: &EventRig,
    emulator: &PubSubEmulator,
    seen: &EntriesSeen,
    (size, events): (usize, usize),
    settled: bool,
) {
    use std::time::{Duration, Instant};

    rig.mock.reset_counts();
    let mut samples = Vec::new();
    for _ in 0..events {
        if settled {
            rig.settle().await;
        }
        let new = rig.launch();
        let id = new.id.to_string();
        let sent = Instant::now();
        emulator
            .publish(&rig.topic, &launch_message("web", &new))
            .await
            .unwrap();
        let at = loop {
            if let Some(at) = seen.lock().unwrap().get(&id).copied() {
                break at;
            }
            rig.running.check();
            assert!(
                sent.elapsed() < Duration::from_secs(120),
                "no entry for {id}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        samples.push(at.saturating_duration_since(sent));
    }
    rig.settle().await;
    samples.sort();
    let q = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    let requests = rig.mock.requests();
    let per_event = |operation: &str, by_id: bool| {
        let n = requests
            .iter()
            .filter(|r| r.operation == operation)
            .filter(|r| {
                r.query
                    .get("filter")
                    .is_some_and(|f| f.starts_with("(id = "))
                    == by_id
            })
            .count();
        n as f64 / events as f64
    };
    println!(
        "GCP event -> WorkloadEntry at {size} instances, {events} launches{}: p50 {:?}, p99 {:?}, max {:?}; per event: listManagedInstances {:.1} by id + {:.1} whole, instances.list {:.1} by id + {:.1} whole",
        if settled {
            " (each once the group is quiet)"
        } else {
            " (back to back)"
        },
        q(0.5),
        q(0.99),
        q(1.0),
        per_event("instanceGroupManagers.listManagedInstances", true),
        per_event("instanceGroupManagers.listManagedInstances", false),
        per_event("instances.list", true),
        per_event("instances.list", false),
    );
}

/// Not a test: prints the latency from an audit-log launch's publish to its
/// WorkloadEntry at the API server, over 30 launches back to back per group
/// size, and the Compute calls they cost (`cargo nextest run --test gcp
/// --run-ignored only -E 'test(bench_)' --no-capture`).
/// `MESHMIRROR_BENCH_SIZES=10,100` picks the sizes; with
/// `MESHMIRROR_BENCH_SETTLED=1`, 30 more launches per size each wait until
/// the group is quiet (longer than nextest's 5 minutes at every size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: prints numbers, asserts none"]
async fn bench_event_to_entry_latency() {
    let emulator = PubSubEmulator::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let sizes: Vec<usize> = common::bench_sizes(&[10, 100, 1_000, 5_000]);
    let settled = std::env::var_os("MESHMIRROR_BENCH_SETTLED").is_some();
    for size in sizes {
        let rig = EventRig::start(&emulator, &format!("bench-{size}"), size).await;
        let (seen, watch) = watch_entries(rig.entries_api());
        launches(&rig, &emulator, &seen, (size, 30), false).await;
        if settled {
            // (The group has grown by 30 by then.)
            launches(&rig, &emulator, &seen, (size, 30), true).await;
        }
        watch.abort();
        rig.stop().await;
    }
}
