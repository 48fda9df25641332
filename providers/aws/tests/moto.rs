//! The provider on its own against moto, through the test kit's proxy
//! (which answers lifecycle completions and heartbeats, shows holds, marks
//! spot instances and counts calls). Each test starts its own moto.

use std::time::Duration;

use futures::StreamExt;
use meshmirror_aws::aws_config::{self, BehaviorVersion};
use meshmirror_aws::aws_sdk_autoscaling as autoscaling;
use meshmirror_aws::aws_sdk_ec2 as ec2;
use meshmirror_aws::aws_sdk_sqs as sqs;
use meshmirror_aws::{AwsConfig, AwsProvider};
use meshmirror_provider::{
    GroupEventKind, GroupRef, HookDef, InstanceState, LifecycleAction, LifecycleKind, Outcome,
    Provider, ProviderError,
};
use meshmirror_testkit::aws::{AwsProxy, HoldState, LifecycleCall, Moto};
use serde_json::json;

const REGION: &str = "us-east-1";
/// moto's account (its queue URLs name it).
const ACCOUNT: &str = "123456789012";
const HEARTBEAT: &str = "RecordLifecycleActionHeartbeat";

struct Cloud {
    _moto: Moto,
    proxy: AwsProxy,
    asg: autoscaling::Client,
    ec2: ec2::Client,
    sqs: sqs::Client,
    queue_url: String,
    subnet: String,
}

async fn cloud() -> Cloud {
    let moto = Moto::start().await.unwrap_or_else(|e| panic!("{e}"));
    let proxy = AwsProxy::start(moto.authority())
        .await
        .expect("proxy starts");
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(autoscaling::config::Region::new(REGION))
        .credentials_provider(autoscaling::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .load()
        .await;
    let asg = autoscaling::Client::new(&shared);
    let ec2 = ec2::Client::new(&shared);
    let sqs = sqs::Client::new(&shared);
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap();
    let subnet = ec2
        .create_subnet()
        .vpc_id(vpc)
        .cidr_block("10.0.1.0/24")
        .availability_zone("us-east-1a")
        .send()
        .await
        .unwrap()
        .subnet
        .unwrap()
        .subnet_id
        .unwrap();
    asg.create_launch_configuration()
        .launch_configuration_name("lc")
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .send()
        .await
        .unwrap();
    let queue_url = sqs
        .create_queue()
        .queue_name("meshmirror-events")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    Cloud {
        _moto: moto,
        proxy,
        asg,
        ec2,
        sqs,
        queue_url,
        subnet,
    }
}

impl Cloud {
    fn provider(&self) -> AwsProvider {
        AwsProvider::new(AwsConfig {
            endpoint_url: Some(self.proxy.endpoint()),
            region: Some(REGION.into()),
            event_queue_url: Some(self.queue_url.clone()),
            static_credentials: Some(("testing".into(), "testing".into())),
            receive_wait: Duration::from_secs(1),
            ..AwsConfig::default()
        })
    }

    /// A group of `size` and its instance ids, sorted.
    async fn group(&self, name: &str, size: i32) -> (GroupRef, Vec<String>) {
        self.asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_configuration_name("lc")
            .min_size(0)
            .max_size(10)
            .desired_capacity(size)
            .vpc_zone_identifier(&self.subnet)
            .send()
            .await
            .unwrap();
        self.members_of(name).await
    }

    /// The group and its instance ids, sorted.
    async fn members_of(&self, name: &str) -> (GroupRef, Vec<String>) {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(name)
            .send()
            .await
            .unwrap();
        let mut ids: Vec<String> = out.auto_scaling_groups()[0]
            .instances()
            .iter()
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        ids.sort();
        let group = GroupRef::Aws {
            region: REGION.into(),
            name: name.into(),
        };
        (group, ids)
    }

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
    }

    async fn send(&self, body: String) {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
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
        out.attributes()
            .expect("queue attributes")
            .values()
            .map(|v| v.parse::<u64>().expect("a count"))
            .sum()
    }

    fn heartbeats(&self) -> Vec<LifecycleCall> {
        self.proxy
            .lifecycle_calls()
            .into_iter()
            .filter(|c| c.action == HEARTBEAT)
            .collect()
    }
}

/// An EventBridge envelope as AWS delivers it.
fn eventbridge(
    account: &str,
    region: &str,
    source: &str,
    detail_type: &str,
    detail: serde_json::Value,
) -> String {
    json!({
        "version": "0",
        "id": "e",
        "detail-type": detail_type,
        "source": source,
        "account": account,
        "time": "2025-01-01T00:00:00Z",
        "region": region,
        "resources": [],
        "detail": detail,
    })
    .to_string()
}

async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn lifecycle_hooks_are_the_groups_and_a_missing_group_is_not_found() {
    let cloud = cloud().await;
    let (web, _) = cloud.group("web", 1).await;
    cloud.hook("web", "drain", false, 300).await;
    cloud.hook("web", "ready", true, 300).await;
    cloud.group("other", 0).await;
    cloud.hook("other", "not-ours", false, 300).await;
    let provider = cloud.provider();

    let mut hooks = provider
        .lifecycle_hooks(&web)
        .await
        .unwrap()
        .expect("aws has hooks");
    hooks.sort_by(|a, b| a.name.cmp(&b.name));
    let def = |name: &str, kind| HookDef {
        name: name.into(),
        kind,
    };
    assert_eq!(
        hooks,
        vec![
            def("drain", LifecycleKind::Terminate),
            def("ready", LifecycleKind::Launch)
        ]
    );
    let missing = GroupRef::Aws {
        region: REGION.into(),
        name: "missing".into(),
    };
    let err = provider.lifecycle_hooks(&missing).await.unwrap_err();
    assert!(matches!(err, ProviderError::GroupNotFound(_)), "{err:?}");
}

/// A terminate hold by `drain` (heartbeat timeout 3 s: beats from 0.5 s).
async fn held(cloud: &Cloud) -> (GroupRef, String) {
    let (web, ids) = cloud.group("web", 1).await;
    cloud.hook("web", "drain", false, 3).await;
    cloud
        .proxy
        .hold(&ids[0], HoldState::TerminatingWait, "drain", None);
    (web, ids[0].clone())
}

#[tokio::test]
async fn heartbeats_stop_at_once_for_a_hook_no_longer_answered() {
    let cloud = cloud().await;
    let (web, leaving) = held(&cloud).await;
    let provider = cloud.provider();

    provider.answers_hooks(&web, &["drain"]);
    let members = provider.members(&web).await.unwrap();
    assert_eq!(
        members[0].lifecycle.as_ref().map(|a| a.hook.as_str()),
        Some("drain")
    );
    let first = wait_for("a heartbeat", async || cloud.heartbeats().first().cloned()).await;
    assert_eq!(first.instance_id.as_deref(), Some(leaving.as_str()));
    assert!(first.accepted);

    // The next pass answers no hook for the group.
    provider.answers_hooks(&web, &[]);
    let sent = cloud.heartbeats().len();
    // Beats were due every second; none may follow.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(cloud.heartbeats().len(), sent, "{:?}", cloud.heartbeats());
    // Nor after a pass that still sees the hold.
    provider.members(&web).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(cloud.heartbeats().len(), sent, "{:?}", cloud.heartbeats());
}

#[tokio::test]
async fn after_stand_down_no_heartbeat_is_sent_until_a_new_term() {
    let cloud = cloud().await;
    let (web, leaving) = held(&cloud).await;
    let provider = cloud.provider();

    provider.answers_hooks(&web, &["drain"]);
    provider.members(&web).await.unwrap();
    provider.stand_down();
    // The first heartbeat was due 0.5 s after the pass.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(cloud.heartbeats().is_empty(), "{:?}", cloud.heartbeats());

    // A new term keeps the hold alive again.
    provider.answers_hooks(&web, &["drain"]);
    provider.members(&web).await.unwrap();
    let beat = wait_for("a heartbeat in the new term", async || {
        cloud.heartbeats().first().cloned()
    })
    .await;
    assert_eq!(beat.instance_id.as_deref(), Some(leaving.as_str()));
}

#[tokio::test]
async fn a_token_the_cloud_refuses_is_retried_by_instance_id() {
    let cloud = cloud().await;
    let (web, ids) = cloud.group("web", 1).await;
    cloud.hook("web", "ready", true, 300).await;
    cloud.proxy.hold(
        &ids[0],
        HoldState::PendingWait,
        "ready",
        Some("the-real-token"),
    );
    let provider = cloud.provider();
    let action = LifecycleAction {
        group: web.clone(),
        instance_id: ids[0].clone(),
        kind: LifecycleKind::Launch,
        hook: "ready".into(),
        token: Some("a-forged-token".into()),
    };
    provider
        .complete_lifecycle(&action, Outcome::Continue)
        .await
        .unwrap();
    let calls: Vec<(Option<String>, bool)> = cloud
        .proxy
        .lifecycle_calls()
        .into_iter()
        .map(|c| (c.token, c.accepted))
        .collect();
    assert_eq!(
        calls,
        vec![(Some("a-forged-token".to_string()), false), (None, true)]
    );
    assert!(cloud.proxy.held().is_empty(), "the hold was answered");

    // Gone now: by token and then by id, AWS knows no such action, which
    // is not an error (answered before, or timed out).
    provider
        .complete_lifecycle(&action, Outcome::Continue)
        .await
        .unwrap();
    let calls = cloud.proxy.lifecycle_calls();
    assert_eq!(calls.len(), 4);
    assert!(calls[2..].iter().all(|c| !c.accepted));
}

#[tokio::test]
async fn a_spot_warning_alone_leaves_the_vm_in_the_mesh_until_ec2_says_it_goes() {
    let cloud = cloud().await;
    let (web, ids) = cloud.group("web", 2).await;
    let (spot, on_demand) = (&ids[0], &ids[1]);
    cloud.proxy.set_spot(spot);
    let provider = cloud.provider();
    let mut feed = provider.events().expect("an event feed");
    provider.members(&web).await.unwrap();

    for id in [spot, on_demand] {
        cloud
            .send(eventbridge(
                ACCOUNT,
                REGION,
                "aws.ec2",
                "EC2 Spot Instance Interruption Warning",
                json!({"instance-id": id, "instance-action": "terminate"}),
            ))
            .await;
    }
    let mut warned = Vec::new();
    for _ in 0..2 {
        let event = tokio::time::timeout(Duration::from_secs(30), feed.next())
            .await
            .expect("an event in time")
            .expect("the feed goes on");
        // A hint: the group is reconciled.
        assert_eq!(event.group, web);
        match event.kind {
            GroupEventKind::Interrupted { instance_id } => warned.push(instance_id),
            other => panic!("{other:?}"),
        }
        event.ack.ack();
    }
    warned.sort();
    assert_eq!(warned, ids);

    let state = |members: &[meshmirror_provider::Instance], id: &str| {
        members.iter().find(|m| m.id == id).unwrap().state
    };
    let members = provider.members(&web).await.unwrap();
    assert_eq!(
        state(&members, spot),
        InstanceState::Running,
        "a warning alone"
    );
    assert_eq!(state(&members, on_demand), InstanceState::Running);
    // EC2 was asked about the spot VM's request (moto has none for it), and
    // only about that one.
    assert_eq!(cloud.proxy.count("DescribeSpotInstanceRequests"), 1);

    // EC2 itself reports the VM going: out, though Auto Scaling still says
    // InService.
    cloud
        .ec2
        .stop_instances()
        .instance_ids(spot)
        .send()
        .await
        .unwrap();
    let members = provider.members(&web).await.unwrap();
    assert_eq!(state(&members, spot), InstanceState::Terminating);
    assert_eq!(state(&members, on_demand), InstanceState::Running);
}

#[tokio::test]
async fn messages_from_another_account_or_region_are_counted_and_deleted() {
    let cloud = cloud().await;
    let (web, ids) = cloud.group("web", 1).await;
    let provider = cloud.provider();
    let mut feed = provider.events().expect("an event feed");
    // A mirror names a group in us-east-1 (also the queue's region).
    provider.members(&web).await.unwrap();

    let launched = |account: &str, region: &str| {
        eventbridge(
            account,
            region,
            "aws.autoscaling",
            "EC2 Instance Launch Successful",
            json!({"AutoScalingGroupName": "web", "EC2InstanceId": ids[0]}),
        )
    };
    cloud.send(launched("999999999999", REGION)).await;
    cloud.send(launched(ACCOUNT, "ap-south-1")).await;
    // An EC2 event from an unmirrored region is not even looked up.
    cloud
        .send(eventbridge(
            ACCOUNT,
            "ap-south-1",
            "aws.ec2",
            "EC2 Instance State-change Notification",
            json!({"instance-id": "i-0123456789abcdef0", "state": "stopping"}),
        ))
        .await;
    // A hook's own notification names its account as AccountId.
    cloud
        .send(
            json!({
                "Origin": "AutoScalingGroup", "Destination": "EC2",
                "Service": "AWS Auto Scaling", "AccountId": "999999999999",
                "AutoScalingGroupName": "web", "LifecycleHookName": "drain",
                "EC2InstanceId": ids[0], "LifecycleActionToken": "t",
                "LifecycleTransition": "autoscaling:EC2_INSTANCE_TERMINATING",
            })
            .to_string(),
        )
        .await;
    cloud.send(launched(ACCOUNT, REGION)).await;

    let event = tokio::time::timeout(Duration::from_secs(30), feed.next())
        .await
        .expect("an event in time")
        .expect("the feed goes on");
    assert_eq!(
        event.kind,
        GroupEventKind::Launched {
            instance_id: ids[0].clone()
        }
    );
    event.ack.ack();
    wait_for("every message deleted", async || {
        (provider.stats().deleted == 5 && cloud.queued().await == 0).then_some(())
    })
    .await;
    let stats = provider.stats();
    assert_eq!(
        (stats.events, stats.malformed, stats.ignored),
        (1, 2, 2),
        "{stats:?}"
    );
    assert_eq!(cloud.proxy.count("DescribeAutoScalingInstances"), 0);
    // Nothing else came out of the feed.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), feed.next())
            .await
            .is_err()
    );
}

impl Cloud {
    /// A group of `size` in a subnet of its own big enough for it (a /20),
    /// and its instance ids.
    async fn large_group(&self, name: &str, size: i32, cidr: &str) -> (GroupRef, Vec<String>) {
        let vpc = self
            .ec2
            .describe_subnets()
            .subnet_ids(&self.subnet)
            .send()
            .await
            .unwrap()
            .subnets()[0]
            .vpc_id()
            .unwrap()
            .to_string();
        self.ec2
            .associate_vpc_cidr_block()
            .vpc_id(&vpc)
            .cidr_block(cidr)
            .send()
            .await
            .unwrap();
        let subnet = self
            .ec2
            .create_subnet()
            .vpc_id(vpc)
            .cidr_block(cidr)
            .availability_zone("us-east-1a")
            .send()
            .await
            .unwrap()
            .subnet
            .unwrap()
            .subnet_id
            .unwrap();
        self.asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_configuration_name("lc")
            .min_size(0)
            .max_size(size.max(1))
            .desired_capacity(size)
            .vpc_zone_identifier(subnet)
            .send()
            .await
            .unwrap();
        self.members_of(name).await
    }
}

/// A group's instances are listed by its tag, in pages of 1,000 (moto pages
/// by reservations and ignores the size, so only the count of calls is
/// asserted): 450 members cost one DescribeInstances, where one per 200 ids
/// cost three. A member whose tag is gone is still described, by id.
#[tokio::test]
async fn a_groups_instances_are_listed_by_its_tag_and_an_untagged_member_by_id() {
    let cloud = cloud().await;
    let (web, ids) = cloud.large_group("web", 450, "10.1.0.0/20").await;
    assert_eq!(ids.len(), 450);
    // Another group in the same region is not listed with it.
    cloud.large_group("other", 30, "10.2.0.0/20").await;
    let provider = cloud.provider();
    cloud.proxy.reset_counts();
    let members = provider.members(&web).await.unwrap();
    assert_eq!(members.len(), 450);
    assert!(members.iter().all(|m| m.private_ipv4.is_some()));
    assert_eq!(
        cloud.proxy.count("DescribeInstances"),
        1,
        "{:?}",
        cloud.proxy.counts()
    );

    cloud
        .ec2
        .delete_tags()
        .resources(&ids[7])
        .tags(
            ec2::types::Tag::builder()
                .key("aws:autoscaling:groupName")
                .build(),
        )
        .send()
        .await
        .unwrap();
    cloud.proxy.reset_counts();
    let members = provider.members(&web).await.unwrap();
    let untagged = members
        .iter()
        .find(|m| m.id == ids[7])
        .expect("still a member");
    assert!(untagged.private_ipv4.is_some(), "described by id");
    assert_eq!(
        cloud.proxy.count("DescribeInstances"),
        2,
        "the listing, then the one id"
    );
}

/// Not a test: a full pass's cloud calls and time by group size
/// (`cargo nextest run -p meshmirror-aws --run-ignored only bench_ --no-capture`).
#[tokio::test]
#[ignore = "benchmark: prints numbers, asserts none"]
#[allow(clippy::print_stdout)] // a benchmark's figures are its output
async fn bench_full_pass_calls_and_time_by_group_size() {
    for (size, cidr) in [
        (10, "10.1.0.0/20"),
        (100, "10.2.0.0/20"),
        (1000, "10.3.0.0/20"),
    ] {
        let cloud = cloud().await;
        let (web, _) = cloud.large_group("web", size, cidr).await;
        let provider = cloud.provider();
        provider.members(&web).await.unwrap();
        let mut times = Vec::new();
        cloud.proxy.reset_counts();
        let passes = 5;
        for _ in 0..passes {
            let started = std::time::Instant::now();
            let members = provider.members(&web).await.unwrap();
            times.push(started.elapsed());
            assert_eq!(members.len(), size as usize);
        }
        times.sort();
        let counts = cloud.proxy.counts();
        let per_pass =
            |action: &str| counts.get(action).copied().unwrap_or(0) as f64 / passes as f64;
        println!(
            "AWS full pass, {size} instances: DescribeAutoScalingGroups {}, DescribeInstances {} per pass; time p50 {:?}, max {:?}",
            per_pass("DescribeAutoScalingGroups"),
            per_pass("DescribeInstances"),
            times[passes / 2],
            times[passes - 1]
        );
    }
}
