//! The pure core at fleet size: `desired` and `plan` for 10,000 instances x 2
//! workloads, in steady state (actual == desired) and from empty. Prints the
//! median of several runs; asserts nothing about time.
//!
//! `cargo bench -p meshmirror --no-default-features --features demo --bench core`
//! (`MESHMIRROR_BENCH=short` or `-- --short` for CI: fewer runs).

#![allow(clippy::print_stdout)]

use std::collections::{BTreeMap, BTreeSet};
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::DynamicObject;
use kube::runtime::watcher;
use meshmirror::cluster::Owner;
use meshmirror::cluster::entry_cache::EntryCache;
use meshmirror::cluster::kube::{entry_manifest, owned_entry};
use meshmirror::core::config;
use meshmirror::core::desired::{self, Desired, DesiredEntry, Mirror};
use meshmirror::core::names::entry_name;
use meshmirror::core::plan::{self, ActualEntry, DeletePolicy};
use meshmirror::crd::{ScalingGroupMirrorSpec, SyncPolicy};
use meshmirror::workloadentry::EntryVersion;
use meshmirror::workloadentry::keys;
use meshmirror_provider::{Health, Instance, InstanceState};
use sha2::{Digest, Sha256};

#[path = "common/mode.rs"]
mod mode;

const INSTANCES: usize = 10_000;

const SPEC: &str = "
provider: {sim: {group: web}}
copyTags: [team, tier]
workloads:
  - name: api
    labels: {app: api, version: v1}
    ports: {http: 8080, grpc: 9090}
    serviceAccount: api-sa
  - name: exporter
    labels: {app: exporter}
    ports: {metrics: 9100}
    serviceAccount: exporter-sa
";

fn fleet(n: usize) -> Vec<Instance> {
    (0..n)
        .map(|i| {
            let mut inst = Instance::running(
                format!("i-{i:017x}"),
                Ipv4Addr::new(
                    10,
                    (i / 65536) as u8,
                    (i / 256 % 256) as u8,
                    (i % 256) as u8,
                ),
            );
            inst.ipv6 = Some(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0,
                0,
                0,
                0,
                (i >> 16) as u16,
                i as u16,
            ));
            inst.region = Some("us-east-1".into());
            inst.zone = Some(format!("us-east-1{}", ['a', 'b', 'c'][i % 3]));
            inst.state = InstanceState::Running;
            inst.health = Health::Healthy;
            inst.tags = BTreeMap::from([
                ("team".to_string(), "payments".to_string()),
                ("tier".to_string(), format!("t{}", i % 4)),
                ("Name".to_string(), format!("web-{i}")),
            ]);
            inst
        })
        .collect()
}

/// What the API server holds once `desired` was applied.
fn applied(desired: &Desired) -> Vec<ActualEntry> {
    desired
        .entries
        .iter()
        .map(|e| {
            let mut annotations = e.annotations.clone();
            annotations.insert(keys::APPLIED_HASH.into(), e.hash.clone());
            ActualEntry {
                name: e.name.clone(),
                labels: e.labels.clone(),
                annotations,
                spec: e.spec.clone(),
                healthy: e.healthy,
            }
        })
        .collect()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration, Duration) {
    let samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let started = Instant::now();
            black_box(f());
            started.elapsed()
        })
        .collect();
    let min = *samples.iter().min().unwrap_or(&Duration::ZERO);
    let max = *samples.iter().max().unwrap_or(&Duration::ZERO);
    (median(samples), min, max)
}

fn report(what: &str, (median, min, max): (Duration, Duration, Duration), per: usize) {
    println!(
        "{what:<46} median {:>8.2} ms  (min {:>7.2}, max {:>7.2})  {:>6.2} us/instance",
        median.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e6 / per as f64,
    );
}

/// The content hash as the first release computed it: a serde_json::Value
/// tree of clones, rendered to a String, then hashed. A replica, for the
/// breakdown below.
fn hash_via_value(e: &DesiredEntry) -> String {
    let body = serde_json::json!([e.labels, e.annotations, e.spec, e.healthy]);
    let digest = Sha256::digest(body.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// 10,000 entries as the controller's watch cache holds them: 100 mirrors of
/// 100 instances, each entry as the API server serves it after a server-side
/// apply (uid, resourceVersion, and a managedFields record of about 800 bytes).
fn cache(with_managed_fields: bool) -> (Vec<Arc<DynamicObject>>, Owner) {
    let spec: ScalingGroupMirrorSpec = serde_yaml::from_str(
        "provider: {sim: {group: g}}\nworkloads: [{name: app, labels: {app: web}, ports: {http: 8080}, serviceAccount: app}]\n",
    )
    .expect("spec");
    let config = config::validate(&spec).expect("valid");
    let owners: Vec<Owner> = (0..100)
        .map(|m| Owner {
            namespace: format!("fleet-{}", m % 10),
            name: format!("m{m:03}"),
            uid: format!("00000000-0000-4000-8000-{m:012}"),
        })
        .collect();
    let mut out = Vec::with_capacity(10_000);
    for (m, owner) in owners.iter().enumerate() {
        let mirror = Mirror {
            name: &owner.name,
            spec: &spec,
            config: &config,
            incumbents: &BTreeSet::new(),
        };
        let members: Vec<Instance> = fleet(100)
            .into_iter()
            .map(|mut i| {
                i.id = format!("i-{m:03}{}", i.id);
                i
            })
            .collect();
        for e in desired::desired(mirror, &BTreeMap::new(), &members).entries {
            let mut json = entry_manifest(EntryVersion::V1, owner, &e);
            let meta = json["metadata"].as_object_mut().expect("metadata");
            meta.insert("uid".into(), format!("{:032x}", out.len()).into());
            meta.insert(
                "resourceVersion".into(),
                (out.len() + 1000).to_string().into(),
            );
            meta.insert("generation".into(), 1.into());
            meta.insert("creationTimestamp".into(), "2026-01-01T00:00:00Z".into());
            if with_managed_fields {
                let fields = |keys: Vec<&String>| {
                    serde_json::Value::Object(
                        keys.into_iter()
                            .map(|k| (format!("f:{k}"), serde_json::json!({})))
                            .collect(),
                    )
                };
                let v1 = serde_json::json!({
                    "f:metadata": {
                        "f:annotations": fields(meta["annotations"].as_object().map(|o| o.keys().collect()).unwrap_or_default()),
                        "f:labels": fields(meta["labels"].as_object().map(|o| o.keys().collect()).unwrap_or_default()),
                        "f:ownerReferences": {format!("k:{{\"uid\":\"{}\"}}", owner.uid): {}},
                    },
                    "f:spec": {"f:address": {}, "f:labels": {"f:app": {}, "f:service.istio.io/workload-name": {}},
                               "f:locality": {}, "f:ports": {"f:http": {}}, "f:serviceAccount": {}},
                });
                meta.insert(
                    "managedFields".into(),
                    serde_json::json!([{"manager": "meshmirror", "operation": "Apply",
                        "apiVersion": "networking.istio.io/v1", "time": "2026-01-01T00:00:00Z",
                        "fieldsType": "FieldsV1", "fieldsV1": v1}]),
                );
            }
            out.push(Arc::new(
                serde_json::from_value::<DynamicObject>(json).expect("an entry"),
            ));
        }
    }
    (out, owners[42].clone())
}

/// This process's resident memory, MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() {
    let mode = mode::Mode::from_env();
    let runs = if mode.short { 3 } else { 15 };
    // Measured first, while the heap is fresh: freed memory would be reused
    // and hide the growth.
    let before = rss_mib();
    let stripped = cache(false).0;
    let without = rss_mib() - before;
    let before = rss_mib();
    let (objects, owner) = cache(true);
    let with = rss_mib() - before;
    let before = rss_mib();
    let entry_cache = EntryCache::default();
    entry_cache.handle(watcher::Event::Init);
    for o in &objects {
        entry_cache.handle(watcher::Event::InitApply(o.as_ref().clone()));
    }
    entry_cache.handle(watcher::Event::InitDone);
    let slim = rss_mib() - before;
    drop(stripped);
    let spec: ScalingGroupMirrorSpec = serde_yaml::from_str(SPEC).expect("bench spec parses");
    let config = config::validate(&spec).expect("bench spec is valid");
    let incumbents = BTreeSet::new();
    let mirror = Mirror {
        name: "web",
        spec: &spec,
        config: &config,
        incumbents: &incumbents,
    };
    let groups = BTreeMap::new();
    let members = fleet(INSTANCES);
    let policy = DeletePolicy {
        policy: SyncPolicy::Sync,
        max_per_pass: 100,
    };
    let leaving = BTreeSet::new();

    let want = desired::desired(mirror, &groups, &members);
    assert_eq!(want.entries.len(), INSTANCES * 2, "2 entries per instance");
    let actual = applied(&want);
    let steady = plan::plan(&want.entries, &actual, &leaving, policy);
    assert!(
        steady.is_empty(),
        "steady state plans nothing: {} writes",
        steady.writes()
    );
    let empty = plan::plan(&want.entries, &[], &leaving, policy);
    assert_eq!(empty.creates.len(), INSTANCES * 2);

    println!(
        "meshmirror pure core: {INSTANCES} instances x 2 workloads = {} entries, {runs} runs ({} mode); load average {}",
        want.entries.len(),
        mode.name(),
        load_average()
    );
    report(
        "desired (10k instances -> 20k entries)",
        time(runs, || desired::desired(mirror, &groups, &members)),
        INSTANCES,
    );
    report(
        "plan, steady state (actual == desired)",
        time(runs, || {
            plan::plan(&want.entries, &actual, &leaving, policy)
        }),
        INSTANCES,
    );
    report(
        "plan, from empty (20k creates)",
        time(runs, || plan::plan(&want.entries, &[], &leaving, policy)),
        INSTANCES,
    );
    report(
        "desired + plan, steady state",
        time(runs, || {
            let d = desired::desired(mirror, &groups, &members);
            plan::plan(&d.entries, &actual, &leaving, policy).writes()
        }),
        INSTANCES,
    );
    report(
        "desired + plan, from empty",
        time(runs, || {
            let d = desired::desired(mirror, &groups, &members);
            plan::plan(&d.entries, &[], &leaving, policy).writes()
        }),
        INSTANCES,
    );

    // Where desired's time goes (a breakdown, not part of the pass).
    for e in &want.entries {
        assert_eq!(
            hash_via_value(e),
            e.hash,
            "the streamed hash of src/core/desired.rs hashes the same bytes"
        );
    }
    println!("breakdown of desired, per 20k entries:");
    report(
        "  entry_name",
        time(runs, || {
            want.entries
                .iter()
                .map(|e| entry_name("web", &e.workload, &e.instance_id).len())
                .sum::<usize>()
        }),
        INSTANCES,
    );
    report(
        "  content hash via a json! Value (0.1)",
        time(runs, || want.entries.iter().map(hash_via_value).count()),
        INSTANCES,
    );
    report(
        "  content hash streamed into the hasher (now)",
        time(runs, || {
            want.entries
                .iter()
                .map(|e| desired::content_hash(&e.labels, &e.annotations, &e.spec, e.healthy).len())
                .sum::<usize>()
        }),
        INSTANCES,
    );
    report(
        "  deep clone of every DesiredEntry",
        time(runs, || want.entries.clone()),
        INSTANCES,
    );

    println!(
        "watch cache of 10k entries (100 mirrors x 100): RSS +{with:.1} MiB as DynamicObjects with managedFields, +{without:.1} MiB without, +{slim:.1} MiB in the EntryCache"
    );
    assert_eq!(
        entry_cache.len(),
        INSTANCES,
        "the EntryCache holds every entry"
    );
    let owned = objects
        .iter()
        .filter_map(|o| owned_entry(o, &owner))
        .count();
    assert_eq!(owned, 100, "one mirror owns 100 of them");
    assert_eq!(entry_cache.owned(&owner).len(), 100, "and the index agrees");
    println!("the pass's read of its own entries (one mirror of 100, of 10k):");
    report(
        "  owned_entry over every DynamicObject (0.1)",
        time(runs, || {
            objects
                .iter()
                .filter_map(|o| owned_entry(o, &owner))
                .count()
        }),
        100,
    );
    report(
        "  EntryCache::owned (indexed by owner, now)",
        time(runs, || entry_cache.owned(&owner).len()),
        100,
    );
    println!("load average at the end: {}", load_average());
}
