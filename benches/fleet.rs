//! Fleet scale: 100 mirrors x 100 instances (1 workload) on the simulated
//! cloud and the test kit's API server. Prints its figures; asserts nothing
//! about time (it does check correctness: zero writes in steady state, the
//! exact entry counts).
//!
//! Two processes keep the controller's cost apart from everything else:
//! - this process (the driver) runs the test kit's API server in-process, a
//!   kube watcher on every WorkloadEntry that timestamps arrivals and
//!   deletions, and the clock;
//! - a child process (this binary again, `MESHMIRROR_BENCH_ROLE=controller`)
//!   runs meshmirror's controller (`app::run`, exactly as `meshmirror run`
//!   wires it) with the simulated cloud in-process, driven over stdin.
//!
//! The child's CPU (sum of /proc/PID/task/*/schedstat) and peak RSS (VmHWM)
//! are the controller's own (plus the in-memory sim, a few MB at 10k
//! instances).
//!
//! `cargo bench -p meshmirror --no-default-features --features demo --bench fleet`
//! (`MESHMIRROR_BENCH=short` or `-- --short`: 10 mirrors x 20 instances, 100
//! events, a 2-point curve). docs/benchmarks.md explains every figure.

#![allow(clippy::print_stdout)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::runtime::watcher;
use meshmirror::app::{self, RunOptions};
use meshmirror::core::names::entry_name;
use meshmirror::crd::ScalingGroupMirror;
use meshmirror::workloadentry::EntryVersion;
use meshmirror_sim::SimCloud;
use meshmirror_testkit::apiserver::{ApiServer, RequestCounts, Verb};

#[path = "common/mode.rs"]
mod mode;

const ROLE: &str = "MESHMIRROR_BENCH_ROLE";
const NAMESPACES: usize = 10;
/// The write rate the main run is held to (`--kube-qps`, `--kube-burst`).
const QPS: f64 = 500.0;
const BURST: u32 = 1000;
const STEADY_ROUNDS: usize = 5;

fn main() {
    if std::env::var(ROLE).as_deref() == Ok("controller") {
        controller_main();
        return;
    }
    let mode = mode::Mode::from_env();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(driver(mode));
}

// ====================================================================
// The controller child: meshmirror + the simulated cloud, driven by lines on
// stdin, each answered by one line on stdout.
// ====================================================================

fn controller_main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let qps: f64 = env_parse("MESHMIRROR_BENCH_QPS", 0.0);
    let burst: u32 = env_parse("MESHMIRROR_BENCH_BURST", 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sim = SimCloud::new();
    let mut groups: Vec<String> = Vec::new();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut stop_tx = Some(stop_tx);
    let mut stop_rx = Some(stop_rx);
    let mut out = std::io::stdout().lock();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| {
            words
                .get(i)
                .and_then(|w| w.parse::<usize>().ok())
                .unwrap_or(0)
        };
        let reply = match words.first().copied() {
            Some("populate") => {
                for g in 0..num(1) {
                    let name = group_name(g);
                    sim.ensure_group(&name, "us-east-1");
                    sim.scale_out(&name, num(2)).expect("scale out");
                    groups.push(name);
                }
                "ok".to_string()
            }
            Some("start") => {
                let client = rt
                    .block_on(kube::Client::try_default())
                    .expect("KUBECONFIG names the driver's API server");
                let opts = RunOptions {
                    sim_cloud: Some(sim.clone()),
                    kube_qps: qps,
                    kube_burst: burst,
                    allow_all_groups: true,
                    // MESHMIRROR_BENCH_PASSES: --max-concurrent-passes (default 8).
                    max_concurrent_passes: std::env::var("MESHMIRROR_BENCH_PASSES")
                        .ok()
                        .and_then(|v| v.parse().ok()),
                    ..RunOptions::default()
                };
                let stop = stop_rx.take().expect("started once");
                rt.spawn(app::run(client, opts, async {
                    let _ = stop.await;
                }));
                "ok".to_string()
            }
            Some("out") => sim
                .scale_out(words[1], num(2))
                .expect("scale out")
                .join(" "),
            Some("in") => sim.scale_in(words[1], num(2)).expect("scale in").join(" "),
            Some("outall") => {
                let n: usize = groups
                    .iter()
                    .map(|g| sim.scale_out(g, num(1)).map(|v| v.len()).unwrap_or(0))
                    .sum();
                n.to_string()
            }
            Some("inall") => {
                let n: usize = groups
                    .iter()
                    .map(|g| sim.scale_in(g, num(1)).map(|v| v.len()).unwrap_or(0))
                    .sum();
                n.to_string()
            }
            // A Changed event for every group: one pass of every mirror through
            // the running controller, as a burst of cloud events would.
            Some("touchall") => {
                for g in &groups {
                    sim.push_event(g, meshmirror_provider::GroupEventKind::Changed);
                }
                groups.len().to_string()
            }
            Some("acked") => sim.events_acked().to_string(),
            Some("calls") => sim.members_calls().to_string(),
            Some("quit") | None => break,
            Some(other) => format!("error unknown command {other}"),
        };
        if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
    if let Some(stop) = stop_tx.take() {
        let _ = stop.send(());
    }
    rt.shutdown_timeout(Duration::from_secs(2));
}

fn env_parse<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn group_name(g: usize) -> String {
    format!("g{g:03}")
}

fn mirror_name(g: usize) -> String {
    format!("m{g:03}")
}

fn namespace(g: usize) -> String {
    format!("fleet-{}", g % NAMESPACES)
}

// ====================================================================
// The driver.
// ====================================================================

/// The controller child, spoken to line by line.
struct Controller {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Controller {
    fn spawn(dir: &Path, qps: f64, burst: u32, tag: &str) -> Controller {
        let log = std::fs::File::create(dir.join(format!("controller-{tag}.log"))).expect("log");
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env(ROLE, "controller")
            .env("KUBECONFIG", dir.join("kubeconfig"))
            .env("MESHMIRROR_BENCH_QPS", qps.to_string())
            .env("MESHMIRROR_BENCH_BURST", burst.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("controller child starts");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        Controller {
            child,
            stdin,
            stdout,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a command; returns its one-line answer.
    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("child alive");
        self.stdin.flush().expect("child alive");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("child answers");
        assert!(!line.is_empty(), "the controller child died on {command:?}");
        line.trim().to_string()
    }

    fn ask_num(&mut self, command: &str) -> u64 {
        let answer = self.ask(command);
        answer
            .parse()
            .unwrap_or_else(|_| panic!("{command}: {answer}"))
    }

    /// CPU time of every live thread, from the scheduler (ns precision).
    fn cpu(&self) -> Duration {
        let mut ns: u64 = 0;
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) {
            for task in tasks.flatten() {
                if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
                    ns += s
                        .split_whitespace()
                        .next()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0);
                }
            }
        }
        Duration::from_nanos(ns)
    }

    /// (VmRSS, VmHWM) in MiB.
    fn memory(&self) -> (f64, f64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every WorkloadEntry the API server has, as seen by a watch, with the time
/// each name last appeared or went away.
#[derive(Default)]
struct Seen {
    present: HashSet<String>,
    arrived: HashMap<String, Instant>,
    gone: HashMap<String, Instant>,
}

struct Watch {
    seen: Arc<Mutex<Seen>>,
    changed: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Watch {
    fn start(client: &kube::Client) -> Watch {
        let api: Api<DynamicObject> =
            Api::all_with(client.clone(), &EntryVersion::V1.workload_entries());
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, changed) = tokio::sync::watch::channel(0u64);
        let task = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut stream = watcher(api, watcher::Config::default()).boxed();
                while let Some(event) = stream.next().await {
                    let now = Instant::now();
                    let Ok(event) = event else { continue };
                    let mut s = seen.lock().expect("not poisoned");
                    match event {
                        watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                            let name = o.metadata.name.unwrap_or_default();
                            if s.present.insert(name.clone()) {
                                s.arrived.insert(name, now);
                            }
                        }
                        watcher::Event::Delete(o) => {
                            let name = o.metadata.name.unwrap_or_default();
                            s.present.remove(&name);
                            s.gone.insert(name, now);
                        }
                        watcher::Event::Init | watcher::Event::InitDone => {}
                    }
                    drop(s);
                    tx.send_modify(|n| *n += 1);
                }
            })
        };
        Watch {
            seen,
            changed,
            task,
        }
    }

    /// Waits until `done` holds; None after `limit`.
    async fn until(&mut self, limit: Duration, done: impl Fn(&Seen) -> bool) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if done(&self.seen.lock().expect("not poisoned")) {
                return Some(Instant::now());
            }
            match tokio::time::timeout_at(deadline, self.changed.changed()).await {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().expect("not poisoned").present.len()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One fleet: an API server, the mirrors, the controller child, the watch.
struct Fleet {
    /// RSS of the controller child after populating the simulated cloud,
    /// before the controller starts (MiB).
    sim_rss: f64,
    server: ApiServer,
    client: kube::Client,
    ctl: Controller,
    watch: Watch,
    mirrors: usize,
    instances: usize,
    workloads: usize,
    dir: PathBuf,
}

/// What a converge from empty cost.
struct Converge {
    entries: usize,
    wall: Duration,
    cpu: Duration,
    writes: u64,
    /// From the last entry's arrival until the controller stopped writing.
    tail: Duration,
    /// What it wrote in that tail.
    tail_writes: RequestCounts,
    rss_peak: f64,
}

impl Fleet {
    async fn start(mirrors: usize, instances: usize, qps: f64, burst: u32, tag: &str) -> Fleet {
        let dir =
            std::env::temp_dir().join(format!("meshmirror-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let server = ApiServer::builder()
            .crd_yaml(&app::crd_yaml())
            .history(1_000_000)
            .start()
            .await
            .expect("API server starts");
        server
            .write_kubeconfig(dir.join("kubeconfig"))
            .expect("kubeconfig");
        let client = server.client();
        let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
        for n in 0..NAMESPACES.min(mirrors) {
            let ns: k8s_openapi::api::core::v1::Namespace =
                serde_json::from_value(serde_json::json!({"metadata": {"name": namespace(n)}}))
                    .expect("namespace");
            let _ = ns_api.create(&PostParams::default(), &ns).await;
        }
        let workloads = workload_count();
        for g in 0..mirrors {
            let mut yaml = format!(
                "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n  provider: {{sim: {{group: {}}}}}\n  sync: {{interval: 1h}}\n  workloads:\n    - name: app\n      labels: {{app: {}}}\n      ports: {{http: 8080}}\n      serviceAccount: app\n",
                mirror_name(g),
                namespace(g),
                group_name(g),
                mirror_name(g),
            );
            // Further applications on the same VMs (e.g. a metrics exporter).
            for w in 2..=workloads {
                yaml.push_str(&format!(
                    "    - name: app{w}\n      labels: {{app: {}-{w}}}\n      ports: {{http: {}}}\n      serviceAccount: app{w}\n",
                    mirror_name(g),
                    8080 + w
                ));
            }
            let mirror: ScalingGroupMirror = serde_yaml::from_str(&yaml).expect("mirror parses");
            Api::<ScalingGroupMirror>::namespaced(client.clone(), &namespace(g))
                .create(&PostParams::default(), &mirror)
                .await
                .expect("mirror created");
        }
        let watch = Watch::start(&client);
        let mut ctl = Controller::spawn(&dir, qps, burst, tag);
        let answer = ctl.ask(&format!("populate {mirrors} {instances}"));
        assert_eq!(answer, "ok");
        // The simulated cloud lives in the controller's process; what it
        // holds before the controller starts is not meshmirror's.
        let sim_rss = ctl.memory().0;
        Fleet {
            sim_rss,
            server,
            client,
            ctl,
            watch,
            mirrors,
            instances,
            workloads,
            dir,
        }
    }

    fn target(&self) -> usize {
        self.mirrors * self.instances * self.workloads
    }

    /// Starts the controller and waits for every entry to reach the API server.
    async fn converge(&mut self) -> Converge {
        let requests = self.server.requests();
        let cpu = self.ctl.cpu();
        let started = Instant::now();
        assert_eq!(self.ctl.ask("start"), "ok");
        let target = self.target();
        let done = self
            .watch
            .until(Duration::from_secs(600), |s| s.present.len() >= target)
            .await
            .unwrap_or_else(|| panic!("converge: {} of {target} entries", self.watch.count()));
        let wall = done - started;
        let cpu = self.ctl.cpu() - cpu;
        let writes = self
            .server
            .requests()
            .since(&requests)
            .get(Verb::Patch, "workloadentries");
        self.settle(self.instances * self.workloads).await;
        let (tail, tail_writes) = self.quiet(done).await;
        Converge {
            entries: target,
            wall,
            cpu,
            writes,
            tail,
            tail_writes,
            rss_peak: self.ctl.memory().1,
        }
    }

    /// Waits until every mirror's status reports `per_mirror` entries and
    /// Ready, then a little longer for Events and acks to drain.
    async fn settle(&self, per_mirror: usize) {
        let api: Api<ScalingGroupMirror> = Api::all(self.client.clone());
        let started = Instant::now();
        loop {
            let list = api
                .list(&ListParams::default())
                .await
                .expect("list mirrors");
            let settled = list.items.iter().all(|m| {
                m.status.as_ref().is_some_and(|s| {
                    s.entries as usize == per_mirror
                        && s.conditions
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            });
            if settled {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "mirrors never settled at {per_mirror} entries"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the controller stops writing (no write reaches the API
    /// server for 2 s): steady state. Returns how long that took after
    /// `since` and what was written meanwhile.
    async fn quiet(&self, since: Instant) -> (Duration, RequestCounts) {
        let start = self.server.requests();
        let mut last = start.writes();
        let mut last_change = Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let writes = self.server.requests().writes();
            if writes != last {
                last = writes;
                last_change = Instant::now();
            } else if last_change.elapsed() >= Duration::from_secs(2) {
                return (last_change - since, self.server.requests().since(&start));
            }
            assert!(
                since.elapsed() < Duration::from_secs(300),
                "the controller never stopped writing"
            );
        }
    }

    /// Every mirror's status as JSON (without lastSyncTime and transition
    /// times, which only change with a write), by namespace/name.
    async fn statuses(&self) -> std::collections::BTreeMap<String, String> {
        let api: Api<ScalingGroupMirror> = Api::all(self.client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .expect("list mirrors");
        list.items
            .iter()
            .map(|m| {
                let mut status = serde_json::to_value(&m.status).unwrap_or_default();
                if let Some(s) = status.as_object_mut() {
                    s.remove("lastSyncTime");
                }
                (
                    format!(
                        "{}/{}",
                        m.metadata.namespace.as_deref().unwrap_or(""),
                        m.metadata.name.as_deref().unwrap_or("")
                    ),
                    status.to_string(),
                )
            })
            .collect()
    }

    /// The size of one entry as the API server serves it, and the part of it
    /// that is `metadata.managedFields`.
    async fn entry_size(&self) -> (usize, usize) {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.client.clone(),
            &namespace(0),
            &EntryVersion::V1.workload_entries(),
        );
        let list = api
            .list(&ListParams::default().limit(1))
            .await
            .expect("list an entry");
        let Some(entry) = list.items.first() else {
            return (0, 0);
        };
        let whole = serde_json::to_string(entry).map(|s| s.len()).unwrap_or(0);
        let managed = serde_json::to_string(&entry.metadata.managed_fields)
            .map(|s| s.len())
            .unwrap_or(0);
        (whole, managed)
    }

    /// One pass of every mirror through the running controller (a Changed
    /// event per group), timed until every event is acknowledged, which the
    /// controller does after the pass succeeded.
    async fn steady_round(&mut self) -> (Duration, Duration, RequestCounts, u64) {
        let acked = self.ctl.ask_num("acked");
        let calls = self.ctl.ask_num("calls");
        let requests = self.server.requests();
        let cpu = self.ctl.cpu();
        let started = Instant::now();
        let sent = self.ctl.ask_num("touchall");
        loop {
            if self.ctl.ask_num("acked") >= acked + sent {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "round never acked"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let wall = started.elapsed();
        let cpu = self.ctl.cpu() - cpu;
        let during = self.server.requests().since(&requests);
        let calls = self.ctl.ask_num("calls") - calls;
        (wall, cpu, during, calls)
    }

    /// Scales every group by `per_group` (out when positive) and waits until
    /// the API server holds the new count of entries.
    async fn scale(&mut self, per_group: i64) -> (usize, Duration, Duration) {
        let target =
            (self.target() as i64 + per_group * (self.mirrors * self.workloads) as i64) as usize;
        let cpu = self.ctl.cpu();
        let started = Instant::now();
        let command = if per_group > 0 { "outall" } else { "inall" };
        let changed = self
            .ctl
            .ask_num(&format!("{command} {}", per_group.unsigned_abs()));
        let done = self
            .watch
            .until(Duration::from_secs(300), |s| s.present.len() == target)
            .await
            .unwrap_or_else(|| panic!("scale: {} of {target} entries", self.watch.count()));
        let wall = done - started;
        let cpu = self.ctl.cpu() - cpu;
        self.instances = (self.instances as i64 + per_group) as usize;
        self.settle(self.instances * self.workloads).await;
        self.quiet(done).await;
        (changed as usize, wall, cpu)
    }

    /// `events` single-instance changes, alternately a launch and a
    /// termination, each timed from the cloud change to the entry appearing
    /// (or going) at the API server.
    async fn latencies(&mut self, events: usize) -> Vec<Duration> {
        let mut out = Vec::with_capacity(events);
        for k in 0..events {
            let g = (k / 2 * 7) % self.mirrors;
            let launch = k % 2 == 0;
            let started = Instant::now();
            let ids = self.ctl.ask(&format!(
                "{} {} 1",
                if launch { "out" } else { "in" },
                group_name(g)
            ));
            let name = entry_name(&mirror_name(g), "app", ids.trim());
            let at = self
                .watch
                .until(Duration::from_secs(30), |s| {
                    if launch {
                        s.arrived.get(&name).is_some_and(|t| *t >= started)
                    } else {
                        s.gone.get(&name).is_some_and(|t| *t >= started)
                    }
                })
                .await
                .unwrap_or_else(|| {
                    panic!(
                        "event {k}: {name} never {}",
                        if launch { "arrived" } else { "went" }
                    )
                });
            out.push(at - started);
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn qps_label(qps: f64, burst: u32) -> String {
    if qps <= 0.0 {
        "unlimited".into()
    } else {
        format!("--kube-qps {qps} --kube-burst {burst}")
    }
}

fn print_converge(c: &Converge, rate: &str) {
    println!(
        "converge from empty: {:>6} entries in {:>7.2} s ({:>6.0} entries/s) at {rate}; controller CPU {:>7.2} s; {} entry writes; peak RSS {:.1} MiB",
        c.entries,
        c.wall.as_secs_f64(),
        c.entries as f64 / c.wall.as_secs_f64(),
        c.cpu.as_secs_f64(),
        c.writes,
        c.rss_peak
    );
    println!(
        "  after the last entry arrived the controller kept writing for {:.2} s: {:?}",
        c.tail.as_secs_f64(),
        c.tail_writes.entries()
    );
}

async fn steady_rounds(fleet: &mut Fleet, violations: &mut Vec<String>) -> Duration {
    let mut cpus = Vec::new();
    for round in 1..=steady_round_count() {
        let before = fleet.statuses().await;
        let (wall, cpu, during, calls) = fleet.steady_round().await;
        println!(
            "steady round {round}: {} mirrors / {} entries: controller CPU {:>7.2} ms, wall {:>7.2} ms, API requests {} (writes {}), cloud members() calls {calls}",
            fleet.mirrors,
            fleet.target(),
            ms(cpu),
            ms(wall),
            during.total(),
            during.writes(),
        );
        if during.writes() > 0 {
            let after = fleet.statuses().await;
            let changed: Vec<String> = after
                .iter()
                .filter(|(name, status)| before.get(*name) != Some(*status))
                .map(|(name, status)| {
                    format!(
                        "{name}: {} -> {status}",
                        before.get(name).map(String::as_str).unwrap_or("-")
                    )
                })
                .take(3)
                .collect();
            let what = format!(
                "steady round {round} wrote {:?}; statuses changed (first 3): {changed:#?}",
                during.entries()
            );
            println!("VIOLATION: {what}");
            violations.push(what);
        }
        cpus.push(cpu);
    }
    cpus.sort();
    let median = cpus[cpus.len() / 2];
    println!(
        "steady round median controller CPU: {:.2} ms for {} entries",
        ms(median),
        fleet.target()
    );
    median
}

/// Workloads per mirror (`MESHMIRROR_BENCH_WORKLOADS`, default 1): each
/// instance gets one entry per workload.
fn workload_count() -> usize {
    env_parse("MESHMIRROR_BENCH_WORKLOADS", 1).max(1)
}

fn steady_round_count() -> usize {
    env_parse("MESHMIRROR_BENCH_STEADY_ROUNDS", STEADY_ROUNDS).max(1)
}

async fn driver(mode: mode::Mode) {
    let (mut mirrors, mut instances, mut events) = if mode.short {
        (10, 20, 100)
    } else {
        (100, 100, 1000)
    };
    // MESHMIRROR_BENCH_FLEET=MIRRORSxINSTANCESxEVENTS, e.g. 20x100x200, for a
    // quick look (profiling).
    if let Ok(fleet) = std::env::var("MESHMIRROR_BENCH_FLEET") {
        let parts: Vec<usize> = fleet.split('x').filter_map(|p| p.parse().ok()).collect();
        if let [m, i, e] = parts[..] {
            (mirrors, instances, events) = (m, i, e);
        }
    }
    let curve = std::env::var("MESHMIRROR_BENCH_CURVE").as_deref() != Ok("off");
    let mut violations = Vec::new();
    println!(
        "meshmirror fleet bench ({} mode): {mirrors} mirrors x {instances} instances x {} workload(s); {} cores; load average {}",
        mode.name(),
        workload_count(),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load_average()
    );

    // The main run, at a stated write rate.
    // MESHMIRROR_BENCH_MAIN_QPS=0: the main run without a write limit (at
    // 500 writes/s, 200,000 entries take 400 s to converge).
    let qps: f64 = env_parse("MESHMIRROR_BENCH_MAIN_QPS", QPS);
    let rate = qps_label(qps, BURST);
    let mut fleet = Fleet::start(mirrors, instances, qps, BURST, "main").await;
    let converge = fleet.converge().await;
    print_converge(&converge, &rate);
    let (whole, managed) = fleet.entry_size().await;
    println!(
        "one entry as served: {whole} bytes of JSON, of which metadata.managedFields {managed} bytes"
    );
    steady_rounds(&mut fleet, &mut violations).await;
    let tenth = (instances / 10) as i64;
    let (changed, wall, cpu) = fleet.scale(tenth).await;
    println!(
        "scale-out of 10%: {changed} instances -> API server reflects it in {:.2} s (controller CPU {:.2} s) at {rate}",
        wall.as_secs_f64(),
        cpu.as_secs_f64()
    );
    let (changed, wall, cpu) = fleet.scale(-tenth).await;
    println!(
        "scale-in of 10%:  {changed} instances -> API server reflects it in {:.2} s (controller CPU {:.2} s) at {rate}",
        wall.as_secs_f64(),
        cpu.as_secs_f64()
    );
    let mut lat = fleet.latencies(events).await;
    lat.sort();
    println!(
        "event-to-entry latency over {events} events: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.90)),
        ms(percentile(&lat, 0.99)),
        ms(percentile(&lat, 1.0)),
    );
    let (rss, hwm) = fleet.ctl.memory();
    println!(
        "controller memory: RSS now {rss:.1} MiB, peak RSS (VmHWM) {hwm:.1} MiB; of which the simulated cloud before the controller started {:.1} MiB",
        fleet.sim_rss
    );
    drop(fleet);
    println!("load average: {}", load_average());

    // The same fleet with no write limit, and the scaling curve.
    // MESHMIRROR_BENCH_CURVE_MIRRORS=5,10,25 picks the curve's mirror counts.
    let chosen = std::env::var("MESHMIRROR_BENCH_CURVE_MIRRORS").ok();
    let sizes: Vec<usize> = match (curve, mode.short, chosen) {
        (false, _, _) => Vec::new(),
        (true, _, Some(list)) => list
            .split(',')
            .map(|n| {
                n.trim()
                    .parse()
                    .expect("MESHMIRROR_BENCH_CURVE_MIRRORS: numbers")
            })
            .collect(),
        (true, true, None) => vec![5, 10],
        (true, false, None) => vec![10, 25, 50, 100],
    };
    println!(
        "scaling curve (unlimited write rate; {instances} instances per mirror, {} workload(s)):",
        workload_count()
    );
    println!(
        "| entries | converge (s) | entries/s | controller CPU (s) | writes after converge (entries / statuses) | steady round CPU (ms) | peak RSS (MiB) | of which the sim before start (MiB) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &m in &sizes {
        let mut fleet = Fleet::start(m, instances, 0.0, 1, &format!("curve-{m}")).await;
        let c = fleet.converge().await;
        let steady = steady_rounds_quiet(&mut fleet, &mut violations).await;
        let (_, hwm) = fleet.ctl.memory();
        println!(
            "| {} | {:.2} | {:.0} | {:.2} | {} / {} | {:.2} | {:.1} | {:.1} |",
            c.entries,
            c.wall.as_secs_f64(),
            c.entries as f64 / c.wall.as_secs_f64(),
            c.cpu.as_secs_f64(),
            c.tail_writes.get(Verb::Patch, "workloadentries"),
            c.tail_writes.get(Verb::Patch, "scalinggroupmirrors/status"),
            ms(steady),
            hwm,
            fleet.sim_rss
        );
    }
    println!("load average at the end: {}", load_average());
    // Figures first, then the verdict: CI fails on a steady-state write.
    assert!(
        violations.is_empty(),
        "steady state must write nothing; {} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// Steady rounds without a line each; the median CPU.
async fn steady_rounds_quiet(fleet: &mut Fleet, violations: &mut Vec<String>) -> Duration {
    let mut cpus = Vec::new();
    for round in 1..=steady_round_count() {
        let (_, cpu, during, _) = fleet.steady_round().await;
        if during.writes() > 0 {
            let what = format!(
                "{} entries, steady round {round} wrote {:?}",
                fleet.target(),
                during.entries()
            );
            println!("VIOLATION: {what}");
            violations.push(what);
        }
        cpus.push(cpu);
    }
    cpus.sort();
    cpus[cpus.len() / 2]
}
