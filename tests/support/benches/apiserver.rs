//! Throughput of the fake API server through the real kube client: creates and
//! updates of validated WorkloadEntries with 10 watchers attached, then lists;
//! and of its server-side apply alone, in process. Prints figures; asserts
//! nothing about time. `cargo bench -p meshmirror-testkit`
//! (`BENCH_OBJECTS=N` to change the 20,000 objects).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{
    Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use meshmirror_testkit::ApiServer;
use meshmirror_testkit::ssa::{self, Writer};
use serde_json::json;

const WATCHERS: usize = 10;
const CONCURRENCY: usize = 64;

fn entry(i: usize) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
        "metadata": {"name": format!("vm-{i:06}"), "labels": {"app": "bench", "shard": (i % 10).to_string()}},
        "spec": {"address": format!("10.{}.{}.{}", i / 65536 % 256, i / 256 % 256, i % 256),
                 "labels": {"app": "bench"}, "ports": {"http": 8080}, "serviceAccount": "bench"},
    }))
    .expect("valid object")
}

#[allow(clippy::print_stdout)]
fn report(what: &str, n: usize, took: Duration) {
    println!(
        "{what:<44} {n:>7} in {:>7.2}s = {:>8.0}/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}

fn main() {
    let objects: usize = std::env::var("BENCH_OBJECTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    applies_in_process();
    rt.block_on(run(objects));
}

/// Server-side apply of one WorkloadEntry over and over, without HTTP (what
/// a unit test once asserted a time limit on).
fn applies_in_process() {
    let writer = |time| Writer {
        manager: "meshmirror",
        api_version: "networking.istio.io/v1",
        subresource: None,
        time,
    };
    let mut config = serde_json::to_value(entry(0)).expect("json");
    let mut live = ssa::apply(None, &config, &writer("t0"), false).expect("apply");
    live["metadata"]["resourceVersion"] = json!("1");
    let n = 2_000;
    let t = Instant::now();
    for i in 0..n {
        config["spec"]["address"] = json!(format!("10.0.{}.{}", i / 250, i % 250));
        ssa::apply(Some(&live), &config, &writer("t1"), false).expect("apply");
    }
    report("server-side apply in process (no HTTP)", n, t.elapsed());
}

async fn run(objects: usize) {
    let server = ApiServer::start().await.expect("server starts");
    let ar = ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "WorkloadEntry".into(),
        plural: "workloadentries".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(server.client(), "bench", &ar);

    let received = Arc::new(AtomicU64::new(0));
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let s = api
            .watch(&WatchParams::default().timeout(290), "0")
            .await
            .expect("watch starts");
        let received = received.clone();
        watchers.push(tokio::spawn(async move {
            let mut s = s.boxed();
            while let Ok(Some(ev)) = s.try_next().await {
                if !matches!(ev, WatchEvent::Bookmark(_)) {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let t = Instant::now();
    stream::iter(0..objects)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &entry(i))
                    .await
                    .expect("create")
            }
        })
        .buffer_unordered(CONCURRENCY)
        .for_each(|_| async {})
        .await;
    report("create (validated, 10 watchers)", objects, t.elapsed());

    let updates = objects / 2;
    let t = Instant::now();
    stream::iter(0..updates)
        .map(|i| {
            let api = api.clone();
            async move {
                let patch = json!({"spec": {"weight": 2}});
                api.patch(
                    &format!("vm-{i:06}"),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
                .expect("patch")
            }
        })
        .buffer_unordered(CONCURRENCY)
        .for_each(|_| async {})
        .await;
    report("merge patch (validated, 10 watchers)", updates, t.elapsed());

    let t = Instant::now();
    stream::iter(0..updates)
        .map(|i| {
            let api = api.clone();
            async move {
                let mut cfg = serde_json::to_value(entry(i)).expect("json");
                cfg["spec"]["weight"] = json!(3);
                api.patch(
                    &format!("vm-{i:06}"),
                    &PatchParams::apply("bench").force(),
                    &Patch::Apply(cfg),
                )
                .await
                .expect("apply")
            }
        })
        .buffer_unordered(CONCURRENCY)
        .for_each(|_| async {})
        .await;
    report(
        "server-side apply (validated, 10 watchers)",
        updates,
        t.elapsed(),
    );

    let expected = ((objects + 2 * updates) * WATCHERS) as u64;
    let t = Instant::now();
    while received.load(Ordering::Relaxed) < expected && t.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = received.load(Ordering::Relaxed);
    report(
        &format!("watch events delivered ({WATCHERS} watchers), drain"),
        got as usize,
        t.elapsed(),
    );
    assert_eq!(got, expected, "every watcher got every event");

    let t = Instant::now();
    let all = api.list(&ListParams::default()).await.expect("list");
    report("list all in one page", all.items.len(), t.elapsed());
    let t = Instant::now();
    let mut n = 0;
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await.expect("page");
        n += page.items.len();
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    report("list in pages of 500", n, t.elapsed());
    let t = Instant::now();
    let some = api
        .list(&ListParams::default().labels("shard=3"))
        .await
        .expect("list");
    report(
        "list with a label selector (1 in 10)",
        some.items.len(),
        t.elapsed(),
    );
    for w in watchers {
        w.abort();
    }
}
