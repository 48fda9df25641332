//! Prints the AWS provider's event latency (a message sent to the queue
//! until the provider's pass lists the new instance) over 100 events, and its
//! API calls per pass for groups of 10, 100 and 1,000 instances, against moto
//! through the test kit's proxy (which counts calls). Not a timed test:
//! numbers are printed, nothing is asserted. Run with
//! `cargo bench -p meshmirror-aws` (moto_server on PATH, or MOTO_ENDPOINT).
//! The end-to-end event-to-WorkloadEntry latency is printed by the ignored
//! test `bench_event_to_entry_latency` in tests/aws.rs.

#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use meshmirror_aws::aws_config::{self, BehaviorVersion};
use meshmirror_aws::aws_sdk_autoscaling as autoscaling;
use meshmirror_aws::aws_sdk_ec2 as ec2;
use meshmirror_aws::aws_sdk_sqs as sqs;
use meshmirror_aws::{AwsConfig, AwsProvider};
use meshmirror_provider::{GroupRef, Provider};
use meshmirror_testkit::aws::{AwsProxy, Moto};

const REGION: &str = "us-east-1";
/// moto's account, which its queue URLs name (events must come from it).
const ACCOUNT: &str = "123456789012";

#[tokio::main]
async fn main() {
    let moto = Moto::start().await.unwrap_or_else(|e| panic!("{e}"));
    let proxy = AwsProxy::start(moto.authority()).await.expect("proxy");
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(moto.endpoint())
        .region(autoscaling::config::Region::new(REGION))
        .credentials_provider(autoscaling::config::Credentials::new(
            "testing", "testing", None, None, "bench",
        ))
        .load()
        .await;
    let asg = autoscaling::Client::new(&shared);
    let ec2c = ec2::Client::new(&shared);
    let sqsc = sqs::Client::new(&shared);
    let vpc = ec2c
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap()
        .vpc_id
        .unwrap();
    let subnet = ec2c
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
    let queue_url = sqsc
        .create_queue()
        .queue_name("bench")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let config = AwsConfig {
        endpoint_url: Some(proxy.endpoint()),
        region: Some(REGION.into()),
        event_queue_url: Some(queue_url.clone()),
        static_credentials: Some(("testing".into(), "testing".into())),
        // Every pass fetches: no sharing within this single-mirror bench.
        share_window: Duration::ZERO,
        ..AwsConfig::default()
    };
    let provider = AwsProvider::new(config);

    // Event latency at the provider: message sent -> event out of the
    // feed -> the next pass lists the new instance.
    let group_name = "bench-events";
    asg.create_auto_scaling_group()
        .auto_scaling_group_name(group_name)
        .launch_configuration_name("lc")
        .min_size(0)
        .max_size(5000)
        .desired_capacity(1)
        .vpc_zone_identifier(&subnet)
        .send()
        .await
        .unwrap();
    let group = GroupRef::Aws {
        region: REGION.into(),
        name: group_name.into(),
    };
    let mut feed = provider.events().expect("event feed");
    let mut known: Vec<String> = provider
        .members(&group)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    let mut to_event = Vec::new();
    let mut to_member = Vec::new();
    for i in 0..100 {
        asg.set_desired_capacity()
            .auto_scaling_group_name(group_name)
            .desired_capacity(2 + i)
            .send()
            .await
            .unwrap();
        let out = asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(group_name)
            .send()
            .await
            .unwrap();
        let new = out.auto_scaling_groups()[0]
            .instances()
            .iter()
            .filter_map(|x| x.instance_id())
            .find(|id| !known.iter().any(|k| k == id))
            .unwrap()
            .to_string();
        let body = format!(
            r#"{{"version":"0","id":"{i}","detail-type":"EC2 Instance Launch Successful","source":"aws.autoscaling","account":"{ACCOUNT}","region":"{REGION}","resources":[],"detail":{{"AutoScalingGroupName":"{group_name}","EC2InstanceId":"{new}"}}}}"#
        );
        let sent = Instant::now();
        sqsc.send_message()
            .queue_url(&queue_url)
            .message_body(body)
            .send()
            .await
            .unwrap();
        let event = feed.next().await.expect("an event");
        to_event.push(sent.elapsed());
        let members = provider.members(&event.group).await.unwrap();
        assert!(members.iter().any(|m| m.id == new));
        to_member.push(sent.elapsed());
        event.ack.ack();
        known.push(new);
    }
    println!(
        "event latency over {} events (provider level):",
        to_event.len()
    );
    println!("  queue -> event:  {}", percentiles(&mut to_event));
    println!("  queue -> member: {}", percentiles(&mut to_member));
    let stats = provider.stats();
    println!(
        "  events {}, deleted {}, malformed {}",
        stats.events, stats.deleted, stats.malformed
    );
    println!("API calls per pass (one mirror; moto through the proxy):");
    for n in [10, 100, 1000] {
        let name = format!("bench-{n}");
        asg.create_auto_scaling_group()
            .auto_scaling_group_name(&name)
            .launch_configuration_name("lc")
            .min_size(0)
            .max_size(5000)
            .desired_capacity(n)
            .vpc_zone_identifier(&subnet)
            .send()
            .await
            .unwrap();
        let group = GroupRef::Aws {
            region: REGION.into(),
            name,
        };
        let members = provider.members(&group).await.unwrap();
        assert_eq!(members.len(), n as usize);
        proxy.reset_counts();
        let passes = 3;
        let started = Instant::now();
        for _ in 0..passes {
            provider.members(&group).await.unwrap();
        }
        let took = started.elapsed() / passes;
        let counts = proxy.counts();
        let total: u64 = counts.values().sum();
        let detail: Vec<String> = counts
            .iter()
            .map(|(k, v)| format!("{k} {:.1}", *v as f64 / passes as f64))
            .collect();
        println!(
            "  {n:>5} instances: {:.1} calls/pass ({}); {:?}/pass in moto",
            total as f64 / passes as f64,
            detail.join(", "),
            took
        );
    }
}

fn percentiles(samples: &mut [Duration]) -> String {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    format!("p50 {:?}, p99 {:?}, max {:?}", at(0.5), at(0.99), at(1.0))
}
