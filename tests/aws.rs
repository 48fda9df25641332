//! The controller with the AWS provider, end to end against moto (through the
//! test kit's proxy, which adds lifecycle holds and completions, throttling
//! and the addresses moto does not model). Each test starts its own moto.

#![cfg(feature = "aws")]
// The ignored benchmark prints its numbers.
#![allow(clippy::print_stdout)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use kube::api::{DynamicObject, Patch, PatchParams};
use meshmirror::app::RunOptions;
use meshmirror::clouds::CloudArgs;
use meshmirror::clouds::aws::AwsArgs;
use meshmirror::workloadentry::keys;
use meshmirror_aws::aws_sdk_sqs as sqs;
use meshmirror_sim::SimCloud;
use meshmirror_testkit::aws::{HoldState, LifecycleCall, upstream};
use serde_json::{Value, json};

#[path = "common/moto.rs"]
mod moto;
use moto::*;

impl Cloud {
    async fn hook(&self, group: &str, hook: &str, launching: bool, heartbeat: i32) {
        self.asg
            .put_lifecycle_hook()
            .auto_scaling_group_name(group)
            .lifecycle_hook_name(hook)
            .lifecycle_transition(if launching {
                "autoscaling:EC2_INSTANCE_LAUNCHING"
            } else {
                "autoscaling:EC2_INSTANCE_TERMINATING"
            })
            .heartbeat_timeout(heartbeat)
            .send()
            .await
            .unwrap();
        // The proxy times holds out as AWS would (default result ABANDON).
        self.proxy.lifecycle_hook(
            hook,
            Duration::from_secs(heartbeat.try_into().unwrap()),
            "ABANDON",
        );
    }

    /// Messages still in the queue, visible or in flight.
    async fn queued(&self) -> u64 {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .unwrap();
        let attributes = out.attributes().expect("queue attributes");
        assert_eq!(attributes.len(), 2, "{attributes:?}");
        attributes
            .values()
            .map(|v| v.parse::<u64>().expect("a count"))
            .sum()
    }

    /// Sends an event to EventBridge (moto routes it to the queue through a
    /// rule), as AWS would.
    async fn put_event(&self, source: &str, detail_type: &str, detail: Value) {
        let call = |target: &'static str, body: Value| async move {
            let headers = vec![
                (
                    "Authorization".to_string(),
                    format!(
                        "AWS4-HMAC-SHA256 Credential=testing/20250101/{REGION}/events/aws4_request, SignedHeaders=host, Signature=0"
                    ),
                ),
                ("X-Amz-Target".to_string(), format!("AWSEvents.{target}")),
                (
                    "Content-Type".to_string(),
                    "application/x-amz-json-1.1".to_string(),
                ),
            ];
            let r = upstream::send(
                self.moto.authority(),
                "POST",
                "/",
                &headers,
                body.to_string().as_bytes(),
            )
            .await
            .unwrap();
            assert_eq!(
                r.status,
                200,
                "{target}: {}",
                String::from_utf8_lossy(&r.body)
            );
        };
        call(
            "PutRule",
            json!({"Name": "meshmirror", "EventPattern": std::fs::read_to_string(format!("{}/deploy/examples/aws/eventbridge-rule.json", std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR"))).unwrap()}),
        )
        .await;
        call(
            "PutTargets",
            json!({"Rule": "meshmirror", "Targets": [{"Id": "queue", "Arn": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:meshmirror-events")}]}),
        )
        .await;
        call(
            "PutEvents",
            json!({"Entries": [{"Source": source, "DetailType": detail_type, "Detail": detail.to_string(), "Resources": []}]}),
        )
        .await;
    }
}

fn terminate_action(group: &str, instance: &str, hook: &str, token: &str) -> String {
    fixture_event(
        "eventbridge-asg-terminate-lifecycle-action.json",
        json!({"AutoScalingGroupName": group, "EC2InstanceId": instance, "LifecycleHookName": hook, "LifecycleActionToken": token}),
    )
}

/// The controller with the AWS provider, on the harness's API server.
/// The harness's waits fail at once if it ends by itself or with an error;
/// `stop` asserts it ended Ok; dropping it stops it.
struct Running(ControllerTask);

impl Running {
    fn start(h: &Harness, args: AwsArgs, metrics_addr: Option<SocketAddr>) -> Running {
        let opts = RunOptions {
            kube_qps: 0.0,
            metrics_addr,
            clouds: CloudArgs {
                aws: args,
                ..CloudArgs::default()
            },
            allow_all_groups: true,
            ..RunOptions::default()
        };
        Running(h.spawn_controller("aws", h.service.clone(), opts))
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

async fn harness() -> Harness {
    Harness::without_controller(SimCloud::new()).await
}

fn mirror(ns: &str, name: &str, group: &str, extra: &str) -> String {
    format!(
        "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  provider:\n    aws:\n      region: {REGION}\n      autoScalingGroupName: {group}\n  sync:\n    interval: 5s\n  workloads: [{{name: api, labels: {{app: api}}, ports: {{http: 8080}}}}]\n{extra}"
    )
}

fn instance_of(o: &DynamicObject) -> String {
    annotation(o, keys::INSTANCE_ID)
}

fn addresses(entries: &[DynamicObject]) -> Vec<String> {
    let mut out: Vec<String> = entries
        .iter()
        .filter_map(|o| o.data["spec"]["address"].as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(started.elapsed() < CONVERGE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn completions(cloud: &Cloud) -> Vec<LifecycleCall> {
    cloud
        .proxy
        .lifecycle_calls()
        .into_iter()
        .filter(|c| c.action == "CompleteLifecycleAction")
        .collect()
}

#[tokio::test]
async fn asg_of_three_grows_to_six_and_the_entries_follow() {
    let cloud = cloud().await;
    cloud.group("web", 3, &[]).await;
    let h = harness().await;
    let running = Running::start(&h, cloud.args(), None);
    h.create_mirror(&mirror("default", "web", "web", "")).await;
    let three = h
        .wait_entries("default", "3 entries", |e| e.len() == 3)
        .await;
    let ids = cloud.instances("web").await;
    assert_eq!(addresses(&three), cloud.private_ips(&ids).await);

    cloud.set_capacity("web", 6).await;
    let ids = cloud.instances("web").await;
    assert_eq!(ids.len(), 6);
    // The launch event goes through EventBridge, as in AWS.
    cloud
        .put_event(
            "aws.autoscaling",
            "EC2 Instance Launch Successful",
            json!({"AutoScalingGroupName": "web", "EC2InstanceId": ids[5], "StatusCode": "InProgress"}),
        )
        .await;
    let six = h
        .wait_entries("default", "6 entries", |e| e.len() == 6)
        .await;
    assert_eq!(addresses(&six), cloud.private_ips(&ids).await);
    let mut mirrored: Vec<String> = six.iter().map(instance_of).collect();
    mirrored.sort();
    assert_eq!(mirrored, ids);
    wait_for("the event deleted from the queue", async || {
        (cloud.queued().await == 0).then_some(())
    })
    .await;

    // One DescribeInstances per pass, however many instances: never one call
    // per instance.
    cloud.proxy.reset_counts();
    cloud.send(&launch_successful("web", &ids[0])).await;
    // The message is deleted once the pass it started has succeeded: then
    // that pass's calls are all counted. A resync may have coincided (the
    // interval is 5 s, the wait normally well under one).
    wait_for("the message handled and deleted", async || {
        (cloud.proxy.count("DescribeInstances") >= 1 && cloud.queued().await == 0).then_some(())
    })
    .await;
    let counts = cloud.proxy.counts();
    let describe_instances = counts.get("DescribeInstances").copied().unwrap_or(0);
    assert!(
        describe_instances <= 2 && describe_instances < ids.len() as u64,
        "{counts:?}"
    );
    running.stop().await;
}

#[tokio::test]
async fn scale_in_through_the_terminate_hook_drains_before_continue() {
    let cloud = cloud().await;
    cloud.group("web", 3, &[]).await;
    cloud.hook("web", "drain", false, 300).await;
    let h = harness().await;
    let running = Running::start(&h, cloud.args(), None);
    h.create_mirror(&mirror(
        "default",
        "web",
        "web",
        "  lifecycle: {terminateHook: drain, drainSeconds: 2}\n",
    ))
    .await;
    let entries = h
        .wait_entries("default", "3 entries", |e| e.len() == 3)
        .await;
    let ids = cloud.instances("web").await;
    let leaving = ids[1].clone();
    let leaving_entry = entries
        .iter()
        .find(|o| instance_of(o) == leaving)
        .and_then(|o| o.metadata.name.clone())
        .expect("the leaving VM's entry");

    cloud
        .proxy
        .hold(&leaving, HoldState::TerminatingWait, "drain", Some("tok-1"));
    cloud
        .send(&terminate_action("web", &leaving, "drain", "tok-1"))
        .await;
    let done = wait_for("CompleteLifecycleAction", async || {
        completions(&cloud).await.into_iter().next()
    })
    .await;
    // The hook is answered only after the drain, by the records rather than
    // by when this test looked: the API server logs the delete before it
    // answers it (the drain starts no earlier), the proxy stamps the
    // completion when it arrives.
    let deleted: Vec<_> = h
        .server
        .write_log()
        .into_iter()
        .filter(|w| {
            w.verb == meshmirror_testkit::Verb::Delete
                && w.resource == "workloadentries"
                && w.succeeded()
                && w.name.as_deref() == Some(leaving_entry.as_str())
        })
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(
        done.at >= deleted[0].at + Duration::from_secs(2),
        "answered {:?} after the entry was deleted: before the 2s drain",
        done.at.saturating_duration_since(deleted[0].at)
    );
    assert_eq!(done.instance_id.as_deref(), Some(leaving.as_str()));
    assert_eq!(done.token.as_deref(), Some("tok-1"));
    assert_eq!(done.hook, "drain");
    assert_eq!(done.group, "web");
    assert_eq!(done.result.as_deref(), Some("CONTINUE"));
    assert!(done.accepted);
    // The proxy let the instance go; the rest stays.
    wait_for("the group at 2", async || {
        (cloud.instances("web").await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(h.entries("default").await.len(), 2);
    running.stop().await;
}

async fn set_healthy(h: &Harness, ns: &str, entry: &str) {
    h.entries_api(ns)
        .patch_status(
            entry,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [{
                "type": "Healthy", "status": "True",
                "lastTransitionTime": "2025-01-01T00:00:00Z"
            }]}})),
        )
        .await
        .expect("istiod-like health write");
}

#[tokio::test]
async fn launch_hook_with_agent_health_continues_once_healthy() {
    let cloud = cloud().await;
    cloud.group("web", 1, &[]).await;
    cloud.hook("web", "warmup", true, 300).await;
    let h = harness().await;
    let running = Running::start(&h, cloud.args(), None);
    h.create_mirror(&mirror(
        "default",
        "web",
        "web",
        "  health: Agent\n  lifecycle: {launchHook: warmup, launchTimeoutSeconds: 300}\n",
    ))
    .await;
    h.wait_entries("default", "1 entry", |e| e.len() == 1).await;
    let first = cloud.instances("web").await;

    cloud.proxy.hold_launches(Some("warmup"));
    cloud.set_capacity("web", 2).await;
    let new = cloud
        .instances("web")
        .await
        .into_iter()
        .find(|id| !first.contains(id))
        .unwrap();
    cloud.send(&launch_successful("web", &new)).await;
    let entries = h
        .wait_entries("default", "an entry for the waiting VM", |e| {
            e.iter().any(|o| instance_of(o) == new)
        })
        .await;
    assert_eq!(
        cloud.proxy.held().get(&new),
        Some(&HoldState::PendingWait),
        "still waiting on the hook"
    );
    assert!(completions(&cloud).await.is_empty(), "not healthy yet");

    let entry = entries.iter().find(|o| instance_of(o) == new).unwrap();
    set_healthy(&h, "default", entry.metadata.name.as_deref().unwrap()).await;
    let done = wait_for("CONTINUE", async || {
        completions(&cloud).await.into_iter().next()
    })
    .await;
    assert_eq!(done.instance_id.as_deref(), Some(new.as_str()));
    assert_eq!(done.result.as_deref(), Some("CONTINUE"));
    assert_eq!(done.hook, "warmup");
    assert!(done.accepted);
    assert!(cloud.proxy.held().is_empty());
    assert_eq!(h.entries("default").await.len(), 2);
    running.stop().await;
}

#[tokio::test]
async fn launch_hook_is_abandoned_when_health_never_comes() {
    let cloud = cloud().await;
    cloud.group("web", 1, &[]).await;
    cloud.hook("web", "warmup", true, 300).await;
    let h = harness().await;
    let running = Running::start(&h, cloud.args(), None);
    h.create_mirror(&mirror(
        "default",
        "web",
        "web",
        "  health: Agent\n  lifecycle: {launchHook: warmup, launchTimeoutSeconds: 2}\n",
    ))
    .await;
    h.wait_entries("default", "1 entry", |e| e.len() == 1).await;
    let first = cloud.instances("web").await;
    cloud.proxy.hold_launches(Some("warmup"));
    cloud.set_capacity("web", 2).await;
    let new = cloud
        .instances("web")
        .await
        .into_iter()
        .find(|id| !first.contains(id))
        .unwrap();
    cloud.send(&launch_successful("web", &new)).await;
    let done = wait_for("ABANDON", async || {
        completions(&cloud).await.into_iter().next()
    })
    .await;
    assert_eq!(done.instance_id.as_deref(), Some(new.as_str()));
    assert_eq!(done.result.as_deref(), Some("ABANDON"));
    // The abandoned VM is terminated; its entry goes.
    h.wait_entries("default", "back to the first VM", |e| {
        e.len() == 1 && instance_of(&e[0]) == first[0]
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn a_spot_vm_leaves_on_a_warning_only_once_ec2_marks_it_and_forged_events_change_nothing() {
    let cloud = cloud().await;
    cloud.group("web", 3, &[]).await;
    let h = harness().await;
    let running = Running::start(&h, cloud.args(), None);
    h.create_mirror(&mirror("default", "web", "web", "")).await;
    h.wait_entries("default", "3 entries", |e| e.len() == 3)
        .await;
    let ids = cloud.instances("web").await;
    let (spot, on_demand, running_vm) = (&ids[0], &ids[1], &ids[2]);
    cloud.proxy.set_spot(spot);
    let status_lookups = || cloud.proxy.count("DescribeSpotInstanceRequests");
    let warning = || {
        fixture_event(
            "awsdocs-eventbridge-ec2-spot-interruption-warning.json",
            json!({"instance-id": spot, "instance-action": "terminate"}),
        )
    };

    // Forged or stale: a spot warning for an on-demand VM, and "stopping"
    // for a VM EC2 reports running. A message is deleted once a pass that
    // began after it arrived has succeeded, so an empty queue means those
    // passes are done.
    cloud
        .send(&fixture_event(
            "nth-eventbridge-ec2-spot-interruption-warning.json",
            json!({"instance-id": on_demand}),
        ))
        .await;
    cloud
        .send(&fixture_event(
            "nth-eventbridge-ec2-instance-state-change.json",
            json!({"instance-id": running_vm, "state": "stopping"}),
        ))
        .await;
    wait_for("the forged messages deleted", async || {
        (cloud.queued().await == 0).then_some(())
    })
    .await;
    assert_eq!(h.entries("default").await.len(), 3, "forged events");
    assert_eq!(
        status_lookups(),
        0,
        "a warning for an on-demand VM costs no spot request lookup"
    );

    // A real warning for the spot VM, but EC2 has not marked its spot
    // request (moto has none): a hint only, the entry stays. The pass it
    // caused asked EC2 and is done once the message is deleted.
    cloud.send(&warning()).await;
    wait_for("the warning handled and deleted", async || {
        (status_lookups() >= 1 && cloud.queued().await == 0).then_some(())
    })
    .await;
    let entries = h.entries("default").await;
    assert_eq!(entries.len(), 3, "a warning alone removes nothing");
    assert!(entries.iter().any(|o| instance_of(o) == *spot));

    // EC2 confirms: the spot request is marked for termination. The next
    // pass (the warning, sent again, starts it at once) takes the VM out,
    // though Auto Scaling still reports it InService.
    cloud.proxy.set_spot_marked(spot, "marked-for-termination");
    let lookups_before = status_lookups();
    cloud.send(&warning()).await;
    let left = h
        .wait_entries("default", "the spot VM's entry gone", |e| {
            e.iter().all(|o| instance_of(o) != *spot)
        })
        .await;
    assert!(status_lookups() > lookups_before);
    let mut remaining: Vec<String> = left.iter().map(instance_of).collect();
    remaining.sort();
    assert_eq!(remaining, vec![on_demand.clone(), running_vm.clone()]);
    assert!(cloud.instances("web").await.contains(spot));
    wait_for("the warning deleted", async || {
        (cloud.queued().await == 0).then_some(())
    })
    .await;
    assert_eq!(h.entries("default").await.len(), 2);
    running.stop().await;
}

#[tokio::test]
async fn throttling_deletes_nothing_reports_degraded_and_recovers() {
    let cloud = cloud().await;
    cloud.group("web", 3, &[]).await;
    let h = harness().await;
    let running = Running::start(&h, cloud.args(), None);
    h.create_mirror(&mirror("default", "web", "web", "")).await;
    h.wait_entries("default", "3 entries", |e| e.len() == 3)
        .await;

    cloud.proxy.throttle("DescribeAutoScalingGroups", 10_000);
    // A pass already past the proxy (the follow-up of the first writes, or
    // one reusing the last round) must not see the scale-in. Not a sleep:
    // once a call is throttled, the pass that made it started after every
    // earlier pass had ended (passes of one mirror never overlap), and no
    // later one gets members while the throttle lasts. An event starts it.
    let describes = || cloud.proxy.count("DescribeAutoScalingGroups");
    let before_throttled = describes();
    let first = cloud.instances("web").await;
    cloud.send(&launch_successful("web", &first[0])).await;
    wait_for("a throttled DescribeAutoScalingGroups", async || {
        (describes() > before_throttled).then_some(())
    })
    .await;
    cloud.set_capacity("web", 1).await;
    let ids = cloud.instances("web").await;
    // And a pass after the scale-in has had its chance: it asked too.
    let before_scale_in = describes();
    cloud.send(&launch_successful("web", &ids[0])).await;
    wait_for("a pass after the scale-in", async || {
        (describes() > before_scale_in).then_some(())
    })
    .await;
    let status = h
        .wait_status("default", "web", "Degraded: Throttled", |s| {
            condition(s, "Degraded").is_some_and(|c| c.status == "True" && c.reason == "Throttled")
        })
        .await;
    assert_eq!(
        h.entries("default").await.len(),
        3,
        "nothing deleted; {status:?} {:?}",
        cloud.proxy.counts()
    );

    cloud.proxy.clear_throttles();
    cloud.send(&launch_successful("web", &ids[0])).await;
    let left = h.wait_entries("default", "1 entry", |e| e.len() == 1).await;
    assert_eq!(instance_of(&left[0]), ids[0]);
    h.wait_status("default", "web", "recovered", |s| {
        condition(s, "Degraded").is_some_and(|c| c.status == "False")
    })
    .await;
    running.stop().await;
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn scrape(addr: SocketAddr) -> String {
    match upstream::send(&addr.to_string(), "GET", "/metrics", &[], b"").await {
        Ok(r) => String::from_utf8_lossy(&r.body).into_owned(),
        Err(e) => {
            eprintln!("scrape {addr}: {e}");
            String::new()
        }
    }
}

#[tokio::test]
async fn malformed_and_foreign_messages_are_deleted_and_counted() {
    let cloud = cloud().await;
    cloud.group("web", 2, &[]).await;
    cloud.group("not-mirrored", 1, &[]).await;
    let h = harness().await;
    let metrics = free_addr();
    let running = Running::start(&h, cloud.args(), Some(metrics));
    h.create_mirror(&mirror("default", "web", "web", "")).await;
    h.wait_entries("default", "2 entries", |e| e.len() == 2)
        .await;
    let other = cloud.instances("not-mirrored").await;

    cloud.send("this is not an event").await;
    cloud
        .send(r#"{"detail-type": "EC2 Spot Instance Interruption Warning", "detail": {}}"#)
        .await;
    // A group no mirror names, and an instance in no group at all.
    cloud
        .send(&launch_successful("not-mirrored", &other[0]))
        .await;
    cloud
        .send(&fixture_event(
            "awsdocs-eventbridge-ec2-instance-state-change.json",
            json!({"instance-id": "i-0123456789abcdef0", "state": "stopping"}),
        ))
        .await;
    // A hook's test notification.
    cloud
        .send(&json!({"Service": "AWS Auto Scaling", "Event": "autoscaling:TEST_NOTIFICATION", "AutoScalingGroupName": "web", "AccountId": ACCOUNT}).to_string())
        .await;
    wait_for("every message deleted", async || {
        (cloud.queued().await == 0).then_some(())
    })
    .await;
    let text = wait_for("malformed counted", async || {
        let text = scrape(metrics).await;
        text.lines()
            .any(|l| {
                l.starts_with("meshmirror_event_messages_total")
                    && l.contains("provider=\"aws\"")
                    && l.contains("outcome=\"malformed\"")
                    && l.ends_with(" 2")
            })
            .then_some(text)
    })
    .await;
    assert!(
        text.lines().any(|l| l.contains("outcome=\"ignored\"")),
        "{text}"
    );
    assert_eq!(h.entries("default").await.len(), 2, "nothing changed");
    running.stop().await;
}

#[tokio::test]
async fn public_ipv4_and_ipv6_are_chosen_as_the_spec_says_and_tags_are_copied() {
    let cloud = cloud().await;
    cloud
        .group("web", 2, &[("team", "payments"), ("cost-center", "42")])
        .await;
    let ids = cloud.instances("web").await;
    cloud
        .proxy
        .set_public_ipv4(&ids[0], "203.0.113.10".parse().unwrap());
    cloud
        .proxy
        .set_ipv6(&ids[1], "2001:db8::11".parse().unwrap());
    let h = harness().await;
    let running = Running::start(&h, cloud.args(), None);
    h.create_mirror(&mirror(
        "default",
        "public",
        "web",
        "  address: PublicIPv4\n  copyTags: [team]\n",
    ))
    .await;
    let public = h
        .wait_entries("default", "1 public entry", |e| e.len() == 1)
        .await;
    assert_eq!(addresses(&public), vec!["203.0.113.10"]);
    assert_eq!(instance_of(&public[0]), ids[0]);
    assert_eq!(label(&public[0], "team"), "payments");
    assert_eq!(label(&public[0], "cost-center"), "", "only listed tags");
    let status = h
        .wait_status("default", "public", "skipped", |s| s.skipped == 1)
        .await;
    assert_eq!(status.members, 2);
    // One group, one mirror at a time (a VM belongs to one namespace): the
    // IPv6 mirror in another namespace takes the group over once the first
    // is deleted.
    h.mirrors("default")
        .delete("public", &Default::default())
        .await
        .unwrap();
    h.create_mirror(&mirror("v6", "ipv6", "web", "  address: IPv6\n"))
        .await;
    let v6 = h.wait_entries("v6", "1 IPv6 entry", |e| e.len() == 1).await;
    assert_eq!(addresses(&v6), vec!["2001:db8::11"]);
    assert_eq!(instance_of(&v6[0]), ids[1]);
    running.stop().await;
}

/// A group of two with the terminate hook `drain`, mirrored with that hook;
/// then one instance is held in Terminating:Wait and its event sent.
struct Drain {
    /// The hook's heartbeat timeout, s (moto takes any; AWS's minimum is 30).
    hook_timeout: i32,
    drain_seconds: u32,
    /// Which of the two instances leaves.
    leaving: usize,
    token: &'static str,
}

impl Drain {
    /// Returns the running controller and the leaving instance.
    async fn start(&self, cloud: &Cloud, h: &Harness, args: AwsArgs) -> (Running, String) {
        cloud.group("web", 2, &[]).await;
        cloud.hook("web", "drain", false, self.hook_timeout).await;
        let running = Running::start(h, args, None);
        h.create_mirror(&mirror(
            "default",
            "web",
            "web",
            &format!(
                "  lifecycle: {{terminateHook: drain, drainSeconds: {}}}\n",
                self.drain_seconds
            ),
        ))
        .await;
        h.wait_entries("default", "2 entries", |e| e.len() == 2)
            .await;
        let leaving = cloud.instances("web").await[self.leaving].clone();
        cloud.proxy.hold(
            &leaving,
            HoldState::TerminatingWait,
            "drain",
            Some(self.token),
        );
        cloud
            .send(&terminate_action("web", &leaving, "drain", self.token))
            .await;
        (running, leaving)
    }
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_drain_still_answers_the_hook() {
    let cloud = cloud().await;
    let h = harness().await;
    let drain = Drain {
        hook_timeout: 300,
        drain_seconds: 3,
        leaving: 0,
        token: "tok-r",
    };
    let (running, leaving) = drain.start(&cloud, &h, cloud.args()).await;
    h.wait_entries("default", "entry gone", |e| {
        e.len() == 1 && instance_of(&e[0]) != leaving
    })
    .await;
    running.stop().await;
    assert!(completions(&cloud).await.is_empty(), "stopped mid-drain");

    // A new process knows no token: it finds the hold through the API and
    // answers by instance id.
    let running = Running::start(&h, cloud.args(), None);
    let done = wait_for("CONTINUE after the restart", async || {
        completions(&cloud).await.into_iter().next()
    })
    .await;
    assert_eq!(done.instance_id.as_deref(), Some(leaving.as_str()));
    assert_eq!(done.result.as_deref(), Some("CONTINUE"));
    assert!(done.accepted);
    assert_eq!(h.entries("default").await.len(), 1);
    running.stop().await;
}

#[tokio::test]
async fn a_drain_longer_than_the_heartbeat_timeout_sends_heartbeats() {
    let cloud = cloud().await;
    let h = harness().await;
    let drain = Drain {
        hook_timeout: 3,
        drain_seconds: 5,
        leaving: 1,
        token: "tok-h",
    };
    // The mirror's spec names the hook (`terminateHook: drain`) and the group
    // has it: that alone makes meshmirror keep it alive.
    let (running, leaving) = drain.start(&cloud, &h, cloud.args()).await;
    // The proxy ends a hold not heartbeated within the hook's 3 s, as AWS
    // does: a late or missing heartbeat fails here at once.
    wait_for("CONTINUE", async || {
        let expired = cloud.proxy.expired();
        assert!(expired.is_empty(), "the hold timed out: {expired:?}");
        completions(&cloud).await.into_iter().next()
    })
    .await;
    assert!(cloud.proxy.expired().is_empty());
    let calls = cloud.proxy.lifecycle_calls();
    let answered = calls
        .iter()
        .position(|c| c.action == "CompleteLifecycleAction")
        .unwrap();
    let beats = &calls[..answered];
    assert!(!beats.is_empty(), "{calls:?}");
    assert!(
        beats
            .iter()
            .all(|b| b.action == "RecordLifecycleActionHeartbeat"
                && b.accepted
                && b.instance_id.as_deref() == Some(leaving.as_str())
                && b.token.as_deref() == Some("tok-h")),
        "{calls:?}"
    );
    assert!(calls[answered].accepted);
    running.stop().await;
}

/// Not a test: prints the event-to-WorkloadEntry latency over 30 launch
/// events per group size, and the cloud calls they cost
/// (`cargo nextest run --test aws --run-ignored only -E 'test(bench_)' --no-capture`).
/// The subnet holds 16,379 addresses: room for the 5,000 group and its
/// 30 launches.
#[tokio::test]
#[ignore = "benchmark: prints numbers, asserts none"]
async fn bench_event_to_entry_latency() {
    for size in bench_sizes(&[10, 100, 1_000, 5_000]) {
        let cloud = cloud().await;
        cloud.group("web", size, &[]).await;
        let h = harness().await;
        let running = Running::start(&h, cloud.args(), None);
        let yaml = mirror("default", "web", "web", "").replace("interval: 5s", "interval: 10m");
        let created = Instant::now();
        h.create_mirror(&yaml).await;
        // Longer than the tests' patience: 5,000 instances take moto a while.
        while h.entries("default").await.len() != size as usize {
            assert!(
                created.elapsed() < Duration::from_secs(600),
                "no convergence at {size}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "AWS {size} instances: every entry {:?} after the mirror was created",
            created.elapsed()
        );
        let mut known = cloud.instances("web").await;
        let mut samples = Vec::new();
        cloud.proxy.reset_counts();
        let events = 30;
        for i in 0..events {
            cloud.set_capacity("web", size + 1 + i).await;
            let new = cloud
                .instances("web")
                .await
                .into_iter()
                .find(|id| !known.contains(id))
                .unwrap();
            let sent = Instant::now();
            cloud.send(&launch_successful("web", &new)).await;
            // One GET by name, not a listing of the group's entries: the
            // probe must not cost more as the group grows.
            let name = meshmirror::core::names::entry_name("web", "api", &new);
            let api = h.entries_api("default");
            while api.get_opt(&name).await.expect("get entry").is_none() {
                assert!(sent.elapsed() < CONVERGE, "no entry for {new} at {size}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            samples.push(sent.elapsed());
            known.push(new);
        }
        samples.sort();
        let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
        let counts = cloud.proxy.counts();
        let per_event =
            |action: &str| counts.get(action).copied().unwrap_or(0) as f64 / events as f64;
        println!(
            "AWS event -> WorkloadEntry at {size} instances, {events} launches: p50 {:?}, p99 {:?}, max {:?}; per event: DescribeAutoScalingInstances {:.1}, DescribeAutoScalingGroups {:.1}, DescribeInstances {:.1}",
            at(0.5),
            at(0.99),
            at(1.0),
            per_event("DescribeAutoScalingInstances"),
            per_event("DescribeAutoScalingGroups"),
            per_event("DescribeInstances"),
        );
        running.stop().await;
    }
}

#[tokio::test]
async fn after_a_restart_a_long_drain_is_kept_alive_without_naming_the_hook_in_flags() {
    let cloud = cloud().await;
    let h = harness().await;
    let drain = Drain {
        hook_timeout: 3,
        drain_seconds: 6,
        leaving: 0,
        token: "tok-k",
    };
    // No flag names the hook (there is none): the mirror's spec does, and
    // the restarted process learns it from the spec before its first pass.
    let (running, leaving) = drain.start(&cloud, &h, cloud.args()).await;
    h.wait_entries("default", "entry gone", |e| e.len() == 1)
        .await;
    running.stop().await;
    let before_restart = cloud.proxy.lifecycle_calls().len();

    let running = Running::start(&h, cloud.args(), None);
    // As AWS does, the proxy ends a hold not heartbeated within the hook's
    // 3 s, across the restart too.
    wait_for("CONTINUE after the restart", async || {
        let expired = cloud.proxy.expired();
        assert!(expired.is_empty(), "the hold timed out: {expired:?}");
        completions(&cloud).await.into_iter().next()
    })
    .await;
    assert!(cloud.proxy.expired().is_empty());
    let calls = cloud.proxy.lifecycle_calls();
    let after: Vec<_> = calls[before_restart..].to_vec();
    let answered = after
        .iter()
        .position(|c| c.action == "CompleteLifecycleAction")
        .unwrap();
    let beats = &after[..answered];
    assert!(
        !beats.is_empty(),
        "no heartbeat after the restart: {after:?}"
    );
    assert!(
        beats
            .iter()
            .all(|b| b.action == "RecordLifecycleActionHeartbeat"
                && b.accepted
                && b.instance_id.as_deref() == Some(leaving.as_str())),
        "{after:?}"
    );
    running.stop().await;
}

fn terminate_successful(group: &str, instance: &str) -> String {
    fixture_event(
        "eventbridge-asg-terminate-successful.json",
        json!({"AutoScalingGroupName": group, "EC2InstanceId": instance}),
    )
}

/// A cloud event makes the pass ask about the instance it names only: at 120
/// members a launch's entry is written after one DescribeAutoScalingInstances
/// and one DescribeInstances of that instance (the rest of the group is as
/// read within the interval). A termination the same way.
#[tokio::test]
async fn an_event_asks_the_cloud_about_its_instance_only() {
    let cloud = cloud().await;
    cloud.group("web", 120, &[]).await;
    let h = harness().await;
    let running = Running::start(&h, cloud.args(), None);
    let yaml = mirror("default", "web", "web", "").replace("interval: 5s", "interval: 10m");
    h.create_mirror(&yaml).await;
    h.wait_entries("default", "120 entries", |e| e.len() == 120)
        .await;
    let known = cloud.instances("web").await;
    cloud.set_capacity("web", 121).await;
    let new = cloud
        .instances("web")
        .await
        .into_iter()
        .find(|id| !known.contains(id))
        .unwrap();
    cloud.proxy.reset_counts();
    cloud.send(&launch_successful("web", &new)).await;
    h.wait_entries("default", "the new entry", |e| {
        e.len() == 121 && e.iter().any(|o| instance_of(o) == new)
    })
    .await;
    wait_for("the event deleted from the queue", async || {
        (cloud.queued().await == 0).then_some(())
    })
    .await;
    // The event's pass asks about the one instance, and nothing reads the
    // whole group: not the event's pass, not a pass its status write could
    // have brought (the quiet second leaves room for one to show).
    let count = |action: &str| cloud.proxy.counts().get(action).copied().unwrap_or(0);
    let asked = || count("DescribeAutoScalingInstances");
    wait_for("the event's instance asked about", async || {
        (asked() >= 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        (
            asked(),
            count("DescribeInstances"),
            count("DescribeAutoScalingGroups")
        ),
        (1, 1, 0),
        "one event: its instance asked about once, the group never listed"
    );

    // Scale-in: moto terminates one; its event takes its entry out.
    cloud.set_capacity("web", 120).await;
    let now = cloud.instances("web").await;
    let gone = known
        .iter()
        .chain([&new])
        .find(|id| !now.contains(id))
        .unwrap()
        .clone();
    cloud.proxy.reset_counts();
    cloud.send(&terminate_successful("web", &gone)).await;
    h.wait_entries("default", "the terminated instance's entry gone", |e| {
        e.len() == 120 && e.iter().all(|o| instance_of(o) != gone)
    })
    .await;
    // A pass still running from the launch may have taken it out first; the
    // event's own pass asks about the instance once it runs.
    wait_for("the terminated instance asked about", async || {
        (asked() >= 1).then_some(())
    })
    .await;
    running.stop().await;
}
