//! Fault tolerance beyond tests/controller.rs: cloud throttling, a vanished
//! group, a hung cloud call, API-server 429/503 with Retry-After, an outage
//! during scale-in, crash safety of the real binary (SIGKILL mid-pass), and
//! bad input (lying events, bad tags, odd ids, duplicate addresses, groups the
//! provider cannot see).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::*;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DynamicObject, Patch, PatchParams};
use meshmirror::cluster::Cluster;
use meshmirror::cluster::kube::KubeCluster;
use meshmirror::cluster::ratelimit::RateLimiter;
use meshmirror::controller::pass::Reconciler;
use meshmirror::controller::{self, Scope};
use meshmirror::core::names::{entry_name, is_dns_subdomain};
use meshmirror::core::policy::AllowedGroups;
use meshmirror::metrics::Metrics;
use meshmirror::providers::Providers;
use meshmirror::workloadentry::{EntryVersion, keys};
use meshmirror_provider::{
    BoxEventStream, GroupEventKind, GroupRef, Instance, LifecycleAction, Outcome, Provider,
    ProviderError, RetryPolicy,
};
use meshmirror_sim::{SimCloud, SimInstance};
use meshmirror_testkit::apiserver::{Injected, Match, Verb};

// ---------------------------------------------------------------- helpers

/// A reconciler on the harness's server whose providers are given (own retry
/// policy, wrappers), for tests that drive passes.
fn reconciler_with(h: &Harness, providers: Providers) -> Reconciler {
    let cluster: Arc<dyn Cluster> = Arc::new(KubeCluster::new(
        h.service.clone(),
        EntryVersion::V1,
        None,
        RateLimiter::unlimited(),
        None,
    ));
    Reconciler::new(
        providers,
        cluster,
        Arc::new(Metrics::new()),
        AllowedGroups::allow_all(),
    )
}

fn retry(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        base: Duration::from_millis(10),
        max: Duration::from_secs(5),
    }
}

/// The controller as `app::run` wires it, but with the given providers.
/// Runs until the returned sender is dropped.
fn spawn_controller(h: &Harness, providers: Providers) -> tokio::sync::oneshot::Sender<()> {
    spawn_controller_on(h, providers, Arc::new(Metrics::new()), |cluster| cluster)
}

/// Two sim VMs mirrored as `default/web` by the controller as `app::run`
/// wires it (its cluster adjusted by `tweak`), converged.
async fn web_of_two(
    tweak: impl FnOnce(KubeCluster) -> KubeCluster,
) -> (Harness, Arc<Metrics>, tokio::sync::oneshot::Sender<()>) {
    let h = Harness::without_controller(sim_with(2)).await;
    let metrics = Arc::new(Metrics::new());
    let providers = meshmirror::app::providers(&metrics, Some(h.sim.clone()));
    let stop = spawn_controller_on(&h, providers, metrics.clone(), tweak);
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n",
    ))
    .await;
    h.wait_entries("default", "2 entries", |e| e.len() == 2)
        .await;
    (h, metrics, stop)
}

/// [`spawn_controller`] recording into `metrics`, its cluster adjusted by `tweak`.
fn spawn_controller_on(
    h: &Harness,
    providers: Providers,
    metrics: Arc<Metrics>,
    tweak: impl FnOnce(KubeCluster) -> KubeCluster,
) -> tokio::sync::oneshot::Sender<()> {
    let scope = Scope::default();
    let (caches, cache_tasks) = controller::Caches::start(&h.service, &scope);
    let cluster: Arc<dyn Cluster> = Arc::new(tweak(
        KubeCluster::new(
            h.service.clone(),
            EntryVersion::V1,
            Some(caches.entries.clone()),
            RateLimiter::unlimited(),
            None,
        )
        .with_groups(caches.groups.clone()),
    ));
    let reconciler = Arc::new(Reconciler::new(
        providers,
        cluster,
        metrics,
        AllowedGroups::allow_all(),
    ));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let run = controller::run(h.service.clone(), scope, reconciler, caches, async {
        let _ = rx.await;
    });
    tokio::spawn(async move {
        run.await;
        drop(cache_tasks);
    });
    tx
}

fn degraded_reason(s: &meshmirror::crd::ScalingGroupMirrorStatus) -> Option<String> {
    condition(s, "Degraded")
        .filter(|c| c.status == "True")
        .map(|c| c.reason.clone())
}

/// Names and resourceVersions, to show that nothing was written.
fn versions(entries: &[DynamicObject]) -> Vec<(Option<String>, Option<String>)> {
    entries
        .iter()
        .map(|e| (e.metadata.name.clone(), e.metadata.resource_version.clone()))
        .collect()
}

fn names(entries: &[DynamicObject]) -> BTreeSet<String> {
    entries
        .iter()
        .filter_map(|e| e.metadata.name.clone())
        .collect()
}

/// The entry names `mirror` must have for these instances and workloads.
fn expected(mirror: &str, workloads: &[&str], ids: &[String]) -> BTreeSet<String> {
    ids.iter()
        .flat_map(|id| workloads.iter().map(move |w| entry_name(mirror, w, id)))
        .collect()
}

fn sim_ids(sim: &SimCloud, group: &str) -> Vec<String> {
    sim.instances(group)
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect()
}

/// No duplicates (one entry per instance and workload, one address per
/// workload) and no orphans (every entry owned by `uid`, for a current member).
fn assert_no_duplicates_or_orphans(entries: &[DynamicObject], uid: &str, members: &[String]) {
    let members: BTreeSet<&str> = members.iter().map(String::as_str).collect();
    let mut pairs = BTreeSet::new();
    let mut addresses = BTreeSet::new();
    for e in entries {
        let name = e.metadata.name.clone().unwrap_or_default();
        let id = annotation(e, keys::INSTANCE_ID);
        let workload = label(e, keys::WORKLOAD);
        assert!(
            pairs.insert((id.clone(), workload.clone())),
            "duplicate entry for instance {id} workload {workload}: {name}"
        );
        let address = e.data["spec"]["address"].as_str().unwrap_or("").to_string();
        assert!(
            addresses.insert((workload.clone(), address.clone())),
            "address {address} used twice for workload {workload}"
        );
        assert!(
            members.contains(id.as_str()),
            "orphan {name}: instance {id} is no member"
        );
        let owners = e.metadata.owner_references.clone().unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true)),
            "{name} is not owned by the mirror: {owners:?}"
        );
    }
}

/// Waits for an Event on the mirror with this reason whose note satisfies `ok`.
async fn wait_event(h: &Harness, ns: &str, reason: &str, ok: impl Fn(&str) -> bool) -> String {
    let events: kube::Api<Event> = kube::Api::namespaced(h.client.clone(), ns);
    let started = Instant::now();
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        if let Some(note) = list
            .items
            .iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note.clone())
            .find(|n| ok(n))
        {
            return note;
        }
        assert!(
            started.elapsed() < CONVERGE,
            "no {reason} Event; have {:?}",
            list.items
                .iter()
                .map(|e| (e.reason.clone(), e.note.clone()))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------- cloud faults

#[tokio::test]
async fn cloud_throttling_honours_retry_after_keeps_entries_and_recovers() {
    let h = Harness::without_controller(sim_with(3)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n",
    ))
    .await;
    let metrics = Arc::new(Metrics::new());
    let mut providers = Providers::default();
    providers.add(h.sim.clone(), metrics, retry(2));
    let reconciler = reconciler_with(&h, providers);
    let pass = async || {
        let mirror = h.mirrors("default").get("web").await.unwrap();
        reconciler.pass(&mirror).await
    };
    assert!(pass().await.ok());
    let before = h.entries("default").await;
    assert_eq!(before.len(), 3);

    // Throttled on every call: the retry waits the cloud's Retry-After, the
    // pass fails static, and the next pass is not before Retry-After either.
    let after = Duration::from_secs(1);
    h.sim
        .fail_always(
            "web",
            Some(ProviderError::Throttled {
                retry_after: Some(after),
            }),
        )
        .unwrap();
    h.sim.scale_in("web", 2).unwrap();
    let calls = h.sim.members_calls_for("web").unwrap();
    let started = Instant::now();
    let report = pass().await;
    let took = started.elapsed();
    assert!(!report.ok());
    assert!(
        report
            .error
            .as_ref()
            .is_some_and(|e| e.to_string().starts_with("Throttled")),
        "{report:?}"
    );
    assert_eq!(
        h.sim.members_calls_for("web").unwrap() - calls,
        2,
        "retried once"
    );
    assert!(took >= after, "the retry waited Retry-After: {took:?}");
    assert!(report.requeue >= after, "{:?}", report.requeue);
    assert_eq!(
        versions(&h.entries("default").await),
        versions(&before),
        "nothing deleted or rewritten while throttled"
    );
    let status = h.status("default", "web").await;
    assert_eq!(degraded_reason(&status).as_deref(), Some("Throttled"));
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "Throttled")
    );
    assert!(
        ready.message.contains("retry after 1s"),
        "{}",
        ready.message
    );

    // One throttled answer is absorbed by the retry; the pass then catches up.
    h.sim.fail_always("web", None).unwrap();
    h.sim
        .fail_next(
            "web",
            1,
            ProviderError::Throttled {
                retry_after: Some(Duration::from_millis(100)),
            },
        )
        .unwrap();
    let report = pass().await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.deleted, 2);
    let status = h.status("default", "web").await;
    assert!(is_ready(&status), "{status:?}");
    assert_eq!(degraded_reason(&status), None);
    assert_eq!(h.entries("default").await.len(), 1);
}

#[tokio::test]
async fn a_vanished_group_is_group_not_found_deletes_nothing_and_recovers() {
    let h = Harness::start(sim_with(3)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n  sync: {interval: 5s}\n",
    ))
    .await;
    let before = h
        .wait_entries("default", "3 entries", |e| e.len() == 3)
        .await;

    h.sim.remove_group("web").unwrap();
    let status = h
        .wait_status("default", "web", "GroupNotFound", |s| {
            degraded_reason(s).as_deref() == Some("GroupNotFound")
        })
        .await;
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "GroupNotFound")
    );
    assert!(ready.message.contains("sim:web"), "{}", ready.message);
    assert!(
        ready.message.contains("existing entries are kept"),
        "{}",
        ready.message
    );
    wait_event(&h, "default", "GroupNotFound", |n| n.contains("sim:web")).await;
    // Two more passes (each asks the cloud once; the error is not retried
    // within a pass): the first of them has ended once the second asks, as
    // passes of one mirror never overlap. Still nothing deleted.
    let calls = h.sim.members_calls();
    wait_members_calls(&h, None, calls + 2, "two more passes").await;
    assert_eq!(versions(&h.entries("default").await), versions(&before));

    // The group comes back with other members: entries follow them.
    h.sim.ensure_group("web", "us-east-1");
    h.sim
        .add_instance(
            "web",
            SimInstance::running("i-new", Ipv4Addr::new(10, 0, 2, 1)),
        )
        .unwrap();
    let entries = h
        .wait_entries("default", "only the new member", |e| {
            e.len() == 1 && annotation(&e[0], keys::INSTANCE_ID) == "i-new"
        })
        .await;
    let mirror = h.mirrors("default").get("web").await.unwrap();
    assert_no_duplicates_or_orphans(
        &entries,
        mirror.metadata.uid.as_deref().unwrap(),
        &sim_ids(&h.sim, "web"),
    );
    h.wait_status("default", "web", "Ready again", is_ready)
        .await;
}

/// A group the cloud says is gone for longer than `--group-gone-grace` has
/// its entries withdrawn (clouds reuse addresses); any other error, held as
/// long, withdraws nothing.
#[tokio::test]
async fn a_group_gone_longer_than_the_grace_has_its_entries_withdrawn() {
    let h = Harness::without_controller(sim_with(2)).await;
    h.sim.ensure_group("db", "us-east-1");
    h.sim
        .add_instance(
            "db",
            SimInstance::running("d-1", Ipv4Addr::new(10, 0, 3, 1)),
        )
        .unwrap();
    let controller = h.spawn_controller(
        "main",
        h.service.clone(),
        meshmirror::app::RunOptions {
            sim_cloud: Some(h.sim.clone()),
            kube_qps: 0.0,
            group_gone_grace: Some(Duration::from_secs(3)),
            allow_all_groups: true,
            ..meshmirror::app::RunOptions::default()
        },
    );
    let every_5s = "  workloads: [{name: app}]\n  sync: {interval: 5s}\n";
    h.create_mirror(&mirror_yaml("default", "web", every_5s))
        .await;
    h.create_mirror(&mirror_yaml("default", "db", every_5s).replace("group: web", "group: db"))
        .await;
    h.wait_entries("default", "2 + 1 entries", |e| e.len() == 3)
        .await;

    h.sim.remove_group("web").unwrap();
    h.sim
        .fail_always(
            "db",
            Some(ProviderError::Transient("the cloud is down".into())),
        )
        .unwrap();
    // First GroupNotFound answer: inside the grace, the entries stay.
    let status = h
        .wait_status("default", "web", "GroupNotFound", |s| {
            degraded_reason(s).as_deref() == Some("GroupNotFound")
        })
        .await;
    let ready = condition(&status, "Ready").unwrap();
    assert!(
        ready.message.contains("kept for the 3s grace"),
        "{}",
        ready.message
    );
    assert_eq!(h.entries("default").await.len(), 3);
    // A later pass, past the grace: withdrawn, with an Event saying why.
    let withdrawn = h
        .wait_entries("default", "web's entries withdrawn", |e| {
            e.iter().all(|o| label(o, keys::MIRROR) == "db")
        })
        .await;
    assert_eq!(
        withdrawn.len(),
        1,
        "db's entry stays: its error is not a definite answer"
    );
    wait_event(&h, "default", "EntriesWithdrawn", |n| {
        n.contains("sim:web") && n.contains("3s grace")
    })
    .await;
    // db has failed for as long, and more: still nothing withdrawn.
    h.wait_status("default", "db", "db Degraded", |s| {
        degraded_reason(s).as_deref() == Some("ProviderError")
    })
    .await;
    let calls = h.sim.members_calls_for("db").unwrap();
    wait_members_calls(&h, Some("db"), calls + 1, "another pass of db").await;
    assert_eq!(h.entries("default").await.len(), 1);
    controller.stop().await;
}

/// A sim provider whose `members()` for some groups waits until released, as
/// a cloud call that never answers would.
#[derive(Clone)]
struct Hanging {
    sim: SimCloud,
    hung: Arc<Mutex<BTreeSet<String>>>,
    release: Arc<tokio::sync::Notify>,
    calls_hanging: Arc<Mutex<u32>>,
}

impl Hanging {
    fn is_hung(&self, group: &GroupRef) -> bool {
        match group {
            GroupRef::Sim { group } => self.hung.lock().unwrap().contains(group),
            _ => false,
        }
    }
}

#[async_trait]
impl Provider for Hanging {
    fn name(&self) -> &'static str {
        "sim"
    }

    async fn members(&self, group: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
        while self.is_hung(group) {
            let released = self.release.notified();
            *self.calls_hanging.lock().unwrap() += 1;
            released.await;
        }
        self.sim.members(group).await
    }

    fn events(&self) -> Option<BoxEventStream> {
        self.sim.events()
    }

    async fn complete_lifecycle(
        &self,
        action: &LifecycleAction,
        outcome: Outcome,
    ) -> Result<(), ProviderError> {
        self.sim.complete_lifecycle(action, outcome).await
    }
}

/// A hung cloud call stalls only its own mirror, and only until the call's
/// deadline (60 s in production, `providers::CALL_TIMEOUT`; 1 s here) turns
/// it into an error: the mirror is Degraded, keeps its entries, and catches
/// up once the cloud answers again. Other mirrors keep following their groups.
#[tokio::test]
async fn a_hung_cloud_call_stalls_only_its_own_mirror_until_its_deadline() {
    let sim = sim_with(2);
    sim.ensure_group("db", "us-east-1");
    sim.add_instance(
        "db",
        SimInstance::running("d-01", Ipv4Addr::new(10, 0, 3, 1)),
    )
    .unwrap();
    let h = Harness::without_controller(sim).await;
    let hanging = Hanging {
        sim: h.sim.clone(),
        hung: Arc::default(),
        release: Arc::default(),
        calls_hanging: Arc::default(),
    };
    let mut providers = Providers::default();
    providers.add_with_deadline(
        hanging.clone(),
        Arc::new(Metrics::new()),
        retry(1),
        Duration::from_secs(1),
    );
    let _stop = spawn_controller(&h, providers);
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n",
    ))
    .await;
    h.create_mirror(
        &mirror_yaml("default", "db", "  workloads: [{name: app}]\n")
            .replace("group: web", "group: db"),
    )
    .await;
    h.wait_entries("default", "2 web + 1 db", |e| e.len() == 3)
        .await;

    hanging.hung.lock().unwrap().insert("web".into());
    h.sim.scale_out("web", 1).unwrap();
    let started = Instant::now();
    while *hanging.calls_hanging.lock().unwrap() == 0 {
        assert!(started.elapsed() < CONVERGE, "the web pass never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.sim.scale_out("db", 2).unwrap();
    let is = |m: &'static str| move |o: &DynamicObject| label(o, keys::MIRROR) == m;
    h.wait_entries("default", "db follows while web hangs", |e| {
        e.iter().filter(|o| is("db")(o)).count() == 3
    })
    .await;
    assert_eq!(
        h.entries("default")
            .await
            .iter()
            .filter(|o| is("web")(o))
            .count(),
        2,
        "the hung mirror wrote nothing"
    );
    let status = h
        .wait_status("default", "web", "Degraded past the deadline", |s| {
            condition(s, "Degraded").is_some_and(|c| c.status == "True")
        })
        .await;
    let degraded = condition(&status, "Degraded").unwrap();
    assert_eq!(degraded.reason, "ProviderError");
    assert!(
        degraded.message.contains("took longer than 1s")
            && degraded.message.contains("existing entries are kept"),
        "{}",
        degraded.message
    );
    assert_eq!(status.entries, 2, "fail static: nothing deleted");

    hanging.hung.lock().unwrap().clear();
    hanging.release.notify_waiters();
    h.wait_entries("default", "web catches up", |e| {
        e.iter().filter(|o| is("web")(o)).count() == 3
    })
    .await;
    h.wait_status("default", "web", "Ready again", is_ready)
        .await;
}

// ---------------------------------------------------------------- API-server faults

#[tokio::test]
async fn api_server_429_and_503_are_waited_out_per_retry_after_without_duplicates() {
    let h = Harness::without_controller(sim_with(3)).await;
    h.create_mirror(&mirror_yaml("default", "web", TWO_WORKLOADS))
        .await;
    let reconciler = h.reconciler();
    let faults = h.server.faults();
    faults.fail_next(
        Match::any().verb(Verb::Patch).resource("workloadentries"),
        1,
        Injected::TooManyRequests {
            retry_after_secs: 2,
        },
    );
    faults.fail_next(
        Match::any()
            .verb(Verb::Patch)
            .resource("scalinggroupmirrors/status"),
        2,
        Injected::Unavailable,
    );
    let before = h.server.requests();
    let started = Instant::now();
    let mirror = h.mirrors("default").get("web").await.unwrap();
    let report = reconciler.pass(&mirror).await;
    let took = started.elapsed();
    // The kube client retries 429 and 503 itself; a 429's Retry-After is the
    // least it waits.
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.created, 6);
    assert!(report.status_written);
    assert!(
        took >= Duration::from_secs(2),
        "Retry-After honoured: {took:?}"
    );
    let during = h.server.requests().since(&before);
    assert_eq!(
        during.get(Verb::Patch, "workloadentries"),
        7,
        "6 entries + 1 retried"
    );
    assert_eq!(during.get(Verb::Patch, "scalinggroupmirrors/status"), 3);
    let entries = h.entries("default").await;
    assert_eq!(entries.len(), 6);
    assert_no_duplicates_or_orphans(
        &entries,
        mirror.metadata.uid.as_deref().unwrap(),
        &sim_ids(&h.sim, "web"),
    );
    assert!(is_ready(&h.status("default", "web").await));
}

#[tokio::test]
async fn an_api_server_outage_during_scale_in_and_out_leaves_no_orphans_or_duplicates() {
    let h = Harness::start(sim_with(4)).await;
    let mirror = h
        .create_mirror(&mirror_yaml(
            "default",
            "web",
            "  workloads: [{name: app}]\n  sync: {interval: 5s}\n",
        ))
        .await;
    let uid = mirror.metadata.uid.clone().unwrap();
    h.wait_entries("default", "4 entries", |e| e.len() == 4)
        .await;

    let faults = h.server.faults();
    faults.go_down().await;
    h.sim.scale_in("web", 3).unwrap();
    h.sim.scale_out("web", 2).unwrap();
    // Not a sleep: a pass that starts after the changes meets the outage (it
    // asks the cloud, then its writes fail); the pass of a further event
    // asking the cloud too shows it has ended, with the server still down
    // (passes of one mirror never overlap).
    let calls = h.sim.members_calls();
    wait_members_calls(&h, None, calls + 1, "a pass during the outage").await;
    h.sim.push_event("web", GroupEventKind::Changed);
    wait_members_calls(&h, None, calls + 2, "the next pass during the outage").await;
    faults.come_up().expect("server comes back on its port");

    let want = expected("web", &["app"], &sim_ids(&h.sim, "web"));
    let entries = h
        .wait_entries("default", "exactly the 3 current members", |e| {
            names(e) == want
        })
        .await;
    assert_no_duplicates_or_orphans(&entries, &uid, &sim_ids(&h.sim, "web"));
    h.wait_status("default", "web", "3 members, Ready", |s| {
        is_ready(s) && s.members == 3 && s.entries == 3
    })
    .await;
}

// ---------------------------------------------------------------- crash safety

/// The real `meshmirror` binary, killed with SIGKILL when dropped.
struct Meshmirror {
    child: Child,
    log: PathBuf,
}

impl Meshmirror {
    fn start(dir: &Path, sim_file: &Path, qps: &str, burst: &str, run: u32) -> Meshmirror {
        let log = dir.join(format!("meshmirror-{run}.log"));
        let child = Command::new(env!("CARGO_BIN_EXE_meshmirror"))
            .args(["run", "--allow-all-groups", "--sim-file"])
            .arg(sim_file)
            .args(["--kube-qps", qps, "--kube-burst", burst])
            .env("KUBECONFIG", dir.join("kubeconfig"))
            .env("RUST_LOG", "info,kube=warn,hyper=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("meshmirror binary starts");
        Meshmirror { child, log }
    }

    /// SIGKILL: no shutdown path runs.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let status = self.child.wait().expect("reaped");
        assert!(!status.success(), "killed, not exited: {status:?}");
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Meshmirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshmirror-faults-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn instance_id(n: usize) -> String {
    format!("i-{n:04}")
}

/// A sim file with group `web` holding instances `ids` (by number).
fn write_sim_file(path: &Path, ids: impl IntoIterator<Item = usize>) {
    let mut yaml = String::from("groups:\n  web:\n    region: us-east-1\n    instances:\n");
    for n in ids {
        yaml.push_str(&format!(
            "      - {{id: {}, privateIPv4: 10.1.{}.{}, zone: us-east-1a}}\n",
            instance_id(n),
            n / 250,
            n % 250 + 1
        ));
    }
    // Renamed into place: the watcher never sees a half-written file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, yaml).expect("write sim file");
    std::fs::rename(&tmp, path).expect("rename sim file");
}

async fn wait_count(
    h: &Harness,
    what: &str,
    done: impl Fn(usize) -> bool,
    proc: &Meshmirror,
) -> usize {
    let started = Instant::now();
    loop {
        let n = h.entries("default").await.len();
        if done(n) {
            return n;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}: {n} entries; meshmirror log:\n{}",
            proc.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_exact(h: &Harness, want: &BTreeSet<String>, proc: &Meshmirror) -> Vec<DynamicObject> {
    let started = Instant::now();
    loop {
        let entries = h.entries("default").await;
        if names(&entries) == *want {
            return entries;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "timed out converging: have {} entries, want {}; missing {:?}; extra {:?}; meshmirror log:\n{}",
            entries.len(),
            want.len(),
            want.difference(&names(&entries))
                .take(5)
                .collect::<Vec<_>>(),
            names(&entries).difference(want).take(5).collect::<Vec<_>>(),
            proc.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_scale_out_then_restart_converges_to_the_same_entries() {
    let dir = scratch_dir("sigkill");
    let sim_file = dir.join("sim.yaml");
    write_sim_file(&sim_file, 1..=10);
    let h = Harness::without_controller(SimCloud::new()).await;
    h.server
        .write_kubeconfig(dir.join("kubeconfig"))
        .expect("kubeconfig");
    let mirror = h
        .create_mirror(&mirror_yaml("default", "web", TWO_WORKLOADS))
        .await;
    let uid = mirror.metadata.uid.clone().unwrap();

    // A low write rate makes the scale-out of 190 instances (380 entries)
    // take about 19 s, so the kill lands mid-pass.
    let first = Meshmirror::start(&dir, &sim_file, "20", "5", 1);
    wait_count(&h, "20 entries", |n| n == 20, &first).await;
    write_sim_file(&sim_file, 1..=200);
    let at_kill = wait_count(&h, "the scale-out under way", |n| n >= 60, &first).await;
    first.kill();
    // A request the server had fully read when the client died still lands;
    // the pause lets most such land before the snapshot. Nothing below
    // depends on its length: the killed process only created entries, so a
    // late one is merely missing from `survivors` (never deleted, never a
    // survivor rewritten).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let survivors = h.entries("default").await;
    assert!(
        survivors.len() >= at_kill && survivors.len() < 400,
        "killed mid-pass: {} of 400 entries",
        survivors.len()
    );

    let second = Meshmirror::start(&dir, &sim_file, "0", "1", 2);
    let ids: Vec<String> = (1..=200).map(instance_id).collect();
    let want = expected("web", &["api", "exporter"], &ids);
    let entries = wait_exact(&h, &want, &second).await;
    assert_no_duplicates_or_orphans(&entries, &uid, &ids);
    // What was done before the kill is not redone.
    let now: BTreeMap<_, _> = entries
        .iter()
        .map(|e| (e.metadata.name.clone(), e.metadata.resource_version.clone()))
        .collect();
    for e in &survivors {
        assert_eq!(
            now.get(&e.metadata.name),
            Some(&e.metadata.resource_version),
            "{:?} was rewritten after the restart",
            e.metadata.name
        );
    }
    let status = h
        .wait_status("default", "web", "200 members", |s| {
            is_ready(s) && s.members == 200 && s.entries == 400
        })
        .await;
    assert_eq!(status.skipped, 0);
    second.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_and_a_group_changed_while_the_process_was_down_are_honoured_on_start() {
    let dir = scratch_dir("edited");
    let sim_file = dir.join("sim.yaml");
    write_sim_file(&sim_file, 1..=10);
    let h = Harness::without_controller(SimCloud::new()).await;
    h.server
        .write_kubeconfig(dir.join("kubeconfig"))
        .expect("kubeconfig");
    let mirror = h
        .create_mirror(&mirror_yaml("default", "web", TWO_WORKLOADS))
        .await;
    let uid = mirror.metadata.uid.clone().unwrap();
    let first = Meshmirror::start(&dir, &sim_file, "0", "1", 1);
    wait_count(&h, "20 entries", |n| n == 20, &first).await;
    first.kill();

    // While down: one workload dropped, the other relabelled; three VMs gone
    // and two new ones in the cloud.
    let patch = serde_json::json!({"spec": {"workloads": [
        {"name": "api", "labels": {"app": "api", "version": "v2"}, "ports": {"http": 8080}, "serviceAccount": "api-sa"}
    ]}});
    let edited = h
        .mirrors("default")
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let members: Vec<usize> = (4..=10).chain(11..=12).collect();
    write_sim_file(&sim_file, members.iter().copied());

    let second = Meshmirror::start(&dir, &sim_file, "0", "1", 2);
    let ids: Vec<String> = members.iter().map(|n| instance_id(*n)).collect();
    wait_exact(&h, &expected("web", &["api"], &ids), &second).await;
    // The set of names can match while the relabelling updates of the same
    // pass are still in flight: wait for the pass to finish.
    let entries = h
        .wait_entries("default", "relabelled", |e| {
            e.len() == ids.len() && e.iter().all(|o| label(o, "version") == "v2")
        })
        .await;
    assert_no_duplicates_or_orphans(&entries, &uid, &ids);
    for e in &entries {
        assert_eq!(label(e, "version"), "v2", "{:?}", e.metadata.name);
        assert_eq!(e.data["spec"]["labels"]["version"], "v2");
    }
    let status = h
        .wait_status("default", "web", "observed the edit", |s| {
            is_ready(s) && s.observed_generation == edited.metadata.generation && s.entries == 9
        })
        .await;
    assert_eq!(status.members, 9);
    second.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- bad input

#[tokio::test]
async fn malformed_and_lying_events_change_nothing_and_are_acknowledged() {
    let h = Harness::start(sim_with(2)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n  sync: {interval: 1h}\n",
    ))
    .await;
    let before = h
        .wait_entries("default", "2 entries", |e| e.len() == 2)
        .await;
    // Counted once the first pass is over (its status written last); its
    // members were in the cloud before the controller subscribed, so no
    // event of theirs is still to be acknowledged.
    h.wait_status("default", "web", "the first pass's status", |s| {
        is_ready(s) && s.entries == 2
    })
    .await;
    let acked = h.sim.events_acked();
    let requests = h.server.requests();

    let bogus = [
        // Lies: i-01 is running; events are hints, the cloud is asked.
        (
            "web",
            GroupEventKind::Terminated {
                instance_id: "i-01".into(),
            },
        ),
        (
            "web",
            GroupEventKind::Interrupted {
                instance_id: "i-02".into(),
            },
        ),
        (
            "web",
            GroupEventKind::Launched {
                instance_id: "i-does-not-exist".into(),
            },
        ),
        (
            "web",
            GroupEventKind::Terminating {
                instance_id: String::new(),
            },
        ),
        (
            "web",
            GroupEventKind::Advisory {
                instance_id: "💥-ünïcödé".into(),
                what: "x".repeat(100_000),
            },
        ),
        ("nobody-names-this", GroupEventKind::Changed),
        (
            "../../etc/passwd",
            GroupEventKind::Terminated {
                instance_id: "i-01".into(),
            },
        ),
        ("", GroupEventKind::Changed),
    ];
    for (group, kind) in bogus.iter().cloned() {
        h.sim.push_event(group, kind);
    }
    let started = Instant::now();
    while h.sim.events_acked() < acked + bogus.len() as u64 {
        assert!(
            started.elapsed() < CONVERGE,
            "acknowledged {} of {}",
            h.sim.events_acked() - acked,
            bogus.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let during = h.server.requests().since(&requests);
    assert_eq!(
        during.get(Verb::Patch, "workloadentries") + during.get(Verb::Delete, "workloadentries"),
        0,
        "{:?}",
        during.entries()
    );
    assert_eq!(versions(&h.entries("default").await), versions(&before));

    // Still alive: a real change is followed.
    h.sim.scale_out("web", 1).unwrap();
    h.wait_entries("default", "3 entries", |e| e.len() == 3)
        .await;
}

#[tokio::test]
async fn invalid_and_huge_tag_values_are_not_copied_and_are_reported() {
    let sim = sim_with(0);
    let huge = "v".repeat(10_000);
    sim.add_instance(
        "web",
        SimInstance::running("i-01", Ipv4Addr::new(10, 0, 1, 1))
            .with_tag("team", "payments")
            .with_tag("example.com/owner", "ops")
            .with_tag("big", huge.clone())
            .with_tag("spaces", "hello world")
            .with_tag("city", "zürich")
            .with_tag("bad key!", "v")
            .with_tag("not-copied", huge.clone()),
    )
    .unwrap();
    let h = Harness::start(sim).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  copyTags: [team, example.com/owner, big, spaces, city, \"bad key!\"]\n  workloads: [{name: app}]\n",
    ))
    .await;
    let entries = h.wait_entries("default", "1 entry", |e| e.len() == 1).await;
    let e = &entries[0];
    assert_eq!(label(e, "team"), "payments");
    assert_eq!(label(e, "example.com/owner"), "ops");
    assert_eq!(e.data["spec"]["labels"]["team"], "payments");
    for bad in ["big", "spaces", "city", "bad key!", "not-copied"] {
        assert!(label(e, bad).is_empty(), "{bad} copied");
        assert!(
            e.data["spec"]["labels"].get(bad).is_none(),
            "{bad} in spec.labels"
        );
    }
    let note = wait_event(&h, "default", "TagsNotCopied", |n| n.contains("\"big\"")).await;
    for key in ["\"spaces\"", "\"city\"", "\"bad key!\""] {
        assert!(note.contains(key), "{key} not named in {note}");
    }
    assert!(!note.contains(&huge[..100]), "the huge value is not echoed");
    assert!(note.len() <= 1000, "{} bytes", note.len());
    let status = h.wait_status("default", "web", "Ready", is_ready).await;
    assert_eq!((status.members, status.entries, status.skipped), (1, 1, 0));
}

#[tokio::test]
async fn non_ascii_and_odd_instance_ids_get_valid_stable_distinct_names() {
    let ids = [
        "i-ünïcödé".to_string(),
        "日本語-42".to_string(),
        "I-ABC".to_string(),
        "i-abc".to_string(),
        "i-abc.".to_string(),
        "vm/with/slashes/7".to_string(),
        "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/ss/virtualMachines/7".to_string(),
        "i 01 with spaces".to_string(),
        "i-🚀".to_string(),
        "---".to_string(),
        "x".repeat(400),
        "x".repeat(401),
    ];
    let sim = sim_with(0);
    for (n, id) in ids.iter().enumerate() {
        sim.add_instance(
            "web",
            SimInstance::running(id.clone(), Ipv4Addr::new(10, 0, 4, n as u8 + 1)),
        )
        .unwrap();
    }
    let h = Harness::without_controller(sim).await;
    h.create_mirror(&mirror_yaml("default", "web", TWO_WORKLOADS))
        .await;
    let reconciler = h.reconciler();
    let mirror = h.mirrors("default").get("web").await.unwrap();
    let first = reconciler.pass(&mirror).await;
    assert!(first.ok(), "{first:?}");
    assert_eq!(first.created, ids.len() * 2);

    let entries = h.entries("default").await;
    assert_eq!(entries.len(), ids.len() * 2, "distinct names");
    for e in &entries {
        let name = e.metadata.name.clone().unwrap();
        assert!(is_dns_subdomain(&name) && name.len() <= 253, "{name}");
    }
    let seen: BTreeSet<String> = entries
        .iter()
        .map(|e| annotation(e, keys::INSTANCE_ID))
        .collect();
    assert_eq!(seen, ids.iter().cloned().collect(), "ids kept exactly");
    assert_no_duplicates_or_orphans(&entries, mirror.metadata.uid.as_deref().unwrap(), &ids);

    // Stable: the next passes write nothing.
    let requests = h.server.requests();
    for _ in 0..3 {
        let mirror = h.mirrors("default").get("web").await.unwrap();
        let report = reconciler.pass(&mirror).await;
        assert!(report.ok(), "{report:?}");
    }
    assert_eq!(h.server.requests().since(&requests).writes(), 0);
}

#[tokio::test]
async fn duplicate_addresses_in_one_network_keep_one_and_report_the_other() {
    let sim = sim_with(0);
    let shared = Ipv4Addr::new(10, 0, 0, 5);
    for (id, ip) in [
        ("i-b", shared),
        ("i-a", shared),
        ("i-c", Ipv4Addr::new(10, 0, 0, 6)),
    ] {
        sim.add_instance("web", SimInstance::running(id, ip))
            .unwrap();
    }
    let h = Harness::start(sim).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  network: vpc-1\n  workloads: [{name: app}]\n",
    ))
    .await;
    let entries = h
        .wait_entries("default", "i-a and i-c", |e| e.len() == 2)
        .await;
    let kept: BTreeSet<String> = entries
        .iter()
        .map(|e| annotation(e, keys::INSTANCE_ID))
        .collect();
    assert_eq!(kept, BTreeSet::from(["i-a".to_string(), "i-c".to_string()]));
    let status = h
        .wait_status("default", "web", "one skipped", |s| s.skipped == 1)
        .await;
    assert_eq!((status.members, status.entries), (3, 2));
    assert!(
        is_ready(&status),
        "a skipped member is not a failure: {status:?}"
    );
    assert!(
        condition(&status, "Ready")
            .unwrap()
            .message
            .contains("1 skipped"),
        "{status:?}"
    );
    let note = wait_event(&h, "default", "InstancesSkipped", |n| n.contains("i-b")).await;
    assert!(
        note.contains("10.0.0.5") && note.contains("i-a") && note.contains("vpc-1"),
        "{note}"
    );

    // The kept one leaves: the other takes the address over.
    h.sim.remove_instance("web", "i-a").unwrap();
    h.wait_entries("default", "i-b takes over", |e| {
        e.len() == 2 && e.iter().any(|o| annotation(o, keys::INSTANCE_ID) == "i-b")
    })
    .await;
    h.wait_status("default", "web", "none skipped", |s| {
        s.skipped == 0 && s.members == 2
    })
    .await;
}

#[tokio::test]
async fn a_group_the_provider_cannot_see_is_group_not_found() {
    let h = Harness::start(sim_with(1)).await;
    let requests = h.server.requests();
    h.create_mirror(
        &mirror_yaml("default", "far", "  workloads: [{name: app}]\n")
            .replace("group: web", "group: eu-west-9-only"),
    )
    .await;
    let status = h
        .wait_status("default", "far", "GroupNotFound", |s| {
            degraded_reason(s).as_deref() == Some("GroupNotFound")
        })
        .await;
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "GroupNotFound")
    );
    assert!(
        ready.message.contains("sim:eu-west-9-only"),
        "{}",
        ready.message
    );
    assert_eq!(status.group.as_deref(), Some("sim:eu-west-9-only"));
    wait_event(&h, "default", "GroupNotFound", |n| {
        n.contains("eu-west-9-only")
    })
    .await;
    let during = h.server.requests().since(&requests);
    assert_eq!(during.get(Verb::Patch, "workloadentries"), 0);
    assert!(h.entries("default").await.is_empty());

    // The group appears (credentials fixed, region enabled): it is mirrored.
    h.sim.ensure_group("eu-west-9-only", "eu-west-9");
    h.sim.scale_out("eu-west-9-only", 2).unwrap();
    h.wait_entries("default", "2 entries", |e| e.len() == 2)
        .await;
    h.wait_status("default", "far", "Ready", is_ready).await;
}

/// A mirror naming a cloud the process has no provider for (not compiled in,
/// or not registered) fails with its own reason and touches nothing. The
/// reconciler here has only the simulated cloud, whatever the build's
/// features, so this runs in every build.
#[tokio::test]
async fn a_cloud_not_in_this_build_is_provider_not_configured() {
    let h = Harness::without_controller(sim_with(1)).await;
    h.create_mirror(
        "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata:\n  name: aws\n  namespace: default\nspec:\n  provider:\n    aws: {region: us-east-1, autoScalingGroupName: web}\n  workloads: [{name: app}]\n",
    )
    .await;
    let mirror = h.mirrors("default").get("aws").await.unwrap();
    let report = h.reconciler().pass(&mirror).await;
    assert!(!report.ok(), "{report:?}");
    assert_eq!(
        report.created + report.updated + report.deleted,
        0,
        "{report:?}"
    );
    let status = h.status("default", "aws").await;
    assert_eq!(
        degraded_reason(&status).as_deref(),
        Some("ProviderNotConfigured"),
        "{status:#?}"
    );
    assert!(!is_ready(&status));
    assert!(h.entries("default").await.is_empty());
}

#[tokio::test]
async fn a_deleted_mirror_leaves_no_metric_series_behind() {
    let (h, metrics, _stop) = web_of_two(|cluster| cluster).await;
    let series = |text: &str| {
        text.lines()
            .filter(|l| !l.starts_with('#') && l.contains("mirror=\"web\""))
            .count()
    };
    // The entries are written before the pass records its gauges.
    let started = Instant::now();
    while series(&metrics.encode()) <= 5 {
        assert!(
            started.elapsed() < CONVERGE,
            "the pass's series: {}",
            metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // No finalizers: the mirror is gone before any pass sees it deleting.
    h.mirrors("default")
        .delete("web", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let started = Instant::now();
    while series(&metrics.encode()) > 0 {
        assert!(
            started.elapsed() < CONVERGE,
            "series left: {}",
            metrics.encode()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_api_server_that_stops_answering_fails_the_pass_at_the_deadline_and_recovers() {
    let (h, _metrics, _stop) =
        web_of_two(|cluster| cluster.with_call_timeout(Duration::from_secs(1))).await;

    // Entry writes hang (the status subresource still answers).
    h.server.faults().delay(
        Match::any().verb(Verb::Patch).resource("workloadentries"),
        Duration::from_secs(60),
    );
    h.sim.scale_out("web", 1).unwrap();
    let status = h
        .wait_status("default", "web", "Degraded at the deadline", |s| {
            condition(s, "Degraded").is_some_and(|c| c.status == "True")
        })
        .await;
    let degraded = condition(&status, "Degraded").unwrap();
    assert_eq!(degraded.reason, "ApplyFailed", "{}", degraded.message);
    assert_eq!(h.entries("default").await.len(), 2);

    h.server.faults().clear();
    h.wait_entries("default", "the new member after recovery", |e| e.len() == 3)
        .await;
    h.wait_status("default", "web", "Ready again", is_ready)
        .await;
}

/// All mirrors share one write budget. A mirror whose writes keep failing
/// (here: every entry write in its namespace answers 500) waits before its
/// next pass, doubling per failing pass, so its retries spend nothing while
/// another mirror scales in; a new generation of its spec is tried at once.
#[tokio::test]
async fn a_mirror_whose_writes_keep_failing_backs_off_and_spends_no_writes_meanwhile() {
    let sim = SimCloud::new();
    for (g, (group, n)) in [("bad-g", 20u8), ("good-g", 6)].into_iter().enumerate() {
        sim.ensure_group(group, "us-east-1");
        for i in 1..=n {
            sim.add_instance(
                group,
                SimInstance::running(format!("{group}-{i}"), Ipv4Addr::new(10, 8, g as u8, i)),
            )
            .unwrap();
        }
    }
    let h = Harness::without_controller(sim).await;
    for ns in ["bad", "good"] {
        let yaml = mirror_yaml("default", "web", "  workloads: [{name: app}]\n")
            .replace("namespace: default", &format!("namespace: {ns}"))
            .replace("group: web", &format!("group: {ns}-g"));
        h.create_namespace(ns).await;
        h.create_mirror(&yaml).await;
    }
    h.server.faults().fail_next(
        Match::any()
            .verb(Verb::Patch)
            .resource("workloadentries")
            .namespace("bad"),
        u32::MAX,
        Injected::Internal,
    );
    // A first wait long enough that the passes below surely fall in it.
    let reconciler = h.reconciler().with_write_backoff(Duration::from_secs(600));
    let pass = async |ns: &str| {
        let mirror = h.mirrors(ns).get("web").await.unwrap();
        reconciler.pass(&mirror).await
    };
    let first = pass("bad").await;
    assert_eq!(first.failed_writes, 20);

    // Passes while it waits: no cloud call, no write.
    let requests = h.server.requests();
    let cloud_calls = h.sim.members_calls_for("bad-g").unwrap();
    for _ in 0..5 {
        let waiting = pass("bad").await;
        let error = waiting.error.unwrap().to_string();
        assert!(
            error.contains("writes failed in 1 passes in a row"),
            "{error}"
        );
        // The first wait (600 s here) is capped at 5 minutes.
        assert!(
            waiting.requeue <= Duration::from_secs(300)
                && waiting.requeue > Duration::from_secs(200),
            "{:?}",
            waiting.requeue
        );
        assert_eq!(waiting.failed_writes, 0);
    }
    assert_eq!(h.server.requests().since(&requests).writes(), 0);
    assert_eq!(h.sim.members_calls_for("bad-g").unwrap(), cloud_calls);

    // The other mirror writes, and scales in, meanwhile.
    assert_eq!(pass("good").await.created, 6);
    h.sim.scale_in("good-g", 3).unwrap();
    let scale_in = pass("good").await;
    assert_eq!((scale_in.deleted, scale_in.failed_writes), (3, 0));

    // Someone fixes the spec: a new generation is tried at once.
    let requests = h.server.requests();
    h.mirrors("bad")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"sync": {"interval": "31s"}}})),
        )
        .await
        .unwrap();
    h.server.faults().clear();
    let fixed = pass("bad").await;
    assert!(fixed.ok(), "{fixed:?}");
    assert_eq!(fixed.created, 20);
    assert_eq!(
        h.server
            .requests()
            .since(&requests)
            .get(Verb::Patch, "workloadentries"),
        20
    );
}
