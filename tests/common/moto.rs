//! moto with a VPC, a subnet, a launch configuration and the event queue,
//! the test kit's proxy in front of it for meshmirror, and what the suites
//! that run the AWS provider against it share (tests/aws.rs,
//! tests/istiod_bench.rs). Included with `#[path]`, so it is not a suite.

#![allow(dead_code)]

use meshmirror::clouds::aws::AwsArgs;
use meshmirror_aws::aws_config::{self, BehaviorVersion};
use meshmirror_aws::aws_sdk_autoscaling as autoscaling;
use meshmirror_aws::aws_sdk_ec2 as ec2;
use meshmirror_aws::aws_sdk_sqs as sqs;
use meshmirror_testkit::aws::{AwsProxy, Moto};
use serde_json::{Value, json};

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

/// moto, the proxy in front of it, and clients that talk to moto directly
/// (so the proxy counts only meshmirror's calls).
pub struct Cloud {
    pub moto: Moto,
    pub proxy: AwsProxy,
    pub asg: autoscaling::Client,
    pub ec2: ec2::Client,
    pub sqs: sqs::Client,
    pub queue_url: String,
    pub subnet: String,
}

pub async fn cloud() -> Cloud {
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
        .cidr_block("10.0.0.0/18")
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
        moto,
        proxy,
        asg,
        ec2,
        sqs,
        queue_url,
        subnet,
    }
}

impl Cloud {
    pub async fn group(&self, name: &str, size: i32, tags: &[(&str, &str)]) {
        let mut req = self
            .asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_configuration_name("lc")
            .min_size(0)
            .max_size(6000)
            .desired_capacity(size)
            .vpc_zone_identifier(&self.subnet);
        for (k, v) in tags {
            req = req.tags(
                autoscaling::types::Tag::builder()
                    .key(*k)
                    .value(*v)
                    .propagate_at_launch(true)
                    .build(),
            );
        }
        req.send().await.unwrap();
    }

    pub async fn set_capacity(&self, group: &str, n: i32) {
        self.asg
            .set_desired_capacity()
            .auto_scaling_group_name(group)
            .desired_capacity(n)
            .send()
            .await
            .unwrap();
    }

    /// The group's InService instance ids as moto sees them, sorted.
    pub async fn instances(&self, group: &str) -> Vec<String> {
        let out = self
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group)
            .send()
            .await
            .unwrap();
        let mut ids: Vec<String> = out.auto_scaling_groups()[0]
            .instances()
            .iter()
            .filter(|i| i.lifecycle_state().map(|s| s.as_str()) == Some("InService"))
            .filter_map(|i| i.instance_id().map(str::to_string))
            .collect();
        ids.sort();
        ids
    }

    pub async fn private_ips(&self, ids: &[String]) -> Vec<String> {
        let out = self
            .ec2
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .unwrap();
        let mut ips: Vec<String> = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| i.private_ip_address().map(str::to_string))
            .collect();
        ips.sort();
        ips
    }

    pub async fn send(&self, body: &str) {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
    }

    pub fn args(&self) -> AwsArgs {
        AwsArgs {
            aws_endpoint_url: Some(self.proxy.endpoint()),
            aws_region: Some(REGION.into()),
            aws_event_queue_url: Some(self.queue_url.clone()),
            aws_accounts: Vec::new(),
            static_credentials: Some(("testing".into(), "testing".into())),
        }
    }
}

/// A verbatim EventBridge sample from the provider's fixtures with its
/// detail fields, region and account replaced (meshmirror accepts only the
/// queue's account, moto's; some samples carry a placeholder).
pub fn fixture_event(file: &str, detail: Value) -> String {
    let path = format!(
        "{}/providers/aws/fixtures/{file}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR")
    );
    let mut event: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    event["region"] = json!(REGION);
    event["account"] = json!(ACCOUNT);
    for (k, v) in detail.as_object().unwrap() {
        event["detail"][k] = v.clone();
    }
    event.to_string()
}

/// EventBridge's "EC2 Instance Launch Successful" for `instance` of `group`.
pub fn launch_successful(group: &str, instance: &str) -> String {
    fixture_event(
        "eventbridge-asg-launch-successful.json",
        json!({"AutoScalingGroupName": group, "EC2InstanceId": instance}),
    )
}
