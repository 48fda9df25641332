//! How long a new VM takes to reach a pod's proxy (issue 19): from a cloud
//! scale-out to the new endpoint in the EDS that a real istiod sends a
//! sidecar, on the run's shared real control plane.
//!
//! Benchmarks, not tests: ignored, they print figures and assert only that
//! what arrives is right (exactly the group's VMs, each change seen).
//!
//! ```sh
//! state=$(mktemp -d /tmp/mm-kube.XXXX); tests/kube/up.sh $state
//! MESHMIRROR_KUBE=real MESHMIRROR_KUBE_SHARED=$state \
//!   cargo nextest run [--release] --test istiod_bench --run-ignored only --no-capture
//! tests/kube/down.sh $state
//! ```
//!
//! `MESHMIRROR_BENCH_CHANGES` sets the number of scale-outs (default 50).
//!
//! Each change is timed from the moment before it is made (the sim's new
//! instance; for AWS, the launch event sent to the SQS queue after moto
//! launched the instance, as `tests/aws.rs`'s bench times it) to
//!
//! - the WorkloadEntry's arrival in a watch on the API server (through the
//!   test kit's proxy, as the tests see it), and
//! - the first EDS response to the pod's sidecar that holds the new
//!   endpoint (the xDS client is connected and subscribed to the cluster
//!   before the change, so this is istiod's push, not a first fetch).
//!
//! The mirrors' interval is 10 minutes: only the clouds' events drive the
//! passes.

#![allow(clippy::print_stdout)]

mod common;
#[path = "common/istiod.rs"]
mod istiod_common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Harness, mirror_yaml};
use futures::StreamExt;
use istiod_common::{pod_client, unique_ns};
use kube::runtime::watcher;
use meshmirror_sim::{SimCloud, SimInstance};
use meshmirror_testkit::xds::{EdsEndpoint, Istiod, XdsClient};

/// One workload `api` behind a ServiceEntry: clients use port 80, the VMs
/// listen on 8080.
const API: &str = "  workloads:
    - name: api
      labels: {app: api}
      ports: {http: 8080}
      serviceAccount: api-sa
      service: {kind: ServiceEntry, ports: {http: {number: 80}}}
";

fn changes() -> usize {
    std::env::var("MESHMIRROR_BENCH_CHANGES")
        .ok()
        .map(|n| {
            n.parse()
                .expect("MESHMIRROR_BENCH_CHANGES: a number of changes")
        })
        .unwrap_or(50)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// When each entry address first arrived in a watch of the namespace's
/// WorkloadEntries.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<BTreeMap<String, Instant>>>);

impl Arrivals {
    /// Watches the WorkloadEntries of `ns` (as the tests see it) until
    /// dropped with the returned task.
    fn watch(h: &Harness, ns: &str) -> (Arrivals, tokio::task::JoinHandle<()>) {
        let arrivals = Arrivals::default();
        let api = h.entries_api(ns);
        let task = {
            let arrivals = arrivals.clone();
            tokio::spawn(async move {
                let mut events = watcher(api, watcher::Config::default()).boxed();
                while let Some(event) = events.next().await {
                    let now = Instant::now();
                    let objects = match event {
                        Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => vec![o],
                        _ => continue,
                    };
                    let mut seen = arrivals.0.lock().unwrap_or_else(|e| e.into_inner());
                    for o in objects {
                        if let Some(address) = o.data["spec"]["address"].as_str() {
                            seen.entry(address.to_string()).or_insert(now);
                        }
                    }
                }
            })
        };
        (arrivals, task)
    }

    fn get(&self, address: &str) -> Option<Instant> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(address)
            .copied()
    }
}

/// Latencies of one bench: to the entry, and to the endpoint in EDS.
#[derive(Default)]
struct Samples {
    entry: Vec<Duration>,
    eds: Vec<Duration>,
    /// From the entry's arrival to the endpoint in EDS.
    istiod: Vec<Duration>,
}

impl Samples {
    fn add(&mut self, started: Instant, entry: Option<Instant>, eds: Instant) {
        self.eds.push(eds - started);
        if let Some(entry) = entry {
            self.entry.push(entry.saturating_duration_since(started));
            self.istiod.push(eds.saturating_duration_since(entry));
        }
    }

    fn print(&mut self, what: &str) {
        let line = |name: &str, v: &mut Vec<Duration>| {
            v.sort();
            if v.is_empty() {
                return format!("{name}: no samples");
            }
            let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
            format!(
                "{name}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples)",
                at(0.5).as_secs_f64() * 1e3,
                at(0.99).as_secs_f64() * 1e3,
                at(1.0).as_secs_f64() * 1e3,
                v.len()
            )
        };
        println!("{what}");
        println!(
            "  {}",
            line("cloud change -> endpoint in EDS", &mut self.eds)
        );
        println!(
            "  {}",
            line("cloud change -> WorkloadEntry (watch)", &mut self.entry)
        );
        println!(
            "  {}",
            line("WorkloadEntry (watch) -> endpoint in EDS", &mut self.istiod)
        );
    }
}

fn addresses(endpoints: &[EdsEndpoint]) -> BTreeSet<String> {
    endpoints.iter().map(|e| e.address.clone()).collect()
}

/// Waits for EDS of `cluster` to hold exactly `expected` (each on `port`),
/// and returns when it did.
async fn wait_exactly(
    pod: &XdsClient,
    cluster: &str,
    what: &str,
    expected: &BTreeSet<String>,
    port: u32,
) -> Instant {
    pod.wait_endpoints(cluster, what, |endpoints| {
        endpoints.len() == expected.len()
            && addresses(endpoints) == *expected
            && endpoints.iter().all(|e| e.port == port)
    })
    .await;
    Instant::now()
}

/// Not a test: scale-outs of a simulated group, one at a time, each timed
/// to the new endpoint in a pod's EDS.
#[tokio::test]
#[ignore = "benchmark: prints numbers, asserts none"]
async fn bench_sim_scale_out_to_eds() {
    let istiod = Istiod::shared().await;
    let sim = SimCloud::new();
    sim.ensure_group("web", "us-east-1");
    let ip = |i: usize| Ipv4Addr::new(10, 9, (i / 250) as u8, (i % 250 + 1) as u8);
    let initial = 3;
    for i in 0..initial {
        sim.add_instance(
            "web",
            SimInstance::running(format!("i-{i:03}"), ip(i)).with_zone("us-east-1a"),
        )
        .unwrap();
    }
    let h = Harness::start(sim).await;
    let ns = unique_ns(&h, "bench-sim");
    h.create_namespace(&ns).await;
    let spec = format!("{API}  sync: {{interval: 10m}}\n");
    h.create_mirror(&mirror_yaml(&ns, "web", &spec)).await;
    let cluster = format!("outbound|80||api.{ns}.svc.cluster.local");
    let (arrivals, watch) = Arrivals::watch(&h, &ns);
    let pod = pod_client(&h, &istiod).await;
    let mut expected: BTreeSet<String> = (0..initial).map(|i| ip(i).to_string()).collect();
    wait_exactly(&pod, &cluster, "the first VMs", &expected, 8080).await;

    let n = changes();
    let load_before = load_average();
    let mut samples = Samples::default();
    for i in initial..initial + n {
        let address = ip(i).to_string();
        expected.insert(address.clone());
        let started = Instant::now();
        h.sim
            .add_instance(
                "web",
                SimInstance::running(format!("i-{i:03}"), ip(i)).with_zone("us-east-1a"),
            )
            .unwrap();
        let eds = wait_exactly(
            &pod,
            &cluster,
            &format!("{address} added to the group"),
            &expected,
            8080,
        )
        .await;
        samples.add(started, arrivals.get(&address), eds);
        // A pause, so that each change is a push of its own rather than
        // one debounced with the last.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    watch.abort();
    samples.print(&format!(
        "sim: {n} scale-outs of one VM ({initial} to {} VMs), load average {load_before} before, {} after",
        initial + n,
        load_average()
    ));
}

#[cfg(feature = "aws")]
#[path = "common/moto.rs"]
mod moto;

#[cfg(feature = "aws")]
mod aws {
    //! The same against moto, with the SQS event path (as tests/aws.rs).

    use super::moto::{REGION, cloud, launch_successful};
    use super::*;
    use meshmirror::app::RunOptions;
    use meshmirror::clouds::CloudArgs;

    /// Not a test: scale-outs of an Auto Scaling group in moto, one at a
    /// time, each announced by its launch event on the SQS queue, each
    /// timed from the event to the new endpoint in a pod's EDS.
    #[tokio::test]
    #[ignore = "benchmark: prints numbers, asserts none"]
    async fn bench_aws_scale_out_to_eds() {
        let istiod = Istiod::shared().await;
        let initial = 3;
        let cloud = cloud().await;
        cloud.group("web", initial, &[]).await;
        let h = Harness::without_controller(SimCloud::new()).await;
        let opts = RunOptions {
            kube_qps: 0.0,
            clouds: CloudArgs {
                aws: cloud.args(),
                ..CloudArgs::default()
            },
            allow_all_groups: true,
            ..RunOptions::default()
        };
        let _controller = h.spawn_controller("aws", h.service.clone(), opts);
        let ns = unique_ns(&h, "bench-aws");
        h.create_namespace(&ns).await;
        let yaml = format!(
            "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata:\n  name: web\n  namespace: {ns}\nspec:\n  provider:\n    aws:\n      region: {REGION}\n      autoScalingGroupName: web\n  sync: {{interval: 10m}}\n{API}"
        );
        h.create_mirror(&yaml).await;
        let cluster = format!("outbound|80||api.{ns}.svc.cluster.local");
        let (arrivals, watch) = Arrivals::watch(&h, &ns);
        let pod = pod_client(&h, &istiod).await;
        let mut known = cloud.instances("web").await;
        let mut expected: BTreeSet<String> = cloud.private_ips(&known).await.into_iter().collect();
        wait_exactly(&pod, &cluster, "the first VMs", &expected, 8080).await;

        let n = changes();
        let load_before = load_average();
        let mut samples = Samples::default();
        for i in 0..n {
            cloud.set_capacity("web", initial + 1 + i as i32).await;
            let new = cloud
                .instances("web")
                .await
                .into_iter()
                .find(|id| !known.contains(id))
                .expect("moto launched an instance");
            let address = cloud
                .private_ips(std::slice::from_ref(&new))
                .await
                .pop()
                .expect("the new instance's address");
            expected.insert(address.clone());
            let started = Instant::now();
            cloud.send(&launch_successful("web", &new)).await;
            let eds = wait_exactly(
                &pod,
                &cluster,
                &format!("{new} ({address}) launched"),
                &expected,
                8080,
            )
            .await;
            samples.add(started, arrivals.get(&address), eds);
            known.push(new);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        watch.abort();
        samples.print(&format!(
            "AWS (moto, SQS events): {n} scale-outs of one VM ({initial} to {} VMs), load average {load_before} before, {} after",
            initial as usize + n,
            load_average()
        ));
    }
}
