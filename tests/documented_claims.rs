//! Claims the README and docs/operations.md make that no other test checked:
//! `paused`, `/healthz` and `/readyz`, `--max-concurrent-passes`,
//! `--log-format json`, `render --workload-group`, istiod's own fields on an
//! entry meshmirror updates, `istio.io/autoRegistrationGroup` never copied, a
//! failed lifecycle completion retried, and "edit the sim file and the
//! entries follow within a second".
//!
//! Each test asserts states, counts and orderings; none takes "nothing
//! happened for a while" as its only evidence.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use common::*;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use meshmirror::app::RunOptions;
use meshmirror::cluster::Cluster;
use meshmirror::cluster::kube::KubeCluster;
use meshmirror::cluster::ratelimit::RateLimiter;
use meshmirror::controller::pass::Reconciler;
use meshmirror::controller::{self, Scope};
use meshmirror::core::policy::AllowedGroups;
use meshmirror::metrics::Metrics;
use meshmirror::providers::Providers;
use meshmirror::workloadentry::{EntryVersion, keys};
use meshmirror_provider::{
    BoxEventStream, GroupRef, Instance, LifecycleAction, LifecycleKind, Outcome, Provider,
    ProviderError, RetryPolicy,
};
use meshmirror_sim::{SimCloud, SimInstance};
use meshmirror_testkit::apiserver::{Injected, Match, Verb};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------- helpers

/// A port nobody listens on right now, for the metrics endpoint.
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}

/// One HTTP/1.1 GET; None while nothing listens on `addr` yet.
async fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Some((code, body))
}

/// GET, waiting for the server to listen.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let started = Instant::now();
    loop {
        if let Some(answer) = try_get(addr, path).await {
            return answer;
        }
        assert!(
            started.elapsed() < CONVERGE,
            "nothing answers on {addr}{path}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one series in Prometheus/OpenMetrics text, or 0 when absent.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            let wanted = n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            wanted.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// `app::run` on the harness's server and sim with these options; stops when
/// dropped, and fails the harness's waits if it ends by itself.
fn run_app(h: &Harness, opts: RunOptions) -> ControllerTask {
    let opts = RunOptions {
        sim_cloud: Some(h.sim.clone()),
        kube_qps: 0.0,
        ..opts
    };
    h.spawn_controller("app", h.service.clone(), opts)
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !done().await {
        assert!(started.elapsed() < CONVERGE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn names_and_versions(entries: &[DynamicObject]) -> Vec<(String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e.metadata.name.clone().unwrap_or_default(),
                e.metadata.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn instance_ids(entries: &[DynamicObject]) -> BTreeSet<String> {
    entries
        .iter()
        .map(|e| annotation(e, keys::INSTANCE_ID))
        .collect()
}

fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshmirror-claims-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// Written beside and renamed into place, so a reader never sees half a file.
fn write_atomically(path: &Path, body: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, body).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

fn meshmirror() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshmirror"))
}

/// Runs the binary to completion off the runtime's threads (the test's API
/// server must keep answering meanwhile).
async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("meshmirror runs"))
        .await
        .expect("joined")
}

// ---------------------------------------------------------------- paused

/// README: `paused: true` — "nothing is written; status says Paused". While
/// paused, the group scales in (through the hook) and out and the mirror's
/// labels change; passes run (the cloud events are acknowledged, which
/// happens only after a successful pass, and status.observedGeneration
/// follows the edit) yet no entry is written, no Event recorded and no hook
/// answered. Unpaused, the entries follow all three changes.
#[tokio::test]
async fn a_paused_mirror_writes_nothing_and_follows_once_unpaused() {
    let sim = sim_with(2);
    sim.set_termination_hook("web", true).unwrap();
    // Events pushed before the controller subscribes are never delivered.
    let undelivered = sim.events_emitted();
    let h = Harness::start(sim).await;
    let spec = |version: &str| {
        format!(
            "  workloads: [{{name: app, labels: {{version: {version}}}}}]\n  lifecycle: {{terminateHook: sim-termination, drainSeconds: 0}}\n"
        )
    };
    h.create_mirror(&mirror_yaml("default", "web", &spec("one")))
        .await;
    h.wait_entries("default", "2 entries", |e| e.len() == 2)
        .await;
    h.wait_status("default", "web", "Ready", is_ready).await;

    let mirrors = h.mirrors("default");
    let paused = mirrors
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": true}})),
        )
        .await
        .unwrap();
    let generation = paused.metadata.generation;
    let status = h
        .wait_status("default", "web", "Paused", |s| {
            s.observed_generation == generation
                && condition(s, "Ready").is_some_and(|c| c.reason == "Paused")
        })
        .await;
    assert_eq!(condition(&status, "Ready").unwrap().status, "False");
    let before_entries = h.entries("default").await;
    let before = h.server.requests();

    // Three changes while paused.
    let leaving = h.sim.scale_in("web", 1).unwrap();
    assert_eq!(leaving, vec!["i-02".to_string()]);
    let joining = h.sim.scale_out("web", 1).unwrap();
    assert_eq!(h.sim.events_emitted() - undelivered, 2);
    let edited = mirrors
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"workloads": [{"name": "app", "labels": {"version": "two"}}]}}),
            ),
        )
        .await
        .unwrap();
    assert!(edited.metadata.generation > generation);

    // Passes ran: both cloud events acknowledged, the edit observed.
    wait_for("both cloud events acknowledged by a pass", async || {
        h.sim.events_acked() == 2
    })
    .await;
    h.wait_status("default", "web", "the edit observed while paused", |s| {
        s.observed_generation == edited.metadata.generation
            && condition(s, "Ready").is_some_and(|c| c.reason == "Paused")
    })
    .await;

    // ... and wrote nothing but the mirror's status.
    let during = h.server.requests().since(&before);
    let foreign_writes: Vec<_> = during
        .entries()
        .into_iter()
        .filter(|(verb, resource, _)| {
            verb.is_write()
                && resource != "scalinggroupmirrors/status"
                // The test's own edit of the mirror.
                && !(*verb == Verb::Patch && resource == "scalinggroupmirrors")
        })
        .collect();
    assert!(
        foreign_writes.is_empty(),
        "writes while paused: {foreign_writes:?}"
    );
    assert_eq!(
        during.get(Verb::Patch, "scalinggroupmirrors"),
        1,
        "only the test's own edit"
    );
    assert_eq!(
        names_and_versions(&h.entries("default").await),
        names_and_versions(&before_entries),
        "entries untouched while paused"
    );
    assert!(
        h.sim.completed_actions().is_empty(),
        "no hook answered while paused"
    );
    assert_eq!(
        h.sim
            .pending_actions()
            .iter()
            .map(|a| a.instance_id.clone())
            .collect::<Vec<_>>(),
        leaving
    );

    mirrors
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"paused": false}})),
        )
        .await
        .unwrap();
    let want: BTreeSet<String> = ["i-01".to_string(), joining[0].clone()].into();
    let entries = h
        .wait_entries("default", "the scale-in, scale-out and edit", |e| {
            instance_ids(e) == want && e.iter().all(|o| label(o, "version") == "two")
        })
        .await;
    assert_eq!(entries.len(), 2);
    wait_for("the held instance's hook answered", async || {
        h.sim.completed_actions().len() == 1
    })
    .await;
    let (action, outcome, _) = &h.sim.completed_actions()[0];
    assert_eq!(
        (action.instance_id.as_str(), *outcome),
        ("i-02", Outcome::Continue)
    );
    h.wait_status("default", "web", "Ready again", is_ready)
        .await;
}

// ---------------------------------------------------------------- /healthz, /readyz

/// docs/operations.md: `/healthz` answers 200 when the process serves HTTP;
/// `/readyz` answers 200 when the watch caches are synced. The API server
/// fails every list of WorkloadEntries: after two failed lists the process
/// is live but not ready (503) and no pass has written anything; once lists
/// succeed, `/readyz` turns 200 and the mirror's entry is written.
#[tokio::test]
async fn readyz_is_503_until_the_caches_are_synced_and_healthz_answers_at_once() {
    let h = Harness::without_controller(sim_with(1)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n",
    ))
    .await;
    let lists = Match::any().verb(Verb::List).resource("workloadentries");
    h.server
        .faults()
        .fail_next(lists.clone(), 1_000_000, Injected::Internal);
    let addr = free_addr();
    let _stop = run_app(
        &h,
        RunOptions {
            metrics_addr: Some(addr),
            allow_all_groups: true,
            ..RunOptions::default()
        },
    );

    wait_for("two failed lists of WorkloadEntries", async || {
        h.server.requests().get(Verb::List, "workloadentries") >= 2
    })
    .await;
    assert_eq!(get(addr, "/healthz").await, (200, "ok".to_string()));
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(
        (code, body.as_str()),
        (503, "caches not synced"),
        "not ready before the entry cache holds a list"
    );
    let entry_writes: Vec<_> = h
        .server
        .requests()
        .entries()
        .into_iter()
        .filter(|(verb, resource, _)| verb.is_write() && resource.starts_with("workloadentries"))
        .collect();
    assert!(
        entry_writes.is_empty(),
        "no pass writes before the caches are synced: {entry_writes:?}"
    );

    h.server.faults().clear();
    wait_for("/readyz 200 once a list succeeds", async || {
        get(addr, "/readyz").await == (200, "ready".to_string())
    })
    .await;
    h.wait_entries("default", "the mirror's entry", |e| e.len() == 1)
        .await;
    assert_eq!(get(addr, "/healthz").await.0, 200);
}

// ---------------------------------------------------------------- --max-concurrent-passes

/// The sim behind a gate: each `members()` call waits for a permit, and the
/// calls waiting at once are counted.
#[derive(Clone)]
struct Gated {
    sim: SimCloud,
    permits: Arc<tokio::sync::Semaphore>,
    waiting: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    /// Calls that went through the gate (each took one permit).
    passed: Arc<AtomicUsize>,
    /// Groups whose `members()` call went through the gate at least once.
    through: Arc<std::sync::Mutex<BTreeSet<String>>>,
}

#[async_trait]
impl Provider for Gated {
    fn name(&self) -> &'static str {
        "sim"
    }

    async fn members(&self, group: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
        let now = self.waiting.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        self.permits
            .acquire()
            .await
            .expect("gate never closed")
            .forget();
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        self.passed.fetch_add(1, Ordering::SeqCst);
        if let GroupRef::Sim { group } = group {
            self.through.lock().unwrap().insert(group.clone());
        }
        self.sim.members(group).await
    }

    fn events(&self) -> Option<BoxEventStream> {
        None
    }

    async fn complete_lifecycle(
        &self,
        action: &LifecycleAction,
        outcome: Outcome,
    ) -> Result<(), ProviderError> {
        self.sim.complete_lifecycle(action, outcome).await
    }
}

/// README: `--max-concurrent-passes N` — at most N mirror passes at once.
/// Five mirrors (five groups) exist when a controller limited to 2 starts;
/// every pass blocks in its cloud call until the test lets one through. Two
/// passes reach the gate, never a third while they wait; the test lets one
/// through at a time (each time another takes the free slot) until every
/// mirror has had its pass, and the peak of waiting calls stays 2. Without
/// the limit all five initial passes would wait at the gate at once.
#[tokio::test]
async fn no_more_passes_run_at_once_than_max_concurrent_passes() {
    const LIMIT: usize = 2;
    const MIRRORS: usize = 5;
    let sim = SimCloud::new();
    for g in 1..=MIRRORS {
        let group = format!("g{g}");
        sim.ensure_group(&group, "us-east-1");
        sim.add_instance(
            &group,
            SimInstance::running(format!("i-{g}"), Ipv4Addr::new(10, 0, 2, g as u8)),
        )
        .unwrap();
    }
    let h = Harness::without_controller(sim).await;
    for g in 1..=MIRRORS {
        h.create_mirror(
            &mirror_yaml("default", &format!("m{g}"), "  workloads: [{name: app}]\n")
                .replace("group: web", &format!("group: g{g}")),
        )
        .await;
    }
    let gated = Gated {
        sim: h.sim.clone(),
        permits: Arc::new(tokio::sync::Semaphore::new(0)),
        waiting: Arc::default(),
        peak: Arc::default(),
        passed: Arc::default(),
        through: Arc::default(),
    };
    let metrics = Arc::new(Metrics::new());
    let mut providers = Providers::default();
    providers.add(gated.clone(), metrics.clone(), RetryPolicy::default());

    // The controller as app::run wires it, with --max-concurrent-passes 2.
    let scope = Scope {
        max_concurrent_passes: LIMIT as u16,
        ..Scope::default()
    };
    let (caches, cache_tasks) = controller::Caches::start(&h.service, &scope);
    let cluster: Arc<dyn Cluster> = Arc::new(
        KubeCluster::new(
            h.service.clone(),
            EntryVersion::V1,
            Some(caches.entries.clone()),
            RateLimiter::unlimited(),
            None,
        )
        .with_groups(caches.groups.clone()),
    );
    let reconciler = Arc::new(Reconciler::new(
        providers,
        cluster,
        metrics,
        AllowedGroups::allow_all(),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = controller::run(h.service.clone(), scope, reconciler, caches, async {
        let _ = stopped.await;
    });
    let controller = tokio::spawn(async move {
        run.await;
        drop(cache_tasks);
    });

    let peak_ok = |gated: &Gated| {
        let peak = gated.peak.load(Ordering::SeqCst);
        assert!(peak <= LIMIT, "{peak} passes ran at once, limit {LIMIT}");
    };
    let mut released = 0;
    loop {
        let through = gated.through.lock().unwrap().len();
        if through == MIRRORS {
            break;
        }
        // The slots are full: as many calls wait as the limit allows (or
        // as mirrors are left, at the end: a pass's own status write does
        // not cause another pass).
        wait_for("the free slots taken", async || {
            peak_ok(&gated);
            gated.waiting.load(Ordering::SeqCst) >= LIMIT.min(MIRRORS - through)
        })
        .await;
        assert!(released < 100, "more than 100 passes for {MIRRORS} mirrors");
        gated.permits.add_permits(1);
        released += 1;
        // Until the call has left the gate, not merely taken the permit:
        // `waiting` counts it until then.
        wait_for("the released call to go through", async || {
            peak_ok(&gated);
            gated.passed.load(Ordering::SeqCst) == released
        })
        .await;
    }
    peak_ok(&gated);
    assert_eq!(
        gated.peak.load(Ordering::SeqCst),
        LIMIT,
        "the limit was reached"
    );
    // Let everything through: each mirror gets its entry.
    gated.permits.add_permits(10_000);
    h.wait_entries("default", "one entry per mirror", |e| e.len() == MIRRORS)
        .await;
    eprintln!("{released} passes let through one at a time; peak {LIMIT} at once");
    drop(stop);
    let _ = tokio::time::timeout(Duration::from_secs(10), controller).await;
}

// ---------------------------------------------------------------- --log-format json

/// Every stderr line parsed as one JSON object with a timestamp, a level and
/// a message; the lines' messages.
fn json_log_lines(stderr: &str) -> Vec<Value> {
    let mut lines = Vec::new();
    for line in stderr.lines() {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON object per line ({e}): {line:?}\n{stderr}"));
        assert!(value.is_object(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(value["level"].is_string(), "{line}");
        assert!(value["fields"]["message"].is_string(), "{line}");
        lines.push(value);
    }
    lines
}

fn message_of(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

/// README: `--log-format json|text`. With json, every line the process logs
/// is one JSON object, through a successful `run --once`, a failing one
/// (exit 1, the pass failure logged as an ERROR object) and `render` (whose
/// YAML goes to stdout, untouched), and a command that fails outright (its
/// one-line error was plain text before; now an ERROR object). Text logs of
/// the same run are not JSON, so the check can tell the two apart. (clap's
/// own usage errors come before the flag is read and stay text.)
#[tokio::test]
async fn json_logs_are_one_json_object_per_line() {
    let h = Harness::without_controller(SimCloud::new()).await;
    let dir = scratch_dir("json-logs");
    let kubeconfig = dir.join("kubeconfig");
    h.server.write_kubeconfig(&kubeconfig).unwrap();
    let sim_file = dir.join("sim.yaml");
    write_atomically(
        &sim_file,
        "groups:\n  web:\n    region: us-east-1\n    instances:\n      - {id: i-1, privateIPv4: 10.0.0.1, zone: us-east-1a}\n",
    );
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n",
    ))
    .await;
    let once = |format: &str| {
        let mut cmd = meshmirror();
        cmd.args([
            "--log-format",
            format,
            "run",
            "--once",
            "--allow-all-groups",
            "--sim-file",
        ])
        .arg(&sim_file)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info,meshmirror=debug,kube=warn,hyper=warn");
        cmd
    };

    let out = output(once("json")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(out.stdout.is_empty());
    let lines = json_log_lines(&stderr);
    assert!(
        lines
            .iter()
            .any(|l| message_of(l) == "entries synced" && l["fields"]["mirror"] == "web"),
        "the pass's writes are logged with their fields: {stderr}"
    );
    assert_eq!(h.entries("default").await.len(), 1);

    let text = output(once("text")).await;
    let text_err = String::from_utf8_lossy(&text.stderr);
    assert!(text.status.success(), "{text_err}");
    assert!(
        !text_err.is_empty()
            && text_err
                .lines()
                .all(|l| serde_json::from_str::<Value>(l).is_err()),
        "text logs are not JSON: {text_err}"
    );

    // A pass that fails: its error is a JSON object too.
    h.create_mirror(
        &mirror_yaml("default", "gone", "  workloads: [{name: app}]\n")
            .replace("group: web", "group: no-such-group"),
    )
    .await;
    let out = output(once("json")).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines = json_log_lines(&stderr);
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && message_of(l) == "pass failed"
            && l["fields"]["mirror"] == "gone"),
        "{stderr}"
    );

    // render: YAML on stdout, JSON logs on stderr.
    let mirror_file = dir.join("mirror.yaml");
    write_atomically(
        &mirror_file,
        &mirror_yaml("shop", "web", "  workloads: [{name: app}]\n"),
    );
    let mut render = meshmirror();
    render
        .args(["--log-format", "json", "render", "-f"])
        .arg(&mirror_file)
        .arg("--sim-file")
        .arg(&sim_file)
        .env("RUST_LOG", "debug");
    let out = output(render).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    json_log_lines(&stderr);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let doc: Value = serde_yaml::from_str(stdout.trim_start_matches("---\n")).unwrap();
    assert_eq!(doc["kind"], "WorkloadEntry");

    // A command that fails outright: its one-line error is a JSON object too.
    let mut no_cluster = meshmirror();
    no_cluster
        .args(["--log-format", "json", "run", "--once"])
        .env("KUBECONFIG", dir.join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST");
    let out = output(no_cluster).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines = json_log_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(lines[0]["level"], "ERROR");
    assert!(
        message_of(&lines[0]).starts_with("error: no Kubernetes configuration"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------- render --workload-group

/// README: `render --workload-group FILE` — the workload's WorkloadGroup gives
/// defaults (its metadata labels and annotations, template ports,
/// serviceAccount, network, weight) and the mirror's inline fields override
/// them. The expected entry is written out by hand.
#[test]
fn render_applies_the_workload_groups_defaults() {
    let dir = scratch_dir("render-group");
    let sim = dir.join("sim.yaml");
    write_atomically(
        &sim,
        "groups:\n  web:\n    region: eu-west-1\n    instances:\n      - {id: i-1, privateIPv4: 10.0.0.1, zone: eu-west-1a}\n",
    );
    let group = dir.join("group.yaml");
    write_atomically(
        &group,
        "apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews, namespace: shop}
spec:
  metadata:
    labels: {app: reviews, version: v1}
    annotations: {owner: team-a}
  template:
    ports: {http: 9080, grpc: 9090}
    serviceAccount: bookinfo-reviews
    network: vm-net
    weight: 3
  probe:
    httpGet: {port: 9080}
",
    );
    let mirror = dir.join("mirror.yaml");
    write_atomically(
        &mirror,
        "apiVersion: meshmirror.io/v1alpha1
kind: ScalingGroupMirror
metadata: {name: web, namespace: shop}
spec:
  provider: {sim: {group: web}}
  workloads:
    - name: api
      workloadGroup: reviews
      labels: {version: v2}
      annotations: {team: pay}
      ports: {grpc: 9091}
",
    );
    let out = meshmirror()
        .args(["render", "-f"])
        .arg(&mirror)
        .arg("--sim-file")
        .arg(&sim)
        .arg("--workload-group")
        .arg(&group)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = stdout
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 1, "{stdout}");
    let doc = &docs[0];
    assert_eq!(doc["apiVersion"], "networking.istio.io/v1");
    assert_eq!(doc["kind"], "WorkloadEntry");
    assert_eq!(doc["metadata"]["namespace"], "shop");
    let name = doc["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("web-api-i-1-"), "{name}");
    assert_eq!(
        doc["spec"],
        json!({
            "address": "10.0.0.1",
            "ports": {"http": 9080, "grpc": 9091},
            "labels": {
                "app": "reviews",
                "version": "v2",
                "service.istio.io/workload-name": "reviews",
            },
            "serviceAccount": "bookinfo-reviews",
            "network": "vm-net",
            "locality": "eu-west-1/eu-west-1a",
            "weight": 3,
        }),
        "{stdout}"
    );
    assert_eq!(
        doc["metadata"]["labels"],
        json!({
            "app": "reviews",
            "version": "v2",
            "service.istio.io/workload-name": "reviews",
            "app.kubernetes.io/managed-by": "meshmirror",
            "meshmirror.io/mirror": "web",
            "meshmirror.io/workload": "api",
            "meshmirror.io/provider": "sim",
        }),
        "{stdout}"
    );
    let mut annotations = doc["metadata"]["annotations"].clone();
    let hash = annotations
        .as_object_mut()
        .unwrap()
        .remove("meshmirror.io/applied-hash")
        .expect("the applied hash");
    assert!(
        hash.as_str()
            .is_some_and(|h| h.len() == 16 && h.chars().all(|c| c.is_ascii_hexdigit())),
        "{hash}"
    );
    assert_eq!(
        annotations,
        json!({
            "owner": "team-a",
            "team": "pay",
            "meshmirror.io/instance-id": "i-1",
            "meshmirror.io/group": "sim:web",
        }),
        "{stdout}"
    );

    // Without the file, the reference cannot be resolved: the command says so.
    let out = meshmirror()
        .args(["render", "-f"])
        .arg(&mirror)
        .arg("--sim-file")
        .arg(&sim)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("reviews") && stderr.contains("workloadGroup"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------- istiod's fields

/// README: meshmirror "never overwrites what istiod writes
/// (`istio.io/connectedAt`, `istio.io/workloadController`, health status in
/// `Agent` mode): it applies only its own fields." istiod's writes are made
/// here under istiod's own field manager (a merge patch of the annotations,
/// a server-side apply of a Healthy=False condition while the cloud calls
/// the VM healthy); then a label change in the mirror makes meshmirror
/// rewrite the entry, and istiod's fields are still there, next to
/// meshmirror's new label.
#[tokio::test]
async fn istiods_fields_survive_meshmirrors_update_of_the_entry() {
    let h = Harness::start(sim_with(1)).await;
    let spec = |version: &str| {
        format!("  health: Agent\n  workloads: [{{name: app, labels: {{version: {version}}}}}]\n")
    };
    h.create_mirror(&mirror_yaml("default", "web", &spec("one")))
        .await;
    let entries = h
        .wait_entries("default", "one entry", |e| e.len() == 1)
        .await;
    let name = entries[0].metadata.name.clone().unwrap();
    assert_eq!(annotation(&entries[0], keys::HEALTH_CHECKS), "true");
    assert!(
        entries[0].data["status"]["conditions"].is_null(),
        "Agent mode: meshmirror writes no health of its own: {:?}",
        entries[0].data["status"]
    );

    let api = h.entries_api("default");
    let istiod = PatchParams {
        field_manager: Some("pilot-discovery".into()),
        ..PatchParams::default()
    };
    api.patch(
        &name,
        &istiod,
        &Patch::Merge(&json!({"metadata": {"annotations": {
            "istio.io/connectedAt": "2026-01-02T03:04:05.000000006Z",
            "istio.io/workloadController": "istiod-7d9c8b-x2x9q",
        }}})),
    )
    .await
    .unwrap();
    // The VM's agent fails its probe while the cloud calls the VM healthy:
    // in Agent mode the agent's word stands.
    let healthy = json!({
        "type": "Healthy",
        "status": "False",
        "reason": "Unhealthy",
        "message": "Get \"http://10.0.1.1:8080/ready\": connection refused",
        "lastProbeTime": "2026-01-02T03:04:06Z",
        "lastTransitionTime": "2026-01-02T03:04:06Z",
    });
    api.patch_status(
        &name,
        &PatchParams::apply("pilot-discovery").force(),
        &Patch::Apply(&json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": name, "namespace": "default"},
            "status": {"conditions": [healthy]},
        })),
    )
    .await
    .unwrap();
    let istiod_wrote = api.get(&name).await.unwrap();

    let before = h.server.requests();
    h.mirrors("default")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                &json!({"spec": {"workloads": [{"name": "app", "labels": {"version": "two"}}]}}),
            ),
        )
        .await
        .unwrap();
    let entries = h
        .wait_entries("default", "meshmirror's update", |e| {
            e.len() == 1 && label(&e[0], "version") == "two"
        })
        .await;
    let entry = &entries[0];
    assert_eq!(entry.metadata.name.as_deref(), Some(name.as_str()));
    assert_ne!(
        entry.metadata.resource_version, istiod_wrote.metadata.resource_version,
        "meshmirror rewrote the entry"
    );
    assert_eq!(entry.data["spec"]["labels"]["version"], "two");
    assert_eq!(
        annotation(entry, "istio.io/connectedAt"),
        "2026-01-02T03:04:05.000000006Z"
    );
    assert_eq!(
        annotation(entry, "istio.io/workloadController"),
        "istiod-7d9c8b-x2x9q"
    );
    assert_eq!(annotation(entry, keys::HEALTH_CHECKS), "true");
    assert_eq!(entry.data["status"]["conditions"], json!([healthy]));
    let during = h.server.requests().since(&before);
    assert!(
        during.get(Verb::Patch, "workloadentries") >= 1,
        "{:?}",
        during.entries()
    );
    assert_eq!(
        during.resource("workloadentries/status"),
        0,
        "Agent mode: meshmirror leaves health to istiod"
    );
    // istiod still owns what it wrote.
    let managers: BTreeMap<String, Value> = entry
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                format!(
                    "{}/{}",
                    m.manager.clone().unwrap_or_default(),
                    m.subresource.clone().unwrap_or_default()
                ),
                m.fields_v1
                    .as_ref()
                    .map(|f| f.0.clone())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let istiod_main = &managers["pilot-discovery/"];
    assert!(
        istiod_main["f:metadata"]["f:annotations"]
            .get("f:istio.io/connectedAt")
            .is_some(),
        "{managers:#?}"
    );
    assert!(
        managers.contains_key("pilot-discovery/status"),
        "{managers:#?}"
    );
}

// ---------------------------------------------------------------- autoRegistrationGroup

/// README: "meshmirror never sets `istio.io/autoRegistrationGroup`". The
/// annotation is offered to it both ways it copies metadata: a WorkloadGroup's
/// `spec.metadata.annotations` (dropped; the entries carry every other
/// annotation) and a workload's inline `annotations` (the spec is refused:
/// istio.io/ keys are istiod's).
#[tokio::test]
async fn the_auto_registration_annotation_is_never_copied() {
    let h = Harness::start(sim_with(1)).await;
    let groups: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        "default",
        &EntryVersion::V1.workload_groups(),
    );
    let group: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadGroup",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "metadata": {
                "labels": {"app": "reviews"},
                "annotations": {"istio.io/autoRegistrationGroup": "reviews", "owner": "team-a"},
            },
            "template": {"ports": {"http": 9080}},
        }
    }))
    .unwrap();
    groups.create(&PostParams::default(), &group).await.unwrap();
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads:
    - {name: api, workloadGroup: reviews, annotations: {team: pay}}
    - name: exporter
      annotations: {istio.io/autoRegistrationGroup: web, team: ops}
",
    ))
    .await;
    let status = h
        .wait_status("default", "web", "InvalidSpec", |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "InvalidSpec")
        })
        .await;
    let message = &condition(&status, "Ready").unwrap().message;
    assert!(
        message.contains("spec.workloads[1].annotations")
            && message.contains("istio.io/autoRegistrationGroup"),
        "{message}"
    );
    assert!(h.entries("default").await.is_empty());
    let fixed = json!({"spec": {"workloads": [
        {"name": "api", "workloadGroup": "reviews", "annotations": {"team": "pay"}},
        {"name": "exporter", "annotations": {"team": "ops"}},
    ]}});
    h.mirrors("default")
        .patch("web", &PatchParams::default(), &Patch::Merge(&fixed))
        .await
        .unwrap();
    let entries = h
        .wait_entries("default", "two entries", |e| e.len() == 2)
        .await;
    let by_workload: BTreeMap<String, &DynamicObject> = entries
        .iter()
        .map(|e| (label(e, keys::WORKLOAD), e))
        .collect();
    let api = by_workload["api"];
    let exporter = by_workload["exporter"];
    assert_eq!(annotation(api, "owner"), "team-a");
    assert_eq!(annotation(api, "team"), "pay");
    assert_eq!(annotation(exporter, "team"), "ops");
    for entry in [api, exporter] {
        let annotations = entry.metadata.annotations.clone().unwrap_or_default();
        assert!(
            !annotations.contains_key(keys::AUTO_REGISTRATION_GROUP),
            "{annotations:?}"
        );
        assert!(
            !entry
                .metadata
                .labels
                .clone()
                .unwrap_or_default()
                .contains_key(keys::AUTO_REGISTRATION_GROUP)
        );
    }
    h.wait_status("default", "web", "Ready", is_ready).await;
}

// ---------------------------------------------------------------- lifecycle retry

/// README (lifecycle) and the `MeshmirrorLifecycleActionErrors` alert: a
/// hook that could not be answered is counted and answered by a later pass.
/// The sim fails the next three completions, as many as the provider wrapper
/// tries within one pass, so the pass gives up; the hook stays held and
/// `meshmirror_lifecycle_actions_total{result="error"}` counts it; a later
/// pass (at the latest the 5 s interval's) answers it. The sim answers errors first, so the
/// success is the fourth call: three errors, one CONTINUE.
#[tokio::test]
async fn a_failed_lifecycle_completion_is_counted_and_retried_by_a_later_pass() {
    let sim = sim_with(2);
    sim.set_termination_hook("web", true).unwrap();
    let attempts_per_pass = RetryPolicy::default().attempts as usize;
    assert_eq!(attempts_per_pass, 3, "the wrapper's attempts changed");
    sim.fail_next_completions(
        "web",
        attempts_per_pass,
        ProviderError::Transient("injected: CompleteLifecycleAction timed out".into()),
    )
    .unwrap();
    let h = Harness::without_controller(sim).await;
    let addr = free_addr();
    let _stop = run_app(
        &h,
        RunOptions {
            metrics_addr: Some(addr),
            allow_all_groups: true,
            ..RunOptions::default()
        },
    );
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n  sync: {interval: 5s}\n  lifecycle: {terminateHook: sim-termination, drainSeconds: 0}\n",
    ))
    .await;
    h.wait_entries("default", "2 entries", |e| e.len() == 2)
        .await;

    h.sim.scale_in("web", 1).unwrap();
    let metrics = async || get(addr, "/metrics").await.1;
    let errors = |text: &str| {
        metric(
            text,
            "meshmirror_lifecycle_actions_total",
            &[("kind", "terminate"), ("result", "error")],
        )
    };
    let continued = |text: &str| {
        metric(
            text,
            "meshmirror_lifecycle_actions_total",
            &[("kind", "terminate"), ("result", "continue")],
        )
    };
    wait_for("the failed completion counted", async || {
        errors(&metrics().await) >= 1.0
    })
    .await;
    wait_for("the hook answered by a later pass", async || {
        !h.sim.completed_actions().is_empty()
    })
    .await;
    let completed = h.sim.completed_actions();
    assert_eq!(completed.len(), 1);
    assert_eq!(completed[0].0.instance_id, "i-02");
    assert_eq!(completed[0].0.kind, LifecycleKind::Terminate);
    assert_eq!(completed[0].1, Outcome::Continue);
    assert!(h.sim.pending_actions().is_empty());

    let text = metrics().await;
    assert_eq!(errors(&text), 1.0, "one pass gave up:\n{text}");
    assert_eq!(continued(&text), 1.0, "one pass answered:\n{text}");
    assert_eq!(
        metric(
            &text,
            "meshmirror_provider_errors_total",
            &[("provider", "sim"), ("operation", "complete_lifecycle")],
        ),
        attempts_per_pass as f64,
        "every failed call counted:\n{text}"
    );
    assert_eq!(
        metric(
            &text,
            "meshmirror_provider_requests_total",
            &[("provider", "sim"), ("operation", "complete_lifecycle")],
        ),
        attempts_per_pass as f64 + 1.0,
        "three failures, then the answer:\n{text}"
    );
    let entries = h.entries("default").await;
    assert_eq!(instance_ids(&entries), BTreeSet::from(["i-01".to_string()]));
}

// ---------------------------------------------------------------- sim file

/// The real binary, killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sim_file_body(instances: &[(&str, &str)]) -> String {
    let mut yaml = String::from("groups:\n  web:\n    region: us-east-1\n    instances:\n");
    for (id, ip) in instances {
        yaml.push_str(&format!(
            "      - {{id: {id}, privateIPv4: {ip}, zone: us-east-1a}}\n"
        ));
    }
    yaml
}

/// README: "Edit the file and the entries follow within a second" (`run
/// --sim-file`). Three edits of the file read by the real binary (scale out,
/// a moved address, scale in); each time the entries must match the file.
/// The latencies are printed. The assertion is 5 s, not 1 s: the file is
/// polled every 500 ms and a change must read the same twice 50 ms apart, so
/// an idle machine follows in 0.1-0.7 s, but this test shares 2 cores with
/// the other test binaries, and a process starved for a few seconds there
/// must not fail it. A watcher that stopped polling, or polled every 10 s,
/// still fails it.
#[tokio::test]
async fn editing_the_sim_file_is_followed_within_seconds() {
    let h = Harness::without_controller(SimCloud::new()).await;
    let dir = scratch_dir("sim-file");
    let kubeconfig = dir.join("kubeconfig");
    h.server.write_kubeconfig(&kubeconfig).unwrap();
    let sim_file = dir.join("sim.yaml");
    write_atomically(&sim_file, &sim_file_body(&[("i-1", "10.0.0.1")]));
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n",
    ))
    .await;
    let _process = Process(
        meshmirror()
            .args(["run", "--allowed-groups", "default=sim:*", "--sim-file"])
            .arg(&sim_file)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("meshmirror starts"),
    );
    let by_id = |entries: &[DynamicObject]| -> BTreeMap<String, String> {
        entries
            .iter()
            .map(|e| {
                (
                    annotation(e, keys::INSTANCE_ID),
                    e.data["spec"]["address"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let want = |instances: &[(&str, &str)]| -> BTreeMap<String, String> {
        instances
            .iter()
            .map(|(id, ip)| (id.to_string(), ip.to_string()))
            .collect()
    };
    let start = [("i-1", "10.0.0.1")];
    h.wait_entries("default", "the file's first state", |e| {
        by_id(e) == want(&start)
    })
    .await;

    let edits: [(&str, &[(&str, &str)]); 3] = [
        ("scale out", &[("i-1", "10.0.0.1"), ("i-2", "10.0.0.2")]),
        (
            "address moved",
            &[("i-1", "10.0.0.1"), ("i-2", "10.0.0.22")],
        ),
        ("scale in", &[("i-2", "10.0.0.22")]),
    ];
    let mut latencies = Vec::new();
    for (what, instances) in edits {
        let expected = want(instances);
        let edited = Instant::now();
        write_atomically(&sim_file, &sim_file_body(instances));
        h.wait_entries("default", what, |e| by_id(e) == expected)
            .await;
        let latency = edited.elapsed();
        eprintln!("sim file edit ({what}): entries followed in {latency:?}");
        latencies.push((what, latency));
    }
    for (what, latency) in latencies {
        assert!(
            latency < Duration::from_secs(5),
            "{what}: entries followed the file only after {latency:?}"
        );
    }
}

/// README ("The rest of onboarding"): its example is
/// deploy/examples/mirror-sim-mesh.yaml, and rendering it gives the three
/// objects the README describes, each field written out by hand.
#[test]
fn the_readme_mesh_example_is_the_example_file_and_renders_as_described() {
    let readme = include_str!("../README.md");
    let file = include_str!("../deploy/examples/mirror-sim-mesh.yaml");
    let body: String = file
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        readme.contains(&format!("```yaml\n{body}```")),
        "the README's example differs from deploy/examples/mirror-sim-mesh.yaml"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meshmirror"))
        .args([
            "render",
            "-f",
            "deploy/examples/mirror-sim-mesh.yaml",
            "--sim-file",
            "deploy/examples/sim-cloud.yaml",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    let spec_of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .map(|d| (d["metadata"]["name"].clone(), d["spec"].clone()))
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    assert_eq!(
        spec_of("ServiceEntry"),
        (
            json!("api"),
            json!({
                "hosts": ["api.shop.svc.cluster.local"],
                "location": "MESH_INTERNAL",
                "resolution": "STATIC",
                "ports": [{"name": "http", "number": 80, "targetPort": 8080, "protocol": "HTTP"}],
                "workloadSelector": {"labels": {"app": "api"}},
            })
        )
    );
    assert_eq!(
        spec_of("Service"),
        (
            json!("exporter"),
            json!({
                "selector": {"app": "exporter"},
                "ports": [{"name": "http-metrics", "port": 9100, "targetPort": 9100, "protocol": "TCP"}],
            })
        )
    );
    assert_eq!(
        spec_of("Sidecar"),
        (
            json!("web"),
            json!({
                "workloadSelector": {"labels": {"app": "web-vm"}},
                "ingress": [
                    {"port": {"number": 8080, "name": "http", "protocol": "HTTP"}, "defaultEndpoint": "127.0.0.1:8080"},
                    {"port": {"number": 9100, "name": "http-metrics", "protocol": "HTTP"}, "defaultEndpoint": "127.0.0.1:9100"},
                ],
                "egress": [{"hosts": ["./*", "istio-system/*"]}],
                "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"},
            })
        )
    );
    let entries = docs.iter().filter(|d| d["kind"] == "WorkloadEntry").count();
    assert_eq!(entries, 4, "two VMs of group web x two workloads");
    assert!(
        docs.iter()
            .filter(|d| d["kind"] == "WorkloadEntry")
            .all(|d| d["spec"]["network"] == "vm-net")
    );
}
